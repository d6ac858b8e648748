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
//! before the reload (`POST /connections/move`, by exec on its loopback;
//! on Swarm from the checker, with the service's move token):
//! each says `goodbye` and closes with 1001, spread over `DRAIN_WINDOW`, and
//! its client reconnects through the new workers and resumes.
//!
//! A reload returns once it has taken effect (`nginx::reload`), so one
//! look finds the old workers it left. Moving clients takes a moment (an
//! exec into each replica), so this runs on a task of its own beside the
//! run, which collects it when it ends: the reload's record (`Reload`) goes
//! into the run's journal record.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::task::JoinHandle;

use super::Stack;
use super::containers;
use super::events::Emitter;
use super::journal::Reload;
use super::nginx::{self, OldWorkers};
use super::swarm::services;
use crate::deploy::config::{Color, NginxSettings, StackConfig};
use crate::deploy::docker;
use crate::shared::secrets::say;

/// A reload's aftermath, being looked at.
pub enum Reloading {
    /// Known already (an engine with nothing to wait for).
    Done(Reload),
    /// Looked at on a task of its own.
    Looking(JoinHandle<Reload>),
}

impl Reloading {
    /// The record, once the look is over; a look that died is recorded as
    /// such, with no old workers counted.
    pub async fn record(self) -> Reload {
        match self {
            Reloading::Done(reload) => reload,
            Reloading::Looking(task) => task.await.unwrap_or_else(|error| Reload {
                step: String::new(),
                reason: format!("looking at the old workers failed: {error}"),
                at: String::new(),
                old_workers: 0,
                old_workers_kib: 0,
                moved: false,
            }),
        }
    }
}

/// The records of a run's reloads, once each look is over.
pub async fn collect(reloading: Vec<Reloading>) -> Vec<Reload> {
    let mut reloads = Vec::new();
    for reload in reloading {
        reloads.push(reload.record().await);
    }
    reloads
}

/// Reports a reload as soon as it has been looked at: a `reload` event with
/// `--json`, a line on a terminal when clients were moved.
fn report(emitter: &Emitter, reload: &Reload) {
    if emitter.is_json() {
        let mut event = serde_json::to_value(reload).unwrap_or_default();
        event["event"] = "reload".into();
        emitter.emit(event);
    } else if reload.moved {
        say!(
            "{}after the {} ({}): {} old Nginx workers ({} MiB) past wsctl.yaml's nginx \
             bounds; their clients were moved with goodbye",
            emitter.prefix(),
            reload.step,
            reload.reason,
            reload.old_workers,
            reload.old_workers_kib / 1024
        );
    }
}

/// Starts looking at the reload that ended at `reloaded`: the old workers
/// it left, and their clients moved when they are past the bounds.
pub fn after(stack: &Stack, step: &str, reason: String, reloaded: Instant) -> Reloading {
    let docker = stack.docker.clone();
    let config = stack.config.clone();
    let emitter = stack.events.emitter();
    let step = step.to_string();
    let at = crate::shared::time::now_rfc3339();
    Reloading::Looking(tokio::spawn(async move {
        let (old, moved) = bound_old_workers(&docker, &config, reloaded).await;
        let reload = Reload {
            step,
            reason,
            at,
            old_workers: old.processes,
            old_workers_kib: old.kib,
            moved,
        };
        report(&emitter, &reload);
        reload
    }))
}

/// The old workers the reload that ended at `reloaded` left, and whether
/// their clients were moved because they are past wsctl.yaml's bounds
/// (a run's reloads, and the Swarm follower's).
pub async fn bound_old_workers(
    docker: &bollard::Docker,
    config: &StackConfig,
    reloaded: Instant,
) -> (OldWorkers, bool) {
    let old = nginx::old_workers(docker, &config.name("nginx")).await;
    // Only the bundled service knows how to move its clients.
    let moved = match past_bounds(&config.nginx, old) {
        Some(_) if !config.is_external() => move_clients(docker, config, reloaded).await > 0,
        _ => false,
    };
    (old, moved)
}

/// Why the old workers are too many or too big, if they are.
pub fn past_bounds(bounds: &NginxSettings, old: OldWorkers) -> Option<String> {
    if old.processes > bounds.max_old_workers {
        return Some(format!(
            "more than nginx.max_old_workers ({})",
            bounds.max_old_workers
        ));
    }
    if old.kib.saturating_mul(1024) > bounds.max_old_memory_bytes() {
        return Some(format!(
            "more than nginx.max_old_memory ({})",
            bounds.max_old_memory
        ));
    }
    None
}

/// Asks every running replica of both colours to move the connections
/// opened before `reloaded`, when the reload had taken effect: that is
/// every connection an old worker holds, and the few the new workers took
/// while the step finished (they reconnect and resume like the others);
/// returns how many replicas took the order.
pub async fn move_clients(
    docker: &bollard::Docker,
    config: &StackConfig,
    reloaded: Instant,
) -> usize {
    let older_than = reloaded.elapsed().max(Duration::from_millis(1));
    let path = format!(
        "/connections/move?older_than={:.3}",
        older_than.as_secs_f64()
    );
    if config.is_swarm() {
        return move_tasks(docker, config, &path).await;
    }
    let url = format!("http://127.0.0.1:{}{path}", config.app_port);
    let mut names = Vec::new();
    for color in Color::ALL {
        names.extend(
            containers::existing_replicas(docker, config, color)
                .await
                .unwrap_or_default(),
        );
    }
    let orders = names.iter().map(|name| {
        let url = url.clone();
        async move {
            let command = ["/wsctl", "probe", "--post", "--print", &url];
            matches!(docker::exec(docker, name, &command).await, Ok((0, _)))
        }
    });
    join_all(orders).await.into_iter().filter(|ok| *ok).count()
}

/// On Swarm: every running task of both colours gets the order from the
/// checker, over the overlay, with its service's move token (a task on
/// another node is out of reach of any exec the manager can make).
async fn move_tasks(docker: &bollard::Docker, config: &StackConfig, path: &str) -> usize {
    let stack = Stack::for_looks(docker.clone(), config.clone());
    let mut orders = Vec::new();
    for color in Color::ALL {
        let Ok(Some(token)) = services::move_token(&stack, color).await else {
            continue;
        };
        for address in services::addresses(&stack, color).await.unwrap_or_default() {
            let url = format!("http://{address}:{}{path}", config.app_port);
            orders.push((url, token.clone()));
        }
    }
    let checker = super::checks::checker(config);
    let sent = orders.iter().map(|(url, token)| {
        let checker = checker.clone();
        async move {
            let command = [
                "/wsctl",
                "probe",
                "--post",
                "--print",
                "--bearer-env",
                TOKEN_ENV,
                url,
            ];
            let env = vec![format!("{TOKEN_ENV}={token}")];
            let sent = docker::exec_with_env(docker, &checker, &command, env).await;
            matches!(sent, Ok((0, _)))
        }
    });
    join_all(sent).await.into_iter().filter(|ok| *ok).count()
}

/// Where the move token travels into the checker's `wsctl probe`.
const TOKEN_ENV: &str = "WSCTL_MOVE_TOKEN";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_workers_past_either_bound_are_moved() {
        let bounds = NginxSettings {
            max_old_workers: 4,
            max_old_memory: "64m".into(),
        };
        let old = |processes, mib: u64| OldWorkers {
            processes,
            kib: mib * 1024,
        };
        assert_eq!(past_bounds(&bounds, old(4, 64)), None);
        assert!(
            past_bounds(&bounds, old(5, 10)).is_some_and(|why| why.contains("max_old_workers"))
        );
        assert!(past_bounds(&bounds, old(1, 65)).is_some_and(|why| why.contains("max_old_memory")));
    }
}
