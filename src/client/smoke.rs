//! Smoke test of a running service: the probes, `/status`, `/metrics`, and
//! one real WebSocket session (greeting, counts 1 and 2, resume continues
//! the count, `bye` gets `goodbye`). Used by `wsctl smoke` and by deploys
//! before they switch traffic.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Fields `/status` must carry.
const STATUS_FIELDS: &[&str] = &[
    "color",
    "version",
    "started_at",
    "uptime_seconds",
    "connections_active",
    "connections_total",
    "messages_total",
    "channel_layer",
    "redis",
    "ready",
    "draining",
    "pid",
    "hostname",
];
/// Metric names `/metrics` must expose.
const METRIC_NAMES: &[&str] = &[
    "websocket_connections_total",
    "websocket_connections_active",
    "websocket_messages_total",
    "websocket_errors_total",
    "websocket_message_duration_seconds",
    "app_startup_time_seconds",
    "app_shutdown_time_seconds",
    "app_info",
];

/// One check's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub duration_ms: f64,
    /// What failed, in one sentence (empty when ok).
    pub detail: String,
}

/// Runs every check against `base` (`http://host:port`), in order; all run
/// even after a failure, so the report is complete.
///
/// `tls`: the trust for an `https://` base (default: the public roots).
pub async fn run(base: &str, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Vec<Check> {
    let base = base.trim_end_matches('/');
    let builder = reqwest::Client::builder().timeout(STEP_TIMEOUT);
    let built = match tls.clone() {
        Some(tls) => super::tls::http_client(tls, builder),
        None => builder.build().map_err(Into::into),
    };
    let http = match built {
        Ok(client) => client,
        Err(error) => {
            return vec![Check {
                name: "client".into(),
                ok: false,
                duration_ms: 0.0,
                detail: error.to_string(),
            }];
        }
    };
    let mut checks = Vec::new();
    checks.push(timed("healthz", healthz(&http, base)).await);
    checks.push(timed("readyz", readyz(&http, base)).await);
    checks.push(timed("status", status(&http, base)).await);
    checks.push(timed("metrics", metrics(&http, base)).await);
    checks.push(timed("websocket_session", session(base, &tls)).await);
    checks
}

/// Runs one check with a bound on its time and records how it went.
pub(crate) async fn timed(name: &str, check: impl Future<Output = anyhow::Result<()>>) -> Check {
    let started = Instant::now();
    let result = tokio::time::timeout(STEP_TIMEOUT * 3, check)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => Check {
            name: name.to_string(),
            ok: true,
            duration_ms,
            detail: String::new(),
        },
        // Not a failure: the address is public, the endpoint is not.
        Err(error) if error.downcast_ref::<Private>().is_some() => Check {
            name: name.to_string(),
            ok: true,
            duration_ms,
            detail: error.to_string(),
        },
        Err(error) => Check {
            name: name.to_string(),
            ok: false,
            duration_ms,
            detail: format!("{error:#}"),
        },
    }
}

/// A private endpoint (`/status`, `/metrics`) answered 403 through Nginx:
/// the request came from outside wsctl.yaml's `private_networks`, as it
/// should for a public address.
#[derive(Debug, thiserror::Error)]
#[error("{0} is private (403 from outside private_networks): not checked")]
pub struct Private(pub &'static str);

/// One GET: its status and body.
async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .with_context(|| format!("GET {url}"))?;
    Ok((status, text))
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Value)> {
    let (status, text) = get(http, url).await?;
    json_of(url, status, &text).map(|body| (status, body))
}

fn json_of(url: &str, status: u16, text: &str) -> anyhow::Result<Value> {
    // The status first: a 403 or 502 page is not JSON, and saying so would
    // hide what answered.
    serde_json::from_str(text).map_err(|_| match status {
        200..=299 => anyhow::anyhow!("GET {url} answered {status} with a body that is not JSON"),
        _ => anyhow::anyhow!("GET {url} answered {status}"),
    })
}

async fn healthz(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let (status, body) = get_json(http, &format!("{base}/healthz")).await?;
    ensure!(
        status == 200 && body == json!({"status": "ok"}),
        "/healthz answered {status} {body}"
    );
    Ok(())
}

async fn readyz(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let (status, body) = get_json(http, &format!("{base}/readyz")).await?;
    ensure!(
        status == 200 && body["status"] == "ready",
        "/readyz answered {status} {body}"
    );
    Ok(())
}

async fn status(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/status");
    let (status, text) = get(http, &url).await?;
    if status == FORBIDDEN {
        return Err(Private("/status").into());
    }
    let body = json_of(&url, status, &text)?;
    ensure!(status == 200, "/status answered {status}");
    let missing: Vec<&str> = STATUS_FIELDS
        .iter()
        .copied()
        .filter(|field| body.get(field).is_none())
        .collect();
    ensure!(missing.is_empty(), "/status lacks {}", missing.join(", "));
    Ok(())
}

/// Nginx's answer for a private endpoint asked from outside
/// `private_networks`.
const FORBIDDEN: u16 = 403;

async fn metrics(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/metrics");
    let (status, text) = get(http, &url).await?;
    if status == FORBIDDEN {
        return Err(Private("/metrics").into());
    }
    ensure!((200..300).contains(&status), "/metrics answered {status}");
    let missing: Vec<&str> = METRIC_NAMES
        .iter()
        .copied()
        .filter(|name| !text.contains(&format!("# TYPE {name} ")))
        .collect();
    ensure!(missing.is_empty(), "/metrics lacks {}", missing.join(", "));
    Ok(())
}

/// The next frame that is not a heartbeat.
async fn next_frame(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(STEP_TIMEOUT, socket.next())
            .await
            .context("no frame within 5 s")?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).context("a frame is not JSON")?;
                if value["type"] != "heartbeat" {
                    return Ok(value);
                }
            }
            Some(Ok(Message::Close(close))) => bail!("closed by the server: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("the connection ended"),
        }
    }
}

async fn expect_count(socket: &mut Socket, expected: u64) -> anyhow::Result<()> {
    let probe = format!("smoke {expected}");
    socket
        .send(Message::text(
            json!({"type": "message", "message": probe}).to_string(),
        ))
        .await?;
    let reply = next_frame(socket).await?;
    ensure!(
        reply["type"] == "message_response"
            && reply["count"] == expected
            && reply["message"] == probe,
        "expected message_response with count {expected}, got {reply}"
    );
    Ok(())
}

async fn session(
    base: &str,
    tls: &Option<std::sync::Arc<rustls::ClientConfig>>,
) -> anyhow::Result<()> {
    let ws_base = base.replacen("http", "ws", 1);
    let (mut socket, _) = super::session::connect(&format!("{ws_base}/ws/chat/"), tls)
        .await
        .context("opening /ws/chat/")?;
    let greeting = next_frame(&mut socket).await?;
    ensure!(
        greeting["type"] == "connection_established" && greeting["count"] == 0,
        "expected connection_established with count 0, got {greeting}"
    );
    let session = greeting["session_uuid"]
        .as_str()
        .context("no session_uuid")?
        .to_string();
    expect_count(&mut socket, 1).await?;
    expect_count(&mut socket, 2).await?;
    let _ = socket.close(None).await;

    let (mut socket, _) =
        super::session::connect(&format!("{ws_base}/ws/chat/?session_uuid={session}"), tls)
            .await
            .context("resuming the session")?;
    let greeting = next_frame(&mut socket).await?;
    ensure!(
        greeting["resumed"] == true && greeting["count"] == 2,
        "expected a resumed session at count 2, got {greeting}"
    );
    expect_count(&mut socket, 3).await?;
    socket.send(Message::text(r#"{"type":"bye"}"#)).await?;
    let goodbye = next_frame(&mut socket).await?;
    ensure!(
        goodbye["type"] == "goodbye"
            && goodbye["reason"] == "client_request"
            && goodbye["count"] == 3,
        "expected goodbye (client_request, count 3), got {goodbye}"
    );
    Ok(())
}

/// The checks as a JUnit report, for CI systems that read one.
pub fn junit(base: &str, checks: &[Check]) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(format!("wsctl smoke {base}"));
    for check in checks {
        let status = if check.ok {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(check.detail.clone());
            status
        };
        let mut case = TestCase::new(check.name.as_str(), status);
        case.set_time(Duration::from_secs_f64(check.duration_ms / 1000.0));
        suite.add_test_case(case);
    }
    let mut report = Report::new("wsctl smoke");
    report.add_test_suite(suite);
    Ok(report.to_string()?)
}
