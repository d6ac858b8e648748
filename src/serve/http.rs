//! HTTP: the warp routes (probes, status, metrics, the two WebSocket paths)
//! and the hyper glue that serves them on each accepted socket.
//!
//! The glue does the two things warp cannot: it stamps `X-Request-ID` on
//! every request and answer (the `101` included), and it takes hyper's
//! upgrade handle before warp sees the request (see `upgrade.rs`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use warp::http::{HeaderValue, Request, StatusCode, header};
use warp::path::FullPath;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::reply::{COLOR_HEADER, REQUEST_ID, json_error};
use super::state::{AppState, VERSION};
use super::upgrade::{Endpoint, UpgradeSlot, upgrade};

/// Every route of the service.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };

    let healthz = exactly(&["/healthz"])
        .and(warp::get())
        .map(|| warp::reply::json(&json!({ "status": "ok" })).into_response());

    let readyz = exactly(&["/readyz"])
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| match state.readiness() {
            Ok(()) => warp::reply::json(&json!({ "status": "ready" })).into_response(),
            Err(reason) => warp::reply::with_status(
                warp::reply::json(&json!({ "status": "not_ready", "reason": reason })),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .into_response(),
        });

    let status = exactly(&["/status"])
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| warp::reply::json(&status_body(&state)).into_response());

    let metrics = exactly(&["/metrics"])
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| {
            warp::reply::with_header(
                state.metrics.render(),
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        });

    // Private: only from this host's loopback (wsctl, by exec in the
    // container; through a proxy the peer is the proxy, never loopback), or
    // with `MOVE_TOKEN` as a bearer token (wsctl's checker on Swarm).
    let move_connections = exactly(&["/connections/move"])
        .and(warp::post())
        .and(warp::ext::optional::<Peer>())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .map(
            |peer: Option<Peer>,
             authorization: Option<String>,
             query: HashMap<String, String>,
             state: Arc<AppState>| {
                let allowed = from_loopback(peer)
                    || bearer_matches(authorization.as_deref(), state.config.move_token.as_deref());
                move_connections(allowed, &query, &state)
            },
        );

    let upgrade_parts = warp::get()
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<UpgradeSlot>());

    // `/ws/chat` and `/ws/chat/` are the same endpoint.
    let chat = exactly(&["/ws/chat/", "/ws/chat"])
        .and(with_state.clone())
        .and(upgrade_parts)
        .and_then(|state, headers, query, slot| {
            upgrade(Endpoint::Chat, state, headers, query, slot)
        });

    let echo_enabled = state.config.echo_endpoint;
    let echo = exactly(&["/ws/echo"])
        .and(warp::any().and_then(move || async move {
            if echo_enabled {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        }))
        .untuple_one()
        .and(with_state)
        .and(upgrade_parts)
        .and_then(|state, headers, query, slot| {
            upgrade(Endpoint::Echo, state, headers, query, slot)
        });

    healthz
        .or(readyz)
        .unify()
        .or(status)
        .unify()
        .or(metrics)
        .unify()
        .or(move_connections)
        .unify()
        .or(chat)
        .unify()
        .or(echo)
        .unify()
        .recover(answer_rejection)
        .unify()
}

/// The address a request came from, as the accepted socket has it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// `POST /connections/move?older_than=SECONDS`: every connection opened
/// more than SECONDS ago says goodbye within `DRAIN_WINDOW` (`moves.rs`).
/// `allowed`: from loopback, or with the move token.
fn move_connections(allowed: bool, query: &HashMap<String, String>, state: &AppState) -> Response {
    if !allowed {
        return json_error(
            StatusCode::FORBIDDEN,
            "only from this host's loopback or with the move token",
        );
    }
    let older_than = query
        .get("older_than")
        .and_then(|raw| crate::shared::input::parse_seconds(raw).ok());
    let Some(older_than) = older_than else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "older_than must be a positive number of seconds",
        );
    };
    state.moves.order(older_than);
    tracing::info!(
        older_than = older_than.as_secs_f64(),
        "moving connections off old proxy workers"
    );
    warp::reply::json(&json!({
        "moving_opened_before_seconds": older_than.as_secs_f64(),
        "window_seconds": state.config.drain_window.as_secs_f64(),
    }))
    .into_response()
}

/// `Authorization: Bearer TOKEN` names the configured token (none
/// configured: nothing matches). The digests are compared, so the time the
/// comparison takes tells nothing about the token.
fn bearer_matches(authorization: Option<&str>, token: Option<&str>) -> bool {
    use sha2::{Digest, Sha256};
    let (Some(authorization), Some(token)) = (authorization, token) else {
        return false;
    };
    let Some(given) = authorization.strip_prefix("Bearer ") else {
        return false;
    };
    Sha256::digest(given.trim().as_bytes()) == Sha256::digest(token.as_bytes())
}

/// The request came from this host's loopback (also as an IPv4-mapped
/// IPv6 address); through a proxy the peer is the proxy.
fn from_loopback(peer: Option<Peer>) -> bool {
    peer.is_some_and(|Peer(address)| address.ip().to_canonical().is_loopback())
}

/// Matches only these spellings of a path. warp's `path!` would also take
/// `/status/` and `//status`, and a proxy rule that keeps `/status` private
/// must not be bypassed by a spelling it does not list; any other spelling
/// is an unknown path (404).
fn exactly(
    paths: &'static [&'static str],
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::path::full()
        .and_then(move |full: FullPath| async move {
            if paths.contains(&full.as_str()) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

fn status_body(state: &AppState) -> serde_json::Value {
    let metrics = &state.metrics;
    json!({
        "color": state.config.color,
        "version": VERSION,
        "started_at": state.started_at,
        "uptime_seconds": state.uptime().as_secs_f64(),
        "connections_active": metrics.connections_active.get(),
        "connections_total": metrics.connections_total.get(),
        "messages_total": metrics.counted_in.get(),
        "channel_layer": state.backend.name(),
        "redis": state.backend.redis_up().map(|up| if up { "ok" } else { "down" }),
        "ready": state.readiness().is_ok(),
        "draining": state.is_draining(),
        "pid": std::process::id(),
        "hostname": state.hostname,
    })
}

/// Unknown paths and wrong methods get JSON bodies too.
async fn answer_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(if rejection.is_not_found() {
        json_error(StatusCode::NOT_FOUND, "not found")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        json_error(StatusCode::BAD_REQUEST, "invalid query string")
    } else {
        json_error(StatusCode::BAD_REQUEST, &format!("{rejection:?}"))
    })
}

/// Serves HTTP/1.1 on one accepted socket until the client leaves or `stop`
/// fires (then in-flight requests finish and idle keep-alives close).
pub async fn serve_socket<F>(
    stream: TcpStream,
    routes: F,
    color: HeaderValue,
    stop: CancellationToken,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let warp_service = warp::service(routes);
    let peer = stream.peer_addr().ok().map(Peer);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let mut warp_service = warp_service.clone();
        let color = color.clone();
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        async move { Ok::<_, Infallible>(answer(&mut warp_service, request, color).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "http connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
        }
    }
}

/// One request through warp, with its request id on the way in and out.
async fn answer<S>(
    warp_service: &mut S,
    mut request: Request<Incoming>,
    color: HeaderValue,
) -> Response
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|value| is_usable_request_id(value))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        });
    request.headers_mut().insert(REQUEST_ID, request_id.clone());
    if request.headers().contains_key(header::UPGRADE) {
        let on_upgrade = hyper::upgrade::on(&mut request);
        request
            .extensions_mut()
            .insert(UpgradeSlot::new(on_upgrade));
    }
    let mut response = match warp_service.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    response.headers_mut().insert(REQUEST_ID, request_id);
    response.headers_mut().insert(COLOR_HEADER, color);
    response
}

/// A client's id is echoed when it is short printable ASCII; otherwise
/// (log injection, megabyte headers) a fresh one replaces it.
fn is_usable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 200 && bytes.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_may_move_connections() {
        let peer = |text: &str| Some(Peer(text.parse().unwrap()));
        assert!(from_loopback(peer("127.0.0.1:5000")));
        assert!(from_loopback(peer("[::1]:5000")));
        assert!(from_loopback(peer("[::ffff:127.0.0.1]:5000")));
        assert!(!from_loopback(peer("172.18.0.3:5000")), "a proxy's address");
        assert!(!from_loopback(peer("[::ffff:10.0.0.2]:5000")));
        assert!(!from_loopback(None));
    }

    #[test]
    fn the_move_token_is_a_bearer_token_that_must_be_configured() {
        let token = Some("s3cret");
        assert!(bearer_matches(Some("Bearer s3cret"), token));
        assert!(!bearer_matches(Some("Bearer s3cre"), token));
        assert!(!bearer_matches(Some("s3cret"), token), "no scheme");
        assert!(!bearer_matches(None, token));
        assert!(!bearer_matches(Some("Bearer "), None), "none configured");
        assert!(!bearer_matches(Some("Bearer s3cret"), None));
    }
}
