//! Opening many client connections from one machine.
//!
//! Connections come from several loopback source addresses (127.0.0.1,
//! .2, ...) so that the ~28,000 ephemeral ports of one source address do not
//! run out, and use a small read buffer so that the load tool itself stays
//! light at 19,000 connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream, lookup_host};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async_tls_with_config};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect and from where.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub server: SocketAddr,
    /// Number of source addresses 127.0.0.1 .. 127.0.0.N (loopback targets only).
    pub sources: u8,
    /// The trust for a `wss://` URL.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Target {
    /// `ca`: for a `wss://` URL, a CA to trust beside the public roots.
    pub async fn resolve(
        url: &str,
        sources: u8,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Target> {
        let (without_scheme, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, None),
            (_, Some(rest)) => (rest, Some(crate::client::tls::trusting(ca)?)),
            _ => anyhow::bail!("--url must start with ws:// or wss:// (got {url})"),
        };
        let authority = without_scheme.split('/').next().unwrap_or_default();
        let server = lookup_host(authority)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{authority} did not resolve"))?;
        // Extra source addresses exist only on loopback.
        let sources = if server.ip().is_loopback() {
            sources.max(1)
        } else {
            1
        };
        Ok(Target {
            url: url.to_string(),
            server,
            sources,
            tls,
        })
    }

    /// Opens connection number `index` and reads its greeting.
    pub async fn open(&self, index: usize) -> Result<(Client, serde_json::Value), Failure> {
        self.open_url(index, &self.url).await
    }

    /// Opens connection number `index` to `url` (this target's server, a
    /// query of its own such as `?session_uuid=`) and reads its greeting.
    pub async fn open_url(
        &self,
        index: usize,
        url: &str,
    ) -> Result<(Client, serde_json::Value), Failure> {
        let attempt = async {
            let socket = TcpSocket::new_v4().map_err(Failure::from_io)?;
            if self.sources > 1 {
                let source = Ipv4Addr::new(127, 0, 0, 1 + (index % self.sources as usize) as u8);
                socket
                    .bind(SocketAddr::new(IpAddr::V4(source), 0))
                    .map_err(Failure::from_io)?;
            }
            let stream = socket
                .connect(self.server)
                .await
                .map_err(Failure::from_io)?;
            let _ = stream.set_nodelay(true);
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let connector = self.tls.clone().map(crate::client::tls::connector);
            let (mut client, _) =
                client_async_tls_with_config(url, stream, Some(config), connector)
                    .await
                    .map_err(Failure::from_ws)?;
            let greeting = next_json(&mut client).await.ok_or(Failure::NoGreeting)?;
            Ok((client, greeting))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }
}

/// The next text frame as JSON, skipping control frames; `None` at the end.
pub async fn next_json(client: &mut Client) -> Option<serde_json::Value> {
    use futures_util::StreamExt;
    loop {
        match client.next().await? {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Failure {
    Refused,
    Timeout,
    TooManyOpenFiles,
    AddressInUse,
    Http(u16),
    NoGreeting,
    Other(String),
}

impl Failure {
    fn from_io(error: std::io::Error) -> Failure {
        match error.raw_os_error() {
            Some(24) => Failure::TooManyOpenFiles,
            Some(98) | Some(99) => Failure::AddressInUse,
            _ if error.kind() == std::io::ErrorKind::ConnectionRefused => Failure::Refused,
            _ => Failure::Other(error.kind().to_string()),
        }
    }

    fn from_ws(error: WsError) -> Failure {
        match error {
            WsError::Http(response) => Failure::Http(response.status().as_u16()),
            WsError::Io(io) => Failure::from_io(io),
            other => Failure::Other(other.to_string()),
        }
    }

    /// The label in reports: `refused`, `timeout`, `http_503`, ...
    pub fn label(&self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::Timeout => "timeout".into(),
            Failure::TooManyOpenFiles => "too_many_open_files".into(),
            Failure::AddressInUse => "no_free_port".into(),
            Failure::Http(status) => format!("http_{status}"),
            Failure::NoGreeting => "no_greeting".into(),
            Failure::Other(what) => format!("other: {what}"),
        }
    }
}

/// Microseconds since `origin`, carried inside messages so that a reply
/// tells its own round-trip time.
pub fn micros_since(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}
