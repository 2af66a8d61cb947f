//! The Kubernetes API server: HTTPS, authentication, the REST verbs over the store, watch,
//! discovery, Tables, admission and validation. The only component that touches the store.

pub mod builtin;
pub mod defaults;
pub mod discovery;
pub mod resource;
pub mod table;
pub mod validation;

pub mod admission;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod body;
pub mod bootstrap_token;
pub mod crd;
mod delete;
mod eviction;
mod field_manager;
pub mod impersonation;
mod list;
pub mod listener;
pub mod meta;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod request;
pub mod resource_metrics;
mod rest;
pub mod selector;
pub mod serve;
pub mod server;
pub mod serviceaccount;
pub mod serving_cert;
pub mod status;
pub mod strategy;
pub mod tunnel;
mod watch;
pub mod watch_cache;
pub mod write_marks;

pub use authn::User;
pub use server::{ApiConfig, ApiServer, ApiService};
