#!/bin/sh
# Installs the Skerry agent from this bundle on a board and starts it:
#   sudo ./install.sh --server https://HOST:6443 --token TOKEN [--node-name NAME] [--no-start]
# Writes /etc/skerry/config.yaml (mode 0600), /usr/local/bin/skerry and the systemd unit.
# Running it again updates the binary and the config and restarts the agent.
set -eu

SERVER="" TOKEN="" NODE_NAME="" START=1
PREFIX="${SKERRY_PREFIX:-}"   # install below another root (image building, tests)
usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --server) SERVER="${2:?--server needs a URL}"; shift ;;
    --token) TOKEN="${2:?--token needs a value}"; shift ;;
    --node-name) NODE_NAME="${2:?--node-name needs a value}"; shift ;;
    --no-start) START=0 ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done
[ -n "$SERVER" ] || { echo "install.sh: --server is required" >&2; exit 2; }
[ -n "$TOKEN" ] || { echo "install.sh: --token is required" >&2; exit 2; }
case "$SERVER" in https://*) ;; *) echo "install.sh: --server must be an https:// URL" >&2; exit 2 ;; esac
if [ -z "$PREFIX" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo)" >&2; exit 1
fi
HERE="$(cd "$(dirname "$0")" && pwd)"

# Refuse a binary for another CPU before touching the system.
if [ -z "$PREFIX" ] && ! "$HERE/skerry" --version >/dev/null 2>&1; then
  echo "install.sh: this bundle's skerry does not run on $(uname -m): wrong bundle?" >&2; exit 1
fi

install -d -m 0755 "$PREFIX/usr/local/bin" "$PREFIX/etc/systemd/system" \
  "$PREFIX/usr/local/share/doc/skerry" "$PREFIX/var/lib/skerry"
install -d -m 0700 "$PREFIX/etc/skerry"
install -m 0755 "$HERE/skerry" "$PREFIX/usr/local/bin/skerry.new"
mv -f "$PREFIX/usr/local/bin/skerry.new" "$PREFIX/usr/local/bin/skerry"
install -m 0644 "$HERE/skerry-agent.service" "$PREFIX/etc/systemd/system/skerry-agent.service"
install -m 0644 "$HERE/README.txt" "$PREFIX/usr/local/share/doc/skerry/README.txt"
install -m 0755 "$HERE/uninstall.sh" "$PREFIX/usr/local/bin/skerry-uninstall.sh"

# YAML double-quoted scalars: escape backslashes and quotes.
yaml() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
umask 077
{
  echo "# Written by install.sh; edit and run: systemctl restart skerry-agent"
  # printf, not echo: dash's echo would turn the escaped backslashes back into escapes.
  printf 'server: %s\n' "$(yaml "$SERVER")"
  printf 'token: %s\n' "$(yaml "$TOKEN")"
  [ -z "$NODE_NAME" ] || printf 'node-name: %s\n' "$(yaml "$NODE_NAME")"
  echo "data-dir: /var/lib/skerry/agent"
} >"$PREFIX/etc/skerry/config.yaml.new"
mv -f "$PREFIX/etc/skerry/config.yaml.new" "$PREFIX/etc/skerry/config.yaml"

if [ -z "$PREFIX" ]; then
  "$PREFIX/usr/local/bin/skerry" check || echo "install.sh: skerry check found problems (above); the agent will not work until they are fixed" >&2
  if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload
    if [ "$START" = 1 ]; then
      systemctl enable skerry-agent.service
      systemctl restart skerry-agent.service
    fi
  fi
fi
echo "install.sh: installed the Skerry agent for $SERVER"
