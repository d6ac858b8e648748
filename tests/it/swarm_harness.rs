//! The Swarm the Swarm tests stand on (scripts/swarm.sh, issue 25): three
//! engines in namespaces of their own form one swarm, and a service's tasks
//! on the two workers answer over an attachable overlay from the manager,
//! with the endpoint mode wsctl will use (dnsrr: no routing mesh here).

use crate::common;

use std::time::{Duration, Instant};

use common::docker::{docker_or_skip, explain};
use common::swarm::Swarm;

#[tokio::test]
async fn three_engines_form_a_swarm_whose_overlay_reaches_tasks_on_both_workers() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let swarm = Swarm::start(3);
    let nodes = swarm.docker(&[
        "node",
        "ls",
        "--format",
        "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
    ]);
    let listed = String::from_utf8_lossy(&nodes.stdout).into_owned();
    assert_eq!(listed.matches("Ready").count(), 3, "{listed}");
    assert_eq!(listed.matches("Leader").count(), 1, "{listed}");

    let ok = |output: std::process::Output, what: &str| {
        assert!(output.status.success(), "{what}: {}", explain(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    ok(
        swarm.docker(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "harness",
        ]),
        "overlay",
    );
    ok(
        swarm.docker(&[
            "service",
            "create",
            "--detach",
            "--name",
            "echo",
            "--network",
            "harness",
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--constraint",
            "node.role==worker",
            "--endpoint-mode",
            "dnsrr",
            "--no-resolve-image",
            "wsctl:local",
            "serve",
        ]),
        "service",
    );
    let started = Instant::now();
    let running = loop {
        let tasks = ok(
            swarm.docker(&[
                "service",
                "ps",
                "echo",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}}",
            ]),
            "service ps",
        );
        let running: Vec<String> = tasks
            .lines()
            .filter(|line| line.contains("Running"))
            .map(|line| line.split(' ').next().unwrap_or_default().to_string())
            .collect();
        if running.len() == 2 {
            break running;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tasks: {tasks}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_ne!(
        running[0], running[1],
        "both tasks on one node: {running:?}"
    );

    // From a container on the manager, over the overlay, to both tasks
    // (dnsrr resolves the service name to every task's address).
    let held = swarm.docker(&[
        "run",
        "--rm",
        "--network",
        "harness",
        "wsctl:local",
        "bench",
        "hold",
        "-n",
        "20",
        "--duration",
        "1",
        "--url",
        "ws://echo:8000/ws/chat/",
    ]);
    let report = ok(held, "bench hold over the overlay");
    assert!(report.contains("20/20"), "{report}");
}
