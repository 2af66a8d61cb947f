#!/usr/bin/env bash
# The agent's footprint at idle under emulation (issue 10, "Footprint"), measured like issue 9's:
# a `skerry server --disable-agent` (a binary of the build machine) and, per target, the
# agent-only binary from dist/ running `skerry agent` under qemu-<arch>-static, joined to the
# server with its node token; both in a network namespace of their own, no pods. After
# SKERRY_FOOTPRINT_SETTLE seconds (default 30) it prints the agent process's VmRSS (qemu's
# translator and code cache included: that is what a board would *not* pay) and its CPU ticks
# over the next SKERRY_FOOTPRINT_CPU seconds (default 30), then stops the agent and runs
# `skerry agent --cleanup` with the same binary. Needs root: the agent sets up the pod network in
# the namespace and a cgroup root of its own (skerry-footprint-TARGET), removed afterwards.
#
#   cross/footprint.sh [--server-bin PATH] [TARGET|GROUP...]
# Server binary default: dist/skerry-x86_64-unknown-linux-gnu, else target/debug/skerry.
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "$0")/lib.sh"

SERVER_BIN=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --server-bin) SERVER_BIN=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) args+=("$1") ;;
  esac
  shift
done
if [ ${#args[@]} -eq 0 ]; then
  for t in "${ALL_TARGETS[@]}"; do [ -f "$(dist_agent "$t")" ] && args+=("$t"); done
  [ ${#args[@]} -gt 0 ] || die "no agent binaries in $DIST_DIR: run cross/build.sh first"
fi
expand_targets "${args[@]}"
if [ -z "$SERVER_BIN" ]; then
  SERVER_BIN="$(dist_full x86_64-unknown-linux-gnu)"
  [ -x "$SERVER_BIN" ] || SERVER_BIN="$REPO_DIR/target/debug/skerry"
fi
[ -x "$SERVER_BIN" ] || die "no server binary $SERVER_BIN (--server-bin)"
[ "$(id -u)" = 0 ] || die "needs root (network namespace, cgroups)"
SETTLE=${SKERRY_FOOTPRINT_SETTLE:-30} CPU_WINDOW=${SKERRY_FOOTPRINT_CPU:-30}

WORK=$(mktemp -d) NETNS="skerry-fp-$$" NODE_IP=192.168.231.1 PORT=16443
SERVER_PID="" AGENT_PID=""
N=(nsenter "--net=/run/netns/$NETNS")
cleanup() {
  for pid in $AGENT_PID $SERVER_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $AGENT_PID $SERVER_PID; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$NETNS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The namespace: loopback for the server, a veth uplink with the node address and a default
# route (the agent's pod network wants one), as the test nodes have (testkit enter_test_netns).
ip netns add "$NETNS"
for a in "link set lo up" "link add uplink type veth peer name uplink-peer" \
  "addr add $NODE_IP/24 dev uplink" "link set uplink-peer up" "link set uplink up" \
  "route add default dev uplink"; do
  # shellcheck disable=SC2086
  "${N[@]}" ip $a
done

# The server; the copy keeps it stable while the shared target dir is rebuilt.
install -m 0755 "$SERVER_BIN" "$WORK/server-skerry"
"${N[@]}" "$WORK/server-skerry" server --disable-agent --bind-address 127.0.0.1 \
  --https-listen-port "$PORT" --data-dir "$WORK/server" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 240); do
  [ -s "$WORK/server/server/node-token" ] && grep -q 'skerry server ready' "$WORK/server.log" && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "server exited: $(tail -c 800 "$WORK/server.log")"
  sleep 0.5
done
TOKEN=$(cat "$WORK/server/server/node-token") || die "no node token: $(tail -c 800 "$WORK/server.log")"
KUBECONFIG_ADMIN="$WORK/server/admin.kubeconfig"
: >"$WORK/empty.yaml"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ready() {
  "${N[@]}" kubectl --kubeconfig "$KUBECONFIG_ADMIN" get node "$1" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true
}

printf '| target | agent RSS at idle (qemu included) | CPU ticks in %s s | Node Ready |\n|---|---|---|---|\n' \
  "$CPU_WINDOW"
for target in "${TARGETS[@]}"; do
  bin=$(dist_agent "$target")
  [ -f "$bin" ] || { echo "| $target | no $bin | | |"; continue; }
  runner_cmd "$target"
  arch=${target%%-*} node="fp-${arch//_/-}-$T_LIBC" cgroup_root="skerry-footprint-$target" log="$WORK/agent-$target.log"
  agent_args=(--node-name "$node" --node-ip "$NODE_IP" --data-dir "$WORK/agent-$target"
    --config "$WORK/empty.yaml")
  SKERRY_CGROUP_ROOT="$cgroup_root" "${N[@]}" "${RUNNER[@]+"${RUNNER[@]}"}" "$bin" agent \
    --server "https://127.0.0.1:$PORT" --token "$TOKEN" "${agent_args[@]}" >"$log" 2>&1 &
  AGENT_PID=$!
  sleep "$SETTLE"
  if kill -0 "$AGENT_PID" 2>/dev/null; then
    rss=$(awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$AGENT_PID/status")
    t0=$(ticks "$AGENT_PID"); sleep "$CPU_WINDOW"; t1=$(ticks "$AGENT_PID")
    echo "| $target | $rss | $((t1 - t0)) | $(ready "$node") |"
  else
    echo "| $target | exited: $(sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -c 300 | tr '\n|' ' /') | | |"
  fi
  kill "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
  AGENT_PID=""
  SKERRY_CGROUP_ROOT="$cgroup_root" "${N[@]}" "${RUNNER[@]+"${RUNNER[@]}"}" "$bin" agent --cleanup \
    "${agent_args[@]}" --kubeconfig "$WORK/agent-$target/kubeconfig" >>"$log" 2>&1 ||
    say "$target: agent --cleanup failed: $(tail -c 300 "$log")"
  for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
    for sub in burstable besteffort ""; do rmdir "$h/$cgroup_root/$sub" 2>/dev/null || true; done
  done
  [ -z "${SKERRY_FOOTPRINT_KEEP_LOGS:-}" ] || cp "$log" "$SKERRY_FOOTPRINT_KEEP_LOGS/"
done
