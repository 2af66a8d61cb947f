//! Who this server is to etcd clients: a cluster ID and a member ID that stay the same across
//! restarts (clients and the apiserver compare them between responses), kept in a small file in
//! the data directory next to the database.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

/// The file in the data directory that holds the IDs.
pub const IDENTITY_FILE: &str = "member.id";

/// Cluster and member identity reported in every response header and in `MemberList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberIdentity {
    /// etcd `cluster_id`.
    pub cluster_id: u64,
    /// etcd `member_id`; also the leader ID, since this member is the whole cluster.
    pub member_id: u64,
    /// Member name shown by `etcdctl member list`.
    pub name: String,
}

/// Reading or writing the identity file failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading member identity {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("writing member identity {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("member identity {path} is malformed (expected `cluster_id=HEX` and `member_id=HEX`)")]
    Malformed { path: PathBuf },
}

impl MemberIdentity {
    /// The identity stored in `dir`, created with fresh random IDs on first use. Blocking I/O.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self, IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (cluster_id, member_id) =
                    parse(&text).ok_or_else(|| IdentityError::Malformed { path: path.clone() })?;
                Ok(Self { cluster_id, member_id, name: name.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id =
                    Self { cluster_id: random_id(), member_id: random_id(), name: name.into() };
                let text =
                    format!("cluster_id={:x}\nmember_id={:x}\n", id.cluster_id, id.member_id);
                // Write then rename, so a crash never leaves a half-written identity behind.
                let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
                std::fs::write(&tmp, text)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|source| IdentityError::Write { path: path.clone(), source })?;
                Ok(id)
            }
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }
}

/// `(cluster_id, member_id)` from the identity file's text.
fn parse(text: &str) -> Option<(u64, u64)> {
    let mut cluster = None;
    let mut member = None;
    for line in text.lines() {
        let (k, v) = line.split_once('=')?;
        let v = u64::from_str_radix(v.trim(), 16).ok().filter(|v| *v != 0)?;
        match k.trim() {
            "cluster_id" => cluster = Some(v),
            "member_id" => member = Some(v),
            _ => {}
        }
    }
    Some((cluster?, member?))
}

/// A non-zero random 64-bit ID (std's hasher keys come from the OS's random source).
fn random_id() -> u64 {
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        h.write_u128(now.map_or(0, |d| d.as_nanos()));
        h.write_u32(std::process::id());
        let id = h.finish();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = MemberIdentity::load_or_create(dir.path(), "a").unwrap();
        let again = MemberIdentity::load_or_create(dir.path(), "a").unwrap();
        assert_eq!(first, again);
        assert_ne!(first.member_id, 0);
    }

    #[test]
    fn malformed_identity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "garbage").unwrap();
        let err = MemberIdentity::load_or_create(dir.path(), "a").unwrap_err();
        assert!(matches!(err, IdentityError::Malformed { .. }));
    }
}
