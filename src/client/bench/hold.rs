//! `hold`: open N connections, keep them for the duration, and report what
//! opening them took and what holding them costs the server.
//!
//! With `--follow`, each connection is a client riding a deploy: it sends
//! one message (count 1), and when the server says goodbye (or the socket
//! breaks) it reconnects with its `session_uuid`, checks that the session
//! resumed with its count, and sends the next message (count 2, 3, ...).
//! The report says how many came back and how long the move took, from the
//! first goodbye to the last session back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::client::Client;
use super::{BenchOptions, Follow, Mode, Report, Target, open_all, progress_bar, rss_kib};

/// How held connections ended, when the server ended them.
#[derive(Default)]
struct Ends {
    dropped: AtomicUsize,
    goodbyes: AtomicUsize,
    closed_1001: AtomicUsize,
}

pub async fn run(target: &Target, options: &BenchOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let rss_before = options.server_pid.and_then(rss_kib);
    let opened = open_all(target, options, options.connections).await;
    let mut report = Report::with_connects(Mode::Hold, options, &opened);
    let mut timeline = super::timeline::Timeline {
        connects: opened.connected.counts(),
        ..Default::default()
    };

    // Every held connection keeps reading (heartbeats) and notes how it
    // ended if the server closed it: after a goodbye, with close 1001?
    let ends = Arc::new(Ends::default());
    let moves = Arc::new(Moves::default());
    // Reconnects obey the same limit as the first connects: handshakes in
    // progress at once (beyond it, a 2-core server only times them out).
    let handshakes = Arc::new(tokio::sync::Semaphore::new(
        options.connect_concurrency.max(1),
    ));
    let stop = CancellationToken::new();
    let mut holders = Vec::with_capacity(opened.clients.len());
    for (index, (mut client, session)) in
        opened.clients.into_iter().zip(opened.sessions).enumerate()
    {
        let (ends, stop) = (ends.clone(), stop.clone());
        if options.follow {
            let (moves, target) = (moves.clone(), target.clone());
            let handshakes = handshakes.clone();
            holders.push(tokio::spawn(async move {
                let rider = Rider {
                    index,
                    session,
                    target,
                    ends,
                    moves,
                    stop,
                    handshakes,
                };
                rider.ride(client).await;
            }));
            continue;
        }
        holders.push(tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    frame = client.next() => frame,
                    _ = stop.cancelled() => return,
                };
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        if text.contains(r#""type":"goodbye""#) {
                            ends.goodbyes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(Message::Close(close))) => {
                        if close.is_some_and(|close| u16::from(close.code) == 1001) {
                            ends.closed_1001.fetch_add(1, Ordering::Relaxed);
                        }
                        ends.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        ends.dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }

    let bar = progress_bar(options, options.duration.as_secs().max(1), "holding");
    let hold_until = tokio::time::Instant::now() + options.duration;
    let opened_count = holders.len();
    while tokio::time::Instant::now() < hold_until {
        let next = hold_until.min(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
        tokio::time::sleep_until(next).await;
        bar.inc(1);
        // The server closed everything (a drain): nothing left to hold.
        if !options.follow
            && opened_count > 0
            && ends.dropped.load(Ordering::Relaxed) == opened_count
        {
            break;
        }
    }
    bar.finish_and_clear();

    // Measured while every connection is still open.
    let rss_after = options.server_pid.and_then(rss_kib);
    stop.cancel();
    for holder in holders {
        let _ = holder.await;
    }
    report.dropped = ends.dropped.load(Ordering::Relaxed);
    report.goodbyes_received = ends.goodbyes.load(Ordering::Relaxed);
    report.closed_1001 = ends.closed_1001.load(Ordering::Relaxed);
    if options.follow {
        report.count_violations = moves.count_violations.load(Ordering::Relaxed);
        report.errors_received = moves.errors.load(Ordering::Relaxed);
        report.follow = Some(moves.report());
        timeline.resumes = moves.back.counts();
    }
    report.timeline = Some(timeline);
    report.server_rss_before_kib = rss_before;
    report.server_rss_after_kib = rss_after;
    if let (Some(before), Some(after)) = (rss_before, rss_after)
        && report.connections_opened > 0
    {
        report.server_rss_per_connection_bytes =
            Some(after.saturating_sub(before) as f64 * 1024.0 / report.connections_opened as f64);
    }
    report.run_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What following the sessions found, across every connection.
struct Moves {
    resumed: AtomicUsize,
    resume_failures: AtomicUsize,
    not_back: AtomicUsize,
    attempts: AtomicUsize,
    count_violations: AtomicU64,
    errors: AtomicU64,
    /// Unix ms; `u64::MAX` / 0 while unset.
    first_goodbye_ms: AtomicU64,
    last_back_ms: AtomicU64,
    /// Sessions back, by second.
    back: super::timeline::PerSecond,
}

impl Default for Moves {
    fn default() -> Self {
        Moves {
            resumed: AtomicUsize::new(0),
            resume_failures: AtomicUsize::new(0),
            not_back: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
            count_violations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_goodbye_ms: AtomicU64::new(u64::MAX),
            last_back_ms: AtomicU64::new(0),
            back: Default::default(),
        }
    }
}

impl Moves {
    fn report(&self) -> Follow {
        let first = self.first_goodbye_ms.load(Ordering::Relaxed);
        let last = self.last_back_ms.load(Ordering::Relaxed);
        let mut follow = Follow {
            resumed: self.resumed.load(Ordering::Relaxed),
            resume_failures: self.resume_failures.load(Ordering::Relaxed),
            not_back: self.not_back.load(Ordering::Relaxed),
            reconnect_attempts: self.attempts.load(Ordering::Relaxed),
            first_goodbye_unix_ms: (first != u64::MAX).then_some(first),
            last_back_unix_ms: (last != 0).then_some(last),
            move_seconds: None,
        };
        follow.move_seconds = follow.span_seconds();
        follow
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// How long a message may wait for its answer before the connection is
/// treated as broken (and the session followed on a new one).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection following its session through drains.
struct Rider {
    index: usize,
    session: String,
    target: Target,
    ends: Arc<Ends>,
    moves: Arc<Moves>,
    stop: CancellationToken,
    /// Handshakes in progress at once, shared by every rider.
    handshakes: Arc<tokio::sync::Semaphore>,
}

impl Rider {
    async fn ride(self, mut client: Client) {
        let separator = if self.target.url.contains('?') {
            '&'
        } else {
            '?'
        };
        let resume_url = format!(
            "{}{separator}session_uuid={}",
            self.target.url, self.session
        );
        // The count this session has reached, as the server answered it.
        let mut count = 0u64;
        // Set once the first drain moved this connection.
        let mut moved = false;
        // A message went out and its answer never came: the server may
        // have counted it (the resend, under the same id, is answered as a
        // duplicate with that count).
        let mut unanswered: bool;
        loop {
            match self.exchange(&mut client, count).await {
                Some(answered) => {
                    count = answered;
                    unanswered = false;
                    if moved {
                        self.moves
                            .last_back_ms
                            .fetch_max(unix_ms(), Ordering::Relaxed);
                        self.moves.back.tick();
                    }
                    // Held until the server ends it (or the run ends).
                    tokio::select! {
                        _ = self.hold(&mut client) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                None if self.stop.is_cancelled() => return,
                None => unanswered = true,
            }
            // Gone: come back with the session.
            let Some((next, greeting)) = self.reconnect(&resume_url).await else {
                self.moves.not_back.fetch_add(1, Ordering::Relaxed);
                return;
            };
            client = next;
            moved = true;
            if greeting["resumed"] == true {
                self.moves.resumed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.moves.resume_failures.fetch_add(1, Ordering::Relaxed);
            }
            let resumed_at = greeting["count"].as_u64();
            let counted_unanswered = unanswered && resumed_at == Some(count + 1);
            if resumed_at != Some(count) && !counted_unanswered {
                self.moves.count_violations.fetch_add(1, Ordering::Relaxed);
                count = resumed_at.unwrap_or(count);
            }
        }
    }

    /// Sends one message and waits for its answer: the new count, checked
    /// to be `count + 1`. `None` when the connection broke first. The
    /// message carries an id (docs/protocol.md, "Message ids"), as the
    /// official clients' messages do: a resend after a lost answer, on this
    /// connection or the next, is answered with the count it got, never
    /// counted twice.
    async fn exchange(&self, client: &mut Client, count: u64) -> Option<u64> {
        use futures_util::SinkExt;
        let frame = serde_json::json!({
            "type": "message",
            "message": "hold",
            "id": format!("{}-{}", self.index, count + 1),
        })
        .to_string();
        for _ in 0..10 {
            client.send(Message::text(frame.clone())).await.ok()?;
            let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
                loop {
                    let value = super::client::next_json(client).await?;
                    match value["type"].as_str() {
                        Some("message_response") => return Some(Ok(value)),
                        Some("error") => return Some(Err(value)),
                        Some("goodbye") => {
                            self.goodbye();
                            return None;
                        }
                        _ => continue,
                    }
                }
            })
            .await
            .ok()??;
            match answer {
                Ok(value) => {
                    let answered = value["count"].as_u64().unwrap_or(0);
                    if answered != count + 1 {
                        self.moves.count_violations.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(answered);
                }
                // Not counted (unavailable, rate_limited): try again.
                Err(_) => {
                    self.moves.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        None
    }

    /// Reads until the server ends the connection.
    async fn hold(&self, client: &mut Client) {
        while let Some(frame) = client.next().await {
            match frame {
                Ok(Message::Text(text)) if text.contains(r#""type":"goodbye""#) => self.goodbye(),
                Ok(Message::Close(close)) => {
                    if close.is_some_and(|close| u16::from(close.code) == 1001) {
                        self.ends.closed_1001.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.ends.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn goodbye(&self) {
        self.ends.goodbyes.fetch_add(1, Ordering::Relaxed);
        self.moves
            .first_goodbye_ms
            .fetch_min(unix_ms(), Ordering::Relaxed);
    }

    /// Reconnects with the session, backing off up to 1 s between tries,
    /// until the run ends.
    async fn reconnect(&self, url: &str) -> Option<(Client, serde_json::Value)> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let attempt = tokio::select! {
                attempt = async {
                    let _permit = self.handshakes.acquire().await;
                    self.moves.attempts.fetch_add(1, Ordering::Relaxed);
                    self.target.open_url(self.index, url).await
                } => attempt,
                _ = self.stop.cancelled() => return None,
            };
            match attempt {
                Ok(opened) => return Some(opened),
                Err(_) => {
                    // Spread the retries of many clients over the backoff.
                    let jitter = (self.index as u64 * 7919) % 100;
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
