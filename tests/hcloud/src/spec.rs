//! The OpenAPI document this server is held to, and JSON Schema validation against it.
//!
//! The document is OpenAPI 3.0.3. Its schema objects are close to JSON Schema draft 7, except:
//! - `nullable: true` (3.0 only) means "or null": rewritten to `anyOf: [{type: null}, <schema>]`;
//! - `$ref`s point at `#/components/schemas/X`: all schemas are compiled once as draft-7
//!   `definitions` of one root document, so `$ref`s are rewritten to `#/definitions/X`;
//! - response keys may be status ranges (`4xx`, `5xx`) and `default`, looked up in that order
//!   after the exact status;
//! - `format`s such as `int64` or `decimal` are not JSON Schema formats: unknown formats are
//!   ignored, known ones (`date-time`) are checked.
//!
//! Keywords that only annotate (`example`, `deprecated`, `description`, `title`, `default`) are
//! carried over and ignored by the validator, as OpenAPI means them to be.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::errors::FieldError;

/// The document, copied from `shared/hcloud` so that a fresh clone builds (see `openapi/README.md`).
const DOCUMENT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"));

const COMPONENT_PREFIX: &str = "#/components/schemas/";
const DEFINITION_PREFIX: &str = "#/definitions/";

pub struct Spec {
    doc: Value,
    validators: jsonschema::ValidatorMap,
    /// Path templates split into segments, `None` for a `{param}` segment.
    paths: Vec<(String, Vec<Option<String>>)>,
}

/// The document, parsed and compiled once per process (compiling takes a few hundred
/// milliseconds in a debug build).
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| match Spec::load() {
        Ok(spec) => spec,
        // The document is part of this crate: if it does not load, nothing here can work.
        Err(e) => panic!("kz-test-hcloud: the bundled OpenAPI document does not load: {e}"),
    })
}

impl Spec {
    fn load() -> Result<Spec, String> {
        let doc: Value = serde_json::from_str(DOCUMENT).map_err(|e| e.to_string())?;
        let schemas = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .ok_or("no components.schemas")?;
        let definitions: Map<String, Value> = schemas
            .iter()
            .map(|(name, schema)| (name.clone(), convert_schema(schema)))
            .collect();
        let root = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": definitions,
        });
        let validators = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build_map(&root)
            .map_err(|e| e.to_string())?;
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("no paths")?
            .keys()
            .map(|template| {
                let segments = template
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                    .collect();
                (template.clone(), segments)
            })
            .collect();
        Ok(Spec {
            doc,
            validators,
            paths,
        })
    }

    /// The raw document.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// The path template (`/load_balancers/{id}`) a concrete path (`/load_balancers/7`, without the
    /// `/v1` prefix and the query) falls under. Where several match (`/load_balancers/actions/5`
    /// matches `/load_balancers/actions/{id}` and `/load_balancers/{id}/actions/{action_id}`), the
    /// one whose first literal segment comes first wins, as a router would pick it.
    pub fn match_path(&self, path: &str) -> Option<&str> {
        let concrete: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.paths
            .iter()
            .filter(|(_, segments)| {
                segments.len() == concrete.len()
                    && segments
                        .iter()
                        .zip(&concrete)
                        .all(|(s, c)| s.as_deref().is_none_or(|lit| lit == *c) && !c.is_empty())
            })
            // Literal segments as early as possible: compare the literal/param pattern.
            .max_by_key(|(_, segments)| {
                segments
                    .iter()
                    .map(|s| u8::from(s.is_some()))
                    .collect::<Vec<_>>()
            })
            .map(|(template, _)| template.as_str())
    }

    /// The operation object of `method` (any case) on `template`.
    pub fn operation(&self, method: &str, template: &str) -> Option<&Value> {
        self.doc
            .get("paths")?
            .get(template)?
            .get(method.to_ascii_lowercase())
    }

    /// Where the schema of the JSON response of an operation for a status lives: `Ok(Some(name))`
    /// (a `components/schemas` name), `Ok(None)` when the declared response has no content (204).
    pub fn response_schema(
        &self,
        method: &str,
        template: &str,
        status: u16,
    ) -> Result<Option<String>, String> {
        let op = self
            .operation(method, template)
            .ok_or_else(|| format!("the document has no operation {method} {template}"))?;
        let responses = op.get("responses").ok_or("operation without responses")?;
        let keys = [
            status.to_string(),
            format!("{}xx", status / 100),
            "default".to_owned(),
        ];
        let response = keys
            .iter()
            .find_map(|k| responses.get(k))
            .ok_or_else(|| format!("{method} {template} declares no response for {status}"))?;
        match response.pointer("/content/application~1json/schema") {
            None => Ok(None),
            Some(schema) => schema_name(schema)
                .map(Some)
                .ok_or_else(|| format!("{method} {template} {status}: inline schema, not a $ref")),
        }
    }

    /// The `components/schemas` name of the JSON request body of an operation, if it takes one.
    pub fn request_schema(&self, method: &str, template: &str) -> Option<String> {
        let schema = self
            .operation(method, template)?
            .pointer("/requestBody/content/application~1json/schema")?;
        schema_name(schema)
    }

    /// Validates `value` against `components/schemas/<name>`; the errors as
    /// `"<instance pointer>: <message>"`.
    pub fn validate_schema(&self, name: &str, value: &Value) -> Result<(), Vec<String>> {
        let validator = self
            .validators
            .get(&format!("{DEFINITION_PREFIX}{name}"))
            .ok_or_else(|| vec![format!("no schema named {name:?} in the document")])?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{}: {e}", pointer_or_root(e.instance_path().as_str())))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Validates a response against what the document declares for the operation and status.
    /// `body` is `None` for an empty body, which only a response without content may have.
    pub fn validate_response(
        &self,
        method: &str,
        template: &str,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), Vec<String>> {
        match (self.response_schema(method, template, status), body) {
            (Err(e), _) => Err(vec![e]),
            (Ok(None), None) => Ok(()),
            (Ok(None), Some(_)) => Err(vec![format!(
                "{method} {template} {status}: the document declares no content, got a body"
            )]),
            (Ok(Some(name)), None) => Err(vec![format!(
                "{method} {template} {status}: expected a {name} body, got none"
            )]),
            (Ok(Some(name)), Some(body)) => self.validate_schema(&name, body),
        }
    }

    /// Validates a request body against the operation's request schema, as `invalid_input`
    /// fields. An operation without a request schema accepts anything.
    pub fn validate_request(
        &self,
        method: &str,
        template: &str,
        body: &Value,
    ) -> Result<(), Vec<FieldError>> {
        let Some(name) = self.request_schema(method, template) else {
            return Ok(());
        };
        let Some(validator) = self.validators.get(&format!("{DEFINITION_PREFIX}{name}")) else {
            return Ok(());
        };
        let mut fields: Vec<FieldError> = Vec::new();
        for error in validator.iter_errors(body) {
            let mut name = field_name(error.instance_path().as_str());
            let message = match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let property = property.as_str().unwrap_or_default();
                    name = if name.is_empty() {
                        property.to_owned()
                    } else {
                        format!("{name}.{property}")
                    };
                    "is required".to_owned()
                }
                _ => error.to_string(),
            };
            match fields.iter_mut().find(|f| f.name == name) {
                Some(f) => f.messages.push(message),
                None => fields.push(FieldError {
                    name,
                    messages: vec![message],
                }),
            }
        }
        if fields.is_empty() {
            Ok(())
        } else {
            Err(fields)
        }
    }
}

/// `#/components/schemas/X` of a `{"$ref": ...}` schema.
fn schema_name(schema: &Value) -> Option<String> {
    schema
        .get("$ref")?
        .as_str()?
        .strip_prefix(COMPONENT_PREFIX)
        .map(str::to_owned)
}

fn pointer_or_root(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(root)"
    } else {
        pointer
    }
}

/// `/services/0/listen_port` as `services.0.listen_port`, the dotted form of field names.
fn field_name(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

/// One OpenAPI 3.0 schema object as a draft-7 schema. Walks only the keywords that hold schemas,
/// so that a property that happens to be called `nullable` or `$ref` is left alone.
fn convert_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        // `additionalProperties: false` and the like.
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let converted = match key.as_str() {
            "nullable" => continue,
            "$ref" => match value.as_str() {
                Some(r) => Value::String(r.replace(COMPONENT_PREFIX, DEFINITION_PREFIX)),
                None => value.clone(),
            },
            "properties" => match value {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| (name.clone(), convert_schema(s)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => convert_schema(value),
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(list) => Value::Array(list.iter().map(convert_schema).collect()),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] })
    } else {
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_becomes_any_of_null() {
        let converted = convert_schema(&json!({"type": "string", "nullable": true}));
        assert_eq!(
            converted,
            json!({"anyOf": [{"type": "null"}, {"type": "string"}]})
        );
    }

    #[test]
    fn a_property_named_nullable_is_kept() {
        let converted = convert_schema(&json!({"properties": {"nullable": {"type": "boolean"}}}));
        assert_eq!(
            converted,
            json!({"properties": {"nullable": {"type": "boolean"}}})
        );
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        let s = spec();
        assert_eq!(
            s.match_path("/load_balancers/actions/5"),
            Some("/load_balancers/actions/{id}")
        );
        assert_eq!(
            s.match_path("/load_balancers/5/actions/add_target"),
            Some("/load_balancers/{id}/actions/add_target")
        );
        assert_eq!(
            s.match_path("/load_balancers/5/actions/9"),
            Some("/load_balancers/{id}/actions/{action_id}")
        );
        assert_eq!(
            s.match_path("/load_balancers/5"),
            Some("/load_balancers/{id}")
        );
        assert_eq!(s.match_path("/nope"), None);
    }
}
