//! `skerry`: one binary for the control plane (`skerry server`, `skerry etcd`) and the node
//! (`skerry agent`, `skerry ctr`). This crate only parses arguments and dispatches to the
//! libraries; see ARCHITECTURE.md.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("skerry: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
