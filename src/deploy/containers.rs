//! The Docker side of a traffic move: start a colour, wait until it is
//! ready, smoke it, drain it. Nothing here assumes the host can reach a
//! container's address: checks run inside the container by exec.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bollard::models::{
    ContainerCreateBody, HostConfig, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use serde_json::json;

use super::wait::{Check, WaitError, poll_until};
use super::{DeployError, Stack};
use crate::docker;
use crate::stack::Color;

/// How often the readiness loop runs `wsctl probe` inside the container
/// (each exec takes about 40 ms of its own).
const READY_INTERVAL: Duration = Duration::from_millis(20);

/// Restart after a crash or an engine restart, but not after `docker stop`
/// (so a drained colour stays stopped).
pub fn unless_stopped() -> Option<RestartPolicy> {
    Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        ..Default::default()
    })
}

/// Replaces the colour's container with a fresh one running `image`. The
/// caller made sure Nginx does not route to this colour.
pub async fn start_fresh(stack: &Stack, color: Color, image: &str) -> anyhow::Result<()> {
    let name = stack.config.app(color);
    retire(stack, color, true).await?;
    let config = &stack.config;
    let resources = &config.resources;
    let mut env = HashMap::from([
        ("COLOR".to_string(), color.to_string()),
        ("REDIS_URL".to_string(), config.redis_url()),
        ("PORT".to_string(), config.app_port.to_string()),
        // As many sockets as the container's open-file limit holds, so a
        // full container answers 503 instead of failing accept().
        (
            "MAX_CONNECTIONS".to_string(),
            resources.max_connections().to_string(),
        ),
    ]);
    env.extend(config.app_env.clone());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(
            env.into_iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        labels: Some(HashMap::from([
            ("wsctl.color".to_string(), color.to_string()),
            ("wsctl.image".to_string(), image.to_string()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some(config.network_name()),
            restart_policy: unless_stopped(),
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
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    stack
        .docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("creating {name}"))?;
    docker::start(&stack.docker, &name).await
}

/// Stops a colour Nginx no longer routes to, gracefully (SIGTERM: its
/// clients get goodbye and reconnect elsewhere), and removes it if asked.
pub async fn retire(stack: &Stack, color: Color, remove: bool) -> anyhow::Result<()> {
    let name = stack.config.app(color);
    stop_gracefully(
        stack.docker.clone(),
        name.clone(),
        stack.config.drain_timeout(),
        stack.config.app_port,
    )
    .await?;
    if remove {
        docker::remove(&stack.docker, &name).await?;
    }
    Ok(())
}

/// Runs `wsctl probe` inside the colour's container every 20 ms until it
/// answers ready, the container stops, or `ready_timeout` passes. The
/// engine's HEALTHCHECK (every 2 s) stays for `status` and restarts; this
/// loop is what lets a deploy or rollback move on within 60 ms of ready.
pub async fn wait_ready(stack: &Stack, color: Color) -> Result<(), DeployError> {
    let name = stack.config.app(color);
    let timeout = stack.config.ready_timeout();
    let ready = poll_until(timeout, READY_INTERVAL, || ready_check(stack, &name)).await;
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
    match docker::exec(&stack.docker, name, &["/wsctl", "probe", "--timeout", "1"]).await {
        Ok((0, _)) => Check::Ready(()),
        Ok((_, output)) => Check::Pending(output.trim().to_string()),
        Err(error) => Check::Pending(format!("{error:#}")),
    }
}

/// Ready right now (one probe), for `switch` and `recover`.
pub async fn ready_now(stack: &Stack, color: Color) -> bool {
    matches!(
        ready_check(stack, &stack.config.app(color)).await,
        Check::Ready(())
    )
}

/// `wsctl smoke` inside the colour's container, straight at its port.
pub async fn smoke(stack: &Stack, color: Color) -> anyhow::Result<()> {
    let name = stack.config.app(color);
    let url = format!("http://127.0.0.1:{}", stack.config.app_port);
    let (code, output) = docker::exec(
        &stack.docker,
        &name,
        &["/wsctl", "smoke", "--json", "--url", &url],
    )
    .await?;
    if code == 0 {
        return Ok(());
    }
    let failed: Vec<String> = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|check| check["ok"] == false && check["event"] == "check")
        .map(|check| {
            format!(
                "{}: {}",
                check["name"].as_str().unwrap_or(""),
                check["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    Err(DeployError::Smoke(failed.join("; ")).into())
}

/// Prints (or emits) a container's last log lines after a failed step.
pub async fn report_logs(stack: &Stack, color: Color) {
    let name = stack.config.app(color);
    let logs = docker::logs_tail(&stack.docker, &name, 15).await;
    if stack.events.is_json() {
        stack.events.emit(
            json!({"event": "logs", "container": name, "lines": logs.lines().collect::<Vec<_>>()}),
        );
    } else if !logs.is_empty() {
        println!("last log lines of {name}:\n{logs}");
    }
}

/// How the old colour's drain ended.
pub enum Drained {
    /// It exited by itself after its goodbyes.
    Stopped,
    /// It was already stopped, dead or gone: nothing to drain.
    AlreadyStopped(String),
}

/// Stops the old colour with SIGTERM and `drain_timeout`, showing how many
/// connections it still holds; the stopped container stays for rollback.
pub async fn drain(stack: &mut Stack, color: Color) -> anyhow::Result<Drained> {
    let name = stack.config.app(color);
    let grace = stack.config.drain_timeout();
    match docker::inspect(&stack.docker, &name).await? {
        None => return Ok(Drained::AlreadyStopped(format!("{name} does not exist"))),
        Some(info) if !info.running => {
            return Ok(Drained::AlreadyStopped(format!(
                "{name} was already {} (exit code {})",
                info.state,
                info.exit_code.unwrap_or_default()
            )));
        }
        Some(_) => {}
    }
    let stopping = tokio::spawn(stop_gracefully(
        stack.docker.clone(),
        name.clone(),
        grace,
        stack.config.app_port,
    ));
    tokio::pin!(stopping);
    loop {
        if let Some(left) = connections(stack, &name).await {
            stack
                .events
                .progress(&format!("{name}: {left} connections left"));
        }
        tokio::select! {
            stopped = &mut stopping => {
                stopped??;
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let info = docker::inspect(&stack.docker, &name).await?;
    match info.and_then(|info| info.exit_code) {
        Some(0) | None => Ok(Drained::Stopped),
        Some(code) => Err(DeployError::Drain(format!(
            "{name} did not exit within {} s (exit code {code})",
            grace.as_secs()
        ))
        .into()),
    }
}

/// Stops a container with SIGTERM, then SIGKILL after `grace`. One that
/// is draining already (a killed run's stop, which the engine carries on)
/// is waited for instead: a second SIGTERM makes `wsctl serve` exit at
/// once, dropping the answers it still owes.
async fn stop_gracefully(
    docker: bollard::Docker,
    name: String,
    grace: Duration,
    port: u16,
) -> anyhow::Result<()> {
    if draining(&docker, &name, port).await {
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

/// The container's service says it is draining (its `/status`, via exec).
async fn draining(docker: &bollard::Docker, name: &str, port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/status");
    match docker::exec(docker, name, &["/wsctl", "probe", "--print", &url]).await {
        Ok((_, output)) => serde_json::from_str::<serde_json::Value>(output.trim())
            .is_ok_and(|status| status["draining"] == true),
        Err(_) => false,
    }
}

/// Connections a running colour holds, from its `/status` (via exec).
pub async fn connections(stack: &Stack, name: &str) -> Option<i64> {
    let url = format!("http://127.0.0.1:{}/status", stack.config.app_port);
    let (code, output) = docker::exec(&stack.docker, name, &["/wsctl", "probe", "--print", &url])
        .await
        .ok()?;
    if code != 0 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(output.trim()).ok()?["connections_active"].as_i64()
}
