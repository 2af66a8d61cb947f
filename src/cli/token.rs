//! `skerry token create|list|delete`: the bootstrap tokens agents join with, managed through the
//! API with the server's admin kubeconfig (`DATA_DIR/admin.kubeconfig`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use skerry_control::apiserver::bootstrap_token;

/// Arguments of `skerry token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The server's data directory (its admin kubeconfig and cluster CA).
    #[arg(long, global = true, default_value = "/var/lib/skerry")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print it.
    Create {
        /// How long it is valid (`30m`, `24h`; `0`: forever).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// What the token is for.
        #[arg(long, default_value = "created by skerry token create")]
        description: String,
    },
    /// List the tokens (their ids, never their secrets).
    List,
    /// Delete a token by its id (the part before the dot).
    Delete {
        /// The token id (6 characters).
        id: String,
    },
}

async fn admin_client(data_dir: &Path) -> anyhow::Result<kube::Client> {
    let path = data_dir.join("admin.kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("reading {} (is --data-dir the server's?)", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("using {}", path.display()))?;
    kube::Client::try_from(config).context("making the API client")
}

/// Runs a token subcommand.
pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = admin_client(&args.data_dir).await?;
        match args.command {
            TokenCommand::Create { ttl, description } => {
                let ttl = super::server::parse_duration(&ttl)
                    .with_context(|| format!("--ttl {ttl:?}"))?;
                let ttl = (!ttl.is_zero()).then_some(ttl);
                let ca_path = args.data_dir.join("tls/ca.crt");
                let ca_pem = std::fs::read_to_string(&ca_path)
                    .with_context(|| format!("reading {}", ca_path.display()))?;
                let token = bootstrap_token::create(client, ttl, &description)
                    .await
                    .context("creating the token")?;
                println!("{}", bootstrap_token::join_token(&ca_pem, &token));
            }
            TokenCommand::List => {
                let tokens = bootstrap_token::list(client).await.context("listing tokens")?;
                println!("{:<8} {:<22} DESCRIPTION", "ID", "EXPIRES");
                for t in tokens {
                    println!(
                        "{:<8} {:<22} {}",
                        t.id,
                        t.expires.as_deref().unwrap_or("<never>"),
                        t.description
                    );
                }
            }
            TokenCommand::Delete { id } => {
                bootstrap_token::delete(client, &id)
                    .await
                    .with_context(|| format!("deleting token {id:?}"))?;
                println!("token {id} deleted");
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
