//! Where a stack's colours run: `platform: docker` (containers on one
//! engine, or on each of `hosts:`) or `platform: swarm` (a colour is a
//! Swarm service whose tasks the cluster schedules; `deploy::swarm`).

use serde::Deserialize;

use super::StackConfig;

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
}

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
            if self.swarm.manager.is_some() || !self.swarm.constraints.is_empty() {
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
        Ok(())
    }
}
