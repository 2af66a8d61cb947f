//! Helpers shared by the end-to-end tests. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod agent;
pub mod cluster;
pub mod etcd;
pub mod images;
pub mod server;
