//! The insurer sandbox: realistic fake insurer partner APIs — a product of ours for demos,
//! tests and benchmarks, configured by a TOML file of "personalities".
//!
//! Every insurer is served under `/{name}` in its API style; `/_control` changes faults at
//! run time and exposes the counters that rate-limit tests assert on.

pub mod config;
pub mod control;
pub mod engine;
pub mod kbm;
pub mod state;
pub mod styles;

use config::Config;
use state::Insurer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A built sandbox, ready to serve.
pub struct App {
    router: axum::Router,
    /// Every insurer by name; tests change faults through it directly.
    pub insurers: control::Insurers,
}

impl App {
    /// Builds the routers of all configured insurers and the control API.
    pub fn build(config: Config) -> Self {
        let insurers: BTreeMap<String, Arc<Insurer>> =
            config.insurers.into_iter().map(|p| (p.name.clone(), Arc::new(Insurer::new(p, config.seed)))).collect();
        let insurers = Arc::new(insurers);
        let router = insurers
            .iter()
            .fold(control::router(insurers.clone()), |router, (name, ins)| {
                router.nest(&format!("/{name}"), styles::router(ins.clone()))
            })
            .layer(tower_http::trace::TraceLayer::new_for_http());
        App { router, insurers }
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router).with_graceful_shutdown(shutdown).await
    }

    /// Binds `addr` and serves in the background; returns the bound address (port 0 picks one).
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tokio::spawn(self.serve(listener, std::future::pending()));
        Ok(local)
    }
}
