//! The local cache: a SQLite file under the data dir holding the pods bound to this node and
//! the objects they need (ConfigMaps, Secrets). It is what makes the node autonomous: after an
//! agent restart or a reboot with the server unreachable, pods are started again from here.
//!
//! Writes happen on every watch event (small, WAL mode, `synchronous=NORMAL`: losing the last
//! write on power loss only means one pod version older). Calls block: async code calls them
//! through `spawn_blocking` (see [`LocalCache::run`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A cache failure.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// SQLite failed.
    #[error("local cache: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored object does not parse (written by another version?).
    #[error("local cache: bad {what}: {source}")]
    Decode {
        /// What was read.
        what: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The blocking task failed.
    #[error("local cache: {0}")]
    Task(String),
}

/// The cache (cheap to clone).
#[derive(Clone)]
pub struct LocalCache {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache").finish_non_exhaustive()
    }
}

impl LocalCache {
    /// Opens (creates) `path`.
    pub fn open(path: &Path) -> Result<LocalCache, CacheError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS pods (
                 uid TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 object TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS objects (
                 kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 object TEXT NOT NULL, PRIMARY KEY (kind, namespace, name));",
        )?;
        Ok(LocalCache { conn: Arc::new(Mutex::new(conn)) })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let conn = self.conn.lock().map_err(|_| CacheError::Task("lock poisoned".into()))?;
        f(&conn)
    }

    /// Runs `f` on the blocking pool (SQLite must not block the executor).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalCache) -> Result<T, CacheError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| CacheError::Task(e.to_string()))?
    }

    /// Stores (replaces) a pod.
    pub fn put_pod(&self, pod: &Pod) -> Result<(), CacheError> {
        let m = &pod.metadata;
        let (Some(uid), Some(ns), Some(name)) = (&m.uid, &m.namespace, &m.name) else {
            return Ok(());
        };
        let json = encode(pod)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO pods (uid, namespace, name, object) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(uid) DO UPDATE SET object = excluded.object",
                params![uid, ns, name, json],
            )?;
            Ok(())
        })
    }

    /// Forgets a pod.
    pub fn remove_pod(&self, uid: &str) -> Result<(), CacheError> {
        self.with(|c| {
            c.execute("DELETE FROM pods WHERE uid = ?1", params![uid])?;
            Ok(())
        })
    }

    /// The UID of pod `namespace/name`, if cached.
    pub fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, CacheError> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT uid FROM pods WHERE namespace = ?1 AND name = ?2")?;
            let mut rows = stmt.query_map(params![namespace, name], |r| r.get::<_, String>(0))?;
            Ok(rows.next().transpose()?)
        })
    }

    /// Every cached pod.
    pub fn pods(&self) -> Result<Vec<Pod>, CacheError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT object FROM pods ORDER BY namespace, name")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode(&row?, "pod")?);
            }
            Ok(out)
        })
    }

    /// Stores an object a pod needs (`kind` is `ConfigMap`, `Secret`, …).
    pub fn put_object<T: Serialize>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        object: &T,
    ) -> Result<(), CacheError> {
        let json = encode(object)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO objects (kind, namespace, name, object) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(kind, namespace, name) DO UPDATE SET object = excluded.object",
                params![kind, namespace, name, json],
            )?;
            Ok(())
        })
    }

    /// A stored object.
    pub fn object<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, CacheError> {
        self.with(|c| {
            let json: Option<String> = c
                .query_row(
                    "SELECT object FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                    params![kind, namespace, name],
                    |r| r.get(0),
                )
                .optional()?;
            json.map(|j| decode(&j, kind)).transpose()
        })
    }

    /// Forgets an object (it was deleted on the server).
    pub fn remove_object(&self, kind: &str, namespace: &str, name: &str) -> Result<(), CacheError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind, namespace, name],
            )?;
            Ok(())
        })
    }
}

fn encode<T: Serialize>(object: &T) -> Result<String, CacheError> {
    serde_json::to_string(object)
        .map_err(|source| CacheError::Decode { what: "object to store".into(), source })
}

fn decode<T: DeserializeOwned>(json: &str, what: &str) -> Result<T, CacheError> {
    serde_json::from_str(json).map_err(|source| CacheError::Decode { what: what.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str, name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn pods_and_objects_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.db");
        {
            let cache = LocalCache::open(&path).unwrap();
            cache.put_pod(&pod("u1", "a")).unwrap();
            cache.put_pod(&pod("u2", "b")).unwrap();
            cache.put_pod(&pod("u1", "a")).unwrap();
            cache.remove_pod("u2").unwrap();
            let cm = ConfigMap {
                metadata: ObjectMeta { name: Some("c".into()), ..Default::default() },
                ..Default::default()
            };
            cache.put_object("ConfigMap", "default", "c", &cm).unwrap();
        }
        let cache = LocalCache::open(&path).unwrap();
        let pods = cache.pods().unwrap();
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].metadata.name.as_deref(), Some("a"));
        let cm: Option<ConfigMap> = cache.object("ConfigMap", "default", "c").unwrap();
        assert_eq!(cm.unwrap().metadata.name.as_deref(), Some("c"));
        cache.remove_object("ConfigMap", "default", "c").unwrap();
        assert!(cache.object::<ConfigMap>("ConfigMap", "default", "c").unwrap().is_none());
    }
}
