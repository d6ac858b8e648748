//! The headline: live WebSocket traffic rides through `wsctl deploy` and
//! `wsctl rollback` without losing or doubling a message.
//!
//! 50 clients talk through the public Nginx address, each sending a message
//! every 50 ms and following the contract's closing rule: after a
//! `goodbye` (or any disconnect) a client reconnects with its
//! `session_uuid` and resends what was not answered. Afterwards every
//! client's counts must run 1, 2, 3, ... without a repeat or a gap, with
//! nothing left unanswered.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 50;

#[derive(Debug, Default)]
struct Outcome {
    counts: Vec<u64>,
    answered: u64,
    reconnects: u64,
    close_codes: Vec<u16>,
    longest_gap: Duration,
    unanswered: u64,
}

/// One client: send, wait for the answer, reconnect and resend on any break.
async fn client(url: String, stop: Arc<AtomicBool>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut session: Option<String> = None;
    let mut next = 0u64; // sequence of the message to send (resent until answered)
    let mut last_answer = Instant::now();
    let hard_stop = Instant::now() + Duration::from_secs(180);
    'connection: while Instant::now() < hard_stop {
        let target = match &session {
            Some(id) => format!("{url}?session_uuid={id}"),
            None => url.clone(),
        };
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), connect_async(&target)).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // Greeting.
        let greeting: Value = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => break serde_json::from_str(&text).unwrap(),
                Ok(Some(Ok(_))) => continue,
                _ => continue 'connection,
            }
        };
        assert_eq!(greeting["type"], "connection_established", "{greeting}");
        if session.is_none() {
            session = greeting["session_uuid"].as_str().map(str::to_string);
        } else {
            assert_eq!(greeting["resumed"], true, "session lost: {greeting}");
            assert_eq!(
                greeting["count"],
                outcome.counts.last().copied().unwrap_or(0),
                "{greeting}"
            );
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = ws.close(None).await;
                return outcome;
            }
            let frame = json!({"type": "message", "message": next}).to_string();
            if ws.send(Message::text(frame)).await.is_err() {
                outcome.reconnects += 1;
                continue 'connection;
            }
            // Wait for this message's answer (heartbeats skipped).
            loop {
                let incoming = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
                let text = match incoming {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Close(close)))) => {
                        if let Some(close) = close {
                            outcome.close_codes.push(u16::from(close.code));
                        }
                        outcome.reconnects += 1;
                        continue 'connection;
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => {
                        outcome.reconnects += 1;
                        continue 'connection;
                    }
                };
                let reply: Value = serde_json::from_str(&text).unwrap();
                match reply["type"].as_str() {
                    Some("message_response") => {
                        assert_eq!(reply["message"], next, "answer to another message: {reply}");
                        let count = reply["count"].as_u64().unwrap();
                        outcome.counts.push(count);
                        outcome.answered += 1;
                        let gap = last_answer.elapsed();
                        outcome.longest_gap = outcome.longest_gap.max(gap);
                        last_answer = Instant::now();
                        next += 1;
                        break;
                    }
                    // The server is leaving: our message was not processed
                    // unless answered above; reconnect and resend it.
                    Some("goodbye") => continue,
                    Some("heartbeat") => continue,
                    _ => panic!("unexpected frame {reply}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    outcome.unanswered = 1;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_clients_lose_nothing_through_a_deploy_and_a_rollback() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("drain_timeout: 8\n");
    let first = stack.wsctl(&["deploy"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let url = format!("ws://{}/ws/chat/", stack.public);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(url.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let wsctl = |args: &'static [&'static str]| {
        let config = stack.dir.join("wsctl.yaml");
        tokio::task::spawn_blocking(move || {
            common::wsctl()
                .args(args)
                .arg("--config")
                .arg(config)
                .output()
                .unwrap()
        })
    };
    let deploy = wsctl(&["deploy", "--json"]).await.unwrap();
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    // The built-in cutover probe saw what our clients saw: nothing lost.
    let stdout = String::from_utf8_lossy(&deploy.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let continuity = &summary["continuity"];
    assert!(
        continuity["messages_answered"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(continuity["messages_lost"], 0, "{summary}");
    assert_eq!(continuity["messages_duplicated"], 0, "{summary}");
    assert_eq!(continuity["http_failed"], 0, "{summary}");
    println!("deploy under load: {}", stdout.lines().last().unwrap());
    assert_eq!(stack.public_status().await["color"], "green");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rollback = wsctl(&["rollback"]).await.unwrap();
    assert!(
        rollback.status.success(),
        "{}",
        String::from_utf8_lossy(&rollback.stderr)
    );
    assert_eq!(stack.public_status().await["color"], "blue");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut messages, mut reconnects, mut longest) = (0, 0, Duration::ZERO);
    let mut codes = std::collections::BTreeMap::new();
    for handle in clients {
        let outcome = handle.await.unwrap();
        assert_eq!(outcome.unanswered, 0, "a client gave up");
        let expected: Vec<u64> = (1..=outcome.answered).collect();
        assert_eq!(outcome.counts, expected, "counts repeated or skipped");
        assert!(
            outcome.reconnects >= 2,
            "each client should have moved twice: {outcome:?}"
        );
        messages += outcome.answered;
        reconnects += outcome.reconnects;
        longest = longest.max(outcome.longest_gap);
        for code in outcome.close_codes {
            *codes.entry(code).or_insert(0) += 1;
        }
    }
    println!(
        "zero-loss: {CLIENTS} clients, {messages} messages answered, {reconnects} reconnects, \
         close codes {codes:?}, longest time without service {longest:?}"
    );
}
