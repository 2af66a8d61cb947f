//! `skerry kubeconfig create USER [--group G]…`: a kubeconfig for a user, authenticated by a
//! client certificate (CN = the user, one O per group) that the cluster CA in the server's data
//! directory signs on the spot. It is printed to stdout; nothing is stored on the server, so
//! what the user may do is up to RBAC bindings naming the user or its groups.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use skerry_control::pki::{self, ClusterCa};

/// Arguments of `skerry kubeconfig`.
#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    /// The server's data directory (its cluster CA and admin kubeconfig).
    #[arg(long, global = true, default_value = "/var/lib/skerry/server")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: KubeconfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KubeconfigCommand {
    /// Issue a client certificate for USER and print a kubeconfig using it.
    Create {
        /// The user name (the certificate's CN).
        user: String,
        /// A group of the user (the certificate's O; repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The API server URL (default: the one in the data directory's admin kubeconfig).
        #[arg(long)]
        server: Option<String>,
        /// How long the certificate is valid (default: a year; at least 600).
        #[arg(long)]
        expiration_seconds: Option<u64>,
    },
}

/// The `server:` URL of the admin kubeconfig the server wrote.
fn admin_server_url(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin.kubeconfig");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (or pass --server)", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("server:"))
        .map(|url| url.trim().to_string())
        .find(|url| !url.is_empty())
        .with_context(|| format!("no server URL in {}", path.display()))
}

/// Runs a kubeconfig subcommand.
pub fn run(args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KubeconfigCommand::Create { user, groups, server, expiration_seconds } => {
            if user.trim().is_empty() {
                bail!("the user name must not be empty");
            }
            let tls = args.data_dir.join("tls");
            // Never make a CA here: a kubeconfig signed by a CA nobody trusts is useless.
            if !tls.join("ca.crt").exists() || !tls.join("ca.key").exists() {
                bail!("no cluster CA in {} (is --data-dir the server's?)", tls.display());
            }
            let ca = ClusterCa::load_or_create(&tls).context("loading the cluster CA")?;
            let server = match server {
                Some(url) => url,
                None => admin_server_url(&args.data_dir)?,
            };
            let ttl = expiration_seconds.map(Duration::from_secs);
            let cert = ca
                .issue_user(&user, &groups, ttl)
                .with_context(|| format!("issuing a client certificate for {user}"))?;
            print!("{}", pki::kubeconfig(&server, &ca.cert_pem, &cert, &user));
            Ok(ExitCode::SUCCESS)
        }
    }
}
