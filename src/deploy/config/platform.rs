//! Where a stack's colours run: `platform: docker` (containers on one
//! engine, or on each of `hosts:`) or `platform: swarm` (a colour is a
//! Swarm service whose tasks the cluster schedules; `deploy::swarm`).

use serde::Deserialize;

use super::{Host, StackConfig};

/// The platform a stack runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// One container per replica on the engine (today's behaviour).
    #[default]
    Docker,
    /// A Swarm service per colour, driven through a manager.
    Swarm,
}

/// `swarm:` in wsctl.yaml (only read with `platform: swarm`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmSettings {
    /// The manager's engine (`unix://`, `tcp://`, `ssh://`); default the one
    /// `DOCKER_HOST` names.
    pub manager: Option<String>,
    /// Placement constraints of both colours' tasks, as `docker service
    /// create --constraint` takes them: `node.role==worker`,
    /// `node.labels.ws==true`.
    pub constraints: Vec<String>,
    /// More edges beside the manager's own Nginx: an Nginx on each of these
    /// engines, publishing its own `public_address`, switched together with
    /// the manager's (`deploy::swarm::edges`). Each must be a manager node:
    /// its follower asks its own engine where the tasks are.
    pub edges: Vec<Host>,
}

/// What the edge on the manager wsctl talks to is called in reports, beside
/// the names of `swarm.edges`.
pub const MANAGER_EDGE: &str = "manager";

impl StackConfig {
    pub fn is_swarm(&self) -> bool {
        self.platform == Platform::Swarm
    }

    /// Checks run from the checker container (`deploy::checks`): an
    /// external app has no wsctl inside, and a Swarm task may run on a node
    /// whose engine wsctl does not reach.
    pub fn checks_from_checker(&self) -> bool {
        self.is_external() || self.is_swarm()
    }

    /// `platform`/`swarm` problems, as one line.
    pub(super) fn check_platform(&self) -> Result<(), String> {
        if !self.is_swarm() {
            if self.swarm.manager.is_some()
                || !self.swarm.constraints.is_empty()
                || !self.swarm.edges.is_empty()
            {
                return Err("swarm: is set but platform is docker (add platform: swarm)".into());
            }
            return Ok(());
        }
        if !self.hosts.is_empty() {
            return Err(
                "platform: swarm and hosts: are two ways onto several machines; \
                 a swarm schedules its own nodes, so leave hosts: empty"
                    .into(),
            );
        }
        if let Some(manager) = &self.swarm.manager {
            let scheme = manager.split("://").next().unwrap_or("");
            if !["unix", "tcp", "ssh"].contains(&scheme) || !manager.contains("://") {
                return Err(format!(
                    "swarm.manager '{manager}' is not unix://, tcp:// or ssh://"
                ));
            }
        }
        if let Some(bad) = self
            .swarm
            .constraints
            .iter()
            .find(|constraint| !(constraint.contains("==") || constraint.contains("!=")))
        {
            return Err(format!(
                "swarm.constraints entry '{bad}' is not KEY==VALUE or KEY!=VALUE"
            ));
        }
        self.check_edges()
    }

    /// `swarm.edges` problems, as one line.
    fn check_edges(&self) -> Result<(), String> {
        let mut names = vec![MANAGER_EDGE];
        let mut addresses = vec![self.public_address.as_str()];
        for edge in &self.swarm.edges {
            let name = edge.name.as_str();
            if name.is_empty() || names.contains(&name) {
                return Err(format!(
                    "swarm.edges: the name '{name}' is empty or taken ('{MANAGER_EDGE}' is the \
                     manager's own edge)"
                ));
            }
            let scheme = edge.docker_host.split("://").next().unwrap_or("");
            if !["unix", "tcp", "ssh"].contains(&scheme) || !edge.docker_host.contains("://") {
                return Err(format!(
                    "swarm.edges {name}: docker_host '{}' is not unix://, tcp:// or ssh://",
                    edge.docker_host
                ));
            }
            if addresses.contains(&edge.public_address.as_str()) {
                return Err(format!(
                    "swarm.edges {name}: public_address {} is another edge's",
                    edge.public_address
                ));
            }
            if edge.redis_url.is_some() {
                return Err(format!(
                    "swarm.edges {name}: redis_url belongs to hosts:; an edge runs only Nginx \
                     and its follower"
                ));
            }
            names.push(name);
            addresses.push(&edge.public_address);
        }
        Ok(())
    }
}
