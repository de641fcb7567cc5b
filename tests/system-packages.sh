#!/bin/sh
# Are the system packages of system-packages.txt here? Run by `make test` (and so by
# .ci/run) before anything else.
#   all present:              nothing to say, exit 0
#   missing, root or sudo -n: one line saying so, `apt-get update` once, then
#                             `apt-get install -y --no-install-recommends ...`
#   missing, otherwise:       one message naming every missing package and the command
#                             that installs them, exit 2
# SYSTEM_PACKAGES_ASK=1 never installs (the message instead); SYSTEM_PACKAGES=FILE reads
# another list.
set -eu
list="${SYSTEM_PACKAGES:-$(dirname "$0")/../system-packages.txt}"
missing=""
while read -r package command _; do
    case "$package" in ''|\#*) continue ;; esac
    status=$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] && continue
    [ -n "$command" ] && command -v "$command" >/dev/null 2>&1 && continue
    missing="$missing $package"
done < "$list"
[ -z "$missing" ] && exit 0

count=$(echo $missing | wc -w)
if ! command -v apt-get >/dev/null 2>&1; then
    echo "make test: $count system packages the tests need are missing:$missing" >&2
    echo "  This machine has no apt-get: install their equivalents, then run make test again." >&2
    exit 2
fi
if [ -n "${SYSTEM_PACKAGES_ASK:-}" ]; then
    sudo="ask"
elif [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo"
else
    sudo="ask"
fi
if [ "$sudo" = ask ]; then
    echo "make test: $count system packages the tests need are missing:$missing" >&2
    echo "  Install them (as root), then run make test again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
    exit 2
fi
echo "make test: installing $count system packages the tests need (apt-get):$missing"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# shellcheck disable=SC2086
if ! { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends \
        $missing; } > "$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "make test: apt-get failed (its whole output: $log)" >&2
    exit 2
fi
rm -f "$log"
