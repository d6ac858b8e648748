//! Blue-green deploys through the Docker API, as explicit plans that
//! survive interruption.
//!
//! A reader finds each part in one place:
//! - `plan.rs`: the states, the plan of each command, the step runner and
//!   the undo that each state owns.
//! - `containers.rs`: the Docker-side steps (start, readiness, smoke, drain).
//! - `nginx.rs`: what Nginx serves, and the switch itself.
//! - `journal.rs`: every run recorded in the engine, state by state.
//! - `lock.rs`: one run at a time per stack, renewed while it lives.
//! - `recover.rs`: bringing a stack left by a killed run to a consistent state.
//! - `status.rs`: `wsctl status`. `error.rs`: the exit codes.
//! - `events.rs`: progress lines or `--json`; `probe.rs`: the cutover probe;
//!   `upstream.rs`: the rendered upstream; `wait.rs`: the one polling loop.
//! - `analysis.rs`: a canary's (and `--watch`'s) metric analysis.
//! - `proxy.rs`: the Nginx container, drift from wsctl.yaml, `deploy --proxy`.
//! - `fleet.rs`: a stack on several Docker hosts, each running the same
//!   plan; `gate.rs`: where those runs wait for each other (before and
//!   after their switch).
//!
//! This file holds the commands: each takes the lock, brings the stack to
//! a consistent state (bootstrap, recover an unfinished run), builds its
//! plan and hands it to the runner. Nothing here assumes the host can reach
//! a container's address: checks go through the engine or the published
//! Nginx port.

mod analysis;
mod containers;
mod error;
mod events;
pub mod fleet;
mod gate;
mod journal;
mod lock;
mod nginx;
mod plan;
mod probe;
pub mod proxy;
mod recover;
mod state;
mod status;
mod upstream;
mod wait;

use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;

pub use containers::existing_replicas;
pub use error::DeployError;
pub use events::Events;
pub use journal::Journal;
pub use lock::{force_unlock, holder as lock_holder, release_manual as release_manual_lock};
pub use recover::recover;
pub use status::status;
pub use upstream::DEFAULT_TEMPLATE;

use crate::docker;
use crate::signal::Interrupt;
use crate::stack::{Color, StackConfig};
use plan::Plan;

/// What the commands share: the engine, the stack and the reporter.
pub struct Stack {
    pub docker: Docker,
    pub config: StackConfig,
    pub events: Events,
    /// The upstream template (the stack's own, or the shipped one).
    pub template: String,
    pub lock_wait: Duration,
    pub journal: Journal,
    /// The first SIGINT/SIGTERM, checked by the runner at safe points.
    pub interrupt: Interrupt,
    /// Set when this stack is one host of several: the runner waits for
    /// the fleet before and after its switch.
    pub gate: Option<gate::Gate>,
    /// The fleet holds the lock on every host for this stack's commands.
    pub lock_held: bool,
    /// The last run this stack executed, as journalled.
    pub last_run: Option<journal::Run>,
    /// The last analysis sample of the running command (for its record).
    pub last_analysis: Option<serde_json::Value>,
}

impl Stack {
    /// Runs `body` under the stack's lock (renewed while it runs), after
    /// making the stack consistent: network, Redis and Nginx exist, and a
    /// run that died unfinished is recovered first.
    async fn locked<T>(
        &mut self,
        command: &str,
        body: impl AsyncFnOnce(&mut Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.locked_with(command, true, body).await
    }

    /// `locked`, optionally without recovering unfinished runs first
    /// (`wsctl recover` does that itself).
    async fn locked_with<T>(
        &mut self,
        command: &str,
        recover_first: bool,
        body: impl AsyncFnOnce(&mut Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let lock = match self.lock_held {
            true => None,
            false => {
                let token = uuid::Uuid::new_v4().to_string();
                let request = lock::Request {
                    command,
                    token: &token,
                    message: "",
                    ttl: self.config.lock_ttl,
                };
                Some(lock::acquire(&self.docker, &self.config, request, self.lock_wait).await?)
            }
        };
        let result = async {
            bootstrap(self).await?;
            if recover_first {
                recover::unfinished_runs(self).await?;
            }
            body(self).await
        }
        .await;
        if let Some(lock) = lock {
            let released = lock.release(&self.docker).await;
            let value = result?;
            released?;
            return Ok(value);
        }
        result
    }

    /// What Nginx serves, refusing when its loaded configuration and its
    /// upstream file disagree (only `recover` repairs that). A refusal
    /// ends the preflight step.
    async fn serving(&mut self) -> anyhow::Result<nginx::Serving> {
        let checked = match nginx::serving(self).await {
            Ok(serving) => match serving.disagreement() {
                Some(disagreement) => Err(DeployError::NeedsRecover(disagreement).into()),
                None => Ok(serving),
            },
            Err(error) => Err(error),
        };
        match checked {
            Ok(serving) => Ok(serving),
            Err(error) => preflight_failed(self, error),
        }
    }

    /// Ends the preflight step: refuses when a signal came during it
    /// (nothing has changed yet).
    fn preflight_done(&mut self, detail: &str) -> anyhow::Result<()> {
        if let Some(signal) = self.interrupt.received() {
            let error = DeployError::Interrupted {
                signal,
                outcome: "nothing was changed".into(),
            };
            self.events.fail(&error.to_string());
            return Err(error.into());
        }
        self.events.ok(detail);
        Ok(())
    }
}

/// Reports a failed preflight step and passes the error on.
fn preflight_failed<T>(stack: &mut Stack, error: anyhow::Error) -> anyhow::Result<T> {
    stack.events.fail(&format!("{error:#}"));
    Err(error)
}

/// What `wsctl deploy` was asked for.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    /// Colour to deploy (default: the standby).
    pub color: Option<Color>,
    /// Image (default: images.app).
    pub image: Option<String>,
    /// Containers (default: replicas from wsctl.yaml).
    pub replicas: Option<usize>,
    /// `--env KEY=VALUE`: for this colour only, on top of app_env.
    pub env: std::collections::BTreeMap<String, String>,
    /// `--canary-steps`: weighted steps under analysis before the switch.
    pub canary: Option<plan::Canary>,
    /// `--watch`: analysis after the switch, the old colour kept running.
    pub watch: Option<Duration>,
    /// `--no-switch`: stop before the switch (`wsctl promote` goes on).
    pub no_switch: bool,
}

pub use plan::Canary;

/// `wsctl deploy`: the standby colour (or `color`) with `image`.
pub async fn deploy(stack: &mut Stack, request: DeployRequest) -> anyhow::Result<()> {
    let DeployRequest {
        color,
        image,
        replicas,
        env,
        canary,
        watch,
        no_switch,
    } = request;
    let started = Instant::now();
    let image = image.unwrap_or_else(|| stack.config.images.app.clone());
    let replicas = replicas.unwrap_or(stack.config.replicas);
    stack
        .events
        .begin("preflight", "engine, images, lock, network, redis, nginx");
    let mut images = vec![image.clone(), stack.config.images.nginx.clone()];
    if stack.config.owns_redis() {
        images.push(stack.config.images.redis.clone());
    }
    for name in &images {
        if let Err(error) = docker::ensure_image(&stack.docker, name, &stack.config.registry).await
        {
            return preflight_failed(stack, error);
        }
    }
    let command = format!(
        "deploy {}",
        color.map_or(String::new(), |color| color.to_string())
    );
    let locked = stack
        .locked(&command, async move |stack| {
            let serving = stack.serving().await?;
            let live = serving.live();
            let standby = color.unwrap_or(live.map_or(Color::Blue, Color::other));
            if live == Some(standby) {
                let error =
                    DeployError::Usage(format!("{standby} is live; deploy to the standby colour"));
                return preflight_failed(stack, error.into());
            }
            if (canary.is_some() || watch.is_some()) && live.is_none() {
                let error = DeployError::Usage(
                    "--canary and --watch need a live colour; deploy without them first".into(),
                );
                return preflight_failed(stack, error.into());
            }
            stack.preflight_done(&format!(
                "live: {}, standby: {standby}",
                live.map_or("none".to_string(), |c| c.to_string())
            ))?;
            if let Some(warning) = nginx::undersized(stack, replicas).await {
                stack.events.warn(&warning);
            }
            let plan = Plan {
                extra_env: env,
                canary,
                watch,
                pause: no_switch,
                ..Plan::deploy(live, standby, image, serving.upstream, replicas)
            };
            plan::execute(stack, plan, started).await
        })
        .await;
    fail_preflight_if_open(stack, locked)
}

/// A lock or bootstrap error ends the still-open preflight step.
fn fail_preflight_if_open<T>(stack: &mut Stack, result: anyhow::Result<T>) -> anyhow::Result<T> {
    if let Err(error) = &result
        && stack.events.step_open()
    {
        stack.events.fail(&format!("{error:#}"));
    }
    result
}

/// `wsctl switch --color C`: C must be running and ready (unless `force`);
/// switches and verifies. The other colour keeps running.
pub async fn switch(stack: &mut Stack, color: Color, force: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    stack.events.begin("preflight", "lock, live colour");
    let locked = stack
        .locked(&format!("switch {color}"), async move |stack| {
            let serving = stack.serving().await?;
            let live = serving.live();
            let image = containers::image_of(stack, color).await?;
            stack.preflight_done(&format!(
                "live: {}",
                live.map_or("none".to_string(), |c| c.to_string())
            ))?;
            let plan = Plan::switch(live, color, image, force, serving.upstream);
            plan::execute(stack, plan, started).await
        })
        .await;
    fail_preflight_if_open(stack, locked)
}

/// `wsctl rollback`: back to the colour the last traffic move came from,
/// as the journal says: its kept container starts (or is recreated from its
/// recorded image), then readiness, switch and drain as in a deploy.
pub async fn rollback(stack: &mut Stack) -> anyhow::Result<()> {
    let started = Instant::now();
    stack
        .events
        .begin("preflight", "lock, journal, live colour");
    let locked = stack
        .locked("rollback", async move |stack| {
            let serving = stack.serving().await?;
            let live = serving.live();
            let runs = stack.journal.runs(&stack.docker).await?;
            let Some((previous, image)) = journal::rollback_target(&runs, live) else {
                let error =
                    DeployError::Usage("the journal has no previous colour to roll back to".into());
                return preflight_failed(stack, error.into());
            };
            if live == Some(previous) {
                let error = DeployError::Usage(format!("{previous} is already live"));
                return preflight_failed(stack, error.into());
            }
            let kept_names = containers::replicas(stack, previous).await?;
            let kept = docker::inspect(&stack.docker, &kept_names[0])
                .await?
                .is_some();
            let image = if image.is_empty() {
                stack.config.images.app.clone()
            } else {
                image
            };
            stack.preflight_done(&format!("back to {previous} ({image})"))?;
            let replicas = stack.config.replicas;
            let plan = Plan::rollback(live, previous, image, kept, serving.upstream, replicas);
            plan::execute(stack, plan, started).await
        })
        .await;
    fail_preflight_if_open(stack, locked)
}

/// `wsctl promote`: traffic to the colour a `deploy --no-switch` left
/// running and checked; then the old colour drains, as in a deploy.
pub async fn promote(stack: &mut Stack) -> anyhow::Result<()> {
    let started = Instant::now();
    stack
        .events
        .begin("preflight", "lock, journal, paused colour");
    let locked = stack
        .locked("promote", async move |stack| {
            let serving = stack.serving().await?;
            let live = serving.live();
            let runs = stack.journal.runs(&stack.docker).await?;
            let Some(paused) = journal::paused(&runs).cloned() else {
                let error = DeployError::Usage(
                    "no deploy is paused (`wsctl deploy --no-switch` pauses one)".into(),
                );
                return preflight_failed(stack, error.into());
            };
            if live == Some(paused.to) {
                let error = DeployError::Usage(format!("{} is already live", paused.to));
                return preflight_failed(stack, error.into());
            }
            stack.preflight_done(&format!(
                "{} ({}) paused by {}",
                paused.to, paused.image, paused.id
            ))?;
            let plan = Plan {
                action: plan::Action::Promote,
                drain: true,
                ..Plan::switch(live, paused.to, paused.image, false, serving.upstream)
            };
            plan::execute(stack, plan, started).await
        })
        .await;
    fail_preflight_if_open(stack, locked)
}

/// `wsctl abort`: a deploy running now (a canary under analysis) is sent
/// SIGTERM, which undoes it; a deploy paused by `--no-switch` has its
/// colour removed. Traffic stays where it is either way.
pub async fn abort(stack: &mut Stack) -> anyhow::Result<()> {
    if let Some(held) = lock::holder(&stack.docker, &stack.config).await?
        && !held.stale
        && held.ttl > 0
    {
        return interrupt_holder(stack, &held).await;
    }
    let started = Instant::now();
    stack
        .events
        .begin("preflight", "lock, journal, paused colour");
    let locked = stack
        .locked("abort", async move |stack| {
            let serving = stack.serving().await?;
            let live = serving.live();
            let runs = stack.journal.runs(&stack.docker).await?;
            let Some(paused) = journal::paused(&runs).cloned() else {
                let error =
                    DeployError::Usage("nothing to abort: no deploy is running or paused".into());
                return preflight_failed(stack, error.into());
            };
            stack.preflight_done(&format!("{} paused by {}", paused.to, paused.id))?;
            stack.events.begin(
                "undo",
                &format!("stop and remove {}", stack.config.app(paused.to)),
            );
            if let Err(error) = containers::retire(stack, paused.to, true).await {
                stack.events.fail(&format!("{error:#}"));
                return Err(error);
            }
            stack.events.ok("removed");
            let mut run = journal::Run::new(plan::Action::Abort, live, paused.to, &paused.image);
            run.enter(plan::State::Recorded);
            run.outcome = journal::Outcome::Succeeded;
            run.traffic = live;
            run.seconds = started.elapsed().as_secs_f64();
            run.detail = format!("removed {} left paused by {}", paused.to, paused.id);
            stack.journal.write(&stack.docker, &mut run).await?;
            Ok(())
        })
        .await;
    fail_preflight_if_open(stack, locked)
}

/// Sends SIGTERM to the process running a deploy on this machine and waits
/// (up to two minutes) until it lets go of the lock, having undone its run.
async fn interrupt_holder(stack: &mut Stack, held: &lock::Holder) -> anyhow::Result<()> {
    let Some(pid) = held.pid.filter(|_| held.host == lock::local_host()) else {
        return Err(DeployError::Usage(format!(
            "{} runs on {} (pid {}): interrupt it there",
            held.holder,
            held.host,
            held.pid.map_or("?".to_string(), |pid| pid.to_string())
        ))
        .into());
    };
    stack
        .events
        .begin("abort", &format!("SIGTERM to {} (pid {pid})", held.holder));
    let target = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(error) = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM) {
        let error = anyhow::anyhow!("signalling pid {pid}: {error}");
        stack.events.fail(&format!("{error:#}"));
        return Err(error);
    }
    let released = wait::poll_until(
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            match lock::holder(&stack.docker, &stack.config).await {
                Ok(Some(now)) if now.id == held.id => wait::Check::Pending("still running".into()),
                Ok(_) => wait::Check::Ready(()),
                Err(error) => wait::Check::Pending(format!("{error:#}")),
            }
        },
    )
    .await;
    match released {
        Ok(()) => {
            stack.events.ok("the deploy stopped and undid its run");
            Ok(())
        }
        Err(wait::WaitError::Failed(why) | wait::WaitError::TimedOut(why)) => {
            let error = anyhow::anyhow!("the deploy did not stop within 120 s: {why}");
            stack.events.fail(&format!("{error:#}"));
            Err(error)
        }
    }
}

/// `wsctl prune --keep N`: removes the app images this stack's journal
/// names, except the `keep` most recently deployed ones and the images of
/// both colours (the live one, and the one kept for rollback); then the
/// stack's stopped containers that are neither colour's. Returns what was
/// removed and what was kept, with why.
pub async fn prune(stack: &mut Stack, keep: usize) -> anyhow::Result<serde_json::Value> {
    stack.events.begin("preflight", "lock, journal, colours");
    let locked = stack
        .locked("prune", async move |stack| {
            let runs = stack.journal.runs(&stack.docker).await?;
            let mut protected = std::collections::BTreeMap::new();
            for color in Color::ALL {
                let image = containers::image_of(stack, color).await?;
                if !image.is_empty() {
                    protected.insert(image, format!("{color} runs it"));
                }
            }
            // Newest first, each image once.
            let mut seen = Vec::new();
            for run in runs.iter().rev() {
                if !run.image.is_empty() && !seen.contains(&run.image) {
                    seen.push(run.image.clone());
                }
            }
            for image in seen.iter().take(keep) {
                protected
                    .entry(image.clone())
                    .or_insert_with(|| format!("one of the {keep} newest"));
            }
            stack.preflight_done(&format!("{} images in the journal", seen.len()))?;
            stack.events.begin("prune", "images and stopped containers");
            let mut removed = Vec::new();
            let mut kept = Vec::new();
            for image in &seen {
                if let Some(why) = protected.get(image) {
                    kept.push(serde_json::json!({"image": image, "why": why}));
                    continue;
                }
                match docker::remove_image(&stack.docker, image).await {
                    Ok(true) => removed.push(serde_json::json!({"image": image})),
                    Ok(false) => {}
                    Err(error) => {
                        kept.push(serde_json::json!({"image": image, "why": format!("{error:#}")}))
                    }
                }
            }
            let colours: Vec<String> = Color::ALL
                .into_iter()
                .map(|color| stack.config.app(color))
                .collect();
            for name in docker::container_names(&stack.docker, &stack.config.name("app_")).await? {
                let ours = colours
                    .iter()
                    .any(|colour| name.starts_with(colour.as_str()));
                let is_colour = Color::ALL
                    .into_iter()
                    .any(|color| stack.config.replica_index(color, &name).is_some());
                if !ours || is_colour {
                    continue;
                }
                if let Some(info) = docker::inspect(&stack.docker, &name).await?
                    && !info.running
                {
                    docker::remove(&stack.docker, &name).await?;
                    removed.push(serde_json::json!({"container": name}));
                }
            }
            stack
                .events
                .ok(&format!("{} removed, {} kept", removed.len(), kept.len()));
            Ok(serde_json::json!({"event": "prune", "removed": removed, "kept": kept}))
        })
        .await;
    fail_preflight_if_open(stack, locked)
}

/// `wsctl history`: the last `count` runs of the journal, newest first.
pub async fn history(stack: &Stack, count: usize) -> anyhow::Result<Vec<serde_json::Value>> {
    let runs = stack.journal.runs(&stack.docker).await?;
    Ok(runs.iter().rev().take(count).map(status::summary).collect())
}

/// The container `logs` and `exec` work on: replica `replica` (1-based;
/// default the first) of `color` (default the live colour).
pub async fn container_of(
    stack: &Stack,
    color: Option<Color>,
    replica: Option<usize>,
) -> anyhow::Result<String> {
    let color = match color {
        Some(color) => color,
        None => nginx::serving(stack)
            .await?
            .live()
            .ok_or_else(|| DeployError::Usage("no colour is live: name one with --color".into()))?,
    };
    let names = containers::replicas(stack, color).await?;
    let index = replica.unwrap_or(1);
    let Some(name) = names.get(index.saturating_sub(1)).filter(|_| index >= 1) else {
        return Err(DeployError::Usage(format!(
            "{color} has {} replica(s); --replica {index} is not one of them",
            names.len()
        ))
        .into());
    };
    if docker::inspect(&stack.docker, name).await?.is_none() {
        return Err(DeployError::Usage(format!("{name} does not exist")).into());
    }
    Ok(name.clone())
}

/// Creates the network, Redis and Nginx when they are absent, and starts
/// them when they are stopped: the first deploy bootstraps the stack.
async fn bootstrap(stack: &mut Stack) -> anyhow::Result<()> {
    let config = &stack.config;
    let network = config.network_name();
    docker::ensure_network(&stack.docker, &network).await?;
    // Flags only: our image's entrypoint is redis-server, and the official
    // image's entrypoint script puts redis-server in front of flags.
    let redis_flags = [
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory",
        &config.redis.maxmemory,
        "--maxmemory-policy",
        &config.redis.maxmemory_policy,
    ];
    let redis = ContainerCreateBody {
        image: Some(config.images.redis.clone()),
        cmd: Some(redis_flags.iter().map(|flag| flag.to_string()).collect()),
        host_config: Some(HostConfig {
            network_mode: Some(network.clone()),
            restart_policy: containers::unless_stopped(),
            ..Default::default()
        }),
        ..Default::default()
    };
    if config.owns_redis() {
        ensure_running(&stack.docker, &config.name("redis"), redis).await?;
    }
    // Sized for the sockets the configured replicas can hold, when Nginx
    // is created (a later change of `replicas` needs `deploy --proxy`).
    let nginx = proxy::container_body(config);
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

/// `wsctl lock acquire -m MESSAGE`: a lock held by a person, not a process:
/// it never expires and stays after this command exits.
pub async fn acquire_manual_lock(stack: &mut Stack, message: &str) -> anyhow::Result<()> {
    docker::ensure_image(
        &stack.docker,
        &stack.config.images.nginx,
        &stack.config.registry,
    )
    .await?;
    let token = uuid::Uuid::new_v4().to_string();
    let request = lock::Request {
        command: "lock acquire",
        token: &token,
        message,
        ttl: 0,
    };
    lock::acquire(&stack.docker, &stack.config, request, stack.lock_wait)
        .await?
        .keep();
    Ok(())
}
