//! From a quote request to the facts the tariff prices.

use super::{Driver, QuoteRequest};
use crate::tariff::{DriverFactors, Drivers, KbmClass, TariffInput, full_years_between};

impl QuoteRequest {
    /// The tariff's view of this request; `kbm_of` supplies each listed driver's bonus-malus
    /// class (insurers look it up in the union database by licence).
    pub fn tariff_input(&self, kbm_of: impl Fn(&Driver) -> KbmClass) -> TariffInput {
        let start = self.policy.start_date;
        let drivers = if self.unlimited_drivers {
            Drivers::Unlimited
        } else {
            Drivers::Listed(
                self.drivers
                    .iter()
                    .map(|d| DriverFactors {
                        age_years: full_years_between(d.birth_date, start),
                        experience_years: full_years_between(d.experience_since, start),
                        kbm_class: kbm_of(d),
                    })
                    .collect(),
            )
        };
        TariffInput {
            policy_start: start,
            category: self.vehicle.category,
            purpose: self.vehicle.purpose,
            power_hp: self.vehicle.power_hp,
            region: self.owner.region.clone(),
            city: self.owner.city.clone(),
            drivers,
            period_months: self.policy.period_months,
            gross_violations: false,
        }
    }
}
