//! `wsctl bench` against the real service: every mode runs clean against a
//! healthy server, and problems show up in the report and the exit code.

use crate::common;

use common::{Server, wsctl};
use serde_json::Value;

fn bench(server: &Server, args: &[&str]) -> (Option<i32>, Value) {
    let output = wsctl()
        .args(["bench"])
        .args(args)
        .args([
            "--json",
            "--url",
            &server.ws_url("/ws/chat/"),
            "--sources",
            "4",
        ])
        .output()
        .expect("run wsctl bench");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

#[test]
fn every_mode_runs_clean_against_a_healthy_server() {
    let server = Server::start(&[("RATE_LIMIT", "100000")]);
    let pid = server.child.id().to_string();
    let (code, hold) = bench(
        &server,
        &[
            "hold",
            "-n",
            "200",
            "--duration",
            "0.5",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(code, Some(0), "{hold}");
    assert_eq!(hold["connections_opened"], 200);
    assert!(
        hold["server_rss_per_connection_bytes"].as_f64().is_some(),
        "{hold}"
    );
    assert!(
        hold.get("connect_histogram").is_none(),
        "internal field leaked"
    );

    let (code, rtt) = bench(
        &server,
        &["rtt", "-n", "50", "--rate", "200", "--duration", "1"],
    );
    assert_eq!(code, Some(0), "{rtt}");
    assert!(rtt["messages_answered"].as_u64().unwrap() >= 150, "{rtt}");
    assert_eq!(rtt["messages_answered"], rtt["messages_sent"]);
    assert!(rtt["round_trip"]["p99_ms"].as_f64().unwrap() > 0.0);

    let (code, flood) = bench(
        &server,
        &["flood", "-n", "10", "--in-flight", "4", "--duration", "1"],
    );
    assert_eq!(code, Some(0), "{flood}");
    assert!(flood["messages_per_second"].as_f64().unwrap() > 0.0);

    let (code, fanout) = bench(&server, &["fanout", "-n", "50", "--rounds", "2"]);
    assert_eq!(code, Some(0), "{fanout}");
    assert_eq!(fanout["messages_answered"], 100);
    assert_eq!(fanout["fanout"]["samples"], 100);
}

#[test]
fn refused_messages_are_reported_and_fail_the_run() {
    // A rate limit of 1/s refuses most of what rtt sends.
    let server = Server::start(&[("RATE_LIMIT", "1")]);
    let (code, report) = bench(
        &server,
        &["rtt", "-n", "5", "--rate", "100", "--duration", "1"],
    );
    assert_eq!(code, Some(1));
    assert!(report["errors_received"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn refused_connections_are_counted_by_kind() {
    let server = Server::start(&[("MAX_CONNECTIONS", "10")]);
    let (code, report) = bench(&server, &["hold", "-n", "15", "--duration", "0.3"]);
    assert_eq!(code, Some(1));
    assert_eq!(report["connections_opened"], 10);
    assert_eq!(report["connect_failures"]["http_503"], 5, "{report}");
}

#[test]
fn hold_splits_across_child_processes_beyond_the_open_file_limit() {
    // With at most 600 open files per process, 1,200 connections need
    // three processes; the parent merges their reports.
    let server = Server::start(&[]);
    let pid = server.child.id().to_string();
    let output = std::process::Command::new("prlimit")
        .args([
            "--nofile=600:600",
            env!("CARGO_BIN_EXE_wsctl"),
            "bench",
            "hold",
            "-n",
            "1200",
        ])
        .args([
            "--duration",
            "1",
            "--json",
            "--sources",
            "4",
            "--server-pid",
            &pid,
        ])
        .args(["--url", &server.ws_url("/ws/chat/")])
        .output()
        .expect("prlimit (util-linux)");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["processes"], 3, "{report}");
    assert_eq!(report["connections_opened"], 1200);
    assert_eq!(report["connect_latency"]["samples"], 1200);
    assert!(report["server_rss_per_connection_bytes"].as_f64().is_some());
}

#[test]
fn modes_other_than_hold_say_up_front_when_the_limit_is_too_low() {
    let server = Server::start(&[]);
    let output = std::process::Command::new("prlimit")
        .args([
            "--nofile=600:600",
            env!("CARGO_BIN_EXE_wsctl"),
            "bench",
            "rtt",
            "-n",
            "1200",
        ])
        .args(["--url", &server.ws_url("/ws/chat/")])
        .output()
        .expect("prlimit (util-linux)");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("more open files than one process may hold"),
        "{stderr}"
    );
}

/// `hold --follow` across a server restart: with sessions in Redis every
/// connection comes back resumed with its count; with the embedded layer
/// (sessions die with the process) every one is reported lost and the run
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_follow_rides_a_restart_and_reports_lost_sessions() {
    let redis = common::redis::RedisServer::start();
    let url = redis.url();
    for (env, survives) in [(vec![("REDIS_URL", url.as_str())], true), (vec![], false)] {
        let mut server = Server::start(&env);
        // Listening comes before Redis is connected: upgrades wait for ready.
        server.wait_ready(true).await;
        let port: u16 = server
            .addr
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("port");
        let ws_url = server.ws_url("/ws/chat/");
        let bench = std::thread::spawn(move || {
            let output = wsctl()
                .args(["bench", "hold", "--follow", "-n", "100", "--duration", "10"])
                .args(["--json", "--url", &ws_url])
                .output()
                .expect("run wsctl bench");
            let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
            (output.status.code(), report)
        });
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        server.send_signal("TERM");
        server.wait_exit(std::time::Duration::from_secs(15));
        let _restarted = Server::start_on_port(&env, port);
        let (code, report) =
            tokio::task::spawn_blocking(move || bench.join().expect("bench thread"))
                .await
                .expect("join");
        let follow = &report["follow"];
        assert_eq!(report["goodbyes_received"], 100, "{report}");
        if survives {
            assert_eq!(code, Some(0), "{report}");
            assert_eq!(follow["resumed"], 100, "{report}");
            assert_eq!(follow["resume_failures"], 0, "{report}");
            assert_eq!(report["count_violations"], 0, "{report}");
            assert!(
                follow["move_seconds"].as_f64().is_some_and(|s| s > 0.0),
                "{report}"
            );
        } else {
            assert_eq!(code, Some(1), "{report}");
            assert_eq!(follow["resume_failures"], 100, "{report}");
        }
        assert_eq!(follow["not_back"], 0, "{report}");
    }
}
