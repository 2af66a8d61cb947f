//! Pulls from a real `docker-registry` on loopback: by tag and digest, over TLS with a test CA,
//! with htpasswd auth, multi-arch resolution, mirrors with fallback, resume after a cut
//! connection, corrupted blobs, and single-flight pulls. Images are built by the tests.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use skerry_images::{
    Credentials, DockerConfig, ImageError, ImageStore, Platform, PullOptions, RegistryConfig,
};

fn have_registry() -> bool {
    skerry_testkit::require_program(&["/usr/bin/docker-registry"]).is_some()
        && skerry_testkit::require_program(&["/usr/bin/skopeo"]).is_some()
}

fn opts(yaml: &str) -> PullOptions {
    PullOptions {
        registry_config: Some(Arc::new(RegistryConfig::parse(yaml, "test").unwrap())),
        ..Default::default()
    }
}

fn store(dir: &std::path::Path) -> ImageStore {
    ImageStore::open(dir.join("store"), Platform::parse(&format!("linux/{}", host_arch())).unwrap())
        .unwrap()
}

/// A one-layer image with `layer` pushed as `repo:tag`; returns the manifest digest.
fn push_simple(reg: &Registry, tmp: &std::path::Path, repo: &str, layer: Vec<u8>) -> String {
    let mut layout = Layout::new(&tmp.join(format!("layout-{}", repo.replace('/', "_"))));
    let m = layout.image(&ImageSpec {
        arch: host_arch(),
        variant: None,
        layers: vec![layer],
        gzip: true,
        cmd: vec!["/bin/sh"],
    });
    layout.tag_manifest(&m, "v1");
    reg.push(&layout.dir, "v1", repo);
    digest(&m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_and_by_digest_over_plain_http() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let d = push_simple(&reg, tmp.path(), "app/busybox", busybox_layer("hello"));
    let s = store(tmp.path());
    let yaml = registry_yaml(&reg, None, None);

    let by_tag = s.pull(&format!("{}/app/busybox:v1", reg.host()), opts(&yaml)).await.unwrap();
    assert_eq!(by_tag.digest, d);
    assert_eq!(by_tag.name, format!("{}/app/busybox:v1", reg.host()));
    let by_digest = s.pull(&format!("{}/app/busybox@{d}", reg.host()), opts(&yaml)).await.unwrap();
    assert_eq!(by_digest.digest, d);
    assert_eq!(s.list().unwrap().len(), 2);
    let inspect = s.inspect(&by_tag.name).unwrap();
    assert_eq!(inspect.config.cmd, vec!["/bin/sh"]);
    assert_eq!(inspect.config.exposed_ports, vec!["8080/tcp"]);

    // Without configuration the registry is spoken to over HTTPS only, which it does not speak.
    let err = s.pull(&format!("{}/app/busybox:v1", reg.host()), PullOptions::default()).await;
    assert!(matches!(err.unwrap_err().root(), ImageError::Connect { .. }));
    // An unknown tag is "not found".
    let err = s.pull(&format!("{}/app/busybox:nope", reg.host()), opts(&yaml)).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::NotFound { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_over_tls_with_a_custom_ca_and_htpasswd_auth() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::generate(&tmp.path().join("ca"));
    let reg = Registry::start(&tmp.path().join("reg"), Some(&ca), Some(("alice", "s3cret")));
    let d = push_simple(&reg, tmp.path(), "secure/app", busybox_layer("tls"));
    let s = store(tmp.path());
    let reference = format!("{}/secure/app:v1", reg.host());

    // Unknown CA: a TLS error, not a silent downgrade.
    let err = s.pull(&reference, PullOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    // CA but no credentials, then a wrong password: "unauthorized".
    let err = s.pull(&reference, opts(&registry_yaml(&reg, Some(&ca), None))).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::Unauthorized { .. }), "{err}");
    let wrong = registry_yaml(&reg, Some(&ca), Some(("alice", "wrong")));
    let err = s.pull(&reference, opts(&wrong)).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("unauthorized"), "{err}");
    assert!(s.list().unwrap().is_empty());

    // Credentials from registries.yaml.
    let good = registry_yaml(&reg, Some(&ca), Some(("alice", "s3cret")));
    assert_eq!(s.pull(&reference, opts(&good)).await.unwrap().digest, d);
    // Credentials from an imagePullSecret (.dockerconfigjson).
    let s2 = store(&tmp.path().join("second"));
    let secret = format!(r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#, reg.host());
    let mut o = opts(&registry_yaml(&reg, Some(&ca), None));
    o.credentials = Some(DockerConfig::parse(secret.as_bytes()).unwrap());
    assert_eq!(s2.pull(&format!("{}/secure/app@{d}", reg.host()), o).await.unwrap().digest, d);
    let mut dc = DockerConfig::default();
    dc.insert(&reg.host(), Credentials::Basic { username: "alice".into(), password: "x".into() });
    let mut o = opts(&registry_yaml(&reg, Some(&ca), None));
    o.credentials = Some(dc);
    let err = s2.pull(&reference, o).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::Unauthorized { .. }), "{err}");
}

// Per-endpoint TLS in registries.yaml includes a client certificate (`tls.cert_file`/`key_file`,
// as in k3s's registries.yaml) for registries that require mutual TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_with_a_client_certificate_from_a_mutual_tls_registry() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::generate(&tmp.path().join("ca"));
    let reg = Registry::start_mutual_tls(&tmp.path().join("reg"), &ca);
    let d = push_simple(&reg, tmp.path(), "mtls/app", busybox_layer("mtls"));
    let s = store(tmp.path());
    let reference = format!("{}/mtls/app:v1", reg.host());

    // The CA alone is not enough: the registry refuses a client without a certificate.
    let err = s.pull(&reference, opts(&registry_yaml(&reg, Some(&ca), None))).await.unwrap_err();
    assert!(s.list().unwrap().is_empty(), "nothing registered after {err}");

    let (cert, key) = ca.client_cert(&tmp.path().join("client"));
    let yaml = format!(
        "{}      cert_file: {}\n      key_file: {}\n",
        registry_yaml(&reg, Some(&ca), None),
        cert.display(),
        key.display()
    );
    assert_eq!(s.pull(&reference, opts(&yaml)).await.unwrap().digest, d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_resolves_to_the_node_platform() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mk = |arch: &'static str, variant: Option<&'static str>, marker: &str| ImageSpec {
        arch,
        variant,
        layers: vec![tar_of(&[Entry::File("etc/arch", marker.as_bytes(), 0o644)])],
        gzip: true,
        cmd: vec!["true"],
    };
    let amd = layout.image(&mk("amd64", None, "amd64"));
    let a64 = layout.image(&mk("arm64", Some("v8"), "arm64"));
    let v7 = layout.image(&mk("arm", Some("v7"), "arm/v7"));
    layout.tag_index(
        &[(&amd, "amd64", None), (&a64, "arm64", Some("v8")), (&v7, "arm", Some("v7"))],
        "multi",
    );
    reg.push(&layout.dir, "multi", "multi/app");
    let yaml = registry_yaml(&reg, None, None);
    let reference = format!("{}/multi/app:multi", reg.host());

    for (platform, want, marker) in [
        ("linux/arm/v7", &v7, "arm/v7"),
        ("linux/arm64", &a64, "arm64"),
        ("linux/amd64", &amd, "amd64"),
    ] {
        let s = store(&tmp.path().join(platform.replace('/', "-")));
        let mut o = opts(&yaml);
        o.platform = Some(Platform::parse(platform).unwrap());
        let img = s.pull(&reference, o).await.unwrap();
        assert_eq!(img.digest, digest(want), "{platform}");
        assert!(img.index_digest.is_some());
        let snap = s.root().join("snapshots").join(&img.layers[0].digest[7..]).join("etc/arch");
        assert_eq!(std::fs::read_to_string(snap).unwrap(), marker);
    }
    let s = store(&tmp.path().join("v6"));
    let mut o = opts(&yaml);
    o.platform = Some(Platform::parse("linux/arm/v6").unwrap());
    let err = s.pull(&reference, o).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::NoMatchingPlatform { .. }), "{err}");
    assert!(err.to_string().contains("linux/arm/v7"), "lists what is available: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_used_and_upstream_is_the_fallback() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Registry::start(&tmp.path().join("up"), None, None);
    let mirror = Registry::start(&tmp.path().join("mirror"), None, None);
    // Only the mirror has `team/app` (under a rewritten name); only upstream has `team/other`.
    let on_mirror = push_simple(
        &mirror,
        tmp.path(),
        "cache/team/app",
        tar_of(&[Entry::File("m", b"m", 0o644)]),
    );
    let on_upstream =
        push_simple(&upstream, tmp.path(), "team/other", tar_of(&[Entry::File("u", b"u", 0o644)]));
    let dead = skerry_testkit::free_port();
    let yaml = format!(
        "mirrors:\n  \"{up}\":\n    endpoint: [\"http://127.0.0.1:{dead}\", \"http://{m}\"]\n    rewrite:\n      \"^team/(.*)\": \"cache/team/$1\"\n\
         configs:\n  \"{up}\":\n    plain_http: true\n",
        up = upstream.host(),
        m = mirror.host()
    );
    let s = store(tmp.path());
    let img = s.pull(&format!("{}/team/app:v1", upstream.host()), opts(&yaml)).await.unwrap();
    assert_eq!(img.digest, on_mirror, "served by the mirror after the dead endpoint");
    let img = s.pull(&format!("{}/team/other:v1", upstream.host()), opts(&yaml)).await.unwrap();
    assert_eq!(img.digest, on_upstream, "fell back to upstream");
    drop(mirror);
    let err =
        s.pull(&format!("{}/team/missing:v1", upstream.host()), opts(&yaml)).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::NotFound { .. }), "definite answer wins: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_blob_resumes_with_a_range_request() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let big = random_bytes(3 << 20, 7);
    let d = push_simple(&reg, tmp.path(), "big/app", tar_of(&[Entry::File("blob", &big, 0o644)]));
    let proxy = CuttingProxy::start(format!("127.0.0.1:{}", reg.port).parse().unwrap(), 1 << 20);
    let host = format!("127.0.0.1:{}", proxy.port);
    let yaml = format!("configs:\n  \"{host}\":\n    plain_http: true\n");
    let s = store(tmp.path());
    let (tx, rx) = tokio::sync::watch::channel(Default::default());
    let mut o = opts(&yaml);
    o.progress = Some(tx);
    let img = s.pull(&format!("{host}/big/app:v1"), o).await.unwrap();
    assert_eq!(img.digest, d);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy cut one connection");
    assert!(proxy.range_requests.load(Ordering::SeqCst) >= 1, "the retry asked for the tail");
    let p = rx.borrow().clone();
    assert_eq!((p.done_bytes, p.layers_done), (p.total_bytes, 1));
    let snap = s.root().join("snapshots").join(&img.layers[0].digest[7..]).join("blob");
    assert_eq!(std::fs::read(snap).unwrap(), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_is_rejected_and_nothing_is_registered() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let layer = gzip(&tar_of(&[Entry::File("f", &random_bytes(100_000, 3), 0o644)]));
    push_simple(
        &reg,
        tmp.path(),
        "bad/app",
        tar_of(&[Entry::File("f", &random_bytes(100_000, 3), 0o644)]),
    );
    // Flip bytes in the registry's copy of the layer (same size, different content).
    let file = reg.blob_file(&digest(&layer));
    let mut data = std::fs::read(&file).unwrap();
    data[5000] ^= 0xff;
    std::fs::write(&file, data).unwrap();

    let s = store(tmp.path());
    let err = s
        .pull(&format!("{}/bad/app:v1", reg.host()), opts(&registry_yaml(&reg, None, None)))
        .await
        .unwrap_err();
    assert!(matches!(err.root(), ImageError::DigestMismatch { .. }), "{err}");
    assert!(s.list().unwrap().is_empty(), "nothing registered");
    let blob = s.root().join("blobs/sha256").join(&digest(&layer)[7..]);
    assert!(!blob.exists(), "the bad blob is not in the store");
    assert_eq!(std::fs::read_dir(s.root().join("ingest")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(s.root().join("snapshots")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_download_it_once() {
    if !have_registry() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), None, None);
    let d = push_simple(
        &reg,
        tmp.path(),
        "shared/app",
        tar_of(&[Entry::File("f", &random_bytes(1 << 20, 9), 0o644)]),
    );
    let proxy = CuttingProxy::start(format!("127.0.0.1:{}", reg.port).parse().unwrap(), u64::MAX);
    let host = format!("127.0.0.1:{}", proxy.port);
    let yaml = format!("configs:\n  \"{host}\":\n    plain_http: true\n");
    let s = store(tmp.path());
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let (s, r, o) = (s.clone(), format!("{host}/shared/app:v1"), opts(&yaml));
            tokio::spawn(async move { s.pull(&r, o).await })
        })
        .collect();
    for p in pulls {
        assert_eq!(p.await.unwrap().unwrap().digest, d);
    }
    assert_eq!(
        proxy.layer_gets.load(Ordering::SeqCst),
        2,
        "config and layer fetched once for four pulls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_with_credentials() {
    if !have_registry() || skerry_testkit::require_program(&["/usr/bin/openssl"]).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(&tmp.path().join("tokens"), "bob", "hunter2");
    let reg = Registry::start_with_tokens(&tmp.path().join("reg"), &tokens, ("bob", "hunter2"));
    let d = push_simple(&reg, tmp.path(), "tok/app", tar_of(&[Entry::File("t", b"t", 0o644)]));
    let reference = format!("{}/tok/app:v1", reg.host());
    let s = store(tmp.path());
    let issued_before = tokens.issued.load(Ordering::SeqCst);

    let anonymous = opts(&registry_yaml(&reg, None, None));
    let err = s.pull(&reference, anonymous).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::Unauthorized { .. }), "{err}");
    let wrong = opts(&registry_yaml(&reg, None, Some(("bob", "nope"))));
    let err = s.pull(&reference, wrong).await.unwrap_err();
    assert!(matches!(err.root(), ImageError::Unauthorized { .. }), "{err}");
    assert!(s.list().unwrap().is_empty());

    let good = opts(&registry_yaml(&reg, None, Some(("bob", "hunter2"))));
    assert_eq!(s.pull(&reference, good).await.unwrap().digest, d);
    assert!(tokens.issued.load(Ordering::SeqCst) > issued_before, "a token was fetched");
}
