//! `wsctl down`: takes a stack away. Its containers (both colours, Nginx,
//! the stack's own Redis, the checker, an expired lock) and its network
//! go; with `--volumes` its journal too. Images never go (`wsctl prune`
//! is for them). A lock held by a live run or a person refuses it.

use serde::Serialize;

use super::{DeployError, Stack, containers, docker, lock};
use crate::deploy::config::Color;

/// What taking the stack down removes.
#[derive(Debug, Default, Serialize)]
pub struct Teardown {
    pub containers: Vec<String>,
    pub network: Option<String>,
    /// Journal records (volumes), with `--volumes` only.
    pub volumes: Vec<String>,
}

impl Teardown {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.network.is_none() && self.volumes.is_empty()
    }
}

/// What `down` would remove now; refuses while the lock is held.
pub async fn plan(stack: &Stack, volumes: bool) -> anyhow::Result<Teardown> {
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
    let mut names = Vec::new();
    for color in Color::ALL {
        names.extend(containers::existing_replicas(&stack.docker, config, color).await?);
    }
    for base in ["nginx", "nginx_next", "nginx_old", "checker", "wsctl_lock"] {
        names.push(config.name(base));
    }
    if config.owns_redis() {
        names.push(config.name("redis"));
    }
    let mut teardown = Teardown::default();
    for name in names {
        if docker::inspect(&stack.docker, &name).await?.is_some() {
            teardown.containers.push(name);
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
    for name in &teardown.containers {
        docker::remove(&stack.docker, name).await?;
    }
    if let Some(network) = &teardown.network {
        docker::remove_network(&stack.docker, network).await?;
    }
    if !teardown.volumes.is_empty() {
        stack.journal.remove_all(&stack.docker).await?;
    }
    Ok(())
}
