//! `wsctl deploy`, `switch`, `rollback`, `recover`, `status`, `lock`,
//! `unlock`, `init`: the commands that drive a stack through the Docker API.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::ConfigError;
use crate::deploy::fleet::{Fleet, Move};
use crate::deploy::{self, Events, Journal, Stack};
use crate::secrets::{say, say_err};
use crate::signal::Interrupt;
use crate::stack::{Color, INIT_FILE, StackConfig};

/// Options every stack command takes (global: also after `lock status`).
#[derive(Debug, Args)]
pub struct StackArgs {
    /// The stack's configuration (absent: every default).
    #[arg(
        long,
        short = 'c',
        env = "WSCTL_CONFIG",
        default_value = "wsctl.yaml",
        global = true
    )]
    config: PathBuf,
    /// One JSON object per line (events, then a summary) for CI pipelines.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only this host of wsctl.yaml's `hosts:` (repeatable): to repair one
    /// host, or to look at it alone.
    #[arg(long = "host", value_name = "NAME", global = true)]
    hosts: Vec<String>,
}

/// For the commands that take the stack's lock.
#[derive(Debug, Args)]
pub struct LockWait {
    /// Seconds to wait for another deploy's lock before giving up.
    #[arg(long = "lock-wait", default_value = "0", value_name = "SECS")]
    seconds: u64,
}

impl LockWait {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Colour to deploy (default: the one not serving).
    #[arg(long, value_enum)]
    color: Option<Color>,
    /// Image for the new colour (default: images.app from the config).
    #[arg(long)]
    image: Option<String>,
    /// Containers for the new colour, 1 to 64 (default: replicas from the
    /// config).
    #[arg(long, value_parser = parse_replicas)]
    replicas: Option<usize>,
    /// Environment for the new colour only, on top of app_env (repeatable):
    /// feature flags, or a setting to try.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Canary: this percent of new connections to the new colour, analysed,
    /// then the switch (same as --canary-steps PERCENT,100).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=99),
          conflicts_with = "canary_steps")]
    canary: Option<u8>,
    /// Canary steps, rising percents of new connections to the new colour,
    /// each analysed before the next; 100 is the switch (10,50,100).
    #[arg(long, value_name = "P1,P2,...", value_parser = parse_steps)]
    canary_steps: Option<CanarySteps>,
    /// Seconds of passing analysis each canary step needs.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = crate::config::parse_seconds)]
    analysis: Duration,
    /// Seconds a canary step may wait for the messages its analysis needs
    /// (analysis.min_messages) before it is rolled back as inconclusive.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = crate::config::parse_seconds)]
    analysis_timeout: Duration,
    /// After the switch, keep the old colour running (without traffic) for
    /// this long while the analysis goes on; a breach switches straight back.
    #[arg(long, value_name = "SECS", value_parser = crate::config::parse_seconds)]
    watch: Option<Duration>,
    /// Stop before the switch: the new colour runs, checked, without
    /// traffic, until `wsctl promote` (or `wsctl abort`).
    #[arg(long, conflicts_with_all = ["watch", "canary", "canary_steps"])]
    no_switch: bool,
    /// Replace Nginx with the configured image and sizing instead of
    /// deploying the app: open WebSockets are cut (clients reconnect and
    /// resume) and new ones wait about a second.
    #[arg(long, conflicts_with_all = ["color", "image", "replicas", "env", "canary",
          "canary_steps", "watch", "no_switch"])]
    proxy: bool,
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

fn parse_env(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("'{raw}' is not KEY=VALUE")),
    }
}

/// Rising percents of new connections, as `--canary-steps` gives them
/// (one value for clap, not a list of values).
#[derive(Debug, Clone)]
pub struct CanarySteps(Vec<u8>);

/// `10,50,100`: rising percents from 1 to 100.
fn parse_steps(raw: &str) -> Result<CanarySteps, String> {
    let mut steps = Vec::new();
    for part in raw.split(',') {
        let percent: u8 = part
            .trim()
            .parse()
            .ok()
            .filter(|percent| (1..=100).contains(percent))
            .ok_or_else(|| format!("'{part}' is not a percent from 1 to 100"))?;
        if steps.last().is_some_and(|last| *last >= percent) {
            return Err(format!("canary steps must rise: '{raw}'"));
        }
        steps.push(percent);
    }
    Ok(CanarySteps(steps))
}

impl DeployArgs {
    fn request(&self) -> deploy::DeployRequest {
        let steps = match (&self.canary_steps, self.canary) {
            (Some(CanarySteps(steps)), _) => Some(steps.clone()),
            (None, Some(percent)) => Some(vec![percent]),
            (None, None) => None,
        };
        // 100 is the switch itself, which follows the last step.
        let canary = steps
            .map(|steps| {
                steps
                    .into_iter()
                    .filter(|percent| *percent < 100)
                    .collect::<Vec<_>>()
            })
            .filter(|steps| !steps.is_empty())
            .map(|steps| deploy::Canary {
                steps,
                analysis: self.analysis,
                timeout: self.analysis_timeout,
            });
        deploy::DeployRequest {
            color: self.color,
            image: self.image.clone(),
            replicas: self.replicas,
            env: self.env.iter().cloned().collect(),
            canary,
            watch: self.watch,
            no_switch: self.no_switch,
        }
    }
}

fn parse_replicas(raw: &str) -> Result<usize, String> {
    let count: usize = raw
        .parse()
        .map_err(|_| format!("'{raw}' is not a number of replicas"))?;
    crate::stack::check_replicas(count)?;
    Ok(count)
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Colour to send traffic to.
    #[arg(long, value_enum)]
    color: Color,
    /// Switch even when the colour is not healthy.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(subcommand)]
    command: LockCommand,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the stack's lock, since when, until when.
    Status,
    /// Hold the lock by hand (deploys refuse) until `wsctl lock release`.
    Acquire {
        /// Why: shown to everyone the lock refuses.
        #[arg(long, short = 'm')]
        message: String,
        #[command(flatten)]
        lock_wait: LockWait,
    },
    /// Let go of a lock taken with `wsctl lock acquire`.
    Release,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Redraw every SECS seconds until interrupted (one JSON object per
    /// round with --json); problems are shown, not an exit code.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
          value_parser = crate::config::parse_seconds)]
    watch: Option<Duration>,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Required: breaking a lock can let two deploys collide.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the file.
    #[arg(default_value = "wsctl.yaml")]
    path: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

/// What the second SIGINT/SIGTERM leaves behind (the first one undoes).
const ON_SECOND_SIGNAL: &str =
    "the journal shows the run unfinished; the next deploy or `wsctl recover` repairs the stack";

/// One engine, or every host of wsctl.yaml's `hosts:`.
enum Target {
    One(Box<Stack>),
    Hosts(Fleet),
}

/// Loads the config (and its template), connects to the engine (or every
/// host), then runs `body`. Commands that move traffic (`interruptible`)
/// catch the first SIGINT/SIGTERM and stop at a safe point; the others die
/// as usual.
fn with_target(
    args: &StackArgs,
    lock_wait: Duration,
    interruptible: bool,
    body: impl AsyncFnOnce(Target) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut config = StackConfig::load(&args.config)?;
    if !args.hosts.is_empty() {
        if let Some(unknown) = args
            .hosts
            .iter()
            .find(|name| !config.hosts.iter().any(|host| &host.name == *name))
        {
            let known: Vec<&str> = config.hosts.iter().map(|host| host.name.as_str()).collect();
            return Err(ConfigError(format!(
                "--host {unknown}: not a host of {} (hosts: {})",
                args.config.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
            .into());
        }
        config.hosts.retain(|host| args.hosts.contains(&host.name));
    }
    if interruptible {
        // Commands that move traffic may start app containers: a missing
        // `${VAR}` or env_file stops them here, before any step.
        config.app_environment()?;
    }
    let template = match &config.upstream_template {
        Some(path) => std::fs::read_to_string(path).map_err(|error| {
            ConfigError(format!("upstream_template {}: {error}", path.display()))
        })?,
        None => deploy::DEFAULT_TEMPLATE.to_string(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let interrupt = if interruptible {
            Interrupt::install(ON_SECOND_SIGNAL)?
        } else {
            Interrupt::default()
        };
        if !config.hosts.is_empty() {
            let fleet = Fleet::connect(&config, &template, args.json, lock_wait, interrupt).await?;
            return body(Target::Hosts(fleet)).await;
        }
        let docker = crate::docker::connect().await?;
        let stack = Stack {
            docker,
            journal: Journal::new(&config),
            config,
            events: Events::new(args.json),
            template,
            lock_wait,
            interrupt,
            gate: None,
            lock_held: false,
            last_run: None,
            last_analysis: None,
        };
        body(Target::One(Box::new(stack))).await
    })
}

/// Runs `command` on the one stack, or on each host in order (the first
/// error is returned once every host had its turn).
pub fn on_each_stack(
    args: &StackArgs,
    lock_wait: Duration,
    interruptible: bool,
    command: impl AsyncFn(&mut Stack) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    with_target(
        args,
        lock_wait,
        interruptible,
        async |target| match target {
            Target::One(mut stack) => command(&mut stack).await,
            Target::Hosts(mut fleet) => {
                let mut first_error = None;
                for host in &mut fleet.hosts {
                    if !args.json {
                        say!("host {}:", host.name);
                    }
                    if let Err(error) = command(&mut host.stack).await {
                        let error = error.context(format!("host {}", host.name));
                        say_err!("wsctl: {error:#}");
                        first_error.get_or_insert(error);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        },
    )
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    with_target(
        &args.stack,
        args.lock_wait.duration(),
        true,
        async |target| match target {
            Target::One(mut stack) if args.proxy => deploy::proxy::replace(&mut stack).await,
            // One host at a time, stopping at the first that fails: the
            // others keep serving with their Nginx as it was.
            Target::Hosts(mut fleet) if args.proxy => {
                for host in &mut fleet.hosts {
                    deploy::proxy::replace(&mut host.stack)
                        .await
                        .with_context(|| format!("host {}", host.name))?;
                }
                Ok(())
            }
            Target::One(mut stack) => deploy::deploy(&mut stack, args.request()).await,
            Target::Hosts(mut fleet) => fleet.run(Move::Deploy(args.request())).await,
        },
    )
}

pub fn switch(args: SwitchArgs) -> anyhow::Result<()> {
    with_target(
        &args.stack,
        args.lock_wait.duration(),
        true,
        async |target| match target {
            Target::One(mut stack) => deploy::switch(&mut stack, args.color, args.force).await,
            Target::Hosts(mut fleet) => {
                let action = Move::Switch {
                    color: args.color,
                    force: args.force,
                };
                fleet.run(action).await
            }
        },
    )
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    with_target(
        &args.stack,
        args.lock_wait.duration(),
        true,
        async |target| match target {
            Target::One(mut stack) => deploy::rollback(&mut stack).await,
            Target::Hosts(mut fleet) => fleet.run(Move::Rollback).await,
        },
    )
}

pub fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    on_each_stack(
        &args.stack,
        args.lock_wait.duration(),
        true,
        async |stack| deploy::promote(stack).await,
    )
}

pub fn abort(args: AbortArgs) -> anyhow::Result<()> {
    on_each_stack(
        &args.stack,
        args.lock_wait.duration(),
        false,
        async |stack| deploy::abort(stack).await,
    )
}

pub fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    on_each_stack(
        &args.stack,
        args.lock_wait.duration(),
        true,
        async |stack| deploy::recover(stack).await,
    )
}

/// `wsctl status`: prints the stack (every host), then exits 3 when the
/// live colour is not healthy, so that monitors and CI can use it.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let json = args.stack.json;
    let redraw = !json && std::io::stdout().is_terminal();
    with_target(&args.stack, Duration::ZERO, false, async |mut target| {
        loop {
            if args.watch.is_some() && redraw {
                // Clear the screen and go home, as `watch` does.
                print!("\x1b[2J\x1b[H");
            }
            let problems = status_once(&mut target, json).await?;
            let Some(every) = args.watch else {
                return match problems.is_empty() {
                    true => Ok(()),
                    false => Err(deploy::DeployError::Health(problems.join("; ")).into()),
                };
            };
            if !json {
                if problems.is_empty() {
                    say!("healthy (every {} s; Ctrl-C ends)", every.as_secs_f64());
                } else {
                    say!("NOT HEALTHY: {}", problems.join("; "));
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Prints the status of the stack (every host) once; returns what is not
/// healthy.
async fn status_once(target: &mut Target, json: bool) -> anyhow::Result<Vec<String>> {
    let hosts = match target {
        Target::One(stack) => {
            let status = deploy::status(stack).await?;
            if json {
                say!("{status}");
            } else {
                print_status(&status);
            }
            vec![status]
        }
        Target::Hosts(fleet) => {
            let status = deploy::fleet::status(fleet).await?;
            if json {
                say!("{status}");
            } else {
                for host in status["hosts"].as_array().into_iter().flatten() {
                    say!("host {}:", host["host"].as_str().unwrap_or(""));
                    print_status(host);
                }
            }
            status["hosts"].as_array().cloned().unwrap_or_default()
        }
    };
    Ok(hosts
        .iter()
        .filter_map(|host| {
            let why = degraded(host)?;
            Some(match host["host"].as_str() {
                Some(name) => format!("host {name}: {why}"),
                None => why,
            })
        })
        .collect())
}

/// Why the live colour of one stack's status is not healthy: none is
/// live, or one of its containers is not running or is unhealthy
/// (`starting` is fine: deploys check readiness themselves).
fn degraded(status: &serde_json::Value) -> Option<String> {
    let Some(live) = status["live"].as_str() else {
        return Some("no colour is live".into());
    };
    let replicas = status["colors"][live]["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sick: Vec<String> = replicas
        .iter()
        .filter(|replica| replica["state"] != "running" || replica["health"] == "unhealthy")
        .map(|replica| {
            format!(
                "{} is {} ({})",
                replica["container"].as_str().unwrap_or("?"),
                replica["state"].as_str().unwrap_or("?"),
                replica["health"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if replicas.is_empty() {
        return Some(format!("the live colour {live} has no container"));
    }
    (!sick.is_empty()).then(|| format!("the live colour {live}: {}", sick.join(", ")))
}

fn print_status(status: &serde_json::Value) {
    say!("live: {}", status["live"].as_str().unwrap_or("none"));
    for component in ["nginx", "redis"] {
        if let Some(drift) = status[component]["drift"].as_str() {
            let remedy = match component {
                "nginx" => "wsctl deploy --proxy replaces it",
                _ => "remove it and deploy again; its sessions are lost",
            };
            say!("drift: {component} {drift} ({remedy})");
        }
    }
    if let Some(weights) = status["weights"].as_object() {
        let shares: Vec<String> = weights
            .iter()
            .map(|(color, percent)| format!("{color} {percent}%"))
            .collect();
        say!("canary: new connections {}", shares.join(", "));
    }
    let analysis = &status["last_analysis"];
    if let Some(sample) = analysis["sample"].as_object() {
        say!(
            "last analysis (run {}, {}): {} at {}%, error ratio {}, {}",
            analysis["run_id"].as_str().unwrap_or(""),
            analysis["outcome"].as_str().unwrap_or(""),
            sample.get("verdict").and_then(|v| v.as_str()).unwrap_or(""),
            sample.get("percent").cloned().unwrap_or_default(),
            sample.get("new_error_ratio").cloned().unwrap_or_default(),
            sample.get("detail").and_then(|v| v.as_str()).unwrap_or(""),
        );
    }
    if let Some(disagreement) = status["disagreement"].as_str() {
        say!("WARNING: {disagreement}: run `wsctl recover`");
    }
    if let Some(holder) = status["lock"]["holder"].as_str() {
        let stale = if status["lock"]["stale"] == true {
            " (stale: the next run breaks it)"
        } else {
            ""
        };
        say!(
            "locked by {holder} since {}{stale}",
            status["lock"]["since"].as_str().unwrap_or("?")
        );
    }
    for run in status["unfinished"].as_array().into_iter().flatten() {
        let what = if run["running"] == true {
            "running now"
        } else {
            "did not finish: the next deploy or `wsctl recover` repairs it"
        };
        say!(
            "run {} ({} -> {}, state {}) {what}",
            run["id"].as_str().unwrap_or(""),
            run["action"].as_str().unwrap_or(""),
            run["to"].as_str().unwrap_or(""),
            run["state"].as_str().unwrap_or(""),
        );
    }
    for color in Color::ALL {
        let colour = &status["colors"][color.as_str()];
        let replicas = colour["replicas"].as_array().cloned().unwrap_or_default();
        // One line per container, named when the colour has several.
        let lines = if replicas.len() > 1 {
            replicas
        } else {
            vec![colour.clone()]
        };
        for c in &lines {
            let label = if lines.len() > 1 {
                c["container"].as_str().unwrap_or("-").to_string()
            } else {
                color.to_string()
            };
            say!(
                "{label:<6} {:<10} health {:<9} image {:<24} version {:<8} uptime {:>6} s  connections {}",
                c["state"].as_str().unwrap_or("-"),
                c["health"].as_str().unwrap_or("-"),
                c["image"].as_str().unwrap_or("-"),
                c["version"].as_str().unwrap_or("-"),
                c["uptime_seconds"]
                    .as_i64()
                    .map_or("-".into(), |s| s.to_string()),
                c["connections"]
                    .as_i64()
                    .map_or("-".into(), |n| n.to_string()),
            );
        }
    }
    for entry in status["history"].as_array().into_iter().flatten() {
        say!(
            "{}  {:<8} {} -> {}  {:<13} {}  by {}",
            entry["at"].as_str().unwrap_or(""),
            entry["action"].as_str().unwrap_or(""),
            entry["from"].as_str().unwrap_or("none"),
            entry["to"].as_str().unwrap_or(""),
            entry["outcome"].as_str().unwrap_or(""),
            entry["image"].as_str().unwrap_or(""),
            entry["performer"].as_str().unwrap_or(""),
        );
    }
}

pub fn lock(args: LockArgs) -> anyhow::Result<()> {
    let json = args.stack.json;
    let lock_wait = match &args.command {
        LockCommand::Acquire { lock_wait, .. } => lock_wait.duration(),
        _ => Duration::ZERO,
    };
    on_each_stack(&args.stack, lock_wait, false, async |stack| {
        match &args.command {
            LockCommand::Status => {
                let holder = deploy::lock_holder(&stack.docker, &stack.config).await?;
                if json {
                    say!("{}", serde_json::json!({ "lock": holder }));
                } else {
                    match holder {
                        None => say!("the lock is free"),
                        Some(held) => say!(
                            "locked by {} since {}{}{}",
                            held.holder,
                            held.since,
                            if held.message.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", held.message)
                            },
                            match (&held.expires_at, held.stale) {
                                (_, true) => " (stale: the next run breaks it)".to_string(),
                                (Some(end), false) => format!(" (lease until {end})"),
                                (None, false) => " (until `wsctl lock release`)".to_string(),
                            }
                        ),
                    }
                }
                Ok(())
            }
            LockCommand::Acquire { message, .. } => {
                deploy::acquire_manual_lock(stack, message).await?;
                if json {
                    say!(
                        "{}",
                        serde_json::json!({"lock": "acquired", "message": message})
                    );
                } else {
                    say!("lock acquired: {message}");
                }
                Ok(())
            }
            LockCommand::Release => {
                let released = deploy::release_manual_lock(&stack.docker, &stack.config).await?;
                if json {
                    let holder = released.map(|held| held.holder);
                    say!(
                        "{}",
                        serde_json::json!({"lock": "free", "released": holder})
                    );
                } else {
                    match released {
                        Some(held) => say!("released the lock of {}", held.holder),
                        None => say!("the lock is free"),
                    }
                }
                Ok(())
            }
        }
    })
}

pub fn unlock(args: UnlockArgs) -> anyhow::Result<()> {
    if !args.force {
        return Err(ConfigError(
            "unlock needs --force: breaking a lock can let two deploys collide".into(),
        )
        .into());
    }
    let json = args.stack.json;
    on_each_stack(&args.stack, Duration::ZERO, false, async |stack| {
        let broken = deploy::force_unlock(&stack.docker, &stack.config).await?;
        if json {
            say!("{}", serde_json::json!({"lock": "free", "broken": broken}));
        } else {
            match broken {
                Some(holder) => say!("lock held by {holder} broken"),
                None => say!("no lock was held"),
            }
        }
        Ok(())
    })
}

pub fn init(args: InitArgs) -> anyhow::Result<()> {
    if args.path.exists() && !args.force {
        return Err(ConfigError(format!(
            "{} exists (use --force to overwrite)",
            args.path.display()
        ))
        .into());
    }
    std::fs::write(&args.path, INIT_FILE)
        .with_context(|| format!("writing {}", args.path.display()))?;
    say!("wrote {}", args.path.display());
    Ok(())
}
