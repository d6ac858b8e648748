//! One deploy, switch or rollback at a time per stack, also from several
//! machines driving one engine: the lock is a container, created (never
//! started) under a fixed name. Creating a named container is atomic in the
//! engine (409 when the name is taken), and its labels say who holds it,
//! since when, and until when a crashed holder may keep it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;

use super::DeployError;
use crate::docker::{self, status_of};
use crate::stack::StackConfig;

const HOLDER: &str = "wsctl.lock.holder";
const SINCE: &str = "wsctl.lock.since";
const EXPIRES: &str = "wsctl.lock.expires";

pub struct Lock {
    name: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `user@host pid N: command`
fn holder(command: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{user}@{host} pid {}: {command}", std::process::id())
}

/// Takes the stack's lock, waiting up to `wait` for a holder to let go.
pub async fn acquire(
    docker: &Docker,
    stack: &StackConfig,
    command: &str,
    wait: Duration,
) -> anyhow::Result<Lock> {
    let name = stack.name("wsctl_lock");
    let give_up = std::time::Instant::now() + wait;
    loop {
        let labels = HashMap::from([
            (HOLDER.to_string(), holder(command)),
            (SINCE.to_string(), crate::time::now_rfc3339()),
            (
                EXPIRES.to_string(),
                (unix_now() + stack.lock_ttl).to_string(),
            ),
        ]);
        let body = ContainerCreateBody {
            image: Some(stack.images.nginx.clone()),
            labels: Some(labels),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        match docker.create_container(Some(options), body).await {
            Ok(_) => return Ok(Lock { name }),
            Err(error) if status_of(&error) == Some(409) => {}
            Err(error) => return Err(anyhow::Error::new(error).context("taking the deploy lock")),
        }
        let Some(held) = docker::inspect(docker, &name).await? else {
            continue; // released in between
        };
        let expires: u64 = held
            .labels
            .get(EXPIRES)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if expires <= unix_now() {
            tracing::warn!(
                holder = held.labels.get(HOLDER).map(String::as_str),
                "breaking an expired lock"
            );
            docker::remove(docker, &name).await?;
            continue;
        }
        if std::time::Instant::now() >= give_up {
            return Err(DeployError::LockHeld {
                holder: held.labels.get(HOLDER).cloned().unwrap_or_default(),
                since: held.labels.get(SINCE).cloned().unwrap_or_default(),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Lock {
    pub async fn release(self, docker: &Docker) -> anyhow::Result<()> {
        docker::remove(docker, &self.name).await
    }
}

/// `wsctl unlock --force`: breaks the lock whoever holds it.
pub async fn force_unlock(docker: &Docker, stack: &StackConfig) -> anyhow::Result<Option<String>> {
    let name = stack.name("wsctl_lock");
    let held = docker::inspect(docker, &name).await?;
    docker::remove(docker, &name).await?;
    Ok(held.and_then(|held| held.labels.get(HOLDER).cloned()))
}
