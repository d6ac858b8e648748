//! `wsctl lock` (status, acquire, release) and `wsctl unlock --force`.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::target::{LockWait, StackArgs, on_each_stack};
use crate::deploy;
use crate::shared::input::ConfigError;
use crate::shared::secrets::say;

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(subcommand)]
    command: LockCommand,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Who holds the stack's lock, since when, until when.
    Status,
    /// Hold the lock by hand (deploys refuse) until `wsctl lock release`.
    Acquire {
        /// Why: shown to everyone the lock refuses.
        #[arg(long, short = 'm')]
        message: String,
        #[command(flatten)]
        lock_wait: LockWait,
    },
    /// Let go of a lock taken with `wsctl lock acquire`.
    Release,
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Required: breaking a lock can let two deploys collide.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    stack: StackArgs,
}

pub fn lock(args: LockArgs) -> anyhow::Result<()> {
    let json = args.stack.json;
    let lock_wait = match &args.command {
        LockCommand::Acquire { lock_wait, .. } => lock_wait.duration(),
        _ => Duration::ZERO,
    };
    on_each_stack(&args.stack, lock_wait, false, async |stack| {
        match &args.command {
            LockCommand::Status => {
                let holder = deploy::lock_holder(&stack.docker, &stack.config).await?;
                if json {
                    say!("{}", serde_json::json!({ "lock": holder }));
                } else {
                    match holder {
                        None => say!("the lock is free"),
                        Some(held) => say!(
                            "locked by {} since {}{}{}",
                            held.holder,
                            held.since,
                            if held.message.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", held.message)
                            },
                            match (&held.expires_at, held.stale) {
                                (_, true) => " (stale: the next run breaks it)".to_string(),
                                (Some(end), false) => format!(" (lease until {end})"),
                                (None, false) => " (until `wsctl lock release`)".to_string(),
                            }
                        ),
                    }
                }
                Ok(())
            }
            LockCommand::Acquire { message, .. } => {
                deploy::acquire_manual_lock(stack, message).await?;
                if json {
                    say!(
                        "{}",
                        serde_json::json!({"lock": "acquired", "message": message})
                    );
                } else {
                    say!("lock acquired: {message}");
                }
                Ok(())
            }
            LockCommand::Release => {
                let released = deploy::release_manual_lock(&stack.docker, &stack.config).await?;
                if json {
                    let holder = released.map(|held| held.holder);
                    say!(
                        "{}",
                        serde_json::json!({"lock": "free", "released": holder})
                    );
                } else {
                    match released {
                        Some(held) => say!("released the lock of {}", held.holder),
                        None => say!("the lock is free"),
                    }
                }
                Ok(())
            }
        }
    })
}

pub fn unlock(args: UnlockArgs) -> anyhow::Result<()> {
    if !args.force {
        return Err(ConfigError(
            "unlock needs --force: breaking a lock can let two deploys collide".into(),
        )
        .into());
    }
    let json = args.stack.json;
    on_each_stack(&args.stack, Duration::ZERO, false, async |stack| {
        let broken = deploy::force_unlock(&stack.docker, &stack.config).await?;
        if json {
            say!("{}", serde_json::json!({"lock": "free", "broken": broken}));
        } else {
            match broken {
                Some(holder) => say!("lock held by {holder} broken"),
                None => say!("no lock was held"),
            }
        }
        Ok(())
    })
}
