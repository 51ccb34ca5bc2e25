#!/bin/sh
# SPDX-License-Identifier: MIT
# Quick start: installs what the build needs (on Debian, with apt-get, only
# what is missing), builds libidem into build/ and runs the demo.
# Running it again installs nothing and rebuilds only what changed.
# Usage: sh examples/demo.sh     (from anywhere; as root to install)
set -eu

cd "$(dirname "$0")/.."

# make and libc6-dev are only recommended by cmake and gcc, so a system that
# skips recommends would lack them: name them too. .ci/deps installs only
# what is missing, with apt-get.
if command -v dpkg >/dev/null 2>&1; then
  bash .ci/deps cmake make gcc libc6-dev libsqlite3-dev uuid-dev pkg-config
else
  echo "== Not a Debian system: make sure cmake, gcc, SQLite 3 and libuuid" \
    "development files are installed"
fi

# The test suites need cmocka, which the demo does not: leave them out of a
# fresh build. A build/ that exists already keeps its own settings.
echo "== Building into build/"
if [ -f build/CMakeCache.txt ]; then
  cmake -S . -B build --log-level=WARNING
else
  cmake -S . -B build --log-level=WARNING -DCMAKE_BUILD_TYPE=Release \
    -DIDEM_TESTS=OFF
fi
cmake --build build --parallel "$(nproc 2>/dev/null || echo 2)"

echo "== Running build/examples/demo"
echo
build/examples/demo

# --- The idem command-line tool -----------------------------------------
# Shown only once the build has produced it (cli/).
if [ -x build/cli/idem ]; then
  idem=$PWD/build/cli/idem
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/idem-demo-cli.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  IDEM_DB=$tmp/cli.db
  export IDEM_DB
  job="sleep 0.3; date +%s%N"

  echo
  echo "== The same from the shell, with build/cli/idem (IDEM_DB=$IDEM_DB)"
  echo "\$ for i in 1 2 3 4 5 6 7 8; do"
  echo ">   idem run --wait=10 demo-key -- sh -c '$job' &"
  echo "> done; wait"
  pids=""
  for i in 1 2 3 4 5 6 7 8; do
    "$idem" run --wait=10 demo-key -- sh -c "$job" >"$tmp/out.$i" &
    pids="$pids $!"
  done
  failed=0
  for p in $pids; do
    wait "$p" || failed=$((failed + 1))
  done
  cat "$tmp"/out.*
  echo "\$ idem run demo-key -- sh -c '$job'    # again: replayed, not run"
  "$idem" run demo-key -- sh -c "$job" >"$tmp/out.replay" ||
    failed=$((failed + 1))
  cat "$tmp/out.replay"

  distinct=$(sort -u "$tmp"/out.* | wc -l)
  if [ "$failed" -ne 0 ] || [ "$distinct" -ne 1 ]; then
    echo "demo.sh: expected 9 identical lines from 9 successful runs" >&2
    exit 1
  fi
  echo "9 runs, one execution: the same line every time."
fi
