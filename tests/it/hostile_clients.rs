//! Clients that do not play by the rules, against the real binary over real
//! sockets: broadcast abusers, connect/close loops with fresh sessions,
//! clients that never read, and a fuzz run of random and mutated frames.
//! Each asserts the bound the design promises (docs/protocol.md).

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::raw::RawClient;
use common::{Server, Ws, recv_non_heartbeat, send_json};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The server's resident memory, in KiB.
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("the server is running");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Broadcasts each abuser attempts.
const ATTEMPTS: usize = 400;

/// Six clients broadcast as fast as the server lets them while 200 quiet
/// clients listen through a small hub (`BROADCAST_BUFFER=256`): the
/// broadcast budget keeps every quiet client connected, and every accepted
/// broadcast reaches every quiet client exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_abusers_cannot_get_quiet_clients_disconnected() {
    const ABUSERS: usize = 6;
    const QUIET: usize = 200;
    let server = Server::start(&[("BROADCAST_BUFFER", "256"), ("MAX_MESSAGE_SIZE", "70000")]);

    let mut quiet = Vec::new();
    for _ in 0..QUIET {
        quiet.push(server.connect("").await.0);
    }
    // Each quiet client records every broadcast it sees until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut listeners = Vec::new();
    for ws in quiet {
        let stop = stop.clone();
        listeners.push(tokio::spawn(listen(ws, stop)));
    }

    // Each abuser fires ATTEMPTS broadcasts (max-size ones, and 60 KB ones
    // that are too large) without waiting, then reads what came back.
    let mut abusers = Vec::new();
    for abuser in 0..ABUSERS {
        let (ws, greeting) = server.connect("").await;
        let id = greeting["connection_id"].as_str().unwrap().to_string();
        abusers.push(tokio::spawn(abuse(ws, abuser, id)));
    }
    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut refusals: HashMap<String, usize> = HashMap::new();
    for abuser in abusers {
        let (id, mine, refused) = abuser.await.expect("abuser task");
        accepted.insert(id, mine);
        for (code, n) in refused {
            *refusals.entry(code).or_default() += n;
        }
    }
    let total_accepted: usize = accepted.values().sum();
    assert!(
        total_accepted >= ABUSERS * 5,
        "each abuser gets its burst: {accepted:?}"
    );
    assert!(
        total_accepted <= ABUSERS * 10,
        "the budget (burst 5, 1/s) let {total_accepted} through: {accepted:?}"
    );
    assert!(refusals.contains_key("message_too_large"), "{refusals:?}");
    assert!(refusals.contains_key("rate_limited"), "{refusals:?}");

    // Give the fan-out time to finish, then collect.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for listener in listeners {
        let (seen, closed) = listener.await.expect("listener task");
        assert!(closed.is_none(), "a quiet client was closed: {closed:?}");
        let mut per_sender: HashMap<String, usize> = HashMap::new();
        let mut unique = std::collections::HashSet::new();
        for (from, tag) in &seen {
            assert!(unique.insert(tag.clone()), "broadcast {tag} arrived twice");
            *per_sender.entry(from.clone()).or_default() += 1;
        }
        assert_eq!(per_sender, accepted, "a quiet client missed broadcasts");
    }
    assert_eq!(
        server
            .metric("websocket_errors_total{type=\"slow_consumer\"}")
            .await,
        0.0
    );
}

/// Reads broadcasts until `stop` and 200 ms of silence: `(from, tag)` of
/// each, and the close code if the server closed the connection.
async fn listen(mut ws: Ws, stop: Arc<AtomicBool>) -> (Vec<(String, String)>, Option<String>) {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Err(_) if stop.load(Ordering::SeqCst) => return (seen, None),
            Err(_) => continue,
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                if frame["type"] == "broadcast" {
                    seen.push((
                        frame["from"].as_str().unwrap_or_default().to_string(),
                        frame["message"]["tag"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ));
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => return (seen, Some(format!("{frame:?}"))),
            Ok(Some(Ok(_))) => {}
            Ok(other) => return (seen, Some(format!("{other:?}"))),
        }
    }
}

/// One abuser: `(its connection_id, broadcasts accepted, refusals by code)`.
async fn abuse(ws: Ws, abuser: usize, id: String) -> (String, usize, HashMap<String, usize>) {
    let (mut sink, mut stream) = ws.split();
    let filler = "a".repeat(3900);
    let too_large = "b".repeat(60_000);
    let sender = tokio::spawn(async move {
        for attempt in 0..ATTEMPTS {
            let body = if attempt % 4 == 3 {
                &too_large
            } else {
                &filler
            };
            let frame = json!({"type": "broadcast", "message": {"tag": format!("{abuser}-{attempt}"), "body": body}});
            if sink.send(Message::text(frame.to_string())).await.is_err() {
                return;
            }
        }
    });
    let (mut mine, mut refused) = (0, HashMap::<String, usize>::new());
    let mut answers = 0;
    while answers < ATTEMPTS {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the abuser gets an answer to every attempt");
        let Some(Ok(Message::Text(text))) = next else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        match frame["type"].as_str() {
            Some("broadcast") if frame["from"] == id.as_str() => {
                mine += 1;
                answers += 1;
            }
            Some("error") => {
                *refused
                    .entry(frame["code"].as_str().unwrap().to_string())
                    .or_default() += 1;
                answers += 1;
            }
            _ => {}
        }
    }
    sender.await.expect("sender task");
    (id, mine, refused)
}

/// 200,000 connect/close rounds, each with a fresh `session_uuid`, against
/// `MAX_SESSIONS=1000`: the store stays at its cap and RSS grows by less
/// than 20 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_close_loop_with_fresh_sessions_keeps_memory_bounded() {
    const ROUNDS: usize = 200_000;
    const WORKERS: usize = 16;
    let server = Server::start(&[("MAX_SESSIONS", "1000")]);
    let addr = server.addr.clone();
    let loop_rounds = |rounds: usize| {
        let addr = addr.clone();
        async move {
            let done = Arc::new(AtomicUsize::new(0));
            let mut workers = Vec::new();
            for _ in 0..WORKERS {
                let (addr, done) = (addr.clone(), done.clone());
                workers.push(tokio::spawn(async move {
                    while done.fetch_add(1, Ordering::Relaxed) < rounds {
                        let query = format!("?session_uuid={}", uuid::Uuid::new_v4());
                        drop(RawClient::connect(&addr, &format!("/ws/chat/{query}")).await);
                    }
                }));
            }
            for worker in workers {
                worker.await.expect("worker");
            }
        }
    };
    // A connected client with a count, and a closed session from before
    // the loop: the cap must evict the second and never the first.
    let (mut connected, greeting) = server.connect("").await;
    let kept = common::session_of(&greeting);
    send_json(&mut connected, json!({"type": "message", "message": 1})).await;
    assert_eq!(recv_non_heartbeat(&mut connected).await["count"], 1);
    let (mut early, greeting) = server.connect("").await;
    let evicted = common::session_of(&greeting);
    send_json(&mut early, json!({"type": "bye"})).await;
    assert_eq!(recv_non_heartbeat(&mut early).await["type"], "goodbye");
    // Warm up (allocator arenas, the first 1,000 sessions), then measure.
    loop_rounds(5_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(&server);
    let started = Instant::now();
    loop_rounds(ROUNDS).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(&server);
    let (_, status) = server.get_json("/status").await;
    assert!(status["connections_total"].as_u64().unwrap() >= ROUNDS as u64);
    let grown = after.saturating_sub(before);
    println!("{ROUNDS} fresh sessions in {took:?}: RSS {before} KiB -> {after} KiB (+{grown} KiB)");
    assert!(grown < 20 * 1024, "RSS grew by {grown} KiB");
    let (_, greeting) = server.connect(&format!("?session_uuid={evicted}")).await;
    assert_eq!(greeting["resumed"], false, "the old idle session was kept");
    let (_, greeting) = server.connect(&format!("?session_uuid={kept}")).await;
    assert_eq!(
        greeting["resumed"], true,
        "the connected session was evicted"
    );
    assert_eq!(greeting["count"], 1);
    drop(connected);
}

/// 1,000 clients that never read while broadcasts flow: each is closed
/// (1013 when it falls a hub behind, or the write timeout), and the
/// server's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_closed_and_memory_stays_bounded() {
    const DEAF: usize = 1000;
    let server = Server::start(&[
        ("BROADCAST_BUFFER", "64"),
        ("BROADCAST_RATE", "100000"),
        ("RATE_LIMIT", "100000"),
    ]);
    let mut deaf = Vec::new();
    for _ in 0..DEAF {
        deaf.push(RawClient::connect(&server.addr, "/ws/chat/").await);
    }
    let before = rss_kib(&server);
    let (mut talker, greeting) = server.connect("").await;
    let me = greeting["connection_id"].as_str().unwrap().to_string();
    // 2,000 broadcasts of 4 KB: 8 MB for every deaf client, more than a
    // socket buffer holds.
    let body = "x".repeat(4000);
    let mut peak = before;
    for i in 0..2000 {
        send_json(
            &mut talker,
            json!({"type": "broadcast", "message": [i, body]}),
        )
        .await;
        // The talker reads: its own copy comes back through the hub.
        loop {
            let frame = recv_non_heartbeat(&mut talker).await;
            if frame["type"] == "broadcast" && frame["from"] == me.as_str() {
                break;
            }
        }
        if i % 100 == 0 {
            peak = peak.max(rss_kib(&server));
        }
    }
    // Every deaf client goes within the write timeout (10 s) and a margin.
    let started = Instant::now();
    loop {
        let (_, status) = server.get_json("/status").await;
        peak = peak.max(rss_kib(&server));
        if status["connections_active"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deaf clients still connected: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slow = server
        .metric("websocket_errors_total{type=\"slow_consumer\"}")
        .await;
    let timed_out = server
        .metric("websocket_errors_total{type=\"write_timeout\"}")
        .await;
    assert_eq!(
        slow + timed_out,
        DEAF as f64,
        "1013: {slow}, write timeout: {timed_out}"
    );
    let grown = peak.saturating_sub(before);
    println!("deaf clients: 1013 {slow}, write timeout {timed_out}; RSS peak +{grown} KiB");
    assert!(grown < 100 * 1024, "RSS peak grew by {grown} KiB");
    drop(deaf);
}

/// What a fuzz frame should get, per docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A well-formed text frame: a JSON answer (or goodbye for `bye`).
    Answer,
    /// A malformed frame: close 1002, 1007 or 1009.
    Fail,
}

/// One frame: its first byte (FIN, RSV, opcode), payload, whether it is
/// masked, and what it should get.
fn fuzz_frame(rng: &mut fastrand::Rng) -> (u8, Vec<u8>, bool, Expect) {
    const VALID: &[&str] = &[
        r#"{"type":"message","message":"hello"}"#,
        r#"{"message":{"nested":[1,2,3]}}"#,
        r#"{"type":"broadcast","message":1}"#,
        r#"{"type":"unknown"}"#,
        r#"[1,2,3]"#,
        r#"{"type":"message"}"#,
    ];
    let (first, payload, expect) = match rng.u8(0..10) {
        // Mutated JSON: a few bytes changed to printable ASCII (still UTF-8).
        0..=3 => {
            let mut bytes = VALID[rng.usize(0..VALID.len())].as_bytes().to_vec();
            for _ in 0..rng.usize(0..4) {
                let at = rng.usize(0..bytes.len());
                bytes[at] = rng.u8(0x20..0x7f);
            }
            (0x81, bytes, Expect::Answer)
        }
        // Random bytes as text: almost always invalid UTF-8.
        4..=5 => {
            let bytes: Vec<u8> = (0..rng.usize(1..64)).map(|_| rng.u8(..)).collect();
            let expect = if std::str::from_utf8(&bytes).is_ok() {
                Expect::Answer
            } else {
                Expect::Fail
            };
            (0x81, bytes, expect)
        }
        // A binary frame: `unsupported_frame`.
        6 => (0x82, vec![rng.u8(..); rng.usize(0..32)], Expect::Answer),
        // Reserved bits or a reserved opcode: protocol error.
        7 => {
            let first = if rng.bool() {
                0x81 | (rng.u8(1..8) << 4)
            } else {
                0x80 | [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf][rng.usize(0..10)]
            };
            (first, b"{}".to_vec(), Expect::Fail)
        }
        // A control frame longer than 125 bytes: protocol error.
        8 => (0x89, vec![b'p'; 126 + rng.usize(0..100)], Expect::Fail),
        // Larger than MAX_MESSAGE_SIZE (1024 here): 1009.
        _ => (0x81, vec![b' '; 1025 + rng.usize(0..4000)], Expect::Fail),
    };
    // A client frame must be masked: an unmasked one is a protocol error.
    let masked = rng.u8(0..50) != 0;
    let expect = if masked { expect } else { Expect::Fail };
    (first, payload, masked, expect)
}

/// 100,000 random and mutated frames over raw sockets: the server never
/// panics, its memory stays bounded, and each frame gets what the protocol
/// says: a JSON answer for a well-formed text or binary frame, close 1002,
/// 1007 or 1009 for a malformed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuzz_run_of_random_and_mutated_frames_is_answered_per_the_protocol() {
    const FRAMES: usize = 100_000;
    let server = Server::start(&[("RATE_LIMIT", "1000000"), ("MAX_MESSAGE_SIZE", "1024")]);
    let seed = fastrand::u64(..);
    println!("fuzz seed {seed}");
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let before = rss_kib(&server);
    let (mut answered, mut failed, mut sent) = (0, 0, 0);
    let mut client = RawClient::connect(&server.addr, "/ws/chat/").await;
    client.read_frame().await.expect("greeting");
    while sent < FRAMES {
        let (first, payload, masked, expect) = fuzz_frame(&mut rng);
        let frame = (first, &payload[..payload.len().min(16)], masked);
        sent += 1;
        client.send_frame(first, &payload, masked).await;
        match expect {
            Expect::Answer => {
                let json = loop {
                    let reply = client.read_frame().await.unwrap_or_else(|| {
                        panic!("no answer to frame {sent} {frame:02x?} (seed {seed})")
                    });
                    let text = String::from_utf8(reply.payload).expect("UTF-8 answer");
                    let json: Value = serde_json::from_str(&text).expect("a JSON answer");
                    if json["type"] != "heartbeat" {
                        break json;
                    }
                };
                match json["type"].as_str() {
                    Some("message_response" | "broadcast" | "error") => answered += 1,
                    Some("goodbye") => {
                        answered += 1;
                        client = reconnect(&server).await;
                    }
                    other => panic!("unexpected answer {other:?} to {frame:02x?} (seed {seed})"),
                }
            }
            Expect::Fail => {
                let code = client
                    .read_until_close()
                    .await
                    .0
                    .and_then(|f| f.close_code());
                assert!(
                    matches!(code, Some(1002 | 1007 | 1009)),
                    "frame {sent} {frame:02x?}: close {code:?} (seed {seed})"
                );
                failed += 1;
                client = reconnect(&server).await;
            }
        }
    }
    let (code, _) = server.get_json("/healthz").await;
    assert_eq!(code, 200);
    let grown = rss_kib(&server).saturating_sub(before);
    println!(
        "fuzz: {sent} frames in {:?}, {answered} answered, {failed} failed the connection, RSS +{grown} KiB",
        started.elapsed()
    );
    assert!(grown < 50 * 1024, "RSS grew by {grown} KiB");
}

async fn reconnect(server: &Server) -> RawClient {
    let mut client = RawClient::connect(&server.addr, "/ws/chat/").await;
    client.read_frame().await.expect("greeting");
    client
}
