//! One WebSocket connection: a single task whose loop is a `select!` over
//! the drain signal, its goodbye slot, the process hub and the socket.
//!
//! Replies are written inline, in the order the client's frames arrived, so
//! "answered" means "counted" (the contract's closing rule): the loop never
//! reads a frame after it has sent `goodbye`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::value::RawValue;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, Sleep, interval_at, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use uuid::Uuid;

use super::backend::{Answer, OpenedSession, Unavailable};
use super::frames::{
    ClientRequest, Counted, ErrorCode, GoodbyeReason, ServerFrame, parse_client_frame,
    seconds_number,
};
use super::hub::HubFrame;
use super::moves;
use super::rate_limit::TokenBucket;
use super::state::{AppState, VERSION};
use crate::serve::config::BROADCAST_BURST;

pub type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// A write that takes longer than this means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for the client's half of a close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer per connection. tungstenite's default (128 KiB, allocated up
/// front) would cost ~1.3 GB for 10,000 idle sockets; larger messages still
/// arrive, the buffer grows for them.
const READ_BUFFER: usize = 4 * 1024;

/// The tungstenite settings shared by `/ws/chat/` and `/ws/echo`.
pub fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Write each frame at once; `send` flushes anyway.
        .write_buffer_size(0)
        // A client that never reads cannot grow our memory without bound.
        .max_write_buffer_size(max_message_size.saturating_mul(4).saturating_add(64 * 1024))
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// Close code for a client that cannot keep up with broadcasts (1013 "try
/// again later": reconnecting is the remedy).
pub const SLOW_CONSUMER: CloseCode = CloseCode::Again;

/// What the loop does after handling a frame.
enum Flow {
    Continue,
    Stop,
}

pub struct ChatConnection {
    state: Arc<AppState>,
    ws: WsStream,
    id: Uuid,
    session: Uuid,
    hub: broadcast::Receiver<HubFrame>,
    /// Every message: `RATE_LIMIT`, burst twice that.
    bucket: TokenBucket,
    /// Broadcasts on top: `BROADCAST_RATE`, burst [`BROADCAST_BURST`].
    broadcast_bucket: TokenBucket,
    /// The upgrade carried a valid token (for `BROADCAST_REQUIRE_AUTH`).
    authenticated: bool,
    /// The last count this connection saw, for a goodbye when the store is down.
    last_count: u64,
    /// When it opened, and the orders to move connections opened before a
    /// proxy reload (`moves.rs`).
    opened: Instant,
    moves: watch::Receiver<Option<Instant>>,
}

impl ChatConnection {
    pub fn new(
        state: Arc<AppState>,
        ws: WsStream,
        id: Uuid,
        session: Uuid,
        hub: broadcast::Receiver<HubFrame>,
        authenticated: bool,
    ) -> Self {
        let config = &state.config;
        let now = Instant::now();
        let moves = state.moves.subscribe();
        let bucket = TokenBucket::new(config.rate_limit, config.rate_limit * 2.0, now);
        let broadcast_bucket = TokenBucket::new(config.broadcast_rate, BROADCAST_BURST, now);
        ChatConnection {
            state,
            ws,
            id,
            session,
            hub,
            bucket,
            broadcast_bucket,
            authenticated,
            last_count: 0,
            opened: now,
            moves,
        }
    }

    /// Greets the client, then serves it until either side closes.
    pub async fn run(mut self, opened: OpenedSession) {
        self.last_count = opened.count;
        let state = self.state.clone();
        let config = &state.config;
        let greeting = ServerFrame::ConnectionEstablished {
            connection_id: self.id,
            session_uuid: self.session,
            count: opened.count,
            resumed: opened.resumed,
            color: &config.color,
            version: VERSION,
            heartbeat_interval: seconds_number(config.heartbeat_interval),
            dedupe_window: seconds_number(config.dedupe.window),
        };
        if self.send_frame(&greeting).await.is_err() {
            return;
        }
        let mut goodbye_at: Option<Pin<Box<Sleep>>> = None;
        // This connection's own heartbeat, every interval from its start:
        // a process-wide tick sent all of them in one instant, 16,700
        // frames per replica every 30 s at 100,000 sockets, which stalled
        // the connects and resumes of that moment (docs/BENCHMARKS.md
        // section 11). Connections open at different moments, so their
        // heartbeats spread over the interval.
        let period = config.heartbeat_interval;
        let mut heartbeat = interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The drain began: take a slot in the goodbye schedule and
                // keep serving until it comes.
                _ = self.state.drain.cancelled(), if goodbye_at.is_none() => {
                    let deadline = self.state.goodbye_deadline();
                    goodbye_at = Some(Box::pin(sleep_until(deadline.into())));
                }
                // Moved off an old proxy worker: a moment in the drain
                // window of its own, then goodbye as in a drain.
                _ = moves::named(&mut self.moves, self.opened), if goodbye_at.is_none() => {
                    let offset = moves::offset(self.id, self.state.config.drain_window);
                    goodbye_at = Some(Box::pin(sleep(offset)));
                }
                // Our slot came: goodbye, close 1001.
                _ = wait_for(&mut goodbye_at), if goodbye_at.is_some() => {
                    self.goodbye(GoodbyeReason::ServerShutdown, CloseCode::Away).await;
                    return;
                }
                _ = heartbeat.tick() => {
                    if self.heartbeat().await.is_err() {
                        return;
                    }
                }
                // A broadcast for every local connection.
                frame = self.hub.recv() => match frame {
                    Ok(frame) => {
                        if self.forward(frame).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "client too slow for broadcasts, disconnecting");
                        self.state.metrics.error("slow_consumer");
                        self.close(SLOW_CONSUMER, "too slow").await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                // A frame from the client.
                incoming = self.ws.next() => match incoming {
                    Some(Ok(message)) => {
                        if let Flow::Stop = self.handle(message).await {
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        fail_connection(&mut self.ws, &self.state, error).await;
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    /// Handles one client message.
    async fn handle(&mut self, message: Message) -> Flow {
        let received = Instant::now();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                self.state.metrics.frame("binary", "in");
                return self
                    .refuse_if_allowed(
                        received,
                        ErrorCode::UnsupportedFrame,
                        "binary frames are not supported; send JSON text",
                    )
                    .await;
            }
            // The client started the close handshake; tungstenite queued the
            // reply, which finishing the stream flushes.
            Message::Close(_) => {
                finish_close(&mut self.ws).await;
                return Flow::Stop;
            }
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Flow::Continue,
        };
        let request = match parse_client_frame(&text) {
            Ok(request) => request,
            Err(refusal) => {
                if !self.bucket.try_take(received) {
                    return self.rate_limited(refusal.id.as_deref()).await;
                }
                self.state.metrics.frame("invalid", "in");
                return self
                    .refuse(refusal.code, &refusal.detail, refusal.id.as_deref())
                    .await;
            }
        };
        let id = request.id();
        if !self.bucket.try_take(received) {
            return self.rate_limited(id).await;
        }
        match &request {
            ClientRequest::Message(counted) => {
                self.state.metrics.message_in.inc();
                self.count_and_answer(counted, None, received).await
            }
            ClientRequest::Broadcast(counted) => {
                self.state.metrics.broadcast_in.inc();
                if let Err((code, detail)) = self.broadcast_allowed(counted.message, received) {
                    return self.refuse(code, detail, id).await;
                }
                let timestamp = crate::shared::time::now_rfc3339();
                let frame = ServerFrame::Broadcast {
                    from: self.id,
                    message: counted.message,
                    timestamp: &timestamp,
                    id,
                };
                self.count_and_answer(counted, Some(frame.to_json()), received)
                    .await
            }
            ClientRequest::Bye => {
                self.state.metrics.bye_in.inc();
                self.goodbye(GoodbyeReason::ClientRequest, CloseCode::Normal)
                    .await;
                Flow::Stop
            }
        }
    }

    /// Counts a message, or a broadcast with its `broadcast` frame to send,
    /// and answers it with a `message_response`. A broadcast without an
    /// id gets no such answer: its own copy, which arrives through the hub
    /// like everyone else's, is its answer. With an id it is answered too,
    /// so that its sender learns the count (and, for a resend, that it was
    /// a duplicate that nobody got twice).
    async fn count_and_answer(
        &mut self,
        counted: &Counted<'_>,
        broadcast: Option<String>,
        received: Instant,
    ) -> Flow {
        let id = counted.id.as_deref();
        let answers = broadcast.is_none() || id.is_some();
        let answer = match self
            .state
            .backend
            .increment(self.session, id, broadcast)
            .await
        {
            Ok(answer) => answer,
            Err(error) => return self.unavailable(error, id).await,
        };
        self.counted(answer);
        if answers {
            let timestamp = crate::shared::time::now_rfc3339();
            let reply = ServerFrame::MessageResponse {
                count: answer.count,
                message: counted.message,
                connection_id: self.id,
                timestamp: &timestamp,
                id,
                duplicate: id.map(|_| answer.duplicate),
            };
            if self.send_frame(&reply).await.is_err() {
                return Flow::Stop;
            }
            self.state.metrics.message_response_out.inc();
        }
        self.state
            .metrics
            .message_duration
            .observe(received.elapsed().as_secs_f64());
        Flow::Continue
    }

    /// The broadcast budget, checked before anything is counted or sent:
    /// the token rule, the size, then the broadcast rate (a refused
    /// broadcast spends no broadcast token).
    fn broadcast_allowed(
        &mut self,
        value: &RawValue,
        received: Instant,
    ) -> Result<(), (ErrorCode, &'static str)> {
        let config = &self.state.config;
        if config.broadcast_require_auth && !self.authenticated {
            return Err((
                ErrorCode::Unauthorized,
                "broadcasts need a valid token (?token= on the upgrade); nothing was sent",
            ));
        }
        if value.get().len() > config.broadcast_max_size {
            return Err((
                ErrorCode::MessageTooLarge,
                "broadcast larger than BROADCAST_MAX_SIZE; nothing was sent",
            ));
        }
        if !self.broadcast_bucket.try_take(received) {
            return Err((
                ErrorCode::RateLimited,
                "broadcast rate limit exceeded; nothing was sent",
            ));
        }
        Ok(())
    }

    fn counted(&mut self, answer: Answer) {
        self.last_count = self.last_count.max(answer.count);
        if answer.duplicate {
            self.state.metrics.duplicates_in.inc();
        } else {
            self.state.metrics.counted_in.inc();
        }
    }

    /// A binary frame still spends a token, so that a flood of them is
    /// limited like any other.
    async fn refuse_if_allowed(
        &mut self,
        received: Instant,
        code: ErrorCode,
        detail: &str,
    ) -> Flow {
        if !self.bucket.try_take(received) {
            return self.rate_limited(None).await;
        }
        self.refuse(code, detail, None).await
    }

    async fn rate_limited(&mut self, id: Option<&str>) -> Flow {
        self.refuse(
            ErrorCode::RateLimited,
            "rate limit exceeded; message dropped",
            id,
        )
        .await
    }

    async fn unavailable(&mut self, error: Unavailable, id: Option<&str>) -> Flow {
        tracing::warn!(%error, "message not counted");
        self.send_error(
            ErrorCode::Unavailable,
            "the session store is unavailable; the message was not counted, send it again later",
            id,
            Some(true),
        )
        .await
    }

    /// Sends an `error` frame; the connection stays open.
    async fn refuse(&mut self, code: ErrorCode, detail: &str, id: Option<&str>) -> Flow {
        self.send_error(code, detail, id, None).await
    }

    async fn send_error(
        &mut self,
        code: ErrorCode,
        detail: &str,
        id: Option<&str>,
        retry: Option<bool>,
    ) -> Flow {
        self.state.metrics.error(code.as_str());
        let frame = ServerFrame::Error {
            code,
            detail,
            id,
            retry,
        };
        match self.send_frame(&frame).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Stop,
        }
    }

    /// Sends `goodbye` with the session's total, then closes with `code`.
    async fn goodbye(&mut self, reason: GoodbyeReason, code: CloseCode) {
        let count = match self.state.backend.count(self.session).await {
            Ok(count) => count.max(self.last_count),
            Err(_) => self.last_count,
        };
        let frame = ServerFrame::Goodbye {
            count,
            reason,
            connection_id: self.id,
        };
        if self.send_frame(&frame).await.is_ok() {
            let why = match reason {
                GoodbyeReason::ClientRequest => "bye",
                GoodbyeReason::ServerShutdown => "server shutdown",
            };
            self.close(code, why).await;
        }
    }

    async fn close(&mut self, code: CloseCode, reason: &'static str) {
        close_with(&mut self.ws, code, reason).await;
    }

    async fn forward(&mut self, frame: HubFrame) -> Result<(), ()> {
        self.state.metrics.broadcast_out.inc();
        self.send_text(Message::Text(frame.text)).await
    }

    async fn heartbeat(&mut self) -> Result<(), ()> {
        let timestamp = crate::shared::time::now_rfc3339();
        let frame = ServerFrame::Heartbeat {
            timestamp: &timestamp,
            color: &self.state.config.color,
        };
        let text = frame.to_json();
        self.state.metrics.heartbeat_out.inc();
        tracing::debug!("heartbeat sent");
        self.send_text(Message::text(text)).await
    }

    async fn send_frame(&mut self, frame: &ServerFrame<'_>) -> Result<(), ()> {
        match frame {
            ServerFrame::MessageResponse { .. } => {}
            other => self.state.metrics.frame(other.kind(), "out"),
        }
        self.send_text(Message::text(frame.to_json())).await
    }

    async fn send_text(&mut self, message: Message) -> Result<(), ()> {
        match timeout(WRITE_TIMEOUT, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::debug!(%error, "write failed");
                Err(())
            }
            Err(_) => {
                tracing::warn!("client stopped reading, disconnecting");
                self.state.metrics.error("write_timeout");
                Err(())
            }
        }
    }
}

async fn wait_for(sleep: &mut Option<Pin<Box<Sleep>>>) {
    match sleep {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Fails the connection after a read error with the RFC 6455 close code
/// that names it: 1009 too big, 1007 invalid UTF-8, 1002 protocol error.
pub async fn fail_connection(ws: &mut WsStream, state: &AppState, error: WsError) {
    let (code, label, reason) = match &error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            (CloseCode::Size, "message_too_big", "message too big")
        }
        WsError::Capacity(_) => (CloseCode::Size, "message_too_big", "frame too big"),
        WsError::Utf8(_) => (CloseCode::Invalid, "invalid_utf8", "invalid UTF-8"),
        WsError::Protocol(_) => (CloseCode::Protocol, "protocol_error", "protocol error"),
        // The peer went away or the socket broke: nothing to say.
        _ => {
            tracing::debug!(%error, "connection ended");
            return;
        }
    };
    tracing::info!(%error, close_code = u16::from(code), "failing the connection");
    state.metrics.error(label);
    close_with(ws, code, reason).await;
}

/// Sends a close frame and waits briefly for the client's close, reading
/// (and discarding) whatever it still sends: nothing is processed after the
/// server decided to close.
pub async fn close_with(ws: &mut WsStream, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if timeout(WRITE_TIMEOUT.min(CLOSE_TIMEOUT), ws.close(Some(frame)))
        .await
        .is_ok()
    {
        finish_close(ws).await;
    }
}

/// Drives the stream until the close handshake completes (or times out).
pub async fn finish_close(ws: &mut WsStream) {
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = timeout(CLOSE_TIMEOUT, drain).await;
}

/// `/ws/echo`: every text and binary message back unchanged, over the same
/// stack and limits, for conformance suites.
pub async fn run_echo(state: Arc<AppState>, mut ws: WsStream) {
    loop {
        tokio::select! {
            _ = state.drain.cancelled() => {
                close_with(&mut ws, CloseCode::Away, "server shutdown").await;
                return;
            }
            incoming = ws.next() => match incoming {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if timeout(WRITE_TIMEOUT, ws.send(message)).await.map_or(true, |sent| sent.is_err()) {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    finish_close(&mut ws).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    fail_connection(&mut ws, &state, error).await;
                    return;
                }
                None => return,
            },
        }
    }
}
