//! "Pull when an image is absent", against a real registry: Debian's
//! docker-registry on a loopback port (the engine trusts 127.0.0.0/8
//! registries without TLS). The test pushes the app image there, removes
//! the local reference, and deploys it by its registry name.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use common::docker::{TestStack, docker_or_skip, remove_everything};
use futures_util::StreamExt;

struct Registry {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("wsctl-registry-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed: run scripts/test.sh");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, dir, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn deploy_pulls_an_absent_image_from_a_registry() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let registry = Registry::start();
    let stack = TestStack::new("");
    let repository = format!(
        "127.0.0.1:{}/{}app",
        registry.port,
        stack.prefix.trim_end_matches('_')
    );
    let remote = format!("{repository}:v1");

    let tag = TagImageOptionsBuilder::default()
        .repo(&repository)
        .tag("v1")
        .build();
    docker.tag_image(&stack.app_image, Some(tag)).await.unwrap();
    let push = PushImageOptionsBuilder::default().tag("v1").build();
    let mut pushing = docker.push_image(&repository, Some(push), None);
    while let Some(message) = pushing.next().await {
        let message = message.unwrap();
        assert!(message.error_detail.is_none(), "push failed: {message:?}");
    }
    // Absent locally from now on: only the registry has it.
    remove_everything(None, Vec::new(), vec![remote.clone()], Vec::new());
    assert!(docker.inspect_image(&remote).await.is_err());

    stack.write_config_for(&remote, "");
    let deploy = stack.wsctl(&["deploy"]);
    remove_everything(None, Vec::new(), vec![remote.clone()], Vec::new());
    let stderr = String::from_utf8_lossy(&deploy.stderr);
    assert_eq!(deploy.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("pull {remote}")),
        "no pull progress: {stderr}"
    );
    assert_eq!(stack.public_status().await["color"], "blue");
}
