//! `wsctl bench MODE`: load the service and report what it did.
//!
//! Exit code 0 when every connection opened and every reply was right, 1
//! when anything went wrong (failed connects, drops, lost or misnumbered
//! replies, error frames), 2 for bad arguments.

use std::io::IsTerminal;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::client::bench::latency::Latency;
use crate::client::bench::{self, BenchOptions, Mode, Report};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Open N connections and keep them.
    Hold,
    /// N connections at a fixed total message rate.
    Rtt,
    /// K messages in flight per connection.
    Flood,
    /// Broadcasts to N connections.
    Fanout,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    mode: ModeArg,
    /// WebSocket URL of the service.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws/chat/")]
    url: String,
    /// Connections to open.
    #[arg(long, short = 'n', default_value = "1000")]
    connections: usize,
    /// Seconds to hold or send.
    #[arg(long, default_value = "10", value_parser = crate::shared::input::parse_seconds)]
    duration: Duration,
    /// rtt: messages per second across all connections.
    #[arg(long, default_value = "2000", value_parser = crate::shared::input::parse_rate)]
    rate: f64,
    /// flood: messages in flight per connection.
    #[arg(long, default_value = "8")]
    in_flight: usize,
    /// fanout: broadcasts to send (one a second).
    #[arg(long, default_value = "5")]
    rounds: usize,
    /// The server's pid, to report its RSS per connection (same machine).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Loopback source addresses to spread connections over (127.0.0.1..N).
    #[arg(long, default_value = "20", value_parser = clap::value_parser!(u8).range(1..=250))]
    sources: u8,
    /// Handshakes in progress at once.
    #[arg(long, default_value = "256")]
    connect_concurrency: usize,
    /// hold: follow each session through a drain: reconnect with its
    /// session_uuid after goodbye, check it resumed and its count goes on,
    /// and report how long the move took.
    #[arg(long)]
    follow: bool,
    /// For a wss:// URL: trust this CA (PEM) beside the public roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Print one JSON object at the end instead of the summary.
    #[arg(long)]
    json: bool,
    /// Include the connect-latency histogram in the JSON (for merging the
    /// reports of child processes).
    #[arg(long, hide = true)]
    with_histogram: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let options = BenchOptions {
        mode: match args.mode {
            ModeArg::Hold => Mode::Hold,
            ModeArg::Rtt => Mode::Rtt,
            ModeArg::Flood => Mode::Flood,
            ModeArg::Fanout => Mode::Fanout,
        },
        url: args.url,
        connections: args.connections,
        duration: args.duration,
        rate: args.rate,
        in_flight: args.in_flight,
        rounds: args.rounds,
        server_pid: args.server_pid,
        sources: args.sources,
        connect_concurrency: args.connect_concurrency,
        progress: !args.json && std::io::stderr().is_terminal(),
        follow: args.follow,
        ca: args.ca,
    };
    let per_process = bench::connections_per_process();
    let mut report = if options.mode == Mode::Hold && options.connections > per_process {
        hold_in_children(&options, per_process)?
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(bench::run(options.clone()))?
    };
    if !args.with_histogram {
        report.connect_histogram = None;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&report);
    }
    if report.problems() > 0 {
        anyhow::bail!(
            "{} problems during the run (see the report)",
            report.problems()
        );
    }
    Ok(())
}

/// More connections than one process may hold: split across child
/// processes of this binary and merge their reports.
fn hold_in_children(options: &BenchOptions, per_process: usize) -> anyhow::Result<Report> {
    let children = options.connections.div_ceil(per_process);
    let rss_before = options.server_pid.and_then(bench::rss_kib);
    let exe = std::env::current_exe().context("locating wsctl for child processes")?;
    let mut running = Vec::new();
    for child in 0..children {
        let share =
            options.connections / children + usize::from(child < options.connections % children);
        let mut command = Command::new(&exe);
        command
            .args([
                "bench",
                "hold",
                "--json",
                "--with-histogram",
                "--url",
                &options.url,
            ])
            .args(["--connections", &share.to_string()])
            .args(["--duration", &options.duration.as_secs_f64().to_string()])
            .args(["--sources", &options.sources.to_string()])
            .args(options.follow.then_some("--follow"))
            .args(
                options
                    .ca
                    .iter()
                    .flat_map(|ca| [std::ffi::OsStr::new("--ca"), ca.as_os_str()]),
            )
            .args([
                "--connect-concurrency",
                &(options.connect_concurrency / children).max(1).to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(pid) = options.server_pid {
            command.args(["--server-pid", &pid.to_string()]);
        }
        running.push(command.spawn().context("starting a bench child process")?);
    }
    let mut merged = Report {
        mode: Some(Mode::Hold),
        connections_requested: options.connections,
        server_rss_before_kib: rss_before,
        ..Report::default()
    };
    let mut latency = Latency::default();
    for child in running {
        let output = child.wait_with_output()?;
        let report: Report =
            serde_json::from_slice(&output.stdout).context("reading a bench child's report")?;
        merged.connections_opened += report.connections_opened;
        for (kind, count) in report.connect_failures {
            *merged.connect_failures.entry(kind).or_default() += count;
        }
        merged.connect_seconds = merged.connect_seconds.max(report.connect_seconds);
        merged.dropped += report.dropped;
        merged.goodbyes_received += report.goodbyes_received;
        merged.closed_1001 += report.closed_1001;
        merged.count_violations += report.count_violations;
        merged.errors_received += report.errors_received;
        if let Some(follow) = &report.follow {
            merged
                .follow
                .get_or_insert_with(Default::default)
                .merge(follow);
        }
        if let Some(timeline) = &report.timeline {
            merged
                .timeline
                .get_or_insert_with(Default::default)
                .merge(timeline);
        }
        merged.run_seconds = merged.run_seconds.max(report.run_seconds);
        merged.server_rss_after_kib = merged.server_rss_after_kib.max(report.server_rss_after_kib);
        if let Some(encoded) = &report.connect_histogram {
            latency.merge(&Latency::decode(encoded)?);
        }
        merged.processes += 1;
    }
    merged.connects_per_second =
        merged.connections_opened as f64 / merged.connect_seconds.max(1e-9);
    merged.connect_latency = Some(latency.summary());
    if let (Some(before), Some(after)) = (merged.server_rss_before_kib, merged.server_rss_after_kib)
        && merged.connections_opened > 0
    {
        merged.server_rss_per_connection_bytes =
            Some(after.saturating_sub(before) as f64 * 1024.0 / merged.connections_opened as f64);
    }
    Ok(merged)
}

fn print_summary(report: &Report) {
    let mode = report
        .mode
        .map(|mode| format!("{mode:?}").to_lowercase())
        .unwrap_or_default();
    println!(
        "{mode}: {}/{} connections in {:.2} s ({:.0}/s){}",
        report.connections_opened,
        report.connections_requested,
        report.connect_seconds,
        report.connects_per_second,
        if report.processes > 1 {
            format!(" across {} processes", report.processes)
        } else {
            String::new()
        }
    );
    if let Some(latency) = &report.connect_latency {
        println!("  connect latency: {}", percentiles(latency));
    }
    if report.connect_failures.is_empty() {
        println!("  connect failures: none");
    } else {
        println!("  connect failures: {:?}", report.connect_failures);
    }
    if let Some(latency) = &report.round_trip {
        println!(
            "  messages: {} sent, {} answered, {:.0}/s; lost {}, out of order {}, count violations {}, errors {}",
            report.messages_sent,
            report.messages_answered,
            report.messages_per_second.unwrap_or(0.0),
            report.messages_lost,
            report.out_of_order,
            report.count_violations,
            report.errors_received
        );
        println!("  round trip: {}", percentiles(latency));
    }
    if let Some(latency) = &report.fanout {
        println!(
            "  broadcasts: {} sent, {} deliveries, {} missing",
            report.messages_sent, report.messages_answered, report.messages_lost
        );
        println!("  fan-out latency: {}", percentiles(latency));
    }
    if let Some(per) = report.server_rss_per_connection_bytes {
        println!(
            "  server RSS: {} KiB -> {} KiB, {per:.0} bytes per connection",
            report.server_rss_before_kib.unwrap_or(0),
            report.server_rss_after_kib.unwrap_or(0)
        );
    }
    println!(
        "  closed by the server: {} ({} with goodbye, {} with close 1001)",
        report.dropped, report.goodbyes_received, report.closed_1001
    );
    if let Some(follow) = &report.follow {
        println!(
            "  followed: {} resumed, {} lost their session, {} not back, {} attempts; count violations {}; move {}",
            follow.resumed,
            follow.resume_failures,
            follow.not_back,
            follow.reconnect_attempts,
            report.count_violations,
            follow
                .move_seconds
                .map_or("-".to_string(), |seconds| format!("{seconds:.1} s")),
        );
    }
}

fn percentiles(latency: &bench::latency::Percentiles) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        latency.p50_ms,
        latency.p90_ms,
        latency.p99_ms,
        latency.p999_ms,
        latency.max_ms,
        latency.samples
    )
}
