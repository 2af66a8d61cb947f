//! The crate's error type: what can go wrong starting the server or reading its configuration.
//!
//! Bad input at run time (malformed packets, odd Kubernetes objects) is never an error here: the
//! server answers FORMERR or skips the object with a warning, and keeps serving.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors from configuring or starting the cluster DNS.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The domain as configured.
        domain: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Binding a listening socket failed.
    #[error("binding {proto} {addr}: {source}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The address we tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading the host's resolv.conf failed.
    #[error("reading {path}: {source}")]
    ReadResolvConf {
        /// The file we tried to read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration makes no sense (e.g. no listen address).
    #[error("invalid DNS configuration: {0}")]
    Config(String),
}
