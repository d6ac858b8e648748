//! What follows every Nginx reload wsctl makes.
//!
//! Nginx's old workers keep the WebSockets they hold until those close
//! (`nginx/nginx.conf` sets no `worker_shutdown_timeout`), so a reload
//! never cuts a socket. Each reload leaves old workers behind, holding
//! every socket opened before it; they go once their sockets close: the
//! drain of a deploy moves the old colour's clients, while the clients of a
//! colour that keeps serving stay on them. Past wsctl.yaml's bounds
//! (`nginx.max_old_workers`, `nginx.max_old_memory`) wsctl asks every
//! running replica of the bundled service to move the connections opened
//! before the reload (`POST /connections/move`, by exec, loopback only):
//! each says `goodbye` and closes with 1001, spread over `DRAIN_WINDOW`, and
//! its client reconnects through the new workers and resumes.
//!
//! Every reload is recorded in the run's journal record (`Reload`).

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::journal::Reload;
use super::nginx::{self, OldWorkers};
use super::{Stack, containers};
use crate::deploy::config::Color;
use crate::deploy::docker;
use crate::shared::secrets::say;

/// Old workers stop taking new connections a few milliseconds after a
/// reload: connections opened later than this are the new workers'.
const ACCEPT_SETTLE: Duration = Duration::from_millis(200);

/// Looks at the old workers after the reload that ended at `reloaded`,
/// moves their clients when they are past the bounds, and returns the
/// record.
pub async fn after(stack: &Stack, step: &str, reason: String, reloaded: Instant) -> Reload {
    let old = nginx::old_workers(stack).await;
    let moved = match past_bounds(stack, old) {
        Some(why) => {
            let replicas = move_clients(stack, reloaded).await;
            if !stack.events.is_json() {
                say!(
                    "{}{} old Nginx workers ({} MiB) {why}: {replicas} replicas move their clients \
                     with goodbye",
                    stack.events.prefix(),
                    old.processes,
                    old.kib / 1024
                );
            }
            replicas > 0
        }
        None => false,
    };
    let reload = Reload {
        step: step.to_string(),
        reason,
        at: crate::shared::time::now_rfc3339(),
        old_workers: old.processes,
        old_workers_kib: old.kib,
        moved,
    };
    let mut event = serde_json::to_value(&reload).unwrap_or_default();
    event["event"] = "reload".into();
    stack.events.emit(event);
    reload
}

/// Why the old workers are too many or too big, if they are.
fn past_bounds(stack: &Stack, old: OldWorkers) -> Option<String> {
    let bounds = &stack.config.nginx;
    if old.processes > bounds.max_old_workers {
        return Some(format!(
            "are more than nginx.max_old_workers ({})",
            bounds.max_old_workers
        ));
    }
    if old.kib.saturating_mul(1024) > bounds.max_old_memory_bytes() {
        return Some(format!(
            "hold more than nginx.max_old_memory ({})",
            bounds.max_old_memory
        ));
    }
    None
}

/// Asks every running replica of both colours to move the connections
/// opened before `reloaded` (plus the settle time); returns how many
/// replicas took the order.
async fn move_clients(stack: &Stack, reloaded: Instant) -> usize {
    let cutoff = reloaded + ACCEPT_SETTLE;
    if let Some(wait) = cutoff.checked_duration_since(Instant::now()) {
        tokio::time::sleep(wait).await;
    }
    let older_than = cutoff.elapsed().max(Duration::from_millis(1));
    let url = format!(
        "http://127.0.0.1:{}/connections/move?older_than={:.3}",
        stack.config.app_port,
        older_than.as_secs_f64()
    );
    let mut names = Vec::new();
    for color in Color::ALL {
        names.extend(containers::replicas(stack, color).await.unwrap_or_default());
    }
    let orders = names.iter().map(|name| {
        let url = url.clone();
        async move {
            let command = ["/wsctl", "probe", "--post", "--print", &url];
            matches!(
                docker::exec(&stack.docker, name, &command).await,
                Ok((0, _))
            )
        }
    });
    join_all(orders).await.into_iter().filter(|ok| *ok).count()
}
