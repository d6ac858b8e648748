//! `platform: swarm` on a real three-node Swarm (scripts/swarm.sh): each
//! colour a service with tasks on both workers, Nginx, Redis and the
//! checker on the manager, the journal and the lock as Swarm configs.

use crate::common;

use std::time::Duration;

use common::certs::{Certs, served_serial};
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

/// The `address:8000` of each running task of `color` in `status`, sorted
/// (as an upstream lists its servers).
fn task_addresses(status: &serde_json::Value, color: &str) -> Vec<String> {
    let mut addresses: Vec<String> = status["colors"][color]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["state"] == "running")
        .filter_map(|task| Some(format!("{}:8000", task["address"].as_str()?)))
        .collect();
    addresses.sort();
    addresses
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
    // Each running task's version, from its own /status.
    let versions: Vec<&serde_json::Value> = status["colors"]["blue"]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["state"] == "running")
        .map(|task| &task["version"])
        .collect();
    assert_eq!(versions.len(), 2, "{status}");
    assert!(
        versions
            .iter()
            .all(|version| *version == env!("CARGO_PKG_VERSION")),
        "{status}"
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
        let addresses = task_addresses(&status, "blue");
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
    // It failed on what green does (refusing messages), not on how the
    // analysis found its tasks.
    common::assert_analysis_failed_on(&all, "rate_limited");
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
async fn edges_switch_together_send_back_on_a_failed_switch_and_survive_a_lost_edge() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // Three managers (so the cluster keeps its quorum when one dies), each
    // with an edge: the manager's own, `two` and `three`; three tasks per
    // colour, one on each node (Swarm spreads a service's tasks).
    let swarm = Swarm::start(3);
    swarm.promote(1);
    swarm.promote(2);
    let public_of = |node: usize| format!("{}:18080", swarm.addresses[node]);
    let edge_line = |name: &str, node: usize| {
        format!(
            "    - {{name: {name}, docker_host: \"{}\", public_address: \"{}\"}}\n",
            swarm.nodes[node],
            public_of(node)
        )
    };
    let edges_yaml = |edges: &[(&str, usize)]| {
        let lines: String = edges
            .iter()
            .map(|(name, node)| edge_line(name, *node))
            .collect();
        format!("replicas: 3\nswarm:\n  edges:\n{lines}")
    };
    let stack = SwarmStack::new(&swarm, &edges_yaml(&[("two", 1), ("three", 2)]));
    let nginx = format!("{}nginx", stack.prefix);
    stack.wsctl_ok(&["deploy"]);
    let edge = |status: &serde_json::Value, index: usize| status["serving"]["edges"][index].clone();
    let status = stack.status_json();
    for (index, name) in [(0, "two"), (1, "three")] {
        assert_eq!(edge(&status, index)["name"], name, "{status}");
        assert_eq!(edge(&status, index)["loaded"], "blue", "{status}");
    }
    let one_url = format!("ws://{}/ws/chat/", stack.public);
    let two_url = format!("ws://{}/ws/chat/", public_of(1));
    let three_url = format!("ws://{}/ws/chat/", public_of(2));
    let clients_one = LiveClients::start(&one_url, 10);
    let clients_two = LiveClients::start(&two_url, 10);

    // `deploy --proxy` replaces every edge's Nginx (a new container on each
    // node), the manager's first, each serving blue again before the old
    // ones go; the clients of two edges ride it.
    let nginx_ids = || -> Vec<String> {
        (0..3)
            .map(|node| {
                let id = swarm.docker_on(node, &["inspect", "-f", "{{.Id}}", &nginx]);
                assert!(id.status.success(), "node {node}: {}", explain(&id));
                String::from_utf8_lossy(&id.stdout).trim().to_string()
            })
            .collect()
    };
    let before = nginx_ids();
    let output = stack.wsctl_while_live(&["deploy", "--proxy"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    let after = nginx_ids();
    for node in 0..3 {
        assert_ne!(
            before[node], after[node],
            "node {node}'s Nginx was not replaced"
        );
        let left = swarm.docker_on(node, &["inspect", &format!("{}nginx_old", stack.prefix)]);
        assert!(!left.status.success(), "node {node} kept its old Nginx");
    }
    for url in [&one_url, &two_url, &three_url] {
        let colours = greeting_colours(url, 10).await;
        assert!(
            !colours.is_empty() && colours.iter().all(|c| c == "blue"),
            "{url}: {colours:?}"
        );
    }

    // A deploy switches every edge.
    let output = stack.wsctl_while_live(&["deploy"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    for url in [&one_url, &two_url, &three_url] {
        let colours = greeting_colours(url, 10).await;
        assert!(colours.iter().all(|c| c == "green"), "{url}: {colours:?}");
    }

    // Edge two fails its switch: its Nginx is paused while blue's tasks
    // are smoke-tested (from the checker on the manager, not through
    // Nginx). The manager's edge had switched and is sent back; edge
    // three, after it, is never touched.
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
    assert_eq!(report["edges"][2]["edge"], "three", "{report}");
    assert_eq!(report["edges"][2]["outcome"], "untouched", "{report}");

    // Whatever edge two was left with, `recover` puts every edge on green.
    if code == Some(9) {
        stack.wsctl_ok(&["recover"]);
    }
    let status = stack.status_json();
    assert_eq!(status["live"], "green", "{status}");
    assert!(status["disagreement"].is_null(), "{status}");
    assert_eq!(edge(&status, 0)["loaded"], "green", "{status}");
    for url in [&one_url, &two_url, &three_url] {
        let colours = greeting_colours(url, 10).await;
        assert!(colours.iter().all(|c| c == "green"), "{url}: {colours:?}");
    }
    // The running green tasks as (node index, address:port), from status.
    let running = |status: &serde_json::Value| -> Vec<(usize, String)> {
        status["colors"]["green"]["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|task| task["state"] == "running")
            .filter_map(|task| {
                let node = task["node"].as_str()?;
                let index = node.rsplit_once('n')?.1.parse().ok()?;
                Some((index, format!("{}:8000", task["address"].as_str()?)))
            })
            .collect()
    };
    let servers_on = |node: usize| upstream_servers_on(&swarm, &stack, node);
    // Every edge of `nodes` lists exactly the running green tasks, none of
    // `gone`; waits up to 90 s and says how long it took.
    let edges_follow = async |nodes: &[usize], gone: &[String]| {
        let since = std::time::Instant::now();
        loop {
            let mut wanted: Vec<String> = running(&stack.status_json())
                .into_iter()
                .map(|(_, address)| address)
                .collect();
            wanted.sort();
            let listed: Vec<Vec<String>> = nodes.iter().map(|node| servers_on(*node)).collect();
            if wanted.len() == 3
                && !gone.iter().any(|address| wanted.contains(address))
                && listed.iter().all(|servers| *servers == wanted)
            {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(90),
                "the edges did not follow: tasks {wanted:?}, edges {listed:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };

    // A task dies: Swarm replaces it (another address) and each edge's
    // follower, on its own node, rewrites its own upstream.
    let (node, old_address) = running(&stack.status_json())
        .first()
        .cloned()
        .expect("a running green task");
    let task = swarm.docker_on(
        node,
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
        "no green task on node {node}: {}",
        explain(&task)
    );
    let killed = swarm.docker_on(node, &["kill", &id]);
    assert!(killed.status.success(), "{}", explain(&killed));
    let took = edges_follow(&[0, 1, 2], &[old_address]).await;
    println!("every edge followed the replaced task in {took:?}");

    // Edge three's node dies with its tasks. The other edges keep serving
    // and follow the tasks Swarm starts elsewhere; status names the lost
    // edge; what would change the edges refuses, naming it, and changes
    // nothing.
    let on_three: Vec<String> = running(&stack.status_json())
        .into_iter()
        .filter(|(node, _)| *node == 2)
        .map(|(_, address)| address)
        .collect();
    swarm.kill_node(2);
    let took = edges_follow(&[0, 1], &on_three).await;
    assert!(!on_three.is_empty(), "no green task on edge three's node");
    println!("edge three lost with its green task: the other edges on live tasks after {took:?}");
    let status = stack.status_json();
    assert_eq!(status["live"], "green", "{status}");
    assert!(status["disagreement"].is_null(), "{status}");
    assert_eq!(edge(&status, 1)["name"], "three", "{status}");
    assert!(edge(&status, 1)["unreachable"].is_string(), "{status}");
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains("swarm edge three is unreachable"),
        "{status}"
    );
    for command in [&["deploy"][..], &["down", "--yes"][..]] {
        let refused = stack.wsctl(command);
        assert_eq!(refused.status.code(), Some(2), "{}", explain(&refused));
        assert!(
            explain(&refused).contains("swarm edge three is unreachable"),
            "{}",
            explain(&refused)
        );
    }
    assert!(
        !service_exists(&swarm, &format!("{}app_blue", stack.prefix))
            || swarm_replicas(&swarm, &format!("{}app_blue", stack.prefix)) == 0,
        "a refused deploy started blue"
    );
    for url in [&one_url, &two_url] {
        let colours = greeting_colours(url, 10).await;
        assert!(colours.iter().all(|c| c == "green"), "{url}: {colours:?}");
    }

    // Every client of the live edges kept its count through it all.
    for (edge, clients) in [("manager", clients_one), ("two", clients_two)] {
        let summary = clients.finish().await;
        println!(
            "edge {edge}: {} messages, {} reconnects",
            summary.messages, summary.reconnects
        );
    }
    // Left out of swarm.edges, the lost edge no longer stops a run: a
    // rollback takes the other edges to blue, and green is drained.
    stack.rewrite_extra(&edges_yaml(&[("two", 1)]));
    stack.wsctl_ok(&["rollback"]);
    for url in [&one_url, &two_url] {
        let colours = greeting_colours(url, 10).await;
        assert!(
            !colours.is_empty() && colours.iter().all(|c| c == "blue"),
            "{url}: {colours:?}"
        );
    }
    // Edge three's node boots again, its Nginx with the green upstream it
    // had. Its follower reads the live colour from the cluster's journal
    // and switches its edge to blue's tasks, with no command run.
    swarm.revive_node(2);
    // The engine restarts its containers in its own time (5 s to over a
    // minute here, slower when the machine is busy): that wait is
    // Docker's. From the moment both run, the follower's is measured.
    let booted = std::time::Instant::now();
    let running_on_three = |name: &str| {
        let state = swarm.docker_on(2, &["inspect", "-f", "{{.State.Running}}", name]);
        String::from_utf8_lossy(&state.stdout).trim() == "true"
    };
    let checker = format!("{}checker", stack.prefix);
    while !(running_on_three(&nginx) && running_on_three(&checker)) {
        assert!(
            booted.elapsed() < Duration::from_secs(180),
            "edge three's Nginx and follower did not run again within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let restarted = booted.elapsed();
    // The follower's part: its edge's upstream is blue's running tasks.
    let since = std::time::Instant::now();
    loop {
        let wanted = task_addresses(&stack.status_json(), "blue");
        let listed = upstream_servers_on(&swarm, &stack, 2);
        if !wanted.is_empty() && listed == wanted {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the revived edge did not follow the journal to blue: tasks {wanted:?}, its \
             upstream {listed:?}\n{}",
            explain(&swarm.docker_on(2, &["logs", "--tail", "30", &checker]))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let followed = since.elapsed();
    // Through its public address, once the engine has its overlay paths to
    // the tasks back (Docker's own time again: 5 to 70 s here).
    let since = std::time::Instant::now();
    loop {
        let colours = greeting_colours(&three_url, 3).await;
        if colours.len() == 3 && colours.iter().all(|c| c == "blue") {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(180),
            "the revived edge lists blue's tasks but does not serve them: {colours:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "edge three's node booted again: its Nginx and follower ran {restarted:?} after its \
         engine answered, its upstream listed blue's tasks {followed:?} later, and it served \
         blue {:?} after that",
        since.elapsed()
    );
    // Back in swarm.edges, every edge agrees, and `down` takes all three.
    stack.rewrite_extra(&edges_yaml(&[("two", 1), ("three", 2)]));
    let status = stack.status_json();
    assert_eq!(status["live"], "blue", "{status}");
    assert!(status["disagreement"].is_null(), "{status}");
    assert_eq!(edge(&status, 1)["loaded"], "blue", "{status}");

    // `tls:` turned on changes every edge's ports: a run refuses until
    // `deploy --proxy` has replaced every edge's Nginx, which then serves
    // the certificate; `tls reload` rotates it on every edge.
    let certs = Certs::new();
    let key = certs.key("edges");
    let first = certs.certificate("first", &key, "1001", None);
    let second = certs.certificate("second", &key, "1002", None);
    let with_tls = |certificate: &std::path::Path| {
        format!(
            "{}tls: {{certificate: \"{}\", key: \"{}\"}}\n",
            edges_yaml(&[("two", 1), ("three", 2)]),
            certificate.display(),
            key.display()
        )
    };
    stack.rewrite_extra(&with_tls(&first));
    let refused = stack.wsctl(&["deploy"]);
    assert_eq!(refused.status.code(), Some(2), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("deploy --proxy"),
        "{}",
        explain(&refused)
    );
    stack.wsctl_ok(&["deploy", "--proxy"]);
    for node in 0..3 {
        assert_eq!(
            served_serial(&public_of(node)),
            "1001",
            "edge on node {node}"
        );
    }
    stack.rewrite_extra(&with_tls(&second));
    stack.wsctl_ok(&["tls", "reload"]);
    for node in 0..3 {
        assert_eq!(
            served_serial(&public_of(node)),
            "1002",
            "edge on node {node}"
        );
    }
    stack.wsctl_ok(&["down", "--yes"]);
    for node in [1, 2] {
        for name in [nginx.clone(), format!("{}checker", stack.prefix)] {
            let left = swarm.docker_on(node, &["inspect", &name]);
            assert!(!left.status.success(), "{name} left on node {node}");
        }
    }
}

/// The replicas the service's spec asks for.
fn swarm_replicas(swarm: &Swarm, service: &str) -> u64 {
    let output = swarm.docker(&[
        "service",
        "inspect",
        service,
        "--format",
        "{{.Spec.Mode.Replicated.Replicas}}",
    ]);
    assert!(output.status.success(), "{}", explain(&output));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("replicas of {service}: {}", explain(&output)))
}

/// Every `--json` line of `wsctl ARGS` that is a JSON object.
fn json_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    events(&String::from_utf8_lossy(&output.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_and_every_traffic_command_work_in_the_cluster() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let swarm = Swarm::start(2);
    // No old Nginx worker may stay: each reload that leaves one with
    // clients has them moved, on Swarm by the checker over the overlay.
    // Two tasks a colour, one on each node.
    let stack = SwarmStack::new(&swarm, "replicas: 2\nnginx:\n  max_old_workers: 0\n");
    let (blue, green) = (
        format!("{}app_blue", stack.prefix),
        format!("{}app_green", stack.prefix),
    );
    // A lock held in the cluster refuses a deploy, which makes nothing.
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

    let url = format!("ws://{}/ws/chat/", stack.public);
    let all_on = async |colour: &str| {
        let colours = greeting_colours(&url, 10).await;
        assert!(
            colours.iter().all(|c| c == colour),
            "{colours:?}, not {colour}"
        );
    };
    stack.wsctl_ok(&["deploy"]);
    all_on("blue").await;

    // deploy --no-switch, smoke of the paused colour's tasks, promote.
    stack.wsctl_ok(&["deploy", "--no-switch"]);
    all_on("blue").await;
    let smoke = stack.wsctl_ok(&["smoke", "--color", "green", "--json"]);
    let summary = json_lines(&smoke)
        .into_iter()
        .find(|line| line["event"] == "smoke")
        .unwrap_or_else(|| panic!("no smoke summary: {}", explain(&smoke)));
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["checks"].as_u64() >= Some(5), "{summary}");
    stack.wsctl_ok(&["promote"]);
    all_on("green").await;
    // The drained colour's tasks are gone: its smoke names that.
    let no_task = stack.wsctl(&["smoke", "--color", "blue"]);
    assert_eq!(no_task.status.code(), Some(1), "{}", explain(&no_task));
    assert!(
        explain(&no_task).contains("no task runs"),
        "{}",
        explain(&no_task)
    );
    // A switch to it is refused and changes nothing.
    let switch = stack.wsctl(&["switch", "--color", "blue"]);
    assert_eq!(switch.status.code(), Some(3), "{}", explain(&switch));
    all_on("green").await;

    // deploy --no-switch, then abort: the paused colour's service goes.
    stack.wsctl_ok(&["deploy", "--no-switch"]);
    assert!(service_exists(&swarm, &blue));
    stack.wsctl_ok(&["abort"]);
    assert!(!service_exists(&swarm, &blue), "abort left {blue}");
    all_on("green").await;

    // A canary with --watch, under clients that arrive once its weights
    // are loaded: its analysis reads the tasks' metrics and passes.
    let mut run = stack.spawn(&[
        "deploy",
        "--canary",
        "50",
        "--analysis",
        "10",
        "--watch",
        "5",
    ]);
    assert!(
        run.wait_for(|event| event["event"] == "reload"),
        "no reload: {:?}",
        run.seen
    );
    let clients = LiveClients::start(&url, 10);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let samples: Vec<serde_json::Value> = events(&stdout)
        .into_iter()
        .filter(|event| event["event"] == "analysis")
        .collect();
    let canary_ok = samples
        .iter()
        .any(|sample| sample["percent"] == 50 && sample["verdict"] == "ok");
    let watch_ok = samples
        .iter()
        .any(|sample| sample["percent"] == 100 && sample["verdict"] == "ok");
    assert!(canary_ok && watch_ok, "{samples:?}");
    // The switch's reload left the clients on old workers: moved.
    let moved = events(&stdout)
        .into_iter()
        .any(|event| event["event"] == "reload" && event["moved"] == true);
    assert!(moved, "no reload moved the clients: {stdout}");
    all_on("blue").await;

    // rollback scales green back up and moves the clients to it.
    stack.wsctl_ok(&["rollback"]);
    all_on("green").await;
    // A green task dies: the follower's reload leaves the clients of the
    // other on old workers, and it has them moved too.
    let task = swarm.docker_on(1, &["ps", "-q", "--filter", &format!("name={green}")]);
    let (node, id) = match String::from_utf8_lossy(&task.stdout).trim() {
        "" => {
            let task = swarm.docker(&["ps", "-q", "--filter", &format!("name={green}")]);
            (0, String::from_utf8_lossy(&task.stdout).trim().to_string())
        }
        id => (1, id.to_string()),
    };
    let killed = swarm.docker_on(node, &["kill", &id]);
    assert!(killed.status.success(), "{}", explain(&killed));
    let checker = format!("{}checker", stack.prefix);
    let since = std::time::Instant::now();
    loop {
        let logs = swarm.docker(&["logs", &checker]);
        let text = String::from_utf8_lossy(&logs.stdout).into_owned();
        let followed = text
            .lines()
            .filter(|line| line.contains("the upstream follows the tasks"))
            .any(|line| line.contains("\"moved\":true"));
        if followed {
            println!("the follower moved the clients in {:?}", since.elapsed());
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the follower moved no clients: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let summary = clients.finish().await;
    println!(
        "swarm commands: {} messages, {} reconnects",
        summary.messages, summary.reconnects
    );

    // logs of the live colour's tasks, history from the cluster, prune.
    let logs = stack.wsctl_ok(&["logs", "--tail", "3", "--json"]);
    let lines = json_lines(&logs);
    assert!(!lines.is_empty(), "{}", explain(&logs));
    assert!(
        lines.iter().all(|line| line["color"] == "green"),
        "{lines:?}"
    );
    let history = stack.wsctl_ok(&["history", "--json"]);
    let history: serde_json::Value =
        serde_json::from_slice(&history.stdout).expect("history --json");
    let outcomes: Vec<String> = history["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|run| {
            Some(format!(
                "{} {}",
                run["action"].as_str()?,
                run["outcome"].as_str()?
            ))
        })
        .collect();
    for expected in [
        "deploy paused",
        "promote succeeded",
        "abort succeeded",
        "rollback succeeded",
    ] {
        assert!(
            outcomes.iter().any(|o| o == expected),
            "{expected}: {outcomes:?}"
        );
    }
    let pruned = stack.wsctl_ok(&["prune", "--keep", "0", "--json"]);
    assert!(
        json_lines(&pruned)
            .iter()
            .any(|line| line["event"] == "prune"),
        "{}",
        explain(&pruned)
    );
    assert!(service_exists(&swarm, &green));
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
