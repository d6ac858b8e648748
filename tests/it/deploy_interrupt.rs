//! Deploys that survive interruption, against the real engine and Nginx:
//! SIGTERM and SIGINT at each state boundary undo the run before the drain
//! and finish it after, with the public address answering throughout; a
//! SIGKILL at each boundary leaves an unfinished run that the next command
//! reports and `wsctl recover` repairs.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::docker::{TestStack, docker_or_skip};

const BOUNDARIES: [&str; 5] = ["start", "health", "smoke", "switch", "drain"];

/// Polls `/status` through the public address every 50 ms, counting
/// answers that are not 200 (or none at all).
struct Poller {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(public: &str) -> Poller {
        let (stop, failed, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let url = format!("http://{public}/status");
        let task = tokio::spawn({
            let (stop, failed, sent) = (stop.clone(), failed.clone(), sent.clone());
            async move {
                // A new connection per request, as a new client sees the
                // address (a reused one can race an old Nginx worker closing
                // it after a reload, which clients retry).
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                // Bounded: at most 20 minutes of polling.
                for _ in 0..24_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    let ok = matches!(client.get(&url).send().await, Ok(r) if r.status() == 200);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Poller {
            stop,
            failed,
            sent,
            task,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.failed.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }
}

/// The names of the stack's app containers that exist, with their state.
async fn app_containers(stack: &TestStack) -> Vec<(String, bool)> {
    let docker = docker_or_skip().await.unwrap();
    let mut found = Vec::new();
    for color in ["blue", "green"] {
        let name = format!("{}app_{color}", stack.prefix);
        if let Ok(info) = docker.inspect_container(&name, None).await {
            let running = info.state.and_then(|state| state.running).unwrap_or(false);
            found.push((color.to_string(), running));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_at_each_state_boundary_leave_a_consistent_stack() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let poller = Poller::start(&stack.public);

    for (i, boundary) in BOUNDARIES.iter().enumerate() {
        let signal = if i % 2 == 0 { "TERM" } else { "INT" };
        let live = stack.public_status().await["color"]
            .as_str()
            .unwrap()
            .to_string();
        let mut run = stack.spawn(&["deploy"]);
        assert!(run.wait_for_step(boundary), "{boundary}: {:?}", run.seen);
        run.signal(signal);
        let (code, stdout, stderr) = run.finish();
        let expected = if signal == "TERM" { 143 } else { 130 };
        assert_eq!(code, Some(expected), "{boundary}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("interrupted by SIG{signal}")) && stderr.contains("traffic"),
            "{boundary}: the one line says where traffic is: {stderr}"
        );
        let status = stack.status_json();
        assert!(status["lock"].is_null(), "{boundary}: lock left: {status}");
        assert!(status["disagreement"].is_null(), "{boundary}: {status}");
        let containers = app_containers(&stack).await;
        let now = stack.public_status().await["color"]
            .as_str()
            .unwrap()
            .to_string();
        if *boundary == "drain" {
            // Past the point of no return: the deploy finished.
            assert_ne!(now, live, "{boundary}: {stdout}");
            assert!(stderr.contains("finished"), "{stderr}");
            assert!(
                containers.contains(&(now.clone(), true))
                    && containers.contains(&(live.clone(), false)),
                "{boundary}: {containers:?}"
            );
        } else {
            assert_eq!(now, live, "{boundary}: traffic moved: {stdout}");
            assert!(stderr.contains("undone"), "{stderr}");
            assert!(
                containers.contains(&(live.clone(), true)),
                "{boundary}: {containers:?}"
            );
            assert!(
                !containers
                    .iter()
                    .any(|(color, running)| *color != live && *running),
                "{boundary}: the standby is left running: {containers:?}"
            );
        }
        assert_eq!(status["history"][0]["outcome"], "interrupted", "{status}");
    }
    // No `unlock --force`, no `recover`: the next deploy just works.
    let next = stack.wsctl(&["deploy"]);
    assert_eq!(
        next.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    let (failed, sent) = poller.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests through Nginx failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_each_state_boundary_is_reported_and_recovered() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);

    for boundary in BOUNDARIES {
        let mut run = stack.spawn(&["deploy"]);
        assert!(run.wait_for_step(boundary), "{boundary}: {:?}", run.seen);
        run.signal("KILL");
        let (code, _, _) = run.finish();
        assert_eq!(code, None, "{boundary}: killed by a signal");

        let status = stack.status_json();
        let unfinished = status["unfinished"].as_array().unwrap();
        assert_eq!(unfinished.len(), 1, "{boundary}: {status}");
        assert_eq!(unfinished[0]["running"], false, "{boundary}: {status}");
        assert_eq!(unfinished[0]["action"], "deploy");
        let text = stack.wsctl(&["status"]);
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("did not finish"),
            "{boundary}: {}",
            String::from_utf8_lossy(&text.stdout)
        );

        let recover = stack.wsctl(&["recover"]);
        assert_eq!(
            recover.status.code(),
            Some(0),
            "{boundary}: {}{}",
            String::from_utf8_lossy(&recover.stdout),
            String::from_utf8_lossy(&recover.stderr)
        );
        let status = stack.status_json();
        assert!(
            status["unfinished"].as_array().unwrap().is_empty(),
            "{status}"
        );
        assert!(status["disagreement"].is_null(), "{status}");
        assert!(status["lock"].is_null(), "{status}");
        let live = status["live"].as_str().unwrap().to_string();
        assert_eq!(stack.public_status().await["color"], live.as_str());
        let running: Vec<_> = app_containers(&stack)
            .await
            .into_iter()
            .filter(|(_, running)| *running)
            .collect();
        assert_eq!(running, [(live.clone(), true)], "{boundary}: {status}");
        let recovered = status["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|run| run["outcome"] == "recovered");
        assert!(recovered, "{boundary}: {status}");

        let deploy = stack.wsctl(&["deploy"]);
        assert_eq!(
            deploy.status.code(),
            Some(0),
            "{boundary}: {}",
            String::from_utf8_lossy(&deploy.stderr)
        );
        assert_ne!(stack.public_status().await["color"], live.as_str());
    }
}
