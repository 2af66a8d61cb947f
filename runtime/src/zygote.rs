//! The monitor zygote: a small, single-threaded process (`monitor zygote`) that the runtime
//! starts once and that forks a monitor per container on request, so that creating a container
//! does not exec and dynamically load the monitor program (the skerry binary) each time: that
//! exec cost 3 ms (the crate's monitor binary) to 6 ms (the full skerry binary) on the critical
//! path of every creation.
//!
//! Why a zygote and not a plain fork: the runtime lives in the multi-threaded agent, where only
//! exec may follow fork. The zygote itself never starts a thread, so its children may run the
//! monitor (libcontainer and all) straight after fork.
//!
//! Protocol: a `SOCK_SEQPACKET` socket pair, the zygote's end on fd 3 (named by
//! `SKERRY_MONITOR_ZYGOTE_FD`). One message per monitor: the container dir as bytes, and two
//! fds (SCM_RIGHTS): the sync pipe's write end and the monitor's log file. The zygote forks
//! twice (the intermediate exits at once) so that each monitor is orphaned in its own session
//! exactly like the `monitor run` path: nothing of the monitor depends on the zygote, the agent
//! or their lifetimes. The monitor reports on the sync pipe as usual; a fork failure is
//! reported there by the zygote. End of file on the socket (the runtime dropped, or the agent
//! died) ends the zygote.

use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;

use crate::error::{io_err, sys_err, Error, Result};

/// The environment variable naming the zygote's socket fd.
const ZYGOTE_FD_ENV: &str = "SKERRY_MONITOR_ZYGOTE_FD";

/// The runtime's handle on its zygote.
pub(crate) struct Zygote {
    socket: Option<OwnedFd>,
    child: Child,
}

impl Zygote {
    /// Starts `command` (the monitor program and its leading arguments) as a zygote.
    pub(crate) fn spawn(mut command: Command) -> Result<Zygote> {
        // Both ends close on exec: the zygote's end is dup2'ed (without the flag) to fd 3 in
        // its own process only, so no other child of the agent keeps the zygote alive.
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .map_err(sys_err("zygote socket pair"))?;
        let theirs_fd = theirs.as_raw_fd();
        command
            .arg("zygote")
            .env(ZYGOTE_FD_ENV, "3")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only dup2, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(io_err("starting monitor zygote", "zygote"))?;
        drop(theirs);
        Ok(Zygote { socket: Some(ours), child })
    }

    /// Asks the zygote for a monitor of the container in `dir`. Success means the zygote has
    /// the request; the monitor (or the zygote) answers on `sync`.
    pub(crate) fn request(&self, dir: &Path, sync: BorrowedFd, log: BorrowedFd) -> Result<()> {
        let Some(socket) = &self.socket else {
            return Err(Error::InvalidState("monitor zygote closed".into()));
        };
        let fds = [sync.as_raw_fd(), log.as_raw_fd()];
        let iov = [IoSlice::new(dir.as_os_str().as_bytes())];
        // MSG_NOSIGNAL: a dead zygote is an error to handle, not a SIGPIPE for the agent.
        sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map(drop)
        .map_err(sys_err("sending to monitor zygote"))
    }

    /// The zygote's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // End of file makes the zygote exit; reap it (it does nothing else that could block).
        drop(self.socket.take());
        let _ = self.child.wait();
    }
}

/// The zygote's main loop (`monitor zygote`): one monitor per message until end of file.
pub(crate) fn serve() -> Result<()> {
    let fd: RawFd = std::env::var(ZYGOTE_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::InvalidState(format!("zygote: {ZYGOTE_FD_ENV} is not set")))?;
    // SAFETY: the runtime passes this fd open, for this process alone.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = vec![0u8; 8192];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        // MSG_CMSG_CLOEXEC: the fds must not reach the container's process across its exec.
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(err) => return Err(sys_err("zygote: receiving")(err)),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(sys_err("zygote: reading message"))? {
            if let ControlMessageOwned::ScmRights(list) = cmsg {
                // SAFETY: received over SCM_RIGHTS just now: owned by no one else.
                fds.extend(list.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let len = msg.bytes;
        if len == 0 && fds.is_empty() {
            return Ok(()); // The runtime closed its end.
        }
        let mut fds = fds.into_iter();
        // A malformed request (cannot come from the runtime) is dropped; its fds close.
        let (Some(sync), Some(log)) = (fds.next(), fds.next()) else { continue };
        let dir = PathBuf::from(OsStr::from_bytes(&buf[..len]));
        fork_monitor(&socket, &dir, sync, log);
    }
}

/// Forks a detached monitor for `dir` and reaps the intermediate process.
fn fork_monitor(socket: &OwnedFd, dir: &Path, sync: OwnedFd, log: OwnedFd) {
    // SAFETY: the zygote is single-threaded, so the child may run any code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => {
            drop(sync);
            drop(log);
            while let Err(Errno::EINTR) = waitpid(child, None) {}
        }
        Ok(ForkResult::Child) => {
            // SAFETY: as above; this child is single-threaded too.
            match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Child) => {
                    let code = run_monitor(socket, dir, sync, log);
                    std::process::exit(code)
                }
                Ok(ForkResult::Parent { .. }) => {}
                Err(err) => {
                    let _ = writeln!(std::fs::File::from(sync), "error: fork: {err}");
                }
            }
            // SAFETY: _exit ends this intermediate without running the zygote's exit handlers.
            unsafe { libc::_exit(0) }
        }
        Err(err) => {
            let _ = writeln!(std::fs::File::from(sync), "error: fork: {err}");
        }
    }
}

/// The forked monitor: the `monitor run` process's state, then the monitor itself.
fn run_monitor(socket: &OwnedFd, dir: &Path, sync: OwnedFd, log: OwnedFd) -> i32 {
    let _ = nix::unistd::setsid();
    // SAFETY: fds 1 and 2 are this process's own; the zygote's socket is not the monitor's
    // business (closing it here leaves the zygote's own copy open).
    unsafe {
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        libc::close(socket.as_raw_fd());
    }
    drop(log);
    match crate::monitor::run_detached(dir, Some(std::fs::File::from(sync))) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("skerry monitor: {err}");
            1
        }
    }
}
