//! What every stack command shares: the stack options (`--config`,
//! `--json`, `--host`), `--lock-wait`, and the one place that loads the
//! configuration, connects to the engine (or every host) and runs the
//! command's body.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::deploy::config::StackConfig;
use crate::deploy::fleet::Fleet;
use crate::deploy::{self, Events, Operation, Stack};
use crate::shared::input::ConfigError;
use crate::shared::secrets::{say, say_err};
use crate::shared::signal::Interrupt;

/// Options every stack command takes (global: also after `lock status`).
#[derive(Debug, Args)]
pub struct StackArgs {
    /// The stack's configuration, which must exist [default: ./wsctl.yaml,
    /// whose absence means every default].
    #[arg(long, short = 'c', env = "WSCTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// One JSON object per line (events, then a summary) for CI pipelines.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only this host of wsctl.yaml's `hosts:` (repeatable): to repair one
    /// host, or to look at it alone.
    #[arg(long = "host", value_name = "NAME", global = true)]
    hosts: Vec<String>,
}

impl StackArgs {
    /// The file the configuration comes from.
    pub fn config_path(&self) -> &std::path::Path {
        self.config
            .as_deref()
            .unwrap_or(std::path::Path::new(crate::deploy::config::DEFAULT_PATH))
    }
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

/// What the second SIGINT/SIGTERM leaves behind (the first one undoes).
const ON_SECOND_SIGNAL: &str =
    "the journal shows the run unfinished; the next deploy or `wsctl recover` repairs the stack";

/// One engine, or every host of wsctl.yaml's `hosts:`.
pub enum Target {
    One(Box<Stack>),
    Hosts(Fleet),
}

/// Loads the config (and its template), connects to the engine (or every
/// host), then runs `body`. Commands that move traffic (`interruptible`)
/// catch the first SIGINT/SIGTERM and stop at a safe point; the others die
/// as usual.
pub fn with_target(
    args: &StackArgs,
    lock_wait: Duration,
    interruptible: bool,
    body: impl AsyncFnOnce(Target) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut config = StackConfig::load_from(args.config.as_deref(), true)?;
    if !args.hosts.is_empty() {
        if let Some(unknown) = args
            .hosts
            .iter()
            .find(|name| !config.hosts.iter().any(|host| &host.name == *name))
        {
            let known: Vec<&str> = config.hosts.iter().map(|host| host.name.as_str()).collect();
            return Err(ConfigError(format!(
                "--host {unknown}: not a host of {} (hosts: {})",
                args.config_path().display(),
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
        // `platform: swarm` talks to a manager: swarm.manager, else the
        // engine DOCKER_HOST names.
        let endpoint = crate::deploy::docker::Endpoint::of_stack(&config);
        let docker = crate::deploy::docker::connect_to(&endpoint).await?;
        if config.is_swarm() {
            deploy::ensure_swarm_manager(&docker).await?;
        }
        let events = Events::new(args.json);
        let mut stack = Stack::new(docker, config, events, template, lock_wait, interrupt);
        stack.connect_edges().await?;
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

/// Runs `operation` on the one stack, or on every host through the
/// fleet's gates.
pub fn run_operation(
    args: &StackArgs,
    lock_wait: Duration,
    operation: Operation,
) -> anyhow::Result<()> {
    with_target(args, lock_wait, true, async |target| match target {
        Target::One(mut stack) => deploy::run(&mut stack, operation).await,
        Target::Hosts(mut fleet) => fleet.run(operation).await,
    })
}
