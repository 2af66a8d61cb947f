//! Batched UDP I/O for the reader threads: `recvmmsg`/`sendmmsg` move up to [`BATCH`]
//! datagrams per system call when queries queue up, which is where a busy DNS server spends
//! most of its CPU. With one query waiting it behaves like `recv_from` (`MSG_WAITFORONE`).
//!
//! Linux with glibc only (the targets we ship); elsewhere the same interface falls back to one
//! `recv_from`/`send_to` per datagram.

use std::net::{SocketAddr, UdpSocket};

/// Datagrams per system call at most.
pub(crate) const BATCH: usize = 32;
/// Receive buffer per datagram: queries are small, and a bigger one is malformed anyway.
pub(crate) const SLOT: usize = 4096;

/// Received datagrams: `len[i]` bytes of `bufs[i]` from `peers[i]`, for `i < count`.
pub(crate) struct Received {
    pub bufs: Vec<[u8; SLOT]>,
    pub lens: [usize; BATCH],
    pub peers: [Option<SocketAddr>; BATCH],
    pub count: usize,
}

impl Received {
    /// Empty buffers for one batch.
    pub(crate) fn new() -> Self {
        Received {
            bufs: vec![[0u8; SLOT]; BATCH],
            lens: [0; BATCH],
            peers: [None; BATCH],
            count: 0,
        }
    }
}

/// Blocks until at least one datagram arrives (or the socket's read timeout passes), then
/// takes all that are queued, up to [`BATCH`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn recv_batch(socket: &UdpSocket, received: &mut Received) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;

    // SAFETY (all of the block): every pointer handed to the kernel points into `received` or
    // the local arrays, which outlive the call; lengths are those of the buffers.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..BATCH {
        iovecs[i].iov_base = received.bufs[i].as_mut_ptr().cast();
        iovecs[i].iov_len = SLOT;
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let rc = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            BATCH as _,
            libc::MSG_WAITFORONE as _,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        received.count = 0;
        return Err(std::io::Error::last_os_error());
    }
    received.count = usize::try_from(rc).unwrap_or(0).min(BATCH);
    for i in 0..received.count {
        let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        // A datagram larger than the slot is not a query we can answer: treat it as empty.
        received.lens[i] = if truncated { 0 } else { (msgs[i].msg_len as usize).min(SLOT) };
        received.peers[i] = peer_of(&addrs[i]);
    }
    Ok(())
}

/// The socket address in `storage`, if it is IPv4 or IPv6.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn peer_of(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends each (bytes, peer), as few system calls as possible; errors are per datagram and
/// only logged (a client that went away must not stop the others' answers).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn send_batch(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) {
    use std::os::fd::AsRawFd;

    for chunk in replies.chunks(BATCH) {
        let addrs: Vec<socket2::SockAddr> =
            chunk.iter().map(|(_, peer)| socket2::SockAddr::from(*peer)).collect();
        // SAFETY: zeroed iovec/mmsghdr are valid "empty" values; filled in below.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (bytes, _)) in chunk.iter().enumerate() {
            // The kernel only reads through this pointer (sendmmsg).
            iovecs[i].iov_base = bytes.as_ptr().cast_mut().cast();
            iovecs[i].iov_len = bytes.len();
            msgs[i].msg_hdr.msg_name = addrs[i].as_ptr().cast_mut().cast();
            msgs[i].msg_hdr.msg_namelen = addrs[i].len();
            msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < chunk.len() {
            // SAFETY: msgs[sent..chunk.len()] point at `chunk`, `addrs` and `iovecs`, all alive.
            let rc = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (chunk.len() - sent) as _,
                    0,
                )
            };
            if rc <= 0 {
                // The datagram at `sent` failed: report it and go on with the next.
                let error = std::io::Error::last_os_error();
                tracing::debug!(peer = %chunk[sent].1, %error, "udp send");
                sent += 1;
            } else {
                sent += usize::try_from(rc).unwrap_or(1);
            }
        }
    }
}

/// Portable fallback: one datagram per call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn recv_batch(socket: &UdpSocket, received: &mut Received) -> std::io::Result<()> {
    let (len, peer) = socket.recv_from(&mut received.bufs[0])?;
    received.count = 1;
    received.lens[0] = len;
    received.peers[0] = Some(peer);
    Ok(())
}

/// Portable fallback: one datagram per call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn send_batch(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) {
    for (bytes, peer) in replies {
        if let Err(error) = socket.send_to(bytes, peer) {
            tracing::debug!(%peer, %error, "udp send");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_arrives_as_one_batch_and_goes_back_in_one() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        for i in 0..5u8 {
            client.send_to(&[i; 3], server_addr).unwrap();
        }
        let mut received = Received::new();
        let mut got = Vec::new();
        while got.len() < 5 {
            recv_batch(&server, &mut received).unwrap();
            for i in 0..received.count {
                assert_eq!(received.peers[i], Some(client.local_addr().unwrap()));
                got.push(received.bufs[i][..received.lens[i]].to_vec());
            }
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        let replies: Vec<_> =
            got.iter().map(|g| (g.clone(), client.local_addr().unwrap())).collect();
        send_batch(&server, &replies);
        let mut buf = [0u8; 16];
        for i in 0..5u8 {
            let (len, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..len], from), (&[i; 3][..], server_addr));
        }
    }
}
