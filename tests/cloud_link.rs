//! The link library (`cloud::run`) with a test `Handler`, against the python-socketio server over
//! mTLS: handler concurrency, one `on_connect` loop per connection, `LinkClosed` after a
//! disconnect, and pongs that no slow handler can delay.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator_agent::cloud::{self, BoxFuture, Handler, Link, LinkConfig};
use serde_json::{Value, json};
use support::cloud::{Pki, PyServer};

const CONNECT_WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Counters {
    live_loops: AtomicUsize,
    max_loops: AtomicUsize,
    connects: AtomicUsize,
    links: Mutex<Vec<Link>>,
}

struct TestHandler(Arc<Counters>);

/// Decrements the live-loop count when the `on_connect` future is dropped (cancelled).
struct LoopGuard(Arc<Counters>);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.0.live_loops.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Handler for TestHandler {
    fn on_event(&self, name: String, args: Vec<Value>, link: Link) -> BoxFuture<Vec<Value>> {
        Box::pin(async move {
            match name.as_str() {
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    vec![json!("slow done")]
                }
                "emit_back" => {
                    let _ = link
                        .emit("echoed", args.first().cloned().unwrap_or(Value::Null))
                        .await;
                    vec![]
                }
                _ => args,
            }
        })
    }

    fn on_connect(&self, link: Link) -> BoxFuture<()> {
        let c = self.0.clone();
        Box::pin(async move {
            let live = c.live_loops.fetch_add(1, Ordering::SeqCst) + 1;
            let _guard = LoopGuard(c.clone());
            c.max_loops.fetch_max(live, Ordering::SeqCst);
            c.connects.fetch_add(1, Ordering::SeqCst);
            c.links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(link.clone());
            let mut n = 0u64;
            loop {
                n += 1;
                if link.emit("tick", json!(n)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// Runs the link in the background until the returned sender is dropped or fired.
fn spawn_link(
    server: &PyServer,
    pki: &Pki,
    counters: &Arc<Counters>,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = LinkConfig {
        server: server.url(),
        ca_file: Some(pki.good.ca_cert.clone()),
        mtls_dir: pki.good.agent_dir.clone(),
        certificate: Default::default(),
        status: Default::default(),
    };
    let handler: Arc<dyn Handler> = Arc::new(TestHandler(counters.clone()));
    tokio::spawn(async move {
        let _ = cloud::run(config, handler, async move {
            let _ = stop_rx.await;
        })
        .await;
    });
    stop_tx
}

fn is_connect(v: &Value) -> bool {
    v.get("connect").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_delays_neither_pongs_nor_other_events() {
    let pki = Pki::new();
    let counters = Arc::new(Counters::default());
    tokio::task::block_in_place(|| {
        // Pings every second, dead after two: a blocked reader would lose the link.
        let mut server = PyServer::start(&pki.good, 0, 1.0, 1.0);
        let _stop = spawn_link(&server, &pki, &counters);
        server.expect(0, CONNECT_WAIT, "connect", is_connect);

        let from = server.out.len();
        server
            .send(json!({"emit": "slow", "args": [{}], "ack": true, "timeout": 15, "id": "slow"}));
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let echo = server.call("echo", vec![json!({"x": 1}), json!(2)], 7);
        assert_eq!(
            echo,
            vec![json!({"x": 1}), json!(2)],
            "ack carries the handler's values"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a fast event waited for the slow one"
        );
        let slow = server.expect(from, Duration::from_secs(15), "slow ack", |v| {
            v.get("id") == Some(&json!("slow"))
        });
        assert_eq!(slow["ack"], json!(["slow done"]), "{slow}");
        assert_eq!(
            server.out.count_from(0, |l| l.contains("\"connect\"")),
            1,
            "the link was never lost"
        );

        let ack = server.call("emit_back", vec![json!({"y": true})], 8);
        assert_eq!(ack, Vec::<Value>::new(), "an empty Vec is an empty ack");
        server.expect(from, Duration::from_secs(5), "echoed event", |v| {
            v.get("event") == Some(&json!("echoed")) && v["args"] == json!([{"y": true}])
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_on_connect_loop_runs_per_connection_and_old_links_are_closed() {
    let pki = Pki::new();
    let counters = Arc::new(Counters::default());
    let stop = tokio::task::block_in_place(|| {
        let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
        let stop = spawn_link(&server, &pki, &counters);
        server.expect(0, CONNECT_WAIT, "connect", is_connect);
        for _ in 0..3 {
            let from = server.out.len();
            server.send(json!({"disconnect": true}));
            server.expect(from, CONNECT_WAIT, "reconnect", is_connect);
        }
        // Ticks now come from one loop only: about one per second.
        std::thread::sleep(Duration::from_secs(1));
        let from = server.out.len();
        std::thread::sleep(Duration::from_secs(3));
        let ticks = server.out.count_from(from, |l| l.contains("\"tick\""));
        assert!(
            (2..=4).contains(&ticks),
            "{ticks} ticks in 3 s: more than one loop?"
        );
        (stop, server)
    });
    assert_eq!(counters.connects.load(Ordering::SeqCst), 4);
    assert_eq!(
        counters.max_loops.load(Ordering::SeqCst),
        1,
        "two on_connect loops ran at once"
    );
    assert_eq!(counters.live_loops.load(Ordering::SeqCst), 1);
    let links = counters
        .links
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for old in &links[..3] {
        assert!(
            old.emit("late", json!(null)).await.is_err(),
            "an old connection's link still accepts emits"
        );
    }
    assert_eq!(links[0].agent_id(), support::cloud::AGENT_ID);

    let (stop_tx, _server) = stop;
    let _ = stop_tx.send(());
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.live_loops.load(Ordering::SeqCst) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counters.live_loops.load(Ordering::SeqCst),
        0,
        "shutdown stops the on_connect loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_limit_get_a_busy_error_that_names_the_request() {
    let pki = Pki::new();
    let counters = Arc::new(Counters::default());
    tokio::task::block_in_place(|| {
        let mut server = PyServer::start(&pki.good, 0, 25.0, 20.0);
        let _stop = spawn_link(&server, &pki, &counters);
        server.expect(0, CONNECT_WAIT, "connect", is_connect);

        // Fill every slot with a request that takes 4 s.
        let from = server.out.len();
        for i in 0..orchestrator_agent::cloud::MAX_REQUESTS_IN_FLIGHT {
            server.send(json!({"emit": "slow", "args": [{}], "ack": true, "timeout": 30, "id": format!("s{i}")}));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let busy = server.call("echo", vec![json!({"correlation_id": 77})], 9);
        assert_eq!(busy.len(), 1, "{busy:?}");
        assert_eq!(busy[0]["status"], "error", "{busy:?}");
        assert_eq!(busy[0]["action"], "echo", "{busy:?}");
        assert_eq!(busy[0]["correlation_id"], 77, "{busy:?}");
        assert!(
            busy[0]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("busy"),
            "{busy:?}"
        );

        // The slots free up as the slow requests finish; then requests are served again.
        let last = format!("s{}", orchestrator_agent::cloud::MAX_REQUESTS_IN_FLIGHT - 1);
        server.expect(from, Duration::from_secs(20), "last slow ack", |v| {
            v.get("id") == Some(&json!(last))
        });
        let echo = server.call("echo", vec![json!({"x": 1})], 10);
        assert_eq!(echo, vec![json!({"x": 1})]);
    });
}
