#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the built tree into a temporary prefix, checks what was installed,
# then builds examples/minimal.c against the installed tree only, as a user
# would, both ways: with pkg-config (shared, and static through
# Requires.private/Libs.private) and with find_package(idem CONFIG) (the
# idem::idem and idem::idem_static targets). Each program must run the job
# once and replay it the second time.
# Usage: sh consumer.sh CMAKE CC BUILD_DIR SOURCE_DIR
set -eu
cmake=${1:?usage: consumer.sh CMAKE CC BUILD_DIR SOURCE_DIR}
cc=${2:?} build=${3:?} src=${4:?}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
example=$src/examples/minimal.c
fail() { echo "FAIL: $*" >&2; exit 1; }

major=$(sed -n 's/^#define IDEM_VERSION_MAJOR \([0-9]*\).*/\1/p' "$src/include/idem.h")
version=$(sed -n 's/^#define IDEM_VERSION_STRING "\(.*\)".*/\1/p' "$src/include/idem.h")

"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" ||
  { cat "$tmp/install.log" >&2; fail "cmake --install"; }

# --- What was installed -------------------------------------------------
pc=$(find "$prefix" -name idem.pc)
[ -n "$pc" ] || fail "no idem.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in include/idem.h bin/idem share/man/man1/idem.1 share/man/man3/libidem.3; do
  [ -f "$prefix/$f" ] || fail "not installed: $f"
done
for f in libidem.a libidem.so "libidem.so.$major" "libidem.so.$version" \
         cmake/idem/idemConfig.cmake cmake/idem/idemConfigVersion.cmake \
         cmake/idem/idemTargets.cmake; do
  [ -e "$libdir/$f" ] || fail "not installed: ${libdir#"$prefix"/}/$f"
done
soname=$(readelf -d "$libdir/libidem.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libidem.so.$major" ] || fail "SONAME is '$soname', not libidem.so.$major"
# Only the command may carry a search path: one in the library would be
# relative to the wrong directory, and would steer its users' lookups.
if readelf -d "$libdir/libidem.so.$version" | grep -E '\((RUNPATH|RPATH)\)'; then
  fail "the installed libidem.so.$version has a RUNPATH"
fi
# No path of the build tree may leak into what is installed.
if grep -rlF "$build" "$prefix/include" "$pc" "$libdir/cmake"; then
  fail "installed files name the build tree"
fi
# The installed tool finds the installed library by itself (RUNPATH).
"$prefix/bin/idem" --version | grep -qF "$version" || fail "installed idem --version"

# Runs one program built against the installed tree twice on one key.
check_run() { # program
  db=$tmp/$(basename "$1").db
  "$1" "$db" order-42 >"$tmp/out1" || fail "$1: first run"
  "$1" "$db" order-42 >"$tmp/out2" || fail "$1: second run"
  grep -q '^ran the job' "$tmp/out1" || fail "$1: first run did not run the job"
  grep -q '^already done' "$tmp/out2" || fail "$1: second run was not a replay"
  echo "ok: $(basename "$1") runs once, then replays"
}

# --- pkg-config ---------------------------------------------------------
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --modversion idem)" = "$version" ] || fail "pkg-config --modversion"
pkg-config --print-requires-private idem | grep -qw sqlite3 || fail "Requires.private"
# shellcheck disable=SC2046 # the flags are meant to be split
"$cc" -std=c11 -Wall -Werror -o "$tmp/pc_shared" "$example" \
  $(pkg-config --cflags --libs idem) -Wl,-rpath,"$libdir"
readelf -d "$tmp/pc_shared" | grep -q "NEEDED.*\[libidem.so.$major\]" ||
  fail "pc_shared does not need libidem.so.$major"
check_run "$tmp/pc_shared"

# Static: libidem.a by name, everything it needs from --static.
static_libs=$(pkg-config --static --libs idem |
  sed 's/-lidem\b/-Wl,-Bstatic -lidem -Wl,-Bdynamic/')
# shellcheck disable=SC2046,SC2086
"$cc" -std=c11 -Wall -Werror -o "$tmp/pc_static" "$example" \
  $(pkg-config --cflags idem) $static_libs
if readelf -d "$tmp/pc_static" | grep -q 'NEEDED.*libidem'; then
  fail "pc_static is linked against the shared library"
fi
check_run "$tmp/pc_static"

# --- find_package -------------------------------------------------------
"$cmake" -S "$here/consumer" -B "$tmp/cm" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_PREFIX_PATH="$prefix" -DIDEM_EXAMPLE="$example" \
  -DIDEM_WANT="$major.0" >"$tmp/cm.log" 2>&1 ||
  { cat "$tmp/cm.log" >&2; fail "find_package(idem $major.0 CONFIG)"; }
grep -F "found idem $version in $libdir/cmake/idem" "$tmp/cm.log" ||
  fail "find_package did not take the installed package"
"$cmake" --build "$tmp/cm" >"$tmp/cmb.log" 2>&1 ||
  { cat "$tmp/cmb.log" >&2; fail "building against idem::idem"; }
check_run "$tmp/cm/with_shared"
check_run "$tmp/cm/with_static"

# SameMajorVersion: the next major version is refused.
next=$((major + 1))
if "$cmake" -S "$here/consumer" -B "$tmp/cm_next" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_PREFIX_PATH="$prefix" -DIDEM_EXAMPLE="$example" \
  -DIDEM_WANT="$next.0" >"$tmp/cm_next.log" 2>&1; then
  fail "find_package(idem $next.0) accepted version $version"
fi
echo "ok: find_package(idem $next.0) refuses $version"
