//! A toxiproxy-server of the test's own (built by `scripts/toxiproxy.sh`), and a client of its
//! HTTP API: proxies between pollers and an insurer, toxics added and removed at run time.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary: `$TOXIPROXY_SERVER`, else `.tools/bin/toxiproxy-server` of this checkout.
fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("TOXIPROXY_SERVER") {
        return path.into();
    }
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/bin/toxiproxy-server"));
    assert!(
        path.exists(),
        "{} is missing: run `scripts/toxiproxy.sh` (make test does) to build toxiproxy from Go modules",
        path.display()
    );
    path
}

/// A running toxiproxy-server on a free loopback port, killed when dropped (and with the
/// test's thread, should the test process die first).
pub struct Toxiproxy {
    child: Child,
    api: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("toxiproxy log kept in {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

impl Toxiproxy {
    pub async fn start() -> Toxiproxy {
        let port = testkit::free_port();
        let log_path = std::env::temp_dir().join(format!("toxiproxy-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(binary())
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("toxiproxy-server starts");
        let proxy = Toxiproxy {
            child,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            log: log_path,
        };
        super::eventually("toxiproxy answers", Duration::from_secs(20), || async {
            proxy.http.get(format!("{}/version", proxy.api)).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        proxy
    }

    /// A new proxy to `upstream` on a free loopback port.
    pub async fn proxy(&self, name: &str, upstream: SocketAddr) -> Proxy {
        let body = json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string(), "enabled": true});
        let response = self.http.post(format!("{}/proxies", self.api)).json(&body).send().await.expect("toxiproxy");
        assert_eq!(response.status(), 201, "creating proxy {name}: {}", response.text().await.unwrap_or_default());
        let created: Value = response.json().await.unwrap();
        let listen = created["listen"].as_str().expect("listen").parse().expect("listen address");
        Proxy { api: format!("{}/proxies/{name}", self.api), http: self.http.clone(), listen }
    }
}

/// One proxy: pollers call `listen` instead of the insurer.
pub struct Proxy {
    api: String,
    http: reqwest::Client,
    pub listen: SocketAddr,
}

/// Which direction a toxic acts on: `Downstream` is insurer → poller (answers), `Upstream`
/// poller → insurer (requests).
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Upstream,
    Downstream,
}

impl Proxy {
    /// The URL of `path` (e.g. `/alfa`) through the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Adds a toxic (`latency`, `reset_peer`, `timeout`, `slicer`, `bandwidth`, …) to every
    /// connection, open or new.
    pub async fn add(&self, name: &str, kind: &str, direction: Direction, attributes: Value) {
        let stream = match direction {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        };
        let body = json!({"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes});
        let response = self.http.post(format!("{}/toxics", self.api)).json(&body).send().await.expect("toxiproxy");
        assert!(response.status().is_success(), "adding toxic {name}: {}", response.text().await.unwrap_or_default());
    }

    /// Removes a toxic.
    pub async fn remove(&self, name: &str) {
        let response = self.http.delete(format!("{}/toxics/{name}", self.api)).send().await.expect("toxiproxy");
        assert!(response.status().is_success(), "removing toxic {name}: {}", response.text().await.unwrap_or_default());
    }
}
