//! The engine seam: what the runner, its steps, the operations and the
//! recover ask of the platform a stack runs on, at the level of colours
//! and the edge, never of containers or API calls.
//!
//! `Stack` (one Docker Engine, `docker.rs` through bollard) is the real
//! implementation; its methods call `containers.rs`, `nginx.rs`,
//! `journal.rs`, `lock.rs` and `proxy.rs`. On `platform: swarm` the same
//! `Stack` drives a swarm manager: `containers.rs` hands each colour
//! operation to `swarm/services.rs` (a colour is a service), and the
//! journal and the lock keep their records in Swarm configs, so the edge
//! and everything outside the runner that reads colours (status, down,
//! prune, the canary analysis) is one code path. The unit tests of the
//! runner implement the trait in memory (`runner_tests.rs`), so that the
//! runner's logic is tested where the question is logic, not Docker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::analysis::Until;
use super::containers::Drained;
use super::events::Events;
use super::journal::Run;
use super::nginx::Serving;
use super::reloads::Reloading;
use super::{Stack, analysis, containers, lock, nginx, proxy, reloads, swarm};
use crate::client::probe;
use crate::deploy::config::{Color, StackConfig};
use crate::deploy::docker;
use crate::shared::signal::Interrupt;

/// A colour's containers (or tasks) as the platform has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Their names, for the lines people read.
    pub names: Vec<String>,
    /// At least one exists (running or stopped).
    pub exists: bool,
    /// At least one is running.
    pub running: bool,
}

/// What the preflight does about runs that died unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Recover them first, if there are any (every command).
    IfUnfinished,
    /// Repair the stack whatever the journal says (`wsctl recover`).
    Always,
}

/// What a bootstrap may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// The network, Redis, Nginx (and an external app's checker) when
    /// absent: a deploy.
    IfAbsent,
    /// Nothing: start what exists and is stopped.
    Never,
}

/// What the steps of a run need from the platform. Every method acts on
/// the stack the engine handle stands for.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// An upload of the next upstream, started while the colour gets ready.
    type Staged;
    /// A held deploy lock.
    type Lock;

    fn config(&self) -> &StackConfig;
    fn events(&mut self) -> &mut Events;
    fn events_ref(&self) -> &Events;
    fn interrupt(&self) -> &Interrupt;

    // The stack itself.
    /// Pulls the images that are absent.
    async fn ensure_images(&self, images: &[String]) -> anyhow::Result<()>;
    /// Takes the stack's lock for `command` (waiting up to `lock_wait`).
    async fn lock(&self, command: &str) -> anyhow::Result<Self::Lock>;
    async fn unlock(&self, lock: Self::Lock) -> anyhow::Result<()>;
    /// Network, Redis and Nginx exist and run. With `Create::IfAbsent` (a
    /// deploy) what is absent is created; otherwise only what exists is
    /// started, so a command that then refuses leaves nothing behind.
    async fn bootstrap(&mut self, create: Create) -> anyhow::Result<()>;
    /// Every run of the journal, oldest first.
    async fn runs(&self) -> anyhow::Result<Vec<Run>>;
    /// Records `run` as it is now.
    async fn record(&self, run: &mut Run) -> anyhow::Result<()>;

    // A colour.
    async fn presence(&self, color: Color) -> anyhow::Result<Presence>;
    /// The image the colour runs (empty: none).
    async fn image_of(&self, color: Color) -> anyhow::Result<String>;
    /// Replaces the colour with `count` fresh replicas of `image`; returns
    /// what the step line shows.
    async fn start_fresh(
        &self,
        color: Color,
        image: &str,
        count: usize,
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<String>;
    /// Starts the colour's kept (stopped) replicas again.
    async fn start_kept(&self, color: Color) -> anyhow::Result<String>;
    /// Stops the colour gracefully (its clients get goodbye), removing it
    /// when asked.
    async fn retire(&self, color: Color, remove: bool) -> anyhow::Result<()>;
    /// Waits until every replica is ready (up to `ready_timeout`).
    async fn wait_ready(&self, color: Color) -> anyhow::Result<()>;
    /// Every replica is ready right now.
    async fn ready_now(&self, color: Color) -> bool;
    /// The smoke test against each replica.
    async fn smoke(&self, color: Color) -> anyhow::Result<()>;
    /// Drains the colour and stops it (kept for rollback).
    async fn drain(&mut self, color: Color) -> anyhow::Result<Drained>;
    /// The last log lines of the colour's replicas, after a failed step.
    async fn show_logs(&self, color: Color);
    /// The last log lines of the edge (Nginx).
    async fn show_edge_logs(&self);
    /// A warning when the edge holds too few sockets for `replicas`.
    async fn undersized(&self, replicas: usize) -> Option<String>;

    // The edge.
    /// With `tls:`, gets Nginx ready to serve it: refuses an Nginx that
    /// publishes other ports than wsctl.yaml wants (TLS turned on or off
    /// since it was created: `deploy --proxy` replaces it), and puts in
    /// the current certificate, reloading when it changed.
    async fn prepare_edge(&self) -> anyhow::Result<()>;
    /// What the edge serves (loaded, on disk, who answered).
    async fn serving(&self) -> anyhow::Result<Serving>;
    /// Starts uploading the upstream that routes to `color`.
    async fn stage(&self, color: Color) -> Self::Staged;
    /// Waits for a staged upload to land.
    async fn land(&self, staged: Self::Staged) -> anyhow::Result<()>;
    /// New connections to `color` (the staged upstream, or one rendered
    /// now), verified through the public address (`steady`: for that long
    /// without a miss).
    async fn switch(
        &self,
        color: Color,
        staged: Option<Self::Staged>,
        steady: Duration,
    ) -> anyhow::Result<()>;
    /// `percent` of new connections to `new`, the rest to `old`.
    async fn weigh(&self, old: Color, new: Color, percent: u8) -> anyhow::Result<()>;
    /// Applies an upstream as it was saved (undo, recover).
    async fn apply_upstream(&self, text: &str) -> anyhow::Result<()>;
    /// Checks that new connections reach `color` through the public address.
    async fn verify(&self, color: Color) -> anyhow::Result<()>;
    /// After a reload of the edge that ended at `at`: the old workers it
    /// left, their clients moved when past wsctl.yaml's bounds, recorded
    /// (looked at beside the run; `Reloading::record` waits for it).
    fn reloaded(&self, step: &str, reason: String, at: Instant) -> Reloading;
    /// A client through the public address while traffic moves.
    fn cutover_probe(&self) -> Option<probe::Probe>;
    /// One analysis of `new` (against `old`) until `until` says it passed.
    async fn analyse(
        &mut self,
        new: Color,
        old: Option<Color>,
        percent: u8,
        until: Until,
        last: &mut Option<serde_json::Value>,
    ) -> anyhow::Result<String>;

    // `deploy --proxy`.
    /// The new edge created with `upstream`, beside the old one.
    async fn create_next_edge(&self, upstream: Option<&str>) -> anyhow::Result<()>;
    /// The new edge in the old one's place, verified to serve `live`.
    async fn replace_edge(&self, live: Option<Color>) -> anyhow::Result<()>;
    /// The new edge removed (it never served).
    async fn remove_next_edge(&self) -> anyhow::Result<()>;
    /// The old edge back in its place.
    async fn put_back_edge(&self) -> anyhow::Result<()>;
}

impl Engine for Stack {
    type Staged = nginx::Staged;
    type Lock = lock::Lock;

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

    async fn ensure_images(&self, images: &[String]) -> anyhow::Result<()> {
        for name in images {
            docker::ensure_image(&self.docker, name, &self.config.registry).await?;
        }
        Ok(())
    }

    async fn lock(&self, command: &str) -> anyhow::Result<lock::Lock> {
        let token = uuid::Uuid::new_v4().to_string();
        let request = lock::Request {
            command,
            token: &token,
            message: "",
            ttl: self.config.lock_ttl,
        };
        lock::acquire(&self.docker, &self.config, request, self.lock_wait).await
    }

    async fn unlock(&self, lock: lock::Lock) -> anyhow::Result<()> {
        lock.release(&self.docker).await
    }

    async fn bootstrap(&mut self, create: Create) -> anyhow::Result<()> {
        super::bootstrap(self, create).await?;
        if self.edges.is_empty() {
            return Ok(());
        }
        let upstream = nginx::upstream_on_disk(self).await?;
        for edge in &mut self.edges {
            swarm::edges::bootstrap(edge, create, upstream.as_deref()).await?;
        }
        Ok(())
    }

    async fn runs(&self) -> anyhow::Result<Vec<Run>> {
        self.journal.runs(&self.docker).await
    }

    async fn record(&self, run: &mut Run) -> anyhow::Result<()> {
        self.journal.write(&self.docker, run).await
    }

    async fn presence(&self, color: Color) -> anyhow::Result<Presence> {
        containers::presence(self, color).await
    }

    async fn image_of(&self, color: Color) -> anyhow::Result<String> {
        containers::image_of(self, color).await
    }

    async fn start_fresh(
        &self,
        color: Color,
        image: &str,
        count: usize,
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        containers::start_fresh(self, color, image, count, env).await?;
        Ok(match self.config.is_swarm() {
            true => format!("{} ({count} tasks)", self.config.app(color)),
            false => self.config.app_replicas(color, count).join(", "),
        })
    }

    async fn start_kept(&self, color: Color) -> anyhow::Result<String> {
        Ok(containers::start_kept(self, color).await?.join(", "))
    }

    async fn retire(&self, color: Color, remove: bool) -> anyhow::Result<()> {
        containers::retire(self, color, remove).await
    }

    async fn wait_ready(&self, color: Color) -> anyhow::Result<()> {
        Ok(containers::wait_ready(self, color).await?)
    }

    async fn ready_now(&self, color: Color) -> bool {
        containers::ready_now(self, color).await
    }

    async fn smoke(&self, color: Color) -> anyhow::Result<()> {
        containers::smoke(self, color).await
    }

    async fn drain(&mut self, color: Color) -> anyhow::Result<Drained> {
        containers::drain(self, color).await
    }

    async fn show_logs(&self, color: Color) {
        containers::report_logs(self, color).await
    }

    async fn show_edge_logs(&self) {
        containers::report_container_logs(self, &self.config.name("nginx")).await
    }

    async fn undersized(&self, replicas: usize) -> Option<String> {
        nginx::undersized(self, replicas).await
    }

    async fn prepare_edge(&self) -> anyhow::Result<()> {
        proxy::prepare_edge(self).await?;
        for edge in &self.edges {
            proxy::prepare_edge(&edge.stack).await?;
        }
        Ok(())
    }

    async fn serving(&self) -> anyhow::Result<Serving> {
        let mut serving = nginx::serving(self).await?;
        serving.edges = swarm::edges::serving(&self.edges, &self.lost_edges).await?;
        Ok(serving)
    }

    async fn stage(&self, color: Color) -> nginx::Staged {
        // Several edges: the switch renders once and writes every edge in
        // turn, reading what each had first, so nothing is written before.
        if !self.edges.is_empty() {
            return tokio::spawn(async { Ok(()) });
        }
        nginx::stage(self, color).await
    }

    async fn land(&self, staged: nginx::Staged) -> anyhow::Result<()> {
        nginx::landed(staged).await
    }

    async fn switch(
        &self,
        color: Color,
        staged: Option<nginx::Staged>,
        steady: Duration,
    ) -> anyhow::Result<()> {
        if !self.edges.is_empty() {
            if let Some(upload) = staged {
                nginx::landed(upload).await?;
            }
            let text = nginx::render(self, color).await?;
            let verify = Some((color, steady));
            return swarm::edges::apply_everywhere(self, &self.edges, &text, verify).await;
        }
        match staged {
            // A Swarm colour's task addresses are known only once its tasks
            // run: what was staged while they started is rendered again.
            Some(upload) if self.config.is_swarm() => {
                nginx::landed(upload).await?;
                nginx::switch_to(self, color, steady).await
            }
            Some(upload) => {
                nginx::landed(upload).await?;
                nginx::reload(self).await?;
                nginx::verify(self, color, steady).await
            }
            None => nginx::switch_to(self, color, steady).await,
        }
    }

    async fn weigh(&self, old: Color, new: Color, percent: u8) -> anyhow::Result<()> {
        let text = nginx::render_canary(self, old, new, percent).await?;
        match self.edges.is_empty() {
            true => nginx::apply(self, &text).await,
            false => swarm::edges::apply_everywhere(self, &self.edges, &text, None).await,
        }
    }

    async fn apply_upstream(&self, text: &str) -> anyhow::Result<()> {
        match self.edges.is_empty() {
            true => nginx::apply(self, text).await,
            false => swarm::edges::apply_to_all(self, &self.edges, text).await,
        }
    }

    async fn verify(&self, color: Color) -> anyhow::Result<()> {
        nginx::verify(self, color, Duration::ZERO).await?;
        swarm::edges::verify_all(&self.edges, color).await
    }

    fn reloaded(&self, step: &str, reason: String, at: Instant) -> Reloading {
        reloads::after(self, step, reason, at)
    }

    fn cutover_probe(&self) -> Option<probe::Probe> {
        let config = &self.config;
        Some(probe::Probe::start(&probe::Target {
            public: config.public_address.clone(),
            http_path: match config.is_external() {
                true => config.health_path().to_string(),
                false => "/healthz".into(),
            },
            ws_path: config.ws_path().map(str::to_string),
            protocol: config.speaks_wsctl(),
            tls: match super::tls::material(config) {
                Ok(Some(material)) => crate::client::tls::pinned(material.leaf).ok(),
                _ => None,
            },
        }))
    }

    async fn analyse(
        &mut self,
        new: Color,
        old: Option<Color>,
        percent: u8,
        until: Until,
        last: &mut Option<serde_json::Value>,
    ) -> anyhow::Result<String> {
        analysis::run_step(self, new, old, percent, until, last).await
    }

    // With `swarm.edges`, `deploy --proxy` replaces the Nginx of every
    // edge, the manager's first; each old Nginx stays until all serve from
    // their new one, so a failure on any edge puts every edge back.

    async fn create_next_edge(&self, upstream: Option<&str>) -> anyhow::Result<()> {
        for (name, stack) in self.edge_stacks() {
            proxy::create_next(stack, upstream)
                .await
                .map_err(|error| self.on_edge(name, error))?;
        }
        Ok(())
    }

    async fn replace_edge(&self, live: Option<Color>) -> anyhow::Result<()> {
        for (name, stack) in self.edge_stacks() {
            proxy::replace_with_next(stack, live)
                .await
                .map_err(|error| self.on_edge(name, error))?;
        }
        for (_, stack) in self.edge_stacks() {
            proxy::remove_old(stack).await?;
        }
        Ok(())
    }

    async fn remove_next_edge(&self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for (name, stack) in self.edge_stacks() {
            let next = stack.config.name("nginx_next");
            if let Err(error) = docker::remove(&stack.docker, &next).await {
                failed.push(self.on_edge(name, error));
            }
        }
        every_edge_tried(failed)
    }

    async fn put_back_edge(&self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for (name, stack) in self.edge_stacks() {
            if let Err(error) = proxy::put_back(stack).await {
                failed.push(self.on_edge(name, error));
            }
        }
        every_edge_tried(failed)
    }
}

/// An undo tries every edge, so that one edge's failure does not leave the
/// edges after it undone; one error is returned as it is, several together.
fn every_edge_tried(mut failed: Vec<anyhow::Error>) -> anyhow::Result<()> {
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        _ => {
            let all: Vec<String> = failed.iter().map(|error| format!("{error:#}")).collect();
            Err(anyhow::anyhow!(all.join("; ")))
        }
    }
}
