//! Which operations exist, how a request finds its operation, and the read-only operations.
//! Load balancer changes live in `load_balancers.rs`.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::catalog;
use crate::errors::ApiError;
use crate::labels::Selector;
use crate::load_balancers;
use crate::pagination::Page;
use crate::spec::spec;
use crate::state::World;

/// Every operation this server implements, as `(method, path template of the OpenAPI document)`.
/// The contract test checks that each is in the document and that it drove each one.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/actions"),
    ("GET", "/actions/{id}"),
    ("GET", "/load_balancer_types"),
    ("GET", "/load_balancer_types/{id}"),
    ("GET", "/locations"),
    ("GET", "/locations/{id}"),
    ("GET", "/load_balancers"),
    ("POST", "/load_balancers"),
    ("GET", "/load_balancers/{id}"),
    ("PUT", "/load_balancers/{id}"),
    ("DELETE", "/load_balancers/{id}"),
    ("GET", "/load_balancers/actions"),
    ("GET", "/load_balancers/actions/{id}"),
    ("GET", "/load_balancers/{id}/actions"),
    ("GET", "/load_balancers/{id}/actions/{action_id}"),
    ("POST", "/load_balancers/{id}/actions/add_service"),
    ("POST", "/load_balancers/{id}/actions/add_target"),
    ("POST", "/load_balancers/{id}/actions/attach_to_network"),
    ("POST", "/load_balancers/{id}/actions/change_algorithm"),
    ("POST", "/load_balancers/{id}/actions/change_protection"),
    ("POST", "/load_balancers/{id}/actions/change_type"),
    ("POST", "/load_balancers/{id}/actions/delete_service"),
    ("POST", "/load_balancers/{id}/actions/detach_from_network"),
    (
        "POST",
        "/load_balancers/{id}/actions/disable_public_interface",
    ),
    (
        "POST",
        "/load_balancers/{id}/actions/enable_public_interface",
    ),
    ("POST", "/load_balancers/{id}/actions/remove_target"),
    ("POST", "/load_balancers/{id}/actions/update_service"),
    ("GET", "/networks"),
    ("GET", "/networks/{id}"),
    ("GET", "/servers"),
    ("GET", "/servers/{id}"),
];

/// A request matched to its operation.
pub struct Call<'a> {
    pub method: &'a str,
    pub template: &'static str,
    /// The `{...}` segments of the path, in order.
    pub params: Vec<&'a str>,
    pub query: Vec<(String, String)>,
    /// The JSON body, `Null` for an operation that takes none.
    pub body: Value,
}

impl Call<'_> {
    /// The `n`th path parameter as an id; anything else is an unknown id.
    pub fn id(&self, n: usize, what: &str) -> Result<i64, ApiError> {
        let raw = self.params.get(n).copied().unwrap_or_default();
        raw.parse()
            .map_err(|_| ApiError::new("not_found", format!("{what} with ID '{raw}' not found")))
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn last(&self, name: &str) -> Option<&str> {
        self.all(name).last().copied()
    }
}

/// `(status, body)`; `None` is an empty body (204).
pub type Reply = Result<(u16, Option<Value>), ApiError>;

pub fn ok(body: Value) -> Reply {
    Ok((200, Some(body)))
}

/// Finds the operation of `path` (below `/v1`), checks its body against the document, runs it.
pub fn handle(world: &mut World, method: &str, path: &str, query: &str, body: &[u8]) -> Reply {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut candidates: Vec<(&'static str, &'static str, Vec<&str>)> = ROUTES
        .iter()
        .filter_map(|(m, t)| match_template(t, &segments).map(|params| (*m, *t, params)))
        .collect();
    if candidates.is_empty() {
        return Err(match spec().match_path(path) {
            Some(template) => ApiError::new(
                "method_not_allowed",
                format!("kz-test-hcloud does not implement {method} {template}"),
            ),
            None => ApiError::new("not_found", format!("no such endpoint: {path}")),
        });
    }
    // Literal segments first, as in the document's own matching (`spec::Spec::match_path`).
    candidates.sort_by_key(|(_, t, _)| std::cmp::Reverse(literal_pattern(t)));
    let best = literal_pattern(candidates[0].1);
    let Some((_, template, params)) = candidates
        .into_iter()
        .filter(|(_, t, _)| literal_pattern(t) == best)
        .find(|(m, _, _)| *m == method)
    else {
        let message = match spec().match_path(path) {
            Some(t) if spec().operation(method, t).is_some() => {
                format!("kz-test-hcloud does not implement {method} {t}")
            }
            _ => format!("{method} is not allowed on {path}"),
        };
        return Err(ApiError::new("method_not_allowed", message));
    };
    let body = parse_body(method, template, body)?;
    let call = Call {
        method,
        template,
        params,
        query: crate::util::parse_query(query),
        body,
    };
    dispatch(world, &call)
}

fn match_template<'a>(template: &str, segments: &[&'a str]) -> Option<Vec<&'a str>> {
    let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (part, seg) in parts.iter().zip(segments) {
        if part.starts_with('{') {
            if seg.is_empty() {
                return None;
            }
            params.push(*seg);
        } else if part != seg {
            return None;
        }
    }
    Some(params)
}

fn literal_pattern(template: &str) -> Vec<bool> {
    template
        .trim_start_matches('/')
        .split('/')
        .map(|s| !s.starts_with('{'))
        .collect()
}

/// The body of an operation that declares one: JSON (else `json_error`) that validates against
/// the declared schema (else `invalid_input` with the offending fields).
fn parse_body(method: &str, template: &str, raw: &[u8]) -> Result<Value, ApiError> {
    if spec().request_schema(method, template).is_none() {
        return Ok(Value::Null);
    }
    let body: Value = serde_json::from_slice(raw)
        .map_err(|e| ApiError::new("json_error", format!("request body is not valid JSON: {e}")))?;
    spec()
        .validate_request(method, template, &body)
        .map_err(ApiError::invalid_input)?;
    Ok(body)
}

fn dispatch(world: &mut World, call: &Call) -> Reply {
    match (call.method, call.template) {
        ("GET", "/actions") => list_actions(world, call, None),
        ("GET", "/actions/{id}") => get_action(world, call.id(0, "action")?, None),
        ("GET", "/load_balancer_types") => list_load_balancer_types(call),
        ("GET", "/load_balancer_types/{id}") => {
            let id = call.id(0, "load balancer type")?;
            catalog::load_balancer_type_by_id(id)
                .map(|t| ok(json!({"load_balancer_type": t.json()})))
                .unwrap_or_else(|| Err(ApiError::not_found("load balancer type", id)))
        }
        ("GET", "/locations") => list_locations(call),
        ("GET", "/locations/{id}") => {
            let id = call.id(0, "location")?;
            catalog::LOCATIONS
                .iter()
                .find(|l| l.id == id)
                .map(|l| ok(json!({"location": l.json()})))
                .unwrap_or_else(|| Err(ApiError::not_found("location", id)))
        }
        ("GET", "/load_balancers") => list_load_balancers(world, call),
        ("GET", "/load_balancers/{id}") => {
            let id = call.id(0, "load balancer")?;
            let lb = world
                .load_balancers
                .get(&id)
                .ok_or_else(|| ApiError::not_found("load balancer", id))?;
            ok(json!({"load_balancer": world.lb_json(lb)}))
        }
        ("GET", "/load_balancers/actions") => {
            list_actions(world, call, Some(("load_balancer", None)))
        }
        ("GET", "/load_balancers/actions/{id}") => {
            get_action(world, call.id(0, "action")?, Some(("load_balancer", None)))
        }
        ("GET", "/load_balancers/{id}/actions") => {
            let lb = call.id(0, "load balancer")?;
            list_actions(world, call, Some(("load_balancer", Some(lb))))
        }
        ("GET", "/load_balancers/{id}/actions/{action_id}") => {
            let lb = call.id(0, "load balancer")?;
            get_action(
                world,
                call.id(1, "action")?,
                Some(("load_balancer", Some(lb))),
            )
        }
        ("GET", "/networks") => list_networks(world, call),
        ("GET", "/networks/{id}") => {
            let id = call.id(0, "network")?;
            let n = world
                .networks
                .get(&id)
                .ok_or_else(|| ApiError::not_found("network", id))?;
            ok(json!({"network": world.network_json(n)}))
        }
        ("GET", "/servers") => list_servers(world, call),
        ("GET", "/servers/{id}") => {
            let id = call.id(0, "server")?;
            let s = world
                .servers
                .get(&id)
                .ok_or_else(|| ApiError::not_found("server", id))?;
            ok(json!({"server": world.server_json(s)}))
        }
        _ => load_balancers::dispatch(world, call),
    }
}

// --- Lists -----------------------------------------------------------------------------------

/// Filters on `name` and `label_selector`, sorts by `sort`, pages, and wraps as
/// `{<key>: [...], meta}`. `items` are rendered objects with their labels (if any) alongside.
fn list(
    call: &Call,
    key: &str,
    items: Vec<(Value, Option<&crate::labels::Labels>)>,
    sortable: &[&str],
) -> Reply {
    let selector = match call.last("label_selector") {
        Some(s) => Some(Selector::parse(s).map_err(|e| ApiError::field("label_selector", e))?),
        None => None,
    };
    let name = call.last("name");
    let mut items: Vec<Value> = items
        .into_iter()
        .filter(|(v, _)| name.is_none_or(|n| v["name"].as_str() == Some(n)))
        .filter(|(_, labels)| match (&selector, labels) {
            (None, _) => true,
            (Some(sel), Some(labels)) => sel.matches(labels),
            (Some(_), None) => false,
        })
        .map(|(v, _)| v)
        .collect();
    sort(&mut items, &call.all("sort"), sortable)?;
    let page = Page::from_query(&call.query)?;
    let (chosen, meta) = page.apply(&items);
    ok(json!({ key: chosen, "meta": meta }))
}

/// Sorts by the `sort` parameters (`field`, `field:asc`, `field:desc`), the first the most
/// significant; by id when none is given.
fn sort(items: &mut [Value], sorts: &[&str], sortable: &[&str]) -> Result<(), ApiError> {
    let mut keys: Vec<(&str, bool)> = Vec::new();
    for s in sorts {
        let (field, desc) = match s.split_once(':') {
            Some((f, "asc")) => (f, false),
            Some((f, "desc")) => (f, true),
            None => (*s, false),
            Some(_) => return Err(ApiError::field("sort", format!("invalid sort {s:?}"))),
        };
        if !sortable.contains(&field) {
            return Err(ApiError::field("sort", format!("cannot sort by {field:?}")));
        }
        keys.push((field, desc));
    }
    keys.push(("id", false));
    items.sort_by(|a, b| {
        keys.iter()
            .map(|(field, desc)| {
                let ord = compare(&a[*field], &b[*field]);
                if *desc { ord.reverse() } else { ord }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(())
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    }
}

const SORT_RESOURCES: &[&str] = &["id", "name", "created"];
const SORT_ACTIONS: &[&str] = &["id", "command", "status", "started", "finished"];

fn list_load_balancers(world: &World, call: &Call) -> Reply {
    let items = world
        .load_balancers
        .values()
        .map(|lb| (world.lb_json(lb), Some(&lb.labels)))
        .collect();
    list(call, "load_balancers", items, SORT_RESOURCES)
}

fn list_networks(world: &World, call: &Call) -> Reply {
    let items = world
        .networks
        .values()
        .map(|n| (world.network_json(n), Some(&n.labels)))
        .collect();
    list(call, "networks", items, SORT_RESOURCES)
}

fn list_servers(world: &World, call: &Call) -> Reply {
    let statuses = call.all("status");
    let items = world
        .servers
        .values()
        .map(|s| (world.server_json(s), Some(&s.labels)))
        .filter(|(v, _)| {
            statuses.is_empty() || statuses.contains(&v["status"].as_str().unwrap_or(""))
        })
        .collect();
    list(call, "servers", items, SORT_RESOURCES)
}

fn list_locations(call: &Call) -> Reply {
    let items = catalog::LOCATIONS
        .iter()
        .map(|l| (l.json(), None))
        .collect();
    list(call, "locations", items, &["id", "name"])
}

fn list_load_balancer_types(call: &Call) -> Reply {
    let items = catalog::LOAD_BALANCER_TYPES
        .iter()
        .map(|t| (t.json(), None))
        .collect();
    list(call, "load_balancer_types", items, &["id"])
}

/// Actions, optionally only those of a kind of resource (and one resource of it).
/// `GET /actions` requires `id`: listing every action of a project was removed from the API.
fn list_actions(world: &World, call: &Call, scope: Option<(&str, Option<i64>)>) -> Reply {
    let mut ids = Vec::new();
    for raw in call.all("id") {
        ids.push(
            raw.parse::<i64>()
                .map_err(|_| ApiError::field("id", format!("{raw:?} is not an integer")))?,
        );
    }
    if scope.is_none() && ids.is_empty() {
        return Err(ApiError::field("id", "is required"));
    }
    let statuses = call.all("status");
    let now = SystemTime::now();
    let mut items: Vec<Value> = world
        .actions
        .values()
        .filter(|a| ids.is_empty() || ids.contains(&a.id))
        .filter(|a| match scope {
            None => true,
            Some((kind, None)) => a.resources.iter().any(|(_, k)| *k == kind),
            Some((kind, Some(id))) => a.concerns(kind, id),
        })
        .filter(|a| statuses.is_empty() || statuses.contains(&a.status(now)))
        .map(|a| a.json(now))
        .collect();
    sort(&mut items, &call.all("sort"), SORT_ACTIONS)?;
    let page = Page::from_query(&call.query)?;
    let (chosen, meta) = page.apply(&items);
    ok(json!({"actions": chosen, "meta": meta}))
}

fn get_action(world: &World, id: i64, scope: Option<(&str, Option<i64>)>) -> Reply {
    let action = world
        .actions
        .get(&id)
        .filter(|a| match scope {
            None => true,
            Some((kind, None)) => a.resources.iter().any(|(_, k)| *k == kind),
            Some((kind, Some(rid))) => a.concerns(kind, rid),
        })
        .ok_or_else(|| ApiError::not_found("action", id))?;
    ok(json!({"action": action.json(SystemTime::now())}))
}
