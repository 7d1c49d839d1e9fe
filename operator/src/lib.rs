//! The OSAGO operator: a kube-runtime controller that turns each `InsurerIntegration` into a
//! poller ConfigMap + Deployment and reports readiness, replicas and the pollers' breaker.
//!
//! - [`build`]: validate and build, pure (unit-tested field by field);
//! - [`status`]: observed state → status conditions, pure;
//! - [`controller`]: the shell — watch, server-side apply, status patch, Events, error policy;
//! - [`leader`]: a Lease so that only one of several replicas reconciles;
//! - [`run`]: all of it plus `/healthz`, `/readyz` and `/metrics`, until a shutdown signal.

pub mod aggregator;
pub mod build;
pub mod config;
pub mod controller;
pub mod leader;
pub mod status;

pub use config::Config;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shutdown signal: controllers drained, lease released.
    Shutdown,
    /// The lease was lost to another replica: stop at once (the process should exit and restart).
    LostLeadership,
}

/// A random-enough identity when none is configured: host name and process id.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "operator".to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

/// Runs the operator with `client` until `shutdown` resolves or leadership is lost.
/// `/healthz`, `/readyz` and `/metrics` are served on `listener` for the whole run.
pub async fn run(
    config: Config,
    client: Client,
    listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Exit> {
    let identity = config.identity.clone().unwrap_or_else(default_identity);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let Some(listener) = listener {
        let probe_client = client.clone();
        let ready: platform::metrics::ReadyCheck = Arc::new(move || {
            let client = probe_client.clone();
            Box::pin(async move { client.apiserver_version().await.map(|_| ()).map_err(|e| e.to_string()) })
        });
        let app = platform::metrics::routes(ready);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "health and metrics server failed");
            }
        });
    }
    metrics::gauge!("operator_leader").set(0.0);

    let elector = config.leader_election.then(|| {
        let namespace = config.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let api: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        tracing::info!(lease = %config.lease_name, %namespace, %identity, "leader election on");
        leader::Elector::new(api, &config.lease_name, &identity, config.lease_duration)
    });
    if let Some(elector) = &elector {
        let mut stop = stop_rx.clone();
        if !elector.acquire(&mut stop).await {
            return Ok(Exit::Shutdown);
        }
        tracing::info!(identity = elector.identity(), "leading");
    }
    metrics::gauge!("operator_leader").set(1.0);

    // The controllers stop on shutdown, or at once when the lease is lost.
    let (halt_tx, halt_rx) = watch::channel(false);
    let holder = elector.clone().map(|elector| {
        let mut stop = stop_rx.clone();
        let halt_tx = halt_tx.clone();
        tokio::spawn(async move {
            let held = elector.hold(&mut stop).await;
            let _ = halt_tx.send(true);
            held
        })
    });
    {
        let mut stop = stop_rx.clone();
        let halt_tx = halt_tx.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            let _ = halt_tx.send(true);
        });
    }
    let ctx = Arc::new(controller::Context::new(client, config.clone(), &identity));
    let namespaces: Vec<Option<String>> = match config.namespaces() {
        None => vec![None],
        Some(list) => list.into_iter().map(Some).collect(),
    };
    let controllers = namespaces.into_iter().map(|namespace| {
        let mut halt = halt_rx.clone();
        let halted = async move {
            let _ = halt.wait_for(|h| *h).await;
        };
        controller::run(ctx.clone(), namespace, SyncFuture::new(halted))
    });
    futures::future::join_all(controllers).await;
    metrics::gauge!("operator_leader").set(0.0);
    let exit = match holder {
        Some(handle) => match handle.await {
            Ok(leader::Held::Lost) => Exit::LostLeadership,
            _ => Exit::Shutdown,
        },
        None => Exit::Shutdown,
    };
    if exit == Exit::LostLeadership {
        tracing::error!("lost the lease to another replica; stopping");
    }
    Ok(exit)
}

/// Makes a `Send` future `Sync` (what the controller's shutdown trigger asks for) by boxing it behind a mutex.
struct SyncFuture(std::sync::Mutex<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>);

impl SyncFuture {
    fn new(f: impl Future<Output = ()> + Send + 'static) -> Self {
        SyncFuture(std::sync::Mutex::new(Box::pin(f)))
    }
}

impl Future for SyncFuture {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.0.lock().expect("not poisoned").as_mut().poll(cx)
    }
}
