//! The benchmark harness of the OSAGO platform (`make bench`, `make bench-quick`): it runs
//! the real local stack, drives it with an open-loop load generator, timestamps every hop
//! of every insurer result, measures the machine's own limits in the same run, and writes
//! `docs/benchmarks.md` with SVG plots and the raw data under `bench/results/`.

pub mod limits;
pub mod load;
pub mod pipeline;
pub mod procstat;
pub mod report;
pub mod stack;
pub mod statements;
pub mod stats;
pub mod svg;
pub mod tables;

/// Wall-clock microseconds since the epoch: the one clock every process on this machine
/// shares (Postgres `now()`, Kafka timestamps, the sandbox, the load generator).
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
