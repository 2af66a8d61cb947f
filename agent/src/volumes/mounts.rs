//! The few mount operations volumes need: tmpfs for `emptyDir.medium: Memory`, finding mount
//! points below a pod's directory (from `/proc/self/mountinfo`) and unmounting them.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

/// Mounts a tmpfs at `target`, limited to `size_bytes` when given (kubelet passes `size=`
/// only for a positive sizeLimit).
pub(crate) fn mount_tmpfs(target: &Path, size_bytes: Option<i64>) -> io::Result<()> {
    let data = size_bytes.filter(|s| *s > 0).map(|s| format!("size={s}")).unwrap_or_default();
    let data = std::ffi::CString::new(data).map_err(io::Error::other)?;
    mount("tmpfs", target, "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, data.as_c_str())
        .map_err(io::Error::from)
}

/// Unmounts `target`.
pub(crate) fn unmount_path(target: &Path) -> io::Result<()> {
    unmount(target, UnmountFlags::empty()).map_err(io::Error::from)
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub(crate) fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Whether `path` is a mount point.
pub(crate) fn is_mount_point(path: &Path) -> io::Result<bool> {
    Ok(mounts_under(path)?.iter().any(|p| p == path))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(digits)) = (bytes[i], octal) {
            let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/var/lib/a\040b\134c"), r"/var/lib/a b\c");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
