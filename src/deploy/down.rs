//! `wsctl down`: takes a stack away. Its containers (both colours, Nginx,
//! the stack's own Redis, the checker, an expired lock) and its network
//! go; with `--volumes` its journal too. Images never go (`wsctl prune`
//! is for them). A lock held by a live run or a person refuses it.

use serde::Serialize;

use std::time::Duration;

use anyhow::Context;

use super::{DeployError, Stack, containers, docker, lock, wait};
use crate::deploy::config::Color;

/// What taking the stack down removes.
#[derive(Debug, Default, Serialize)]
pub struct Teardown {
    /// `platform: swarm`: the colours' services.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    pub containers: Vec<String>,
    /// `swarm.edges`: each edge's Nginx and follower, by edge.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub edges: std::collections::BTreeMap<String, Vec<String>>,
    pub network: Option<String>,
    /// Journal records (volumes), with `--volumes` only.
    pub volumes: Vec<String>,
}

impl Teardown {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.containers.is_empty()
            && self.edges.is_empty()
            && self.network.is_none()
            && self.volumes.is_empty()
    }
}

/// What `down` would remove now; refuses while the lock is held or an
/// edge of `swarm.edges` is lost.
pub async fn plan(stack: &Stack, volumes: bool) -> anyhow::Result<Teardown> {
    // A lost edge's Nginx would be left serving a stack that is gone.
    stack.every_edge()?;
    let config = &stack.config;
    if let Some(held) = lock::holder(&stack.docker, config).await?
        && !held.stale
    {
        return Err(DeployError::LockHeld {
            holder: held.holder,
            since: held.since,
        }
        .into());
    }
    let mut teardown = Teardown::default();
    let mut names = Vec::new();
    for color in Color::ALL {
        names.extend(containers::existing_replicas(&stack.docker, config, color).await?);
        if config.is_swarm() && !containers::image_of(stack, color).await?.is_empty() {
            teardown.services.push(config.app(color));
        }
    }
    for base in ["nginx", "nginx_next", "nginx_old", "checker", "wsctl_lock"] {
        names.push(config.name(base));
    }
    if config.owns_redis() {
        names.push(config.name("redis"));
    }
    for name in names {
        if docker::inspect(&stack.docker, &name).await?.is_some() {
            teardown.containers.push(name);
        }
    }
    for edge in &stack.edges {
        let present = super::swarm::edges::containers(edge).await?;
        if !present.is_empty() {
            teardown.edges.insert(edge.name.clone(), present);
        }
    }
    let network = config.network_name();
    if docker::network_exists(&stack.docker, &network).await? {
        teardown.network = Some(network);
    }
    if volumes {
        teardown.volumes = stack.journal.volumes(&stack.docker).await?;
    }
    Ok(teardown)
}

/// Removes what `plan` listed: containers first (the network cannot go
/// while one is attached), then the network and the records.
pub async fn apply(stack: &Stack, teardown: &Teardown) -> anyhow::Result<()> {
    for service in &teardown.services {
        match stack.docker.delete_service(service).await {
            Err(error) if docker::status_of(&error) != Some(404) => {
                return Err(error).with_context(|| format!("removing the service {service}"));
            }
            _ => {}
        }
    }
    for name in &teardown.containers {
        docker::remove(&stack.docker, name).await?;
    }
    for edge in &stack.edges {
        for name in teardown.edges.get(&edge.name).into_iter().flatten() {
            docker::remove(&edge.stack.docker, name).await?;
        }
    }
    if let Some(network) = &teardown.network {
        // A removed service's tasks leave the overlay within seconds.
        let removed = wait::poll_until(
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                match docker::remove_network(&stack.docker, network).await {
                    Ok(()) => wait::Check::Ready(()),
                    Err(error) => wait::Check::Pending(format!("{error:#}")),
                }
            },
        )
        .await;
        if let Err(wait::WaitError::Failed(why) | wait::WaitError::TimedOut(why)) = removed {
            anyhow::bail!(
                "removing network {network}: {why}{}",
                down_nodes_hint(stack).await
            );
        }
    }
    if !teardown.volumes.is_empty() {
        stack.journal.remove_all(&stack.docker).await?;
    }
    Ok(())
}

/// On Swarm, a node that is down keeps its tasks' hold on the overlay
/// until it is removed from the swarm: says which, and what to run.
async fn down_nodes_hint(stack: &Stack) -> String {
    if !stack.config.is_swarm() {
        return String::new();
    }
    let nodes = super::swarm::services::nodes(stack)
        .await
        .unwrap_or_default();
    let mut down: Vec<String> = nodes
        .into_values()
        .filter(|(_, ready)| !ready)
        .map(|(name, _)| name)
        .collect();
    down.sort();
    match down.is_empty() {
        true => String::new(),
        false => format!(
            "; swarm node(s) {} are down and still hold tasks on it: remove them from the \
             swarm (`docker node rm --force NODE`, a manager demoted first), then run \
             `wsctl down` again",
            down.join(", ")
        ),
    }
}
