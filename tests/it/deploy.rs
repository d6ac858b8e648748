//! Blue-green deploys against the real Docker Engine: the happy path with
//! status, switch and rollback; a standby that never becomes ready; a
//! failing `nginx -t`; a deploy refused while another holds the lock.
//! Images: wsctl-nginx:local and wsctl-redis:local (scripts/build-images.sh,
//! run by scripts/test.sh) and an app image per test.

use crate::common;

use std::time::Duration;

use common::docker::{TestStack, docker_or_skip, explain};
use serde_json::Value;

fn code(output: &std::process::Output) -> Option<i32> {
    output.status.code()
}

/// The container's CPU and memory limits, its nofile ulimit, and the
/// `MAX_CONNECTIONS` wsctl derived from it.
async fn assert_resources(
    docker: &bollard::Docker,
    name: &str,
    cpus: f64,
    memory: i64,
    open_files: i64,
) {
    let container = docker.inspect_container(name, None).await.expect(name);
    let host = container.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some((cpus * 1e9) as i64), "{name}");
    assert_eq!(host.memory, Some(memory), "{name}");
    let ulimits = host.ulimits.unwrap_or_default();
    let nofile = ulimits
        .iter()
        .find(|limit| limit.name.as_deref() == Some("nofile"))
        .expect("a nofile ulimit");
    assert_eq!(
        (nofile.soft, nofile.hard),
        (Some(open_files), Some(open_files))
    );
    let env = container
        .config
        .and_then(|config| config.env)
        .unwrap_or_default();
    let expected = format!("MAX_CONNECTIONS={}", open_files - 100);
    assert!(env.contains(&expected), "{name}: {env:?}");
}

/// Nginx gives an upgraded connection 1 KiB buffers (nginx.conf,
/// `proxy_buffer_size` in `/ws/`): a frame of `MAX_MESSAGE_SIZE` (64 KiB)
/// still passes whole, to the service and back in its echo.
async fn a_message_of_max_message_size_passes_nginx_both_ways(stack: &TestStack) {
    let url = format!("ws://{}/ws/chat/", stack.public);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade through Nginx");
    let greeting = common::recv_json(&mut ws).await;
    assert_eq!(greeting["type"], "connection_established");
    let envelope = r#"{"type":"message","message":""}"#.len();
    let payload = "x".repeat(65536 - envelope);
    let frame = serde_json::json!({"type": "message", "message": payload}).to_string();
    assert_eq!(frame.len(), 65536);
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(frame))
        .await
        .expect("send");
    let reply = common::recv_non_heartbeat(&mut ws).await;
    assert_eq!(
        reply["type"],
        "message_response",
        "{}",
        &reply.to_string()[..200]
    );
    assert_eq!(reply["message"].as_str().map(str::len), Some(payload.len()));
    assert!(
        reply.to_string().len() > 65536,
        "the echo is larger than the frame"
    );
}

#[tokio::test]
async fn deploy_switch_status_and_rollback_move_traffic_between_colours() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");

    let first = stack.wsctl(&["deploy", "--json"]);
    assert_eq!(code(&first), Some(0), "{}", explain(&first));
    assert_eq!(stack.public_status().await["color"], "blue");
    a_message_of_max_message_size_passes_nginx_both_ways(&stack).await;
    let summary: Value = serde_json::from_str(
        String::from_utf8_lossy(&first.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["event"], "deploy");
    assert_eq!(summary["to"], "blue");
    for step in ["preflight", "start", "health", "smoke", "switch"] {
        assert!(
            summary["steps_ms"][step].is_number(),
            "{step} missing in {summary}"
        );
    }

    // Smoke a colour from inside its container (not through Nginx).
    let smoke = stack.wsctl(&["smoke", "--color", "blue", "--json"]);
    assert_eq!(code(&smoke), Some(0), "{}", explain(&smoke));
    assert!(String::from_utf8_lossy(&smoke.stdout).contains(r#""name":"websocket_session""#));
    let absent = stack.wsctl(&["smoke", "--color", "green"]);
    assert_eq!(code(&absent), Some(1), "{}", explain(&absent));
    assert!(
        explain(&absent).contains("not running"),
        "{}",
        explain(&absent)
    );

    // Each container gets the resources the design sizes it for; the next
    // deploy takes its own from wsctl.yaml.
    assert_resources(
        &docker,
        &format!("{}app_blue", stack.prefix),
        1.0,
        1 << 30,
        20_000,
    )
    .await;
    // Nginx has workers for two descriptors per socket the colour can hold
    // (19,900 sockets, 19,500 connections per worker: 3 workers).
    assert_eq!(stack.nginx_workers(), 3);
    stack.write_config("resources: {cpus: 0.5, memory: 256m, open_files: 4096}\n");
    let second = stack.wsctl(&["deploy"]);
    assert_eq!(code(&second), Some(0), "{}", explain(&second));
    assert_eq!(stack.public_status().await["color"], "green");
    assert_resources(
        &docker,
        &format!("{}app_green", stack.prefix),
        0.5,
        256 << 20,
        4096,
    )
    .await;
    let status = stack.status_json();
    assert_eq!(status["live"], "green");
    assert_eq!(status["colors"]["green"]["state"], "running");
    assert_eq!(status["colors"]["green"]["health"], "healthy");
    assert_eq!(
        status["colors"]["green"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        status["colors"]["blue"]["state"], "exited",
        "kept, stopped, for rollback"
    );
    assert_eq!(status["history"][0]["from"], "blue");
    assert_eq!(status["history"][0]["to"], "green");

    // The stopped colour is not healthy: a switch to it is refused.
    let refused = stack.wsctl(&["switch", "--color", "blue"]);
    assert_eq!(code(&refused), Some(3), "{}", explain(&refused));
    assert_eq!(stack.public_status().await["color"], "green");

    let rollback = stack.wsctl(&["rollback"]);
    assert_eq!(code(&rollback), Some(0), "{}", explain(&rollback));
    assert_eq!(stack.public_status().await["color"], "blue");
    let status = stack.status_json();
    assert_eq!(status["live"], "blue");
    assert_eq!(status["colors"]["green"]["state"], "exited");
    assert_eq!(status["history"][0]["action"], "rollback");

    // Forced onto a stopped colour, `nginx -t` fails (no such host): the
    // previous upstream is restored and traffic stays on blue.
    let forced = stack.wsctl(&["switch", "--color", "green", "--force"]);
    assert_eq!(code(&forced), Some(5), "{}", explain(&forced));
    assert_eq!(stack.public_status().await["color"], "blue");

    // With green running and healthy again, a switch goes through.
    let green = format!("{}app_green", stack.prefix);
    docker.start_container(&green, None).await.unwrap();
    let started = std::time::Instant::now();
    while stack.status_json()["colors"]["green"]["health"] != "healthy" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "green never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let switched = stack.wsctl(&["switch", "--color", "green"]);
    assert_eq!(code(&switched), Some(0), "{}", explain(&switched));
    assert_eq!(stack.public_status().await["color"], "green");
    assert_eq!(stack.status_json()["history"][0]["action"], "switch");

    // status is for monitors too: 0 while the live colour is healthy, 3
    // once its container is down (the JSON still printed).
    let healthy = stack.wsctl(&["status"]);
    assert_eq!(code(&healthy), Some(0), "{}", explain(&healthy));
    docker
        .stop_container(
            &green,
            None::<bollard::query_parameters::StopContainerOptions>,
        )
        .await
        .unwrap();
    let degraded = stack.wsctl(&["status", "--json"]);
    assert_eq!(code(&degraded), Some(3), "{}", explain(&degraded));
    let printed: serde_json::Value = serde_json::from_slice(&degraded.stdout).expect("JSON");
    assert_eq!(printed["live"], "green");
    assert!(
        explain(&degraded).contains("the live colour green")
            && explain(&degraded).contains("exited"),
        "{}",
        explain(&degraded)
    );
}

#[tokio::test]
async fn a_standby_that_never_becomes_ready_fails_at_health_and_traffic_stays() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let first = stack.wsctl(&["deploy"]);
    assert_eq!(code(&first), Some(0), "{}", explain(&first));

    // A Redis that does not exist: the standby starts but never gets ready.
    stack.write_config(
        "app_env:\n  REDIS_URL: \"redis://nowhere.invalid:6379/0\"\nready_timeout: 4\n",
    );
    let failed = stack.wsctl(&["deploy"]);
    assert_eq!(code(&failed), Some(3), "{}", explain(&failed));
    let out = explain(&failed);
    assert!(
        out.contains("health") && out.contains("last log lines"),
        "{out}"
    );
    assert_eq!(stack.public_status().await["color"], "blue");
    let standby = format!("{}app_green", stack.prefix);
    assert!(
        docker.inspect_container(&standby, None).await.is_err(),
        "standby left behind"
    );
}

#[tokio::test]
async fn a_failing_nginx_test_keeps_the_previous_upstream_live() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let first = stack.wsctl(&["deploy"]);
    assert_eq!(code(&first), Some(0), "{}", explain(&first));

    let broken = stack.dir.join("broken.conf.j2");
    std::fs::write(
        &broken,
        "# wsctl live colour: {{ color }}\nupstream wsctl_live {\n    server {{ host }}:{{ port }} no_such_parameter;\n}\nadd_header X-Wsctl-Live {{ color }} always;\ngeo $wsctl_private { default 0; }\ngeo $wsctl_unlimited { default 0; }\n",
    )
    .unwrap();
    stack.write_config(&format!("upstream_template: \"{}\"\n", broken.display()));
    let failed = stack.wsctl(&["deploy"]);
    assert_eq!(code(&failed), Some(5), "{}", explain(&failed));
    assert!(
        explain(&failed).contains("nginx -t"),
        "{}",
        explain(&failed)
    );
    assert_eq!(stack.public_status().await["color"], "blue");
    assert_eq!(stack.status_json()["live"], "blue");
    let standby = format!("{}app_green", stack.prefix);
    assert!(
        docker.inspect_container(&standby, None).await.is_err(),
        "standby left behind"
    );
}

#[tokio::test]
async fn a_second_deploy_while_one_holds_the_lock_is_refused() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let config = stack.dir.join("wsctl.yaml");
    let mut first = common::wsctl()
        .args(["deploy", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first deploy holds the lock (its container exists).
    let lock = format!("{}wsctl_lock", stack.prefix);
    let docker = docker_or_skip().await.unwrap();
    let started = std::time::Instant::now();
    while docker.inspect_container(&lock, None).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first deploy never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = stack.wsctl(&["deploy"]);
    assert_eq!(code(&second), Some(7), "{}", explain(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("locked by") && stderr.contains("pid") && stderr.contains("deploy"),
        "{stderr}"
    );
    assert_eq!(first.wait().unwrap().code(), Some(0));
    // Released: the next one goes through.
    let third = stack.wsctl(&["deploy"]);
    assert_eq!(code(&third), Some(0), "{}", explain(&third));
}

#[test]
fn an_unreachable_engine_exits_8() {
    let output = common::wsctl()
        .args(["status"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
