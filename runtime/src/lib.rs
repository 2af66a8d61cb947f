//! skerry-runtime: see ARCHITECTURE.md.
