//! `wsctl bench`: a load tool for the service, built for one machine.
//!
//! - `hold`: open N connections, keep them, report connect rate and
//!   latency, failures by kind and (given the server's pid) its RSS per
//!   connection.
//! - `rtt`: N connections at a fixed total message rate; round-trip
//!   percentiles, lost and out-of-order replies.
//! - `flood`: K messages in flight per connection; replies per second.
//! - `fanout`: broadcasts to N connections; time until each has it.
//!
//! Every mode checks the counts it receives (1, 2, 3, ... per session) and
//! stops by itself: connects time out after 10 s, runs last `--duration`,
//! and the wait for late replies is bounded.

mod client;
mod fanout;
mod hold;
pub mod latency;
pub mod timeline;
mod traffic;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

pub use client::Target;
use client::{Client, Failure};
use latency::{Latency, Percentiles};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Hold,
    Rtt,
    Flood,
    Fanout,
}

/// What to run; built by `cmd/bench.rs`, or directly by tests.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub mode: Mode,
    pub url: String,
    pub connections: usize,
    pub duration: Duration,
    /// `rtt`: messages per second across all connections.
    pub rate: f64,
    /// `flood`: messages in flight per connection.
    pub in_flight: usize,
    /// `fanout`: broadcasts to send.
    pub rounds: usize,
    /// The server's pid, to read its RSS (same machine only).
    pub server_pid: Option<u32>,
    /// Loopback source addresses to spread connections over.
    pub sources: u8,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    /// Draw a progress bar (people at a terminal; never with `--json`).
    pub progress: bool,
    /// hold: follow each session through a drain (reconnect with its
    /// `session_uuid`, check it resumed and its count goes on).
    pub follow: bool,
    /// For a `wss://` URL: a CA (PEM) to trust beside the public roots.
    pub ca: Option<std::path::PathBuf>,
}

/// The result of a run; `--json` prints it as one object.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub mode: Option<Mode>,
    pub connections_requested: usize,
    pub connections_opened: usize,
    pub connect_failures: BTreeMap<String, usize>,
    pub connect_seconds: f64,
    pub connects_per_second: f64,
    pub connect_latency: Option<Percentiles>,
    /// Connections the server closed before the end of the run.
    pub dropped: usize,
    /// hold: `goodbye` frames received (a server drain).
    pub goodbyes_received: usize,
    /// hold: connections the server closed with 1001 (going away).
    pub closed_1001: usize,
    pub messages_sent: u64,
    pub messages_answered: u64,
    pub messages_lost: u64,
    pub out_of_order: u64,
    pub count_violations: u64,
    pub errors_received: u64,
    pub messages_per_second: Option<f64>,
    pub round_trip: Option<Percentiles>,
    pub fanout: Option<Percentiles>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub server_rss_per_connection_bytes: Option<f64>,
    pub run_seconds: f64,
    /// Child processes whose reports were merged into this one.
    pub processes: usize,
    /// hold --follow: how the sessions moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<Follow>,
    /// hold: connects and resumes per second of wall clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<timeline::Timeline>,
    /// HDR histograms (base64 V2) for merging child reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_histogram: Option<String>,
}

/// `hold --follow`: sessions carried through a drain.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Follow {
    /// Connections that reconnected with their session and got it back.
    pub resumed: usize,
    /// Reconnects greeted with a new session instead (state lost).
    pub resume_failures: usize,
    /// Sessions that had not come back when the run ended.
    pub not_back: usize,
    /// Connection attempts made while reconnecting (retries included).
    pub reconnect_attempts: usize,
    /// Wall clock (Unix ms) of the first goodbye and of the last session
    /// back with its next count: the move, across processes.
    pub first_goodbye_unix_ms: Option<u64>,
    pub last_back_unix_ms: Option<u64>,
    /// From the first goodbye to the last session back.
    pub move_seconds: Option<f64>,
}

impl Follow {
    pub fn merge(&mut self, other: &Follow) {
        self.resumed += other.resumed;
        self.resume_failures += other.resume_failures;
        self.not_back += other.not_back;
        self.reconnect_attempts += other.reconnect_attempts;
        self.first_goodbye_unix_ms = match (self.first_goodbye_unix_ms, other.first_goodbye_unix_ms)
        {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_back_unix_ms = self.last_back_unix_ms.max(other.last_back_unix_ms);
        self.move_seconds = self.span_seconds();
    }

    /// From the first goodbye to the last session back, when both happened.
    pub fn span_seconds(&self) -> Option<f64> {
        match (self.first_goodbye_unix_ms, self.last_back_unix_ms) {
            (Some(first), Some(last)) if last >= first => Some((last - first) as f64 / 1000.0),
            _ => None,
        }
    }
}

impl Report {
    /// Anything that went wrong: failed connects, drops, lost or
    /// misnumbered replies, error frames.
    pub fn problems(&self) -> u64 {
        // A drop announced with goodbye and 1001 is a drain, not a fault.
        let unannounced = self
            .dropped
            .saturating_sub(self.goodbyes_received.min(self.closed_1001));
        self.connect_failures.values().sum::<usize>() as u64
            + unannounced as u64
            + self.messages_lost
            + self.out_of_order
            + self.count_violations
            + self.errors_received
            + self.follow.as_ref().map_or(0, |follow| {
                (follow.resume_failures + follow.not_back) as u64
            })
    }
}

/// Raises this process's open-file soft limit to the hard limit and says how
/// many connections one process can hold.
pub fn connections_per_process() -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    // Leave room for the runtime, stdio and the occasional file.
    (limit as usize).saturating_sub(100)
}

pub async fn run(options: BenchOptions) -> anyhow::Result<Report> {
    let per_process = connections_per_process();
    let needed = options.connections + usize::from(options.mode == Mode::Fanout);
    if needed > per_process {
        anyhow::bail!(
            "{} connections need more open files than one process may hold here ({per_process}); \
             run several `wsctl bench` processes or use `wsctl bench hold`, which splits itself",
            options.connections
        );
    }
    let target = Target::resolve(&options.url, options.sources, options.ca.as_deref()).await?;
    match options.mode {
        Mode::Hold => hold::run(&target, &options).await,
        Mode::Rtt | Mode::Flood => traffic::run(&target, &options).await,
        Mode::Fanout => fanout::run(&target, &options).await,
    }
}

/// What opening the connections produced.
struct Opened {
    clients: Vec<Client>,
    /// Each client's `session_uuid` from its greeting, in the same order.
    sessions: Vec<String>,
    failures: BTreeMap<String, usize>,
    latency: Latency,
    took: Duration,
    /// Connects completed, by second.
    connected: Arc<timeline::PerSecond>,
}

/// Opens `count` connections, `connect_concurrency` handshakes at a time.
async fn open_all(target: &Target, options: &BenchOptions, count: usize) -> Opened {
    let bar = progress_bar(options, count as u64, "connecting");
    let gate = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let started = Instant::now();
    let connected = Arc::new(timeline::PerSecond::default());
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let (target, gate, bar) = (target.clone(), gate.clone(), bar.clone());
        let connected = connected.clone();
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let attempt = Instant::now();
            let result = target.open(index).await;
            if result.is_ok() {
                connected.tick();
            }
            bar.inc(1);
            (result, attempt.elapsed())
        }));
    }
    let mut opened = Opened {
        clients: Vec::with_capacity(count),
        sessions: Vec::with_capacity(count),
        failures: BTreeMap::new(),
        latency: Latency::default(),
        took: Duration::ZERO,
        connected,
    };
    for handle in handles {
        match handle.await {
            Ok((Ok((client, greeting)), took)) => {
                opened.latency.record(took);
                opened.clients.push(client);
                let session = greeting["session_uuid"].as_str().unwrap_or_default();
                opened.sessions.push(session.to_string());
            }
            Ok((Err(failure), _)) => *opened.failures.entry(failure.label()).or_default() += 1,
            Err(_) => {
                *opened
                    .failures
                    .entry(Failure::Other("task".into()).label())
                    .or_default() += 1
            }
        }
    }
    opened.took = started.elapsed();
    bar.finish_and_clear();
    opened
}

impl Report {
    fn with_connects(mode: Mode, options: &BenchOptions, opened: &Opened) -> Report {
        let seconds = opened.took.as_secs_f64();
        Report {
            mode: Some(mode),
            connections_requested: options.connections,
            connections_opened: opened.clients.len(),
            connect_failures: opened.failures.clone(),
            connect_seconds: seconds,
            connects_per_second: if seconds > 0.0 {
                opened.clients.len() as f64 / seconds
            } else {
                0.0
            },
            connect_latency: Some(opened.latency.summary()),
            connect_histogram: Some(opened.latency.encode()),
            processes: 1,
            ..Report::default()
        }
    }
}

fn progress_bar(options: &BenchOptions, length: u64, what: &'static str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what);
    bar
}

/// The server's resident memory in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}
