//! The node's credentials as the tunnel needs them: the server URL, the cluster CA and the
//! client certificate/key as files, read from the agent's kubeconfig (its current context).
//! Inline `*-data` entries are written once under `DATA_DIR/tls/` (mode 0600), since the
//! tunnel re-reads its certificate files on every dial (so a renewed certificate is picked up).

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
}
