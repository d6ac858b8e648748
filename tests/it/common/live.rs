//! Live clients through the public Nginx address: each is the crate's own
//! client of the contract (`wsctl::client::session`), sending a message
//! every 50 ms, and after a `goodbye` (or any disconnect) reconnecting with
//! its `session_uuid` and resending what was not answered. At the end every
//! client's counts must run 1, 2, 3, ... without a repeat or a gap, every
//! resume must bring back the session with its count, and nothing may be
//! left unanswered. A message answered `unavailable` was not counted: it is
//! sent again.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
pub use wsctl::client::session::Outcome;
use wsctl::client::session::{self, CancellationToken};

use super::test_log::TestLog;

/// Between an answer and the next message.
const PACE: Duration = Duration::from_millis(50);

/// What all clients saw together.
#[derive(Debug, Default)]
pub struct Summary {
    pub messages: u64,
    pub reconnects: u64,
    pub unavailable: u64,
    pub rate_limited: u64,
    pub longest_gap: Duration,
    pub close_codes: std::collections::BTreeMap<u16, u64>,
    /// Connections that ended without a close frame.
    pub abnormal_closes: u64,
    /// Each client's outcome, for per-client assertions.
    pub outcomes: Vec<Outcome>,
}

impl Summary {
    /// Every client reconnected at least `moves` times: each traffic move
    /// (a drain's goodbye) reached every one of them.
    pub fn assert_every_client_moved(&self, moves: u64) {
        for outcome in &self.outcomes {
            assert!(
                outcome.reconnects >= moves,
                "a client did not move {moves} times: {outcome:?}"
            );
        }
    }
}

/// `n` clients of `url`, running until `finish`.
pub struct LiveClients {
    stop: CancellationToken,
    handles: Vec<JoinHandle<Outcome>>,
}

impl LiveClients {
    pub fn start(url: &str, n: usize) -> LiveClients {
        Self::start_trusting(url, n, None)
    }

    /// Like [`LiveClients::start`], over `wss://` trusting `tls`.
    pub fn start_trusting(
        url: &str,
        n: usize,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> LiveClients {
        let stop = CancellationToken::new();
        let handles = (0..n)
            .map(|_| {
                tokio::spawn(session::run_trusting(
                    url.to_string(),
                    PACE,
                    stop.clone(),
                    tls.clone(),
                ))
            })
            .collect();
        LiveClients { stop, handles }
    }

    /// Stops the clients and checks that none lost or doubled a message.
    pub async fn finish(self) -> Summary {
        self.finish_logged(None).await
    }

    /// Like [`LiveClients::finish`], writing each client's outcome to
    /// `log` before anything is asserted.
    pub async fn finish_logged(self, mut log: Option<&mut TestLog>) -> Summary {
        self.stop.cancel();
        let mut outcomes = Vec::new();
        for handle in self.handles {
            outcomes.push(handle.await.expect("client task"));
        }
        if let Some(log) = log.as_mut() {
            for (i, outcome) in outcomes.iter().enumerate() {
                log.line(&format!("client {i}: {}", describe(outcome)));
            }
        }
        let mut summary = Summary::default();
        for outcome in outcomes {
            assert_eq!(outcome.unanswered, 0, "a client gave up");
            assert!(
                outcome.broken_resumes.is_empty(),
                "a resume did not bring the session back with its count: {:?} \
                 (this client was answered `unavailable` {} times)",
                outcome.broken_resumes,
                outcome.unavailable
            );
            assert!(
                outcome.unexpected.is_empty(),
                "frames the protocol does not allow: {:?}",
                outcome.unexpected
            );
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
            summary.abnormal_closes += outcome.abnormal_closes;
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

/// One client's outcome in a line: its totals, and where its counts first
/// broke the run 1, 2, 3, ... if they did.
fn describe(outcome: &Outcome) -> String {
    let broke = outcome
        .counts
        .iter()
        .enumerate()
        .find(|&(i, &count)| count != i as u64 + 1)
        .map(|(i, _)| {
            let from = i.saturating_sub(2);
            let to = (i + 3).min(outcome.counts.len());
            format!(
                ", counts break at answer {}: {:?}",
                i + 1,
                &outcome.counts[from..to]
            )
        })
        .unwrap_or_default();
    format!(
        "{} answered, {} reconnects, {} unavailable, {} rate limited, close codes {:?}, {} abnormal \
         closes, longest gap {:?}, {} unanswered, broken resumes {:?}, unexpected {:?}{broke}",
        outcome.answered,
        outcome.reconnects,
        outcome.unavailable,
        outcome.rate_limited,
        outcome.close_codes,
        outcome.abnormal_closes,
        outcome.longest_gap,
        outcome.unanswered,
        outcome.broken_resumes,
        outcome.unexpected
    )
}
