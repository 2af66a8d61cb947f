#!/usr/bin/env bash
# Installs what cross/build.sh and cross/test.sh need on Debian 12, by package name only
# (apt, pip). Idempotent: run it again and it only reports that everything is there.
#
#   cross/setup.sh          glibc targets (aarch64, armv7, x86_64) and the qemu tests
#   cross/setup.sh --musl   also the static musl targets (zig + cargo-zigbuild from PyPI)
#
# It never adds a foreign dpkg architecture (that broke `apt-get update` here): the arm64/armhf
# libseccomp packages are fetched with a private apt state under $SKERRY_CROSS_CACHE and only
# unpacked there; the system's apt lists and dpkg database are not touched.
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "$0")/lib.sh"

WANT_MUSL=0
for arg in "$@"; do
  case "$arg" in
    --musl) WANT_MUSL=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument $arg" ;;
  esac
done

APT_PACKAGES=(
  # Debian's Rust 1.96 with the std sources for -Zbuild-std (installs /usr/bin/rustc, cargo)
  rustc-web cargo-web rust-web-src
  # C cross compilers and target glibc: linkers, and CC for ring and the bundled SQLite
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
  # host side of the build: protoc for the etcd gRPC code, libseccomp for the x86_64 build
  build-essential protobuf-compiler libseccomp-dev
  # the tests: emulators, etcdctl for the store round trip, python3 to read the JSON
  qemu-user-static etcd-client python3 binutils
)
[ "$WANT_MUSL" = 0 ] || APT_PACKAGES+=(python3-pip)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
"$DEB_RUSTC" --version >/dev/null || die "$DEB_RUSTC does not run"
[ -d /usr/lib/rustlib/src/rust/library ] || die "rust-web-src did not install the std sources"

# libseccomp for each foreign Debian architecture: libcontainer's seccomp support links it, and
# the builds link the static libseccomp.a so boards need nothing beyond their C library.
fetch_seccomp() {
  local debarch=$1 multiarch=$2
  local dest="$CROSS_CACHE/sysroot/$debarch"
  if [ -f "$dest/usr/lib/$multiarch/libseccomp.a" ]; then
    return 0
  fi
  local state="$CROSS_CACHE/apt" debs="$CROSS_CACHE/debs/$debarch"
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$debs" "$dest"
  local opts=(-o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
    -o "APT::Architecture=$debarch" -o "APT::Architectures::=$debarch"
    -o "APT::Sandbox::User=root" -q)
  say "fetching libseccomp for $debarch (private apt state in $state)"
  # A stale foreign index (armhf in bookworm-security has been one) fails the update as a whole
  # while the main index is fine: the download below is the real test.
  apt-get "${opts[@]}" update >"$state/update-$debarch.log" 2>&1 ||
    say "apt-get update for $debarch reported errors (see $state/update-$debarch.log); trying the download anyway"
  (cd "$debs" && apt-get "${opts[@]}" download "libseccomp-dev:$debarch" "libseccomp2:$debarch") ||
    die "could not download libseccomp-dev:$debarch"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$dest"; done
  [ -f "$dest/usr/lib/$multiarch/libseccomp.a" ] || die "no libseccomp.a in libseccomp-dev:$debarch"
}
fetch_seccomp arm64 aarch64-linux-gnu
fetch_seccomp armhf arm-linux-gnueabihf

# The static musl targets: zig as C compiler and linker, through cargo-zigbuild.
if [ "$WANT_MUSL" = 1 ]; then
  pip_install() {
    python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
  }
  python3 -m ziglang version >/dev/null 2>&1 || pip_install ziglang
  command -v cargo-zigbuild >/dev/null 2>&1 || pip_install cargo-zigbuild
  cargo-zigbuild --version >/dev/null || die "cargo-zigbuild is not on PATH"
fi

say "setup done: $("$DEB_RUSTC" --version); libseccomp in $CROSS_CACHE/sysroot"
