//! Running an [`Op`] as its API call, and waiting for the action it starts: `GET /actions/{id}`
//! every `poll` until `success` or `error`, and never past the deadline.
//!
//! A POST whose outcome is unknown (a server error, or no answer to a request that went out) is
//! not simply sent again: the first one may have been carried out, and a second would fail with
//! `uniqueness_error`, `locked`, `target_already_defined` and the like. Instead kz waits until no
//! action runs on the load balancer any more, reads it, and counts the change as made when the
//! load balancer shows it ([`done`]); only otherwise is the request sent again. A refusal of a
//! resent request is checked the same way: if the load balancer shows the change, it was the
//! first request that made it.

use std::time::Duration;

use hcloud::models;
use hcloud::models::action::Status;
use tokio::time::Instant;

use std::collections::HashMap;

use super::client::{Actions, ApiError, Client};
use super::diff::Op;
use super::lookup;
use super::spec::{Current, algorithm_of, service_to_api, service_to_update};

/// How actions are waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The pause between two looks at a running action (hcloud-go uses 500 ms).
    pub poll: Duration,
    /// How long one action may run before kz gives up on it.
    pub deadline: Duration,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            poll: Duration::from_millis(500),
            deadline: Duration::from_secs(300),
        }
    }
}

/// The error of an action that ended in `error`.
pub fn action_failed(a: &models::Action) -> String {
    let (code, message) = a
        .error
        .as_deref()
        .map_or(("unknown", "no error given"), |e| {
            (e.code.as_str(), e.message.as_str())
        });
    format!("hcloud: action {} failed: {code}: {message}", a.command)
}

/// Waits until `action` is done; an error when it failed or outlived the deadline. A poll that
/// fails in a way a later one may not (a server error, a lost answer, a rate limit) is followed
/// by the next poll, up to the deadline; the last such failure is reported with it.
pub async fn wait(c: &Client, action: models::Action, w: Waiting) -> Result<(), String> {
    let a = finished(c, action, w).await?;
    match a.status {
        Status::Error => Err(action_failed(&a)),
        _ => Ok(()),
    }
}

/// The action once it is no longer running (`success` or `error`); an error when it outlived
/// the deadline or could not be read.
async fn finished(
    c: &Client,
    action: models::Action,
    w: Waiting,
) -> Result<models::Action, String> {
    let deadline = Instant::now() + w.deadline;
    let mut a = action;
    let mut last_failure: Option<ApiError> = None;
    loop {
        if a.status != Status::Running {
            return Ok(a);
        }
        if Instant::now() + w.poll > deadline {
            let why = last_failure.map_or(String::new(), |e| format!(" (last poll: {e})"));
            return Err(format!(
                "hcloud: action {} ({}) still running after {}; kz stopped waiting for it{why}",
                a.command,
                a.id,
                kz_engine::units::format_duration(w.deadline)
            ));
        }
        tokio::time::sleep(w.poll).await;
        match c
            .get::<models::GetActionResponse>(&format!("/actions/{}", a.id), &[])
            .await
        {
            Ok(got) => a = *got.action,
            Err(e) if e.is_transient() => last_failure = Some(e),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Waits until no action runs on load balancer `lb` (each one waited for, whatever its end):
/// after a request whose outcome is unknown, the action it may have started holds the load
/// balancer, and what the load balancer shows is final only once it is done.
async fn settle(c: &Client, lb: i64, w: Waiting) -> Result<(), String> {
    let running = c
        .list_all::<Actions>(
            &format!("/load_balancers/{lb}/actions"),
            &[("status", "running".to_string())],
        )
        .await
        .map_err(|e| e.to_string())?;
    for a in running {
        // How it ended does not matter here: what the load balancer shows after it does.
        finished(c, a, w).await?;
    }
    Ok(())
}

/// The load balancer `lb` as the API holds it once no action runs on it.
async fn settled(c: &Client, lb: i64, w: Waiting) -> Result<Current, String> {
    settle(c, lb, w).await?;
    let got: models::GetLoadBalancerResponse = c
        .get(&format!("/load_balancers/{lb}"), &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(Current::from_api(
        &got.load_balancer,
        &HashMap::new(),
        &HashMap::new(),
    ))
}

/// Creates a load balancer and waits for its create action; the load balancer as made. After an
/// unknown outcome (or a `uniqueness_error` to a request sent again after one), a load balancer
/// of the name is looked for: found, it is the one the lost request made, taken once settled;
/// else the request is sent again.
pub async fn create(
    c: &Client,
    req: &models::CreateLoadBalancerRequest,
    w: Waiting,
) -> Result<models::LoadBalancer, String> {
    let mut unsure = false;
    let mut attempt = 0;
    loop {
        let error = match c
            .post::<_, models::CreateLoadBalancerResponse>("/load_balancers", Some(req))
            .await
        {
            Ok(made) => {
                wait(c, *made.action, w).await?;
                return Ok(*made.load_balancer);
            }
            Err(e) => e,
        };
        let taken = unsure && error.code() == Some("uniqueness_error");
        if !error.is_ambiguous() && !taken {
            return Err(error.to_string());
        }
        let found = lookup::load_balancer(c, &req.name)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(lb) = found {
            settle(c, lb.id, w).await?;
            let got: models::GetLoadBalancerResponse = c
                .get(&format!("/load_balancers/{}", lb.id), &[])
                .await
                .map_err(|e| e.to_string())?;
            return Ok(*got.load_balancer);
        }
        attempt += 1;
        if taken || attempt >= c.tries() {
            return Err(error.to_string());
        }
        unsure = true;
        tokio::time::sleep(c.backoff(attempt - 1)).await;
    }
}

/// Whether the load balancer already shows what `op` does.
pub fn done(op: &Op, c: &Current) -> bool {
    match op {
        Op::ChangeType(t) => c.lb_type == *t,
        Op::ChangeAlgorithm(a) => c.algorithm == *a,
        Op::SetLabels(labels) => c.labels == *labels,
        Op::EnablePublicInterface => c.public_interface,
        Op::DisablePublicInterface => !c.public_interface,
        Op::RemoveServerTarget { id, .. } => !c.server_targets.iter().any(|t| t.id == *id),
        Op::RemoveLabelTarget(selector) => !c.label_targets.iter().any(|t| t.selector == *selector),
        Op::RemoveIpTarget(ip) => !c.ip_targets.contains(ip),
        Op::DetachFromNetwork { id } => !c.networks.iter().any(|n| n.id == *id),
        Op::AttachToNetwork { id, ip } => c
            .networks
            .iter()
            .any(|n| n.id == *id && (ip.is_none() || n.ip == *ip)),
        Op::AddServerTarget {
            id, use_private_ip, ..
        } => c
            .server_targets
            .iter()
            .any(|t| t.id == *id && t.use_private_ip == *use_private_ip),
        Op::AddLabelTarget {
            selector,
            use_private_ip,
        } => c
            .label_targets
            .iter()
            .any(|t| t.selector == *selector && t.use_private_ip == *use_private_ip),
        Op::DeleteService(port) => !c.services.iter().any(|s| s.listen_port == *port),
        Op::UpdateService(s) | Op::AddService(s) => c.services.contains(s),
    }
}

/// Posts `body` to `path` (an action of load balancer `lb`) and waits for the action. After an
/// unknown outcome, the load balancer is read once it is settled: when `op` shows, it is done;
/// else the request is sent again (at most as often as the client tries a request).
async fn post_action<B: serde::Serialize>(
    c: &Client,
    lb: i64,
    op: &Op,
    path: &str,
    body: Option<&B>,
    w: Waiting,
) -> Result<(), String> {
    let mut unsure: Option<ApiError> = None;
    let mut attempt = 0;
    // Bounded by the action's deadline, not by a count: a request refused with `locked` is sent
    // again and again while another action holds the network, and each of those sends may meet a
    // server error; the load balancer read after each one (which fails fast when the API is down)
    // says whether it was carried out.
    let deadline = Instant::now() + w.deadline;
    loop {
        let error = match c.post::<B, models::GetActionResponse>(path, body).await {
            Ok(got) => return wait(c, *got.action, w).await,
            Err(e) => e,
        };
        if !error.is_ambiguous() && unsure.is_none() {
            return Err(error.to_string());
        }
        // This request, or one before it, may have been carried out.
        if done(op, &settled(c, lb, w).await?) {
            return Ok(());
        }
        if !error.is_ambiguous() {
            return Err(error.to_string());
        }
        attempt += 1;
        let pause = c.backoff(attempt - 1);
        if Instant::now() + pause >= deadline {
            return Err(error.to_string());
        }
        unsure = Some(error);
        tokio::time::sleep(pause).await;
    }
}

/// Posts `/load_balancers/{lb}/actions/{op's step}` and waits for the action.
async fn act<B: serde::Serialize>(
    c: &Client,
    lb: i64,
    op: &Op,
    body: Option<&B>,
    w: Waiting,
) -> Result<(), String> {
    let path = format!("/load_balancers/{lb}/actions/{}", op.step());
    post_action(c, lb, op, &path, body, w).await
}

/// Makes one change to load balancer `lb`, and waits until it is done.
pub async fn perform(c: &Client, lb: i64, op: &Op, w: Waiting) -> Result<(), String> {
    use models::remove_target_request::Type as RemoveType;
    match op {
        Op::ChangeType(t) => {
            let body = models::ChangeTypeOfLoadBalancerRequest {
                load_balancer_type: t.clone(),
            };
            act(c, lb, op, Some(&body), w).await
        }
        Op::ChangeAlgorithm(a) => act(c, lb, op, Some(&algorithm_of(a)?), w).await,
        Op::SetLabels(labels) => {
            let body = models::ReplaceLoadBalancerRequest {
                labels: Some(labels.clone().into_iter().collect()),
                name: None,
            };
            c.put(&format!("/load_balancers/{lb}"), &body)
                .await
                .map_err(|e| e.to_string())
        }
        Op::EnablePublicInterface | Op::DisablePublicInterface => {
            act::<()>(c, lb, op, None, w).await
        }
        Op::RemoveServerTarget { id, .. } => {
            let body = models::RemoveTargetRequest {
                server: Some(Box::new(models::ResourceId { id: *id })),
                ..models::RemoveTargetRequest::new(RemoveType::Server)
            };
            act(c, lb, op, Some(&body), w).await
        }
        Op::RemoveLabelTarget(selector) => {
            let body = models::RemoveTargetRequest {
                label_selector: Some(Box::new(models::LabelSelector::new(selector.clone()))),
                ..models::RemoveTargetRequest::new(RemoveType::LabelSelector)
            };
            act(c, lb, op, Some(&body), w).await
        }
        Op::RemoveIpTarget(ip) => {
            let body = models::RemoveTargetRequest {
                ip: Some(Box::new(models::LoadBalancerTargetIp::new(ip.clone()))),
                ..models::RemoveTargetRequest::new(RemoveType::Ip)
            };
            act(c, lb, op, Some(&body), w).await
        }
        Op::DetachFromNetwork { id } => {
            let body = models::DetachLoadBalancerFromNetworkRequest { network: *id };
            act(c, lb, op, Some(&body), w).await
        }
        Op::AttachToNetwork { id, ip } => {
            let body = models::AttachLoadBalancerToNetworkRequest {
                ip: ip.clone(),
                ip_range: None,
                network: *id,
            };
            act(c, lb, op, Some(&body), w).await
        }
        Op::AddServerTarget {
            id, use_private_ip, ..
        } => {
            let body = server_target(*id, *use_private_ip);
            act(c, lb, op, Some(&body), w).await
        }
        Op::AddLabelTarget {
            selector,
            use_private_ip,
        } => {
            let body = label_target(selector, *use_private_ip);
            act(c, lb, op, Some(&body), w).await
        }
        Op::DeleteService(port) => {
            let body = models::DeleteServiceRequest {
                listen_port: i32::from(*port),
            };
            act(c, lb, op, Some(&body), w).await
        }
        Op::UpdateService(s) => act(c, lb, op, Some(&service_to_update(s)?), w).await,
        Op::AddService(s) => act(c, lb, op, Some(&service_to_api(s)?), w).await,
    }
}

/// A server target as the create and `add_target` calls take it.
pub fn server_target(id: i64, use_private_ip: bool) -> models::LoadBalancerAddTarget {
    models::LoadBalancerAddTarget {
        server: Some(Box::new(models::ResourceId { id })),
        use_private_ip: Some(use_private_ip),
        ..models::LoadBalancerAddTarget::new(models::load_balancer_add_target::Type::Server)
    }
}

/// A label selector target as the create and `add_target` calls take it.
pub fn label_target(selector: &str, use_private_ip: bool) -> models::LoadBalancerAddTarget {
    models::LoadBalancerAddTarget {
        label_selector: Some(Box::new(models::LabelSelector::new(selector.to_string()))),
        use_private_ip: Some(use_private_ip),
        ..models::LoadBalancerAddTarget::new(models::load_balancer_add_target::Type::LabelSelector)
    }
}
