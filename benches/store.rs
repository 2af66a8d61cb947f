//! Store benchmark: `skerry etcd` against Debian's etcd (see BENCHMARKS.md). In progress.

fn main() {}
