//! Sessions and broadcasts in a real Redis, shared by two real `wsctl serve`
//! processes: resume across instances, exactly-once counts and broadcasts,
//! and recovery when Redis stalls or loses its data.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{Server, Ws, recv_non_heartbeat, send_json};
use serde_json::{Value, json};

fn instance(redis: &RedisServer, color: &str) -> Server {
    Server::start(&[
        ("REDIS_URL", &redis.url()),
        ("COLOR", color),
        ("RATE_LIMIT", "100000"),
    ])
}

/// A blue and a green instance on one Redis, both ready.
async fn two_instances(redis: &RedisServer) -> (Server, Server) {
    let (blue, green) = (instance(redis, "blue"), instance(redis, "green"));
    wait_ready(&blue, true).await;
    wait_ready(&green, true).await;
    (blue, green)
}

async fn wait_ready(server: &Server, ready: bool) -> Value {
    let started = Instant::now();
    loop {
        let (code, body) = server.get_json("/readyz").await;
        if (code == 200) == ready {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "readyz stayed {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn message(ws: &mut Ws, value: Value) -> Value {
    send_json(ws, json!({"type": "message", "message": value})).await;
    recv_non_heartbeat(ws).await
}

#[tokio::test]
async fn status_reports_the_redis_layer() {
    let redis = RedisServer::start();
    let server = instance(&redis, "blue");
    wait_ready(&server, true).await;
    let (_, status) = server.get_json("/status").await;
    assert_eq!(status["channel_layer"], "redis");
    assert_eq!(status["redis"], "ok");
    let (mut ws, _) = server.connect("").await;
    assert_eq!(message(&mut ws, json!(1)).await["count"], 1);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"redis_command_duration_seconds_count{command="open"} 1"#,
        r#"redis_command_duration_seconds_count{command="increment"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in {metrics}");
    }
}

#[tokio::test]
async fn a_session_resumes_on_the_other_instance_with_its_count() {
    let redis = RedisServer::start();
    let (blue, green) = two_instances(&redis).await;
    let (mut ws, greeting) = blue.connect("").await;
    let session = common::session_of(&greeting);
    for expected in 1..=3 {
        assert_eq!(message(&mut ws, json!(expected)).await["count"], expected);
    }
    drop(ws);
    let (mut ws, greeting) = green.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(greeting["resumed"], true);
    assert_eq!(greeting["count"], 3);
    assert_eq!(greeting["color"], "green");
    assert_eq!(message(&mut ws, json!(4)).await["count"], 4);
}

#[tokio::test]
async fn a_broadcast_reaches_every_connection_of_both_instances_exactly_once() {
    let redis = RedisServer::start();
    let (blue, green) = two_instances(&redis).await;
    // Give both subscriptions a moment to be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut sender, greeting) = blue.connect("").await;
    let (mut same_instance, _) = blue.connect("").await;
    let (mut other_a, _) = green.connect("").await;
    let (mut other_b, _) = green.connect("").await;
    send_json(
        &mut sender,
        json!({"type": "broadcast", "message": "to all"}),
    )
    .await;
    for ws in [&mut sender, &mut same_instance, &mut other_a, &mut other_b] {
        let frame = recv_non_heartbeat(ws).await;
        assert_eq!(frame["type"], "broadcast");
        assert_eq!(frame["from"], greeting["connection_id"]);
        assert_eq!(frame["message"], "to all");
    }
    // Exactly once: a message sent now is answered next, with no second copy between.
    for ws in [&mut sender, &mut same_instance, &mut other_a, &mut other_b] {
        let reply = message(ws, json!("after")).await;
        assert_eq!(
            reply["type"], "message_response",
            "duplicate broadcast: {reply}"
        );
    }
}

#[tokio::test]
async fn concurrent_messages_from_two_instances_on_one_session_count_exactly_once() {
    let redis = RedisServer::start();
    let (blue, green) = two_instances(&redis).await;
    let (a, greeting) = blue.connect("").await;
    let session = common::session_of(&greeting);
    let (b, _) = green.connect(&format!("?session_uuid={session}")).await;
    common::assert_counted_exactly_once(a, b, 1500).await;
}

#[tokio::test]
async fn a_paused_redis_gives_unavailable_and_nothing_is_counted_late() {
    let redis = RedisServer::start();
    let server = instance(&redis, "blue");
    wait_ready(&server, true).await;
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    assert_eq!(message(&mut ws, json!("one")).await["count"], 1);

    redis.pause();
    // A message sent at once may reach Redis's socket before the health
    // check notices: it must time out and never be counted afterwards.
    let early = message(&mut ws, json!("while paused")).await;
    assert_eq!(early["type"], "error");
    assert_eq!(early["code"], "unavailable");
    let body = wait_ready(&server, false).await;
    assert_eq!(body["reason"], "redis");
    let (_, status) = server.get_json("/status").await;
    assert_eq!(status["redis"], "down");
    for _ in 0..3 {
        let reply = message(&mut ws, json!("still paused")).await;
        assert_eq!(reply["code"], "unavailable", "{reply}");
    }

    redis.resume();
    wait_ready(&server, true).await;
    // The connection stayed open, and the count continues from 1: the
    // refused messages were not counted, not even the one that sat in
    // Redis's socket while it was paused.
    assert_eq!(message(&mut ws, json!("two")).await["count"], 2);
    let (_, greeting) = server.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(greeting["count"], 2);
}

#[tokio::test]
async fn a_redis_that_lost_its_data_starts_sessions_again_from_zero() {
    let mut redis = RedisServer::start();
    let server = instance(&redis, "blue");
    wait_ready(&server, true).await;
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    message(&mut ws, json!(1)).await;
    message(&mut ws, json!(2)).await;
    drop(ws);
    redis.restart_empty();
    // The instance notices the restart on its own (health check or a failed
    // command) and reconnects; upgrades get 503 until then.
    let started = Instant::now();
    let (mut ws, greeting) = loop {
        let url = server.ws_url(&format!("/ws/chat/?session_uuid={session}"));
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await {
            let greeting = common::recv_json(&mut ws).await;
            break (ws, greeting);
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(greeting["resumed"], false);
    assert_eq!(greeting["count"], 0);
    assert_eq!(message(&mut ws, json!(3)).await["count"], 1);
}

#[tokio::test]
async fn an_unreachable_redis_at_start_means_not_ready_until_it_comes() {
    let mut redis = RedisServer::start();
    redis.stop();
    let server = instance(&redis, "blue");
    let body = wait_ready(&server, false).await;
    assert_eq!(body["reason"], "redis");
    let refused = tokio_tungstenite::connect_async(server.ws_url("/ws/chat/")).await;
    assert!(refused.is_err(), "upgrade accepted without a session store");
    redis.restart_empty();
    wait_ready(&server, true).await;
    let (mut ws, _) = server.connect("").await;
    assert_eq!(message(&mut ws, json!(1)).await["count"], 1);
}
