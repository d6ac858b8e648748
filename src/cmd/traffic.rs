//! The other commands that move traffic: `switch`, `rollback`, `promote`,
//! `abort` and `recover`. Each is an operation the runner runs on the
//! stack, or on every host through the fleet's gates.

use clap::Args;

use super::target::{LockWait, StackArgs, Target, run_operation, with_target};
use crate::deploy::config::Color;
use crate::deploy::{self, Operation};

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Colour to send traffic to.
    #[arg(long, value_enum)]
    color: Color,
    /// Switch even when the colour is not healthy.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    lock_wait: LockWait,
    #[command(flatten)]
    stack: StackArgs,
}

pub fn switch(args: SwitchArgs) -> anyhow::Result<()> {
    let operation = Operation::Switch {
        color: args.color,
        force: args.force,
    };
    run_operation(&args.stack, args.lock_wait.duration(), operation)
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    run_operation(&args.stack, args.lock_wait.duration(), Operation::Rollback)
}

pub fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    run_operation(&args.stack, args.lock_wait.duration(), Operation::Promote)
}

/// A deploy running now is interrupted (it undoes itself); else the paused
/// deploy's colour is removed, a run of its own.
pub fn abort(args: AbortArgs) -> anyhow::Result<()> {
    with_target(
        &args.stack,
        args.lock_wait.duration(),
        true,
        async |target| match target {
            Target::One(mut stack) => {
                if deploy::interrupt_running(&mut stack).await? {
                    return Ok(());
                }
                deploy::run(&mut stack, Operation::Abort).await
            }
            Target::Hosts(mut fleet) => {
                // One process holds every host's lock: stopping it once is enough.
                for host in &mut fleet.hosts {
                    if deploy::interrupt_running(&mut host.stack).await? {
                        return Ok(());
                    }
                }
                fleet.run(Operation::Abort).await
            }
        },
    )
}

pub fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    run_operation(&args.stack, args.lock_wait.duration(), Operation::Recover)
}
