//! `wsctl build` against the real Docker Engine: the static binary becomes
//! a FROM scratch image that serves, carries its labels, and reports
//! healthy through its own HEALTHCHECK; a dynamically linked one brings
//! its loader and libraries along. With CI=true a missing engine
//! fails the test; elsewhere it is skipped with a line saying so.

use crate::common;

use common::docker::{docker_or_skip, static_wsctl};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HealthStatusEnum, HostConfig, PortBinding};
use bollard::query_parameters::CreateContainerOptionsBuilder;

/// Removes the test's container and image when dropped, also on failure.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::docker::remove_everything(
            None,
            vec![self.container.clone()],
            vec![self.image.clone()],
            Vec::new(),
        );
    }
}

/// The binary `cargo build` makes (dynamically linked) becomes an image
/// too: its loader and libraries are copied in, and it serves.
#[tokio::test]
async fn build_packages_a_dynamically_linked_binary_with_its_libraries() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let unique = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let image = format!("wsctl-test-{unique}:dynamic");
    let container = format!("wsctl-test-{unique}-dynamic");
    let _cleanup = Cleanup {
        container: container.clone(),
        image: image.clone(),
    };
    let output = common::wsctl()
        .args(["build", "--tag", &image])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // No shell in it: only wsctl, its loader and its libraries.
    let shell = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "the image has a shell");
    let version = std::process::Command::new("docker")
        .args(["run", "--rm", &image, "--version"])
        .output()
        .unwrap();
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("wsctl "),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
    serves_and_turns_healthy(&docker, &image, &container).await;
}

#[tokio::test]
async fn build_makes_a_scratch_image_that_serves_and_reports_healthy() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let unique = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let image = format!("wsctl-test-{unique}:build");
    let container = format!("wsctl-test-{unique}");
    let _cleanup = Cleanup {
        container: container.clone(),
        image: image.clone(),
    };

    let output = std::process::Command::new(static_wsctl())
        .args(["build", "--tag", &image])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let inspected = docker.inspect_image(&image).await.unwrap();
    let labels = inspected
        .config
        .and_then(|config| config.labels)
        .unwrap_or_default();
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(!labels["org.opencontainers.image.revision"].is_empty());
    assert!(labels["org.opencontainers.image.created"].ends_with('Z'));

    serves_and_turns_healthy(&docker, &image, &container).await;
}

/// Runs `image` as `container` with its port published on loopback: it
/// must answer `/status` as green with this version, and the engine must
/// call it healthy through the image's own HEALTHCHECK.
async fn serves_and_turns_healthy(docker: &bollard::Docker, image: &str, container: &str) {
    let (image, container) = (image.to_string(), container.to_string());
    let bindings = HashMap::from([(
        "8000/tcp".to_string(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(String::new()),
        }]),
    )]);
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&container)
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(image.clone()),
                env: Some(vec!["COLOR=green".into()]),
                host_config: Some(HostConfig {
                    port_bindings: Some(bindings),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&container, None).await.unwrap();

    // Traffic only through the port published on loopback.
    let state = docker.inspect_container(&container, None).await.unwrap();
    let port = state
        .network_settings
        .and_then(|settings| settings.ports)
        .and_then(|ports| ports.get("8000/tcp").cloned().flatten())
        .and_then(|bindings| bindings.first().and_then(|b| b.host_port.clone()))
        .expect("published port");
    let status_url = format!("http://127.0.0.1:{port}/status");
    let started = Instant::now();
    let status: serde_json::Value = loop {
        if let Ok(response) = reqwest::get(&status_url).await {
            break response.json().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "container never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["color"], "green");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    // The engine reports health from the image's own HEALTHCHECK.
    loop {
        let state = docker.inspect_container(&container, None).await.unwrap();
        let health = state.state.and_then(|s| s.health).and_then(|h| h.status);
        if health == Some(HealthStatusEnum::HEALTHY) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never healthy: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
