//! `skerry etcd`: the store alone as an etcd v3 server (SQLite file behind the etcd gRPC front).
//! Flag names and defaults follow etcd's, so scripts written for etcd keep working.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use skerry_control::store::grpc::{self, ListenUrl, MemberIdentity, ServeConfig, TlsFiles};
use skerry_control::store::sqlite::{AutoCompaction, SqliteOptions, SqliteStore};
use skerry_control::store::Store;

/// The database file inside `--data-dir`.
const DB_FILE: &str = "state.db";

/// Arguments of `skerry etcd` (flag names follow etcd's).
#[derive(Debug, clap::Args)]
pub struct EtcdArgs {
    /// Directory holding the SQLite file and the member identity.
    #[arg(long, default_value = "/var/lib/skerry/etcd")]
    pub data_dir: PathBuf,
    /// Member name shown by `etcdctl member list`.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Comma-separated URLs to serve clients on: http://IP:PORT, https://IP:PORT, unix:///PATH.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub listen_client_urls: String,
    /// Comma-separated client URLs reported by `member list` (default: the listen URLs).
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
    /// Server certificate (PEM) for https:// listeners.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Server private key (PEM) for https:// listeners.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA certificate (PEM) that signs client certificates.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates signed by --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = grpc::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// `periodic` (retention is a duration) or `revision` (retention is a revision count).
    #[arg(long, default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// How much history to keep: `0` (off), `1h`, `30m`, `90s`, a bare number of hours in
    /// periodic mode, or a number of revisions in revision mode.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// Interval of progress notifications to watches that ask for them (e.g. 10m, 500ms).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub experimental_watch_progress_notify_interval: Duration,
}

/// A Go-style duration with one unit: `500ms`, `30s`, `10m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or("missing unit (ms, s, m or h)")?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("{s:?}: unit must be ms, s, m or h")),
    }
}

/// How often revision-mode compaction runs (etcd's revision compactor checks every 5 minutes).
const REVISION_COMPACTION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// etcd's `--auto-compaction-mode` and `--auto-compaction-retention` as the store's setting.
fn auto_compaction(mode: &str, retention: &str) -> anyhow::Result<AutoCompaction> {
    let retention = retention.trim();
    match mode {
        "periodic" => {
            let interval = parse_retention_duration(retention).with_context(|| {
                format!("--auto-compaction-retention {retention:?}: expected e.g. 1h, 30m, 90s or hours")
            })?;
            Ok(if interval.is_zero() {
                AutoCompaction::Disabled
            } else {
                AutoCompaction::Periodic { interval }
            })
        }
        "revision" => {
            let retain: i64 = retention.parse().ok().filter(|r| *r >= 0).with_context(|| {
                format!("--auto-compaction-retention {retention:?}: expected a revision count")
            })?;
            Ok(if retain == 0 {
                AutoCompaction::Disabled
            } else {
                AutoCompaction::Revisions { retain, interval: REVISION_COMPACTION_INTERVAL }
            })
        }
        other => bail!("--auto-compaction-mode {other:?}: expected periodic or revision"),
    }
}

/// `0`, a bare number of hours, or a number with `h`, `m` or `s`.
fn parse_retention_duration(s: &str) -> Option<Duration> {
    let (num, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 'h'),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        'h' => n.checked_mul(3600)?,
        'm' => n.checked_mul(60)?,
        's' => n,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
}

/// Parses the arguments, opens the store and serves until SIGTERM or SIGINT.
pub fn run(args: EtcdArgs) -> anyhow::Result<ExitCode> {
    let listen = ListenUrl::parse_list(&args.listen_client_urls)?;
    let auto_compaction =
        auto_compaction(&args.auto_compaction_mode, &args.auto_compaction_retention)?;
    if args.max_request_bytes == 0 {
        bail!("--max-request-bytes must be positive");
    }
    let tls = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert_file: cert.clone(),
            key_file: key.clone(),
            trusted_ca_file: args.trusted_ca_file.clone(),
            client_cert_auth: args.client_cert_auth,
        }),
        (None, None) => None,
        _ => bail!("--cert-file and --key-file go together"),
    };

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let identity = MemberIdentity::load_or_create(&args.data_dir, &args.name)?;
    let db_path = args.data_dir.join(DB_FILE);
    let options = SqliteOptions {
        max_request_bytes: args.max_request_bytes,
        auto_compaction,
        ..SqliteOptions::default()
    };

    let mut config = ServeConfig::new(listen, identity);
    config.tls = tls;
    config.max_request_bytes = args.max_request_bytes;
    config.progress_notify_interval = args.experimental_watch_progress_notify_interval;
    config.advertise_client_urls =
        args.advertise_client_urls.as_deref().map(split_urls).unwrap_or_default();
    if let Some(client) = grpc::secure_exposed(&mut config, &args.data_dir)? {
        tracing::info!(
            cacert = %client.ca_file.display(),
            cert = %client.cert_file.display(),
            key = %client.key_file.display(),
            "the endpoint is reachable from other hosts: clients need these certificates"
        );
    }

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db_path, options))
            .await
            .context("opening the store")?
            .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
        let store: Arc<dyn Store> = Arc::new(store);
        let server = grpc::bind(store, config).await?;
        tracing::info!(urls = ?server.local_urls(), data_dir = %args.data_dir.display(), "serving etcd v3 API");
        server.run(super::shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_follows_etcds_syntax() {
        assert_eq!(auto_compaction("periodic", "0").unwrap(), AutoCompaction::Disabled);
        assert_eq!(
            auto_compaction("periodic", "1").unwrap(),
            AutoCompaction::Periodic { interval: Duration::from_secs(3600) }
        );
        assert_eq!(
            auto_compaction("periodic", "30m").unwrap(),
            AutoCompaction::Periodic { interval: Duration::from_secs(1800) }
        );
        assert_eq!(
            auto_compaction("revision", "1000").unwrap(),
            AutoCompaction::Revisions { retain: 1000, interval: REVISION_COMPACTION_INTERVAL }
        );
        assert!(auto_compaction("periodic", "1d").is_err());
        assert!(auto_compaction("revision", "-1").is_err());
        assert!(auto_compaction("sometimes", "1").is_err());
    }
}
