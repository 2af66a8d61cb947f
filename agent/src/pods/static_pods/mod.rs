//! Static pods: pods the node runs from manifest files in `<data dir>/pod-manifests/` (the
//! kubelet's `staticPodPath`; k3s keeps them in `/var/lib/rancher/k3s/agent/pod-manifests`),
//! without asking the API server — the way to run a node's own infrastructure that must come
//! up even when the server is away.
//!
//! [`watch_dir`] scans the directory at start and then every [`POLL`] (re-parsing only when a
//! file's name, size or modification time changed, and everything every [`FULL_RESCAN`], like
//! the kubelet's `fileCheckFrequency`), and publishes the set of static pods; each `*.yaml`,
//! `*.yml` or `*.json` file is one Pod ([`manifest`]). A file that does not parse is logged
//! (naming the file) and skipped; the others run. The pod manager runs static pods with the
//! same workers as API pods; [`mirror`] makes the server show each one as a mirror pod. Only
//! the files decide whether a static pod runs: nothing the API does to a mirror pod stops it.

pub mod manifest;
pub mod mirror;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

/// Where the pod came from (`file` for static pods, `api` for the others).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// The static pod's hash (its UID).
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// When the agent first saw this version of the manifest.
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
/// On a mirror pod: the hash of the static pod it mirrors.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// [`CONFIG_SOURCE`] of static pods from manifest files.
pub const SOURCE_FILE: &str = "file";

/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_secs(2);
/// How often every manifest is re-read even if no file looks changed.
pub const FULL_RESCAN: Duration = Duration::from_secs(20);

/// The static pod directory under an agent data dir.
pub fn manifest_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pod-manifests")
}

/// The hash of a static pod from a manifest file; `None` for any other pod.
pub fn static_hash(pod: &Pod) -> Option<&str> {
    let a = pod.metadata.annotations.as_ref()?;
    if a.get(CONFIG_SOURCE).map(String::as_str) != Some(SOURCE_FILE) {
        return None;
    }
    a.get(CONFIG_HASH).map(String::as_str)
}

/// The hash a mirror pod mirrors; `None` when the pod is not a mirror pod.
pub fn mirror_hash(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(CONFIG_MIRROR).map(String::as_str)
}

/// Name, size and modification time of every manifest file: when this is unchanged, the
/// files need not be read again.
type Fingerprint = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

/// The directory scanner: remembers the pods it made, so an unchanged manifest keeps its
/// `config.seen` time, and the errors it logged, so a broken file is reported once.
struct Scanner {
    dir: PathBuf,
    node: String,
    known: HashMap<String, Pod>,
    reported: HashMap<PathBuf, String>,
}

impl Scanner {
    fn fingerprint(&self) -> Fingerprint {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Fingerprint::new() };
        entries
            .flatten()
            .filter(|e| is_manifest(&e.path()))
            .filter_map(|e| {
                let meta = std::fs::metadata(e.path()).ok()?;
                meta.is_file().then(|| (e.path(), (meta.len(), meta.modified().ok())))
            })
            .collect()
    }

    /// The static pods the files describe now, sorted by file name.
    fn scan(&mut self, files: &Fingerprint) -> Vec<Pod> {
        let seen = Time(Timestamp::now());
        let mut pods = Vec::new();
        let mut reported = HashMap::new();
        let mut names: HashMap<(String, String), PathBuf> = HashMap::new();
        for path in files.keys() {
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| format!("static pod manifest {}: {e}", path.display()))
                .and_then(|text| {
                    manifest::parse(path, &text, &self.node, &seen).map_err(|e| e.to_string())
                });
            let pod = match parsed {
                Ok(pod) => pod,
                Err(err) => {
                    if self.reported.get(path) != Some(&err) {
                        tracing::error!(file = %path.display(), %err, "ignoring a static pod manifest");
                    }
                    reported.insert(path.clone(), err);
                    continue;
                }
            };
            let key = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            if let Some(first) = names.get(&key) {
                let err = format!(
                    "static pod manifest {}: pod {}/{} is already defined by {}",
                    path.display(),
                    key.0,
                    key.1,
                    first.display()
                );
                if self.reported.get(path) != Some(&err) {
                    tracing::error!(file = %path.display(), %err, "ignoring a static pod manifest");
                }
                reported.insert(path.clone(), err);
                continue;
            }
            names.insert(key, path.clone());
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            // An unchanged manifest is the same pod, first seen when it was first seen.
            pods.push(self.known.get(&uid).cloned().unwrap_or(pod));
        }
        self.reported = reported;
        self.known =
            pods.iter().map(|p| (p.metadata.uid.clone().unwrap_or_default(), p.clone())).collect();
        pods
    }
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

/// Scans `dir` (creating it, so people find where manifests go) for node `node`, and keeps
/// scanning until `shutdown` flips. The receiver holds the current static pods; the first scan
/// is done when this returns.
pub async fn watch_dir(
    dir: PathBuf,
    node: String,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Vec<Pod>> {
    if let Err(err) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), %err, "creating the static pod directory");
    }
    let mut scanner = Scanner { dir, node, known: HashMap::new(), reported: HashMap::new() };
    let first = tokio::task::spawn_blocking(move || {
        let files = scanner.fingerprint();
        let pods = scanner.scan(&files);
        (scanner, files, pods)
    })
    .await;
    let (mut scanner, mut files, pods) = match first {
        Ok(done) => done,
        Err(err) => {
            tracing::error!(%err, "scanning the static pod directory");
            let (_tx, rx) = watch::channel(Vec::new());
            return rx;
        }
    };
    if !pods.is_empty() {
        tracing::info!(pods = pods.len(), dir = %scanner.dir.display(), "static pods");
    }
    let (tx, rx) = watch::channel(pods);
    tokio::spawn(async move {
        let mut last_full = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
            let full = last_full.elapsed() >= FULL_RESCAN;
            let previous = files.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let now = scanner.fingerprint();
                let pods = (full || now != previous).then(|| scanner.scan(&now));
                (scanner, now, pods)
            })
            .await;
            let Ok((back, now, pods)) = pass else { return };
            scanner = back;
            files = now;
            if full {
                last_full = Instant::now();
            }
            if let Some(pods) = pods {
                tx.send_if_modified(|current| {
                    let uids = |pods: &[Pod]| -> Vec<Option<String>> {
                        pods.iter().map(|p| p.metadata.uid.clone()).collect()
                    };
                    let changed = uids(current) != uids(&pods);
                    if changed {
                        *current = pods;
                    }
                    changed
                });
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, pod: &str, arg: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\n\
             spec: {{containers: [{{name: c, image: i, args: ['{arg}']}}]}}\n"
        );
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn scanner(dir: &Path) -> Scanner {
        Scanner {
            dir: dir.into(),
            node: "n".into(),
            known: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn the_directory_gives_one_pod_per_valid_manifest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "a", "1");
        write(dir.path(), "b.yml", "b", "1");
        std::fs::write(dir.path().join("c.json"), "not a pod").unwrap();
        write(dir.path(), "d.txt", "d", "1");
        write(dir.path(), ".e.yaml", "e", "1");
        write(dir.path(), "f.yaml", "a", "2");
        let mut s = scanner(dir.path());
        let files = s.fingerprint();
        assert_eq!(files.len(), 4, "{files:?}");
        let pods = s.scan(&files);
        // c.json does not parse; f.yaml defines a pod a.yaml already defines.
        assert_eq!(names(&pods), ["a-n", "b-n"]);
        assert!(s.reported.keys().any(|p| p.ends_with("c.json")));
        assert!(s.reported.keys().any(|p| p.ends_with("f.yaml")));
    }

    #[test]
    fn an_unchanged_manifest_keeps_its_pod_and_a_changed_one_gets_a_new_uid() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "a", "1");
        let mut s = scanner(dir.path());
        let first = s.scan(&s.fingerprint());
        std::thread::sleep(Duration::from_millis(5));
        let again = s.scan(&s.fingerprint());
        assert_eq!(first, again, "same uid, same config.seen");
        write(dir.path(), "a.yaml", "a", "2");
        let changed = s.scan(&s.fingerprint());
        assert_eq!(names(&changed), ["a-n"]);
        assert_ne!(changed[0].metadata.uid, first[0].metadata.uid);
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert!(s.scan(&s.fingerprint()).is_empty());
    }

    #[test]
    fn static_and_mirror_pods_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "a", "1");
        let mut s = scanner(dir.path());
        let pod = s.scan(&s.fingerprint()).remove(0);
        let hash = static_hash(&pod).unwrap().to_string();
        assert_eq!(Some(hash.as_str()), pod.metadata.uid.as_deref());
        assert_eq!(mirror_hash(&pod), None);
        let mirror = mirror::mirror_pod(&pod, "node-uid").unwrap();
        assert_eq!(mirror_hash(&mirror), Some(hash.as_str()));
        assert_eq!(static_hash(&Pod::default()), None);
    }
}
