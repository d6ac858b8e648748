//! `wsctl logs`, `exec` and `history` against a real stack: the operator
//! never needs the container names wsctl made up.

use crate::common;

use common::docker::{TestStack, docker_or_skip, explain};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `wsctl exec [OPTIONS] -- CMD...`: the config goes before `--` (TestStack
/// appends it at the end, where it would become part of CMD).
fn exec(stack: &TestStack, options: &[&str], command: &[&str]) -> std::process::Output {
    common::wsctl()
        .arg("exec")
        .args(options)
        .arg("--config")
        .arg(stack.dir.join("wsctl.yaml"))
        .arg("--")
        .args(command)
        .output()
        .expect("wsctl exec")
}

#[tokio::test]
async fn logs_exec_and_history_find_the_containers_by_colour() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    stack.wsctl_ok(&["deploy"]);

    // history: the deploy, who ran it and how it ended.
    let history = stack.wsctl_ok(&["history", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).expect("JSON");
    assert_eq!(runs["runs"][0]["action"], "deploy", "{runs}");
    assert_eq!(runs["runs"][0]["outcome"], "succeeded", "{runs}");
    let text = stack.wsctl_ok(&["history", "-n", "1"]);
    assert!(stdout(&text).contains("deploy") && stdout(&text).contains("succeeded"));

    // exec: in the live colour by default; its exit code counts.
    let status = exec(
        &stack,
        &[],
        &["/wsctl", "probe", "--print", "http://127.0.0.1:8000/status"],
    );
    assert_eq!(status.status.code(), Some(0), "{}", explain(&status));
    let body: serde_json::Value =
        serde_json::from_str(stdout(&status).trim()).expect("status JSON");
    assert_eq!(body["color"], "blue", "{body}");
    let failing = exec(&stack, &[], &["/wsctl", "probe", "http://127.0.0.1:1/"]);
    assert_eq!(failing.status.code(), Some(1), "{}", explain(&failing));
    let absent = exec(&stack, &["--color", "green"], &["/wsctl", "--version"]);
    assert_eq!(absent.status.code(), Some(2), "{}", explain(&absent));
    let no_such = stack.wsctl(&["logs", "--replica", "2"]);
    assert_eq!(no_such.status.code(), Some(2), "{}", explain(&no_such));
    assert!(
        explain(&no_such).contains("--replica 2"),
        "{}",
        explain(&no_such)
    );

    // logs: raw JSON lines when piped or with --json, the last N of them.
    let logs = stack.wsctl_ok(&["logs", "--tail", "3", "--json"]);
    let lines: Vec<String> = stdout(&logs).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(value["message"].is_string(), "{line}");
    }
    let recent = stack.wsctl_ok(&["logs", "--since", "3600"]);
    assert!(
        stdout(&recent).contains("\"listening\""),
        "{}",
        stdout(&recent)
    );

    // status --watch redraws until interrupted: one JSON object a round.
    let mut watch = common::wsctl()
        .args(["status", "--watch", "0.5", "--json", "--config"])
        .arg(stack.dir.join("wsctl.yaml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wsctl status --watch");
    let reader = std::io::BufReader::new(watch.stdout.take().expect("stdout"));
    let rounds: Vec<serde_json::Value> = std::io::BufRead::lines(reader)
        .take(3)
        .map(|line| serde_json::from_str(&line.expect("line")).expect("JSON round"))
        .collect();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(rounds.len(), 3);
    assert!(
        rounds.iter().all(|round| round["live"] == "blue"),
        "{rounds:?}"
    );

    // -f keeps printing until interrupted.
    let mut follow = common::wsctl()
        .args(["logs", "-f", "--tail", "1", "--config"])
        .arg(stack.dir.join("wsctl.yaml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wsctl logs -f");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        follow.try_wait().expect("wait").is_none(),
        "logs -f ended by itself"
    );
    let _ = follow.kill();
    let output = follow.wait_with_output().expect("output");
    assert!(!output.stdout.is_empty(), "logs -f printed nothing");
}

/// Removes extra image tags when dropped, also when the test fails.
struct Tags(Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        common::docker::remove_everything(None, Vec::new(), self.0.clone(), Vec::new());
    }
}

#[tokio::test]
async fn prune_removes_old_images_but_never_either_colours() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("drain_timeout: 3\n");
    let base = stack.app_image.trim_end_matches(":app").to_string();
    let (older, newer) = (format!("{base}:older"), format!("{base}:newer"));
    let _tags = Tags(vec![older.clone(), newer.clone()]);
    for tag in [&older, &newer] {
        let tagged = std::process::Command::new("docker")
            .args(["tag", &stack.app_image, tag])
            .status()
            .expect("docker tag");
        assert!(tagged.success());
    }
    // Three deploys: `older` first, then the stack's own image, then `newer`.
    for image in [&older, &stack.app_image, &newer] {
        stack.wsctl_ok(&["deploy", "--image", image]);
    }
    let exists = |image: &str| {
        std::process::Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .map(|output| output.status.success())
            .unwrap_or(false)
    };
    let pruned = stack.wsctl_ok(&["prune", "--keep", "0", "--json"]);
    let outcome: serde_json::Value = stdout(&pruned)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "prune")
        .expect("a prune event");
    assert_eq!(
        outcome["removed"],
        serde_json::json!([{"image": older}]),
        "{outcome}"
    );
    assert!(!exists(&older), "{older} is still there");
    // Live (`newer`) and kept for rollback (the stack's image) stay.
    assert!(exists(&newer) && exists(&stack.app_image), "{outcome}");
    let rollback = stack.wsctl(&["rollback"]);
    assert_eq!(rollback.status.code(), Some(0), "{}", explain(&rollback));
}

/// Docker's userland proxy serves a loopback public address, and gives out
/// near 3,000 connections: `status` says so once the stack holds more than
/// 2,000 sockets (held here straight at the Nginx container, as the hold
/// benchmark does), and says nothing below that or when no docker-proxy
/// serves the address (an engine with `userland-proxy: false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_warns_of_docker_proxy_in_front_of_a_public_address_holding_thousands() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new(
        "unlimited_networks: [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n",
    );
    stack.wsctl_ok(&["deploy"]);
    let status = stack.status_json();
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");

    let port = stack
        .public
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let proxied = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|process| {
            std::fs::read(process.path().join("cmdline")).is_ok_and(|cmdline| {
                let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                text.contains("docker-proxy") && text.contains(&format!("-host-port {port} "))
            })
        });
    let nginx_ip = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        ])
        .arg(format!("{}nginx", stack.prefix))
        .output()
        .expect("docker inspect");
    let nginx_ip = String::from_utf8_lossy(&nginx_ip.stdout).trim().to_string();
    let mut hold = common::wsctl()
        .args(["bench", "hold", "-n", "2100", "--duration", "30", "--url"])
        .arg(format!("ws://{nginx_ip}:80/ws/chat/"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("wsctl bench hold");
    let started = std::time::Instant::now();
    let status = loop {
        let status = stack.status_json();
        let held = status["colors"]["blue"]["connections"]
            .as_i64()
            .unwrap_or(0);
        if held >= 2100 {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "only {held} sockets held: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let text = stack.wsctl(&["status"]);
    let _ = hold.kill();
    let _ = hold.wait();
    let warnings = status["warnings"].as_array().expect("warnings").clone();
    if proxied {
        assert_eq!(warnings.len(), 1, "{status}");
        let warning = warnings[0].as_str().unwrap_or_default();
        assert!(warning.contains(&stack.public), "{warning}");
        assert!(warning.contains("\"userland-proxy\": false"), "{warning}");
        println!("status warned: {warning}");
    } else {
        assert!(
            warnings.is_empty(),
            "no docker-proxy serves {}: {status}",
            stack.public
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&text.stdout).contains("WARNING: public_address"),
        proxied,
        "{}",
        explain(&text)
    );
}
