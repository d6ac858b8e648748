//! `wsctl deploy`: a new colour, checked and switched to (canary, watch,
//! no-switch), or `--proxy`: Nginx replaced with the configured one.

use std::time::Duration;

use clap::Args;

use super::target::{LockWait, StackArgs, run_operation};
use crate::deploy::config::Color;
use crate::deploy::{self, Operation};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Colour to deploy (default: the one not serving).
    #[arg(long, value_enum)]
    color: Option<Color>,
    /// Image for the new colour (default: images.app from the config).
    #[arg(long)]
    image: Option<String>,
    /// Containers for the new colour, 1 to 64 (default: replicas from the
    /// config).
    #[arg(long, value_parser = parse_replicas)]
    replicas: Option<usize>,
    /// Environment for the new colour only, on top of app_env (repeatable):
    /// feature flags, or a setting to try.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Canary: this percent of new connections to the new colour, analysed,
    /// then the switch (same as --canary-steps PERCENT,100).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=99),
          conflicts_with = "canary_steps")]
    canary: Option<u8>,
    /// Canary steps, rising percents of new connections to the new colour,
    /// each analysed before the next; 100 is the switch (10,50,100).
    #[arg(long, value_name = "P1,P2,...", value_parser = parse_steps)]
    canary_steps: Option<CanarySteps>,
    /// Seconds of passing analysis each canary step needs.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = crate::shared::input::parse_seconds)]
    analysis: Duration,
    /// Seconds a canary step may wait for the messages its analysis needs
    /// (analysis.min_messages) before it is rolled back as inconclusive.
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = crate::shared::input::parse_seconds)]
    analysis_timeout: Duration,
    /// After the switch, keep the old colour running (without traffic) for
    /// this long while the analysis goes on; a breach switches straight back.
    #[arg(long, value_name = "SECS", value_parser = crate::shared::input::parse_seconds)]
    watch: Option<Duration>,
    /// Stop before the switch: the new colour runs, checked, without
    /// traffic, until `wsctl promote` (or `wsctl abort`).
    #[arg(long, conflicts_with_all = ["watch", "canary", "canary_steps"])]
    no_switch: bool,
    /// Replace Nginx with the configured image and sizing instead of
    /// deploying the app: open WebSockets are cut (clients reconnect and
    /// resume) and new ones wait about a second.
    #[arg(long, conflicts_with_all = ["color", "image", "replicas", "env", "canary",
          "canary_steps", "watch", "no_switch"])]
    proxy: bool,
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

fn parse_env(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("'{raw}' is not KEY=VALUE")),
    }
}

/// Rising percents of new connections, as `--canary-steps` gives them
/// (one value for clap, not a list of values).
#[derive(Debug, Clone)]
pub struct CanarySteps(Vec<u8>);

/// `10,50,100`: rising percents from 1 to 100.
fn parse_steps(raw: &str) -> Result<CanarySteps, String> {
    let mut steps = Vec::new();
    for part in raw.split(',') {
        let percent: u8 = part
            .trim()
            .parse()
            .ok()
            .filter(|percent| (1..=100).contains(percent))
            .ok_or_else(|| format!("'{part}' is not a percent from 1 to 100"))?;
        if steps.last().is_some_and(|last| *last >= percent) {
            return Err(format!("canary steps must rise: '{raw}'"));
        }
        steps.push(percent);
    }
    Ok(CanarySteps(steps))
}

impl DeployArgs {
    fn request(&self) -> deploy::DeployRequest {
        let steps = match (&self.canary_steps, self.canary) {
            (Some(CanarySteps(steps)), _) => Some(steps.clone()),
            (None, Some(percent)) => Some(vec![percent]),
            (None, None) => None,
        };
        // 100 is the switch itself, which follows the last step.
        let canary = steps
            .map(|steps| {
                steps
                    .into_iter()
                    .filter(|percent| *percent < 100)
                    .collect::<Vec<_>>()
            })
            .filter(|steps| !steps.is_empty())
            .map(|steps| deploy::Canary {
                steps,
                analysis: self.analysis,
                timeout: self.analysis_timeout,
            });
        deploy::DeployRequest {
            color: self.color,
            image: self.image.clone(),
            replicas: self.replicas,
            env: self.env.iter().cloned().collect(),
            canary,
            watch: self.watch,
            no_switch: self.no_switch,
        }
    }
}

fn parse_replicas(raw: &str) -> Result<usize, String> {
    let count: usize = raw
        .parse()
        .map_err(|_| format!("'{raw}' is not a number of replicas"))?;
    crate::deploy::config::check_replicas(count)?;
    Ok(count)
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let operation = match args.proxy {
        true => Operation::Proxy,
        false => Operation::Deploy(args.request()),
    };
    run_operation(&args.stack, args.lock_wait.duration(), operation)
}
