#!/usr/bin/env bash
# An installed weft, used the way a user outside this tree would use it.
#   tools/check_install.sh BUILD_DIR
# Installs BUILD_DIR's library into a temporary prefix (make install), then
# builds examples/fibers.c out of the tree three ways and runs each:
# with pkg-config against the shared library, and with CMake's
# find_package(weft) against weft::weft and weft::weft_static. Last,
# make uninstall must leave the prefix empty. Run by `make check`
# (test/test_install_posix.c). Prints "check_install: ok" on success.
set -euo pipefail
build=${1:?usage: tools/check_install.sh BUILD_DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/weft-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

# The example runs 1,000 fibers and says so. Its whole output is read
# first: grep -q on a pipe could close it early and fail the writer
# (pipefail). The same for ldd below.
run_ok() {
    local out
    out=$("$1" 1000)
    grep -q "spawned 1000 fibers" <<<"$out" || { echo "check_install: $1 printed: $out"; exit 1; }
}

make -s -C "$top" install BUILD="$build" PREFIX="$prefix" DESTDIR= >/dev/null

# pkg-config, the shared library
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion weft)" = "$(sed -n 's/^#define WEFT_VERSION_STRING "\(.*\)"/\1/p' "$top/include/weft.h")" ]
cc -o "$tmp/fibers-pc" "$top/examples/fibers.c" $(pkg-config --cflags --libs weft) -Wl,-rpath,"$prefix/lib"
grep -q "$prefix/lib/libweft.so" <<<"$(ldd "$tmp/fibers-pc")"
run_ok "$tmp/fibers-pc"

# CMake, both targets
mkdir -p "$tmp/proj"
cp "$top/examples/fibers.c" "$tmp/proj/"   # it includes nothing of ours but weft.h
cat > "$tmp/proj/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(uses_weft C)
find_package(weft 0.1 REQUIRED)
add_executable(fibers_shared fibers.c)
target_link_libraries(fibers_shared weft::weft)
add_executable(fibers_static fibers.c)
target_link_libraries(fibers_static weft::weft_static)
CMAKE
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_RPATH="$prefix/lib" >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/proj/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
run_ok "$tmp/proj/build/fibers_shared"
run_ok "$tmp/proj/build/fibers_static"
if grep -q libweft <<<"$(ldd "$tmp/proj/build/fibers_static")"; then
    echo "check_install: weft::weft_static linked the shared library"; exit 1
fi

make -s -C "$top" uninstall BUILD="$build" PREFIX="$prefix" DESTDIR= >/dev/null
left=$(find "$prefix" -type f -o -type l)
[ -z "$left" ] || { echo "check_install: make uninstall left $left"; exit 1; }
echo "check_install: ok"
