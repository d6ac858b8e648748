//! Where sessions and broadcasts live: the one seam between the connection
//! code and storage.
//!
//! [`Backend`] has three implementations, chosen at start from the
//! configuration:
//! - embedded ([`memory::MemoryBackend`]): counts in this process, broadcasts
//!   into the local hub. The default, so `wsctl serve` runs on a bare machine.
//! - Redis (`REDIS_URL`) and Redis Cluster (`REDIS_CLUSTER=true`, a list of
//!   seed nodes): [`redis::RedisBackend`], where every instance and both
//!   deployment colours see the same sessions and broadcasts.

mod memory;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::hub::Hub;
use super::metrics::Metrics;
use crate::serve::config::ServeConfig;
use crate::shared::input::ConfigError;

/// A session as a connection finds it when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedSession {
    /// Messages counted so far (0 for a new session).
    pub count: u64,
    /// The session was known and had not expired.
    pub resumed: bool,
}

/// What counting a message did: what its sender is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The session's count after the message; for a duplicate, the count
    /// its first use was answered with.
    pub count: u64,
    /// Its id was seen in the session within the dedupe window: nothing
    /// was counted and no broadcast was sent.
    pub duplicate: bool,
}

/// The backend could not be reached; the message was not counted.
#[derive(Debug, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct Unavailable(pub String);

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `channel_layer` in `/status`: `memory`, `redis` or `redis-cluster`.
    fn name(&self) -> &'static str;
    /// `None` without Redis; otherwise whether both the command connection
    /// and the broadcast subscription work (readiness needs both).
    fn redis_up(&self) -> Option<bool>;
    /// Starts the background work the backend needs (health checks, the
    /// broadcast subscription, expiry), all of it ending with `stop`.
    fn spawn_background(self: Arc<Self>, tasks: &TaskTracker, hub: Hub, stop: CancellationToken);

    /// Finds the session (refreshing its TTL) or starts it at 0.
    async fn open(&self, session: Uuid) -> Result<OpenedSession, Unavailable>;
    /// Counts one accepted message exactly once and, for a `broadcast`,
    /// sends `broadcast` to every connection of every instance, the
    /// sender's own included: both or neither. With an `id` already used in
    /// the session within the dedupe window nothing changes: the answer is
    /// the original count, marked duplicate. The id is stored with the
    /// count in the same atomic step, so a resend after an answer that was
    /// lost (or came too late) can never count twice.
    async fn increment(
        &self,
        session: Uuid,
        id: Option<&str>,
        broadcast: Option<String>,
    ) -> Result<Answer, Unavailable>;
    /// The session's count now (0 when it is unknown).
    async fn count(&self, session: Uuid) -> Result<u64, Unavailable>;
    /// A connection that opened `session` ended (a backend that bounds its
    /// size never evicts a session with a live connection).
    fn release(&self, _session: Uuid) {}
}

/// The backend the configuration names, with its background work spawned.
pub fn start(
    config: &ServeConfig,
    metrics: Arc<Metrics>,
    hub: &Hub,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Arc<dyn Backend>, ConfigError> {
    let backend: Arc<dyn Backend> = match &config.redis_url {
        None => Arc::new(memory::MemoryBackend::new(
            config.session_ttl,
            config.max_sessions,
            config.dedupe,
            hub.clone(),
        )),
        Some(url) => Arc::new(
            redis::RedisBackend::new(
                url,
                config.redis_cluster,
                config.session_ttl,
                config.dedupe,
                metrics,
            )
            .map_err(|error| ConfigError(format!("REDIS_URL: {error}")))?,
        ),
    };
    backend
        .clone()
        .spawn_background(tasks, hub.clone(), stop.clone());
    Ok(backend)
}

/// A live connection's hold on its session, released when dropped (the
/// connection ended, or its upgrade failed after the session was opened).
pub struct SessionLease {
    backend: Arc<dyn Backend>,
    session: Uuid,
}

impl SessionLease {
    pub fn new(backend: Arc<dyn Backend>, session: Uuid) -> Self {
        SessionLease { backend, session }
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        self.backend.release(self.session);
    }
}
