//! One client of the contract that rides every deploy, as
//! `docs/protocol.md` asks every client to behave: it sends a message,
//! waits for its answer, sends the next one `pace` later; after a
//! `goodbye`, a close or a broken connection it reconnects with its
//! `session_uuid` and resends what was not answered; a message answered
//! `unavailable` or `rate_limited` was not counted and is sent again.
//! Every message carries an id (its number in the session), so a resend of
//! one that counted after all (its answer lost in a cut, or too late from
//! Redis) is answered as a duplicate with the count it got, never counted
//! twice (docs/protocol.md, "Message ids").
//!
//! It records every count it was answered, so whoever runs it can check
//! the contract's promise: counts run 1, 2, 3, ... without a repeat or a
//! gap. The cutover probe (`probe.rs`) runs a few of these through the
//! public address while traffic moves; the integration tests run many.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
pub use tokio_util::sync::CancellationToken;

/// How long one session may run at most, whatever `stop` says.
const HARD_STOP: Duration = Duration::from_secs(600);
/// How long a connection attempt, a greeting or an answer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait before a refused or dropped message is sent again.
const RESEND_AFTER: Duration = Duration::from_millis(100);
/// How long a session stopped while it reconnects keeps trying, so that
/// the message it owes is answered.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What one session saw.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Every count it was answered, in order.
    pub counts: Vec<u64>,
    pub answered: u64,
    pub reconnects: u64,
    /// The close code of every close frame it received.
    pub close_codes: Vec<u16>,
    /// Connections that ended without a close frame (cut, reset, or
    /// silent for `ANSWER_TIMEOUT`).
    pub abnormal_closes: u64,
    /// The longest time between two answers.
    pub longest_gap: Duration,
    /// 1 when it ran out of time with a message unanswered.
    pub unanswered: u64,
    /// Messages answered `unavailable` (and sent again).
    pub unavailable: u64,
    /// Messages answered `rate_limited` (dropped uncounted, sent again).
    pub rate_limited: u64,
    /// Resends answered as duplicates: the message had counted, its first
    /// answer was lost.
    pub duplicates: u64,
    /// Greetings after a reconnect that did not resume the session with
    /// its last count: each as the greeting said it.
    pub broken_resumes: Vec<String>,
    /// Frames the protocol does not allow here.
    pub unexpected: Vec<String>,
}

impl Outcome {
    /// Counts skipped: messages counted whose answer never came.
    pub fn lost(&self) -> u64 {
        let mut last = 0;
        let mut lost = 0;
        for &count in &self.counts {
            if count > last + 1 {
                lost += count - last - 1;
            }
            last = last.max(count);
        }
        lost
    }

    /// Counts repeated: a message counted twice.
    pub fn duplicated(&self) -> u64 {
        let mut last = 0;
        let mut duplicated = 0;
        for &count in &self.counts {
            if count <= last {
                duplicated += 1;
            }
            last = last.max(count);
        }
        duplicated
    }
}

/// Runs one session against `url` (`ws://host:port/ws/chat/`) until
/// `stop` (checked between messages, so the last one sent is answered).
pub async fn run(url: String, pace: Duration, stop: CancellationToken) -> Outcome {
    run_trusting(url, pace, stop, None).await
}

/// Like [`run`], over `wss://` with `tls` as its trust (default: the
/// public roots).
pub async fn run_trusting(
    url: String,
    pace: Duration,
    stop: CancellationToken,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut session: Option<String> = None;
    let mut next = 0u64; // the message to send (resent until answered)
    let mut last_answer = Instant::now();
    let hard_stop = Instant::now() + HARD_STOP;
    let mut stopped_at: Option<Instant> = None;
    'connection: while Instant::now() < hard_stop {
        let target = match &session {
            Some(id) => format!("{url}?session_uuid={id}"),
            None => url.clone(),
        };
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(CONNECT_TIMEOUT, connect(&target, &tls)).await
        else {
            if stop.is_cancelled() {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if session.is_none() {
                    return outcome;
                }
                if since.elapsed() >= STOP_GRACE {
                    break;
                }
            }
            tokio::time::sleep(RESEND_AFTER).await;
            continue;
        };
        // The greeting: a new session, or this one resumed with its count.
        let greeting: Value = loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(&text) {
                    Ok(value) => break value,
                    Err(_) => {
                        outcome.unexpected.push(text.to_string());
                        continue 'connection;
                    }
                },
                Ok(Some(Ok(_))) => continue,
                _ => continue 'connection,
            }
        };
        if greeting["type"] != "connection_established" {
            outcome.unexpected.push(greeting.to_string());
            continue 'connection;
        }
        match &session {
            None => session = greeting["session_uuid"].as_str().map(str::to_string),
            Some(_) => {
                // The count we last saw, or one more when the message in
                // flight (a reconnect always has one: the loop finds a
                // broken connection by sending or awaiting an answer)
                // counted before its answer was lost: its resend will say
                // duplicate.
                let last = outcome.counts.last().copied().unwrap_or(0);
                let count = greeting["count"].as_u64();
                let expected = count == Some(last) || count == Some(last + 1);
                if greeting["resumed"] != true || !expected {
                    outcome.broken_resumes.push(greeting.to_string());
                }
            }
        }
        'send: loop {
            if stop.is_cancelled() {
                let _ = ws.close(None).await;
                return outcome;
            }
            let id = next.to_string();
            let frame = json!({"type": "message", "message": next, "id": id}).to_string();
            if ws.send(Message::text(frame)).await.is_err() {
                outcome.reconnects += 1;
                outcome.abnormal_closes += 1;
                continue 'connection;
            }
            // This message's answer (heartbeats and goodbyes skipped).
            loop {
                let text = match tokio::time::timeout(ANSWER_TIMEOUT, ws.next()).await {
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
                        outcome.abnormal_closes += 1;
                        continue 'connection;
                    }
                };
                let reply: Value = serde_json::from_str(&text).unwrap_or_default();
                match reply["type"].as_str() {
                    Some("message_response") if reply["message"] == next => {
                        outcome.counts.push(reply["count"].as_u64().unwrap_or(0));
                        outcome.answered += 1;
                        if reply["duplicate"] == true {
                            outcome.duplicates += 1;
                        }
                        outcome.longest_gap = outcome.longest_gap.max(last_answer.elapsed());
                        last_answer = Instant::now();
                        next += 1;
                        break;
                    }
                    // The server is leaving: our message was not processed
                    // unless answered above; reconnect and resend it.
                    Some("goodbye") | Some("heartbeat") => continue,
                    Some("error") if reply["code"] == "unavailable" => {
                        outcome.unavailable += 1;
                        tokio::time::sleep(RESEND_AFTER).await;
                        continue 'send;
                    }
                    Some("error") if reply["code"] == "rate_limited" => {
                        outcome.rate_limited += 1;
                        tokio::time::sleep(RESEND_AFTER).await;
                        continue 'send;
                    }
                    _ => outcome.unexpected.push(reply.to_string()),
                }
            }
            tokio::time::sleep(pace).await;
        }
    }
    outcome.unanswered = 1;
    outcome
}

/// A WebSocket connect with `tls` as its trust for `wss://`.
pub async fn connect(
    url: &str,
    tls: &Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let connector = tls.clone().map(super::tls::connector);
    tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_and_repeated_counts_are_told_apart() {
        let outcome = Outcome {
            counts: vec![1, 2, 4, 5, 5, 6],
            ..Outcome::default()
        };
        assert_eq!(outcome.lost(), 1);
        assert_eq!(outcome.duplicated(), 1);
        let clean = Outcome {
            counts: (1..=10).collect(),
            ..Outcome::default()
        };
        assert_eq!((clean.lost(), clean.duplicated()), (0, 0));
    }
}
