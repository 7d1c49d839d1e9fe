//! Group commit: writes that queue while earlier batches are in flight are flushed together,
//! in one statement and one commit. Each job is still written whole or not at all; batch-mates
//! merely share the transaction.
//!
//! There is no waiting for company: a batch is whatever queued while the previous ones were
//! in flight, so one job alone is written at once. Under load the round trip, the commit's WAL
//! flush and the notifications are paid once per batch instead of once per job.

use crate::Problem;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// What a caller is told to wait when its job was refused.
const OVERLOADED_RETRY: Duration = Duration::from_secs(1);

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
}

impl<J, O> Clone for GroupCommit<J, O> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone() }
    }
}

impl<J: Send + 'static, O: Send + 'static> GroupCommit<J, O> {
    /// Starts a writer whose `flush` writes one batch and answers each of its jobs, in order:
    /// a job may fail alone, or the whole batch with it.
    pub fn start<F, Fut>(limits: Limits, flush: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answers<O>> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(limits, queue, Arc::new(flush)));
        Self { jobs }
    }

    /// Writes `job` with the next batch.
    pub async fn write(&self, job: J) -> Result<O, Problem> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { job, queued: Instant::now(), reply }).map_err(|_| Problem::internal())?;
        answer.await.map_err(|_| Problem::internal())?
    }
}

async fn run<J, O, F, Fut>(limits: Limits, mut queue: mpsc::UnboundedReceiver<Job<J, O>>, flush: Arc<F>)
where
    J: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<J>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answers<O>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    while let Some(first) = queue.recv().await {
        // Waiting for a slot is when company gathers: whatever queued meanwhile joins.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
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
