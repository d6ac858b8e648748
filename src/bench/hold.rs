//! `hold`: open N connections, keep them for the duration, and report what
//! opening them took and what holding them costs the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::{BenchOptions, Mode, Report, Target, open_all, progress_bar, rss_kib};

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

    // Every held connection keeps reading (heartbeats) and notes how it
    // ended if the server closed it: after a goodbye, with close 1001?
    let ends = Arc::new(Ends::default());
    let stop = CancellationToken::new();
    let mut holders = Vec::with_capacity(opened.clients.len());
    for mut client in opened.clients {
        let (ends, stop) = (ends.clone(), stop.clone());
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
        if opened_count > 0 && ends.dropped.load(Ordering::Relaxed) == opened_count {
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
