//! `fanout`: one extra connection broadcasts `rounds` times; every one of the
//! N connections notes how long each broadcast took to reach it.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Client, micros_since};
use super::latency::Latency;
use super::{BenchOptions, Mode, Report, Target, open_all};

/// Time between two broadcasts, so that each round is measured alone.
const GAP: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    message: Option<(u64, u64)>,
}

pub async fn run(target: &Target, options: &BenchOptions) -> anyhow::Result<Report> {
    let opened = open_all(target, options, options.connections).await;
    let mut report = Report::with_connects(Mode::Fanout, options, &opened);
    let (mut sender, _) = target.open(options.connections).await.map_err(|failure| {
        anyhow::anyhow!("the broadcasting connection failed: {}", failure.label())
    })?;
    let rounds = options.rounds.max(1) as u64;
    // Let the server finish greeting the last connections, so that the
    // first round measures a broadcast and not the tail of the connects.
    tokio::time::sleep(GAP).await;
    let origin = Instant::now();
    let give_up = tokio::time::Instant::now() + GAP * (rounds as u32) + Duration::from_secs(10);
    let receivers: Vec<_> = opened
        .clients
        .into_iter()
        .map(|client| tokio::spawn(receive(client, rounds, origin, give_up)))
        .collect();

    for round in 1..=rounds {
        let text = format!(
            r#"{{"type":"broadcast","message":[{round},{}]}}"#,
            micros_since(origin)
        );
        sender.send(Message::text(text)).await?;
        report.messages_sent += 1;
        tokio::time::sleep(GAP).await;
    }

    let mut latency = Latency::default();
    for receiver in receivers {
        let (received, their_latency, dropped) = receiver.await?;
        latency.merge(&their_latency);
        report.messages_answered += received;
        report.messages_lost += rounds.saturating_sub(received);
        report.dropped += usize::from(dropped);
    }
    let _ = sender.close(None).await;
    report.fanout = Some(latency.summary());
    report.run_seconds = origin.elapsed().as_secs_f64();
    Ok(report)
}

/// Collects `rounds` broadcasts on one connection (or gives up at
/// `give_up`); returns how many came, their latencies, and whether the
/// connection was dropped.
async fn receive(
    mut client: Client,
    rounds: u64,
    origin: Instant,
    give_up: tokio::time::Instant,
) -> (u64, Latency, bool) {
    let mut latency = Latency::default();
    let mut received = 0;
    while received < rounds {
        let frame = tokio::select! {
            frame = client.next() => frame,
            _ = tokio::time::sleep_until(give_up) => return (received, latency, false),
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            _ => return (received, latency, true),
        };
        if let Ok(Frame {
            kind: "broadcast",
            message: Some((_, sent_at)),
        }) = serde_json::from_str::<Frame>(&text)
        {
            received += 1;
            latency.record(Duration::from_micros(
                micros_since(origin).saturating_sub(sent_at),
            ));
        }
    }
    (received, latency, false)
}
