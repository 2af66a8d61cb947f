//! The command line: one module per subcommand, each turning its arguments into a library call.

mod agent;
mod check;
mod ctr;
#[cfg(feature = "server")]
mod etcd;
mod eviction;
mod images;
#[cfg(feature = "server")]
mod kubeconfig;
#[cfg(feature = "server")]
mod secrets_encrypt;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes-compatible orchestrator for edge fleets.
#[derive(Debug, Parser)]
#[command(name = "skerry", version, about)]
pub struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the store alone as an etcd v3 server backed by one SQLite file.
    #[cfg(feature = "server")]
    Etcd(etcd::EtcdArgs),
    /// Run the control plane: the Kubernetes API server over the store.
    #[cfg(feature = "server")]
    Server(Box<server::ServerArgs>),
    /// Manage the bootstrap tokens agents join with.
    #[cfg(feature = "server")]
    Token(token::TokenArgs),
    /// Make kubeconfigs for users (client certificates signed by the cluster CA).
    #[cfg(feature = "server")]
    Kubeconfig(kubeconfig::KubeconfigArgs),
    /// Manage the keys that encrypt Secrets at rest (`skerry server --secrets-encryption`).
    #[cfg(feature = "server")]
    SecretsEncrypt(secrets_encrypt::SecretsEncryptArgs),
    /// Run the node agent: register this node and run the pods bound to it.
    Agent(Box<agent::AgentArgs>),
    /// Check that this node can run the agent: kernel features, cgroups, clock, architecture.
    Check(check::CheckArgs),
    /// Operate the node's containers and images directly (like `crictl` / `k3s ctr`).
    Ctr(ctr::CtrArgs),
}

/// Logs go to stderr; `RUST_LOG` overrides the level chosen by `-v`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Runs the chosen subcommand; the exit code is the command's own (e.g. a container's).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        #[cfg(feature = "server")]
        Command::Etcd(args) => etcd::run(args),
        #[cfg(feature = "server")]
        Command::Server(args) => server::run(*args),
        #[cfg(feature = "server")]
        Command::Token(args) => token::run(args),
        #[cfg(feature = "server")]
        Command::Kubeconfig(args) => kubeconfig::run(args),
        #[cfg(feature = "server")]
        Command::SecretsEncrypt(args) => secrets_encrypt::run(args),
        Command::Agent(args) => agent::run(*args),
        Command::Check(args) => check::run(args),
        Command::Ctr(args) => ctr::run(args),
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
