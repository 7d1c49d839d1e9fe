//! Group commit: writes that queue while earlier batches are in flight are flushed together,
//! in one statement and one commit. Each job is still written whole or not at all; batch-mates
//! merely share the transaction.
//!
//! There is no waiting for company: a batch is whatever queued while the previous ones were
//! in flight, so one job alone is written at once. Under load the round trip, the commit's WAL
//! flush and the notifications are paid once per batch instead of once per job.

use crate::Problem;
use crate::problem::OVERLOADED_RETRY;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Per-job answers of a flush, in the jobs' order; an `Err` of the whole fails every job.
pub type Answers<O> = Result<Vec<Result<O, Problem>>, Problem>;

/// How a [`GroupCommit`] batches, and the names of its metrics.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most jobs in one batch.
    pub max_batch: usize,
    /// Batches in flight at once (each holds one pooled connection).
    pub in_flight: usize,
    /// A job queued longer than this is refused (503) rather than written: the database is
    /// not keeping up, and the caller is better told to retry than left waiting.
    pub max_queued: Duration,
    /// Histogram of the jobs per batch.
    pub batch_size_metric: &'static str,
    /// Counter of the jobs refused for having queued too long.
    pub overloaded_metric: &'static str,
}

impl Limits {
    /// The limits both services use (64 a batch, 4 batches in flight, 3 s in the queue at
    /// most), with the names of the writer's metrics.
    pub fn named(batch_size_metric: &'static str, overloaded_metric: &'static str) -> Self {
        Limits { max_batch: 64, in_flight: 4, max_queued: Duration::from_secs(3), batch_size_metric, overloaded_metric }
    }
}

struct Job<J, O> {
    job: J,
    queued: Instant,
    reply: oneshot::Sender<Result<O, Problem>>,
}

/// The handle callers write through; the writer stops when the last handle is dropped.
pub struct GroupCommit<J, O> {
    jobs: mpsc::UnboundedSender<Job<J, O>>,
    pressure: Arc<Pressure>,
}

impl<J, O> Clone for GroupCommit<J, O> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone(), pressure: self.pressure.clone() }
    }
}

/// How long the oldest job of the latest batch had queued, and when that batch formed.
struct Pressure {
    epoch: Instant,
    /// A wait over this many milliseconds (half of `max_queued`) means backed up.
    backed_up_ms: u64,
    /// Milliseconds since `epoch` when the latest batch formed.
    at_ms: AtomicU64,
    /// Milliseconds its oldest job had queued.
    waited_ms: AtomicU64,
}

impl Pressure {
    fn record(&self, waited: Duration) {
        self.waited_ms.store(millis(waited), Ordering::Relaxed);
        self.at_ms.store(millis(self.epoch.elapsed()), Ordering::Relaxed);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a batch's queueing delay stands for the writer's state: without batches since
/// (its callers were refused), the writer is taken to have caught up.
const PRESSURE_FRESH: Duration = Duration::from_secs(1);

impl<J: Send + 'static, O: Send + 'static> GroupCommit<J, O> {
    /// Starts a writer whose `flush` writes one batch and answers each of its jobs, in order:
    /// a job may fail alone, or the whole batch with it.
    pub fn start<F, Fut>(limits: Limits, flush: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answers<O>> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        let pressure = Arc::new(Pressure {
            epoch: Instant::now(),
            backed_up_ms: millis(limits.max_queued / 2),
            at_ms: AtomicU64::new(0),
            waited_ms: AtomicU64::new(0),
        });
        tokio::spawn(run(limits, queue, Arc::new(flush), pressure.clone()));
        Self { jobs, pressure }
    }

    /// Whether the writer is backed up: the latest batch, formed in the last second, had
    /// waited over half of `max_queued`. A caller about to do costly work whose result this
    /// writer must store refuses at once instead (core-app, before the aggregator takes an
    /// application its quote store would then refuse).
    pub fn backed_up(&self) -> bool {
        let p = &self.pressure;
        let since = millis(p.epoch.elapsed()).saturating_sub(p.at_ms.load(Ordering::Relaxed));
        since <= millis(PRESSURE_FRESH) && p.waited_ms.load(Ordering::Relaxed) > p.backed_up_ms
    }

    /// Writes `job` with the next batch.
    pub async fn write(&self, job: J) -> Result<O, Problem> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { job, queued: Instant::now(), reply }).map_err(|_| Problem::internal())?;
        answer.await.map_err(|_| Problem::internal())?
    }
}

async fn run<J, O, F, Fut>(
    limits: Limits,
    mut queue: mpsc::UnboundedReceiver<Job<J, O>>,
    flush: Arc<F>,
    pressure: Arc<Pressure>,
) where
    J: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answers<O>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    while let Some(first) = queue.recv().await {
        // Waiting for a slot is when company gathers: whatever queued meanwhile joins.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // The first job is the oldest: its wait is the queue's delay.
        pressure.record(first.queued.elapsed());
        let mut jobs = vec![first];
        while jobs.len() < limits.max_batch {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A caller that gave up while queued (timed out, went away) gets no answer, so its job
        // is not written either: a retry without an idempotency key would write it twice.
        jobs.retain(|job| !job.reply.is_closed());
        let (stale, jobs): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.queued.elapsed() >= limits.max_queued);
        for job in stale {
            metrics::counter!(limits.overloaded_metric).increment(1);
            let _ = job
                .reply
                .send(Err(Problem::overloaded("too many requests are waiting; please retry", OVERLOADED_RETRY)));
        }
        if jobs.is_empty() {
            continue;
        }
        let flush = flush.clone();
        tokio::spawn(async move {
            let (jobs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.job, j.reply)).unzip();
            metrics::histogram!(limits.batch_size_metric).record(jobs.len() as f64);
            match flush(jobs).await {
                Ok(answers) => {
                    debug_assert_eq!(answers.len(), replies.len(), "one answer per job");
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(problem) => {
                    for reply in replies {
                        let _ = reply.send(Err(problem.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_is_backed_up_while_its_queue_is_slow_and_not_after() {
        let limits = Limits {
            max_batch: 64,
            in_flight: 1,
            max_queued: Duration::from_millis(200),
            batch_size_metric: "test_batch_size",
            overloaded_metric: "test_overloaded_total",
        };
        // Each batch takes 150 ms, one at a time.
        let writer = GroupCommit::start(limits, |jobs: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok(jobs.into_iter().map(Ok).collect())
        });
        assert!(!writer.backed_up(), "a writer that wrote nothing yet");
        let (a, b) = (writer.clone(), writer.clone());
        let first = tokio::spawn(async move { a.write(1).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Queued behind the first batch for ~140 ms, over half of `max_queued`.
        assert_eq!(b.write(2).await.unwrap(), 2);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert!(writer.backed_up(), "the latest batch had waited 140 ms of 200");
        // A job written at once says the queue is empty again.
        assert_eq!(writer.write(3).await.unwrap(), 3);
        assert!(!writer.backed_up(), "the latest batch did not wait");
        // And a slow batch's word does not outlive a second without batches.
        let (a, b) = (writer.clone(), writer.clone());
        let first = tokio::spawn(async move { a.write(4).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        b.write(5).await.unwrap();
        first.await.unwrap().unwrap();
        assert!(writer.backed_up());
        tokio::time::sleep(PRESSURE_FRESH + Duration::from_millis(100)).await;
        assert!(!writer.backed_up(), "no batch for a second: its callers were refused, it caught up");
    }
}
