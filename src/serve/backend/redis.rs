//! Sessions and broadcasts in Redis or a Redis Cluster, so that every
//! instance and both deployment colours act as one service.
//!
//! # Key layout
//! - `wsctl:session:{session_uuid}`: the session's count (a string holding
//!   an integer), with a TTL of `SESSION_TTL`, refreshed on every open and
//!   every counted message.
//! - `{wsctl:session:{session_uuid}}:ids` (a hash: message id to the count
//!   it was answered with) and `{wsctl:session:{session_uuid}}:id_times` (a
//!   sorted set: message id by its first use, Redis clock ms): the ids a
//!   session used within `DEDUPE_WINDOW`, at most `DEDUPE_MAX_IDS`. Their
//!   hash tag is the whole count key, so on a cluster all three keys live
//!   in the count key's slot and one script touches them together (the
//!   count key itself keeps its name: sessions carry on across a deploy
//!   from a version without ids).
//! - `wsctl:broadcast`: the pub/sub channel that carries serialized
//!   `broadcast` frames to every instance.
//!
//! # Connections
//! Two per process, whatever the number of WebSockets: one multiplexed
//! command connection (a `ConnectionManager`, which pipelines concurrent
//! commands and reconnects by itself; on a cluster, the redis crate's
//! async cluster connection, which routes each key to its master and
//! follows failovers) and one pub/sub connection whose messages are fanned
//! out locally through the hub.
//!
//! # Redis Cluster
//! `REDIS_CLUSTER=true` makes `REDIS_URL` a comma-separated list of seed
//! nodes. A session is one key, so every script touches one slot. The
//! broadcast channel stays classic pub/sub (`PUBLISH` inside the counting
//! script, which a cluster forwards to every node), not sharded pub/sub:
//! `SPUBLISH` on one channel would have to run on that channel's shard, so
//! counting a broadcast (on the session's shard) and sending it could no
//! longer be one atomic script. The subscription is on one seed node at a
//! time and moves to the next when that node stops answering. The price is
//! that every broadcast crosses the cluster bus to every node; broadcasts
//! are rate-limited per connection (`BROADCAST_RATE`), so that traffic is
//! bounded.
//!
//! # Counting exactly once when Redis stalls
//! A command that timed out on our side may still run later (a paused Redis
//! wakes up and executes what sat in its socket). So every counting script
//! carries a deadline, checked against Redis's own clock inside the script:
//! after it the script changes nothing. We answer `unavailable` only after
//! the deadline plus a margin ([`COMMAND_TIMEOUT`] vs [`COMMIT_WINDOW`]),
//! so a message answered `unavailable` can never be counted afterwards.
//!
//! The deadline is written on Redis's clock, not ours: the health check
//! runs `TIME` every 500 ms and estimates Redis's clock minus ours from the
//! round trip (the midpoint rule; a sample is used only when its round trip
//! is under [`OFFSET_MAX_RTT`], so the estimate is off by at most half of
//! that). Seconds of skew either way change nothing; only an estimate off
//! by more than the margin could. The one residual case is Redis stopping
//! after executing a script and before writing its reply, for longer than
//! the margin.
//!
//! # Readiness
//! Ready means both connections work: the command connection answers
//! `TIME`, and the subscription is subscribed. The subscription is pinged
//! every [`SUBSCRIPTION_PING`]; a ping without an answer within
//! [`COMMAND_TIMEOUT`] means a hung connection, which is dropped and
//! subscribed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, ScriptInvocation, Value};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{Answer, Backend, OpenedSession, Unavailable};
use crate::serve::config::Dedupe;
use crate::serve::hub::{Hub, HubFrame};
use crate::serve::metrics::Metrics;

pub const BROADCAST_CHANNEL: &str = "wsctl:broadcast";
/// How long we wait for a reply before answering `unavailable`.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long after sending a counting script may still commit (Redis clock).
const COMMIT_WINDOW: Duration = Duration::from_millis(500);
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// A `TIME` sample with a longer round trip does not update the estimate
/// of Redis's clock (its error is at most half the round trip).
const OFFSET_MAX_RTT: Duration = Duration::from_millis(200);
/// How often the subscription connection is pinged.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(1);
/// The least time between two subscriptions, so a flapping Redis is not
/// hammered (doubles up to 2 s while subscribing fails).
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

fn session_key(session: Uuid) -> String {
    format!("wsctl:session:{session}")
}

/// The keys of a session's message ids, in the count key's slot.
fn id_keys(session: Uuid) -> [String; 2] {
    [
        format!("{{wsctl:session:{session}}}:ids"),
        format!("{{wsctl:session:{session}}}:id_times"),
    ]
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

/// KEYS[1] session, KEYS[2] and KEYS[3] its ids (only with an id); ARGV[1]
/// TTL ms, ARGV[2] deadline (Unix ms), ARGV[3] the message id or '',
/// ARGV[4] dedupe window ms, ARGV[5] most ids kept, ARGV[6] optional frame
/// to publish on ARGV[7]. Returns {count, duplicate}; {-1, 0} when the
/// deadline has passed (nothing changed).
const INCREMENT: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms > tonumber(ARGV[2]) then
  return {-1, 0}
end
local id = ARGV[3]
local window = tonumber(ARGV[4])
if id ~= '' then
  local first = redis.call('ZSCORE', KEYS[3], id)
  if first and now_ms - tonumber(first) < window then
    local original = redis.call('HGET', KEYS[2], id)
    if original then
      return {tonumber(original), 1}
    end
  end
end
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if id ~= '' then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms - window, 'LIMIT', 0, 64)
  if #expired > 0 then
    redis.call('ZREM', KEYS[3], unpack(expired))
    redis.call('HDEL', KEYS[2], unpack(expired))
  end
  redis.call('HSET', KEYS[2], id, count)
  redis.call('ZADD', KEYS[3], now_ms, id)
  local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
  if excess > 0 then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, excess - 1)
    redis.call('ZREM', KEYS[3], unpack(oldest))
    redis.call('HDEL', KEYS[2], unpack(oldest))
  end
  redis.call('PEXPIRE', KEYS[2], window)
  redis.call('PEXPIRE', KEYS[3], window)
end
if ARGV[6] then
  redis.call('PUBLISH', ARGV[7], ARGV[6])
end
return {count, 0}
";

/// The command connection.
enum Commands {
    Single(ConnectionManager),
    /// Connected by the first health check that reaches the cluster, so a
    /// cluster that is down at start leaves the process running, not ready.
    Cluster {
        client: Box<ClusterClient>,
        connection: OnceCell<ClusterConnection>,
    },
}

/// A handle on the command connection, for one command.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

pub struct RedisBackend {
    commands: Commands,
    /// Where the broadcast subscription may live: the one server, or the
    /// cluster's seed nodes, tried in turn.
    subscribers: Vec<redis::Client>,
    ttl_ms: u64,
    dedupe: Dedupe,
    up: Arc<AtomicBool>,
    /// The subscription is live (readiness needs it too).
    subscribed: Arc<AtomicBool>,
    /// Redis's clock minus ours, in ms; known before `up` is first set.
    clock_offset_ms: AtomicI64,
    clock_known: AtomicBool,
    metrics: Arc<Metrics>,
    open: Script,
    increment: Script,
}

impl RedisBackend {
    /// Prepares the backend without connecting: a Redis that is down at
    /// start leaves the process running, not ready, reconnecting with
    /// backoff. With `cluster`, `url` is a comma-separated list of seeds.
    pub fn new(
        url: &str,
        cluster: bool,
        session_ttl: Duration,
        dedupe: Dedupe,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let urls: Vec<&str> = if cluster {
            url.split(',').map(str::trim).collect()
        } else {
            vec![url]
        };
        let subscribers = urls
            .iter()
            .map(|url| redis::Client::open(*url))
            .collect::<Result<Vec<_>, _>>()?;
        let commands = if cluster {
            // Few, quick retries: enough to follow a MOVED after a failover
            // within COMMAND_TIMEOUT, which bounds every command anyway.
            let client = ClusterClientBuilder::new(urls)
                .connection_timeout(COMMAND_TIMEOUT)
                .response_timeout(COMMAND_TIMEOUT)
                .retries(3)
                .min_retry_wait(50)
                .max_retry_wait(300)
                .build()?;
            Commands::Cluster {
                client: Box::new(client),
                connection: OnceCell::new(),
            }
        } else {
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_max_delay(Duration::from_secs(2));
            Commands::Single(ConnectionManager::new_lazy_with_config(
                subscribers[0].clone(),
                config,
            )?)
        };
        Ok(RedisBackend {
            commands,
            subscribers,
            ttl_ms: session_ttl.as_millis().max(1) as u64,
            dedupe,
            up: Arc::new(AtomicBool::new(false)),
            subscribed: Arc::new(AtomicBool::new(false)),
            clock_offset_ms: AtomicI64::new(0),
            clock_known: AtomicBool::new(false),
            metrics,
            open: Script::new(OPEN),
            increment: Script::new(INCREMENT),
        })
    }

    /// The command connection, when there is one yet.
    fn connection(&self) -> Option<Connection> {
        match &self.commands {
            Commands::Single(connection) => Some(Connection::Single(connection.clone())),
            Commands::Cluster { connection, .. } => {
                connection.get().cloned().map(Connection::Cluster)
            }
        }
    }

    /// The command connection, connecting to the cluster the first time.
    async fn connect(&self) -> Option<Connection> {
        match &self.commands {
            Commands::Single(connection) => Some(Connection::Single(connection.clone())),
            Commands::Cluster { client, connection } => {
                let connected = connection.get_or_try_init(|| async {
                    let connecting = client.get_async_connection();
                    match tokio::time::timeout(COMMAND_TIMEOUT * 2, connecting).await {
                        Ok(result) => result,
                        Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                            std::io::ErrorKind::TimedOut,
                        ))),
                    }
                });
                connected.await.ok().cloned().map(Connection::Cluster)
            }
        }
    }

    /// Now, on Redis's clock as last estimated (Unix ms).
    fn redis_now_ms(&self) -> u64 {
        let offset = self.clock_offset_ms.load(Ordering::Relaxed);
        (unix_ms() as i64).saturating_add(offset).max(0) as u64
    }

    /// Runs one Redis operation with the health check, the round-trip
    /// metric and the error taxonomy that every command shares.
    async fn timed<T>(
        &self,
        name: &'static str,
        operation: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        if !self.up.load(Ordering::Relaxed) {
            self.metrics.redis_error("down");
            return Err(Unavailable("redis is down".into()));
        }
        let started = Instant::now();
        // The connections time out by themselves; this bounds retries too.
        let result = match tokio::time::timeout(COMMAND_TIMEOUT, operation).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        };
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
            Unavailable(format!("redis {name}: {error}"))
        })
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        name: &'static str,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut connection = self.command_connection()?;
        self.timed(name, invocation.invoke_async(&mut connection))
            .await
    }

    fn command_connection(&self) -> Result<Connection, Unavailable> {
        self.connection().ok_or_else(|| {
            self.metrics.redis_error("down");
            Unavailable("redis is down".into())
        })
    }

    async fn count_once(
        &self,
        session: Uuid,
        id: Option<&str>,
        publish: Option<&str>,
    ) -> Result<Answer, Unavailable> {
        let deadline = self.redis_now_ms() + COMMIT_WINDOW.as_millis() as u64;
        let mut invocation = self.increment.prepare_invoke();
        invocation.key(session_key(session));
        if id.is_some() {
            for key in id_keys(session) {
                invocation.key(key);
            }
        }
        invocation
            .arg(self.ttl_ms)
            .arg(deadline)
            .arg(id.unwrap_or(""))
            .arg(self.dedupe.window.as_millis().max(1) as u64)
            .arg(self.dedupe.max_ids);
        if let Some(frame) = publish {
            invocation.arg(frame).arg(BROADCAST_CHANNEL);
        }
        let (count, duplicate): (i64, i64) = self.invoke("increment", invocation).await?;
        let count = u64::try_from(count).map_err(|_| {
            self.metrics.redis_error("late");
            Unavailable("redis ran the command after its deadline; nothing was counted".into())
        })?;
        Ok(Answer {
            count,
            duplicate: duplicate == 1,
        })
    }

    /// Asks Redis for `TIME` every 500 ms: keeps the health flag current
    /// and the estimate of Redis's clock fresh.
    async fn watch_health(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let healthy = match self.sample_clock().await {
                Some((offset_ms, round_trip)) => {
                    // The first sample is used whatever its round trip: a
                    // rough estimate beats assuming no skew at all.
                    let first = !self.clock_known.swap(true, Ordering::Relaxed);
                    if round_trip <= OFFSET_MAX_RTT || first {
                        self.clock_offset_ms.store(offset_ms, Ordering::Relaxed);
                        self.metrics
                            .redis_clock_offset
                            .set(offset_ms as f64 / 1000.0);
                    }
                    true
                }
                None => false,
            };
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

    /// One `TIME` round trip: `(Redis's clock minus ours in ms, the round
    /// trip)`, or `None` when Redis does not answer in time.
    async fn sample_clock(&self) -> Option<(i64, Duration)> {
        let mut connection = self.connect().await?;
        let sent_ms = unix_ms() as i64;
        let sent = Instant::now();
        let time = redis::cmd("TIME");
        let query = time.query_async::<(u64, u64)>(&mut connection);
        let (seconds, micros) = tokio::time::timeout(COMMAND_TIMEOUT, query)
            .await
            .ok()?
            .ok()?;
        let round_trip = sent.elapsed();
        let redis_ms = (seconds * 1000 + micros / 1000) as i64;
        let midpoint_ms = sent_ms + (round_trip.as_millis() / 2) as i64;
        Some((redis_ms - midpoint_ms, round_trip))
    }

    /// One subscription per process: what arrives on the broadcast channel
    /// goes into the local hub. Reconnects with backoff when it drops or
    /// stops answering pings, on the next seed node of a cluster;
    /// `subscribed` is true only while it works.
    async fn relay_broadcasts(self: Arc<Self>, hub: Hub, stop: CancellationToken) {
        let mut backoff = RESUBSCRIBE_DELAY;
        for node in (0..self.subscribers.len()).cycle() {
            let outcome = tokio::select! {
                outcome = self.subscription(&self.subscribers[node], &hub) => outcome,
                _ = stop.cancelled() => return,
            };
            let was_subscribed = self.subscribed.swap(false, Ordering::Relaxed);
            match outcome {
                Ok(why) => tracing::warn!(why, "redis subscription lost, resubscribing"),
                Err(error) => tracing::warn!(%error, "redis subscription failed, retrying"),
            }
            // A subscription that worked starts the backoff again.
            if was_subscribed {
                backoff = RESUBSCRIBE_DELAY;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Subscribes and relays until the connection ends or a ping goes
    /// unanswered; says which.
    async fn subscription(
        &self,
        node: &redis::Client,
        hub: &Hub,
    ) -> redis::RedisResult<&'static str> {
        let connecting = node.get_async_pubsub();
        let Ok(pubsub) = tokio::time::timeout(COMMAND_TIMEOUT, connecting).await else {
            return Ok("connection timed out");
        };
        let mut pubsub = pubsub?;
        pubsub.subscribe(BROADCAST_CHANNEL).await?;
        let (mut sink, mut messages) = pubsub.split();
        self.subscribed.store(true, Ordering::Relaxed);
        tracing::info!(channel = BROADCAST_CHANNEL, "subscribed");
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Ok("connection closed");
                    };
                    let Ok(text) = String::from_utf8(message.get_payload_bytes().to_vec()) else {
                        continue;
                    };
                    let _ = hub.send(HubFrame {
                        text: text.into(),
                    });
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(
                        COMMAND_TIMEOUT,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    if !matches!(answered, Ok(Ok(_))) {
                        return Ok("ping unanswered");
                    }
                }
            }
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
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        match self.commands {
            Commands::Single(_) => "redis",
            Commands::Cluster { .. } => "redis-cluster",
        }
    }

    fn redis_up(&self) -> Option<bool> {
        Some(self.up.load(Ordering::Relaxed) && self.subscribed.load(Ordering::Relaxed))
    }

    fn spawn_background(self: Arc<Self>, tasks: &TaskTracker, hub: Hub, stop: CancellationToken) {
        tasks.spawn(self.clone().watch_health(stop.clone()));
        tasks.spawn(self.relay_broadcasts(hub, stop));
    }

    async fn open(&self, session: Uuid) -> Result<OpenedSession, Unavailable> {
        let mut invocation = self.open.prepare_invoke();
        invocation.key(session_key(session)).arg(self.ttl_ms);
        let (resumed, count): (i64, i64) = self.invoke("open", invocation).await?;
        Ok(OpenedSession {
            count: count.max(0) as u64,
            resumed: resumed == 1,
        })
    }

    /// Counting, remembering the id and publishing in one script: a
    /// broadcast is either counted and sent, or neither.
    async fn increment(
        &self,
        session: Uuid,
        id: Option<&str>,
        broadcast: Option<String>,
    ) -> Result<Answer, Unavailable> {
        self.count_once(session, id, broadcast.as_deref()).await
    }

    async fn count(&self, session: Uuid) -> Result<u64, Unavailable> {
        let mut connection = self.command_connection()?;
        let mut get = redis::cmd("GET");
        get.arg(session_key(session));
        let query = get.query_async::<Option<u64>>(&mut connection);
        Ok(self.timed("get", query).await?.unwrap_or(0))
    }
}
