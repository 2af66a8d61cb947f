#!/usr/bin/env bash
# Cross-builds release binaries of skerry into dist/, with SHA-256 sums and sizes.
#
#   cross/build.sh [--agent-only|--full-only] [--source DIR] [TARGET|GROUP...]
#   cross/build.sh --ci        aarch64 and armv7 agent-only builds + their qemu tests, and the
#                              agent crate's tests under qemu for both (lib.sh: CI_*TARGETS)
#
# Targets: aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu
#          aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
#          arm-unknown-linux-musleabihf (ARMv6) x86_64-unknown-linux-musl
# Groups:  all (default), gnu, musl, ci.
# Per target: dist/skerry-agent-TARGET (agent-only: `--no-default-features --features seccomp`,
# no control plane linked), dist/skerry-TARGET (full), dist/skerry-agent-TARGET.tar.gz (release
# bundle). The musl builds leave out `seccomp` (no libseccomp for musl; see README).
# The 32-bit targets build libcontainer with cross/patches/libcontainer-32bit.patch, from a scratch
# copy of the tree (the path patch rewrites the lock there): the committed Cargo.lock is untouched.
# Needs cross/setup.sh (and cross/setup.sh --musl for the musl targets).
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "$0")/lib.sh"

BUILD_AGENT=1 BUILD_FULL=1 CI_MODE=0 SOURCE_DIR="$REPO_DIR"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --agent-only) BUILD_FULL=0 ;;
    --full-only) BUILD_AGENT=0 ;;
    --ci) CI_MODE=1 BUILD_FULL=0 ;;
    --source) SOURCE_DIR="$(cd "$2" && pwd)"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) args+=("$1") ;;
  esac
  shift
done
if [ "$CI_MODE" = 1 ]; then
  [ ${#args[@]} -eq 0 ] || die "--ci builds the ci group; give no targets"
  args=("${CI_BINARY_TARGETS[@]}")
fi
expand_targets "${args[@]+"${args[@]}"}"

[ -x "$DEB_CARGO" ] && [ -x "$DEB_RUSTC" ] || die "$DEB_CARGO / $DEB_RUSTC missing: run cross/setup.sh"
mkdir -p "$DIST_DIR"

# Builds one target's agent-only ($2 = agent) or full ($2 = full) binary; prints its path.
cargo_build() {
  local target=$1 kind=$2
  cargo_setup "$target" "$SOURCE_DIR"
  feature_args "$target" "$kind"
  say "building $target ${FEATURE_ARGS[*]} (cargo from $DEB_CARGO)"
  (cd "$CARGO_SRC" &&
    env "${CARGO_ENV[@]}" "${CARGO_CMD[@]}" build --release "${CARGO_LOCK[@]+"${CARGO_LOCK[@]}"}" \
      --bin skerry "${CARGO_FLAGS[@]}" "${FEATURE_ARGS[@]}" >&2)
  [ "$CARGO_SRC" = "$SOURCE_DIR" ] || same_lock_versions "$SOURCE_DIR/Cargo.lock" "$CARGO_SRC/Cargo.lock"
  echo "$CROSS_TARGET_DIR/$target/release/skerry"
}

# The release bundle: binary, systemd unit, install and uninstall scripts, README.
bundle() {
  local target=$1 binary=$2
  local stage; stage=$(mktemp -d)
  local name="skerry-agent-$target"
  mkdir -p "$stage/$name"
  install -m 0755 "$binary" "$stage/$name/skerry"
  install -m 0644 "$CROSS_DIR/package/skerry-agent.service" "$stage/$name/"
  install -m 0755 "$CROSS_DIR/package/install.sh" "$CROSS_DIR/package/uninstall.sh" "$stage/$name/"
  install -m 0644 "$CROSS_DIR/package/README.txt" "$stage/$name/"
  tar -C "$stage" --owner=0 --group=0 --sort=name -czf "$DIST_DIR/$name.tar.gz" "$name"
  rm -rf "$stage"
}

for target in "${TARGETS[@]}"; do
  start=$SECONDS
  if [ "$BUILD_AGENT" = 1 ]; then
    out=$(cargo_build "$target" agent)
    cp "$out" "$(dist_agent "$target")"
    bundle "$target" "$(dist_agent "$target")"
  fi
  if [ "$BUILD_FULL" = 1 ]; then
    out=$(cargo_build "$target" full)
    cp "$out" "$(dist_full "$target")"
  fi
  say "$target built in $((SECONDS - start)) s"
done

# Checksums and sizes of everything in dist/ (sha256sum -c SHA256SUMS verifies a download).
(cd "$DIST_DIR" && find . -maxdepth 1 -type f -name 'skerry*' -printf '%f\n' | sort |
  xargs -r sha256sum >SHA256SUMS)
(cd "$DIST_DIR" && find . -maxdepth 1 -type f -name 'skerry*' -printf '%s\t%f\n' | sort -k2 |
  awk -F'\t' '{ printf "%10d  %6.1f MiB  %s\n", $1, $1 / 1048576, $2 }' >SIZES)
say "dist/: $(wc -l <"$DIST_DIR/SHA256SUMS") artefacts"
cat "$DIST_DIR/SIZES" >&2

if [ "$CI_MODE" = 1 ]; then
  "$CROSS_DIR/test.sh" --agent-only "${CI_BINARY_TARGETS[@]}"
  "$CROSS_DIR/test.sh" --crates-only "${CI_TARGETS[@]}"
fi
