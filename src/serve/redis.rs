//! Sessions and broadcasts in Redis, so that every instance and both
//! deployment colours act as one service.
//!
//! # Key layout
//! - `wsctl:session:{session_uuid}`: the session's count (a string holding
//!   an integer), with a TTL of `SESSION_TTL`, refreshed on every open and
//!   every counted message.
//! - `wsctl:broadcast`: the pub/sub channel that carries serialized
//!   `broadcast` frames to every instance.
//!
//! # Connections
//! Two per process, whatever the number of WebSockets: one multiplexed
//! command connection (a `ConnectionManager`, which pipelines concurrent
//! commands and reconnects by itself) and one pub/sub connection whose
//! messages are fanned out locally through the hub.
//!
//! # Counting exactly once when Redis stalls
//! A command that timed out on our side may still run later (a paused Redis
//! wakes up and executes what sat in its socket). So every counting script
//! carries a deadline, checked against Redis's own clock inside the script:
//! after it the script changes nothing. We answer `unavailable` only after
//! the deadline plus a margin ([`COMMAND_TIMEOUT`] vs [`COMMIT_WINDOW`]),
//! so a message answered `unavailable` can never be counted afterwards.
//! The margin absorbs clock skew between this host and Redis (on the same
//! host: none). The one residual case is Redis stopping after executing a
//! script and before writing its reply, for longer than the margin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::channel::{ChannelLayer, Hub, HubFrame, HubKind};
use super::metrics::Metrics;
use super::session::{OpenedSession, SessionStore, StoreUnavailable};

pub const BROADCAST_CHANNEL: &str = "wsctl:broadcast";
/// How long we wait for a reply before answering `unavailable`.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long after sending a counting script may still commit (Redis clock).
const COMMIT_WINDOW: Duration = Duration::from_millis(500);
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

fn session_key(session: Uuid) -> String {
    format!("wsctl:session:{session}")
}

/// KEYS[1] session; ARGV[1] TTL ms. Returns {resumed, count}.
const OPEN: &str = r"
local count = redis.call('GET', KEYS[1])
if count then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {1, tonumber(count)}
end
redis.call('SET', KEYS[1], 0, 'PX', ARGV[1])
return {0, 0}
";

/// KEYS[1] session; ARGV[1] TTL ms, ARGV[2] deadline (Unix ms), ARGV[3]
/// optional frame to publish on ARGV[4]. Returns the new count, or -1 when
/// the deadline has passed (nothing changed).
const INCREMENT: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms > tonumber(ARGV[2]) then
  return -1
end
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if ARGV[3] then
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
return count
";

pub struct RedisLayer {
    client: redis::Client,
    commands: ConnectionManager,
    ttl_ms: u64,
    up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    open: Script,
    increment: Script,
}

impl RedisLayer {
    /// Prepares the layer without connecting: a Redis that is down at start
    /// leaves the process running, not ready, reconnecting with backoff.
    pub fn new(url: &str, session_ttl: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(RedisLayer {
            client,
            commands,
            ttl_ms: session_ttl.as_millis().max(1) as u64,
            up: Arc::new(AtomicBool::new(false)),
            metrics,
            open: Script::new(OPEN),
            increment: Script::new(INCREMENT),
        })
    }

    /// The health flag `/readyz` and `/status` read.
    pub fn up_flag(&self) -> Arc<AtomicBool> {
        self.up.clone()
    }

    /// Runs one Redis operation with the health check, the round-trip
    /// metric and the error taxonomy that every command shares.
    async fn timed<T>(
        &self,
        name: &'static str,
        operation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreUnavailable> {
        if !self.up.load(Ordering::Relaxed) {
            self.metrics.redis_error("down");
            return Err(StoreUnavailable("redis is down".into()));
        }
        let started = Instant::now();
        let result = operation.await;
        self.metrics.redis_round_trip(name, started.elapsed());
        result.map_err(|error| {
            let kind = if error.is_timeout() {
                "timeout"
            } else if error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
            {
                "connection"
            } else {
                "command"
            };
            self.metrics.redis_error(kind);
            StoreUnavailable(format!("redis {name}: {error}"))
        })
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        name: &'static str,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreUnavailable> {
        let mut connection = self.commands.clone();
        self.timed(name, invocation.invoke_async(&mut connection))
            .await
    }

    async fn count_once(
        &self,
        session: Uuid,
        publish: Option<String>,
    ) -> Result<u64, StoreUnavailable> {
        let deadline = unix_ms() + COMMIT_WINDOW.as_millis() as u64;
        let mut invocation = self.increment.prepare_invoke();
        invocation
            .key(session_key(session))
            .arg(self.ttl_ms)
            .arg(deadline);
        if let Some(frame) = &publish {
            invocation.arg(frame).arg(BROADCAST_CHANNEL);
        }
        let count: i64 = self.invoke("increment", invocation).await?;
        u64::try_from(count).map_err(|_| {
            self.metrics.redis_error("late");
            StoreUnavailable("redis ran the command after its deadline; nothing was counted".into())
        })
    }

    /// Pings Redis every 500 ms and keeps the health flag current.
    pub async fn watch_health(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let mut connection = self.commands.clone();
            let ping = redis::cmd("PING");
            let healthy = matches!(
                tokio::time::timeout(COMMAND_TIMEOUT, ping.query_async::<String>(&mut connection))
                    .await,
                Ok(Ok(_))
            );
            let was = self.up.swap(healthy, Ordering::Relaxed);
            if was != healthy {
                if healthy {
                    tracing::info!("redis reachable");
                } else {
                    tracing::warn!("redis unreachable");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One subscription per process: what arrives on the broadcast channel
    /// goes into the local hub. Reconnects with backoff when it drops.
    pub async fn relay_broadcasts(self: Arc<Self>, hub: Hub, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(BROADCAST_CHANNEL).await?;
                tracing::info!(channel = BROADCAST_CHANNEL, "subscribed");
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(text) = String::from_utf8(message.get_payload_bytes().to_vec()) else {
                        continue;
                    };
                    let _ = hub.send(HubFrame {
                        kind: HubKind::Broadcast,
                        text: text.into(),
                    });
                }
                Ok::<_, redis::RedisError>(())
            };
            tokio::select! {
                result = session => match result {
                    Ok(()) => tracing::warn!("redis subscription ended, resubscribing"),
                    Err(error) => tracing::warn!(%error, "redis subscription failed, retrying"),
                },
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[async_trait]
impl SessionStore for RedisLayer {
    async fn open(&self, session: Uuid) -> Result<OpenedSession, StoreUnavailable> {
        let mut invocation = self.open.prepare_invoke();
        invocation.key(session_key(session)).arg(self.ttl_ms);
        let (resumed, count): (i64, i64) = self.invoke("open", invocation).await?;
        Ok(OpenedSession {
            count: count.max(0) as u64,
            resumed: resumed == 1,
        })
    }

    async fn increment(&self, session: Uuid) -> Result<u64, StoreUnavailable> {
        self.count_once(session, None).await
    }

    /// Counting and publishing in one script: a broadcast is either counted
    /// and sent, or neither.
    async fn increment_and_broadcast(
        &self,
        session: Uuid,
        frame: String,
        _channel: &dyn ChannelLayer,
    ) -> Result<u64, StoreUnavailable> {
        self.count_once(session, Some(frame)).await
    }

    async fn count(&self, session: Uuid) -> Result<u64, StoreUnavailable> {
        let mut connection = self.commands.clone();
        let mut get = redis::cmd("GET");
        get.arg(session_key(session));
        let query = get.query_async::<Option<u64>>(&mut connection);
        Ok(self.timed("get", query).await?.unwrap_or(0))
    }
}

#[async_trait]
impl ChannelLayer for RedisLayer {
    async fn publish(&self, text: String) -> Result<(), StoreUnavailable> {
        let mut connection = self.commands.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(BROADCAST_CHANNEL).arg(text);
        let query = publish.query_async::<i64>(&mut connection);
        self.timed("publish", query).await.map(|_| ())
    }
}
