//! Docker's userland proxy in front of the public address: what `status`
//! warns of.
//!
//! A port Nginx publishes on a loopback address is served by a
//! `docker-proxy` process of the engine (iptables cannot DNAT loopback
//! traffic without `route_localnet`). That one process gives out near
//! 3,000 concurrent connections here (docs/BENCHMARKS.md section 8: it
//! exited three times out of three at about 3,080, and the public address
//! refused every connection until Nginx restarted). Nothing in the engine's
//! API says whether the proxy is on, so this looks for the process itself,
//! which it can see only when the engine runs on this machine; for a remote
//! engine it says nothing.

use std::net::SocketAddr;

/// Past this many WebSockets on the live colour, a public address served
/// by docker-proxy is worth a warning (it gives out near 3,000).
pub const WARN_ABOVE: i64 = 2000;

/// A warning when `public` is served by a `docker-proxy` of this machine
/// and the stack holds more than [`WARN_ABOVE`] WebSockets.
pub fn warning(public: SocketAddr, connections: i64) -> Option<String> {
    if connections <= WARN_ABOVE || !served_by_docker_proxy(public) {
        return None;
    }
    Some(format!(
        "public_address {public} is served by Docker's userland proxy (docker-proxy), which \
         gives out near 3,000 connections and then refuses every new one; the stack holds \
         {connections}: set nginx_network: host in wsctl.yaml (Nginx listens on it itself; \
         `wsctl deploy --proxy` moves it), or run dockerd with \"userland-proxy\": false in \
         /etc/docker/daemon.json"
    ))
}

/// Whether a `docker-proxy` process of this machine listens on `public`.
fn served_by_docker_proxy(public: SocketAddr) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|process| {
        std::fs::read(process.path().join("cmdline")).is_ok_and(|cmdline| proxies(&cmdline, public))
    })
}

/// Whether a process command line (NUL-separated, as /proc gives it) is a
/// docker-proxy for `public`: `docker-proxy -proto tcp -host-ip IP
/// -host-port PORT -container-ip ... -container-port ...`.
fn proxies(cmdline: &[u8], public: SocketAddr) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
    let is_proxy = args
        .first()
        .is_some_and(|program| program.ends_with(b"docker-proxy"));
    let value = |flag: &[u8]| {
        args.windows(2)
            .find(|pair| pair[0] == flag)
            .map(|pair| String::from_utf8_lossy(pair[1]).into_owned())
    };
    is_proxy
        && value(b"-host-ip").as_deref() == Some(public.ip().to_string().as_str())
        && value(b"-host-port").as_deref() == Some(public.port().to_string().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_proxy_command_line_names_its_address() {
        let public: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let cmdline = |args: &[&str]| args.join("\0").into_bytes();
        let line = |ip: &str, port: &str| {
            cmdline(&[
                "/usr/sbin/docker-proxy",
                "-proto",
                "tcp",
                "-host-ip",
                ip,
                "-host-port",
                port,
                "-container-ip",
                "172.18.0.3",
                "-container-port",
                "80",
            ])
        };
        assert!(proxies(&line("127.0.0.1", "8080"), public));
        assert!(!proxies(&line("127.0.0.1", "8081"), public));
        assert!(!proxies(&line("0.0.0.0", "8080"), public));
        let nginx = cmdline(&[
            "/usr/bin/nginx",
            "-host-ip",
            "127.0.0.1",
            "-host-port",
            "8080",
        ]);
        assert!(!proxies(&nginx, public));
    }

    #[test]
    fn a_few_sockets_are_no_warning() {
        let public: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(warning(public, WARN_ABOVE).is_none());
    }
}
