//! Sessions and broadcasts on a real Redis Cluster (three masters, three
//! replicas, started by the test), shared by two real `wsctl serve`
//! processes: resume, broadcast-once and exactly-once counting, and a
//! master killed while clients send.

use crate::common;

use std::time::{Duration, Instant};

use common::live::LiveClients;
use common::redis_cluster::RedisCluster;
use common::{Server, message, recv_non_heartbeat, send_json};
use serde_json::json;

fn instance(cluster: &RedisCluster, color: &str) -> Server {
    Server::start(&[
        ("REDIS_URL", &cluster.urls()),
        ("REDIS_CLUSTER", "true"),
        ("COLOR", color),
        ("RATE_LIMIT", "100000"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_broadcast_once_and_exactly_once_counting_on_a_cluster() {
    let cluster = RedisCluster::start();
    let (blue, green) = (instance(&cluster, "blue"), instance(&cluster, "green"));
    blue.wait_ready(true).await;
    green.wait_ready(true).await;
    let (_, status) = blue.get_json("/status").await;
    assert_eq!(status["channel_layer"], "redis-cluster", "{status}");
    assert_eq!(status["redis"], "ok", "{status}");

    // Resume across instances: sessions hash to all three masters.
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let (mut ws, greeting) = blue.connect("").await;
        for expected in 1..=3 {
            assert_eq!(message(&mut ws, json!(expected)).await["count"], expected);
        }
        sessions.push(common::session_of(&greeting));
    }
    for session in &sessions {
        let (mut ws, greeting) = green.connect(&format!("?session_uuid={session}")).await;
        assert_eq!(greeting["resumed"], true, "{greeting}");
        assert_eq!(greeting["count"], 3, "{greeting}");
        assert_eq!(message(&mut ws, json!(4)).await["count"], 4);
    }

    // A broadcast reaches every connection of both instances, once.
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
        assert_eq!(frame["type"], "broadcast", "{frame}");
        assert_eq!(frame["from"], greeting["connection_id"]);
    }
    for ws in [&mut sender, &mut same_instance, &mut other_a, &mut other_b] {
        let reply = message(ws, json!("after")).await;
        assert_eq!(reply["type"], "message_response", "duplicate: {reply}");
    }

    // Concurrent messages on one session from both instances.
    let (a, greeting) = blue.connect("").await;
    let session = common::session_of(&greeting);
    let (b, _) = green.connect(&format!("?session_uuid={session}")).await;
    common::assert_counted_exactly_once(a, b, 1000).await;
}

/// A master dies while 50 clients send through both instances: its replica
/// takes over, messages in between are answered `unavailable` and sent
/// again, and every client's counts still run 1, 2, 3, ...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_and_every_count_carries_on() {
    let mut cluster = RedisCluster::start();
    let (blue, green) = (instance(&cluster, "blue"), instance(&cluster, "green"));
    blue.wait_ready(true).await;
    green.wait_ready(true).await;
    let on_blue = LiveClients::start(&blue.ws_url("/ws/chat"), 25);
    let on_green = LiveClients::start(&green.ws_url("/ws/chat"), 25);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let master = cluster.a_master();
    let killed = Instant::now();
    cluster.nodes[master].stop();
    // Its replica is promoted: three masters again, the cluster healthy.
    while cluster.masters() < 3 {
        assert!(killed.elapsed() < Duration::from_secs(30), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_until_ok();
    let failover = killed.elapsed();
    // Traffic on every slot again, for a while after the failover.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (blue_summary, green_summary) = tokio::join!(on_blue.finish(), on_green.finish());
    let messages = blue_summary.messages + green_summary.messages;
    let unavailable = blue_summary.unavailable + green_summary.unavailable;
    println!(
        "master killed under 50 clients: replica promoted after {failover:?}; \
         {messages} messages counted once each, {unavailable} answered \
         unavailable and resent, longest wait for an answer {:?}",
        blue_summary.longest_gap.max(green_summary.longest_gap),
    );
    assert!(
        unavailable > 0,
        "the failover was not noticed: is the test real?"
    );
    assert!(messages > 0);
    let (_, status) = blue.get_json("/status").await;
    assert_eq!(status["redis"], "ok", "{status}");
}
