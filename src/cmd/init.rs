//! `wsctl init`: a commented wsctl.yaml with the defaults.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::deploy::config::{AppKind, INIT_EXTERNAL_FILE, INIT_FILE};
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
    /// Which app the stack deploys: `wsctl` (the bundled service) or
    /// `external` (a WebSocket service of your own).
    #[arg(long, value_enum, default_value = "wsctl")]
    app: crate::deploy::config::AppKind,
}

pub fn init(args: InitArgs) -> anyhow::Result<()> {
    if args.path.exists() && !args.force {
        return Err(ConfigError(format!(
            "{} exists (use --force to overwrite)",
            args.path.display()
        ))
        .into());
    }
    let text = match args.app {
        AppKind::Wsctl => INIT_FILE,
        AppKind::External => INIT_EXTERNAL_FILE,
    };
    std::fs::write(&args.path, text).with_context(|| format!("writing {}", args.path.display()))?;
    say!("wrote {}", args.path.display());
    Ok(())
}
