//! tcpSocket probes: success when a TCP connection opens within the timeout (kubelet's
//! `DoTCPProbe`); the connection is closed at once.

use std::time::Duration;

use tokio::net::TcpStream;

use super::{dial_error, join_host_port, ProbeOutcome, ProbeResult};

pub(crate) async fn probe(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(stream)) => {
            drop(stream);
            ProbeOutcome::new(ProbeResult::Success, "")
        }
        Ok(Err(e)) => ProbeOutcome::new(ProbeResult::Failure, dial_error(&addr, &e)),
        Err(_) => ProbeOutcome::new(ProbeResult::Failure, format!("dial tcp {addr}: i/o timeout")),
    }
}
