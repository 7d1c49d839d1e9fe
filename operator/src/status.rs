//! The pure status step: from what was observed (the Deployment, the pollers' breaker) to the
//! InsurerIntegration's status. Ready means "taking quotes": every desired poller available on
//! the current template AND the breaker not open — never merely "applied".

use crds::{BreakerState, Condition, ConditionStatus, DEGRADED, InsurerIntegrationStatus, PROGRESSING, READY};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// What the aggregator says about this insurer's pollers.
#[derive(Debug, Clone, PartialEq)]
pub enum Breaker {
    /// No aggregator configured, or it could not be asked: Ready does not wait on it.
    Unknown(String),
    /// The aggregator answered, and no poller of this insurer is registered (alive) there.
    NotRegistered,
    /// The pollers' last reported state.
    Reported { state: BreakerState, last_offer: Option<Timestamp> },
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub desired_replicas: i32,
    pub suspended: bool,
    /// The Deployment as the API server returned it after the apply.
    pub deployment: &'a Deployment,
    pub breaker: Breaker,
    pub selector: String,
    pub previous: Option<&'a InsurerIntegrationStatus>,
    pub now: Timestamp,
}

struct Verdict {
    ready: (bool, &'static str, String),
    progressing: (bool, &'static str, String),
    degraded: (bool, &'static str, String),
}

/// The status for a valid, applied integration.
pub fn compute(o: &Observed) -> InsurerIntegrationStatus {
    let status = o.deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let existing = status.replicas.unwrap_or(0);
    let observed_current = match (o.deployment.metadata.generation, status.observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        _ => false,
    };
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let rolled_out = observed_current && available == o.desired_replicas && updated == o.desired_replicas;
    let settled = rolled_out && existing == o.desired_replicas;
    let want = o.desired_replicas;
    let (breaker, last_offer) = match &o.breaker {
        Breaker::Reported { state, last_offer } => (*state, *last_offer),
        Breaker::Unknown(_) | Breaker::NotRegistered => (BreakerState::Unknown, None),
    };

    let v = if o.suspended {
        let scaling = existing > 0;
        Verdict {
            ready: (false, "Suspended", "spec.suspend is true: pollers are scaled to 0".into()),
            progressing: (
                scaling,
                if scaling { "ScalingDown" } else { "Suspended" },
                format!("{existing} poller pod(s) still running"),
            ),
            degraded: (false, "Suspended", String::new()),
        }
    } else if !rolled_out {
        let waiting = if observed_current {
            format!("{available} of {want} poller replicas available, {updated} updated")
        } else {
            "the Deployment controller has not observed the latest change yet".to_string()
        };
        let (degraded, reason) =
            if deadline_exceeded { (true, "ProgressDeadlineExceeded") } else { (false, "AsExpected") };
        Verdict {
            ready: (false, if available < want { "Unavailable" } else { "RollingOut" }, waiting.clone()),
            progressing: (true, "RollingOut", waiting.clone()),
            degraded: (degraded, reason, if degraded { waiting } else { String::new() }),
        }
    } else {
        let pods = format!("{available} of {want} poller replicas available");
        let progressing = if settled {
            (false, "RolledOut", pods.clone())
        } else {
            (true, "RollingOut", format!("{pods}, {existing} pods exist"))
        };
        match &o.breaker {
            Breaker::Reported { state: BreakerState::Open, .. } => Verdict {
                ready: (false, "BreakerOpen", format!("{pods}, but their circuit breaker is open")),
                progressing,
                degraded: (true, "BreakerOpen", "the insurer's API is failing; calls fail fast".into()),
            },
            Breaker::NotRegistered if want > 0 => Verdict {
                ready: (false, "NotRegistered", format!("{pods}, but none has registered with the aggregator")),
                progressing,
                degraded: (false, "AsExpected", String::new()),
            },
            Breaker::Unknown(why) => Verdict {
                ready: (true, "Available", format!("{pods}; breaker unknown: {why}")),
                progressing,
                degraded: (false, "AsExpected", String::new()),
            },
            _ => Verdict {
                ready: (true, "Available", format!("{pods}; breaker {}", breaker_word(breaker))),
                progressing,
                degraded: (false, "AsExpected", String::new()),
            },
        }
    };

    let previous = o.previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let condition = |kind: &str, (value, reason, message): (bool, &str, String)| {
        let status = ConditionStatus::from(value);
        let since = previous
            .iter()
            .find(|c| c.kind == kind && c.status == status)
            .map_or_else(|| Time(o.now), |c| c.last_transition_time.clone());
        Condition {
            kind: kind.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: o.generation,
        }
    };
    // An offer time the aggregator does not report keeps its last known value.
    let last_offer_time = last_offer.map(Time).or_else(|| o.previous.and_then(|p| p.last_offer_time.clone()));
    InsurerIntegrationStatus {
        observed_generation: o.generation,
        conditions: vec![
            condition(READY, v.ready),
            condition(PROGRESSING, v.progressing),
            condition(DEGRADED, v.degraded),
        ],
        replicas: existing,
        ready_replicas: available,
        breaker: Some(breaker),
        last_offer_time,
        selector: Some(o.selector.clone()),
    }
}

/// The status of an object that fails validation: nothing is applied until it changes.
pub fn invalid(
    generation: Option<i64>,
    message: &str,
    previous: Option<&InsurerIntegrationStatus>,
    now: Timestamp,
) -> InsurerIntegrationStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let conditions = [
        (READY, false, "InvalidSpec", message.to_string()),
        (PROGRESSING, false, "InvalidSpec", String::new()),
        (DEGRADED, true, "InvalidSpec", message.to_string()),
    ];
    status.conditions = conditions
        .into_iter()
        .map(|(kind, value, reason, message)| {
            let value = ConditionStatus::from(value);
            let since = status
                .condition(kind)
                .filter(|c| c.status == value)
                .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
            Condition {
                kind: kind.into(),
                status: value,
                reason: reason.into(),
                message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
    status.observed_generation = generation;
    status
}

/// Degraded after a failed apply, the rest of the status kept as it was.
pub fn apply_failed(
    generation: Option<i64>,
    message: &str,
    previous: Option<&InsurerIntegrationStatus>,
    now: Timestamp,
) -> InsurerIntegrationStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.conditions.retain(|c| c.kind != DEGRADED);
    status.conditions.push(Condition {
        kind: DEGRADED.into(),
        status: ConditionStatus::True,
        reason: "ApplyFailed".into(),
        message: message.chars().take(1000).collect(),
        last_transition_time: Time(now),
        observed_generation: generation,
    });
    status
}

fn breaker_word(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half-open",
        BreakerState::Open => "open",
        BreakerState::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(generation: i64, observed: i64, replicas: i32, updated: i32, available: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta { generation: Some(generation), ..ObjectMeta::default() },
            spec: None,
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn observe(d: &Deployment, desired: i32, suspended: bool, breaker: Breaker) -> InsurerIntegrationStatus {
        compute(&Observed {
            generation: Some(7),
            desired_replicas: desired,
            suspended,
            deployment: d,
            breaker,
            selector: "app=x".into(),
            previous: None,
            now: Timestamp::UNIX_EPOCH,
        })
    }

    fn summary(s: &InsurerIntegrationStatus) -> Vec<(String, ConditionStatus, String)> {
        s.conditions.iter().map(|c| (c.kind.clone(), c.status, c.reason.clone())).collect()
    }

    /// Name, Deployment, desired replicas, suspended, breaker → Ready, Progressing, Degraded.
    type Case = (&'static str, Deployment, i32, bool, Breaker, [(ConditionStatus, &'static str); 3]);

    fn reported(state: BreakerState) -> Breaker {
        Breaker::Reported { state, last_offer: None }
    }

    #[test]
    fn ready_needs_every_replica_available_and_a_breaker_not_open() {
        use ConditionStatus::{False as F, True as T};
        let unknown = || Breaker::Unknown("no aggregator URL configured".into());
        let cases: Vec<Case> = vec![
            (
                "all available, no aggregator",
                deployment(2, 2, 2, 2, 2),
                2,
                false,
                unknown(),
                [(T, "Available"), (F, "RolledOut"), (F, "AsExpected")],
            ),
            (
                "breaker closed",
                deployment(2, 2, 2, 2, 2),
                2,
                false,
                reported(BreakerState::Closed),
                [(T, "Available"), (F, "RolledOut"), (F, "AsExpected")],
            ),
            (
                "breaker half-open",
                deployment(2, 2, 2, 2, 2),
                2,
                false,
                reported(BreakerState::HalfOpen),
                [(T, "Available"), (F, "RolledOut"), (F, "AsExpected")],
            ),
            (
                "breaker open",
                deployment(2, 2, 2, 2, 2),
                2,
                false,
                reported(BreakerState::Open),
                [(F, "BreakerOpen"), (F, "RolledOut"), (T, "BreakerOpen")],
            ),
            (
                "not registered",
                deployment(2, 2, 2, 2, 2),
                2,
                false,
                Breaker::NotRegistered,
                [(F, "NotRegistered"), (F, "RolledOut"), (F, "AsExpected")],
            ),
            (
                "one of two available",
                deployment(2, 2, 2, 2, 1),
                2,
                false,
                unknown(),
                [(F, "Unavailable"), (T, "RollingOut"), (F, "AsExpected")],
            ),
            (
                "change not yet observed",
                deployment(3, 2, 2, 2, 2),
                2,
                false,
                unknown(),
                [(F, "RollingOut"), (T, "RollingOut"), (F, "AsExpected")],
            ),
            (
                "old pods still terminating",
                deployment(2, 2, 3, 2, 2),
                2,
                false,
                unknown(),
                [(T, "Available"), (T, "RollingOut"), (F, "AsExpected")],
            ),
            (
                "suspended, pods gone",
                deployment(2, 2, 0, 0, 0),
                0,
                true,
                unknown(),
                [(F, "Suspended"), (F, "Suspended"), (F, "Suspended")],
            ),
            (
                "suspended, scaling down",
                deployment(2, 2, 2, 0, 2),
                0,
                true,
                unknown(),
                [(F, "Suspended"), (T, "ScalingDown"), (F, "Suspended")],
            ),
        ];
        for (name, d, desired, suspended, breaker, expected) in cases {
            let status = observe(&d, desired, suspended, breaker);
            let want: Vec<_> = [READY, PROGRESSING, DEGRADED]
                .iter()
                .zip(expected)
                .map(|(k, (s, r))| (k.to_string(), s, r.to_string()))
                .collect();
            assert_eq!(summary(&status), want, "{name}");
            assert_eq!(status.observed_generation, Some(7), "{name}");
            assert!(status.conditions.iter().all(|c| c.observed_generation == Some(7)), "{name}");
        }
    }

    #[test]
    fn replicas_breaker_offer_and_selector_are_reported() {
        let offer: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        let status = observe(
            &deployment(1, 1, 3, 3, 2),
            3,
            false,
            Breaker::Reported { state: BreakerState::Closed, last_offer: Some(offer) },
        );
        assert_eq!((status.replicas, status.ready_replicas), (3, 2));
        assert_eq!(status.breaker, Some(BreakerState::Closed));
        assert_eq!(status.last_offer_time, Some(Time(offer)));
        assert_eq!(status.selector.as_deref(), Some("app=x"));
        let unknown = observe(&deployment(1, 1, 3, 3, 3), 3, false, Breaker::Unknown("x".into()));
        assert_eq!(unknown.breaker, Some(BreakerState::Unknown));
        assert!(unknown.condition(READY).unwrap().message.contains("breaker unknown: x"));
    }

    #[test]
    fn the_deadline_exceeded_rollout_is_degraded() {
        let mut d = deployment(2, 2, 2, 1, 1);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            ..DeploymentCondition::default()
        }]);
        let status = observe(&d, 2, false, Breaker::Unknown("x".into()));
        let degraded = status.condition(DEGRADED).unwrap();
        assert_eq!((degraded.status, degraded.reason.as_str()), (ConditionStatus::True, "ProgressDeadlineExceeded"));
    }

    #[test]
    fn transition_times_move_only_when_a_status_changes() {
        let d = deployment(1, 1, 1, 1, 1);
        let first = observe(&d, 1, false, reported(BreakerState::Closed));
        let later: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let again = |breaker, previous: &InsurerIntegrationStatus| {
            compute(&Observed {
                generation: Some(8),
                desired_replicas: 1,
                suspended: false,
                deployment: &d,
                breaker,
                selector: "app=x".into(),
                previous: Some(previous),
                now: later,
            })
        };
        let same = again(reported(BreakerState::HalfOpen), &first);
        assert_eq!(same.condition(READY).unwrap().last_transition_time, Time(Timestamp::UNIX_EPOCH));
        assert_eq!(same, again(reported(BreakerState::HalfOpen), &first), "nothing new: no patch");
        let opened = again(reported(BreakerState::Open), &first);
        assert_eq!(opened.condition(READY).unwrap().last_transition_time, Time(later));
        assert_eq!(opened.condition(PROGRESSING).unwrap().last_transition_time, Time(Timestamp::UNIX_EPOCH));
        // An offer time the aggregator stops reporting is kept.
        let mut with_offer = first.clone();
        with_offer.last_offer_time = Some(Time(later));
        assert_eq!(again(reported(BreakerState::Closed), &with_offer).last_offer_time, Some(Time(later)));
    }

    #[test]
    fn invalid_and_apply_failed() {
        let status = invalid(Some(4), "api.baseUrl must be http", None, Timestamp::UNIX_EPOCH);
        let ready = status.condition(READY).unwrap();
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::False, "InvalidSpec"));
        assert_eq!(status.condition(DEGRADED).unwrap().status, ConditionStatus::True);
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(invalid(Some(4), "api.baseUrl must be http", Some(&status), Timestamp::MAX), status);
        let failed = apply_failed(Some(5), "forbidden", Some(&status), Timestamp::UNIX_EPOCH);
        assert_eq!(failed.condition(DEGRADED).unwrap().reason, "ApplyFailed");
        assert_eq!(failed.condition(READY), status.condition(READY));
    }
}
