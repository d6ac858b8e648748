//! Shared test helpers: start the real `wsctl` binary on a free port and talk
//! to it over real sockets.
#![allow(dead_code)]

pub mod apps;
pub mod certs;
pub mod docker;
pub mod live;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod redis_cluster;
pub mod second_engine;
pub mod sshd;
pub mod swarm;
pub mod test_log;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every environment variable of the contract, cleared so that the
/// developer's shell cannot leak into a test.
const CONTRACT_VARS: &[&str] = &[
    "COLOR",
    "REDIS_URL",
    "DEBUG",
    "SECRET_KEY",
    "HOST",
    "PORT",
    "HEARTBEAT_INTERVAL",
    "SHUTDOWN_TIMEOUT",
    "DRAIN_WINDOW",
    "SESSION_TTL",
    "MAX_MESSAGE_SIZE",
    "RATE_LIMIT",
    "MAX_CONNECTIONS",
    "ALLOWED_ORIGINS",
    "REQUIRE_AUTH",
    "ECHO_ENDPOINT",
    "BROADCAST_BUFFER",
    "BROADCAST_RATE",
    "BROADCAST_MAX_SIZE",
    "BROADCAST_REQUIRE_AUTH",
    "MAX_SESSIONS",
    "REDIS_CLUSTER",
    "RUST_LOG",
];

pub fn wsctl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsctl"));
    for var in CONTRACT_VARS {
        command.env_remove(var);
    }
    command
}

/// A running `wsctl serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `wsctl serve` on 127.0.0.1 and a free port with extra
    /// environment variables, and waits for its `listening` log line.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with_open_files(env, None)
    }

    /// Like [`Server::start`], with the process's open-file limit set to
    /// `(soft, hard)` before it starts, as a shell's `ulimit` would.
    pub fn start_with_open_files(env: &[(&str, &str)], limit: Option<(u64, u64)>) -> Server {
        Self::launch(env, limit, 0)
    }

    /// Like [`Server::start`], on a given port (a restart on the same
    /// address).
    pub fn start_on_port(env: &[(&str, &str)], port: u16) -> Server {
        Self::launch(env, None, port)
    }

    fn launch(env: &[(&str, &str)], limit: Option<(u64, u64)>, port: u16) -> Server {
        let mut command = wsctl();
        command
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((soft, hard)) = limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches no memory
            // shared with the parent.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
        let mut child = command.spawn().expect("spawn wsctl serve");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(json) = serde_json::from_str::<Value>(&line) {
                    if json["message"] == "listening" {
                        let _ =
                            addr_tx.send(json["address"].as_str().unwrap_or_default().to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("wsctl serve did not log `listening` within 20 s");
        Server { child, addr, logs }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.http(path))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("HTTP request")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// The value of one series in `/metrics`, named with its labels as
    /// exposed (`websocket_errors_total{type="rate_limited"}`); a missing
    /// series fails the test.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }

    /// Opens `/ws/chat/` (with an optional query) and returns the stream and
    /// its `connection_established` frame.
    pub async fn connect(&self, query: &str) -> (Ws, Value) {
        let (mut ws, _) = connect_async(self.ws_url(&format!("/ws/chat/{query}")))
            .await
            .expect("WebSocket upgrade");
        let greeting = recv_json(&mut ws).await;
        assert_eq!(greeting["type"], "connection_established", "{greeting}");
        (ws, greeting)
    }

    /// Polls `/readyz` until it says `ready` (200) or not (503); returns
    /// the last body. Fails the test after 20 s.
    pub async fn wait_ready(&self, ready: bool) -> Value {
        let started = Instant::now();
        loop {
            let (code, body) = self.get_json("/readyz").await;
            if (code == 200) == ready {
                return body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "readyz stayed {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `/readyz` every 5 ms for a 503 that may last only a moment
    /// (a resubscription); returns its body. Fails the test after `limit`.
    pub async fn catch_not_ready(&self, limit: Duration, why: &str) -> Value {
        let started = Instant::now();
        loop {
            let (code, body) = self.get_json("/readyz").await;
            if code == 503 {
                return body;
            }
            assert!(started.elapsed() < limit, "readyz never turned 503 {why}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn send_signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status.code(), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("wsctl did not exit within {limit:?}");
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `session_uuid` of a `connection_established` frame.
/// Sends `GET target` byte for byte (no URL library normalizes it) and
/// returns the status code and the body.
pub async fn raw_get(addr: &str, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

/// Tries a WebSocket upgrade that must be refused with an HTTP status and
/// returns that status; panics if the upgrade succeeds or fails otherwise.
pub async fn refused_upgrade_status(url: &str) -> u16 {
    match connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("upgrade failed without an HTTP status: {other}"),
        Ok(_) => panic!("upgrade accepted"),
    }
}

pub fn session_of(greeting: &Value) -> String {
    greeting["session_uuid"]
        .as_str()
        .expect("session_uuid in the greeting")
        .to_string()
}

/// The next text frame as JSON (pings and pongs skipped), within 5 s.
pub async fn recv_json(ws: &mut Ws) -> Value {
    recv_json_within(ws, Duration::from_secs(5)).await
}

pub async fn recv_json_within(ws: &mut Ws, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no frame within the time limit");
        match next {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("server frames are JSON");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next frame that is not a heartbeat.
/// Sends a `message` frame and returns the next frame that is not a
/// heartbeat (its answer).
pub async fn message(ws: &mut Ws, value: Value) -> Value {
    send_json(ws, serde_json::json!({"type": "message", "message": value})).await;
    recv_non_heartbeat(ws).await
}

pub async fn recv_non_heartbeat(ws: &mut Ws) -> Value {
    loop {
        let frame = recv_json(ws).await;
        if frame["type"] != "heartbeat" {
            return frame;
        }
    }
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

/// Reads until the server's close frame; returns its code (None when the
/// socket ended without one). Text frames on the way are returned too.
pub async fn recv_close(ws: &mut Ws) -> (Option<u16>, Vec<Value>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (frame.map(|f| u16::from(f.code)), frames);
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                frames.push(serde_json::from_str(&text).expect("JSON"));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (None, frames),
            Err(_) => panic!("no close within 15 s"),
        }
    }
}

/// Sends `each` messages on both connections (which share one session) at
/// the same time and checks that the counts they got back are exactly
/// 1..=2*each: every message counted once, none lost or doubled.
pub async fn assert_counted_exactly_once(a: Ws, b: Ws, each: usize) {
    let drive = |mut ws: Ws| async move {
        let mut counts = Vec::with_capacity(each);
        for i in 0..each {
            send_json(&mut ws, serde_json::json!({"message": i})).await;
            counts.push(
                recv_non_heartbeat(&mut ws).await["count"]
                    .as_u64()
                    .expect("count"),
            );
        }
        counts
    };
    let (from_a, from_b) = tokio::join!(drive(a), drive(b));
    let mut all: Vec<u64> = from_a.into_iter().chain(from_b).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=(2 * each) as u64).collect::<Vec<_>>());
}

/// Asserts that a run's `--json` events hold a failed analysis sample
/// whose detail names `metric` (what the new colour did wrong, not how
/// the analysis looked at it).
pub fn assert_analysis_failed_on(events: &[Value], metric: &str) {
    let failed = events
        .iter()
        .find(|event| event["event"] == "analysis" && event["verdict"] == "failed")
        .unwrap_or_else(|| panic!("no failed sample: {events:?}"));
    let detail = failed["detail"].as_str().unwrap_or("");
    assert!(detail.contains(metric), "not on {metric}: {failed}");
}
