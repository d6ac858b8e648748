//! One deploy, switch, rollback or recover at a time per stack, also from
//! several machines driving one engine.
//!
//! The lock is a container created under a fixed name (`{prefix}wsctl_lock`):
//! creating a named container is atomic in the engine (409 when the name
//! is taken). Its labels say who holds it (user, host, pid, command), its
//! token (the run id) and its time to live. It is never left running: to
//! renew its lease the holder starts it (it runs `nginx -v` and exits), which
//! moves its `StartedAt` on the engine's clock. The lease ends `lock_ttl`
//! after the later of its creation and its last start, judged against the
//! engine's clock too, so a wrong clock on one machine cannot break it.
//!
//! - Only the holder releases it: release removes the container by the id
//!   its own create returned.
//! - An expired lock, or one whose holder was a process on this machine that
//!   no longer exists, is broken by removing *that container id* (a
//!   compare-and-swap: a lock taken again in between has another id).
//! - `wsctl lock acquire -m MESSAGE` takes a manual lock that never expires
//!   (nobody renews it) and `wsctl lock release` lets it go.
//!
//! On `platform: swarm` the lock is a Swarm config of the same name and
//! labels (`swarm/configs.rs`), created in the cluster's Raft store (409
//! when it exists, on every manager); the holder renews it by rewriting
//! its labels, which moves its `UpdatedAt` on the manager's clock. The same
//! rules follow: release and breaking go by the config's id.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::DeployError;
use super::wait::{Check, WaitError, poll_until};
use crate::deploy::config::StackConfig;
use crate::deploy::docker::{self, status_of};
use crate::deploy::swarm::configs;
use crate::shared::secrets::say_err;

const HOLDER: &str = "wsctl.lock.holder";
const TOKEN: &str = "wsctl.lock.token";
const SINCE: &str = "wsctl.lock.since";
const TTL: &str = "wsctl.lock.ttl";
const HOST: &str = "wsctl.lock.host";
const PID: &str = "wsctl.lock.pid";
const MESSAGE: &str = "wsctl.lock.message";
/// A Swarm config lock's last renewal (its `UpdatedAt` is what counts).
const RENEWED: &str = "wsctl.lock.renewed";
/// What `nginx -v` needs: the Nginx image is always present in a stack.
const RENEW_COMMAND: [&str; 2] = ["/usr/sbin/nginx", "-v"];
/// The command the Swarm edge's follower takes the lock as.
const FOLLOWER: &str = "follow";
/// The longest a run waits for the follower to let go.
const FOLLOWER_HOLDS: Duration = Duration::from_secs(10);
/// How often a waiter looks at the lock again.
const WAIT_INTERVAL: Duration = Duration::from_millis(500);

/// Who holds the lock, as `wsctl lock status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    /// The lock container's id: what a compare-and-swap compares.
    pub id: String,
    pub holder: String,
    pub token: String,
    pub since: String,
    pub message: String,
    /// Seconds of lease; 0 for a manual lock (never expires).
    pub ttl: u64,
    pub host: String,
    pub pid: Option<u32>,
    /// End of the lease on the engine's clock (`None`: never).
    pub expires_at: Option<String>,
    /// Expired, or a run's lock whose process on this machine is gone.
    pub stale: bool,
}

/// A held lock, renewed in the background until released.
pub struct Lock {
    id: String,
    name: String,
    swarm: bool,
    renewer: Option<JoinHandle<()>>,
}

/// The lock object as read: its id, labels and times on the engine's clock.
struct Object {
    id: String,
    labels: HashMap<String, String>,
    created: Option<DateTime<Utc>>,
    renewed: Option<DateTime<Utc>>,
}

/// Reads the lock object: the container, or the Swarm config.
async fn read(docker: &Docker, config: &StackConfig, name: &str) -> anyhow::Result<Option<Object>> {
    if config.is_swarm() {
        return Ok(configs::find(docker, name).await?.map(|record| Object {
            id: record.id,
            labels: record.labels,
            created: record.created,
            renewed: record.updated,
        }));
    }
    Ok(docker::inspect(docker, name).await?.map(|info| Object {
        id: info.id,
        created: info.created.as_deref().and_then(docker::parse_time),
        renewed: info.started_at.as_deref().and_then(docker::parse_time),
        labels: info.labels,
    }))
}

/// Removes the lock object `id` (absent: fine).
async fn remove_object(docker: &Docker, swarm: bool, id: &str) -> anyhow::Result<()> {
    match swarm {
        true => configs::remove(docker, id).await,
        false => docker::remove(docker, id).await,
    }
}

/// When a lease granted or renewed at `renewed` for `ttl` ends.
fn lease_end(renewed: DateTime<Utc>, ttl: u64) -> Option<DateTime<Utc>> {
    (ttl > 0).then(|| renewed + chrono::Duration::seconds(ttl as i64))
}

/// How often a holder renews: three times per lease, so one slow call to
/// the engine does not let it expire.
fn renew_interval(ttl: u64) -> Duration {
    Duration::from_millis((ttl * 1000 / 3).max(200))
}

pub fn local_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A holder on this machine whose process is gone.
fn holder_process_gone(host: &str, pid: Option<u32>) -> bool {
    match pid {
        Some(pid) if host == local_host() && pid != std::process::id() => {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// Reads the lock; `None` when nobody holds it.
pub async fn holder(docker: &Docker, config: &StackConfig) -> anyhow::Result<Option<Holder>> {
    let name = config.name("wsctl_lock");
    let Some(info) = read(docker, config, &name).await? else {
        return Ok(None);
    };
    let label = |key: &str| info.labels.get(key).cloned().unwrap_or_default();
    let ttl: u64 = label(TTL).parse().unwrap_or(0);
    let renewed = [info.created, info.renewed].into_iter().flatten().max();
    let expires = renewed.and_then(|at| lease_end(at, ttl));
    let expired = match expires {
        Some(end) => docker::engine_time(docker).await? >= end,
        None => false,
    };
    let pid = label(PID).parse().ok();
    let host = label(HOST);
    Ok(Some(Holder {
        id: info.id,
        holder: label(HOLDER),
        token: label(TOKEN),
        since: label(SINCE),
        message: label(MESSAGE),
        ttl,
        // A manual lock (ttl 0) outlives its `wsctl lock acquire` process.
        stale: expired || (ttl > 0 && holder_process_gone(&host, pid)),
        host,
        pid,
        expires_at: expires.map(|end| end.to_rfc3339()),
    }))
}

/// What the lock says about the one taking it.
pub struct Request<'a> {
    /// `deploy green`, `lock acquire`, ...
    pub command: &'a str,
    /// The run id (or a fresh one for a manual lock).
    pub token: &'a str,
    pub message: &'a str,
    /// Seconds of lease; 0: a manual lock that never expires.
    pub ttl: u64,
}

/// Takes the stack's lock, waiting up to `wait` for a holder to let go and
/// breaking a stale lock; a run's lock is renewed until released.
pub async fn acquire(
    docker: &Docker,
    config: &StackConfig,
    request: Request<'_>,
    wait: Duration,
) -> anyhow::Result<Lock> {
    let name = config.name("wsctl_lock");
    let mut taken = poll_until(wait, WAIT_INTERVAL, || {
        try_take(docker, config, &name, &request)
    })
    .await;
    // The Swarm edge's follower holds the lock for one reload (about a
    // second, `swarm/follow.rs`): a run waits that out whatever its
    // --lock-wait, and the follower never waits for a run.
    if let Err(WaitError::TimedOut(holder)) = &taken
        && holder.ends_with(&format!(": {FOLLOWER}"))
        && request.command != FOLLOWER
    {
        taken = poll_until(FOLLOWER_HOLDS, WAIT_INTERVAL, || {
            try_take(docker, config, &name, &request)
        })
        .await;
    }
    match taken {
        Ok(lock) => Ok(lock),
        Err(WaitError::Failed(why)) => Err(anyhow::anyhow!("taking the deploy lock: {why}")),
        Err(WaitError::TimedOut(_)) => match holder(docker, config).await? {
            Some(held) => Err(DeployError::LockHeld {
                holder: if held.message.is_empty() {
                    held.holder
                } else {
                    format!("{} ({})", held.holder, held.message)
                },
                since: held.since,
            }
            .into()),
            None => Err(anyhow::anyhow!("the deploy lock kept changing hands")),
        },
    }
}

/// One attempt: create the lock, or break it when stale, or report who holds it.
async fn try_take(
    docker: &Docker,
    config: &StackConfig,
    name: &str,
    request: &Request<'_>,
) -> Check<Lock> {
    let labels = HashMap::from([
        (
            HOLDER.to_string(),
            format!(
                "{} pid {}: {}",
                super::journal::performer(),
                std::process::id(),
                request.command
            ),
        ),
        (TOKEN.to_string(), request.token.to_string()),
        (SINCE.to_string(), crate::shared::time::now_rfc3339()),
        (TTL.to_string(), request.ttl.to_string()),
        (HOST.to_string(), local_host()),
        (PID.to_string(), std::process::id().to_string()),
        (MESSAGE.to_string(), request.message.to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(config.images.nginx.clone()),
        entrypoint: Some(RENEW_COMMAND.iter().map(|part| part.to_string()).collect()),
        labels: Some(labels.clone()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let swarm = config.is_swarm();
    // Again right after breaking a stale lock, and while the lock is
    // between two holders (one removing it, the other not yet created).
    for _ in 0..20 {
        let created =
            match swarm {
                true => configs::create(docker, name, labels.clone()).await,
                false => docker::create(docker, name, body.clone())
                    .await
                    .map(|created| match created {
                        docker::Created::New(id) => Some(id),
                        docker::Created::NameTaken => None,
                    }),
            };
        match created {
            Ok(Some(id)) => {
                let renewer = (request.ttl > 0).then(|| {
                    let interval = renew_interval(request.ttl);
                    match swarm {
                        true => tokio::spawn(renew_config(
                            docker.clone(),
                            name.to_string(),
                            id.clone(),
                            interval,
                        )),
                        false => tokio::spawn(renew(docker.clone(), id.clone(), interval)),
                    }
                });
                return Check::Ready(Lock {
                    id,
                    name: name.to_string(),
                    swarm,
                    renewer,
                });
            }
            Ok(None) => {}
            Err(error) => return Check::Failed(format!("{error:#}")),
        }
        match holder(docker, config).await {
            Ok(Some(held)) if held.stale => {
                tracing::warn!(holder = %held.holder, id = %held.id, "breaking a stale lock");
                say_err!("wsctl: breaking the stale lock of {}", held.holder);
                if let Err(why) = break_stale(docker, swarm, &held.id).await {
                    return Check::Failed(why);
                }
            }
            Ok(Some(held)) => return Check::Pending(held.holder),
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => return Check::Failed(format!("{error:#}")),
        }
    }
    Check::Pending("the lock changed hands".into())
}

/// Removes the stale lock container `id`. By id: if someone else broke it
/// and took the lock meanwhile, this is a 404 (or a 409 while their removal
/// runs), and their lock stays.
async fn break_stale(docker: &Docker, swarm: bool, id: &str) -> Result<(), String> {
    if swarm {
        return configs::remove(docker, id)
            .await
            .map_err(|error| format!("breaking a stale lock: {error:#}"));
    }
    let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) if matches!(status_of(&error), Some(404 | 409)) => Ok(()),
        Err(error) => Err(format!("breaking a stale lock: {error}")),
    }
}

/// Renews the lease every `interval` until the task is aborted (release).
async fn renew(docker: Docker, id: String, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match docker.start_container(&id, None).await {
            Ok(()) => {}
            Err(error) if status_of(&error) == Some(304) => {}
            Err(error) if status_of(&error) == Some(404) => {
                say_err!("wsctl: the deploy lock was broken by someone else");
                return;
            }
            Err(error) => tracing::warn!(%error, "renewing the deploy lock failed"),
        }
    }
}

/// Renews a Swarm config lock every `interval` until aborted: rewrites its
/// labels (with the version read), which moves its `UpdatedAt`.
async fn renew_config(docker: Docker, name: String, id: String, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let record = match configs::find(&docker, &name).await {
            Ok(Some(record)) if record.id == id => record,
            Ok(_) => {
                say_err!("wsctl: the deploy lock was broken by someone else");
                return;
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "renewing the deploy lock failed");
                continue;
            }
        };
        let mut labels = record.labels.clone();
        labels.insert(RENEWED.to_string(), crate::shared::time::now_rfc3339());
        if let Err(error) = configs::relabel(&docker, &record, labels).await {
            tracing::warn!(error = %format!("{error:#}"), "renewing the deploy lock failed");
        }
    }
}

impl Lock {
    /// Lets go: removes the lock this holder created (by its id, so a
    /// lock someone else took after breaking ours is left alone).
    pub async fn release(mut self, docker: &Docker) -> anyhow::Result<()> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        remove_object(docker, self.swarm, &self.id).await
    }

    /// Keeps the lock held after this process exits (`wsctl lock acquire`).
    pub fn keep(mut self) -> String {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        self.name.clone()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

/// `wsctl lock release`: lets go of a manual lock. A run's lock belongs to
/// that run; only `wsctl unlock --force` breaks it.
pub async fn release_manual(
    docker: &Docker,
    config: &StackConfig,
) -> anyhow::Result<Option<Holder>> {
    let Some(held) = holder(docker, config).await? else {
        return Ok(None);
    };
    if held.ttl != 0 {
        return Err(DeployError::LockHeld {
            holder: format!(
                "{} (a running command; `wsctl unlock --force` breaks it)",
                held.holder
            ),
            since: held.since,
        }
        .into());
    }
    remove_object(docker, config.is_swarm(), &held.id).await?;
    Ok(Some(held))
}

/// `wsctl unlock --force`: breaks the lock whoever holds it.
pub async fn force_unlock(docker: &Docker, config: &StackConfig) -> anyhow::Result<Option<String>> {
    let held = holder(docker, config).await?;
    if let Some(held) = &held {
        remove_object(docker, config.is_swarm(), &held.id).await?;
    }
    Ok(held.map(|held| held.holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ends_ttl_after_its_last_renewal_and_a_manual_lock_never() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            lease_end(at, 60).unwrap().to_rfc3339(),
            "2026-11-27T10:01:00+00:00"
        );
        assert_eq!(lease_end(at, 0), None);
    }

    #[test]
    fn a_holder_renews_three_times_per_lease() {
        assert_eq!(renew_interval(60), Duration::from_secs(20));
        assert_eq!(renew_interval(1), Duration::from_millis(333));
        assert!(renew_interval(60) * 3 <= Duration::from_secs(60));
    }

    #[test]
    fn only_a_vanished_local_process_makes_a_holder_stale() {
        let here = local_host();
        assert!(!holder_process_gone(&here, Some(std::process::id())));
        assert!(!holder_process_gone("another-machine", Some(u32::MAX - 1)));
        assert!(holder_process_gone(&here, Some(u32::MAX - 1)));
        assert!(!holder_process_gone(&here, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_lock_wait() {
        // The lock wait is poll_until with WAIT_INTERVAL: a holder that
        // never lets go is looked at every 500 ms until the wait ends.
        let looks = std::cell::Cell::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = poll_until(Duration::from_secs(3), WAIT_INTERVAL, || {
            looks.set(looks.get() + 1);
            async { Check::Pending("ops@elsewhere".to_string()) }
        })
        .await;
        assert_eq!(result, Err(WaitError::TimedOut("ops@elsewhere".into())));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(looks.get(), 7);
    }
}
