//! The OpenAPI document of the public API, generated from the handlers' annotations.

use axum::Json;
use serde::Serialize;
use utoipa::OpenApi;

/// The public API.
#[derive(OpenApi)]
#[openapi(
    info(title = "OSAGO quote platform", description = "Compare OSAGO prices from every insurer; results stream as SSE."),
    paths(super::quotes::create, super::quotes::get, super::events::stream, super::insurers::list),
    components(schemas(Problem, FieldError, StreamEvent)),
    tags((name = "quotes"), (name = "insurers"))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// An RFC 7807 `application/problem+json` body, the shape of every error (the schema of
/// [`platform::Problem`], which does not depend on utoipa).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:osago:problem:<kind>`, stable for each kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "urn:osago:problem:validation")]
    pub kind: String,
    /// The HTTP status text.
    #[schema(example = "Unprocessable Entity")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong, for people.
    #[schema(example = "the request has 1 invalid field(s)")]
    pub detail: String,
    /// A 422's field errors, every one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request (the schema of [`domain::FieldError`]).
#[derive(Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the field, e.g. `drivers[0].birth_date`.
    #[schema(example = "vehicle.vin")]
    pub field: String,
    #[schema(example = "VIN must be 17 characters, got 16")]
    pub message: String,
}

/// One Server-Sent Event of `GET /api/v1/quotes/{id}/events`: the schema of each event of
/// the stream (OpenAPI 3.2's `itemSchema`), as SSE clients parse it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    pub event: StreamEventName,
    /// Increasing within the quote; `Last-Event-ID` resumes after it.
    #[schema(pattern = "^[0-9]+$", example = "3")]
    pub id: String,
    /// A JSON object: `insurer`, `display_name`, `status`, and `offer` or `reason`
    /// (`complete`: the quote's final state).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// The kinds of events.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamEventName {
    /// An insurer's status changed (declined, failed, expired).
    Status,
    /// An insurer made an offer.
    Offer,
    /// Every insurer has answered or expired; the last event.
    Complete,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::Duration;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn operations(doc: &Value) -> Vec<(String, &Value)> {
        let mut all = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((format!("{} {path}", method.to_uppercase()), operation));
            }
        }
        all
    }

    /// schemathesis run 1 (the document's own gaps): error responses had no schema, 413
    /// had no content type, 429 was missing everywhere, Retry-After and Location were not
    /// declared.
    #[test]
    fn every_error_is_a_documented_problem_and_every_operation_may_answer_429() {
        let doc = document();
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["type"].is_object());
        for (operation, spec) in operations(&doc) {
            let responses = spec["responses"].as_object().unwrap();
            assert!(responses.contains_key("429"), "{operation}: no 429");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    assert_eq!(schema["$ref"], "#/components/schemas/Problem", "{operation} {status}: {response}");
                }
                if status == "429" || status == "503" {
                    assert!(response["headers"]["Retry-After"].is_object(), "{operation} {status}: no Retry-After");
                }
            }
        }
        let create = &doc["paths"]["/api/v1/quotes"]["post"]["responses"];
        assert!(create["201"]["headers"]["Location"].is_object());
        assert!(create["413"]["content"]["application/problem+json"].is_object());
        // schemathesis run 2: each event of the stream was checked against `string`.
        let events = &doc["paths"]["/api/v1/quotes/{id}/events"]["get"]["responses"];
        assert_eq!(events["200"]["content"]["text/event-stream"]["schema"]["$ref"], "#/components/schemas/StreamEvent");
    }

    /// A router whose handlers never reach the database or the aggregator in these tests.
    async fn serve() -> String {
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:9/none").unwrap();
        let aggregator =
            crate::aggregator_client::AggregatorClient::new("http://127.0.0.1:9", "t", Duration::from_secs(1));
        let state = super::super::AppState::new(pool, Default::default(), aggregator.unwrap(), Default::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, super::super::router(state)).await });
        url
    }

    /// schemathesis run 1: a method a path does not have was a 405 with an empty body; an
    /// unknown path a 404 with none; a body over 64 KiB and an unreadable `last_event_id`
    /// were answered in text/plain.
    #[tokio::test]
    async fn routing_and_extractor_errors_are_problems() {
        let base = serve().await;
        let http = reqwest::Client::new();
        let uuid = uuid::Uuid::nil();
        let cases = [
            (http.delete(format!("{base}/api/v1/quotes")), 405),
            (http.put(format!("{base}/api/v1/insurers")), 405),
            (http.get(format!("{base}/api/v2/nothing")), 404),
            (http.post(format!("{base}/api/v1/quotes")).body(vec![b' '; super::super::BODY_LIMIT + 1]), 413),
            (http.get(format!("{base}/api/v1/quotes/{uuid}/events?last_event_id=x")), 400),
        ];
        for (request, status) in cases {
            let response = request.send().await.unwrap();
            let what = format!("{} {}", response.status(), response.url());
            assert_eq!(response.status(), status, "{what}");
            assert_eq!(response.headers()["content-type"], platform::problem::CONTENT_TYPE, "{what}");
            if status == 405 {
                assert!(response.headers().contains_key("allow"), "{what}: Allow is kept");
            }
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["status"], status, "{what}");
            assert!(problem["type"].as_str().unwrap().starts_with("urn:osago:problem:"), "{what}");
        }
    }
}
