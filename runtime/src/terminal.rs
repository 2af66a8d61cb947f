//! The operator's terminal, for `skerry ctr exec -t`: raw mode (restored on drop) and its size.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Puts a terminal into raw mode until dropped.
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl std::fmt::Debug for RawMode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMode").field("fd", &self.fd.as_raw_fd()).finish()
    }
}

impl<'fd> RawMode<'fd> {
    /// Raw mode on `fd`, or `None` when it is not a terminal.
    pub fn enable(fd: BorrowedFd<'fd>) -> Option<Self> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// The size (rows, columns) of the terminal on `fd`, if it is one.
pub fn size(fd: impl AsFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize struct to the valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Whether this process runs as root (the runtime needs it).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}
