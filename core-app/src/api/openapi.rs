//! The OpenAPI document of the public API, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

/// The public API.
#[derive(OpenApi)]
#[openapi(
    info(title = "OSAGO quote platform", description = "Compare OSAGO prices from every insurer; results stream as SSE."),
    paths(super::quotes::create, super::quotes::get, super::events::stream, super::insurers::list),
    tags((name = "quotes"), (name = "insurers"))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
