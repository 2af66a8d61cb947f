//! The Skerry control plane: the store (SQLite or etcd, with an etcd v3 gRPC front), and — in
//! later parts — the API server, scheduler and controllers. Only the API server touches the store.

pub mod apiserver;
pub mod pki;
pub mod store;
