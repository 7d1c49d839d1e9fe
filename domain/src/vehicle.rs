//! Vehicle classification used by both the request model and the tariff.

use serde::{Deserialize, Serialize};

/// Vehicle category as written in the registration certificate.
///
/// Only `B` is priced by the tariff tables today; other categories are accepted as
/// input so that insurers can decline them with a reason instead of a parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VehicleCategory {
    A,
    M,
    B,
    BE,
    C,
    CE,
    D,
    DE,
    Tb,
    Tm,
}

/// What the vehicle is used for; taxis have their own base-rate corridor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Personal,
    Taxi,
    Training,
    Other,
}
