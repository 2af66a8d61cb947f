//! Choosing the store backend: the one place the control plane decides between the embedded
//! SQLite file and an external etcd cluster.

use std::path::PathBuf;
use std::sync::Arc;

use super::etcd::{EtcdStore, EtcdTls};
use super::sqlite::{SqliteOptions, SqliteStore};
use super::{Result, Store, StoreError};

/// Which backend to use and how to reach it.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One SQLite file (the default).
    Sqlite { path: PathBuf, options: SqliteOptions },
    /// A real etcd cluster (`--datastore-endpoint`, with optional TLS files).
    Etcd {
        endpoints: Vec<String>,
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    },
}

/// Opens the configured backend.
pub async fn open(config: StoreConfig) -> Result<Arc<dyn Store>> {
    match config {
        StoreConfig::Sqlite { path, options } => {
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(path, options))
                .await
                .map_err(|e| StoreError::Backend(format!("opening the SQLite store: {e}")))??;
            Ok(Arc::new(store))
        }
        StoreConfig::Etcd { endpoints, ca_file, cert_file, key_file } => {
            let tls = match (ca_file, cert_file, key_file) {
                (None, None, None) => None,
                (ca, cert, key) => Some(EtcdTls { ca_file: ca, cert_file: cert, key_file: key }),
            };
            Ok(Arc::new(EtcdStore::connect(&endpoints, tls).await?))
        }
    }
}
