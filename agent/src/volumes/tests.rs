//! Volume tests on a real filesystem (tmpfs and ownership tests need root).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, HostPathVolumeSource, Pod, Secret};
use serde_json::json;

use super::*;
use crate::objects::MemoryObjects;

fn file(data: &str, mode: u32) -> FileProjection {
    FileProjection { data: data.as_bytes().to_vec(), mode }
}

fn payload(entries: &[(&str, &str)]) -> BTreeMap<String, FileProjection> {
    entries.iter().map(|(k, v)| (k.to_string(), file(v, 0o644))).collect()
}

fn data_target(dir: &Path) -> String {
    fs::read_link(dir.join("..data")).expect("..data link").to_string_lossy().into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn atomic_writer_lays_out_data_dir_and_user_visible_symlinks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("vol");
    let mut files = payload(&[("plain", "one")]);
    files.insert("nested/deep/file".into(), file("two", 0o600));
    assert!(write_payload(&dir, &files, None).expect("write"));

    let version = data_target(&dir);
    assert!(version.starts_with("..") && version != "..data", "{version}");
    assert!(dir.join(&version).is_dir());
    assert_eq!(fs::read_link(dir.join("plain")).expect("link"), Path::new("..data/plain"));
    assert_eq!(fs::read_link(dir.join("nested")).expect("link"), Path::new("..data/nested"));
    assert_eq!(fs::read_to_string(dir.join("plain")).expect("read"), "one");
    assert_eq!(fs::read_to_string(dir.join("nested/deep/file")).expect("read"), "two");
    assert_eq!(mode(&dir.join("plain")), 0o644);
    assert_eq!(mode(&dir.join("nested/deep/file")), 0o600, "item modes are exact, not umask-ed");
}

#[test]
fn atomic_writer_skips_unchanged_payloads_and_swaps_changed_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("vol");
    write_payload(&dir, &payload(&[("a", "1"), ("b", "2"), ("sub/c", "3")]), None).expect("write");
    let first = data_target(&dir);

    assert!(!write_payload(&dir, &payload(&[("a", "1"), ("b", "2"), ("sub/c", "3")]), None)
        .expect("write"));
    assert_eq!(data_target(&dir), first, "an unchanged payload is not rewritten");

    // A mode change alone is an update.
    let mut changed_mode = payload(&[("a", "1"), ("b", "2"), ("sub/c", "3")]);
    changed_mode.insert("a".into(), file("1", 0o400));
    assert!(write_payload(&dir, &changed_mode, None).expect("write"));
    assert_eq!(mode(&dir.join("a")), 0o400);

    // Drop `b` and `sub/c`, change `a`.
    let second_version = data_target(&dir);
    assert!(write_payload(&dir, &payload(&[("a", "new")]), None).expect("write"));
    let third = data_target(&dir);
    assert_ne!(third, second_version);
    assert_eq!(fs::read_to_string(dir.join("a")).expect("read"), "new");
    assert!(fs::symlink_metadata(dir.join("b")).is_err(), "stale user-visible symlink removed");
    assert!(fs::symlink_metadata(dir.join("sub")).is_err());
    assert!(dir.join(&second_version).exists(), "the replaced version stays for late readers");
    assert!(!dir.join(&first).exists(), "older versions are removed");
    assert!(write_payload(&dir, &payload(&[("a", "newer")]), None).expect("write"));
    let fourth = data_target(&dir);
    let mut leftovers: Vec<_> = fs::read_dir(&dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    leftovers.sort();
    let mut want = vec![third, fourth, "..data".to_owned(), "a".to_owned()];
    want.sort();
    assert_eq!(leftovers, want);
}

#[test]
fn atomic_writer_rejects_paths_escaping_the_volume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for bad in ["/etc/passwd", "../x", "a/../../x", "..hidden"] {
        let err = write_payload(tmp.path(), &payload(&[(bad, "x")]), None).expect_err(bad);
        assert!(err.to_string().starts_with("invalid path: "), "{err}");
    }
}

#[test]
fn readers_never_see_a_partial_or_mixed_file_during_updates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("vol");
    let size = 64 * 1024;
    let version = |c: char| payload(&[("config", &c.to_string().repeat(size))]);
    write_payload(&dir, &version('a'), None).expect("write");

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, path) = (done.clone(), dir.join("config"));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                // A reader descheduled between resolving `..data` and opening the file for two
                // whole updates finds its version gone (ENOENT, as with kubelet): it retries.
                // What atomicity promises is that it never reads a partial or mixed file.
                let data = match fs::read(&path) {
                    Ok(data) => data,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("reading the volume: {e}"),
                };
                assert_eq!(data.len(), size, "never a partial file");
                assert!(data.iter().all(|b| *b == data[0]), "never a mix of versions");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..200 {
        let c = if i % 2 == 0 { 'b' } else { 'a' };
        assert!(write_payload(&dir, &version(c), None).expect("write"));
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("reader thread") > 0);
}

fn objects() -> MemoryObjects {
    let objects = MemoryObjects::new();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "app-config", "namespace": "shop"},
        "data": {"app.yaml": "level: debug\n", "other": "x"},
        "binaryData": {"logo.bin": "AAEC"}
    }))
    .expect("cm");
    objects.put_config_map(cm);
    let root_ca: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kube-root-ca.crt", "namespace": "shop"},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}
    }))
    .expect("cm");
    objects.put_config_map(root_ca);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds", "namespace": "shop"},
        "data": {"password": "czNjcjN0", "user": "YWRtaW4="}
    }))
    .expect("secret");
    objects.put_secret(secret);
    objects
}

fn pod(uid: &str, volumes: serde_json::Value, security: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": uid, "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "robot",
            "securityContext": security,
            "containers": [{"name": "main", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}],
            "volumes": volumes
        }
    }))
    .expect("pod json")
}

fn service_account_volume() -> serde_json::Value {
    json!({"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
    ]}})
}

#[tokio::test]
async fn setup_projects_every_supported_volume_kind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host_dir = tmp.path().join("host/data");
    let manager = VolumeManager::new(tmp.path().join("pods"));
    let objects = objects();
    let volumes = json!([
        {"name": "cache", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}},
        {"name": "config", "configMap": {"name": "app-config", "defaultMode": 0o440,
            "items": [{"key": "app.yaml", "path": "conf/app.yaml", "mode": 0o600}, {"key": "logo.bin", "path": "logo"}]}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu", "divisor": "1m"}}]}},
        service_account_volume()
    ]);
    let pod = pod("uid-1", volumes, json!({}));
    let got = manager.setup(&pod, &objects).await.expect("setup");

    let vol = |name: &str| got.volumes.get(name).unwrap_or_else(|| panic!("volume {name}")).clone();
    let pods = tmp.path().join("pods/uid-1/volumes");
    assert_eq!(
        vol("cache"),
        PodVolume { host_path: pods.join("kubernetes.io~empty-dir/cache"), read_only: false }
    );
    assert_eq!(mode(&vol("cache").host_path), 0o777);
    assert_eq!(vol("host"), PodVolume { host_path: host_dir.clone(), read_only: false });
    assert!(host_dir.is_dir(), "DirectoryOrCreate made the host directory");

    let config = vol("config");
    assert_eq!(config.host_path, pods.join("kubernetes.io~configmap/config"));
    assert!(config.read_only);
    assert_eq!(
        fs::read_to_string(config.host_path.join("conf/app.yaml")).expect("read"),
        "level: debug\n"
    );
    assert_eq!(mode(&config.host_path.join("conf/app.yaml")), 0o600);
    assert_eq!(fs::read(config.host_path.join("logo")).expect("read"), [0, 1, 2]);
    assert_eq!(mode(&config.host_path.join("logo")), 0o440, "defaultMode");
    assert!(!config.host_path.join("other").exists(), "only the listed items");

    let creds = vol("creds").host_path;
    assert_eq!(fs::read_to_string(creds.join("password")).expect("read"), "s3cr3t");
    assert_eq!(mode(&creds.join("password")), 0o644);

    let info = vol("info").host_path;
    assert_eq!(fs::read_to_string(info.join("labels")).expect("read"), "app=\"web\"");
    assert_eq!(fs::read_to_string(info.join("cpu")).expect("read"), "500");

    let api = vol("kube-api-access").host_path;
    assert_eq!(api, pods.join("kubernetes.io~projected/kube-api-access"));
    assert_eq!(fs::read_to_string(api.join("token")).expect("read"), "token:robot::1");
    assert_eq!(
        fs::read_to_string(api.join("ca.crt")).expect("read"),
        "-----BEGIN CERTIFICATE-----\n"
    );
    assert_eq!(fs::read_to_string(api.join("namespace")).expect("read"), "shop");

    // Setup again: idempotent, emptyDir content kept, no new token.
    fs::write(vol("cache").host_path.join("keep"), "me").expect("write");
    manager.setup(&pod, &objects).await.expect("setup again");
    assert!(vol("cache").host_path.join("keep").exists());
    assert_eq!(objects.tokens_issued(), 1);
}

#[tokio::test]
async fn refresh_rewrites_only_changed_volumes_and_rotates_due_tokens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let manager = VolumeManager::new(tmp.path().join("pods"));
    let objects = objects();
    let volumes = json!([
        {"name": "config", "configMap": {"name": "app-config"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        service_account_volume()
    ]);
    let pod = pod("uid-2", volumes, json!({}));
    let got = manager.setup(&pod, &objects).await.expect("setup");
    let config = got.volumes["config"].host_path.clone();
    let before = data_target(&config);

    assert_eq!(manager.refresh(&pod, &objects).await.expect("refresh"), Vec::<String>::new());
    assert_eq!(data_target(&config), before);
    assert_eq!(objects.tokens_issued(), 1, "a fresh token is not re-requested");

    let updated: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "app-config", "namespace": "shop"},
        "data": {"app.yaml": "level: info\n"}
    }))
    .expect("cm");
    objects.put_config_map(updated);
    assert_eq!(manager.refresh(&pod, &objects).await.expect("refresh"), ["config"]);
    assert_eq!(fs::read_to_string(config.join("app.yaml")).expect("read"), "level: info\n");
    assert!(fs::symlink_metadata(config.join("other")).is_err(), "a removed key disappears");

    // 50 minutes into a 3607 s token: past 80 %, so it is rotated.
    manager.tokens.age(Duration::from_secs(50 * 60));
    assert_eq!(manager.refresh(&pod, &objects).await.expect("refresh"), ["kube-api-access"]);
    assert_eq!(objects.tokens_issued(), 2);
    let api = &got.volumes["kube-api-access"].host_path;
    assert_eq!(fs::read_to_string(api.join("token")).expect("read"), "token:robot::2");
}

#[tokio::test]
async fn missing_objects_fail_like_kubelet_unless_optional() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let manager = VolumeManager::new(tmp.path().join("pods"));
    let objects = objects();
    let cases = [
        (json!({"name": "v", "configMap": {"name": "absent"}}), "configmap \"absent\" not found"),
        (json!({"name": "v", "secret": {"secretName": "absent"}}), "secret \"absent\" not found"),
        (
            json!({"name": "v", "configMap": {"name": "app-config", "items": [{"key": "nope", "path": "p"}]}}),
            "configmap references non-existent config key: nope",
        ),
        (
            json!({"name": "v", "secret": {"secretName": "creds", "items": [{"key": "nope", "path": "p"}]}}),
            "references non-existent secret key: nope",
        ),
        (
            json!({"name": "v", "projected": {"sources": [
                {"configMap": {"name": "absent"}}, {"secret": {"name": "gone"}}]}}),
            "[configmap \"absent\" not found, secret \"gone\" not found]",
        ),
        (
            json!({"name": "v", "hostPath": {"path": "/nonexistent/skerry", "type": "Directory"}}),
            "hostPath type check failed: /nonexistent/skerry is not a directory",
        ),
    ];
    for (i, (volume, message)) in cases.into_iter().enumerate() {
        let pod = pod(&format!("uid-f{i}"), json!([volume]), json!({}));
        let err = manager.setup(&pod, &objects).await.expect_err(message);
        assert_eq!(
            err.to_string(),
            format!("MountVolume.SetUp failed for volume \"v\" : {message}")
        );
    }

    let optional = json!([
        {"name": "a", "configMap": {"name": "absent", "optional": true}},
        {"name": "b", "secret": {"secretName": "creds", "optional": true, "items": [{"key": "nope", "path": "p"}]}}
    ]);
    let got =
        manager.setup(&pod("uid-opt", optional, json!({})), &objects).await.expect("optional");
    assert!(fs::read_dir(&got.volumes["a"].host_path)
        .expect("dir")
        .all(|e| { e.expect("entry").file_name().to_string_lossy().starts_with("..") }));
}

#[tokio::test]
async fn claims_resolve_through_the_object_source() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let manager = VolumeManager::new(tmp.path().join("pods"));
    let objects = objects();
    let pv_dir = tmp.path().join("local-path/pvc-1");
    objects.put_claim(
        "shop",
        "data",
        HostPathVolumeSource {
            path: pv_dir.to_string_lossy().into_owned(),
            type_: Some("DirectoryOrCreate".into()),
        },
    );
    let volumes =
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}}]);
    let got = manager.setup(&pod("uid-pvc", volumes, json!({})), &objects).await.expect("setup");
    assert_eq!(got.volumes["data"], PodVolume { host_path: pv_dir.clone(), read_only: true });
    assert!(pv_dir.is_dir());

    let unbound = json!([{"name": "data", "persistentVolumeClaim": {"claimName": "other"}}]);
    let err =
        manager.setup(&pod("uid-pvc2", unbound, json!({})), &objects).await.expect_err("unbound");
    assert!(err.to_string().contains("persistentvolumeclaim \"other\""), "{err}");
}

#[tokio::test]
async fn teardown_removes_the_pod_directory_and_rejects_odd_uids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let manager = VolumeManager::new(tmp.path().join("pods"));
    let objects = objects();
    let volumes = json!([{"name": "cache", "emptyDir": {}}, {"name": "config", "configMap": {"name": "app-config"}}]);
    manager.setup(&pod("uid-t", volumes, json!({})), &objects).await.expect("setup");
    assert_eq!(manager.pods_on_disk().expect("list"), ["uid-t"]);
    manager.teardown("uid-t").expect("teardown");
    assert!(!tmp.path().join("pods/uid-t").exists());
    manager.teardown("uid-t").expect("teardown is idempotent");
    for bad in ["", "..", "a/b"] {
        assert!(matches!(manager.teardown(bad), Err(VolumeError::InvalidPodUid(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn fs_group_owns_projected_and_empty_dir_volumes_like_kubelet() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let manager = VolumeManager::new(tmp.path().join("pods"));
    let objects = objects();
    let volumes = json!([
        {"name": "cache", "emptyDir": {}},
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
        service_account_volume()
    ]);
    let got = manager
        .setup(&pod("uid-g", volumes, json!({"fsGroup": 4321})), &objects)
        .await
        .expect("setup");
    let gid = |p: &Path| fs::metadata(p).expect("stat").gid();

    let cache = &got.volumes["cache"].host_path;
    assert_eq!(gid(cache), 4321);
    assert_eq!(mode(cache), 0o2777, "emptyDir: setgid added");

    let creds = &got.volumes["creds"].host_path;
    assert_eq!(gid(&creds.join("password")), 4321);
    assert_eq!(mode(&creds.join("password")), 0o440, "0400 + group read");
    let version_dir = creds.join(data_target(creds));
    assert_eq!(mode(&version_dir), 0o2755);

    let token = got.volumes["kube-api-access"].host_path.join("token");
    assert_eq!(mode(&token), 0o640, "tokens are 0600 + group read with fsGroup");
    assert_eq!(mode(&got.volumes["kube-api-access"].host_path.join("namespace")), 0o644);

    // Unchanged content with ownership applied is not rewritten.
    let before = data_target(creds);
    let pod = pod(
        "uid-g",
        json!([{"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}}]),
        json!({"fsGroup": 4321}),
    );
    assert_eq!(manager.refresh(&pod, &objects).await.expect("refresh"), Vec::<String>::new());
    assert_eq!(data_target(creds), before);
}

#[tokio::test]
async fn memory_empty_dir_is_a_sized_tmpfs_until_teardown() {
    if !skerry_testkit::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let manager = VolumeManager::new(tmp.path().join("pods"));
    let volumes =
        json!([{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]);
    let pod = pod("uid-m", volumes, json!({}));
    let got = manager.setup(&pod, &MemoryObjects::new()).await.expect("setup");
    let path = got.volumes["scratch"].host_path.clone();
    assert!(mounts::is_mount_point(&path).expect("mountinfo"));
    let stat = rustix::fs::statvfs(&path).expect("statvfs");
    assert_eq!(stat.f_blocks * stat.f_frsize, 1 << 20, "sizeLimit is the tmpfs size");
    fs::write(path.join("f"), "x").expect("write on tmpfs");

    // A second setup does not stack another tmpfs.
    manager.setup(&pod, &MemoryObjects::new()).await.expect("setup again");
    assert_eq!(mounts::mounts_under(&path).expect("mountinfo").len(), 1);
    assert!(path.join("f").exists());

    manager.teardown("uid-m").expect("teardown");
    assert!(!mounts::is_mount_point(&path).expect("mountinfo"));
    assert!(!tmp.path().join("pods/uid-m").exists());
}

#[test]
fn tmpfs_size_is_the_smallest_of_allocatable_pod_limit_and_size_limit() {
    let node = NodeFacts { allocatable_memory: 1 << 30, ..NodeFacts::default() };
    let p = pod("u", json!([]), json!({}));
    let size = |limit: Option<&str>| {
        let ed: EmptyDirVolumeSource =
            serde_json::from_value(json!({"medium": "Memory", "sizeLimit": limit}))
                .expect("emptyDir");
        tmpfs_size(&ed, &p, &node).expect("size")
    };
    assert_eq!(size(None), Some(64 << 20), "the pod's memory limit");
    assert_eq!(size(Some("1Mi")), Some(1 << 20));
    assert_eq!(size(Some("10Gi")), Some(64 << 20), "sizeLimit above the pod limit is ignored");
}
