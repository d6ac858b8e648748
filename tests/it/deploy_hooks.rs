//! Hooks and notifications against a real engine and real HTTP receivers:
//! a `post_deploy` hook sees the run's variables, webhooks get one JSON
//! record per event while a receiver answering 500 and one that never
//! answers leave the exit code alone, a failing `pre_deploy` stops the
//! deploy before any container starts (exit 12, its output shown), an
//! `on_failure` hook runs when the health step fails, and a hook that
//! hangs is killed at its timeout, with what it started.

use crate::common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip, explain};

/// An HTTP receiver on a free loopback port: every JSON body POSTed to it
/// is kept; it answers `status`. One request per connection (reqwest's
/// are one-shot here: each is answered `Connection: close`).
fn receiver(status: u16) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        // Bounded: the test sends far fewer than 200 requests.
        for stream in listener.incoming().take(200).flatten() {
            let mut reader = BufReader::new(&stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(json) = serde_json::from_slice(&body)
            {
                kept.lock().expect("receiver").push(json);
            }
            let _ = (&stream).write_all(
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (format!("http://{address}/hook-receiver"), seen)
}

/// A receiver that accepts connections and never answers.
fn silent_receiver() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: the test ends long before 200 connections.
        for stream in listener.incoming().take(200).flatten() {
            held.push(stream);
        }
    });
    format!("http://{address}/silent")
}

fn vars(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_deploys_and_webhooks_hear_of_them() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let (good, heard) = receiver(200);
    let (broken, _) = receiver(500);
    let silent = silent_receiver();
    let post_file = stack.dir.join("post.env");
    let failure_file = stack.dir.join("failure.env");
    let hooks = format!(
        "hooks:\n  post_deploy: \"env | grep ^WSCTL_ > {post}\"\n  on_failure: \"env | grep ^WSCTL_ > {failure}\"\n\
         notify:\n  - {{webhook: \"{good}\"}}\n  - {{webhook: \"{broken}\", events: [succeeded]}}\n  - {{webhook: \"{silent}\", events: [succeeded]}}\n",
        post = post_file.display(),
        failure = failure_file.display(),
    );
    stack.write_config(&hooks);

    // A deploy: the post hook sees the run; the receivers' failures are
    // warnings only.
    let started = Instant::now();
    let deployed = stack.wsctl(&["deploy"]);
    assert_eq!(deployed.status.code(), Some(0), "{}", explain(&deployed));
    println!("deploy with three webhooks took {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(stderr.contains("answered 500"), "{stderr}");
    assert!(stderr.contains("no answer within"), "{stderr}");
    assert!(
        !stderr.contains("hook-receiver"),
        "a webhook path was printed: {stderr}"
    );
    let history = stack.wsctl_ok(&["history", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history");
    let run_id = runs["runs"][0]["id"].as_str().expect("run id").to_string();
    let seen = vars(&post_file);
    for (key, value) in [
        ("WSCTL_RUN_ID", run_id.as_str()),
        ("WSCTL_ACTION", "deploy"),
        ("WSCTL_FROM", ""),
        ("WSCTL_TO", "blue"),
        ("WSCTL_IMAGE", stack.app_image.as_str()),
        ("WSCTL_OUTCOME", "succeeded"),
        ("WSCTL_ERROR", ""),
        ("WSCTL_HOSTS", ""),
    ] {
        assert_eq!(
            seen.get(key).map(String::as_str),
            Some(value),
            "{key}: {seen:?}"
        );
    }
    assert!(seen["WSCTL_PERFORMER"].contains('@'), "{seen:?}");
    let events: Vec<(String, String)> = heard
        .lock()
        .expect("receiver")
        .iter()
        .map(|body| {
            (
                body["event"].as_str().unwrap_or_default().to_string(),
                body["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("started".to_string(), run_id.clone()),
            ("succeeded".to_string(), run_id.clone())
        ]
    );
    let last = heard
        .lock()
        .expect("receiver")
        .last()
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["outcome"], "succeeded", "{last}");
    assert!(
        last["text"]
            .as_str()
            .unwrap_or_default()
            .contains("deploy none -> blue"),
        "{last}"
    );

    // The health step fails: on_failure runs with the error; a failed
    // event is sent.
    stack.write_config(&format!(
        "app_env:\n  REDIS_URL: \"redis://nowhere.invalid:6379/0\"\nready_timeout: 3\n{hooks}"
    ));
    let failed = stack.wsctl(&["deploy"]);
    assert_eq!(failed.status.code(), Some(3), "{}", explain(&failed));
    let seen = vars(&failure_file);
    assert_eq!(
        seen.get("WSCTL_OUTCOME").map(String::as_str),
        Some("failed"),
        "{seen:?}"
    );
    assert!(seen["WSCTL_ERROR"].contains("health"), "{seen:?}");
    assert_eq!(
        heard
            .lock()
            .expect("receiver")
            .last()
            .map(|body| body["event"].clone()),
        Some("failed".into())
    );

    // A failing pre_deploy: exit 12, its output shown, nothing started.
    stack.write_config(
        "hooks:\n  pre_deploy: \"echo migrating the schema; echo no database >&2; exit 3\"\n",
    );
    let stopped = stack.wsctl(&["deploy"]);
    assert_eq!(stopped.status.code(), Some(12), "{}", explain(&stopped));
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        stderr.contains("migrating the schema") && stderr.contains("no database"),
        "{stderr}"
    );
    assert!(stderr.contains("pre_deploy hook exited 3"), "{stderr}");
    let green = format!("{}app_green", stack.prefix);
    assert!(
        docker.inspect_container(&green, None).await.is_err(),
        "a container started"
    );
    let history = stack.wsctl_ok(&["history", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).expect("history");
    assert_eq!(runs["runs"][0]["outcome"], "failed", "{runs}");
    assert_eq!(stack.status_json()["live"], "blue");

    // A hook that hangs is killed at its timeout, with what it started.
    stack.write_config("hooks:\n  timeout: 1\n  pre_deploy: \"sleep 31.25; true\"\n");
    let started = Instant::now();
    let hung = stack.wsctl(&["deploy"]);
    assert_eq!(hung.status.code(), Some(12), "{}", explain(&hung));
    assert!(
        explain(&hung).contains("was killed at its timeout"),
        "{}",
        explain(&hung)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let left = Command::new("pgrep")
        .args(["-f", "sleep 31.25"])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "the hook's sleep outlived its timeout"
    );
}
