//! The validated configuration of `wsctl serve`.
//!
//! Configuration flows one way: clap reads flags and environment variables
//! (`cmd/serve.rs`), the value parsers here turn each raw string into a typed
//! value with a one-line error naming what is wrong, and [`ServeConfig::validate`]
//! checks the rules that span several settings. Nothing here does I/O; the
//! server receives a finished `ServeConfig`, and tests build one directly.

use std::time::Duration;

use crate::shared::input::{ConfigError, masked_url};

/// Everything `wsctl serve` needs to run, already checked.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind: an IP literal or a host name such as `localhost`.
    pub host: String,
    /// Port to bind; 0 asks the OS for a free one (tests use this).
    pub port: u16,
    /// Deployment colour shown in logs, `/status`, metrics and greetings.
    pub color: String,
    /// Redis URL for the shared session store and channel layer; `None` keeps
    /// everything in this process.
    pub redis_url: Option<String>,
    /// `REDIS_URL` is a comma-separated list of Redis Cluster seed nodes.
    pub redis_cluster: bool,
    /// Debug-level logs.
    pub debug: bool,
    /// Time between two heartbeats sent to every connection.
    pub heartbeat_interval: Duration,
    /// Upper bound for the whole graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Window over which the shutdown spreads its goodbyes.
    pub drain_window: Duration,
    /// How long a session's count is kept after its last activity.
    pub session_ttl: Duration,
    /// Largest accepted client message (and frame), in bytes.
    pub max_message_size: usize,
    /// Messages per second per connection; the bucket holds twice as many.
    pub rate_limit: f64,
    /// WebSocket connections this process accepts at once.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS` was set (flag or environment), not the default:
    /// only then is a limit the open files cannot hold worth a warning.
    pub max_connections_set: bool,
    /// Origins allowed to open a WebSocket; `None` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Secret that signs tokens; upgrades need one when `require_auth` is set.
    pub secret_key: Option<String>,
    /// Refuse upgrades without a valid token.
    pub require_auth: bool,
    /// A bearer token that lets `POST /connections/move` come from another
    /// host than this one's loopback: on Swarm, wsctl's checker orders a
    /// task on another node over the overlay (it cannot exec there).
    pub move_token: Option<String>,
    /// Serve the conformance echo endpoint `/ws/echo`.
    pub echo_endpoint: bool,
    /// Frames the process-wide broadcast queue keeps for a slow connection
    /// before that connection is disconnected (close 1013).
    pub broadcast_buffer: usize,
    /// Broadcasts per second per connection, on top of `rate_limit`; the
    /// bucket holds [`BROADCAST_BURST`].
    pub broadcast_rate: f64,
    /// Largest broadcast `message` payload (serialized), in bytes.
    pub broadcast_max_size: usize,
    /// Only connections that presented a valid token may broadcast.
    pub broadcast_require_auth: bool,
    /// Sessions the embedded layer keeps; when full, the least recently
    /// active session without a live connection is evicted.
    pub max_sessions: usize,
    /// How long message ids are remembered (`DEDUPE_WINDOW`) and how many
    /// per session (`DEDUPE_MAX_IDS`).
    pub dedupe: Dedupe,
}

/// How message ids are remembered: for `window` after their first use in a
/// session, at most `max_ids` per session (the oldest are forgotten first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dedupe {
    pub window: Duration,
    pub max_ids: usize,
}

/// Broadcasts a connection may send at once after a quiet spell.
pub const BROADCAST_BURST: f64 = 5.0;

/// The shutdown keeps at least this long after the last goodbye, for the
/// last replies and close handshakes.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(1);

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            host: "0.0.0.0".into(),
            port: 8000,
            color: "blue".into(),
            redis_url: None,
            redis_cluster: false,
            debug: false,
            heartbeat_interval: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            drain_window: Duration::from_secs(2),
            session_ttl: Duration::from_secs(3600),
            max_message_size: 65536,
            rate_limit: 100.0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_set: false,
            allowed_origins: None,
            secret_key: None,
            require_auth: false,
            move_token: None,
            echo_endpoint: false,
            broadcast_buffer: 1024,
            broadcast_rate: 1.0,
            broadcast_max_size: 4096,
            broadcast_require_auth: false,
            max_sessions: 100_000,
            dedupe: Dedupe {
                window: Duration::from_secs(300),
                max_ids: 1000,
            },
        }
    }
}

impl ServeConfig {
    /// Checks the rules that involve more than one setting.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.drain_window + SHUTDOWN_MARGIN > self.shutdown_timeout {
            return Err(ConfigError(format!(
                "DRAIN_WINDOW ({}s) must leave at least {}s before SHUTDOWN_TIMEOUT ({}s)",
                self.drain_window.as_secs_f64(),
                SHUTDOWN_MARGIN.as_secs_f64(),
                self.shutdown_timeout.as_secs_f64()
            )));
        }
        if self.require_auth && self.secret_key.is_none() {
            return Err(ConfigError(
                "REQUIRE_AUTH is on but SECRET_KEY is not set: tokens cannot be checked".into(),
            ));
        }
        if self.broadcast_require_auth && self.secret_key.is_none() {
            return Err(ConfigError(
                "BROADCAST_REQUIRE_AUTH is on but SECRET_KEY is not set: tokens cannot be checked"
                    .into(),
            ));
        }
        match (&self.redis_url, self.redis_cluster) {
            (Some(url), false) => validate_redis_url(url)?,
            (Some(urls), true) => {
                for url in urls.split(',') {
                    validate_redis_url(url.trim())?;
                }
            }
            (None, true) => {
                return Err(ConfigError(
                    "REDIS_CLUSTER is on but REDIS_URL does not name the cluster's seed nodes"
                        .into(),
                ));
            }
            (None, false) => {}
        }
        Ok(self)
    }
}

/// `MAX_CONNECTIONS` when nothing sets it (docs/protocol.md).
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;

/// Descriptors a `wsctl serve` process needs besides its WebSockets: the
/// listener, Redis, stdio, the runtime, and HTTP probes in flight.
pub const RESERVED_FILES: u64 = 100;

/// Rejects a `REDIS_URL` that cannot be parsed, at start, before any I/O
/// (redis's own parser: it reads the URL and connects to nothing).
pub fn validate_redis_url(url: &str) -> Result<(), ConfigError> {
    const FORMS: &str = "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... or unix:///PATH";
    // Text that is no URL at all is not repeated: where a password would
    // sit in it is unknown.
    let parsed = url::Url::parse(url).map_err(|error| {
        ConfigError(format!(
            "REDIS_URL is not a URL ({error}); expected {FORMS}"
        ))
    })?;
    if !["redis", "rediss", "unix", "redis+unix"].contains(&parsed.scheme()) {
        return Err(ConfigError(format!(
            "REDIS_URL '{}' has the scheme '{}'; expected {FORMS}",
            masked_url(url),
            parsed.scheme()
        )));
    }
    redis::Client::open(url).map(|_| ()).map_err(|error| {
        let why = error.detail().map_or(error.to_string(), str::to_string);
        ConfigError(format!(
            "REDIS_URL '{}' is not a Redis URL: {why}; expected {FORMS}",
            masked_url(url)
        ))
    })
}

/// A colour is a short lower-case name: it ends up in container names,
/// metric labels and log fields.
pub fn parse_color(raw: &str) -> Result<String, String> {
    let valid = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "'{raw}' is not a colour name (1-32 characters of a-z, 0-9, '-', '_')"
        ))
    }
}

/// Parses a comma-separated list of origins such as
/// `https://app.example.com,http://localhost:3000`.
pub fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = raw
        .split(',')
        .map(|origin| normalize_origin(origin.trim()))
        .filter(|origin| !origin.is_empty())
        .collect();
    for origin in &origins {
        if origin != "null" && !origin.contains("://") {
            return Err(format!(
                "'{origin}' is not an origin (expected scheme://host[:port])"
            ));
        }
    }
    Ok(origins)
}

/// Origins compare case-insensitively and without a trailing slash.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_plain_names() {
        assert!(parse_color("green").is_ok());
        assert!(parse_color("Green").is_err());
        assert!(parse_color("").is_err());
        assert!(parse_color("a b").is_err());
    }

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            parse_origins("https://A.example.com/, http://localhost:3000").unwrap(),
            vec!["https://a.example.com", "http://localhost:3000"]
        );
        assert!(parse_origins("example.com").is_err());
    }

    #[test]
    fn drain_window_must_fit_in_shutdown_timeout() {
        let config = ServeConfig {
            drain_window: Duration::from_secs(10),
            ..ServeConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("DRAIN_WINDOW"), "{error}");
    }

    #[test]
    fn drain_window_must_leave_a_second_before_the_timeout() {
        let tight = ServeConfig {
            drain_window: Duration::from_millis(9500),
            ..ServeConfig::default()
        };
        let error = tight.validate().unwrap_err().to_string();
        assert!(error.contains("at least 1s"), "{error}");
        let exact = ServeConfig {
            drain_window: Duration::from_secs(9),
            ..ServeConfig::default()
        };
        assert!(exact.validate().is_ok());
    }

    #[test]
    fn broadcast_auth_needs_a_secret() {
        let config = ServeConfig {
            broadcast_require_auth: true,
            ..ServeConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("BROADCAST_REQUIRE_AUTH"), "{error}");
    }

    #[test]
    fn require_auth_needs_a_secret() {
        let config = ServeConfig {
            require_auth: true,
            ..ServeConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("SECRET_KEY")
        );
    }

    #[test]
    fn redis_url_needs_a_redis_scheme() {
        assert!(validate_redis_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(validate_redis_url("http://x").is_err());
        assert!(validate_redis_url("not a url").is_err());
        // The password never reaches the message.
        let error = validate_redis_url("http://:s3cret@x:6379").unwrap_err().0;
        assert!(
            error.contains("http://:***@x:6379") && !error.contains("s3cret"),
            "{error}"
        );
        let error = validate_redis_url("redis//:s3cret@x").unwrap_err().0;
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn defaults_validate() {
        assert!(ServeConfig::default().validate().is_ok());
    }
}
