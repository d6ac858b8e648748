//! A real Redis Cluster per test: three masters and three replicas on
//! loopback, formed with `redis-cli --cluster create`, stopped when dropped.
//! Ports stay below 55536, because each node's cluster bus listens on its
//! port + 10000.

use std::process::Command;
use std::time::{Duration, Instant};

use super::redis::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// Six consecutive free ports (and their bus ports) in 20000..45000.
fn free_ports() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + fastrand::u16(0..25_000);
        let free = (base..base + 6).all(|port| {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no six free ports for a Redis Cluster");
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster and waits until every node says
    /// `cluster_state:ok`. Failover after 1 s without an answer.
    pub fn start() -> RedisCluster {
        let base = free_ports();
        let nodes: Vec<RedisServer> = (base..base + 6)
            .map(|port| {
                RedisServer::start_on(
                    port,
                    0,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        // Replicas sync at once (the default waits 5 s), so
                        // a master killed early has a replica to promote.
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// The seed list for `REDIS_URL` with `REDIS_CLUSTER=true`.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("redis://{}", node.addr()))
            .collect();
        urls.join(",")
    }

    /// Waits until every running node reports a healthy cluster and every
    /// running replica is in sync with its master.
    pub fn wait_until_ok(&self) {
        let started = Instant::now();
        loop {
            let ok = self
                .nodes
                .iter()
                .filter(|node| node.is_running())
                .all(|node| {
                    let replicating = node.cli(&["INFO", "replication"]);
                    node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                        && (replicating.contains("role:master")
                            || replicating.contains("master_link_status:up"))
                });
            if ok {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Running nodes that are masters now.
    pub fn masters(&self) -> usize {
        self.nodes
            .iter()
            .filter(|node| node.is_running() && node.cli(&["ROLE"]).starts_with("master"))
            .count()
    }

    /// The index of a node that is a master now.
    pub fn a_master(&self) -> usize {
        self.nodes
            .iter()
            .position(|node| node.is_running() && node.cli(&["ROLE"]).starts_with("master"))
            .expect("a master")
    }
}
