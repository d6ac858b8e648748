//! `wsctl status`: what Nginx serves (loaded and on disk), each colour's
//! container, Nginx and Redis (and their drift from wsctl.yaml), the lock,
//! unfinished runs and the last runs of the journal.

use serde_json::{Value, json};

use super::journal::{self, Run};
use super::{Stack, containers, lock, nginx};
use crate::docker;
use crate::stack::Color;

/// Runs shown in `status`.
const RECENT: usize = 5;

pub async fn status(stack: &Stack) -> anyhow::Result<Value> {
    let serving = nginx::serving(stack).await?;
    let mut colours = serde_json::Map::new();
    for color in Color::ALL {
        colours.insert(color.to_string(), colour(stack, color).await?);
    }
    let holder = lock::holder(&stack.docker, &stack.config).await?;
    let runs = stack.journal.runs(&stack.docker).await?;
    // An in-progress run is running while a live lock is held; else it died.
    let running_now = holder.as_ref().is_some_and(|held| !held.stale);
    let unfinished: Vec<Value> = journal::unfinished(&runs)
        .into_iter()
        .map(|run| {
            let mut entry = summary(run);
            entry["running"] = json!(running_now && run.outcome == journal::Outcome::InProgress);
            entry
        })
        .collect();
    let history: Vec<Value> = runs.iter().rev().take(RECENT).map(summary).collect();
    let weights = serving
        .upstream
        .as_deref()
        .and_then(|upstream| weights(stack, upstream));
    let last_analysis = runs.iter().rev().find_map(|run| {
        let sample = run.analysis.clone()?;
        Some(json!({"run_id": run.id, "outcome": run.outcome, "sample": sample}))
    });
    let components = super::proxy::drift(stack).await?;
    Ok(json!({
        "live": serving.live(),
        "nginx": components["nginx"],
        "redis": components["redis"],
        "weights": weights,
        "last_analysis": last_analysis,
        "serving": serving,
        "disagreement": serving.disagreement(),
        "lock": holder,
        "unfinished": unfinished,
        "colors": colours,
        "history": history,
    }))
}

/// Each colour's share of new connections in percent, when the upstream
/// on disk weighs both (a canary in progress); `None` otherwise.
fn weights(stack: &Stack, upstream: &str) -> Option<Value> {
    let mut totals = [0u64; 2];
    for line in upstream.lines() {
        let Some(rest) = line.trim().strip_prefix("server ") else {
            continue;
        };
        let mut words = rest.trim_end_matches(';').split_whitespace();
        let host = words.next()?.split(':').next()?;
        let weight: u64 = words
            .find_map(|word| word.strip_prefix("weight="))
            .and_then(|weight| weight.parse().ok())
            .unwrap_or(1);
        for (index, color) in Color::ALL.into_iter().enumerate() {
            if stack.config.replica_index(color, host).is_some() {
                totals[index] += weight;
            }
        }
    }
    let all: u64 = totals.iter().sum();
    if all == 0 || totals.contains(&0) {
        return None;
    }
    let mut shares = serde_json::Map::new();
    for (index, color) in Color::ALL.into_iter().enumerate() {
        let percent = (totals[index] as f64 * 100.0 / all as f64).round();
        shares.insert(color.to_string(), json!(percent));
    }
    Some(Value::Object(shares))
}

/// A run as `status` and `history` show it (without the saved upstream).
pub fn summary(run: &Run) -> Value {
    json!({
        "id": run.id, "at": run.started_at, "action": run.action, "performer": run.performer,
        "ci_job": run.ci_job, "from": run.from, "to": run.to, "image": run.image,
        "state": run.state, "outcome": run.outcome, "traffic": run.traffic,
        "seconds": run.seconds, "detail": run.detail,
    })
}

/// A colour: its first container's fields (as before replicas), the
/// connections of all of them, and `replicas` with each container.
async fn colour(stack: &Stack, color: Color) -> anyhow::Result<Value> {
    let mut replicas = Vec::new();
    for (name, info) in containers::inspect_all(stack, color).await? {
        replicas.push(container(stack, name, info).await);
    }
    let mut colour = replicas.first().cloned().unwrap_or_default();
    let connections: Vec<i64> = replicas
        .iter()
        .filter_map(|replica| replica["connections"].as_i64())
        .collect();
    if !connections.is_empty() {
        colour["connections"] = json!(connections.iter().sum::<i64>());
    }
    colour["replicas"] = Value::Array(replicas);
    Ok(colour)
}

async fn container(stack: &Stack, name: String, info: Option<docker::ContainerInfo>) -> Value {
    let Some(info) = info else {
        return json!({"container": name, "state": "absent"});
    };
    let connections = if info.running {
        containers::connections(stack, &name).await
    } else {
        None
    };
    let uptime = info
        .started_at
        .as_deref()
        .filter(|_| info.running)
        .and_then(docker::parse_time)
        .map(|at| (chrono::Utc::now() - at).num_seconds());
    let health = if info.running {
        info.health.as_str()
    } else {
        "-"
    };
    json!({
        "container": name, "state": info.state, "health": health, "image": info.image,
        "version": info.labels.get("org.opencontainers.image.version"),
        "uptime_seconds": uptime, "connections": connections,
    })
}
