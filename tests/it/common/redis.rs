//! A real `redis-server` per test, on a free loopback port, stopped when
//! dropped. Missing `redis-server` fails the test: `scripts/test.sh`
//! installs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: std::path::PathBuf,
    /// Milliseconds Redis's wall clock is ahead of this host's (negative:
    /// behind), through tests/support/clock_skew.c.
    clock_skew_ms: i64,
    /// More `redis-server` arguments (cluster mode).
    extra_args: Vec<String>,
}

/// Builds the clock shim once per test binary.
fn clock_skew_shim() -> std::path::PathBuf {
    static SHIM: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| {
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/clock_skew.c");
        let out = std::env::temp_dir().join(format!("wsctl-clock-skew-{}.so", std::process::id()));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(source)
            .arg("-ldl")
            .status()
            .expect("cc (the C compiler Rust links with) builds the clock shim");
        assert!(status.success(), "building {source} failed");
        out
    })
    .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_clock_skew(0)
    }

    /// A Redis whose wall clock (`TIME`, and `TIME` inside scripts) is off
    /// by `skew_ms` from this host's.
    pub fn start_with_clock_skew(skew_ms: i64) -> RedisServer {
        Self::start_on(free_port(), skew_ms, &[])
    }

    /// A Redis on `port` with more arguments.
    pub fn start_on(port: u16, skew_ms: i64, extra_args: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("wsctl-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            clock_skew_ms: skew_ms,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// `host:port`, for a proxy in front of this server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if self.clock_skew_ms != 0 {
            command
                .env("LD_PRELOAD", clock_skew_shim())
                .env("CLOCK_SKEW_MS", self.clock_skew_ms.to_string());
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra_args)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/test.sh, which installs it");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Freezes Redis: connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Wakes Redis up: it then runs whatever waited in its sockets.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Stops Redis and starts an empty one on the same port.
    pub fn restart_empty(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
