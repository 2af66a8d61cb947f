//! `skerry etcd`: the store alone as an etcd v3 server.

use std::process::ExitCode;

/// Arguments of `skerry etcd` (flag names follow etcd's).
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// Directory holding the SQLite file.
    #[arg(long, default_value = "/var/lib/skerry/etcd")]
    pub data_dir: std::path::PathBuf,
}

pub fn run(_args: EtcdArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("skerry etcd: not built yet")
}
