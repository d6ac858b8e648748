//! The edge follows the tasks (`platform: swarm`). Swarm moves tasks on
//! its own (a node died, a task failed its health check and was replaced)
//! and their overlay addresses change with them; Nginx's upstream lists
//! addresses, so someone must rewrite it. That someone is the checker
//! container beside Nginx on the manager (`wsctl checker --follow`): every
//! second it compares the live colour's running task addresses with the
//! upstream Nginx has, and when they differ it takes the stack's lock,
//! renders the upstream as a switch would and reloads Nginx (`nginx -t`
//! first). It reaches the manager's engine through its socket, mounted in.
//!
//! It follows the colour too. The live colour is the journal's (the newest
//! ended run's `traffic`, read from the cluster), not only the one its own
//! file names: an edge whose node was down while a deploy or a rollback
//! ran comes back with the upstream it had, and without this it would
//! serve a colour that has been drained, until someone ran `wsctl
//! recover`. When the two differ, the follower switches its edge as a
//! switch would. With no ended run in the journal (none yet, or one in
//! progress or dead: its lock and `recover` decide), its file's colour is
//! the live one.
//!
//! It leaves alone what a run is doing: while the lock is held (a deploy,
//! a canary's analysis) it waits, and it never touches a weighted upstream
//! (a canary; `wsctl recover` repairs one a dead run left). An edge that is
//! lost takes its follower with it; every other edge has its own.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::services;
use crate::deploy::config::{Color, NginxSettings, Platform, StackConfig};
use crate::deploy::{Events, Stack, journal, lock, nginx, reloads, upstream};
use crate::shared::signal::Interrupt;

/// The environment variable that carries the follower's [`Spec`].
pub const ENV: &str = "WSCTL_FOLLOW";
/// Where the manager's socket is mounted in the checker.
pub const SOCKET: &str = "/var/run/docker.sock";
/// How often the follower looks.
const EVERY: Duration = Duration::from_secs(1);
/// The lease of the follower's lock (it holds it for one reload).
const LOCK_TTL: u64 = 30;

/// What the follower needs of wsctl.yaml to render the upstream as a switch
/// does (the rest of the stack is not its business).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub prefix: String,
    pub network: String,
    pub app_port: u16,
    pub private_networks: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub unlimited_networks: Vec<String>,
    pub hsts: bool,
    pub lock_ttl: u64,
    /// The old-worker bounds after each reload (`nginx:` in wsctl.yaml).
    #[serde(default)]
    pub nginx: NginxSettings,
    /// The upstream template's text.
    pub template: String,
}

impl Spec {
    pub fn of(stack: &Stack) -> Spec {
        let config = &stack.config;
        Spec {
            prefix: config.prefix.clone(),
            network: config.network.clone(),
            app_port: config.app_port,
            private_networks: config.private_networks.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            unlimited_networks: config.unlimited_networks.clone(),
            hsts: config.tls.as_ref().is_some_and(|tls| tls.hsts),
            lock_ttl: config.lock_ttl,
            nginx: config.nginx.clone(),
            template: stack.template.clone(),
        }
    }

    fn config(&self) -> StackConfig {
        StackConfig {
            platform: Platform::Swarm,
            prefix: self.prefix.clone(),
            network: self.network.clone(),
            app_port: self.app_port,
            private_networks: self.private_networks.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            unlimited_networks: self.unlimited_networks.clone(),
            lock_ttl: self.lock_ttl,
            nginx: self.nginx.clone(),
            ..StackConfig::default()
        }
    }
}

/// The manager's socket on the manager's machine, to mount into the
/// checker: the path wsctl reaches it by, when that is a unix socket
/// (`swarm.manager`, else `DOCKER_HOST`), else the engine's default.
pub fn manager_socket(config: &StackConfig) -> String {
    let from_env = std::env::var("DOCKER_HOST").ok();
    let endpoint = config.swarm.manager.clone().or(from_env);
    endpoint
        .as_deref()
        .and_then(|endpoint| endpoint.strip_prefix("unix://"))
        .map_or_else(|| SOCKET.to_string(), str::to_string)
}

/// Follows until `interrupt` fires (the checker's SIGTERM).
pub async fn run(spec: Spec, interrupt: Interrupt) -> anyhow::Result<()> {
    let docker = crate::deploy::docker::connect().await?;
    let hsts = spec.hsts;
    let stack = Stack::new(
        docker,
        spec.config(),
        Events::new(true),
        spec.template.clone(),
        Duration::ZERO,
        interrupt.clone(),
    );
    tracing::info!(stack = %stack.config.name("wsctl"), "following the live colour's tasks");
    loop {
        match follow_once(&stack, hsts).await {
            Ok(Some(change)) => tracing::info!(
                switched = ?change.switched,
                added = ?change.added,
                removed = ?change.removed,
                old_workers = change.old_workers,
                moved = change.moved,
                "the upstream follows the tasks"
            ),
            Ok(None) => {}
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "following the tasks"),
        }
        tokio::select! {
            _ = interrupt.wait() => return Ok(()),
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// What one rewrite changed.
#[derive(Debug)]
pub struct Change {
    /// The colour the edge served and the journal's, when they differed.
    pub switched: Option<(Color, Color)>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Old Nginx workers after the reload, and whether their clients were
    /// moved (past `nginx.max_old_workers` or `max_old_memory`).
    pub old_workers: usize,
    pub moved: bool,
}

/// The `host` part of each `server host:port ...;` line.
fn listed_servers(upstream: &str) -> BTreeSet<String> {
    upstream
        .lines()
        .filter_map(|line| line.trim().strip_prefix("server "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|server| server.trim_end_matches(';').rsplit_once(':'))
        .map(|(host, _)| host.to_string())
        .collect()
}

/// The live colour: the journal's, else the one the edge's file names.
async fn live_colour(stack: &Stack, on_file: Color) -> anyhow::Result<Color> {
    let runs = stack.journal.runs(&stack.docker).await?;
    Ok(journal::traffic(&runs).unwrap_or(on_file))
}

/// One look, and a rewrite when the live colour's tasks moved or the edge
/// serves another colour than the journal's.
async fn follow_once(stack: &Stack, hsts: bool) -> anyhow::Result<Option<Change>> {
    let Some(text) = nginx::upstream_on_disk(stack).await? else {
        return Ok(None);
    };
    let Some(on_file) = upstream::live_color(&text) else {
        return Ok(None);
    };
    if text.contains(" weight=") {
        return Ok(None);
    }
    let live = live_colour(stack, on_file).await?;
    let listed = listed_servers(&text);
    let wanted: Vec<String> = services::addresses(stack, live).await?;
    let wanted_set: BTreeSet<String> = wanted.iter().cloned().collect();
    // No running task at all: nothing better to route to; the next deploy
    // or recover decides.
    if wanted.is_empty() || (live == on_file && wanted_set == listed) {
        return Ok(None);
    }
    let request = lock::Request {
        command: "follow",
        token: &uuid::Uuid::new_v4().to_string(),
        message: "",
        ttl: LOCK_TTL,
    };
    // Held by a run: it renders the upstream itself; look again later.
    let Ok(held) = lock::acquire(&stack.docker, &stack.config, request, Duration::ZERO).await
    else {
        return Ok(None);
    };
    let rewritten = rewrite(stack, &text, on_file, live, &wanted, hsts).await;
    held.release(&stack.docker).await?;
    if !rewritten? {
        return Ok(None);
    }
    let (old, moved) =
        reloads::bound_old_workers(&stack.docker, &stack.config, Instant::now()).await;
    Ok(Some(Change {
        switched: (live != on_file).then_some((on_file, live)),
        added: wanted_set.difference(&listed).cloned().collect(),
        removed: listed.difference(&wanted_set).cloned().collect(),
        old_workers: old.processes,
        moved,
    }))
}

/// Under the lock: the upstream is still the one looked at and the
/// journal still names `live` (no run switched or ended meanwhile), so the
/// upstream is rendered for `wanted` and applied. Returns whether it was.
async fn rewrite(
    stack: &Stack,
    looked_at: &str,
    on_file: Color,
    live: Color,
    wanted: &[String],
    hsts: bool,
) -> anyhow::Result<bool> {
    let now = nginx::upstream_on_disk(stack).await?;
    if now.as_deref() != Some(looked_at) || live_colour(stack, on_file).await? != live {
        return Ok(false);
    }
    let rendered = nginx::render_for(stack, live, wanted, hsts)?;
    nginx::apply(stack, &rendered).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_of_an_upstream_are_its_hosts() {
        let upstream = "# wsctl live colour: blue\nupstream wsctl_live {\n    least_conn;\n    \
                        server 10.217.1.6:8000;\n    server 10.217.1.7:8000 max_fails=0;\n}\n";
        let listed: Vec<String> = listed_servers(upstream).into_iter().collect();
        assert_eq!(listed, ["10.217.1.6", "10.217.1.7"]);
    }
}
