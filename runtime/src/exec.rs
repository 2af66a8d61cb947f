//! Exec: a new process inside a running container, with its own stdin/stdout/stderr and exit
//! code, optionally on a terminal that can be resized.
//!
//! Like the main process, it is started by a monitor process (`monitor exec DIR SPEC`), because
//! libcontainer changes the process-wide working directory. The caller's pipes are the exec
//! monitor's stdio, which the new process inherits; with a TTY the monitor receives the pty
//! master from libcontainer over a console socket and copies between it and its stdio. Resize
//! requests arrive as a `winsize` file plus SIGWINCH. The result (exit code or error) is written
//! to a file the caller reads after the monitor exits.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, sys_err, Error, Result};
use crate::state;

/// A process to run in a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Extra environment (`KEY=VALUE`), added to the container's.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub cwd: Option<String>,
    /// Run on a terminal (stdout and stderr are then one stream).
    pub tty: bool,
    /// Terminal size (rows, columns) at start.
    pub size: Option<(u16, u16)>,
}

/// The result an exec monitor leaves behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExecResult {
    exit_code: Option<i32>,
    error: Option<String>,
}

/// A running exec: its streams, resize, and wait for the exit code.
#[derive(Debug)]
pub struct ExecProcess {
    child: Child,
    id: String,
    work: PathBuf,
    tty: bool,
    /// The process's stdin (close it to send end of file).
    pub stdin: Option<ChildStdin>,
    /// The process's stdout (with a TTY: the terminal's output).
    pub stdout: Option<ChildStdout>,
    /// The process's stderr (empty with a TTY, except for runtime errors).
    pub stderr: Option<ChildStderr>,
}

impl ExecProcess {
    /// Starts the exec monitor; `work` is a fresh file prefix in the container's dir.
    pub(crate) fn spawn(
        mut command: std::process::Command,
        container_id: &str,
        work: PathBuf,
        tty: bool,
    ) -> Result<Self> {
        use std::process::Stdio;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("starting exec monitor", &work))?;
        Ok(ExecProcess {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            id: container_id.to_string(),
            work,
            tty,
        })
    }

    /// Resizes the terminal and waits (up to 5 s) until it took effect; no effect without a TTY.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        if !self.tty {
            return Ok(());
        }
        let path = with_suffix(&self.work, ".winsize");
        let tmp = with_suffix(&self.work, ".winsize.tmp");
        std::fs::write(&tmp, format!("{rows} {cols}")).map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("writing", &path))?;
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, Signal::SIGWINCH)
            .map_err(sys_err("signalling exec monitor"))?;
        for _ in 0..500 {
            if !path.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits for the process and returns its exit code (128 + signal if killed).
    pub fn wait(mut self) -> Result<i32> {
        drop(self.stdin.take());
        self.child.wait().map_err(io_err("waiting for exec monitor", &self.work))?;
        let path = with_suffix(&self.work, ".result");
        let result: Option<ExecResult> = state::read_json(&path)?;
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(with_suffix(&self.work, ".json"));
        let _ = std::fs::remove_file(with_suffix(&self.work, ".winsize"));
        match result {
            Some(ExecResult { exit_code: Some(code), .. }) => Ok(code),
            Some(ExecResult { error: Some(message), .. }) => {
                Err(Error::Monitor { id: self.id.clone(), message: format!("exec: {message}") })
            }
            _ => Err(Error::Monitor {
                id: self.id.clone(),
                message: "exec monitor exited without a result".into(),
            }),
        }
    }
}

/// `PREFIX` + suffix.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Builds the process.json of an exec from the container's own process.
fn exec_process(bundle_config: &Path, spec: &ExecSpec) -> Result<serde_json::Value> {
    let text = std::fs::read(bundle_config).map_err(io_err("reading", bundle_config))?;
    let config: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|source| Error::State { path: bundle_config.to_path_buf(), source })?;
    let mut process = config["process"].clone();
    if spec.args.is_empty() {
        return Err(Error::InvalidSpec("exec: no command given".into()));
    }
    process["args"] = serde_json::json!(spec.args);
    process["terminal"] = serde_json::json!(spec.tty);
    if let Some(cwd) = &spec.cwd {
        process["cwd"] = serde_json::json!(cwd);
    }
    if let Some(env) = process["env"].as_array_mut() {
        env.extend(spec.env.iter().map(|e| serde_json::json!(e)));
    }
    if let Some((rows, cols)) = spec.size {
        process["consoleSize"] = serde_json::json!({ "height": rows, "width": cols });
    }
    Ok(process)
}

/// Writes the exec's spec file and returns the work prefix for it.
pub(crate) fn prepare(container_dir: &Path, spec: &ExecSpec) -> Result<PathBuf> {
    let work = container_dir.join(format!("exec-{}", state::new_id()));
    state::write_json(&with_suffix(&work, ".json"), spec)?;
    Ok(work)
}

/// The exec monitor's body: runs the exec and leaves its result; returns the exit status.
pub fn exec_monitor(container_dir: &Path, spec_file: &Path) -> i32 {
    let work = PathBuf::from(spec_file.to_string_lossy().trim_end_matches(".json"));
    let result = match run_exec(container_dir, spec_file, &work) {
        Ok(code) => ExecResult { exit_code: Some(code), error: None },
        Err(err) => {
            eprintln!("skerry exec: {err}");
            ExecResult { exit_code: None, error: Some(err.to_string()) }
        }
    };
    let _ = state::write_json(&with_suffix(&work, ".result"), &result);
    result.exit_code.unwrap_or(126)
}

/// Runs one exec and returns its exit code.
fn run_exec(container_dir: &Path, spec_file: &Path, work: &Path) -> Result<i32> {
    let spec: ExecSpec = state::read_json(spec_file)?
        .ok_or_else(|| Error::InvalidState(format!("no exec spec {}", spec_file.display())))?;
    let record: state::ContainerRecord =
        state::read_json(&container_dir.join("container.json"))?.ok_or_else(|| {
            Error::NotFound { kind: "container", name: container_dir.display().to_string() }
        })?;
    let process = exec_process(&container_dir.join("bundle/config.json"), &spec)?;
    let process_path = with_suffix(work, ".process.json");
    state::write_json(&process_path, &process)?;
    let mut builder = ContainerBuilder::new(record.id.clone(), SyscallType::default())
        .with_root_path(crate::monitor::libcontainer_root(container_dir))
        .map_err(|e| exec_err(&record.id, e))?;
    let console_path = with_suffix(work, ".sock");
    let console = if spec.tty {
        let listener =
            UnixListener::bind(&console_path).map_err(io_err("binding", &console_path))?;
        builder = builder.with_console_socket(Some(&console_path));
        Some(listener)
    } else {
        None
    };
    let pid = builder
        .with_executor(SizedTerminalExecutor { size: spec.size.filter(|_| spec.tty) })
        .as_tenant()
        .with_process(Some(&process_path))
        .with_detach(true)
        .build();
    let _ = std::env::set_current_dir("/");
    let _ = std::fs::remove_file(&process_path);
    let pid = pid.map_err(|e| exec_err(&record.id, e))?;
    if let Some(console) = console {
        let master = receive_pty_master(&console)?;
        let _ = std::fs::remove_file(&console_path);
        // Block SIGWINCH (after build: the exec'd process must not inherit the mask) before
        // any thread exists, so that only the resize thread takes it.
        let mut winch = SigSet::empty();
        winch.add(Signal::SIGWINCH);
        winch.thread_block().map_err(sys_err("blocking SIGWINCH"))?;
        relay_terminal(master, work.to_path_buf(), winch);
    }
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(sys_err("waiting for exec process")(e)),
        }
    }
}

/// The default executor, after giving the terminal its initial size (libcontainer ignores
/// `consoleSize`). It runs in the container process just before exec, so the program sees the
/// right size from its first instruction; the size travels in the executor itself, which is
/// cloned into the container process.
#[derive(Clone)]
pub(crate) struct SizedTerminalExecutor {
    /// (rows, columns) to apply to stdin when it is a terminal.
    pub(crate) size: Option<(u16, u16)>,
}

impl Executor for SizedTerminalExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> std::result::Result<(), ExecutorError> {
        if let Some((rows, cols)) = self.size {
            if nix::unistd::isatty(0).unwrap_or(false) {
                set_winsize(0, rows, cols);
            }
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// A libcontainer error during exec.
fn exec_err(id: &str, err: impl std::fmt::Display) -> Error {
    Error::Monitor { id: id.to_string(), message: format!("exec: {err}") }
}

/// Copies stdin → terminal and terminal → stdout, and applies resizes, on helper threads.
fn relay_terminal(master: OwnedFd, work: PathBuf, winch: SigSet) {
    let master_fd = master.as_raw_fd();
    let mut output = std::fs::File::from(master);
    let Ok(mut input) = output.try_clone() else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut input);
        // End of input: send the terminal's EOF character so `cat`-like programs finish.
        let _ = input.write_all(&[4]);
    });
    std::thread::spawn(move || loop {
        if winch.wait().is_err() {
            return;
        }
        let path = with_suffix(&work, ".winsize");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Some((rows, cols)) = text.trim().split_once(' ') {
                if let (Ok(rows), Ok(cols)) = (rows.parse(), cols.parse()) {
                    set_winsize(master_fd, rows, cols);
                }
            }
            // Removing the file tells `resize` that the new size is in effect.
            let _ = std::fs::remove_file(&path);
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout();
        loop {
            match output.read(&mut buf) {
                // EIO: the last process holding the terminal exited.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()).is_err() {
                        return;
                    }
                }
            }
        }
    })
    .join()
    .ok();
}

/// Sets a terminal's size.
fn set_winsize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize struct from the pointer, which is valid.
    unsafe {
        libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
    }
}

/// Accepts libcontainer's console connection and receives the pty master it sends.
pub(crate) fn receive_pty_master(listener: &UnixListener) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (conn, _) = listener.accept().map_err(io_err("accepting console", "console socket"))?;
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(sys_err("receiving pty master"))?;
    for cmsg in msg.cmsgs().map_err(sys_err("reading console message"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the fd was just received over SCM_RIGHTS and is owned by no one else.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(Error::InvalidState("console socket sent no terminal".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_keeps_container_identity_and_replaces_command() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            r#"{"process":{"args":["/main"],"env":["A=1"],"cwd":"/w","user":{"uid":5,"gid":6},"capabilities":{"bounding":["CAP_KILL"]}}}"#,
        )
        .unwrap();
        let spec = ExecSpec {
            args: vec!["sh".into(), "-c".into(), "x".into()],
            env: vec!["B=2".into()],
            tty: true,
            size: Some((24, 80)),
            ..Default::default()
        };
        let p = exec_process(&config, &spec).unwrap();
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "x"]));
        assert_eq!(p["env"], serde_json::json!(["A=1", "B=2"]));
        assert_eq!(p["cwd"], "/w");
        assert_eq!(p["user"]["uid"], 5);
        assert_eq!(p["terminal"], true);
        assert_eq!(p["consoleSize"]["height"], 24);
        let empty = ExecSpec::default();
        assert!(matches!(exec_process(&config, &empty), Err(Error::InvalidSpec(_))));
    }
}
