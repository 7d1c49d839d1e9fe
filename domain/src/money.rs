//! Money amounts in whole kopecks.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Currency of an amount; OSAGO premiums are only ever in roubles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    /// Russian rouble.
    #[serde(rename = "RUB")]
    Rub,
}

impl Currency {
    /// ISO 4217 code.
    pub const fn code(self) -> &'static str {
        match self {
            Currency::Rub => "RUB",
        }
    }

    /// Sign written after the amount in Russian texts.
    pub const fn symbol(self) -> &'static str {
        match self {
            Currency::Rub => "₽",
        }
    }
}

/// An amount of money with exactly two decimal places.
///
/// The fields are private so that an amount with fractions of a kopeck cannot exist:
/// serialised amounts would otherwise silently differ from what was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Number of decimal places every amount carries.
    pub const SCALE: u32 = 2;

    /// Roubles, rounded to kopecks with half a kopeck rounded away from zero.
    ///
    /// Banker's rounding (the `Decimal` default) would round 0.125 down to 0.12, which
    /// is not how premiums are rounded.
    pub fn rub(amount: Decimal) -> Self {
        Self::new(amount, Currency::Rub)
    }

    /// Any currency, rounded to two places like [`Money::rub`].
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        let mut amount = amount.round_dp_with_strategy(Self::SCALE, RoundingStrategy::MidpointAwayFromZero);
        // Pad 5 to 5.00 so that the string form always has two places.
        amount.rescale(Self::SCALE);
        Self { amount, currency }
    }

    /// The amount, always with two decimal places.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }
}

/// Groups digits by three with spaces and uses a decimal comma, as Russian texts do.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.amount.abs().to_string();
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, "00"));
        let sign = if self.amount.is_sign_negative() && !self.amount.is_zero() { "-" } else { "" };
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(' ');
            }
            grouped.push(digit);
        }
        write!(f, "{sign}{grouped},{fraction} {}", self.currency.symbol())
    }
}

/// Wire form of [`Money`]: the amount as a decimal string so that no JSON float ever
/// carries it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyWire {
    amount: String,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyWire { amount: self.amount.to_string(), currency: self.currency }.serialize(serializer)
    }
}

/// Rejects fractions of a kopeck instead of rounding them, because an amount that
/// arrives with more places was computed wrongly somewhere else.
impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = MoneyWire::deserialize(deserializer)?;
        let amount: Decimal =
            wire.amount.parse().map_err(|e| D::Error::custom(format!("amount {:?}: {e}", wire.amount)))?;
        if amount.normalize().scale() > Self::SCALE {
            return Err(D::Error::custom(format!("amount {:?} has fractions of a kopeck", wire.amount)));
        }
        Ok(Self::new(amount, wire.currency))
    }
}

/// A premium as an insurer sent it: a positive amount in roubles, where the currency is `RUB`, the
/// pre-1998 `RUR` that some partner APIs still send, or the numeric code `643`. The error never quotes
/// more of the currency than 40 characters.
pub fn premium_in_roubles(amount: Decimal, currency: &str) -> Result<Money, String> {
    if !matches!(currency, "RUB" | "RUR" | "643") {
        let shown: String = currency.chars().take(40).collect();
        return Err(format!("premium currency {shown:?} is not roubles"));
    }
    if amount <= Decimal::ZERO {
        return Err("premium is not positive".into());
    }
    Ok(Money::rub(amount))
}

/// A decimal from a JSON number's shortest text (`8432.17`, `1e3`), so no `f64` arithmetic error
/// (`8432.1699999…`) gets into an amount.
pub fn decimal_from_json_number(number: &serde_json::Number) -> Option<Decimal> {
    let text = number.to_string();
    text.parse::<Decimal>().ok().or_else(|| Decimal::from_scientific(&text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn premiums_are_positive_roubles_under_any_of_their_codes() {
        for code in ["RUB", "RUR", "643"] {
            assert_eq!(premium_in_roubles(dec("8432.175"), code).unwrap().amount(), dec("8432.18"), "{code}");
        }
        assert_eq!(premium_in_roubles(dec("1"), "USD").unwrap_err(), "premium currency \"USD\" is not roubles");
        assert_eq!(premium_in_roubles(dec("0"), "RUB").unwrap_err(), "premium is not positive");
        let long = "Ю".repeat(100);
        assert_eq!(premium_in_roubles(dec("1"), &long).unwrap_err().chars().filter(|c| *c == 'Ю').count(), 40);
    }

    #[test]
    fn json_numbers_read_exactly() {
        let number = |text: &str| serde_json::from_str::<serde_json::Number>(text).unwrap();
        assert_eq!(decimal_from_json_number(&number("8432.17")), Some(dec("8432.17")), "not 8432.1699999…");
        assert_eq!(decimal_from_json_number(&number("1e3")), Some(dec("1000")));
        assert_eq!(decimal_from_json_number(&number("1e300")), None, "beyond Decimal");
    }

    #[test]
    fn rounds_half_a_kopeck_away_from_zero() {
        for (input, expected) in [
            ("0.125", "0.13"),
            ("0.135", "0.14"),
            ("2200.165", "2200.17"),
            ("0.124999", "0.12"),
            ("-0.125", "-0.13"),
            ("5", "5.00"),
            ("5.1", "5.10"),
        ] {
            assert_eq!(Money::rub(dec(input)).amount().to_string(), expected, "{input}");
        }
    }

    #[test]
    fn serialises_amount_as_two_place_string() {
        let json = serde_json::to_string(&Money::rub(dec("8432.17"))).unwrap();
        assert_eq!(json, r#"{"amount":"8432.17","currency":"RUB"}"#);
        let json = serde_json::to_string(&Money::rub(dec("100"))).unwrap();
        assert_eq!(json, r#"{"amount":"100.00","currency":"RUB"}"#);
    }

    #[test]
    fn deserialises_and_pads() {
        let m: Money = serde_json::from_str(r#"{"amount":"8432.1","currency":"RUB"}"#).unwrap();
        assert_eq!(m, Money::rub(dec("8432.10")));
        assert_eq!(m.amount().to_string(), "8432.10");
        let m: Money = serde_json::from_str(r#"{"amount":"1.2300","currency":"RUB"}"#).unwrap();
        assert_eq!(m.amount().to_string(), "1.23");
    }

    #[test]
    fn rejects_bad_wire_amounts() {
        for json in [
            r#"{"amount":"1.005","currency":"RUB"}"#,
            r#"{"amount":1.5,"currency":"RUB"}"#,
            r#"{"amount":"abc","currency":"RUB"}"#,
            r#"{"amount":"1.00","currency":"USD"}"#,
        ] {
            assert!(serde_json::from_str::<Money>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn displays_russian_style() {
        for (input, expected) in [
            ("8432.17", "8 432,17 ₽"),
            ("19927.35", "19 927,35 ₽"),
            ("1234567.8", "1 234 567,80 ₽"),
            ("999", "999,00 ₽"),
            ("0", "0,00 ₽"),
            ("-1000.5", "-1 000,50 ₽"),
        ] {
            assert_eq!(Money::rub(dec(input)).to_string(), expected, "{input}");
        }
    }
}
