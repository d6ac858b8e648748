//! `wsctl serve`: flags and environment variables into a [`ServeConfig`],
//! then the server.

use clap::{ArgAction, Args, builder::BoolishValueParser};

use crate::serve::config::{self, ServeConfig};
use crate::serve::{self, logging};
use crate::shared::input;
use crate::shared::input::ConfigError;
use crate::shared::signal;

/// Every flag has an environment variable; a flag wins over its variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    /// Port to bind (0 picks a free port and logs it).
    #[arg(long, env = "PORT", default_value = "8000")]
    port: u16,
    /// Deployment colour shown in logs, /status, metrics and greetings.
    #[arg(long, env = "COLOR", default_value = "blue", value_parser = config::parse_color)]
    color: String,
    /// Redis URL for sessions and broadcasts; unset keeps them in this process.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// REDIS_URL is a comma-separated list of Redis Cluster seed nodes.
    #[arg(long, env = "REDIS_CLUSTER", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    redis_cluster: bool,
    /// Debug-level logs (`true`/`1`).
    #[arg(long, env = "DEBUG", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    debug: bool,
    /// Seconds between heartbeats.
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "30", value_name = "SECONDS",
          value_parser = input::parse_seconds, allow_negative_numbers = true)]
    heartbeat_interval: std::time::Duration,
    /// Seconds the graceful shutdown may take.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "10", value_name = "SECONDS",
          value_parser = input::parse_seconds, allow_negative_numbers = true)]
    shutdown_timeout: std::time::Duration,
    /// Seconds over which the shutdown spreads its goodbyes.
    #[arg(long, env = "DRAIN_WINDOW", default_value = "2", value_name = "SECONDS",
          value_parser = input::parse_seconds, allow_negative_numbers = true)]
    drain_window: std::time::Duration,
    /// Seconds a session's count is kept after its last activity.
    #[arg(long, env = "SESSION_TTL", default_value = "3600", value_name = "SECONDS",
          value_parser = input::parse_seconds, allow_negative_numbers = true)]
    session_ttl: std::time::Duration,
    /// Largest accepted client message, in bytes.
    #[arg(long, env = "MAX_MESSAGE_SIZE", default_value = "65536", value_name = "BYTES",
          value_parser = |raw: &str| input::parse_count(raw, 1), allow_negative_numbers = true)]
    max_message_size: usize,
    /// Messages per second per connection (burst: twice as many).
    #[arg(long, env = "RATE_LIMIT", default_value = "100", value_parser = input::parse_rate,
          allow_negative_numbers = true)]
    rate_limit: f64,
    /// WebSocket connections this process accepts; above it upgrades get 503.
    /// [default: 50000]
    #[arg(long, env = "MAX_CONNECTIONS",
          value_parser = |raw: &str| input::parse_count(raw, 1), allow_negative_numbers = true)]
    max_connections: Option<usize>,
    /// Comma-separated origins allowed to open a WebSocket; unset allows any.
    #[arg(long, env = "ALLOWED_ORIGINS")]
    allowed_origins: Option<String>,
    /// Secret that signs access tokens.
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Bearer token that lets POST /connections/move come from off this
    /// host's loopback (wsctl sets it on Swarm).
    #[arg(long, env = "MOVE_TOKEN", hide_env_values = true)]
    move_token: Option<String>,
    /// Refuse WebSocket upgrades without a valid `?token=`.
    #[arg(long, env = "REQUIRE_AUTH", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    require_auth: bool,
    /// Serve the conformance echo endpoint /ws/echo.
    #[arg(long, env = "ECHO_ENDPOINT", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    echo_endpoint: bool,
    /// Broadcast frames kept for a slow connection before it is disconnected.
    #[arg(long, env = "BROADCAST_BUFFER", default_value = "1024",
          value_parser = |raw: &str| input::parse_count(raw, 16))]
    broadcast_buffer: usize,
    /// Broadcasts per second per connection (burst 5), on top of RATE_LIMIT.
    #[arg(long, env = "BROADCAST_RATE", default_value = "1", value_parser = input::parse_rate,
          allow_negative_numbers = true)]
    broadcast_rate: f64,
    /// Largest broadcast `message` payload (serialized), in bytes.
    #[arg(long, env = "BROADCAST_MAX_SIZE", default_value = "4096", value_name = "BYTES",
          value_parser = |raw: &str| input::parse_count(raw, 1), allow_negative_numbers = true)]
    broadcast_max_size: usize,
    /// Only connections with a valid `?token=` may broadcast.
    #[arg(long, env = "BROADCAST_REQUIRE_AUTH", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    broadcast_require_auth: bool,
    /// Sessions the embedded layer keeps; when full, the least recently
    /// active session without a live connection is evicted.
    #[arg(long, env = "MAX_SESSIONS", default_value = "100000",
          value_parser = |raw: &str| input::parse_count(raw, 1), allow_negative_numbers = true)]
    max_sessions: usize,
    /// Seconds a message id is remembered after its first use in a session:
    /// a frame repeating it within the window counts nothing.
    #[arg(long, env = "DEDUPE_WINDOW", default_value = "300", value_name = "SECONDS",
          value_parser = input::parse_seconds, allow_negative_numbers = true)]
    dedupe_window: std::time::Duration,
    /// Message ids one session keeps at most (the oldest are forgotten first).
    #[arg(long, env = "DEDUPE_MAX_IDS", default_value = "1000",
          value_parser = |raw: &str| input::parse_count(raw, 1), allow_negative_numbers = true)]
    dedupe_max_ids: usize,
}

impl ServeArgs {
    fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let allowed_origins = match self.allowed_origins.as_deref() {
            Some(raw) if !raw.trim().is_empty() => Some(
                config::parse_origins(raw)
                    .map_err(|why| ConfigError(format!("invalid ALLOWED_ORIGINS: {why}")))?,
            ),
            _ => None,
        };
        ServeConfig {
            host: self.host,
            port: self.port,
            color: self.color,
            redis_url: self.redis_url.filter(|url| !url.is_empty()),
            redis_cluster: self.redis_cluster,
            debug: self.debug,
            heartbeat_interval: self.heartbeat_interval,
            shutdown_timeout: self.shutdown_timeout,
            drain_window: self.drain_window,
            session_ttl: self.session_ttl,
            max_message_size: self.max_message_size,
            rate_limit: self.rate_limit,
            max_connections: self
                .max_connections
                .unwrap_or(crate::serve::config::DEFAULT_MAX_CONNECTIONS),
            max_connections_set: self.max_connections.is_some(),
            allowed_origins,
            secret_key: self.secret_key.filter(|key| !key.is_empty()),
            require_auth: self.require_auth,
            move_token: self.move_token.filter(|token| !token.is_empty()),
            echo_endpoint: self.echo_endpoint,
            broadcast_buffer: self.broadcast_buffer,
            broadcast_rate: self.broadcast_rate,
            broadcast_max_size: self.broadcast_max_size,
            broadcast_require_auth: self.broadcast_require_auth,
            max_sessions: self.max_sessions,
            dedupe: config::Dedupe {
                window: self.dedupe_window,
                max_ids: self.dedupe_max_ids,
            },
        }
        .validate()
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    logging::init(config.debug, &config.color);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = serve::bind(&config).await?;
        serve::run(listener, config, signal::shutdown_signal()).await
    })
}
