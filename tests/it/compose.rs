//! The Compose file: `docker-compose config` accepts it, and a stack that
//! Compose brings up (redis, nginx, app_blue, with the local images) is
//! taken over by `wsctl switch` and `wsctl deploy --color green`, then
//! passes `wsctl smoke` through its public address.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::docker::{TestStack, docker_or_skip};

fn compose_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/docker-compose.yml")
}

fn compose(stack: &TestStack, args: &[&str]) -> Output {
    Command::new("docker-compose")
        .arg("-f")
        .arg(compose_file())
        .args(["-p", stack.prefix.trim_end_matches('_')])
        .args(args)
        .env("WSCTL_PREFIX", &stack.prefix)
        .env("PUBLIC_ADDRESS", &stack.public)
        .env("APP_IMAGE", &stack.app_image)
        .env("NGINX_IMAGE", "wsctl-nginx:local")
        .env("REDIS_IMAGE", "wsctl-redis:local")
        .output()
        .expect("docker-compose is not installed: run scripts/test.sh")
}

fn explain(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Brings the Compose project down even when the test fails.
struct Down<'a>(&'a TestStack);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = compose(self.0, &["down", "--volumes", "--timeout", "2"]);
    }
}

#[test]
fn docker_compose_accepts_the_file_with_every_profile() {
    let output = Command::new("docker-compose")
        .arg("-f")
        .arg(compose_file())
        .args([
            "--profile",
            "monitoring",
            "--profile",
            "standby",
            "config",
            "--services",
        ])
        .output()
        .expect("docker-compose is not installed: run scripts/test.sh");
    assert!(output.status.success(), "{}", explain(&output));
    let services = String::from_utf8_lossy(&output.stdout);
    for service in [
        "redis",
        "nginx",
        "app_blue",
        "app_green",
        "prometheus",
        "grafana",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} missing: {services}"
        );
    }
}

#[tokio::test]
async fn wsctl_takes_over_a_stack_that_compose_started() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let stack = TestStack::new("");
    let _down = Down(&stack);
    let up = compose(
        &stack,
        &["up", "-d", "--no-build", "redis", "nginx", "app_blue"],
    );
    assert!(up.status.success(), "{}", explain(&up));

    // Adopt: point Nginx at blue once Compose's blue is healthy.
    let started = Instant::now();
    loop {
        let switch = stack.wsctl(&["switch", "--color", "blue"]);
        if switch.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            explain(&switch)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(stack.public_status().await["color"], "blue");

    let deploy = stack.wsctl(&["deploy", "--color", "green"]);
    assert_eq!(deploy.status.code(), Some(0), "{}", explain(&deploy));
    assert_eq!(stack.public_status().await["color"], "green");

    let smoke = common::wsctl()
        .args(["smoke", "--url", &format!("http://{}", stack.public)])
        .output()
        .unwrap();
    assert!(smoke.status.success(), "{}", explain(&smoke));
}
