//! Recovery: bringing a stack that a killed run (SIGKILL, a lost machine)
//! left behind to a consistent state. Every command that takes the lock
//! looks for such runs first (`runner::settled`), so the next deploy
//! recovers by itself; `wsctl recover` does it on request and also repairs
//! an Nginx whose loaded configuration and upstream file disagree.
//!
//! The rule: nothing ever stops or removes a container Nginx routes to.
//! 1. Pick the colour to serve: the first of (what Nginx has loaded, what
//!    its file names, what `/status` reported, blue, green) whose container
//!    is running and ready; failing that, the first that exists and becomes
//!    ready when started.
//! 2. Make Nginx serve it, loaded and on disk (a switch, verified), unless
//!    both already name it.
//! 3. Only then retire the other colour gracefully: removed when an
//!    unfinished run created it (a standby that never finished), kept
//!    stopped for rollback otherwise.
//! 4. Mark the unfinished runs `recovered` and journal the recover itself.

use std::time::Instant;

use super::engine::Engine;
use super::engine::Recovery;
use super::journal::{self, Outcome, Run};
use super::state::{Action, State};
use super::{DeployError, nginx};
use crate::deploy::config::Color;
use crate::shared::secrets::say_err;

/// Under the lock, in the preflight: recovers the runs that died
/// unfinished, if any, as a step of its own between two parts of the
/// preflight; with `Recovery::Always` (`wsctl recover`) repairs the stack
/// whatever the journal says. Returns the recover's record, when it wrote
/// one.
pub(super) async fn unfinished_runs(
    stack: &mut impl Engine,
    recovery: Recovery,
) -> anyhow::Result<Option<Run>> {
    let unfinished = find_unfinished(stack).await?;
    if recovery == Recovery::Always {
        stack.events().ok("lock held");
        return repair(stack, unfinished).await;
    }
    if unfinished.is_empty() {
        return Ok(None);
    }
    stack.events().ok("lock held; an unfinished run to recover");
    let recorded = repair(stack, unfinished).await?;
    stack.events().begin("preflight", "live colour");
    Ok(recorded)
}

/// The runs that died unfinished, each announced (under the lock).
async fn find_unfinished(stack: &mut impl Engine) -> anyhow::Result<Vec<Run>> {
    let runs = stack.runs().await?;
    let unfinished: Vec<Run> = journal::unfinished(&runs).into_iter().cloned().collect();
    for run in &unfinished {
        let line = format!("run {} did not finish; recovering", run.describe());
        if stack.events().is_json() {
            stack.events().emit(serde_json::json!({
                "event": "unfinished", "run_id": run.id, "action": run.action,
                "state": run.state, "detail": line,
            }));
        } else {
            say_err!("wsctl: {line}");
        }
    }
    Ok(unfinished)
}

async fn repair(stack: &mut impl Engine, unfinished: Vec<Run>) -> anyhow::Result<Option<Run>> {
    let started = Instant::now();
    stack
        .events()
        .begin("recover", "Nginx, both colours, the journal");
    let serving = stack.serving().await?;
    let Some(target) = pick_target(stack, &serving).await? else {
        return nothing_to_serve(stack, unfinished, &serving).await;
    };
    let mut changes = Vec::new();
    let mut reloads = Vec::new();
    if !serving.everywhere(target) {
        stack
            .switch(target, None, nginx::FIRST_SWITCH_STEADY)
            .await?;
        let reason = format!("traffic to {target}, the colour that can serve");
        reloads.push(stack.reloaded("recover", reason, Instant::now()));
        changes.push(format!("Nginx now serves {target}"));
    }
    let other = target.other();
    let others = stack.presence(other).await?;
    let name = others.names.join(", ");
    let created_unfinished = unfinished
        .iter()
        .any(|run| run.to == Some(other) && run.created_container);
    if others.exists && (others.running || created_unfinished) {
        stack.retire(other, created_unfinished).await?;
        changes.push(if created_unfinished {
            format!("{name} removed (an unfinished run's standby)")
        } else {
            format!("{name} stopped (kept for rollback)")
        });
    }
    let summary = if changes.is_empty() {
        format!("consistent: traffic on {target}")
    } else {
        format!("traffic on {target}; {}", changes.join("; "))
    };
    for mut run in unfinished.iter().cloned() {
        run.outcome = Outcome::Recovered;
        run.traffic = Some(target);
        run.detail = format!(
            "died in state {}; recovered by {}: {summary}",
            run.state,
            journal::performer()
        );
        stack.record(&mut run).await?;
    }
    let mut recorded = None;
    if !changes.is_empty() || !unfinished.is_empty() {
        let image = stack.image_of(target).await?;
        let mut run = Run::new(Action::Recover, serving.live(), target, &image);
        run.enter(State::Recorded);
        run.outcome = Outcome::Succeeded;
        run.traffic = Some(target);
        run.detail = summary.clone();
        run.seconds = started.elapsed().as_secs_f64();
        run.reloads = super::reloads::collect(reloads).await;
        stack.record(&mut run).await?;
        recorded = Some(run);
    }
    stack.events().ok(&summary);
    Ok(recorded)
}

/// The colour to serve: running and ready, else startable and ready.
async fn pick_target(
    stack: &impl Engine,
    serving: &nginx::Serving,
) -> anyhow::Result<Option<Color>> {
    let mut candidates: Vec<Color> = Vec::new();
    for color in [serving.live(), serving.file, serving.status_color]
        .into_iter()
        .flatten()
        .chain(Color::ALL)
    {
        if !candidates.contains(&color) {
            candidates.push(color);
        }
    }
    for &color in &candidates {
        if stack.ready_now(color).await {
            return Ok(Some(color));
        }
    }
    for &color in &candidates {
        if stack.presence(color).await?.exists {
            stack.start_kept(color).await?;
            if stack.wait_ready(color).await.is_ok() {
                return Ok(Some(color));
            }
        }
    }
    Ok(None)
}

/// No colour can serve: put back the upstream from before the oldest
/// unfinished run (the state before anything was live) and say so.
async fn nothing_to_serve(
    stack: &mut impl Engine,
    unfinished: Vec<Run>,
    serving: &nginx::Serving,
) -> anyhow::Result<Option<Run>> {
    let previous = unfinished
        .iter()
        .find_map(|run| run.previous_upstream.clone());
    if let Some(previous) = &previous
        && (serving.file.is_some() || serving.loaded.is_some())
    {
        stack.apply_upstream(previous).await?;
    }
    for mut run in unfinished {
        run.outcome = Outcome::Recovered;
        run.traffic = None;
        run.detail = format!("died in state {}; no colour can serve", run.state);
        stack.record(&mut run).await?;
    }
    if serving.live().is_some() {
        let error = DeployError::NeedsRecover(
            "no colour is running and ready; deploy a new one (`wsctl deploy`)".into(),
        );
        stack.events().fail(&error.to_string());
        return Err(error.into());
    }
    stack.events().ok("nothing is live yet");
    Ok(None)
}
