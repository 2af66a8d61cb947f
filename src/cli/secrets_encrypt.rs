//! Encryption of Secrets at rest: `skerry server --secrets-encryption` wraps the store (see
//! `skerry_control::store::encryption`), and `skerry secrets-encrypt status|rotate` manages the
//! keys in `DATA_DIR/server/encryption-config.json`. A rotation adds a key that seals from the
//! next server start, which re-seals every Secret with it; the old keys stay to read anything
//! written meanwhile.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use skerry_control::store::encryption::{Encrypted, KeyRing};
use skerry_control::store::Store;

/// Arguments of `skerry secrets-encrypt`.
#[derive(Debug, clap::Args)]
pub struct SecretsEncryptArgs {
    /// The server's data directory.
    #[arg(long, global = true, default_value = "/var/lib/skerry/server")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: SecretsEncryptCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretsEncryptCommand {
    /// Show the keys, the one that seals first.
    Status,
    /// Add a new key; the next `skerry server --secrets-encryption` start re-seals every
    /// Secret with it.
    Rotate,
}

/// The configuration file under the data directory.
pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("encryption-config.json")
}

/// `store` with Secrets sealed, after re-sealing those that are plaintext or sealed by an older
/// key (turning encryption on for an existing cluster, or finishing a rotation).
pub async fn encrypted_store(
    data_dir: &Path,
    store: Arc<dyn Store>,
) -> anyhow::Result<Arc<dyn Store>> {
    let path = config_path(data_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let keys = KeyRing::load_or_create(&path).context("loading the encryption keys")?;
    let primary = keys.names()[0].to_string();
    let encrypted = Encrypted::new(store, Arc::new(keys));
    let rewritten = encrypted.reencrypt().await.context("re-encrypting the Secrets")?;
    if rewritten > 0 {
        // The plaintext (or old-key) versions stay in the store's history and free pages until
        // compacted away and the file rewritten; nothing watches yet, so do both now.
        let revision = encrypted.status().await.context("reading the store revision")?.revision;
        encrypted.compact(revision).await.context("compacting the store")?;
        encrypted.defragment().await.context("defragmenting the store")?;
    }
    tracing::info!(key = %primary, rewritten, "secrets encryption at rest is on");
    Ok(Arc::new(encrypted))
}

pub fn run(args: SecretsEncryptArgs) -> anyhow::Result<ExitCode> {
    let path = config_path(&args.data_dir);
    match args.command {
        SecretsEncryptCommand::Status => {
            if !path.exists() {
                println!("Encryption Status: Disabled (no {})", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            let keys = KeyRing::load(&path).context("loading the encryption keys")?;
            println!("Encryption Status: Enabled");
            println!("Active Key: {}", keys.names()[0]);
            println!("Keys: {}", keys.names().join(", "));
        }
        SecretsEncryptCommand::Rotate => {
            let mut keys = KeyRing::load(&path).with_context(|| {
                format!(
                    "no keys to rotate: start the server with --secrets-encryption first ({})",
                    path.display()
                )
            })?;
            let name = keys.add_key().context("creating a key")?.to_string();
            keys.save(&path).context("saving the encryption keys")?;
            println!("Added key {name}; restart skerry server to re-encrypt the Secrets with it.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
