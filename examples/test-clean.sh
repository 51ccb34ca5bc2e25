#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs an example as the quick start runs the demo, with TMPDIR a new empty
# directory: it must succeed, write nothing to stderr and leave that
# directory as empty as it found it, so that the first command a user runs
# neither prints anything that looks like a failure nor leaves files in
# /tmp. Run by CTest (example_demo, example_worker_pool).
# Usage: sh test-clean.sh PROGRAM [ARG...]
set -u
prog=${1:?usage: test-clean.sh PROGRAM [ARG...]}

d=$(mktemp -d "${TMPDIR:-/tmp}/idem-example.XXXXXX") || exit 1
trap 'rm -rf "$d"' EXIT
mkdir "$d/tmp" || exit 1

TMPDIR=$d/tmp "$@" 2>"$d/err"
rc=$?
cat "$d/err" >&2

failed=0
if [ "$rc" -ne 0 ]; then
  echo "FAILED: $prog exited $rc" >&2
  failed=1
fi
if [ -s "$d/err" ]; then
  echo "FAILED: $prog wrote to stderr (above)" >&2
  failed=1
fi
left=$(cd "$d/tmp" && find . -mindepth 1 | sort)
if [ -n "$left" ]; then
  echo "FAILED: $prog left behind in its TMPDIR:" >&2
  printf '%s\n' "$left" | sed 's|^\./|  |' >&2
  failed=1
fi
exit "$failed"
