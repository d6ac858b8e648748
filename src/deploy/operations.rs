//! The commands that move traffic, as operations: each names its lock,
//! what its preflight looks at, and a read-only preparation that returns
//! the plan for the runner or refuses with a clear error (nothing changed).
//! The runner (`runner.rs`) does the rest, on one stack or on each host of
//! a fleet.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::Engine;
use super::engine::Recovery;
use super::nginx::Serving;
use super::plan::{Canary, Plan};
use super::state::Action;
use super::{DeployError, journal};
use crate::deploy::config::{Color, StackConfig};

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
    pub env: BTreeMap<String, String>,
    /// `--canary-steps`: weighted steps under analysis before the switch.
    pub canary: Option<Canary>,
    /// `--watch`: analysis after the switch, the old colour kept running.
    pub watch: Option<Duration>,
    /// `--no-switch`: stop before the switch (`wsctl promote` goes on).
    pub no_switch: bool,
}

/// A command that moves traffic (or could).
#[derive(Debug, Clone)]
pub enum Operation {
    /// `wsctl deploy`: the standby colour (or `color`) with `image`.
    Deploy(DeployRequest),
    /// `wsctl switch --color C`: C must be running and ready (unless
    /// `force`); the other colour keeps running.
    Switch { color: Color, force: bool },
    /// `wsctl rollback`: back to the colour the last traffic move came
    /// from, as the journal says.
    Rollback,
    /// `wsctl promote`: traffic to the colour `deploy --no-switch` left.
    Promote,
    /// `wsctl abort` of a paused deploy: its colour removed.
    Abort,
    /// `wsctl deploy --proxy`: Nginx replaced with the configured one.
    Proxy,
    /// `wsctl recover`: the stack repaired whatever the journal says.
    Recover,
}

/// What a preparation hands the runner.
#[derive(Debug)]
pub struct Prepared {
    pub plan: Plan,
    /// The line that closes the preflight step.
    pub detail: String,
    /// Things to act on that do not stop the run.
    pub warnings: Vec<String>,
}

impl Operation {
    /// The command as the lock (and `wsctl lock status`) names it.
    pub fn command(&self) -> String {
        match self {
            Operation::Deploy(request) => format!(
                "deploy {}",
                request
                    .color
                    .map_or(String::new(), |color| color.to_string())
            ),
            Operation::Switch { color, .. } => format!("switch {color}"),
            Operation::Rollback => "rollback".into(),
            Operation::Promote => "promote".into(),
            Operation::Abort => "abort".into(),
            Operation::Proxy => "deploy --proxy".into(),
            Operation::Recover => "recover".into(),
        }
    }

    /// The action its journal record names.
    pub fn action(&self) -> Action {
        match self {
            Operation::Deploy(_) => Action::Deploy,
            Operation::Switch { .. } => Action::Switch,
            Operation::Rollback => Action::Rollback,
            Operation::Promote => Action::Promote,
            Operation::Abort => Action::Abort,
            Operation::Proxy => Action::Proxy,
            Operation::Recover => Action::Recover,
        }
    }

    /// What the preflight step line says it looks at.
    pub fn preflight_what(&self) -> &'static str {
        match self {
            Operation::Deploy(_) => "engine, images, lock, network, redis, nginx",
            Operation::Switch { .. } => "lock, live colour",
            Operation::Rollback => "lock, journal, live colour",
            Operation::Promote | Operation::Abort => "lock, journal, paused colour",
            Operation::Proxy => "engine, nginx image, lock",
            Operation::Recover => "lock, journal",
        }
    }

    /// The images pulled (when absent) before the lock is taken.
    pub fn images(&self, config: &StackConfig) -> Vec<String> {
        match self {
            Operation::Deploy(request) => {
                let app = request
                    .image
                    .clone()
                    .unwrap_or_else(|| config.images.app.clone());
                let mut images = vec![app, config.images.nginx.clone()];
                if config.owns_redis() {
                    images.push(config.images.redis.clone());
                }
                if config.is_external() {
                    images.push(config.checker_image().to_string());
                }
                images
            }
            Operation::Proxy => vec![config.images.nginx.clone()],
            _ => Vec::new(),
        }
    }

    /// Only a deploy (and `deploy --proxy`) creates the stack's network,
    /// Redis and Nginx; every other command works on what exists, and
    /// refuses on a fresh stack without creating anything.
    pub fn creates(&self) -> super::engine::Create {
        match self {
            Operation::Deploy(_) | Operation::Proxy => super::engine::Create::IfAbsent,
            _ => super::engine::Create::Never,
        }
    }

    /// `wsctl recover` repairs whatever the journal says; every other
    /// command recovers unfinished runs first.
    pub fn recovery(&self) -> Recovery {
        match self {
            Operation::Recover => Recovery::Always,
            _ => Recovery::IfUnfinished,
        }
    }

    /// On several hosts, must they agree on the live colour before it
    /// runs? A switch is what brings disagreeing hosts together, and the
    /// others leave traffic where it is.
    pub fn hosts_must_agree(&self) -> bool {
        matches!(
            self,
            Operation::Deploy(_) | Operation::Rollback | Operation::Promote
        )
    }

    /// Reads the stack (never changes it) and returns the plan, or refuses.
    pub async fn prepare(
        &self,
        engine: &impl Engine,
        serving: Serving,
    ) -> anyhow::Result<Prepared> {
        let live = serving.live();
        let upstream = serving.upstream;
        match self {
            Operation::Deploy(request) => prepare_deploy(engine, request, live, upstream).await,
            Operation::Switch { color, force } => {
                let image = engine.image_of(*color).await?;
                Ok(Prepared {
                    plan: Plan::switch(live, *color, image, *force, upstream),
                    detail: format!("live: {}", name(live)),
                    warnings: Vec::new(),
                })
            }
            Operation::Rollback => prepare_rollback(engine, live, upstream).await,
            Operation::Promote => {
                let (paused, to) = paused(
                    engine,
                    "no deploy is paused (`wsctl deploy --no-switch` pauses one)",
                )
                .await?;
                if live == Some(to) {
                    return Err(usage(format!("{to} is already live")));
                }
                Ok(Prepared {
                    detail: format!("{to} ({}) paused by {}", paused.image, paused.id),
                    plan: Plan::promote(live, to, paused.image, upstream),
                    warnings: Vec::new(),
                })
            }
            Operation::Abort => {
                let (paused, to) =
                    paused(engine, "nothing to abort: no deploy is running or paused").await?;
                let detail = format!("removed {to} left paused by {}", paused.id);
                Ok(Prepared {
                    detail: format!("{to} paused by {}", paused.id),
                    plan: Plan::abort(live, to, paused.image, detail),
                    warnings: Vec::new(),
                })
            }
            Operation::Proxy => Ok(Prepared {
                plan: Plan::proxy(live, engine.config().images.nginx.clone(), upstream),
                detail: format!("live: {}", name(live)),
                warnings: Vec::new(),
            }),
            Operation::Recover => Err(anyhow::anyhow!(
                "recover has no plan: the preflight repairs"
            )),
        }
    }
}

async fn prepare_deploy(
    engine: &impl Engine,
    request: &DeployRequest,
    live: Option<Color>,
    upstream: Option<String>,
) -> anyhow::Result<Prepared> {
    let image = request
        .image
        .clone()
        .unwrap_or_else(|| engine.config().images.app.clone());
    let replicas = request.replicas.unwrap_or(engine.config().replicas);
    let standby = request
        .color
        .unwrap_or(live.map_or(Color::Blue, Color::other));
    if live == Some(standby) {
        return Err(usage(format!(
            "{standby} is live; deploy to the standby colour"
        )));
    }
    if (request.canary.is_some() || request.watch.is_some()) && live.is_none() {
        return Err(usage(
            "--canary and --watch need a live colour; deploy without them first".into(),
        ));
    }
    let warnings = engine.undersized(replicas).await.into_iter().collect();
    let plan = Plan {
        extra_env: request.env.clone(),
        canary: request.canary.clone(),
        watch: request.watch,
        pause: request.no_switch,
        ..Plan::deploy(live, standby, image, upstream, replicas)
    };
    Ok(Prepared {
        plan,
        detail: format!("live: {}, standby: {standby}", name(live)),
        warnings,
    })
}

/// Back to the colour the journal names: its kept container, or a new
/// one from its recorded image when it was removed.
async fn prepare_rollback(
    engine: &impl Engine,
    live: Option<Color>,
    upstream: Option<String>,
) -> anyhow::Result<Prepared> {
    let runs = engine.runs().await?;
    let Some((previous, image)) = journal::rollback_target(&runs, live) else {
        return Err(usage(
            "the journal has no previous colour to roll back to".into(),
        ));
    };
    if live == Some(previous) {
        return Err(usage(format!("{previous} is already live")));
    }
    let kept = engine.presence(previous).await?.exists;
    let image = if image.is_empty() {
        engine.config().images.app.clone()
    } else {
        image
    };
    Ok(Prepared {
        detail: format!("back to {previous} ({image})"),
        plan: Plan::rollback(
            live,
            previous,
            image,
            kept,
            upstream,
            engine.config().replicas,
        ),
        warnings: Vec::new(),
    })
}

/// The deploy `--no-switch` left paused, and its colour; `refusal` when
/// there is none.
async fn paused(engine: &impl Engine, refusal: &str) -> anyhow::Result<(journal::Run, Color)> {
    let runs = engine.runs().await?;
    journal::paused(&runs)
        .and_then(|run| Some((run.clone(), run.to?)))
        .ok_or_else(|| usage(refusal.to_string()))
}

fn usage(why: String) -> anyhow::Error {
    DeployError::Usage(why).into()
}

fn name(color: Option<Color>) -> String {
    color.map_or("none".to_string(), |color| color.to_string())
}
