//! The HA backend over TLS: a real etcd serving `https://` with client-certificate checks,
//! reached the way `--datastore-endpoint/-cafile/-certfile/-keyfile` configure it
//! (`store::config::open`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use skerry_control::store::config::{open, StoreConfig};
use skerry_control::store::{PutRequest, RangeRequest};

/// A running etcd; killed on drop.
struct EtcdProcess(Child);

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a CA, an etcd server certificate for 127.0.0.1 and a client certificate into `dir`.
fn write_pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, usage) in [
        ("server", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// Starts etcd serving TLS with client-certificate checks on a fresh port; returns it once it
/// logs that it serves on that port (retrying on new ports if one was taken meanwhile).
fn start_tls_etcd(bin: &Path, dir: &Path) -> (EtcdProcess, String) {
    for attempt in 0..3 {
        let port = skerry_testkit::free_port();
        let client = format!("https://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", skerry_testkit::free_port());
        let log_path = dir.join(format!("etcd-{attempt}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut etcd = EtcdProcess(
            Command::new(bin)
                .args(["--name", "default", "--data-dir"])
                .arg(dir.join(format!("data-{attempt}")))
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                .arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(dir.join("ca.pem"))
                .arg("--client-cert-auth")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let serving = format!("client requests on 127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && etcd.0.try_wait().unwrap().is_none() {
            if std::fs::read_to_string(&log_path).unwrap_or_default().contains(&serving) {
                return (etcd, client);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("etcd over TLS did not start");
}

fn tls_config(endpoint: &str, dir: &Path, with_client_cert: bool) -> StoreConfig {
    StoreConfig::Etcd {
        endpoints: vec![endpoint.to_string()],
        ca_file: Some(dir.join("ca.pem")),
        cert_file: with_client_cert.then(|| dir.join("client.pem")),
        key_file: with_client_cert.then(|| dir.join("client-key.pem")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_over_tls_with_client_certificates() {
    let Some(bin) = skerry_testkit::require_program(&["/usr/bin/etcd"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let (_etcd, client) = start_tls_etcd(&bin, dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        if let Ok(store) = open(tls_config(&client, dir.path(), true)).await {
            if store.status().await.is_ok() {
                break store;
            }
        }
        assert!(Instant::now() < deadline, "etcd over TLS did not become reachable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rev = store
        .put(PutRequest { key: "tls".into(), value: "ok".into(), ..Default::default() })
        .await
        .unwrap()
        .revision;
    let got = store.range(RangeRequest { key: "tls".into(), ..Default::default() }).await.unwrap();
    assert_eq!((got.kvs[0].value.as_slice(), got.kvs[0].mod_revision), (&b"ok"[..], rev));
    // Without a client certificate etcd refuses the connection.
    let anonymous = match open(tls_config(&client, dir.path(), false)).await {
        Ok(store) => store.status().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(anonymous.is_err(), "etcd must require a client certificate");
}

#[tokio::test]
async fn a_client_certificate_without_its_key_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let config = StoreConfig::Etcd {
        endpoints: vec!["https://127.0.0.1:1".into()],
        ca_file: Some(dir.path().join("ca.pem")),
        cert_file: Some(dir.path().join("client.pem")),
        key_file: None,
    };
    assert!(open(config).await.is_err());
}
