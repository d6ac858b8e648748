//! `wsctl build --tag wsctl:TAG`: this binary as a `FROM scratch` image.

use clap::Args;

use crate::image;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image name and tag to build.
    #[arg(long, default_value = "wsctl:latest")]
    tag: String,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let id = runtime.block_on(image::build(&args.tag))?;
    println!("built {} ({id})", args.tag);
    Ok(())
}
