//! `wsctl checker`: what the checker container of a stack with an external
//! app runs. It does nothing until it is stopped: wsctl runs `wsctl probe`
//! and `wsctl smoke` in it by exec, on the stack's network, so the app's
//! image needs nothing of wsctl and the host never talks to a container's
//! address.

use clap::Args;

#[derive(Debug, Args)]
pub struct CheckerArgs {}

pub fn run(_args: CheckerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::shared::signal::shutdown_signal());
    Ok(())
}
