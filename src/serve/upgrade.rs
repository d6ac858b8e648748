//! The WebSocket upgrade: every check the contract makes before `101`
//! (session id 400, origin 403, token 401, drain and `MAX_CONNECTIONS` 503),
//! then the hand-over of the socket to a connection task.
//!
//! warp's own `ws()` filter hides tungstenite's `WebSocketConfig` (its 128 KiB
//! read buffer per connection), so the HTTP layer hands us hyper's
//! `OnUpgrade` through an [`UpgradeSlot`] and we build the stream ourselves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::Instrument;
use uuid::Uuid;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use super::backend::SessionLease;
use super::connection::{ChatConnection, run_echo, websocket_config};
use super::reply::{REQUEST_ID, json_error};
use super::state::AppState;
use crate::serve::auth;
use crate::serve::config::normalize_origin;

/// hyper's upgrade future for one request, taken at most once. It rides in
/// the request's extensions, which warp hands out only as `Clone` values.
#[derive(Clone)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    pub fn new(on_upgrade: OnUpgrade) -> Self {
        UpgradeSlot(Arc::new(Mutex::new(Some(on_upgrade))))
    }

    fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Echo,
}

/// Answers an upgrade request on `endpoint`.
pub async fn upgrade(
    endpoint: Endpoint,
    state: Arc<AppState>,
    headers: HeaderMap,
    query: HashMap<String, String>,
    slot: Option<UpgradeSlot>,
) -> Result<Response, Infallible> {
    Ok(
        match try_upgrade(endpoint, state, &headers, &query, slot).await {
            Ok(response) => response,
            Err(Refused(status, message)) => {
                let mut response = json_error(status, &message);
                if status == StatusCode::UPGRADE_REQUIRED {
                    response.headers_mut().insert(
                        header::SEC_WEBSOCKET_VERSION,
                        HeaderValue::from_static("13"),
                    );
                }
                response
            }
        },
    )
}

/// An upgrade refused before `101`: the status and the JSON body's `error`.
struct Refused(StatusCode, String);

fn refused(status: StatusCode, message: &str) -> Refused {
    Refused(status, message.to_string())
}

async fn try_upgrade(
    endpoint: Endpoint,
    state: Arc<AppState>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    slot: Option<UpgradeSlot>,
) -> Result<Response, Refused> {
    let session = match query.get("session_uuid") {
        Some(raw) => parse_session_uuid(raw)
            .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "invalid session_uuid"))?,
        None => Uuid::new_v4(),
    };
    check_origin(&state, headers)?;
    let authenticated = check_token(&state, query)?;
    if state.is_draining() {
        return Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down",
        ));
    }
    let accept_key = check_handshake(headers)?;
    let permit = state
        .connection_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            state.metrics.error("max_connections");
            refused(StatusCode::SERVICE_UNAVAILABLE, "too many connections")
        })?;
    let opened = match endpoint {
        Endpoint::Chat => Some(state.backend.open(session).await.map_err(|error| {
            tracing::warn!(%error, "refusing upgrade");
            state.metrics.error("unavailable");
            refused(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        })?),
        Endpoint::Echo => None,
    };
    let lease = opened.map(|_| SessionLease::new(state.backend.clone(), session));
    let on_upgrade = slot
        .and_then(|slot| slot.take())
        .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "this request cannot be upgraded"))?;

    let connection_id = Uuid::new_v4();
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // Subscribe before answering, so no broadcast after the 101 is missed.
    let hub = state.hub.subscribe();
    let span = match opened {
        Some(_) => {
            tracing::info_span!("connection", %connection_id, session_uuid = %session, request_id)
        }
        None => tracing::info_span!("echo", %connection_id, request_id),
    };
    let task_state = state.clone();
    state.connections.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "upgrade failed");
                    return;
                }
            };
            let config = websocket_config(task_state.config.max_message_size);
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            let metrics = &task_state.metrics;
            metrics.connections_total.inc();
            metrics.connections_active.inc();
            tracing::info!("connection opened");
            match opened {
                Some(opened) => {
                    ChatConnection::new(
                        task_state.clone(),
                        ws,
                        connection_id,
                        session,
                        hub,
                        authenticated,
                    )
                    .run(opened)
                    .await
                }
                None => run_echo(task_state.clone(), ws).await,
            }
            task_state.metrics.connections_active.dec();
            tracing::info!("connection closed");
            drop(lease);
            drop(permit);
        }
        .instrument(span),
    );

    let mut response = warp::reply().into_response();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response_headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key);
    Ok(response)
}

/// The canonical hyphenated form only (any version, any case), as the
/// contract says: `uuid` alone would also take braces, URNs and no hyphens.
fn parse_session_uuid(raw: &str) -> Option<Uuid> {
    let bytes = raw.as_bytes();
    let hyphens_in_place = bytes.len() == 36 && [8, 13, 18, 23].iter().all(|&at| bytes[at] == b'-');
    if !hyphens_in_place {
        return None;
    }
    Uuid::try_parse(raw).ok()
}

fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Refused> {
    let (Some(allowed), Some(origin)) =
        (&state.config.allowed_origins, headers.get(header::ORIGIN))
    else {
        // No list, or a non-browser client without an Origin header.
        return Ok(());
    };
    let origin = normalize_origin(origin.to_str().unwrap_or_default());
    if allowed.contains(&origin) {
        Ok(())
    } else {
        state.metrics.error("origin_forbidden");
        Err(refused(StatusCode::FORBIDDEN, "origin not allowed"))
    }
}

/// Checks `?token=`. With `REQUIRE_AUTH` a missing or bad token is a 401;
/// otherwise the answer only says whether the connection is authenticated
/// (which `BROADCAST_REQUIRE_AUTH` asks), and a bad token is no token.
fn check_token(state: &AppState, query: &HashMap<String, String>) -> Result<bool, Refused> {
    let config = &state.config;
    let Some(secret) = &config.secret_key else {
        return Ok(false);
    };
    let token = query.get("token").map(String::as_str).unwrap_or_default();
    match auth::verify(secret.as_bytes(), token) {
        Ok(_) => Ok(true),
        Err(error) if config.require_auth => {
            state.metrics.error("unauthorized");
            Err(refused(StatusCode::UNAUTHORIZED, &error.to_string()))
        }
        Err(_) => Ok(false),
    }
}

/// Checks the RFC 6455 opening handshake and returns `Sec-WebSocket-Accept`.
fn check_handshake(headers: &HeaderMap) -> Result<HeaderValue, Refused> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or_default()
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(refused(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version, use 13",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| refused(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"))?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| refused(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_uuid_must_be_canonical() {
        assert!(parse_session_uuid("6f1c2f5e-8f3a-4b2a-9c1d-0e2f3a4b5c6d").is_some());
        assert!(parse_session_uuid("6F1C2F5E-8F3A-4B2A-9C1D-0E2F3A4B5C6D").is_some());
        assert!(parse_session_uuid("6f1c2f5e8f3a4b2a9c1d0e2f3a4b5c6d").is_none());
        assert!(parse_session_uuid("{6f1c2f5e-8f3a-4b2a-9c1d-0e2f3a4b5c6d}").is_none());
        assert!(parse_session_uuid("not-a-uuid").is_none());
        assert!(parse_session_uuid("6f1c2f5e-8f3a-4b2a-9c1d-0e2f3a4b5c6g").is_none());
    }
}
