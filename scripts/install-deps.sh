#!/usr/bin/env bash
# Installs everything Skerry's build and test suite need on Debian 12, by package name only.
# Idempotent: safe to run again; skips what is already present.
set -euo pipefail

APT_PACKAGES=(
  # build
  build-essential pkg-config protobuf-compiler libprotobuf-dev libseccomp-dev
  # store tests and benchmarks
  etcd-server etcd-client
  # runtime, images and network tests
  busybox-static nftables iproute2 dnsutils docker-registry apache2-utils openssl
  runc crun skopeo umoci
  # DNS tests and benchmarks (dnsmasq-base has no service; unbound's is stopped below)
  dnsmasq-base unbound dnsperf
  # python client tests
  python3 python3-pip
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian starts these services on install; the tests run their own instances on loopback ports.
for svc in etcd docker-registry unbound; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
    systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done

# The official Kubernetes Python client for the API tests.
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  python3 -m pip install -q 'kubernetes>=31' || python3 -m pip install -q --break-system-packages 'kubernetes>=31'
fi

# Debian's kubectl 1.20 (package kubernetes-client) for the OpenAPI v2 protobuf tests. Its
# /usr/bin/kubectl clashes with the Cloud SDK's kubectl package, so it is unpacked under /opt.
KUBECTL_120=/opt/kubernetes-client-1.20
if [ ! -x "$KUBECTL_120/usr/bin/kubectl" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q kubernetes-client) || { apt-get update -q && (cd "$tmp" && apt-get download -q kubernetes-client); }
  mkdir -p "$KUBECTL_120"
  dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$KUBECTL_120"
  rm -rf "$tmp"
fi

echo "install-deps: done"
