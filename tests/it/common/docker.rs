//! A throwaway wsctl stack on the real Docker Engine: unique names (a
//! per-test prefix), a free public port, its own app image built from the
//! static binary, and removal of everything it made when dropped, also when
//! the test fails. With CI set (any value) a missing engine fails the test;
//! elsewhere it is skipped with a line saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};

pub async fn docker_or_skip() -> Option<Docker> {
    let connected = async {
        let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, bollard::errors::Error>(docker)
    }
    .await;
    match connected {
        Ok(docker) => Some(docker),
        Err(error) if std::env::var_os("CI").is_some() => {
            panic!("CI is set and the Docker Engine is unreachable: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED: Docker Engine unreachable ({error})");
            None
        }
    }
}

/// The statically linked wsctl that `scripts/test.sh` builds, in the same
/// target directory as this test binary's wsctl (`target/`, or wherever
/// `CARGO_TARGET_DIR` put it).
pub fn static_wsctl() -> PathBuf {
    let target = Path::new(env!("CARGO_BIN_EXE_wsctl"))
        .ancestors()
        .nth(2)
        .expect("target directory");
    let path = target.join("x86_64-unknown-linux-gnu/release/wsctl");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it builds the static binary)",
        path.display()
    );
    path
}

pub struct TestStack {
    pub prefix: String,
    pub dir: PathBuf,
    pub public: String,
    pub app_image: String,
}

impl TestStack {
    /// Builds the app image and writes `wsctl.yaml` with `extra` lines.
    pub fn new(extra: &str) -> TestStack {
        let unique = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let prefix = format!("t{unique}_");
        let dir = std::env::temp_dir().join(format!("wsctl-stack-{unique}"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let app_image = format!("wsctl-test-{unique}:app");
        let built = Command::new(static_wsctl())
            .args(["build", "--tag", &app_image])
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let stack = TestStack {
            prefix,
            dir,
            public: format!("127.0.0.1:{port}"),
            app_image,
        };
        stack.write_config(extra);
        stack
    }

    pub fn write_config(&self, extra: &str) {
        self.write_config_for(&self.app_image, extra);
    }

    /// The config of an external app (`app_kind: external`) running the
    /// image `app`; the checker runs this stack's wsctl image.
    pub fn write_external_config(&self, app: &str, extra: &str) {
        let images = format!("  checker: \"{}\"\napp_kind: external\n", self.app_image);
        self.write_yaml(app, &images, extra);
    }

    /// The config with `app` as the service image.
    pub fn write_config_for(&self, app: &str, extra: &str) {
        self.write_yaml(app, "", extra);
    }

    /// `after_app`: lines right after `images.app` (more images, at their
    /// indentation, then top-level keys).
    fn write_yaml(&self, app: &str, after_app: &str, extra: &str) {
        // Defaults for tests, unless `extra` sets them itself.
        let mut defaults = String::new();
        for (key, line) in [
            ("ready_timeout", "ready_timeout: 20\n"),
            ("drain_timeout", "drain_timeout: 5\n"),
            // The tests read /status through the public address from the
            // host: that traffic arrives from the Docker network's gateway.
            (
                "private_networks",
                "private_networks: [\"127.0.0.0/8\", \"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]\n",
            ),
        ] {
            if !extra.contains(key) {
                defaults.push_str(line);
            }
        }
        let yaml = format!(
            "prefix: \"{}\"\npublic_address: \"{}\"\nimages:\n  app: \"{}\"\n{after_app}{defaults}{extra}",
            self.prefix, self.public, app
        );
        std::fs::write(self.dir.join("wsctl.yaml"), yaml).unwrap();
    }

    /// Runs `wsctl ARGS` against this stack.
    pub fn wsctl(&self, args: &[&str]) -> Output {
        super::wsctl()
            .args(args)
            .arg("--config")
            .arg(self.dir.join("wsctl.yaml"))
            .output()
            .expect("run wsctl")
    }

    /// Runs `wsctl ARGS` against this stack with `env` added to its
    /// environment (secrets, `WSCTL_<KEY>` overrides).
    pub fn wsctl_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        super::wsctl()
            .args(args)
            .arg("--config")
            .arg(self.dir.join("wsctl.yaml"))
            .envs(env.iter().copied())
            .output()
            .expect("run wsctl")
    }

    /// Starts `wsctl ARGS --json` against this stack, reading its events.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut command = super::wsctl();
        command
            .args(args)
            .arg("--json")
            .arg("--config")
            .arg(self.dir.join("wsctl.yaml"));
        Running::spawn(command)
    }

    /// Runs `wsctl ARGS`, which must succeed (exit 0).
    pub fn wsctl_ok(&self, args: &[&str]) -> Output {
        let output = self.wsctl(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "wsctl {args:?}: {}",
            explain(&output)
        );
        output
    }

    /// Runs `wsctl ARGS` on a blocking thread, so live clients on the
    /// test's runtime keep going while it runs.
    pub async fn wsctl_while_live(&self, args: &[&str]) -> Output {
        let config = self.dir.join("wsctl.yaml");
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            super::wsctl()
                .args(args)
                .arg("--config")
                .arg(config)
                .output()
                .expect("wsctl runs")
        })
        .await
        .expect("wsctl task")
    }

    /// `wsctl status --json`: exit 0, or 3 when the live colour is not
    /// healthy (nothing live yet, a container down), which tests of
    /// failures look at through the JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let output = self.wsctl(&["status", "--json"]);
        assert!(
            matches!(output.status.code(), Some(0) | Some(3)),
            "{}",
            explain(&output)
        );
        serde_json::from_slice(&output.stdout).expect("status JSON")
    }

    /// Nginx worker processes running in the stack's Nginx (`docker top`).
    pub fn nginx_workers(&self) -> usize {
        self.nginx_processes("nginx: worker process")
    }

    /// Old Nginx workers (shutting down after a reload, holding sockets).
    pub fn old_nginx_workers(&self) -> usize {
        self.nginx_processes("worker process is shutting down")
    }

    /// Processes of the stack's Nginx whose line contains `title`.
    fn nginx_processes(&self, title: &str) -> usize {
        let output = Command::new("docker")
            .args(["top", &format!("{}nginx", self.prefix)])
            .output()
            .expect("docker top");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains(title))
            .count()
    }

    /// `nginx -s reload` inside the stack's Nginx, as a person would.
    pub fn reload_nginx_by_hand(&self) {
        let output = Command::new("docker")
            .args(["exec", &format!("{}nginx", self.prefix)])
            .args(["/usr/sbin/nginx", "-s", "reload"])
            .output()
            .expect("docker exec");
        assert!(output.status.success(), "{}", explain(&output));
    }

    /// What the engine and wsctl say about this stack, for a failing
    /// test's log: its containers, the Nginx log's tail, status, history.
    pub fn snapshot(&self) -> String {
        let run = |program: &str, args: &[&str]| {
            let output = Command::new(program).args(args).output();
            match output {
                Ok(output) => format!(
                    "$ {program} {}\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(error) => format!("$ {program} {}: {error}\n", args.join(" ")),
            }
        };
        let nginx = format!("{}nginx", self.prefix);
        let filter = format!("name={}", self.prefix);
        let mut text = run(
            "docker",
            &[
                "ps",
                "-a",
                "--filter",
                &filter,
                "--format",
                "{{.Names}} {{.Status}} {{.Image}}",
            ],
        );
        text.push_str(&run("docker", &["top", &nginx]));
        text.push_str(&run("docker", &["logs", "--tail", "60", &nginx]));
        for args in [["status", "--json"], ["history", "--json"]] {
            let output = self.wsctl(&args);
            text.push_str(&format!("$ wsctl {}\n{}", args.join(" "), explain(&output)));
        }
        text
    }

    /// `/status` through the public Nginx address.
    pub async fn public_status(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/status", self.public))
            .await
            .expect("public address answers")
            .json()
            .await
            .expect("JSON")
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        remove_everything(
            Some(self.prefix.clone()),
            Vec::new(),
            vec![self.app_image.clone()],
            vec![format!("{}wsctl", self.prefix)],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes containers (those named, and all whose name contains `prefix`),
/// images and networks, ignoring what is already gone. Runs on its own
/// thread and runtime so that it works from `Drop`, also while a test's
/// runtime is unwinding.
pub fn remove_everything(
    prefix: Option<String>,
    containers: Vec<String>,
    images: Vec<String>,
    networks: Vec<String>,
) {
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Runtime::new() else {
            return;
        };
        runtime.block_on(async {
            let Ok(docker) = Docker::connect_with_defaults() else {
                return;
            };
            let Ok(docker) = docker.negotiate_version().await else {
                return;
            };
            let mut doomed = containers;
            if let Some(prefix) = &prefix {
                let filters = std::collections::HashMap::from([("name", vec![prefix.as_str()])]);
                let options = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                let listed = docker
                    .list_containers(Some(options))
                    .await
                    .unwrap_or_default();
                doomed.extend(listed.into_iter().filter_map(|container| container.id));
            }
            for container in doomed {
                let force = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = docker.remove_container(&container, Some(force)).await;
            }
            // The journal's records are volumes named after the prefix.
            if let Some(prefix) = &prefix {
                let filters = std::collections::HashMap::from([("name", vec![prefix.as_str()])]);
                let options = ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                let listed = docker.list_volumes(Some(options)).await.ok();
                for volume in listed.and_then(|listed| listed.volumes).unwrap_or_default() {
                    let _ = docker
                        .remove_volume(
                            &volume.name,
                            None::<bollard::query_parameters::RemoveVolumeOptions>,
                        )
                        .await;
                }
            }
            for network in networks {
                let _ = docker.remove_network(&network).await;
            }
            for image in images {
                let force = RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(&image, Some(force), None).await;
            }
        });
    })
    .join();
}

/// Images a test builds with `docker build`, removed when dropped (also
/// when the test fails).
#[derive(Default)]
pub struct BuiltImages(Vec<String>);

impl BuiltImages {
    /// A fresh directory for a build context.
    pub fn context() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsctl-context-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Removes `tag` when dropped: an image built some other way.
    pub fn adopt(&mut self, tag: &str) {
        self.0.push(tag.to_string());
    }

    /// Builds `tag` from `context` (which holds its Dockerfile), then
    /// removes the context.
    pub fn build(&mut self, tag: &str, context: &Path) {
        self.0.push(tag.to_string());
        let built = Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(context)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(context);
        assert!(built.status.success(), "{}", explain(&built));
    }
}

impl Drop for BuiltImages {
    fn drop(&mut self) {
        remove_everything(None, Vec::new(), std::mem::take(&mut self.0), Vec::new());
    }
}

/// A finished command's output, for assertion messages.
pub fn explain(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A `wsctl ... --json` run in progress.
pub struct Running {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

impl Running {
    /// Starts `command` (a `wsctl ... --json`), reading its stdout lines.
    pub fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run wsctl");
        let (sender, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 60 s) until the run announces that `step` started;
    /// false when it ended first.
    pub fn wait_for_step(&mut self, step: &str) -> bool {
        self.wait_for(|event| {
            event["event"] == "step" && event["step"] == step && event["status"] == "started"
        })
    }

    /// Waits (up to 60 s) for an event that `wanted` picks; false when the
    /// run ended first.
    pub fn wait_for(&mut self, wanted: impl Fn(&serde_json::Value) -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                return false;
            };
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            self.seen.push(line);
            if wanted(&event) {
                return true;
            }
        }
        false
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -s {signal} failed");
    }

    /// Waits for the exit: `(exit code, stdout, stderr)`; killed after 120 s.
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status.code(), self.seen.join("\n"), stderr)
    }
}
