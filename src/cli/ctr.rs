//! `skerry ctr`: the node's containers and images, for operators.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::images;

#[derive(Debug, clap::Args)]
pub struct CtrArgs {
    /// The agent's data directory (containers and images live below it).
    #[arg(long, global = true, default_value = "/var/lib/skerry/agent")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: CtrCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtrCommand {
    /// Pull, list, remove, import, export and inspect images.
    Images(images::ImagesArgs),
}

pub fn run(args: CtrArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CtrCommand::Images(images_args) => images::run(&args.data_dir, images_args),
    }
}
