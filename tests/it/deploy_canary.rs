//! Canary deploys on the real Docker Engine and Nginx, under live clients:
//! a healthy canary is promoted step by step with its share of new
//! connections; a canary that answers real traffic badly (`--env
//! RATE_LIMIT=1`, which passes the smoke test) is rolled back by its
//! analysis with exit 10; a SIGTERM during a canary leaves traffic on the
//! old colour. No client loses a message or has one counted twice.

use crate::common;

use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip};
use common::live::{LiveClients, greeting_colours};

/// Events of a finished `--json` run.
fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_promoted_on_good_numbers_and_rolled_back_on_bad_ones() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("drain_timeout: 8\nanalysis: {interval: 1.0, min_messages: 40}\n");
    stack.wsctl_ok(&["deploy"]);
    let url = format!("ws://{}/ws/chat/", stack.public);
    let early = LiveClients::start(&url, 25);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. A healthy canary, 20%, 50%, then the switch: three reloads that
    // keep blue serving for over 80 s (Nginx used to cut the old workers'
    // sockets 30 s after each).
    let mut run = stack.spawn(&["deploy", "--canary-steps", "20,50,100", "--analysis", "40"]);
    assert!(
        run.wait_for_step("canary"),
        "no canary step: {:?}",
        run.seen
    );
    // The weighted upstream is loaded once the step reports its reload
    // (clients that connect before it stay on the old upstream's colour:
    // reloads no longer cut them).
    assert!(
        run.wait_for(|event| event["event"] == "reload"),
        "no reload: {:?}",
        run.seen
    );
    let colours = greeting_colours(&url, 100).await;
    let on_green = colours.iter().filter(|colour| *colour == "green").count();
    println!(
        "canary at 20%: {on_green} of {} new connections on green",
        colours.len()
    );
    assert!((8..=35).contains(&on_green), "{on_green} of 100 on green");
    // status shows the shares while the canary runs.
    let status = stack.status_json();
    assert_eq!(
        status["weights"],
        serde_json::json!({"blue": 80.0, "green": 20.0}),
        "{status}"
    );
    // Clients that arrive during the canary give it traffic to measure.
    let late = LiveClients::start(&url, 25);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let all = events(&stdout);
    let samples: Vec<&serde_json::Value> = all
        .iter()
        .filter(|event| event["event"] == "analysis")
        .collect();
    assert!(
        samples.iter().any(|sample| sample["verdict"] == "ok"),
        "no passing sample: {stdout}"
    );
    assert_eq!(stack.public_status().await["color"], "green");
    assert!(stack.status_json()["weights"].is_null());

    // 2. A blue that fails under real traffic: every message beyond one a
    // second is refused. Its smoke test passes; its analysis does not.
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
        run.wait_for_step("canary"),
        "no canary step: {:?}",
        run.seen
    );
    assert!(
        run.wait_for(|event| event["event"] == "reload"),
        "no reload: {:?}",
        run.seen
    );
    let breach_clients = LiveClients::start(&url, 20);
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    let ended = Instant::now();
    assert_eq!(code, Some(10), "{stdout}\n{stderr}");
    let all = events(&stdout);
    common::assert_analysis_failed_on(&all, "rate_limited");
    let summary = all
        .iter()
        .find(|event| event["event"] == "deploy")
        .expect("summary");
    assert_eq!(summary["outcome"], "aborted", "{summary}");
    assert_eq!(summary["traffic"], "green", "{summary}");
    println!("rolled back: steps {}", summary["steps_ms"]);
    assert_eq!(stack.public_status().await["color"], "green");
    // The record says why.
    let status = stack.status_json();
    let last = &status["history"][0];
    assert_eq!(last["outcome"], "aborted", "{status}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap_or("")
            .contains("analysis failed"),
        "{last}"
    );

    // 3. SIGTERM during a canary: undone, traffic entirely on green.
    let mut run = stack.spawn(&["deploy", "--canary", "30", "--analysis", "60"]);
    assert!(
        run.wait_for_step("canary"),
        "no canary step: {:?}",
        run.seen
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.signal("TERM");
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    assert_eq!(code, Some(143), "{stdout}\n{stderr}");
    let colours = greeting_colours(&url, 20).await;
    assert!(
        colours.iter().all(|colour| colour == "green"),
        "new connections after the interrupt: {colours:?}"
    );
    let status = stack.status_json();
    assert_eq!(status["live"], "green", "{status}");

    // 4. --watch after a full switch: blue (bad again) takes every new
    // connection while green keeps running; the breach switches straight
    // back to green.
    let mut run = stack.spawn(&["deploy", "--watch", "30", "--env", "RATE_LIMIT=1"]);
    assert!(run.wait_for_step("watch"), "no watch step: {:?}", run.seen);
    let watched = LiveClients::start(&url, 10);
    let breach = run.wait_for(|event| event["event"] == "analysis" && event["verdict"] == "failed");
    let seen_at = Instant::now();
    assert!(breach, "no breach seen: {:?}", run.seen);
    let back_after = loop {
        let colours = greeting_colours(&url, 1).await;
        if colours.first().is_some_and(|colour| colour == "green") {
            break seen_at.elapsed();
        }
        assert!(
            seen_at.elapsed() < Duration::from_secs(10),
            "never back on green"
        );
    };
    println!("--watch: new connections back on green {back_after:?} after the breach was seen");
    // Measured well under a second (the closing note of issue 12 has the
    // figure); the bound here only proves the switch-back did not wait for
    // the 30 s watch to end, and leaves room for a loaded CI machine.
    assert!(back_after < Duration::from_secs(5), "{back_after:?}");
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    assert_eq!(code, Some(10), "{stdout}\n{stderr}");
    let summary = events(&stdout)
        .into_iter()
        .find(|event| event["event"] == "deploy")
        .expect("summary");
    assert_eq!(summary["traffic"], "green", "{summary}");

    // Nobody lost a message or had one counted twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (name, clients) in [
        ("early", early),
        ("late", late),
        ("breach", breach_clients),
        ("watched", watched),
    ] {
        let summary = clients.finish().await;
        println!(
            "{name}: {} messages, {} reconnects, {} rate limited, longest gap {:?}, closes {:?}",
            summary.messages,
            summary.reconnects,
            summary.rate_limited,
            summary.longest_gap,
            summary.close_codes
        );
        // Every move was a goodbye and 1001 (drains, undos), never a cut.
        assert_eq!(summary.abnormal_closes, 0, "{name}: {summary:?}");
        assert!(
            summary.close_codes.keys().all(|code| *code == 1001),
            "{name}: {:?}",
            summary.close_codes
        );
    }
    println!(
        "clients checked {:?} after the rollback ended",
        ended.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deploy_is_promoted_or_aborted_and_abort_stops_a_canary() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("drain_timeout: 8\n");
    stack.wsctl_ok(&["deploy"]);
    let url = format!("ws://{}/ws/chat/", stack.public);
    let clients = LiveClients::start(&url, 20);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = |name: &str| {
        std::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.State.Running}}",
                &format!("{}{name}", stack.prefix),
            ])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "true")
            .unwrap_or(false)
    };

    // --no-switch: green runs, checked, without traffic; promote moves it.
    let paused = stack
        .wsctl_while_live(&["deploy", "--no-switch", "--json"])
        .await;
    assert_eq!(paused.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&paused.stdout).into_owned();
    let summary = events(&stdout)
        .into_iter()
        .find(|event| event["event"] == "deploy")
        .expect("summary");
    assert_eq!(summary["outcome"], "paused", "{summary}");
    assert_eq!(summary["traffic"], "blue", "{summary}");
    assert!(running("app_green"), "green is not running");
    assert_eq!(stack.public_status().await["color"], "blue");
    let promoted = stack.wsctl_while_live(&["promote"]).await;
    assert_eq!(promoted.status.code(), Some(0), "{:?}", promoted);
    assert_eq!(stack.public_status().await["color"], "green");
    let again = stack.wsctl(&["promote"]);
    assert_eq!(again.status.code(), Some(2), "nothing paused any more");

    // abort with nothing running or paused.
    let nothing = stack.wsctl(&["abort"]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("nothing to abort"));

    // abort during a canary: the deploy is interrupted and undoes itself.
    let mut run = stack.spawn(&["deploy", "--canary", "30", "--analysis", "60"]);
    assert!(
        run.wait_for_step("canary"),
        "no canary step: {:?}",
        run.seen
    );
    let aborted = stack.wsctl_while_live(&["abort"]).await;
    assert_eq!(aborted.status.code(), Some(0), "{aborted:?}");
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.finish())
        .await
        .expect("deploy");
    assert_eq!(code, Some(143), "{stdout}\n{stderr}");
    assert_eq!(stack.public_status().await["color"], "green");
    assert!(!running("app_blue"), "the canary's colour still runs");

    // A canary nobody uses proves nothing: inconclusive, rolled back (11).
    let idle = stack
        .wsctl_while_live(&[
            "deploy",
            "--canary",
            "10",
            "--analysis-timeout",
            "3",
            "--json",
        ])
        .await;
    let stdout = String::from_utf8_lossy(&idle.stdout).into_owned();
    assert_eq!(idle.status.code(), Some(11), "{stdout}");
    let summary = events(&stdout)
        .into_iter()
        .find(|event| event["event"] == "deploy")
        .expect("summary");
    assert_eq!(summary["outcome"], "aborted", "{summary}");
    assert_eq!(summary["traffic"], "green", "{summary}");
    assert!(!running("app_blue"), "the idle canary's colour still runs");

    // abort of a paused deploy removes its colour.
    let paused = stack.wsctl_while_live(&["deploy", "--no-switch"]).await;
    assert_eq!(paused.status.code(), Some(0));
    assert!(running("app_blue"));
    let aborted = stack.wsctl_while_live(&["abort"]).await;
    assert_eq!(aborted.status.code(), Some(0), "{aborted:?}");
    assert!(!running("app_blue"), "the paused colour still runs");
    let status = stack.status_json();
    assert_eq!(status["live"], "green", "{status}");
    assert_eq!(status["history"][0]["action"], "abort", "{status}");
    assert_eq!(status["history"][0]["outcome"], "succeeded", "{status}");
    assert_eq!(status["history"][0]["traffic"], "green", "{status}");

    let summary = clients.finish().await;
    println!(
        "paused/promote/abort: {} messages, {} reconnects",
        summary.messages, summary.reconnects
    );
    assert!(
        summary
            .outcomes
            .iter()
            .all(|outcome| outcome.reconnects >= 1),
        "a client did not move at the promote"
    );
}
