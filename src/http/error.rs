//! The one error type at the HTTP edge: every error the proxy itself produces becomes an
//! OpenAI-shaped body `{"error":{"message","type","code"}}` with the right status and,
//! for rate limits, `Retry-After`, `retry-after-ms` and `x-should-retry`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Longest wait the OpenAI SDKs sleep through on their own; past it they are told not to.
const SDK_MAX_RETRY_WAIT: Duration = Duration::from_secs(120);

/// An error answered by the proxy itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI `type`.
    pub kind: &'static str,
    /// OpenAI `code`.
    pub code: &'static str,
    /// For 429s: when to retry.
    pub retry_after: Option<Duration>,
    /// Extra detail (e.g. per-provider states) under `error.providers`.
    pub providers: Vec<String>,
    /// What points at the fault, when something does (boxed: errors stay small).
    pub detail: Option<Box<Detail>>,
}

/// Where an error's fault is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// The request field at fault, under `error.param`.
    pub param: Option<String>,
    /// For a config that does not load: the line and column, under `error.line` and
    /// `error.column`.
    pub at: Option<(Option<usize>, Option<usize>)>,
}

impl ApiError {
    /// A new error without extras.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            code,
            retry_after: None,
            providers: Vec::new(),
            detail: None,
        }
    }

    /// The same error naming the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.detail.get_or_insert_default().param = Some(param.into());
        self
    }

    /// The same error naming a config file's line and column at fault.
    pub fn with_location(mut self, line: Option<usize>, column: Option<usize>) -> ApiError {
        self.detail.get_or_insert_default().at = Some((line, column));
        self
    }

    /// 400 for a body that is not a JSON object.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            message,
        )
    }

    /// 404 for an unknown route.
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            format!("unknown route {path}; the API lives under /v1 (POST /v1/chat/completions, GET /v1/models)"),
        )
    }

    /// 405 for a known route called with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut err = json!({
            "message": self.message,
            "type": self.kind,
            "param": self.detail.as_ref().and_then(|d| d.param.as_deref()),
            "code": self.code,
        });
        if !self.providers.is_empty() {
            err["providers"] = json!(self.providers);
        }
        if let Some((line, column)) = self.detail.as_ref().and_then(|d| d.at) {
            err["line"] = json!(line);
            err["column"] = json!(column);
        }
        json!({ "error": err })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let h = resp.headers_mut();
            let secs = wait.as_millis().div_ceil(1000).max(1);
            h.insert(
                "retry-after",
                HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
            );
            h.insert(
                "retry-after-ms",
                HeaderValue::from(u64::try_from(wait.as_millis().max(1)).unwrap_or(u64::MAX)),
            );
            if wait > SDK_MAX_RETRY_WAIT {
                h.insert("x-should-retry", HeaderValue::from_static("false"));
            }
        }
        resp
    }
}
