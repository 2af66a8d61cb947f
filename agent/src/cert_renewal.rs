//! Client certificate renewal, like the kubelet's certificate manager: the agent watches its
//! `system:node:<name>` certificate and, at a random point between 70 % and 90 % of its
//! lifetime (`--cert-renewal-fraction` fixes the point, for tests), makes a new key, submits a
//! CertificateSigningRequest for the same subject with its current certificate (the server
//! approves a node's request for its own name), waits for the certificate, replaces the
//! certificate/key pair as one change (`credentials::write_pair`) and switches the API client
//! to it (`api_client`); the tunnel re-reads the files at each dial.
//!
//! A certificate that has already expired (a board offline for longer than its lifetime) can
//! renew nothing: the agent joins again with its bootstrap token when it has one, and says
//! clearly that it cannot reach the API server when it has none.
//!
//! Clocks: nothing is decided while the clock is before the build year (a board without an
//! RTC before NTP answered), and the deadline is recomputed every few minutes, so a clock that
//! jumps is followed. A clock far ahead of the server's makes every fresh certificate look due
//! at once; renewals are therefore spaced by a gap that doubles while that persists
//! ([`Pacer`]), so a wrong clock never turns renewal into a loop.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::api_client::ApiClient;
use crate::check::clock;
use crate::config::AgentConfig;

/// The earliest and latest point of the lifetime where renewal starts (the kubelet's).
const FRACTION_RANGE: (f64, f64) = (0.7, 0.9);
/// The longest sleep before the deadline is computed again (the wall clock may have jumped).
const RECHECK: Duration = Duration::from_secs(300);
/// The shortest gap between two renewals, and the longest it grows to.
const MIN_GAP: Duration = Duration::from_secs(60);
const MAX_GAP: Duration = Duration::from_secs(3600);
/// Retries after a failure start here and double up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What renewal needs to know of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number, upper-case hex without leading zero bytes (as `openssl -serial`).
    pub serial: String,
    /// Validity bounds, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The subject's common name.
    pub common_name: Option<String>,
}

/// Reads the first certificate of a PEM file (which may also hold its key).
pub fn parse_certificate(pem: &[u8]) -> Result<CertInfo, String> {
    let block = x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or("no CERTIFICATE block")?;
    let cert = block.parse_x509().map_err(|e| format!("unreadable certificate: {e}"))?;
    let raw = cert.tbs_certificate.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    let serial = raw[start..].iter().map(|b| format!("{b:02X}")).collect();
    let validity = cert.validity();
    let common_name =
        cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).map(String::from);
    Ok(CertInfo {
        serial,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        common_name,
    })
}

/// The renewal point as a fraction of the lifetime: the override, else 70–90 % by `random`
/// (in [0, 1)).
pub fn renewal_fraction(fixed: Option<f64>, random: f64) -> f64 {
    let (low, high) = FRACTION_RANGE;
    fixed.unwrap_or(low + (high - low) * random.clamp(0.0, 1.0))
}

/// When to renew (Unix seconds): `fraction` into the lifetime. Signers backdate `notBefore`
/// (Skerry's by a day, the reference's by minutes) for clients whose clocks lag; when the node
/// asked for `requested`, its certificate is good for no longer than that, so the backdate
/// does not count as lifetime (it would make a short certificate due at once).
pub fn renewal_deadline(info: &CertInfo, requested: Option<Duration>, fraction: f64) -> i64 {
    let mut start = info.not_before;
    if let Some(d) = requested {
        let d = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        start = start.max(info.not_after.saturating_sub(d));
    }
    let lifetime = info.not_after.saturating_sub(start).max(0);
    start.saturating_add((lifetime as f64 * fraction).round() as i64)
}

/// What to do about the current certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Renew at this Unix time (now or earlier: at once).
    RenewAt(i64),
    /// It has expired: only the bootstrap token can get a new one.
    Expired,
}

/// The next step for `info` at `now` (Unix seconds).
pub fn next_step(info: &CertInfo, now: i64, requested: Option<Duration>, fraction: f64) -> Next {
    if now >= info.not_after {
        Next::Expired
    } else {
        Next::RenewAt(renewal_deadline(info, requested, fraction))
    }
}

/// Spaces renewals: at least a gap apart, the gap doubling (up to an hour) while fresh
/// certificates are already due by the local clock, back to a minute once one is not.
#[derive(Debug, Clone)]
pub struct Pacer {
    gap: Duration,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer { gap: MIN_GAP }
    }
}

impl Pacer {
    /// The gap to keep after the last renewal.
    pub fn gap(&self) -> Duration {
        self.gap
    }

    /// Records a renewal whose fresh certificate was (`due`) or was not already due.
    pub fn renewed(&mut self, due: bool) {
        self.gap = if due { (self.gap * 2).min(MAX_GAP) } else { MIN_GAP };
    }
}

/// The delay before retry number `failures` (1 = the first).
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_MAX)
}

/// A uniform random number in [0, 1).
fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

fn unix_now() -> i64 {
    clock::unix_seconds(SystemTime::now())
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), |t| t.to_rfc3339())
}

/// Sleeps `d` unless `stop` comes first (then `false`).
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Completes a certificate replacement a crash interrupted; run before the API client is
/// built.
pub fn recover(config: &AgentConfig) {
    if let Ok(Some((cert, key))) = crate::credentials::client_files(&config.kubeconfig) {
        if let Err(err) = crate::credentials::finish_pair(&cert, &key) {
            tracing::warn!(%err, cert = %cert.display(), "completing a certificate replacement");
        }
    }
}

/// The node certificate the kubeconfig names, if the agent is to renew it.
fn node_certificate(config: &AgentConfig) -> Result<(std::path::PathBuf, CertInfo), String> {
    let files = crate::credentials::client_files(&config.kubeconfig).map_err(|e| e.to_string())?;
    let Some((cert, _)) = files else {
        return Err(
            "the kubeconfig embeds its client certificate (not renewed by the agent)".into()
        );
    };
    let info = read_certificate(&cert)?;
    let own = format!("system:node:{}", config.node_name);
    if info.common_name.as_deref() != Some(own.as_str()) {
        return Err(format!(
            "the client certificate is {:?}'s, not {own}'s (not renewed by the agent)",
            info.common_name.unwrap_or_default()
        ));
    }
    Ok((cert, info))
}

fn read_certificate(path: &Path) -> Result<CertInfo, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_certificate(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// Renews the node's client certificate until `stop` (see the module docs).
pub async fn run(config: AgentConfig, api: Arc<ApiClient>, mut stop: watch::Receiver<bool>) {
    let mut loaded = match node_certificate(&config) {
        Ok((_, info)) => info.serial,
        Err(reason) => {
            tracing::info!(%reason, "client certificate renewal is off");
            return;
        }
    };
    let mut fraction: Option<(String, f64)> = None;
    let mut pacer = Pacer::default();
    let mut last_renewal: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    let mut announced: Option<String> = None;
    loop {
        let sane = tokio::select! {
            _ = crate::join::wait_for_sane_clock() => true,
            _ = stop.wait_for(|s| *s) => false,
        };
        if !sane {
            return;
        }
        let step = match node_certificate(&config) {
            Ok((_, info)) if info.serial != loaded => {
                // Replaced but not yet loaded (a failed reload, or a rejoin): load it first.
                match api.reload(&config).await {
                    Ok(()) => {
                        tracing::info!(serial = %info.serial, "the API client now uses the renewed client certificate");
                        loaded = info.serial;
                        continue;
                    }
                    Err(err) => Err(format!("loading the renewed certificate: {err}")),
                }
            }
            Ok((_, info)) => Ok(info),
            Err(err) => Err(err),
        };
        let info = match step {
            Ok(info) => info,
            Err(err) => {
                failures += 1;
                tracing::warn!(%err, "client certificate renewal");
                if !pause(&mut stop, retry_delay(failures)).await {
                    return;
                }
                continue;
            }
        };
        let f = match &fraction {
            Some((serial, f)) if *serial == info.serial => *f,
            _ => {
                let f = renewal_fraction(config.cert_renewal_fraction, random_unit());
                fraction = Some((info.serial.clone(), f));
                f
            }
        };
        let now = unix_now();
        let result = match next_step(&info, now, config.client_cert_duration, f) {
            Next::RenewAt(at) => {
                let mut wait = Duration::from_secs(u64::try_from(at - now).unwrap_or(0));
                if let Some(last) = last_renewal {
                    wait = wait.max(pacer.gap().saturating_sub(last.elapsed()));
                }
                if !wait.is_zero() {
                    if announced.as_deref() != Some(&info.serial) {
                        let at =
                            now.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX));
                        tracing::info!(serial = %info.serial, expires = %rfc3339(info.not_after), renew_at = %rfc3339(at), "client certificate renewal scheduled");
                        announced = Some(info.serial.clone());
                    }
                    if !pause(&mut stop, wait.min(RECHECK)).await {
                        return;
                    }
                    continue;
                }
                renew(&config, &api).await
            }
            Next::Expired => rejoin(&config, &api, &info).await,
        };
        match result {
            Ok(fresh) => {
                failures = 0;
                last_renewal = Some(tokio::time::Instant::now());
                loaded = fresh.serial.clone();
                tracing::info!(serial = %fresh.serial, expires = %rfc3339(fresh.not_after), "the API client now uses the renewed client certificate");
                let now = unix_now();
                let due = matches!(next_step(&fresh, now, config.client_cert_duration, f),
                    Next::RenewAt(at) if at <= now)
                    || now >= fresh.not_after;
                if due {
                    tracing::warn!(
                        now = %rfc3339(now), not_before = %rfc3339(fresh.not_before),
                        "the fresh client certificate is already due for renewal: the clock seems ahead of the server's"
                    );
                }
                pacer.renewed(due);
            }
            Err(err) => {
                failures += 1;
                let delay = retry_delay(failures);
                tracing::warn!(%err, retry_in = ?delay, "renewing the client certificate");
                if !pause(&mut stop, delay).await {
                    return;
                }
            }
        }
    }
}

/// One renewal with the current certificate: a new key, a CSR for the same subject, the pair
/// replaced and the API client switched.
async fn renew(config: &AgentConfig, api: &ApiClient) -> Result<CertInfo, String> {
    let (cert_file, key_file) = crate::credentials::client_files(&config.kubeconfig)
        .map_err(|e| e.to_string())?
        .ok_or("the kubeconfig no longer names certificate files")?;
    let (key_pem, request) =
        crate::join::node_request(&config.node_name).map_err(|e| e.to_string())?;
    tracing::info!(node = %config.node_name, "requesting a renewed client certificate");
    let cert_pem = crate::join::request_certificate(
        api.client(),
        &config.node_name,
        &request,
        config.client_cert_duration,
    )
    .await
    .map_err(|e| e.to_string())?;
    let fresh = parse_certificate(cert_pem.as_bytes())?;
    let own = format!("system:node:{}", config.node_name);
    if fresh.common_name.as_deref() != Some(own.as_str()) {
        return Err(format!("the signer returned a certificate for {:?}", fresh.common_name));
    }
    crate::credentials::write_pair(&cert_file, &key_file, cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| format!("writing {}: {e}", cert_file.display()))?;
    tracing::info!(serial = %fresh.serial, "client certificate renewed");
    api.reload(config).await.map_err(|e| format!("loading the renewed certificate: {e}"))?;
    Ok(fresh)
}

/// An expired certificate: join again with the bootstrap token, if there is one.
async fn rejoin(config: &AgentConfig, api: &ApiClient, old: &CertInfo) -> Result<CertInfo, String> {
    let expired = rfc3339(old.not_after);
    let Some(token) = &config.token else {
        tracing::error!(
            %expired, kubeconfig = %config.kubeconfig.display(),
            "the client certificate has expired and no join token is configured (--token): \
             this node cannot reach the API server until it is given one and restarted; its pods keep running"
        );
        return Err("expired, no join token".into());
    };
    tracing::warn!(%expired, "the client certificate has expired; joining again with the bootstrap token");
    crate::join::join(config, token).await.map_err(|e| {
        format!("the client certificate expired at {expired}; joining again with the bootstrap token failed (is it still valid?): {e}")
    })?;
    api.reload(config).await.map_err(|e| format!("loading the new certificate: {e}"))?;
    node_certificate(config).map(|(_, info)| info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn info(not_before: i64, not_after: i64) -> CertInfo {
        CertInfo { serial: "01".into(), not_before, not_after, common_name: None }
    }

    #[test]
    fn the_renewal_point_lies_between_70_and_90_percent() {
        let cert = info(1_000_000, 1_000_000 + 100 * HOUR);
        let mut seen = Vec::new();
        for random in [0.0, 0.25, 0.5, 0.999_999] {
            let at = renewal_deadline(&cert, None, renewal_fraction(None, random));
            assert!(
                (1_000_000 + 70 * HOUR..=1_000_000 + 90 * HOUR).contains(&at),
                "{random}: {at}"
            );
            seen.push(at);
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "the jitter spreads: {seen:?}");
        for _ in 0..1000 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
        // The override replaces the jitter.
        let at = renewal_deadline(&cert, None, renewal_fraction(Some(0.05), 0.9));
        assert_eq!(at, 1_000_000 + 5 * HOUR);
    }

    #[test]
    fn a_backdated_short_certificate_is_not_due_at_once() {
        // Ten minutes asked for, notBefore backdated a day by the signer.
        let issued = 2_000_000_000;
        let cert = info(issued - 24 * HOUR, issued + 600);
        let requested = Some(Duration::from_secs(600));
        assert_eq!(renewal_deadline(&cert, requested, 0.8), issued + 480);
        assert_eq!(next_step(&cert, issued + 1, requested, 0.8), Next::RenewAt(issued + 480));
        // Without knowing what was asked, the whole validity counts (the kubelet's rule).
        assert!(renewal_deadline(&cert, None, 0.8) < issued);
    }

    #[test]
    fn an_expired_certificate_is_told_apart_and_a_lagging_clock_waits() {
        let cert = info(1_000_000, 1_000_000 + 10 * HOUR);
        assert_eq!(next_step(&cert, 1_000_000 + 10 * HOUR, None, 0.8), Next::Expired);
        assert_eq!(next_step(&cert, 1_000_000 + 100 * HOUR, None, 0.8), Next::Expired);
        // Due but not expired: renew now (the deadline has passed).
        let Next::RenewAt(at) = next_step(&cert, 1_000_000 + 9 * HOUR + 1, None, 0.8) else {
            panic!("expired too early")
        };
        assert!(at <= 1_000_000 + 9 * HOUR);
        // A clock behind notBefore: the deadline is still ahead, nothing happens yet.
        assert_eq!(next_step(&cert, 0, None, 0.8), Next::RenewAt(1_000_000 + 8 * HOUR));
    }

    #[test]
    fn renewals_are_spaced_further_while_fresh_certificates_look_due() {
        let mut pacer = Pacer::default();
        assert_eq!(pacer.gap(), MIN_GAP);
        pacer.renewed(true);
        pacer.renewed(true);
        assert_eq!(pacer.gap(), MIN_GAP * 4);
        for _ in 0..20 {
            pacer.renewed(true);
        }
        assert_eq!(pacer.gap(), MAX_GAP);
        pacer.renewed(false);
        assert_eq!(pacer.gap(), MIN_GAP);
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(100), RETRY_MAX);
    }

    #[test]
    fn certificates_are_read_from_pem_with_or_without_their_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "system:node:pi-1");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x00, 0x0a, 0xbc]));
        let cert = params.self_signed(&key).unwrap().pem();
        let combined = format!("{}{cert}", key.serialize_pem());
        for pem in [cert.as_str(), combined.as_str()] {
            let info = parse_certificate(pem.as_bytes()).unwrap();
            assert_eq!(info.serial, "0ABC");
            assert_eq!(info.common_name.as_deref(), Some("system:node:pi-1"));
            assert_eq!(info.not_before, 1_893_456_000); // 2030-01-01T00:00:00Z
            assert_eq!(info.not_after - info.not_before, 24 * HOUR);
        }
        assert!(parse_certificate(key.serialize_pem().as_bytes()).is_err());
        assert!(parse_certificate(b"garbage").is_err());
    }
}
