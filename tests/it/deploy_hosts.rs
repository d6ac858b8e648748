//! A stack on two Docker hosts: this machine's engine and a second engine
//! beside it (`scripts/second-engine.sh`), sharing one Redis on the host
//! that each host's containers reach through their own network's gateway.
//! wsctl reaches the second engine over TCP with TLS client certificates.
//! Live clients on both public addresses ride a deploy and a rollback; then
//! host two fails its switch (its Nginx paused) and host one switches back.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip, explain};
use common::live::LiveClients;
use common::redis::RedisServer;
use common::second_engine::{SecondEngine, create_network, free_port};

const CLIENTS_PER_HOST: usize = 50;

/// Each host's live colour from `status --json`.
fn lives(stack: &TestStack) -> Vec<(String, serde_json::Value)> {
    let status = stack.status_json();
    status["hosts"]
        .as_array()
        .expect("hosts in status")
        .iter()
        .map(|host| {
            (
                host["host"].as_str().unwrap_or("").to_string(),
                host["live"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_deploy_together_and_switch_back_together() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // The stack's app image is built on engine one, then copied over.
    let stack = TestStack::new("");
    let engine = SecondEngine::start(&format!("{} wsctl-nginx:local", stack.app_image));
    let n = engine.n;
    let network = format!("{}wsctl", stack.prefix);
    // Networks with known subnets, adopted by wsctl as they are; the
    // shared Redis listens on both gateways.
    create_network(&[], &network, &format!("10.216.{n}.0/24"), None);
    create_network(
        &["-H", &engine.socket],
        &network,
        &format!("10.217.{n}.0/24"),
        Some(format!("w2e{n}s")),
    );
    let redis_port = free_port();
    let bind = format!("127.0.0.1 10.216.{n}.1 10.217.{n}.1");
    let redis = RedisServer::start_on(redis_port, 0, &["--bind", &bind, "--protected-mode", "no"]);
    let two_public = format!("127.0.0.1:{}", free_port());
    stack.write_config(&format!(
        "drain_timeout: 8\n\
         redis_url: \"redis://10.216.{n}.1:{redis_port}/0\"\n\
         hosts:\n\
         \x20 - {{name: one, docker_host: \"unix:///var/run/docker.sock\", public_address: \"{one}\"}}\n\
         \x20 - {{name: two, docker_host: \"{two}\", tls_verify: true, cert_path: \"{certs}\", \
         public_address: \"{two_public}\", redis_url: \"redis://10.217.{n}.1:{redis_port}/0\"}}\n",
        one = stack.public,
        two = engine.tcp,
        certs = engine.certs,
    ));

    // First deploy: blue on both hosts, no Redis container anywhere.
    stack.wsctl_ok(&["deploy"]);
    assert_eq!(
        lives(&stack),
        [("one".into(), "blue".into()), ("two".into(), "blue".into())]
    );
    let no_redis = Command::new("docker")
        .args(["inspect", &format!("{}redis", stack.prefix)])
        .output()
        .expect("docker inspect");
    assert!(
        !no_redis.status.success(),
        "wsctl started a Redis of its own"
    );

    // Both hosts share the one Redis: a session opened on host one
    // resumes on host two with its count.
    let one_url = format!("ws://{}/ws/chat/", stack.public);
    let two_url = format!("ws://{two_public}/ws/chat/");
    {
        let (mut ws, _) = tokio_tungstenite::connect_async(&one_url)
            .await
            .expect("host one");
        let greeting = common::recv_json(&mut ws).await;
        let session = common::session_of(&greeting);
        let reply = common::message(&mut ws, serde_json::json!("a")).await;
        assert_eq!(reply["count"], 1, "{reply}");
        drop(ws);
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("{two_url}?session_uuid={session}"))
                .await
                .expect("host two");
        let greeting = common::recv_json(&mut ws).await;
        assert_eq!(greeting["resumed"], true, "{greeting}");
        let reply = common::message(&mut ws, serde_json::json!("b")).await;
        assert_eq!(reply["count"], 2, "{reply}");
    }
    assert!(redis.cli(&["dbsize"]).trim().parse::<u64>().unwrap_or(0) > 0);

    // Deploy and rollback under 50 clients on each host.
    let clients_one = LiveClients::start(&one_url, CLIENTS_PER_HOST);
    let clients_two = LiveClients::start(&two_url, CLIENTS_PER_HOST);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (args, colour) in [
        (&["deploy", "--json"][..], "green"),
        (&["rollback", "--json"][..], "blue"),
    ] {
        let output = stack.wsctl_while_live(args).await;
        assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
        let report = hosts_event(&output);
        for host in report["hosts"].as_array().expect("hosts") {
            assert_eq!(host["outcome"], "succeeded", "{report}");
            assert_eq!(host["traffic"], colour, "{report}");
        }
        assert_eq!(
            lives(&stack),
            [("one".into(), colour.into()), ("two".into(), colour.into())]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Host two fails its switch: its Nginx is paused while its green is
    // smoke-tested (the smoke runs inside the container, not through
    // Nginx). Host one switches, is sent back, and retires green.
    let mut run = stack.spawn(&["deploy"]);
    let reached = run.wait_for(|event| {
        event["host"] == "two" && event["step"] == "smoke" && event["status"] == "started"
    });
    assert!(reached, "host two never reached its smoke: {:?}", run.seen);
    let paused = engine.docker(&["pause", &format!("{}nginx", stack.prefix)]);
    assert!(paused.status.success(), "{}", explain(&paused));
    let paused_at = Instant::now();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy finishes");
    let unpaused = engine.docker(&["unpause", &format!("{}nginx", stack.prefix)]);
    assert!(unpaused.status.success(), "{}", explain(&unpaused));
    println!(
        "host two paused {:?} before the deploy ended",
        paused_at.elapsed()
    );
    assert_ne!(code, Some(0), "{stdout}\n{stderr}");
    let report = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "hosts")
        .unwrap_or_else(|| panic!("no hosts report: {stdout}\n{stderr}"));
    println!("failed switch, exit {code:?}: {report}");
    let hosts = report["hosts"].as_array().expect("hosts");
    assert_eq!(hosts[0]["host"], "one");
    assert_eq!(hosts[0]["outcome"], "failed", "{report}");
    assert_eq!(hosts[0]["traffic"], "blue", "{report}");
    assert!(
        hosts[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("host two failed to switch"),
        "{report}"
    );
    assert_eq!(hosts[1]["host"], "two");
    assert_ne!(hosts[1]["outcome"], "succeeded", "{report}");
    // Host one is back on blue, and its green is gone.
    let one = stack.public_status().await;
    assert_eq!(one["color"], "blue", "{one}");
    let green = Command::new("docker")
        .args(["inspect", &format!("{}app_green", stack.prefix)])
        .output()
        .expect("docker inspect");
    assert!(!green.status.success(), "host one's green was not removed");

    // Whatever host two was left with, `recover` brings it back to blue.
    if hosts[1]["outcome"] == "needs_recover" {
        assert_eq!(code, Some(9), "{report}");
        let recovered = stack.wsctl(&["recover"]);
        assert_eq!(recovered.status.code(), Some(0), "{}", explain(&recovered));
    }
    assert_eq!(
        lives(&stack),
        [("one".into(), "blue".into()), ("two".into(), "blue".into())]
    );

    // Hosts that disagree (host one deployed on its own with --host): a
    // deploy refuses and names each host's colour; a rollback of host one
    // brings them together.
    let one_alone = stack.wsctl_while_live(&["deploy", "--host", "one"]).await;
    assert_eq!(one_alone.status.code(), Some(0), "{}", explain(&one_alone));
    let refused = stack.wsctl(&["deploy"]);
    assert_eq!(refused.status.code(), Some(2), "{}", explain(&refused));
    assert!(
        explain(&refused).contains("one green, two blue"),
        "{}",
        explain(&refused)
    );
    let unknown = stack.wsctl(&["status", "--host", "three"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", explain(&unknown));
    assert!(
        explain(&unknown).contains("--host three: not a host"),
        "{}",
        explain(&unknown)
    );
    let together = stack.wsctl_while_live(&["rollback", "--host", "one"]).await;
    assert_eq!(together.status.code(), Some(0), "{}", explain(&together));
    assert_eq!(
        lives(&stack),
        [("one".into(), "blue".into()), ("two".into(), "blue".into())]
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, clients) in [("one", clients_one), ("two", clients_two)] {
        let summary = clients.finish().await;
        println!(
            "host {name}: {CLIENTS_PER_HOST} clients, {} messages, {} reconnects, longest gap {:?}",
            summary.messages, summary.reconnects, summary.longest_gap
        );
        summary.assert_every_client_moved(2);
    }
    drop(engine);
}

/// The `hosts` report of a `--json` run.
fn hosts_event(output: &std::process::Output) -> serde_json::Value {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "hosts")
        .unwrap_or_else(|| panic!("no hosts report: {}", explain(output)))
}

/// Each step event of a `--json` fleet run: `(host, step, status)`, in
/// the order printed.
fn step_events(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "step")
        .map(|event| {
            let field = |name: &str| event[name].as_str().unwrap_or("").to_string();
            (field("host"), field("step"), field("status"))
        })
        .collect()
}

/// Three hosts with `switch_batch: 2`: this machine's engine, a second
/// engine reached over ssh (a real sshd on a loopback port, a key the test
/// makes) and a third over TCP with TLS. Hosts one and two switch together;
/// host three, in the second batch, fails its switch (its Nginx paused), and
/// the first batch switches back: every host ends on blue, no client of the
/// first batch lost a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_switch_two_at_a_time_and_the_first_batch_goes_back_when_the_second_fails() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let images = format!("{} wsctl-nginx:local", stack.app_image);
    let over_ssh = SecondEngine::start(&images);
    let over_tls = SecondEngine::start(&images);
    let sshd = common::sshd::Sshd::start(&over_ssh.socket);
    let (a, b) = (over_ssh.n, over_tls.n);
    let network = format!("{}wsctl", stack.prefix);
    create_network(&[], &network, &format!("10.216.{a}.0/24"), None);
    for engine in [&over_ssh, &over_tls] {
        create_network(
            &["-H", &engine.socket],
            &network,
            &format!("10.217.{}.0/24", engine.n),
            Some(format!("w2e{}s", engine.n)),
        );
    }
    let redis_port = free_port();
    let bind = format!("127.0.0.1 10.216.{a}.1 10.217.{a}.1 10.217.{b}.1");
    let _redis = RedisServer::start_on(redis_port, 0, &["--bind", &bind, "--protected-mode", "no"]);
    let two_public = format!("127.0.0.1:{}", free_port());
    let three_public = format!("127.0.0.1:{}", free_port());
    stack.write_config(&format!(
        "drain_timeout: 8\n\
         switch_batch: 2\n\
         redis_url: \"redis://10.216.{a}.1:{redis_port}/0\"\n\
         hosts:\n\
         \x20 - {{name: one, docker_host: \"unix:///var/run/docker.sock\", public_address: \"{one}\"}}\n\
         \x20 - {{name: two, docker_host: \"{ssh}\", ssh_key: \"{key}\", public_address: \"{two_public}\", \
         redis_url: \"redis://10.217.{a}.1:{redis_port}/0\"}}\n\
         \x20 - {{name: three, docker_host: \"{tls}\", tls_verify: true, cert_path: \"{certs}\", \
         public_address: \"{three_public}\", redis_url: \"redis://10.217.{b}.1:{redis_port}/0\"}}\n",
        one = stack.public,
        ssh = sshd.docker_host(),
        key = sshd.key.display(),
        tls = over_tls.tcp,
        certs = over_tls.certs,
    ));

    stack.wsctl_ok(&["deploy"]);
    let all_blue: Vec<(String, serde_json::Value)> = ["one", "two", "three"]
        .iter()
        .map(|host| (host.to_string(), "blue".into()))
        .collect();
    assert_eq!(lives(&stack), all_blue);
    // Host two's containers are on the engine behind sshd.
    let behind_ssh = over_ssh.docker(&["inspect", &format!("{}app_blue", stack.prefix)]);
    assert!(behind_ssh.status.success(), "{}", explain(&behind_ssh));

    let clients_one = LiveClients::start(&format!("ws://{}/ws/chat/", stack.public), 20);
    let clients_two = LiveClients::start(&format!("ws://{two_public}/ws/chat/"), 20);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut run = stack.spawn(&["deploy"]);
    let reached = run.wait_for(|event| {
        event["host"] == "three" && event["step"] == "smoke" && event["status"] == "started"
    });
    assert!(
        reached,
        "host three never reached its smoke: {:?}",
        run.seen
    );
    let paused = over_tls.docker(&["pause", &format!("{}nginx", stack.prefix)]);
    assert!(paused.status.success(), "{}", explain(&paused));
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy finishes");
    let unpaused = over_tls.docker(&["unpause", &format!("{}nginx", stack.prefix)]);
    assert!(unpaused.status.success(), "{}", explain(&unpaused));
    assert_ne!(code, Some(0), "{stdout}\n{stderr}");

    // Hosts one and two switched together, host three only after both.
    let steps = step_events(&stdout);
    let at = |host: &str, status: &str| {
        steps
            .iter()
            .position(|(h, step, s)| h == host && step == "switch" && s == status)
            .unwrap_or_else(|| panic!("no {status} switch on host {host}: {steps:?}"))
    };
    let (one_started, one_done) = (at("one", "started"), at("one", "ok"));
    let (two_started, two_done) = (at("two", "started"), at("two", "ok"));
    assert!(
        one_started < two_done && two_started < one_done,
        "hosts one and two did not switch at the same time: {steps:?}"
    );
    let three_started = at("three", "started");
    assert!(
        three_started > one_done && three_started > two_done,
        "host three switched before the first batch was done: {steps:?}"
    );

    let report = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "hosts")
        .unwrap_or_else(|| panic!("no hosts report: {stdout}\n{stderr}"));
    println!("second batch failed, exit {code:?}: {report}");
    let hosts = report["hosts"].as_array().expect("hosts");
    for host in &hosts[..2] {
        assert_eq!(host["outcome"], "failed", "{report}");
        assert_eq!(host["traffic"], "blue", "{report}");
        assert!(
            host["detail"]
                .as_str()
                .unwrap_or("")
                .contains("host three failed to switch"),
            "{report}"
        );
    }
    assert_ne!(hosts[2]["outcome"], "succeeded", "{report}");
    if hosts[2]["outcome"] == "needs_recover" {
        assert_eq!(code, Some(9), "{report}");
        let recovered = stack.wsctl(&["recover"]);
        assert_eq!(recovered.status.code(), Some(0), "{}", explain(&recovered));
    }
    assert_eq!(lives(&stack), all_blue);
    // The first batch's greens are gone, on both engines.
    let green = format!("{}app_green", stack.prefix);
    let local = Command::new("docker")
        .args(["inspect", &green])
        .output()
        .expect("docker inspect");
    assert!(!local.status.success(), "host one's green was not removed");
    assert!(
        !over_ssh.docker(&["inspect", &green]).status.success(),
        "host two's green was not removed"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    for (name, clients) in [("one", clients_one), ("two", clients_two)] {
        let summary = clients.finish().await;
        println!(
            "host {name}: 20 clients, {} messages, {} reconnects, longest gap {:?}",
            summary.messages, summary.reconnects, summary.longest_gap
        );
    }
    drop(sshd);
}
