#!/bin/sh
# SPDX-License-Identifier: MIT
# libidem(3) stays lint-clean for mandoc and cannot fall behind the header:
# every public function and every IDEM_E* error code of idem.h must be
# mentioned in it. Lint messages that depend on this machine rather than on
# the page (whether the manuals it refers to are installed and indexed here)
# are not failures.
# Usage: sh man.sh MANDOC PAGE IDEM_H
set -eu
mandoc=${1:?usage: man.sh MANDOC PAGE IDEM_H}
page=${2:?} header=${3:?}
here=$(dirname "$0")
rc=0

lint=$("$mandoc" -T lint "$page" 2>&1) || true
left=$(printf '%s\n' "$lint" |
  grep -v -e 'referenced manual not found' -e 'mandoc\.db' | grep . || true)
if [ -n "$left" ]; then
  printf 'mandoc -T lint %s:\n%s\n' "$page" "$left" >&2
  rc=1
fi

# Error codes: the IDEM_E* macros defined as negative numbers.
codes=$(perl -0777 -ne '
  s{/\*.*?\*/}{}gs;
  print "$1\n" while /#define\s+(IDEM_E[A-Z0-9_]+)\s*(?:\\\s*)?\(\s*-\d+\s*\)/g;
' "$header")
[ -n "$codes" ] || { echo "no IDEM_E* code found in $header" >&2; exit 1; }
funcs=$(sh "$here/api-functions.sh" "$header")

for name in $funcs $codes; do
  grep -qw -- "$name" "$page" || { echo "not in $page: $name" >&2; rc=1; }
done
[ "$rc" -eq 0 ] &&
  echo "ok: $page is lint-clean and names $(echo $funcs | wc -w) functions, $(echo $codes | wc -w) codes"
exit "$rc"
