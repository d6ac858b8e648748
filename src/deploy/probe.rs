//! The cutover probe: while traffic moves (switch and drain), a few
//! WebSocket sessions and an HTTP poller keep going through the public
//! Nginx address, like real clients that follow the contract's closing rule
//! (reconnect with their `session_uuid`, resend what was not answered). The
//! command then reports continuity: HTTP requests failed out of sent,
//! messages lost or duplicated (a count that skips or repeats), reconnects
//! and their close codes, and the longest time without an answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SESSIONS: usize = 4;
const PACE: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Serialize)]
pub struct Continuity {
    pub http_sent: u64,
    pub http_failed: u64,
    pub messages_answered: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub reconnects: u64,
    pub close_codes: BTreeMap<u16, u64>,
    pub longest_gap_ms: u64,
}

impl Continuity {
    pub fn summary(&self) -> String {
        format!(
            "HTTP {}/{} failed; WebSocket {} answered, {} lost, {} duplicated, {} reconnects {:?}; longest gap {} ms",
            self.http_failed,
            self.http_sent,
            self.messages_answered,
            self.messages_lost,
            self.messages_duplicated,
            self.reconnects,
            self.close_codes,
            self.longest_gap_ms
        )
    }
}

pub struct Probe {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Continuity>>,
}

impl Probe {
    /// Starts the sessions and the poller against `public` (`host:port`).
    pub fn start(public: &str) -> Probe {
        let stop = CancellationToken::new();
        let mut tasks: Vec<_> = (0..SESSIONS)
            .map(|_| tokio::spawn(session(format!("ws://{public}/ws/chat/"), stop.clone())))
            .collect();
        // A public path: /status is private, and the probe's requests come
        // from the Docker gateway when `public` is a published host port.
        tasks.push(tokio::spawn(poll(
            format!("http://{public}/healthz"),
            stop.clone(),
        )));
        Probe { stop, tasks }
    }

    /// Stops everything and merges the reports.
    pub async fn finish(self) -> Continuity {
        self.stop.cancel();
        let mut total = Continuity::default();
        for task in self.tasks {
            let Ok(part) = task.await else { continue };
            total.http_sent += part.http_sent;
            total.http_failed += part.http_failed;
            total.messages_answered += part.messages_answered;
            total.messages_lost += part.messages_lost;
            total.messages_duplicated += part.messages_duplicated;
            total.reconnects += part.reconnects;
            for (code, n) in part.close_codes {
                *total.close_codes.entry(code).or_default() += n;
            }
            total.longest_gap_ms = total.longest_gap_ms.max(part.longest_gap_ms);
        }
        total
    }
}

async fn poll(url: String, stop: CancellationToken) -> Continuity {
    let mut report = Continuity::default();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return report;
    };
    let mut last_ok = Instant::now();
    while !stop.is_cancelled() {
        report.http_sent += 1;
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                report.longest_gap_ms = report
                    .longest_gap_ms
                    .max(last_ok.elapsed().as_millis() as u64);
                last_ok = Instant::now();
            }
            _ => report.http_failed += 1,
        }
        tokio::select! {
            _ = tokio::time::sleep(PACE) => {}
            _ = stop.cancelled() => {}
        }
    }
    report
}

/// One client session: a message every 100 ms, each resent until answered.
async fn session(url: String, stop: CancellationToken) -> Continuity {
    let mut report = Continuity::default();
    let mut session_id: Option<String> = None;
    let (mut last_count, mut sequence) = (0u64, 0u64);
    let mut last_answer = Instant::now();
    'connect: while !stop.is_cancelled() {
        let target = session_id
            .as_ref()
            .map_or(url.clone(), |id| format!("{url}?session_uuid={id}"));
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(3), connect_async(&target)).await
        else {
            tokio::time::sleep(PACE).await;
            continue;
        };
        loop {
            let frame = tokio::select! {
                frame = tokio::time::timeout(Duration::from_secs(5), ws.next()) => frame,
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    break 'connect;
                }
            };
            let text = match frame {
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(Message::Close(close)))) => {
                    if let Some(close) = close {
                        *report.close_codes.entry(u16::from(close.code)).or_default() += 1;
                    }
                    report.reconnects += 1;
                    continue 'connect;
                }
                Ok(Some(Ok(_))) => continue,
                _ => {
                    report.reconnects += 1;
                    continue 'connect;
                }
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let answered = match value["type"].as_str() {
                Some("connection_established") => {
                    session_id = value["session_uuid"].as_str().map(str::to_string);
                    last_count = value["count"].as_u64().unwrap_or(last_count);
                    true // time to send
                }
                Some("message_response") if value["message"] == sequence => {
                    let count = value["count"].as_u64().unwrap_or(0);
                    if count > last_count + 1 {
                        report.messages_lost += count - last_count - 1;
                    } else if count <= last_count {
                        report.messages_duplicated += 1;
                    }
                    last_count = count;
                    report.messages_answered += 1;
                    report.longest_gap_ms = report
                        .longest_gap_ms
                        .max(last_answer.elapsed().as_millis() as u64);
                    last_answer = Instant::now();
                    sequence += 1;
                    tokio::time::sleep(PACE).await;
                    true
                }
                _ => false,
            };
            if answered {
                let message =
                    serde_json::json!({"type": "message", "message": sequence}).to_string();
                if ws.send(Message::text(message)).await.is_err() {
                    report.reconnects += 1;
                    continue 'connect;
                }
            }
        }
    }
    report
}
