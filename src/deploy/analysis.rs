//! A canary's analysis: is the new colour, under a share of real traffic,
//! as good as the old one?
//!
//! Every `analysis.interval` seconds both colours' `/metrics` are read
//! through the engine (exec in each replica, so remote engines work) and
//! compared with what they said when the step began:
//! - errors per inbound frame (`websocket_errors_total` over
//!   `websocket_messages_total{direction="in"}`), against
//!   `max_error_ratio` and the old colour's ratio plus
//!   `max_error_ratio_over_old`;
//! - the 95th-percentile message latency from
//!   `websocket_message_duration_seconds`, against `max_p95_seconds`;
//! - every replica of the new colour still running and not unhealthy;
//! - Nginx's view of both colours (`edge.rs`, for every app): 5xx per
//!   request, upgrades not answered 101 per upgrade, and the p95 time to
//!   answer, once the new colour completed `min_requests`. An external app
//!   without `metrics_path` is judged on this view alone.
//!
//! A sample counts once the new colour has answered `min_messages`
//! messages in the step; until then the analysis waits, and past
//! `--analysis-timeout` it gives up as inconclusive. More failed samples
//! than `failure_limit` fail the analysis, which the runner turns into an
//! automatic rollback (its undo).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{DeployError, Stack, checks, containers, edge};
use crate::deploy::config::Color;

/// What one colour's `/metrics` say, summed over its replicas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Frames received from clients (`direction="in"`).
    pub frames_in: f64,
    /// Messages answered (`message_response`, `direction="out"`).
    pub answered: f64,
    /// Connections accepted (`websocket_connections_total`).
    pub connections: f64,
    pub errors: f64,
    pub errors_by_type: BTreeMap<String, f64>,
    /// The latency histogram: (upper bound, cumulative count).
    pub buckets: Vec<(f64, f64)>,
}

impl Totals {
    /// Parses one Prometheus text exposition (prometheus-parse).
    pub fn parse(text: &str) -> Totals {
        let lines = text.lines().map(|line| Ok(line.to_string()));
        let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
            return Totals::default();
        };
        let mut totals = Totals::default();
        for sample in scrape.samples {
            let label = |name: &str| sample.labels.get(name).unwrap_or("").to_string();
            match (sample.metric.as_str(), &sample.value) {
                ("websocket_messages_total", prometheus_parse::Value::Counter(value)) => {
                    if label("direction") == "in" {
                        totals.frames_in += value;
                    } else if label("type") == "message_response" {
                        totals.answered += value;
                    }
                }
                ("websocket_connections_total", prometheus_parse::Value::Counter(value)) => {
                    totals.connections += value;
                }
                ("websocket_errors_total", prometheus_parse::Value::Counter(value)) => {
                    totals.errors += value;
                    *totals.errors_by_type.entry(label("type")).or_default() += value;
                }
                (
                    "websocket_message_duration_seconds",
                    prometheus_parse::Value::Histogram(counts),
                ) => {
                    totals.buckets = counts
                        .iter()
                        .map(|count| (count.less_than, count.count))
                        .collect();
                }
                _ => {}
            }
        }
        totals
    }

    /// Adds another replica's totals.
    fn add(&mut self, other: &Totals) {
        self.frames_in += other.frames_in;
        self.answered += other.answered;
        self.connections += other.connections;
        self.errors += other.errors;
        for (kind, value) in &other.errors_by_type {
            *self.errors_by_type.entry(kind.clone()).or_default() += value;
        }
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else if self.buckets.len() == other.buckets.len() {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 += theirs.1;
            }
        }
    }

    /// What happened since `base` (a replica that restarted counts from 0).
    fn since(&self, base: &Totals) -> Totals {
        let delta = |now: f64, then: f64| if now >= then { now - then } else { now };
        Totals {
            frames_in: delta(self.frames_in, base.frames_in),
            answered: delta(self.answered, base.answered),
            connections: delta(self.connections, base.connections),
            errors: delta(self.errors, base.errors),
            errors_by_type: self
                .errors_by_type
                .iter()
                .map(|(kind, value)| {
                    let then = base.errors_by_type.get(kind).copied().unwrap_or(0.0);
                    (kind.clone(), delta(*value, then))
                })
                .filter(|(_, value)| *value > 0.0)
                .collect(),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(index, (bound, count))| {
                    let then = base.buckets.get(index).map_or(0.0, |bucket| bucket.1);
                    (*bound, delta(*count, then))
                })
                .collect(),
        }
    }

    /// Errors per inbound frame (0 without frames).
    pub fn error_ratio(&self) -> f64 {
        if self.frames_in > 0.0 {
            self.errors / self.frames_in
        } else {
            0.0
        }
    }

    /// Errors per accepted connection (0 without connections).
    pub fn errors_per_connection(&self) -> f64 {
        if self.connections > 0.0 {
            self.errors / self.connections
        } else {
            0.0
        }
    }

    /// Connection attempts refused (too many connections, a forbidden
    /// origin, no valid token) per attempt.
    pub fn refused_ratio(&self) -> f64 {
        let refused: f64 = ["max_connections", "origin_forbidden", "unauthorized"]
            .iter()
            .filter_map(|kind| self.errors_by_type.get(*kind))
            .sum();
        let attempts = self.connections + refused;
        if attempts > 0.0 {
            refused / attempts
        } else {
            0.0
        }
    }

    /// The 95th percentile from the histogram, interpolated inside its
    /// bucket as Prometheus's `histogram_quantile` does.
    pub fn p95(&self) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = 0.95 * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let inside = count - lower.1;
                let fraction = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * fraction);
            }
            lower = (bound, count);
        }
        None
    }
}

/// One sample of a step, as `{"event": "analysis", ...}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub percent: u8,
    pub sample: u32,
    pub seconds: f64,
    pub new_messages: f64,
    pub new_error_ratio: f64,
    pub old_error_ratio: f64,
    pub new_connections: f64,
    pub new_errors_per_connection: f64,
    pub new_refused_ratio: f64,
    pub new_errors_by_type: BTreeMap<String, f64>,
    pub new_p95_seconds: Option<f64>,
    /// Nginx's view (`edge.rs`): requests and upgrades the new colour
    /// completed in the step, its ratios and the old colour's.
    pub new_requests: u64,
    pub new_5xx_ratio: f64,
    pub old_5xx_ratio: f64,
    pub new_failed_upgrade_ratio: f64,
    pub old_failed_upgrade_ratio: f64,
    pub new_upstream_p95_seconds: Option<f64>,
    /// `waiting` (too few messages), `ok`, or `failed`.
    pub verdict: &'static str,
    /// The failing metric and its values; empty when ok.
    pub detail: String,
}

/// Reads the colour's totals (all replicas) and what is wrong with its
/// containers or tasks (stopped, unhealthy, gone).
async fn read(stack: &Stack, color: Color) -> anyhow::Result<(Totals, Vec<String>)> {
    let mut totals = Totals::default();
    let mut problems = Vec::new();
    for replica in containers::looked_at(stack, color).await? {
        problems.extend(replica.problem);
        let Some(target) = replica.target else {
            continue;
        };
        if let Some(text) = checks::metrics(&stack.docker, &stack.config, &target).await {
            totals.add(&Totals::parse(&text));
        }
    }
    Ok((totals, problems))
}

/// How long an analysis runs.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// A canary step: `seconds` of passing samples after the first counted
    /// one, which must come within `timeout` (else inconclusive).
    Counted {
        seconds: Duration,
        timeout: Duration,
    },
    /// `--watch` after the switch: `seconds`, whatever the traffic; only a
    /// breach ends it early.
    Elapsed(Duration),
}

/// Runs one analysis of `new` (against `old` when given) until `until`
/// says it passed; every sample is reported.
///
/// `last` keeps the step's latest sample, whatever the step's end: the
/// run's record carries it.
pub async fn run_step(
    stack: &mut Stack,
    new: Color,
    old: Option<Color>,
    percent: u8,
    until: Until,
    last: &mut Option<serde_json::Value>,
) -> anyhow::Result<String> {
    let settings = stack.config.analysis.clone();
    let interval = Duration::from_secs_f64(settings.interval);
    let (new_base, _) = read(stack, new).await?;
    let old_base = match old {
        Some(old) => read(stack, old).await?.0,
        None => Totals::default(),
    };
    let started = Instant::now();
    let edge_since = unix_now();
    // The app's metrics, when it has them with the contract's names; an
    // external app without is judged on Nginx's view alone.
    let uses_metrics = !stack.config.is_external() || stack.config.metrics_path.is_some();
    let mut counted_since: Option<Instant> = None;
    let mut failures = 0u32;
    let mut number = 0u32;
    loop {
        tokio::time::sleep(interval).await;
        number += 1;
        let (new_now, problems) = read(stack, new).await?;
        let old_now = match old {
            Some(old) => read(stack, old).await?.0,
            None => Totals::default(),
        };
        let fresh = new_now.since(&new_base);
        let before = old_now.since(&old_base);
        let seen = edge::read(stack, edge_since).await;
        let edge_new = seen.get(&new).cloned().unwrap_or_default();
        let edge_old = old
            .and_then(|old| seen.get(&old).cloned())
            .unwrap_or_default();
        let mut sample = Sample {
            percent,
            sample: number,
            seconds: started.elapsed().as_secs_f64(),
            new_messages: fresh.answered,
            new_error_ratio: fresh.error_ratio(),
            old_error_ratio: before.error_ratio(),
            new_connections: fresh.connections,
            new_errors_per_connection: fresh.errors_per_connection(),
            new_refused_ratio: fresh.refused_ratio(),
            new_errors_by_type: fresh.errors_by_type.clone(),
            new_p95_seconds: fresh.p95(),
            new_requests: edge_new.completed(),
            new_5xx_ratio: edge_new.server_error_ratio(),
            old_5xx_ratio: edge_old.server_error_ratio(),
            new_failed_upgrade_ratio: edge_new.failed_upgrade_ratio(),
            old_failed_upgrade_ratio: edge_old.failed_upgrade_ratio(),
            new_upstream_p95_seconds: edge_new.p95_seconds(),
            verdict: "ok",
            detail: String::new(),
        };
        // A sample counts once the new colour has had enough traffic.
        let edge_enough = edge_new.completed() >= settings.min_requests;
        let enough = match uses_metrics {
            true => fresh.frames_in >= settings.min_messages as f64,
            false => edge_enough,
        };
        let failing = if !problems.is_empty() {
            Some(problems.join("; "))
        } else if let Some(why) = edge_enough
            .then(|| edge_view_failure(&sample, &settings, new))
            .flatten()
        {
            Some(why)
        } else if !uses_metrics {
            None
        } else if sample.new_refused_ratio > settings.max_refused_ratio {
            Some(format!(
                "{new} refused {:.3} of connection attempts (limit {}): {:?}",
                sample.new_refused_ratio, settings.max_refused_ratio, sample.new_errors_by_type
            ))
        } else if !enough {
            None
        } else if sample.new_errors_per_connection > settings.max_errors_per_connection {
            Some(format!(
                "{:.1} errors per connection on {new} (limit {}): {:?}",
                sample.new_errors_per_connection,
                settings.max_errors_per_connection,
                sample.new_errors_by_type
            ))
        } else if sample.new_error_ratio > settings.max_error_ratio
            && sample.new_error_ratio > sample.old_error_ratio + settings.max_error_ratio_over_old
        {
            Some(format!(
                "error ratio {:.3} on {new} (old {:.3}, limit {}): {:?}",
                sample.new_error_ratio,
                sample.old_error_ratio,
                settings.max_error_ratio,
                sample.new_errors_by_type
            ))
        } else {
            sample
                .new_p95_seconds
                .filter(|p95| *p95 > settings.max_p95_seconds)
                .map(|p95| {
                    format!(
                        "p95 message latency {p95:.3} s on {new} (limit {} s)",
                        settings.max_p95_seconds
                    )
                })
        };
        match &failing {
            Some(why) => {
                sample.verdict = "failed";
                sample.detail = why.clone();
                failures += 1;
            }
            None if !enough => {
                sample.verdict = "waiting";
                sample.detail = match uses_metrics {
                    true => format!(
                        "{} of {} messages on {new}",
                        fresh.frames_in, settings.min_messages
                    ),
                    false => format!(
                        "{} of {} requests on {new}, as Nginx saw them",
                        edge_new.completed(),
                        settings.min_requests
                    ),
                };
            }
            None => {
                counted_since.get_or_insert_with(Instant::now);
            }
        }
        *last = serde_json::to_value(&sample).ok();
        report(stack, &sample);
        if failures > settings.failure_limit {
            return Err(DeployError::Analysis(sample.detail).into());
        }
        let passed = match until {
            Until::Counted { seconds, .. } => {
                counted_since.is_some_and(|since| since.elapsed() >= seconds)
            }
            Until::Elapsed(seconds) => started.elapsed() >= seconds,
        };
        if passed {
            return Ok(format!(
                "{percent}% on {new}: {} samples, {} messages, error ratio {:.3} (old {:.3}), p95 {}",
                number,
                fresh.answered,
                sample.new_error_ratio,
                sample.old_error_ratio,
                sample
                    .new_p95_seconds
                    .map_or("-".to_string(), |p95| format!("{:.1} ms", p95 * 1000.0))
            ));
        }
        if let Until::Counted { timeout, .. } = until
            && counted_since.is_none()
            && started.elapsed() >= timeout
        {
            let had = match uses_metrics {
                true => format!(
                    "answered {} of the {} messages",
                    fresh.answered, settings.min_messages
                ),
                false => format!(
                    "completed {} of the {} requests",
                    edge_new.completed(),
                    settings.min_requests
                ),
            };
            return Err(DeployError::Inconclusive(format!(
                "{new} {had} the analysis needs within {} s",
                timeout.as_secs()
            ))
            .into());
        }
    }
}

/// Why Nginx's view fails the sample, if it does: the new colour's 5xx
/// or failed upgrades per attempt above their bound and above the old
/// colour's by `max_error_ratio_over_old`, or its p95 time to answer.
fn edge_view_failure(
    sample: &Sample,
    settings: &crate::deploy::config::AnalysisSettings,
    new: Color,
) -> Option<String> {
    let over_old = settings.max_error_ratio_over_old;
    if sample.new_failed_upgrade_ratio > settings.max_failed_upgrade_ratio
        && sample.new_failed_upgrade_ratio > sample.old_failed_upgrade_ratio + over_old
    {
        return Some(format!(
            "{:.3} of WebSocket upgrades to {new} failed, as Nginx saw them (old {:.3}, limit {})",
            sample.new_failed_upgrade_ratio,
            sample.old_failed_upgrade_ratio,
            settings.max_failed_upgrade_ratio
        ));
    }
    if sample.new_5xx_ratio > settings.max_5xx_ratio
        && sample.new_5xx_ratio > sample.old_5xx_ratio + over_old
    {
        return Some(format!(
            "{:.3} of requests to {new} answered 5xx, as Nginx saw them (old {:.3}, limit {})",
            sample.new_5xx_ratio, sample.old_5xx_ratio, settings.max_5xx_ratio
        ));
    }
    sample
        .new_upstream_p95_seconds
        .filter(|p95| *p95 > settings.max_upstream_p95_seconds)
        .map(|p95| {
            format!(
                "p95 time to answer {p95:.3} s on {new}, as Nginx saw it (limit {} s)",
                settings.max_upstream_p95_seconds
            )
        })
}

/// Now, in Unix seconds with fractions (Nginx's `$msec`).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// A progress line on a terminal, an `analysis` event with `--json`.
fn report(stack: &mut Stack, sample: &Sample) {
    if stack.events.is_json() {
        let mut event = serde_json::to_value(sample).unwrap_or_else(|_| json!({}));
        event["event"] = json!("analysis");
        stack.events.emit(event);
    } else {
        stack.events.progress(&format!(
            "{}% sample {}: {} {} messages, error ratio {:.3} (old {:.3}){}",
            sample.percent,
            sample.sample,
            sample.verdict,
            sample.new_messages,
            sample.new_error_ratio,
            sample.old_error_ratio,
            if sample.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", sample.detail)
            }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP websocket_messages_total WebSocket frames by type and direction
# TYPE websocket_messages_total counter
websocket_messages_total{direction="in",type="message"} 100
websocket_messages_total{direction="out",type="message_response"} 90
websocket_messages_total{direction="out",type="heartbeat"} 7
# HELP websocket_errors_total Refused frames and failed connections by error code
# TYPE websocket_errors_total counter
websocket_errors_total{type="rate_limited"} 10
websocket_errors_total{type="unavailable"} 0
# HELP websocket_message_duration_seconds Time from receiving a client message to sending its answer
# TYPE websocket_message_duration_seconds histogram
websocket_message_duration_seconds_bucket{le="0.001"} 50
websocket_message_duration_seconds_bucket{le="0.01"} 80
websocket_message_duration_seconds_bucket{le="0.1"} 90
websocket_message_duration_seconds_bucket{le="+Inf"} 90
websocket_message_duration_seconds_sum 1.5
websocket_message_duration_seconds_count 90
"#;

    #[test]
    fn totals_come_from_the_service_metrics() {
        let totals = Totals::parse(METRICS);
        assert_eq!(totals.frames_in, 100.0);
        assert_eq!(totals.answered, 90.0);
        assert_eq!(totals.errors, 10.0);
        assert!((totals.error_ratio() - 0.1).abs() < 1e-9);
        assert_eq!(totals.buckets.len(), 4, "{totals:?}");
        // Rank 85.5 falls in (0.01, 0.1]: 0.01 + 0.09 * 5.5 / 10.
        let p95 = totals.p95().expect("p95");
        assert!((p95 - 0.0595).abs() < 1e-9, "{p95}");
    }

    #[test]
    fn a_step_sees_only_what_happened_since_it_began() {
        let base = Totals::parse(METRICS);
        let mut later = base.clone();
        later.add(&Totals::parse(METRICS));
        let delta = later.since(&base);
        assert_eq!(delta.frames_in, 100.0);
        assert_eq!(delta.errors_by_type.get("rate_limited"), Some(&10.0));
        assert!(!delta.errors_by_type.contains_key("unavailable"));
        assert_eq!(delta.buckets[0], (0.001, 50.0));
    }
}
