//! Blue-green deploys through the Docker API.
//!
//! A deploy is a sequence of small steps, each reported with its duration
//! (`events.rs`): preflight (images, lock, network, Redis and Nginx created
//! when absent), start the standby, wait until the engine reports it
//! healthy (the image's HEALTHCHECK runs `wsctl probe` inside it), smoke it
//! from inside (`wsctl smoke` by exec, never through Nginx), switch (render
//! the upstream, upload it, `nginx -t`, reload), verify through the public
//! address, drain the old colour (SIGTERM: its clients get goodbye and 1001
//! and reconnect through Nginx) and keep it stopped for rollback.
//!
//! Before the switch any failure removes the standby and leaves traffic
//! where it was; a failed `nginx -t`, reload or verification restores the
//! previous upstream. Nothing here assumes the host can reach a container's
//! address: checks go through the engine or the published Nginx port.

mod events;
mod history;
mod lock;
mod probe;
mod upstream;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use serde_json::json;

pub use events::Events;
pub use lock::force_unlock;
pub use upstream::DEFAULT_TEMPLATE;

use crate::docker::{self, ContainerInfo};
use crate::stack::{COLORS, StackConfig, other};

const UPSTREAM_DIR: &str = "/etc/nginx/conf.d";
const UPSTREAM_FILE: &str = "upstream.conf";
const NGINX: &str = "/usr/sbin/nginx";

/// Why a deploy command failed; each has its own exit code (README).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Usage(String),
    #[error("health check failed: {0}")]
    Health(String),
    #[error("smoke test failed: {0}")]
    Smoke(String),
    #[error("switch failed, previous upstream restored: {0}")]
    Switch(String),
    #[error("drain timed out: {0}")]
    Drain(String),
    #[error("the stack is locked by {holder} since {since} (wsctl unlock --force breaks it)")]
    LockHeld { holder: String, since: String },
}

impl DeployError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DeployError::Usage(_) => 2,
            DeployError::Health(_) => 3,
            DeployError::Smoke(_) => 4,
            DeployError::Switch(_) => 5,
            DeployError::Drain(_) => 6,
            DeployError::LockHeld { .. } => 7,
        }
    }
}

/// What the commands share: the engine, the stack and the reporter.
pub struct Stack {
    pub docker: Docker,
    pub config: StackConfig,
    pub events: Events,
    /// The upstream template (the stack's own, or the shipped one).
    pub template: String,
    pub lock_wait: Duration,
}

impl Stack {
    fn nginx(&self) -> String {
        self.config.name("nginx")
    }

    /// The colour Nginx routes to now, read from its live upstream file.
    pub async fn live_color(&self) -> anyhow::Result<Option<String>> {
        let path = format!("{UPSTREAM_DIR}/{UPSTREAM_FILE}");
        if docker::inspect(&self.docker, &self.nginx())
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let file = docker::download_file(&self.docker, &self.nginx(), &path).await?;
        Ok(file.and_then(|bytes| upstream::live_color(&String::from_utf8_lossy(&bytes))))
    }

    /// Runs `body` under the stack's lock, releasing it whatever happens.
    async fn locked<T>(
        &mut self,
        command: &str,
        body: impl AsyncFnOnce(&mut Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let lock = lock::acquire(&self.docker, &self.config, command, self.lock_wait).await?;
        let result = body(self).await;
        let released = lock.release(&self.docker).await;
        let value = result?;
        released?;
        Ok(value)
    }
}

/// `wsctl deploy`: the standby colour (or `color`) with `image`.
pub async fn deploy(
    stack: &mut Stack,
    color: Option<String>,
    image: Option<String>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let image = image.unwrap_or_else(|| stack.config.images.app.clone());
    stack
        .events
        .begin("preflight", "engine, images, lock, network, redis, nginx");
    let prepared = async {
        for name in [
            &image,
            &stack.config.images.nginx,
            &stack.config.images.redis,
        ] {
            docker::ensure_image(&stack.docker, name).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(error) = prepared {
        stack.events.fail(&format!("{error:#}"));
        return Err(error);
    }
    let command = format!("deploy {}", color.as_deref().unwrap_or(""));
    stack
        .locked(&command, async move |stack| {
            if let Err(error) = bootstrap(stack).await {
                stack.events.fail(&format!("{error:#}"));
                return Err(error);
            }
            let live = stack.live_color().await?;
            let standby = match color {
                Some(color) => color,
                None => other(live.as_deref().unwrap_or("green")).to_string(),
            };
            if !COLORS.contains(&standby.as_str()) {
                let error =
                    DeployError::Usage(format!("--color must be blue or green, not '{standby}'"));
                stack.events.fail(&error.to_string());
                return Err(error.into());
            }
            if live.as_deref() == Some(standby.as_str()) {
                let error =
                    DeployError::Usage(format!("{standby} is live; deploy to the standby colour"));
                stack.events.fail(&error.to_string());
                return Err(error.into());
            }
            stack.events.ok(&format!(
                "live: {}, standby: {standby}",
                live.as_deref().unwrap_or("none")
            ));

            start_colour(stack, &standby, &image).await?;
            wait_healthy(stack, &standby, true).await?;
            smoke(stack, &standby, true).await?;
            cut_over(
                stack,
                "deploy",
                live,
                &standby,
                &image,
                started,
                AfterSwitch::Drain,
                OnFailure::RemoveStandby,
            )
            .await
        })
        .await
}

/// Creates the network, Redis and Nginx when they are absent, and starts
/// them when they are stopped: the first deploy bootstraps the stack.
async fn bootstrap(stack: &mut Stack) -> anyhow::Result<()> {
    let config = &stack.config;
    let network = config.network_name();
    docker::ensure_network(&stack.docker, &network).await?;
    let restart = Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        ..Default::default()
    });
    let redis = ContainerCreateBody {
        image: Some(config.images.redis.clone()),
        host_config: Some(HostConfig {
            network_mode: Some(network.clone()),
            restart_policy: restart.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    ensure_running(&stack.docker, &config.name("redis"), redis).await?;
    let public = config.public_socket();
    let bindings = HashMap::from([(
        "80/tcp".to_string(),
        Some(vec![PortBinding {
            host_ip: Some(public.ip().to_string()),
            host_port: Some(public.port().to_string()),
        }]),
    )]);
    let nginx = ContainerCreateBody {
        image: Some(config.images.nginx.clone()),
        exposed_ports: Some(vec!["80/tcp".into()]),
        host_config: Some(HostConfig {
            network_mode: Some(network),
            port_bindings: Some(bindings),
            restart_policy: restart,
            ..Default::default()
        }),
        ..Default::default()
    };
    ensure_running(&stack.docker, &config.name("nginx"), nginx).await
}

async fn ensure_running(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> anyhow::Result<()> {
    if docker::inspect(docker, name).await?.is_none() {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match docker.create_container(Some(options), body).await {
            Ok(_) => {}
            Err(error) if docker::status_of(&error) == Some(409) => {}
            Err(error) => return Err(error).with_context(|| format!("creating {name}")),
        }
    }
    docker::start(docker, name).await
}

/// Replaces the colour's container with a fresh one running `image`.
async fn start_colour(stack: &mut Stack, color: &str, image: &str) -> anyhow::Result<()> {
    let name = stack.config.app(color);
    stack.events.begin("start", &format!("{name} from {image}"));
    let result = async {
        docker::remove(&stack.docker, &name).await?;
        let config = &stack.config;
        let mut env = HashMap::from([
            ("COLOR".to_string(), color.to_string()),
            ("REDIS_URL".to_string(), config.redis_url()),
            ("PORT".to_string(), config.app_port.to_string()),
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
    .await;
    match result {
        Ok(()) => {
            stack.events.ok(&name);
            Ok(())
        }
        Err(error) => {
            stack.events.fail(&format!("{error:#}"));
            let _ = docker::remove(&stack.docker, &name).await;
            Err(error)
        }
    }
}

/// Waits until the engine reports the colour healthy. On failure the
/// standby is removed (when `remove_on_failure`) after its last log lines
/// have been kept for the report.
async fn wait_healthy(
    stack: &mut Stack,
    color: &str,
    remove_on_failure: bool,
) -> anyhow::Result<()> {
    let name = stack.config.app(color);
    stack.events.begin(
        "health",
        &format!("{name} (timeout {} s)", stack.config.ready_timeout),
    );
    let deadline = Instant::now() + stack.config.ready_timeout();
    let why = loop {
        match docker::inspect(&stack.docker, &name).await? {
            Some(info) if info.health == "healthy" => {
                stack.events.ok(&format!("{name} healthy"));
                return Ok(());
            }
            Some(info) if !info.running => {
                break format!("{name} is {} (exit code {:?})", info.state, info.exit_code);
            }
            Some(info) if info.health == "unhealthy" => break format!("{name} is unhealthy"),
            None => break format!("{name} does not exist"),
            Some(_) if Instant::now() >= deadline => {
                break format!("{name} not healthy after {} s", stack.config.ready_timeout);
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    fail_standby(stack, &name, remove_on_failure, DeployError::Health(why)).await
}

/// Reports a failed step with the container's last log lines, removes the
/// standby when asked, and returns the error.
async fn fail_standby(
    stack: &mut Stack,
    name: &str,
    remove: bool,
    error: DeployError,
) -> anyhow::Result<()> {
    let logs = docker::logs_tail(&stack.docker, name, 15).await;
    stack.events.fail(&error.to_string());
    if stack.events.is_json() {
        stack.events.emit(
            json!({"event": "logs", "container": name, "lines": logs.lines().collect::<Vec<_>>()}),
        );
    } else if !logs.is_empty() {
        println!("last log lines of {name}:\n{logs}");
    }
    if remove {
        docker::remove(&stack.docker, name).await?;
    }
    Err(error.into())
}

/// `wsctl smoke` inside the colour's container, straight at its port.
async fn smoke(stack: &mut Stack, color: &str, remove_on_failure: bool) -> anyhow::Result<()> {
    let name = stack.config.app(color);
    stack.events.begin("smoke", &name);
    let url = format!("http://127.0.0.1:{}", stack.config.app_port);
    let (code, output) = docker::exec(
        &stack.docker,
        &name,
        &["/wsctl", "smoke", "--json", "--url", &url],
    )
    .await?;
    if code == 0 {
        stack.events.ok("every check passed");
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
    fail_standby(
        stack,
        &name,
        remove_on_failure,
        DeployError::Smoke(failed.join("; ")),
    )
    .await
}

/// Renders and uploads the upstream for `color`, tests and reloads Nginx,
/// and verifies through the public address; restores the previous
/// upstream on any failure.
async fn switch_to(stack: &mut Stack, color: &str) -> anyhow::Result<()> {
    let nginx = stack.nginx();
    stack.events.begin("switch", &format!("nginx -> {color}"));
    let path = format!("{UPSTREAM_DIR}/{UPSTREAM_FILE}");
    let previous = docker::download_file(&stack.docker, &nginx, &path)
        .await?
        .unwrap_or_default();
    let attempt = async {
        let rendered = upstream::render(
            &stack.template,
            color,
            &stack.config.app(color),
            stack.config.app_port,
        )
        .map_err(|error| DeployError::Switch(format!("rendering the upstream: {error:#}")))?;
        docker::upload_file(
            &stack.docker,
            &nginx,
            UPSTREAM_DIR,
            UPSTREAM_FILE,
            rendered.as_bytes(),
        )
        .await?;
        nginx_command(stack, &["-t"]).await?;
        nginx_command(stack, &["-s", "reload"]).await?;
        verify(stack, color).await
    }
    .await;
    match attempt {
        Ok(()) => {
            stack.events.ok(&format!(
                "{color} live, verified through {}",
                stack.config.public_address
            ));
            Ok(())
        }
        Err(error) => {
            let restored = async {
                docker::upload_file(
                    &stack.docker,
                    &nginx,
                    UPSTREAM_DIR,
                    UPSTREAM_FILE,
                    &previous,
                )
                .await?;
                nginx_command(stack, &["-s", "reload"]).await
            }
            .await;
            let detail = match restored {
                Ok(()) => format!("{error:#}"),
                Err(restore) => {
                    format!("{error:#}; restoring the previous upstream ALSO failed: {restore:#}")
                }
            };
            stack.events.fail(&detail);
            Err(match error.downcast::<DeployError>() {
                Ok(DeployError::Switch(why)) => DeployError::Switch(why).into(),
                Ok(other) => other.into(),
                Err(other) => DeployError::Switch(format!("{other:#}")).into(),
            })
        }
    }
}

async fn nginx_command(stack: &Stack, args: &[&str]) -> anyhow::Result<()> {
    let mut command = vec![NGINX];
    command.extend_from_slice(args);
    let (code, output) = docker::exec(&stack.docker, &stack.nginx(), &command).await?;
    if code != 0 {
        return Err(
            DeployError::Switch(format!("nginx {}: {}", args.join(" "), output.trim())).into(),
        );
    }
    Ok(())
}

/// `/status` through the public address reports `color` (new connections
/// reach the new colour within a few seconds of the reload).
async fn verify(stack: &Stack, color: &str) -> anyhow::Result<()> {
    let url = format!("http://{}/status", stack.config.public_address);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(response) = client.get(&url).send().await
            && let Ok(status) = response.json::<serde_json::Value>().await
        {
            if status["color"] == color {
                return Ok(());
            }
            seen = format!("colour {}", status["color"]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(DeployError::Switch(format!("{url} still reports {seen}, not {color}")).into())
}

/// Stops the old colour with SIGTERM and the drain timeout, showing how
/// many connections it still holds; the stopped container stays for rollback.
async fn drain(stack: &mut Stack, color: &str) -> anyhow::Result<()> {
    let name = stack.config.app(color);
    let grace = stack.config.drain_timeout();
    stack
        .events
        .begin("drain", &format!("{name} (timeout {} s)", grace.as_secs()));
    let stopping = {
        let (docker, name) = (stack.docker.clone(), name.clone());
        tokio::spawn(async move { docker::stop(&docker, &name, grace).await })
    };
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
        Some(0) | None => {
            stack
                .events
                .ok(&format!("{name} drained and stopped (kept for rollback)"));
            Ok(())
        }
        Some(code) => {
            let error = DeployError::Drain(format!(
                "{name} did not exit within {} s (exit code {code})",
                grace.as_secs()
            ));
            stack.events.fail(&error.to_string());
            Err(error.into())
        }
    }
}

/// Connections a running colour holds, from its `/status` (via exec).
async fn connections(stack: &Stack, name: &str) -> Option<i64> {
    let url = format!("http://127.0.0.1:{}/status", stack.config.app_port);
    let (code, output) = docker::exec(&stack.docker, name, &["/wsctl", "probe", "--print", &url])
        .await
        .ok()?;
    if code != 0 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(output.trim()).ok()?["connections_active"].as_i64()
}

/// What happens to the old colour once traffic has moved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterSwitch {
    Drain,
    KeepOld,
}

/// What happens to the new colour when the switch fails.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// A deploy's standby goes: nothing half-done is left.
    RemoveStandby,
    Keep,
}

/// The part every traffic move shares: switch to `to` with the cutover
/// probe running (when something was live), drain the old colour, report
/// continuity and record the move in the history.
#[allow(clippy::too_many_arguments)]
async fn cut_over(
    stack: &mut Stack,
    action: &str,
    from: Option<String>,
    to: &str,
    image: &str,
    started: Instant,
    after: AfterSwitch,
    on_failure: OnFailure,
) -> anyhow::Result<()> {
    let probe = from
        .as_ref()
        .map(|_| probe::Probe::start(&stack.config.public_address));
    if let Err(error) = switch_to(stack, to).await {
        report_continuity(stack, probe).await;
        if on_failure == OnFailure::RemoveStandby {
            docker::remove(&stack.docker, &stack.config.app(to)).await?;
        }
        return Err(error);
    }
    let drained = match (&from, after) {
        (Some(old), AfterSwitch::Drain) => drain(stack, old).await,
        _ => Ok(()),
    };
    let continuity = report_continuity(stack, probe).await;
    drained?;
    record(stack, action, from, to, image, started, continuity).await
}

/// Stops the cutover probe (if one ran) and reports what clients saw.
async fn report_continuity(
    stack: &mut Stack,
    probe: Option<probe::Probe>,
) -> Option<probe::Continuity> {
    let probe = probe?;
    // A moment for the last reconnects to land on the new colour.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let continuity = probe.finish().await;
    if stack.events.is_json() {
        let mut event = serde_json::to_value(&continuity).unwrap_or_default();
        event["event"] = "continuity".into();
        stack.events.emit(event);
    } else {
        println!("continuity: {}", continuity.summary());
    }
    Some(continuity)
}

async fn record(
    stack: &mut Stack,
    action: &str,
    from: Option<String>,
    to: &str,
    image: &str,
    started: Instant,
    continuity: Option<probe::Continuity>,
) -> anyhow::Result<()> {
    let entry = history::Entry {
        at: crate::time::now_rfc3339(),
        action: action.to_string(),
        from: from.clone(),
        to: to.to_string(),
        image: image.to_string(),
        seconds: started.elapsed().as_secs_f64(),
    };
    history::append(&stack.docker, &stack.nginx(), entry).await?;
    let steps: serde_json::Map<String, serde_json::Value> = stack
        .events
        .durations
        .iter()
        .map(|(step, took)| {
            (
                step.to_string(),
                json!((took.as_secs_f64() * 1000.0).round()),
            )
        })
        .collect();
    stack.events.emit(json!({
        "event": action, "ok": true, "from": from, "to": to, "image": image,
        "seconds": started.elapsed().as_secs_f64(), "steps_ms": steps, "continuity": continuity,
    }));
    if !stack.events.is_json() {
        println!(
            "{action}: {} -> {to} in {:.1} s",
            from.as_deref().unwrap_or("none"),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `wsctl switch --color C`: checks C's health (unless `force`), switches,
/// verifies. The other colour keeps running.
pub async fn switch(stack: &mut Stack, color: String, force: bool) -> anyhow::Result<()> {
    if !COLORS.contains(&color.as_str()) {
        return Err(
            DeployError::Usage(format!("--color must be blue or green, not '{color}'")).into(),
        );
    }
    let started = Instant::now();
    stack
        .locked(&format!("switch {color}"), async move |stack| {
            let live = stack.live_color().await?;
            let name = stack.config.app(&color);
            stack.events.begin("health", &name);
            let info = docker::inspect(&stack.docker, &name).await?;
            let healthy = info
                .as_ref()
                .is_some_and(|info| info.running && info.health == "healthy");
            if !healthy && !force {
                let why = info.map_or(format!("{name} does not exist"), |info| {
                    format!(
                        "{name} is {} / {} (use --force to switch anyway)",
                        info.state, info.health
                    )
                });
                stack.events.fail(&why);
                return Err(DeployError::Health(why).into());
            }
            stack.events.ok(if healthy {
                "healthy"
            } else {
                "not healthy, forced"
            });
            let image = info_image(stack, &name).await;
            cut_over(
                stack,
                "switch",
                live,
                &color,
                &image,
                started,
                AfterSwitch::KeepOld,
                OnFailure::Keep,
            )
            .await
        })
        .await
}

async fn info_image(stack: &Stack, name: &str) -> String {
    docker::inspect(&stack.docker, name)
        .await
        .ok()
        .flatten()
        .map(|info| info.image)
        .unwrap_or_default()
}

/// `wsctl rollback`: back to the colour that was live before, from the
/// history: its kept container starts (or is recreated from its recorded
/// image), then health, smoke, switch and drain as in a deploy.
pub async fn rollback(stack: &mut Stack) -> anyhow::Result<()> {
    let started = Instant::now();
    stack
        .locked("rollback", async move |stack| {
            let nginx = stack.nginx();
            let entries = history::read(&stack.docker, &nginx).await?;
            let live = stack.live_color().await?;
            stack.events.begin("preflight", "history");
            let Some(previous) = entries.last().and_then(|entry| entry.from.clone()) else {
                let error =
                    DeployError::Usage("the history has no previous colour to roll back to".into());
                stack.events.fail(&error.to_string());
                return Err(error.into());
            };
            if live.as_deref() == Some(previous.as_str()) {
                let error = DeployError::Usage(format!("{previous} is already live"));
                stack.events.fail(&error.to_string());
                return Err(error.into());
            }
            let name = stack.config.app(&previous);
            let image = entries
                .iter()
                .rev()
                .find(|entry| entry.to == previous)
                .map(|entry| entry.image.clone())
                .unwrap_or_else(|| stack.config.images.app.clone());
            stack.events.ok(&format!("back to {previous} ({image})"));
            if docker::inspect(&stack.docker, &name).await?.is_some() {
                stack
                    .events
                    .begin("start", &format!("{name} (kept container)"));
                docker::start(&stack.docker, &name).await?;
                stack.events.ok(&name);
            } else {
                start_colour(stack, &previous, &image).await?;
            }
            wait_healthy(stack, &previous, false).await?;
            smoke(stack, &previous, false).await?;
            cut_over(
                stack,
                "rollback",
                live,
                &previous,
                &image,
                started,
                AfterSwitch::Drain,
                OnFailure::Keep,
            )
            .await
        })
        .await
}

/// `wsctl status`: the live colour (from Nginx's upstream), each colour's
/// container, and the last deploys.
pub async fn status(stack: &Stack) -> anyhow::Result<serde_json::Value> {
    let live = stack.live_color().await?;
    let mut colours = serde_json::Map::new();
    for color in COLORS {
        let name = stack.config.app(color);
        let info: Option<ContainerInfo> = docker::inspect(&stack.docker, &name).await?;
        let value = match info {
            None => json!({"container": name, "state": "absent"}),
            Some(info) => {
                let connections = if info.running {
                    connections(stack, &name).await
                } else {
                    None
                };
                let uptime = info
                    .started_at
                    .as_deref()
                    .filter(|_| info.running)
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .map(|at| (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds());
                let health = if info.running {
                    info.health.as_str()
                } else {
                    "-"
                };
                json!({
                    "container": name, "state": info.state, "health": health, "image": info.image,
                    "version": info.labels.get("org.opencontainers.image.version"),
                    "uptime_seconds": uptime, "connections": connections,
                })
            }
        };
        colours.insert(color.to_string(), value);
    }
    let history = if docker::inspect(&stack.docker, &stack.nginx())
        .await?
        .is_some()
    {
        history::read(&stack.docker, &stack.nginx()).await?
    } else {
        Vec::new()
    };
    let recent: Vec<_> = history.iter().rev().take(5).collect();
    Ok(json!({"live": live, "colors": colours, "history": recent}))
}
