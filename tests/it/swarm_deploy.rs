//! `platform: swarm` on a real three-node Swarm (scripts/swarm.sh): each
//! colour a service with tasks on both workers, Nginx, Redis and the
//! checker on the manager, the journal and the lock as Swarm configs.

use crate::common;

use std::time::Duration;

use common::docker::{docker_or_skip, explain};
use common::live::{LiveClients, greeting_colours};
use common::swarm::{Swarm, SwarmStack};

const CLIENTS: usize = 50;
/// Two tasks per colour, on the two workers (none on the manager).
const ON_THE_WORKERS: &str = "replicas: 2\nswarm:\n  constraints: [\"node.role==worker\"]\n";

/// The nodes the colour's running tasks are on, from `status --json`.
fn task_nodes(status: &serde_json::Value, color: &str) -> Vec<String> {
    status["colors"][color]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["state"] == "running")
        .filter_map(|task| task["node"].as_str().map(str::to_string))
        .collect()
}

/// The names of the manager's Swarm configs that start with `prefix`.
fn configs(swarm: &Swarm, prefix: &str) -> Vec<String> {
    let output = swarm.docker(&["config", "ls", "--format", "{{.Name}}"]);
    assert!(output.status.success(), "{}", explain(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_ride_a_deploy_a_rollback_and_a_dead_worker_on_a_three_node_swarm() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let swarm = Swarm::start(3);
    let stack = SwarmStack::new(&swarm, ON_THE_WORKERS);
    let first = stack.wsctl(&["deploy"]);
    assert!(first.status.success(), "first deploy: {}", explain(&first));
    let status = stack.status_json();
    assert_eq!(status["live"], "blue", "{status}");
    let mut nodes = task_nodes(&status, "blue");
    nodes.sort();
    assert_eq!(nodes.len(), 2, "{status}");
    assert_ne!(nodes[0], nodes[1], "both tasks on one node: {status}");
    assert!(
        nodes.iter().all(|node| !node.ends_with("n0")),
        "a task on the manager: {nodes:?}"
    );
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );

    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, CLIENTS);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut timings = Vec::new();
    for (args, live) in [(&["deploy"][..], "green"), (&["rollback"][..], "blue")] {
        let started = std::time::Instant::now();
        let output = stack.wsctl_while_live(args).await;
        timings.push((args[0], started.elapsed()));
        assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
        let status = stack.status_json();
        assert_eq!(status["live"], live, "{status}");
        let mut nodes = task_nodes(&status, live);
        nodes.sort();
        nodes.dedup();
        assert_eq!(
            nodes.len(),
            2,
            "{live}'s tasks not on both workers: {status}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Worker 2 dies as a machine does (no goodbye, no FIN) under the same
    // clients: Swarm starts its task on worker 1, and the edge follows
    // (the upstream lists exactly the running tasks, both on worker 1).
    let upstream_servers = || upstream_servers_on(&swarm, &stack, 0);
    let killed = std::time::Instant::now();
    swarm.kill_node(2);
    let (followed, status) = loop {
        let status = stack.status_json();
        let nodes = task_nodes(&status, "blue");
        let servers = upstream_servers();
        let mut addresses: Vec<String> = status["colors"]["blue"]["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|task| task["state"] == "running")
            .filter_map(|task| Some(format!("{}:8000", task["address"].as_str()?)))
            .collect();
        addresses.sort();
        if nodes.len() == 2 && nodes.iter().all(|node| node.ends_with("n1")) && servers == addresses
        {
            break (killed.elapsed(), status);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "the edge did not follow: upstream {servers:?}, {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // status says which node is down, and shows its task as lost.
    let down: Vec<&serde_json::Value> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|node| node["state"] == "down")
        .collect();
    assert_eq!(down.len(), 1, "{status}");
    assert!(
        down[0]["name"].as_str().unwrap_or("").ends_with("n2"),
        "{status}"
    );
    assert!(
        status["warnings"].to_string().contains("is down"),
        "{status}"
    );
    // Every client back: each answers again after the loss.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let summary = clients.finish().await;
    println!(
        "swarm: {CLIENTS} clients, {} messages, {} reconnects, longest gap {:?}; {timings:?}; \
         worker killed: the upstream followed {followed:?} after",
        summary.messages, summary.reconnects, summary.longest_gap
    );
    summary.assert_every_client_moved(2);
    // The dead worker's clients found out by their 10 s answer timeout
    // and came back on worker 1's tasks.
    assert!(
        summary.longest_gap < Duration::from_secs(45),
        "a client was gone {:?}",
        summary.longest_gap
    );

    // The drained colour is kept at 0 tasks for the next rollback.
    let green = stack.status_json();
    assert!(task_nodes(&green, "green").is_empty(), "{green}");
    let spec = swarm.docker(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.Mode.Replicated.Replicas}} {{.Spec.EndpointSpec.Mode}}",
        &format!("{}app_green", stack.prefix),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&spec.stdout).trim(),
        "0 dnsrr",
        "{}",
        explain(&spec)
    );

    // The journal is in the cluster: Swarm configs, no volume of the stack
    // on the manager; the lock was let go.
    let history = stack.wsctl_ok(&["history", "--json"]);
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    for action in ["\"deploy\"", "\"rollback\""] {
        assert!(history.contains(action), "{history}");
    }
    let records = configs(&swarm, &format!("{}wsctl_run_", stack.prefix));
    assert_eq!(records.len(), 3, "one record per run: {records:?}");
    assert!(
        configs(&swarm, &format!("{}wsctl_lock", stack.prefix)).is_empty(),
        "the lock is still held"
    );
    let volumes = swarm.docker(&["volume", "ls", "-q"]);
    assert!(
        !String::from_utf8_lossy(&volumes.stdout).contains(&stack.prefix),
        "journal volumes on the manager: {}",
        explain(&volumes)
    );
    // A deploy after the loss works on the remaining worker.
    stack.wsctl_ok(&["deploy"]);
    assert_eq!(stack.status_json()["live"], "green");
}

/// The servers of the upstream in the stack's Nginx on node `node`, sorted.
/// The Nginx image has no shell: `docker cp` takes the file out.
fn upstream_servers_on(swarm: &Swarm, stack: &SwarmStack, node: usize) -> Vec<String> {
    let copy = stack.dir.join(format!("upstream-{node}.conf"));
    let from = format!("{}nginx:/etc/nginx/conf.d/upstream.conf", stack.prefix);
    let output = swarm.docker_on(node, &["cp", &from, &copy.to_string_lossy()]);
    assert!(output.status.success(), "{}", explain(&output));
    let text = std::fs::read_to_string(&copy).unwrap_or_default();
    let mut servers: Vec<String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("server "))
        .map(|rest| rest.trim_end_matches(';').to_string())
        .collect();
    servers.sort();
    servers
}

/// Every `--json` event of a run's stdout.
fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The service exists on the manager.
fn service_exists(swarm: &Swarm, name: &str) -> bool {
    swarm.docker(&["service", "inspect", name]).status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_over_task_addresses_and_a_sigterm_are_undone_on_swarm() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let swarm = Swarm::start(3);
    let stack = SwarmStack::new(&swarm, ON_THE_WORKERS);
    stack.wsctl_ok(&["deploy"]);
    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, 20);
    let green = format!("{}app_green", stack.prefix);

    // A green that refuses every message beyond one a second: the canary
    // (weights over the four task addresses) fails its analysis.
    let mut run = stack.spawn(&[
        "deploy",
        "--canary",
        "50",
        "--analysis",
        "20",
        "--env",
        "RATE_LIMIT=1",
    ]);
    assert!(
        run.wait_for(|event| event["event"] == "reload"),
        "no reload: {:?}",
        run.seen
    );
    let weights = stack.status_json()["weights"].clone();
    assert_eq!(weights["green"], 50.0, "{weights}");
    let breach = LiveClients::start(&url, 20);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    assert_eq!(code, Some(10), "{stdout}\n{stderr}");
    let all = events(&stdout);
    let summary = all
        .iter()
        .find(|event| event["event"] == "deploy")
        .expect("summary");
    assert_eq!(summary["outcome"], "aborted", "{summary}");
    assert_eq!(summary["traffic"], "blue", "{summary}");
    breach.finish().await;
    assert!(
        !service_exists(&swarm, &green),
        "the canary's service stayed"
    );
    assert!(stack.status_json()["weights"].is_null());

    // SIGTERM while the new colour's tasks start: undone, traffic where
    // it was, the lock free.
    let mut run = stack.spawn(&["deploy"]);
    assert!(
        run.wait_for_step("health"),
        "no health step: {:?}",
        run.seen
    );
    run.signal("TERM");
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    assert_eq!(code, Some(143), "{stdout}\n{stderr}");
    let colours = greeting_colours(&url, 20).await;
    assert!(
        colours.iter().all(|colour| colour == "blue"),
        "new connections after the interrupt: {colours:?}"
    );
    assert!(
        configs(&swarm, &format!("{}wsctl_lock", stack.prefix)).is_empty(),
        "the lock is still held"
    );
    assert!(
        !service_exists(&swarm, &green),
        "the interrupted service stayed"
    );
    let status = stack.status_json();
    assert_eq!(status["history"][0]["outcome"], "interrupted", "{status}");
    let summary = clients.finish().await;
    println!(
        "swarm canary + SIGTERM: 20 clients, {} messages, {} reconnects",
        summary.messages, summary.reconnects
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_switch_together_and_one_failing_its_switch_sends_the_other_back() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // Two managers, each with an edge: the manager's own and `two`.
    let swarm = Swarm::start(2);
    swarm.promote(1);
    let two_public = format!("{}:18080", swarm.addresses[1]);
    let stack = SwarmStack::new(
        &swarm,
        &format!(
            "swarm:\n  edges:\n    - {{name: two, docker_host: \"{}\", public_address: \"{two_public}\"}}\n",
            swarm.nodes[1]
        ),
    );
    let nginx = format!("{}nginx", stack.prefix);
    stack.wsctl_ok(&["deploy"]);
    let edge_two = |status: &serde_json::Value| status["serving"]["edges"][0].clone();
    let status = stack.status_json();
    assert_eq!(edge_two(&status)["name"], "two", "{status}");
    assert_eq!(edge_two(&status)["loaded"], "blue", "{status}");
    let one_url = format!("ws://{}/ws/chat/", stack.public);
    let two_url = format!("ws://{two_public}/ws/chat/");
    let clients_one = LiveClients::start(&one_url, 10);
    let clients_two = LiveClients::start(&two_url, 10);

    // A deploy switches both edges.
    let output = stack.wsctl_while_live(&["deploy"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    for url in [&one_url, &two_url] {
        let colours = greeting_colours(url, 10).await;
        assert!(colours.iter().all(|c| c == "green"), "{url}: {colours:?}");
    }

    // Edge two fails its switch: its Nginx is paused while blue's tasks
    // are smoke-tested (from the checker on the manager, not through
    // Nginx). The manager's edge had switched and is sent back.
    let mut run = stack.spawn(&["deploy"]);
    assert!(run.wait_for_step("smoke"), "no smoke step: {:?}", run.seen);
    let paused = swarm.docker_on(1, &["pause", &nginx]);
    assert!(paused.status.success(), "{}", explain(&paused));
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    // The manager's edge serves green again before edge two is unpaused.
    let colours = greeting_colours(&one_url, 10).await;
    let unpaused = swarm.docker_on(1, &["unpause", &nginx]);
    assert!(unpaused.status.success(), "{}", explain(&unpaused));
    assert!(colours.iter().all(|c| c == "green"), "{colours:?}");
    assert!(
        matches!(code, Some(5) | Some(9)),
        "exit {code:?}: {stdout}\n{stderr}"
    );
    let report = events(&stdout)
        .into_iter()
        .find(|event| event["event"] == "edges")
        .unwrap_or_else(|| panic!("no edges report: {stdout}\n{stderr}"));
    println!("failed switch on edge two, exit {code:?}: {report}");
    assert_eq!(report["failed"], "two", "{report}");
    assert_eq!(report["edges"][0]["edge"], "manager", "{report}");
    assert_eq!(report["edges"][0]["outcome"], "switched_back", "{report}");
    assert_eq!(report["edges"][1]["edge"], "two", "{report}");
    assert_ne!(report["edges"][1]["outcome"], "switched_back", "{report}");

    // Whatever edge two was left with, `recover` puts both on green.
    if code == Some(9) {
        stack.wsctl_ok(&["recover"]);
    }
    let status = stack.status_json();
    assert_eq!(status["live"], "green", "{status}");
    assert!(status["disagreement"].is_null(), "{status}");
    assert_eq!(edge_two(&status)["loaded"], "green", "{status}");
    for url in [&one_url, &two_url] {
        let colours = greeting_colours(url, 10).await;
        assert!(colours.iter().all(|c| c == "green"), "{url}: {colours:?}");
    }
    // A task dies: Swarm replaces it (another address) and each edge's
    // follower, on its own node, rewrites its own upstream.
    let running = |status: &serde_json::Value| -> Vec<(String, String)> {
        status["colors"]["green"]["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|task| task["state"] == "running")
            .filter_map(|task| {
                Some((
                    task["node"].as_str()?.to_string(),
                    format!("{}:8000", task["address"].as_str()?),
                ))
            })
            .collect()
    };
    let before = running(&stack.status_json());
    let (node, old_address) = before.first().cloned().expect("a running green task");
    let n = usize::from(node.ends_with("n1"));
    let task = swarm.docker_on(
        n,
        &[
            "ps",
            "-q",
            "--filter",
            &format!("name={}app_green", stack.prefix),
        ],
    );
    let id = String::from_utf8_lossy(&task.stdout).trim().to_string();
    assert!(
        !id.is_empty(),
        "no green task on {node}: {}",
        explain(&task)
    );
    let killed = swarm.docker_on(n, &["kill", &id]);
    assert!(killed.status.success(), "{}", explain(&killed));
    let servers_on = |node: usize| upstream_servers_on(&swarm, &stack, node);
    let since = std::time::Instant::now();
    loop {
        let mut wanted: Vec<String> = running(&stack.status_json())
            .into_iter()
            .map(|(_, address)| address)
            .collect();
        wanted.sort();
        let (one, two) = (servers_on(0), servers_on(1));
        if !wanted.is_empty() && !wanted.contains(&old_address) && one == wanted && two == wanted {
            println!(
                "both edges followed the replaced task in {:?}",
                since.elapsed()
            );
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the edges did not follow: tasks {wanted:?}, manager {one:?}, two {two:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Both edges' clients kept their counts through it all.
    for (edge, clients) in [("manager", clients_one), ("two", clients_two)] {
        let summary = clients.finish().await;
        println!(
            "edge {edge}: {} messages, {} reconnects",
            summary.messages, summary.reconnects
        );
    }
    // `down` takes edge two's Nginx and follower too.
    stack.wsctl_ok(&["down", "--yes"]);
    for name in [nginx, format!("{}checker", stack.prefix)] {
        let left = swarm.docker_on(1, &["inspect", &name]);
        assert!(!left.status.success(), "{name} left on edge two");
    }
}

#[tokio::test]
async fn a_lock_held_in_the_cluster_refuses_a_second_deploy() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let swarm = Swarm::start(2);
    let stack = SwarmStack::new(&swarm, "");
    stack.wsctl_ok(&["lock", "acquire", "-m", "release freeze"]);
    let held = configs(&swarm, &format!("{}wsctl_lock", stack.prefix));
    assert_eq!(held.len(), 1, "{held:?}");
    let refused = stack.wsctl(&["deploy"]);
    assert_eq!(refused.status.code(), Some(7), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("release freeze"),
        "{}",
        explain(&refused)
    );
    let services = swarm.docker(&["service", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&services.stdout).trim().is_empty(),
        "a refused deploy created a service: {}",
        explain(&services)
    );
    stack.wsctl_ok(&["lock", "release"]);
    assert!(configs(&swarm, &format!("{}wsctl_lock", stack.prefix)).is_empty());
}

#[tokio::test]
async fn platform_swarm_on_an_engine_that_is_no_manager_is_refused_in_one_line() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "wsctl-noswarm-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = format!("n{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    std::fs::write(
        dir.join("wsctl.yaml"),
        format!("platform: swarm\nprefix: \"{prefix}\"\npublic_address: \"127.0.0.1:1\"\n"),
    )
    .unwrap();
    let refused = common::wsctl()
        .args(["deploy", "--config"])
        .arg(dir.join("wsctl.yaml"))
        .output()
        .expect("wsctl");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(refused.status.code(), Some(2), "{}", explain(&refused));
    let text = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        text.contains("not a swarm manager") && text.contains("docker swarm init"),
        "{text}"
    );
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={prefix}")])
        .output()
        .expect("docker ps");
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty());
}
