//! `skerry ctr images`: the node's image store.

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {}

pub fn run(_data_dir: &Path, _args: ImagesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("skerry ctr images: not built yet")
}
