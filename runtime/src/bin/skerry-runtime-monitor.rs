//! A standalone monitor program for the runtime's own tests and benchmarks (the skerry binary
//! provides the same as the hidden `skerry ctr monitor` subcommand).

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(skerry_runtime::monitor_main(&args));
}
