//! The store conformance suite against the SQLite backend, one fresh database file per case.

#[macro_use]
mod conformance;

use std::sync::Arc;

use conformance::Backend;
use skerry_control::store::sqlite::{SqliteOptions, SqliteStore};

fn sqlite() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Backend>> + Send>> {
    Box::pin(async {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path().join("store.db"), SqliteOptions::default()).unwrap();
        Some(Backend { store: Arc::new(store), guard: Box::new(dir) })
    })
}

conformance_tests!(sqlite);
