//! What each step of a plan does (`plan.rs` says what it is and what its
//! rules are; `runner.rs` runs them in order): what it prepares before it
//! acts, how it acts, how its undo is carried out, and what its progress
//! line says.

use std::time::Duration;

use super::containers::{self, Drained};
use super::plan::{Health, Logs, Plan, Start, Step, Undo};
use super::{DeployError, Stack, analysis, nginx, probe, proxy};
use crate::docker;

/// The upload of the new upstream running on its own task.
pub type Staged = tokio::task::JoinHandle<anyhow::Result<()>>;

/// What the steps of one run hand to each other while it runs; the
/// runner owns it and reads it when the run is over.
#[derive(Default)]
pub struct Work {
    /// The new upstream's upload, started with the readiness wait.
    pub staged: Option<Staged>,
    /// The cutover probe: a client through the public address while
    /// traffic moves.
    pub cutover: Option<probe::Probe>,
    /// The last analysis sample (canary, `--watch`), for the record.
    pub analysis: Option<serde_json::Value>,
}

/// Starts what a step needs running beside it, before the step acts: the
/// readiness wait stages the new upstream, the switch starts the cutover
/// probe when traffic moves from a live colour.
pub async fn prepare(stack: &Stack, plan: &Plan, step: Step, work: &mut Work) {
    match step {
        Step::Health if plan.stages_upstream() => {
            work.staged = Some(nginx::stage(stack, plan.to).await);
        }
        Step::Switch if plan.from.is_some() => {
            work.cutover = Some(probe::Probe::start(&stack.config.public_address));
        }
        _ => {}
    }
}

/// What the step line says while it runs.
pub fn describe(stack: &Stack, plan: &Plan, step: Step) -> String {
    let name = stack.config.app(plan.to);
    match step {
        Step::Start if plan.start == Start::Kept => format!("{name} (kept container)"),
        Step::Start if plan.replicas > 1 => {
            format!("{name} x{} from {}", plan.replicas, plan.image)
        }
        Step::Start => format!("{name} from {}", plan.image),
        Step::Health => format!("{name} (timeout {} s)", stack.config.ready_timeout),
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
            plan.from
                .map_or("-".to_string(), |from| stack.config.app(from))
        ),
        Step::Drain => format!(
            "{} (timeout {} s)",
            plan.from
                .map_or(String::new(), |from| stack.config.app(from)),
            stack.config.drain_timeout
        ),
        Step::Remove => format!("stop and remove {name}"),
        Step::CreateProxy => format!("{} from {}", stack.config.name("nginx_next"), plan.image),
        Step::ReplaceProxy => format!("{}: old stopped, new started", stack.config.name("nginx")),
    }
}

/// Waits for a staged upload; a task that panicked is an error.
async fn staged_upload(staged: Staged) -> anyhow::Result<()> {
    staged
        .await
        .map_err(|error| anyhow::anyhow!("uploading the upstream: {error}"))?
}

/// Acts on one state; returns the line that reports it done.
pub async fn act(
    stack: &mut Stack,
    plan: &Plan,
    step: Step,
    work: &mut Work,
) -> anyhow::Result<String> {
    let name = stack.config.app(plan.to);
    match step {
        Step::Start => {
            if plan.start == Start::Kept {
                let names = containers::start_kept(stack, plan.to).await?;
                return Ok(names.join(", "));
            }
            containers::start_fresh(stack, plan.to, &plan.image, plan.replicas, &plan.extra_env)
                .await?;
            Ok(stack.config.app_replicas(plan.to, plan.replicas).join(", "))
        }
        Step::Health => match plan.health {
            Health::Wait => {
                containers::wait_ready(stack, plan.to).await?;
                Ok(format!("{name} ready"))
            }
            Health::Now if containers::ready_now(stack, plan.to).await => {
                Ok(format!("{name} ready"))
            }
            Health::Now => Err(DeployError::Health(format!(
                "{name} is not running and ready (use --force to switch anyway)"
            ))
            .into()),
            Health::Forced => Ok(format!("{name} not checked (--force)")),
        },
        Step::Smoke => {
            containers::smoke(stack, plan.to).await?;
            Ok("every check passed".into())
        }
        Step::Canary => {
            let (Some(canary), Some(from)) = (&plan.canary, plan.from) else {
                return Ok("no canary".into());
            };
            // The staged single-colour upstream is overwritten here; the
            // switch renders its own afterwards.
            if let Some(upload) = work.staged.take() {
                staged_upload(upload).await?;
            }
            let mut passed = Vec::new();
            for &percent in &canary.steps {
                let text = nginx::render_canary(stack, from, plan.to, percent).await?;
                nginx::apply(stack, &text).await?;
                let until = analysis::Until::Counted {
                    seconds: canary.analysis,
                    timeout: canary.timeout,
                };
                let detail = analysis::run_step(
                    stack,
                    plan.to,
                    Some(from),
                    percent,
                    until,
                    &mut work.analysis,
                )
                .await?;
                stack.events.progress(&detail);
                passed.push(detail);
            }
            Ok(passed.join("; "))
        }
        Step::Switch => {
            let steady = match plan.from {
                None => nginx::FIRST_SWITCH_STEADY,
                Some(_) => Duration::ZERO,
            };
            match work.staged.take() {
                Some(upload) => {
                    staged_upload(upload).await?;
                    nginx::reload(stack).await?;
                    nginx::verify(stack, plan.to, steady).await?;
                }
                None => nginx::switch_to(stack, plan.to, steady).await?,
            }
            Ok(format!(
                "{} live, verified through {}",
                plan.to, stack.config.public_address
            ))
        }
        Step::Watch => {
            let seconds = plan.watch.unwrap_or_default();
            let until = analysis::Until::Elapsed(seconds);
            analysis::run_step(stack, plan.to, None, 100, until, &mut work.analysis).await
        }
        Step::Drain => {
            let from = plan.from.unwrap_or(plan.to.other());
            match containers::drain(stack, from).await? {
                Drained::Stopped => Ok(format!(
                    "{} drained and stopped (kept for rollback)",
                    stack.config.app(from)
                )),
                Drained::AlreadyStopped(why) => Ok(format!("{why}: nothing to drain")),
            }
        }
        Step::Remove => {
            containers::retire(stack, plan.to, true).await?;
            Ok("removed".into())
        }
        Step::CreateProxy => {
            proxy::create_next(stack, plan.previous_upstream.as_deref()).await?;
            Ok("created, upstream copied".into())
        }
        Step::ReplaceProxy => {
            proxy::replace_with_next(stack, plan.from).await?;
            Ok(format!(
                "{} runs {}",
                stack.config.name("nginx"),
                plan.image
            ))
        }
    }
}

/// What the undo line says while it runs.
pub fn describe_undo(stack: &Stack, undo: Undo) -> String {
    match undo {
        Undo::RestoreUpstream => "restore the previous upstream".into(),
        Undo::Retire { color, remove } => {
            let what = if remove { "stop and remove" } else { "stop" };
            format!("{what} {}", stack.config.app(color))
        }
        Undo::RemoveNewProxy => format!("remove {}", stack.config.name("nginx_next")),
        Undo::PutBackProxy => format!("put back {}", stack.config.name("nginx")),
    }
}

/// Carries out one undo.
pub async fn undo(stack: &Stack, plan: &Plan, undo: Undo, work: &mut Work) -> anyhow::Result<()> {
    match undo {
        Undo::RestoreUpstream => {
            // A staged upload lands first, so the restore is the last write.
            if let Some(upload) = work.staged.take() {
                let _ = staged_upload(upload).await;
            }
            restore(stack, plan).await
        }
        Undo::Retire { color, remove } => containers::retire(stack, color, remove).await,
        Undo::RemoveNewProxy => {
            docker::remove(&stack.docker, &stack.config.name("nginx_next")).await
        }
        Undo::PutBackProxy => proxy::put_back(stack).await,
    }
}

/// Applies the upstream from before the switch and checks the old colour
/// answers again through the public address.
async fn restore(stack: &Stack, plan: &Plan) -> anyhow::Result<()> {
    let previous = plan
        .previous_upstream
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no previous upstream was saved"))?;
    nginx::apply(stack, previous).await?;
    if let Some(from) = plan.from {
        nginx::verify(stack, from, Duration::ZERO).await?;
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
pub async fn show_logs(stack: &Stack, plan: &Plan, logs: Logs) {
    match logs {
        Logs::NewColour => containers::report_logs(stack, plan.to).await,
        Logs::Proxy => containers::report_container_logs(stack, &stack.config.name("nginx")).await,
    }
}
