//! The per-insurer poller: one runtime per `InsurerIntegration`, any number of replicas.
//!
//! It registers the insurer and renews its heartbeat, is woken by intake's
//! `NOTIFY osago_tasks '<insurer>'` (with a fallback tick and a wake-up at the next due
//! task; a busy poller stops listening and looks every claim gap instead, see [`wakeup`]),
//! claims due tasks under a lease (`FOR UPDATE SKIP LOCKED`, at most every
//! [`CLAIM_GAP`], so a busy insurer's tasks go several to a claim; an expired lease is
//! claimable again, so a killed replica's tasks are taken over), and runs one *step* per
//! claimed task — create the calculation or poll it — with at most
//! `rateLimit.maxConcurrent` steps in flight. The calls go through the insurer's
//! protections (`clients::resilience`: retry, circuit breaker, rate limit, bulkhead) and
//! must end by the step's deadline: the task's own deadline, or the lease's end, whichever
//! comes first (a call still running at the task's deadline is cut off and the task
//! expires). A final outcome is written together with its outbox event in one transaction
//! (`store`). A short wait (at most half a lease) is held in memory: the replica keeps the
//! task and its lease and calls again, writing only a new reference (unless the create may
//! be repeated: then it goes with the next write) and the lease's renewal (with the
//! progress); a longer wait, or one for the circuit breaker, writes the progress
//! and the next due time and gives the task back. What a result means is decided by pure
//! functions ([`transition`], [`schedule`]).
//!
//! The heartbeat carries the circuit breaker's state to the registry, and is sent at once
//! when the state changes, not only every [`HEARTBEAT_EVERY`].
//!
//! Metrics: `insurer_tasks_in_flight{insurer}` (steps running), `insurer_tasks_held{insurer}`
//! (tasks this replica holds, waiting included), `insurer_poller_listening{insurer}` (1 while
//! woken by notifications, 0 while busy and looking every claim gap) and
//! `insurer_time_to_offer_seconds{insurer}` (from the application's arrival to its offer
//! being written); the calls' own metrics come from `clients::resilience`.
//!
//! Logs carry the insurer and the task (= quote) id, never application data or insurers'
//! messages, which may echo it.

pub mod schedule;
mod store;
pub mod transition;
mod wakeup;

use crate::clients::{self, Breaker, BreakerState, CallContext, CallError, InsurerApi};
use crate::registry::{self, HEARTBEAT_EVERY, TASKS_CHANNEL};
use anyhow::Context;
use crds::InsurerIntegration;
use domain::events::{InsurerOutcome, QuoteEvent};
use domain::request::QuoteRequest;
use platform::db::Dedicated;
use platform::group_commit::{GroupCommit, Limits};
use platform::trace::TraceParent;
use schedule::Schedule;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};
use transition::{Cause, Transition};
use uuid::Uuid;
use wakeup::{Mode, Wakeup};

/// A poller's pooled connections by default, LISTEN's included: its claims and its writes
/// each keep a connection of their own outside the pool, so the pool serves only the
/// heartbeat, the probes and reconnections.
pub const POOL_SIZE: u32 = 3;
/// Default lease on a claimed task.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Default fallback tick: look for due tasks at least this often, notified or not.
pub const DEFAULT_FALLBACK_TICK: Duration = Duration::from_secs(1);
/// Default time given to steps in flight at shutdown before they are cut off.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A step ends this long before its lease, so its write lands while the lease is ours and
/// the next holder's first call is at least this long after our last one.
const LEASE_MARGIN: Duration = Duration::from_secs(1);
/// Shortest time between two claims. A busy insurer is woken by every intake commit; a
/// claim each time would take one task per statement (the claim is the poller's costliest
/// statement). Waiting this long after the last claim lets the tasks arriving meanwhile go
/// in one; an idle poller's first claim is not delayed. It is also the pause before looking
/// again at a due task that another replica's claim had locked.
const CLAIM_GAP: Duration = Duration::from_millis(40);
/// Tries of a write-back before the step gives up and lets the lease run out.
const WRITE_TRIES: u32 = 3;

/// The session settings of a poller's database connections: its statements find their rows by
/// key or through `tasks_due`, each planned once ([`platform::db::planned_by_key`]; the store's
/// tests check their plans), and `synchronous_commit = off`: a claim, progress, a heartbeat or
/// an outcome lost with a crashed Postgres is redone (the task is still pending and is polled
/// again), so those commits need not wait for the WAL flush; the relay flushes an outcome's
/// event before it leaves for Kafka.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    platform::db::planned_by_key(options).options([("synchronous_commit", "off")])
}

/// Everything a poller needs.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// The insurer's manifest: API, auth, timeouts, retry, rate limit, polling.
    pub manifest: InsurerIntegration,
    pub pool: PgPool,
    /// Where the Secrets the manifest refers to are mounted: `{dir}/{name}/{key}`.
    pub secrets_dir: PathBuf,
    /// This replica's name in `tasks.lease_owner`; unique among live replicas.
    pub replica_id: String,
    /// How long a claim holds a task. Raised to twice the request timeout plus two
    /// seconds when shorter, so a lease never runs out under a call in flight.
    pub lease: Duration,
    /// How often to look for due tasks without a notification (at most a second in
    /// production; tests lengthen it to prove the notification path).
    pub fallback_tick: Duration,
    /// How long shutdown waits for steps in flight before cutting them off.
    pub shutdown_grace: Duration,
}

impl PollerSettings {
    /// Settings with the default lease, tick and grace.
    pub fn new(manifest: InsurerIntegration, pool: PgPool, secrets_dir: PathBuf, replica_id: String) -> Self {
        PollerSettings {
            manifest,
            pool,
            secrets_dir,
            replica_id,
            lease: DEFAULT_LEASE,
            fallback_tick: DEFAULT_FALLBACK_TICK,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Runs the poller of `settings.manifest` until `shutdown` resolves, then stops claiming,
/// lets the steps in flight finish (within `shutdown_grace`) and releases its leases.
///
/// Fails at start when the credentials or the base URL are unusable or the database is
/// unreachable; afterwards, errors are logged and retried.
pub async fn run(settings: PollerSettings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let api = clients::for_manifest(&settings.manifest, &settings.secrets_dir)
        .with_context(|| format!("insurer {}", settings.manifest.name()))?;
    run_with_api(settings, api, shutdown).await
}

/// [`run`] with a given API client instead of the one the manifest describes.
pub async fn run_with_api(
    settings: PollerSettings,
    api: Arc<dyn InsurerApi>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let PollerSettings { manifest, pool, replica_id, lease, fallback_tick, shutdown_grace, .. } = settings;
    let insurer = manifest.name().to_string();
    let spec = &manifest.spec;
    let lease = lease.max(spec.timeouts.request.get() * 2 + LEASE_MARGIN * 2);
    let max_in_flight = usize::try_from(spec.rate_limit.max_concurrent.max(1)).unwrap_or(usize::MAX);
    let (stopping, stop) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let ctx = Arc::new(Step {
        api,
        insurer: insurer.clone(),
        lease,
        budget: lease - LEASE_MARGIN,
        schedule: Schedule::from_spec(spec),
        slots: slots.clone(),
        stop,
        writes: Writes::start(&pool, &insurer, &replica_id),
    });

    let wake = Arc::new(Notify::new());
    let mut listener = PgListener::connect_with(&pool).await.context("connecting the task listener")?;
    listener.listen(TASKS_CHANNEL).await.context("listening for tasks")?;
    let heartbeat = Heartbeat::of(&manifest, ctx.api.breaker());
    heartbeat.send(&pool).await.context("registering the insurer")?;
    let (listen_wanted, wanted) = watch::channel(true);
    let listening =
        tokio::spawn(listen(listener, pool.clone(), insurer.clone(), wake.clone(), wanted).in_current_span());
    let beating = tokio::spawn(heartbeat.repeat(pool.clone()).in_current_span());
    info!(%insurer, replica = %replica_id, max_in_flight, lease_ms = lease.as_millis() as u64, "poller started");

    let mut in_flight = JoinSet::new();
    let tasks_in_flight = metrics::gauge!("insurer_tasks_in_flight", "insurer" => insurer.clone());
    let tasks_held = metrics::gauge!("insurer_tasks_held", "insurer" => insurer.clone());
    let gauge = |held: usize| {
        tasks_in_flight.set(max_in_flight.saturating_sub(slots.available_permits()) as f64);
        tasks_held.set(held as f64);
    };
    let mut shutdown = std::pin::pin!(shutdown);
    // When some task may next be claimable, as far as this replica knows: the last look's
    // answer, brought forward by the tasks it gave back. A step ending only frees a slot; the
    // loop looks again only when something is due, notified, or on the tick, so a step costs
    // no statement of the loop's own.
    let mut look_now = true;
    let mut due_at: Option<Instant> = None;
    // The fallback look: at most `fallback_tick` after the last look, however busy the loop is.
    let mut tick = Instant::now() + fallback_tick;
    let mut last_look: Option<Instant> = None;
    let mut wakeup = Wakeup::new(CLAIM_GAP);
    let claims = Dedicated::of(&pool);
    let listening_gauge = metrics::gauge!("insurer_poller_listening", "insurer" => insurer.clone());
    listening_gauge.set(1.0);
    loop {
        while let Some(done) = in_flight.try_join_next() {
            note_done(&insurer, done, &mut due_at);
        }
        gauge(in_flight.len());
        // Held tasks sleeping until their next call take no slot. Permits are free only when no
        // held task waits for one (a released permit goes to a waiter first), and each task
        // claimed gets one of the permits taken here: a replica never claims more than it can
        // call at once.
        let free = slots.available_permits();
        let may_look = last_look.is_none_or(|at| at + CLAIM_GAP <= Instant::now());
        if free > 0 && may_look && (look_now || due_at.is_some_and(|due| due <= Instant::now())) {
            look_now = false;
            let since_previous = last_look.replace(Instant::now()).map(|at| at.elapsed());
            tick = Instant::now() + fallback_tick;
            let mut permits = slots.clone().try_acquire_many_owned(u32::try_from(free).unwrap_or(u32::MAX)).ok();
            let taken = permits.as_ref().map_or(0, |p| p.num_permits());
            let claimed = claims
                .run(async |conn| store::claim(conn, &insurer, &replica_id, lease, taken, fallback_tick).await)
                .await;
            match claimed {
                Ok(claim) => {
                    due_at = claim.next_due.map(|due| Instant::now() + due);
                    // A look that could take nothing (its slots went to a waiting step) says
                    // nothing about how busy the insurer is.
                    let mode_change =
                        if taken > 0 { wakeup.after_look(claim.tasks.len(), since_previous) } else { None };
                    if let Some(mode) = mode_change {
                        debug!(%insurer, ?mode, "claim loop switches how it learns of new tasks");
                        listen_wanted.send_replace(mode == Mode::Listening);
                        listening_gauge.set(if mode == Mode::Listening { 1.0 } else { 0.0 });
                    }
                    // Not listening, the loop looks again one gap after this look.
                    look_now = wakeup.mode() == Mode::Polling;
                    for task in claim.tasks {
                        // The quote's trace; an application stored without one is traced by its id.
                        let stored = task.traceparent.as_deref().and_then(TraceParent::parse);
                        let incoming = TraceParent::of_work(stored, task.application_id.as_u128());
                        let span = info_span!(
                            "task", %insurer, task = %task.application_id, trace_id = %incoming.trace_id()
                        );
                        let trace = platform::trace::span_in(&span, &incoming);
                        let slot = permits.as_mut().and_then(|p| p.split(1));
                        in_flight.spawn(ctx.clone().run(task, trace, slot).instrument(span));
                    }
                    gauge(in_flight.len());
                }
                Err(error) => {
                    warn!(%insurer, %error, "claiming tasks failed");
                    // A failure that comes back at once must not turn the loop into a spin.
                    due_at = Some(tick);
                }
            }
        }
        // With every slot busy, nothing is claimable: the loop waits for a slot to free up
        // (the semaphore is fair: a permit taken here is handed on at once).
        let full = slots.available_permits() == 0;
        let wanted = if look_now { Instant::now() } else { due_at.map_or(tick, |due| due.min(tick)) };
        let wake_at = last_look.map_or(wanted, |at| wanted.max(at + CLAIM_GAP));
        tokio::select! {
            () = &mut shutdown => break,
            () = wake.notified() => look_now = true,
            () = tokio::time::sleep_until(wake_at), if !full => look_now |= wake_at >= tick,
            _ = slots.acquire(), if full => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => note_done(&insurer, done, &mut due_at),
        }
    }

    listening.abort();
    // Held tasks give their tasks back instead of waiting for their next call.
    stopping.send_replace(true);
    info!(%insurer, in_flight = in_flight.len(), "poller stopping: no more claims");
    let drain = async {
        while let Some(done) = in_flight.join_next().await {
            note_done(&insurer, done, &mut None);
        }
    };
    if tokio::time::timeout(shutdown_grace, drain).await.is_err() {
        warn!(%insurer, in_flight = in_flight.len(), "shutdown grace over; cutting off the steps in flight");
        in_flight.shutdown().await;
    }
    match store::release_all(&pool, &insurer, &replica_id).await {
        Ok(0) => {}
        Ok(released) => info!(%insurer, released, "released the leases of unfinished steps"),
        Err(error) => warn!(%insurer, %error, "releasing leases failed; they run out by themselves"),
    }
    beating.abort();
    gauge(0);
    info!(%insurer, "poller stopped");
    Ok(())
}

/// Takes a finished step's next due time into `due_at`.
fn note_done(insurer: &str, done: Result<Option<Instant>, JoinError>, due_at: &mut Option<Instant>) {
    match done {
        Ok(Some(due)) => *due_at = Some(due_at.map_or(due, |known| known.min(due))),
        Ok(None) => {}
        Err(error) if error.is_panic() => {
            warn!(%insurer, "a task step panicked; its lease runs out and another step retries it")
        }
        Err(_) => {}
    }
}

/// Wakes the claim loop when intake notifies this insurer's name, while `wanted` says to
/// listen; otherwise the connection stays open but unregistered (UNLISTEN), so Postgres does
/// not signal it for every NOTIFY in the database.
async fn listen(
    mut listener: PgListener,
    pool: PgPool,
    insurer: String,
    wake: Arc<Notify>,
    mut wanted: watch::Receiver<bool>,
) {
    let mut listening = true;
    loop {
        let want = *wanted.borrow_and_update();
        if want != listening {
            let switched =
                if want { listener.listen(TASKS_CHANNEL).await } else { listener.unlisten(TASKS_CHANNEL).await };
            match switched {
                Ok(()) => listening = want,
                Err(error) => {
                    // sqlx reconnects a listener only when a read fails; a LISTEN on a connection
                    // that died would fail for ever. A new listener, unregistered until switched.
                    warn!(%insurer, %error, "task listener failed to switch; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match PgListener::connect_with(&pool).await {
                        Ok(fresh) => (listener, listening) = (fresh, false),
                        Err(error) => warn!(%insurer, %error, "task listener failed to reconnect; retrying"),
                    }
                    continue;
                }
            }
            // Tasks that arrived before the LISTEN took effect sent no notification here.
            if listening {
                wake.notify_one();
            }
        }
        // Read even while not listening, so that a connection that died is noticed (and
        // replaced) then rather than at the next LISTEN. `try_recv` is cancel-safe: a
        // notification half read stays buffered for the next call.
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            received = listener.try_recv() => match received {
                Ok(Some(notification)) if notification.payload() == insurer => wake.notify_one(),
                Ok(Some(_)) => {}
                // Reconnected; notifications sent meanwhile are lost, so look now.
                Ok(None) => wake.notify_one(),
                Err(error) => {
                    warn!(%insurer, %error, "task listener failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

/// What the poller reports to the registry.
#[derive(Clone)]
struct Heartbeat {
    name: String,
    display_name: String,
    suspended: bool,
    quote_timeout: Duration,
    breaker: Option<Arc<Breaker>>,
}

impl Heartbeat {
    fn of(manifest: &InsurerIntegration, breaker: Option<Arc<Breaker>>) -> Self {
        Heartbeat {
            name: manifest.name().to_string(),
            display_name: manifest.spec.display_name.clone(),
            suspended: manifest.spec.suspend,
            quote_timeout: manifest.spec.timeouts.quote.get(),
            breaker,
        }
    }

    async fn send(&self, pool: &PgPool) -> sqlx::Result<()> {
        let state = self.breaker.as_ref().map_or(BreakerState::Closed, |b| b.state());
        registry::heartbeat(pool, &self.name, &self.display_name, self.suspended, state.as_str(), self.quote_timeout)
            .await
    }

    /// Every [`HEARTBEAT_EVERY`], and at once whenever the breaker changes state.
    async fn repeat(self, pool: PgPool) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT_EVERY, HEARTBEAT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.breaker.as_ref().map(|b| b.subscribe());
        loop {
            let changed = async {
                match changes.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticks.tick() => {}
                still = changed => if !still { changes = None },
            }
            if let Err(error) = self.send(&pool).await {
                warn!(insurer = %self.name, %error, "heartbeat failed");
            }
        }
    }
}

/// What every step of this poller shares.
struct Step {
    api: Arc<dyn InsurerApi>,
    insurer: String,
    /// The lease a claim or a renewal takes.
    lease: Duration,
    /// A step's calls must end within this (the lease less a margin).
    budget: Duration,
    schedule: Schedule,
    /// One permit per step calling the insurer (`rateLimit.maxConcurrent`).
    slots: Arc<Semaphore>,
    /// Turns true at shutdown.
    stop: watch::Receiver<bool>,
    /// Held tasks are written back through here: those written together share a statement.
    writes: Writes,
}

/// A poller's writes of the tasks it holds ([`store::write_all`]): outcomes ([`store::Finish`])
/// and progress ([`store::Reschedule`]). Each is a group commit with one batch at a time (what comes
/// while one is written goes together in the next), and both share one connection: a slow
/// batch of one delays the other's (a renewal waits behind outcomes; a lease is renewed half a
/// budget before it runs out, and a write queued over 3 s is refused and retried).
struct Writes {
    finishes: GroupCommit<store::Finish, Option<QuoteEvent>>,
    reschedules: GroupCommit<store::Reschedule, bool>,
}

impl Writes {
    fn start(pool: &PgPool, insurer: &str, me: &str) -> Self {
        let conn = Arc::new(Dedicated::of(pool));
        let (insurer, me): (Arc<str>, Arc<str>) = (insurer.into(), me.into());
        Writes {
            finishes: writer(&conn, &insurer, &me, "insurer_finish_batch_size", "insurer_finish_overloaded_total"),
            reschedules: writer(
                &conn,
                &insurer,
                &me,
                "insurer_reschedule_batch_size",
                "insurer_reschedule_overloaded_total",
            ),
        }
    }
}

/// A group commit of one kind of write ([`store::write_all`]) on `conn`, one batch at a time,
/// with the names of its metrics.
fn writer<J>(
    conn: &Arc<Dedicated>,
    insurer: &Arc<str>,
    me: &Arc<str>,
    batch_metric: &'static str,
    overloaded_metric: &'static str,
) -> GroupCommit<J, J::Answer>
where
    J: store::Write + Send + 'static,
    J::Answer: Send + 'static,
{
    let (conn, insurer, me) = (conn.clone(), insurer.clone(), me.clone());
    let limits = Limits { in_flight: 1, ..Limits::named(batch_metric, overloaded_metric) };
    GroupCommit::start(limits, move |jobs: Vec<J>| {
        let (conn, insurer, me) = (conn.clone(), insurer.clone(), me.clone());
        async move {
            let written = conn.run(async |c| store::write_all(c, &insurer, &me, jobs).await).await;
            Ok(written.map_err(platform::Problem::database)?.into_iter().map(Ok).collect())
        }
    })
}

impl Step {
    /// One claimed task, step after step while it stays here: take a slot, call the insurer,
    /// decide; then write the outcome, or hold the task through a short wait, or give it back
    /// with its progress. Returns when the task is due again, if it was given back.
    /// `slot` is the permit the claim took for the first call.
    async fn run(
        self: Arc<Self>,
        mut task: store::ClaimedTask,
        trace: TraceParent,
        mut slot: Option<OwnedSemaphorePermit>,
    ) -> Option<Instant> {
        let claimed = Instant::now();
        let mut attempts = u32::try_from(task.attempts).unwrap_or(0);
        let age_at_claim = Duration::try_from_secs_f64(task.age).unwrap_or_default();
        let deadline = claimed + Duration::try_from_secs_f64(task.deadline_in).unwrap_or_default();
        let mut lease_end = claimed + self.budget;
        let mut stop = self.stop.clone();
        loop {
            if task.expired || deadline <= Instant::now() {
                // No call to make: the expiry needs no slot.
                let age = age_at_claim + claimed.elapsed();
                return self.write_held(&task, transition::expired(attempts), None, age, &trace).await;
            }
            let slot = match slot.take() {
                Some(permit) => permit,
                None => {
                    let waited = tokio::select! {
                        // The semaphore is never closed.
                        permit = self.slots.clone().acquire_owned() => permit.ok(),
                        _ = stop.wait_for(|stopping| *stopping) => None,
                    };
                    let Some(permit) = waited else {
                        let back = transition::unchanged(attempts, Duration::ZERO);
                        let age = age_at_claim + claimed.elapsed();
                        return self.write_held(&task, back, None, age, &trace).await.map(|due| due.min(deadline));
                    };
                    permit
                }
            };
            if Instant::now() + self.budget / 2 > lease_end {
                // A held task waited long for a slot: the lease must cover the call first.
                let renewed_at = Instant::now();
                let renewal = transition::unchanged(attempts, Duration::ZERO);
                self.write_held(&task, renewal, Some(self.lease), age_at_claim + claimed.elapsed(), &trace).await?;
                lease_end = renewed_at + self.budget;
            }
            let ctx = CallContext::new(deadline.min(lease_end)).with_trace(trace);
            let transition = match tokio::time::timeout_at(ctx.until(), self.call(&task, attempts, &ctx)).await {
                Ok(transition) => transition,
                // The quote's deadline came first: whatever the call would have said is too late.
                Err(_) if deadline <= lease_end => transition::expired(attempts + ctx.calls()),
                Err(_) => transition::after_error(&self.schedule, attempts + ctx.calls().max(1), CallError::Timeout),
            };
            drop(slot);
            let age = age_at_claim + claimed.elapsed();
            let (insurer_ref, wait, breaker_open) = match &transition {
                Transition::Reschedule { insurer_ref, attempts: now, wait, cause } => {
                    log_wait(cause, insurer_ref.is_some(), *now, *wait);
                    attempts = *now;
                    (insurer_ref.clone(), *wait, matches!(cause, Cause::BreakerOpen))
                }
                Transition::Finish { .. } => return self.write_held(&task, transition, None, age, &trace).await,
            };
            // A task waiting for this replica's breaker goes back to the table too: another
            // replica's breaker may let it through, and it should not hold a lease meanwhile.
            let stopping = *stop.borrow();
            if wait > self.budget / 2 || breaker_open || stopping {
                // The store moves the next call no later than the deadline, so that it expires on time.
                return self.write_held(&task, transition, None, age, &trace).await.map(|due| due.min(deadline));
            }
            // Held: written only when there is news to keep or the lease would not cover the
            // next call. A new reference is news unless the create may be repeated: then it
            // goes with the next write (a renewal, the outcome, or giving the task back).
            let due = (Instant::now() + wait).min(deadline);
            let news = insurer_ref.is_some() && !self.api.create_is_idempotent();
            if news || due + self.budget / 2 > lease_end {
                let renewed_at = Instant::now();
                self.write_held(&task, transition, Some(self.lease), age, &trace).await?;
                lease_end = renewed_at + self.budget;
            }
            if insurer_ref.is_some() {
                task.insurer_ref = insurer_ref;
                task.request = None;
            }
            let stopped = tokio::select! {
                () = tokio::time::sleep_until(due) => false,
                _ = stop.wait_for(|stopping| *stopping) => true,
            };
            if stopped {
                let left = due.saturating_duration_since(Instant::now());
                let back = transition::unchanged(attempts, left);
                return self.write_held(&task, back, None, age, &trace).await.map(|due| due.min(deadline));
            }
        }
    }

    async fn call(&self, task: &store::ClaimedTask, attempts: u32, ctx: &CallContext) -> Transition {
        // Every call made counts; a result without any (a test double) counts as one.
        let counted =
            |result_is_rejection: bool| attempts + if result_is_rejection { ctx.calls() } else { ctx.calls().max(1) };
        if let Some(reference) = &task.insurer_ref {
            let result = self.api.poll(reference, ctx).await;
            return transition::after_poll(&self.schedule, counted(is_rejection(&result)), result);
        }
        let request = task.request.as_deref().and_then(|json| serde_json::from_str::<QuoteRequest>(json).ok());
        let Some(request) = request else {
            return transition::unreadable_request(attempts);
        };
        let key = clients::task_key(&self.insurer, task.application_id);
        let result = self.api.create(&key, &request, ctx).await;
        transition::after_create(&self.schedule, counted(is_rejection(&result)), result)
    }

    /// [`Step::write`] for the task `run` holds, with the reference it knows, which may not be
    /// stored yet.
    async fn write_held(
        &self,
        task: &store::ClaimedTask,
        transition: Transition,
        keep: Option<Duration>,
        age: Duration,
        trace: &TraceParent,
    ) -> Option<Instant> {
        let transition = transition.with_reference(task.insurer_ref.as_deref());
        self.write(task.application_id, transition, keep, age, trace).await
    }

    /// Writes the step's result — with `keep`, renewing the lease for that long instead of
    /// giving the task back; `age` is how long ago the application arrived. Returns when the
    /// task is due again, if it was rescheduled; `None` also when the lease was lost or the
    /// write failed (the lease then runs out and another step repeats this one).
    async fn write(
        &self,
        id: Uuid,
        transition: Transition,
        keep: Option<Duration>,
        age: Duration,
        trace: &TraceParent,
    ) -> Option<Instant> {
        for tries in 1..=WRITE_TRIES {
            match self.write_once(id, &transition, keep, age, trace).await {
                Ok(false) => return None,
                Ok(true) => {
                    return match &transition {
                        Transition::Reschedule { wait, .. } => Some(Instant::now() + *wait),
                        Transition::Finish { .. } => None,
                    };
                }
                Err(error) if tries < WRITE_TRIES => {
                    warn!(%error, tries, "writing the task back failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                Err(error) => {
                    warn!(%error, "writing the task back failed; its lease runs out and the step is repeated")
                }
            }
        }
        None
    }

    /// One try of [`Step::write`]; false when the lease was lost (nothing is written then).
    async fn write_once(
        &self,
        id: Uuid,
        transition: &Transition,
        keep: Option<Duration>,
        age: Duration,
        trace: &TraceParent,
    ) -> anyhow::Result<bool> {
        let insurer = self.insurer.as_str();
        match transition {
            Transition::Reschedule { insurer_ref, attempts, wait, .. } => {
                let write = store::Reschedule {
                    application_id: id,
                    insurer_ref: insurer_ref.clone(),
                    attempts: *attempts,
                    wait: *wait,
                    keep,
                };
                let written =
                    self.writes.reschedules.write(write).await.map_err(|problem| anyhow::anyhow!(problem.detail))?;
                if !written {
                    warn!("lease lost to another replica; progress dropped");
                }
                Ok(written)
            }
            Transition::Finish { insurer_ref, attempts, outcome } => {
                let finish = store::Finish::new(insurer, id, insurer_ref.as_deref(), *attempts, outcome.clone(), trace);
                let finished =
                    self.writes.finishes.write(finish).await.map_err(|problem| anyhow::anyhow!(problem.detail))?;
                let Some(event) = finished else {
                    warn!("lease lost to another replica; outcome dropped");
                    return Ok(false);
                };
                if matches!(event.outcome, InsurerOutcome::Offer { .. }) {
                    metrics::histogram!("insurer_time_to_offer_seconds", "insurer" => insurer.to_string())
                        .record(age.as_secs_f64());
                }
                let (status, detail) = describe(&event.outcome);
                info!(status, detail, version = event.version, attempts, "task finished");
                Ok(true)
            }
        }
    }
}

/// Logs why a task waits before its next call.
fn log_wait(cause: &Cause, created: bool, attempts: u32, wait: Duration) {
    let wait_ms = wait.as_millis() as u64;
    match cause {
        Cause::Pending if created => debug!(wait_ms, "created; calculating"),
        Cause::Pending => debug!(attempts, wait_ms, "still calculating"),
        Cause::Failure(error) => warn!(%error, attempts, wait_ms, "call failed; retrying"),
        Cause::BreakerOpen => debug!(attempts, wait_ms, "circuit breaker open; waiting"),
    }
}

fn is_rejection<T>(result: &Result<T, CallError>) -> bool {
    matches!(result, Err(CallError::CircuitOpen { .. }))
}

/// The outcome for a log line: status and something safe to show — the premium, or the
/// reason's code (the text after the code may echo the application).
fn describe(outcome: &InsurerOutcome) -> (&'static str, String) {
    match outcome {
        InsurerOutcome::Pending => ("pending", String::new()),
        InsurerOutcome::Offer { offer } => ("offer", offer.premium.amount().to_string()),
        InsurerOutcome::Declined { .. } => ("declined", String::new()),
        InsurerOutcome::Failed { reason } => ("failed", reason.split(':').next().unwrap_or_default().to_string()),
        InsurerOutcome::Expired => ("expired", String::new()),
    }
}
