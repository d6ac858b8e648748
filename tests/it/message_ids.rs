//! Message ids (docs/protocol.md, "Message ids"): a frame whose id was seen
//! in its session within `DEDUPE_WINDOW` changes nothing and is answered
//! with the original count. The same rules on the embedded layer, on Redis
//! and on a Redis Cluster, and the late-reply window of a counting script
//! forced with a proxy that holds Redis's replies.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::proxy::HangingProxy;
use common::redis::RedisServer;
use common::redis_cluster::RedisCluster;
use common::{Server, Ws, recv_json_within, recv_non_heartbeat, send_json};
use serde_json::{Value, json};

/// Sends `frame` and returns its answer (the next frame that is neither a
/// heartbeat nor a broadcast).
async fn answer(ws: &mut Ws, frame: Value) -> Value {
    send_json(ws, frame).await;
    loop {
        let reply = recv_non_heartbeat(ws).await;
        if reply["type"] != "broadcast" {
            return reply;
        }
    }
}

async fn with_id(ws: &mut Ws, id: &str, value: Value) -> Value {
    answer(ws, json!({"type": "message", "message": value, "id": id})).await
}

/// Frames that arrive within `limit`, heartbeats left out.
async fn frames_within(ws: &mut Ws, limit: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(frame) =
        tokio::time::timeout_at(deadline, recv_json_within(ws, Duration::from_secs(30))).await
    {
        if frame["type"] != "heartbeat" {
            frames.push(frame);
        }
    }
    frames
}

/// The whole contract of ids, with a session's two connections on `first`
/// and `second` (one server twice for the embedded layer).
async fn the_id_contract(first: &Server, second: &Server) {
    let (mut a, greeting) = first.connect("").await;
    assert_eq!(greeting["dedupe_window"], 300, "{greeting}");
    let session = common::session_of(&greeting);

    let reply = with_id(&mut a, "m-1", json!({"n": 1})).await;
    assert_eq!(reply["type"], "message_response", "{reply}");
    assert_eq!(reply["count"], 1);
    assert_eq!(reply["id"], "m-1");
    assert_eq!(reply["duplicate"], false);

    // Without an id: exactly as before ids existed.
    let plain = answer(&mut a, json!({"type": "message", "message": "plain"})).await;
    assert_eq!(plain["count"], 2);
    assert!(
        plain.get("id").is_none() && plain.get("duplicate").is_none(),
        "{plain}"
    );

    // A resend: the original count, nothing counted.
    let again = with_id(&mut a, "m-1", json!({"n": 1})).await;
    assert_eq!(again["type"], "message_response", "{again}");
    assert_eq!(
        (again["count"].clone(), again["duplicate"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(again["id"], "m-1");
    assert_eq!(again["message"], json!({"n": 1}));

    // The session's other connection (another instance with Redis) sees
    // the same ids.
    let (mut b, resumed) = second.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(resumed["count"], 2);
    assert_eq!(with_id(&mut b, "m-1", json!(1)).await["duplicate"], true);
    let third = with_id(&mut b, "m-3", json!(3)).await;
    assert_eq!(
        (third["count"].clone(), third["duplicate"].clone()),
        (json!(3), json!(false))
    );

    // A broadcast with an id reaches everyone once, its sender included,
    // and its sender also gets its count; a resend reaches nobody.
    let (mut listener, _) = second.connect("").await;
    send_json(
        &mut a,
        json!({"type": "broadcast", "message": "all", "id": "b-1"}),
    )
    .await;
    let sent = frames_within(&mut a, Duration::from_millis(700)).await;
    let kinds: BTreeSet<&str> = sent.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        kinds,
        BTreeSet::from(["broadcast", "message_response"]),
        "{sent:?}"
    );
    for frame in &sent {
        assert_eq!(frame["id"], "b-1", "{frame}");
    }
    let response = sent
        .iter()
        .find(|f| f["type"] == "message_response")
        .unwrap();
    assert_eq!(
        (response["count"].clone(), response["duplicate"].clone()),
        (json!(4), json!(false))
    );
    let resend = answer(
        &mut a,
        json!({"type": "broadcast", "message": "all", "id": "b-1"}),
    )
    .await;
    assert_eq!(resend["type"], "message_response", "{resend}");
    assert_eq!(
        (resend["count"].clone(), resend["duplicate"].clone()),
        (json!(4), json!(true))
    );
    for ws in [&mut listener, &mut b] {
        let got = frames_within(ws, Duration::from_millis(700)).await;
        let broadcasts: Vec<&Value> = got.iter().filter(|f| f["type"] == "broadcast").collect();
        assert_eq!(
            broadcasts.len(),
            1,
            "a duplicate broadcast arrived again: {got:?}"
        );
        assert_eq!(broadcasts[0]["id"], "b-1");
    }

    // The limits: 1 to 64 characters of a JSON string; nothing counted.
    let sixty_four = "é".repeat(64);
    assert_eq!(with_id(&mut a, &sixty_four, json!(5)).await["count"], 5);
    for bad in [
        json!(""),
        json!("x".repeat(65)),
        json!(7),
        json!(null),
        json!({"a": 1}),
    ] {
        let refused = answer(&mut a, json!({"type": "message", "message": 0, "id": bad})).await;
        assert_eq!(refused["type"], "error", "{bad}: {refused}");
        assert_eq!(refused["code"], "invalid_message", "{bad}: {refused}");
    }
    // A refusal of a frame with a valid id echoes it.
    let missing = answer(&mut a, json!({"type": "broadcast", "id": "no-message"})).await;
    assert_eq!(
        (missing["code"].clone(), missing["id"].clone()),
        (json!("invalid_message"), json!("no-message"))
    );
    assert_eq!(answer(&mut a, json!({"message": "last"})).await["count"], 6);
}

/// Two connections of one session send the same 300 ids at the same time:
/// each id is counted once, and both connections get the same count for it.
async fn the_same_ids_at_once_count_once(first: &Server, second: &Server) {
    let (a, greeting) = first.connect("").await;
    let session = common::session_of(&greeting);
    let (b, _) = second.connect(&format!("?session_uuid={session}")).await;
    let drive = |mut ws: Ws| async move {
        let mut answers = Vec::new();
        for i in 0..300 {
            let reply = with_id(&mut ws, &format!("id-{i}"), json!(i)).await;
            assert_eq!(reply["type"], "message_response", "{reply}");
            answers.push((reply["count"].as_u64().unwrap(), reply["duplicate"] == true));
        }
        answers
    };
    let (from_a, from_b) = tokio::join!(drive(a), drive(b));
    let mut counts = BTreeSet::new();
    for (i, (x, y)) in from_a.iter().zip(&from_b).enumerate() {
        assert_eq!(x.0, y.0, "id-{i} answered {} and {}", x.0, y.0);
        assert!(
            x.1 != y.1,
            "id-{i}: exactly one of the two counted it ({x:?}, {y:?})"
        );
        counts.insert(x.0);
    }
    assert_eq!(counts, (1..=300).collect::<BTreeSet<u64>>());
}

#[tokio::test]
async fn ids_on_the_embedded_layer() {
    let server = Server::start(&[("RATE_LIMIT", "100000"), ("BROADCAST_RATE", "100")]);
    the_id_contract(&server, &server).await;
    the_same_ids_at_once_count_once(&server, &server).await;
    // Three resends in the contract, one of each pair of the 300 ids.
    assert_eq!(
        server.metric("websocket_duplicate_messages_total").await,
        303.0
    );
}

fn redis_instance(url: &str, cluster: bool, color: &str) -> Server {
    let mut env = vec![
        ("REDIS_URL", url),
        ("COLOR", color),
        ("RATE_LIMIT", "100000"),
        ("BROADCAST_RATE", "100"),
    ];
    if cluster {
        env.push(("REDIS_CLUSTER", "true"));
    }
    Server::start(&env)
}

#[tokio::test]
async fn ids_on_redis_across_two_instances() {
    let redis = RedisServer::start();
    let blue = redis_instance(&redis.url(), false, "blue");
    let green = redis_instance(&redis.url(), false, "green");
    blue.wait_ready(true).await;
    green.wait_ready(true).await;
    the_id_contract(&blue, &green).await;
    the_same_ids_at_once_count_once(&blue, &green).await;
    // Ids expire with their window: no key outlives DEDUPE_WINDOW without
    // a TTL.
    let keys = redis.cli(&["--scan", "--pattern", "{wsctl:session:*"]);
    assert!(!keys.trim().is_empty(), "no id keys in Redis");
    for key in keys.lines() {
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!((1..=300_000).contains(&ttl), "{key} has PTTL {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_on_a_redis_cluster_across_two_instances() {
    let cluster = RedisCluster::start();
    let blue = redis_instance(&cluster.urls(), true, "blue");
    let green = redis_instance(&cluster.urls(), true, "green");
    blue.wait_ready(true).await;
    green.wait_ready(true).await;
    the_id_contract(&blue, &green).await;
    the_same_ids_at_once_count_once(&blue, &green).await;
}

#[tokio::test]
async fn after_its_window_an_id_counts_again() {
    let server = Server::start(&[("DEDUPE_WINDOW", "1")]);
    let (mut ws, greeting) = server.connect("").await;
    assert_eq!(greeting["dedupe_window"], 1);
    assert_eq!(with_id(&mut ws, "w", json!(1)).await["count"], 1);
    assert_eq!(with_id(&mut ws, "w", json!(1)).await["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = with_id(&mut ws, "w", json!(1)).await;
    assert_eq!(
        (later["count"].clone(), later["duplicate"].clone()),
        (json!(2), json!(false))
    );
}

#[tokio::test]
async fn after_its_window_an_id_counts_again_on_redis() {
    let redis = RedisServer::start();
    let server = Server::start(&[("REDIS_URL", &redis.url()), ("DEDUPE_WINDOW", "1")]);
    server.wait_ready(true).await;
    let (mut ws, _) = server.connect("").await;
    assert_eq!(with_id(&mut ws, "w", json!(1)).await["count"], 1);
    assert_eq!(with_id(&mut ws, "w", json!(1)).await["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(with_id(&mut ws, "w", json!(1)).await["duplicate"], false);
}

#[tokio::test]
async fn a_session_keeps_at_most_dedupe_max_ids() {
    let redis = RedisServer::start();
    let embedded = Server::start(&[("DEDUPE_MAX_IDS", "2")]);
    let on_redis = Server::start(&[("REDIS_URL", &redis.url()), ("DEDUPE_MAX_IDS", "2")]);
    on_redis.wait_ready(true).await;
    for server in [&embedded, &on_redis] {
        let (mut ws, _) = server.connect("").await;
        for id in ["a", "b", "c"] {
            assert_eq!(with_id(&mut ws, id, json!(id)).await["duplicate"], false);
        }
        assert_eq!(with_id(&mut ws, "c", json!(0)).await["duplicate"], true);
        // "a" was the oldest of three: forgotten, so it counts.
        let a = with_id(&mut ws, "a", json!(0)).await;
        assert_eq!(
            (a["count"].clone(), a["duplicate"].clone()),
            (json!(4), json!(false))
        );
    }
    assert_eq!(
        redis
            .cli(&["--scan", "--pattern", "*:id_times"])
            .lines()
            .count(),
        1
    );
    let key = redis.cli(&["--scan", "--pattern", "*:id_times"]);
    assert_eq!(redis.cli(&["ZCARD", key.trim()]).trim(), "2");
}

/// A counting script that Redis ran within its deadline, whose reply comes
/// back after wsctl gave up (answered `unavailable`): with an id, the
/// resend is a duplicate with the original count; without one, the same
/// sequence counts the message twice (the window the ids close).
#[tokio::test]
async fn a_late_reply_is_closed_by_the_id_and_counts_twice_without_one() {
    let redis = RedisServer::start();
    let proxy = HangingProxy::start(&redis.addr()).await;
    let server = Server::start(&[("REDIS_URL", &format!("redis://{}", proxy.addr))]);
    server.wait_ready(true).await;
    let (mut ws, greeting) = server.connect("").await;
    let session = common::session_of(&greeting);
    assert_eq!(
        answer(&mut ws, json!({"message": "warm"})).await["count"],
        1
    );

    async fn late(server: &Server, proxy: &HangingProxy, ws: &mut Ws, frame: Value) {
        proxy.hold_replies();
        let refused = answer(ws, frame.clone()).await;
        proxy.release_replies();
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["code"], "unavailable", "{refused}");
        assert_eq!(refused["retry"], true, "{refused}");
        assert_eq!(refused.get("id"), frame.get("id"), "{refused}");
        server.wait_ready(true).await;
    }

    let frame = json!({"type": "message", "message": "late", "id": "late-1"});
    late(&server, &proxy, &mut ws, frame.clone()).await;
    let resent = answer(&mut ws, frame).await;
    assert_eq!(resent["type"], "message_response", "{resent}");
    assert_eq!(
        resent["duplicate"], true,
        "the late script did count: {resent}"
    );
    assert_eq!(resent["count"], 2, "{resent}");

    let plain = json!({"type": "message", "message": "late, no id"});
    late(&server, &proxy, &mut ws, plain.clone()).await;
    let doubled = answer(&mut ws, plain).await;
    assert_eq!(
        doubled["count"], 4,
        "without an id the late script's count (3) and the resend's both stand: {doubled}"
    );
    let (_, again) = server.connect(&format!("?session_uuid={session}")).await;
    assert_eq!(again["count"], 4);
}
