//! The HTTP shell every style shares: base URL, timeouts, auth, bounded body reads, turning
//! statuses into [`CallError`]s — and every call through the insurer's [`Resilience`]
//! (retry, breaker, rate limit, bulkhead).

use super::resilience::{Call, CallContext, Resilience};
use super::{CallError, ClientError, Credentials};
use chrono::{DateTime, Utc};
use crds::InsurerIntegrationSpec;
use reqwest::header::{LOCATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Url};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Larger bodies are refused: no partner answer is anywhere near this.
const MAX_BODY: usize = 1 << 20;
/// The insurer's messages are cut to this many characters.
const MAX_MESSAGE: usize = 1000;

/// Extracts the human message from a style's error body.
pub(crate) type ErrorMessage = Arc<dyn Fn(&[u8]) -> Option<String> + Send + Sync>;

/// One insurer's HTTP endpoint with everything each call needs.
pub(crate) struct Http {
    client: reqwest::Client,
    /// The manifest's `baseUrl` with a trailing slash, so relative paths join under it.
    base: Url,
    credentials: Credentials,
    guard: Arc<Resilience>,
    error_message: ErrorMessage,
}

/// A successful (2xx) answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Http {
    pub fn new(
        spec: &InsurerIntegrationSpec,
        credentials: Credentials,
        error_message: impl Fn(&[u8]) -> Option<String> + Send + Sync + 'static,
        guard: Arc<Resilience>,
    ) -> Result<Self, ClientError> {
        let error_message: ErrorMessage = Arc::new(error_message);
        let raw = &spec.api.base_url;
        let mut base = Url::parse(raw).map_err(|e| ClientError::BaseUrl(raw.clone(), e.to_string()))?;
        if base.scheme() == "https" {
            // reqwest is built without a TLS backend in this workspace (see the report).
            return Err(ClientError::NoTls(raw.clone()));
        }
        if base.cannot_be_a_base() || base.query().is_some() {
            return Err(ClientError::BaseUrl(raw.clone(), "must be a plain http URL without a query".into()));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(spec.timeouts.connect.get())
            .timeout(spec.timeouts.request.get())
            .user_agent(concat!("osago-aggregator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Http { client, base, credentials, guard, error_message })
    }

    /// The protections every call goes through.
    pub fn guard(&self) -> &Arc<Resilience> {
        &self.guard
    }

    /// `path` (relative, no leading slash) under the base URL.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("a relative path joins any http base")
    }

    /// The base URL with `segments` appended, each percent-encoded (ids from insurers go here).
    pub fn url_with_segments(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("http URLs have a path").pop_if_empty().extend(segments);
        url
    }

    /// An `href` the insurer gave us, resolved against the base URL. Only the base URL's own
    /// origin is accepted: our credentials go with the request.
    pub fn resolve(&self, href: &str) -> Result<Url, CallError> {
        let url = self.base.join(href).map_err(|e| CallError::Protocol(format!("unusable href: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(CallError::Protocol("href points outside the insurer's base URL".into()));
        }
        Ok(url)
    }

    /// A request with the insurer's credentials.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.credentials.apply(self.client.request(method, url))
    }

    /// Makes `call` with `request` through the insurer's protections (retrying it when that
    /// is safe), reading the whole body. Any status but 2xx becomes the matching [`CallError`].
    pub async fn send(&self, call: Call, request: RequestBuilder, ctx: &CallContext) -> Result<Answer, CallError> {
        let request = match ctx.trace() {
            Some(trace) => request.header(platform::trace::HEADER, trace.to_string()),
            None => request,
        };
        self.guard
            .run(call, ctx, || {
                // JSON and empty bodies always clone.
                let attempt = request.try_clone().expect("a request without a streaming body");
                self.exchange(attempt)
            })
            .await
    }

    /// One try: send, read the whole body, classify the status.
    async fn exchange(&self, request: RequestBuilder) -> Result<Answer, CallError> {
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let header = |name| response.headers().get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok());
        let retry_after = header(RETRY_AFTER).and_then(|v| parse_retry_after(v, Utc::now()));
        let location = header(LOCATION).map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(CallError::Protocol(format!("response body larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        classify(status, retry_after, &body, &*self.error_message)?;
        Ok(Answer { status, retry_after, location, body })
    }
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http").field("base", &self.base.as_str()).field("credentials", &self.credentials).finish()
    }
}

/// The [`CallError`] for a non-2xx status, `Ok` for 2xx.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    error_message: &dyn Fn(&[u8]) -> Option<String>,
) -> Result<(), CallError> {
    match status {
        200..=299 => Ok(()),
        408 => Err(CallError::Timeout),
        429 => Err(CallError::RateLimited { retry_after }),
        400..=499 => {
            let message = error_message(body).unwrap_or_default();
            Err(CallError::Client { status, message: message.chars().take(MAX_MESSAGE).collect() })
        }
        500..=599 => Err(CallError::Server { status, retry_after }),
        other => Err(CallError::Protocol(format!("unexpected HTTP status {other}"))),
    }
}

/// `Retry-After` as seconds or an HTTP date; a date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A reqwest failure as a [`CallError`]; the message names the cause, not the URL. A
/// failed connect (a connect timeout included) is [`CallError::Connect`]: nothing was sent.
pub(crate) fn transport_error(error: reqwest::Error) -> CallError {
    let connect = error.is_connect();
    if error.is_timeout() && !connect {
        return CallError::Timeout;
    }
    if error.is_decode() {
        return CallError::Protocol("undecodable response".into());
    }
    let error = error.without_url();
    // reqwest's own text is generic ("error sending request"); the causes are what help.
    let mut parts = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if connect { CallError::Connect(parts.join(": ")) } else { CallError::Transport(parts.join(": ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn message(body: &[u8]) -> Option<String> {
        std::str::from_utf8(body).ok().map(str::to_string)
    }

    #[test]
    fn statuses_become_call_errors() {
        let two = Some(Duration::from_secs(2));
        type Case = (u16, Option<Duration>, &'static str, Result<(), CallError>);
        let cases: [Case; 9] = [
            (200, None, "", Ok(())),
            (202, two, "", Ok(())),
            (400, None, "vin: bad", Err(CallError::Client { status: 400, message: "vin: bad".into() })),
            (401, None, "", Err(CallError::Client { status: 401, message: "".into() })),
            (404, None, "gone", Err(CallError::Client { status: 404, message: "gone".into() })),
            (408, None, "", Err(CallError::Timeout)),
            (429, two, "", Err(CallError::RateLimited { retry_after: two })),
            (503, two, "", Err(CallError::Server { status: 503, retry_after: two })),
            (302, None, "", Err(CallError::Protocol("unexpected HTTP status 302".into()))),
        ];
        for (status, retry_after, body, expected) in cases {
            assert_eq!(classify(status, retry_after, body.as_bytes(), &message), expected, "{status}");
        }
        let long = "я".repeat(5000);
        match classify(400, None, long.as_bytes(), &message) {
            Err(CallError::Client { message, .. }) => assert_eq!(message.chars().count(), MAX_MESSAGE),
            other => panic!("{other:?}"),
        }
    }

    fn http(base_url: &str) -> Result<Http, ClientError> {
        let yaml = format!(
            "apiVersion: osago.io/v1alpha1\nkind: InsurerIntegration\nmetadata: {{name: x}}\n\
             spec: {{displayName: X, api: {{baseUrl: '{base_url}', style: operation}}}}\n"
        );
        let manifest = crds::InsurerIntegration::from_yaml(&yaml).unwrap();
        Http::new(&manifest.spec, Credentials::None, |_| None, Resilience::new("x", &manifest.spec))
    }

    #[test]
    fn urls_stay_under_the_base_url() {
        for base in ["http://127.0.0.1:9100/ingos", "http://127.0.0.1:9100/ingos/"] {
            let http = http(base).unwrap();
            assert_eq!(http.url("api/quotes").as_str(), "http://127.0.0.1:9100/ingos/api/quotes");
            assert_eq!(
                http.url_with_segments(&["contracts", "a/b c?", "offers"]).as_str(),
                "http://127.0.0.1:9100/ingos/contracts/a%2Fb%20c%3F/offers",
                "ids from insurers cannot change the path"
            );
            let resolved = |href: &str| http.resolve(href).map(|u| u.to_string());
            assert_eq!(
                resolved("/ingos/api/operations?id=op-1").unwrap(),
                "http://127.0.0.1:9100/ingos/api/operations?id=op-1"
            );
            assert_eq!(
                resolved("api/operations?id=op-1").unwrap(),
                "http://127.0.0.1:9100/ingos/api/operations?id=op-1"
            );
            for elsewhere in ["http://evil.example/steal", "//evil.example/steal", "http://127.0.0.1:9101/ingos/x"] {
                assert_eq!(
                    resolved(elsewhere),
                    Err(CallError::Protocol("href points outside the insurer's base URL".into())),
                    "{elsewhere}"
                );
            }
        }
        assert!(matches!(http("https://api.insurer.example/osago"), Err(ClientError::NoTls(_))));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
        let cases = [
            ("1", Some(Duration::from_secs(1))),
            (" 120 ", Some(Duration::from_secs(120))),
            ("0", Some(Duration::ZERO)),
            ("Mon, 30 Nov 2026 10:00:05 GMT", Some(Duration::from_secs(5))),
            ("Mon, 30 Nov 2026 09:00:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
            ("-3", None),
            ("1.5", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_retry_after(value, now), expected, "{value}");
        }
    }
}
