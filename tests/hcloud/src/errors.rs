//! The API's error shape: HTTP status plus `{"error": {"code", "message", "details"}}`.

use serde_json::{Value, json};

/// Every error code this server can answer with, and its HTTP status.
///
/// The generic codes and their statuses are the table under "Errors" in Hetzner's API
/// documentation. The operation-specific codes come from the "Operation specific errors" tables of
/// the load balancer operations in the OpenAPI document, which give no status: 422 is a guess, the
/// status the documentation gives to the other input-dependent refusals (`invalid_input`,
/// `service_error`).
pub const ERROR_CODES: &[(&str, u16)] = &[
    ("json_error", 400),
    ("unauthorized", 401),
    ("forbidden", 403),
    ("resource_limit_exceeded", 403),
    ("not_found", 404),
    ("method_not_allowed", 405),
    ("uniqueness_error", 409),
    ("conflict", 409),
    ("invalid_input", 422),
    ("service_error", 422),
    ("locked", 423),
    ("protected", 423),
    ("rate_limit_exceeded", 429),
    ("server_error", 500),
    ("unavailable", 503),
    ("timeout", 504),
    // Operation-specific (load balancers).
    ("cloud_resource_ip_not_allowed", 422),
    ("invalid_load_balancer_type", 422),
    ("ip_not_available", 422),
    ("load_balancer_already_attached", 422),
    ("load_balancer_not_attached_to_network", 422),
    ("load_balancer_public_interface_disabled", 422),
    ("no_subnet_available", 422),
    ("server_not_attached_to_network", 422),
    ("source_port_already_used", 422),
    ("target_already_defined", 422),
    ("targets_without_use_private_ip", 422),
];

/// The HTTP status of an error code, `None` for a code this server does not know.
pub fn status_of(code: &str) -> Option<u16> {
    ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, s)| *s)
}

/// One field of an `invalid_input` error's `details.fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub name: String,
    pub messages: Vec<String>,
}

/// An error answer, rendered by [`ApiError::body`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// `None` is sent as `{}`, as the API does for errors without details.
    pub details: Option<Value>,
}

impl ApiError {
    /// An error with one of the codes of [`ERROR_CODES`]; an unknown code is a bug in this crate,
    /// answered as `server_error` so that the test that hits it sees it.
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        match status_of(code) {
            Some(status) => ApiError {
                status,
                code: code.to_owned(),
                message: message.into(),
                details: None,
            },
            None => ApiError {
                status: 500,
                code: "server_error".to_owned(),
                message: format!("kz-test-hcloud: unknown error code {code:?}"),
                details: None,
            },
        }
    }

    pub fn not_found(what: &str, id: impl std::fmt::Display) -> ApiError {
        ApiError::new("not_found", format!("{what} with ID '{id}' not found"))
    }

    /// `invalid_input` with `details.fields`, the message naming the first field as the API does
    /// ("invalid input in field 'broken_field': is too long").
    pub fn invalid_input(fields: Vec<FieldError>) -> ApiError {
        let message = match fields.first() {
            Some(f) => format!(
                "invalid input in field '{}': {}",
                f.name,
                f.messages.join(", ")
            ),
            None => "invalid input".to_owned(),
        };
        let fields_json: Vec<Value> = fields
            .iter()
            .map(|f| json!({"name": f.name, "messages": f.messages}))
            .collect();
        ApiError {
            details: Some(json!({ "fields": fields_json })),
            ..ApiError::new("invalid_input", message)
        }
    }

    /// `invalid_input` about one field.
    pub fn field(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::invalid_input(vec![FieldError {
            name: name.to_owned(),
            messages: vec![message.into()],
        }])
    }

    pub fn body(&self) -> Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details.clone().unwrap_or_else(|| json!({})),
            }
        })
    }
}
