//! skerry-images: see ARCHITECTURE.md.
