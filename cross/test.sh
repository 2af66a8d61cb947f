#!/usr/bin/env bash
# Runs the binaries in dist/ the way a board would, under qemu-user (no binfmt needed: qemu is
# called explicitly), and checks real behaviour:
#   - agent-only binary: `skerry check --json` runs, reports the emulated CPU and the binary's
#     arch/libc, seccomp support (musl builds: none, said as a warning), and its exit code
#     follows its verdict; the table prints; the release bundle's
#     install.sh/uninstall.sh work below a scratch root.
#   - full binary: `skerry etcd` serves on a loopback port; Debian's etcdctl writes a key, reads
#     it back, and reads it again after a restart (the SQLite file persisted it).
#   - --crate-tests: the crate test suites that need no root, built for the target and run
#     under cargo's qemu runner (crates: $SKERRY_CROSS_TEST_CRATES, default skerry-agent).
#
#   cross/test.sh [--agent-only|--full-only] [--crate-tests|--crates-only] [TARGET|GROUP...]
# Without targets: every target with a binary in dist/.
set -euo pipefail
# shellcheck source=cross/lib.sh
source "$(dirname "$0")/lib.sh"

TEST_AGENT=1 TEST_FULL=1 CRATE_TESTS=0
args=()
for arg in "$@"; do
  case "$arg" in
    --agent-only) TEST_FULL=0 ;;
    --full-only) TEST_AGENT=0 ;;
    --crate-tests) CRATE_TESTS=1 ;;
    --crates-only) CRATE_TESTS=1 TEST_AGENT=0 TEST_FULL=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option $arg" ;;
    *) args+=("$arg") ;;
  esac
done
if [ ${#args[@]} -eq 0 ]; then
  for t in "${ALL_TARGETS[@]}"; do
    if [ -f "$(dist_agent "$t")" ] || [ -f "$(dist_full "$t")" ]; then args+=("$t"); fi
  done
  [ ${#args[@]} -gt 0 ] || die "nothing in $DIST_DIR: run cross/build.sh first"
fi
expand_targets "${args[@]}"

SCRATCH=$(mktemp -d)
ETCD_PID=""
cleanup() {
  if [ -n "$ETCD_PID" ]; then kill "$ETCD_PID" 2>/dev/null || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }

# `skerry check --json` under qemu: valid JSON, the right CPU, exit code = verdict.
test_check() {
  local target=$1 bin=$2
  runner_cmd "$target"
  local json="$SCRATCH/check-$target.json" rc=0
  "${RUNNER[@]}" "$bin" check --json >"$json" 2>"$SCRATCH/check-$target.err" || rc=$?
  if python3 - "$json" "$rc" "$T_RUST_ARCH" "$T_UNAME" "$T_LIBC" <<'PY'
import json, sys
path, rc, arch, machine, libc = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
r = json.load(open(path))
problems = []
for key in ("ok", "arch", "kernel", "cgroup", "clock", "checks"):
    if key not in r:
        problems.append(f"no {key!r}")
if r["arch"]["binary"] != arch: problems.append(f"arch.binary {r['arch']['binary']} != {arch}")
if r["arch"]["machine"] != machine: problems.append(f"arch.machine {r['arch']['machine']} != {machine}")
if r["arch"]["libc"] != libc: problems.append(f"arch.libc {r['arch']['libc']} != {libc}")
if len(r["checks"]) < 20: problems.append(f"only {len(r['checks'])} checks")
if (rc == 0) != r["ok"]: problems.append(f"exit code {rc} but ok={r['ok']}")
# The musl builds have no libseccomp (no `seccomp` feature) and must say so; the glibc ones apply
# profiles (this kernel has seccomp).
sec = next((c for c in r["checks"] if c["name"] == "seccomp"), None)
if sec is None: problems.append("no seccomp check")
elif libc == "musl" and not (sec["status"] == "warn" and "no seccomp support" in sec["detail"]):
    problems.append(f"musl build without the seccomp warning: {sec}")
elif libc == "gnu" and sec["status"] != "ok": problems.append(f"glibc build: {sec}")
if not r["ok"]:
    bad = [c["name"] for c in r["checks"] if c["required"] and c["status"] == "fail"]
    problems.append(f"required checks failed on the build machine: {bad}")
print("; ".join(problems) or f"{r['arch']['binary']}-{r['arch']['libc']} on {r['arch']['machine']}, "
      f"cgroup {r['cgroup']['mode']}, {len(r['checks'])} checks ok")
sys.exit(1 if problems else 0)
PY
  then pass "$target: skerry check --json"; else fail "$target: skerry check --json (stderr: $(tail -c 300 "$SCRATCH/check-$target.err"))"; fi
  if "${RUNNER[@]}" "$bin" check 2>&1 | grep -q 'This node can run the Skerry agent.'; then
    pass "$target: skerry check (table)"
  else
    fail "$target: skerry check (table)"
  fi
}

# The bundle's install.sh and uninstall.sh below a scratch root (SKERRY_PREFIX).
test_bundle() {
  local target=$1 tarball="$DIST_DIR/skerry-agent-$1.tar.gz"
  [ -f "$tarball" ] || { fail "$target: no bundle $tarball"; return; }
  local dir="$SCRATCH/bundle-$target" root="$SCRATCH/root-$target"
  mkdir -p "$dir" "$root"
  tar -xzf "$tarball" -C "$dir"
  local b="$dir/skerry-agent-$target"
  if SKERRY_PREFIX="$root" "$b/install.sh" --server https://10.0.0.1:6443 --token 'K10"x\y' >/dev/null &&
    [ -x "$root/usr/local/bin/skerry" ] &&
    grep -q '^server: "https://10.0.0.1:6443"$' "$root/etc/skerry/config.yaml" &&
    grep -qF 'token: "K10\"x\\y"' "$root/etc/skerry/config.yaml" &&
    [ "$(stat -c %a "$root/etc/skerry/config.yaml")" = 600 ] &&
    grep -q '^KillMode=process$' "$root/etc/systemd/system/skerry-agent.service" &&
    grep -q '^Restart=always$' "$root/etc/systemd/system/skerry-agent.service" &&
    ! SKERRY_PREFIX="$root" "$b/install.sh" --token x >/dev/null 2>&1 &&
    SKERRY_PREFIX="$root" "$b/uninstall.sh" >/dev/null &&
    [ ! -e "$root/usr/local/bin/skerry" ] && [ ! -e "$root/etc/skerry" ] &&
    [ ! -e "$root/etc/systemd/system/skerry-agent.service" ]; then
    pass "$target: bundle install.sh/uninstall.sh"
  else
    fail "$target: bundle install.sh/uninstall.sh"
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts `skerry etcd` under qemu on $2's data dir and waits until etcdctl sees it healthy.
start_etcd() {
  local bin=$1 data=$2 port=$3 log=$4
  "${RUNNER[@]}" "$bin" etcd --data-dir "$data" --listen-client-urls "http://127.0.0.1:$port" \
    >>"$log" 2>&1 &
  ETCD_PID=$!
  for _ in $(seq 1 120); do
    if ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$port" --dial-timeout=1s \
      endpoint health >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$ETCD_PID" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

stop_etcd() {
  [ -n "$ETCD_PID" ] || return 0
  kill -TERM "$ETCD_PID" 2>/dev/null || true
  wait "$ETCD_PID" 2>/dev/null || true
  ETCD_PID=""
}

# A store round trip with etcdctl against `skerry etcd` under qemu, across a restart.
test_store() {
  local target=$1 bin=$2
  command -v etcdctl >/dev/null || { fail "$target: etcdctl missing (cross/setup.sh)"; return; }
  runner_cmd "$target"
  local data="$SCRATCH/etcd-$target" log="$SCRATCH/etcd-$target.log" port
  port=$(free_port)
  local ctl=(env ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$port")
  local value="written on $target at $(date +%s)"
  if ! start_etcd "$bin" "$data" "$port" "$log"; then
    fail "$target: skerry etcd did not become healthy: $(tail -c 500 "$log")"; stop_etcd; return
  fi
  local rss; rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$ETCD_PID/status" 2>/dev/null || echo "?")
  if "${ctl[@]}" put /skerry/cross "$value" >/dev/null &&
    [ "$("${ctl[@]}" get /skerry/cross --print-value-only)" = "$value" ]; then
    pass "$target: etcdctl put/get against skerry etcd (process RSS ${rss} KiB, qemu included)"
  else
    fail "$target: etcdctl put/get: $(tail -c 500 "$log")"
  fi
  stop_etcd
  if start_etcd "$bin" "$data" "$port" "$log" &&
    [ "$("${ctl[@]}" get /skerry/cross --print-value-only)" = "$value" ]; then
    pass "$target: value survives a skerry etcd restart"
  else
    fail "$target: value lost across restart: $(tail -c 500 "$log")"
  fi
  stop_etcd
}

# The crate test suites under cargo's qemu runner.
test_crates() {
  local target=$1
  cargo_setup "$target"
  local crates=() c features=()
  for c in ${SKERRY_CROSS_TEST_CRATES:-skerry-agent}; do crates+=(-p "$c"); done
  # No libseccomp for musl (see feature_args): test the crates without their default features.
  [ "$T_LIBC" = gnu ] || features=(--no-default-features)
  if (cd "$CARGO_SRC" && env "${CARGO_ENV[@]}" "${CARGO_CMD[@]}" test \
    "${CARGO_LOCK[@]+"${CARGO_LOCK[@]}"}" "${CARGO_FLAGS[@]}" "${features[@]+"${features[@]}"}" \
    --lib --bins --tests "${crates[@]}" >"$SCRATCH/crates-$target.log" 2>&1); then
    pass "$target: cargo test ${crates[*]} under ${RUNNER[*]:-native} ($(grep -h '^test result:' "$SCRATCH/crates-$target.log" | awk '{ n += $4 } END { print n }') tests)"
  else
    fail "$target: cargo test ${crates[*]}"; tail -n 40 "$SCRATCH/crates-$target.log"
  fi
}

for target in "${TARGETS[@]}"; do
  target_info "$target"
  runner_cmd "$target"
  if [ ${#RUNNER[@]} -gt 0 ] && ! command -v "${RUNNER[0]}" >/dev/null; then
    fail "$target: ${RUNNER[0]} missing (cross/setup.sh)"; continue
  fi
  if [ "$TEST_AGENT" = 1 ]; then
    if [ -f "$(dist_agent "$target")" ]; then
      test_check "$target" "$(dist_agent "$target")"
      test_bundle "$target"
    else
      fail "$target: no agent binary $(dist_agent "$target") (cross/build.sh $target)"
    fi
  fi
  if [ "$TEST_FULL" = 1 ]; then
    if [ -f "$(dist_full "$target")" ]; then
      test_store "$target" "$(dist_full "$target")"
    else
      fail "$target: no full binary $(dist_full "$target") (cross/build.sh $target)"
    fi
  fi
  [ "$CRATE_TESTS" = 0 ] || test_crates "$target"
done

echo "cross: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
