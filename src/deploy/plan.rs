//! A deploy, switch or rollback is a plan of explicit states, run by one
//! step runner:
//!
//! ```text
//! Planned -> Started -> Healthy -> Smoked -> Switched -> Drained -> Recorded
//! ```
//!
//! `deploy` and `rollback` walk them all; `switch` is Planned -> Healthy ->
//! Switched -> Recorded (the old colour keeps running). Before acting on a
//! state the runner records it in the journal, so a run killed anywhere
//! leaves a record of how far it got.
//!
//! Each state owns its undo, pushed before the state is acted on:
//! - Started: the colour this run started is stopped gracefully (its
//!   clients get goodbye), and removed when this run created it.
//! - Switched: the previous upstream is applied again and verified. The new
//!   upstream file is uploaded while the colour gets ready (Healthy) so the
//!   switch itself only tests and reloads it; the undo is pushed then.
//!
//! A step that fails, or the first SIGINT/SIGTERM, unwinds the undos in
//! reverse while the drain has not begun: traffic stays where it was and
//! nothing this run started is left. A failed restore stops the unwinding
//! (a container Nginx may route to is never stopped) and ends in
//! `NeedsRecover`. Once the drain has begun the run finishes: the old
//! colour's clients are already moving to the new one.
//!
//! The runner also owns what the user sees: each step with its duration
//! (`events.rs`), the cutover probe while traffic moves, and the summary.

use std::time::Instant;

use serde_json::json;

use super::containers::{self, Drained};
use super::gate::Point;
use super::journal::{Outcome, Run};
pub use super::state::{Action, State};
use super::{DeployError, Stack, analysis, nginx, probe};
use crate::secrets::{say, say_err};
use crate::signal::Signal;
use crate::stack::Color;

/// How the `to` colour comes to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new container from `Plan::image` (a deploy's standby).
    Fresh,
    /// The stopped container kept for rollback is started again.
    Kept,
    /// It runs already (`switch`): no Started state.
    Running,
}

/// How the `to` colour is judged fit for traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Wait until `wsctl probe` inside it says ready (up to `ready_timeout`).
    Wait,
    /// It must be ready now (`switch`).
    Now,
    /// `switch --force`: not checked.
    Forced,
}

/// What a command asks the runner to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub action: Action,
    pub from: Option<Color>,
    pub to: Color,
    pub image: String,
    pub start: Start,
    pub health: Health,
    pub smoke: bool,
    /// Stop the old colour after the switch (deploy, rollback).
    pub drain: bool,
    /// The upstream file before this run: what undoing the switch restores.
    pub previous_upstream: Option<String>,
    /// Containers of a freshly started colour.
    pub replicas: usize,
    /// `deploy --env`: environment for the started colour only.
    pub extra_env: std::collections::BTreeMap<String, String>,
    /// `deploy --canary-steps`: weighted steps under analysis before the
    /// switch.
    pub canary: Option<Canary>,
    /// `deploy --watch`: analysis after the switch, with the old colour
    /// kept running to switch straight back to.
    pub watch: Option<std::time::Duration>,
    /// `deploy --no-switch`: stop before the switch, the new colour left
    /// running and checked, without traffic (outcome `paused`).
    pub pause: bool,
}

/// A canary's steps and the analysis of each.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// Percent of new connections to the new colour, rising, each below
    /// 100 (100 is the switch itself).
    pub steps: Vec<u8>,
    /// Seconds of passing analysis each step needs.
    pub analysis: std::time::Duration,
    /// How long a step may wait for the traffic its analysis needs.
    pub timeout: std::time::Duration,
}

impl Plan {
    /// A new standby from `image`, checked, switched to, the old colour drained.
    pub fn deploy(
        from: Option<Color>,
        to: Color,
        image: String,
        upstream: Option<String>,
        replicas: usize,
    ) -> Plan {
        Plan {
            action: Action::Deploy,
            from,
            to,
            image,
            start: Start::Fresh,
            health: Health::Wait,
            smoke: true,
            drain: true,
            previous_upstream: upstream,
            replicas,
            extra_env: Default::default(),
            canary: None,
            watch: None,
            pause: false,
        }
    }

    /// Traffic to a colour that runs already; the old colour keeps running.
    pub fn switch(
        from: Option<Color>,
        to: Color,
        image: String,
        force: bool,
        upstream: Option<String>,
    ) -> Plan {
        Plan {
            action: Action::Switch,
            from,
            to,
            image,
            start: Start::Running,
            health: if force { Health::Forced } else { Health::Now },
            smoke: false,
            drain: false,
            previous_upstream: upstream,
            replicas: 0,
            extra_env: Default::default(),
            canary: None,
            watch: None,
            pause: false,
        }
    }

    /// Back to the colour kept for rollback (recreated from `image` when it
    /// was removed). A kept container is not smoke-tested again: it served
    /// this image with this configuration until the last move, and
    /// readiness (which includes Redis) is checked; skipping the smoke
    /// keeps a rollback under one second. A colour that was removed comes
    /// back with `replicas` containers.
    pub fn rollback(
        from: Option<Color>,
        to: Color,
        image: String,
        kept: bool,
        upstream: Option<String>,
        replicas: usize,
    ) -> Plan {
        Plan {
            action: Action::Rollback,
            from,
            to,
            image,
            start: if kept { Start::Kept } else { Start::Fresh },
            health: Health::Wait,
            smoke: !kept,
            drain: true,
            previous_upstream: upstream,
            replicas,
            extra_env: Default::default(),
            canary: None,
            watch: None,
            pause: false,
        }
    }
}

/// One step moves the run into one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Health,
    Smoke,
    Canary,
    Switch,
    Watch,
    Drain,
}

impl Step {
    fn state(self) -> State {
        match self {
            Step::Start => State::Started,
            Step::Health => State::Healthy,
            Step::Smoke => State::Smoked,
            Step::Canary => State::Canary,
            Step::Switch => State::Switched,
            Step::Watch => State::Watching,
            Step::Drain => State::Drained,
        }
    }

    /// The step's name in progress lines and `--json` events.
    fn name(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::Health => "health",
            Step::Smoke => "smoke",
            Step::Canary => "canary",
            Step::Switch => "switch",
            Step::Watch => "watch",
            Step::Drain => "drain",
        }
    }

    /// Steps an interrupt may cut short: they only look (or, for a
    /// canary, whose undo restores the upstream, look between reloads), so
    /// nothing is left half-done. Starting (an engine call that would go on
    /// without us), the switch and the drain always run to their end.
    fn abortable(self) -> bool {
        matches!(
            self,
            Step::Health | Step::Smoke | Step::Canary | Step::Watch
        )
    }
}

impl Plan {
    fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.start != Start::Running {
            steps.push(Step::Start);
        }
        steps.push(Step::Health);
        if self.smoke {
            steps.push(Step::Smoke);
        }
        if self.canary.is_some() && self.from.is_some_and(|from| from != self.to) {
            steps.push(Step::Canary);
        }
        if self.pause {
            return steps;
        }
        steps.push(Step::Switch);
        let moves = self.from.is_some_and(|from| from != self.to);
        if self.watch.is_some() && moves {
            steps.push(Step::Watch);
        }
        if self.drain && moves {
            steps.push(Step::Drain);
        }
        steps
    }
}

/// An undo, owned by the state that pushed it.
#[derive(Debug)]
enum Undo {
    /// Started: stop the colour gracefully; remove it when this run made it.
    Retire { color: Color, remove: bool },
    /// Switched: apply the previous upstream again.
    RestoreUpstream,
}

/// Runs `plan` to its end, or unwinds it; journals every state.
pub async fn execute(stack: &mut Stack, plan: Plan, started: Instant) -> anyhow::Result<()> {
    let mut run = Run::new(plan.action, plan.from, plan.to, &plan.image);
    run.previous_upstream = plan.previous_upstream.clone();
    run.created_container = plan.start == Start::Fresh;
    stack.journal.write(&stack.docker, &mut run).await?;

    let interrupt = stack.interrupt.clone();
    let mut undo: Vec<Undo> = Vec::new();
    // The upload of the new upstream, started with the readiness wait.
    let mut staged: Option<Staged> = None;
    let mut cutover: Option<probe::Probe> = None;
    let mut draining = false;
    let mut failure: Option<anyhow::Error> = None;

    for step in plan.steps() {
        if !draining && let Some(signal) = interrupt.received() {
            failure = Some(interrupted(signal, ""));
            break;
        }
        // On a stack of several hosts, the switch waits for the fleet.
        if step == Step::Switch
            && let Err(error) = pass_gate(stack, Point::BeforeSwitch).await
        {
            failure = Some(error);
            break;
        }
        match step {
            Step::Start => undo.push(Undo::Retire {
                color: plan.to,
                remove: plan.start == Start::Fresh,
            }),
            // A paused deploy never switches: nothing to stage or restore.
            Step::Health if plan.health == Health::Wait && !plan.pause => {
                undo.push(Undo::RestoreUpstream);
                staged = Some(nginx::stage(stack, plan.to).await);
            }
            Step::Switch => {
                if !undo
                    .iter()
                    .any(|item| matches!(item, Undo::RestoreUpstream))
                {
                    undo.push(Undo::RestoreUpstream);
                }
                if plan.from.is_some() {
                    cutover = Some(probe::Probe::start(&stack.config.public_address));
                }
            }
            // Past this point the run finishes: nothing is undone.
            Step::Drain => {
                draining = true;
                undo.clear();
            }
            Step::Health | Step::Smoke | Step::Canary | Step::Watch => {}
        }
        run.enter(step.state());
        // Not recorded, not acted on: an engine that fails here unwinds
        // the run like any failed step.
        if let Err(error) = stack.journal.write(&stack.docker, &mut run).await {
            failure = Some(error);
            break;
        }
        stack
            .events
            .begin(step.name(), &describe(stack, &plan, step));
        let result = if step.abortable() {
            tokio::select! {
                result = act(stack, &plan, step, &mut staged) => result,
                signal = interrupt.wait() => Err(interrupted(signal, "stopping here")),
            }
        } else {
            act(stack, &plan, step, &mut staged).await
        };
        match result {
            Ok(detail) => {
                stack.events.ok(&detail);
                // Switched: the fleet says drain, or switch back.
                if step == Step::Switch
                    && let Err(error) = pass_gate(stack, Point::Switched).await
                {
                    failure = Some(error);
                    break;
                }
            }
            Err(error) => {
                stack.events.fail(&format!("{error:#}"));
                if matches!(step, Step::Health | Step::Smoke | Step::Canary)
                    && error
                        .downcast_ref::<DeployError>()
                        .is_some_and(|error| !matches!(error, DeployError::Interrupted { .. }))
                {
                    containers::report_logs(stack, plan.to).await;
                }
                failure = Some(error);
                break;
            }
        }
    }

    let (outcome, result) = match failure {
        // --no-switch: the new colour runs, checked, without traffic.
        None if plan.pause => {
            run.traffic = plan.from;
            run.enter(State::Recorded);
            match interrupt.received() {
                Some(signal) => (
                    Outcome::Interrupted,
                    Err(interrupted(signal, "paused before the switch")),
                ),
                None => (Outcome::Paused, Ok(())),
            }
        }
        None => {
            run.traffic = Some(plan.to);
            run.enter(State::Recorded);
            match interrupt.received() {
                Some(signal) => (
                    Outcome::Interrupted,
                    Err(interrupted(
                        signal,
                        &format!("the {} finished; traffic is on {}", plan.action, plan.to),
                    )),
                ),
                None => (Outcome::Succeeded, Ok(())),
            }
        }
        // The drain failed: traffic moved, so the run is recorded.
        Some(error) if draining => {
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
        Some(error) => unwind(stack, &plan, &mut run, undo, staged, error).await,
    };
    let continuity = match cutover {
        Some(cutover) => Some(report_continuity(stack, cutover).await),
        None => None,
    };
    run.outcome = outcome;
    run.seconds = started.elapsed().as_secs_f64();
    run.steps_ms = stack.events.durations_ms();
    run.analysis = stack.last_analysis.take();
    if let Err(error) = &result {
        run.detail = format!("{error:#}");
    }
    // The run is done either way; a journal the engine would not take now
    // shows it in progress, and the next command recovers (a no-op then).
    if let Err(error) = stack.journal.write(&stack.docker, &mut run).await {
        say_err!("wsctl: recording the run's outcome failed: {error:#}");
    }
    summarize(stack, &run, continuity);
    stack.last_run = Some(run);
    result
}

/// Waits at `point` for the fleet's verdict when this run is one host of
/// several (`gate.rs`); a single-host run passes at once.
async fn pass_gate(stack: &mut Stack, point: Point) -> anyhow::Result<()> {
    let Some(gate) = stack.gate.clone() else {
        return Ok(());
    };
    gate.pass(point)
        .await
        .map_err(|why| DeployError::Undone(why).into())
}

/// What the step line says while it runs.
fn describe(stack: &Stack, plan: &Plan, step: Step) -> String {
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
    }
}

/// The upload of the new upstream running on its own task.
type Staged = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Waits for a staged upload; a task that panicked is an error.
async fn staged_upload(staged: Staged) -> anyhow::Result<()> {
    staged
        .await
        .map_err(|error| anyhow::anyhow!("uploading the upstream: {error}"))?
}

/// Acts on one state; returns the line that reports it done.
async fn act(
    stack: &mut Stack,
    plan: &Plan,
    step: Step,
    staged: &mut Option<Staged>,
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
            if let Some(upload) = staged.take() {
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
                let detail = analysis::run_step(stack, plan.to, Some(from), percent, until).await?;
                stack.events.progress(&detail);
                passed.push(detail);
            }
            Ok(passed.join("; "))
        }
        Step::Switch => {
            let steady = match plan.from {
                None => nginx::FIRST_SWITCH_STEADY,
                Some(_) => std::time::Duration::ZERO,
            };
            match staged.take() {
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
            analysis::run_step(stack, plan.to, None, 100, until).await
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
    }
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
async fn unwind(
    stack: &mut Stack,
    plan: &Plan,
    run: &mut Run,
    undo: Vec<Undo>,
    mut staged: Option<Staged>,
    error: anyhow::Error,
) -> (Outcome, anyhow::Result<()>) {
    let signal = match error.downcast_ref::<DeployError>() {
        Some(DeployError::Interrupted { signal, .. }) => Some(*signal),
        _ => None,
    };
    let stays = plan.from.map_or("nothing is live".to_string(), |from| {
        format!("traffic stays on {from}")
    });
    for item in undo.into_iter().rev() {
        let done = match item {
            Undo::RestoreUpstream => {
                stack.events.begin("undo", "restore the previous upstream");
                // A staged upload lands first, so the restore is the last write.
                if let Some(upload) = staged.take() {
                    let _ = staged_upload(upload).await;
                }
                restore(stack, plan, run).await
            }
            Undo::Retire { color, remove } => {
                let name = stack.config.app(color);
                let what = if remove { "stop and remove" } else { "stop" };
                stack.events.begin("undo", &format!("{what} {name}"));
                containers::retire(stack, color, remove).await
            }
        };
        if let Err(undo_error) = done {
            stack.events.fail(&format!("{undo_error:#}"));
            let routes = match nginx::serving(stack).await {
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
        stack.events.ok("undone");
    }
    run.traffic = plan.from;
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

/// Applies the upstream from before the switch and checks the old colour
/// answers again through the public address.
async fn restore(stack: &Stack, plan: &Plan, run: &Run) -> anyhow::Result<()> {
    let previous = run
        .previous_upstream
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no previous upstream was saved"))?;
    nginx::apply(stack, previous).await?;
    if let Some(from) = plan.from {
        nginx::verify(stack, from, std::time::Duration::ZERO).await?;
    }
    // Old Nginx workers stop taking new connections a few milliseconds
    // after a reload, not at once: let them go before the standby they
    // route to is stopped.
    tokio::time::sleep(RELOAD_SETTLE).await;
    Ok(())
}

/// How long old Nginx workers get to stop accepting after a reload.
const RELOAD_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Stops the cutover probe and reports what clients saw.
async fn report_continuity(stack: &Stack, cutover: probe::Probe) -> probe::Continuity {
    // A moment for the last reconnects to land on the new colour.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let continuity = cutover.finish().await;
    if stack.events.is_json() {
        let mut event = serde_json::to_value(&continuity).unwrap_or_default();
        event["event"] = "continuity".into();
        stack.events.emit(event);
    } else {
        say!(
            "{}continuity: {}",
            stack.events.prefix(),
            continuity.summary()
        );
    }
    continuity
}

/// The last line (terminal) or object (`--json`) of a run.
fn summarize(stack: &Stack, run: &Run, continuity: Option<probe::Continuity>) {
    let ok = matches!(run.outcome, Outcome::Succeeded | Outcome::Paused);
    stack.events.emit(json!({
        "event": run.action, "ok": ok, "run_id": run.id, "outcome": run.outcome,
        "from": run.from, "to": run.to, "traffic": run.traffic, "image": run.image,
        "seconds": run.seconds, "steps_ms": run.steps_ms, "continuity": continuity,
    }));
    if !stack.events.is_json() {
        let traffic = run
            .traffic
            .map_or("no colour".to_string(), |color| color.to_string());
        say!(
            "{}{}: {} -> {} {} in {:.1} s; traffic on {traffic}",
            stack.events.prefix(),
            run.action,
            run.from.map_or("none".to_string(), |c| c.to_string()),
            run.to,
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
mod tests {
    use super::*;

    fn plan(action: Action) -> Plan {
        let (from, to) = (Some(Color::Blue), Color::Green);
        match action {
            Action::Switch => Plan::switch(from, to, "x".into(), false, None),
            Action::Rollback => Plan::rollback(from, to, "x".into(), true, None, 1),
            _ => Plan::deploy(from, to, "x".into(), None, 1),
        }
    }

    #[test]
    fn a_deploy_walks_every_state_and_a_switch_keeps_the_old_colour() {
        let deploy = plan(Action::Deploy);
        let states: Vec<State> = deploy.steps().into_iter().map(Step::state).collect();
        assert_eq!(
            states,
            [
                State::Started,
                State::Healthy,
                State::Smoked,
                State::Switched,
                State::Drained
            ]
        );
        let switch = plan(Action::Switch);
        assert_eq!(switch.steps(), [Step::Health, Step::Switch]);
        // A rollback starts its kept container and does not smoke it again.
        let rollback = plan(Action::Rollback);
        assert_eq!(
            rollback.steps(),
            [Step::Start, Step::Health, Step::Switch, Step::Drain]
        );
        // The first deploy has nothing to drain.
        let first = Plan {
            from: None,
            ..plan(Action::Deploy)
        };
        assert!(!first.steps().contains(&Step::Drain));
    }

    #[test]
    fn only_steps_before_the_switch_may_be_cut_short() {
        let abortable: Vec<Step> = plan(Action::Deploy)
            .steps()
            .into_iter()
            .filter(|step| step.abortable())
            .collect();
        assert_eq!(abortable, [Step::Health, Step::Smoke]);
    }

    #[test]
    fn states_are_written_in_snake_case() {
        assert_eq!(State::Switched.to_string(), "switched");
        assert_eq!(Action::Rollback.to_string(), "rollback");
    }
}
