//! `wsctl tls reload`: the certificate and key of wsctl.yaml's `tls:` into
//! the stack's Nginx, without cutting a socket. The line an ACME client's
//! deploy hook runs after a renewal (README, "TLS at the edge").

use clap::{Args, Subcommand};

use super::target::{LockWait, StackArgs, on_each_stack};
use crate::deploy;
use crate::shared::secrets::say;

#[derive(Debug, Args)]
pub struct TlsArgs {
    #[command(subcommand)]
    command: TlsCommand,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Upload the certificate and key when they changed and reload Nginx:
    /// open sockets stay open, new connections get the new certificate.
    Reload {
        #[command(flatten)]
        lock_wait: LockWait,
    },
}

pub fn tls(args: TlsArgs) -> anyhow::Result<()> {
    let TlsCommand::Reload { lock_wait } = &args.command;
    let json = args.stack.json;
    on_each_stack(&args.stack, lock_wait.duration(), false, async |stack| {
        let reloaded = deploy::tls_reload::reload(stack).await?;
        if json {
            let mut event = serde_json::to_value(&reloaded)?;
            event["event"] = "tls".into();
            say!("{event}");
        } else {
            say!(
                "tls: certificate serial {} (expires {}, in {} days): {}",
                reloaded.serial,
                reloaded.not_after,
                reloaded.days_left,
                changed(reloaded.changed)
            );
            for edge in &reloaded.edges {
                say!(
                    "tls: swarm edge {}: certificate serial {}: {}",
                    edge.name,
                    edge.serial,
                    changed(edge.changed)
                );
            }
        }
        Ok(())
    })
}

fn changed(changed: bool) -> &'static str {
    match changed {
        true => "Nginx reloaded with it",
        false => "unchanged",
    }
}
