//! What every part of the server shares: configuration, metrics, the
//! backend, the hub and the drain state.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backend::Backend;
use super::hub::Hub;
use super::metrics::Metrics;
use super::moves::Moves;
use crate::serve::config::ServeConfig;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct AppState {
    pub config: ServeConfig,
    pub metrics: Arc<Metrics>,
    pub backend: Arc<dyn Backend>,
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
    /// Orders to move the connections an old proxy worker holds.
    pub moves: Moves,
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
    pub fn new(
        config: ServeConfig,
        metrics: Arc<Metrics>,
        backend: Arc<dyn Backend>,
        hub: Hub,
    ) -> Self {
        let connection_slots = Arc::new(Semaphore::new(config.max_connections));
        AppState {
            config,
            metrics,
            backend,
            hub,
            drain: CancellationToken::new(),
            connections: TaskTracker::new(),
            connection_slots,
            started: Instant::now(),
            started_at: crate::shared::time::now_rfc3339(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            moves: Moves::default(),
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
        } else if self.backend.redis_up() == Some(false) {
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
