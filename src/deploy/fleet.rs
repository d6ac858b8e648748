//! A stack spread over several Docker hosts (`hosts:` in wsctl.yaml).
//!
//! Each host is a whole stack of its own (engine, network, Nginx, journal,
//! lock) and runs the same operation as a single host would, through the
//! same runner. The fleet adds what spans hosts:
//! - the lock is taken on every host in the order wsctl.yaml lists them,
//!   all or nothing, and held for the whole command;
//! - the hosts must agree on the live colour before anything moves (the
//!   runner's `Preflight` point);
//! - preflight, start, health and smoke run on every host at once; then
//!   the switch goes host by host (`switch_batch` at a time), each an
//!   atomic Nginx reload on its host;
//! - a host that fails before its switch unwinds every host; a host that
//!   fails its switch makes the hosts already switched switch back and
//!   retire the new colour, so that all hosts end on the same colour;
//! - the report says per host what happened (`host` in `--json`).
//!
//! `coordinate` is where those decisions are made: a loop over the
//! messages of the hosts' gates (`gate.rs`), with no engine in it.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::{join_all, try_join_all};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::coordinator::Point;
use super::gate::{Gate, Message, Verdict};
use super::operations::Operation;
use super::runner::{self, Lease, Report};
use super::status::FleetStatus;
use super::{DeployError, Events, Stack, lock};
use crate::deploy::config::{Color, StackConfig};
use crate::deploy::docker;
use crate::shared::secrets::{say, say_err};
use crate::shared::signal::Interrupt;

/// Every host's stack, in the order of wsctl.yaml (the lock order).
pub struct Fleet {
    pub hosts: Vec<HostStack>,
    /// The fleet's own lines (preflight, the per-host report).
    events: Events,
    interrupt: Interrupt,
    switch_batch: usize,
}

pub struct HostStack {
    pub name: String,
    pub stack: Stack,
}

/// A host's configuration; the hooks run once per command, on the run of
/// the first host (the others get none), and know every host's name.
fn for_host_with_hooks_once(
    config: &StackConfig,
    host: &crate::deploy::config::Host,
    first: bool,
    names: &str,
) -> StackConfig {
    let mut config = config.for_host(host);
    if !first {
        config.hooks = crate::deploy::config::Hooks::default();
    }
    config.hook_hosts = names.to_string();
    config
}

impl Fleet {
    /// Connects to every host at once; an unreachable host is named.
    pub async fn connect(
        config: &StackConfig,
        template: &str,
        json: bool,
        lock_wait: Duration,
        interrupt: Interrupt,
    ) -> anyhow::Result<Fleet> {
        let engines = try_join_all(config.hosts.iter().map(|host| async move {
            docker::connect_to(&docker::Endpoint::of_host(host))
                .await
                .with_context(|| format!("host {}", host.name))
        }))
        .await?;
        let names: Vec<&str> = config.hosts.iter().map(|host| host.name.as_str()).collect();
        let hosts = config
            .hosts
            .iter()
            .zip(engines)
            .enumerate()
            .map(|(index, (host, docker))| HostStack {
                name: host.name.clone(),
                stack: Stack::new(
                    docker,
                    for_host_with_hooks_once(config, host, index == 0, &names.join(",")),
                    Events::for_host(json, &host.name),
                    template.to_string(),
                    lock_wait,
                    interrupt.clone(),
                ),
            })
            .collect();
        Ok(Fleet {
            hosts,
            events: Events::new(json),
            interrupt,
            switch_batch: config.switch_batch,
        })
    }

    /// Runs `step` on every host at once (status, smoke).
    pub async fn each<T>(
        &mut self,
        step: impl AsyncFn(&mut Stack) -> anyhow::Result<T>,
    ) -> Vec<(String, anyhow::Result<T>)> {
        let step = &step;
        join_all(
            self.hosts
                .iter_mut()
                .map(|host| async move { (host.name.clone(), step(&mut host.stack).await) }),
        )
        .await
    }

    /// `operation` on every host: the locks, then each host's run through
    /// the runner with a gate, beside the coordinator; then the report.
    pub async fn run(&mut self, operation: Operation) -> anyhow::Result<()> {
        let started = Instant::now();
        let count = self.hosts.len();
        self.events.begin(
            "preflight",
            &format!("{count} hosts: images, locks in order, live colour"),
        );
        let locks = match self.lock_all(&operation.command()).await {
            Ok(locks) => locks,
            Err(error) => {
                self.events.fail(&format!("{error:#}"));
                return Err(error);
            }
        };
        let (reports, result) = self.gated(&operation).await;
        self.release(locks).await;
        self.report(started, &reports, &result);
        result
    }

    /// Takes every host's lock in the configured order; on the first that
    /// refuses, lets go of those taken and fails.
    async fn lock_all(&mut self, command: &str) -> anyhow::Result<Vec<lock::Lock>> {
        // The lock container runs the Nginx image.
        try_join_all(self.hosts.iter().map(|host| async move {
            docker::ensure_image(
                &host.stack.docker,
                &host.stack.config.images.nginx,
                &host.stack.config.registry,
            )
            .await
            .with_context(|| format!("host {}", host.name))
        }))
        .await?;
        let token = uuid::Uuid::new_v4().to_string();
        let mut locks = Vec::new();
        for host in &self.hosts {
            let stack = &host.stack;
            let request = lock::Request {
                command,
                token: &token,
                message: "",
                ttl: stack.config.lock_ttl,
            };
            match lock::acquire(&stack.docker, &stack.config, request, stack.lock_wait).await {
                Ok(lock) => locks.push(lock),
                Err(error) => {
                    let error = error.context(format!("host {}", host.name));
                    self.release(locks).await;
                    return Err(error);
                }
            }
        }
        Ok(locks)
    }

    async fn release(&self, locks: Vec<lock::Lock>) {
        for (lock, host) in locks.into_iter().zip(&self.hosts).rev() {
            if let Err(error) = lock.release(&host.stack.docker).await {
                say_err!("wsctl: [{}] releasing the lock: {error:#}", host.name);
            }
        }
    }

    /// Runs the operation on every host, each with a gate, beside the
    /// coordinator that opens the gates.
    async fn gated(&mut self, operation: &Operation) -> (Vec<Report>, anyhow::Result<()>) {
        let (fleet, messages) = mpsc::unbounded_channel();
        let names: Vec<String> = self.hosts.iter().map(|host| host.name.clone()).collect();
        let runs: Vec<_> = self
            .hosts
            .iter_mut()
            .enumerate()
            .map(|(index, host)| {
                let gate = Gate {
                    host: index,
                    fleet: fleet.clone(),
                };
                async move { runner::run(&mut host.stack, operation, Lease::Held, &gate).await }
            })
            .collect();
        drop(fleet);
        let rules = Rules {
            batch: self.switch_batch,
            must_agree: operation.hosts_must_agree(),
        };
        let coordinator = coordinate(
            messages,
            names,
            rules,
            self.interrupt.clone(),
            &mut self.events,
        );
        let (outcomes, refusal) = tokio::join!(join_all(runs), coordinator);
        let (reports, results): (Vec<Report>, Vec<anyhow::Result<()>>) =
            outcomes.into_iter().unzip();
        let result = match refusal {
            Some(refusal) => Err(refusal),
            None => self.verdict(results),
        };
        (reports, result)
    }

    /// The command's result from each host's: the first host that failed
    /// on its own gives the error (and its exit code); hosts undone because
    /// of it only add to the report.
    fn verdict(&self, results: Vec<anyhow::Result<()>>) -> anyhow::Result<()> {
        if let Some(signal) = self.interrupt.received() {
            let failed = results.iter().any(Result::is_err);
            let outcome = if failed {
                "every host was undone or stopped; see the per-host report"
            } else {
                "every host finished"
            };
            return Err(DeployError::Interrupted {
                signal,
                outcome: outcome.into(),
            }
            .into());
        }
        let mut cause = None;
        for (host, result) in self.hosts.iter().zip(results) {
            if let Err(error) = result {
                let undone = matches!(
                    error.downcast_ref::<DeployError>(),
                    Some(DeployError::Undone(_))
                );
                if !undone && cause.is_none() {
                    cause = Some(error.context(format!("host {}", host.name)));
                }
            }
        }
        match cause {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// One line per host (terminal) or one `hosts` event (`--json`).
    fn report(&self, started: Instant, reports: &[Report], result: &anyhow::Result<()>) {
        let hosts: Vec<Value> = self
            .hosts
            .iter()
            .zip(reports)
            .map(|(host, report)| {
                let run = report.run.as_ref();
                json!({
                    "host": host.name,
                    "run_id": run.map(|run| run.id.clone()),
                    "outcome": run.map(|run| run.outcome),
                    "traffic": run.and_then(|run| run.traffic),
                    "detail": run.map_or(String::new(), |run| run.detail.clone()),
                    "continuity": report.continuity,
                })
            })
            .collect();
        let ok = result.is_ok();
        self.events.emit(json!({
            "event": "hosts", "ok": ok, "seconds": started.elapsed().as_secs_f64(),
            "hosts": hosts,
        }));
        if !self.events.is_json() {
            for host in &hosts {
                let outcome = host["outcome"].as_str().unwrap_or("not run");
                let traffic = host["traffic"].as_str().unwrap_or("unknown");
                let detail = host["detail"].as_str().unwrap_or("");
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                say!(
                    "host {}: {outcome}, traffic on {traffic}{detail}",
                    host["host"].as_str().unwrap_or("")
                );
            }
        }
    }
}

/// What the coordinator is told about the operation.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// Hosts that switch at once.
    batch: usize,
    /// The hosts must agree on the live colour (`Operation::hosts_must_agree`).
    must_agree: bool,
}

/// The hosts waiting at one point: each one's point and reply channel.
type Waiting = Vec<Option<(Point, oneshot::Sender<Verdict>)>>;

/// What the coordinator knows of the hosts between messages.
struct Hosts<'a> {
    names: &'a [String],
    /// The host's run is over.
    finished: Vec<bool>,
    /// Why every waiting host unwinds, once something failed.
    undo: Option<String>,
}

impl Hosts<'_> {
    /// A host's run is over; a failure unwinds the others.
    fn finished(&mut self, host: usize, ok: bool, what: &str) {
        self.finished[host] = true;
        if !ok && self.undo.is_none() {
            self.undo = Some(format!("host {} failed {what}", self.names[host]));
        }
    }

    fn verdict(&self) -> Verdict {
        match &self.undo {
            Some(why) => Verdict::Undo(why.clone()),
            None => Verdict::Go,
        }
    }
}

/// Waits until every host waits at a point `wanted` accepts or has
/// finished, or something failed (a host, or an interrupt). `None`: every
/// host has hung up.
async fn gather(
    messages: &mut mpsc::UnboundedReceiver<Message>,
    interrupt: &Interrupt,
    hosts: &mut Hosts<'_>,
    wanted: impl Fn(Point) -> bool,
) -> Option<Waiting> {
    let count = hosts.names.len();
    let mut waiting: Waiting = (0..count).map(|_| None).collect();
    while hosts.undo.is_none()
        && (0..count).any(|host| waiting[host].is_none() && !hosts.finished[host])
    {
        tokio::select! {
            message = messages.recv() => match message? {
                Message::Reached { host, point, reply } if wanted(point) => {
                    waiting[host] = Some((point, reply));
                }
                Message::Reached { reply, .. } => {
                    let _ = reply.send(Verdict::Undo("reached a gate out of turn".into()));
                }
                Message::Finished { host, ok } => hosts.finished(host, ok, "before its switch"),
            },
            signal = interrupt.wait() => {
                hosts.undo = Some(format!("interrupted by {signal}"));
            }
        }
    }
    Some(waiting)
}

/// Opens the gates (`gate.rs`) and closes the fleet's preflight step:
/// 1. every host reaches its preflight point (or finishes); they must
///    agree on the live colour when the rules say so;
/// 2. every host reaches its switch (or finishes); then batches of
///    `batch` hosts switch in order;
/// 3. a failure anywhere sends every host that is still waiting back
///    (undo), and only when all have switched do they drain.
///
/// Returns the fleet's own refusal (the hosts disagree), if any.
async fn coordinate(
    mut messages: mpsc::UnboundedReceiver<Message>,
    names: Vec<String>,
    rules: Rules,
    interrupt: Interrupt,
    events: &mut Events,
) -> Option<anyhow::Error> {
    let count = names.len();
    let mut hosts = Hosts {
        names: &names,
        finished: vec![false; count],
        undo: None,
    };
    let mut refusal = None;

    // 1. Every host at its preflight point, or done before it.
    let preflight = |point| matches!(point, Point::Preflight { .. });
    let mut at_preflight = gather(&mut messages, &interrupt, &mut hosts, preflight).await?;
    let seen: Vec<(usize, Option<Color>)> = at_preflight
        .iter()
        .enumerate()
        .filter_map(|(host, waiting)| match waiting {
            Some((Point::Preflight { live }, _)) => Some((host, *live)),
            _ => None,
        })
        .collect();
    let first = seen.first().and_then(|(_, live)| *live);
    if hosts.undo.is_none() && rules.must_agree && seen.iter().any(|(_, live)| *live != first) {
        let each: Vec<String> = seen
            .iter()
            .map(|(host, live)| {
                format!(
                    "{} {}",
                    names[*host],
                    live.map_or("none".to_string(), |color| color.to_string())
                )
            })
            .collect();
        let error = DeployError::Usage(format!(
            "the hosts disagree on the live colour ({}); bring them together on the \
             hosts that differ (`wsctl rollback --host NAME`), or with `wsctl switch \
             --color C` where C runs on every host",
            each.join(", ")
        ));
        hosts.undo = Some("the hosts disagree on the live colour".into());
        events.fail(&error.to_string());
        refusal = Some(error.into());
    }
    match &hosts.undo {
        // Runs that end in their preflight (`recover`) name no live colour.
        None if seen.is_empty() => events.ok(&format!("{count} hosts locked")),
        None => events.ok(&format!(
            "{count} hosts locked, live: {}",
            first.map_or("none".to_string(), |color| color.to_string())
        )),
        Some(why) if refusal.is_none() => events.fail(why),
        Some(_) => {}
    }
    for (_, reply) in at_preflight.iter_mut().filter_map(Option::take) {
        let _ = reply.send(hosts.verdict());
    }

    // 2. Every host at its switch, or done (failed) before it.
    let before_switch = |point| point == Point::BeforeSwitch;
    let Some(mut at_switch) = gather(&mut messages, &interrupt, &mut hosts, before_switch).await
    else {
        return refusal;
    };
    let mut switched: Waiting = (0..count).map(|_| None).collect();

    // Host by host, `batch` at a time.
    let order: Vec<usize> = (0..count).collect();
    for group in order.chunks(rules.batch.max(1)) {
        if hosts.undo.is_some() {
            break;
        }
        if let Some(signal) = interrupt.received() {
            hosts.undo = Some(format!("interrupted by {signal}"));
            break;
        }
        for &host in group {
            if let Some((_, reply)) = at_switch[host].take() {
                let _ = reply.send(Verdict::Go);
            }
        }
        // The batch's switches are not cut short: each ends switched or
        // restored.
        while group
            .iter()
            .any(|&host| switched[host].is_none() && !hosts.finished[host])
        {
            match messages.recv().await {
                Some(Message::Reached {
                    host,
                    point: Point::Switched,
                    reply,
                }) => switched[host] = Some((Point::Switched, reply)),
                Some(Message::Reached { reply, .. }) => {
                    let _ = reply.send(Verdict::Undo("reached its switch twice".into()));
                }
                Some(Message::Finished { host, ok }) => hosts.finished(host, ok, "to switch"),
                None => return refusal,
            }
        }
    }

    // Everyone on: drain. Something failed: everyone still waiting undoes
    // (switched hosts switch back).
    for (_, reply) in at_switch
        .iter_mut()
        .chain(switched.iter_mut())
        .filter_map(Option::take)
    {
        let _ = reply.send(hosts.verdict());
    }
    // Hosts that reach a gate late (none should) get the same answer.
    while hosts.finished.iter().any(|done| !done) {
        match messages.recv().await {
            Some(Message::Reached { reply, .. }) => {
                let _ = reply.send(hosts.verdict());
            }
            Some(Message::Finished { host, .. }) => hosts.finished[host] = true,
            None => return refusal,
        }
    }
    refusal
}

/// Every host's status, each with its `host`, and the colour they agree
/// on.
pub async fn status(fleet: &mut Fleet) -> anyhow::Result<FleetStatus> {
    let mut hosts = Vec::new();
    for (name, status) in fleet.each(async |stack| super::status(stack).await).await {
        let mut status = status.with_context(|| format!("host {name}"))?;
        status.host = Some(name);
        hosts.push(status);
    }
    Ok(FleetStatus::of(hosts))
}

#[cfg(test)]
mod tests {
    //! The coordinator's decisions, with scripted hosts talking through
    //! real gates: no engine is needed to say who switches when.

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::deploy::coordinator::Coordinator;
    use crate::shared::signal::Signal;

    /// How a scripted host's run goes when the fleet lets it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Script {
        /// Every point passed, the run succeeds.
        Succeeds,
        /// Its own check fails after the preflight (a smoke test, say).
        FailsBeforeSwitch,
        /// Its switch fails (and is undone by its own runner).
        FailsItsSwitch,
        /// A plan without a switch (`deploy --proxy` after its create, an
        /// abort): done after the preflight.
        EndsWithoutSwitch,
    }

    type Log = Arc<Mutex<Vec<String>>>;

    /// Plays one host's run as the runner would, logging what happened;
    /// with `together`, its switch waits for the other hosts of the
    /// barrier to be switching too.
    async fn host(
        gate: Gate,
        name: String,
        live: Option<Color>,
        script: Script,
        log: Log,
        together: Option<Arc<tokio::sync::Barrier>>,
    ) -> bool {
        let say = |line: String| log.lock().unwrap().push(format!("{name} {line}"));
        let ok = async {
            if let Err(why) = gate.pass(Point::Preflight { live }).await {
                say(format!("undone at preflight: {why}"));
                return false;
            }
            match script {
                Script::FailsBeforeSwitch => {
                    say("failed before its switch".into());
                    return false;
                }
                Script::EndsWithoutSwitch => {
                    say("done".into());
                    return true;
                }
                _ => {}
            }
            if let Err(why) = gate.pass(Point::BeforeSwitch).await {
                say(format!("undone before its switch: {why}"));
                return false;
            }
            say("switching".into());
            if let Some(barrier) = &together {
                barrier.wait().await;
            }
            // Another host's work goes on meanwhile.
            tokio::task::yield_now().await;
            if script == Script::FailsItsSwitch {
                say("failed its switch".into());
                return false;
            }
            if let Err(why) = gate.pass(Point::Switched).await {
                say(format!("switched back: {why}"));
                return false;
            }
            say("drained".into());
            true
        }
        .await;
        gate.finished(ok);
        ok
    }

    struct Played {
        log: Vec<String>,
        oks: Vec<bool>,
        refusal: Option<anyhow::Error>,
    }

    async fn play(hosts: &[(Option<Color>, Script)], rules: Rules, interrupt: Interrupt) -> Played {
        play_with(hosts, rules, interrupt, None).await
    }

    /// `play`, the first `n` hosts switching only together (`barrier`).
    async fn play_with(
        hosts: &[(Option<Color>, Script)],
        rules: Rules,
        interrupt: Interrupt,
        together: Option<usize>,
    ) -> Played {
        let barrier = together.map(|n| Arc::new(tokio::sync::Barrier::new(n)));
        let (fleet, messages) = mpsc::unbounded_channel();
        let names: Vec<String> = (0..hosts.len()).map(|index| format!("h{index}")).collect();
        let log: Log = Arc::default();
        let runs: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(index, &(live, script))| {
                let gate = Gate {
                    host: index,
                    fleet: fleet.clone(),
                };
                let together = barrier
                    .clone()
                    .filter(|_| together.is_some_and(|n| index < n));
                tokio::spawn(host(
                    gate,
                    names[index].clone(),
                    live,
                    script,
                    log.clone(),
                    together,
                ))
            })
            .collect();
        drop(fleet);
        let mut events = Events::new(true);
        let refusal = coordinate(messages, names.clone(), rules, interrupt, &mut events).await;
        let mut oks = Vec::new();
        for run in runs {
            oks.push(run.await.unwrap());
        }
        let log = log.lock().unwrap().clone();
        Played { log, oks, refusal }
    }

    fn position(log: &[String], line: &str) -> usize {
        log.iter()
            .position(|entry| entry == line)
            .unwrap_or_else(|| panic!("{line:?} not in {log:#?}"))
    }

    const ONE_AT_A_TIME: Rules = Rules {
        batch: 1,
        must_agree: true,
    };
    const BLUE: Option<Color> = Some(Color::Blue);

    #[tokio::test]
    async fn hosts_switch_one_batch_at_a_time_and_drain_only_when_all_have_switched() {
        let hosts = [(BLUE, Script::Succeeds); 3];
        let played = play(&hosts, ONE_AT_A_TIME, Interrupt::default()).await;
        assert!(played.refusal.is_none());
        assert_eq!(played.oks, [true, true, true], "{:#?}", played.log);
        let log = &played.log;
        // h1 is let go only once h0 has switched, h2 once h1 has.
        assert!(position(log, "h0 switching") < position(log, "h1 switching"));
        assert!(position(log, "h1 switching") < position(log, "h2 switching"));
        let last_switch = position(log, "h2 switching");
        for host in ["h0", "h1", "h2"] {
            assert!(
                position(log, &format!("{host} drained")) > last_switch,
                "{log:#?}"
            );
        }
    }

    #[tokio::test]
    async fn a_batch_of_two_switches_together() {
        let hosts = [(BLUE, Script::Succeeds); 3];
        let rules = Rules {
            batch: 2,
            must_agree: true,
        };
        // h0 and h1 can only get past their switch together: with one
        // host at a time this would never end.
        let played = tokio::time::timeout(
            Duration::from_secs(10),
            play_with(&hosts, rules, Interrupt::default(), Some(2)),
        )
        .await
        .expect("h0 and h1 were let go together");
        let log = &played.log;
        assert!(position(log, "h1 switching") < position(log, "h2 switching"));
        assert_eq!(played.oks, [true, true, true]);
        // And one at a time, the same pair never gets there.
        let alone = tokio::time::timeout(
            Duration::from_secs(1),
            play_with(&hosts, ONE_AT_A_TIME, Interrupt::default(), Some(2)),
        )
        .await;
        assert!(alone.is_err(), "one host at a time let two switch at once");
    }

    #[tokio::test]
    async fn one_host_failing_before_its_switch_unwinds_every_host() {
        let hosts = [
            (BLUE, Script::Succeeds),
            (BLUE, Script::FailsBeforeSwitch),
            (BLUE, Script::Succeeds),
        ];
        let played = play(&hosts, ONE_AT_A_TIME, Interrupt::default()).await;
        assert_eq!(played.oks, [false, false, false], "{:#?}", played.log);
        assert!(played.log.iter().all(|line| !line.ends_with("switching")));
        for host in ["h0", "h2"] {
            let line = format!("{host} undone before its switch: host h1 failed before its switch");
            position(&played.log, &line);
        }
        assert!(
            played.refusal.is_none(),
            "the failed host's own error is the verdict"
        );
    }

    #[tokio::test]
    async fn a_failed_switch_sends_switched_hosts_back_and_stops_the_rest() {
        let hosts = [
            (BLUE, Script::Succeeds),
            (BLUE, Script::FailsItsSwitch),
            (BLUE, Script::Succeeds),
        ];
        let played = play(&hosts, ONE_AT_A_TIME, Interrupt::default()).await;
        let log = &played.log;
        position(log, "h0 switched back: host h1 failed to switch");
        position(log, "h2 undone before its switch: host h1 failed to switch");
        assert!(!log.contains(&"h2 switching".to_string()), "{log:#?}");
        assert_eq!(played.oks, [false, false, false]);
    }

    #[tokio::test]
    async fn hosts_that_disagree_are_refused_unless_the_command_brings_them_together() {
        let hosts = [
            (BLUE, Script::Succeeds),
            (Some(Color::Green), Script::Succeeds),
        ];
        let played = play(&hosts, ONE_AT_A_TIME, Interrupt::default()).await;
        let refusal = played.refusal.expect("refused");
        let text = refusal.to_string();
        assert!(text.contains("h0 blue, h1 green"), "{text}");
        assert!(matches!(
            refusal.downcast_ref::<DeployError>(),
            Some(DeployError::Usage(_))
        ));
        assert_eq!(played.oks, [false, false]);
        assert!(
            played
                .log
                .iter()
                .all(|line| line.contains("undone at preflight"))
        );

        // A switch may start from any mix of colours.
        let rules = Rules {
            batch: 1,
            must_agree: false,
        };
        let played = play(&hosts, rules, Interrupt::default()).await;
        assert!(played.refusal.is_none());
        assert_eq!(played.oks, [true, true], "{:#?}", played.log);
    }

    #[tokio::test]
    async fn hosts_whose_plan_has_no_switch_finish_without_holding_the_others() {
        let hosts = [(BLUE, Script::EndsWithoutSwitch), (BLUE, Script::Succeeds)];
        let played = play(&hosts, ONE_AT_A_TIME, Interrupt::default()).await;
        assert_eq!(played.oks, [true, true], "{:#?}", played.log);
    }

    #[tokio::test]
    async fn an_interrupt_before_the_switch_unwinds_every_host() {
        let interrupt = Interrupt::default();
        interrupt.raise(Signal::Terminate);
        let hosts = [(BLUE, Script::Succeeds); 2];
        let played = play(&hosts, ONE_AT_A_TIME, interrupt).await;
        assert_eq!(played.oks, [false, false]);
        for host in ["h0", "h1"] {
            position(
                &played.log,
                &format!("{host} undone at preflight: interrupted by SIGTERM"),
            );
        }
    }
}
