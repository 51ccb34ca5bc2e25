#!/bin/sh
# SPDX-License-Identifier: MIT
# The shared library exports exactly the functions of idem.h: nothing less
# (a user's program would fail to link or load) and nothing more (every
# extra dynamic symbol is ABI that nobody decided to promise). The static
# library's global symbols all carry the idem_ prefix, so that it cannot
# clash with a user's own names when linked in.
# Usage: sh symbols.sh NM LIBIDEM_SO LIBIDEM_A IDEM_H
set -eu
nm=${1:?usage: symbols.sh NM LIBIDEM_SO LIBIDEM_A IDEM_H}
so=${2:?} a=${3:?} header=${4:?}
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sh "$here/api-functions.sh" "$header" >"$tmp/api"
[ -s "$tmp/api" ] || { echo "no IDEM_EXPORT function found in $header" >&2; exit 1; }

# Defined dynamic symbols, version suffix (@@IDEM_0) cut; the version nodes
# themselves are absolute symbols (type A) and are not code or data.
"$nm" -D --defined-only "$so" | awk '$2 != "A" { print $3 }' |
  sed 's/@.*//' | LC_ALL=C sort -u >"$tmp/exported"

rc=0
extra=$(LC_ALL=C comm -13 "$tmp/api" "$tmp/exported")
missing=$(LC_ALL=C comm -23 "$tmp/api" "$tmp/exported")
if [ -n "$extra" ]; then
  echo "exported but not declared with IDEM_EXPORT in idem.h:" >&2
  printf '  %s\n' $extra >&2
  rc=1
fi
if [ -n "$missing" ]; then
  echo "declared in idem.h but not exported:" >&2
  printf '  %s\n' $missing >&2
  rc=1
fi

# Every exported symbol carries a version node of the version script.
unversioned=$("$nm" -D --defined-only "$so" | awk '$2 != "A" && $3 !~ /@/ { print $3 }')
if [ -n "$unversioned" ]; then
  echo "exported without a symbol version (lib/idem.map):" >&2
  printf '  %s\n' $unversioned >&2
  rc=1
fi

stray=$("$nm" -g --defined-only "$a" | awk 'NF == 3 { print $3 }' | grep -v '^idem_' || true)
if [ -n "$stray" ]; then
  echo "global symbols of the static library without the idem_ prefix:" >&2
  printf '  %s\n' $stray >&2
  rc=1
fi

[ "$rc" -eq 0 ] && echo "ok: $(wc -l <"$tmp/api") functions exported, nothing else"
exit "$rc"
