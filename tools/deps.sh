#!/usr/bin/env bash
# Install the Debian packages weft's build and test matrix need, when missing.
#   tools/deps.sh [--quiet] NATIVE... -- CROSS...
# Cross packages named pkg:arm64 need the arm64 architecture added to dpkg.
# Runs apt-get only when something is missing, so it is cheap to call from
# every target that needs the packages.
set -euo pipefail
quiet=0
if [ "${1:-}" = "--quiet" ]; then quiet=1; shift; fi
want=()
for p in "$@"; do [ "$p" = "--" ] || want+=("$p"); done
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    [ $quiet = 1 ] || echo "deps: all ${#want[@]} packages present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing ${missing[*]}; run 'make deps' as root" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
if printf '%s\n' "${missing[@]}" | grep -q ':arm64$'; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"
