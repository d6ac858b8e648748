//! The shipped Nginx config against hostile requests, on the real Docker
//! Engine: no spelling of `/metrics` or `/status` gets past the private
//! networks, and no token reaches the access log.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip, explain};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Spellings of the private endpoints a rule on the exact path would miss.
const SPELLINGS: &[&str] = &[
    "/status",
    "/metrics",
    "/status/",
    "/metrics/",
    "/status?x=1",
    "/metrics?format=text",
    "//status",
    "//metrics",
    "/STATUS",
    "/Metrics",
    "/%73tatus",
    "/%6detrics",
    "/status%2F",
    "/ws/../status",
    "/ws/%2e%2e/metrics",
    "/./status",
];

#[tokio::test]
async fn private_endpoints_stay_private_in_every_spelling() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // The test reaches Nginx from the host through the Docker gateway,
    // which this allow list leaves out.
    let stack = TestStack::new("private_networks: [\"127.0.0.0/8\"]\n");
    let output = stack.wsctl(&["deploy"]);
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    for path in SPELLINGS {
        let (code, body) = common::raw_get(&stack.public, path).await;
        assert_eq!(code, 403, "{path} answered {code} from outside: {body}");
    }
    // Public paths still answer, with a token in the query string.
    let (code, _) = common::raw_get(&stack.public, "/healthz?token=s3cr3t-t0ken").await;
    assert_eq!(code, 200);

    // With the gateway in the allow list, the real answers come back:
    // the exact paths answer, every other spelling is the service's 404.
    stack.write_config("private_networks: [\"127.0.0.0/8\", \"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n");
    let output = stack.wsctl(&["switch", "--color", "blue"]);
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    for path in SPELLINGS {
        let (code, body) = common::raw_get(&stack.public, path).await;
        let exact = ["/status", "/metrics", "/status?x=1", "/metrics?format=text"];
        let expected = if exact.contains(path) { 200 } else { 404 };
        assert_eq!(code, expected, "{path} from inside: {body}");
    }

    // The token never reached Nginx's access log.
    let logs = std::process::Command::new("docker")
        .args(["logs", &format!("{}nginx", stack.prefix)])
        .output()
        .expect("docker logs");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("GET /healthz "),
        "the request is logged: {logs}"
    );
    assert!(
        !logs.contains("s3cr3t-t0ken"),
        "a token reached the log: {logs}"
    );
}

/// 300 requests at once from one address: how many Nginx refused (429).
async fn refused_of_a_burst(stack: &TestStack) -> usize {
    let client = reqwest::Client::new();
    let url = format!("http://{}/healthz", stack.public);
    let requests = (0..300).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    });
    let mut refused = 0;
    for request in requests {
        if let Ok(Ok(429)) = request.await {
            refused += 1;
        }
    }
    refused
}

/// Per-address limits apply to everyone but `unlimited_networks` (a load
/// balancer without X-Forwarded-For, a load generator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_networks_are_not_limited_per_address_and_others_are() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let limited = refused_of_a_burst(&stack).await;
    // The test reaches Nginx from the Docker gateway.
    stack.write_config(
        "unlimited_networks: [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n",
    );
    stack.wsctl_ok(&["switch", "--color", "blue"]);
    tokio::time::sleep(Duration::from_secs(3)).await; // the request budget refills
    let unlimited = refused_of_a_burst(&stack).await;
    println!("300 requests at once: {limited} refused when limited, {unlimited} when unlimited");
    assert!(
        limited >= 100,
        "the per-address limit did not apply: {limited} refused"
    );
    assert_eq!(unlimited, 0, "an unlimited network was limited");
}

/// Clients that share one source address, as behind a NAT or an office
/// proxy: through the Docker gateway, every test client is the same IP.
const SAME_ADDRESS_CLIENTS: usize = 1000;

/// What one client of the cutover test saw.
#[derive(Debug, Default)]
struct Ride {
    /// The colour that answered each connection, in order.
    colors: Vec<String>,
    /// HTTP statuses of refused upgrades (429, 503, ...).
    refused: Vec<u16>,
    /// Connection attempts that failed below HTTP.
    failed: u32,
    /// The counts answered, in order.
    counts: Vec<u64>,
    /// A resumed connection that did not carry the session on.
    lost_session: bool,
}

/// One client: connect, send one message, wait for the server to close,
/// reconnect with the session, until `stop`. Bounded by 180 s.
async fn ride(url: String, stop: Arc<AtomicBool>) -> Ride {
    let mut ride = Ride::default();
    let mut session: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let target = match &session {
            Some(id) => format!("{url}?session_uuid={id}"),
            None => url.clone(),
        };
        let (mut ws, response) =
            match tokio::time::timeout(Duration::from_secs(10), connect_async(&target)).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(WsError::Http(response))) => {
                    ride.refused.push(response.status().as_u16());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                _ => {
                    ride.failed += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
        let color = response
            .headers()
            .get("x-wsctl-color")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("none")
            .to_string();
        ride.colors.push(color);
        // Greeting, one message and its answer; heartbeats skipped.
        let mut sent = false;
        loop {
            let frame = match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                Err(_) if stop.load(Ordering::Relaxed) => {
                    let _ = ws.close(None).await;
                    return ride;
                }
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(_))) => continue,
            };
            let Ok(frame) = serde_json::from_str::<Value>(&frame) else {
                break;
            };
            match frame["type"].as_str() {
                Some("connection_established") => {
                    if session.is_some() && frame["resumed"] != true {
                        ride.lost_session = true;
                    }
                    session = frame["session_uuid"].as_str().map(str::to_string);
                    if !sent {
                        sent = true;
                        let message = json!({"type": "message", "message": "hello"});
                        if ws.send(Message::text(message.to_string())).await.is_err() {
                            break;
                        }
                    }
                }
                Some("message_response") => {
                    ride.counts.push(frame["count"].as_u64().unwrap_or(0));
                }
                _ => {} // heartbeat, goodbye: the close follows
            }
        }
    }
    ride
}

/// A cutover moves every client of an address within DRAIN_WINDOW; a
/// rollback right after moves them all again. Nginx's per-address limits
/// are sized so that neither storm is refused (README, "Hardening").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_from_one_address_ride_two_cutovers_unrefused() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);

    // All connect at once: the worst first burst one address can send.
    let url = format!("ws://{}/ws/chat", stack.public);
    let stop = Arc::new(AtomicBool::new(false));
    let rides: Vec<_> = (0..SAME_ADDRESS_CLIENTS)
        .map(|_| tokio::spawn(ride(url.clone(), stop.clone())))
        .collect();
    let connected = Instant::now();
    while stack_connections(&stack).await < SAME_ADDRESS_CLIENTS as f64 {
        assert!(
            connected.elapsed() < Duration::from_secs(60),
            "only {} of {SAME_ADDRESS_CLIENTS} clients connected in 60 s",
            stack_connections(&stack).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Clients of a real address connected over time, not in the second
    // before a deploy: let the upgrade budget refill (1,000 at 100/s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Deploy, then roll back at once: two reconnect storms back to back.
    for args in [&["deploy", "--color", "green"][..], &["rollback"][..]] {
        let output = stack.wsctl_while_live(args).await;
        assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    }
    // Every client is back on blue, then all stop.
    let settled = Instant::now();
    while stack_connections(&stack).await < SAME_ADDRESS_CLIENTS as f64
        && settled.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut refused: BTreeMap<u16, u32> = BTreeMap::new();
    let (mut failed, mut moved_twice) = (0, 0);
    for handle in rides {
        let ride = handle.await.expect("client task");
        for status in &ride.refused {
            *refused.entry(*status).or_default() += 1;
        }
        failed += ride.failed;
        assert!(!ride.lost_session, "a session was lost: {ride:?}");
        let expected: Vec<u64> = (1..=ride.counts.len() as u64).collect();
        assert_eq!(ride.counts, expected, "counts repeated or skipped");
        if ride.colors == ["blue", "green", "blue"] {
            moved_twice += 1;
        }
    }
    println!(
        "{SAME_ADDRESS_CLIENTS} clients from one address: refused {refused:?}, \
         failed below HTTP {failed}, moved blue->green->blue {moved_twice}"
    );
    if !refused.is_empty() {
        // Which limit said no, from Nginx's error log.
        let logs = std::process::Command::new("docker")
            .args(["logs", &format!("{}nginx", stack.prefix)])
            .output()
            .expect("docker logs");
        let errors = String::from_utf8_lossy(&logs.stderr);
        let limited: Vec<&str> = errors.lines().filter(|l| l.contains("limiting")).collect();
        panic!(
            "upgrades refused: {refused:?}; Nginx: {} lines, first {:?}",
            limited.len(),
            limited.first()
        );
    }
    assert_eq!(failed, 0, "connections failed");
    assert_eq!(
        moved_twice, SAME_ADDRESS_CLIENTS,
        "clients that rode both cutovers"
    );
}

/// Open WebSockets on the live colour, read from its `/status`.
async fn stack_connections(stack: &TestStack) -> f64 {
    stack.public_status().await["connections_active"]
        .as_f64()
        .unwrap_or(0.0)
}
