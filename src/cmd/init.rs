//! `wsctl init`: a commented wsctl.yaml with the defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::deploy::config::INIT_FILE;
use crate::shared::input::ConfigError;
use crate::shared::secrets::say;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the file.
    #[arg(default_value = "wsctl.yaml")]
    path: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

pub fn init(args: InitArgs) -> anyhow::Result<()> {
    if args.path.exists() && !args.force {
        return Err(ConfigError(format!(
            "{} exists (use --force to overwrite)",
            args.path.display()
        ))
        .into());
    }
    std::fs::write(&args.path, INIT_FILE)
        .with_context(|| format!("writing {}", args.path.display()))?;
    say!("wrote {}", args.path.display());
    Ok(())
}
