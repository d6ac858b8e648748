//! The runner's logic against an in-memory engine: which steps run, in
//! which order undos unwind, what an interrupt at each step leaves, what a
//! coordinator's verdict does, and what recover decides. The same runner
//! runs against the real Docker Engine in `tests/it/deploy*.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::deploy::analysis::Until;
use crate::deploy::config::{Color, StackConfig};
use crate::deploy::containers::Drained;
use crate::deploy::coordinator::{Point, Solo};
use crate::deploy::engine::{Engine, Presence};
use crate::deploy::nginx::Serving;
use crate::deploy::operations::DeployRequest;
use crate::deploy::state::Action;
use crate::deploy::{Events, journal};
use crate::shared::signal::{Interrupt, Signal};

/// One colour as the model has it.
#[derive(Debug, Clone, Default)]
struct Colour {
    exists: bool,
    running: bool,
    ready: bool,
    image: String,
}

/// The stack the model stands for.
#[derive(Debug, Default)]
struct World {
    colours: BTreeMap<Color, Colour>,
    /// What the edge routes new connections to.
    routes: Option<Color>,
    journal: Vec<Run>,
    /// Every call that changes something, in order.
    calls: Vec<String>,
}

/// An engine in memory, with one call made to fail or to bring a signal.
struct Model {
    config: StackConfig,
    events: Events,
    interrupt: Interrupt,
    world: Mutex<World>,
    /// Calls (their log line's first words) that fail.
    fails: Vec<&'static str>,
    /// A call during which SIGTERM arrives.
    signal_at: Option<&'static str>,
}

impl Model {
    /// Blue live with `v1`, green absent.
    fn blue_live() -> Model {
        let mut world = World::default();
        world.colours.insert(
            Color::Blue,
            Colour {
                exists: true,
                running: true,
                ready: true,
                image: "v1".into(),
            },
        );
        world.colours.insert(Color::Green, Colour::default());
        world.routes = Some(Color::Blue);
        Model {
            config: StackConfig::default(),
            events: Events::new(true),
            interrupt: Interrupt::default(),
            world: Mutex::new(world),
            fails: Vec::new(),
            signal_at: None,
        }
    }

    fn failing(mut self, call: &'static str) -> Model {
        self.fails.push(call);
        self
    }

    fn signalled_at(self, call: &'static str) -> Model {
        Model {
            signal_at: Some(call),
            ..self
        }
    }

    /// Logs `line`; fails when it is the call made to fail.
    fn call(&self, line: String) -> anyhow::Result<()> {
        let failing = self.fails.iter().any(|fails| line.starts_with(fails));
        if self.signal_at.is_some_and(|at| line.starts_with(at)) {
            self.interrupt.raise(Signal::Terminate);
        }
        self.world.lock().unwrap().calls.push(line.clone());
        match failing {
            true => Err(anyhow::anyhow!("{line} failed")),
            false => Ok(()),
        }
    }

    fn with<T>(&self, change: impl FnOnce(&mut World) -> T) -> T {
        change(&mut self.world.lock().unwrap())
    }

    fn calls(&self) -> Vec<String> {
        self.with(|world| world.calls.clone())
    }

    fn colour(&self, color: Color) -> Colour {
        self.with(|world| world.colours[&color].clone())
    }

    fn routes(&self) -> Option<Color> {
        self.with(|world| world.routes)
    }

    fn last_run(&self) -> Run {
        self.with(|world| world.journal.last().cloned().expect("a run"))
    }
}

fn upstream(color: Color) -> String {
    format!("routes {color}")
}

impl Engine for Model {
    type Staged = Color;
    type Lock = ();

    fn config(&self) -> &StackConfig {
        &self.config
    }
    fn events(&mut self) -> &mut Events {
        &mut self.events
    }
    fn events_ref(&self) -> &Events {
        &self.events
    }
    fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }
    async fn ensure_images(&self, _images: &[String]) -> anyhow::Result<()> {
        Ok(())
    }
    async fn lock(&self, command: &str) -> anyhow::Result<()> {
        self.call(format!("lock {command}"))
    }
    async fn unlock(&self, _lock: ()) -> anyhow::Result<()> {
        self.call("unlock".into())
    }
    async fn bootstrap(&mut self, _create: crate::deploy::engine::Create) -> anyhow::Result<()> {
        Ok(())
    }
    async fn runs(&self) -> anyhow::Result<Vec<Run>> {
        Ok(self.with(|world| world.journal.clone()))
    }
    async fn record(&self, run: &mut Run) -> anyhow::Result<()> {
        self.with(
            |world| match world.journal.iter_mut().find(|r| r.id == run.id) {
                Some(kept) => *kept = run.clone(),
                None => world.journal.push(run.clone()),
            },
        );
        Ok(())
    }
    async fn presence(&self, color: Color) -> anyhow::Result<Presence> {
        let colour = self.colour(color);
        Ok(Presence {
            names: vec![self.config.app(color)],
            exists: colour.exists,
            running: colour.running,
        })
    }
    async fn image_of(&self, color: Color) -> anyhow::Result<String> {
        Ok(self.colour(color).image)
    }
    async fn start_fresh(
        &self,
        color: Color,
        image: &str,
        _count: usize,
        _env: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        self.call(format!("start_fresh {color}"))?;
        self.with(|world| {
            world.colours.insert(
                color,
                Colour {
                    exists: true,
                    running: true,
                    ready: true,
                    image: image.into(),
                },
            )
        });
        Ok(self.config.app(color))
    }
    async fn start_kept(&self, color: Color) -> anyhow::Result<String> {
        self.call(format!("start_kept {color}"))?;
        self.with(|world| {
            let colour = world.colours.get_mut(&color).expect("colour");
            colour.running = colour.exists;
            colour.ready = colour.exists;
        });
        Ok(self.config.app(color))
    }
    async fn retire(&self, color: Color, remove: bool) -> anyhow::Result<()> {
        self.call(format!("retire {color} remove={remove}"))?;
        self.with(|world| {
            let colour = world.colours.get_mut(&color).expect("colour");
            colour.running = false;
            colour.ready = false;
            if remove {
                *colour = Colour::default();
            }
        });
        Ok(())
    }
    async fn wait_ready(&self, color: Color) -> anyhow::Result<()> {
        self.call(format!("wait_ready {color}"))?;
        match self.colour(color).ready {
            true => Ok(()),
            false => Err(DeployError::Health(format!("{color} not ready")).into()),
        }
    }
    async fn ready_now(&self, color: Color) -> bool {
        self.colour(color).ready
    }
    async fn smoke(&self, color: Color) -> anyhow::Result<()> {
        self.call(format!("smoke {color}"))
            .map_err(|error| DeployError::Smoke(format!("{error:#}")).into())
    }
    async fn drain(&mut self, color: Color) -> anyhow::Result<Drained> {
        self.call(format!("drain {color}"))
            .map_err(|error| DeployError::Drain(format!("{error:#}")))?;
        self.with(|world| {
            let colour = world.colours.get_mut(&color).expect("colour");
            colour.running = false;
            colour.ready = false;
        });
        Ok(Drained::Stopped)
    }
    async fn show_logs(&self, color: Color) {
        let _ = self.call(format!("logs {color}"));
    }
    async fn show_edge_logs(&self) {
        let _ = self.call("logs edge".into());
    }
    async fn undersized(&self, _replicas: usize) -> Option<String> {
        None
    }
    async fn prepare_edge(&self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn serving(&self) -> anyhow::Result<Serving> {
        let routes = self.routes();
        Ok(Serving {
            answered: true,
            loaded: routes,
            status_color: routes,
            file: routes,
            upstream: routes.map(upstream),
            edges: Vec::new(),
        })
    }
    async fn stage(&self, color: Color) -> Color {
        color
    }
    async fn land(&self, _staged: Color) -> anyhow::Result<()> {
        Ok(())
    }
    async fn switch(
        &self,
        color: Color,
        _staged: Option<Color>,
        _steady: Duration,
    ) -> anyhow::Result<()> {
        self.call(format!("switch {color}"))?;
        self.with(|world| world.routes = Some(color));
        Ok(())
    }
    async fn weigh(&self, old: Color, new: Color, percent: u8) -> anyhow::Result<()> {
        self.call(format!("weigh {old} {new} {percent}"))
    }
    async fn apply_upstream(&self, text: &str) -> anyhow::Result<()> {
        self.call(format!("apply {text}"))?;
        let color = text.strip_prefix("routes ").and_then(Color::parse);
        self.with(|world| world.routes = color);
        Ok(())
    }
    async fn verify(&self, color: Color) -> anyhow::Result<()> {
        self.call(format!("verify {color}"))
    }
    fn reloaded(
        &self,
        step: &str,
        reason: String,
        _at: std::time::Instant,
    ) -> crate::deploy::reloads::Reloading {
        crate::deploy::reloads::Reloading::Done(journal::Reload {
            step: step.to_string(),
            reason,
            at: String::new(),
            old_workers: 0,
            old_workers_kib: 0,
            moved: false,
        })
    }
    fn cutover_probe(&self) -> Option<probe::Probe> {
        None
    }
    async fn analyse(
        &mut self,
        new: Color,
        _old: Option<Color>,
        percent: u8,
        _until: Until,
        last: &mut Option<serde_json::Value>,
    ) -> anyhow::Result<String> {
        *last = Some(serde_json::json!({"percent": percent}));
        self.call(format!("analyse {new} {percent}"))
            .map_err(|error| DeployError::Analysis(format!("{error:#}")).into())
            .map(|()| format!("{percent}% passed"))
    }
    async fn create_next_edge(&self, _upstream: Option<&str>) -> anyhow::Result<()> {
        self.call("create_next_edge".into())
    }
    async fn replace_edge(&self, _live: Option<Color>) -> anyhow::Result<()> {
        self.call("replace_edge".into())
            .map_err(|error| DeployError::Switch(format!("{error:#}")).into())
    }
    async fn remove_next_edge(&self) -> anyhow::Result<()> {
        self.call("remove_next_edge".into())
    }
    async fn put_back_edge(&self) -> anyhow::Result<()> {
        self.call("put_back_edge".into())
    }
}

async fn solo(model: &mut Model, operation: Operation) -> anyhow::Result<()> {
    run(model, &operation, Lease::Take, &Solo).await.1
}

fn deploy() -> Operation {
    Operation::Deploy(DeployRequest {
        image: Some("v2".into()),
        ..Default::default()
    })
}

/// The calls that changed the stack, without the lock's.
fn changes(model: &Model) -> Vec<String> {
    model
        .calls()
        .into_iter()
        .filter(|call| !call.starts_with("lock") && call != "unlock")
        .collect()
}

#[tokio::test]
async fn a_deploy_walks_its_states_and_records_each_before_acting() {
    let mut model = Model::blue_live();
    solo(&mut model, deploy()).await.expect("deployed");
    assert_eq!(
        changes(&model),
        [
            "start_fresh green",
            "wait_ready green",
            "smoke green",
            "switch green",
            "drain blue"
        ]
    );
    let run = model.last_run();
    let states: Vec<State> = run.states.iter().map(|reached| reached.state).collect();
    assert_eq!(
        states,
        [
            State::Planned,
            State::Started,
            State::Healthy,
            State::Smoked,
            State::Switched,
            State::Drained,
            State::Recorded
        ]
    );
    assert_eq!(run.outcome, Outcome::Succeeded);
    assert_eq!(run.traffic, Some(Color::Green));
    assert!(run.created_container);
    assert_eq!(model.routes(), Some(Color::Green));
    assert_eq!(
        model.calls().first().map(String::as_str),
        Some("lock deploy ")
    );
    assert_eq!(model.calls().last().map(String::as_str), Some("unlock"));
}

#[tokio::test]
async fn a_failed_smoke_unwinds_newest_first_and_traffic_stays() {
    let mut model = Model::blue_live().failing("smoke");
    let error = solo(&mut model, deploy()).await.expect_err("failed");
    assert_eq!(
        error
            .downcast_ref::<DeployError>()
            .map(DeployError::exit_code),
        Some(4),
        "{error:#}"
    );
    assert!(
        format!("{error:#}").starts_with("traffic stays on blue"),
        "{error:#}"
    );
    // The upstream staged with the readiness wait is put back first, and
    // verified, before the standby it routes to is stopped and removed.
    assert_eq!(
        changes(&model),
        [
            "start_fresh green",
            "wait_ready green",
            "smoke green",
            "logs green",
            "apply routes blue",
            "verify blue",
            "retire green remove=true"
        ]
    );
    assert_eq!(model.routes(), Some(Color::Blue));
    assert!(!model.colour(Color::Green).exists);
    let run = model.last_run();
    assert_eq!(run.outcome, Outcome::Failed);
    assert_eq!(run.traffic, Some(Color::Blue));
}

#[tokio::test]
async fn an_interrupt_at_each_step_undoes_before_the_drain_and_finishes_after() {
    let steps = ["start_fresh", "wait_ready", "smoke", "switch", "drain"];
    for step in steps {
        let mut model = Model::blue_live().signalled_at(step);
        let error = solo(&mut model, deploy()).await.expect_err(step);
        let run = model.last_run();
        assert_eq!(run.outcome, Outcome::Interrupted, "{step}");
        assert!(
            matches!(
                error.downcast_ref::<DeployError>(),
                Some(DeployError::Interrupted { .. })
            ),
            "{step}: {error:#}"
        );
        let text = error.to_string();
        if step == "drain" {
            // Past the point of no return: the run finishes.
            assert_eq!(model.routes(), Some(Color::Green), "{step}");
            assert!(
                text.contains("the deploy finished; traffic is on green"),
                "{text}"
            );
            assert!(model.colour(Color::Green).running);
        } else {
            assert_eq!(
                model.routes(),
                Some(Color::Blue),
                "{step}: {:?}",
                model.calls()
            );
            assert!(
                text.contains("the deploy was undone; traffic stays on blue"),
                "{text}"
            );
            assert!(!model.colour(Color::Green).exists, "{step}: green removed");
            assert_eq!(run.traffic, Some(Color::Blue));
            // Nothing runs after the step the signal came in.
            let calls = changes(&model);
            let at = calls
                .iter()
                .position(|call| call.starts_with(step))
                .unwrap();
            assert!(
                calls[at + 1..].iter().all(|call| call.starts_with("apply")
                    || call.starts_with("verify")
                    || call.starts_with("retire")
                    || call.starts_with("logs")),
                "{step}: {calls:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_drain_that_fails_is_past_undoing_traffic_stays_moved() {
    let mut model = Model::blue_live().failing("drain");
    let error = solo(&mut model, deploy()).await.expect_err("drain failed");
    assert_eq!(
        error
            .downcast_ref::<DeployError>()
            .map(DeployError::exit_code),
        Some(6),
        "{error:#}"
    );
    assert!(
        error.to_string().ends_with("traffic is on green"),
        "{error}"
    );
    assert_eq!(
        changes(&model).last().map(String::as_str),
        Some("drain blue")
    );
    assert_eq!(model.routes(), Some(Color::Green));
    let run = model.last_run();
    assert_eq!(
        (run.outcome, run.traffic),
        (Outcome::Failed, Some(Color::Green))
    );
}

#[tokio::test]
async fn a_failed_undo_stops_the_unwinding_and_asks_for_recover() {
    // The smoke fails, then the restore cannot be verified: the standby
    // Nginx may route to is never stopped.
    let mut model = Model::blue_live().failing("smoke").failing("verify");
    let error = solo(&mut model, deploy()).await.expect_err("needs recover");
    assert_eq!(
        error
            .downcast_ref::<DeployError>()
            .map(DeployError::exit_code),
        Some(9),
        "{error:#}"
    );
    assert!(
        !changes(&model)
            .iter()
            .any(|call| call.starts_with("retire")),
        "{:?}",
        changes(&model)
    );
    assert!(model.colour(Color::Green).running);
    assert_eq!(model.last_run().outcome, Outcome::NeedsRecover);
}

/// A coordinator that sends the run back at one point.
struct UndoAt(Point);

impl Coordinator for UndoAt {
    async fn pass(&self, point: Point) -> Result<(), String> {
        match point == self.0 {
            true => Err("host two failed to switch".into()),
            false => Ok(()),
        }
    }
    fn finished(&self, _ok: bool) {}
}

#[tokio::test]
async fn the_fleet_sending_a_switched_host_back_restores_and_retires() {
    let mut model = Model::blue_live();
    let (report, result) = run(&mut model, &deploy(), Lease::Held, &UndoAt(Point::Switched)).await;
    let error = result.expect_err("undone");
    assert!(matches!(
        error.downcast_ref::<DeployError>(),
        Some(DeployError::Undone(_))
    ));
    // Switched, then back: the previous upstream, then the new colour goes.
    let calls = changes(&model);
    let switched = calls
        .iter()
        .position(|call| call == "switch green")
        .unwrap();
    assert_eq!(
        calls[switched + 1..],
        [
            "apply routes blue",
            "verify blue",
            "retire green remove=true"
        ]
    );
    assert_eq!(model.routes(), Some(Color::Blue));
    let recorded = report.run.expect("recorded");
    assert_eq!(
        (recorded.outcome, recorded.traffic),
        (Outcome::Failed, Some(Color::Blue))
    );
    // The fleet held the lock: the runner took none.
    assert!(!model.calls().iter().any(|call| call.starts_with("lock")));

    // Sent back before the switch: nothing was routed, the standby goes.
    let mut model = Model::blue_live();
    let (_, result) = run(
        &mut model,
        &deploy(),
        Lease::Held,
        &UndoAt(Point::BeforeSwitch),
    )
    .await;
    assert!(result.is_err());
    assert!(!changes(&model).contains(&"switch green".to_string()));
    assert!(!model.colour(Color::Green).exists);
}

#[tokio::test]
async fn a_refusal_changes_nothing_and_is_recorded_as_refused() {
    let mut model = Model::blue_live();
    let error = solo(&mut model, Operation::Promote)
        .await
        .expect_err("refused");
    assert_eq!(
        error
            .downcast_ref::<DeployError>()
            .map(DeployError::exit_code),
        Some(2)
    );
    assert!(error.to_string().contains("no deploy is paused"), "{error}");
    assert!(changes(&model).is_empty(), "{:?}", changes(&model));
    let recorded = model.with(|world| world.journal.clone());
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].action, Action::Promote);
    assert_eq!(recorded[0].outcome, Outcome::Refused);
    assert_eq!(recorded[0].to, None);
    assert!(recorded[0].detail.contains("no deploy is paused"));
    // The live colour is not a standby.
    let blue = Operation::Deploy(DeployRequest {
        color: Some(Color::Blue),
        ..Default::default()
    });
    let error = solo(&mut model, blue).await.expect_err("refused");
    assert!(error.to_string().contains("blue is live"), "{error}");
    assert!(changes(&model).is_empty());
}

#[tokio::test]
async fn a_paused_deploy_is_promoted_or_aborted_as_runs_of_their_own() {
    let mut model = Model::blue_live();
    let paused = Operation::Deploy(DeployRequest {
        image: Some("v2".into()),
        no_switch: true,
        ..Default::default()
    });
    solo(&mut model, paused).await.expect("paused");
    assert_eq!(model.last_run().outcome, Outcome::Paused);
    assert_eq!(model.routes(), Some(Color::Blue));
    solo(&mut model, Operation::Abort).await.expect("aborted");
    let abort = model.last_run();
    assert_eq!(abort.action, Action::Abort);
    assert_eq!(
        (abort.outcome, abort.traffic),
        (Outcome::Succeeded, Some(Color::Blue))
    );
    assert!(
        abort.detail.starts_with("removed green left paused by"),
        "{}",
        abort.detail
    );
    assert!(!model.colour(Color::Green).exists);
    // Nothing is paused any more.
    assert!(solo(&mut model, Operation::Promote).await.is_err());
}

#[tokio::test]
async fn a_proxy_replacement_that_does_not_serve_puts_the_old_one_back() {
    let mut model = Model::blue_live().failing("replace_edge");
    let error = solo(&mut model, Operation::Proxy)
        .await
        .expect_err("undone");
    assert!(
        format!("{error:#}").contains("the old one is back"),
        "{error:#}"
    );
    assert_eq!(
        error
            .downcast_ref::<DeployError>()
            .map(DeployError::exit_code),
        Some(5)
    );
    assert_eq!(
        changes(&model),
        [
            "create_next_edge",
            "replace_edge",
            "logs edge",
            "put_back_edge",
            "remove_next_edge"
        ]
    );
    let run = model.last_run();
    assert_eq!(run.action, Action::Proxy);
    assert_eq!(
        (run.outcome, run.traffic),
        (Outcome::Failed, Some(Color::Blue))
    );
}

/// A run that died in `state` with Nginx routing to `routes`.
fn died(model: &Model, state: State, routes: Color) {
    let mut run = Run::new(Action::Deploy, Some(Color::Blue), Color::Green, "v2");
    run.created_container = true;
    run.enter(state);
    run.previous_upstream = Some(upstream(Color::Blue));
    model.with(|world| {
        world.journal.push(run);
        world.routes = Some(routes);
        world.colours.insert(
            Color::Green,
            Colour {
                exists: true,
                running: true,
                ready: true,
                image: "v2".into(),
            },
        );
    });
}

#[tokio::test]
async fn recover_keeps_serving_what_nginx_routes_to_and_retires_the_other() {
    // Killed after its switch: green serves, blue is stopped and kept.
    let mut model = Model::blue_live();
    died(&model, State::Switched, Color::Green);
    solo(&mut model, Operation::Recover)
        .await
        .expect("recovered");
    assert_eq!(changes(&model), ["retire blue remove=false"]);
    assert_eq!(model.routes(), Some(Color::Green));
    let runs = model.with(|world| world.journal.clone());
    assert_eq!(runs[0].outcome, Outcome::Recovered);
    assert_eq!(runs[1].action, Action::Recover);
    assert_eq!(runs[1].traffic, Some(Color::Green));

    // Killed before its switch: blue still serves, the standby it started
    // is removed.
    let mut model = Model::blue_live();
    died(&model, State::Smoked, Color::Blue);
    solo(&mut model, Operation::Recover)
        .await
        .expect("recovered");
    assert_eq!(changes(&model), ["retire green remove=true"]);
    assert!(!model.colour(Color::Green).exists);

    // Any command recovers first: a deploy after the killed run starts
    // from a consistent stack.
    let mut model = Model::blue_live();
    died(&model, State::Smoked, Color::Blue);
    solo(&mut model, deploy()).await.expect("deployed");
    assert_eq!(changes(&model)[0], "retire green remove=true");
    assert_eq!(model.routes(), Some(Color::Green));
}

#[tokio::test]
async fn recover_with_nothing_ready_restores_the_upstream_from_before() {
    let model = Model::blue_live();
    died(&model, State::Switched, Color::Green);
    model.with(|world| {
        for colour in world.colours.values_mut() {
            *colour = Colour {
                exists: true,
                ..Colour::default()
            };
        }
    });
    // Neither colour becomes ready when started.
    let mut model = model.failing("wait_ready");
    let error = solo(&mut model, Operation::Recover)
        .await
        .expect_err("nothing serves");
    assert_eq!(
        error
            .downcast_ref::<DeployError>()
            .map(DeployError::exit_code),
        Some(9)
    );
    assert!(changes(&model).contains(&"apply routes blue".to_string()));
    let runs = model.with(|world| world.journal.clone());
    assert_eq!(runs[0].outcome, Outcome::Recovered);
    assert_eq!(runs[0].traffic, None);
}

async fn canary(model: &mut Model) -> anyhow::Result<()> {
    let request = DeployRequest {
        image: Some("v2".into()),
        canary: Some(crate::deploy::Canary {
            steps: vec![10, 50],
            analysis: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }),
        ..Default::default()
    };
    solo(model, Operation::Deploy(request)).await
}

#[tokio::test]
async fn a_canary_records_its_last_sample_and_a_failed_one_rolls_back() {
    let mut model = Model::blue_live();
    canary(&mut model).await.expect("promoted");
    let run = model.last_run();
    assert_eq!(run.analysis, Some(serde_json::json!({"percent": 50})));
    // Every reload is in the record, with the step that made it and why.
    let reloads: Vec<(String, String)> = run
        .reloads
        .iter()
        .map(|reload| (reload.step.clone(), reload.reason.clone()))
        .collect();
    assert_eq!(
        reloads,
        [
            ("canary".into(), "10% of new connections to green".into()),
            ("canary".into(), "50% of new connections to green".into()),
            ("switch".into(), "traffic to green".into()),
        ]
    );
    assert!(changes(&model).contains(&"weigh blue green 50".to_string()));

    let mut model = Model::blue_live().failing("analyse green 50");
    let error = canary(&mut model).await.expect_err("rolled back");
    assert_eq!(
        error
            .downcast_ref::<DeployError>()
            .map(DeployError::exit_code),
        Some(10)
    );
    let run = model.last_run();
    assert_eq!(
        (run.outcome, run.traffic),
        (Outcome::Aborted, Some(Color::Blue))
    );
    assert_eq!(run.analysis, Some(serde_json::json!({"percent": 50})));
    assert_eq!(model.routes(), Some(Color::Blue));
    assert!(!model.colour(Color::Green).exists);
}
