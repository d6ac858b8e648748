//! More edges than the manager's own (`swarm.edges`): an Nginx on each of
//! these manager nodes, publishing its own `public_address`, with a
//! follower beside it (`follow.rs`) that asks its own engine where the live
//! colour's tasks run. Each edge is a `Stack` on that node's engine whose
//! configuration is the stack's with the edge's address (and certificate),
//! so Nginx, its follower and every Nginx step are the same code as on the
//! manager; the colours, the journal and the lock stay the manager's.
//!
//! A switch (and each canary weight) goes to every edge in turn, the
//! manager's first, each verified through its own public address. When one
//! fails, every edge it had reached gets its previous upstream back, the
//! failed one included, and the `edges` event says what each edge did. The
//! loss of an edge leaves the others serving and following (each follower
//! needs only its own node). `status` reports a lost edge beside the
//! others; a command that changes the edges (every run, `down`, `tls
//! reload`) needs every edge, and refuses before anything while one is lost:
//! an edge that missed a switch would serve a colour that is being drained.

use anyhow::Context;
use serde::Serialize;
use std::time::Duration;

use crate::deploy::config::{Color, Host, MANAGER_EDGE, StackConfig};
use crate::deploy::engine::Create;
use crate::deploy::nginx::{self, Serving};
use crate::deploy::{DeployError, Events, Stack, checks, docker, upstream};
use crate::shared::signal::Interrupt;

/// One more edge of the stack.
pub struct Edge {
    /// Its name in `swarm.edges`.
    pub name: String,
    /// The stack as this edge's engine sees it.
    pub stack: Stack,
}

/// The stack as seen on `edge`: its public address and certificate, its
/// own engine as the manager its follower asks, no Redis of its own (it
/// runs only Nginx and the follower) and no edges beyond itself.
pub fn edge_config(config: &StackConfig, edge: &Host) -> StackConfig {
    let mut seen = config.for_host(edge);
    seen.redis_url = Some(config.app_redis_url());
    seen.swarm.manager = Some(edge.docker_host.clone());
    seen.swarm.edges = Vec::new();
    seen
}

/// An edge of `swarm.edges` whose engine did not answer (its node lost,
/// its engine down or unreachable from here).
pub struct LostEdge {
    pub name: String,
    pub public_address: String,
    pub error: anyhow::Error,
}

impl LostEdge {
    /// The refusal of a command that needs every edge.
    pub fn refusal(&self) -> anyhow::Error {
        DeployError::Usage(format!(
            "swarm edge {} is unreachable ({:#}); it must be back, or left out of \
             swarm.edges, before a command changes the edges",
            self.name, self.error
        ))
        .into()
    }
}

/// How long an edge's engine has to answer: a lost node's TCP address
/// would otherwise hold `status` for the kernel's whole connect timeout.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to every edge of `config` at once. An edge whose engine does
/// not answer is lost (returned beside the others); one that answers but is
/// no manager is a mistake in wsctl.yaml, and nothing is done.
pub async fn connect(
    config: &StackConfig,
    template: &str,
    json: bool,
    interrupt: &Interrupt,
) -> anyhow::Result<(Vec<Edge>, Vec<LostEdge>)> {
    let reached = futures_util::future::join_all(config.swarm.edges.iter().map(|edge| async {
        let endpoint = docker::Endpoint::of_host(edge);
        match tokio::time::timeout(REACH_TIMEOUT, docker::connect_to(&endpoint)).await {
            Ok(reached) => reached,
            Err(_) => Err(anyhow::anyhow!(
                "{} did not answer within {} s",
                edge.docker_host,
                REACH_TIMEOUT.as_secs()
            )),
        }
    }))
    .await;
    let mut edges = Vec::new();
    let mut lost = Vec::new();
    for (edge, reached) in config.swarm.edges.iter().zip(reached) {
        let docker = match reached {
            Ok(docker) => docker,
            Err(error) => {
                lost.push(LostEdge {
                    name: edge.name.clone(),
                    public_address: edge.public_address.clone(),
                    error,
                });
                continue;
            }
        };
        super::services::ensure_manager(&docker)
            .await
            .map_err(|error| {
                DeployError::Usage(format!(
                    "swarm edge {} must be a manager node (its follower asks its own engine \
                     where the tasks run; `docker node promote`): {error:#}",
                    edge.name
                ))
            })?;
        edges.push(Edge {
            name: edge.name.clone(),
            stack: Stack::new(
                docker,
                edge_config(config, edge),
                Events::for_host(json, &edge.name),
                template.to_string(),
                Duration::ZERO,
                interrupt.clone(),
            ),
        });
    }
    Ok((edges, lost))
}

/// The edge's Nginx and follower, created when absent (`create`), started
/// when stopped; their images pulled where absent. An edge whose upstream
/// names no colour (its Nginx is new) gets the manager's `upstream`, so a
/// new edge joins serving what the others serve.
pub async fn bootstrap(
    edge: &mut Edge,
    create: Create,
    upstream: Option<&str>,
) -> anyhow::Result<()> {
    let name = edge.name.clone();
    let stack = &mut edge.stack;
    let made = async {
        if create == Create::IfAbsent {
            let config = &stack.config;
            for image in [&config.images.nginx, config.checker_image()] {
                docker::ensure_image(&stack.docker, image, &config.registry).await?;
            }
        }
        crate::deploy::bootstrap(stack, create).await?;
        let Some(text) = upstream.filter(|text| upstream::live_color(text).is_some()) else {
            return Ok(());
        };
        let own = nginx::upstream_on_disk(stack).await?;
        if docker::inspect(&stack.docker, &stack.config.name("nginx"))
            .await?
            .is_some_and(|info| info.running)
            && own.as_deref().and_then(upstream::live_color).is_none()
        {
            nginx::answers(stack).await?;
            nginx::apply(stack, text).await?;
        }
        anyhow::Ok(())
    };
    made.await.with_context(|| format!("swarm edge {name}"))
}

/// Every edge's Nginx and follower, for `wsctl down`.
pub async fn containers(edge: &Edge) -> anyhow::Result<Vec<String>> {
    let mut present = Vec::new();
    for name in [
        edge.stack.config.name("nginx"),
        checks::checker(&edge.stack.config),
    ] {
        if docker::inspect(&edge.stack.docker, &name).await?.is_some() {
            present.push(name);
        }
    }
    Ok(present)
}

/// What one edge serves, beside the manager's (`status`, the preflight).
#[derive(Debug, Clone, Serialize)]
pub struct EdgeServing {
    pub name: String,
    pub public_address: String,
    /// Why the edge could not be asked (its engine did not answer); the
    /// serving fields are then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    #[serde(flatten)]
    pub serving: Serving,
}

/// What each edge serves, the lost ones as unreachable; an edge whose
/// engine answers but whose Nginx cannot be asked is an error naming it.
pub async fn serving(edges: &[Edge], lost: &[LostEdge]) -> anyhow::Result<Vec<EdgeServing>> {
    let mut all = Vec::new();
    for edge in edges {
        let serving = nginx::serving(&edge.stack)
            .await
            .with_context(|| format!("swarm edge {}", edge.name))?;
        all.push(EdgeServing {
            name: edge.name.clone(),
            public_address: edge.stack.config.public_address.clone(),
            unreachable: None,
            serving,
        });
    }
    for edge in lost {
        all.push(EdgeServing {
            name: edge.name.clone(),
            public_address: edge.public_address.clone(),
            unreachable: Some(format!("{:#}", edge.error)),
            serving: Serving::default(),
        });
    }
    Ok(all)
}

/// What one edge did in a switch that failed somewhere.
#[derive(Debug, Clone, Serialize)]
struct EdgeOutcome {
    edge: String,
    /// `switched_back`, `failed` (its own step failed and its previous
    /// upstream is back), `not_restored` (putting it back failed too: the
    /// next run or `wsctl recover` repairs it) or `untouched`.
    outcome: &'static str,
    detail: String,
}

/// Applies `text` to every edge in turn (the manager's first), each
/// verified to route to `verify` through its own public address when
/// given. On the first failure, every edge reached so far gets the upstream
/// it had back, an `edges` event reports each edge, and the error names
/// the edge that failed.
/// The manager's edge and every other, by name, in the order a switch
/// takes them.
pub fn all<'a>(manager: &'a Stack, edges: &'a [Edge]) -> Vec<(&'a str, &'a Stack)> {
    std::iter::once((MANAGER_EDGE, manager))
        .chain(edges.iter().map(|edge| (edge.name.as_str(), &edge.stack)))
        .collect()
}

/// `error` of the edge `name`, saying so.
pub fn on_edge(name: &str, error: anyhow::Error) -> anyhow::Error {
    error.context(format!("swarm edge {name}"))
}

pub async fn apply_everywhere(
    manager: &Stack,
    edges: &[Edge],
    text: &str,
    verify: Option<(Color, Duration)>,
) -> anyhow::Result<()> {
    let all = all(manager, edges);
    let mut previous: Vec<Option<String>> = Vec::new();
    for (index, (name, stack)) in all.iter().enumerate() {
        let step = async {
            let before = nginx::upstream_on_disk(stack).await?;
            previous.push(before);
            nginx::apply(stack, text).await?;
            if let Some((color, steady)) = verify {
                nginx::verify(stack, color, steady).await?;
            }
            anyhow::Ok(())
        };
        if let Err(error) = step.await {
            let why = format!("{error:#}");
            let outcomes = put_back(&all, &previous, index, &why).await;
            let back: Vec<&str> = outcomes
                .iter()
                .filter(|outcome| outcome.outcome == "switched_back")
                .map(|outcome| outcome.edge.as_str())
                .collect();
            manager.events.emit(serde_json::json!({
                "event": "edges",
                "failed": name,
                "edges": outcomes,
            }));
            let back = match back.is_empty() {
                true => String::new(),
                false => format!("; switched back: {}", back.join(", ")),
            };
            return Err(
                DeployError::Switch(format!("swarm edge {name} failed: {why}{back}")).into(),
            );
        }
    }
    Ok(())
}

/// After edge `failed` failed: the edges before it and itself get their
/// previous upstream back, in reverse order; the ones after it were never
/// touched.
async fn put_back(
    all: &[(&str, &Stack)],
    previous: &[Option<String>],
    failed: usize,
    why: &str,
) -> Vec<EdgeOutcome> {
    let mut outcomes = Vec::new();
    for (index, (name, stack)) in all.iter().enumerate().rev() {
        let outcome = |outcome: &'static str, detail: String| EdgeOutcome {
            edge: name.to_string(),
            outcome,
            detail,
        };
        if index > failed {
            outcomes.push(outcome("untouched", String::new()));
            continue;
        }
        let restored = match previous.get(index) {
            Some(Some(text)) => nginx::apply(stack, text).await,
            // Nothing read before the failure: nothing was changed.
            None => Ok(()),
            Some(None) => Err(anyhow::anyhow!("it had no upstream to put back")),
        };
        outcomes.push(match (index == failed, restored) {
            (true, Ok(())) => outcome("failed", why.to_string()),
            (false, Ok(())) => outcome("switched_back", "its previous upstream again".into()),
            (true, Err(error)) => outcome(
                "not_restored",
                format!("{why}; putting it back failed too: {error:#}"),
            ),
            (false, Err(error)) => outcome("not_restored", format!("{error:#}")),
        });
    }
    outcomes.reverse();
    outcomes
}

/// Applies `text` to every edge without going back (an undo, a recover):
/// each edge is tried; the errors name the edges that failed.
pub async fn apply_to_all(manager: &Stack, edges: &[Edge], text: &str) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    if let Err(error) = nginx::apply(manager, text).await {
        failed.push(format!("{MANAGER_EDGE}: {error:#}"));
    }
    for edge in edges {
        if let Err(error) = nginx::apply(&edge.stack, text).await {
            failed.push(format!("{}: {error:#}", edge.name));
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(DeployError::Switch(format!("swarm edges {}", failed.join("; "))).into()),
    }
}

/// Every edge routes `color` through its own public address.
pub async fn verify_all(edges: &[Edge], color: Color) -> anyhow::Result<()> {
    for edge in edges {
        nginx::verify(&edge.stack, color, Duration::ZERO)
            .await
            .with_context(|| format!("swarm edge {}", edge.name))?;
    }
    Ok(())
}
