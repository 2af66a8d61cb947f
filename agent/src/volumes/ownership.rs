//! `securityContext.fsGroup` on a volume, as kubelet's `SetVolumeOwnership` applies it: every
//! file and directory gets the group (lchown, symlinks included), files gain group read (and
//! write unless the volume is read-only), directories gain group rx and setgid so new files
//! inherit the group. Symlinks are never chmod-ed (that would change their target).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{chownat, AtFlags, Gid, CWD};

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// The mode a regular file of a read-only volume (configMap, secret, …) ends up with.
pub(crate) fn read_only_file_mode(mode: u32) -> u32 {
    (mode & 0o7777) | RO_MASK
}

/// Applies `gid` to `root` and everything below it.
pub(crate) fn apply_fs_group(root: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    let mask = if read_only { RO_MASK } else { RW_MASK };
    walk(root, &mut |path, meta| {
        // lchown (AT_SYMLINK_NOFOLLOW): a symlink must never hand its target, possibly
        // outside the volume, to the pod's group.
        chownat(CWD, path, None, Some(Gid::from_raw(gid)), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mut mode = meta.mode() & 0o7777 | mask;
        if meta.is_dir() {
            mode |= SETGID | EXEC_MASK;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    })
}

fn walk(
    path: &Path,
    visit: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    visit(path, &meta)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            walk(&entry?.path(), visit)?;
        }
    }
    Ok(())
}
