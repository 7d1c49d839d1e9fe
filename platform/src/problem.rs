//! RFC 7807 `application/problem+json` errors, the only error shape our HTTP APIs answer with.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::FieldError;
use serde::Serialize;
use std::time::Duration;

/// The media type of problem responses.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem response: a stable `type`, a short `title`, a human `detail`.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Field errors of a 422, every one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl Problem {
    /// A problem of `status` whose type is `urn:osago:problem:<slug>`.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:osago:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: vec![],
            retry_after: None,
        }
    }

    /// 400: the body is not JSON, or a header is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 422 listing every field error.
    pub fn invalid(errors: &domain::ValidationErrors) -> Self {
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            format!("the request has {} invalid field(s)", errors.errors().len()),
        );
        p.errors = errors.errors().to_vec();
        p
    }

    /// 404 for a resource that does not exist (or is not yours to see).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 401: no or wrong credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 409: the request conflicts with an earlier one (e.g. a reused Idempotency-Key).
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 503 with `Retry-After`: try again later.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail).retry_after(retry_after)
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after: Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many requests, slow down")
            .retry_after(retry_after)
    }

    /// 500 that reveals nothing about the cause (it is logged instead).
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error occurred; it has been logged")
    }

    /// Adds a `Retry-After` header (whole seconds, at least one).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(wait) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64));
        }
        response
    }
}
