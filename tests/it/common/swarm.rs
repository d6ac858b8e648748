//! A real Docker Swarm on this machine (`scripts/swarm.sh`): one engine per
//! network namespace, node 0 the manager, stopped and removed (namespaces,
//! bridge, data roots, mounts) when dropped, also when a test fails.

use std::process::{Command, Output};

use super::docker::explain;

pub struct Swarm {
    name: String,
    /// `unix://...`: the manager engine (what `DOCKER_HOST` names).
    pub manager: String,
    /// Every node's engine socket, the manager first.
    pub nodes: Vec<String>,
    /// Every node's address on the swarm's own bridge, the manager first.
    pub addresses: Vec<String>,
}

impl Swarm {
    /// A swarm of `nodes` nodes (2..=5), the stack's images in every one.
    pub fn start(nodes: usize) -> Swarm {
        let name = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
        let output = script(&["start", &name, &nodes.to_string()]);
        // Whatever happened, `stop` cleans up from here on.
        let mut swarm = Swarm {
            name,
            manager: String::new(),
            nodes: Vec::new(),
            addresses: Vec::new(),
        };
        assert!(
            output.status.success(),
            "swarm.sh start: {}",
            explain(&output)
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} line: {text}"))
                .trim_matches('"')
                .to_string()
        };
        swarm.manager = value("MANAGER=");
        swarm.nodes = value("NODES=").split(' ').map(str::to_string).collect();
        swarm.addresses = value("ADDRESSES=").split(' ').map(str::to_string).collect();
        swarm
    }

    /// Node `n` dies as a machine does (`swarm.sh kill`): its link down,
    /// its containers and its engine SIGKILLed.
    pub fn kill_node(&self, n: usize) {
        self.on_node("kill", n);
    }

    /// A killed node `n` boots again (`swarm.sh revive`): its engine starts
    /// on the data it had, rejoins the swarm and restarts its containers.
    pub fn revive_node(&self, n: usize) {
        self.on_node("revive", n);
    }

    /// `swarm.sh ACTION NAME N`, which must succeed.
    fn on_node(&self, action: &str, n: usize) {
        let output = script(&[action, &self.name, &n.to_string()]);
        assert!(
            output.status.success(),
            "swarm.sh {action}: {}",
            explain(&output)
        );
    }

    /// Node `n`'s name in the swarm (its host name).
    pub fn node_name(&self, n: usize) -> String {
        format!("{}n{n}", self.name)
    }

    /// Node `n` becomes a manager too (an edge's follower asks its own
    /// engine where the tasks run), and answers as one.
    pub fn promote(&self, n: usize) {
        let node = self.node_name(n);
        let output = self.docker(&["node", "promote", &node]);
        assert!(
            output.status.success(),
            "node promote: {}",
            explain(&output)
        );
        for _ in 0..100 {
            let info = self.docker_on(n, &["info", "--format", "{{.Swarm.ControlAvailable}}"]);
            if String::from_utf8_lossy(&info.stdout).trim() == "true" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("node {n} did not become a manager within 20 s");
    }

    /// `docker ARGS` against the manager.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_on(0, args)
    }

    /// `docker ARGS` against node `n`.
    pub fn docker_on(&self, n: usize, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["-H", &self.nodes[n]])
            .args(args)
            .output()
            .expect("docker")
    }
}

/// A wsctl stack with `platform: swarm` on a [`Swarm`]: its wsctl.yaml in a
/// directory of its own, Nginx published on the manager's address. What it
/// creates lives in the swarm's engines, which the swarm's drop removes.
pub struct SwarmStack {
    pub dir: std::path::PathBuf,
    /// `MANAGER_IP:PORT`.
    pub public: String,
    pub prefix: String,
    manager: String,
}

impl SwarmStack {
    /// wsctl.yaml with the swarm defaults of the tests and `extra` lines.
    pub fn new(swarm: &Swarm, extra: &str) -> SwarmStack {
        let unique = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let dir = std::env::temp_dir().join(format!("wsctl-swarm-{unique}"));
        std::fs::create_dir_all(&dir).expect("stack dir");
        let stack = SwarmStack {
            dir,
            public: format!("{}:18080", swarm.addresses[0]),
            prefix: format!("w{unique}_"),
            manager: swarm.manager.clone(),
        };
        stack.rewrite_extra(extra);
        stack
    }

    /// Writes wsctl.yaml again with other `extra` lines.
    pub fn rewrite_extra(&self, extra: &str) {
        let (prefix, public) = (&self.prefix, &self.public);
        let yaml = format!(
            "platform: swarm\nprefix: \"{prefix}\"\npublic_address: \"{public}\"\n\
             images: {{app: \"wsctl:local\", nginx: \"wsctl-nginx:local\", redis: \"wsctl-redis:local\"}}\n\
             ready_timeout: 60\ndrain_timeout: 5\n\
             private_networks: [\"127.0.0.0/8\", \"10.0.0.0/8\", \"172.16.0.0/12\"]\n\
             unlimited_networks: [\"10.0.0.0/8\"]\n{extra}"
        );
        std::fs::write(self.dir.join("wsctl.yaml"), yaml).expect("wsctl.yaml");
    }

    /// The `wsctl` command against this stack, through the manager.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = super::wsctl();
        command
            .args(args)
            .arg("--config")
            .arg(self.dir.join("wsctl.yaml"))
            .env("DOCKER_HOST", &self.manager);
        command
    }

    /// Starts `wsctl ARGS --json`, reading its events.
    pub fn spawn(&self, args: &[&str]) -> super::docker::Running {
        let mut command = self.command(args);
        command.arg("--json");
        super::docker::Running::spawn(command)
    }

    pub fn wsctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run wsctl")
    }

    /// `wsctl ARGS`, which must succeed.
    pub fn wsctl_ok(&self, args: &[&str]) -> Output {
        let output = self.wsctl(args);
        assert!(
            output.status.success(),
            "wsctl {}: {}",
            args.join(" "),
            explain(&output)
        );
        output
    }

    /// `wsctl ARGS` on a blocking thread, so live clients keep running.
    pub async fn wsctl_while_live(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().expect("run wsctl"))
            .await
            .expect("wsctl thread")
    }

    /// `status --json` (exit 0, or 3 when degraded).
    pub fn status_json(&self) -> serde_json::Value {
        let output = self.wsctl(&["status", "--json"]);
        assert!(
            matches!(output.status.code(), Some(0) | Some(3)),
            "{}",
            explain(&output)
        );
        serde_json::from_slice(&output.stdout).expect("status JSON")
    }
}

impl Drop for SwarmStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let output = script(&["stop", &self.name]);
        if !output.status.success() {
            eprintln!("swarm.sh stop {}: {}", self.name, explain(&output));
        }
    }
}

fn script(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/swarm.sh"))
        .args(args)
        .output()
        .expect("swarm.sh")
}
