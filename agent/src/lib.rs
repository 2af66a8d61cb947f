//! The Skerry node agent. For now: the node self-check (`check`).

pub mod check;
