//! The load generator's pacing: arrivals leave on time whatever else keeps the CPU busy. A
//! binary of its own, because one test saturates every core and would starve the timing of
//! tests running beside it.

use axum::Router;
use axum::routing::{get, post};
use bench::load::{client, open_loop};
use indicatif::ProgressBar;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// The tests take turns: the saturated machine of one would make the other's arrivals late.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stand-in for core-app: every quote is created, and its stream ends at once with `complete`.
async fn platform() -> String {
    let app = Router::new()
        .route(
            "/api/v1/quotes",
            post(|| async { (axum::http::StatusCode::CREATED, axum::Json(json!({ "id": Uuid::new_v4() }))) }),
        )
        .route(
            "/api/v1/quotes/{id}/events",
            get(|| async { ([("content-type", "text/event-stream")], "id: 1\nevent: complete\ndata: {}\n\n") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn arrivals_stay_on_time_while_the_callers_runtime_is_busy() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let base = platform().await;
    // The caller's only worker is taken for 60 ms at a time, as a busy step's stream
    // reading takes it; no CPU is used, so only the runtime is busy, not the machine.
    let busy = tokio::spawn(async {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(60));
            tokio::task::yield_now().await;
        }
    });
    let vins = AtomicU64::new(0);
    let out =
        open_loop(&client(), &base, 100.0, Duration::from_millis(800), 1_000, &vins, &ProgressBar::hidden()).await;
    busy.await.expect("busy task");
    // Paced on the caller's runtime, about two arrivals in three would be over 20 ms late
    // here; a few may be on a machine whose CPU is shared (the test runs among others).
    assert!(out.late <= 4, "{} of 80 arrivals more than 20 ms late", out.late);
    assert_eq!(out.shed, 0);
    assert_eq!(out.runs.len(), 80);
    assert!(out.runs.iter().all(|r| r.complete && r.error.is_none()), "every quote followed to complete");
    assert_eq!(vins.load(Ordering::Relaxed), 80, "one VIN per arrival");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn arrivals_stay_on_time_while_the_machine_is_saturated() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let base = platform().await;
    // Many more busy threads than cores, at the default priority: a saturated machine, as a
    // ramp step past the knee makes it.
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..cores * 12)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let vins = AtomicU64::new(0);
    let out =
        open_loop(&client(), &base, 100.0, Duration::from_millis(800), 1_000, &vins, &ProgressBar::hidden()).await;
    stop.store(true, Ordering::Relaxed);
    hogs.into_iter().for_each(|h| h.join().expect("hog"));
    assert!(out.pacer_raised, "the pacer could not raise its priority (the bench runs as root)");
    assert!(out.late <= 4, "{} of 80 arrivals more than 20 ms late", out.late);
    assert_eq!(out.runs.len(), 80);
}
