//! The stack's lock against the real engine: a held lock refuses (exit 7,
//! naming the holder), `--lock-wait` waits for it, an expired lock is
//! broken, and `wsctl unlock --force` breaks a live one.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use common::docker::{TestStack, docker_or_skip};

/// Takes the stack's lock the way another wsctl would, expiring in `ttl` seconds.
async fn hold_lock(docker: &Docker, stack: &TestStack, ttl: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
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
        ("wsctl.lock.expires".to_string(), (now + ttl).to_string()),
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

fn explain(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
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
    hold_lock(&docker, &stack, -1).await;
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
