//! The cutover probe: while traffic moves (switch and drain), a few
//! WebSocket sessions and an HTTP poller keep going through the public
//! Nginx address, like real clients that follow the contract's closing rule
//! (reconnect with their `session_uuid`, resend what was not answered).
//! Each session is the contract's own client (`session.rs`); the poller
//! sends a GET again once when its kept-alive connection closed before an
//! answer, as browsers do. The command then reports continuity: HTTP
//! requests failed out of sent (and why),
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
    /// What each failed request got: its status code, or `timeout`,
    /// `connect` (no connection) or `broken` (the connection ended before
    /// an answer), so a failure can be traced to Nginx, the network or the
    /// probe's own rate.
    pub http_failures: BTreeMap<String, u64>,
    /// Requests sent again once because their kept-alive connection closed
    /// before an answer (counted as failed only when the second try fails).
    pub http_retried: u64,
    pub messages_answered: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub reconnects: u64,
    /// WebSocket upgrades that failed (refused, or no answer).
    pub upgrades_refused: u64,
    pub close_codes: BTreeMap<u16, u64>,
    pub longest_gap_ms: u64,
}

impl Continuity {
    pub fn summary(&self) -> String {
        format!(
            "HTTP {}/{} failed {:?} ({} sent again); WebSocket {} answered, {} lost, {} duplicated, {} reconnects {:?}, {} upgrades refused; longest gap {} ms",
            self.http_failed,
            self.http_sent,
            self.http_failures,
            self.http_retried,
            self.messages_answered,
            self.messages_lost,
            self.messages_duplicated,
            self.reconnects,
            self.close_codes,
            self.upgrades_refused,
            self.longest_gap_ms
        )
    }
}

pub struct Probe {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Continuity>>,
}

/// What the probe may assume of the app behind the public address.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` of the public address.
    pub public: String,
    /// A public HTTP path that answers 2xx (`/healthz`, an app's `/up`).
    pub http_path: String,
    /// Where WebSockets upgrade; none: HTTP only.
    pub ws_path: Option<String>,
    /// The app speaks docs/protocol.md: sessions count their messages and
    /// resume; otherwise the sockets are held open and only their closes,
    /// refused upgrades and time to be back are seen.
    pub protocol: bool,
    /// The public address speaks TLS, trusted this way (`wss://`, `https://`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Probe {
    /// Starts the sessions and the poller against the target.
    pub fn start(target: &Target) -> Probe {
        let stop = CancellationToken::new();
        let public = &target.public;
        let (ws, http) = match target.tls {
            Some(_) => ("wss", "https"),
            None => ("ws", "http"),
        };
        let mut tasks: Vec<_> = match &target.ws_path {
            Some(path) => (0..SESSIONS)
                .map(|_| {
                    let url = format!("{ws}://{public}{path}");
                    let tls = target.tls.clone();
                    match target.protocol {
                        true => tokio::spawn(session(url, stop.clone(), tls)),
                        false => tokio::spawn(held_socket(url, stop.clone(), tls)),
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        // A public path: /status is private, and the probe's requests come
        // from the Docker gateway when `public` is a published host port.
        tasks.push(tokio::spawn(poll(
            format!("{http}://{public}{}", target.http_path),
            stop.clone(),
            target.tls.clone(),
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
            total.http_retried += part.http_retried;
            for (kind, n) in part.http_failures {
                *total.http_failures.entry(kind).or_default() += n;
            }
            total.messages_answered += part.messages_answered;
            total.messages_lost += part.messages_lost;
            total.messages_duplicated += part.messages_duplicated;
            total.reconnects += part.reconnects;
            total.upgrades_refused += part.upgrades_refused;
            for (code, n) in part.close_codes {
                *total.close_codes.entry(code).or_default() += n;
            }
            total.longest_gap_ms = total.longest_gap_ms.max(part.longest_gap_ms);
        }
        total
    }
}

async fn poll(
    url: String,
    stop: CancellationToken,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Continuity {
    let mut report = Continuity::default();
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
    let client = match tls {
        Some(tls) => super::tls::http_client(tls, builder),
        None => builder.build().map_err(Into::into),
    };
    let Ok(client) = client else {
        return report;
    };
    let mut last_ok = Instant::now();
    while !stop.is_cancelled() {
        report.http_sent += 1;
        let mut failure = get(&client, &url).await;
        if failure.as_deref() == Some(BROKEN) {
            // An idle kept-alive connection that Nginx closed as we sent on
            // it: an old worker does so after every reload. A client sends
            // such a GET again (RFC 9112 9.3.1), on a new connection.
            report.http_retried += 1;
            failure = get(&client, &url).await;
        }
        match failure {
            None => {
                report.longest_gap_ms = report
                    .longest_gap_ms
                    .max(last_ok.elapsed().as_millis() as u64);
                last_ok = Instant::now();
            }
            Some(kind) => {
                report.http_failed += 1;
                *report.http_failures.entry(kind).or_default() += 1;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PACE) => {}
            _ = stop.cancelled() => {}
        }
    }
    report
}

/// What a failed request ended in (a connection closed before an answer).
const BROKEN: &str = "broken";

/// One GET of the poller: `None` when answered 2xx, else what it got.
async fn get(client: &reqwest::Client, url: &str) -> Option<String> {
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(response.status().as_u16().to_string()),
        Err(error) if error.is_timeout() => Some("timeout".to_string()),
        Err(error) if error.is_connect() => Some("connect".to_string()),
        Err(_) => Some(BROKEN.to_string()),
    }
}

/// One client session (`session.rs`): a message every 100 ms, each resent
/// until answered; its counts tell what was lost or counted twice.
async fn session(
    url: String,
    stop: CancellationToken,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Continuity {
    let outcome = super::session::run_trusting(url, PACE, stop, tls).await;
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

/// A socket to an app whose protocol wsctl does not know: held open, and
/// opened again when the server closes it. What it sees: each close's code
/// (1006 when the connection ended without a close frame), upgrades that
/// failed, and the longest time from a close to being connected again.
async fn held_socket(
    url: String,
    stop: CancellationToken,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Continuity {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let mut report = Continuity::default();
    // Since the last close (or the start), while not connected.
    let mut down_since = Some(Instant::now());
    while !stop.is_cancelled() {
        let connected = tokio::select! {
            connected = super::session::connect(&url, &tls) => connected,
            _ = stop.cancelled() => break,
        };
        let mut socket = match connected {
            Ok((socket, _)) => socket,
            Err(_) => {
                report.upgrades_refused += 1;
                tokio::select! {
                    _ = tokio::time::sleep(PACE) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
        };
        if let Some(since) = down_since.take() {
            report.longest_gap_ms = report
                .longest_gap_ms
                .max(since.elapsed().as_millis() as u64);
        }
        let code = loop {
            let frame = tokio::select! {
                frame = socket.next() => frame,
                _ = stop.cancelled() => break None,
            };
            match frame {
                Some(Ok(Message::Close(close))) => {
                    break Some(close.map_or(1005, |close| u16::from(close.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Some(1006),
            }
        };
        let Some(code) = code else {
            let _ = socket.close(None).await;
            break;
        };
        *report.close_codes.entry(code).or_default() += 1;
        report.reconnects += 1;
        down_since = Some(Instant::now());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads one request head (the poller's GETs have no body).
    async fn read_request(socket: &mut tokio::net::TcpStream) -> bool {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match socket.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        true
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

    /// The poller against `address` for `paces` of its pace, then stopped.
    async fn poll_for(address: std::net::SocketAddr, paces: u32) -> Continuity {
        let stop = CancellationToken::new();
        let polling = tokio::spawn(poll(
            format!("http://{address}/healthz"),
            stop.clone(),
            None,
        ));
        tokio::time::sleep(PACE * paces).await;
        stop.cancel();
        polling.await.expect("poller")
    }

    /// A server whose first connection answers one GET and then closes on
    /// the next one without an answer, as an Nginx worker that shuts down
    /// between the two; every later connection answers. The poller sends
    /// that GET again and counts no failure.
    #[tokio::test]
    async fn a_get_whose_kept_alive_connection_closes_unanswered_is_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut socket, _)) = listener.accept().await {
                let closes_on_second = std::mem::take(&mut first);
                tokio::spawn(async move {
                    let mut answered = 0;
                    while read_request(&mut socket).await {
                        if closes_on_second && answered == 1 {
                            return;
                        }
                        if socket.write_all(OK).await.is_err() {
                            return;
                        }
                        answered += 1;
                    }
                });
            }
        });
        let report = poll_for(address, 4).await;
        assert!(report.http_sent >= 3, "{}", report.summary());
        assert_eq!(report.http_failed, 0, "{}", report.summary());
        assert_eq!(report.http_retried, 1, "{}", report.summary());
    }

    /// A status that is not 2xx is a failure named by its code, not sent
    /// again.
    #[tokio::test]
    async fn a_refused_get_is_a_failure_named_by_its_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    while read_request(&mut socket).await {
                        let busy = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(busy).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let report = poll_for(address, 2).await;
        assert!(report.http_failed >= 1, "{}", report.summary());
        assert_eq!(report.http_failed, report.http_sent, "{}", report.summary());
        assert_eq!(report.http_failures.get("429"), Some(&report.http_failed));
        assert_eq!(report.http_retried, 0, "{}", report.summary());
    }
}
