//! Records the build year for the clock-sanity check (`check::clock`): a board whose clock says
//! an earlier year than the binary was built in has no RTC or lost its time.
//! `SOURCE_DATE_EPOCH` (reproducible builds) wins over the build machine's clock.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        });
    println!("cargo:rustc-env=SKERRY_BUILD_EPOCH={epoch}");
}
