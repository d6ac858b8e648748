//! Drift and `wsctl deploy --proxy` on the real engine: `status` names an
//! Nginx that runs another image than wsctl.yaml's; `deploy --proxy`
//! replaces it under live clients (they reconnect and resume, no message
//! lost or counted twice); a new Nginx that cannot start is undone and the
//! old one serves again.

use crate::common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip, explain, remove_everything};
use common::live::LiveClients;

fn run(stack: &TestStack, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::wsctl()
        .args(args)
        .arg("--config")
        .arg(stack.dir.join("wsctl.yaml"))
        .envs(env.iter().copied())
        .output()
        .expect("run wsctl")
}

/// Images this test builds, removed when it ends (also on failure).
struct BuiltImages(Vec<String>);

impl BuiltImages {
    /// `FROM wsctl-nginx:local` plus `lines`, with the files of `context`.
    fn build(&mut self, tag: &str, lines: &str, context: &[(&str, &str)]) {
        let dir = std::env::temp_dir().join(format!("wsctl-proxy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM wsctl-nginx:local\n{lines}\n"),
        )
        .unwrap();
        for (name, text) in context {
            std::fs::write(dir.join(name), text).unwrap();
        }
        self.0.push(tag.to_string());
        let built = Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(&dir)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(built.status.success(), "{}", explain(&built));
    }
}

impl Drop for BuiltImages {
    fn drop(&mut self) {
        remove_everything(None, Vec::new(), std::mem::take(&mut self.0), Vec::new());
    }
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
    let mut images = BuiltImages(Vec::new());
    let newer = format!("{}nginx:v2", stack.prefix);
    images.build(
        &newer,
        &format!("LABEL wsctl.test=\"{}\"", stack.prefix),
        &[],
    );
    let with_newer = [("WSCTL_IMAGES__NGINX", newer.as_str())];
    let drifted = run(&stack, &["status", "--json"], &with_newer);
    let drifted: serde_json::Value =
        serde_json::from_slice(&drifted.stdout).unwrap_or_else(|_| panic!("{}", explain(&drifted)));
    let drift = drifted["nginx"]["drift"].as_str().unwrap_or_default();
    assert!(drift.contains(&newer), "{drifted}");
    let readable = run(&stack, &["status"], &with_newer);
    assert!(
        explain(&readable).contains("drift: nginx") && explain(&readable).contains("--proxy"),
        "{}",
        explain(&readable)
    );

    // Replaced under 20 live clients: cut, they come back and resume.
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = clients.finish().await;
    println!(
        "deploy --proxy took {:.1} s; 20 clients: {} messages, {} reconnects, longest wait {:?}",
        took.as_secs_f64(),
        summary.messages,
        summary.reconnects,
        summary.longest_gap
    );
    assert!(
        summary.reconnects >= 20,
        "every client was cut: {summary:?}"
    );
    let after = run(&stack, &["status", "--json"], &with_newer);
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(after["nginx"]["image"], newer.as_str(), "{after}");
    assert!(after["nginx"]["drift"].is_null(), "{after}");
    assert_eq!(after["live"], "blue", "{after}");
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
    images.build(
        &broken,
        "COPY nginx.conf /etc/nginx/nginx.conf",
        &[("nginx.conf", "this is not an nginx configuration\n")],
    );
    let failed = run(
        &stack,
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
    assert_eq!(stack.public_status().await["color"], "blue");
    for leftover in ["nginx_next", "nginx_old"] {
        let name = format!("{}{leftover}", stack.prefix);
        assert!(
            docker.inspect_container(&name, None).await.is_err(),
            "{name} left"
        );
    }
}
