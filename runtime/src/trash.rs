//! Deleting a removed container's files off the critical path. Removal marks a container
//! removed with one `rename` of its state dir into `<state>/removed/` (atomic: from then on no
//! `Runtime` lists or finds it); the files inside (about ten files and four directories) are
//! unlinked afterwards by a background thread: on this machine's ext4 under build load that
//! took 16–20 ms, nearly all of what removal cost. Dropping the `Runtime` finishes the pending
//! deletions (so that `skerry ctr rm` leaves nothing behind); what a crash interrupts, the next
//! `Runtime::open` deletes. A process that must stay single-threaded (`setns` into a mount
//! namespace, as the lifecycle bench does) calls `Runtime::flush_removals` first.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// The background deleter of one `Runtime`, started on first use.
#[derive(Default)]
pub(crate) struct Trash {
    worker: Mutex<Option<Worker>>,
}

struct Worker {
    queue: Sender<PathBuf>,
    thread: JoinHandle<()>,
}

impl Trash {
    /// Deletes `path` (a directory already renamed into the trash) in the background; inline
    /// if no thread can be started.
    pub(crate) fn delete_later(&self, path: PathBuf) {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if worker.is_none() {
            let (queue, jobs) = channel::<PathBuf>();
            let spawned = std::thread::Builder::new()
                .name("skerry-runtime-trash".into())
                .spawn(move || jobs.iter().for_each(|path| delete(&path)));
            match spawned {
                Ok(thread) => *worker = Some(Worker { queue, thread }),
                Err(_) => return delete(&path),
            }
        }
        let Some(w) = worker.as_ref() else { return delete(&path) };
        if let Err(unsent) = w.queue.send(path) {
            // The thread is gone (it cannot panic, but be safe): delete here.
            delete(&unsent.0);
        }
    }

    /// Waits until every queued deletion is done.
    pub(crate) fn flush(&self) {
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Worker { queue, thread }) = worker {
            drop(queue);
            let _ = thread.join();
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Deletes a trashed directory; a failure is logged and left for the next startup's GC.
pub(crate) fn delete(path: &Path) {
    if let Err(err) = std::fs::remove_dir_all(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %err, "runtime: deleting removed state");
        }
    }
}
