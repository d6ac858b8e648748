//! `wsctl down [--volumes] --yes`: takes the stack away (its containers and
//! network; with `--volumes` its journal), never images. Without `--yes`
//! it lists what it would remove and exits 1, so a script cannot take a
//! stack down by accident.

use std::time::Duration;

use clap::Args;

use super::target::{StackArgs, on_each_stack};
use crate::deploy::down;
use crate::shared::secrets::say;

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// Also remove the journal (`wsctl history` starts empty).
    #[arg(long)]
    volumes: bool,
    /// Remove for real; without it, only list what would go.
    #[arg(long)]
    yes: bool,
}

/// `down` without `--yes` found something to remove: exit 1.
#[derive(Debug, thiserror::Error)]
#[error("nothing was removed: run `wsctl down --yes` to remove it")]
pub struct NotConfirmed;

pub fn down(args: DownArgs) -> anyhow::Result<()> {
    let json = args.stack.json;
    on_each_stack(&args.stack, Duration::ZERO, false, async |stack| {
        let teardown = down::plan(stack, args.volumes).await?;
        let label = stack.events.prefix();
        if teardown.is_empty() {
            match json {
                true => say!(
                    "{}",
                    serde_json::json!({"event": "down", "removed": false, "nothing": true})
                ),
                false => {
                    say!("{label}nothing to remove: no container, network or record of this stack")
                }
            }
            return Ok(());
        }
        if !json {
            let verb = if args.yes { "removing" } else { "would remove" };
            for name in &teardown.services {
                say!("{label}{verb} service {name}");
            }
            for name in &teardown.containers {
                say!("{label}{verb} container {name}");
            }
            for (edge, names) in &teardown.edges {
                for name in names {
                    say!("{label}{verb} container {name} on swarm edge {edge}");
                }
            }
            if let Some(network) = &teardown.network {
                say!("{label}{verb} network {network}");
            }
            if !teardown.volumes.is_empty() {
                say!("{label}{verb} {} journal records", teardown.volumes.len());
            }
        }
        if !args.yes {
            if json {
                say!(
                    "{}",
                    serde_json::json!({"event": "down", "removed": false, "would_remove": teardown})
                );
            }
            return Err(NotConfirmed.into());
        }
        down::apply(stack, &teardown).await?;
        match json {
            true => say!(
                "{}",
                serde_json::json!({"event": "down", "removed": true, "teardown": teardown})
            ),
            false => say!("{label}the stack is down (images stay: `docker image ls`)"),
        }
        Ok(())
    })
}
