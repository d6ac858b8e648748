//! The smoke test of an app that is not ours (`app_kind: external`): HTTP
//! paths that must answer, and WebSocket paths that must upgrade (and, when
//! asked, answer a frame). It knows nothing of docs/protocol.md, so it
//! works for any WebSocket service. `wsctl smoke --checks JSON` runs it;
//! a deploy runs it from the stack's checker container, straight at each
//! replica.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use super::smoke::{Check, timed};

/// How long a WebSocket check waits for the frame it expects.
const EXPECT_WITHIN: Duration = Duration::from_secs(5);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One check of wsctl.yaml's `smoke:` list: `{http: /up}` (2xx, or
/// `status: N`), or `{websocket: /ws/, send: TEXT, expect: TEXT}` (the
/// upgrade must succeed; with `send`, a frame containing `expect` must
/// arrive within 5 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

impl AppCheck {
    pub fn http(path: &str) -> AppCheck {
        AppCheck {
            http: Some(path.to_string()),
            status: None,
            websocket: None,
            send: None,
            expect: None,
        }
    }

    pub fn websocket(path: &str) -> AppCheck {
        AppCheck {
            http: None,
            status: None,
            websocket: Some(path.to_string()),
            send: None,
            expect: None,
        }
    }

    /// What is wrong with the check as written, if anything.
    pub fn problem(&self) -> Option<String> {
        let path_problem = |key: &str, path: &str| {
            (!path.starts_with('/')).then(|| format!("{key} '{path}' must start with /"))
        };
        match (&self.http, &self.websocket) {
            (Some(_), Some(_)) => Some("names both http and websocket; one per check".into()),
            (None, None) => Some("names neither http nor websocket".into()),
            (Some(path), None) => {
                if self.send.is_some() || self.expect.is_some() {
                    return Some("send and expect belong to websocket checks".into());
                }
                if let Some(status) = self.status
                    && !(100..=599).contains(&status)
                {
                    return Some(format!("status {status} is not an HTTP status"));
                }
                path_problem("http", path)
            }
            (None, Some(path)) => {
                if self.status.is_some() {
                    return Some("status belongs to http checks".into());
                }
                if self.send.is_some() != self.expect.is_some() {
                    return Some("send and expect go together".into());
                }
                path_problem("websocket", path)
            }
        }
    }

    /// How the check is named in a report: `GET /up`, `upgrade /ws/`.
    pub fn name(&self) -> String {
        match (&self.http, &self.websocket) {
            (Some(path), _) => format!("GET {path}"),
            (_, Some(path)) => format!("upgrade {path}"),
            _ => "check".into(),
        }
    }
}

/// Runs every check against `base` (`http://host:port`), in order; all run
/// even after a failure, so the report is complete.
pub async fn run(base: &str, checks: &[AppCheck]) -> Vec<Check> {
    let base = base.trim_end_matches('/');
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build();
    let mut report = Vec::new();
    for check in checks {
        let name = check.name();
        let outcome = match (&http, &check.http, &check.websocket) {
            (Ok(http), Some(path), _) => timed(&name, get(http, base, path, check.status)).await,
            (_, _, Some(path)) => timed(&name, upgrade(base, path, check)).await,
            (Err(error), ..) => timed(&name, async { bail!("no HTTP client: {error}") }).await,
            _ => timed(&name, async { bail!("names neither http nor websocket") }).await,
        };
        report.push(outcome);
    }
    report
}

async fn get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    status: Option<u16>,
) -> anyhow::Result<()> {
    let url = format!("{base}{path}");
    let response = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let got = response.status();
    match status {
        Some(wanted) => ensure!(
            got.as_u16() == wanted,
            "{path} answered {got}, not {wanted}"
        ),
        None => ensure!(got.is_success(), "{path} answered {got}"),
    }
    Ok(())
}

async fn upgrade(base: &str, path: &str, check: &AppCheck) -> anyhow::Result<()> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let (mut socket, _) = connect_async(&url)
        .await
        .with_context(|| format!("upgrading {path}"))?;
    if let (Some(send), Some(expect)) = (&check.send, &check.expect) {
        socket.send(Message::text(send.clone())).await?;
        let answered = tokio::time::timeout(EXPECT_WITHIN, async {
            while let Some(frame) = socket.next().await {
                match frame? {
                    Message::Text(text) if text.contains(expect.as_str()) => return Ok(()),
                    Message::Binary(bytes)
                        if String::from_utf8_lossy(&bytes).contains(expect.as_str()) =>
                    {
                        return Ok(());
                    }
                    Message::Close(close) => bail!("closed before answering: {close:?}"),
                    _ => {}
                }
            }
            bail!("the connection ended before answering")
        })
        .await;
        match answered {
            Ok(result) => result.with_context(|| format!("{path}: no frame with '{expect}'"))?,
            Err(_) => bail!(
                "{path}: no frame with '{expect}' within {} s",
                EXPECT_WITHIN.as_secs()
            ),
        }
    }
    let _ = socket.close(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> AppCheck {
        serde_yaml::from_str(yaml).expect("a check")
    }

    #[test]
    fn checks_as_written_are_checked() {
        assert_eq!(parse("{http: /up}").problem(), None);
        assert_eq!(parse("{http: /, status: 404}").problem(), None);
        assert_eq!(
            parse("{websocket: /ws/, send: ping, expect: pong}").problem(),
            None
        );
        let problem = |yaml: &str| parse(yaml).problem().unwrap_or_default();
        assert!(problem("{http: /up, websocket: /ws/}").contains("both"));
        assert!(problem("{status: 200}").contains("neither"));
        assert!(problem("{http: up}").contains("must start with /"));
        assert!(problem("{http: /up, send: x, expect: y}").contains("websocket checks"));
        assert!(problem("{websocket: /ws/, status: 101}").contains("http checks"));
        assert!(problem("{websocket: /ws/, send: x}").contains("together"));
        assert!(problem("{http: /, status: 1000}").contains("not an HTTP status"));
        assert!(serde_yaml::from_str::<AppCheck>("{htp: /up}").is_err());
    }
}
