//! The example quote request, written once: the CLI's demo sample and the base every test
//! request starts from (a test changes only the fields it is about). A 2019 LADA Vesta
//! registered in Moscow, its owner the one driver, licensed since 2005 (`tests/validation.rs`
//! checks that it is valid and round-trips).

use serde_json::{Value, json};

/// The example request, its policy starting on `start`.
pub fn request(start: chrono::NaiveDate) -> Value {
    json!({
        "vehicle": {"category": "B", "make": "LADA", "model": "VESTA", "year": 2019, "power_hp": 106,
                    "vin": "XTAGFL110KY123456", "plate": "А123ВС77", "purpose": "personal"},
        "owner": {"last_name": "Иванов", "first_name": "Иван", "middle_name": "Иванович",
                  "birth_date": "1985-04-12", "passport": "4510 123456", "region": "77", "city": "Москва"},
        "drivers": [{"last_name": "Иванов", "first_name": "Иван", "birth_date": "1985-04-12",
                     "licence": "7700 123456", "experience_since": "2005-06-01"}],
        "unlimited_drivers": false,
        "policy": {"start_date": start.to_string(), "period_months": 12}
    })
}

/// [`request`] with the policy starting `days` from today (negative: in the past).
pub fn request_in(days: i64) -> Value {
    request(chrono::Utc::now().date_naive() + chrono::Duration::days(days))
}
