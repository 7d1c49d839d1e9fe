//! The identifier and name newtypes of the quote request. Each input goes to every parser.
//!
//! Properties: no parser panics; a parsed value is normalised, so parsing it again gives
//! itself (`parse(normalised) == normalised`), and serde round-trips it unchanged.
#![no_main]

use domain::request::{Licence, Passport, PersonName, Plate, Vin};
use libfuzzer_sys::fuzz_target;

macro_rules! check {
    ($ty:ty, $input:expr) => {{
        if let Ok(value) = <$ty>::parse($input) {
            let normalised = value.as_str();
            match <$ty>::parse(normalised) {
                Ok(again) => assert_eq!(
                    again.as_str(),
                    normalised,
                    concat!(stringify!($ty), ": parsing the normalised value changed it")
                ),
                Err(e) => panic!(concat!(stringify!($ty), ": the normalised value {:?} is refused: {}"), normalised, e),
            }
            let json = serde_json::to_string(&value).expect("serialises");
            let back: $ty = serde_json::from_str(&json).expect(concat!(stringify!($ty), ": serde round trip"));
            assert_eq!(back, value);
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    check!(Vin, &input);
    check!(Plate, &input);
    check!(Licence, &input);
    check!(Passport, &input);
    check!(PersonName, &input);
});
