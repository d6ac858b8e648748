//! A colour on Docker Swarm: one service (`{prefix}app_blue`) whose tasks
//! the cluster places, with `endpoint_mode: dnsrr` on the stack's
//! attachable overlay (no routing mesh: IPVS drops idle flows after 900 s).
//!
//! What `containers.rs` does with containers, done with the service:
//! - a colour's replicas are its running tasks' overlay addresses, which
//!   Nginx's upstream lists and the checker (`checks.rs`) checks;
//! - a deploy creates the service fresh; the drain scales it to 0 (Swarm
//!   sends each task SIGTERM and SIGKILL after the stop grace period,
//!   `drain_timeout`, so the bundled service paces its goodbyes) and keeps
//!   its spec for a rollback, which scales it up again;
//! - the image's HEALTHCHECK keeps a task `starting` until it is healthy
//!   and has Swarm replace one that turns unhealthy.
//!
//! Addresses come from the manager's verbose `network inspect` (bollard's
//! `Task` carries no network attachments), which lists each service's tasks
//! with their `EndpointIP`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, NetworkAttachmentConfig, ResourcesUlimits, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectNetworkOptionsBuilder, ListNodesOptions, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use futures_util::future::join_all;

use crate::deploy::checks;
use crate::deploy::config::{Color, StackConfig};
use crate::deploy::containers::{self, Drained};
use crate::deploy::docker::status_of;
use crate::deploy::drain_progress::ConnectionsLeft;
use crate::deploy::wait::{Check, WaitError, poll_until};
use crate::deploy::{DeployError, Stack, registry};
use crate::shared::secrets::say;

/// The replica count a colour was deployed with, kept on the service so
/// that a rollback scales a drained colour back to it.
const REPLICAS: &str = "wsctl.replicas";
/// How often readiness and the drain look at the tasks again.
const LOOK_INTERVAL: Duration = Duration::from_millis(250);

/// One task of a colour as `status` and the checks see it.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub id: String,
    /// `app_blue.1`.
    pub name: String,
    pub slot: i64,
    /// The node's hostname (its id when unknown).
    pub node: String,
    /// The node is `ready` (else `down`, `unknown`, ...).
    pub node_ready: bool,
    /// The task's state: `running`, `starting`, `shutdown`, `failed`, ...
    pub state: String,
    /// Running, on a node that is up.
    pub running: bool,
    /// Swarm wants it running.
    pub wanted: bool,
    /// Its address on the overlay, once the manager knows it.
    pub address: Option<String>,
    pub error: String,
    pub exit_code: Option<i64>,
    pub image: String,
    /// When it entered its state (RFC 3339).
    pub since: Option<String>,
}

/// The colour's service name.
pub fn service(config: &StackConfig, color: Color) -> String {
    config.app(color)
}

/// The colour's service, `None` when it does not exist.
async fn inspect(stack: &Stack, color: Color) -> anyhow::Result<Option<bollard::models::Service>> {
    let name = service(&stack.config, color);
    match stack.docker.inspect_service(&name, None).await {
        Ok(found) => Ok(Some(found)),
        Err(error) if status_of(&error) == Some(404) => Ok(None),
        Err(error) => Err(error).with_context(|| format!("inspecting the service {name}")),
    }
}

/// The colour's tasks (current and past ones Swarm still lists), by slot.
pub async fn tasks(stack: &Stack, color: Color) -> anyhow::Result<Vec<TaskView>> {
    let name = service(&stack.config, color);
    let filters = HashMap::from([("service", vec![name.clone()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let listed = match stack.docker.list_tasks(Some(options)).await {
        Ok(listed) => listed,
        Err(error) if status_of(&error) == Some(404) => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("listing the tasks of {name}")),
    };
    let nodes = nodes(stack).await?;
    let addresses = task_addresses(stack).await?;
    let mut views: Vec<TaskView> = listed
        .into_iter()
        .map(|task| {
            let id = task.id.unwrap_or_default();
            let status = task.status.unwrap_or_default();
            let state = status.state.unwrap_or(TaskState::NEW);
            let node_id = task.node_id.unwrap_or_default();
            let (node, node_ready) = nodes
                .get(&node_id)
                .cloned()
                .unwrap_or((node_id.clone(), false));
            let slot = task.slot.unwrap_or(0);
            TaskView {
                name: format!("{name}.{slot}"),
                slot,
                node,
                node_ready,
                // What a down node last reported is not running now: its
                // tasks are lost (Swarm starts them again elsewhere).
                running: state == TaskState::RUNNING && node_ready,
                wanted: task.desired_state == Some(TaskState::RUNNING),
                state: state.to_string(),
                address: addresses.get(&id).cloned(),
                error: status.err.unwrap_or_default(),
                exit_code: status
                    .container_status
                    .and_then(|container| container.exit_code),
                image: task
                    .spec
                    .and_then(|spec| spec.container_spec)
                    .and_then(|container| container.image)
                    .map(|image| without_digest(&image))
                    .unwrap_or_default(),
                since: status.timestamp,
                id,
            }
        })
        .collect();
    views.sort_by_key(|task| (task.slot, !task.wanted));
    Ok(views)
}

/// Every node by id: its hostname and whether it is ready.
pub async fn nodes(stack: &Stack) -> anyhow::Result<HashMap<String, (String, bool)>> {
    let listed = stack
        .docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .context("listing the swarm's nodes")?;
    Ok(listed
        .into_iter()
        .filter_map(|node| {
            let id = node.id?;
            let hostname = node
                .description
                .and_then(|description| description.hostname)
                .unwrap_or_else(|| id.clone());
            let ready = node
                .status
                .and_then(|status| status.state)
                .is_some_and(|state| state.to_string() == "ready");
            Some((id, (hostname, ready)))
        })
        .collect())
}

/// Task id to overlay address, from the manager's verbose view of the
/// stack's network.
async fn task_addresses(stack: &Stack) -> anyhow::Result<HashMap<String, String>> {
    let network = stack.config.network_name();
    let options = InspectNetworkOptionsBuilder::default()
        .verbose(true)
        .build();
    let inspected = match stack.docker.inspect_network(&network, Some(options)).await {
        Ok(inspected) => inspected,
        Err(error) if status_of(&error) == Some(404) => return Ok(HashMap::new()),
        Err(error) => return Err(error).with_context(|| format!("inspecting network {network}")),
    };
    let mut found = HashMap::new();
    for (_, service) in inspected.services.unwrap_or_default() {
        for task in service["Tasks"].as_array().into_iter().flatten() {
            // `app_blue.1.<task id>`
            let (Some(name), Some(ip)) = (task["Name"].as_str(), task["EndpointIP"].as_str())
            else {
                continue;
            };
            if let Some(id) = name.rsplit('.').next()
                && !ip.is_empty()
            {
                found.insert(id.to_string(), ip.to_string());
            }
        }
    }
    Ok(found)
}

/// `image@sha256:...` as the tag it was deployed by.
fn without_digest(image: &str) -> String {
    image.split('@').next().unwrap_or(image).to_string()
}

/// The overlay addresses of the colour's running tasks, by slot: what Nginx
/// routes to and what the checks reach.
pub async fn addresses(stack: &Stack, color: Color) -> anyhow::Result<Vec<String>> {
    Ok(tasks(stack, color)
        .await?
        .into_iter()
        .filter(|task| task.running && task.wanted)
        .filter_map(|task| task.address)
        .collect())
}

/// The replica count the colour runs with when up.
async fn wanted_replicas(stack: &Stack, color: Color) -> anyhow::Result<usize> {
    let found = inspect(stack, color).await?;
    Ok(found
        .and_then(|service| service.spec?.labels?.get(REPLICAS)?.parse().ok())
        .unwrap_or(stack.config.replicas))
}

/// The image the colour's service runs (empty: no service).
pub async fn image_of(stack: &Stack, color: Color) -> anyhow::Result<String> {
    Ok(inspect(stack, color)
        .await?
        .and_then(|service| service.spec?.task_template?.container_spec?.image)
        .map(|image| without_digest(&image))
        .unwrap_or_default())
}

/// The service exists (its spec kept, maybe at 0 tasks); a task runs.
pub async fn presence(stack: &Stack, color: Color) -> anyhow::Result<(Vec<String>, bool, bool)> {
    let exists = inspect(stack, color).await?.is_some();
    let tasks = tasks(stack, color).await?;
    let running = tasks.iter().any(|task| task.running);
    let mut names: Vec<String> = tasks
        .iter()
        .filter(|task| task.wanted)
        .map(|task| format!("{} on {}", task.name, task.node))
        .collect();
    if names.is_empty() {
        names.push(service(&stack.config, color));
    }
    Ok((names, exists, running))
}

/// The environment variable that carries a bundled service's move token:
/// the checker orders a task to move its clients (`reloads.rs`) over the
/// overlay with it, since no exec reaches a task on another node.
pub const MOVE_TOKEN: &str = "MOVE_TOKEN";

/// A fresh move token: 244 random bits (two v4 UUIDs).
fn new_move_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The colour's move token, from its service's spec (`None`: no service,
/// or an app wsctl gave none).
pub async fn move_token(stack: &Stack, color: Color) -> anyhow::Result<Option<String>> {
    let env = inspect(stack, color)
        .await?
        .and_then(|service| service.spec?.task_template?.container_spec?.env)
        .unwrap_or_default();
    let prefix = format!("{MOVE_TOKEN}=");
    Ok(env
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(str::to_string))
}

/// The service spec of `color` running `image` with `count` tasks.
fn spec(
    config: &StackConfig,
    color: Color,
    image: &str,
    count: usize,
    app_env: &BTreeMap<String, String>,
) -> ServiceSpec {
    let resources = &config.resources;
    let network = config.network_name();
    let mut env = containers::replica_env(config, color, app_env);
    // The bundled service takes orders to move its clients with it
    // (unless app_env already names one).
    if !config.is_external() && !app_env.contains_key(MOVE_TOKEN) {
        env.push(format!("{MOVE_TOKEN}={}", new_move_token()));
    }
    ServiceSpec {
        name: Some(service(config, color)),
        labels: Some(HashMap::from([
            ("wsctl.color".to_string(), color.to_string()),
            ("wsctl.stack".to_string(), config.name("wsctl")),
            (REPLICAS.to_string(), count.to_string()),
        ])),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                env: Some(env),
                labels: Some(HashMap::from([
                    ("wsctl.color".to_string(), color.to_string()),
                    ("wsctl.image".to_string(), image.to_string()),
                ])),
                stop_signal: Some(config.stop_signal().to_string()),
                stop_grace_period: Some(config.drain_timeout().as_nanos() as i64),
                init: Some(true),
                ulimits: Some(vec![ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(resources.open_files as i64),
                    hard: Some(resources.open_files as i64),
                }]),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(bollard::models::Limit {
                    nano_cpus: Some((resources.cpus * 1e9) as i64),
                    memory_bytes: Some(resources.memory_bytes() as i64),
                    pids: None,
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(Duration::from_millis(500).as_nanos() as i64),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(config.swarm.constraints.clone()),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(network),
                // Prometheus's DNS discovery finds both colours' tasks
                // under `app_blue` whatever the prefix, as with containers.
                aliases: Some(vec![format!("app_{color}")]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(count as i64),
            }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: None,
        }),
        ..Default::default()
    }
}

/// Replaces the colour's service with a fresh one of `count` tasks of
/// `image` with `app_env` (resolved by `containers::start_fresh`; nobody
/// routes to the colour: the caller made sure).
pub async fn start_fresh(
    stack: &Stack,
    color: Color,
    image: &str,
    count: usize,
    app_env: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    retire(stack, color, true).await?;
    let credentials = registry::credentials_for(image, &stack.config.registry)?;
    let spec = spec(&stack.config, color, image, count, app_env);
    stack
        .docker
        .create_service(spec, credentials)
        .await
        .with_context(|| format!("creating the service {}", service(&stack.config, color)))?;
    Ok(())
}

/// Scales the colour back to the replicas it was deployed with.
pub async fn start_kept(stack: &Stack, color: Color) -> anyhow::Result<Vec<String>> {
    let count = wanted_replicas(stack, color).await?;
    scale(stack, color, count).await?;
    Ok(vec![format!(
        "{} ({count} tasks)",
        service(&stack.config, color)
    )])
}

/// Sets the colour's task count (Swarm stops the surplus with their stop
/// signal and grace period).
async fn scale(stack: &Stack, color: Color, count: usize) -> anyhow::Result<()> {
    let name = service(&stack.config, color);
    // Another writer between the read and the update is an out-of-sequence
    // error: read again.
    for _ in 0..5 {
        let Some(found) = inspect(stack, color).await? else {
            anyhow::bail!("the service {name} does not exist");
        };
        let version = found.version.and_then(|version| version.index).unwrap_or(0);
        let mut spec = found.spec.unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(count as i64),
            }),
            ..Default::default()
        });
        let options = UpdateServiceOptionsBuilder::default()
            .version(version as i32)
            .build();
        match stack
            .docker
            .update_service(&name, spec, options, None)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if format!("{error}").contains("out of sequence") => continue,
            Err(error) => return Err(error).with_context(|| format!("scaling {name} to {count}")),
        }
    }
    anyhow::bail!("scaling {name} to {count}: the service kept changing")
}

/// Waits until no task of the colour runs (bounded by `limit`).
async fn stopped(stack: &Stack, color: Color, limit: Duration) -> anyhow::Result<()> {
    let done = poll_until(limit, LOOK_INTERVAL, || async {
        match tasks(stack, color).await {
            Ok(tasks) => match tasks.iter().filter(|task| task.running).count() {
                0 => Check::Ready(()),
                left => Check::Pending(format!("{left} tasks still running")),
            },
            Err(error) => Check::Pending(format!("{error:#}")),
        }
    })
    .await;
    match done {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(why) | WaitError::TimedOut(why)) => Err(DeployError::Drain(format!(
            "{} did not stop: {why}",
            service(&stack.config, color)
        ))
        .into()),
    }
}

/// Stops the colour (its clients get goodbye), removing its service when
/// asked.
pub async fn retire(stack: &Stack, color: Color, remove: bool) -> anyhow::Result<()> {
    if inspect(stack, color).await?.is_none() {
        return Ok(());
    }
    scale(stack, color, 0).await?;
    stopped(
        stack,
        color,
        stack.config.drain_timeout() + Duration::from_secs(15),
    )
    .await?;
    if remove {
        let name = service(&stack.config, color);
        match stack.docker.delete_service(&name).await {
            Ok(()) => {}
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("removing the service {name}"));
            }
        }
    }
    Ok(())
}

/// One look at readiness: every wanted task runs, has an address, and its
/// health path answers (from the checker). A task that failed since the
/// wait began fails it with Swarm's reason.
async fn ready_check(
    stack: &Stack,
    color: Color,
    wanted: usize,
    failed_before: usize,
) -> Check<()> {
    let tasks = match tasks(stack, color).await {
        Ok(tasks) => tasks,
        Err(error) => return Check::Pending(format!("{error:#}")),
    };
    let failed: Vec<&TaskView> = tasks
        .iter()
        .filter(|task| matches!(task.state.as_str(), "failed" | "rejected"))
        .collect();
    if failed.len() > failed_before
        && let Some(task) = failed.last()
    {
        return Check::Failed(format!(
            "task {} on {} {}: {}",
            task.name, task.node, task.state, task.error
        ));
    }
    let running: Vec<&TaskView> = tasks
        .iter()
        .filter(|task| task.running && task.wanted)
        .collect();
    if running.len() < wanted {
        return Check::Pending(format!("{} of {wanted} tasks running", running.len()));
    }
    let addresses: Vec<&str> = running
        .iter()
        .filter_map(|task| task.address.as_deref())
        .collect();
    if addresses.len() < running.len() {
        return Check::Pending("the manager does not know every task's address yet".into());
    }
    let checks = join_all(
        addresses
            .iter()
            .map(|address| checks::ready(&stack.docker, &stack.config, address)),
    )
    .await;
    for (address, check) in addresses.iter().zip(checks) {
        match check {
            Check::Ready(()) => {}
            Check::Pending(why) => return Check::Pending(format!("{address}: {why}")),
            Check::Failed(why) => return Check::Failed(format!("{address}: {why}")),
        }
    }
    Check::Ready(())
}

async fn failed_count(stack: &Stack, color: Color) -> usize {
    tasks(stack, color)
        .await
        .map(|tasks| {
            tasks
                .iter()
                .filter(|task| matches!(task.state.as_str(), "failed" | "rejected"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the colour's tasks are all ready (up to `ready_timeout`).
pub async fn wait_ready(stack: &Stack, color: Color) -> Result<(), DeployError> {
    let wanted = wanted_replicas(stack, color)
        .await
        .map_err(|error| DeployError::Health(format!("{error:#}")))?;
    let failed_before = failed_count(stack, color).await;
    let timeout = stack.config.ready_timeout();
    let ready = poll_until(timeout, LOOK_INTERVAL, || {
        ready_check(stack, color, wanted, failed_before)
    })
    .await;
    match ready {
        Ok(()) => Ok(()),
        Err(WaitError::Failed(why)) => Err(DeployError::Health(why)),
        Err(WaitError::TimedOut(why)) => Err(DeployError::Health(format!(
            "{} not ready after {} s ({why})",
            service(&stack.config, color),
            timeout.as_secs()
        ))),
    }
}

/// Every task ready right now.
pub async fn ready_now(stack: &Stack, color: Color) -> bool {
    let Ok(wanted) = wanted_replicas(stack, color).await else {
        return false;
    };
    matches!(
        ready_check(stack, color, wanted, usize::MAX).await,
        Check::Ready(())
    )
}

/// Drains the colour: scales it to 0, so that Swarm sends each task its stop
/// signal and kills it after `drain_timeout`, showing the connections left;
/// the spec stays for a rollback.
pub async fn drain(stack: &mut Stack, color: Color) -> anyhow::Result<Drained> {
    let before = tasks(stack, color).await?;
    let draining: Vec<TaskView> = before.into_iter().filter(|task| task.running).collect();
    if draining.is_empty() {
        return Ok(Drained::AlreadyStopped(format!(
            "{} has no running task",
            service(&stack.config, color)
        )));
    }
    scale(stack, color, 0).await?;
    let grace = stack.config.drain_timeout();
    let label = format!(
        "{} ({} tasks)",
        service(&stack.config, color),
        draining.len()
    );
    let limit = tokio::time::Instant::now() + grace + Duration::from_secs(15);
    let mut left = ConnectionsLeft::default();
    loop {
        let now = tasks(stack, color).await?;
        let running: Vec<&TaskView> = now.iter().filter(|task| task.running).collect();
        if running.is_empty() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < limit,
            DeployError::Drain(format!("{label}: {} tasks still running", running.len()))
        );
        if stack.events.shows_progress() {
            let addresses: Vec<String> = running
                .iter()
                .filter_map(|task| task.address.clone())
                .collect();
            let (docker, config) = (&stack.docker, &stack.config);
            let counted = left
                .look(&addresses, |address| async move {
                    checks::service_status(docker, config, &address)
                        .await
                        .and_then(|status| status["connections_active"].as_i64())
                })
                .await;
            if let Some(counted) = counted {
                stack
                    .events
                    .progress(&format!("{label}: {counted} connections left"));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = tasks(stack, color).await?;
    for task in after
        .iter()
        .filter(|task| draining.iter().any(|was| was.id == task.id))
    {
        if task.exit_code == Some(137) {
            return Err(DeployError::Drain(format!(
                "{} on {} did not exit within {} s of its stop signal and was killed",
                task.name,
                task.node,
                grace.as_secs()
            ))
            .into());
        }
    }
    Ok(Drained::Stopped)
}

/// Says what Swarm reports of the colour's tasks, after a failed step
/// (their logs stay on their nodes: `docker service logs`).
pub async fn report_tasks(stack: &Stack, color: Color) {
    let Ok(tasks) = tasks(stack, color).await else {
        return;
    };
    let lines: Vec<String> = tasks
        .iter()
        .take(10)
        .map(|task| {
            format!(
                "{} on {}: {}{}",
                task.name,
                task.node,
                task.state,
                if task.error.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", task.error)
                }
            )
        })
        .collect();
    if stack.events.is_json() {
        stack.events.emit(serde_json::json!({
            "event": "tasks",
            "service": service(&stack.config, color),
            "lines": lines,
        }));
    } else if !lines.is_empty() {
        say!(
            "tasks of {} (their logs: docker service logs {}):\n{}",
            service(&stack.config, color),
            service(&stack.config, color),
            lines.join("\n")
        );
    }
}

/// The engine wsctl talks to is a swarm manager; else one line saying how
/// to make it one.
pub async fn ensure_manager(docker: &bollard::Docker) -> anyhow::Result<()> {
    let info = docker
        .info()
        .await
        .context("asking the engine about its swarm")?;
    let swarm = info.swarm.unwrap_or_default();
    let manager = swarm.control_available.unwrap_or(false);
    if !manager {
        let state = swarm
            .local_node_state
            .map(|state| state.to_string())
            .unwrap_or_else(|| "inactive".into());
        return Err(DeployError::Usage(format!(
            "platform: swarm, but this engine is not a swarm manager (swarm: {state}); \
             run `docker swarm init` there, or point swarm.manager (or DOCKER_HOST) at a manager"
        ))
        .into());
    }
    Ok(())
}
