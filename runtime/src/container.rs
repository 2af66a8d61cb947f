//! Container operations of `Runtime`: create (write the OCI bundle, spawn the monitor), start,
//! stop with a grace period, kill, remove, status, wait, stats, exec, attach and logs.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::cgroups::{CgroupVersion, Stats};
use crate::error::{io_err, sys_err, Error, Result};
use crate::exec::{ExecProcess, ExecSpec};
use crate::logs::{LogEntry, LogReadOptions};
use crate::monitor::{self, SYNC_FD_ENV};
use crate::oci::{self, OciContext};
use crate::runtime::Runtime;
use crate::spec::ContainerSpec;
use crate::state::{self, ContainerRecord, ExitRecord, MonitorRecord};

/// The lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process exited (the exit is recorded).
    Exited,
    /// Its monitor died without recording an exit.
    Unknown,
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        };
        f.write_str(s)
    }
}

/// Everything known about a container (what `inspect` shows and the CRI status needs).
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The sandbox.
    pub sandbox_id: String,
    /// The state.
    pub state: ContainerState,
    /// The init process's pid on the host, while it runs.
    pub pid: Option<i32>,
    /// Creation time.
    pub created_at: String,
    /// Start time.
    pub started_at: Option<String>,
    /// Exit time.
    pub finished_at: Option<String>,
    /// The exit code.
    pub exit_code: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`.
    pub reason: Option<String>,
    /// The CRI log file.
    pub log_path: std::path::PathBuf,
    /// The container cgroup.
    pub cgroup_path: String,
    /// The spec it runs.
    pub spec: ContainerSpec,
}

impl Runtime {
    /// Creates a container in a sandbox; its process waits for `start_container`.
    pub fn create_container(&self, sandbox_id: &str, spec: ContainerSpec) -> Result<String> {
        state::validate_name("container", &spec.name)?;
        if !spec.rootfs.is_dir() {
            return Err(Error::InvalidSpec(format!(
                "rootfs {} does not exist or is not a directory",
                spec.rootfs.display()
            )));
        }
        let sandbox = self.sandbox(sandbox_id)?;
        let lock = self.lock()?;
        if let Some(existing) = self.list_containers().into_iter().find(|c| c.name == spec.name) {
            return Err(Error::NameInUse { kind: "container", name: spec.name, id: existing.id });
        }
        let id = state::new_id();
        let dir = self.state.container_dir(&id);
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(io_err("creating", &bundle))?;
        let result = self.write_container(&dir, &id, &sandbox, spec);
        drop(lock);
        let spawned = result.and_then(|()| self.spawn_monitor(&dir, &id));
        if let Err(err) = spawned {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err);
        }
        Ok(id)
    }

    /// Writes the record and the OCI bundle of a new container.
    fn write_container(
        &self,
        dir: &Path,
        id: &str,
        sandbox: &state::SandboxRecord,
        spec: ContainerSpec,
    ) -> Result<()> {
        let sandbox_dir = self.state.sandbox_dir(&sandbox.id);
        let mut join = Vec::new();
        for (typ, file, _) in crate::sandbox::wanted_namespaces(&sandbox.spec) {
            join.push((typ, sandbox_dir.join("ns").join(file).display().to_string()));
        }
        let mut new = vec!["mount"];
        if !sandbox.spec.host_pid {
            match self.shared_pid_namespace(sandbox) {
                Some(path) => join.push(("pid", path)),
                None => new.push("pid"),
            }
        }
        if self.tree.version() == CgroupVersion::V2 {
            new.push("cgroup");
        }
        let cgroup_hierarchies = match self.tree.version() {
            CgroupVersion::V1 => std::fs::read_dir("/sys/fs/cgroup")
                .map(|entries| {
                    entries
                        .flatten()
                        // The hybrid layout's cgroup2 mount is no v1 hierarchy: libcontainer
                        // mounts none there, and a read-only path that does not exist costs
                        // the container's init a failed mount and its path checks.
                        .filter(|e| e.file_name() != "unified" && e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            CgroupVersion::V2 => Vec::new(),
        };
        let mut sandbox_files = crate::sandbox::container_files(&sandbox_dir);
        if let Some(path) = spec.termination_message_path.as_deref().filter(|p| p.starts_with('/'))
        {
            // The kubelet reads the termination message from this file after the exit.
            let file = dir.join("termination-log");
            std::fs::write(&file, "").map_err(io_err("creating", &file))?;
            sandbox_files.push((file.display().to_string(), path.to_string(), false));
        }
        let ctx = OciContext {
            join_namespaces: join,
            new_namespaces: new,
            cgroup_path: crate::cgroups::CgroupTree::container_path(&sandbox.cgroup_path, id),
            sandbox_files,
            cgroup_hierarchies,
        };
        let rootfs =
            std::fs::canonicalize(&spec.rootfs).map_err(io_err("resolving", &spec.rootfs))?;
        let doc = oci::build_spec(&spec, &ctx, &rootfs)?;
        state::write_json(&dir.join("bundle/config.json"), &doc)?;
        let log_path = spec.log_path.clone().unwrap_or_else(|| dir.join("container.log"));
        let record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: sandbox.id.clone(),
            spec,
            cgroup_path: ctx.cgroup_path,
            log_path,
            created_at: crate::logs::timestamp_now(),
        };
        state::write_json(&dir.join("container.json"), &record)
    }

    /// With `shareProcessNamespace`: the PID namespace of a running container of the pod.
    fn shared_pid_namespace(&self, sandbox: &state::SandboxRecord) -> Option<String> {
        if !sandbox.spec.share_process_namespace {
            return None;
        }
        self.list_containers()
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox.id)
            .find_map(|c| c.pid.map(|pid| format!("/proc/{pid}/ns/pid")))
    }

    /// Starts the monitor of a container and waits until it reports the container created.
    fn spawn_monitor(&self, dir: &Path, id: &str) -> Result<()> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
        let log = dir.join("monitor.log");
        let out = std::fs::File::create(&log).map_err(io_err("creating", &log))?;
        if self.fork_monitor(dir, write.as_fd(), out.as_fd()) {
            drop((write, out));
        } else {
            self.exec_monitor(dir, write, out)?;
        }
        // Our copy of the write end is closed: end of file means nobody can answer any more.
        // One line, not end of file: the container's init keeps a copy of the fd until it execs.
        let mut reply = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::fs::File::from(read)),
            &mut reply,
        )
        .map_err(io_err("reading monitor reply", dir))?;
        let reply = reply.trim();
        if reply == "ok" {
            return Ok(());
        }
        let message = match reply.strip_prefix("error: ") {
            // The monitor's error already names the container.
            Some(message) => {
                message.strip_prefix(&format!("container {id}: ")).unwrap_or(message).to_string()
            }
            None => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                format!("monitor exited without creating the container: {}", text.trim())
            }
        };
        Err(Error::Monitor { id: id.to_string(), message })
    }

    /// Has the monitor zygote fork the monitor (started, or restarted once if it died, here);
    /// `false` if no zygote can take the request, so that the caller execs the monitor itself.
    fn fork_monitor(&self, dir: &Path, sync: BorrowedFd, log: BorrowedFd) -> bool {
        let mut zygote = self.zygote.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..2 {
            if zygote.is_none() {
                let spawned = crate::zygote::Zygote::spawn(self.monitor_command());
                match spawned {
                    Ok(z) => *zygote = Some(z),
                    Err(err) => {
                        tracing::warn!(%err, "runtime: no monitor zygote, executing monitors");
                        return false;
                    }
                }
            }
            match zygote.as_ref().map(|z| z.request(dir, sync, log)) {
                Some(Ok(())) => return true,
                // Gone (killed, crashed): reap it and start another.
                _ => *zygote = None,
            }
        }
        false
    }

    /// Executes the monitor program for `dir` (`monitor run DIR`), which detaches itself.
    fn exec_monitor(&self, dir: &Path, write: OwnedFd, out: std::fs::File) -> Result<()> {
        let err = out.try_clone().map_err(io_err("duplicating", dir.join("monitor.log")))?;
        let mut command = self.monitor_command();
        command.arg("run").arg(dir).env(SYNC_FD_ENV, "3").stdout(out).stderr(err);
        let write_fd = write.as_raw_fd();
        // SAFETY: only dup2, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(write_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child =
            command.spawn().map_err(io_err("starting monitor", &self.config.monitor.exe))?;
        drop(write);
        // The first monitor process exits as soon as it has forked the real one.
        child.wait().map_err(io_err("waiting for monitor", dir))?;
        Ok(())
    }

    /// The pid of the monitor zygote, if one runs (tests kill it to prove it is replaced).
    #[doc(hidden)]
    pub fn monitor_zygote_pid(&self) -> Option<u32> {
        self.zygote.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|z| z.pid())
    }

    /// The monitor program with its leading arguments.
    fn monitor_command(&self) -> Command {
        let mut command = Command::new(&self.config.monitor.exe);
        command
            .args(&self.config.monitor.args)
            .stdin(Stdio::null())
            .current_dir("/")
            .env("RUST_LOG", "error");
        command
    }

    /// Starts a created container.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let status = self.container_status(id)?;
        if status.state != ContainerState::Created {
            return Err(Error::InvalidState(format!(
                "container {id} is {}, only a created container can be started",
                status.state
            )));
        }
        monitor::command(&self.state.container_dir(id), id, "start").map(|_| ())
    }

    /// A container's record.
    pub(crate) fn record(&self, id: &str) -> Result<ContainerRecord> {
        state::read_json(&self.state.container_dir(id).join("container.json"))?
            .ok_or_else(|| Error::NotFound { kind: "container", name: id.to_string() })
    }

    /// A container's status, from its records and its processes.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let record = self.record(id)?;
        let dir = self.state.container_dir(id);
        let monitor: Option<MonitorRecord> = state::read_json(&dir.join("monitor.json"))?;
        let exit: Option<ExitRecord> = state::read_json(&dir.join("exit.json"))?;
        let init_alive = monitor
            .as_ref()
            .is_some_and(|m| state::process_matches(m.init_pid, m.init_start_ticks));
        let monitor_alive = monitor.as_ref().is_some_and(|m| process_alive(m.monitor_pid));
        let state = match (&exit, &monitor) {
            (Some(_), _) => ContainerState::Exited,
            (None, None) => ContainerState::Created,
            (None, Some(m)) if m.started_at.is_none() && monitor_alive => ContainerState::Created,
            (None, Some(_)) if init_alive || monitor_alive => ContainerState::Running,
            (None, Some(_)) => ContainerState::Unknown,
        };
        Ok(ContainerStatus {
            id: record.id,
            name: record.spec.name.clone(),
            sandbox_id: record.sandbox_id,
            state,
            pid: monitor.as_ref().filter(|_| init_alive).map(|m| m.init_pid),
            created_at: record.created_at,
            started_at: monitor.and_then(|m| m.started_at),
            finished_at: exit.as_ref().map(|e| e.finished_at.clone()),
            exit_code: exit.as_ref().map(|e| e.exit_code),
            reason: exit.map(|e| e.reason),
            log_path: record.log_path,
            cgroup_path: record.cgroup_path,
            spec: record.spec,
        })
    }

    /// All containers.
    pub fn list_containers(&self) -> Vec<ContainerStatus> {
        self.list_containers_named(|_| true)
    }

    /// The containers whose name `keep` accepts; only their state is read.
    pub fn list_containers_named(&self, keep: impl Fn(&str) -> bool) -> Vec<ContainerStatus> {
        let load = |id: &str| self.record(id).ok().map(|r| r.spec.name);
        self.container_names
            .names(self.state.container_ids(), load)
            .into_iter()
            .filter(|(_, name)| keep(name))
            .filter_map(|(id, _)| self.container_status(&id).ok())
            .collect()
    }

    /// Finds a container by id, name, or unique id prefix.
    pub fn find_container(&self, name_or_id: &str) -> Result<ContainerStatus> {
        let ids = self.state.container_ids();
        if ids.iter().any(|id| id == name_or_id) {
            return self.container_status(name_or_id);
        }
        let exact = self.list_containers_named(|name| name == name_or_id);
        if let Some(c) = exact.into_iter().next() {
            return Ok(c);
        }
        let mut prefixed = ids
            .iter()
            .filter(|id| id.starts_with(name_or_id))
            .filter_map(|id| self.container_status(id).ok());
        match (prefixed.next(), prefixed.next()) {
            (Some(c), None) if !name_or_id.is_empty() => Ok(c),
            _ => Err(Error::NotFound { kind: "container", name: name_or_id.to_string() }),
        }
    }

    /// Waits until the container has exited (or `timeout` passes) and returns its status.
    pub fn wait_container(&self, id: &str, timeout: Option<Duration>) -> Result<ContainerStatus> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // Watching before the first look: an exit recorded in between still wakes us.
        let watch = self.watches.watch(&self.state.container_dir(id));
        // Without a watch, short containers (jobs, probes) still want a fast first look.
        let mut pause = Duration::from_millis(1);
        loop {
            let status = self.container_status(id)?;
            if matches!(status.state, ContainerState::Exited | ContainerState::Unknown) {
                return Ok(status);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(status);
            }
            match &watch {
                // The exit record wakes the watch; a monitor that dies without one does not,
                // hence the bounded wait.
                Some(watch) => watch.wait(left.unwrap_or(MAX_WATCH).min(MAX_WATCH)),
                None => {
                    std::thread::sleep(left.map_or(pause, |l| l.min(pause)));
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
            }
        }
    }

    /// Sends a signal to the container's main process.
    pub fn kill_container(&self, id: &str, signal: Signal) -> Result<()> {
        let status = self.container_status(id)?;
        let Some(pid) = status.pid else {
            return Err(Error::InvalidState(format!(
                "container {id} is {}: nothing to signal",
                status.state
            )));
        };
        kill(Pid::from_raw(pid), signal)
            .map_err(sys_err(format!("sending {signal} to container {id}")))
    }

    /// Stops a container: its stop signal (SIGTERM by default), then SIGKILL to every process of
    /// it after `grace`. Returns the final status.
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<ContainerStatus> {
        let status = self.container_status(id)?;
        let Some(pid) = status.pid else {
            // Its process has exited but the monitor has not recorded it yet: wait for that.
            if status.state == ContainerState::Running {
                return self.wait_container(id, Some(Duration::from_secs(30)));
            }
            return Ok(status);
        };
        let signal = stop_signal(status.spec.image.stop_signal.as_deref());
        if status.state == ContainerState::Running && !grace.is_zero() {
            let _ = kill(Pid::from_raw(pid), signal);
            let after = self.wait_container(id, Some(grace))?;
            if after.state != ContainerState::Running {
                return Ok(after);
            }
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        for pid in self.tree.pids(&status.cgroup_path) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let done = self.wait_container(id, Some(Duration::from_secs(30)))?;
        if matches!(done.state, ContainerState::Running | ContainerState::Created) {
            return Err(Error::InvalidState(format!("container {id} did not exit after SIGKILL")));
        }
        Ok(done)
    }

    /// Removes a container; a running one only with `force` (it is killed first).
    ///
    /// Ordering with the monitor: it records the exit and then removes the cgroup, holding the
    /// container's lock (`state::ContainerLock`) until it is done, so removal first waits for
    /// that lock; then the cgroup goes (a lost monitor left it) and the dir is renamed into the
    /// trash in one step (the container is gone from then on); its files are deleted in the
    /// background (`trash.rs`).
    pub fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let status = self.container_status(id)?;
        match status.state {
            ContainerState::Running | ContainerState::Created if !force => {
                return Err(Error::InvalidState(format!(
                    "container {} is {}: stop it first or force the removal",
                    status.name, status.state
                )));
            }
            ContainerState::Running | ContainerState::Created | ContainerState::Unknown => {
                self.stop_container(id, Duration::ZERO)?;
            }
            ContainerState::Exited => {}
        }
        let dir = self.state.container_dir(id);
        let Some(_lock) = self.wait_for_monitor(id, &dir, &status.cgroup_path)? else {
            return Ok(()); // Removed meanwhile by someone else.
        };
        self.tree.remove(&status.cgroup_path)?;
        let trash = self.state.removed_dir(id);
        match std::fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("moving to the trash", &dir)(e)),
        }
        self.trash.delete_later(trash);
        Ok(())
    }

    /// Waits until the container's monitor is done with it (holding its lock), killing a
    /// monitor that takes longer than `MONITOR_CLEANUP` (and what runs in the container: one
    /// still being created when removal began is not stopped by it); `None` if the dir is gone.
    fn wait_for_monitor(
        &self,
        id: &str,
        dir: &Path,
        cgroup: &str,
    ) -> Result<Option<state::ContainerLock>> {
        let lock_file = dir.join("monitor.lock");
        let mut deadline = Instant::now() + MONITOR_CLEANUP;
        let mut killed = false;
        // The monitor's cleanup after the exit record takes a few milliseconds.
        let mut pause = Duration::from_micros(500);
        loop {
            match state::ContainerLock::try_lock(dir) {
                Ok(Some(lock)) => return Ok(Some(lock)),
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("locking", &lock_file)(e)),
            }
            if Instant::now() >= deadline {
                if killed {
                    return Err(Error::Monitor {
                        id: id.to_string(),
                        message: "monitor holds the container after SIGKILL".into(),
                    });
                }
                // Only the monitor takes the lock, and it holds it while it lives.
                let record: Option<MonitorRecord> = state::read_json(&dir.join("monitor.json"))?;
                if let Some(m) = record.filter(|m| process_alive(m.monitor_pid)) {
                    tracing::warn!(container = id, pid = m.monitor_pid, "killing a stuck monitor");
                    let _ = kill(Pid::from_raw(m.monitor_pid), Signal::SIGKILL);
                }
                for pid in self.tree.pids(cgroup) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                killed = true;
                deadline = Instant::now() + MONITOR_CLEANUP;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// CPU and memory usage of a running container.
    pub fn container_stats(&self, id: &str) -> Result<Stats> {
        let status = self.container_status(id)?;
        self.tree.stats(&status.cgroup_path)
    }

    /// The termination message the container wrote (`terminationMessagePath`), if any.
    pub fn termination_message(&self, id: &str) -> Result<Option<String>> {
        let file = self.state.container_dir(id).join("termination-log");
        match std::fs::read(&file) {
            // The kubelet caps the message at 4 KiB.
            Ok(bytes) => {
                Ok(Some(String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &file)(e)),
        }
    }

    /// CPU and memory usage of a whole pod (its pod cgroup).
    pub fn sandbox_stats(&self, sandbox_id: &str) -> Result<Stats> {
        let sandbox = self.sandbox(sandbox_id)?;
        self.tree.stats(&sandbox.cgroup_path)
    }

    /// Runs a process in a running container.
    pub fn exec(&self, id: &str, spec: ExecSpec) -> Result<ExecProcess> {
        let status = self.container_status(id)?;
        if status.state != ContainerState::Running {
            return Err(Error::InvalidState(format!(
                "container {} is {}, not running",
                status.name, status.state
            )));
        }
        let dir = self.state.container_dir(id);
        let work = crate::exec::prepare(&dir, &spec)?;
        let tty = spec.tty;
        let mut command = self.monitor_command();
        let mut spec_file = work.as_os_str().to_owned();
        spec_file.push(".json");
        command.arg("exec").arg(&dir).arg(spec_file);
        ExecProcess::spawn(command, id, work, tty)
    }

    /// Attaches to the main process: a stream of its output that feeds its stdin.
    pub fn attach(&self, id: &str) -> Result<std::os::unix::net::UnixStream> {
        let status = self.container_status(id)?;
        if !matches!(status.state, ContainerState::Running | ContainerState::Created) {
            return Err(Error::InvalidState(format!(
                "container {} is {}",
                status.name, status.state
            )));
        }
        monitor::attach(&self.state.container_dir(id), id)
    }

    /// Reads a container's log; with `follow`, until the container has exited.
    pub fn read_logs(
        &self,
        id: &str,
        options: &LogReadOptions,
        sink: impl FnMut(&LogEntry) -> std::io::Result<()>,
    ) -> Result<()> {
        let record = self.record(id)?;
        let exit_file = self.state.container_dir(id).join("exit.json");
        let finished = move || exit_file.exists();
        crate::logs::read_log(
            &record.log_path,
            record.spec.log_rotation.max_files,
            options,
            finished,
            sink,
        )
    }
}

/// The longest `wait_container` waits on its watch before looking at the state again.
const MAX_WATCH: Duration = Duration::from_millis(50);

/// How long removal waits for a monitor's cleanup before killing it (the monitor itself waits
/// up to 5 s for the container's output pipes and 1 s for a busy cgroup).
const MONITOR_CLEANUP: Duration = Duration::from_secs(10);

/// Whether a process exists (and is not a zombie).
fn process_alive(pid: i32) -> bool {
    state::process_start_ticks(pid).is_some() && kill(Pid::from_raw(pid), None).is_ok()
}

/// Parses an image's `StopSignal` (`SIGQUIT`, `QUIT`, `3`), SIGTERM when absent or unknown.
pub fn stop_signal(name: Option<&str>) -> Signal {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else { return Signal::SIGTERM };
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse().unwrap_or(Signal::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signal_parses_image_forms() {
        assert_eq!(stop_signal(None), Signal::SIGTERM);
        assert_eq!(stop_signal(Some("SIGQUIT")), Signal::SIGQUIT);
        assert_eq!(stop_signal(Some("int")), Signal::SIGINT);
        assert_eq!(stop_signal(Some("9")), Signal::SIGKILL);
        assert_eq!(stop_signal(Some("bogus")), Signal::SIGTERM);
    }
}
