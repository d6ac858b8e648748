//! `wsctl checker`: what the checker container of a stack with an external
//! app (or on `platform: swarm`) runs. It does nothing until it is stopped:
//! wsctl runs `wsctl probe` and `wsctl smoke` in it by exec, on the stack's
//! network, so the app's image needs nothing of wsctl and the host never
//! talks to a container's address. With `--follow` (Swarm) it also keeps
//! Nginx's upstream on the live colour's tasks (`deploy::swarm::follow`).

use clap::Args;

use crate::deploy::swarm_follow;

#[derive(Debug, Args)]
pub struct CheckerArgs {
    /// Keep Nginx's upstream on the live colour's running tasks (what to
    /// follow comes in WSCTL_FOLLOW; the manager's socket is mounted).
    #[arg(long)]
    follow: bool,
}

pub fn run(args: CheckerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !args.follow {
        runtime.block_on(crate::shared::signal::shutdown_signal());
        return Ok(());
    }
    crate::serve::logging::init(false, "");
    let spec = std::env::var(swarm_follow::ENV)
        .map_err(|_| anyhow::anyhow!("--follow needs {}", swarm_follow::ENV))?;
    let spec: swarm_follow::Spec = serde_json::from_str(&spec)
        .map_err(|error| anyhow::anyhow!("{}: {error}", swarm_follow::ENV))?;
    runtime.block_on(async {
        let interrupt = crate::shared::signal::Interrupt::install("the follower stops")?;
        swarm_follow::run(spec, interrupt).await
    })
}
