//! Counting full years, as ages and driving experience are counted.

use chrono::{Datelike, NaiveDate};

/// Full years from `from` to `to`; 0 if `to` is not after `from`.
///
/// Someone born on 29 February completes a year on 28 February in common years:
/// ГК РФ ст. 192 п. 3 ends a period that falls on a missing day on the last day of
/// that month.
pub fn full_years_between(from: NaiveDate, to: NaiveDate) -> u32 {
    if to <= from {
        return 0;
    }
    let years = to.year() - from.year();
    let anniversary = from
        .with_year(to.year())
        .or_else(|| NaiveDate::from_ymd_opt(to.year(), 2, 28))
        .expect("28 February exists every year");
    let full = if to < anniversary { years - 1 } else { years };
    u32::try_from(full).expect("to is after from")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn counts_full_years() {
        for (from, to, years) in [
            ("1984-06-15", "2025-06-14", 40),
            ("1984-06-15", "2025-06-15", 41),
            ("1984-06-15", "2025-12-31", 41),
            ("2000-01-01", "2000-12-31", 0),
            ("2000-12-31", "2001-01-01", 0),
            ("2025-06-15", "2025-06-15", 0),
            ("2025-06-15", "2020-06-15", 0),
            // Born on 29 February.
            ("2000-02-29", "2018-02-27", 17),
            ("2000-02-29", "2018-02-28", 18),
            ("2000-02-29", "2018-03-01", 18),
            ("2000-02-29", "2020-02-28", 19),
            ("2000-02-29", "2020-02-29", 20),
            ("2000-02-29", "2001-02-28", 1),
            // Reaching 29 February in a leap year from an ordinary date.
            ("2003-02-28", "2004-02-29", 1),
            ("2003-03-01", "2004-02-29", 0),
        ] {
            let got = full_years_between(NaiveDate::from_str(from).unwrap(), NaiveDate::from_str(to).unwrap());
            assert_eq!(got, years, "{from} → {to}");
        }
    }
}
