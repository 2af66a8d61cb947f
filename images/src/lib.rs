//! skerry-images: the node's image store. It pulls images from OCI registries (mirrors, auth,
//! custom CAs, resumable downloads), keeps blobs in a content-addressed store, unpacks layers
//! safely into snapshot directories, imports and exports archives for air-gapped nodes, and
//! prepares overlayfs root filesystems for containers. See ARCHITECTURE.md.
//!
//! The entry point is [`ImageStore`]; [`ImageConfig`] is what the runtime receives.

mod archive;
mod auth;
mod content;
mod distribution;
pub mod error;
mod gc;
pub mod manifest;
pub mod platform;
mod pull;
pub mod reference;
pub mod registry_config;
mod rootfs;
mod store;
mod transport;
pub use transport::SkipVerify;
pub mod unpack;

pub use error::{ImageError, Result};
pub use gc::{disk_usage_percent, GcPolicy, GcReport, UnusedImages};
pub use manifest::ImageConfig;
pub use platform::Platform;
pub use pull::{PullOptions, PullPhase, PullProgress, DEFAULT_CONCURRENT_DOWNLOADS};
pub use reference::Reference;
pub use registry_config::{Credentials, DockerConfig, RegistryConfig};
pub use rootfs::Rootfs;
pub use store::{Image, ImageInspect, ImageStore, PruneReport};
