//! "Pull when an image is absent", against a real registry: Debian's
//! docker-registry on a loopback port (the engine trusts 127.0.0.0/8
//! registries without TLS). The test pushes the app image there, removes
//! the local reference, and deploys it by its registry name.

use crate::common;

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
        Registry::start_with(None)
    }

    /// A registry that wants `user` and `password` (htpasswd, bcrypt).
    fn start_private(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    fn start_with(login: Option<(&str, &str)>) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("wsctl-registry-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((user, password)) = login {
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wsctl-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
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

fn explain(output: &std::process::Output) -> String {
    common::docker::explain(output)
}

/// A private registry: `wsctl build --push` and the pull of a deploy use
/// wsctl.yaml's `registry:` login, then ~/.docker/config.json's `auths`,
/// then its `credHelpers` (a helper process on PATH);
/// without either the deploy stops in preflight, traffic where it was. The
/// password never appears in any output.
#[tokio::test]
async fn a_private_registry_gets_credentials_from_wsctl_yaml_or_docker_config() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let registry = Registry::start_private("alice", &password);
    let server = format!("127.0.0.1:{}", registry.port);
    let stack = TestStack::new("");
    let remote = format!("{server}/{}app:v1", stack.prefix.trim_end_matches('_'));
    let login = format!(
        "registry: {{server: \"{server}\", username: alice, password_env: IT_REGISTRY_PASSWORD}}\n"
    );
    stack.write_config_for(&remote, &login);
    let config = stack.dir.join("wsctl.yaml");
    // An empty Docker config, so a login of this machine's user plays no part.
    let no_docker_login = stack.dir.join("docker-config-empty");
    std::fs::create_dir_all(&no_docker_login).unwrap();
    let wsctl = |binary: &std::path::Path, args: &[&str], env: &[(&str, &str)]| {
        Command::new(binary)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("DOCKER_CONFIG", &no_docker_login)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let static_wsctl = common::docker::static_wsctl();
    let dev_wsctl = PathBuf::from(env!("CARGO_BIN_EXE_wsctl"));
    let mut outputs = Vec::new();

    // build --push: the variable must be set, the password must be right.
    let unset = wsctl(&static_wsctl, &["build", "--tag", &remote, "--push"], &[]);
    assert_eq!(unset.status.code(), Some(2), "{}", explain(&unset));
    assert!(
        explain(&unset).contains("IT_REGISTRY_PASSWORD is not set"),
        "{}",
        explain(&unset)
    );
    let wrong_password = format!("wrong-{password}");
    let wrong = wsctl(
        &static_wsctl,
        &["build", "--tag", &remote, "--push"],
        &[("IT_REGISTRY_PASSWORD", wrong_password.as_str())],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", explain(&wrong));
    assert!(
        !explain(&wrong).contains(&wrong_password),
        "{}",
        explain(&wrong)
    );
    let pushed = wsctl(
        &static_wsctl,
        &["build", "--tag", &remote, "--push"],
        &[("IT_REGISTRY_PASSWORD", password.as_str())],
    );
    assert_eq!(pushed.status.code(), Some(0), "{}", explain(&pushed));
    assert!(
        explain(&pushed).contains(&format!("pushed {remote}")),
        "{}",
        explain(&pushed)
    );
    outputs.push(pushed);

    // Absent locally: the deploy pulls it with the login of wsctl.yaml.
    remove_everything(None, Vec::new(), vec![remote.clone()], Vec::new());
    assert!(docker.inspect_image(&remote).await.is_err());
    let deployed = wsctl(
        &dev_wsctl,
        &["deploy"],
        &[("IT_REGISTRY_PASSWORD", password.as_str())],
    );
    assert_eq!(deployed.status.code(), Some(0), "{}", explain(&deployed));
    assert!(
        explain(&deployed).contains(&format!("pull {remote}")),
        "{}",
        explain(&deployed)
    );
    outputs.push(deployed);

    // Without any login the pull is refused: preflight, blue stays live.
    stack.write_config_for(&remote, "");
    remove_everything(None, Vec::new(), vec![remote.clone()], Vec::new());
    let anonymous = wsctl(&dev_wsctl, &["deploy"], &[]);
    assert_ne!(anonymous.status.code(), Some(0), "{}", explain(&anonymous));
    assert!(
        explain(&anonymous).contains(&format!("pulling {remote}")),
        "{}",
        explain(&anonymous)
    );
    assert_eq!(stack.public_status().await["color"], "blue");

    // The Docker CLI's login: config.json `auths` in $DOCKER_CONFIG.
    let docker_login = stack.dir.join("docker-config");
    std::fs::create_dir_all(&docker_login).unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"));
    std::fs::write(
        docker_login.join("config.json"),
        format!("{{\"auths\": {{\"{server}\": {{\"auth\": \"{auth}\"}}}}}}"),
    )
    .unwrap();
    let with_docker_login = Command::new(&dev_wsctl)
        .args(["deploy", "--config"])
        .arg(&config)
        .env("DOCKER_CONFIG", &docker_login)
        .output()
        .unwrap();
    remove_everything(None, Vec::new(), vec![remote.clone()], Vec::new());
    assert_eq!(
        with_docker_login.status.code(),
        Some(0),
        "{}",
        explain(&with_docker_login)
    );
    assert_eq!(stack.public_status().await["color"], "green");
    outputs.push(with_docker_login);

    // A credential helper (`credHelpers`): a real process speaking the
    // helper protocol (server on stdin, JSON on stdout), found on PATH.
    let helpers = stack.dir.join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-wsctltest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{server}\" ] || exit 1\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"{password}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        docker_login.join("config.json"),
        format!("{{\"credHelpers\": {{\"{server}\": \"wsctltest\"}}}}"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let with_helper = Command::new(&dev_wsctl)
        .args(["deploy", "--config"])
        .arg(&config)
        .env("DOCKER_CONFIG", &docker_login)
        .env("PATH", path)
        .output()
        .unwrap();
    remove_everything(None, Vec::new(), vec![remote.clone()], Vec::new());
    assert_eq!(
        with_helper.status.code(),
        Some(0),
        "{}",
        explain(&with_helper)
    );
    assert!(
        explain(&with_helper).contains(&format!("pull {remote}")),
        "{}",
        explain(&with_helper)
    );
    assert_eq!(stack.public_status().await["color"], "blue");
    outputs.push(with_helper);
    for output in &outputs {
        assert!(!explain(output).contains(&password), "{}", explain(output));
    }
}
