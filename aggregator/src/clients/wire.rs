//! Helpers the styles' pure mappings share: parsing bodies into typed shapes with errors
//! that never quote the body, and checking premiums.

use super::CallError;
use domain::money::{self, Money};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

/// Parses `body` as `T`. The error says which body was wrong and where, but never quotes a
/// value from it: serde's messages would ("invalid type: string \"Иванов\"…").
pub(crate) fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|e| {
        let place = format!("line {} column {}", e.line(), e.column());
        let detail = match e.classify() {
            Category::Data if e.to_string().starts_with("missing field") => {
                let text = e.to_string();
                text.split(" at line").next().unwrap_or(&text).to_string()
            }
            Category::Data => format!("unexpected shape at {place}"),
            Category::Syntax | Category::Eof => format!("not JSON ({place})"),
            Category::Io => "unreadable".to_string(),
        };
        CallError::Protocol(format!("{what}: {detail}"))
    })
}

/// A token from the insurer (a status, a currency) fit to appear in an error: at most 40
/// characters, quoted.
pub(crate) fn token(text: &str) -> String {
    format!("{:?}", text.chars().take(40).collect::<String>())
}

/// A premium in roubles, as [`money::premium_in_roubles`] accepts it.
pub(crate) fn premium(amount: Decimal, currency: &str) -> Result<Money, CallError> {
    money::premium_in_roubles(amount, currency).map_err(CallError::Protocol)
}

/// A premium sent as a JSON number: read from its decimal text, not through `f64`
/// arithmetic, then rounded to kopecks (`8432.170000000001` is 8432.17).
pub(crate) fn decimal_from_number(number: &serde_json::Number) -> Result<Decimal, CallError> {
    money::decimal_from_json_number(number)
        .ok_or_else(|| CallError::Protocol("premium is not a representable number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        status: String,
        count: u32,
    }

    #[test]
    fn parse_errors_never_quote_the_body() {
        let cases = [
            (r#"{"status": "ok", "count": 1}"#, None),
            (r#"{"status": "ok"}"#, Some("poll body: missing field `count`")),
            (r#"{"status": "ok", "count": "Иванов"}"#, Some("poll body: unexpected shape at line 1 column 40")),
            (r#"<html>Иванов</html>"#, Some("poll body: not JSON (line 1 column 1)")),
            (r#""#, Some("poll body: not JSON (line 1 column 0)")),
        ];
        for (body, expected) in cases {
            let result = parse::<Shape>("poll body", body.as_bytes());
            match (result, expected) {
                (Ok(_), None) => {}
                (Err(CallError::Protocol(message)), Some(expected)) => {
                    assert_eq!(message, expected);
                    assert!(!message.contains("Иванов"));
                }
                (other, _) => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn premiums_are_positive_roubles_in_kopecks() {
        let number = |text: &str| serde_json::from_str::<serde_json::Number>(text).unwrap();
        let cases = [
            ("8432.17", "RUB", Ok("8432.17")),
            ("8432.170000000001", "RUR", Ok("8432.17")),
            ("8432.175", "RUB", Ok("8432.18")),
            ("1e3", "RUB", Ok("1000.00")),
            ("0", "RUB", Err("premium is not positive")),
            ("-5", "RUB", Err("premium is not positive")),
            ("100", "USD", Err("premium currency \"USD\" is not roubles")),
        ];
        for (value, currency, expected) in cases {
            let result = decimal_from_number(&number(value)).and_then(|d| premium(d, currency));
            match (result, expected) {
                (Ok(money), Ok(amount)) => assert_eq!(money.amount().to_string(), amount, "{value}"),
                (Err(CallError::Protocol(message)), Err(expected)) => assert_eq!(message, expected),
                (other, _) => panic!("{value}: {other:?}"),
            }
        }
    }
}
