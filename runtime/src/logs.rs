//! Container logs in the CRI format that the kubelet and `kubectl logs` expect: one entry per
//! line, `2016-10-06T00:17:09.669794202Z stdout F text`, with `P` for a partial line (a line
//! longer than the buffer, or cut by the end of the stream), size-based rotation into
//! `NAME.1 … NAME.{max_files-1}` (`.1` newest), and a reader with tail, since, timestamps and
//! follow.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::{io_err, Result};
use crate::spec::LogRotation;

/// Lines longer than this are split into partial (`P`) entries, as containerd does.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The name used in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The current time in the CRI log format (RFC 3339 with nanoseconds, UTC).
pub fn timestamp_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Appends CRI entries to a log file, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    rotation: LogRotation,
    file: File,
    size: u64,
}

impl LogWriter {
    /// Opens (appends to) the log file at `path`.
    pub fn open(path: &Path, rotation: LogRotation) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err("opening log", path))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter { path: path.to_path_buf(), rotation, file, size })
    }

    /// Writes one entry (`content` without its newline).
    pub fn write_entry(&mut self, stream: Stream, partial: bool, content: &[u8]) -> Result<()> {
        let tag = if partial { "P" } else { "F" };
        let mut line = format!("{} {} {tag} ", timestamp_now(), stream.as_str()).into_bytes();
        line.extend_from_slice(content);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line).map_err(io_err("writing log", &self.path))?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Shifts `NAME.k` to `NAME.k+1`, drops the oldest, and starts a new `NAME`.
    fn rotate(&mut self) -> Result<()> {
        let keep = self.rotation.max_files.max(1) - 1;
        let numbered = |n: u32| rotated_path(&self.path, n);
        let _ = std::fs::remove_file(numbered(keep.max(1)));
        if keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for n in (1..keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1)).map_err(io_err("rotating log", &self.path))?;
        }
        *self = LogWriter::open(&self.path, self.rotation)?;
        Ok(())
    }
}

/// `NAME.n`.
fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Splits a stream's bytes into CRI entries: full lines, and `MAX_LINE` chunks as partials.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(partial, content)` for each complete entry.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(bool, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            emit(false, &self.buf[start..start + pos])?;
            start += pos + 1;
        }
        while self.buf.len() - start >= MAX_LINE {
            emit(true, &self.buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        self.buf.drain(..start);
        Ok(())
    }

    /// The end of the stream: what is left becomes a last full entry.
    pub fn finish(&mut self, mut emit: impl FnMut(bool, &[u8]) -> Result<()>) -> Result<()> {
        if !self.buf.is_empty() {
            emit(false, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Copies a container output pipe into the log until end of file.
pub fn pump(
    mut input: impl Read,
    stream: Stream,
    writer: &std::sync::Mutex<LogWriter>,
) -> Result<()> {
    let mut splitter = LineSplitter::default();
    let mut chunk = vec![0u8; 32 * 1024];
    let emit = |partial: bool, content: &[u8]| {
        let mut w = writer.lock().unwrap_or_else(|poison| poison.into_inner());
        w.write_entry(stream, partial, content)
    };
    loop {
        match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => splitter.feed(&chunk[..n], emit)?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO from a terminal whose other side is gone is its end of file.
            Err(_) => break,
        }
    }
    splitter.finish(emit)
}

/// One parsed log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The RFC 3339 timestamp as written.
    pub timestamp: String,
    /// The stream.
    pub stream: Stream,
    /// A partial line (no newline after it).
    pub partial: bool,
    /// The text.
    pub content: Vec<u8>,
}

impl LogEntry {
    /// Parses a CRI log line (without its newline); `None` for a malformed line.
    pub fn parse(line: &[u8]) -> Option<LogEntry> {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let timestamp = std::str::from_utf8(parts.next()?).ok()?.to_string();
        let stream = match parts.next()? {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => return None,
        };
        let partial = match parts.next()? {
            b"P" => true,
            b"F" => false,
            _ => return None,
        };
        let content = parts.next().unwrap_or_default().to_vec();
        Some(LogEntry { timestamp, stream, partial, content })
    }

    /// The entry's time.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.timestamp).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The bytes `kubectl logs` prints for this entry.
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.content.len() + 40);
        if timestamps {
            out.extend_from_slice(self.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.content);
        if !self.partial {
            out.push(b'\n');
        }
        out
    }
}

/// What to read from a log.
#[derive(Debug, Clone, Default)]
pub struct LogReadOptions {
    /// Only the last N entries.
    pub tail: Option<usize>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// Keep reading new entries until the container exits.
    pub follow: bool,
}

/// Reads a container's log (rotated files first), calling `sink` with each entry; with
/// `follow`, polls for more until `finished()` says the writer is gone and all is read.
pub fn read_log(
    path: &Path,
    max_files: u32,
    options: &LogReadOptions,
    finished: impl Fn() -> bool,
    mut sink: impl FnMut(&LogEntry) -> std::io::Result<()>,
) -> Result<()> {
    let keep = |e: &LogEntry| match (&options.since, e.time()) {
        (Some(since), Some(t)) => t >= *since,
        _ => true,
    };
    let mut entries = Vec::new();
    for n in (1..max_files.max(1)).rev() {
        if let Ok(file) = File::open(rotated_path(path, n)) {
            read_entries(BufReader::new(file), &mut |e| entries.push(e));
        }
    }
    let mut current = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("opening log", path)(e)),
    };
    let mut offset = 0;
    if let Some(file) = current.as_mut() {
        let mut reader = BufReader::new(&*file);
        offset = read_entries(&mut reader, &mut |e| entries.push(e));
    }
    entries.retain(|e| keep(e));
    let skip = options.tail.map_or(0, |t| entries.len().saturating_sub(t));
    for entry in &entries[skip..] {
        sink(entry).map_err(io_err("writing log output", path))?;
    }
    if !options.follow {
        return Ok(());
    }
    let mut inode = current.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.ino());
    loop {
        let done = finished();
        if let Some(file) = current.as_mut() {
            file.seek(SeekFrom::Start(offset)).map_err(io_err("reading log", path))?;
            let mut reader = BufReader::new(&*file);
            let mut emit_err = None;
            offset += read_entries(&mut reader, &mut |e| {
                if emit_err.is_none() && keep(&e) {
                    if let Err(err) = sink(&e) {
                        emit_err = Some(err);
                    }
                }
            });
            if let Some(err) = emit_err {
                return Err(io_err("writing log output", path)(err));
            }
        }
        // Rotated: finish the old file (done above), then go on with the new one from its start.
        let now = std::fs::metadata(path).ok().map(|m| m.ino());
        if now.is_some() && now != inode {
            current = File::open(path).ok();
            inode = now;
            offset = 0;
            continue;
        }
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads complete lines, returning the bytes consumed (a trailing incomplete line is left).
fn read_entries(mut reader: impl BufRead, emit: &mut dyn FnMut(LogEntry)) -> u64 {
    let mut consumed = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return consumed,
            Ok(n) if line.last() == Some(&b'\n') => {
                consumed += n as u64;
                if let Some(entry) = LogEntry::parse(&line[..n - 1]) {
                    emit(entry);
                }
            }
            Ok(_) => return consumed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path, max_files: u32, options: &LogReadOptions) -> Vec<String> {
        let mut out = Vec::new();
        read_log(
            path,
            max_files,
            options,
            || true,
            |e| {
                out.push(String::from_utf8_lossy(&e.render(false)).into_owned());
                Ok(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn lines_are_written_in_cri_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, LogRotation::default()).unwrap();
        w.write_entry(Stream::Stdout, false, b"hello world").unwrap();
        w.write_entry(Stream::Stderr, true, b"part").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(" stdout F hello world"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stderr P part"), "{}", lines[1]);
        let ts = lines[0].split(' ').next().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == "2016-10-06T00:17:09.669794202Z".len(), "{ts}");
    }

    #[test]
    fn long_lines_split_into_partials() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        let long = vec![b'x'; MAX_LINE + 10];
        s.feed(&long, |p, c| {
            got.push((p, c.len()));
            Ok(())
        })
        .unwrap();
        s.feed(b"\nshort\ntail", |p, c| {
            got.push((p, c.len()));
            Ok(())
        })
        .unwrap();
        s.finish(|p, c| {
            got.push((p, c.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [(true, MAX_LINE), (false, 10), (false, 5), (false, 4)]);
    }

    #[test]
    fn rotation_keeps_max_files_and_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let rotation = LogRotation { max_size: 200, max_files: 3 };
        let mut w = LogWriter::open(&path, rotation).unwrap();
        for i in 0..40 {
            w.write_entry(Stream::Stdout, false, format!("line {i:02}").as_bytes()).unwrap();
        }
        assert!(rotated_path(&path, 1).exists() && rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        for p in [path.clone(), rotated_path(&path, 1)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        }
        let all = collect(&path, 3, &LogReadOptions::default());
        assert_eq!(all.last().unwrap(), "line 39\n");
        assert!(all.len() < 40, "oldest entries were dropped");
        let nums: Vec<u32> = all.iter().map(|l| l[5..7].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "in order across files: {nums:?}");
    }

    #[test]
    fn tail_and_since_select_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(
            &path,
            "2024-01-01T00:00:00.000000001Z stdout F a\n\
             2024-01-01T00:00:01.000000000Z stderr F b\n\
             2024-01-01T00:00:02.000000000Z stdout P c\n\
             2024-01-01T00:00:02.100000000Z stdout F d\n\
             garbage\n",
        )
        .unwrap();
        let tail = LogReadOptions { tail: Some(2), ..Default::default() };
        assert_eq!(collect(&path, 1, &tail), ["c", "d\n"]);
        let since = "2024-01-01T00:00:01Z".parse().unwrap();
        let since = LogReadOptions { since: Some(since), ..Default::default() };
        assert_eq!(collect(&path, 1, &since), ["b\n", "c", "d\n"]);
        let mut stamped = Vec::new();
        read_log(
            &path,
            1,
            &LogReadOptions { tail: Some(1), timestamps: true, ..Default::default() },
            || true,
            |e| {
                stamped.push(e.render(true));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(stamped, [b"2024-01-01T00:00:02.100000000Z d\n".to_vec()]);
    }

    #[test]
    fn follow_reads_new_entries_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        // One rotation during the follow: the reader finishes the old file, then reads the new one.
        let rotation = LogRotation { max_size: 200, max_files: 2 };
        let mut w = LogWriter::open(&path, rotation).unwrap();
        w.write_entry(Stream::Stdout, false, b"first").unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..6 {
                    std::thread::sleep(Duration::from_millis(30));
                    w.write_entry(Stream::Stdout, false, format!("more {i}").as_bytes()).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        let mut got = Vec::new();
        let options = LogReadOptions { follow: true, ..Default::default() };
        read_log(
            &path,
            2,
            &options,
            || done.load(std::sync::atomic::Ordering::SeqCst),
            |e| {
                got.push(String::from_utf8_lossy(&e.content).into_owned());
                Ok(())
            },
        )
        .unwrap();
        writer.join().unwrap();
        let expected: Vec<String> = std::iter::once("first".to_string())
            .chain((0..6).map(|i| format!("more {i}")))
            .collect();
        assert_eq!(got, expected, "follow sees every entry once, across rotations");
    }
}
