//! Service plumbing shared by core-app and the aggregator, so each idea has one place:
//! RFC 7807 problem responses, Prometheus metrics, health endpoints, logging, shutdown,
//! database pools, circuit breakers.

pub mod breaker;
pub mod db;
pub mod group_commit;
pub mod kafka;
pub mod metrics;
pub mod problem;
pub mod ratelimit;
pub mod telemetry;
pub mod trace;

pub use problem::Problem;

/// Runs `task` now and then every `every` until `shutdown` resolves (background jobs).
pub async fn periodic<F, Fut>(every: std::time::Duration, shutdown: impl Future<Output = ()>, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        task().await;
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, the signals a terminal and Kubernetes send.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
