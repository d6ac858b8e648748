//! `wsctl logs`, `wsctl exec` and `wsctl history`: looking at a running
//! stack without reaching for `docker` and the names wsctl gave things.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;

use super::target::{StackArgs, on_each_stack};
use crate::deploy::config::Color;
use crate::deploy::{self, DeployError};
use crate::shared::secrets::say;

/// Which container: a colour's replica.
#[derive(Debug, Args)]
pub struct Pick {
    /// Colour (default: the live one).
    #[arg(long, value_enum)]
    color: Option<Color>,
    /// Replica number, from 1 (default: the first).
    #[arg(long, value_name = "N")]
    replica: Option<usize>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pick: Pick,
    /// Keep printing new lines until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines from the last SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = crate::shared::input::parse_seconds)]
    since: Option<Duration>,
    /// Only the last N lines (before following).
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pick: Pick,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Newest app images (by the journal) to keep besides both colours'.
    #[arg(long, default_value = "3", value_name = "N")]
    keep: usize,
    #[command(flatten)]
    lock_wait: super::target::LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Runs to show, newest first.
    #[arg(long, short = 'n', default_value = "20")]
    count: usize,
    #[command(flatten)]
    stack: StackArgs,
}

/// `wsctl logs`: the container's JSON log lines, as readable lines on a
/// terminal and raw with `--json` (or when piped).
pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let readable = !args.stack.json && std::io::stdout().is_terminal();
    on_each_stack(&args.stack, Duration::ZERO, false, async |stack| {
        let since = args.since.map(|since| {
            (chrono::Utc::now() - chrono::Duration::from_std(since).unwrap_or_default()).timestamp()
                as i32
        });
        let tail = args.tail.map_or("all".to_string(), |n| n.to_string());
        let mut options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(args.follow)
            .tail(&tail);
        if let Some(since) = since {
            options = options.since(since);
        }
        // On Swarm, every task of the colour's service, through the manager.
        let mut stream = match stack.config.is_swarm() {
            true => {
                let service = deploy::service_of(stack, args.pick.color).await?;
                futures_util::StreamExt::boxed(
                    stack.docker.service_logs(&service, Some(options.build())),
                )
            }
            false => {
                let name = deploy::container_of(stack, args.pick.color, args.pick.replica).await?;
                futures_util::StreamExt::boxed(stack.docker.logs(&name, Some(options.build())))
            }
        };
        let mut pending = String::new();
        while let Some(chunk) = stream.next().await {
            pending.push_str(&chunk?.to_string());
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                print_line(line.trim_end(), readable);
            }
        }
        if !pending.is_empty() {
            print_line(&pending, readable);
        }
        Ok(())
    })
}

/// One log line: raw, or `TIME LEVEL message key=value ...` from its JSON.
fn print_line(line: &str, readable: bool) {
    let parsed = serde_json::from_str::<serde_json::Value>(line).ok();
    let Some(object) = parsed
        .as_ref()
        .and_then(|value| value.as_object())
        .filter(|_| readable)
    else {
        say!("{line}");
        return;
    };
    let field = |key: &str| {
        object
            .get(key)
            .and_then(|value| value.as_str())
            .unwrap_or("")
    };
    let mut text = format!(
        "{} {:<5} {}",
        field("timestamp"),
        field("level"),
        field("message")
    );
    for (key, value) in object {
        if ["timestamp", "level", "message", "logger"].contains(&key.as_str()) {
            continue;
        }
        match value.as_str() {
            Some(value) => text.push_str(&format!(" {key}={value}")),
            None => text.push_str(&format!(" {key}={value}")),
        }
    }
    say!("{text}");
}

/// `wsctl exec -- CMD...`: runs CMD in the container, prints what it
/// wrote, and fails when it does.
pub fn exec(args: ExecArgs) -> anyhow::Result<()> {
    on_each_stack(&args.stack, Duration::ZERO, false, async |stack| {
        let name = deploy::container_of(stack, args.pick.color, args.pick.replica).await?;
        let command: Vec<&str> = args.command.iter().map(String::as_str).collect();
        let (code, output) = crate::deploy::docker::exec(&stack.docker, &name, &command).await?;
        print!("{}", crate::shared::secrets::mask(&output));
        if code != 0 {
            anyhow::bail!("{} in {name} exited {code}", args.command.join(" "));
        }
        Ok(())
    })
}

/// `wsctl history`: who did what, when, and how it ended.
pub fn history(args: HistoryArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        return Err(DeployError::Usage("-n must be at least 1".into()).into());
    }
    let json = args.stack.json;
    on_each_stack(&args.stack, Duration::ZERO, false, async |stack| {
        let runs = deploy::history(stack, args.count).await?;
        if json {
            say!("{}", serde_json::json!({ "runs": runs }));
            return Ok(());
        }
        if runs.is_empty() {
            say!(
                "no runs recorded for stack {} yet (its journal is empty)",
                stack.config.network_name()
            );
        }
        for run in &runs {
            // A refusal's line already says why.
            let detail = match run.detail.is_empty() || run.outcome == deploy::Outcome::Refused {
                true => String::new(),
                false => format!("  ({})", run.detail),
            };
            say!("{}{detail}", super::status::run_line(run));
        }
        Ok(())
    })
}

/// `wsctl prune`: old app images and stray stopped containers go; both
/// colours' images and the newest `--keep` stay.
pub fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let json = args.stack.json;
    on_each_stack(
        &args.stack,
        args.lock_wait.duration(),
        false,
        async |stack| {
            let outcome = deploy::prune(stack, args.keep).await?;
            if json {
                say!("{outcome}");
                return Ok(());
            }
            for item in outcome["removed"].as_array().into_iter().flatten() {
                match (item["image"].as_str(), item["container"].as_str()) {
                    (Some(image), _) => say!("removed image {image}"),
                    (_, Some(container)) => say!("removed container {container}"),
                    _ => {}
                }
            }
            for item in outcome["kept"].as_array().into_iter().flatten() {
                say!(
                    "kept image {} ({})",
                    item["image"].as_str().unwrap_or(""),
                    item["why"].as_str().unwrap_or("")
                );
            }
            Ok(())
        },
    )
}
