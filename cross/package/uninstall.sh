#!/bin/sh
# Removes the Skerry agent installed by install.sh: stops and disables the unit, removes the
# binary, unit and config. Pods' data in /var/lib/skerry stays unless --purge is given.
#   sudo ./uninstall.sh [--purge]
set -eu
PREFIX="${SKERRY_PREFIX:-}" PURGE=0
for arg in "$@"; do
  case "$arg" in
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ -z "$PREFIX" ] && [ "$(id -u)" != 0 ]; then
  echo "uninstall.sh: run as root (sudo)" >&2; exit 1
fi
if [ -z "$PREFIX" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now skerry-agent.service 2>/dev/null || true
fi
rm -f "$PREFIX/etc/systemd/system/skerry-agent.service" "$PREFIX/usr/local/bin/skerry" \
  "$PREFIX/usr/local/bin/skerry-uninstall.sh"
rm -rf "$PREFIX/etc/skerry" "$PREFIX/usr/local/share/doc/skerry"
[ "$PURGE" = 0 ] || rm -rf "$PREFIX/var/lib/skerry"
if [ -z "$PREFIX" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
fi
if [ "$PURGE" = 1 ]; then
  echo "uninstall.sh: removed the Skerry agent and /var/lib/skerry"
else
  echo "uninstall.sh: removed the Skerry agent (data kept in /var/lib/skerry)"
fi
