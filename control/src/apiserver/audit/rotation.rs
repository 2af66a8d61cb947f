//! Rotation and retention of the audit log file, with the semantics of the reference's
//! lumberjack writer (`--audit-log-maxsize`, `--audit-log-maxbackup`, `--audit-log-maxage`):
//!
//! - a write that would take the file past the maximum size first moves it aside to
//!   `<name>-<UTC time>.<ext>` in the same directory, the time written `2006-01-02T15-04-05.000`
//!   (`audit.log` → `audit-2025-05-01T10-20-30.123.log`), and starts a new file;
//! - after each rotation (and when the log is opened) old backups are removed: beyond the newest
//!   `max_backups` (0 keeps any number), and those whose name's time is more than `max_age` old
//!   (`None` keeps them at any age). Only names of exactly that shape count as backups, so other
//!   files in the directory are never touched.
//!
//! The pieces are plain functions over paths and a `now` so they are tested without waiting.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// lumberjack's size when none is given: the reference always rotates, at 100 MB by default.
pub const DEFAULT_MAX_MEGABYTES: u64 = 100;

/// How the audit log file is rotated and its backups kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write would take the file past this many bytes.
    pub max_bytes: u64,
    /// Backups kept (newest first); 0 keeps them all.
    pub max_backups: usize,
    /// Backups older than this (by the time in their name) are removed; `None` keeps them.
    pub max_age: Option<Duration>,
}

impl Rotation {
    /// The reference's flags: sizes in megabytes (0: lumberjack's 100), ages in days (0: keep).
    pub fn from_flags(max_size_mb: u64, max_backups: usize, max_age_days: u64) -> Rotation {
        let megabytes = if max_size_mb == 0 { DEFAULT_MAX_MEGABYTES } else { max_size_mb };
        Rotation {
            max_bytes: megabytes.saturating_mul(1024 * 1024),
            max_backups,
            max_age: (max_age_days > 0)
                .then(|| Duration::from_secs(max_age_days.saturating_mul(24 * 60 * 60))),
        }
    }
}

/// The file name split as lumberjack does: `audit.log` → (`audit`, `.log`).
fn stem_and_extension(path: &Path) -> (String, String) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match name.rfind('.').filter(|dot| *dot > 0) {
        Some(dot) => (name[..dot].to_string(), name[dot..].to_string()),
        None => (name, String::new()),
    }
}

/// `2006-01-02T15-04-05.000` for a time (UTC, milliseconds).
fn stamp(at: jiff::Timestamp) -> String {
    let t = at.to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The time in a stamp; `None` unless it is exactly of [`stamp`]'s shape.
fn parse_stamp(text: &str) -> Option<jiff::Timestamp> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 23
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => *c == b'-',
            10 => *c == b'T',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let rfc3339 = format!("{}T{}:{}:{}Z", &text[..10], &text[11..13], &text[14..16], &text[17..]);
    rfc3339.parse().ok()
}

/// Where the current file goes when rotated at `now`: `<stem>-<stamp><ext>` beside it. When a
/// backup is already stamped `now` or later (rotations within a millisecond, or a clock set
/// back), the name is a millisecond past the newest backup instead, so a backup is never
/// overwritten and the names keep the order the files were written in (retention relies on it).
pub fn backup_path(path: &Path, now: jiff::Timestamp) -> PathBuf {
    let (stem, extension) = stem_and_extension(path);
    // Names hold milliseconds: compare at that precision.
    let now = jiff::Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now);
    let at = match backups(path).first() {
        Some((newest, _)) if *newest >= now => {
            newest.checked_add(jiff::SignedDuration::from_millis(1)).unwrap_or(*newest)
        }
        _ => now,
    };
    path.with_file_name(format!("{stem}-{}{extension}", stamp(at)))
}

/// The backups of `path` with the time in their names, newest first.
pub fn backups(path: &Path) -> Vec<(jiff::Timestamp, PathBuf)> {
    let (stem, extension) = stem_and_extension(path);
    let prefix = format!("{stem}-");
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut found: Vec<(jiff::Timestamp, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let middle = name.strip_prefix(&prefix)?.strip_suffix(extension.as_str())?;
            Some((parse_stamp(middle)?, entry.path()))
        })
        .collect();
    found.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    found
}

/// Removes the backups `rotation` does not keep at `now`; returns what was removed.
pub fn prune(path: &Path, rotation: &Rotation, now: jiff::Timestamp) -> Vec<PathBuf> {
    let cutoff = rotation.max_age.and_then(|age| {
        let age = jiff::SignedDuration::try_from(age).ok()?;
        now.checked_sub(age).ok()
    });
    let mut removed = Vec::new();
    for (index, (at, backup)) in backups(path).into_iter().enumerate() {
        let too_many = rotation.max_backups > 0 && index >= rotation.max_backups;
        let too_old = cutoff.is_some_and(|cutoff| at < cutoff);
        if !(too_many || too_old) {
            continue;
        }
        match std::fs::remove_file(&backup) {
            Ok(()) => removed.push(backup),
            Err(err) => {
                tracing::warn!(%err, path = %backup.display(), "removing an old audit log")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn backups_are_named_like_lumberjack_and_only_those_count() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let now = at("2025-05-01T10:20:30.123456Z");
        let first = backup_path(&log, now);
        assert_eq!(first, dir.path().join("audit-2025-05-01T10-20-30.123.log"));
        std::fs::write(&first, "x").unwrap();
        // The same millisecond again: the next free one, never an overwrite.
        assert_eq!(backup_path(&log, now), dir.path().join("audit-2025-05-01T10-20-30.124.log"));
        // A clock set back still names the next backup after the newest.
        let earlier = at("2025-05-01T09:00:00Z");
        assert_eq!(
            backup_path(&log, earlier),
            dir.path().join("audit-2025-05-01T10-20-30.124.log")
        );
        for other in ["audit.log", "audit-old.log", "audit-2025-05-01T10-20-30.123.txt", "x.log"] {
            std::fs::write(dir.path().join(other), "y").unwrap();
        }
        let found = backups(&log);
        assert_eq!(found, vec![(at("2025-05-01T10:20:30.123Z"), first)]);
        let bare = dir.path().join("events");
        assert_eq!(
            backup_path(&bare, now),
            dir.path().join("events-2025-05-01T10-20-30.123"),
            "no extension: the stamp ends the name"
        );
    }

    #[test]
    fn retention_keeps_the_newest_backups_within_the_age() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let days_ago = |days: i64| {
            at("2025-05-10T00:00:00Z").checked_sub(jiff::SignedDuration::from_hours(24 * days))
        };
        // Rotated oldest first, as time goes; `names` is newest first.
        let mut names = Vec::new();
        for days in [9, 8, 3, 2, 1] {
            let path = backup_path(&log, days_ago(days).unwrap());
            std::fs::write(&path, "x").unwrap();
            names.insert(0, path);
        }
        std::fs::write(&log, "current").unwrap();
        let now = at("2025-05-10T00:00:00Z");
        // Nothing limits: everything stays.
        let keep_all = Rotation::from_flags(1, 0, 0);
        assert!(prune(&log, &keep_all, now).is_empty());
        // Seven days: the 8- and 9-day-old backups go.
        let week = Rotation::from_flags(1, 0, 7);
        assert_eq!(prune(&log, &week, now), names[3..].to_vec());
        // Two backups: the newest two stay, the current file is never touched.
        let two = Rotation::from_flags(1, 2, 0);
        assert_eq!(prune(&log, &two, now), vec![names[2].clone()]);
        let left: Vec<PathBuf> = backups(&log).into_iter().map(|(_, p)| p).collect();
        assert_eq!(left, names[..2].to_vec());
        assert!(log.exists());
    }

    #[test]
    fn flags_follow_the_reference_defaults() {
        let defaults = Rotation::from_flags(0, 0, 0);
        assert_eq!(defaults.max_bytes, 100 * 1024 * 1024);
        assert_eq!((defaults.max_backups, defaults.max_age), (0, None));
        let set = Rotation::from_flags(5, 3, 2);
        assert_eq!(set.max_bytes, 5 * 1024 * 1024);
        assert_eq!(set.max_age, Some(Duration::from_secs(2 * 86400)));
    }
}
