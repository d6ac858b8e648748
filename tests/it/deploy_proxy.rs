//! Drift and `wsctl deploy --proxy` on the real engine: `status` names an
//! Nginx that runs another image than wsctl.yaml's; `deploy --proxy`
//! replaces it under live clients (they reconnect and resume, no message
//! lost or counted twice); a new Nginx that cannot start is undone and the
//! old one serves again. Both are runs of the journal (`history`).

use crate::common;

use std::time::{Duration, Instant};

use common::docker::{BuiltImages, TestStack, docker_or_skip, explain};
use common::live::LiveClients;

/// `FROM wsctl-nginx:local` plus `lines`, with the files of `context`.
fn build_nginx(images: &mut BuiltImages, tag: &str, lines: &str, context: &[(&str, &str)]) {
    let dir = BuiltImages::context();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM wsctl-nginx:local\n{lines}\n"),
    )
    .unwrap();
    for (name, text) in context {
        std::fs::write(dir.join(name), text).unwrap();
    }
    images.build(tag, &dir);
}

#[tokio::test]
async fn drift_is_named_and_deploy_proxy_replaces_nginx_under_live_clients() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);
    let status = stack.status_json();
    assert!(status["nginx"]["drift"].is_null(), "{status}");
    assert!(status["redis"]["drift"].is_null(), "{status}");

    // A new build of the proxy image, named by a WSCTL_ override.
    let mut images = BuiltImages::default();
    let newer = format!("{}nginx:v2", stack.prefix);
    build_nginx(
        &mut images,
        &newer,
        &format!("LABEL wsctl.test=\"{}\"", stack.prefix),
        &[],
    );
    let with_newer = [("WSCTL_IMAGES__NGINX", newer.as_str())];
    let drifted = stack.wsctl_with_env(&["status", "--json"], &with_newer);
    let drifted: serde_json::Value =
        serde_json::from_slice(&drifted.stdout).unwrap_or_else(|_| panic!("{}", explain(&drifted)));
    let drift = drifted["nginx"]["drift"].as_str().unwrap_or_default();
    assert!(drift.contains(&newer), "{drifted}");
    let readable = stack.wsctl_with_env(&["status"], &with_newer);
    assert!(
        explain(&readable).contains("drift: nginx") && explain(&readable).contains("--proxy"),
        "{}",
        explain(&readable)
    );

    // Replaced under 20 live clients: moved with goodbye, they come back
    // and resume.
    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, 20);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let config = stack.dir.join("wsctl.yaml");
    let env = [("WSCTL_IMAGES__NGINX".to_string(), newer.clone())];
    let replaced = tokio::task::spawn_blocking(move || {
        common::wsctl()
            .args(["deploy", "--proxy", "--json", "--config"])
            .arg(config)
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(replaced.status.code(), Some(0), "{}", explain(&replaced));
    let last = String::from_utf8_lossy(&replaced.stdout)
        .lines()
        .last()
        .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .unwrap_or_default();
    assert_eq!(last["event"], "proxy", "{}", explain(&replaced));
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["image"], newer.as_str(), "{last}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = clients.finish().await;
    println!(
        "deploy --proxy took {:.1} s; 20 clients: {} messages, {} reconnects, longest wait {:?}",
        took.as_secs_f64(),
        summary.messages,
        summary.reconnects,
        summary.longest_gap
    );
    assert!(summary.reconnects >= 20, "every client moved: {summary:?}");
    // With goodbye and 1001 before the old Nginx went, never cut: a cut
    // between counting a message and its answer counted it twice.
    assert_eq!(summary.abnormal_closes, 0, "{summary:?}");
    assert!(
        summary.close_codes.keys().all(|code| *code == 1001),
        "{:?}",
        summary.close_codes
    );
    let after = stack.wsctl_with_env(&["status", "--json"], &with_newer);
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(after["nginx"]["image"], newer.as_str(), "{after}");
    assert!(after["nginx"]["drift"].is_null(), "{after}");
    assert_eq!(after["live"], "blue", "{after}");
    // The replacement is a run of the journal like any other.
    let replacement = &after["history"][0];
    assert_eq!(replacement["action"], "proxy", "{after}");
    assert_eq!(replacement["outcome"], "succeeded", "{after}");
    assert_eq!(replacement["image"], newer.as_str(), "{after}");
    assert_eq!(replacement["traffic"], "blue", "{after}");
    assert_eq!(last["run_id"], replacement["id"], "{last}");
    for leftover in ["nginx_next", "nginx_old"] {
        let name = format!("{}{leftover}", stack.prefix);
        assert!(
            docker.inspect_container(&name, None).await.is_err(),
            "{name} left"
        );
    }

    // An Nginx that cannot start (a broken nginx.conf): undone, the one
    // before serves again, exit 5 like any failed switch.
    let broken = format!("{}nginx:broken", stack.prefix);
    build_nginx(
        &mut images,
        &broken,
        "COPY nginx.conf /etc/nginx/nginx.conf",
        &[("nginx.conf", "this is not an nginx configuration\n")],
    );
    let failed = stack.wsctl_with_env(
        &["deploy", "--proxy"],
        &[("WSCTL_IMAGES__NGINX", broken.as_str())],
    );
    assert_eq!(failed.status.code(), Some(5), "{}", explain(&failed));
    assert!(
        explain(&failed).contains("the old one is back"),
        "{}",
        explain(&failed)
    );
    let back = stack.status_json();
    assert_eq!(back["nginx"]["image"], newer.as_str(), "{back}");
    let undone = &back["history"][0];
    assert_eq!(undone["action"], "proxy", "{back}");
    assert_eq!(undone["outcome"], "failed", "{back}");
    assert_eq!(undone["traffic"], "blue", "{back}");
    assert!(
        back["unfinished"].as_array().is_some_and(Vec::is_empty),
        "{back}"
    );
    assert_eq!(stack.public_status().await["color"], "blue");
    for leftover in ["nginx_next", "nginx_old"] {
        let name = format!("{}{leftover}", stack.prefix);
        assert!(
            docker.inspect_container(&name, None).await.is_err(),
            "{name} left"
        );
    }
}
