//! Blue-green deploys through the Docker API, as explicit plans that
//! survive interruption.
//!
//! A reader finds each part in one place:
//! - `operations.rs`: the commands that move traffic, each a read-only
//!   preparation that returns a plan or refuses.
//! - `runner.rs`: one run from preflight (lock, bootstrap, recover) to its
//!   summary; returns a `Report`.
//! - `plan.rs`: the plan of states and each step's rules (undo, interrupt,
//!   gates, logs); `steps.rs`: what each step does; `state.rs`: the words
//!   a run is recorded in.
//! - `engine.rs`: the seam between the runner and the platform (colours,
//!   the edge, the journal, the lock); `Stack` is the Docker Engine's.
//! - `coordinator.rs`: where a run waits for the others (`Solo` on one
//!   engine); `fleet.rs`: a stack on several Docker hosts, its coordinator
//!   and `gate.rs`, a host's side of it.
//! - `containers.rs`: the Docker-side steps (start, readiness, smoke, drain);
//!   `checks.rs`: where a replica's checks run, by `app_kind` (inside it,
//!   or from the checker container beside an external app).
//! - `nginx.rs`: what Nginx serves, and the switch itself; `reloads.rs`:
//!   what follows every reload (old workers, their clients moved past the
//!   bounds, the record).
//! - `journal.rs`: every run recorded in the engine, state by state.
//! - `lock.rs`: one run at a time per stack, renewed while it lives.
//! - `recover.rs`: bringing a stack left by a killed run to a consistent state.
//! - `status.rs`: `wsctl status`; `down.rs`: `wsctl down`. `error.rs`: the
//!   exit codes.
//! - `events.rs`: progress lines or `--json`; `upstream.rs`: the rendered
//!   upstream; `wait.rs`: the one polling loop. The cutover probe is a
//!   client of the service (`client/probe.rs`).
//! - `config/`: the stack from `wsctl.yaml` (`StackConfig`, `Color`, app
//!   environment and secrets); `docker.rs`: the Docker Engine API
//!   (bollard), one `connect()`; `image.rs`: `wsctl build`;
//!   `registry.rs`: credentials for pulls and pushes.
//! - `analysis.rs`: a canary's (and `--watch`'s) metric analysis.
//! - `proxy.rs`: the Nginx container, drift from wsctl.yaml (its image,
//!   its ports), the edge's preflight, and the steps of `deploy --proxy`.
//! - `tls.rs`: the certificate and key of `tls:`, checked and uploaded;
//!   `tls_reload.rs`: `wsctl tls reload`.
//! - `hooks.rs`: the commands of `hooks:` around a run; `notify.rs`: the
//!   webhooks of `notify:`.
//! - `swarm/`: `platform: swarm`: a colour as a Swarm service
//!   (`containers.rs` hands each colour operation to it), the journal and
//!   the lock as Swarm configs.
//!
//! This file holds the stack handle and the commands that do not move
//! traffic (prune, history, the manual lock). Nothing here assumes the
//! host can reach a container's address: checks go through the engine or
//! the published Nginx port.

mod analysis;
mod checks;
pub mod config;
mod containers;
mod coordinator;
pub mod docker;
pub mod down;
mod drain_progress;
mod edge;
mod engine;
mod error;
mod events;
pub mod fleet;
mod gate;
mod hooks;
pub mod image;
mod journal;
mod lock;
mod nginx;
mod notify;
mod operations;
mod plan;
mod proxy;
mod recover;
pub mod registry;
mod reloads;
mod runner;
mod state;
mod status;
mod steps;
mod swarm;
pub mod tls;
pub mod tls_reload;
mod upstream;
mod userland_proxy;
mod wait;

use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};

pub use checks::smoke as smoke_replica;
pub use containers::existing_replicas;
pub use coordinator::Solo;
pub use error::DeployError;
pub use events::Events;
pub use journal::{Journal, Outcome};
pub use lock::{force_unlock, holder as lock_holder, release_manual as release_manual_lock};
pub use operations::{DeployRequest, Operation};
pub use plan::Canary;
pub use proxy::RedisView;
pub use status::{RunSummary, Status, status};
pub use swarm::follow as swarm_follow;
pub use swarm::services::addresses as task_addresses;
pub use swarm::services::ensure_manager as ensure_swarm_manager;
pub use upstream::DEFAULT_TEMPLATE;

use crate::deploy::config::{Color, StackConfig};
use crate::shared::signal::Interrupt;
use runner::{Lease, Recovery};

/// One stack on one engine: what every step reads. Nothing on it is set
/// by one part of a run for another to read: a run's state lives in the
/// runner, and what it did comes back as a `Report`.
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
    /// `platform: swarm`: the edges of `swarm.edges`, beside the manager's
    /// own Nginx (empty otherwise).
    pub edges: Vec<swarm::edges::Edge>,
    /// The edges of `swarm.edges` whose engine did not answer.
    pub lost_edges: Vec<swarm::edges::LostEdge>,
}

impl Stack {
    pub fn new(
        docker: Docker,
        config: StackConfig,
        events: Events,
        template: String,
        lock_wait: Duration,
        interrupt: Interrupt,
    ) -> Stack {
        Stack {
            docker,
            journal: Journal::new(&config),
            config,
            events,
            template,
            lock_wait,
            interrupt,
            edges: Vec::new(),
            lost_edges: Vec::new(),
        }
    }

    /// The stack for looking at it and ordering its replicas about, with
    /// nothing of a run's: no events shown, no template, no signals.
    pub fn for_looks(docker: Docker, config: StackConfig) -> Stack {
        Stack::new(
            docker,
            config,
            Events::new(false),
            String::new(),
            Duration::ZERO,
            Interrupt::default(),
        )
    }

    /// Connects to the edges of `swarm.edges` (a swarm stack's other
    /// Nginx); one not a manager is refused in one line, one that does not
    /// answer is kept as lost (`every_edge` refuses then).
    pub async fn connect_edges(&mut self) -> anyhow::Result<()> {
        (self.edges, self.lost_edges) = swarm::edges::connect(
            &self.config,
            &self.template,
            self.events.is_json(),
            &self.interrupt,
        )
        .await?;
        Ok(())
    }

    /// Every edge's stack by name, the manager's (this one) first; only
    /// this one without `swarm.edges`.
    pub fn edge_stacks(&self) -> Vec<(&str, &Stack)> {
        swarm::edges::all(self, &self.edges)
    }

    /// `error` of the edge `name`, saying which edge when there are several.
    pub fn on_edge(&self, name: &str, error: anyhow::Error) -> anyhow::Error {
        match self.edges.is_empty() {
            true => error,
            false => swarm::edges::on_edge(name, error),
        }
    }

    /// Refuses, naming the edge, while an edge of `swarm.edges` is lost:
    /// what changes the edges must reach every one.
    pub fn every_edge(&self) -> anyhow::Result<()> {
        match self.lost_edges.first() {
            Some(lost) => Err(lost.refusal()),
            None => Ok(()),
        }
    }
}

/// Runs `operation` on this one stack (its own lock, nobody to wait for).
pub async fn run(stack: &mut Stack, operation: Operation) -> anyhow::Result<()> {
    stack.every_edge()?;
    runner::run(stack, &operation, Lease::Take, &Solo).await.1
}

/// `wsctl abort`: a deploy running now (a canary under analysis) is sent
/// SIGTERM, which undoes it; a deploy paused by `--no-switch` has its
/// colour removed (a run of its own). Traffic stays where it is either way.
/// `Ok(true)`: a running deploy was interrupted, there is nothing to run.
pub async fn interrupt_running(stack: &mut Stack) -> anyhow::Result<bool> {
    match lock::holder(&stack.docker, &stack.config).await? {
        Some(held) if !held.stale && held.ttl > 0 => {
            interrupt_holder(stack, &held).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
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
    let lease = Lease::Take;
    let locked = runner::settled(
        stack,
        "prune",
        lease,
        Recovery::IfUnfinished,
        engine::Create::Never,
        async move |stack, _| {
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
            stack
                .events
                .ok(&format!("{} images in the journal", seen.len()));
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
        },
    )
    .await;
    runner::close_open_step(&mut stack.events, &locked);
    locked
}

/// `wsctl history`: the last `count` runs of the journal, newest first.
pub async fn history(stack: &Stack, count: usize) -> anyhow::Result<Vec<RunSummary>> {
    let runs = stack.journal.runs(&stack.docker).await?;
    Ok(runs
        .iter()
        .rev()
        .take(count)
        .map(RunSummary::from)
        .collect())
}

/// The colour `logs` and `exec` work on: `color`, or the live one.
async fn colour_or_live(stack: &Stack, color: Option<Color>) -> anyhow::Result<Color> {
    match color {
        Some(color) => Ok(color),
        None => Ok(nginx::serving(stack).await?.live().ok_or_else(|| {
            DeployError::Usage("no colour is live: name one with --color".into())
        })?),
    }
}

/// `platform: swarm`: the service whose logs `wsctl logs` shows (every
/// task's lines, through the manager), `color` or the live colour's.
pub async fn service_of(stack: &Stack, color: Option<Color>) -> anyhow::Result<String> {
    let color = colour_or_live(stack, color).await?;
    Ok(swarm::services::service(&stack.config, color))
}

/// The container `logs` and `exec` work on: replica `replica` (1-based;
/// default the first) of `color` (default the live colour).
pub async fn container_of(
    stack: &Stack,
    color: Option<Color>,
    replica: Option<usize>,
) -> anyhow::Result<String> {
    if stack.config.is_swarm() {
        return Err(DeployError::Usage(
            "on platform: swarm a task's container is on its node's engine: run `docker exec` \
             there (`wsctl status` names the node)"
                .into(),
        )
        .into());
    }
    let color = colour_or_live(stack, color).await?;
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

/// Creates the network, Redis and Nginx when they are absent (`create`:
/// a deploy), and starts them when they are stopped: the first deploy
/// bootstraps the stack. Any other command only starts what exists.
async fn bootstrap(stack: &mut Stack, create: engine::Create) -> anyhow::Result<()> {
    let config = &stack.config;
    if create == engine::Create::Never {
        let mut names = vec![config.name("nginx")];
        if config.owns_redis() {
            names.push(config.name("redis"));
        }
        if config.checks_from_checker() {
            names.push(checks::checker(config));
        }
        for name in names {
            if docker::inspect(&stack.docker, &name).await?.is_some() {
                docker::start(&stack.docker, &name).await?;
            }
        }
        return Ok(());
    }
    let network = config.network_name();
    // What this bootstrap creates, removed again when it fails: a first
    // deploy that cannot start Nginx leaves nothing behind.
    let mut created: Vec<String> = Vec::new();
    let network_existed = docker::network_exists(&stack.docker, &network).await?;
    docker::ensure_network(&stack.docker, &network, config.is_swarm()).await?;
    let started = start_components(stack, &network, &mut created).await;
    let Err(error) = started else {
        return Ok(());
    };
    for name in created.iter().rev() {
        let _ = docker::remove(&stack.docker, name).await;
    }
    if !network_existed {
        let _ = docker::remove_network(&stack.docker, &network).await;
    }
    Err(port_in_use(stack, error).await)
}

/// Redis (the stack's own), Nginx and an external app's checker, created
/// when absent (their names pushed on `created`) and started.
async fn start_components(
    stack: &Stack,
    network: &str,
    created: &mut Vec<String>,
) -> anyhow::Result<()> {
    let config = &stack.config;
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
            network_mode: Some(network.to_string()),
            restart_policy: docker::unless_stopped(),
            // Every replica waits on this one thread: when the cores are
            // saturated (a reconnect storm), it gets four times an app
            // container's CPU weight, so the scheduler does not starve it
            // first (the replicas' command timeout is 1 s;
            // docs/BENCHMARKS.md section 11).
            cpu_shares: Some(REDIS_CPU_SHARES),
            ..Default::default()
        }),
        ..Default::default()
    };
    if config.owns_redis() {
        ensure_running(&stack.docker, &config.name("redis"), redis, created).await?;
    }
    // Sized for the sockets the configured replicas can hold, when Nginx
    // is created (a later change of `replicas` needs `deploy --proxy`).
    let nginx = config.name("nginx");
    if docker::inspect(&stack.docker, &nginx).await?.is_none() {
        proxy::check_address_free(stack).await?;
        docker::create(&stack.docker, &nginx, proxy::container_body(config)).await?;
        created.push(nginx.clone());
        proxy::install_listener(stack, &nginx).await?;
        docker::start(&stack.docker, &nginx).await?;
        proxy::check_listener(stack, &nginx).await?;
    }
    docker::start(&stack.docker, &nginx).await?;
    // An external app's checks run beside it, from the checker.
    if config.checks_from_checker() {
        let follow = config.is_swarm().then(|| {
            let spec = serde_json::to_string(&swarm::follow::Spec::of(stack)).unwrap_or_default();
            (spec, swarm::follow::manager_socket(config))
        });
        let name = checks::checker(config);
        // A follower of another wsctl.yaml (its template, its networks):
        // made again with this one.
        if let Some((spec, _)) = &follow
            && let Some(info) = docker::inspect(&stack.docker, &name).await?
            && info.labels.get(checks::FOLLOW_LABEL) != Some(spec)
        {
            docker::remove(&stack.docker, &name).await?;
        }
        let checker = checks::checker_body(config, follow);
        ensure_running(&stack.docker, &name, checker, created).await?;
    }
    Ok(())
}

/// The stack's own Redis's CPU weight (the engine's default is 1024).
const REDIS_CPU_SHARES: i64 = 4096;

/// A start that failed because the public port is taken, as one line
/// naming the address and, when the engine knows, the container holding
/// it; any other error as it is.
async fn port_in_use(stack: &Stack, error: anyhow::Error) -> anyhow::Error {
    let text = format!("{error:#}").to_lowercase();
    if !(text.contains("address already in use") || text.contains("port is already allocated")) {
        return error;
    }
    let address = &stack.config.public_address;
    let port = address.rsplit(':').next().unwrap_or_default();
    let holder = docker::publishing(&stack.docker, port)
        .await
        .map_or("a process outside this engine".to_string(), |name| {
            format!("the container {name}")
        });
    DeployError::Usage(format!(
        "public_address {address} is in use (by {holder}); choose another in wsctl.yaml"
    ))
    .into()
}

async fn ensure_running(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
    created: &mut Vec<String>,
) -> anyhow::Result<()> {
    if docker::inspect(docker, name).await?.is_none() {
        // Taken meanwhile: another run created it.
        docker::create(docker, name, body).await?;
        created.push(name.to_string());
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
