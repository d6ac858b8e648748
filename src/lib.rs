//! wsctl: a production WebSocket service and the tool that deploys it.
//!
//! # Layout: a tree by side
//! - `serve/`: the service (`wsctl serve`): HTTP routes, upgrade, the
//!   connection loop, sessions, the channel layer, metrics, graceful drain,
//!   with its configuration (`serve/config.rs`), access tokens
//!   (`serve/auth.rs`) and JSON-lines logs (`serve/logging.rs`). It never
//!   reaches the deploy side or the clients.
//! - `deploy/`: the deploy tool (`wsctl deploy`, `switch`, ...):
//!   operations, the runner, plans and steps, the engine and coordinator
//!   seams, the fleet, journal, lock and status, with its configuration
//!   (`deploy/config/`, wsctl.yaml), the Docker Engine API
//!   (`deploy/docker.rs`), `wsctl build` (`deploy/image.rs`) and registry
//!   credentials (`deploy/registry.rs`). Its own map is in `deploy/mod.rs`.
//! - `client/`: clients of the service over real sockets: the smoke test,
//!   the cutover probe, the load tool (`wsctl bench`).
//! - `shared/`: what the sides agree on or both use: input parsing and its
//!   error, masked output (`say!`), the interrupt trigger, timestamps, the
//!   headers of the protocol.
//! - `cli.rs` and `cmd/`: the command line. `cli.rs` holds the `Command`
//!   enum and the one dispatch `match`; `cmd/` has one file per command
//!   (or small family), which parses arguments, calls one domain function
//!   and prints its result. Only `cmd/` knows clap.
//!
//! `main.rs` is thin: it calls [`main`] here, which prints an error's
//! chain once, on one line, and maps it to an exit code, here and nowhere
//! else.

pub mod cli;
pub mod client;
pub mod cmd;
pub mod deploy;
pub mod serve;
pub mod shared;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// Exit codes shared by every subcommand (documented in the README).
mod exit {
    /// Bad flags, environment or configuration.
    pub const USAGE: u8 = 2;
    /// Anything else that failed at run time.
    pub const FAILURE: u8 = 1;
    /// The Docker Engine could not be reached.
    pub const ENGINE_UNREACHABLE: u8 = 8;
}

/// The whole program: parses the command line, runs the command, and maps
/// what went wrong to an exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = error.print();
                return if error.use_stderr() {
                    ExitCode::from(exit::USAGE)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // A bad value (also one from the environment, as `wsctl serve`
            // takes its settings): clap's line naming the flag and the
            // problem, with the possible values and a tip when it has them,
            // as one block a log keeps together. Anything else (a missing
            // argument, an unknown flag and its suggestion): clap's whole
            // text, usage included.
            if matches!(
                error.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) {
                let rendered = error.to_string();
                let lines: Vec<&str> = rendered
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .filter(|line| !line.starts_with("For more information"))
                    .collect();
                let first = lines.first().copied().unwrap_or("invalid arguments");
                eprintln!("wsctl: {}", first.trim_start_matches("error: "));
                for line in lines.iter().skip(1) {
                    eprintln!("{line}");
                }
            } else {
                let _ = error.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            shared::secrets::say_err!("wsctl: {error:#}");
            if error.downcast_ref::<shared::input::ConfigError>().is_some() {
                ExitCode::from(exit::USAGE)
            } else if let Some(failure) = error.downcast_ref::<deploy::DeployError>() {
                ExitCode::from(failure.exit_code())
            } else if error
                .downcast_ref::<deploy::docker::EngineUnreachable>()
                .is_some()
            {
                ExitCode::from(exit::ENGINE_UNREACHABLE)
            } else {
                ExitCode::from(exit::FAILURE)
            }
        }
    }
}
