//! The runner: one run of a command that moves traffic, from start to end.
//!
//! ```text
//! preflight: images, lock, bootstrap, recover unfinished runs, what Nginx
//!            serves, the coordinator's Preflight point, the operation's
//!            own checks (operations.rs), which return a plan or refuse
//! the plan:  each step journaled, then acted on (plan.rs, steps.rs)
//! the end:   the outcome, the cutover's continuity, the record, the summary
//! ```
//!
//! A step that fails, or the first SIGINT/SIGTERM, unwinds the undos in
//! reverse while the run is before its point of no return: traffic stays
//! where it was and nothing this run started is left. A failed undo stops
//! the unwinding (a container Nginx may route to is never stopped) and ends
//! in `NeedsRecover`. Past the point of no return (the drain) the run
//! finishes: the old colour's clients are already moving to the new one.
//!
//! The runner returns what happened (`Report`); it leaves nothing on the
//! stack handle. It also owns what the user sees: each step with its
//! duration (`events.rs`) and the summary.

use std::time::Instant;

use serde_json::json;

use super::coordinator::{Coordinator, Point};
use super::engine::Engine;
use super::journal::{Outcome, Run};
use super::operations::Operation;
use super::plan::{Plan, Start, State, Undo};
use super::steps::{self, Work};
use super::{DeployError, hooks, notify, recover, reloads};
use crate::client::probe;
use crate::shared::secrets::{say, say_err};
use crate::shared::signal::Signal;

/// Who holds the stack's lock for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The runner takes it (waiting up to `lock_wait`) and lets it go.
    Take,
    /// The caller holds it: the fleet locks every host, in order, first.
    Held,
}

pub use super::engine::Recovery;

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// The run as journaled (a refusal too, with outcome `refused`);
    /// `None` when it failed before its plan otherwise, or a `recover`
    /// found nothing to do.
    pub run: Option<Run>,
    /// What the cutover probe's clients saw while traffic moved.
    pub continuity: Option<probe::Continuity>,
}

/// Runs `operation` on `stack` from preflight to summary. The result is
/// the command's: `Err` with the error its exit code comes from.
pub async fn run<E: Engine>(
    engine: &mut E,
    operation: &Operation,
    lease: Lease,
    coordinator: &impl Coordinator,
) -> (Report, anyhow::Result<()>) {
    let started = Instant::now();
    engine
        .events()
        .begin("preflight", operation.preflight_what());
    let images = operation.images(engine.config());
    // The certificate and key of `tls:` are checked before anything
    // changes: a deploy must not start a colour it cannot serve.
    let usable = match super::tls::material(engine.config()) {
        Ok(_) => engine.ensure_images(&images).await,
        Err(refusal) => Err(refusal.into()),
    };
    let (report, result) = match usable {
        Ok(()) => {
            settled(
                engine,
                &operation.command(),
                lease,
                operation.recovery(),
                operation.creates(),
                async |engine, recovered| {
                    Ok(planned(engine, operation, recovered, coordinator, started).await)
                },
            )
            .await
        }
        Err(error) => Err(error),
    }
    .unwrap_or_else(|error| (Report::default(), Err(error)));
    close_open_step(engine.events(), &result);
    let report = match (&report.run, &result) {
        (None, Err(error)) if is_refusal(error) => Report {
            run: record_refusal(engine, operation, error).await,
            ..report
        },
        _ => report,
    };
    coordinator.finished(result.is_ok());
    (report, result)
}

/// A command that stopped before its plan because it would not go on
/// (bad input, nothing to act on, the lock held, a stack that needs
/// `recover`), as opposed to one that failed at something it tried.
fn is_refusal(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<DeployError>(),
        Some(DeployError::Usage(_) | DeployError::LockHeld { .. } | DeployError::NeedsRecover(_))
    )
}

/// Journals a refusal, so that `history` shows who asked for what and why
/// it was not done. Best effort: the refusal itself is the command's
/// result, and an engine that cannot be written to says so elsewhere.
async fn record_refusal(
    engine: &mut impl Engine,
    operation: &Operation,
    error: &anyhow::Error,
) -> Option<Run> {
    let mut run = Run::refused(operation.action(), None, &format!("{error:#}"));
    run.enter(super::state::State::Recorded);
    engine.record(&mut run).await.ok().map(|()| run)
}

/// A lock, bootstrap or refusal error ends the still-open preflight step.
pub fn close_open_step<T>(events: &mut super::Events, result: &anyhow::Result<T>) {
    if let Err(error) = result
        && events.step_open()
    {
        events.fail(&format!("{error:#}"));
    }
}

/// The preflight every run (and `prune`) shares: the lock (unless the
/// caller holds it), then a consistent stack (network, Redis and Nginx
/// exist, a run that died unfinished is recovered), then `body`, given
/// the recover's own record when one was written.
pub async fn settled<E: Engine, T>(
    engine: &mut E,
    command: &str,
    lease: Lease,
    recovery: Recovery,
    create: super::engine::Create,
    body: impl AsyncFnOnce(&mut E, Option<Run>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let lock = match lease {
        Lease::Held => None,
        Lease::Take => Some(engine.lock(command).await?),
    };
    let result = async {
        engine.bootstrap(create).await?;
        let recovered = recover::unfinished_runs(engine, recovery).await?;
        body(engine, recovered).await
    }
    .await;
    if let Some(lock) = lock {
        let released = engine.unlock(lock).await;
        let value = result?;
        released?;
        return Ok(value);
    }
    result
}

/// Under the lock, on a consistent stack: the rest of the preflight, then
/// the plan. `wsctl recover` has done its work by now.
async fn planned<E: Engine>(
    engine: &mut E,
    operation: &Operation,
    recovered: Option<Run>,
    coordinator: &impl Coordinator,
    started: Instant,
) -> (Report, anyhow::Result<()>) {
    if operation.recovery() == Recovery::Always {
        let report = Report {
            run: recovered,
            continuity: None,
        };
        return (report, Ok(()));
    }
    let prepared = async {
        // A deploy rotates a changed certificate as `wsctl tls reload`
        // does; `deploy --proxy` is what replaces an Nginx that cannot.
        if !matches!(operation, Operation::Proxy) {
            engine.prepare_edge().await?;
        }
        let serving = engine.serving().await?;
        if let Some(disagreement) = serving.disagreement() {
            return Err(DeployError::NeedsRecover(disagreement).into());
        }
        let live = serving.live();
        coordinator
            .pass(Point::Preflight { live })
            .await
            .map_err(DeployError::Undone)?;
        operation.prepare(engine, serving).await
    }
    .await;
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return (Report::default(), Err(error)),
    };
    // A signal during the preflight: nothing has changed yet.
    if let Some(signal) = engine.interrupt().received() {
        return (
            Report::default(),
            Err(interrupted(signal, "nothing was changed")),
        );
    }
    engine.events().ok(&prepared.detail);
    for warning in &prepared.warnings {
        engine.events().warn(warning);
    }
    execute(engine, prepared.plan, coordinator, started).await
}

/// Runs `plan` to its end, or unwinds it; journals every state.
async fn execute<E: Engine>(
    engine: &mut E,
    plan: Plan,
    coordinator: &impl Coordinator,
    started: Instant,
) -> (Report, anyhow::Result<()>) {
    let mut run = Run::new(plan.action, plan.from, plan.to, &plan.image);
    run.previous_upstream = plan.previous_upstream.clone();
    run.created_container = plan.start == Start::Fresh;
    if let Err(error) = engine.record(&mut run).await {
        return (Report::default(), Err(error));
    }
    if let Some(refusal) = pre_hook(engine, &plan, &mut run, started).await {
        notify_end(engine, &run).await;
        return refusal;
    }
    // Told in the background: a slow receiver does not hold up the run.
    let notified_start = {
        let (config, run) = (engine.config().clone(), run.clone());
        tokio::spawn(async move { notify::send(&config, &run, "started").await })
    };

    let interrupt = engine.interrupt().clone();
    let mut work = Work::<E>::default();
    let mut undo: Vec<Undo> = Vec::new();
    let mut past_return = false;
    let mut failure: Option<anyhow::Error> = None;

    for step in plan.steps() {
        if !past_return && let Some(signal) = interrupt.received() {
            failure = Some(interrupted(signal, ""));
            break;
        }
        if let Some(point) = step.gate_before()
            && let Err(error) = pass(coordinator, point).await
        {
            failure = Some(error);
            break;
        }
        if let Some(item) = step.undo(&plan)
            && !undo.contains(&item)
        {
            undo.push(item);
        }
        steps::prepare(engine, &plan, step, &mut work).await;
        if step.point_of_no_return() {
            past_return = true;
            undo.clear();
        }
        run.enter(step.state());
        // Not recorded, not acted on: an engine that fails here unwinds
        // the run like any failed step.
        if let Err(error) = engine.record(&mut run).await {
            failure = Some(error);
            break;
        }
        let line = steps::describe(engine, &plan, step);
        engine.events().begin(step.name(), &line);
        let result = if step.abortable() {
            tokio::select! {
                result = steps::act(engine, &plan, step, &mut work) => result,
                signal = interrupt.wait() => Err(interrupted(signal, "stopping here")),
            }
        } else {
            steps::act(engine, &plan, step, &mut work).await
        };
        match result {
            Ok(detail) => {
                engine.events().ok(&detail);
                if let Some(point) = step.gate_after()
                    && let Err(error) = pass(coordinator, point).await
                {
                    failure = Some(error);
                    break;
                }
            }
            Err(error) => {
                engine.events().fail(&format!("{error:#}"));
                if let Some(logs) = step.shows_logs_of()
                    && failed_on_its_own(&error)
                {
                    steps::show_logs(engine, &plan, logs).await;
                }
                failure = Some(error);
                break;
            }
        }
    }

    let (outcome, result) = match failure {
        None => {
            run.traffic = plan.traffic_when_done();
            run.enter(State::Recorded);
            match interrupt.received() {
                Some(signal) => (
                    Outcome::Interrupted,
                    Err(interrupted(signal, &finished(&plan))),
                ),
                None if plan.pause => (Outcome::Paused, Ok(())),
                None => (Outcome::Succeeded, Ok(())),
            }
        }
        // The drain failed: traffic moved, so the run is recorded.
        Some(error) if past_return => {
            run.traffic = Some(plan.to);
            run.enter(State::Recorded);
            let error = match error.downcast::<DeployError>() {
                Ok(DeployError::Drain(why)) => {
                    DeployError::Drain(format!("{why}; traffic is on {}", plan.to)).into()
                }
                Ok(other) => other.into(),
                Err(other) => other.context(format!("traffic is on {}", plan.to)),
            };
            (Outcome::Failed, Err(error))
        }
        Some(error) => unwind(engine, &plan, &mut run, undo, &mut work, error).await,
    };
    let continuity = match work.cutover.take() {
        Some(cutover) => Some(report_continuity(engine.events_ref(), cutover).await),
        None => None,
    };
    run.outcome = outcome;
    run.seconds = started.elapsed().as_secs_f64();
    run.steps_ms = engine.events_ref().durations_ms();
    run.analysis = work.analysis.take();
    run.reloads = reloads::collect(std::mem::take(&mut work.reloads)).await;
    run.detail = match &result {
        Err(error) => format!("{error:#}"),
        Ok(()) => plan.detail.clone(),
    };
    // Only reported: a post hook never undoes what the run did.
    if let Some((name, command)) = hooks::post(engine.config(), plan.action, outcome) {
        let error = result.as_ref().err().map(|error| format!("{error:#}"));
        let config = engine.config().clone();
        let hook = hooks::run(
            &config,
            &config.hook_hosts,
            name,
            command,
            &run,
            error.as_deref(),
        )
        .await;
        show_hook(engine.events(), &hook);
        if !hook.ok() {
            engine
                .events()
                .warn(&format!("{}; the run stands as it ended", hook.describe()));
        }
        run.hooks.push(hooks::kept(hook));
    }
    // The run is done either way; a journal the engine would not take now
    // shows it in progress, and the next command recovers (a no-op then).
    if let Err(error) = engine.record(&mut run).await {
        say_err!("wsctl: recording the run's outcome failed: {error:#}");
    }
    summarize(engine.events_ref(), &run, continuity.as_ref());
    for failure in notified_start.await.unwrap_or_default() {
        engine.events().warn(&failure);
    }
    notify_end(engine, &run).await;
    let report = Report {
        run: Some(run),
        continuity,
    };
    (report, result)
}

/// Tells wsctl.yaml's webhooks how the run ended; failures are warnings.
async fn notify_end<E: Engine>(engine: &mut E, run: &Run) {
    let config = engine.config().clone();
    for failure in notify::send(&config, run, notify::ended(run)).await {
        engine.events().warn(&failure);
    }
}

/// wsctl.yaml's pre hook for the run's action, after its plan is recorded
/// and before its first step: `Some` with what the run returns when it
/// failed (the run journaled as failed, nothing started).
async fn pre_hook<E: Engine>(
    engine: &mut E,
    plan: &Plan,
    run: &mut Run,
    started: Instant,
) -> Option<(Report, anyhow::Result<()>)> {
    let config = engine.config().clone();
    let (name, command) = hooks::pre(&config, plan.action)?;
    let hook = hooks::run(&config, &config.hook_hosts, name, command, run, None).await;
    show_hook(engine.events(), &hook);
    let ok = hook.ok();
    let line = hook.describe();
    run.hooks.push(hooks::kept(hook));
    if ok {
        return None;
    }
    let error = DeployError::Hook(format!("{line}; nothing was started"));
    run.enter(State::Recorded);
    run.outcome = Outcome::Failed;
    run.traffic = plan.from;
    run.detail = error.to_string();
    run.seconds = started.elapsed().as_secs_f64();
    if let Err(error) = engine.record(run).await {
        say_err!("wsctl: recording the run's outcome failed: {error:#}");
    }
    summarize(engine.events_ref(), run, None);
    let report = Report {
        run: Some(run.clone()),
        continuity: None,
    };
    Some((report, Err(error.into())))
}

/// A hook's run for people (its output, indented) or as a `hook` event.
fn show_hook(events: &mut super::Events, hook: &super::journal::HookRun) {
    if events.is_json() {
        let mut event = serde_json::to_value(hook).unwrap_or_default();
        event["event"] = "hook".into();
        events.emit(event);
        return;
    }
    say_err!("{}hook {}: {}", events.prefix(), hook.hook, hook.describe());
    for line in hook.output.lines() {
        say_err!("{}  | {line}", events.prefix());
    }
}

/// A step's own failure, as opposed to an interrupt or an error of the
/// engine itself (whose logs say nothing about the app).
fn failed_on_its_own(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<DeployError>()
        .is_some_and(|error| !matches!(error, DeployError::Interrupted { .. }))
}

/// Waits at `point` for the coordinator's verdict; an `Undo` unwinds.
async fn pass(coordinator: &impl Coordinator, point: Point) -> anyhow::Result<()> {
    coordinator
        .pass(point)
        .await
        .map_err(|why| DeployError::Undone(why).into())
}

/// What an interrupted run that had finished says.
fn finished(plan: &Plan) -> String {
    if plan.pause {
        return "paused before the switch".into();
    }
    let traffic = plan
        .traffic_when_done()
        .map_or("no colour".to_string(), |color| color.to_string());
    format!("the {} finished; traffic is on {traffic}", plan.action)
}

fn interrupted(signal: Signal, outcome: &str) -> anyhow::Error {
    DeployError::Interrupted {
        signal,
        outcome: outcome.to_string(),
    }
    .into()
}

/// Undoes what the run did, newest first. Returns the run's outcome and
/// the error the command ends with.
async fn unwind<E: Engine>(
    engine: &mut E,
    plan: &Plan,
    run: &mut Run,
    undo: Vec<Undo>,
    work: &mut Work<E>,
    error: anyhow::Error,
) -> (Outcome, anyhow::Result<()>) {
    let signal = match error.downcast_ref::<DeployError>() {
        Some(DeployError::Interrupted { signal, .. }) => Some(*signal),
        _ => None,
    };
    for item in undo.into_iter().rev() {
        let what = steps::describe_undo(engine, item);
        engine.events().begin("undo", &what);
        if let Err(undo_error) = steps::undo(engine, plan, item, work).await {
            engine.events().fail(&format!("{undo_error:#}"));
            let routes = match engine.serving().await {
                Ok(serving) => serving
                    .live()
                    .map_or("no colour".to_string(), |color| color.to_string()),
                Err(_) => "an unknown colour".to_string(),
            };
            let why = format!(
                "{error:#}; undoing it failed too ({undo_error:#}); Nginx routes to {routes}"
            );
            return (
                Outcome::NeedsRecover,
                Err(DeployError::NeedsRecover(why).into()),
            );
        }
        engine.events().ok(&format!("undone: {what}"));
    }
    run.traffic = plan.from;
    let stays = plan.stays();
    match signal {
        Some(signal) => (
            Outcome::Interrupted,
            Err(interrupted(
                signal,
                &format!("the {} was undone; {stays}", plan.action),
            )),
        ),
        None => {
            let aborted = matches!(
                error.downcast_ref::<DeployError>(),
                Some(DeployError::Analysis(_) | DeployError::Inconclusive(_))
            );
            let outcome = if aborted {
                Outcome::Aborted
            } else {
                Outcome::Failed
            };
            (outcome, Err(error.context(stays)))
        }
    }
}

/// Stops the cutover probe and reports what clients saw.
async fn report_continuity(events: &super::Events, cutover: probe::Probe) -> probe::Continuity {
    // A moment for the last reconnects to land on the new colour.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let continuity = cutover.finish().await;
    if events.is_json() {
        let mut event = serde_json::to_value(&continuity).unwrap_or_default();
        event["event"] = "continuity".into();
        events.emit(event);
    } else {
        say!("{}continuity: {}", events.prefix(), continuity.summary());
    }
    continuity
}

/// The last line (terminal) or object (`--json`) of a run.
fn summarize(events: &super::Events, run: &Run, continuity: Option<&probe::Continuity>) {
    let ok = matches!(run.outcome, Outcome::Succeeded | Outcome::Paused);
    events.emit(json!({
        "event": run.action, "ok": ok, "run_id": run.id, "outcome": run.outcome,
        "from": run.from, "to": run.to, "traffic": run.traffic, "image": run.image,
        "seconds": run.seconds, "steps_ms": run.steps_ms, "continuity": continuity,
        "detail": run.detail,
    }));
    if !events.is_json() {
        let traffic = run
            .traffic
            .map_or("no colour".to_string(), |color| color.to_string());
        say!(
            "{}{}: {} -> {} {} in {:.1} s; traffic on {traffic}",
            events.prefix(),
            run.action,
            run.from.map_or("none".to_string(), |c| c.to_string()),
            run.to.map_or("none".to_string(), |c| c.to_string()),
            match run.outcome {
                Outcome::Paused => "paused before the switch (`wsctl promote` or `wsctl abort`)",
                _ if ok => "done",
                _ => "not done",
            },
            run.seconds
        );
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
