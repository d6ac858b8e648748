//! `wsctl status`: the stack (every host) for people or as one JSON
//! object, and exit 3 when the live colour is not healthy.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::target::{StackArgs, Target, with_target};
use crate::deploy::config::Color;
use crate::deploy::{self, Outcome, RedisView, RunSummary, Status};
use crate::shared::secrets::say;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Redraw every SECS seconds until interrupted (one JSON object per
    /// round with --json); problems are shown, not an exit code.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
          value_parser = crate::shared::input::parse_seconds)]
    watch: Option<Duration>,
    #[command(flatten)]
    stack: StackArgs,
}

/// `wsctl status`: prints the stack (every host), then exits 3 when the
/// live colour is not healthy, so that monitors and CI can use it.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let json = args.stack.json;
    let redraw = !json && std::io::stdout().is_terminal();
    with_target(&args.stack, Duration::ZERO, false, async |mut target| {
        loop {
            if args.watch.is_some() && redraw {
                // Clear the screen and go home, as `watch` does.
                print!("\x1b[2J\x1b[H");
            }
            let problems = status_once(&mut target, json).await?;
            let Some(every) = args.watch else {
                return match problems.is_empty() {
                    true => Ok(()),
                    false => Err(deploy::DeployError::Health(problems.join("; ")).into()),
                };
            };
            if !json {
                if problems.is_empty() {
                    say!("healthy (every {} s; Ctrl-C ends)", every.as_secs_f64());
                } else {
                    say!("NOT HEALTHY: {}", problems.join("; "));
                }
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Prints the status of the stack (every host) once; returns what is not
/// healthy.
async fn status_once(target: &mut Target, json: bool) -> anyhow::Result<Vec<String>> {
    let hosts = match target {
        Target::One(stack) => {
            let status = deploy::status(stack).await?;
            if json {
                say!("{}", serde_json::to_string(&status)?);
            } else {
                print_status(&status);
            }
            vec![status]
        }
        Target::Hosts(fleet) => {
            let status = deploy::fleet::status(fleet).await?;
            if json {
                say!("{}", serde_json::to_string(&status)?);
            } else {
                for host in &status.hosts {
                    say!("host {}:", host.host.as_deref().unwrap_or(""));
                    print_status(host);
                }
            }
            status.hosts
        }
    };
    Ok(hosts
        .iter()
        .filter_map(|host| {
            let why = host.degraded()?;
            Some(match &host.host {
                Some(name) => format!("host {name}: {why}"),
                None => why,
            })
        })
        .collect())
}

fn name(color: Option<Color>) -> String {
    color.map_or("none".to_string(), |color| color.to_string())
}

fn print_status(status: &Status) {
    say!("live: {}", name(status.live));
    if let Some(drift) = &status.nginx.drift {
        say!("drift: nginx {drift} (wsctl deploy --proxy replaces it)");
    }
    if let RedisView::Container(redis) = &status.redis
        && let Some(drift) = &redis.drift
    {
        say!("drift: redis {drift} (remove it and deploy again; its sessions are lost)");
    }
    if let Some(weights) = &status.weights {
        let shares: Vec<String> = weights
            .iter()
            .map(|(color, percent)| format!("{color} {percent}%"))
            .collect();
        say!("canary: new connections {}", shares.join(", "));
    }
    if let Some(analysis) = &status.last_analysis {
        let sample = &analysis.sample;
        say!(
            "last analysis (run {}, {}): {} at {}%, error ratio {}, {}",
            analysis.run_id,
            serde_json::to_value(analysis.outcome)
                .ok()
                .and_then(|outcome| outcome.as_str().map(str::to_string))
                .unwrap_or_default(),
            sample["verdict"].as_str().unwrap_or(""),
            sample["percent"],
            sample["new_error_ratio"],
            sample["detail"].as_str().unwrap_or(""),
        );
    }
    if let Some(disagreement) = &status.disagreement {
        say!("WARNING: {disagreement}: run `wsctl recover`");
    }
    for warning in &status.warnings {
        say!("WARNING: {warning}");
    }
    if let Some(held) = &status.lock {
        let stale = if held.stale {
            " (stale: the next run breaks it)"
        } else {
            ""
        };
        say!("locked by {} since {}{stale}", held.holder, held.since);
    }
    for unfinished in &status.unfinished {
        let what = if unfinished.running {
            "running now"
        } else {
            "did not finish: the next deploy or `wsctl recover` repairs it"
        };
        let run = &unfinished.run;
        say!(
            "run {} ({} -> {}, state {}) {what}",
            run.id,
            run.action,
            name(run.to),
            run.state
        );
    }
    for (color, colour) in &status.colors {
        // One line per container, named when the colour has several.
        let several = colour.replicas.len() > 1 || colour.first.node.is_some();
        let lines = match several {
            true => colour.replicas.iter().collect(),
            false => vec![&colour.first],
        };
        for container in lines {
            let label = match (&container.node, several) {
                (Some(node), _) => format!(
                    "{} on {node} ({})",
                    container.container,
                    container.address.as_deref().unwrap_or("no address")
                ),
                (None, true) => container.container.clone(),
                (None, false) => color.to_string(),
            };
            let details = container.details();
            let text = |field: Option<&str>| field.unwrap_or("-").to_string();
            let number = |field: Option<i64>| field.map_or("-".to_string(), |n| n.to_string());
            say!(
                "{label:<6} {:<10} health {:<9} image {:<24} version {:<8} uptime {:>6} s  connections {}",
                container.state,
                text(details.map(|d| d.health.as_str())),
                text(details.map(|d| d.image.as_str())),
                text(details.and_then(|d| d.version.as_deref())),
                number(details.and_then(|d| d.uptime_seconds)),
                number(details.and_then(|d| d.connections)),
            );
        }
    }
    for edge in &status.serving.edges {
        let serves = match &edge.unreachable {
            Some(_) => "unreachable".to_string(),
            None => format!("serves {}", name(edge.serving.live())),
        };
        say!(
            "swarm edge {} ({}): {serves}",
            edge.name,
            edge.public_address
        );
    }
    if let Some(nodes) = &status.nodes {
        let nodes: Vec<String> = nodes
            .iter()
            .map(|node| format!("{} {}", node.name, node.state))
            .collect();
        say!("swarm nodes: {}", nodes.join(", "));
    }
    for run in &status.history {
        say!("{}", run_line(run));
    }
}

/// One run on one line, as `status` and `history` print it; a refusal
/// says why in place of an image.
pub fn run_line(run: &RunSummary) -> String {
    let what = match run.outcome {
        Outcome::Refused => &run.detail,
        _ => &run.image,
    };
    format!(
        "{}  {:<8} {} -> {}  {:<13} {what}  by {}",
        run.at,
        run.action.to_string(),
        name(run.from),
        name(run.to),
        serde_json::to_value(run.outcome)
            .ok()
            .and_then(|outcome| outcome.as_str().map(str::to_string))
            .unwrap_or_default(),
        run.performer,
    )
}
