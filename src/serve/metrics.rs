//! Prometheus metrics of the service, with the contract's names and labels.
//!
//! Label sets used on the hot path (per message) are resolved once here, so
//! counting a frame is one atomic add.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to 2.5 s: messages answered from memory take
/// well under a millisecond, Redis round trips a millisecond or so, and the
/// 1 s alert threshold needs a bucket edge.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The `type` labels of `websocket_errors_total`: the refusal codes of the
/// contract and the ways a connection fails.
const ERROR_KINDS: &[&str] = &[
    "invalid_json",
    "invalid_message",
    "unsupported_frame",
    "rate_limited",
    "unavailable",
    "message_too_large",
    "message_too_big",
    "protocol_error",
    "invalid_utf8",
    "slow_consumer",
    "write_timeout",
    "max_connections",
    "origin_forbidden",
    "unauthorized",
];

pub struct Metrics {
    registry: Registry,
    pub connections_total: IntCounter,
    pub connections_active: IntGauge,
    messages: IntCounterVec,
    errors: IntCounterVec,
    pub message_duration: Histogram,
    pub startup_time: Gauge,
    pub shutdown_time: Gauge,
    /// Accepted (counted) client messages; `/status` shows it.
    pub counted_in: IntCounter,
    /// Frames whose id was seen before: answered, not counted.
    pub duplicates_in: IntCounter,
    pub message_in: IntCounter,
    pub broadcast_in: IntCounter,
    pub bye_in: IntCounter,
    pub message_response_out: IntCounter,
    pub broadcast_out: IntCounter,
    pub heartbeat_out: IntCounter,
    redis_duration: HistogramVec,
    redis_errors: IntCounterVec,
    /// Redis's clock minus this host's, as last estimated from `TIME`.
    pub redis_clock_offset: Gauge,
}

impl Metrics {
    /// Builds the registry. Registration only fails on duplicate or invalid
    /// names, which are fixed here: a failure is a programming error caught
    /// by every test that starts a server.
    pub fn new(color: &str, version: &str) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let connections_total = IntCounter::new(
            "websocket_connections_total",
            "WebSocket connections accepted since start",
        )?;
        let connections_active = IntGauge::new(
            "websocket_connections_active",
            "WebSocket connections open now",
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "websocket_messages_total",
                "WebSocket frames by type and direction",
            ),
            &["type", "direction"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "websocket_errors_total",
                "Refused frames and failed connections by error code",
            ),
            &["type"],
        )?;
        let message_duration = Histogram::with_opts(
            HistogramOpts::new(
                "websocket_message_duration_seconds",
                "Time from receiving a client message to sending its answer",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let startup_time =
            Gauge::new("app_startup_time_seconds", "Seconds from start until ready")?;
        let shutdown_time = Gauge::new(
            "app_shutdown_time_seconds",
            "Seconds the last graceful shutdown took (0 until one happened)",
        )?;
        let app_info = IntGaugeVec::new(
            Opts::new("app_info", "Build and deployment information"),
            &["color", "version"],
        )?;
        let counted_in = IntCounter::new(
            "websocket_counted_messages_total",
            "Client messages accepted and counted into a session",
        )?;
        let duplicates_in = IntCounter::new(
            "websocket_duplicate_messages_total",
            "Client messages whose id the session had seen within DEDUPE_WINDOW: answered with the original count, not counted again",
        )?;
        let redis_duration = HistogramVec::new(
            HistogramOpts::new(
                "redis_command_duration_seconds",
                "Round-trip time of Redis commands, by command",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["command"],
        )?;
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "redis_errors_total",
                "Failed Redis operations by kind (down, timeout, connection, command, late)",
            ),
            &["kind"],
        )?;
        let redis_clock_offset = Gauge::new(
            "redis_clock_offset_seconds",
            "Redis's clock minus this host's, estimated from TIME round trips",
        )?;
        registry.register(Box::new(redis_clock_offset.clone()))?;
        // process_cpu_seconds_total, process_resident_memory_bytes, open fds.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(redis_duration.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(connections_active.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(message_duration.clone()))?;
        registry.register(Box::new(startup_time.clone()))?;
        registry.register(Box::new(shutdown_time.clone()))?;
        registry.register(Box::new(app_info.clone()))?;
        registry.register(Box::new(counted_in.clone()))?;
        registry.register(Box::new(duplicates_in.clone()))?;
        app_info.with_label_values(&[color, version]).set(1);
        // Every error code exists from the start at 0, so that queries and
        // alerts on websocket_errors_total see a series before the first error.
        for code in ERROR_KINDS {
            errors.with_label_values(&[code]);
        }
        let counter = |kind: &str, direction: &str| messages.with_label_values(&[kind, direction]);
        Ok(Metrics {
            message_in: counter("message", "in"),
            broadcast_in: counter("broadcast", "in"),
            bye_in: counter("bye", "in"),
            message_response_out: counter("message_response", "out"),
            broadcast_out: counter("broadcast", "out"),
            heartbeat_out: counter("heartbeat", "out"),
            registry,
            connections_total,
            connections_active,
            messages,
            errors,
            message_duration,
            startup_time,
            shutdown_time,
            counted_in,
            duplicates_in,
            redis_duration,
            redis_errors,
            redis_clock_offset,
        })
    }

    /// Counts a frame of a kind that is not on the per-message hot path.
    pub fn frame(&self, kind: &str, direction: &str) {
        self.messages.with_label_values(&[kind, direction]).inc();
    }

    /// Counts an error by its code.
    pub fn error(&self, code: &str) {
        self.errors.with_label_values(&[code]).inc();
    }

    pub fn redis_round_trip(&self, command: &str, took: std::time::Duration) {
        self.redis_duration
            .with_label_values(&[command])
            .observe(took.as_secs_f64());
    }

    pub fn redis_error(&self, kind: &str) {
        self.redis_errors.with_label_values(&[kind]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which
        // registration already rejected.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "encoding metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
