# Shared by cross/setup.sh, build.sh and test.sh (sourced, not run): the target table and the
# environment that points Debian's rustc-web, the cross linkers and qemu at one target.
# shellcheck shell=bash

CROSS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$CROSS_DIR/.." && pwd)"
# Target-side libraries (libseccomp) unpacked from Debian's arm64/armhf packages.
CROSS_CACHE="${SKERRY_CROSS_CACHE:-/var/cache/skerry-cross}"
CROSS_TARGET_DIR="${SKERRY_CROSS_TARGET_DIR:-$REPO_DIR/target-cross}"
DIST_DIR="${SKERRY_DIST_DIR:-$REPO_DIR/dist}"
# Debian bookworm-security's rustc-web/cargo-web (1.96): the rustup toolchain on PATH has only
# the x86_64 std, so every cross build calls these two explicitly.
DEB_CARGO=/usr/bin/cargo
DEB_RUSTC=/usr/bin/rustc

GNU_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf x86_64-unknown-linux-gnu)
MUSL_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
  arm-unknown-linux-musleabihf x86_64-unknown-linux-musl)
ALL_TARGETS=("${GNU_TARGETS[@]}" "${MUSL_TARGETS[@]}")
# What --ci covers: the two board architectures people flash. The crate tests run on both;
# binaries are built for CI_BINARY_TARGETS only: libcontainer 0.7.0 does not compile for 32-bit
# ARM (u64 rlimit/inode/statfs constants against 32-bit libc types), so armv7 joins once the
# runtime builds there (see README "Status").
CI_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
CI_BINARY_TARGETS=(aarch64-unknown-linux-gnu)

die() { echo "cross: error: $*" >&2; exit 1; }
say() { echo "cross: $*" >&2; }

# Sets, for target $1: T_DEBARCH (Debian architecture), T_MULTIARCH (lib dir triple),
# T_CC (C compiler / linker), T_QEMU (emulator, empty for the build machine's own arch),
# T_QEMU_ARGS, T_LIBC (gnu|musl), T_UNAME (what `uname -m` says under qemu), T_RUST_ARCH.
target_info() {
  T_QEMU_ARGS=()
  case "$1" in
    aarch64-unknown-linux-gnu)
      T_DEBARCH=arm64 T_MULTIARCH=aarch64-linux-gnu T_CC=aarch64-linux-gnu-gcc T_LIBC=gnu
      T_QEMU=qemu-aarch64-static T_QEMU_ARGS=(-L /usr/aarch64-linux-gnu)
      T_UNAME=aarch64 T_RUST_ARCH=aarch64 ;;
    armv7-unknown-linux-gnueabihf)
      T_DEBARCH=armhf T_MULTIARCH=arm-linux-gnueabihf T_CC=arm-linux-gnueabihf-gcc T_LIBC=gnu
      T_QEMU=qemu-arm-static T_QEMU_ARGS=(-L /usr/arm-linux-gnueabihf)
      T_UNAME=armv7l T_RUST_ARCH=arm ;;
    x86_64-unknown-linux-gnu)
      T_DEBARCH=amd64 T_MULTIARCH=x86_64-linux-gnu T_CC=gcc T_LIBC=gnu
      T_QEMU="" T_UNAME=x86_64 T_RUST_ARCH=x86_64 ;;
    aarch64-unknown-linux-musl)
      T_DEBARCH=arm64 T_MULTIARCH=aarch64-linux-gnu T_CC="" T_LIBC=musl
      T_QEMU=qemu-aarch64-static T_UNAME=aarch64 T_RUST_ARCH=aarch64 ;;
    armv7-unknown-linux-musleabihf)
      T_DEBARCH=armhf T_MULTIARCH=arm-linux-gnueabihf T_CC="" T_LIBC=musl
      T_QEMU=qemu-arm-static T_UNAME=armv7l T_RUST_ARCH=arm ;;
    arm-unknown-linux-musleabihf)
      # ARMv6 (Pi Zero / Pi 1): emulate that very CPU, so a stray ARMv7 instruction crashes here.
      T_DEBARCH=armhf T_MULTIARCH=arm-linux-gnueabihf T_CC="" T_LIBC=musl
      T_QEMU=qemu-arm-static T_QEMU_ARGS=(-cpu arm1176) T_UNAME=armv6l T_RUST_ARCH=arm ;;
    x86_64-unknown-linux-musl)
      T_DEBARCH=amd64 T_MULTIARCH=x86_64-linux-gnu T_CC="" T_LIBC=musl
      T_QEMU="" T_UNAME=x86_64 T_RUST_ARCH=x86_64 ;;
    *) die "unknown target $1 (known: ${ALL_TARGETS[*]})" ;;
  esac
}

# Expands target arguments (names, or the groups all, gnu, musl, ci) into TARGETS.
expand_targets() {
  TARGETS=()
  [ $# -gt 0 ] || set -- all
  for t in "$@"; do
    case "$t" in
      all) TARGETS+=("${ALL_TARGETS[@]}") ;;
      gnu) TARGETS+=("${GNU_TARGETS[@]}") ;;
      musl) TARGETS+=("${MUSL_TARGETS[@]}") ;;
      ci) TARGETS+=("${CI_TARGETS[@]}") ;;
      *) target_info "$t"; TARGETS+=("$t") ;;
    esac
  done
}

# The directory holding libseccomp.a for a Debian architecture (see setup.sh).
seccomp_dir() {
  target_info "$1"
  if [ "$T_DEBARCH" = amd64 ]; then
    echo "/usr/lib/x86_64-linux-gnu"
  else
    echo "$CROSS_CACHE/sysroot/$T_DEBARCH/usr/lib/$T_MULTIARCH"
  fi
}

# The command prefix that runs a binary of target $1 on this machine (empty for native).
runner_cmd() {
  target_info "$1"
  RUNNER=()
  [ -z "$T_QEMU" ] || RUNNER=("$T_QEMU" "${T_QEMU_ARGS[@]}")
}

# Names of dist artefacts.
dist_agent() { echo "$DIST_DIR/skerry-agent-$1"; }
dist_full() { echo "$DIST_DIR/skerry-$1"; }

# Sets CARGO_ENV (variables), CARGO_CMD (cargo or cargo-zigbuild) and CARGO_FLAGS (--target,
# -Zbuild-std) to build or test for target $1 with Debian's rustc; cargo's runner is qemu.
cargo_setup() {
  local target=$1
  target_info "$target"
  local upper=${target//-/_}; upper=${upper^^}
  local lower=${target//-/_}
  local seccomp; seccomp=$(seccomp_dir "$target")
  [ -f "$seccomp/libseccomp.a" ] || die "no libseccomp.a for $target in $seccomp: run cross/setup.sh"
  [ -x "$DEB_CARGO" ] && [ -x "$DEB_RUSTC" ] || die "$DEB_CARGO / $DEB_RUSTC missing: run cross/setup.sh"
  # Static libseccomp: boards need nothing beyond their C library.
  CARGO_ENV=(RUSTC="$DEB_RUSTC" RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$CROSS_TARGET_DIR"
    LIBSECCOMP_LIB_PATH="$seccomp" LIBSECCOMP_LINK_TYPE=static)
  CARGO_CMD=("$DEB_CARGO")
  CARGO_FLAGS=(--target "$target")
  runner_cmd "$target"
  [ ${#RUNNER[@]} -eq 0 ] || CARGO_ENV+=("CARGO_TARGET_${upper}_RUNNER=${RUNNER[*]}")
  if [ "$T_LIBC" = musl ]; then
    command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild missing: run cross/setup.sh --musl"
    CARGO_ENV+=(CARGO="$DEB_CARGO" RUSTC_BOOTSTRAP=1
      "CARGO_TARGET_${upper}_RUSTFLAGS=-C link-self-contained=no")
    CARGO_CMD=(cargo-zigbuild)
    CARGO_FLAGS+=(-Zbuild-std=std,panic_abort)
  elif [ "$target" != x86_64-unknown-linux-gnu ]; then
    # Debian ships std only for the build machine: build std from rust-web-src.
    CARGO_ENV+=(RUSTC_BOOTSTRAP=1 "CARGO_TARGET_${upper}_LINKER=$T_CC" "CC_${lower}=$T_CC"
      "AR_${lower}=${T_CC%gcc}ar")
    CARGO_FLAGS+=(-Zbuild-std=std,panic_abort)
  fi
}
