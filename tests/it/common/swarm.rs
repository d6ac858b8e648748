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
