#!/bin/sh
# SPDX-License-Identifier: MIT
# mandoc's linter on the manual: every message fails the test except those
# that depend on this machine rather than on the page, namely whether the
# manuals it refers to (flock(1), ...) are installed and indexed here.
# Usage: sh man_lint.sh MANDOC PAGE
mandoc=${1:?usage: man_lint.sh MANDOC PAGE}
page=${2:?usage: man_lint.sh MANDOC PAGE}

out=$("$mandoc" -T lint "$page" 2>&1)
rc=$?
left=$(printf '%s\n' "$out" |
  grep -v -e 'referenced manual not found' -e 'mandoc\.db' | grep .)
if [ -n "$left" ] || [ "$rc" -gt 1 ]; then
  printf '%s\n' "$out" >&2
  exit 1
fi
echo "ok: $page is lint-clean"
