//! skerry-dns: see ARCHITECTURE.md.
