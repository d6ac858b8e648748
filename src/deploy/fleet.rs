//! A stack spread over several Docker hosts (`hosts:` in wsctl.yaml).
//!
//! Each host is a whole stack of its own (engine, network, Nginx, journal,
//! lock) and runs the same plan as a single host would, through the same
//! runner. The fleet adds what spans hosts:
//! - the lock is taken on every host in the order wsctl.yaml lists them,
//!   all or nothing, and held for the whole command;
//! - the hosts must agree on the live colour before anything moves;
//! - preflight, start, health and smoke run on every host at once; then
//!   the switch goes host by host (`switch_batch` at a time), each an
//!   atomic Nginx reload on its host (`gate.rs` is where runs wait);
//! - a host that fails before its switch unwinds every host; a host that
//!   fails its switch makes the hosts already switched switch back and
//!   retire the new colour, so that all hosts end on the same colour;
//! - the report says per host what happened (`host` in `--json`).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::{join_all, try_join_all};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::gate::{Gate, Message, Point, Verdict};
use super::{DeployError, Events, Journal, Stack, lock, nginx};
use crate::docker;
use crate::secrets::{say, say_err};
use crate::signal::Interrupt;
use crate::stack::{Color, StackConfig};

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

/// What a command does on each host.
#[derive(Debug, Clone)]
pub enum Move {
    Deploy(super::DeployRequest),
    Switch { color: Color, force: bool },
    Rollback,
}

impl Move {
    fn command(&self) -> String {
        match self {
            Move::Deploy(request) => {
                format!(
                    "deploy {}",
                    request
                        .color
                        .map_or(String::new(), |color| color.to_string())
                )
            }
            Move::Switch { color, .. } => format!("switch {color}"),
            Move::Rollback => "rollback".into(),
        }
    }
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
        let hosts = config
            .hosts
            .iter()
            .zip(engines)
            .map(|(host, docker)| {
                let config = config.for_host(host);
                HostStack {
                    name: host.name.clone(),
                    stack: Stack {
                        docker,
                        journal: Journal::new(&config),
                        config,
                        events: Events::for_host(json, &host.name),
                        template: template.to_string(),
                        lock_wait,
                        interrupt: interrupt.clone(),
                        gate: None,
                        lock_held: false,
                        last_run: None,
                        last_analysis: None,
                    },
                }
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

    /// `deploy`, `switch` or `rollback` on every host: locks, agreement on
    /// the live colour, the hosts' runs with their gates, the report.
    pub async fn run(&mut self, action: Move) -> anyhow::Result<()> {
        let started = Instant::now();
        let count = self.hosts.len();
        self.events.begin(
            "preflight",
            &format!("{count} hosts: images, locks in order, live colour"),
        );
        let locks = match self.lock_all(&action.command()).await {
            Ok(locks) => locks,
            Err(error) => {
                self.events.fail(&format!("{error:#}"));
                return Err(error);
            }
        };
        let result = self.run_locked(action).await;
        self.release(locks).await;
        self.report(started, &result);
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
        for index in 0..self.hosts.len() {
            let host = &self.hosts[index];
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
                    self.release_taken(locks).await;
                    return Err(error);
                }
            }
            self.hosts[index].stack.lock_held = true;
        }
        Ok(locks)
    }

    async fn release_taken(&mut self, locks: Vec<lock::Lock>) {
        for (lock, host) in locks.into_iter().zip(&mut self.hosts).rev() {
            if let Err(error) = lock.release(&host.stack.docker).await {
                say_err!("wsctl: [{}] releasing the lock: {error:#}", host.name);
            }
        }
    }

    async fn release(&mut self, locks: Vec<lock::Lock>) {
        self.release_taken(locks).await;
        for host in &mut self.hosts {
            host.stack.lock_held = false;
        }
    }

    async fn run_locked(&mut self, action: Move) -> anyhow::Result<()> {
        // A switch is what brings disagreeing hosts together: it may start
        // from any mix of colours.
        let must_agree = !matches!(action, Move::Switch { .. });
        let live = match self.agreed_live(must_agree).await {
            Ok(live) => live,
            Err(error) => {
                self.events.fail(&format!("{error:#}"));
                return Err(error);
            }
        };
        self.events.ok(&format!(
            "{} hosts locked, live: {}",
            self.hosts.len(),
            live.map_or("none".to_string(), |color| color.to_string())
        ));
        // Every host deploys the same colour, even the ones that would
        // pick another on their own.
        let action = match action {
            Move::Deploy(request) if request.color.is_none() => {
                Move::Deploy(super::DeployRequest {
                    color: Some(live.map_or(Color::Blue, Color::other)),
                    ..request
                })
            }
            other => other,
        };
        self.gated(action).await
    }

    /// Brings each host to a consistent state (bootstrap, recover) and
    /// reads its live colour; the hosts must agree when `must_agree`.
    async fn agreed_live(&mut self, must_agree: bool) -> anyhow::Result<Option<Color>> {
        let lives = self
            .each(async |stack| {
                stack
                    .locked("preflight", async |stack| {
                        let serving = nginx::serving(stack).await?;
                        if let Some(disagreement) = serving.disagreement() {
                            return Err(DeployError::NeedsRecover(disagreement).into());
                        }
                        Ok(serving.live())
                    })
                    .await
            })
            .await;
        let mut seen = Vec::new();
        for (name, live) in lives {
            let live = live.with_context(|| format!("host {name}"))?;
            seen.push((name, live));
        }
        let first = seen.first().and_then(|(_, live)| *live);
        if must_agree && seen.iter().any(|(_, live)| *live != first) {
            let each: Vec<String> = seen
                .iter()
                .map(|(name, live)| {
                    format!(
                        "{name} {}",
                        live.map_or("none".to_string(), |color| color.to_string())
                    )
                })
                .collect();
            return Err(DeployError::Usage(format!(
                "the hosts disagree on the live colour ({}); bring them together on the \
                 hosts that differ (`wsctl rollback --host NAME`), or with `wsctl switch \
                 --color C` where C runs on every host",
                each.join(", ")
            ))
            .into());
        }
        Ok(first)
    }

    /// Runs the move on every host, each with a gate, beside the
    /// coordinator that opens the gates.
    async fn gated(&mut self, action: Move) -> anyhow::Result<()> {
        let (fleet, messages) = mpsc::unbounded_channel();
        let names: Vec<String> = self.hosts.iter().map(|host| host.name.clone()).collect();
        let runs = self.hosts.iter_mut().enumerate().map(|(index, host)| {
            let gate = Gate {
                host: index,
                fleet: fleet.clone(),
            };
            host.stack.gate = Some(gate.clone());
            let action = action.clone();
            async move {
                let stack = &mut host.stack;
                let result = match action {
                    Move::Deploy(request) => super::deploy(stack, request).await,
                    Move::Switch { color, force } => super::switch(stack, color, force).await,
                    Move::Rollback => super::rollback(stack).await,
                };
                gate.finished();
                stack.gate = None;
                result
            }
        });
        let runs: Vec<_> = runs.collect();
        drop(fleet);
        let coordinator = coordinate(
            messages,
            names.clone(),
            self.switch_batch,
            self.interrupt.clone(),
        );
        let (results, ()) = tokio::join!(join_all(runs), coordinator);
        self.verdict(results)
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
    fn report(&self, started: Instant, result: &anyhow::Result<()>) {
        let hosts: Vec<Value> = self
            .hosts
            .iter()
            .map(|host| {
                let run = host.stack.last_run.as_ref();
                json!({
                    "host": host.name,
                    "run_id": run.map(|run| run.id.clone()),
                    "outcome": run.map(|run| run.outcome),
                    "traffic": run.and_then(|run| run.traffic),
                    "detail": run.map_or(String::new(), |run| run.detail.clone()),
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

/// Opens the gates (`gate.rs`): every host reaches its switch or fails;
/// then batches of `batch` hosts switch in order; a failure anywhere sends
/// every host that is still waiting back (undo), and only when all have
/// switched do they drain.
async fn coordinate(
    mut messages: mpsc::UnboundedReceiver<Message>,
    names: Vec<String>,
    batch: usize,
    interrupt: Interrupt,
) {
    let count = names.len();
    let mut at_switch: Vec<Option<oneshot::Sender<Verdict>>> = (0..count).map(|_| None).collect();
    let mut switched: Vec<Option<oneshot::Sender<Verdict>>> = (0..count).map(|_| None).collect();
    let mut finished = vec![false; count];
    // Why every waiting host unwinds, once something failed.
    let mut undo: Option<String> = None;

    // Every host at its switch, or done (failed) before it.
    while undo.is_none() && (0..count).any(|host| at_switch[host].is_none() && !finished[host]) {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Message::Reached { host, point: Point::BeforeSwitch, reply }) => {
                    at_switch[host] = Some(reply);
                }
                Some(Message::Reached { reply, .. }) => {
                    let _ = reply.send(Verdict::Undo("switched out of turn".into()));
                }
                Some(Message::Finished { host }) => {
                    finished[host] = true;
                    undo = Some(format!("host {} failed before its switch", names[host]));
                }
                None => return,
            },
            signal = interrupt.wait() => {
                undo = Some(format!("interrupted by {signal}"));
            }
        }
    }

    // Host by host, `batch` at a time.
    let hosts: Vec<usize> = (0..count).collect();
    for group in hosts.chunks(batch.max(1)) {
        if undo.is_some() {
            break;
        }
        if let Some(signal) = interrupt.received() {
            undo = Some(format!("interrupted by {signal}"));
            break;
        }
        for &host in group {
            if let Some(reply) = at_switch[host].take() {
                let _ = reply.send(Verdict::Go);
            }
        }
        // The batch's switches are not cut short: each ends switched or
        // restored.
        while group
            .iter()
            .any(|&host| switched[host].is_none() && !finished[host])
        {
            match messages.recv().await {
                Some(Message::Reached {
                    host,
                    point: Point::Switched,
                    reply,
                }) => switched[host] = Some(reply),
                Some(Message::Reached { reply, .. }) => {
                    let _ = reply.send(Verdict::Undo("reached its switch twice".into()));
                }
                Some(Message::Finished { host }) => {
                    finished[host] = true;
                    if undo.is_none() {
                        undo = Some(format!("host {} failed to switch", names[host]));
                    }
                }
                None => return,
            }
        }
    }

    // Everyone on: drain. Something failed: everyone still waiting undoes
    // (switched hosts switch back).
    let verdict = |undo: &Option<String>| match undo {
        Some(why) => Verdict::Undo(why.clone()),
        None => Verdict::Go,
    };
    for reply in at_switch.iter_mut().chain(switched.iter_mut()) {
        if let Some(reply) = reply.take() {
            let _ = reply.send(verdict(&undo));
        }
    }
    // Hosts that reach a gate late (none should) get the same answer.
    while finished.iter().any(|done| !done) {
        match messages.recv().await {
            Some(Message::Reached { reply, .. }) => {
                let _ = reply.send(verdict(&undo));
            }
            Some(Message::Finished { host }) => finished[host] = true,
            None => return,
        }
    }
}

/// Every host's status, each with its `host`, and the colour they agree on
/// (`null` when they do not).
pub async fn status(fleet: &mut Fleet) -> anyhow::Result<Value> {
    let mut hosts = Vec::new();
    for (name, status) in fleet.each(async |stack| super::status(stack).await).await {
        let mut status = status.with_context(|| format!("host {name}"))?;
        status["host"] = json!(name);
        hosts.push(status);
    }
    let first = hosts.first().map(|status| status["live"].clone());
    let agreed = first
        .filter(|live| hosts.iter().all(|status| &status["live"] == live))
        .unwrap_or(Value::Null);
    Ok(json!({"live": agreed, "hosts": hosts}))
}
