//! Helpers shared by the controllers: label selectors, ownerReferences, pod state and API
//! discovery. Each is a pure function over the typed objects (discovery aside), so every
//! controller reads the same Kubernetes rule from one place.

pub mod claim;
pub mod discovery;
pub mod expectations;
pub mod hash;
pub mod intstr;
pub mod owner;
pub mod pod;
pub mod selector;
pub mod service;
