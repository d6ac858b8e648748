//! The contract of `wsctl serve` (docs/protocol.md), one test per rule,
//! against the real binary over real sockets.

use crate::common;

use std::time::Duration;

use common::{Server, recv_close, recv_json, recv_non_heartbeat, send_json};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

fn is_rfc3339_utc_millis(stamp: &Value) -> bool {
    let stamp = stamp.as_str().unwrap_or_default();
    stamp.len() == 24 && stamp.ends_with('Z') && chrono_like(stamp)
}

fn chrono_like(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'.'
}

#[tokio::test]
async fn connection_established_is_the_first_frame_with_every_field() {
    let server = Server::start(&[("COLOR", "green"), ("HEARTBEAT_INTERVAL", "7")]);
    let (_ws, greeting) = server.connect("").await;
    assert_eq!(greeting["type"], "connection_established");
    let connection_id = Uuid::parse_str(greeting["connection_id"].as_str().unwrap()).unwrap();
    assert_eq!(connection_id.get_version_num(), 4);
    assert!(Uuid::parse_str(greeting["session_uuid"].as_str().unwrap()).is_ok());
    assert_eq!(greeting["count"], 0);
    assert_eq!(greeting["resumed"], false);
    assert_eq!(greeting["color"], "green");
    assert_eq!(greeting["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(greeting["heartbeat_interval"], 7);
    assert_eq!(greeting["dedupe_window"], 300);
}

#[tokio::test]
async fn message_counts_and_echoes_the_value_unchanged() {
    let server = Server::start(&[]);
    let (mut ws, greeting) = server.connect("").await;
    let value = json!({"nested": [1, 2.5, "x"], "n": null});
    for expected in 1..=3 {
        send_json(&mut ws, json!({"type": "message", "message": value})).await;
        let reply = recv_non_heartbeat(&mut ws).await;
        assert_eq!(reply["type"], "message_response");
        assert_eq!(reply["count"], expected);
        assert_eq!(reply["message"], value);
        assert_eq!(reply["connection_id"], greeting["connection_id"]);
        assert!(is_rfc3339_utc_millis(&reply["timestamp"]), "{reply}");
    }
}

#[tokio::test]
async fn classic_frame_without_type_is_a_message() {
    let server = Server::start(&[]);
    let (mut ws, _) = server.connect("").await;
    send_json(&mut ws, json!({"message": "hello"})).await;
    let reply = recv_non_heartbeat(&mut ws).await;
    assert_eq!(reply["type"], "message_response");
    assert_eq!(reply["message"], "hello");
    assert_eq!(reply["count"], 1);
}

#[tokio::test]
async fn broadcast_reaches_every_connection_sender_included_and_counts() {
    let server = Server::start(&[]);
    let (mut sender, greeting) = server.connect("").await;
    let (mut other, _) = server.connect("").await;
    send_json(
        &mut sender,
        json!({"type": "broadcast", "message": {"hi": 1}}),
    )
    .await;
    for ws in [&mut sender, &mut other] {
        let frame = recv_non_heartbeat(ws).await;
        assert_eq!(frame["type"], "broadcast");
        assert_eq!(frame["from"], greeting["connection_id"]);
        assert_eq!(frame["message"], json!({"hi": 1}));
        assert!(is_rfc3339_utc_millis(&frame["timestamp"]));
    }
    // The broadcast was counted: the next message is number 2.
    send_json(&mut sender, json!({"type": "message", "message": 0})).await;
    assert_eq!(recv_non_heartbeat(&mut sender).await["count"], 2);
}

#[tokio::test]
async fn heartbeat_arrives_every_interval_with_color() {
    let server = Server::start(&[("HEARTBEAT_INTERVAL", "0.3"), ("COLOR", "green")]);
    let (mut ws, greeting) = server.connect("").await;
    assert_eq!(greeting["heartbeat_interval"], 0.3);
    let start = std::time::Instant::now();
    for _ in 0..3 {
        let beat = recv_json(&mut ws).await;
        assert_eq!(beat["type"], "heartbeat");
        assert_eq!(beat["color"], "green");
        assert!(is_rfc3339_utc_millis(&beat["timestamp"]));
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "three heartbeats in {took:?}"
    );
}

/// Each connection's heartbeats keep the phase of its own start, so a
/// process's heartbeats spread over the interval instead of leaving in one
/// instant (docs/BENCHMARKS.md section 11).
#[tokio::test]
async fn each_connection_beats_one_interval_after_its_own_start() {
    let server = Server::start(&[("HEARTBEAT_INTERVAL", "1.2")]);
    let (mut early, _) = server.connect("").await;
    let early_opened = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (mut late, _) = server.connect("").await;
    let late_opened = std::time::Instant::now();
    let early_beat = async {
        assert_eq!(recv_json(&mut early).await["type"], "heartbeat");
        early_opened.elapsed()
    };
    let late_beat = async {
        assert_eq!(recv_json(&mut late).await["type"], "heartbeat");
        late_opened.elapsed()
    };
    let (early_after, late_after) = tokio::join!(early_beat, late_beat);
    for after in [early_after, late_after] {
        assert!(
            after >= Duration::from_millis(1000) && after < Duration::from_millis(2200),
            "a first heartbeat {after:?} after its connection opened (interval 1.2 s): \
             early {early_after:?}, late {late_after:?}"
        );
    }
}

#[tokio::test]
async fn bye_gets_goodbye_with_client_request_then_close_1000() {
    let server = Server::start(&[]);
    let (mut ws, greeting) = server.connect("").await;
    send_json(&mut ws, json!({"type": "message", "message": 1})).await;
    recv_non_heartbeat(&mut ws).await;
    send_json(&mut ws, json!({"type": "bye"})).await;
    let goodbye = recv_non_heartbeat(&mut ws).await;
    assert_eq!(goodbye["type"], "goodbye");
    assert_eq!(goodbye["reason"], "client_request");
    assert_eq!(goodbye["count"], 1);
    assert_eq!(goodbye["connection_id"], greeting["connection_id"]);
    let (code, _) = recv_close(&mut ws).await;
    assert_eq!(code, Some(1000));
}

#[tokio::test]
async fn resume_with_session_uuid_continues_the_count() {
    let server = Server::start(&[]);
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    for _ in 0..3 {
        send_json(&mut ws, json!({"type": "message", "message": "x"})).await;
        recv_non_heartbeat(&mut ws).await;
    }
    drop(ws);
    let (mut resumed, greeting) = server.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(greeting["resumed"], true);
    assert_eq!(greeting["count"], 3);
    assert_eq!(greeting["session_uuid"], session.as_str());
    send_json(&mut resumed, json!({"type": "message", "message": "x"})).await;
    assert_eq!(recv_non_heartbeat(&mut resumed).await["count"], 4);
}

#[tokio::test]
async fn an_unknown_session_uuid_is_kept_and_starts_at_zero() {
    let server = Server::start(&[]);
    let session = Uuid::new_v4().to_string().to_uppercase();
    let (_ws, greeting) = server.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(greeting["resumed"], false);
    assert_eq!(greeting["count"], 0);
    assert_eq!(greeting["session_uuid"], session.to_lowercase());
}

#[tokio::test]
async fn session_expires_after_session_ttl() {
    let server = Server::start(&[("SESSION_TTL", "1")]);
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    send_json(&mut ws, json!({"message": 1})).await;
    recv_non_heartbeat(&mut ws).await;
    drop(ws);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_ws, greeting) = server.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(greeting["resumed"], false);
    assert_eq!(greeting["count"], 0);
}

#[tokio::test]
async fn malformed_session_uuid_is_http_400_before_the_upgrade() {
    let server = Server::start(&[]);
    for bad in [
        "nope",
        "6f1c2f5e8f3a4b2a9c1d0e2f3a4b5c6d",
        "%7B6f1c2f5e-8f3a-4b2a-9c1d-0e2f3a4b5c6d%7D",
    ] {
        let error = connect_async(server.ws_url(&format!("/ws/chat/?session_uuid={bad}")))
            .await
            .expect_err("upgrade must be refused");
        let tokio_tungstenite::tungstenite::Error::Http(response) = error else {
            panic!("expected an HTTP refusal, got {error:?}");
        };
        assert_eq!(response.status(), 400);
        let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"error": "invalid session_uuid"}));
    }
}

#[tokio::test]
async fn refused_frames_get_error_codes_and_keep_the_connection() {
    let server = Server::start(&[]);
    let (mut ws, _) = server.connect("").await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("not json"), "invalid_json"),
        (Message::text("[1, 2]"), "invalid_message"),
        (
            Message::text(r#"{"type": "dance", "message": 1}"#),
            "invalid_message",
        ),
        (Message::text(r#"{"type": "message"}"#), "invalid_message"),
        (Message::text(r#"{"type": "broadcast"}"#), "invalid_message"),
        (Message::binary(vec![1u8, 2, 3]), "unsupported_frame"),
    ];
    for (frame, code) in cases {
        ws.send(frame).await.unwrap();
        let reply = recv_non_heartbeat(&mut ws).await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["code"], code);
        assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Nothing was counted and the connection still works.
    send_json(&mut ws, json!({"type": "message", "message": 1})).await;
    assert_eq!(recv_non_heartbeat(&mut ws).await["count"], 1);
}

#[tokio::test]
async fn rate_limit_refuses_messages_over_the_bucket() {
    let server = Server::start(&[("RATE_LIMIT", "5")]);
    let (mut ws, _) = server.connect("").await;
    for i in 0..15 {
        send_json(&mut ws, json!({"type": "message", "message": i})).await;
    }
    let mut counted = Vec::new();
    let mut limited = 0;
    for _ in 0..15 {
        let reply = recv_non_heartbeat(&mut ws).await;
        match reply["type"].as_str() {
            Some("message_response") => counted.push(reply["count"].as_u64().unwrap()),
            Some("error") => {
                assert_eq!(reply["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A burst of twice the rate (10) passes; refill while sending (5/s)
    // may add one or two on a loaded machine.
    assert!((10..=12).contains(&counted.len()), "{counted:?}");
    assert_eq!(limited, 15 - counted.len());
    assert_eq!(counted, (1..=counted.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let server = Server::start(&[("MAX_MESSAGE_SIZE", "1024")]);
    let (mut ws, _) = server.connect("").await;
    let big = json!({"type": "message", "message": "x".repeat(2000)});
    send_json(&mut ws, big).await;
    let (code, frames) = recv_close(&mut ws).await;
    assert_eq!(code, Some(1009), "frames before close: {frames:?}");
}

#[tokio::test]
async fn message_at_the_size_limit_is_accepted() {
    let server = Server::start(&[("MAX_MESSAGE_SIZE", "1024")]);
    let (mut ws, _) = server.connect("").await;
    let prefix = r#"{"type":"message","message":""#;
    let text = format!("{prefix}{}\"}}", "y".repeat(1024 - prefix.len() - 2));
    assert_eq!(text.len(), 1024);
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(recv_non_heartbeat(&mut ws).await["count"], 1);
}

#[tokio::test]
async fn max_connections_answers_503_before_the_upgrade() {
    let server = Server::start(&[("MAX_CONNECTIONS", "2")]);
    let (_a, _) = server.connect("").await;
    let (_b, _) = server.connect("").await;
    let error = connect_async(server.ws_url("/ws/chat/"))
        .await
        .expect_err("third refused");
    let tokio_tungstenite::tungstenite::Error::Http(response) = error else {
        panic!("expected HTTP 503, got {error:?}");
    };
    assert_eq!(response.status(), 503);
    drop(_a);
    // The slot comes back once the first connection has gone.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if connect_async(server.ws_url("/ws/chat/")).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a freed slot was not reused");
}

async fn upgrade_status(server: &Server, path: &str, origin: Option<&str>) -> u16 {
    let mut request = server.ws_url(path).into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or(b"{}"))
                .expect("refusals carry a JSON body");
            assert!(body["error"].is_string(), "{body}");
            response.status().as_u16()
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn allowed_origins_refuses_other_sites_with_403() {
    let server = Server::start(&[(
        "ALLOWED_ORIGINS",
        "https://app.example.com,http://localhost:3000",
    )]);
    assert_eq!(
        upgrade_status(&server, "/ws/chat/", Some("https://evil.example.net")).await,
        403
    );
    assert_eq!(
        upgrade_status(&server, "/ws/chat/", Some("https://app.example.com")).await,
        101
    );
    assert_eq!(
        upgrade_status(&server, "/ws/chat/", Some("http://localhost:3000")).await,
        101
    );
    // A non-browser client sends no Origin and is allowed.
    assert_eq!(upgrade_status(&server, "/ws/chat/", None).await, 101);
}

#[tokio::test]
async fn require_auth_needs_a_valid_token_else_401() {
    let secret = "test-secret";
    let server = Server::start(&[("SECRET_KEY", secret), ("REQUIRE_AUTH", "true")]);
    let mint = |key: &str, ttl: &str| {
        let output = common::wsctl()
            .args(["token", "--subject", "alice", "--ttl", ttl])
            .env("SECRET_KEY", key)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let good = mint(secret, "60");
    let forged = mint("another-secret", "60");
    let short = mint(secret, "1");
    assert_eq!(upgrade_status(&server, "/ws/chat/", None).await, 401);
    assert_eq!(
        upgrade_status(&server, &format!("/ws/chat/?token={forged}"), None).await,
        401
    );
    assert_eq!(
        upgrade_status(&server, "/ws/chat/?token=garbage", None).await,
        401
    );
    assert_eq!(
        upgrade_status(&server, &format!("/ws/chat/?token={good}"), None).await,
        101
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        upgrade_status(&server, &format!("/ws/chat/?token={short}"), None).await,
        401
    );
}

#[tokio::test]
async fn auth_is_off_without_require_auth() {
    let server = Server::start(&[("SECRET_KEY", "k")]);
    assert_eq!(upgrade_status(&server, "/ws/chat/", None).await, 101);
}

#[tokio::test]
async fn ws_chat_without_trailing_slash_is_the_same_endpoint() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect_async(server.ws_url("/ws/chat")).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "connection_established");
}

#[tokio::test]
async fn healthz_readyz_and_status_answer_as_the_contract_says() {
    let server = Server::start(&[("COLOR", "green")]);
    assert_eq!(
        server.get_json("/healthz").await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        server.get_json("/readyz").await,
        (200, json!({"status": "ready"}))
    );
    let (_ws, _) = server.connect("").await;
    let (code, status) = server.get_json("/status").await;
    assert_eq!(code, 200);
    assert_eq!(status["color"], "green");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(is_rfc3339_utc_millis(&status["started_at"]));
    assert!(status["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(status["connections_active"], 1);
    assert_eq!(status["connections_total"], 1);
    assert_eq!(status["messages_total"], 0);
    assert_eq!(status["channel_layer"], "memory");
    assert_eq!(status["redis"], Value::Null);
    assert_eq!(status["ready"], true);
    assert_eq!(status["draining"], false);
    assert_eq!(status["pid"], server.child.id());
    assert!(status["hostname"].as_str().is_some_and(|h| !h.is_empty()));
}

#[tokio::test]
async fn metrics_expose_every_contract_metric_with_labels() {
    let server = Server::start(&[("COLOR", "green")]);
    let (mut ws, _) = server.connect("").await;
    send_json(&mut ws, json!({"type": "message", "message": 1})).await;
    recv_non_heartbeat(&mut ws).await;
    ws.send(Message::text("nope")).await.unwrap();
    recv_non_heartbeat(&mut ws).await;
    let response = server.get("/metrics").await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        "# TYPE websocket_connections_total counter",
        "# TYPE websocket_connections_active gauge",
        "# TYPE websocket_messages_total counter",
        "# TYPE websocket_errors_total counter",
        "# TYPE websocket_message_duration_seconds histogram",
        "# TYPE app_startup_time_seconds gauge",
        "# TYPE app_shutdown_time_seconds gauge",
        "# TYPE app_info gauge",
        "websocket_connections_total 1",
        "websocket_connections_active 1",
        r#"websocket_messages_total{direction="in",type="message"} 1"#,
        r#"websocket_messages_total{direction="out",type="message_response"} 1"#,
        r#"websocket_messages_total{direction="out",type="connection_established"} 1"#,
        r#"websocket_errors_total{type="invalid_json"} 1"#,
        "websocket_message_duration_seconds_count 1",
        &format!(
            r#"app_info{{color="green",version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

#[tokio::test]
async fn x_request_id_is_echoed_or_generated_on_every_answer() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let echoed = client
        .get(server.http("/healthz"))
        .header("X-Request-ID", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    for path in ["/healthz", "/nope", "/metrics"] {
        let generated = server.get(path).await;
        let id = generated.headers()["x-request-id"].to_str().unwrap();
        assert!(Uuid::parse_str(id).is_ok(), "{path}: {id}");
    }
    let mut request = server.ws_url("/ws/chat/").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-request-id", "upgrade-7".parse().unwrap());
    let (_ws, response) = connect_async(request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "upgrade-7");
    let (_ws, response) = connect_async(server.ws_url("/ws/chat/")).await.unwrap();
    assert!(Uuid::parse_str(response.headers()["x-request-id"].to_str().unwrap()).is_ok());
}

#[tokio::test]
async fn unknown_paths_get_404_with_a_json_body() {
    let server = Server::start(&[]);
    let (code, body) = server.get_json("/no/such/path").await;
    assert_eq!(code, 404);
    assert!(body["error"].is_string());
}

/// Only the exact spellings answer: a proxy rule that keeps `/status` and
/// `/metrics` private must not be bypassed by `/status/` or `//status`.
#[tokio::test]
async fn status_and_metrics_answer_only_their_exact_path() {
    let server = Server::start(&[]);
    for path in ["/status", "/metrics", "/healthz", "/readyz", "/status?x=1"] {
        assert_eq!(common::raw_get(&server.addr, path).await.0, 200, "{path}");
    }
    for path in [
        "/status/",
        "/metrics/",
        "//status",
        "//metrics",
        "/STATUS",
        "/Metrics",
        "/%73tatus",
        "/status%2F",
        "/status/.",
        "/ws/../status",
        "/healthz/",
    ] {
        let (code, body) = common::raw_get(&server.addr, path).await;
        assert_eq!(code, 404, "{path} answered {code}: {body}");
        let body: Value = serde_json::from_str(&body).expect("a JSON body");
        assert!(body["error"].is_string(), "{path}");
    }
}

/// Sends `n` broadcasts at once and sorts the answers: the sender's own
/// copies (accepted) and the refusals by code.
async fn burst_of_broadcasts(
    ws: &mut common::Ws,
    n: usize,
    message: Value,
) -> (usize, Vec<String>) {
    for _ in 0..n {
        send_json(ws, json!({"type": "broadcast", "message": message})).await;
    }
    let (mut accepted, mut refused) = (0, Vec::new());
    for _ in 0..n {
        let reply = recv_non_heartbeat(ws).await;
        match reply["type"].as_str() {
            Some("broadcast") => accepted += 1,
            Some("error") => refused.push(reply["code"].as_str().unwrap_or_default().to_string()),
            other => panic!("unexpected {other:?}: {reply}"),
        }
    }
    (accepted, refused)
}

/// The count after one more message: what the refusals did to it.
async fn count_after_one_message(ws: &mut common::Ws) -> u64 {
    send_json(ws, json!({"type": "message", "message": "probe"})).await;
    let reply = recv_non_heartbeat(ws).await;
    assert_eq!(reply["type"], "message_response", "{reply}");
    reply["count"].as_u64().expect("count")
}

#[tokio::test]
async fn broadcasts_over_broadcast_rate_are_refused_and_neither_counted_nor_sent() {
    let server = Server::start(&[("BROADCAST_RATE", "1")]);
    let (mut sender, _) = server.connect("").await;
    let (mut listener, _) = server.connect("").await;
    let (accepted, refused) = burst_of_broadcasts(&mut sender, 12, json!("hi")).await;
    // A burst of 5 passes; refill at 1/s may add one on a slow machine.
    assert!((5..=6).contains(&accepted), "{accepted} accepted");
    assert_eq!(refused.len(), 12 - accepted);
    assert!(
        refused.iter().all(|code| code == "rate_limited"),
        "{refused:?}"
    );
    // Only the accepted ones were counted, and only they reached the others.
    assert_eq!(
        count_after_one_message(&mut sender).await,
        accepted as u64 + 1
    );
    for _ in 0..accepted {
        assert_eq!(recv_non_heartbeat(&mut listener).await["type"], "broadcast");
    }
    let extra = tokio::time::timeout(
        Duration::from_millis(300),
        futures_util::StreamExt::next(&mut listener),
    )
    .await;
    assert!(extra.is_err(), "a refused broadcast arrived: {extra:?}");
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "websocket_errors_total{{type=\"rate_limited\"}} {}",
            12 - accepted
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broadcast_over_broadcast_max_size_is_refused_and_not_counted() {
    let server = Server::start(&[("BROADCAST_MAX_SIZE", "100")]);
    let (mut ws, _) = server.connect("").await;
    // The limit is on the serialized `message`: "x" * 98 plus quotes = 100.
    let (accepted, refused) = burst_of_broadcasts(&mut ws, 1, json!("x".repeat(98))).await;
    assert_eq!((accepted, refused.len()), (1, 0));
    let (accepted, refused) = burst_of_broadcasts(&mut ws, 1, json!("x".repeat(99))).await;
    assert_eq!(accepted, 0);
    assert_eq!(refused, ["message_too_large"]);
    // A plain message of that size is still fine: the limit is for broadcasts.
    send_json(
        &mut ws,
        json!({"type": "message", "message": "x".repeat(5000)}),
    )
    .await;
    assert_eq!(recv_non_heartbeat(&mut ws).await["count"], 2);
}

#[tokio::test]
async fn broadcast_require_auth_lets_only_connections_with_a_valid_token_broadcast() {
    let secret = "broadcast-secret";
    let server = Server::start(&[("SECRET_KEY", secret), ("BROADCAST_REQUIRE_AUTH", "true")]);
    let token = common::wsctl()
        .args(["token", "--subject", "alice", "--ttl", "60"])
        .env("SECRET_KEY", secret)
        .output()
        .expect("wsctl token");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();

    // Without a token (or with a bad one) the connection works, but may not broadcast.
    for query in ["".to_string(), "?token=garbage".to_string()] {
        let (mut ws, _) = server.connect(&query).await;
        let (accepted, refused) = burst_of_broadcasts(&mut ws, 1, json!("hi")).await;
        assert_eq!(
            (accepted, refused),
            (0, vec!["unauthorized".to_string()]),
            "{query}"
        );
        assert_eq!(
            count_after_one_message(&mut ws).await,
            1,
            "{query}: nothing counted"
        );
    }
    let (mut ws, _) = server.connect(&format!("?token={token}")).await;
    let (accepted, refused) = burst_of_broadcasts(&mut ws, 1, json!("hi")).await;
    assert_eq!((accepted, refused.len()), (1, 0));
}

#[tokio::test]
async fn two_connections_on_one_session_count_each_message_exactly_once() {
    let server = Server::start(&[("RATE_LIMIT", "100000")]);
    let (a, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    let (b, _) = server.connect(&format!("?session_uuid={session}")).await;
    common::assert_counted_exactly_once(a, b, 500).await;
}

#[tokio::test]
async fn nothing_is_processed_after_goodbye() {
    let server = Server::start(&[]);
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    // bye and a message in one burst: the message must not be counted.
    send_json(&mut ws, json!({"type": "message", "message": 1})).await;
    send_json(&mut ws, json!({"type": "bye"})).await;
    let _ = ws
        .send(Message::text(json!({"message": 2}).to_string()))
        .await;
    let (code, frames) = recv_close(&mut ws).await;
    assert_eq!(code, Some(1000));
    let types: Vec<&str> = frames.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types, ["message_response", "goodbye"]);
    assert_eq!(frames[1]["count"], 1);
    let (_ws, greeting) = server.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(greeting["count"], 1);
}
