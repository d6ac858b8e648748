//! `wsctl status`: what Nginx serves (loaded and on disk), each colour's
//! container, Nginx and Redis (and their drift from wsctl.yaml), the lock,
//! unfinished runs and the last runs of the journal. The types here are
//! the `--json` shape (documented in the README); the terminal lines are
//! printed from the same values (`cmd/status.rs`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::journal::{self, Outcome, Reload, Run};
use super::lock::Holder;
use super::nginx::Serving;
use super::plan::{Action, State};
use super::proxy::{Component, RedisView};
use super::swarm::services;
use super::{Stack, checks, containers, lock, nginx};
use crate::deploy::config::Color;
use crate::deploy::docker;

/// Runs shown in `status`.
const RECENT: usize = 5;

/// One stack's status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The host of wsctl.yaml's `hosts:` this is (absent with one engine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub live: Option<Color>,
    pub nginx: Component,
    pub redis: RedisView,
    /// Each colour's share of new connections in percent, during a canary.
    pub weights: Option<BTreeMap<Color, f64>>,
    pub last_analysis: Option<LastAnalysis>,
    pub serving: Serving,
    pub disagreement: Option<String>,
    pub lock: Option<Holder>,
    pub unfinished: Vec<Unfinished>,
    pub colors: BTreeMap<Color, Colour>,
    pub history: Vec<RunSummary>,
    /// Things about the stack worth acting on that are not drift: the
    /// public address behind Docker's userland proxy while the stack holds
    /// more sockets than it can carry (`userland_proxy.rs`).
    pub warnings: Vec<String>,
    /// `platform: swarm`: every node and whether it is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<SwarmNode>>,
}

/// A node of the swarm, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SwarmNode {
    pub name: String,
    /// `ready`, or `down` (down, unknown or disconnected).
    pub state: String,
}

/// The last analysis sample any run of the journal recorded.
#[derive(Debug, Clone, Serialize)]
pub struct LastAnalysis {
    pub run_id: String,
    pub outcome: Outcome,
    /// The sample as `analysis.rs` reports it (`--json` `analysis` event).
    pub sample: serde_json::Value,
}

/// A run as `status` and `history` show it (without the saved upstream).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub at: String,
    pub action: Action,
    pub performer: String,
    pub ci_job: Option<String>,
    pub from: Option<Color>,
    /// `null` for a refusal that never chose a colour.
    pub to: Option<Color>,
    pub image: String,
    pub state: State,
    pub outcome: Outcome,
    pub traffic: Option<Color>,
    pub seconds: f64,
    pub detail: String,
    /// Every Nginx reload the run made (step, reason, old workers after it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reloads: Vec<Reload>,
}

impl From<&Run> for RunSummary {
    fn from(run: &Run) -> RunSummary {
        RunSummary {
            id: run.id.clone(),
            at: run.started_at.clone(),
            action: run.action,
            performer: run.performer.clone(),
            ci_job: run.ci_job.clone(),
            from: run.from,
            to: run.to,
            image: run.image.clone(),
            state: run.state,
            outcome: run.outcome,
            traffic: run.traffic,
            seconds: run.seconds,
            detail: run.detail.clone(),
            reloads: run.reloads.clone(),
        }
    }
}

/// An unfinished run: `running` when its process still holds the lock.
#[derive(Debug, Clone, Serialize)]
pub struct Unfinished {
    #[serde(flatten)]
    pub run: RunSummary,
    pub running: bool,
}

/// A colour: its first container's fields (as before replicas), the
/// connections of all of them, and `replicas` with each container.
#[derive(Debug, Clone, Serialize)]
pub struct Colour {
    #[serde(flatten)]
    pub first: Container,
    pub replicas: Vec<Container>,
}

/// One container of a colour.
#[derive(Debug, Clone, Serialize)]
pub struct Container {
    pub container: String,
    /// The engine's state, or `absent`.
    pub state: String,
    /// `platform: swarm`: the node the task runs on, and its overlay address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Absent for a container that does not exist.
    #[serde(flatten)]
    pub details: Option<Details>,
}

/// What the engine and the service say of an existing container.
#[derive(Debug, Clone, Serialize)]
pub struct Details {
    /// The engine's health (`-` when stopped).
    pub health: String,
    pub image: String,
    pub version: Option<String>,
    pub uptime_seconds: Option<i64>,
    /// Open connections, from the service's `/status` (null when stopped).
    pub connections: Option<i64>,
}

impl Container {
    pub fn details(&self) -> Option<&Details> {
        self.details.as_ref()
    }

    /// Running and not unhealthy (`starting` is fine: deploys check
    /// readiness themselves).
    fn sick(&self) -> bool {
        self.state != "running" || self.details().is_some_and(|d| d.health == "unhealthy")
    }
}

impl Status {
    /// Why the live colour is not healthy: none is live, or one of its
    /// containers is not running or is unhealthy.
    pub fn degraded(&self) -> Option<String> {
        let Some(live) = self.live else {
            return Some("no colour is live".into());
        };
        let Some(colour) = self.colors.get(&live) else {
            return Some(format!("the live colour {live} has no container"));
        };
        let sick: Vec<String> = colour
            .replicas
            .iter()
            .filter(|replica| replica.sick())
            .map(|replica| {
                format!(
                    "{} is {} ({})",
                    replica.container,
                    replica.state,
                    replica.details().map_or("?", |d| d.health.as_str())
                )
            })
            .collect();
        if colour.replicas.is_empty() {
            return Some(format!("the live colour {live} has no container"));
        }
        (!sick.is_empty()).then(|| format!("the live colour {live}: {}", sick.join(", ")))
    }
}

/// Every host's status and the colour they agree on (`null` when they do
/// not).
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub live: Option<Color>,
    pub hosts: Vec<Status>,
}

impl FleetStatus {
    pub fn of(hosts: Vec<Status>) -> FleetStatus {
        let first = hosts.first().map(|status| status.live);
        let live = first
            .filter(|live| hosts.iter().all(|status| status.live == *live))
            .flatten();
        FleetStatus { live, hosts }
    }
}

pub async fn status(stack: &Stack) -> anyhow::Result<Status> {
    let mut serving = nginx::serving(stack).await?;
    serving.edges = super::swarm::edges::serving(&stack.edges, &stack.lost_edges).await?;
    let mut colors = BTreeMap::new();
    for color in Color::ALL {
        colors.insert(color, colour(stack, color).await?);
    }
    let holder = lock::holder(&stack.docker, &stack.config).await?;
    let runs = stack.journal.runs(&stack.docker).await?;
    // An in-progress run is running while a live lock is held; else it died.
    let running_now = holder.as_ref().is_some_and(|held| !held.stale);
    let unfinished = journal::unfinished(&runs)
        .into_iter()
        .map(|run| Unfinished {
            run: RunSummary::from(run),
            running: running_now && run.outcome == Outcome::InProgress,
        })
        .collect();
    let history = runs
        .iter()
        .rev()
        .take(RECENT)
        .map(RunSummary::from)
        .collect();
    // Which colour an upstream server is: by container name, or on Swarm
    // by the task addresses each colour's service has now.
    let mut addresses = std::collections::HashMap::new();
    let by_address = stack.config.is_swarm() || stack.config.nginx_on_host();
    for color in Color::ALL.into_iter().filter(|_| by_address) {
        let found = match stack.config.is_swarm() {
            true => services::addresses(stack, color).await?,
            false => containers::upstream_servers(stack, color)
                .await
                .unwrap_or_default(),
        };
        for address in found {
            addresses.insert(address, color);
        }
    }
    let colour_of = |host: &str| match by_address {
        true => addresses.get(host).copied(),
        false => Color::ALL
            .into_iter()
            .find(|color| stack.config.replica_index(*color, host).is_some()),
    };
    let weights = serving
        .upstream
        .as_deref()
        .and_then(|upstream| weights(upstream, colour_of));
    let last_analysis = runs.iter().rev().find_map(|run| {
        Some(LastAnalysis {
            run_id: run.id.clone(),
            outcome: run.outcome,
            sample: run.analysis.clone()?,
        })
    });
    let (nginx, redis) = super::proxy::drift(stack).await?;
    // `colour` already sums the connections of every replica.
    let live_connections = serving
        .live()
        .and_then(|live| colors.get(&live)?.first.details()?.connections)
        .unwrap_or(0);
    let mut warnings: Vec<String> =
        super::userland_proxy::warning(stack.config.public_socket(), live_connections)
            .into_iter()
            .collect();
    let nodes = match stack.config.is_swarm() {
        true => Some(swarm_nodes(stack).await?),
        false => None,
    };
    for edge in &stack.lost_edges {
        warnings.push(format!(
            "swarm edge {} is unreachable ({:#}): the other edges serve; runs refuse until it \
             is back or left out of swarm.edges",
            edge.name, edge.error
        ));
    }
    for node in nodes.iter().flatten().filter(|node| node.state != "ready") {
        warnings.push(format!(
            "swarm node {} is {}: its tasks run elsewhere once Swarm reschedules them",
            node.name, node.state
        ));
    }
    Ok(Status {
        host: None,
        live: serving.live(),
        nginx,
        redis,
        weights,
        last_analysis,
        disagreement: serving.disagreement(),
        serving,
        lock: holder,
        unfinished,
        colors,
        history,
        warnings,
        nodes,
    })
}

/// Every node of the swarm with its state (`ready`, `down`, ...).
async fn swarm_nodes(stack: &Stack) -> anyhow::Result<Vec<SwarmNode>> {
    let mut nodes: Vec<SwarmNode> = services::nodes(stack)
        .await?
        .into_values()
        .map(|(name, ready)| SwarmNode {
            name,
            state: if ready { "ready" } else { "down" }.to_string(),
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// Each colour's share of new connections in percent, when the upstream
/// on disk weighs both (a canary in progress); `None` otherwise.
fn weights(
    upstream: &str,
    colour_of: impl Fn(&str) -> Option<Color>,
) -> Option<BTreeMap<Color, f64>> {
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
            if colour_of(host) == Some(color) {
                totals[index] += weight;
            }
        }
    }
    let all: u64 = totals.iter().sum();
    if all == 0 || totals.contains(&0) {
        return None;
    }
    let shares = Color::ALL
        .into_iter()
        .enumerate()
        .map(|(index, color)| {
            let percent = (totals[index] as f64 * 100.0 / all as f64).round();
            (color, percent)
        })
        .collect();
    Some(shares)
}

/// Each of the colour's containers; the colour's connections are all of
/// theirs.
async fn colour(stack: &Stack, color: Color) -> anyhow::Result<Colour> {
    let mut replicas = Vec::new();
    if stack.config.is_swarm() {
        for task in services::tasks(stack, color).await? {
            if task.wanted || task.running {
                replicas.push(task_row(stack, task).await);
            }
        }
        // Drained: the service is kept at 0 tasks for a rollback.
        let image = services::image_of(stack, color).await?;
        if replicas.is_empty() && !image.is_empty() {
            replicas.push(Container {
                container: stack.config.app(color),
                state: "scaled to 0".into(),
                node: None,
                address: None,
                details: Some(Details {
                    health: "-".into(),
                    image,
                    version: None,
                    uptime_seconds: None,
                    connections: None,
                }),
            });
        }
    } else {
        for (name, info) in containers::inspect_all(stack, color).await? {
            replicas.push(container(stack, name, info).await);
        }
    }
    let mut first = replicas.first().cloned().unwrap_or(Container {
        container: stack.config.app(color),
        state: "absent".into(),
        node: None,
        address: None,
        details: None,
    });
    let connections: Vec<i64> = replicas
        .iter()
        .filter_map(|replica| replica.details()?.connections)
        .collect();
    if let Some(details) = &mut first.details
        && !connections.is_empty()
    {
        details.connections = Some(connections.iter().sum());
    }
    Ok(Colour { first, replicas })
}

/// One task of a colour on `platform: swarm`: its health from the
/// checker, its connections and version from the service's `/status` (the
/// image's version label is on the task's node, which wsctl may not reach;
/// the bundled service reports the same version; an external app has no
/// `/status`, so none).
async fn task_row(stack: &Stack, task: services::TaskView) -> Container {
    let (health, service_status) = match (&task.address, task.running) {
        (Some(address), true) => {
            let health = match checks::ready(&stack.docker, &stack.config, address).await {
                super::wait::Check::Ready(()) => "healthy",
                _ => "unhealthy",
            };
            (
                health.to_string(),
                checks::service_status(&stack.docker, &stack.config, address).await,
            )
        }
        _ => ("-".to_string(), None),
    };
    let connections = service_status
        .as_ref()
        .and_then(|status| status["connections_active"].as_i64());
    let version = service_status
        .as_ref()
        .and_then(|status| status["version"].as_str())
        .map(str::to_string);
    let uptime = task
        .since
        .as_deref()
        .filter(|_| task.running)
        .and_then(docker::parse_time)
        .map(|at| (chrono::Utc::now() - at).num_seconds());
    // What a down node last reported is not what runs there now.
    let (node, state) = match task.node_ready {
        true => (task.node, task.state),
        false => (format!("{} (node down)", task.node), "lost".to_string()),
    };
    Container {
        container: task.name,
        state,
        node: Some(node),
        address: task.address,
        details: Some(Details {
            health,
            image: task.image,
            version,
            uptime_seconds: uptime,
            connections,
        }),
    }
}

async fn container(stack: &Stack, name: String, info: Option<docker::ContainerInfo>) -> Container {
    let Some(info) = info else {
        return Container {
            container: name,
            state: "absent".into(),
            node: None,
            address: None,
            details: None,
        };
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
    // The engine's HEALTHCHECK for the bundled service (its image has
    // one); an external app's health path, from the checker.
    let health = match (info.running, stack.config.is_external()) {
        (false, _) => "-".into(),
        (true, false) => info.health.clone(),
        (true, true) => match checks::ready(&stack.docker, &stack.config, &name).await {
            super::wait::Check::Ready(()) => "healthy".into(),
            _ => "unhealthy".into(),
        },
    };
    Container {
        container: name,
        node: None,
        address: None,
        details: Some(Details {
            health,
            image: info.image.clone(),
            version: info.labels.get("org.opencontainers.image.version").cloned(),
            uptime_seconds: uptime,
            connections,
        }),
        state: info.state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_container_has_no_details_and_a_stopped_one_shows_nulls() {
        let absent = Container {
            container: "app_green".into(),
            state: "absent".into(),
            node: None,
            address: None,
            details: None,
        };
        assert_eq!(
            serde_json::to_value(&absent).unwrap(),
            serde_json::json!({"container": "app_green", "state": "absent"})
        );
        let stopped = Container {
            container: "app_blue".into(),
            state: "exited".into(),
            node: None,
            address: None,
            details: Some(Details {
                health: "-".into(),
                image: "wsctl:1".into(),
                version: None,
                uptime_seconds: None,
                connections: None,
            }),
        };
        assert_eq!(
            serde_json::to_value(&stopped).unwrap(),
            serde_json::json!({"container": "app_blue", "state": "exited", "health": "-",
                "image": "wsctl:1", "version": null, "uptime_seconds": null,
                "connections": null})
        );
        assert!(stopped.sick());
    }
}
