//! What every part of the server shares: configuration, metrics, the session
//! store, the channel layer, the hub and the drain state.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::channel::{ChannelLayer, Hub};
use super::metrics::Metrics;
use super::session::SessionStore;
use crate::config::ServeConfig;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where sessions and broadcasts live.
pub enum Backend {
    /// In this process.
    Memory,
    /// In Redis; `up` follows the health of the command connection,
    /// `subscribed` that of the broadcast subscription.
    Redis {
        up: Arc<AtomicBool>,
        subscribed: Arc<AtomicBool>,
    },
}

impl Backend {
    /// `channel_layer` in `/status`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis { .. } => "redis",
        }
    }

    /// `redis` in `/status`: `ok` or `down`, `None` without Redis.
    pub fn redis_status(&self) -> Option<&'static str> {
        match self {
            Backend::Memory => None,
            Backend::Redis { .. } if self.is_up() => Some("ok"),
            Backend::Redis { .. } => Some("down"),
        }
    }

    /// `false` when Redis is configured and cannot be reached, or the
    /// broadcast subscription is not live (broadcasts would be lost).
    pub fn is_up(&self) -> bool {
        match self {
            Backend::Memory => true,
            Backend::Redis { up, subscribed } => {
                up.load(Ordering::Relaxed) && subscribed.load(Ordering::Relaxed)
            }
        }
    }
}

pub struct AppState {
    pub config: ServeConfig,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<dyn SessionStore>,
    pub channel: Arc<dyn ChannelLayer>,
    pub backend: Backend,
    pub hub: Hub,
    /// Cancelled when the drain begins: every connection schedules its goodbye.
    pub drain: CancellationToken,
    /// Every WebSocket connection task, so the drain can wait for them.
    pub connections: TaskTracker,
    /// One permit per open WebSocket connection (`MAX_CONNECTIONS`).
    pub connection_slots: Arc<Semaphore>,
    pub started: Instant,
    pub started_at: String,
    pub hostname: String,
    ready: AtomicBool,
    schedule: DrainSchedule,
}

/// When the connection in 0-based `slot` of `total` says goodbye, from the
/// start of the drain. Slots 1..=N of N: the last goodbye leaves at the end
/// of the window, and even a lone connection gets time to answer what it
/// had already received. A connection that arrived after the drain began
/// (slot past the count) goes at the end.
fn goodbye_offset(slot: usize, total: usize, window: Duration) -> Duration {
    let total = total.max(1);
    window.mul_f64((slot + 1).min(total) as f64 / total as f64)
}

/// Spreads the goodbyes of a drain evenly over `DRAIN_WINDOW`: the n-th
/// (1-based) of N connections says goodbye at `start + window * n / N`.
#[derive(Default)]
struct DrainSchedule {
    started: OnceLock<Instant>,
    connections: AtomicUsize,
    next_slot: AtomicUsize,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: ServeConfig,
        metrics: Arc<Metrics>,
        sessions: Arc<dyn SessionStore>,
        channel: Arc<dyn ChannelLayer>,
        backend: Backend,
        hub: Hub,
    ) -> Self {
        let connection_slots = Arc::new(Semaphore::new(config.max_connections));
        AppState {
            config,
            metrics,
            sessions,
            channel,
            backend,
            hub,
            drain: CancellationToken::new(),
            connections: TaskTracker::new(),
            connection_slots,
            started: Instant::now(),
            started_at: crate::time::now_rfc3339(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            ready: AtomicBool::new(false),
            schedule: DrainSchedule::default(),
        }
    }

    /// Startup finished: `/readyz` may say ready.
    pub fn mark_started(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Ready to serve: started, not draining, and the backend reachable.
    /// Returns the reason when not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::Relaxed) {
            Err("starting")
        } else if self.is_draining() {
            Err("shutting_down")
        } else if !self.backend.is_up() {
            Err("redis")
        } else {
            Ok(())
        }
    }

    /// Starts the drain: `/readyz` turns 503, upgrades are refused, and each
    /// connection will take a slot in the goodbye schedule.
    pub fn begin_drain(&self) {
        let active = self.metrics.connections_active.get().max(0) as usize;
        self.schedule
            .connections
            .store(active.max(1), Ordering::SeqCst);
        let _ = self.schedule.started.set(Instant::now());
        self.drain.cancel();
    }

    /// When this connection says goodbye: its slot in the drain window.
    pub fn goodbye_deadline(&self) -> Instant {
        let started = *self.schedule.started.get_or_init(Instant::now);
        let slot = self.schedule.next_slot.fetch_add(1, Ordering::SeqCst);
        let total = self.schedule.connections.load(Ordering::SeqCst).max(1);
        started + goodbye_offset(slot, total, self.config.drain_window)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodbyes_spread_evenly_over_the_drain_window() {
        let window = Duration::from_secs(2);
        let offsets: Vec<_> = (0..4).map(|slot| goodbye_offset(slot, 4, window)).collect();
        assert_eq!(
            offsets,
            [500, 1000, 1500, 2000].map(Duration::from_millis).to_vec()
        );
        // A lone connection and a late one both leave at the end.
        assert_eq!(goodbye_offset(0, 1, window), window);
        assert_eq!(goodbye_offset(9, 4, window), window);
        assert_eq!(goodbye_offset(0, 0, window), window);
    }
}
