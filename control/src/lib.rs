//! The Skerry control plane: the store (SQLite or etcd, with an etcd v3 gRPC front), the API
//! server, and the scheduler and controllers, which reach the store only through the API server.

pub mod apiserver;
pub mod controllers;
pub mod machinery;
pub mod pki;
pub mod scheduler;
pub mod store;
