//! What a command asks the runner to do: a plan of explicit states, and
//! each step's rules.
//!
//! ```text
//! Planned -> Started -> Healthy -> Smoked -> Canary -> Switched -> Watching -> Drained -> Recorded
//! ```
//!
//! A plan walks only the states it needs: a `deploy` walks Started,
//! Healthy, Smoked, Switched and Drained (Canary with `--canary-steps`,
//! Watching with `--watch`); a `switch` is Healthy -> Switched (the old
//! colour keeps running); a `rollback` of a kept colour skips Smoked (see
//! `Plan::rollback`); `--no-switch` stops after Smoked; `abort` is Removed;
//! `deploy --proxy` is Created -> Replaced. Before acting on a state the
//! runner (`runner.rs`) records it in the journal, so a run killed anywhere
//! leaves a record of how far it got.
//!
//! Each step owns its rules, so the runner's loop names no step:
//! - its undo, pushed before the step acts (`Step::undo`): Started stops
//!   the colour this run started gracefully (its clients get goodbye) and
//!   removes it when this run created it; Healthy (which stages the new
//!   upstream while the colour gets ready) and Switched restore the
//!   previous upstream; the proxy steps remove the new Nginx or put the old
//!   one back;
//! - whether an interrupt may cut it short (`Step::abortable`);
//! - where it waits for the other hosts of a fleet (`Step::gate_before`,
//!   `Step::gate_after`);
//! - whether the run is past its point of no return once it begins (the
//!   drain: the old colour's clients are already moving);
//! - what it shows when it fails (`Step::shows_logs_of`).
//!
//! What each step does is in `steps.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::coordinator::Point;
pub use super::state::{Action, State};
use crate::deploy::config::Color;

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
    /// The app image (`deploy --proxy`: the Nginx image).
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
    pub extra_env: BTreeMap<String, String>,
    /// `deploy --canary-steps`: weighted steps under analysis before the
    /// switch.
    pub canary: Option<Canary>,
    /// `deploy --watch`: analysis after the switch, with the old colour
    /// kept running to switch straight back to.
    pub watch: Option<Duration>,
    /// `deploy --no-switch`: stop before the switch, the new colour left
    /// running and checked, without traffic (outcome `paused`).
    pub pause: bool,
    /// What the journal says of the run when it succeeds (`abort`).
    pub detail: String,
}

/// A canary's steps and the analysis of each.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// Percent of new connections to the new colour, rising, each below
    /// 100 (100 is the switch itself).
    pub steps: Vec<u8>,
    /// Seconds of passing analysis each step needs.
    pub analysis: Duration,
    /// How long a step may wait for the traffic its analysis needs.
    pub timeout: Duration,
}

impl Plan {
    /// The fields every plan shares; each constructor sets what differs.
    fn base(action: Action, from: Option<Color>, to: Color, image: String) -> Plan {
        Plan {
            action,
            from,
            to,
            image,
            start: Start::Running,
            health: Health::Now,
            smoke: false,
            drain: false,
            previous_upstream: None,
            replicas: 0,
            extra_env: BTreeMap::new(),
            canary: None,
            watch: None,
            pause: false,
            detail: String::new(),
        }
    }

    /// A new standby from `image`, checked, switched to, the old colour drained.
    pub fn deploy(
        from: Option<Color>,
        to: Color,
        image: String,
        upstream: Option<String>,
        replicas: usize,
    ) -> Plan {
        Plan {
            start: Start::Fresh,
            health: Health::Wait,
            smoke: true,
            drain: true,
            previous_upstream: upstream,
            replicas,
            ..Plan::base(Action::Deploy, from, to, image)
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
            health: if force { Health::Forced } else { Health::Now },
            previous_upstream: upstream,
            ..Plan::base(Action::Switch, from, to, image)
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
            start: if kept { Start::Kept } else { Start::Fresh },
            health: Health::Wait,
            smoke: !kept,
            drain: true,
            previous_upstream: upstream,
            replicas,
            ..Plan::base(Action::Rollback, from, to, image)
        }
    }

    /// `promote`: traffic to the colour a `deploy --no-switch` left
    /// running and checked; then the old colour drains, as in a deploy.
    pub fn promote(
        from: Option<Color>,
        to: Color,
        image: String,
        upstream: Option<String>,
    ) -> Plan {
        Plan {
            action: Action::Promote,
            drain: true,
            ..Plan::switch(from, to, image, false, upstream)
        }
    }

    /// `abort` of a paused deploy: its colour stopped and removed; traffic
    /// stays on `live`.
    pub fn abort(live: Option<Color>, paused: Color, image: String, detail: String) -> Plan {
        Plan {
            detail,
            ..Plan::base(Action::Abort, live, paused, image)
        }
    }

    /// `deploy --proxy`: Nginx recreated from wsctl.yaml, serving the
    /// upstream the old one served (`upstream`). Traffic stays on `live`;
    /// the record's `to` is the live colour (blue when none is).
    pub fn proxy(live: Option<Color>, nginx_image: String, upstream: Option<String>) -> Plan {
        Plan {
            previous_upstream: upstream,
            ..Plan::base(
                Action::Proxy,
                live,
                live.unwrap_or(Color::Blue),
                nginx_image,
            )
        }
    }

    /// The plan moves traffic from one colour to another.
    fn moves(&self) -> bool {
        self.from.is_some_and(|from| from != self.to)
    }

    /// The steps the plan walks, in order.
    pub fn steps(&self) -> Vec<Step> {
        match self.action {
            Action::Abort => return vec![Step::Remove],
            Action::Proxy => return vec![Step::CreateProxy, Step::ReplaceProxy],
            _ => {}
        }
        let mut steps = Vec::new();
        if self.start != Start::Running {
            steps.push(Step::Start);
        }
        steps.push(Step::Health);
        if self.smoke {
            steps.push(Step::Smoke);
        }
        if self.canary.is_some() && self.moves() {
            steps.push(Step::Canary);
        }
        if self.pause {
            return steps;
        }
        steps.push(Step::Switch);
        if self.watch.is_some() && self.moves() {
            steps.push(Step::Watch);
        }
        if self.drain && self.moves() {
            steps.push(Step::Drain);
        }
        steps
    }

    /// Where traffic is when the plan has run to its end.
    pub fn traffic_when_done(&self) -> Option<Color> {
        match self.steps().contains(&Step::Switch) {
            true => Some(self.to),
            false => self.from,
        }
    }

    /// What an unwound run says of where things are.
    pub fn stays(&self) -> String {
        let traffic = self.from.map_or("nothing is live".to_string(), |from| {
            format!("traffic stays on {from}")
        });
        match self.action {
            Action::Proxy => format!("the old one is back; {traffic}"),
            _ => traffic,
        }
    }
}

/// One step moves the run into one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Start,
    Health,
    Smoke,
    Canary,
    Switch,
    Watch,
    Drain,
    /// `abort`: the paused colour stopped and removed.
    Remove,
    /// `deploy --proxy`: the new Nginx created, with the live upstream.
    CreateProxy,
    /// `deploy --proxy`: the old Nginx stopped, the new one started in
    /// its place and verified.
    ReplaceProxy,
}

/// An undo, owned by the step that pushed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// Started: stop the colour gracefully; remove it when this run made it.
    Retire { color: Color, remove: bool },
    /// Healthy (staged) or Switched: apply the previous upstream again.
    RestoreUpstream,
    /// The new Nginx of `deploy --proxy` is removed.
    RemoveNewProxy,
    /// The old Nginx of `deploy --proxy` comes back under its name.
    PutBackProxy,
}

impl Step {
    pub fn state(self) -> State {
        match self {
            Step::Start => State::Started,
            Step::Health => State::Healthy,
            Step::Smoke => State::Smoked,
            Step::Canary => State::Canary,
            Step::Switch => State::Switched,
            Step::Watch => State::Watching,
            Step::Drain => State::Drained,
            Step::Remove => State::Removed,
            Step::CreateProxy => State::Created,
            Step::ReplaceProxy => State::Replaced,
        }
    }

    /// The step's name in progress lines and `--json` events.
    pub fn name(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::Health => "health",
            Step::Smoke => "smoke",
            Step::Canary => "canary",
            Step::Switch => "switch",
            Step::Watch => "watch",
            Step::Drain => "drain",
            // As `abort` has always named it.
            Step::Remove => "undo",
            Step::CreateProxy => "create",
            Step::ReplaceProxy => "replace",
        }
    }

    /// The undo this step pushes before it acts (the runner pushes each
    /// kind once). A paused deploy never switches: its readiness wait
    /// stages no upstream.
    pub fn undo(self, plan: &Plan) -> Option<Undo> {
        match self {
            Step::Start => Some(Undo::Retire {
                color: plan.to,
                remove: plan.start == Start::Fresh,
            }),
            Step::Health if plan.stages_upstream() => Some(Undo::RestoreUpstream),
            Step::Switch => Some(Undo::RestoreUpstream),
            Step::CreateProxy => Some(Undo::RemoveNewProxy),
            Step::ReplaceProxy => Some(Undo::PutBackProxy),
            _ => None,
        }
    }

    /// Steps an interrupt may cut short: they only look (or, for a
    /// canary, whose undo restores the upstream, look between reloads), so
    /// nothing is left half-done. Starting (an engine call that would go on
    /// without us), the switch, the drain and the proxy's steps always run
    /// to their end.
    pub fn abortable(self) -> bool {
        matches!(
            self,
            Step::Health | Step::Smoke | Step::Canary | Step::Watch
        )
    }

    /// Where a run on one host of several waits before this step.
    pub fn gate_before(self) -> Option<Point> {
        match self {
            Step::Switch | Step::ReplaceProxy => Some(Point::BeforeSwitch),
            _ => None,
        }
    }

    /// Where it waits once this step is done (the fleet says drain, or
    /// switch back).
    pub fn gate_after(self) -> Option<Point> {
        match self {
            Step::Switch => Some(Point::Switched),
            _ => None,
        }
    }

    /// Once this step begins the run finishes: nothing is undone.
    pub fn point_of_no_return(self) -> bool {
        self == Step::Drain
    }

    /// When this step fails on its own (not interrupted), the last log
    /// lines of these containers say why.
    pub fn shows_logs_of(self) -> Option<Logs> {
        match self {
            Step::Health | Step::Smoke | Step::Canary => Some(Logs::NewColour),
            Step::ReplaceProxy => Some(Logs::Proxy),
            _ => None,
        }
    }
}

/// Whose log lines a failed step shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// Every replica of the colour the run brings up.
    NewColour,
    /// The stack's Nginx.
    Proxy,
}

impl Plan {
    /// The readiness wait also uploads the new upstream (so the switch only
    /// tests and reloads it): only when the plan switches after it.
    pub fn stages_upstream(&self) -> bool {
        self.health == Health::Wait && !self.pause
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
            Action::Promote => Plan::promote(from, to, "x".into(), None),
            Action::Abort => Plan::abort(from, to, "x".into(), String::new()),
            Action::Proxy => Plan::proxy(from, "nginx".into(), None),
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
        assert_eq!(
            plan(Action::Promote).steps(),
            [Step::Health, Step::Switch, Step::Drain]
        );
        // The first deploy has nothing to drain.
        let first = Plan {
            from: None,
            ..plan(Action::Deploy)
        };
        assert!(!first.steps().contains(&Step::Drain));
    }

    #[test]
    fn a_canary_and_a_watch_sit_around_the_switch_and_a_pause_stops_before_it() {
        let canary = Plan {
            canary: Some(Canary {
                steps: vec![10, 50],
                analysis: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
            }),
            watch: Some(Duration::from_secs(1)),
            ..plan(Action::Deploy)
        };
        assert_eq!(
            canary.steps(),
            [
                Step::Start,
                Step::Health,
                Step::Smoke,
                Step::Canary,
                Step::Switch,
                Step::Watch,
                Step::Drain
            ]
        );
        let paused = Plan {
            pause: true,
            ..plan(Action::Deploy)
        };
        assert_eq!(paused.steps(), [Step::Start, Step::Health, Step::Smoke]);
        assert!(!paused.stages_upstream(), "a paused deploy never switches");
        assert_eq!(paused.traffic_when_done(), Some(Color::Blue));
        assert_eq!(plan(Action::Deploy).traffic_when_done(), Some(Color::Green));
    }

    #[test]
    fn abort_and_proxy_leave_traffic_where_it_is() {
        let abort = plan(Action::Abort);
        assert_eq!(abort.steps(), [Step::Remove]);
        assert_eq!(abort.traffic_when_done(), Some(Color::Blue));
        let proxy = plan(Action::Proxy);
        assert_eq!(proxy.steps(), [Step::CreateProxy, Step::ReplaceProxy]);
        assert_eq!(proxy.traffic_when_done(), Some(Color::Blue));
        assert_eq!(proxy.to, Color::Blue, "the record names the live colour");
        assert!(proxy.stays().starts_with("the old one is back"));
    }

    #[test]
    fn only_steps_before_the_switch_may_be_cut_short() {
        let abortable: Vec<Step> = plan(Action::Deploy)
            .steps()
            .into_iter()
            .filter(|step| step.abortable())
            .collect();
        assert_eq!(abortable, [Step::Health, Step::Smoke]);
        assert!(!Step::ReplaceProxy.abortable() && !Step::Remove.abortable());
    }

    #[test]
    fn the_switch_waits_for_the_fleet_on_both_sides_and_the_drain_is_final() {
        let deploy = plan(Action::Deploy);
        let gated: Vec<(Step, Option<Point>, Option<Point>)> = deploy
            .steps()
            .into_iter()
            .map(|step| (step, step.gate_before(), step.gate_after()))
            .filter(|(_, before, after)| before.is_some() || after.is_some())
            .collect();
        assert_eq!(
            gated,
            [(
                Step::Switch,
                Some(Point::BeforeSwitch),
                Some(Point::Switched)
            )]
        );
        let final_steps: Vec<Step> = deploy
            .steps()
            .into_iter()
            .filter(|step| step.point_of_no_return())
            .collect();
        assert_eq!(final_steps, [Step::Drain]);
    }

    #[test]
    fn each_step_owns_its_undo() {
        let deploy = plan(Action::Deploy);
        let undos: Vec<Undo> = deploy
            .steps()
            .into_iter()
            .filter_map(|step| step.undo(&deploy))
            .collect();
        assert_eq!(
            undos,
            [
                Undo::Retire {
                    color: Color::Green,
                    remove: true
                },
                Undo::RestoreUpstream,
                Undo::RestoreUpstream
            ]
        );
        // A kept colour is stopped, never removed, when a rollback unwinds.
        let rollback = plan(Action::Rollback);
        assert_eq!(
            Step::Start.undo(&rollback),
            Some(Undo::Retire {
                color: Color::Green,
                remove: false
            })
        );
        assert_eq!(Step::Health.undo(&plan(Action::Switch)), None);
    }
}
