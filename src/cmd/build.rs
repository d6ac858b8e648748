//! `wsctl build --tag NAME:TAG [--push]`: a binary as a `FROM scratch`
//! image, optionally pushed with the registry's credentials.

use std::path::PathBuf;

use clap::Args;

use crate::deploy::config::StackConfig;
use crate::deploy::{docker, image};
use crate::shared::secrets::say;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image name and tag to build.
    #[arg(long, default_value = "wsctl:latest")]
    tag: String,
    /// Push the image after building it, with the credentials of
    /// wsctl.yaml's `registry:` or of ~/.docker/config.json.
    #[arg(long)]
    push: bool,
    /// The stack's configuration, read for its `registry:` login (must
    /// exist when given) [default: ./wsctl.yaml, if there is one].
    #[arg(long, short = 'c', env = "WSCTL_CONFIG")]
    config: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let config = StackConfig::load_from(args.config.as_deref(), false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let id = image::build(&args.tag).await?;
        say!("built {} ({id})", args.tag);
        if args.push {
            let engine = docker::connect().await?;
            docker::push_image(&engine, &args.tag, &config.registry).await?;
            say!("pushed {}", args.tag);
        }
        Ok(())
    })
}
