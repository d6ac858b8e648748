//! `wsctl serve`: the WebSocket service.
//!
//! - `http.rs`: routes and the hyper glue; `upgrade.rs`: the checks before
//!   `101` and the hand-over to a connection task; `connection.rs`: the
//!   per-connection loop (and the echo endpoint).
//! - `frames.rs`: the JSON frames; `rate_limit.rs`: the token bucket.
//! - `backend/`: where sessions and broadcasts live (embedded, Redis, Redis
//!   Cluster), behind one trait; `hub.rs`: the process-wide fan-out queue.
//!   `metrics.rs`: Prometheus. `state.rs`: what they share.
//! - `moves.rs`: moving the clients an old Nginx worker holds, gracefully.
//! - `config.rs`: the validated `ServeConfig`; `auth.rs`: signed access
//!   tokens; `logging.rs`: JSON-lines logs.
//!
//! [`run`] takes its listener and its shutdown trigger from the caller, so
//! tests bind port 0 and pass their own trigger.

pub mod auth;
mod backend;
pub mod config;
mod connection;
mod frames;
mod http;
mod hub;
pub mod logging;
mod metrics;
mod moves;
mod rate_limit;
mod reply;
mod state;
mod upgrade;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::serve::config::ServeConfig;
use hub::HubFrame;
use state::{AppState, VERSION};

/// Binds the configured address with a deep accept queue: thousands of
/// clients reconnecting at once after a deploy would overflow the usual 1024
/// and wait a full SYN retransmit (1 s) each.
pub async fn bind(config: &ServeConfig) -> anyhow::Result<TcpListener> {
    let address = format!("{}:{}", config.host, config.port);
    let mut last_error = None;
    for candidate in tokio::net::lookup_host(&address)
        .await
        .with_context(|| format!("resolving {address} (HOST)"))?
    {
        let socket = if candidate.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }?;
        socket.set_reuseaddr(true)?;
        match socket
            .bind(candidate)
            .and_then(|()| socket.listen(ACCEPT_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(anyhow::anyhow!(
        "binding {address} (HOST/PORT): {}",
        last_error.map_or("no address".to_string(), |error| error.to_string())
    ))
}

/// Raises the soft open-file limit to the hard one (each WebSocket is one
/// descriptor, and the usual soft limit of 1,024 would refuse the 1,000th
/// client) and warns when `MAX_CONNECTIONS` cannot fit under it.
fn raise_open_file_limit(max_connections: usize, set: bool) {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(before, limit, "open-file limit raised to the hard limit");
            let fits = limit.saturating_sub(crate::serve::config::RESERVED_FILES);
            if max_connections as u64 > fits && !set {
                // The default, not a choice: said once, quietly.
                tracing::info!(
                    max_connections,
                    open_files_limit = limit,
                    "about {fits} connections fit under the open-file limit ({limit}); \
                     set MAX_CONNECTIONS to refuse the rest with 503"
                );
            } else if max_connections as u64 > fits {
                tracing::warn!(
                    max_connections,
                    open_files_limit = limit,
                    "MAX_CONNECTIONS ({max_connections}) is above what the open-file limit \
                     ({limit}) allows: about {fits} connections fit; raise the hard limit \
                     (ulimit -Hn, or the container's nofile ulimit) or lower MAX_CONNECTIONS"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "could not read or raise the open-file limit"),
    }
}

/// Connections the kernel may queue before we accept them (capped by
/// `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 8192;

/// Serves until `shutdown` resolves, then drains as the contract orders:
/// `/readyz` 503 at once, no new WebSocket, every received message answered,
/// goodbyes spread over `DRAIN_WINDOW`, return within `SHUTDOWN_TIMEOUT`.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    raise_open_file_limit(config.max_connections, config.max_connections_set);
    let metrics =
        Arc::new(metrics::Metrics::new(&config.color, VERSION).context("registering metrics")?);
    let (hub, _) = broadcast::channel::<HubFrame>(config.broadcast_buffer);

    // Background work, stopped with the listener.
    let stop = CancellationToken::new();
    let background = TaskTracker::new();
    let backend = backend::start(&config, metrics.clone(), &hub, &background, &stop)?;
    let state = Arc::new(AppState::new(config, metrics, backend, hub));

    let address = listener.local_addr().context("reading the bound address")?;
    let http_tasks = TaskTracker::new();
    let accept = tokio::spawn(accept_loop(
        listener,
        state.clone(),
        http_tasks.clone(),
        stop.clone(),
    ));

    let startup = start.elapsed();
    state.metrics.startup_time.set(startup.as_secs_f64());
    state.mark_started();
    tracing::info!(
        %address,
        version = VERSION,
        channel_layer = state.backend.name(),
        startup_seconds = startup.as_secs_f64(),
        "listening"
    );

    shutdown.await;
    let drain_started = Instant::now();
    let active = state.metrics.connections_active.get();
    tracing::info!(connections = active, "draining");
    state.begin_drain();
    state.connections.close();
    // Leave a margin for the last close handshakes and the exit itself.
    let budget = state
        .config
        .shutdown_timeout
        .saturating_sub(Duration::from_millis(500));
    let drained = tokio::time::timeout(budget, state.connections.wait())
        .await
        .is_ok();

    stop.cancel();
    let _ = accept.await;
    http_tasks.close();
    background.close();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        http_tasks.wait().await;
        background.wait().await;
    })
    .await;

    let took = drain_started.elapsed();
    state.metrics.shutdown_time.set(took.as_secs_f64());
    tracing::info!(
        shutdown_seconds = took.as_secs_f64(),
        connections_at_start = active,
        connections_left = state.metrics.connections_active.get(),
        complete = drained,
        "shutdown complete"
    );
    Ok(())
}

/// Accepts sockets until `stop`; each gets an HTTP task. During the drain
/// the listener stays open so that probes still get their 503.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    http_tasks: TaskTracker,
    stop: CancellationToken,
) {
    // Colours are validated names ([a-z0-9_-]), always a valid header value.
    let color = warp::http::HeaderValue::from_str(&state.config.color)
        .unwrap_or(warp::http::HeaderValue::from_static("unknown"));
    let routes = http::routes(state);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                http_tasks.spawn(http::serve_socket(
                    stream,
                    routes.clone(),
                    color.clone(),
                    stop.clone(),
                ));
            }
            Err(error) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
