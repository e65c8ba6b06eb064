#!/usr/bin/env bash
# Install the Debian packages a make target needs, when they are missing.
#   tools/deps.sh [--quiet] PACKAGE...
# Each target of the Makefile names its own set (DEPS_CHECK, DEPS_BENCH, ...),
# so `make check` installs only the native build's packages and a matrix
# target brings its cross compiler, emulator or sanitizer runtime when it is
# run. Packages named pkg:arm64 need the arm64 architecture added to dpkg.
#
# As root, missing packages are installed with apt-get (the list is printed
# first). Otherwise one line names the command to run and the target goes on
# with what is there: whatever needs a missing package fails or says it
# skipped, and everything else still runs.
set -euo pipefail
quiet=0
if [ "${1:-}" = "--quiet" ]; then quiet=1; shift; fi
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    [ $quiet = 1 ] || echo "deps: all $# packages present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    arch=
    if printf '%s\n' "${missing[@]}" | grep -q ':arm64$'; then
        arch="dpkg --add-architecture arm64 && apt-get update && "
    fi
    echo "deps: missing ${missing[*]}; as root: ${arch}apt-get install ${missing[*]}" >&2
    exit 0
fi
echo "deps: installing ${missing[*]}"
if printf '%s\n' "${missing[@]}" | grep -q ':arm64$'; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"
