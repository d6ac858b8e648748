//! Messages per second against a running `wsctl serve`: N connections, K
//! messages in flight each, for D seconds; checks every count it gets back.
//! (A stand-in until `wsctl bench flood` lands.)
//!
//! cargo run --release --example msg_rate -- ws://127.0.0.1:8000/ws/chat/ 100 8 10

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or("ws://127.0.0.1:8000/ws/chat/".into());
    let connections: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let in_flight: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let seconds: u64 = args.get(4).map_or(Ok(10), |s| s.parse())?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = connect_async(url).await?;
            ws.next().await; // connection_established
            let frame = Message::text(r#"{"type":"message","message":"x"}"#);
            for _ in 0..in_flight {
                ws.send(frame.clone()).await?;
            }
            let (mut answered, mut violations, mut last) = (0u64, 0u64, 0u64);
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let reply: serde_json::Value = serde_json::from_str(&text)?;
                if reply["type"] != "message_response" {
                    continue;
                }
                let count = reply["count"].as_u64().unwrap_or(0);
                violations += u64::from(count != last + 1);
                last = count;
                answered += 1;
                if Instant::now() >= deadline {
                    break;
                }
                ws.send(frame.clone()).await?;
            }
            anyhow::Ok((answered, violations))
        }));
    }
    let started = Instant::now();
    let (mut answered, mut violations) = (0, 0);
    for task in tasks {
        let (a, v) = task.await??;
        answered += a;
        violations += v;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "connections={connections} in_flight={in_flight} answered={answered} seconds={took:.1} \
         messages_per_second={:.0} count_violations={violations}",
        answered as f64 / took
    );
    Ok(())
}
