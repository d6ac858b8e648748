//! The command line: one `Command` enum and the one dispatch `match`.

use clap::{CommandFactory, Parser, Subcommand};

use crate::cmd;

/// `wsctl --version`: the crate version and the git revision it was built
/// from (`unknown` outside a git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BUILD_GIT_REVISION"),
    ")"
);

/// A production WebSocket service and the tool that deploys it.
#[derive(Debug, Parser)]
#[command(name = "wsctl", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the WebSocket service.
    Serve(cmd::serve::ServeArgs),
    /// Load the service: hold, rtt, flood or fanout.
    Bench(cmd::bench::BenchArgs),
    /// Package this binary into a FROM scratch image through the Docker API.
    Build(cmd::build::BuildArgs),
    /// Exit 0 when a URL (default: this host's /readyz) answers 2xx.
    Probe(cmd::probe::ProbeArgs),
    /// Smoke-test a running service (probes, status, metrics, a session).
    Smoke(cmd::smoke::SmokeArgs),
    /// Wait until stopped: the checker container of an external app's stack.
    #[command(hide = true)]
    Checker(cmd::checker::CheckerArgs),
    /// Deploy the standby colour and move traffic to it.
    Deploy(cmd::deploy::DeployArgs),
    /// Move traffic to a colour (checked healthy first).
    Switch(cmd::traffic::SwitchArgs),
    /// Go back to the colour that was live before.
    Rollback(cmd::traffic::RollbackArgs),
    /// Move traffic to the colour `deploy --no-switch` left paused.
    Promote(cmd::traffic::PromoteArgs),
    /// Stop a running canary (it undoes itself), or remove a paused colour.
    Abort(cmd::traffic::AbortArgs),
    /// Bring a stack left by a killed run to a consistent state.
    Recover(cmd::traffic::RecoverArgs),
    /// Live colour, each colour's container, the lock, the last runs.
    Status(cmd::status::StatusArgs),
    /// A container's log lines (readable on a terminal, raw with --json).
    Logs(cmd::operate::LogsArgs),
    /// Run a command in a colour's container: wsctl exec -- CMD...
    Exec(cmd::operate::ExecArgs),
    /// The journal: who ran what, when, and how it ended.
    History(cmd::operate::HistoryArgs),
    /// Remove old app images and stray stopped containers of the stack.
    Prune(cmd::operate::PruneArgs),
    /// Take the stack away: its containers and network (--volumes: its
    /// journal), never images; lists them and exits 1 without --yes.
    Down(cmd::down::DownArgs),
    /// The stack's deploy lock: status, acquire -m MESSAGE, release.
    Lock(cmd::lock::LockArgs),
    /// Break the stack's deploy lock, whoever holds it.
    Unlock(cmd::lock::UnlockArgs),
    /// TLS at the edge: `reload` puts a renewed certificate into Nginx.
    Tls(cmd::tls::TlsArgs),
    /// Write a commented wsctl.yaml with the defaults.
    Init(cmd::init::InitArgs),
    /// Print a signed access token for `--require-auth`.
    Token(cmd::token::TokenArgs),
    /// Print shell completions: bash, zsh, fish, elvish or powershell.
    Completions(cmd::docs::CompletionsArgs),
    /// Write man pages (wsctl.1 and one per subcommand) into a directory.
    Man(cmd::docs::ManArgs),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => cmd::bench::run(args),
        Command::Build(args) => cmd::build::run(args),
        Command::Probe(args) => cmd::probe::run(args),
        Command::Deploy(args) => cmd::deploy::deploy(args),
        Command::Switch(args) => cmd::traffic::switch(args),
        Command::Rollback(args) => cmd::traffic::rollback(args),
        Command::Promote(args) => cmd::traffic::promote(args),
        Command::Completions(args) => cmd::docs::completions(args, Cli::command()),
        Command::Logs(args) => cmd::operate::logs(args),
        Command::Exec(args) => cmd::operate::exec(args),
        Command::History(args) => cmd::operate::history(args),
        Command::Prune(args) => cmd::operate::prune(args),
        Command::Down(args) => cmd::down::down(args),
        Command::Man(args) => cmd::docs::man(args, Cli::command()),
        Command::Abort(args) => cmd::traffic::abort(args),
        Command::Recover(args) => cmd::traffic::recover(args),
        Command::Status(args) => cmd::status::status(args),
        Command::Lock(args) => cmd::lock::lock(args),
        Command::Unlock(args) => cmd::lock::unlock(args),
        Command::Tls(args) => cmd::tls::tls(args),
        Command::Init(args) => cmd::init::init(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Smoke(args) => cmd::smoke::run(args),
        Command::Checker(args) => cmd::checker::run(args),
        Command::Token(args) => cmd::token::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
