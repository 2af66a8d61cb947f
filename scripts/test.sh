#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every unit and end-to-end test.
# Tests that need root or a kernel feature skip with a reason, unless SKERRY_REQUIRE_PRIVILEGED=1
# (set by .ci/run), which turns a missing capability into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
