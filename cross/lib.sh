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
# What --ci covers: the two board architectures people flash, agent binary and crate tests.
CI_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
CI_BINARY_TARGETS=("${CI_TARGETS[@]}")
# libcontainer 0.7.0 (the newest release) assumes 64-bit libc types; the 32-bit targets build it
# with this patch applied to a copy of its crates.io source (patched_libcontainer).
LIBCONTAINER_PATCH="$CROSS_DIR/patches/libcontainer-32bit.patch"

die() { echo "cross: error: $*" >&2; exit 1; }
say() { echo "cross: $*" >&2; }

# Sets, for target $1: T_DEBARCH (Debian architecture), T_MULTIARCH (lib dir triple),
# T_CC (C compiler / linker), T_QEMU (emulator, empty for the build machine's own arch),
# T_QEMU_ARGS, T_LIBC (gnu|musl), T_UNAME (what `uname -m` says under qemu), T_RUST_ARCH,
# T_BITS (pointer width).
target_info() {
  T_QEMU_ARGS=() T_BITS=64
  case "$1" in
    aarch64-unknown-linux-gnu)
      T_DEBARCH=arm64 T_MULTIARCH=aarch64-linux-gnu T_CC=aarch64-linux-gnu-gcc T_LIBC=gnu
      T_QEMU=qemu-aarch64-static T_QEMU_ARGS=(-L /usr/aarch64-linux-gnu)
      T_UNAME=aarch64 T_RUST_ARCH=aarch64 ;;
    armv7-unknown-linux-gnueabihf)
      T_DEBARCH=armhf T_MULTIARCH=arm-linux-gnueabihf T_CC=arm-linux-gnueabihf-gcc T_LIBC=gnu
      T_QEMU=qemu-arm-static T_QEMU_ARGS=(-L /usr/arm-linux-gnueabihf)
      T_UNAME=armv7l T_RUST_ARCH=arm T_BITS=32 ;;
    x86_64-unknown-linux-gnu)
      T_DEBARCH=amd64 T_MULTIARCH=x86_64-linux-gnu T_CC=gcc T_LIBC=gnu
      T_QEMU="" T_UNAME=x86_64 T_RUST_ARCH=x86_64 ;;
    aarch64-unknown-linux-musl)
      T_DEBARCH=arm64 T_MULTIARCH=aarch64-linux-gnu T_CC="" T_LIBC=musl
      T_QEMU=qemu-aarch64-static T_UNAME=aarch64 T_RUST_ARCH=aarch64 ;;
    armv7-unknown-linux-musleabihf)
      T_DEBARCH=armhf T_MULTIARCH=arm-linux-gnueabihf T_CC="" T_LIBC=musl
      T_QEMU=qemu-arm-static T_UNAME=armv7l T_RUST_ARCH=arm T_BITS=32 ;;
    arm-unknown-linux-musleabihf)
      # ARMv6 (Pi Zero / Pi 1): emulate that very CPU, so a stray ARMv7 instruction crashes here.
      T_DEBARCH=armhf T_MULTIARCH=arm-linux-gnueabihf T_CC="" T_LIBC=musl
      T_QEMU=qemu-arm-static T_QEMU_ARGS=(-cpu arm1176) T_UNAME=armv6l T_RUST_ARCH=arm T_BITS=32 ;;
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

# Cargo feature arguments (FEATURE_ARGS) for target $1's agent-only ($2 = agent) or full
# ($2 = full) build. The musl targets leave out `seccomp`: Debian's libseccomp.a is built against
# glibc (it calls __fprintf_chk), so it cannot be linked into a static musl binary.
feature_args() {
  target_info "$1"
  local features=()
  [ "$T_LIBC" = musl ] || features+=(seccomp)
  [ "$2" = agent ] || features+=(server)
  FEATURE_ARGS=(--no-default-features)
  [ ${#features[@]} -eq 0 ] || FEATURE_ARGS+=(--features "$(IFS=,; echo "${features[*]}")")
}

# Prints the directory of crate $1 version $2's crates.io source (fetched by cargo in source
# tree $3 if not yet in the registry cache).
registry_source() {
  local name=$1 version=$2 src=$3 dir
  local home="${CARGO_HOME:-$HOME/.cargo}"
  dir=$(compgen -G "$home/registry/src/*/$name-$version" | head -n 1 || true)
  if [ -z "$dir" ]; then
    (cd "$src" && "$DEB_CARGO" fetch --locked >&2) || die "cargo fetch failed in $src"
    dir=$(compgen -G "$home/registry/src/*/$name-$version" | head -n 1 || true)
  fi
  [ -n "$dir" ] || die "no source of $name $version in $home/registry/src"
  echo "$dir"
}

# Prints a copy of the locked libcontainer's source with LIBCONTAINER_PATCH applied, kept under
# the cross target dir and made again only when the patch changes (so cargo rebuilds nothing).
patched_libcontainer() {
  local src=$1 version
  version=$(awk '$0 == "name = \"libcontainer\"" { getline; gsub(/"/, "", $3); print $3; exit }' \
    "$src/Cargo.lock")
  [ -n "$version" ] || die "no libcontainer in $src/Cargo.lock"
  local dest="$CROSS_TARGET_DIR/patched/libcontainer-$version" stamp
  stamp="$version $(sha256sum <"$LIBCONTAINER_PATCH" | cut -d' ' -f1)"
  if [ "$(cat "$dest/.skerry-patch" 2>/dev/null)" != "$stamp" ]; then
    local orig; orig=$(registry_source libcontainer "$version" "$src")
    rm -rf "$dest" && mkdir -p "${dest%/*}" && cp -r "$orig" "$dest"
    patch -p1 -s -N -d "$dest" <"$LIBCONTAINER_PATCH" >&2 ||
      die "$LIBCONTAINER_PATCH does not apply to libcontainer $version: update the patch"
    echo "$stamp" >"$dest/.skerry-patch"
  fi
  echo "$dest"
}

# Fails unless the scratch copy's lock $2 pins the same packages and versions as the committed lock $1
# (the libcontainer patch may only change that one package's source line).
same_lock_versions() {
  local pins='/^name = /{ n = $3 } /^version = /{ print n, $3 }'
  diff <(awk "$pins" "$1") <(awk "$pins" "$2") >&2 ||
    die "the cross build changed locked versions ($2 against $1)"
}

# Prints a scratch copy of source tree $1 (no target dirs, dist/ or .git) under the cross target
# dir. tar keeps the files' times, so cargo rebuilds only what changed since the last copy.
scratch_source() {
  local src=$1 dest="$CROSS_TARGET_DIR/src"
  rm -rf "$dest" && mkdir -p "$dest"
  tar -C "$src" --exclude=./target --exclude='./target-*' --exclude=./dist --exclude=./.git \
    -cf - . | tar -C "$dest" -xf - || die "could not copy $src to $dest"
  echo "$dest"
}

# Sets CARGO_ENV (variables), CARGO_CMD (cargo or cargo-zigbuild), CARGO_FLAGS (--target,
# -Zbuild-std, the 32-bit libcontainer patch), CARGO_LOCK (--locked, or nothing for the patched
# build) and CARGO_SRC (where to run cargo) to build or test for target $1 from source tree $2
# (default: this repository) with Debian's rustc; cargo's runner is qemu.
cargo_setup() {
  local target=$1 src=${2:-$REPO_DIR}
  target_info "$target"
  local upper=${target//-/_}; upper=${upper^^}
  local lower=${target//-/_}
  [ -x "$DEB_CARGO" ] && [ -x "$DEB_RUSTC" ] || die "$DEB_CARGO / $DEB_RUSTC missing: run cross/setup.sh"
  CARGO_ENV=(RUSTC="$DEB_RUSTC" RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$CROSS_TARGET_DIR")
  if [ "$T_LIBC" = gnu ]; then
    # Static libseccomp: boards need nothing beyond their C library.
    local seccomp; seccomp=$(seccomp_dir "$target")
    [ -f "$seccomp/libseccomp.a" ] || die "no libseccomp.a for $target in $seccomp: run cross/setup.sh"
    CARGO_ENV+=(LIBSECCOMP_LIB_PATH="$seccomp" LIBSECCOMP_LINK_TYPE=static)
  fi
  CARGO_CMD=("$DEB_CARGO")
  CARGO_FLAGS=(--target "$target")
  CARGO_LOCK=(--locked) CARGO_SRC=$src
  if [ "$T_BITS" = 32 ]; then
    # The patched libcontainer is a path dependency, which rewrites its Cargo.lock entry: build
    # from a scratch copy of the tree so the committed lock stays untouched (-Zlockfile-path
    # would also redirect -Zbuild-std's own resolution of std's lock, and break std).
    local patched; patched=$(patched_libcontainer "$src")
    CARGO_SRC=$(scratch_source "$src")
    CARGO_FLAGS+=(--config "patch.crates-io.libcontainer.path=\"$patched\"")
    CARGO_LOCK=()
  fi
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
