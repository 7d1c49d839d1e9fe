//! Leader election with a `coordination.k8s.io/v1` Lease, the way client-go does it: the holder
//! renews `renewTime` every third of the lease duration; anyone may take a lease that was not
//! renewed for a whole duration. Every write carries the `resourceVersion` read, so two
//! candidates can never both win (the API server refuses the second with 409 Conflict).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// One candidate for one Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Elector { api, name: name.to_string(), identity: identity.to_string(), duration }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes or renews the lease if it is free, expired or ours. `Ok(false)`: someone else leads.
    pub async fn try_acquire_or_renew(&self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let held_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + held_for < now);
        if !(ours || holder.is_none() || expired) {
            return Ok(false);
        }
        let mut lease = current;
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours { spec.acquire_time } else { Some(MicroTime(now)) },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..spec
        });
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await)
    }

    /// Gives the lease up (on shutdown) so that another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %e, "releasing the lease failed; it expires by itself");
        }
    }

    /// Waits until this candidate leads (or `stop` fires: `false`).
    pub async fn acquire(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let retry = (self.duration / 5).max(Duration::from_millis(200));
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) if !logged => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "another replica leads; waiting");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: reading the lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stopped(stop) => return false,
            }
        }
    }

    /// Renews the lease until it cannot for a whole lease duration (returns: leadership lost)
    /// or `stop` fires (returns after releasing the lease).
    pub async fn hold(&self, stop: &mut watch::Receiver<bool>) -> Held {
        let every = self.duration / 3;
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped(stop) => {
                    self.release().await;
                    return Held::Released;
                }
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return Held::Lost,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the lease failed");
                    // Stop before anyone else may take the lease, not after.
                    if last_renewed.elapsed() + every >= self.duration {
                        return Held::Lost;
                    }
                }
            }
        }
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How holding the lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Released,
    Lost,
}

fn conflict_is_false(result: kube::Result<Lease>) -> kube::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
