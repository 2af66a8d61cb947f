//! Helpers shared by the end-to-end tests. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod etcd;
pub mod server;
