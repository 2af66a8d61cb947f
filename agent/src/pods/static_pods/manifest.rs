//! One static pod manifest file → the Pod the agent runs, as the kubelet's file source makes
//! it (`applyDefaults`): the name gets `-<node>` appended (lower-cased) so it is unique across
//! nodes, the namespace defaults to `default`, `spec.nodeName` is this node, the UID is a hash
//! of the node, the file path and the parsed pod (so whitespace or comment edits do not restart
//! it, any spec change does), and the annotations say where it came from
//! (`kubernetes.io/config.source: file`, `config.hash: <uid>`, `config.seen`). Like the
//! kubelet, a static pod tolerates every `NoExecute` taint: an unreachable node must not have
//! its own static pods evicted.
//!
//! A static pod must run without the API server, and its mirror pod must pass NodeRestriction,
//! which refuses mirror pods that reference service accounts, Secrets, ConfigMaps or claims;
//! such a manifest is rejected here with the reason instead of half-running.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{CONFIG_HASH, CONFIG_SEEN, CONFIG_SOURCE, SOURCE_FILE};

/// Why a manifest is not a usable static pod.
#[derive(Debug, thiserror::Error)]
#[error("static pod manifest {path}: {message}")]
pub struct ManifestError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Parses the manifest `text` read from `path` into the static pod for node `node`, first
/// seen at `seen`.
pub fn parse(path: &Path, text: &str, node: &str, seen: &Time) -> Result<Pod, ManifestError> {
    let fail = |message: String| ManifestError { path: path.display().to_string(), message };
    // YAML is a superset of JSON: one parser for .yaml, .yml and .json. More than one
    // document is an error of the parser (one file is one pod, as for the kubelet).
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| fail(format!("not YAML or JSON: {e}")))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("");
    if kind != "Pod" || api_version != "v1" {
        return Err(fail(format!(
            "a static pod manifest holds one v1 Pod, not {api_version:?} {kind:?}"
        )));
    }
    let mut pod: Pod =
        serde_json::from_value(value).map_err(|e| fail(format!("not a valid Pod: {e}")))?;
    let base = pod.metadata.name.clone().unwrap_or_default();
    if base.is_empty() {
        return Err(fail("metadata.name is required".into()));
    }
    let spec = pod.spec.as_ref().ok_or_else(|| fail("spec is required".into()))?;
    if spec.containers.is_empty() {
        return Err(fail("spec.containers must not be empty".into()));
    }
    if let Some(reference) = api_reference(&pod) {
        return Err(fail(format!(
            "static pods cannot reference API objects ({reference}): they run without the \
             API server, and their mirror pods may not"
        )));
    }
    let uid = uid_of(node, path, &pod);
    let name = format!("{base}-{}", node.to_lowercase());
    if name.len() > 253 {
        return Err(fail(format!("the pod name {name:?} is longer than 253 characters")));
    }

    let meta = &mut pod.metadata;
    meta.name = Some(name);
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
    meta.uid = Some(uid.clone());
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH.into(), uid);
    annotations.insert(CONFIG_SOURCE.into(), SOURCE_FILE.into());
    annotations.insert(CONFIG_SEEN.into(), seen.0.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let tolerate_all = Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    };
    if !tolerations.contains(&tolerate_all) {
        tolerations.push(tolerate_all);
    }
    pod.status = None;
    Ok(pod)
}

/// The UID: the first 128 bits of SHA-256 over the node, the file and the pod as parsed (its
/// canonical JSON: k8s-openapi serialises fields in a fixed order and maps sorted), in hex —
/// 32 characters like the kubelet's MD5-based UIDs.
fn uid_of(node: &str, path: &Path, pod: &Pod) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(format!("host:{node}").as_bytes());
    ctx.update(format!("file:{}", path.display()).as_bytes());
    // Serialising a Pod cannot fail (no non-string map keys); an empty body still hashes.
    ctx.update(&serde_json::to_vec(pod).unwrap_or_default());
    ctx.finish().as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The first API object the pod references, described, if any: service accounts, Secrets,
/// ConfigMaps and claims (what NodeRestriction refuses in mirror pods), and projected service
/// account tokens (they need a TokenRequest).
fn api_reference(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let named = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if named(&spec.service_account_name) || named(&spec.service_account) {
        return Some("serviceAccountName".into());
    }
    if spec.image_pull_secrets.as_ref().is_some_and(|s| !s.is_empty()) {
        return Some("imagePullSecrets".into());
    }
    for v in spec.volumes.iter().flatten() {
        let what = if v.secret.is_some() {
            "a secret volume"
        } else if v.config_map.is_some() {
            "a configMap volume"
        } else if v.persistent_volume_claim.is_some() || v.ephemeral.is_some() {
            "a persistentVolumeClaim"
        } else if v.projected.as_ref().is_some_and(|p| {
            p.sources.iter().flatten().any(|s| {
                s.secret.is_some() || s.config_map.is_some() || s.service_account_token.is_some()
            })
        }) {
            "a projected secret, configMap or serviceAccountToken"
        } else {
            continue;
        };
        return Some(format!("volume {:?} is {what}", v.name));
    }
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    for c in containers {
        let from_objects = c.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|f| f.secret_key_ref.is_some() || f.config_map_key_ref.is_some())
        });
        if from_objects || c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            return Some(format!("container {:?} takes env from a Secret or ConfigMap", c.name));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\n\
                       spec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '60']\n";

    fn seen() -> Time {
        Time("2025-01-02T03:04:05Z".parse::<Timestamp>().unwrap())
    }

    fn parse_at(path: &str, text: &str, node: &str) -> Result<Pod, ManifestError> {
        parse(Path::new(path), text, node, &seen())
    }

    #[test]
    fn a_manifest_becomes_the_nodes_static_pod() {
        let pod = parse_at("/m/web.yaml", WEB, "Edge-1").unwrap();
        let m = &pod.metadata;
        assert_eq!(m.name.as_deref(), Some("web-edge-1"));
        assert_eq!(m.namespace.as_deref(), Some("default"));
        let uid = m.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
        let a = m.annotations.as_ref().unwrap();
        assert_eq!(a[CONFIG_HASH], uid);
        assert_eq!(a[CONFIG_SOURCE], "file");
        assert_eq!(a[CONFIG_SEEN], "2025-01-02T03:04:05Z");
        assert_eq!(m.labels.as_ref().unwrap()["app"], "web");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Edge-1"));
        let tolerations = spec.tolerations.unwrap();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tolerations[0].effect.as_deref(), Some("NoExecute"));
        assert!(pod.status.is_none());
    }

    #[test]
    fn the_uid_follows_the_content_the_node_and_the_file_not_the_formatting() {
        let uid = |path: &str, text: &str, node: &str| {
            parse_at(path, text, node).unwrap().metadata.uid.unwrap()
        };
        let base = uid("/m/web.yaml", WEB, "n1");
        assert_eq!(base, uid("/m/web.yaml", WEB, "n1"), "deterministic");
        let reformatted =
            format!("# a comment\n{}", WEB.replace("[sleep, '60']", "\n    - sleep\n    - '60'"));
        assert_eq!(base, uid("/m/web.yaml", &reformatted, "n1"));
        assert_ne!(base, uid("/m/web.yaml", &WEB.replace("'60'", "'61'"), "n1"));
        assert_ne!(base, uid("/m/web.yaml", WEB, "n2"));
        assert_ne!(base, uid("/m/other.yaml", WEB, "n1"));
        // The time it was seen is not part of the identity.
        let later = Time("2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        let again = parse(Path::new("/m/web.yaml"), WEB, "n1", &later).unwrap();
        assert_eq!(again.metadata.uid.unwrap(), base);
    }

    #[test]
    fn json_manifests_and_explicit_namespaces_are_kept() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j","namespace":"kube-system"},
            "spec":{"containers":[{"name":"c","image":"i"}],
            "tolerations":[{"operator":"Exists","effect":"NoExecute"}]}}"#;
        let pod = parse_at("/m/j.json", json, "n").unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(pod.metadata.name.as_deref(), Some("j-n"));
        assert_eq!(pod.spec.unwrap().tolerations.unwrap().len(), 1, "no duplicate toleration");
    }

    #[test]
    fn other_kinds_and_broken_files_are_rejected_naming_the_file() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
        let err = parse_at("/m/cm.yaml", cm, "n").unwrap_err();
        assert!(err.to_string().contains("/m/cm.yaml"), "{err}");
        assert!(err.to_string().contains("ConfigMap"), "{err}");
        let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n";
        assert!(parse_at("/m/d.yaml", deploy, "n").is_err());
        assert!(parse_at("/m/bad.yaml", "kind: [", "n").is_err());
        let two = format!("{WEB}---\n{WEB}");
        assert!(parse_at("/m/two.yaml", &two, "n").is_err());
        let nameless = WEB.replace("  name: web\n", "");
        assert!(parse_at("/m/x.yaml", &nameless, "n").unwrap_err().message.contains("name"));
        let empty = "apiVersion: v1\nkind: Pod\nmetadata: {name: e}\nspec: {containers: []}\n";
        assert!(parse_at("/m/e.yaml", empty, "n").is_err());
    }

    #[test]
    fn references_to_api_objects_are_rejected() {
        let with = |extra: &str| format!("{WEB}{extra}");
        for (extra, what) in [
            ("  serviceAccountName: robot\n", "serviceAccountName"),
            ("  imagePullSecrets: [{name: s}]\n", "imagePullSecrets"),
            ("  volumes: [{name: v, secret: {secretName: s}}]\n", "secret volume"),
            ("  volumes: [{name: v, configMap: {name: c}}]\n", "configMap volume"),
            ("  volumes: [{name: v, persistentVolumeClaim: {claimName: c}}]\n", "persistentVolumeClaim"),
            (
                "  volumes: [{name: v, projected: {sources: [{serviceAccountToken: {path: t}}]}}]\n",
                "projected",
            ),
            (
                "  initContainers: [{name: i, image: x, envFrom: [{configMapRef: {name: c}}]}]\n",
                "env from",
            ),
        ] {
            let err = parse_at("/m/w.yaml", &with(extra), "n").unwrap_err();
            assert!(err.message.contains(what), "{extra}: {err}");
        }
        let host = with("  volumes: [{name: v, hostPath: {path: /tmp}}]\n");
        assert!(parse_at("/m/w.yaml", &host, "n").is_ok(), "hostPath needs no API object");
    }
}
