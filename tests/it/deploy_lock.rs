//! The stack's lock against the real engine: a held lock refuses (exit 7,
//! naming the holder) and `--lock-wait` waits for it; a lease renewed by its
//! holder outlives `lock_ttl`; an expired lock is broken by exactly one of
//! two waiters; only a manual lock's `lock release` lets go of it, and
//! `wsctl unlock --force` breaks any.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use common::docker::{TestStack, docker_or_skip, explain};

/// Takes the stack's lock the way a wsctl on another machine would, with a
/// lease of `ttl` seconds from now on the engine's clock.
async fn hold_lock(docker: &Docker, stack: &TestStack, ttl: u64) -> String {
    let name = format!("{}wsctl_lock", stack.prefix);
    let labels = HashMap::from([
        (
            "wsctl.lock.holder".to_string(),
            "ops@elsewhere pid 42: deploy green".to_string(),
        ),
        (
            "wsctl.lock.since".to_string(),
            "2026-01-01T00:00:00.000Z".to_string(),
        ),
        ("wsctl.lock.ttl".to_string(), ttl.to_string()),
        ("wsctl.lock.host".to_string(), "elsewhere".to_string()),
        ("wsctl.lock.pid".to_string(), "42".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some("wsctl-nginx:local".into()),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker.create_container(Some(options), body).await.unwrap();
    name
}

// Multi-threaded: the release task runs while the test blocks on wsctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_refuses_then_lock_wait_waits_for_its_release() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let lock = hold_lock(&docker, &stack, 600).await;

    let refused = stack.wsctl(&["deploy"]);
    assert_eq!(refused.status.code(), Some(7), "{}", explain(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("ops@elsewhere pid 42: deploy green") && stderr.contains("2026-01-01"),
        "{stderr}"
    );
    // A run's lock is not released by `lock release` (only by its holder).
    let release = stack.wsctl(&["lock", "release"]);
    assert_eq!(release.status.code(), Some(7), "{}", explain(&release));
    assert!(docker.inspect_container(&lock, None).await.is_ok());

    // The holder lets go after a second; a waiting deploy then goes through.
    let release = {
        let (docker, lock) = (docker.clone(), lock.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            docker.remove_container(&lock, Some(force)).await.unwrap();
        })
    };
    let waited = stack.wsctl(&["deploy", "--lock-wait", "20"]);
    release.await.unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", explain(&waited));
    assert!(
        docker.inspect_container(&lock, None).await.is_err(),
        "the deploy released its lock"
    );
}

#[tokio::test]
async fn an_expired_lock_is_broken_and_unlock_force_breaks_a_live_one() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    hold_lock(&docker, &stack, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deploy = stack.wsctl(&["deploy"]);
    assert_eq!(
        deploy.status.code(),
        Some(0),
        "expired lock not broken: {}",
        explain(&deploy)
    );

    hold_lock(&docker, &stack, 600).await;
    let without_force = stack.wsctl(&["unlock"]);
    assert_eq!(
        without_force.status.code(),
        Some(2),
        "{}",
        explain(&without_force)
    );
    let unlock = stack.wsctl(&["unlock", "--force"]);
    assert_eq!(unlock.status.code(), Some(0), "{}", explain(&unlock));
    assert!(
        explain(&unlock).contains("ops@elsewhere"),
        "{}",
        explain(&unlock)
    );
    let deploy = stack.wsctl(&["deploy"]);
    assert_eq!(deploy.status.code(), Some(0), "{}", explain(&deploy));
}

/// Two `wsctl lock acquire` racing for an expired lock: each breaks it by
/// its container id, so exactly one takes it, three rounds in a row.
#[tokio::test]
async fn of_two_waiters_on_an_expired_lock_exactly_one_wins() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    for round in 0..3 {
        hold_lock(&docker, &stack, 1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let config = stack.dir.join("wsctl.yaml");
        let waiters: Vec<_> = ["first", "second"]
            .into_iter()
            .map(|who| {
                common::wsctl()
                    .args(["lock", "acquire", "-m", who, "--config"])
                    .arg(&config)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = waiters
            .into_iter()
            .map(|waiter| waiter.wait_with_output().unwrap())
            .collect();
        let codes: Vec<_> = outputs.iter().map(|out| out.status.code()).collect();
        let winners = codes.iter().filter(|code| **code == Some(0)).count();
        assert_eq!(
            winners,
            1,
            "round {round}: {codes:?}\n{}\n{}",
            explain(&outputs[0]),
            explain(&outputs[1])
        );
        assert!(
            codes.contains(&Some(7)),
            "round {round}: {codes:?}\n{}\n{}",
            explain(&outputs[0]),
            explain(&outputs[1])
        );
        let status = stack.wsctl(&["lock", "status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let message = status["lock"]["message"].as_str().unwrap().to_string();
        assert!(message == "first" || message == "second", "{status}");
        // The manual lock never expires; `lock release` lets it go.
        let released = stack.wsctl(&["lock", "release"]);
        assert_eq!(released.status.code(), Some(0), "{}", explain(&released));
        let status = stack.wsctl(&["lock", "status"]);
        assert!(explain(&status).contains("free"), "{}", explain(&status));
    }
}

/// A run longer than `lock_ttl` renews its lease: another deploy is refused
/// throughout (an expired lease would have been broken), and the lock is
/// free when the run ends.
#[tokio::test]
async fn a_run_renews_its_lock_past_lock_ttl() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("lock_ttl: 1\n");
    let first = stack.wsctl(&["deploy"]);
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first));
    // A standby that never gets ready keeps the health step busy for 5 s.
    stack.write_config(
        "lock_ttl: 1\napp_env:\n  REDIS_URL: \"redis://nowhere.invalid:6379/0\"\nready_timeout: 5\n",
    );
    let mut slow = stack.spawn(&["deploy"]);
    assert!(slow.wait_for_step("health"), "{:?}", slow.seen);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let refused = stack.wsctl(&["deploy"]);
        assert_eq!(
            refused.status.code(),
            Some(7),
            "lease not renewed: {}",
            explain(&refused)
        );
    }
    let (code, stdout, stderr) = slow.finish();
    assert_eq!(code, Some(3), "{stdout}\n{stderr}");
    let lock = format!("{}wsctl_lock", stack.prefix);
    assert!(docker.inspect_container(&lock, None).await.is_err());
}
