//! The yardstick for `wsctl bench`: a bare tokio-tungstenite server doing
//! the same counter work as `wsctl serve` with tuned buffers and nothing else
//! (no metrics, sessions, heartbeats, rate limits or HTTP routes).
//!
//! cargo run --release -p bare_server -- 127.0.0.1:9000
//!
//! Each connection gets a `connection_established` greeting, and each
//! `{"type":"message","message":...}` a `message_response` with the
//! connection's count and the message echoed byte for byte, exactly what
//! `wsctl bench` checks.

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args().nth(1).unwrap_or("127.0.0.1:9000".into());
    rlimit::increase_nofile_limit(u64::MAX)?;
    let listener = TcpListener::bind(&address).await?;
    println!("bare server listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_message_size(Some(65536))
                .max_frame_size(Some(65536));
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            else {
                return;
            };
            let connection_id = uuid::Uuid::new_v4();
            let greeting = format!(
                r#"{{"type":"connection_established","connection_id":"{connection_id}","count":0}}"#
            );
            if ws.send(Message::text(greeting)).await.is_err() {
                return;
            }
            let mut count: u64 = 0;
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(Incoming {
                    message: Some(message),
                }) = serde_json::from_str(&text)
                else {
                    continue;
                };
                count += 1;
                let reply = format!(
                    r#"{{"type":"message_response","count":{count},"message":{},"connection_id":"{connection_id}"}}"#,
                    message.get()
                );
                if ws.send(Message::text(reply)).await.is_err() {
                    return;
                }
            }
        });
    }
}
