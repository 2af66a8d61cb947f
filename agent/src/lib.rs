//! The Skerry node agent: registers the Node, runs the pods bound to it on the embedded runtime
//! (`pods`), keeps a local cache for offline autonomy (`cache`), and wires the pod network,
//! service proxy and cluster DNS (`networking`, `services`). `Agent::run` is the entry point;
//! `check` is `skerry check`.

pub mod agent;
pub mod api_client;
pub mod api_objects;
pub mod cache;
pub mod cert_renewal;
pub mod check;
pub mod cleanup;
pub mod config;
pub mod credentials;
pub mod env;
pub mod events;
pub mod eviction;
pub mod join;
pub mod local_path;
pub mod network;
pub mod networking;
pub mod node;
pub mod objects;
pub mod pods;
pub mod probes;
pub mod services;
pub mod stats;
pub mod streaming;
pub mod tunnel;
pub mod volumes;

pub use agent::{Agent, AgentError};
pub use config::AgentConfig;
