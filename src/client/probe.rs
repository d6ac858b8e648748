//! The cutover probe: while traffic moves (switch and drain), a few
//! WebSocket sessions and an HTTP poller keep going through the public
//! Nginx address, like real clients that follow the contract's closing rule
//! (reconnect with their `session_uuid`, resend what was not answered). The
//! Each session is the contract's own client (`session.rs`). The
//! command then reports continuity: HTTP requests failed out of sent,
//! messages lost or duplicated (a count that skips or repeats), reconnects
//! and their close codes, and the longest time without an answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
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

/// One client session (`session.rs`): a message every 100 ms, each resent
/// until answered; its counts tell what was lost or counted twice.
async fn session(url: String, stop: CancellationToken) -> Continuity {
    let outcome = super::session::run(url, PACE, stop).await;
    let mut close_codes = BTreeMap::new();
    for code in &outcome.close_codes {
        *close_codes.entry(*code).or_default() += 1;
    }
    Continuity {
        messages_answered: outcome.answered,
        messages_lost: outcome.lost(),
        messages_duplicated: outcome.duplicated(),
        reconnects: outcome.reconnects,
        close_codes,
        longest_gap_ms: outcome.longest_gap.as_millis() as u64,
        ..Continuity::default()
    }
}
