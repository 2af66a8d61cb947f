//! The Kubernetes API server: HTTPS, authentication, the REST verbs over the store, watch,
//! discovery, Tables, admission and validation. The only component that touches the store.

pub mod builtin;
pub mod defaults;
pub mod discovery;
pub mod resource;
pub mod table;
pub mod validation;
