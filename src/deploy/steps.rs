//! What each step of a plan does (`plan.rs` says what it is and what its
//! rules are; `runner.rs` runs them in order): what it prepares before it
//! acts, how it acts, how its undo is carried out, and what its progress
//! line says. Every step talks to the platform through the `Engine`.

use std::time::{Duration, Instant};

use super::containers::Drained;
use super::engine::Engine;
use super::plan::{Health, Logs, Plan, Start, Step, Undo};
use super::reloads::Reloading;
use super::{DeployError, analysis, nginx};
use crate::client::probe;

/// What the steps of one run hand to each other while it runs; the
/// runner owns it and reads it when the run is over.
pub struct Work<E: Engine> {
    /// The new upstream's upload, started with the readiness wait.
    pub staged: Option<E::Staged>,
    /// The cutover probe: a client through the public address while
    /// traffic moves.
    pub cutover: Option<probe::Probe>,
    /// The last analysis sample (canary, `--watch`), for the record.
    pub analysis: Option<serde_json::Value>,
    /// Every reload of Nginx so far, being looked at, for the record.
    pub reloads: Vec<Reloading>,
}

impl<E: Engine> Default for Work<E> {
    fn default() -> Self {
        Work {
            staged: None,
            cutover: None,
            analysis: None,
            reloads: Vec::new(),
        }
    }
}

/// Starts what a step needs running beside it, before the step acts: the
/// readiness wait stages the new upstream, the switch starts the cutover
/// probe when traffic moves from a live colour.
pub async fn prepare<E: Engine>(engine: &E, plan: &Plan, step: Step, work: &mut Work<E>) {
    match step {
        Step::Health if plan.stages_upstream() => {
            work.staged = Some(engine.stage(plan.to).await);
        }
        Step::Switch if plan.from.is_some() => {
            work.cutover = engine.cutover_probe();
        }
        _ => {}
    }
}

/// What the step line says while it runs.
pub fn describe(engine: &impl Engine, plan: &Plan, step: Step) -> String {
    let config = engine.config();
    let name = config.app(plan.to);
    match step {
        Step::Start if plan.start == Start::Kept => format!("{name} (kept container)"),
        Step::Start if plan.replicas > 1 => {
            format!("{name} x{} from {}", plan.replicas, plan.image)
        }
        Step::Start => format!("{name} from {}", plan.image),
        Step::Health => format!("{name} (timeout {} s)", config.ready_timeout),
        Step::Smoke => name,
        Step::Canary => {
            let canary = plan.canary.as_ref();
            let steps: Vec<String> = canary
                .map(|canary| canary.steps.iter().map(|p| format!("{p}%")).collect())
                .unwrap_or_default();
            format!(
                "{} of new connections to {}, {} s of analysis each",
                steps.join(" -> "),
                plan.to,
                canary.map_or(0, |canary| canary.analysis.as_secs())
            )
        }
        Step::Switch => format!("nginx -> {}", plan.to),
        Step::Watch => format!(
            "{} s of analysis on {}, {} kept running to switch back to",
            plan.watch.map_or(0, |watch| watch.as_secs()),
            plan.to,
            plan.from.map_or("-".to_string(), |from| config.app(from))
        ),
        Step::Drain => format!(
            "{} (timeout {} s)",
            plan.from.map_or(String::new(), |from| config.app(from)),
            config.drain_timeout
        ),
        Step::Remove => format!("stop and remove {name}"),
        Step::CreateProxy => format!("{} from {}", config.name("nginx_next"), plan.image),
        Step::ReplaceProxy => format!("{}: old stopped, new started", config.name("nginx")),
    }
}

/// Acts on one state; returns the line that reports it done.
pub async fn act<E: Engine>(
    engine: &mut E,
    plan: &Plan,
    step: Step,
    work: &mut Work<E>,
) -> anyhow::Result<String> {
    let name = engine.config().app(plan.to);
    match step {
        Step::Start if plan.start == Start::Kept => engine.start_kept(plan.to).await,
        Step::Start => {
            engine
                .start_fresh(plan.to, &plan.image, plan.replicas, &plan.extra_env)
                .await
        }
        Step::Health => match plan.health {
            Health::Wait => {
                engine.wait_ready(plan.to).await?;
                Ok(format!("{name} ready"))
            }
            Health::Now if engine.ready_now(plan.to).await => Ok(format!("{name} ready")),
            Health::Now => Err(DeployError::Health(format!(
                "{name} is not running and ready (use --force to switch anyway)"
            ))
            .into()),
            Health::Forced => Ok(format!("{name} not checked (--force)")),
        },
        Step::Smoke => {
            engine.smoke(plan.to).await?;
            Ok("every check passed".into())
        }
        Step::Canary => {
            let (Some(canary), Some(from)) = (&plan.canary, plan.from) else {
                return Ok("no canary".into());
            };
            // The staged single-colour upstream is overwritten here; the
            // switch renders its own afterwards.
            if let Some(upload) = work.staged.take() {
                engine.land(upload).await?;
            }
            let mut passed = Vec::new();
            for &percent in &canary.steps {
                engine.weigh(from, plan.to, percent).await?;
                let reason = format!("{percent}% of new connections to {}", plan.to);
                let reload = engine.reloaded("canary", reason, Instant::now());
                work.reloads.push(reload);
                let until = analysis::Until::Counted {
                    seconds: canary.analysis,
                    timeout: canary.timeout,
                };
                let detail = engine
                    .analyse(plan.to, Some(from), percent, until, &mut work.analysis)
                    .await?;
                engine.events().progress(&detail);
                passed.push(detail);
            }
            Ok(passed.join("; "))
        }
        Step::Switch => {
            let steady = match plan.from {
                None => nginx::FIRST_SWITCH_STEADY,
                Some(_) => Duration::ZERO,
            };
            engine.switch(plan.to, work.staged.take(), steady).await?;
            let reason = format!("traffic to {}", plan.to);
            let reload = engine.reloaded("switch", reason, Instant::now());
            work.reloads.push(reload);
            Ok(format!(
                "{} live, verified through {}",
                plan.to,
                engine.config().public_address
            ))
        }
        Step::Watch => {
            let seconds = plan.watch.unwrap_or_default();
            let until = analysis::Until::Elapsed(seconds);
            engine
                .analyse(plan.to, None, 100, until, &mut work.analysis)
                .await
        }
        Step::Drain => {
            let from = plan.from.unwrap_or(plan.to.other());
            match engine.drain(from).await? {
                Drained::Stopped => Ok(format!(
                    "{} drained and stopped (kept for rollback)",
                    engine.config().app(from)
                )),
                Drained::AlreadyStopped(why) => Ok(format!("{why}: nothing to drain")),
            }
        }
        Step::Remove => {
            engine.retire(plan.to, true).await?;
            Ok("removed".into())
        }
        Step::CreateProxy => {
            engine
                .create_next_edge(plan.previous_upstream.as_deref())
                .await?;
            Ok("created, upstream copied".into())
        }
        Step::ReplaceProxy => {
            engine.replace_edge(plan.from).await?;
            Ok(format!(
                "{} runs {}",
                engine.config().name("nginx"),
                plan.image
            ))
        }
    }
}

/// What the undo line says while it runs.
pub fn describe_undo(engine: &impl Engine, undo: Undo) -> String {
    let config = engine.config();
    match undo {
        Undo::RestoreUpstream => "restore the previous upstream".into(),
        Undo::Retire { color, remove } => {
            let what = if remove { "stop and remove" } else { "stop" };
            format!("{what} {}", config.app(color))
        }
        Undo::RemoveNewProxy => format!("remove {}", config.name("nginx_next")),
        Undo::PutBackProxy => format!("put back {}", config.name("nginx")),
    }
}

/// Carries out one undo.
pub async fn undo<E: Engine>(
    engine: &E,
    plan: &Plan,
    undo: Undo,
    work: &mut Work<E>,
) -> anyhow::Result<()> {
    match undo {
        Undo::RestoreUpstream => {
            // A staged upload lands first, so the restore is the last write.
            if let Some(upload) = work.staged.take() {
                let _ = engine.land(upload).await;
            }
            restore(engine, plan).await?;
            let back = plan.from.map_or("nothing live".to_string(), |from| {
                format!("traffic back to {from}")
            });
            let reason = format!("the previous upstream again ({back})");
            let reload = engine.reloaded("undo", reason, Instant::now());
            work.reloads.push(reload);
            Ok(())
        }
        Undo::Retire { color, remove } => engine.retire(color, remove).await,
        Undo::RemoveNewProxy => engine.remove_next_edge().await,
        Undo::PutBackProxy => engine.put_back_edge().await,
    }
}

/// Applies the upstream from before the switch and checks the old colour
/// answers again through the public address.
async fn restore(engine: &impl Engine, plan: &Plan) -> anyhow::Result<()> {
    let previous = plan
        .previous_upstream
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no previous upstream was saved"))?;
    engine.apply_upstream(previous).await?;
    if let Some(from) = plan.from {
        engine.verify(from).await?;
    }
    // Old Nginx workers stop taking new connections a few milliseconds
    // after a reload, not at once: let them go before the standby they
    // route to is stopped.
    tokio::time::sleep(RELOAD_SETTLE).await;
    Ok(())
}

/// How long old Nginx workers get to stop accepting after a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// After a step failed on its own: the last log lines of the containers
/// that say why.
pub async fn show_logs(engine: &impl Engine, plan: &Plan, logs: Logs) {
    match logs {
        Logs::NewColour => engine.show_logs(plan.to).await,
        Logs::Proxy => engine.show_edge_logs().await,
    }
}
