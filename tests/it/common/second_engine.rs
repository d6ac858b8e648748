//! A second Docker Engine beside this machine's (`scripts/second-engine.sh`),
//! reached over TCP with TLS client certificates as a remote engine should
//! be, and what the tests on it share.

use std::process::Command;

use super::docker::explain;

/// The second engine, stopped and removed (bridge included) when dropped.
/// Its TCP socket wants TLS with client certificates, as a remote engine's
/// should.
pub struct SecondEngine {
    pub n: u16,
    /// `tcp://127.0.0.1:PORT` (TLS): how wsctl reaches it.
    pub tcp: String,
    /// ca.pem, cert.pem, key.pem for `tcp`.
    pub certs: String,
    /// `unix://...`: how the test itself reaches it.
    pub socket: String,
}

impl SecondEngine {
    /// Starts one with `images` (names, space-separated) copied into it.
    pub fn start(images: &str) -> SecondEngine {
        // A number no other engine of this machine uses (bridge, paths).
        let n = (1..=250u16)
            .map(|i| (std::process::id() as u16).wrapping_add(i * 7) % 200 + 40)
            .find(|n| {
                !Command::new("ip")
                    .args(["link", "show", &format!("w2e{n}")])
                    .output()
                    .is_ok_and(|output| output.status.success())
            })
            .expect("a free engine number");
        let output = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/second-engine.sh"
            ))
            .args(["start", &n.to_string()])
            .env("SECOND_ENGINE_IMAGES", images)
            .env("TLS", "1")
            .output()
            .expect("second-engine.sh");
        // Whatever happened, `stop` cleans up from here on.
        let mut engine = SecondEngine {
            n,
            tcp: String::new(),
            certs: String::new(),
            socket: String::new(),
        };
        assert!(output.status.success(), "{}", explain(&output));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} line: {text}"))
                .to_string()
        };
        engine.tcp = value("TCP=");
        engine.certs = value("CERTS=");
        engine.socket = value("DOCKER_HOST=");
        engine
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("-H")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("docker")
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/second-engine.sh"
            ))
            .args(["stop", &self.n.to_string()])
            .output();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// A bridge network with a known subnet (and, on the second engine, a
/// bridge name its forwarding rule covers).
pub fn create_network(docker: &[&str], name: &str, subnet: &str, bridge: Option<String>) {
    let mut options = Vec::new();
    if let Some(bridge) = bridge {
        options.push("-o".to_string());
        options.push(format!("com.docker.network.bridge.name={bridge}"));
    }
    let output = Command::new("docker")
        .args(docker)
        .args(["network", "create", "--subnet", subnet])
        .args(options)
        .arg(name)
        .output()
        .expect("docker network create");
    assert!(output.status.success(), "{}", explain(&output));
}
