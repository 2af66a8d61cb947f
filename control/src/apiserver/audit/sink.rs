//! The audit log file: events go through a bounded channel to one writer thread, so a slow disk
//! delays request handling by at most [`SEND_WAIT`] (then the event is dropped and counted,
//! with a warning) rather than without bound. The writer flushes whenever the channel runs dry,
//! so the file is current as soon as the server is idle. A full file is moved aside and a new
//! one started, and old backups are pruned, by the reference's rules ([`super::rotation`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::rotation::{self, Rotation};

/// Events waiting for the writer before senders have to wait.
const CAPACITY: usize = 8192;
/// The longest a request waits for room in a full channel.
const SEND_WAIT: Duration = Duration::from_millis(200);

/// The sending end of the audit log; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    sender: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("dropped", &self.dropped.load(Ordering::Relaxed)).finish()
    }
}

impl Sink {
    /// Opens (appends to) `path`, prunes old backups, and starts the writer thread.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<Sink> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        // As lumberjack does on open: backups left by an earlier run obey today's limits.
        rotation::prune(path, &rotation, jiff::Timestamp::now());
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_loop(receiver, path, file, rotation))?;
        Ok(Sink { sender, dropped: Arc::default() })
    }

    /// Queues one JSON line, waiting a little for room when the writer is behind.
    pub async fn send(&self, line: String) {
        let line = match self.sender.try_send(line) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(line)) => line,
            Err(mpsc::error::TrySendError::Closed(_)) => return self.drop_one(),
        };
        match tokio::time::timeout(SEND_WAIT, self.sender.send(line)).await {
            Ok(Ok(())) => {}
            _ => self.drop_one(),
        }
    }

    /// Queues one JSON line without waiting (for paths that cannot await, e.g. a drop).
    pub fn send_now(&self, line: String) {
        if self.sender.try_send(line).is_err() {
            self.drop_one();
        }
    }

    fn drop_one(&self) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Once per thousand: a stuck disk must not also flood the server's log.
        if total % 1000 == 1 {
            tracing::warn!(dropped = total, "the audit log cannot keep up; events dropped");
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn write_loop(
    mut receiver: mpsc::Receiver<String>,
    path: PathBuf,
    file: std::fs::File,
    rotation: Rotation,
) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = std::io::BufWriter::new(file);
    while let Some(line) = receiver.blocking_recv() {
        // A line longer than the maximum still goes into a file of its own.
        if size > 0 && size + line.len() as u64 + 1 > rotation.max_bytes {
            match rotate(&path, &mut out, &rotation) {
                Ok(()) => size = 0,
                Err(err) => tracing::warn!(%err, path = %path.display(), "rotating the audit log"),
            }
        }
        if let Err(err) = writeln!(out, "{line}") {
            tracing::warn!(%err, path = %path.display(), "writing the audit log");
        }
        size += line.len() as u64 + 1;
        if receiver.is_empty() {
            if let Err(err) = out.flush() {
                tracing::warn!(%err, path = %path.display(), "flushing the audit log");
            }
        }
    }
    let _ = out.flush();
}

/// Moves the full file aside, continues in a new one, and prunes the backups.
fn rotate(
    path: &Path,
    out: &mut std::io::BufWriter<std::fs::File>,
    rotation: &Rotation,
) -> std::io::Result<()> {
    out.flush()?;
    let now = jiff::Timestamp::now();
    std::fs::rename(path, rotation::backup_path(path, now))?;
    *out = std::io::BufWriter::new(open_append(path)?);
    rotation::prune(path, rotation, now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_reach_the_file_and_rotate_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        let rotation = Rotation { max_bytes: 64, max_backups: 0, max_age: None };
        let sink = Sink::open(&path, rotation).unwrap();
        for i in 0..3 {
            sink.send(format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}")).await;
        }
        drop(sink);
        // The writer ends when the channel closes; wait for its last flush.
        let mut files = 0;
        for _ in 0..100 {
            files = std::fs::read_dir(dir.path().join("logs")).unwrap().count();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if files == 3 && text.contains("\"n\":2") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(files, 3, "two rotated files and the current one");
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"n\":2"));
        let backups = rotation::backups(&path);
        assert_eq!(backups.len(), 2);
        // Newest first: the second line's file, then the first's.
        assert!(std::fs::read_to_string(&backups[0].1).unwrap().contains("\"n\":1"));
        assert!(std::fs::read_to_string(&backups[1].1).unwrap().contains("\"n\":0"));
    }

    #[tokio::test]
    async fn rotation_keeps_only_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation { max_bytes: 40, max_backups: 2, max_age: None };
        let sink = Sink::open(&path, rotation).unwrap();
        for i in 0..6 {
            sink.send(format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}")).await;
        }
        drop(sink);
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("\"n\":5") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(text.contains("\"n\":5"), "{text}");
        let kept: Vec<String> = rotation::backups(&path)
            .iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept[0].contains("\"n\":4") && kept[1].contains("\"n\":3"), "{kept:?}");
    }
}
