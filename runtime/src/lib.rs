//! skerry-runtime: the node's container runtime, embedded in the agent.
//!
//! Pod sandboxes (shared network/IPC/UTS namespaces held by bind mounts, no pause process) and
//! containers run by youki's libcontainer, each under its own monitor process (like conmon) that
//! survives the agent, writes CRI logs and records the exit. Cgroups follow the kubelet's
//! `kubepods` layout on v1 or v2. Everything is recorded in a state dir, so a restarted agent
//! re-adopts what runs. The crate knows no Kubernetes types: the agent maps pod specs to the
//! plain-data specs in [`spec`].
//!
//! Entry point: [`Runtime::open`] with a [`RuntimeConfig`]; the monitor program calls
//! [`monitor_main`].

pub mod cgroups;
mod container;
pub mod error;
pub mod exec;
mod gc;
pub mod logs;
mod monitor;
mod names;
mod notify;
pub mod oci;
mod runtime;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod terminal;
mod trash;
mod zygote;

pub use cgroups::{CgroupVersion, Stats};
pub use container::{stop_signal, ContainerState, ContainerStatus};
pub use error::{Error, Result};
pub use exec::{ExecProcess, ExecSpec};
pub use gc::GcReport;
pub use logs::{LogEntry, LogReadOptions, Stream};
pub use monitor::monitor_main;
pub use runtime::{MonitorCommand, Runtime, RuntimeConfig};
pub use sandbox::{LoopbackOnly, NetworkStatus, SandboxNetwork};
pub use spec::{
    ContainerSpec, ImageConfig, LogRotation, Mount, ProcMount, QosClass, Resources, SandboxSpec,
    SeccompProfile, SecurityContext,
};
