//! `wsctl probe [URL]`: exit 0 when URL answers 2xx within the timeout.
//! The image's `HEALTHCHECK` runs it (a scratch image has no curl).

use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// URL to check; default: this container's own `/readyz`.
    url: Option<String>,
    /// Port of the default URL.
    #[arg(long, env = "PORT", default_value = "8000")]
    port: u16,
    /// Print the answer's body on stdout.
    #[arg(long)]
    print: bool,
    /// POST instead of GET (an action on a private endpoint, such as
    /// `/connections/move`).
    #[arg(long)]
    post: bool,
    /// Send `Authorization: Bearer` with the value of this environment
    /// variable (wsctl passes the move token so, not on the command line).
    #[arg(long, value_name = "NAME")]
    bearer_env: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value = "2", value_parser = crate::shared::input::parse_seconds)]
    timeout: Duration,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let url = args
        .url
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/readyz", args.port));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bearer = match &args.bearer_env {
        Some(name) => Some(std::env::var(name).map_err(|_| {
            crate::shared::input::ConfigError(format!("--bearer-env {name}: it is not set"))
        })?),
        None => None,
    };
    let (status, body) = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(args.timeout).build()?;
        let mut request = match args.post {
            true => client.post(&url),
            false => client.get(&url),
        };
        if let Some(token) = &bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        reqwest::Result::Ok((status, response.text().await?))
    })?;
    if args.print {
        println!("{body}");
    }
    if status.is_success() {
        Ok(())
    } else {
        anyhow::bail!("{url} answered {status}")
    }
}
