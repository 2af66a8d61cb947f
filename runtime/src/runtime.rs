//! `Runtime`: the entry point. It owns a state dir, a cgroup tree and a network hook, and
//! manages pod sandboxes here (containers in `container.rs`, garbage collection in `gc.rs`).
//! Every method works from the state dir, so any number of `Runtime`s (an agent, `skerry ctr`,
//! a restarted agent) see the same sandboxes and containers.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cgroups::CgroupTree;
use crate::error::{io_err, Error, Result};
use crate::sandbox::{self, NetworkStatus, SandboxNetwork};
use crate::spec::SandboxSpec;
use crate::state::{self, SandboxRecord, StateDir};

/// How to start a monitor process: a program and the arguments before `run DIR`/`exec …`.
#[derive(Debug, Clone)]
pub struct MonitorCommand {
    /// The executable (e.g. the skerry binary itself).
    pub exe: PathBuf,
    /// Leading arguments (e.g. `["ctr", "monitor"]`).
    pub args: Vec<String>,
}

/// What a `Runtime` needs.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where sandboxes and containers are recorded (e.g. `/var/lib/skerry/agent/runtime`).
    pub state_dir: PathBuf,
    /// The monitor program.
    pub monitor: MonitorCommand,
    /// The name of the top cgroup (`kubepods`).
    pub cgroup_root: String,
    /// The pod network hook.
    pub network: Arc<dyn SandboxNetwork>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("state_dir", &self.state_dir)
            .field("monitor", &self.monitor)
            .field("cgroup_root", &self.cgroup_root)
            .finish_non_exhaustive()
    }
}

/// The container runtime of one node.
pub struct Runtime {
    pub(crate) config: RuntimeConfig,
    pub(crate) state: StateDir,
    pub(crate) tree: CgroupTree,
    /// The monitor zygote, started on the first container creation (see `zygote.rs`).
    pub(crate) zygote: std::sync::Mutex<Option<crate::zygote::Zygote>>,
    /// Inotify instances for `wait_container` (see `notify.rs`).
    pub(crate) watches: crate::notify::WatchPool,
    /// Deletes removed containers' files in the background (see `trash.rs`).
    pub(crate) trash: crate::trash::Trash,
    /// Container and sandbox names by id (see `names.rs`).
    pub(crate) container_names: crate::names::NameIndex,
    pub(crate) sandbox_names: crate::names::NameIndex,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("config", &self.config).finish_non_exhaustive()
    }
}

/// An exclusive lock on the state dir, held while names are checked and records created.
pub(crate) struct StateLock {
    _file: nix::fcntl::Flock<File>,
}

impl Runtime {
    /// Opens the state dir, re-adopting what it records, and garbage-collects leftovers of an
    /// earlier crash (half-created sandboxes, orphaned cgroups).
    pub fn open(config: RuntimeConfig) -> Result<Runtime> {
        if !config.monitor.exe.is_file() {
            return Err(Error::InvalidSpec(format!(
                "monitor program {} does not exist",
                config.monitor.exe.display()
            )));
        }
        let state = StateDir::open(&config.state_dir)?;
        let tree = CgroupTree::new(&config.cgroup_root)?;
        let runtime = Runtime {
            config,
            state,
            tree,
            zygote: Default::default(),
            watches: Default::default(),
            trash: Default::default(),
            container_names: Default::default(),
            sandbox_names: Default::default(),
        };
        let report = runtime.garbage_collect()?;
        if !report.is_empty() {
            tracing::info!(?report, "runtime: garbage-collected leftovers");
        }
        Ok(runtime)
    }

    /// The state dir (absolute).
    pub fn state_dir(&self) -> &Path {
        self.state.root()
    }

    /// The cgroup tree (for reading limits and stats).
    pub fn cgroups(&self) -> &CgroupTree {
        &self.tree
    }

    /// Locks the state dir against concurrent creation by another process.
    pub(crate) fn lock(&self) -> Result<StateLock> {
        let path = self.state.root().join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| crate::error::sys_err("locking state dir")(e))?;
        Ok(StateLock { _file: file })
    }

    /// Creates a pod sandbox: cgroup, namespaces, files, network. Returns its id.
    pub fn create_sandbox(&self, spec: SandboxSpec) -> Result<String> {
        state::validate_name("sandbox", &spec.name)?;
        let _lock = self.lock()?;
        if let Some(existing) = self.list_sandboxes().into_iter().find(|s| s.spec.name == spec.name)
        {
            return Err(Error::NameInUse { kind: "sandbox", name: spec.name, id: existing.id });
        }
        let id = state::new_id();
        let uid = spec.uid.clone().unwrap_or_else(|| id.clone());
        let dir = self.state.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let mut record = SandboxRecord {
            id: id.clone(),
            cgroup_path: self.tree.pod_path(spec.qos, &uid),
            spec,
            created_at: crate::logs::timestamp_now(),
            network: None,
            ready: false,
        };
        // Recorded first, so that a crash from here on leaves something the GC can undo.
        state::write_json(&dir.join("sandbox.json"), &record)?;
        match self.build_sandbox(&dir, &record) {
            Ok(network) => {
                record.network = network;
                record.ready = true;
                state::write_json(&dir.join("sandbox.json"), &record)?;
                Ok(id)
            }
            Err(err) => {
                if let Err(cleanup) = self.destroy_sandbox(&record) {
                    tracing::warn!(%cleanup, "cleaning up a failed sandbox");
                }
                Err(err)
            }
        }
    }

    /// The steps of sandbox creation after its record exists.
    fn build_sandbox(&self, dir: &Path, record: &SandboxRecord) -> Result<Option<NetworkStatus>> {
        self.tree.create_pod(&record.cgroup_path, &record.spec.resources)?;
        sandbox::create_namespaces(dir, &record.spec)?;
        sandbox::create_files(dir, &record.spec)?;
        if record.spec.host_network {
            return Ok(None);
        }
        let netns = dir.join("ns/net");
        let status = self
            .config
            .network
            .setup(&record.id, &netns)
            .map_err(|message| Error::Network { id: record.id.clone(), message })?;
        Ok(Some(status))
    }

    /// Tears a sandbox down: network, mounts, cgroup, directory (each step idempotent).
    pub(crate) fn destroy_sandbox(&self, record: &SandboxRecord) -> Result<()> {
        let dir = self.state.sandbox_dir(&record.id);
        let netns = dir.join("ns/net");
        if !record.spec.host_network && netns.exists() {
            if let Err(message) = self.config.network.teardown(&record.id, &netns) {
                tracing::warn!(sandbox = %record.id, %message, "network teardown failed");
            }
        }
        sandbox::destroy(&dir)?;
        self.tree.remove(&record.cgroup_path)
    }

    /// A sandbox's record.
    pub fn sandbox(&self, id: &str) -> Result<SandboxRecord> {
        state::read_json(&self.state.sandbox_dir(id).join("sandbox.json"))?
            .ok_or_else(|| Error::NotFound { kind: "sandbox", name: id.to_string() })
    }

    /// Finds a sandbox by id or name.
    pub fn find_sandbox(&self, name_or_id: &str) -> Result<SandboxRecord> {
        let load = |id: &str| self.sandbox(id).ok().map(|r| r.spec.name);
        self.sandbox_names
            .names(self.state.sandbox_ids(), load)
            .into_iter()
            .find(|(id, name)| id == name_or_id || name == name_or_id)
            .and_then(|(id, _)| self.sandbox(&id).ok())
            .ok_or_else(|| Error::NotFound { kind: "sandbox", name: name_or_id.to_string() })
    }

    /// All sandboxes.
    pub fn list_sandboxes(&self) -> Vec<SandboxRecord> {
        self.state
            .sandbox_ids()
            .iter()
            .filter_map(|id| {
                state::read_json(&self.state.sandbox_dir(id).join("sandbox.json")).ok()?
            })
            .collect()
    }

    /// Removes a sandbox, killing and removing its containers first.
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        let record = self.sandbox(id)?;
        for container in self.list_containers().into_iter().filter(|c| c.sandbox_id == id) {
            self.remove_container(&container.id, true)?;
        }
        self.destroy_sandbox(&record)
    }

    /// Waits until the files of removed containers are deleted (removal returns before; dropping
    /// the `Runtime` waits too).
    pub fn flush_removals(&self) {
        self.trash.flush();
    }

    /// The path of a sandbox namespace file (`net`, `ipc`, `uts`), if the sandbox holds one.
    pub fn sandbox_namespace(&self, id: &str, ns: &str) -> Option<PathBuf> {
        let path = self.state.sandbox_dir(id).join("ns").join(ns);
        path.exists().then_some(path)
    }
}
