//! The node's credentials as the tunnel needs them: the server URL, the cluster CA and the
//! client certificate/key as files, read from the agent's kubeconfig (its current context).
//! Inline `*-data` entries are written once under `DATA_DIR/tls/` (mode 0600), since the
//! tunnel re-reads its certificate files on every dial (so a renewed certificate is picked up).
//!
//! A renewed certificate and its key are replaced as one change ([`write_pair`]): both are
//! written beside the old ones as `*.new`, the certificate last (its presence marks the pair
//! complete), then renamed over the old ones; a crash between the renames is rolled forward at
//! the next start ([`finish_pair`]), so a mismatched pair never outlives a crash.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::tunnel::TunnelConfig;

/// Why the kubeconfig gives no tunnel credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The tunnel's configuration from `kubeconfig` (`server` overrides its URL).
pub fn tunnel_config(
    kubeconfig: &Path,
    server: Option<&str>,
    data_dir: &Path,
) -> Result<TunnelConfig, CredentialsError> {
    let invalid =
        |message: String| CredentialsError::Invalid { path: kubeconfig.to_path_buf(), message };
    let (cluster, user) = current_sections(kubeconfig)?;
    let base = kubeconfig.parent().unwrap_or(Path::new("."));
    let server = match server {
        Some(s) => s.to_string(),
        None => cluster["server"]
            .as_str()
            .ok_or_else(|| invalid("no cluster server".into()))?
            .to_string(),
    };
    let ca = material(&cluster, "certificate-authority", base).map_err(invalid)?;
    let ca_pem = match ca {
        Material::Inline(bytes) => {
            String::from_utf8(bytes).map_err(|_| invalid("CA is not PEM".into()))?
        }
        Material::File(path) => std::fs::read_to_string(&path)
            .map_err(|source| CredentialsError::Read { path: path.clone(), source })?,
    };
    let tls_dir = data_dir.join("tls");
    let cert_file = as_file(
        material(&user, "client-certificate", base).map_err(invalid)?,
        &tls_dir,
        "node.crt",
    )?;
    let key_file =
        as_file(material(&user, "client-key", base).map_err(invalid)?, &tls_dir, "node.key")?;
    Ok(TunnelConfig { server, ca_pem, cert_file, key_file })
}

/// The current context's cluster and user sections of `kubeconfig`.
fn current_sections(kubeconfig: &Path) -> Result<(Value, Value), CredentialsError> {
    let invalid =
        |message: String| CredentialsError::Invalid { path: kubeconfig.to_path_buf(), message };
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(|source| CredentialsError::Read { path: kubeconfig.to_path_buf(), source })?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let current = doc["current-context"].as_str().unwrap_or_default();
    let named = |list: &str, name: &str| -> Option<Value> {
        let items = doc[list].as_array()?;
        items.iter().find(|i| i["name"].as_str() == Some(name)).or_else(|| items.first()).cloned()
    };
    let context = named("contexts", current).map(|c| c["context"].clone()).unwrap_or(Value::Null);
    let cluster = named("clusters", context["cluster"].as_str().unwrap_or_default())
        .map(|c| c["cluster"].clone())
        .ok_or_else(|| invalid("no cluster".into()))?;
    let user = named("users", context["user"].as_str().unwrap_or_default())
        .map(|u| u["user"].clone())
        .ok_or_else(|| invalid("no user".into()))?;
    Ok((cluster, user))
}

/// The client certificate and key files `kubeconfig` names: `None` when either is inline data
/// (nothing the agent could replace in place).
pub fn client_files(kubeconfig: &Path) -> Result<Option<(PathBuf, PathBuf)>, CredentialsError> {
    let invalid =
        |message: String| CredentialsError::Invalid { path: kubeconfig.to_path_buf(), message };
    let (_, user) = current_sections(kubeconfig)?;
    let base = kubeconfig.parent().unwrap_or(Path::new("."));
    let cert = material(&user, "client-certificate", base).map_err(invalid)?;
    let key = material(&user, "client-key", base).map_err(invalid)?;
    Ok(match (cert, key) {
        (Material::File(cert), Material::File(key)) => Some((cert, key)),
        _ => None,
    })
}

/// A kubeconfig entry given as a file path or as base64 data.
enum Material {
    File(PathBuf),
    Inline(Vec<u8>),
}

fn material(section: &Value, key: &str, base: &Path) -> Result<Material, String> {
    if let Some(data) = section[format!("{key}-data")].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("{key}-data: {e}"))?;
        return Ok(Material::Inline(bytes));
    }
    match section[key].as_str() {
        Some(path) => Ok(Material::File(base.join(path))),
        None => Err(format!("no {key} (the tunnel needs a client certificate)")),
    }
}

/// `material` as a file path: inline data is written to `dir/name` (0600) when it differs.
fn as_file(material: Material, dir: &Path, name: &str) -> Result<PathBuf, CredentialsError> {
    let bytes = match material {
        Material::File(path) => return Ok(path),
        Material::Inline(bytes) => bytes,
    };
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(path);
    }
    write_private(&path, &bytes)
        .map_err(|source| CredentialsError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// Writes `bytes` to `path` (mode 0600, parent directories made) atomically: a crash never
/// leaves half a key behind.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `path` with `.new` appended: where the next certificate or key waits for its rename.
fn pending(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// Replaces the certificate at `cert` and the key at `key` (mode 0600) as one change (see the
/// module docs). One file named for both gets the key and the certificate in one write.
pub(crate) fn write_pair(
    cert: &Path,
    key: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> std::io::Result<()> {
    if cert == key {
        return write_private(cert, &[key_pem, cert_pem].concat());
    }
    write_private(&pending(key), key_pem)?;
    write_private(&pending(cert), cert_pem)?;
    finish_pair(cert, key)
}

/// Completes a [`write_pair`] a crash interrupted: a complete pending pair (its certificate
/// written) is renamed into place; a lone pending key (the crash came before the certificate)
/// is removed.
pub(crate) fn finish_pair(cert: &Path, key: &Path) -> std::io::Result<()> {
    let (cert_new, key_new) = (pending(cert), pending(key));
    if cert_new.exists() {
        if key_new.exists() {
            std::fs::rename(&key_new, key)?;
        }
        std::fs::rename(&cert_new, cert)?;
        if let Some(dir) = cert.parent() {
            // The renames themselves must reach the disk before the old pair is forgotten.
            std::fs::File::open(dir)?.sync_all()?;
        }
    } else if key_new.exists() {
        std::fs::remove_file(&key_new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn inline_credentials_become_private_files_and_paths_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    \
             certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    \
             client-key: keys/node.key\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n",
            b64("CA PEM"),
            b64("CERT PEM")
        );
        std::fs::write(&kubeconfig, text).unwrap();
        let cfg = tunnel_config(&kubeconfig, None, dir.path()).unwrap();
        assert_eq!(cfg.server, "https://10.0.0.1:6443");
        assert_eq!(cfg.ca_pem, "CA PEM");
        assert_eq!(std::fs::read_to_string(&cfg.cert_file).unwrap(), "CERT PEM");
        let mode = std::fs::metadata(&cfg.cert_file).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        assert_eq!(cfg.key_file, dir.path().join("keys/node.key"));

        let over = tunnel_config(&kubeconfig, Some("https://lb:6443"), dir.path()).unwrap();
        assert_eq!(over.server, "https://lb:6443");
    }

    #[test]
    fn a_kubeconfig_without_a_client_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "clusters:\n- name: c\n  cluster:\n    server: https://h:6443\n    certificate-authority-data: Q0E=\n\
             users:\n- name: u\n  user:\n    token: abc\n",
        )
        .unwrap();
        let err = tunnel_config(&kubeconfig, None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("no client-certificate"), "{err}");
    }

    #[test]
    fn a_pair_is_replaced_whole_and_an_interrupted_replacement_rolls_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("node.crt"), dir.path().join("node.key"));
        write_pair(&cert, &key, b"cert 1", b"key 1").unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), b"cert 1");
        assert_eq!(std::fs::read(&key).unwrap(), b"key 1");
        assert!(!pending(&cert).exists() && !pending(&key).exists());

        // A crash after the key's rename: the certificate still waits; the next start finishes.
        write_private(&pending(&cert), b"cert 2").unwrap();
        write_private(&key, b"key 2").unwrap();
        finish_pair(&cert, &key).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), b"cert 2");
        assert_eq!(std::fs::read(&key).unwrap(), b"key 2");

        // A crash before the certificate was written: the old pair stays, the lone key goes.
        write_private(&pending(&key), b"key 3").unwrap();
        finish_pair(&cert, &key).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"key 2");
        assert!(!pending(&key).exists());

        // One file for both: key and certificate in one write.
        let both = dir.path().join("node.pem");
        write_pair(&both, &both, b"CERT", b"KEY\n").unwrap();
        assert_eq!(std::fs::read(&both).unwrap(), b"KEY\nCERT");
    }

    #[test]
    fn client_files_are_named_only_when_both_are_files() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let write = |user: &str| {
            let text = format!(
                "clusters:\n- name: c\n  cluster:\n    server: https://h:6443\n\
                 users:\n- name: u\n  user:\n{user}"
            );
            std::fs::write(&kubeconfig, text).unwrap();
        };
        write("    client-certificate: tls/node.crt\n    client-key: /abs/node.key\n");
        let files = client_files(&kubeconfig).unwrap().unwrap();
        assert_eq!(files, (dir.path().join("tls/node.crt"), PathBuf::from("/abs/node.key")));
        write(&format!("    client-certificate-data: {}\n    client-key: k\n", b64("C")));
        assert_eq!(client_files(&kubeconfig).unwrap(), None);
    }
}
