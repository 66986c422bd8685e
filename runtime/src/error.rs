//! Errors as HTTP answers: `application/problem+json` (RFC 9457) with every failing field.

use serde::Serialize;
use serde_json::{json, Value};

/// One failing field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field (JSON name; `""` for the whole body).
    pub field: String,
    /// A stable, machine-readable code (`required`, `min_length`, `unique`…).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// An error answered to the client. Hooks and actions return these to refuse a request.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Short title.
    pub title: String,
    /// Longer explanation.
    pub detail: String,
    /// Failing fields (for 422 and 409).
    pub errors: Vec<FieldError>,
    /// Extra headers (`Allow`, `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// An error with a status, title and detail.
    pub fn new(status: u16, title: &str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            title: title.to_string(),
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The error with `errors` listing the fields it is about.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "Bad Request", detail)
    }

    /// 401, with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new(401, "Unauthorized", detail);
        e.headers.push(("www-authenticate", "Bearer".into()));
        e
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "Not Found", detail)
    }

    /// 405 with `Allow`.
    pub fn method_not_allowed(allow: &[&str]) -> Self {
        let mut e = Self::new(
            405,
            "Method Not Allowed",
            format!("allowed methods: {}", allow.join(", ")),
        );
        e.headers.push(("allow", allow.join(", ")));
        e
    }

    /// 409 for one field.
    pub fn conflict(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(409, "Conflict", message.clone());
        e.errors.push(FieldError::new(field, "unique", message));
        e
    }

    /// 412.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, "Precondition Failed", detail)
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "Payload Too Large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            "Unsupported Media Type",
            "send the body as JSON with `Content-Type: application/json`",
        )
    }

    /// 422 for one field.
    pub fn unprocessable(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, code, message)])
    }

    /// 422 listing every failing field.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let n = errors.len();
        let mut e = Self::new(
            422,
            "Unprocessable Entity",
            format!(
                "{n} field{} failed validation",
                if n == 1 { "" } else { "s" }
            ),
        );
        e.errors = errors;
        e
    }

    /// 501 for an action whose body is still the generated stub.
    pub fn not_implemented(action: &str) -> Self {
        Self::new(
            501,
            "Not Implemented",
            format!("action {action} has no implementation yet: write it in src/handlers/"),
        )
    }

    /// 404 for an action name or shape the model does not have.
    pub fn unknown_action(name: &str) -> Self {
        Self::not_found(format!("no action {name} here"))
    }

    /// 500 for a fault of the server; the detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            500,
            "Internal Server Error",
            "the server failed; see its log",
        )
    }

    /// 503 while the store cannot take writes.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, "Service Unavailable", detail)
    }

    /// 503 with `Retry-After` for a write whose outcome is unknown: it may still commit.
    pub fn outcome_unknown(why: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            503,
            "Service Unavailable",
            format!(
                "{why}. The outcome is unknown: the write may still commit. Read the record \
                 before retrying, or retry with the same Idempotency-Key"
            ),
        );
        e.headers.push(("retry-after", "1".into()));
        e
    }

    /// 503 with `Retry-After` when the node refuses work at once (nothing was done).
    pub fn overloaded(detail: impl Into<String>) -> Self {
        let mut e = Self::new(503, "Service Unavailable", detail);
        e.headers.push(("retry-after", "1".into()));
        e
    }

    /// 507 (disk full) or 503 (another storage failure) once the node stopped taking
    /// writes; the outcome of a write that was in flight is unknown.
    pub fn storage_fault(fault: &crate::domain::health::Fault) -> Self {
        let (status, title) = if fault.no_space {
            (507, "Insufficient Storage")
        } else {
            (503, "Service Unavailable")
        };
        let mut e = Self::new(
            status,
            title,
            format!(
                "this node stopped taking writes after a storage failure ({}). Writes \
                 acknowledged before are kept; a write in flight may or may not have been \
                 kept. The node takes writes again after a restart, once the cause is fixed",
                fault.what
            ),
        );
        e.headers.push(("retry-after", "5".into()));
        e
    }

    /// The problem+json body.
    pub fn body(&self) -> Value {
        let mut v = json!({
            "type": format!("https://lithair.dev/problems/{}", self.status),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        });
        if !self.errors.is_empty() {
            v["errors"] = serde_json::to_value(&self.errors).unwrap_or(Value::Null);
        }
        v
    }
}
