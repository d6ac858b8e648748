//! `wsctl token`: mint a signed access token for a server started with
//! `--require-auth`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::serve::auth;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who the token is for (its `sub` claim).
    #[arg(long)]
    subject: String,
    /// Seconds until the token expires.
    #[arg(long, default_value = "3600", value_parser = crate::shared::input::parse_seconds)]
    ttl: Duration,
    /// Secret shared with the server.
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let secret = args
        .secret_key
        .filter(|key| !key.is_empty())
        .context("SECRET_KEY is not set: pass --secret-key or set SECRET_KEY")
        .map_err(|error| crate::shared::input::ConfigError(error.to_string()))?;
    let token = auth::sign(secret.as_bytes(), &args.subject, args.ttl)?;
    println!("{token}");
    Ok(())
}
