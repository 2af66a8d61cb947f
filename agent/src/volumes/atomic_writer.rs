//! kubelet's atomic writer (`pkg/volume/util/atomic_writer.go`): how configMap, secret,
//! downwardAPI and projected volumes are written so a container never sees a half-updated
//! volume.
//!
//! Layout of a target directory:
//! ```text
//! ..2026_11_25_18_30_00.1234   the files of one version (timestamped dir)
//! ..data -> ..2026_11_25_18_30_00.1234
//! key    -> ..data/key         one symlink per top-level user-visible path
//! ```
//! An update writes a new timestamped dir, points `..data_tmp` at it and renames it over
//! `..data` (rename(2) is atomic), then removes the user-visible symlinks no longer in the
//! payload and the versions before the one it replaced (that one is kept until the next update
//! so readers that resolved `..data` just before the swap never see ENOENT). Nothing is written when content and modes are unchanged.
//! Ownership for `fsGroup` is applied to the new dir before the swap, so the swap also publishes
//! the right group and modes at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";
const MAX_PATH_LEN: usize = 4096;
const MAX_SEGMENT_LEN: usize = 255;

/// One file of a volume's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's content.
    pub data: Vec<u8>,
    /// Its permission bits (`defaultMode` or the item's `mode`).
    pub mode: u32,
}

/// Why a payload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A payload path kubelet refuses (absolute, `..`, too long).
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io { op, path: path.to_owned(), source }
}

/// Writes `payload` into `target` atomically. `fs_group` applies kubelet's volume ownership
/// (read-only flavour: group read on files, group rx + setgid on directories).
/// Returns whether anything changed.
pub fn write_payload(
    target: &Path,
    payload: &BTreeMap<String, FileProjection>,
    fs_group: Option<u32>,
) -> Result<bool, WriteError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    fs::create_dir_all(target).map_err(io_err("mkdir", target))?;

    let data_link = target.join(DATA_DIR);
    let old_dir_name = match fs::read_link(&data_link) {
        Ok(name) => Some(name),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(WriteError::Io { op: "readlink", path: data_link, source: e }),
    };
    let old_dir = old_dir_name.as_ref().map(|name| target.join(name));

    let stale = match &old_dir {
        Some(dir) => paths_to_remove(dir, payload)?,
        None => BTreeSet::new(),
    };
    let changed = match &old_dir {
        Some(dir) => payload_differs(dir, payload, fs_group),
        None => true,
    };
    if !changed && stale.is_empty() {
        return Ok(false);
    }

    let (new_name, new_dir) = new_timestamped_dir(target)?;
    write_files(&new_dir, payload)?;
    if let Some(gid) = fs_group {
        super::ownership::apply_fs_group(&new_dir, gid, true).map_err(io_err("chown", &new_dir))?;
    }

    // User-visible symlinks first: they dangle harmlessly into `..data` until the swap.
    let top_level: BTreeSet<&str> =
        payload.keys().filter_map(|p| p.split('/').find(|s| !s.is_empty() && *s != ".")).collect();
    for name in &top_level {
        let link = target.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(name), &link).map_err(io_err("symlink", &link))?;
        }
    }

    let tmp_link = target.join(DATA_DIR_TMP);
    match fs::remove_file(&tmp_link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(WriteError::Io { op: "remove", path: tmp_link, source: e }),
    }
    symlink(&new_name, &tmp_link).map_err(io_err("symlink", &tmp_link))?;
    fs::rename(&tmp_link, &data_link).map_err(io_err("rename", &data_link))?;

    // Only top-level paths have user-visible symlinks; nested ones live inside `..data`.
    for path in stale.iter().filter(|p| !p.contains('/')) {
        let link = target.join(path);
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(WriteError::Io { op: "remove", path: link, source: e }),
        }
    }
    // Versions older than the one just replaced are unreachable. The replaced one stays until
    // the next update: a reader that resolved `..data` just before the swap may still be
    // opening files in it (kubelet removes it at once, and such a reader gets ENOENT).
    remove_old_versions(
        target,
        &[new_name.as_str(), &old_dir_name.unwrap_or_default().to_string_lossy()],
    );
    Ok(true)
}

/// Removes the `..<timestamp>` version dirs of `target` other than `keep`; failures only
/// leave garbage behind, so they are logged.
fn remove_old_versions(target: &Path, keep: &[&str]) {
    let Ok(entries) = fs::read_dir(target) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_version = name.starts_with("..") && name != DATA_DIR && name != DATA_DIR_TMP;
        if !is_version
            || keep.contains(&name.as_str())
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        if let Err(e) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(dir = %entry.path().display(), error = %e, "removing an old volume version");
        }
    }
}

/// kubelet's `validatePath`.
fn validate_path(path: &str) -> Result<(), WriteError> {
    if path.is_empty() {
        return Err(WriteError::InvalidPath("must not be empty".into()));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(WriteError::InvalidPath(format!(
            "must be less than or equal to {MAX_PATH_LEN} characters"
        )));
    }
    if Path::new(path).is_absolute() {
        return Err(WriteError::InvalidPath(format!("must not be absolute path: {path}")));
    }
    for segment in path.split('/') {
        if segment == ".." {
            return Err(WriteError::InvalidPath(format!("must not contain '..': {path}")));
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(WriteError::InvalidPath(format!(
                "must not contain a segment longer than {MAX_SEGMENT_LEN} characters: {path}"
            )));
        }
    }
    if path.starts_with("..") {
        return Err(WriteError::InvalidPath(format!("must not start with '..': {path}")));
    }
    Ok(())
}

/// True when any payload file is missing from `old_dir` or differs in content or mode
/// (kubelet compares content only; a mode change is an update too).
fn payload_differs(
    old_dir: &Path,
    payload: &BTreeMap<String, FileProjection>,
    fs_group: Option<u32>,
) -> bool {
    payload.iter().any(|(path, file)| {
        let on_disk = old_dir.join(path);
        let want_mode = match fs_group {
            Some(_) => super::ownership::read_only_file_mode(file.mode),
            None => file.mode & 0o7777,
        };
        let same_content = fs::read(&on_disk).is_ok_and(|data| data == file.data);
        let same_mode = fs::symlink_metadata(&on_disk)
            .is_ok_and(|m| m.permissions().mode() & 0o7777 == want_mode);
        !(same_content && same_mode)
    })
}

/// Paths under the old version (files and dirs) that the new payload no longer has.
fn paths_to_remove(
    old_dir: &Path,
    payload: &BTreeMap<String, FileProjection>,
) -> Result<BTreeSet<String>, WriteError> {
    let mut existing = BTreeSet::new();
    collect_relative(old_dir, Path::new(""), &mut existing)?;
    for path in payload.keys() {
        let mut prefix = PathBuf::new();
        for component in Path::new(path).components() {
            if let Component::Normal(c) = component {
                prefix.push(c);
                existing.remove(&prefix.to_string_lossy().into_owned());
            }
        }
    }
    Ok(existing)
}

fn collect_relative(dir: &Path, rel: &Path, out: &mut BTreeSet<String>) -> Result<(), WriteError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // A dangling `..data` (a crash between steps) has nothing to remove.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(WriteError::Io { op: "readdir", path: dir.to_owned(), source: e }),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("readdir", dir))?;
        let rel_path = rel.join(entry.file_name());
        out.insert(rel_path.to_string_lossy().into_owned());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_relative(&entry.path(), &rel_path, out)?;
        }
    }
    Ok(())
}

/// `..YYYY_MM_DD_HH_MM_SS.<unique>` under `target` (kubelet uses `os.MkdirTemp` with that
/// prefix), mode 0755.
fn new_timestamped_dir(target: &Path) -> Result<(String, PathBuf), WriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stamp = utc_stamp(std::time::SystemTime::now());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("..{stamp}.{}{n}", std::process::id());
        let dir = target.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &dir))?;
                return Ok((name, dir));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(WriteError::Io { op: "mkdir", path: dir, source: e }),
        }
    }
}

/// `YYYY_MM_DD_HH_MM_SS` in UTC (Go's `2006_01_02_15_04_05` layout).
fn utc_stamp(now: std::time::SystemTime) -> String {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn write_files(dir: &Path, payload: &BTreeMap<String, FileProjection>) -> Result<(), WriteError> {
    for (path, file) in payload {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
        }
        fs::write(&full, &file.data).map_err(io_err("write", &full))?;
        // Explicit chmod: the umask must not narrow defaultMode.
        fs::set_permissions(&full, fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(io_err("chmod", &full))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn version_dirs_are_named_by_utc_time() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970_01_01_00_00_00");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_638_896);
        assert_eq!(utc_stamp(t), "2026_11_25_20_34_56");
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(utc_stamp(leap), "2000_02_29_12_00_00");
    }
}
