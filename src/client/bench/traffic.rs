//! `rtt` (a fixed total message rate) and `flood` (K messages in flight per
//! connection): round trips measured from send to `message_response`, with
//! every reply's count and sequence checked.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Client, micros_since};
use super::latency::Latency;
use super::{BenchOptions, Mode, Report, Target, open_all, progress_bar};

/// How long replies may trail the end of sending before they count as lost.
const GRACE: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    count: Option<u64>,
    /// What we sent: `[sequence, micros since the run began]`.
    message: Option<(u64, u64)>,
}

#[derive(Default)]
struct Tally {
    sent: u64,
    answered: u64,
    errors: u64,
    out_of_order: u64,
    count_violations: u64,
    latency: Latency,
}

/// How one connection paces its messages.
#[derive(Clone, Copy)]
enum Pace {
    /// One message every `period`, the first after `offset`.
    Every { period: Duration, offset: Duration },
    /// Keep this many unanswered.
    InFlight(usize),
}

pub async fn run(target: &Target, options: &BenchOptions) -> anyhow::Result<Report> {
    let opened = open_all(target, options, options.connections).await;
    let mode = options.mode;
    let mut report = Report::with_connects(mode, options, &opened);
    let connections = opened.clients.len().max(1);
    let origin = Instant::now();
    let stop_sending = origin + options.duration;
    let mut tasks = Vec::with_capacity(connections);
    for (index, client) in opened.clients.into_iter().enumerate() {
        let pace = match mode {
            Mode::Rtt => {
                let period = Duration::from_secs_f64(connections as f64 / options.rate.max(0.001));
                Pace::Every {
                    period,
                    offset: period.mul_f64(index as f64 / connections as f64),
                }
            }
            _ => Pace::InFlight(options.in_flight.max(1)),
        };
        tasks.push(tokio::spawn(drive(client, pace, origin, stop_sending)));
    }
    let bar = progress_bar(options, options.duration.as_secs().max(1), "sending");
    while Instant::now() < stop_sending {
        tokio::time::sleep(Duration::from_secs(1).min(stop_sending - Instant::now())).await;
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut total = Tally::default();
    for task in tasks {
        let (tally, dropped) = task.await?;
        total.sent += tally.sent;
        total.answered += tally.answered;
        total.errors += tally.errors;
        total.out_of_order += tally.out_of_order;
        total.count_violations += tally.count_violations;
        total.latency.merge(&tally.latency);
        report.dropped += usize::from(dropped);
    }
    report.messages_sent = total.sent;
    report.messages_answered = total.answered;
    report.errors_received = total.errors;
    report.messages_lost = total.sent.saturating_sub(total.answered + total.errors);
    report.out_of_order = total.out_of_order;
    report.count_violations = total.count_violations;
    report.messages_per_second = Some(total.answered as f64 / options.duration.as_secs_f64());
    report.round_trip = Some(total.latency.summary());
    report.run_seconds = origin.elapsed().as_secs_f64();
    Ok(report)
}

/// Sends on one connection until `stop_sending`, then waits (bounded) for
/// the replies still due. Returns the tally and whether the server dropped it.
async fn drive(
    mut client: Client,
    pace: Pace,
    origin: Instant,
    stop_sending: Instant,
) -> (Tally, bool) {
    let mut tally = Tally::default();
    let (mut last_count, mut last_sequence) = (0u64, 0u64);
    let mut ticker = match pace {
        Pace::Every { period, offset } => {
            let mut ticker = tokio::time::interval_at((origin + offset).into(), period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(ticker)
        }
        Pace::InFlight(_) => None,
    };
    if let Pace::InFlight(window) = pace {
        for _ in 0..window {
            if send(&mut client, &mut tally, origin).await.is_err() {
                return (tally, true);
            }
        }
    }
    let give_up = tokio::time::Instant::from(stop_sending + GRACE);
    loop {
        let sending = Instant::now() < stop_sending;
        let outstanding = tally.sent > tally.answered + tally.errors;
        if !sending && !outstanding {
            return (tally, false);
        }
        let tick = async {
            match ticker.as_mut() {
                Some(ticker) if sending => {
                    ticker.tick().await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tick => {
                if send(&mut client, &mut tally, origin).await.is_err() {
                    return (tally, true);
                }
            }
            frame = client.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    _ => return (tally, true),
                };
                let Ok(reply) = serde_json::from_str::<Reply>(&text) else { continue };
                match reply.kind {
                    "message_response" => {
                        tally.answered += 1;
                        let count = reply.count.unwrap_or(0);
                        tally.count_violations += u64::from(count != last_count + 1);
                        last_count = count;
                        if let Some((sequence, sent_at)) = reply.message {
                            tally.out_of_order += u64::from(sequence != last_sequence + 1);
                            last_sequence = sequence;
                            let now = micros_since(origin);
                            tally.latency.record(Duration::from_micros(now.saturating_sub(sent_at)));
                        }
                    }
                    "error" => tally.errors += 1,
                    _ => continue,
                }
                if matches!(pace, Pace::InFlight(_)) && Instant::now() < stop_sending
                    && send(&mut client, &mut tally, origin).await.is_err()
                {
                    return (tally, true);
                }
            }
            _ = tokio::time::sleep_until(give_up) => return (tally, false),
        }
    }
}

async fn send(client: &mut Client, tally: &mut Tally, origin: Instant) -> Result<(), ()> {
    tally.sent += 1;
    let text = format!(
        r#"{{"type":"message","message":[{},{}]}}"#,
        tally.sent,
        micros_since(origin)
    );
    client.send(Message::text(text)).await.map_err(|_| ())
}
