//! The HTTP edge of every error: a status, a stable machine-readable code, a message for the
//! client (never a secret), and the field it is about. The log message is separate and may
//! say more.
//!
//! Body: `{"error": {"code": "duplicate_mac", "message": "...", "field": "macs[0]"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::boot::BootError;
use crate::images::swift::SwiftError;
use crate::node::FieldError;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable; clients and the `ironboot_errors_total` metric use it.
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn invalid_field(e: FieldError) -> ApiError {
        let code = if e.field.starts_with("macs") {
            "invalid_mac"
        } else {
            "invalid_field"
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string()).field(e.field)
    }
}

/// The code of an error response, attached to it for the error metric.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(f) = &self.field {
            body["field"] = json!(f);
        }
        let mut response = (self.status, Json(json!({ "error": body }))).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid_field(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "node_not_found", e.to_string())
            }
            StoreError::DuplicateMac { .. } => {
                ApiError::new(StatusCode::CONFLICT, "duplicate_mac", e.to_string()).field("macs")
            }
            StoreError::DuplicateName(_) => {
                ApiError::new(StatusCode::CONFLICT, "duplicate_name", e.to_string()).field("name")
            }
            StoreError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "concurrent_update", e.to_string())
            }
            StoreError::Database(_) | StoreError::Open(_) | StoreError::Migration(_) => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; retry later",
                )
            }
            StoreError::Corrupt { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt_record",
                e.to_string(),
            ),
        }
    }
}

impl From<BootError> for ApiError {
    fn from(e: BootError) -> Self {
        match e {
            BootError::Field(f) => {
                let code = if f.message.starts_with("is required") {
                    "missing_image"
                } else if f.message.contains("scheme") {
                    "invalid_image_ref"
                } else {
                    "invalid_field"
                };
                ApiError::new(StatusCode::BAD_REQUEST, code, f.to_string()).field(f.field)
            }
            BootError::Unsupported { field, message } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_image_ref",
                format!("{field}: {message}"),
            )
            .field(field),
            BootError::Swift { field, source } => {
                let (status, code) = match &source {
                    SwiftError::NotFound { .. } => (StatusCode::BAD_REQUEST, "image_not_found"),
                    SwiftError::Refused { .. } => {
                        (StatusCode::BAD_GATEWAY, "swift_refused_tempurl")
                    }
                    SwiftError::Unreachable { .. } => {
                        (StatusCode::BAD_GATEWAY, "swift_unreachable")
                    }
                    SwiftError::Status { .. } => (StatusCode::BAD_GATEWAY, "swift_error"),
                };
                ApiError::new(status, code, format!("{field}: {source}")).field(field)
            }
            BootError::Render(r) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "render_failed",
                r.to_string(),
            ),
        }
    }
}

/// Parses a JSON body; errors name the offending field path.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let status = StatusCode::BAD_REQUEST;
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                status,
                "invalid_body",
                format!("the body is not valid JSON: {inner}"),
            )
        } else if path == "." {
            ApiError::new(status, "invalid_body", format!("invalid body: {inner}"))
        } else {
            ApiError::new(status, "invalid_field", format!("{path}: {inner}")).field(path)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}
