//! RFC 7807 `application/problem+json` errors, the only error shape our HTTP APIs answer with.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::FieldError;
use serde::Serialize;
use std::time::Duration;

/// The slug of [`Problem::overloaded`]'s type (`urn:osago:problem:overloaded`).
pub const OVERLOADED: &str = "overloaded";

/// How long a refused caller is told to wait when a service sheds load.
pub const OVERLOADED_RETRY: Duration = Duration::from_secs(1);

/// The `type` of a problem of `slug`: `urn:osago:problem:<slug>`.
pub fn type_uri(slug: &str) -> String {
    format!("urn:osago:problem:{slug}")
}

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
            kind: type_uri(slug),
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

    /// 503 with `Retry-After` from a service shedding load: it is up, but too much waits.
    /// Its own type, so that a caller can tell it from an outage (`overloaded`).
    pub fn overloaded(detail: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, OVERLOADED, detail).retry_after(retry_after)
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

    /// A database failure: 503 + `Retry-After` when the database is unreachable or
    /// overloaded (the caller may retry), 500 otherwise; the cause is logged, not shown.
    pub fn database(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unreachable = match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => true,
            // SQLSTATE classes 08 (connection exception), 53 (insufficient resources) and 57P
            // (the server shutting down or restarting, e.g. a pooled connection's backend
            // terminated meanwhile) say "not now", not "wrong".
            E::Database(d) => {
                d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57P"))
            }
            _ => false,
        };
        if unreachable {
            tracing::warn!(error = %e, "database unavailable");
            return Self::unavailable(
                "the service cannot reach its database right now; please retry",
                Duration::from_secs(2),
            );
        }
        tracing::error!(error = %e, "database error");
        Self::internal()
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

/// Middleware: an error response that is not a problem yet — a 404 or 405 from routing, a
/// 400 or 413 from an extractor's rejection — becomes one, with the same status and headers
/// (`Allow`, `Retry-After`) and its text as the detail, so that clients see one error shape.
pub async fn problem_errors(request: Request, next: Next) -> Response {
    into_problem(next.run(request).await).await
}

/// Longest plain-text error body taken over as a problem's detail.
const MAX_DETAIL: usize = 1024;

async fn into_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(CONTENT_TYPE.as_bytes()));
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("Error");
    let text = axum::body::to_bytes(body, MAX_DETAIL).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let detail = if text.is_empty() { reason.to_lowercase() } else { text };
    let problem = Problem::new(status, &reason.to_lowercase().replace(' ', "-"), detail).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(problem_parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    async fn body_of(response: Response) -> Value {
        serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap()).unwrap()
    }

    /// schemathesis finding: routing's 405 (and 404) and extractors' 413 and 400 answered
    /// with an empty or text/plain body, not problem+json.
    #[tokio::test]
    async fn plain_error_responses_become_problems_with_their_headers() {
        let plain = (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET,HEAD")]).into_response();
        let response = into_problem(plain).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(response.headers()[header::ALLOW], "GET,HEAD", "routing's Allow is kept");
        let body = body_of(response).await;
        assert_eq!(body["type"], "urn:osago:problem:method-not-allowed");
        assert_eq!(body["status"], 405);
        assert_eq!(body["detail"], "method not allowed");

        let plain = (StatusCode::PAYLOAD_TOO_LARGE, "Failed to buffer the request body: length limit exceeded");
        let response = into_problem(plain.into_response()).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = body_of(response).await;
        assert_eq!(body["type"], "urn:osago:problem:payload-too-large");
        assert_eq!(body["detail"], "Failed to buffer the request body: length limit exceeded");
    }

    #[tokio::test]
    async fn problems_and_successes_pass_unchanged() {
        let problem = Problem::conflict("taken").retry_after(Duration::from_secs(3)).into_response();
        let response = into_problem(problem).await;
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(body_of(response).await["detail"], "taken");

        let ok = (StatusCode::OK, "fine").into_response();
        let response = into_problem(ok).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    }
}
