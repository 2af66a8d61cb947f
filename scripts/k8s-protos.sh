#!/usr/bin/env bash
# Regenerates control/proto/k8s/descriptors.bin (and, given checkouts of the Go API modules,
# pointer-fields.txt) from the vendored Kubernetes protos. Needs protoc (and python3).
#
#   scripts/k8s-protos.sh                       # descriptors only
#   scripts/k8s-protos.sh /path/to/go-sources   # also pointer-fields.txt; the directory holds
#       api/ apimachinery/ apiextensions-apiserver/ kube-aggregator/ laid out like the protos
#       (k8s.io/api at tag v0.33.x -> api/, k8s.io/apimachinery -> apimachinery/, ...).
set -euo pipefail
dir="$(cd "$(dirname "$0")/../control/proto/k8s" && pwd)"
cd "$dir"
# shellcheck disable=SC2046
protoc -I. --include_imports -o descriptors.bin $(cat protos.list)
if [ $# -ge 1 ]; then
    python3 "$(dirname "$0")/k8s-pointer-fields.py" "$dir" "$1" > pointer-fields.txt
fi
