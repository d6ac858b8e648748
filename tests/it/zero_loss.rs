//! The headline: live WebSocket traffic rides through `wsctl deploy` and
//! `wsctl rollback` without losing or doubling a message.
//!
//! 50 clients talk through the public Nginx address, each sending a message
//! every 50 ms and following the contract's closing rule: after a
//! `goodbye` (or any disconnect) a client reconnects with its
//! `session_uuid` and resends what was not answered. Afterwards every
//! client's counts must run 1, 2, 3, ... without a repeat or a gap, with
//! nothing left unanswered.

use crate::common;

use std::time::Duration;

use common::docker::{TestStack, docker_or_skip, explain};
use common::live::LiveClients;
use serde_json::Value;
use std::process::Command;

const CLIENTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_clients_lose_nothing_through_a_deploy_and_a_rollback() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("drain_timeout: 8\n");
    let first = stack.wsctl(&["deploy"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let deploy = stack.wsctl_while_live(&["deploy", "--json"]).await;
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    // The built-in cutover probe saw what our clients saw: nothing lost.
    let stdout = String::from_utf8_lossy(&deploy.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let continuity = &summary["continuity"];
    assert!(
        continuity["messages_answered"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(continuity["messages_lost"], 0, "{summary}");
    assert_eq!(continuity["messages_duplicated"], 0, "{summary}");
    assert_eq!(continuity["http_failed"], 0, "{summary}");
    println!("deploy under load: {}", stdout.lines().last().unwrap());
    // The drain said how many connections the old colour still held: the
    // clients at first, then fewer as their goodbyes went out.
    let left: Vec<u64> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "progress" && event["step"] == "drain")
        .filter_map(|event| {
            let detail = event["detail"]
                .as_str()?
                .strip_suffix(" connections left")?;
            detail.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    assert!(
        left.first().is_some_and(|&first| first > 0),
        "no drain progress counting the clients: {stdout}"
    );
    assert!(
        left.windows(2).all(|pair| pair[1] <= pair[0]),
        "connections left rose during the drain: {left:?}"
    );
    assert_eq!(stack.public_status().await["color"], "green");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rollback = stack.wsctl_while_live(&["rollback"]).await;
    assert!(
        rollback.status.success(),
        "{}",
        String::from_utf8_lossy(&rollback.stderr)
    );
    assert_eq!(stack.public_status().await["color"], "blue");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = clients.finish().await;
    summary.assert_every_client_moved(2);
    println!(
        "zero-loss: {CLIENTS} clients, {} messages answered, {} reconnects, \
         close codes {:?}, longest time without service {:?}",
        summary.messages, summary.reconnects, summary.close_codes, summary.longest_gap
    );
}

/// `nginx_network: host`: Nginx on the host's network listens on the public
/// address itself (no docker-proxy) and routes to the replicas' addresses
/// on the stack's network; clients ride a deploy and a rollback through it
/// with nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_clients_lose_nothing_through_a_host_network_nginx() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("drain_timeout: 8\nreplicas: 2\nnginx_network: host\n");
    let first = stack.wsctl(&["deploy"]);
    assert!(first.status.success(), "{}", explain(&first));
    let nginx = format!("{}nginx", stack.prefix);
    let mode = Command::new("docker")
        .args(["inspect", "-f", "{{.HostConfig.NetworkMode}}", &nginx])
        .output()
        .expect("docker inspect");
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "host");
    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, 30);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (command, colour) in [("deploy", "green"), ("rollback", "blue")] {
        let output = stack.wsctl_while_live(&[command]).await;
        assert!(output.status.success(), "{}", explain(&output));
        assert_eq!(stack.public_status().await["color"], colour);
        // The upstream names both replicas by their addresses, which
        // `status` maps back to the colour.
        let status = stack.status_json();
        assert_eq!(status["live"], colour, "{status}");
        assert!(status["nginx"]["drift"].is_null(), "{status}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let summary = clients.finish().await;
    summary.assert_every_client_moved(2);
    println!(
        "host-network Nginx: 30 clients, {} messages answered, {} reconnects",
        summary.messages, summary.reconnects
    );
    // The same address taken by something else: a second stack on it is
    // refused in one line naming it, and leaves nothing behind.
    let other = TestStack::new("nginx_network: host\n");
    let yaml = other.dir.join("wsctl.yaml");
    let text = std::fs::read_to_string(&yaml).expect("wsctl.yaml");
    std::fs::write(&yaml, text.replace(&other.public, &stack.public)).expect("wsctl.yaml");
    let refused = other.wsctl(&["deploy"]);
    assert_eq!(refused.status.code(), Some(2), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("is in use"),
        "{}",
        explain(&refused)
    );
    let left = Command::new("docker")
        .args(["inspect", &format!("{}nginx", other.prefix)])
        .output()
        .expect("docker inspect");
    assert!(!left.status.success(), "the refused deploy left its Nginx");
}
