//! A real OpenSSH server for `ssh://` engines: its own host key, one client
//! key the test makes, and a forced command that runs `docker system
//! dial-stdio` against the engine the test names (so one sshd can stand in
//! for a remote machine whose docker is that engine). It listens on port 22
//! of a loopback address of its own (127.77.x.y): bollard 0.21 cannot
//! reach an ssh port other than 22 (wsctl refuses such an address).
//! Stopped, and its host key dropped from known hosts, when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::docker::explain;

pub struct Sshd {
    child: Child,
    dir: PathBuf,
    /// The loopback address it listens on, port 22.
    pub address: String,
    /// The client's private key (wsctl.yaml's `ssh_key`).
    pub key: PathBuf,
}

impl Sshd {
    /// An sshd whose logins reach the engine at `docker_socket`
    /// (`unix:///...`).
    pub fn start(docker_socket: &str) -> Sshd {
        let unique = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let dir = std::env::temp_dir().join(format!("wsctl-sshd-{unique}"));
        std::fs::create_dir_all(&dir).expect("sshd directory");
        let keygen = |name: &str| {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(name))
                .output()
                .expect("ssh-keygen");
            assert!(made.status.success(), "{}", explain(&made));
        };
        keygen("host_key");
        keygen("client_key");
        let public = std::fs::read_to_string(dir.join("client_key.pub")).expect("public key");
        let forced = format!(
            "command=\"docker -H {docker_socket} system dial-stdio\",no-pty,no-port-forwarding,\
             no-agent-forwarding,no-X11-forwarding {public}"
        );
        std::fs::write(dir.join("authorized_keys"), forced).expect("authorized_keys");
        // A loopback address whose port 22 is free (nothing binds the
        // wildcard's port 22 on the test machine: no sshd runs there).
        let address = (0..200u32)
            .map(|i| {
                let n = (std::process::id().wrapping_mul(31) + i * 97) % 60_000;
                format!("127.77.{}.{}", n / 250, n % 250 + 2)
            })
            .find(|address| std::net::TcpListener::bind((address.as_str(), 22)).is_ok())
            .expect("a loopback address with port 22 free (is an sshd on *:22?)");
        let config = format!(
            "Port 22\nListenAddress {address}\nHostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             MaxStartups 50\nMaxSessions 50\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        // sshd's privilege separation directory (Debian's init script makes it).
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (Debian's openssh-server) runs");
        let sshd = Sshd {
            child,
            key: dir.join("client_key"),
            dir,
            address,
        };
        // Bounded: 10 s for sshd to listen.
        let started = Instant::now();
        while std::net::TcpStream::connect((sshd.address.as_str(), 22)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd never listened on {}:22",
                sshd.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// `ssh://root@ADDRESS`, wsctl.yaml's `docker_host`.
    pub fn docker_host(&self) -> String {
        format!("ssh://root@{}", self.address)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // ssh added the host key on first contact (accept-new).
        let _ = Command::new("ssh-keygen")
            .args(["-R", &self.address])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
