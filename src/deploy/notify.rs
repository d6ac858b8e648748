//! Notifications: the webhooks of wsctl.yaml's `notify:` are POSTed the
//! run record (the object `history --json` lists, plus `event` and a
//! one-line `text` that chat webhooks display) when a run starts and when
//! it ends. Delivery is best effort, bounded (a few attempts, a short
//! timeout each) and never changes the run or its exit code: a receiver
//! that fails is reported as a warning.

use std::time::Duration;

use super::journal::{Outcome, Run};
use super::state::Action;
use super::status::RunSummary;
use crate::deploy::config::{Notify, StackConfig};

const ATTEMPTS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(2);
const BETWEEN: Duration = Duration::from_millis(500);

/// The event a run's end is: `succeeded` (`rolled_back` for a rollback),
/// `failed`, `aborted` or `interrupted`.
pub fn ended(run: &Run) -> &'static str {
    match run.outcome {
        Outcome::Succeeded | Outcome::Paused if run.action == Action::Rollback => "rolled_back",
        Outcome::Succeeded | Outcome::Paused => "succeeded",
        Outcome::Aborted => "aborted",
        Outcome::Interrupted => "interrupted",
        _ => "failed",
    }
}

/// Sends `event` for `run` to every webhook that wants it; returns one
/// line per webhook that could not be told.
pub async fn send(config: &StackConfig, run: &Run, event: &str) -> Vec<String> {
    let wanted: Vec<&Notify> = config
        .notify
        .iter()
        .filter(|notify| notify.events.is_empty() || notify.events.iter().any(|e| e == event))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut body = serde_json::to_value(RunSummary::from(run)).unwrap_or_default();
    body["event"] = event.into();
    body["text"] = text(config, run, event).into();
    let Ok(client) = reqwest::Client::builder().timeout(TIMEOUT).build() else {
        return vec!["notifications: no HTTP client".into()];
    };
    let deliveries = wanted
        .iter()
        .map(|notify| deliver(&client, &notify.webhook, &body));
    futures_util::future::join_all(deliveries)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One webhook, a few attempts; `Some(why)` when none was answered 2xx.
async fn deliver(
    client: &reqwest::Client,
    webhook: &str,
    body: &serde_json::Value,
) -> Option<String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(BETWEEN).await;
        }
        match client.post(webhook).json(body).send().await {
            Ok(response) if response.status().is_success() => return None,
            Ok(response) => last = format!("answered {}", response.status().as_u16()),
            Err(error) if error.is_timeout() => {
                last = format!("no answer within {} s", TIMEOUT.as_secs())
            }
            Err(error) => last = format!("{error}"),
        }
    }
    Some(format!(
        "notifying {} failed after {ATTEMPTS} attempts: {last}",
        crate::shared::secrets::mask(webhook)
    ))
}

/// The line a chat shows: `wsctl deploy blue -> green on stack wsctl:
/// succeeded (v2, 4.2 s, by ops@ci)`.
fn text(config: &StackConfig, run: &Run, event: &str) -> String {
    let name = |color: Option<crate::deploy::config::Color>| {
        color.map_or("none".to_string(), |color| color.to_string())
    };
    let mut line = format!(
        "wsctl {} {} -> {} on stack {}: {event} ({}, {:.1} s, by {})",
        run.action,
        name(run.from),
        name(run.to),
        config.network_name(),
        run.image,
        run.seconds,
        run.performer
    );
    if matches!(event, "failed" | "aborted" | "interrupted") && !run.detail.is_empty() {
        line.push_str(&format!(": {}", run.detail));
    }
    line
}
