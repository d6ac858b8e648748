//! Live clients through the public Nginx address, as a well-written client
//! of the contract behaves: each sends a message every 50 ms, and after a
//! `goodbye` (or any disconnect) reconnects with its `session_uuid` and
//! resends what was not answered. At the end every client's counts must run
//! 1, 2, 3, ... without a repeat or a gap, with nothing left unanswered. A
//! message answered `unavailable` was not counted: it is sent again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Default)]
pub struct Outcome {
    pub counts: Vec<u64>,
    pub answered: u64,
    pub reconnects: u64,
    pub close_codes: Vec<u16>,
    pub longest_gap: Duration,
    pub unanswered: u64,
    /// Messages answered `unavailable` (and sent again).
    pub unavailable: u64,
    /// Messages answered `rate_limited` (dropped uncounted, sent again).
    pub rate_limited: u64,
}

/// One client: send, wait for the answer, reconnect and resend on any break.
pub async fn client(url: String, stop: Arc<AtomicBool>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut session: Option<String> = None;
    let mut next = 0u64; // sequence of the message to send (resent until answered)
    let mut last_answer = Instant::now();
    let hard_stop = Instant::now() + Duration::from_secs(600);
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
                "{greeting} (this client was answered `unavailable` {} times)",
                outcome.unavailable
            );
        }
        'send: loop {
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
                    Some("error") if reply["code"] == "unavailable" => {
                        outcome.unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'send;
                    }
                    // Dropped uncounted: wait a little and send it again.
                    Some("error") if reply["code"] == "rate_limited" => {
                        outcome.rate_limited += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'send;
                    }
                    _ => panic!("unexpected frame {reply}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    outcome.unanswered = 1;
    outcome
}

/// What all clients saw together.
#[derive(Debug, Default)]
pub struct Summary {
    pub messages: u64,
    pub reconnects: u64,
    pub unavailable: u64,
    pub rate_limited: u64,
    pub longest_gap: Duration,
    pub close_codes: std::collections::BTreeMap<u16, u64>,
    /// Each client's outcome, for per-client assertions.
    pub outcomes: Vec<Outcome>,
}

/// `n` clients of `url`, running until `finish`.
pub struct LiveClients {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Outcome>>,
}

impl LiveClients {
    pub fn start(url: &str, n: usize) -> LiveClients {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|_| tokio::spawn(client(url.to_string(), stop.clone())))
            .collect();
        LiveClients { stop, handles }
    }

    /// Stops the clients and checks that none lost or doubled a message.
    pub async fn finish(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        let mut summary = Summary::default();
        for handle in self.handles {
            let outcome = handle.await.expect("client task");
            assert_eq!(outcome.unanswered, 0, "a client gave up");
            let expected: Vec<u64> = (1..=outcome.answered).collect();
            assert_eq!(
                outcome.counts, expected,
                "counts repeated or skipped (`unavailable` answers: {})",
                outcome.unavailable
            );
            summary.messages += outcome.answered;
            summary.reconnects += outcome.reconnects;
            summary.unavailable += outcome.unavailable;
            summary.rate_limited += outcome.rate_limited;
            summary.longest_gap = summary.longest_gap.max(outcome.longest_gap);
            for code in &outcome.close_codes {
                *summary.close_codes.entry(*code).or_insert(0) += 1;
            }
            summary.outcomes.push(outcome);
        }
        summary
    }
}

/// Opens `n` connections one after the other and returns the colour each
/// greeting named (each closed right away): where new connections go.
pub async fn greeting_colours(url: &str, n: usize) -> Vec<String> {
    let mut colours = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(5), connect_async(url)).await
        else {
            continue;
        };
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
        {
            let greeting: Value = serde_json::from_str(&text).unwrap_or_default();
            colours.push(greeting["color"].as_str().unwrap_or("").to_string());
        }
        let _ = ws.close(None).await;
    }
    colours
}
