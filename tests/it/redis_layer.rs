//! Sessions and broadcasts in a real Redis, shared by two real `wsctl serve`
//! processes: resume across instances, exactly-once counts and broadcasts,
//! and recovery when Redis stalls or loses its data.

use crate::common;

use std::time::{Duration, Instant};

use common::proxy::HangingProxy;
use common::redis::RedisServer;
use common::{Server, message, recv_non_heartbeat, refused_upgrade_status, send_json};
use serde_json::json;

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
    blue.wait_ready(true).await;
    green.wait_ready(true).await;
    (blue, green)
}

#[tokio::test]
async fn status_reports_the_redis_layer() {
    let redis = RedisServer::start();
    let server = instance(&redis, "blue");
    server.wait_ready(true).await;
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
    server.wait_ready(true).await;
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    assert_eq!(message(&mut ws, json!("one")).await["count"], 1);

    redis.pause();
    // A message sent at once may reach Redis's socket before the health
    // check notices: it must time out and never be counted afterwards.
    let early = message(&mut ws, json!("while paused")).await;
    assert_eq!(early["type"], "error");
    assert_eq!(early["code"], "unavailable");
    let body = server.wait_ready(false).await;
    assert_eq!(body["reason"], "redis");
    let (_, status) = server.get_json("/status").await;
    assert_eq!(status["redis"], "down");
    for _ in 0..3 {
        let reply = message(&mut ws, json!("still paused")).await;
        assert_eq!(reply["code"], "unavailable", "{reply}");
    }

    redis.resume();
    server.wait_ready(true).await;
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
    server.wait_ready(true).await;
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
    let body = server.wait_ready(false).await;
    assert_eq!(body["reason"], "redis");
    assert_eq!(
        refused_upgrade_status(&server.ws_url("/ws/chat/")).await,
        503,
        "an upgrade without a session store is refused as unavailable"
    );
    redis.restart_empty();
    server.wait_ready(true).await;
    let (mut ws, _) = server.connect("").await;
    assert_eq!(message(&mut ws, json!(1)).await["count"], 1);
}

/// The subscription is part of readiness: killed, `/readyz` turns 503
/// (reason `redis`) until it is back, and broadcasts flow again after.
#[tokio::test]
async fn a_killed_subscription_means_not_ready_until_it_is_back() {
    let redis = RedisServer::start();
    let server = instance(&redis, "blue");
    server.wait_ready(true).await;
    let (mut ws, _) = server.connect("").await;

    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.trim(), "1", "one subscription killed: {killed}");
    // The 503 lasts for the resubscribe delay (250 ms): poll faster.
    let seen = server
        .catch_not_ready(Duration::from_secs(3), "after the subscription was killed")
        .await;
    assert_eq!(seen["reason"], "redis", "{seen}");
    server.wait_ready(true).await;

    // Broadcasts reach the sender through the new subscription.
    send_json(&mut ws, json!({"type": "broadcast", "message": "back"})).await;
    let frame = recv_non_heartbeat(&mut ws).await;
    assert_eq!(frame["type"], "broadcast", "{frame}");
    assert_eq!(frame["message"], "back");
    let logs = server.log_lines().join("\n");
    assert!(logs.contains("redis subscription lost"), "{logs}");
}

/// A subscription that hangs (open, but nothing passes) is not noticed by
/// its reader: only the ping is. `/readyz` turns 503 (reason `redis`), a new
/// subscription is made, and broadcasts flow again.
#[tokio::test]
async fn a_hung_subscription_is_found_by_its_ping_and_replaced() {
    let redis = RedisServer::start();
    let proxy = HangingProxy::start(&redis.addr()).await;
    let server = Server::start(&[
        ("REDIS_URL", &format!("redis://{}", proxy.addr)),
        ("COLOR", "blue"),
    ]);
    server.wait_ready(true).await;
    let (mut ws, _) = server.connect("").await;
    send_json(&mut ws, json!({"type": "broadcast", "message": "before"})).await;
    assert_eq!(recv_non_heartbeat(&mut ws).await["message"], "before");

    assert_eq!(proxy.hang_subscribers(), 1, "one subscription hung");
    let seen = server
        .catch_not_ready(Duration::from_secs(5), "with the subscription hung")
        .await;
    assert_eq!(seen["reason"], "redis", "{seen}");
    server.wait_ready(true).await;
    assert_eq!(
        proxy.subscribers(),
        2,
        "a new subscription replaced the hung one"
    );

    send_json(&mut ws, json!({"type": "broadcast", "message": "after"})).await;
    let frame = recv_non_heartbeat(&mut ws).await;
    assert_eq!(frame["type"], "broadcast", "{frame}");
    assert_eq!(frame["message"], "after");
    let logs = server.log_lines().join("\n");
    assert!(logs.contains("ping unanswered"), "{logs}");
}

/// A Redis clock 5 s ahead of ours: with deadlines on our clock every
/// message would be answered `unavailable` while `/readyz` says 200.
#[tokio::test]
async fn a_redis_clock_seconds_ahead_still_counts_every_message() {
    let redis = RedisServer::start_with_clock_skew(5_000);
    let server = instance(&redis, "blue");
    server.wait_ready(true).await;
    let offset = server.metric("redis_clock_offset_seconds").await;
    assert!((4.8..5.2).contains(&offset), "estimated offset {offset} s");
    let (mut ws, _) = server.connect("").await;
    for expected in 1..=20 {
        let reply = message(&mut ws, json!(expected)).await;
        assert_eq!(reply["count"], expected, "{reply}");
    }
}

/// A Redis clock 5 s behind ours: with deadlines on our clock, a command
/// that sat in a paused Redis for 1.5 s would still count after we had
/// answered `unavailable`.
#[tokio::test]
async fn a_redis_clock_seconds_behind_still_counts_nothing_late() {
    let redis = RedisServer::start_with_clock_skew(-5_000);
    let server = instance(&redis, "blue");
    server.wait_ready(true).await;
    let offset = server.metric("redis_clock_offset_seconds").await;
    assert!(
        (-5.2..-4.8).contains(&offset),
        "estimated offset {offset} s"
    );
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    assert_eq!(message(&mut ws, json!("one")).await["count"], 1);

    redis.pause();
    let late = message(&mut ws, json!("while paused")).await;
    assert_eq!(late["code"], "unavailable", "{late}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.resume();
    server.wait_ready(true).await;
    assert_eq!(message(&mut ws, json!("two")).await["count"], 2);
    let (_, greeting) = server.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(
        greeting["count"], 2,
        "the message sent while paused was counted late"
    );
}
