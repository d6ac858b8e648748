//! wsctl: a production WebSocket service and the tool that deploys it.
//!
//! # Layout
//! - `cli.rs`: the `Command` enum and the one dispatch `match`.
//! - `cmd/`: one file per subcommand; each turns its arguments into a plain
//!   options struct and calls a domain module. Only `cmd/` knows clap.
//! - `config.rs`: the validated `ServeConfig` and its value parsers.
//! - `serve/`: the WebSocket service (HTTP routes, upgrade, the connection
//!   loop, sessions, the channel layer, metrics, graceful drain).
//! - `bench/`: the load tool behind `wsctl bench` (a client of the service).
//! - `deploy/`: blue-green deploys (steps, lock, upstream, history);
//!   `stack.rs`: the stack from `wsctl.yaml`.
//! - `docker.rs`: the Docker Engine API (bollard), one `connect()`.
//!   `image.rs`: `wsctl build`, this binary as a scratch image.
//!   `registry.rs`: credentials for pulls and pushes.
//! - `smoke.rs`: the smoke test behind `wsctl smoke` (a client of the service).
//! - `secrets.rs`: values never printed, and the `say!` macros that mask them.
//! - `auth.rs`: signed access tokens. `logging.rs`: JSON-lines logs.
//!   `signal.rs`: the process's shutdown trigger. `time.rs`: timestamps.
//!
//! Errors travel up as `anyhow::Error`; `main` prints the chain once, on one
//! line, and maps it to an exit code here and nowhere else.

mod auth;
mod bench;
mod cli;
mod cmd;
mod config;
mod deploy;
mod docker;
mod image;
mod logging;
mod registry;
mod secrets;
mod serve;
mod signal;
mod smoke;
mod stack;
mod time;

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

fn main() -> ExitCode {
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
            // clap's first line names the flag and the problem; the rest is
            // usage text that drowns it in a log.
            let rendered = error.to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("wsctl: {}", line.trim_start_matches("error: "));
            return ExitCode::from(exit::USAGE);
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            secrets::say_err!("wsctl: {error:#}");
            if error.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(exit::USAGE)
            } else if let Some(failure) = error.downcast_ref::<deploy::DeployError>() {
                ExitCode::from(failure.exit_code())
            } else if error.downcast_ref::<docker::EngineUnreachable>().is_some() {
                ExitCode::from(exit::ENGINE_UNREACHABLE)
            } else {
                ExitCode::from(exit::FAILURE)
            }
        }
    }
}
