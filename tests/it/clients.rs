//! The official clients (clients/js/wsctl.js, clients/python/wsctl):
//! their own suites against the real binary, and 20 clients of each kind
//! (JavaScript in Node, JavaScript in headless Chromium, Python) riding a
//! real deploy, a rollback, a 2 s Redis pause, and a `docker kill` of the
//! live colour followed by `wsctl recover`, all through Nginx.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::docker::{TestStack, docker_or_skip, explain};
use serde_json::Value;

const CLIENTS: usize = 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Node finds Debian's `ws` package (node-ws) here.
const NODE_PATH: &str = "/usr/share/nodejs";

fn run_suite(command: &mut Command) {
    let output = command
        .env("WSCTL", env!("CARGO_BIN_EXE_wsctl"))
        .env("NODE_PATH", NODE_PATH)
        .output()
        .unwrap_or_else(|error| {
            panic!("{command:?} did not start ({error}): run scripts/test.sh, which installs it")
        });
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_js_client_suite_in_node() {
    run_suite(
        Command::new("node")
            .arg("--test")
            .arg(repo().join("clients/js/test/client.test.mjs")),
    );
}

#[test]
fn the_python_client_suite_under_pytest() {
    run_suite(
        Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(repo().join("clients/python/tests/test_client.py")),
    );
}

/// A driver of riders in a process group of its own (the browser driver
/// starts Chromium), killed whole when dropped: also when the test fails.
struct Driver {
    kind: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Driver {
    fn start(kind: &'static str, command: &mut Command) -> Driver {
        let mut child = command
            .env("NODE_PATH", NODE_PATH)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("{kind} driver did not start: {error}"));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        Driver {
            kind,
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// Waits for a line of stdout that `wanted` accepts; panics after `limit`.
    fn wait_line(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "the {} driver said nothing wanted within {limit:?}; exit {:?}",
                        self.kind,
                        self.child.try_wait()
                    );
                }
            }
        }
    }

    /// The report line, then the driver's exit status (pytest's asserts).
    fn finish(mut self) -> (Value, String) {
        let line = self.wait_line(Duration::from_secs(90), |line| {
            line.starts_with("{\"kind\"")
        });
        let report: Value = serde_json::from_str(&line).expect("a JSON report");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} driver did not exit",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        assert!(
            status.success(),
            "the {} driver failed ({status}):\n{stderr}",
            self.kind
        );
        (report, stderr)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

fn docker(args: &[&str]) -> Output {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        explain(&output)
    );
    output
}

fn ok(output: Output, what: &str) {
    assert!(output.status.success(), "{what}: {}", explain(&output));
}

/// Every rider of `report`: counts 1, 2, 3, ... with no gap or repeat, its
/// last count the session's, no error, back after every phase (an answer
/// between each phase's end and the next phase's start), and moved at
/// least three times (deploy, rollback, kill); and some answered
/// `unavailable` (and resent) while Redis was paused.
fn check(report: &Value, phases: &[(&str, u64, u64)]) -> String {
    let kind = report["kind"].as_str().unwrap_or("?");
    let riders = report["clients"].as_array().expect("clients");
    assert_eq!(riders.len(), CLIENTS, "{kind}: {report}");
    let (mut answered, mut reconnects, mut duplicates, mut unavailable) = (0, 0, 0, 0);
    for (i, rider) in riders.iter().enumerate() {
        let counts: Vec<u64> = serde_json::from_value(rider["counts"].clone()).expect("counts");
        let times: Vec<u64> = serde_json::from_value(rider["times"].clone()).expect("times");
        assert_eq!(rider["errors"], serde_json::json!([]), "{kind} client {i}");
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(
            counts, expected,
            "{kind} client {i}: a count skipped or repeated"
        );
        assert_eq!(rider["count"], counts.len(), "{kind} client {i}: {rider}");
        for (phase, ended, next) in phases {
            assert!(
                times.iter().any(|t| t > ended && t < next),
                "{kind} client {i} was not back after the {phase}"
            );
        }
        let moved = rider["reconnects"].as_u64().unwrap_or(0);
        assert!(moved >= 3, "{kind} client {i} moved {moved} times");
        // Moved with goodbye (1001) by the deploy and the rollback, cut
        // (1006) by the kill.
        let codes: Vec<u64> = serde_json::from_value(rider["closeCodes"].clone()).expect("codes");
        assert!(
            codes.contains(&1001) && codes.contains(&1006),
            "{kind} client {i} closed with {codes:?}"
        );
        answered += counts.len();
        reconnects += moved;
        duplicates += rider["duplicates"].as_u64().unwrap_or(0);
        unavailable += rider["unavailable"].as_u64().unwrap_or(0);
    }
    assert!(unavailable > 0, "{kind}: no client felt the Redis pause");
    format!(
        "{kind}: {answered} answered, {reconnects} reconnects, {unavailable} answered \
         unavailable and resent, {duplicates} resends answered as duplicates"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_in_node_and_chromium_and_python_clients_ride_every_move() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("drain_timeout: 8\n");
    ok(stack.wsctl(&["deploy"]), "first deploy");
    let url = format!("ws://{}/ws/chat/", stack.public);
    let stop = stack.dir.join("stop-riding");
    let clients = CLIENTS.to_string();
    let js = repo().join("clients/js/test");
    let node_driver = |script: &str| {
        let mut command = Command::new("node");
        command
            .arg(js.join(script))
            .args([url.as_str(), &clients])
            .arg(&stop);
        command
    };
    let mut drivers = vec![
        Driver::start("node", &mut node_driver("ride-node.mjs")),
        Driver::start("browser", &mut node_driver("ride-browser.mjs")),
        Driver::start(
            "python",
            Command::new("python3")
                .args(["-m", "pytest", "-s", "-q", "-p", "no:cacheprovider"])
                .arg(repo().join("clients/python/tests/ride_under_deploy.py"))
                .env("WSCTL_RIDE_URL", &url)
                .env("WSCTL_RIDE_CLIENTS", &clients)
                .env("WSCTL_RIDE_STOP", &stop),
        ),
    ];
    for driver in &mut drivers {
        driver.wait_line(Duration::from_secs(60), |line| line == "ready");
    }
    let settle = || tokio::time::sleep(Duration::from_secs(2));
    settle().await;

    let mut phases = Vec::new();
    let started = now_ms();
    ok(stack.wsctl_while_live(&["deploy"]).await, "deploy");
    phases.push(("deploy", started, now_ms()));
    settle().await;

    let started = now_ms();
    ok(stack.wsctl_while_live(&["rollback"]).await, "rollback");
    phases.push(("rollback", started, now_ms()));
    settle().await;

    let redis = format!("{}redis", stack.prefix);
    let started = now_ms();
    docker(&["pause", &redis]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    docker(&["unpause", &redis]);
    phases.push(("Redis pause", started, now_ms()));
    settle().await;

    let live = format!("{}app_blue", stack.prefix);
    assert_eq!(stack.public_status().await["color"], "blue");
    let started = now_ms();
    docker(&["kill", &live]);
    ok(stack.wsctl_while_live(&["recover"]).await, "recover");
    phases.push(("kill and recover", started, now_ms()));
    // Each client has been retrying since the kill, its full-jitter
    // backoff capped at 2 s (rider.js): its next try may come 2 s after
    // `recover` returns, then the connect and its next message. 3 s was
    // once too short for a Chromium client under the full suite's load.
    tokio::time::sleep(Duration::from_secs(6)).await;

    std::fs::write(&stop, "").expect("stop file");
    let ended = now_ms();
    // Each phase's window: from its end to the next phase's start.
    let mut windows = Vec::new();
    for (i, (name, _, end)) in phases.iter().enumerate() {
        let next = phases.get(i + 1).map_or(ended, |(_, start, _)| *start);
        windows.push((*name, *end, next));
    }
    for driver in drivers {
        let (report, _) = driver.finish();
        println!("{}", check(&report, &windows));
    }
    for (name, start, end) in &phases {
        println!("{name}: {} ms", end - start);
    }
}
