//! The HTTP edge of every error: a status chosen from the stable code alone, the code, a
//! message for the client (never a secret, never internal detail) and the field it is
//! about. The internal detail travels in a response extension to one middleware
//! ([`super::report_errors`]), which counts every error and logs the detail once, with the
//! route.
//!
//! Body: `{"error": {"code": "duplicate_mac", "message": "...", "field": "macs[0]"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::code::ErrorCode;
use crate::node::FieldError;
use crate::service::ServiceError;

/// The HTTP status of each code. The only place that decides it.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        InvalidBody
        | InvalidField
        | InvalidMac
        | InvalidQuery
        | ReadOnlyField
        | MissingImage
        | InvalidImageRef
        | UnsupportedImageRef
        | ImageNotFound
        | GlanceImageNotFound
        | GlanceImageForbidden
        | GlanceImageNotInSwift
        | InvalidChecksum => StatusCode::BAD_REQUEST,
        BodyTooLarge | DocumentTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Unauthorized => StatusCode::UNAUTHORIZED,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        NotFound | NodeNotFound | FallbackMissing => StatusCode::NOT_FOUND,
        DuplicateMac | DuplicateName | ConcurrentUpdate | NoBootTarget | NoMacs
        | GlanceImageNotActive => StatusCode::CONFLICT,
        SwiftRefusedTempurl
        | SwiftUnreachable
        | SwiftError
        | SwiftAuthFailed
        | GlanceObjectNotFound
        | GlanceUnreachable
        | GlanceError
        | KeystoneAuthFailed
        | KeystoneUnreachable
        | KeystoneError
        | ImageSourceUnreachable
        | ImageSourceError => StatusCode::BAD_GATEWAY,
        GlanceTimeout | ImageSourceTimeout => StatusCode::GATEWAY_TIMEOUT,
        ImageChecksumMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        CacheFull => StatusCode::INSUFFICIENT_STORAGE,
        RequestTimeout | DatabaseUnavailable | DatabaseGone | SwiftKeyUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        RenderFailed | CorruptRecord | CacheIo => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error response of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Logged, never sent.
    pub detail: Option<String>,
}

/// Attached to every error response: what [`super::report_errors`] counts and logs.
#[derive(Debug, Clone)]
pub(crate) struct ErrorReport {
    pub code: ErrorCode,
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            detail: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(f) = &self.field {
            body["field"] = json!(f);
        }
        let mut response = (self.status(), Json(json!({ "error": body }))).into_response();
        response.extensions_mut().insert(ErrorReport {
            code: self.code,
            detail: self.detail,
        });
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError {
            code: e.code(),
            message: e.client_message(),
            field: e.field().map(str::to_string),
            detail: e
                .detail()
                .or_else(|| e.is_internal().then(|| e.to_string())),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ServiceError::from(e).into()
    }
}

/// Parses a JSON body; errors name the offending field path.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("the body is not valid JSON: {inner}"),
            )
        } else if path == "." {
            ApiError::new(ErrorCode::InvalidBody, format!("invalid body: {inner}"))
        } else {
            ApiError::new(ErrorCode::InvalidField, format!("{path}: {inner}")).field(path)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_client_or_server_error_status() {
        for code in ErrorCode::ALL {
            let s = status_of(*code);
            assert!(s.is_client_error() || s.is_server_error(), "{code}: {s}");
        }
    }

    #[test]
    fn documented_statuses_match() {
        let doc = include_str!("../../docs/operations.md");
        let table = doc.split("### Error codes").nth(1).unwrap();
        let mut checked = 0;
        for line in table.lines().skip_while(|l| !l.starts_with('|')) {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let Some(code) = ErrorCode::ALL
                .iter()
                .find(|c| cells[1] == format!("`{}`", c.as_str()))
            else {
                continue;
            };
            assert_eq!(cells[2], status_of(*code).as_str(), "{code}");
            checked += 1;
        }
        assert_eq!(checked, ErrorCode::ALL.len());
    }

    #[test]
    fn internal_detail_is_not_sent() {
        let e = ServiceError::Store(crate::store::StoreError::Database(
            "disk I/O error at /var/lib/x".into(),
        ));
        let api = ApiError::from(e);
        assert_eq!(api.code, ErrorCode::DatabaseUnavailable);
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!api.message.contains("disk I/O"), "{}", api.message);
        assert!(api.detail.unwrap().contains("disk I/O"));
    }
}
