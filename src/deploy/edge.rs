//! A canary as Nginx sees it: every colour's answers, for any app.
//!
//! Nginx writes one JSON line per request to its standard output
//! (`nginx/nginx.conf`, `log_format wsctl_json`), naming the upstream
//! replica that answered (`upstream`: its address). The analysis reads the
//! Nginx container's log through the engine since the step began, maps
//! each address to its colour (the replicas' addresses on the stack's
//! network), and counts per colour:
//! - plain requests and those answered 5xx;
//! - WebSocket upgrades, and those that failed (answered anything but 101);
//! - the upstream's time to answer (`upstream_header_time`: for an upgrade,
//!   the handshake).
//!
//! Nginx logs a WebSocket when it closes, so sockets still open are in no
//! count: the ratios are over completed attempts (refused upgrades,
//! closed sockets, answered requests). Requests Nginx refused itself (a
//! per-address limit's 429) have no upstream and count for no colour.

use std::collections::HashMap;

use serde::Deserialize;

use super::Stack;
use super::swarm::services;
use crate::deploy::config::Color;
use crate::deploy::{containers, docker};

/// One colour's answers, as Nginx logged them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeTotals {
    /// Plain requests (no upgrade) answered.
    pub requests: u64,
    /// ... of which 5xx.
    pub server_errors: u64,
    /// Upgrade attempts completed (refused, or opened and closed since).
    pub upgrades: u64,
    /// ... of which not answered 101.
    pub upgrades_failed: u64,
    /// Upstream header times, in seconds.
    pub header_times: Vec<f64>,
}

impl EdgeTotals {
    /// Requests and upgrades completed.
    pub fn completed(&self) -> u64 {
        self.requests + self.upgrades
    }

    pub fn server_error_ratio(&self) -> f64 {
        ratio(self.server_errors, self.requests)
    }

    pub fn failed_upgrade_ratio(&self) -> f64 {
        ratio(self.upgrades_failed, self.upgrades)
    }

    /// The 95th percentile of the upstream header times (nearest rank).
    pub fn p95_seconds(&self) -> Option<f64> {
        if self.header_times.is_empty() {
            return None;
        }
        let mut times = self.header_times.clone();
        times.sort_by(f64::total_cmp);
        let rank = ((0.95 * times.len() as f64).ceil() as usize).clamp(1, times.len());
        Some(times[rank - 1])
    }

    fn add(&mut self, line: &LogLine) {
        let upgrade = !line.upgrade.is_empty();
        if upgrade {
            self.upgrades += 1;
            // 499: the client gave up first, no verdict on the app.
            if line.status != 101 && line.status != 499 {
                self.upgrades_failed += 1;
            }
        } else {
            self.requests += 1;
            if line.status >= 500 {
                self.server_errors += 1;
            }
        }
        if let Some(time) = last_of(&line.upstream_header_time).and_then(|t| t.parse().ok()) {
            self.header_times.push(time);
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The fields of an access log line the analysis reads.
#[derive(Debug, Deserialize)]
struct LogLine {
    msec: f64,
    status: u16,
    #[serde(default)]
    upgrade: String,
    #[serde(default)]
    upstream: String,
    #[serde(default)]
    upstream_header_time: String,
}

/// The last of Nginx's comma-separated values (one per upstream tried):
/// the one that answered. `-` means none.
fn last_of(value: &str) -> Option<&str> {
    let last = value.rsplit(',').next()?.trim();
    (!last.is_empty() && last != "-").then_some(last)
}

/// Each replica's `ip:port` on the stack's network, with its colour (on
/// Swarm, each running task's overlay address).
pub async fn colours_by_address(stack: &Stack) -> HashMap<String, Color> {
    let network = stack.config.network_name();
    let mut colours = HashMap::new();
    if stack.config.is_swarm() {
        for color in Color::ALL {
            let addresses = services::addresses(stack, color).await.unwrap_or_default();
            for address in addresses {
                colours.insert(format!("{address}:{}", stack.config.app_port), color);
            }
        }
        return colours;
    }
    for color in Color::ALL {
        let Ok(replicas) = containers::inspect_all(stack, color).await else {
            continue;
        };
        for info in replicas.into_iter().filter_map(|(_, info)| info) {
            if let Some(address) = info.addresses.get(&network) {
                colours.insert(format!("{address}:{}", stack.config.app_port), color);
            }
        }
    }
    colours
}

/// Both colours' answers since `since` (Unix seconds, fractions kept).
pub async fn read(stack: &Stack, since: f64) -> HashMap<Color, EdgeTotals> {
    let colours = colours_by_address(stack).await;
    let log = docker::stdout_since(&stack.docker, &stack.config.name("nginx"), since as i64).await;
    tally(&log, since, &colours)
}

/// Counts the log's lines at or after `since` by the colour of their
/// upstream.
fn tally(log: &str, since: f64, colours: &HashMap<String, Color>) -> HashMap<Color, EdgeTotals> {
    let mut totals: HashMap<Color, EdgeTotals> = HashMap::new();
    for line in log.lines() {
        let Ok(line) = serde_json::from_str::<LogLine>(line.trim()) else {
            continue;
        };
        if line.msec < since {
            continue;
        }
        let Some(color) = last_of(&line.upstream).and_then(|address| colours.get(address)) else {
            continue;
        };
        totals.entry(*color).or_default().add(&line);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(msec: f64, status: u16, upgrade: bool, upstream: &str, header: &str) -> String {
        serde_json::json!({
            "msec": msec, "remote": "172.18.0.1", "request": "GET /ws/ HTTP/1.1",
            "status": status, "bytes": 0, "request_time": 0.1,
            "upgrade": if upgrade { "websocket" } else { "" },
            "upstream": upstream, "upstream_status": status.to_string(),
            "upstream_connect_time": "0.000", "upstream_header_time": header,
            "user_agent": "", "request_id": "x",
        })
        .to_string()
    }

    #[test]
    fn each_colour_counts_what_its_replicas_answered_since_the_step_began() {
        let colours = HashMap::from([
            ("10.0.0.2:8000".to_string(), Color::Blue),
            ("10.0.0.3:8000".to_string(), Color::Green),
        ]);
        let log = [
            // Before the step: not counted.
            line(99.0, 500, false, "10.0.0.3:8000", "0.001"),
            line(100.0, 200, false, "10.0.0.2:8000", "0.002"),
            line(100.1, 101, true, "10.0.0.2:8000", "0.003"),
            line(100.2, 500, true, "10.0.0.3:8000", "0.004"),
            line(100.3, 101, true, "10.0.0.3:8000", "0.005"),
            line(100.4, 502, false, "10.0.0.9:8000, 10.0.0.3:8000", "-, 0.5"),
            line(100.5, 499, true, "10.0.0.3:8000", "-"),
            // Refused by Nginx itself: no upstream, no colour.
            line(100.6, 429, true, "", ""),
            "not json".to_string(),
        ]
        .join("\n");
        let totals = tally(&log, 100.0, &colours);
        let blue = &totals[&Color::Blue];
        assert_eq!(
            (
                blue.requests,
                blue.server_errors,
                blue.upgrades,
                blue.upgrades_failed
            ),
            (1, 0, 1, 0)
        );
        let green = &totals[&Color::Green];
        assert_eq!(
            (
                green.requests,
                green.server_errors,
                green.upgrades,
                green.upgrades_failed
            ),
            (1, 1, 3, 1)
        );
        assert!((green.failed_upgrade_ratio() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(green.server_error_ratio(), 1.0);
        assert_eq!(green.p95_seconds(), Some(0.5));
        assert_eq!(EdgeTotals::default().p95_seconds(), None);
    }
}
