//! Layer unpacking: a tar stream (gzip, zstd or uncompressed, detected from its magic bytes)
//! becomes a snapshot directory in overlayfs format — `.wh.NAME` whiteouts turn into 0/0
//! character devices and `.wh..wh..opq` into the `trusted.overlay.opaque` xattr.
//!
//! Nothing is ever written outside the target: entry names with `..` or a leading `/` are
//! refused, every parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! so a symlink planted by an earlier entry cannot redirect a later write, the final component
//! is created with `*at` calls relative to that parent (`O_NOFOLLOW`), and hard links may only
//! point at earlier entries of the same layer. Layers may not set `trusted.overlay.*` xattrs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::error::{ImageError, Result};

/// Whiteout prefix in layer tars.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Opaque-directory marker in layer tars.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What unpacking one layer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar (the layer's diff ID).
    pub diff_id: String,
    /// Number of tar entries applied.
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// A reader that hashes what passes through (for the diff ID).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps a possibly compressed layer stream in the right decoder.
pub(crate) fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let magic = buffered.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(buffered)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let dec = ruzstd::decoding::StreamingDecoder::new(buffered)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
        Ok(Box::new(dec))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Unpacks one layer stream into `dest`, an existing empty directory.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<LayerStats> {
    let decoded =
        decompress(reader).map_err(|e| ImageError::io("decompressing layer for", dest, e))?;
    let mut hashing = HashingReader { inner: decoded, hasher: Sha256::new() };
    let root =
        rustix::fs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| ImageError::io("opening snapshot", dest, e.into()))?;
    let mut unpacker = Unpacker {
        root,
        dest,
        privileged: rustix::process::geteuid().is_root(),
        dir_times: Vec::new(),
        stats: LayerStats { diff_id: String::new(), entries: 0, bytes: 0 },
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries =
            archive.entries().map_err(|e| ImageError::io("reading layer into", dest, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ImageError::io("reading layer into", dest, e))?;
            unpacker.apply(&mut entry)?;
            unpacker.stats.entries += 1;
        }
    }
    // The diff ID covers the whole stream, including the end-of-archive padding.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| ImageError::io("reading layer into", dest, e))?;
    unpacker.finish_dir_times();
    let mut stats = unpacker.stats;
    stats.diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    Ok(stats)
}

struct Unpacker<'a> {
    root: OwnedFd,
    dest: &'a Path,
    privileged: bool,
    dir_times: Vec<(PathBuf, u64)>,
    stats: LayerStats,
}

fn unsafe_entry(entry: &Path, reason: &str) -> ImageError {
    ImageError::UnsafeLayer { entry: entry.display().to_string(), reason: reason.into() }
}

/// The entry name as relative components, refusing anything that could leave the root.
fn safe_relative(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(raw, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(raw, "absolute path"))
            }
        }
    }
    Ok(out)
}

impl Unpacker<'_> {
    fn io_err(&self, what: &str, rel: &Path, e: impl Into<io::Error>) -> ImageError {
        ImageError::io(what, &self.dest.join(rel), e.into())
    }

    /// Opens (creating as needed) the directory `rel` beneath the root without following
    /// any symlink; a symlink or non-directory on the way is an unsafe layer.
    fn open_dir(&self, rel: &Path, entry: &Path) -> Result<OwnedFd> {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if rel.as_os_str().is_empty() {
            return rustix::fs::openat(&self.root, ".", flags, Mode::empty())
                .map_err(|e| self.io_err("opening", rel, e));
        }
        match rustix::fs::openat2(&self.root, rel, flags, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::LOOP | Errno::XDEV) => {
                return Err(unsafe_entry(entry, "path goes through a symlink"))
            }
            Err(Errno::NOTDIR) => return Err(unsafe_entry(entry, "parent is not a directory")),
            Err(e) => return Err(self.io_err("opening", rel, e)),
        }
        // Create the missing parents one component at a time (layers may omit them).
        let mut fd = rustix::fs::openat(&self.root, ".", flags, Mode::empty())
            .map_err(|e| self.io_err("opening", rel, e))?;
        for comp in rel.components() {
            let name = comp.as_os_str();
            match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(self.io_err("creating directory", rel, e)),
            }
            fd = match rustix::fs::openat2(&fd, name, flags, Mode::empty(), how) {
                Ok(f) => f,
                Err(Errno::LOOP | Errno::XDEV) => {
                    return Err(unsafe_entry(entry, "path goes through a symlink"))
                }
                Err(Errno::NOTDIR) => return Err(unsafe_entry(entry, "parent is not a directory")),
                Err(e) => return Err(self.io_err("opening", rel, e)),
            };
        }
        Ok(fd)
    }

    /// Removes whatever is at `name` in `dir` (a later entry replaces an earlier one).
    fn remove_existing(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        keep_dir: bool,
    ) -> Result<bool> {
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.io_err("inspecting", rel, e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            // The parent was resolved without symlinks, so this path stays beneath the root;
            // remove_dir_all itself never follows symlinks.
            std::fs::remove_dir_all(self.dest.join(rel))
                .map_err(|e| self.io_err("removing", rel, e))?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())
                .map_err(|e| self.io_err("removing", rel, e))?;
        }
        Ok(false)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| self.io_err("reading entry name in", Path::new(""), e))?
            .into_owned();
        let rel = safe_relative(&raw)?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            return Ok(()); // the layer root itself
        };
        let parent_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let parent = self.open_dir(&parent_rel, &raw)?;
        let name_bytes = name.as_bytes();

        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return rustix::fs::fsetxattr(
                &parent,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| self.io_err("marking opaque (needs root)", &parent_rel, e));
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let hidden = OsStr::from_bytes(hidden);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(unsafe_entry(&raw, "malformed whiteout"));
            }
            let target = parent_rel.join(hidden);
            self.remove_existing(&parent, hidden, &target, false)?;
            return rustix::fs::mknodat(
                &parent,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(|e| self.io_err("creating whiteout (needs root)", &target, e));
        }

        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        let xattrs = self.xattrs(entry);

        let fd = match kind {
            EntryType::Directory => {
                if !self.remove_existing(&parent, &name, &rel, true)? {
                    rustix::fs::mkdirat(&parent, &name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.io_err("creating directory", &rel, e))?;
                }
                let dir = self.open_dir(&rel, &raw)?;
                self.dir_times.push((rel.clone(), mtime));
                Some(dir)
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.remove_existing(&parent, &name, &rel, false)?;
                let fd = rustix::fs::openat(
                    &parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.io_err("creating", &rel, e))?;
                let mut file = File::from(fd);
                let n = io::copy(entry, &mut file).map_err(|e| self.io_err("writing", &rel, e))?;
                self.stats.bytes += n;
                Some(OwnedFd::from(file))
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.io_err("reading link of", &rel, e))?
                    .ok_or_else(|| unsafe_entry(&raw, "symlink without target"))?;
                self.remove_existing(&parent, &name, &rel, false)?;
                // The target is stored verbatim: it is only ever resolved inside the container.
                rustix::fs::symlinkat(target.as_ref(), &parent, &name)
                    .map_err(|e| self.io_err("creating symlink", &rel, e))?;
                None
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|e| self.io_err("reading link of", &rel, e))?
                    .ok_or_else(|| unsafe_entry(&raw, "hard link without target"))?
                    .into_owned();
                let target = safe_relative(&target_raw).map_err(|_| {
                    unsafe_entry(
                        &raw,
                        &format!("hard link to {} leaves the layer", target_raw.display()),
                    )
                })?;
                let tname = target
                    .file_name()
                    .ok_or_else(|| unsafe_entry(&raw, "hard link to the root"))?
                    .to_os_string();
                let tparent = self.open_dir(target.parent().unwrap_or(Path::new("")), &raw)?;
                self.remove_existing(&parent, &name, &rel, false)?;
                rustix::fs::linkat(&tparent, &tname, &parent, &name, AtFlags::empty()).map_err(
                    |e| self.io_err(&format!("hard-linking to {}", target.display()), &rel, e),
                )?;
                return Ok(()); // a hard link shares the target's metadata
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                self.remove_existing(&parent, &name, &rel, false)?;
                match rustix::fs::mknodat(&parent, &name, ft, Mode::from_raw_mode(mode), dev) {
                    Ok(()) => {}
                    Err(Errno::PERM) if !self.privileged => {
                        tracing::warn!(entry = %raw.display(), "skipping device node (not root)");
                        return Ok(());
                    }
                    Err(e) => return Err(self.io_err("creating device node", &rel, e)),
                }
                None
            }
            // PAX/GNU metadata entries are consumed by the tar reader; anything else is skipped.
            other => {
                tracing::debug!(entry = %raw.display(), kind = ?other, "skipping unsupported tar entry");
                return Ok(());
            }
        };
        self.set_metadata(&parent, &name, &rel, fd.as_ref(), mode, uid, gid, mtime, kind, &xattrs)
    }

    fn xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let (Ok(key), value) = (ext.key(), ext.value_bytes()) else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), value.to_vec()));
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn set_metadata(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        fd: Option<&OwnedFd>,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        kind: EntryType,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        if self.privileged {
            let owner = u32::try_from(uid).ok().map(rustix::fs::Uid::from_raw);
            let group = u32::try_from(gid).ok().map(rustix::fs::Gid::from_raw);
            rustix::fs::chownat(parent, name, owner, group, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io_err("changing owner of", rel, e))?;
        }
        if let Some(fd) = fd {
            for (key, value) in xattrs {
                if key.starts_with("trusted.overlay.") {
                    tracing::warn!(entry = %rel.display(), %key, "ignoring overlay xattr from layer");
                    continue;
                }
                if let Err(e) =
                    rustix::fs::fsetxattr(fd, key.as_str(), value, rustix::fs::XattrFlags::empty())
                {
                    tracing::warn!(entry = %rel.display(), %key, error = %e, "could not set xattr");
                }
            }
            // After chown, which clears set-uid bits.
            rustix::fs::fchmod(fd.as_fd(), Mode::from_raw_mode(mode))
                .map_err(|e| self.io_err("changing mode of", rel, e))?;
        } else if kind != EntryType::Symlink {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| self.io_err("changing mode of", rel, e))?;
        }
        if kind != EntryType::Directory {
            let t = Timespec { tv_sec: mtime as i64, tv_nsec: 0 };
            let times = Timestamps { last_access: t, last_modification: t };
            let _ = rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW);
        }
        Ok(())
    }

    /// Directory times last: creating children changed them.
    fn finish_dir_times(&mut self) {
        let mut seen = HashMap::new();
        for (rel, mtime) in self.dir_times.drain(..) {
            seen.insert(rel, mtime);
        }
        for (rel, mtime) in seen {
            let t = Timespec { tv_sec: mtime as i64, tv_nsec: 0 };
            let times = Timestamps { last_access: t, last_modification: t };
            if let Ok(fd) = self.open_dir(&rel, &rel) {
                let _ = rustix::fs::futimens(&fd, &times);
            }
        }
    }
}
