//! The process around the service: configuration errors, JSON logs, the
//! graceful SIGTERM drain, and a slow client.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Server, recv_close, recv_json, recv_non_heartbeat, refused_upgrade_status, send_json, wsctl,
};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Runs `wsctl serve` that is expected to refuse its configuration; a
/// server that starts anyway is killed after 10 s and fails the test.
fn serve_with(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut child = wsctl()
        .args(["serve", "--host", "127.0.0.1"])
        .args(args)
        .envs(env.iter().copied())
        .env(
            "PORT",
            env.iter()
                .find(|(k, _)| *k == "PORT")
                .map_or("0", |(_, v)| v),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wsctl");
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("wsctl serve started with {env:?} {args:?}; expected a refusal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn invalid_configuration_exits_2_with_one_line_naming_the_setting() {
    /// Environment, flags, and the setting the error must name.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (&[("PORT", "eighty")], &[], "port"),
        (&[], &["--port", "99999"], "port"),
        (&[("HEARTBEAT_INTERVAL", "-5")], &[], "heartbeat-interval"),
        (&[], &["--shutdown-timeout", "0"], "shutdown-timeout"),
        (&[("REDIS_URL", "http://not-redis")], &[], "REDIS_URL"),
        (&[("DRAIN_WINDOW", "20")], &[], "DRAIN_WINDOW"),
        // The last goodbyes need time before the shutdown deadline.
        (
            &[("DRAIN_WINDOW", "9.5"), ("SHUTDOWN_TIMEOUT", "10")],
            &[],
            "DRAIN_WINDOW",
        ),
        (&[("BROADCAST_RATE", "0")], &[], "broadcast-rate"),
        (&[("BROADCAST_MAX_SIZE", "-1")], &[], "broadcast-max-size"),
        (&[("MAX_SESSIONS", "lots")], &[], "max-sessions"),
        (
            &[("BROADCAST_REQUIRE_AUTH", "true")],
            &[],
            "BROADCAST_REQUIRE_AUTH",
        ),
        (&[("MAX_MESSAGE_SIZE", "0")], &[], "max-message-size"),
        (&[("RATE_LIMIT", "none")], &[], "rate-limit"),
        (
            &[("ALLOWED_ORIGINS", "example.com")],
            &[],
            "ALLOWED_ORIGINS",
        ),
        (&[("REQUIRE_AUTH", "true")], &[], "SECRET_KEY"),
        (&[("COLOR", "Not A Colour")], &[], "color"),
    ];
    for (env, args, setting) in cases {
        let output = serve_with(env, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?} {args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(setting), "{setting} not named in: {stderr}");
    }
}

#[test]
fn flag_wins_over_environment() {
    let output = serve_with(
        &[("PORT", "not-a-port"), ("SHUTDOWN_TIMEOUT", "5")],
        &["--port", "0", "--shutdown-timeout", "x"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The port flag won (no complaint about PORT); the bad flag is named.
    assert!(
        stderr.contains("shutdown-timeout") && !stderr.contains("not-a-port"),
        "{stderr}"
    );
}

#[test]
fn version_flag_prints_the_version_and_the_git_revision() {
    let output = wsctl().arg("--version").output().unwrap();
    assert!(output.status.success());
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("wsctl {} ({head})", env!("CARGO_PKG_VERSION"))
    );
}

/// The soft open-file limit (often 1,024) would refuse the 1,000th client:
/// the server raises it to the hard limit, and names both numbers when
/// `MAX_CONNECTIONS` cannot fit.
#[tokio::test]
async fn the_open_file_limit_is_raised_and_a_max_connections_above_it_is_named() {
    let server = Server::start_with_open_files(&[("MAX_CONNECTIONS", "50000")], Some((256, 4096)));
    let logs = server.log_lines();
    let raised: Value = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "open-file limit raised to the hard limit")
        .expect("the raise is logged");
    assert_eq!(raised["before"], 256, "{raised}");
    assert_eq!(raised["limit"], 4096, "{raised}");
    let warning = logs
        .iter()
        .find(|line| line.contains("\"level\":\"WARN\"") && line.contains("MAX_CONNECTIONS"))
        .expect("a warning names MAX_CONNECTIONS");
    assert!(
        warning.contains("50000") && warning.contains("4096"),
        "{warning}"
    );
    // The raised limit is real: more sockets than the old soft limit open.
    let mut sockets = Vec::new();
    for _ in 0..400 {
        let (ws, _) = server.connect("").await;
        sockets.push(ws);
    }
    assert_eq!(server.metric("websocket_connections_active").await, 400.0);

    // Under the limit: no warning.
    let quiet = Server::start_with_open_files(&[("MAX_CONNECTIONS", "1000")], Some((256, 4096)));
    assert!(
        !quiet
            .log_lines()
            .iter()
            .any(|line| line.contains("MAX_CONNECTIONS")),
        "{:?}",
        quiet.log_lines()
    );
}

#[tokio::test]
async fn logs_are_json_lines_with_the_contract_fields() {
    let server = Server::start(&[("COLOR", "green")]);
    let (mut ws, greeting) = server.connect("").await;
    send_json(&mut ws, json!({"type": "bye"})).await;
    recv_close(&mut ws).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = server.log_lines();
    assert!(!lines.is_empty());
    let mut saw_connection = false;
    for line in &lines {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        for field in ["timestamp", "level", "logger", "message", "color"] {
            assert!(entry.get(field).is_some(), "{field} missing in {line}");
        }
        assert_eq!(entry["color"], "green");
        if entry["message"] == "connection opened" {
            saw_connection = true;
            assert_eq!(entry["connection_id"], greeting["connection_id"]);
            assert_eq!(entry["session_uuid"], greeting["session_uuid"]);
            assert!(entry["request_id"].is_string());
        }
    }
    assert!(saw_connection, "no `connection opened` line in {lines:#?}");
}

#[tokio::test]
async fn sigterm_drains_with_goodbyes_spread_over_the_window_and_exits_0() {
    let mut server = Server::start(&[("SHUTDOWN_TIMEOUT", "4"), ("DRAIN_WINDOW", "1")]);
    const POLITE: usize = 8;
    let mut polite = Vec::new();
    for _ in 0..POLITE {
        let (mut ws, _) = server.connect("").await;
        send_json(&mut ws, json!({"message": "before"})).await;
        assert_eq!(recv_non_heartbeat(&mut ws).await["count"], 1);
        polite.push(ws);
    }
    // A client that ignores the close: it never reads or answers again.
    let (_deaf, _) = server.connect("").await;

    let signalled = Instant::now();
    server.send_signal("TERM");
    // /readyz turns 503 at once (as soon as the process has the signal)
    // while the listener still answers probes.
    let (code, body) = loop {
        let (code, body) = server.get_json("/readyz").await;
        if code != 200 || signalled.elapsed() > Duration::from_millis(500) {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        code,
        503,
        "readyz still 200 after {:?}",
        signalled.elapsed()
    );
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["reason"], "shutting_down");
    // New WebSocket connections are refused during the drain.
    assert_eq!(
        refused_upgrade_status(&server.ws_url("/ws/chat/")).await,
        503,
        "an upgrade during the drain is refused as unavailable"
    );

    // Every polite client reads at once; each notes when its goodbye came.
    let goodbyes = polite.iter_mut().map(|ws| async move {
        let goodbye = recv_non_heartbeat(ws).await;
        let at = signalled.elapsed();
        assert_eq!(goodbye["type"], "goodbye");
        assert_eq!(goodbye["reason"], "server_shutdown");
        assert_eq!(goodbye["count"], 1);
        let (code, _) = recv_close(ws).await;
        assert_eq!(code, Some(1001));
        at
    });
    let mut goodbye_times = futures_util::future::join_all(goodbyes).await;
    goodbye_times.sort();
    let spread = goodbye_times[POLITE - 1] - goodbye_times[0];
    assert!(
        spread >= Duration::from_millis(500),
        "goodbyes not spread: {goodbye_times:?}"
    );

    let (exit, _) = server.wait_exit(Duration::from_secs(6));
    let took = signalled.elapsed();
    assert_eq!(exit, Some(0));
    assert!(
        took < Duration::from_secs(4),
        "exit after {took:?}, limit 4 s"
    );
    let lines = server.log_lines();
    let done = lines
        .iter()
        .find(|l| l.contains("shutdown complete"))
        .expect("shutdown log line");
    let done: Value = serde_json::from_str(done).unwrap();
    assert!(done["shutdown_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn messages_sent_before_sigterm_are_answered_before_goodbye() {
    let mut server = Server::start(&[
        ("SHUTDOWN_TIMEOUT", "3"),
        ("DRAIN_WINDOW", "0.5"),
        ("RATE_LIMIT", "10000"),
    ]);
    let (mut ws, _) = server.connect("").await;
    for i in 0..200 {
        ws.feed(Message::text(json!({"message": i}).to_string()))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    server.send_signal("TERM");
    // Every reply counts up without a gap until the goodbye, whose count is
    // the last one answered: nothing counted went unanswered.
    let mut last = 0;
    loop {
        let frame = recv_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("message_response") => {
                last += 1;
                assert_eq!(frame["count"], last);
            }
            Some("goodbye") => {
                assert_eq!(frame["count"], last);
                break;
            }
            Some("heartbeat") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        last, 200,
        "messages received before the signal were all answered"
    );
    assert_eq!(recv_close(&mut ws).await.0, Some(1001));
    assert_eq!(server.wait_exit(Duration::from_secs(5)).0, Some(0));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_without_slowing_the_others() {
    let server = Server::start(&[
        ("RATE_LIMIT", "100000"),
        ("BROADCAST_RATE", "100000"),
        ("BROADCAST_MAX_SIZE", "100000"),
        ("BROADCAST_BUFFER", "16"),
    ]);
    let (mut fast, _) = server.connect("").await;
    let (mut stalled, _) = server.connect("").await;
    // 400 broadcasts of 60 KB: about 24 MB, more than the socket buffers of
    // a client that never reads can hold.
    let payload = "z".repeat(60_000);
    let started = Instant::now();
    for i in 0..400 {
        send_json(
            &mut fast,
            json!({"type": "broadcast", "message": [i, payload]}),
        )
        .await;
        let frame = recv_non_heartbeat(&mut fast).await;
        assert_eq!(frame["type"], "broadcast");
        assert_eq!(frame["message"][0], i);
    }
    let fast_took = started.elapsed();
    assert!(
        fast_took < Duration::from_secs(8),
        "the fast client was held back: {fast_took:?}"
    );
    // The stalled client now reads: it finds fewer than 400 frames, then the
    // end of its connection.
    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(
            Duration::from_secs(20),
            futures_util::StreamExt::next(&mut stalled),
        )
        .await
        {
            Ok(Some(Ok(Message::Text(_)))) => received += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break None,
            Err(_) => panic!("stalled client never cut off ({received} frames)"),
        }
    };
    assert!(received < 400, "stalled client got everything ({received})");
    // Cut off as a slow consumer (1013), not by the write timeout: the close
    // frame may not fit the full socket buffer, but the counters say which.
    if let Some(code) = ended {
        assert_eq!(code, 1013);
    }
    assert_eq!(
        server
            .metric("websocket_errors_total{type=\"slow_consumer\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("websocket_errors_total{type=\"write_timeout\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn debug_switches_logs_to_debug_level() {
    let server = Server::start(&[("DEBUG", "1"), ("HEARTBEAT_INTERVAL", "0.2")]);
    let (_ws, _) = server.connect("").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let debug_lines = server
        .log_lines()
        .iter()
        .filter(|line| line.contains(r#""level":"DEBUG""#))
        .count();
    assert!(debug_lines > 0, "no debug line with DEBUG=1");

    let quiet = Server::start(&[("HEARTBEAT_INTERVAL", "0.2")]);
    let (_ws, _) = quiet.connect("").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        quiet
            .log_lines()
            .iter()
            .all(|line| !line.contains(r#""level":"DEBUG""#))
    );
}

#[tokio::test]
async fn sigint_drains_like_sigterm() {
    let mut server = Server::start(&[("SHUTDOWN_TIMEOUT", "3"), ("DRAIN_WINDOW", "0.2")]);
    let (mut ws, _) = server.connect("").await;
    server.send_signal("INT");
    let goodbye = recv_non_heartbeat(&mut ws).await;
    assert_eq!(goodbye["type"], "goodbye");
    assert_eq!(goodbye["reason"], "server_shutdown");
    assert_eq!(recv_close(&mut ws).await.0, Some(1001));
    assert_eq!(server.wait_exit(Duration::from_secs(4)).0, Some(0));
}

/// `POST /connections/move` (what wsctl asks after a reload past the old
/// workers' bounds): connections opened before the cutoff say goodbye and
/// close 1001 within `DRAIN_WINDOW`; younger ones and the process stay.
#[tokio::test]
async fn connections_older_than_the_cutoff_move_with_goodbye_and_the_rest_stay() {
    let server = Server::start(&[("DRAIN_WINDOW", "1")]);
    let (mut old, greeting) = server.connect("").await;
    assert_eq!(greeting["type"], "connection_established");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (mut young, _) = server.connect("").await;

    let client = reqwest::Client::new();
    let ordered = Instant::now();
    let answer = client
        .post(server.http("/connections/move?older_than=0.3"))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200);
    let (code, frames) = recv_close(&mut old).await;
    let took = ordered.elapsed();
    assert_eq!(code, Some(1001), "{frames:?}");
    let goodbye = frames
        .iter()
        .find(|frame| frame["type"] == "goodbye")
        .unwrap_or_else(|| panic!("no goodbye: {frames:?}"));
    assert_eq!(goodbye["reason"], "server_shutdown", "{goodbye}");
    assert!(
        took <= Duration::from_millis(1500),
        "{took:?} past the 1 s window"
    );

    // The young connection is still served, and new ones are welcome.
    send_json(
        &mut young,
        json!({"type": "message", "message": "still here"}),
    )
    .await;
    let reply = recv_non_heartbeat(&mut young).await;
    assert_eq!(reply["type"], "message_response", "{reply}");
    let (_, again) = server.connect("").await;
    assert_eq!(again["type"], "connection_established");

    // A GET, or no cutoff, is refused; nothing moves.
    let get = client
        .get(server.http("/connections/move?older_than=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let bad = client
        .post(server.http("/connections/move"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
