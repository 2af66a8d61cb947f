//! skerry-netproxy: see ARCHITECTURE.md.
