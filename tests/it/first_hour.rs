//! A newcomer's first hour, against the real binary (and the real engine
//! where it acts): argument errors printed whole as clap renders them, a
//! `-c` file that does not exist, `history` on an empty stack, and `wsctl
//! down` with and without `--yes` and under a held lock.

use crate::common;

use std::process::Command;

use common::docker::{TestStack, docker_or_skip, explain};

fn wsctl(args: &[&str]) -> std::process::Output {
    common::wsctl().args(args).output().expect("run wsctl")
}

#[test]
fn argument_errors_name_what_is_missing_the_possible_values_and_a_suggestion() {
    let missing = wsctl(&["switch"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--color <COLOR>") && stderr.contains("Usage: wsctl switch"),
        "{stderr}"
    );

    let wrong = wsctl(&["switch", "--color", "purple"]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'purple'") && stderr.contains("[possible values: blue, green]"),
        "{stderr}"
    );

    let typo = wsctl(&["deploy", "--canery", "5"]);
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'--canary'"), "no suggestion: {stderr}");

    let command = wsctl(&["swich"]);
    let stderr = String::from_utf8_lossy(&command.stderr);
    assert_eq!(command.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'switch'"), "no suggestion: {stderr}");
}

#[test]
fn a_config_file_that_does_not_exist_is_named_and_nothing_runs() {
    let dir = std::env::temp_dir().join(format!("wsctl-first-hour-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (args, env) in [
        (vec!["status", "-c", "nope.yaml"], None),
        (vec!["deploy", "--config", "nope.yaml"], None),
        (vec!["status"], Some("nope.yaml")),
    ] {
        let mut command = common::wsctl();
        command.current_dir(&dir).args(&args);
        // An engine that cannot answer: nothing may get as far as it.
        command.env("DOCKER_HOST", "tcp://127.0.0.1:1");
        if let Some(file) = env {
            command.env("WSCTL_CONFIG", file);
        }
        let output = command.output().expect("wsctl");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("nope.yaml") && stderr.contains("no such file"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    // Without -c, a missing ./wsctl.yaml is the default stack, said first.
    let output = common::wsctl()
        .current_dir(&dir)
        .args(["status"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .env_remove("WSCTL_CONFIG")
        .output()
        .expect("wsctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(8), "{stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.contains("no wsctl.yaml here") && first.contains("default stack"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_lists_then_removes_the_stack_but_not_its_images_and_not_under_a_lock() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    // An empty stack's history says so.
    let history = stack.wsctl(&["history"]);
    assert_eq!(history.status.code(), Some(0), "{}", explain(&history));
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("no runs recorded"),
        "{}",
        explain(&history)
    );
    stack.wsctl_ok(&["deploy"]);
    let containers = || {
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name={}", stack.prefix)])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&listed.stdout).lines().count()
    };
    let network = || {
        Command::new("docker")
            .args(["network", "inspect", &format!("{}wsctl", stack.prefix)])
            .output()
            .expect("docker network inspect")
            .status
            .success()
    };
    let before = containers();
    assert!(before >= 3, "app, nginx and redis: {before}");

    // Without --yes: the list, exit 1, nothing removed.
    let listed = stack.wsctl(&["down"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.status.code(), Some(1), "{}", explain(&listed));
    assert!(
        stdout.contains(&format!("would remove container {}nginx", stack.prefix))
            && stdout.contains(&format!("would remove network {}wsctl", stack.prefix)),
        "{stdout}"
    );
    assert_eq!(containers(), before);

    // A lock a person holds refuses it (exit 7), nothing removed.
    stack.wsctl_ok(&["lock", "acquire", "-m", "maintenance"]);
    let refused = stack.wsctl(&["down", "--yes"]);
    assert_eq!(refused.status.code(), Some(7), "{}", explain(&refused));
    assert_eq!(
        containers(),
        before + 1,
        "the lock's container is there too"
    );
    stack.wsctl_ok(&["lock", "release"]);

    // With --yes: every container and the network go, the image stays, and
    // the journal stays (no --volumes).
    stack.wsctl_ok(&["down", "--yes"]);
    assert_eq!(containers(), 0);
    assert!(!network(), "the network is still there");
    let image = Command::new("docker")
        .args(["image", "inspect", &stack.app_image])
        .output()
        .expect("docker image inspect");
    assert!(image.status.success(), "down removed the app image");
    let history = stack.wsctl_ok(&["history"]);
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("deploy"),
        "{}",
        explain(&history)
    );
    // --volumes takes the journal too; then there is nothing left.
    stack.wsctl_ok(&["down", "--volumes", "--yes"]);
    let history = stack.wsctl_ok(&["history"]);
    assert!(
        String::from_utf8_lossy(&history.stdout).contains("no runs recorded"),
        "{}",
        explain(&history)
    );
    let again = stack.wsctl_ok(&["down"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to remove"),
        "{}",
        explain(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbooks_smoke_test_passes_through_a_default_stacks_public_address() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // The default private_networks: from the host, requests to the public
    // port arrive from the Docker gateway, outside them.
    let stack = TestStack::new("private_networks: [\"127.0.0.0/8\", \"::1/128\"]\n");
    stack.wsctl_ok(&["deploy"]);
    let url = format!("http://{}", stack.public);
    let output = wsctl(&["smoke", "--url", &url, "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    let checks: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["event"] == "check")
        .collect();
    for name in ["status", "metrics"] {
        let check = checks
            .iter()
            .find(|check| check["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {stdout}"));
        assert_eq!(check["ok"], true, "{check}");
        assert!(
            check["detail"]
                .as_str()
                .unwrap_or("")
                .contains("private_networks"),
            "{check}"
        );
    }
    let session = checks
        .iter()
        .find(|check| check["name"] == "websocket_session")
        .expect("session check");
    assert_eq!(session["ok"], true, "{session}");

    let bad = wsctl(&["smoke", "--url", "notaurl"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("notaurl"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_a_fresh_stack_create_nothing() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    for (args, says) in [
        (vec!["rollback"], "no previous colour"),
        (vec!["promote"], "no deploy is paused"),
        (vec!["abort"], "nothing to abort"),
    ] {
        let refused = stack.wsctl(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let listed = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={}", stack.prefix)])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&listed.stdout).trim().is_empty(),
        "a refusal left containers"
    );
    let network = Command::new("docker")
        .args(["network", "inspect", &format!("{}wsctl", stack.prefix)])
        .output()
        .expect("docker network inspect");
    assert!(!network.status.success(), "a refusal left the network");
    // Each refusal is in the history, newest first, saying why.
    let history = stack.wsctl_ok(&["history", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history JSON");
    let seen: Vec<(String, String, String)> = runs["runs"]
        .as_array()
        .expect("a list of runs")
        .iter()
        .map(|run| {
            (
                run["action"].as_str().unwrap_or_default().to_string(),
                run["outcome"].as_str().unwrap_or_default().to_string(),
                run["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for ((action, outcome, detail), (wanted, says)) in seen.iter().zip([
        ("abort", "nothing to abort"),
        ("promote", "no deploy is paused"),
        ("rollback", "no previous colour"),
    ]) {
        assert_eq!(
            (action.as_str(), outcome.as_str()),
            (wanted, "refused"),
            "{seen:?}"
        );
        assert!(detail.contains(says), "{seen:?}");
    }
    let history = stack.wsctl_ok(&["history"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(
        text.lines().any(|line| line.contains("rollback")
            && line.contains("refused")
            && line.contains("no previous colour")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_in_use_is_one_line_naming_its_holder_and_leaves_nothing() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let leftovers = |prefix: &str| {
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name={prefix}")])
            .output()
            .expect("docker ps");
        let network = Command::new("docker")
            .args(["network", "inspect", &format!("{prefix}wsctl")])
            .output()
            .expect("docker network inspect");
        (
            String::from_utf8_lossy(&listed.stdout).lines().count(),
            network.status.success(),
        )
    };
    // A process of this machine holds the port.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = held.local_addr().expect("address").port();
    let mut stack = TestStack::new("");
    stack.public = format!("127.0.0.1:{port}");
    stack.write_config("");
    let refused = stack.wsctl(&["deploy"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.starts_with("wsctl:"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("127.0.0.1:{port} is in use")) && line.contains("outside"),
        "{stderr}"
    );
    assert_eq!(leftovers(&stack.prefix), (0, false), "{stderr}");
    let history = stack.wsctl_ok(&["history"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(
        text.lines().any(|line| line.contains("deploy")
            && line.contains("refused")
            && line.contains("is in use")),
        "the refusal is in the history: {text}"
    );
    drop(held);

    // Another stack's Nginx holds it: named.
    let other = TestStack::new("");
    other.wsctl_ok(&["deploy"]);
    stack.public = other.public.clone();
    stack.write_config("");
    let refused = stack.wsctl(&["deploy"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("by the container {}nginx", other.prefix)),
        "{stderr}"
    );
    assert_eq!(leftovers(&stack.prefix), (0, false), "{stderr}");
}
