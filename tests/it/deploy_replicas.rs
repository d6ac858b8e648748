//! Replicas per colour on the real Docker Engine: three containers behind
//! one Nginx upstream (least_conn), live clients spread over them and
//! carried through a deploy and a rollback without loss, and a deploy that
//! changes the number of replicas.

use crate::common;

use std::time::Duration;

use common::docker::{TestStack, docker_or_skip, explain};
use common::live::LiveClients;

const CLIENTS: usize = 150;

/// Open WebSockets of one container, from its own `/status` (by exec).
fn connections_of(container: &str) -> i64 {
    let output = std::process::Command::new("docker")
        .args([
            "exec",
            container,
            "/wsctl",
            "probe",
            "--print",
            "http://127.0.0.1:8000/status",
        ])
        .output()
        .expect("docker exec");
    let status: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    status["connections_active"].as_i64().unwrap_or(-1)
}

fn replica_names(status: &serde_json::Value, color: &str) -> Vec<String> {
    status["colors"][color]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|replica| replica["state"] != "absent")
        .filter_map(|replica| replica["container"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_clients_and_move_without_loss() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("replicas: 3\ndrain_timeout: 8\n");
    stack.wsctl_ok(&["deploy"]);
    let status = stack.status_json();
    let blue = replica_names(&status, "blue");
    let expected: Vec<String> = (1..=3)
        .map(|i| format!("{}app_blue_{i}", stack.prefix))
        .collect();
    assert_eq!(blue, expected, "{status}");
    // Nginx sized for three full replicas: 2 x 3 x 19,900 descriptors over
    // workers of 19,500 connections.
    assert_eq!(stack.nginx_workers(), 7);

    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, CLIENTS);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // least_conn spreads them: every replica holds a fair share.
    let spread: Vec<i64> = blue.iter().map(|name| connections_of(name)).collect();
    println!("{CLIENTS} clients over 3 replicas: {spread:?}");
    assert_eq!(spread.iter().sum::<i64>(), CLIENTS as i64, "{spread:?}");
    assert!(spread.iter().all(|n| *n >= 30), "uneven spread {spread:?}");
    // status sums them and shows each replica.
    let status = stack.status_json();
    assert_eq!(
        status["colors"]["blue"]["connections"], CLIENTS as i64,
        "{status}"
    );

    // A deploy and a rollback under all of them.
    for args in [&["deploy"][..], &["rollback"][..]] {
        let output = stack.wsctl_while_live(args).await;
        assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let summary = clients.finish().await;
    summary.assert_every_client_moved(2);
    println!(
        "replicas: {CLIENTS} clients, {} messages, {} reconnects, longest gap {:?}",
        summary.messages, summary.reconnects, summary.longest_gap
    );
    let status = stack.status_json();
    assert_eq!(status["live"], "blue", "{status}");
    assert_eq!(replica_names(&status, "green").len(), 3, "{status}");

    // Three to two: the next green has two containers, the third is gone.
    stack.wsctl_ok(&["deploy", "--replicas", "2"]);
    let status = stack.status_json();
    assert_eq!(status["live"], "green", "{status}");
    let green = replica_names(&status, "green");
    let expected: Vec<String> = (1..=2)
        .map(|i| format!("{}app_green_{i}", stack.prefix))
        .collect();
    assert_eq!(green, expected, "{status}");
    let gone = std::process::Command::new("docker")
        .args(["inspect", &format!("{}app_green_3", stack.prefix)])
        .output()
        .expect("docker inspect");
    assert!(!gone.status.success(), "app_green_3 still exists");
    assert_eq!(stack.public_status().await["color"], "green");

    // More replicas than Nginx was sized for: the deploy says so.
    let more = stack.wsctl_ok(&["deploy", "--replicas", "4", "--json"]);
    let warning = String::from_utf8_lossy(&more.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "warning")
        .expect("a warning event");
    let detail = warning["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("7 workers") && detail.contains("9 needed"),
        "{warning}"
    );

    // A bad count is refused before anything happens.
    let refused = stack.wsctl(&["deploy", "--replicas", "0"]);
    assert_eq!(refused.status.code(), Some(2), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("replicas"),
        "{}",
        explain(&refused)
    );
}
