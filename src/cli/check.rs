//! `skerry check`: the node self-check (kernel features, cgroups, clock, architecture) as a
//! table or as JSON. Exits 1 when a required item is missing. The logic is in
//! `skerry_agent::check`; this file only parses and prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use skerry_agent::check::{self, Host};

/// Arguments of `skerry check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print the report as JSON (for scripts and fleet tooling).
    #[arg(long)]
    pub json: bool,
    /// Read /proc, /sys, /boot and /lib/modules below this directory instead of / (tests).
    #[arg(long, hide = true, default_value = "/")]
    pub root: PathBuf,
}

/// Runs the check and prints the report; the exit code says whether the node can run the agent.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = check::inspect(&Host::at(&args.root), SystemTime::now());
    if args.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
