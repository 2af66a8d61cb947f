//! Waking up on state changes instead of polling for them: an inotify watch on a container's
//! state dir fires when a record is renamed into place (`exit.json` is written by the monitor
//! with write-then-rename), so `wait_container` sees an exit as soon as it is recorded rather
//! than up to a poll period later.
//!
//! Inotify is an optimisation only: callers re-check the state after every wake-up and at a
//! bounded interval anyway (a monitor that dies without recording anything changes no file),
//! and fall back to sleeping when no watch can be had (e.g. the per-user instance limit).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Idle inotify instances for reuse. Closing an instance waits for an RCU grace period in the
/// kernel (about 6 ms here, as long as the rest of the wait), so instances are kept rather
/// than closed; each waiter takes its own, so concurrent waits never steal each other's events.
#[derive(Default)]
pub(crate) struct WatchPool {
    idle: Mutex<Vec<OwnedFd>>,
}

/// The most idle instances kept (a few waits at once are common; more are closed when done).
const MAX_IDLE: usize = 8;

impl WatchPool {
    /// Watches `dir` for records renamed into it and for its removal; `None` if inotify is
    /// unavailable (e.g. the per-user instance limit) or `dir` is not a directory.
    pub(crate) fn watch(&self, dir: &Path) -> Option<DirWatch<'_>> {
        let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let fd = match reused {
            Some(fd) => fd,
            None => {
                // SAFETY: a plain syscall; the fd is checked and then owned by `OwnedFd`.
                let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
                if fd < 0 {
                    return None;
                }
                // SAFETY: `fd` was just created and is owned by no one else.
                unsafe { OwnedFd::from_raw_fd(fd) }
            }
        };
        let mask = libc::IN_MOVED_TO | libc::IN_DELETE_SELF | libc::IN_ONLYDIR;
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            self.put_back(fd);
            return None;
        }
        Some(DirWatch { pool: self, fd: Some(fd), wd })
    }

    fn put_back(&self, fd: OwnedFd) {
        drain(&fd);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(fd);
        }
    }
}

/// An inotify watch on one directory; the instance goes back to its pool on drop.
pub(crate) struct DirWatch<'a> {
    pool: &'a WatchPool,
    fd: Option<OwnedFd>,
    wd: i32,
}

impl DirWatch<'_> {
    /// Blocks until something happened in the directory or `timeout` passed, and consumes the
    /// pending events (the caller re-reads the state, so which events came does not matter).
    pub(crate) fn wait(&self, timeout: Duration) {
        let Some(fd) = &self.fd else { return };
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, millis) };
        if ready > 0 {
            drain(fd);
        }
    }
}

impl Drop for DirWatch<'_> {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        // Fails harmlessly when the directory is gone (the kernel removed the watch). A stale
        // event left behind only wakes the instance's next user for one more look.
        // SAFETY: a plain syscall on an fd we own.
        unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), self.wd) };
        self.pool.put_back(fd);
    }
}

/// Reads and discards the pending events of a non-blocking inotify fd.
fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for writes of its length; the fd is non-blocking.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_into_the_dir_wakes_the_waiter() {
        let pool = WatchPool::default();
        // Twice: the second wait reuses the first one's instance.
        for round in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let watch = pool.watch(dir.path()).unwrap();
            wait_for_rename(&watch, dir.path(), round);
        }
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
    }

    fn wait_for_rename(watch: &DirWatch, dir: &Path, round: i32) {
        let path = dir.to_path_buf();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            crate::state::write_json(&path.join("exit.json"), &round).unwrap();
        });
        watch.wait(Duration::from_secs(600));
        // Without the event the wait would last ten minutes; with it, it ends at the rename.
        assert!(dir.join("exit.json").exists());
        writer.join().unwrap();
    }

    #[test]
    fn no_watch_on_a_missing_dir() {
        let dir = tempfile::tempdir().unwrap();
        let pool = WatchPool::default();
        assert!(pool.watch(&dir.path().join("gone")).is_none());
    }
}
