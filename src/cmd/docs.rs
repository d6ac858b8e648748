//! `wsctl completions SHELL` and `wsctl man --out DIR`: shell completions
//! (clap_complete) and man pages (clap_mangen), both generated from the one
//! command-line definition in `cli.rs` (which hands it in), so they never
//! drift from it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write wsctl.1 and one page per subcommand
    /// (wsctl-deploy.1, ...) into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Prints the completion script for the shell on stdout.
pub fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "wsctl", &mut script);
    print_all(&script)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an
/// error.
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Writes the man pages and names each one.
pub fn man(args: ManArgs, command: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    clap_mangen::generate_to(command, &args.out)
        .with_context(|| format!("writing man pages into {}", args.out.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.out)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".1"))
        .collect();
    pages.sort();
    let listing: String = pages
        .iter()
        .map(|page| format!("{}\n", args.out.join(page).display()))
        .collect();
    print_all(listing.as_bytes())
}
