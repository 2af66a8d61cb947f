//! The per-container monitor process (like conmon): the runtime re-executes a small program
//! (`skerry ctr monitor`, or the crate's `skerry-runtime-monitor` binary) that detaches itself
//! (or is forked, already detached, by the runtime's monitor zygote: see `zygote.rs`),
//! creates the container with libcontainer, holds its output pipes and writes the CRI log,
//! starts it when asked over its control socket, reaps it, records its exit (code, time, OOM) in
//! the state dir, removes its cgroup, and exits.
//!
//! Why a process per container: libcontainer calls the process-wide `chdir()` while creating and
//! starting, so it must not run inside the agent, and containers must outlive the agent. The
//! monitor is single-threaded while libcontainer forks (threads start only after `build()`).
//!
//! Control socket protocol (`monitor.sock`, one command line per connection): `start` →
//! `ok` or `error: …`; `attach` → `ok`, then the connection carries the container's output
//! (stdout and stderr merged) one way and its stdin the other.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::cgroups::CgroupTree;
use crate::error::{io_err, sys_err, Error, Result};
use crate::logs::{LogWriter, Stream};
use crate::state::{self, ContainerRecord, ExitRecord, MonitorRecord};

/// The environment variable naming the fd the monitor reports creation on.
pub const SYNC_FD_ENV: &str = "SKERRY_MONITOR_SYNC_FD";

/// The monitor's entry point: `run DIR` or `exec DIR SPEC_FILE`. Returns the process exit code.
pub fn monitor_main(args: &[OsString]) -> i32 {
    let args: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    let result = match args.iter().map(|a| a.to_str().unwrap_or("")).collect::<Vec<_>>()[..] {
        ["run", _] => run_monitor(&args[1]).map(|()| 0),
        ["exec", _, _] => return crate::exec::exec_monitor(&args[1], &args[2]),
        ["zygote"] => crate::zygote::serve().map(|()| 0),
        _ => Err(Error::InvalidState(
            "usage: monitor run DIR | monitor exec DIR SPEC | monitor zygote".into(),
        )),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("skerry monitor: {err}");
            1
        }
    }
}

/// The fd passed by the runtime to report creation, if any.
fn sync_fd() -> Option<std::fs::File> {
    let fd: i32 = std::env::var(SYNC_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: the runtime passes this fd open, for this process alone, and nothing else owns it.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// The libcontainer state directory of a container.
pub fn libcontainer_root(dir: &Path) -> PathBuf {
    dir.join("lc")
}

/// Runs a container from its state dir until it exits.
fn run_monitor(dir: &Path) -> Result<()> {
    let mut sync = sync_fd();
    // Detach: the runtime waits for this first process only; the child lives on in its own
    // session so that a signal to the agent's process group does not reach it.
    // SAFETY: the monitor is single-threaded here, so the child may run any code after fork.
    match unsafe { nix::unistd::fork() }.map_err(sys_err("fork"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            // The child reports on the sync fd; this process only ends the runtime's wait.
            drop(sync.take());
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Child => {}
    }
    let _ = nix::unistd::setsid();
    run_detached(dir, sync)
}

/// The monitor proper, once detached (own session, no parent waiting): creates the container,
/// reports on `sync`, and supervises it until it exits. The zygote's children start here too.
pub(crate) fn run_detached(dir: &Path, mut sync: Option<std::fs::File>) -> Result<()> {
    // Held until this process ends, after its cleanup: removal waits for it (see
    // `state::ContainerLock`). Nobody else takes it while the monitor lives.
    let lock = match state::ContainerLock::try_lock(dir) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(Error::InvalidState(format!(
            "{}: another monitor holds the container's lock",
            dir.display()
        ))),
        Err(err) => Err(io_err("locking", dir.join("monitor.lock"))(err)),
    };
    let _lock = match lock {
        Ok(lock) => lock,
        Err(err) => {
            if let Some(mut sync) = sync.take() {
                let _ = writeln!(sync, "error: {err}");
            }
            return Err(err);
        }
    };
    match create(dir) {
        Ok(created) => {
            if let Some(mut sync) = sync.take() {
                let _ = sync.write_all(b"ok\n");
            }
            supervise(dir, created)
        }
        Err(err) => {
            if let Some(mut sync) = sync.take() {
                let _ = writeln!(sync, "error: {err}");
            }
            Err(err)
        }
    }
}

/// What `create` hands to `supervise`.
struct Created {
    record: ContainerRecord,
    container: Container,
    init_pid: Pid,
    outputs: Vec<(OwnedFd, Stream)>,
    stdin: Option<OwnedFd>,
    listener: UnixListener,
}

/// Creates the container (its init process waits for `start`) and the control socket.
fn create(dir: &Path) -> Result<Created> {
    let record: ContainerRecord = state::read_json(&dir.join("container.json"))?
        .ok_or_else(|| Error::NotFound { kind: "container", name: dir.display().to_string() })?;
    let socket_path = dir.join("monitor.sock");
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path).map_err(io_err("binding", &socket_path))?;
    let mut builder = ContainerBuilder::new(record.id.clone(), SyscallType::default())
        .with_root_path(libcontainer_root(dir))
        .map_err(|e| monitor_err(&record.id, e))?;
    let mut outputs = Vec::new();
    let mut stdin = None;
    let console = if record.spec.tty {
        let path = dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let console = UnixListener::bind(&path).map_err(io_err("binding", &path))?;
        builder = builder.with_console_socket(Some(&path));
        Some(console)
    } else {
        let (out_r, out_w) = nix::unistd::pipe().map_err(sys_err("pipe"))?;
        let (err_r, err_w) = nix::unistd::pipe().map_err(sys_err("pipe"))?;
        outputs.push((out_r, Stream::Stdout));
        outputs.push((err_r, Stream::Stderr));
        builder = builder.with_stdout(out_w).with_stderr(err_w);
        if record.spec.stdin {
            let (in_r, in_w) = nix::unistd::pipe().map_err(sys_err("pipe"))?;
            builder = builder.with_stdin(in_r);
            stdin = Some(in_w);
        } else {
            let null = std::fs::File::open("/dev/null").map_err(io_err("opening", "/dev/null"))?;
            builder = builder.with_stdin(OwnedFd::from(null));
        }
        None
    };
    let container = builder
        .as_init(dir.join("bundle"))
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| monitor_err(&record.id, e))?;
    // libcontainer changed directory while building: go back to a known, absolute place.
    let _ = std::env::set_current_dir("/");
    if let Some(console) = console {
        let master = crate::exec::receive_pty_master(&console)?;
        let _ = std::fs::remove_file(dir.join("console.sock"));
        let copy = master.try_clone().map_err(io_err("duplicating pty", dir))?;
        outputs.push((master, Stream::Stdout));
        stdin = Some(copy);
    }
    let init_pid = container
        .pid()
        .ok_or_else(|| Error::Monitor { id: record.id.clone(), message: "no init pid".into() })?;
    let monitor = MonitorRecord {
        monitor_pid: std::process::id() as i32,
        init_pid: init_pid.as_raw(),
        init_start_ticks: state::process_start_ticks(init_pid.as_raw()).unwrap_or(0),
        started_at: None,
    };
    state::write_json(&dir.join("monitor.json"), &monitor)?;
    Ok(Created { record, container, init_pid, outputs, stdin, listener })
}

/// Turns a libcontainer error into ours.
fn monitor_err(id: &str, err: impl std::fmt::Display) -> Error {
    Error::Monitor { id: id.to_string(), message: err.to_string() }
}

/// Connections attached to the container's output.
type Attached = Arc<Mutex<Vec<UnixStream>>>;

/// Logs output, serves the control socket, reaps the container and records its exit.
fn supervise(dir: &Path, created: Created) -> Result<()> {
    let Created { record, container, init_pid, outputs, stdin, listener } = created;
    let writer = Arc::new(Mutex::new(LogWriter::open(&record.log_path, record.spec.log_rotation)?));
    let attached: Attached = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let pumps = outputs.len();
    for (fd, stream) in outputs {
        let writer = writer.clone();
        let attached = attached.clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let input = Tee { inner: std::fs::File::from(fd), attached };
            if let Err(err) = crate::logs::pump(input, stream, &writer) {
                eprintln!("skerry monitor: log: {err}");
            }
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let container = Arc::new(Mutex::new(container));
    let stdin = Arc::new(Mutex::new(stdin.map(std::fs::File::from)));
    {
        let dir = dir.to_path_buf();
        let attached = attached.clone();
        let container = container.clone();
        std::thread::spawn(move || serve_control(&dir, listener, container, stdin, attached));
    }
    let (code, signal) = wait_exit(init_pid);
    // Let a `start` in progress finish its reply; later commands find the socket gone.
    let _control = container.lock().unwrap_or_else(|p| p.into_inner());
    let _ = std::fs::remove_file(dir.join("monitor.sock"));
    // Processes left in the container (a shared PID namespace) hold the output pipes open.
    let tree = CgroupTree::host().ok();
    if let Some(tree) = &tree {
        for pid in tree.pids(&record.cgroup_path) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    // The pipes reach end of file when the last process holding them is gone; a stuck one
    // must not keep the monitor alive.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for _ in 0..pumps {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    for conn in attached.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
    let oom_killed = tree.as_ref().is_some_and(|t| t.oom_kills(&record.cgroup_path) > 0);
    let reason = match (oom_killed, code) {
        (true, _) => "OOMKilled",
        (false, 0) => "Completed",
        _ => "Error",
    };
    let exit = ExitRecord {
        exit_code: code,
        signal,
        oom_killed,
        reason: reason.into(),
        finished_at: crate::logs::timestamp_now(),
    };
    // The exit is recorded first (waiters see it at once), then the cgroup goes: nothing is
    // left to run in it. Removal waits for this (the monitor's lock) before it deletes anything.
    // libcontainer's own `delete` is not used: it would remove the same cgroups again (loading
    // its state and config and building a cgroup manager first) and its state dir, which goes
    // with the container's dir on removal.
    let recorded = state::write_json(&dir.join("exit.json"), &exit);
    if let Some(tree) = &tree {
        if let Err(err) = tree.remove(&record.cgroup_path) {
            eprintln!("skerry monitor: {err}");
        }
    }
    recorded
}

/// Waits for the init process; its exit code, or 128 + the signal that killed it.
fn wait_exit(pid: Pid) -> (i32, Option<i32>) {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => return (128 + sig as i32, Some(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            // Not our child (cannot happen) or already reaped: report an unknown failure.
            Err(_) => return (255, None),
        }
    }
}

/// A reader that also copies what it reads to the attached connections.
struct Tee {
    inner: std::fs::File,
    attached: Attached,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let mut conns = self.attached.lock().unwrap_or_else(|p| p.into_inner());
            conns.retain_mut(|c| c.write_all(&buf[..n]).is_ok());
        }
        Ok(n)
    }
}

/// Serves control connections until the process exits.
fn serve_control(
    dir: &Path,
    listener: UnixListener,
    container: Arc<Mutex<Container>>,
    stdin: Arc<Mutex<Option<std::fs::File>>>,
    attached: Attached,
) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        let mut reader = BufReader::new(match conn.try_clone() {
            Ok(c) => c,
            Err(_) => continue,
        });
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        match line.trim() {
            "start" => {
                // The lock is held until the reply is written: the main thread takes it before
                // the monitor exits, so a container that exits at once still gets its reply.
                let mut c = container.lock().unwrap_or_else(|p| p.into_inner());
                let result = c.start();
                let _ = std::env::set_current_dir("/");
                let reply = match result {
                    Ok(()) => {
                        record_started(dir);
                        "ok\n".to_string()
                    }
                    Err(err) => format!("error: {err}\n"),
                };
                let _ = conn.write_all(reply.as_bytes());
                drop(c);
            }
            "attach" => {
                let _ = conn.write_all(b"ok\n");
                if let Ok(out) = conn.try_clone() {
                    attached.lock().unwrap_or_else(|p| p.into_inner()).push(out);
                }
                let stdin = stdin.clone();
                std::thread::spawn(move || forward_stdin(reader, stdin));
            }
            other => {
                let _ = writeln!(conn, "error: unknown command {other:?}");
            }
        }
    }
}

/// Copies an attached client's input to the container's stdin.
fn forward_stdin(mut from: impl Read, stdin: Arc<Mutex<Option<std::fs::File>>>) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut guard = stdin.lock().unwrap_or_else(|p| p.into_inner());
                let Some(file) = guard.as_mut() else { return };
                if file.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Records the start time in `monitor.json`.
fn record_started(dir: &Path) {
    let path = dir.join("monitor.json");
    if let Ok(Some(mut rec)) = state::read_json::<MonitorRecord>(&path) {
        rec.started_at = Some(crate::logs::timestamp_now());
        let _ = state::write_json(&path, &rec);
    }
}

/// Sends one command to a monitor and returns its reply line.
pub fn command(dir: &Path, id: &str, command: &str) -> Result<String> {
    let path = dir.join("monitor.sock");
    let mut conn = UnixStream::connect(&path).map_err(io_err("connecting to monitor", &path))?;
    conn.set_read_timeout(Some(Duration::from_secs(60))).map_err(io_err("socket", &path))?;
    writeln!(conn, "{command}").map_err(io_err("writing to monitor", &path))?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply).map_err(io_err("reading from monitor", &path))?;
    let reply = reply.trim();
    match reply.strip_prefix("error: ") {
        Some(message) => Err(Error::Monitor { id: id.to_string(), message: message.to_string() }),
        None if reply == "ok" => Ok(reply.to_string()),
        None => Err(Error::Monitor {
            id: id.to_string(),
            message: format!("monitor gave no answer to {command:?} (did it exit?)"),
        }),
    }
}

/// Opens an attach connection: a stream carrying the container's output and taking its input.
pub fn attach(dir: &Path, id: &str) -> Result<UnixStream> {
    let path = dir.join("monitor.sock");
    let mut conn = UnixStream::connect(&path).map_err(io_err("connecting to monitor", &path))?;
    conn.write_all(b"attach\n").map_err(io_err("writing to monitor", &path))?;
    let mut byte = [0u8; 1];
    let mut reply = Vec::new();
    while conn.read(&mut byte).map_err(io_err("reading from monitor", &path))? == 1 {
        if byte[0] == b'\n' {
            break;
        }
        reply.push(byte[0]);
    }
    if reply != b"ok" {
        return Err(Error::Monitor {
            id: id.to_string(),
            message: format!("attach refused: {}", String::from_utf8_lossy(&reply)),
        });
    }
    Ok(conn)
}
