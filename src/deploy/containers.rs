//! The Docker side of a traffic move: start a colour, wait until it is
//! ready, smoke it, drain it. Nothing here assumes the host can reach a
//! container's address: checks run by exec, in the container or beside it
//! (`checks.rs`).
//!
//! A colour is one container per replica (`app_blue`, or `app_blue_1` ...
//! `app_blue_N`); every operation on a colour runs on all of its replicas
//! in parallel, and fails when one of them fails.
//!
//! On `platform: swarm` a colour is a service instead: each public function
//! here that acts on a colour hands it to `swarm/services.rs`, and a
//! replica is named by its task's overlay address.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, ResourcesUlimits,
};
use futures_util::future::{join_all, try_join_all};
use serde_json::json;

use super::checks;
use super::drain_progress::ConnectionsLeft;
use super::engine::Presence;
use super::swarm::services;
use super::wait::{Check, WaitError, poll_until};
use super::{DeployError, Stack};
use crate::deploy::config::{Color, StackConfig};
use crate::deploy::docker;
use crate::shared::secrets::say;

/// How often the readiness loop runs `wsctl probe` inside the container
/// (each exec takes about 40 ms of its own).
const READY_INTERVAL: Duration = Duration::from_millis(20);

/// The colour's containers as the engine has them, in replica order:
/// `app_blue`, or `app_blue_1` ... `app_blue_N`. When it has none, the
/// single-replica name, so that what follows names what is missing.
pub async fn replicas(stack: &Stack, color: Color) -> anyhow::Result<Vec<String>> {
    if stack.config.is_swarm() {
        let found = services::addresses(stack, color).await?;
        if found.is_empty() {
            return Ok(vec![services::service(&stack.config, color)]);
        }
        return Ok(found);
    }
    let found = existing_replicas(&stack.docker, &stack.config, color).await?;
    if found.is_empty() {
        return Ok(vec![stack.config.app(color)]);
    }
    Ok(found)
}

/// The colour's containers that exist on `docker`, in replica order
/// (empty when it has none).
pub async fn existing_replicas(
    docker: &bollard::Docker,
    config: &StackConfig,
    color: Color,
) -> anyhow::Result<Vec<String>> {
    let mut found: Vec<(usize, String)> = docker::container_names(docker, &config.app(color))
        .await?
        .into_iter()
        .filter_map(|name| Some((config.replica_index(color, &name)?, name)))
        .collect();
    found.sort();
    found.dedup();
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

/// Each of the colour's containers with its state (`None`: absent).
pub async fn inspect_all(
    stack: &Stack,
    color: Color,
) -> anyhow::Result<Vec<(String, Option<docker::ContainerInfo>)>> {
    let names = replicas(stack, color).await?;
    let infos = try_join_all(
        names
            .iter()
            .map(|name| docker::inspect(&stack.docker, name)),
    )
    .await?;
    Ok(names.into_iter().zip(infos).collect())
}

/// One replica of a colour as a canary's analysis looks at it.
pub struct LookedAt {
    /// Where its checks reach it: a container name, or on Swarm a running
    /// task's address; none when nothing runs to look at.
    pub target: Option<String>,
    /// What is wrong with it (stopped, unhealthy, gone; on Swarm a task
    /// Swarm wants running that is not).
    pub problem: Option<String>,
}

/// Each replica of the colour as a canary's analysis looks at it.
pub async fn looked_at(stack: &Stack, color: Color) -> anyhow::Result<Vec<LookedAt>> {
    if stack.config.is_swarm() {
        let tasks = services::tasks(stack, color).await?;
        return Ok(tasks
            .into_iter()
            .filter(|task| task.wanted)
            .map(|task| LookedAt {
                problem: (!task.running)
                    .then(|| format!("task {} on {} is {}", task.name, task.node, task.state)),
                target: task.address.filter(|_| task.running),
            })
            .collect());
    }
    Ok(inspect_all(stack, color)
        .await?
        .into_iter()
        .map(|(name, info)| {
            let problem = match info {
                Some(info) if info.running && info.health != "unhealthy" => None,
                Some(info) => Some(format!("{name} is {} ({})", info.state, info.health)),
                None => Some(format!("{name} is gone")),
            };
            LookedAt {
                target: Some(name),
                problem,
            }
        })
        .collect())
}

/// What the upstream names for `color`'s replicas: their container names,
/// which Docker's DNS resolves on the stack's network; with `nginx_network:
/// host` their addresses on that network (the host's network has no Docker
/// DNS, and the host reaches its bridges directly); on Swarm the tasks'
/// addresses (`replicas`).
pub async fn upstream_servers(stack: &Stack, color: Color) -> anyhow::Result<Vec<String>> {
    if !stack.config.nginx_on_host() {
        return replicas(stack, color).await;
    }
    let network = stack.config.network_name();
    let mut addresses = Vec::new();
    for (name, info) in inspect_all(stack, color).await? {
        let address = info
            .and_then(|info| info.addresses.get(&network).cloned())
            .filter(|address| !address.is_empty());
        match address {
            Some(address) => addresses.push(address),
            None => anyhow::bail!(
                "{name} has no address on {network} (not running?), and with nginx_network: \
                 host the upstream names each replica by its address"
            ),
        }
    }
    Ok(addresses)
}

/// The colour's containers (or tasks) as the platform has them.
pub async fn presence(stack: &Stack, color: Color) -> anyhow::Result<Presence> {
    if stack.config.is_swarm() {
        let (names, exists, running) = services::presence(stack, color).await?;
        return Ok(Presence {
            names,
            exists,
            running,
        });
    }
    let all = inspect_all(stack, color).await?;
    Ok(Presence {
        names: all.iter().map(|(name, _)| name.clone()).collect(),
        exists: all.iter().any(|(_, info)| info.is_some()),
        running: all
            .iter()
            .any(|(_, info)| info.as_ref().is_some_and(|info| info.running)),
    })
}

/// The image the colour's (first) container runs; empty when it has none.
pub async fn image_of(stack: &Stack, color: Color) -> anyhow::Result<String> {
    if stack.config.is_swarm() {
        return services::image_of(stack, color).await;
    }
    let all = inspect_all(stack, color).await?;
    Ok(all
        .into_iter()
        .find_map(|(_, info)| info)
        .map(|info| info.image)
        .unwrap_or_default())
}

/// Replaces the colour's containers with `count` fresh ones running
/// `image`. The caller made sure Nginx does not route to this colour.
pub async fn start_fresh(
    stack: &Stack,
    color: Color,
    image: &str,
    count: usize,
    extra_env: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    // Resolved once for every replica (env files read once), and before
    // the old colour goes, so an unreadable env file changes nothing.
    let mut app_env = stack.config.app_environment()?;
    // `deploy --env`: this colour only, on top of app_env.
    app_env.extend(extra_env.clone());
    if stack.config.is_swarm() {
        return services::start_fresh(stack, color, image, count, &app_env).await;
    }
    retire(stack, color, true).await?;
    let names = stack.config.app_replicas(color, count);
    for (index, name) in names.iter().enumerate() {
        create(stack, color, image, name, index + 1, &app_env).await?;
    }
    try_join_all(names.iter().map(|name| docker::start(&stack.docker, name))).await?;
    Ok(())
}

/// The environment of each replica of `color` (a container, or a Swarm
/// task), as `KEY=VALUE`: what wsctl sets, then the app's own on top.
pub fn replica_env(
    config: &StackConfig,
    color: Color,
    app_env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut env = BTreeMap::from([
        ("COLOR".to_string(), color.to_string()),
        ("REDIS_URL".to_string(), config.app_redis_url()),
        ("PORT".to_string(), config.app_port.to_string()),
        // As many sockets as the replica's open-file limit holds, so a
        // full replica answers 503 instead of failing accept().
        (
            "MAX_CONNECTIONS".to_string(),
            config.resources.max_connections().to_string(),
        ),
    ]);
    env.extend(app_env.clone());
    env.into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// Starts the colour's kept containers again (a rollback).
pub async fn start_kept(stack: &Stack, color: Color) -> anyhow::Result<Vec<String>> {
    if stack.config.is_swarm() {
        return services::start_kept(stack, color).await;
    }
    let names = replicas(stack, color).await?;
    try_join_all(names.iter().map(|name| docker::start(&stack.docker, name))).await?;
    Ok(names)
}

/// Creates one replica of the colour with the resolved app environment.
async fn create(
    stack: &Stack,
    color: Color,
    image: &str,
    name: &str,
    replica: usize,
    app_env: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let config = &stack.config;
    let resources = &config.resources;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(replica_env(config, color, app_env)),
        // `app_blue` on the stack's own network, for every replica: a name
        // that does not change with the prefix or the replica count, so
        // Prometheus's DNS discovery (compose/prometheus) finds them all,
        // as Compose's service name does for containers it started.
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                config.network_name(),
                EndpointSettings {
                    aliases: Some(vec![format!("app_{color}")]),
                    ..Default::default()
                },
            )])),
        }),
        labels: Some(HashMap::from([
            ("wsctl.color".to_string(), color.to_string()),
            ("wsctl.image".to_string(), image.to_string()),
            ("wsctl.replica".to_string(), replica.to_string()),
        ])),
        // The engine sends it on `docker stop`, then SIGKILL after the
        // drain timeout.
        stop_signal: config
            .is_external()
            .then(|| config.stop_signal().to_string()),
        host_config: Some(HostConfig {
            network_mode: Some(config.network_name()),
            restart_policy: docker::unless_stopped(),
            // docker-init as PID 1: a SIGTERM that arrives before wsctl has
            // installed its handler still stops it (PID 1 ignores signals
            // it has no handler for), so undoing a just-started standby
            // does not wait for drain_timeout and a SIGKILL.
            init: Some(true),
            nano_cpus: Some((resources.cpus * 1e9) as i64),
            memory: Some(resources.memory_bytes() as i64),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(resources.open_files as i64),
                hard: Some(resources.open_files as i64),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker::create_new(&stack.docker, name, body).await
}

/// Stops a colour Nginx no longer routes to, gracefully (SIGTERM: its
/// clients get goodbye and reconnect elsewhere), and removes it if asked.
pub async fn retire(stack: &Stack, color: Color, remove: bool) -> anyhow::Result<()> {
    if stack.config.is_swarm() {
        return services::retire(stack, color, remove).await;
    }
    let names = replicas(stack, color).await?;
    try_join_all(names.into_iter().map(|name| async move {
        stop_gracefully(
            stack.docker.clone(),
            &stack.config,
            name.clone(),
            stack.config.drain_timeout(),
        )
        .await?;
        if remove {
            docker::remove(&stack.docker, &name).await?;
        }
        anyhow::Ok(())
    }))
    .await?;
    Ok(())
}

/// Checks the colour's health path every 20 ms (`checks::ready`) until it
/// answers 2xx, the container stops, or `ready_timeout` passes; an error
/// no retry can fix (a missing program) fails at once. The
/// engine's HEALTHCHECK (every 2 s) stays for `status` and restarts; this
/// loop is what lets a deploy or rollback move on within 60 ms of ready.
pub async fn wait_ready(stack: &Stack, color: Color) -> Result<(), DeployError> {
    if stack.config.is_swarm() {
        return services::wait_ready(stack, color).await;
    }
    let names = replicas(stack, color)
        .await
        .map_err(|error| DeployError::Health(format!("{error:#}")))?;
    try_join_all(names.iter().map(|name| wait_replica_ready(stack, name))).await?;
    Ok(())
}

async fn wait_replica_ready(stack: &Stack, name: &str) -> Result<(), DeployError> {
    let timeout = stack.config.ready_timeout();
    let ready = poll_until(timeout, READY_INTERVAL, || ready_check(stack, name)).await;
    match ready {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(why)) => Err(DeployError::Health(why)),
        Err(WaitError::TimedOut(why)) => Err(DeployError::Health(format!(
            "{name} not ready after {} s ({why})",
            timeout.as_secs()
        ))),
    }
}

async fn ready_check(stack: &Stack, name: &str) -> Check<()> {
    match docker::inspect(&stack.docker, name).await {
        Ok(None) => return Check::Failed(format!("{name} does not exist")),
        Ok(Some(info)) if !info.running || info.state == "restarting" => {
            return Check::Failed(format!(
                "{name} is {} (exit code {})",
                info.state,
                info.exit_code.unwrap_or_default()
            ));
        }
        Ok(Some(_)) => {}
        Err(error) => return Check::Pending(format!("{error:#}")),
    }
    checks::ready(&stack.docker, &stack.config, name).await
}

/// Every replica ready right now (one probe each), for `switch` and
/// `recover`.
pub async fn ready_now(stack: &Stack, color: Color) -> bool {
    if stack.config.is_swarm() {
        return services::ready_now(stack, color).await;
    }
    let Ok(names) = replicas(stack, color).await else {
        return false;
    };
    join_all(names.iter().map(|name| ready_check(stack, name)))
        .await
        .iter()
        .all(|check| matches!(check, Check::Ready(())))
}

/// The smoke test of each of the colour's containers, straight at its
/// port (`checks.rs` says from where).
pub async fn smoke(stack: &Stack, color: Color) -> anyhow::Result<()> {
    let names = replicas(stack, color).await?;
    let named = names.len() > 1;
    try_join_all(names.iter().map(|name| smoke_replica(stack, name, named))).await?;
    Ok(())
}

/// Smokes one replica; `named`: say which in the error (several replicas).
async fn smoke_replica(stack: &Stack, name: &str, named: bool) -> anyhow::Result<()> {
    let report = checks::smoke(&stack.docker, &stack.config, name).await?;
    let failed: Vec<String> = report
        .iter()
        .filter(|check| !check.ok)
        .map(|check| format!("{}: {}", check.name, check.detail))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let failed = failed.join("; ");
    let failed = if named {
        format!("{name}: {failed}")
    } else {
        failed
    };
    Err(DeployError::Smoke(failed).into())
}

/// Prints (or emits) the last log lines of each of the colour's containers
/// after a failed step.
pub async fn report_logs(stack: &Stack, color: Color) {
    if stack.config.is_swarm() {
        return services::report_tasks(stack, color).await;
    }
    let names = replicas(stack, color)
        .await
        .unwrap_or_else(|_| vec![stack.config.app(color)]);
    for name in names {
        report_container_logs(stack, &name).await;
    }
}

/// Prints (or emits) the last log lines of one container.
pub async fn report_container_logs(stack: &Stack, name: &str) {
    let logs = docker::logs_tail(&stack.docker, name, 15).await;
    if stack.events.is_json() {
        stack.events.emit(
            json!({"event": "logs", "container": name, "lines": logs.lines().collect::<Vec<_>>()}),
        );
    } else if !logs.is_empty() {
        say!("last log lines of {name}:\n{logs}");
    }
}

/// How the old colour's drain ended.
pub enum Drained {
    /// It exited by itself after its goodbyes.
    Stopped,
    /// It was already stopped, dead or gone: nothing to drain.
    AlreadyStopped(String),
}

/// Stops the old colour's replicas with SIGTERM and `drain_timeout`, in
/// parallel, showing how many connections they still hold; the stopped
/// containers stay for rollback.
pub async fn drain(stack: &mut Stack, color: Color) -> anyhow::Result<Drained> {
    if stack.config.is_swarm() {
        return services::drain(stack, color).await;
    }
    let grace = stack.config.drain_timeout();
    let mut running = Vec::new();
    let mut stopped = Vec::new();
    for name in replicas(stack, color).await? {
        match docker::inspect(&stack.docker, &name).await? {
            None => stopped.push(format!("{name} does not exist")),
            Some(info) if !info.running => stopped.push(format!(
                "{name} was already {} (exit code {})",
                info.state,
                info.exit_code.unwrap_or_default()
            )),
            Some(_) => running.push(name),
        }
    }
    if running.is_empty() {
        return Ok(Drained::AlreadyStopped(stopped.join("; ")));
    }
    let stops = running.iter().map(|name| {
        let (docker, config, name) = (stack.docker.clone(), stack.config.clone(), name.clone());
        async move { stop_gracefully(docker, &config, name, grace).await }
    });
    let stopping = tokio::spawn(try_join_all(stops));
    tokio::pin!(stopping);
    let label = if running.len() == 1 {
        running[0].clone()
    } else {
        format!("{} ({} replicas)", stack.config.app(color), running.len())
    };
    let mut left = ConnectionsLeft::default();
    loop {
        if stack.events.shows_progress() {
            let shared: &Stack = stack;
            let counted = left
                .look(
                    &running,
                    |name| async move { connections(shared, &name).await },
                )
                .await;
            if let Some(counted) = counted {
                stack
                    .events
                    .progress(&format!("{label}: {counted} connections left"));
            }
        }
        tokio::select! {
            stopped = &mut stopping => {
                stopped??;
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    for name in &running {
        let info = docker::inspect(&stack.docker, name).await?;
        let code = info.and_then(|info| info.exit_code).unwrap_or(0);
        if let Some(why) = unclean_exit(&stack.config, code, grace) {
            return Err(DeployError::Drain(format!("{name} {why}")).into());
        }
    }
    Ok(Drained::Stopped)
}

/// Why a drained container's exit code is not a clean stop, if it is not.
/// 137 is the engine's SIGKILL after `grace`. The bundled service exits 0;
/// an external app may also die of its stop signal (128 + its number:
/// 143 for SIGTERM), as a Node or uvicorn process does by default.
fn unclean_exit(config: &StackConfig, code: i64, grace: Duration) -> Option<String> {
    let by_stop_signal = 128 + signal_number(config.stop_signal());
    match code {
        0 => None,
        code if config.is_external() && code == by_stop_signal => None,
        137 => Some(format!(
            "did not exit within {} s of its stop signal and was killed (exit code 137)",
            grace.as_secs()
        )),
        code => Some(format!("exited with code {code} after its stop signal")),
    }
}

/// The number of one of `config::app::STOP_SIGNALS` (Linux).
fn signal_number(name: &str) -> i64 {
    match name {
        "SIGHUP" => 1,
        "SIGINT" => 2,
        "SIGQUIT" => 3,
        "SIGUSR1" => 10,
        "SIGUSR2" => 12,
        "SIGWINCH" => 28,
        _ => 15,
    }
}

/// Stops a container with its stop signal (SIGTERM, or an external app's
/// `stop_signal`, set when it was created), then SIGKILL after `grace`. One that
/// is draining already (a killed run's stop, which the engine carries on)
/// is waited for instead: a second SIGTERM makes `wsctl serve` exit at
/// once, dropping the answers it still owes.
async fn stop_gracefully(
    docker: bollard::Docker,
    config: &StackConfig,
    name: String,
    grace: Duration,
) -> anyhow::Result<()> {
    if draining(&docker, config, &name).await {
        let exited = poll_until(grace, Duration::from_millis(100), || async {
            match docker::inspect(&docker, &name).await {
                Ok(Some(info)) if info.running => Check::Pending("draining".to_string()),
                _ => Check::Ready(()),
            }
        })
        .await;
        if exited.is_ok() {
            return Ok(());
        }
    }
    docker::stop(&docker, &name, grace).await
}

/// The container's service says it is draining (the bundled service's
/// `/status`; an external app never says).
async fn draining(docker: &bollard::Docker, config: &StackConfig, name: &str) -> bool {
    checks::service_status(docker, config, name)
        .await
        .is_some_and(|status| status["draining"] == true)
}

/// Connections a running colour holds, from the bundled service's
/// `/status` (`None` for an external app).
pub async fn connections(stack: &Stack, name: &str) -> Option<i64> {
    checks::service_status(&stack.docker, &stack.config, name).await?["connections_active"].as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_signal_death_is_clean_for_an_external_app_only() {
        let grace = Duration::from_secs(5);
        let bundled = StackConfig::default();
        assert_eq!(unclean_exit(&bundled, 0, grace), None);
        assert!(unclean_exit(&bundled, 143, grace).is_some_and(|why| why.contains("143")));
        assert!(unclean_exit(&bundled, 137, grace).is_some_and(|why| why.contains("killed")));
        let external = StackConfig {
            app_kind: crate::deploy::config::AppKind::External,
            ..StackConfig::default()
        };
        assert_eq!(unclean_exit(&external, 143, grace), None);
        let by_sigint = StackConfig {
            stop_signal: Some("SIGINT".into()),
            ..external.clone()
        };
        assert_eq!(unclean_exit(&by_sigint, 130, grace), None);
        assert!(unclean_exit(&by_sigint, 143, grace).is_some());
        assert!(unclean_exit(&external, 1, grace).is_some_and(|why| why.contains("code 1")));
    }
}
