//! `wsctl smoke` against a good service and broken ones.

use crate::common;

use common::{Server, wsctl};
use serde_json::Value;

fn smoke(url: &str, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    let output = wsctl()
        .args(["smoke", "--json", "--url", url])
        .args(extra)
        .output()
        .expect("run wsctl smoke");
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    (output.status.code(), lines)
}

#[test]
fn a_healthy_service_passes_every_check_and_writes_junit() {
    let server = Server::start(&[]);
    let junit = std::env::temp_dir().join(format!("wsctl-smoke-{}.xml", uuid::Uuid::new_v4()));
    let (code, lines) = smoke(&server.http(""), &["--junit", junit.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{lines:?}");
    let names: Vec<&str> = lines.iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "healthz",
            "readyz",
            "status",
            "metrics",
            "websocket_session"
        ]
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] == "check")
            .all(|l| l["ok"] == true)
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "smoke");
    assert_eq!(summary["failed"], 0);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let _ = std::fs::remove_file(&junit);
    assert!(
        xml.contains(r#"tests="5""#) && xml.contains(r#"failures="0""#),
        "{xml}"
    );
}

#[test]
fn a_service_that_is_not_ready_fails_with_exit_1() {
    // Redis configured but unreachable: /readyz 503 and upgrades 503.
    let server = Server::start(&[("REDIS_URL", "redis://127.0.0.1:1/0")]);
    let (code, lines) = smoke(&server.http(""), &[]);
    assert_eq!(code, Some(1));
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "check" && l["ok"] == false)
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(failed, ["readyz", "websocket_session"], "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["name"] == "healthz" && l["ok"] == true)
    );
}

#[test]
fn nothing_listening_fails_every_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, lines) = smoke(&format!("http://127.0.0.1:{port}"), &[]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.last().unwrap()["failed"], 5);
}
