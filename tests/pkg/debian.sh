#!/bin/sh
# SPDX-License-Identifier: MIT
# The Debian packaging agrees with the header, which defines the version
# and the API:
#   - debian/changelog's latest entry has idem.h's version as its upstream
#     version (the package's version is read from there, by Debian's rules);
#   - debian/libidem0.symbols lists exactly the functions of idem.h, so
#     that a function added to the header gets its line, with the version
#     that adds it, before a package is built (dpkg-gensymbols -c4 would
#     refuse it there, later and further from the change).
# Usage: sh debian.sh SOURCE_DIR
set -eu
src=${1:?usage: debian.sh SOURCE_DIR}
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rc=0

version=$(sed -n 's/^#define IDEM_VERSION_STRING "\(.*\)".*/\1/p' "$src/include/idem.h")
[ -n "$version" ] || { echo "no IDEM_VERSION_STRING in include/idem.h" >&2; exit 1; }
# "libidem (EPOCH:UPSTREAM-REVISION) DIST; urgency=U": the upstream part.
deb=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$src/debian/changelog")
upstream=${deb#*:}
upstream=${upstream%-*}
if [ "$upstream" != "$version" ]; then
  echo "debian/changelog: version $deb, but include/idem.h is $version;" >&2
  echo "  add an entry for $version (dch -v $version-1)" >&2
  rc=1
fi

sh "$here/api-functions.sh" "$src/include/idem.h" >"$tmp/api"
[ -s "$tmp/api" ] || { echo "no IDEM_EXPORT function found in idem.h" >&2; exit 1; }
sed -n 's/^ \(idem_[A-Za-z0-9_]*\)@.*/\1/p' "$src/debian/libidem0.symbols" |
  LC_ALL=C sort -u >"$tmp/symbols"
missing=$(LC_ALL=C comm -23 "$tmp/api" "$tmp/symbols")
extra=$(LC_ALL=C comm -13 "$tmp/api" "$tmp/symbols")
if [ -n "$missing" ]; then
  echo "functions of idem.h missing from debian/libidem0.symbols; add each as" >&2
  echo "  ' NAME@NODE VERSION', NODE its version node in lib/idem.map and" >&2
  echo "  VERSION the first release to have it:" >&2
  # shellcheck disable=SC2086 # split: one name a line
  printf '  %s\n' $missing >&2
  rc=1
fi
if [ -n "$extra" ]; then
  echo "debian/libidem0.symbols names functions idem.h does not declare" >&2
  echo "(removing one breaks the ABI: see docs/abi.md):" >&2
  # shellcheck disable=SC2086 # split: one name a line
  printf '  %s\n' $extra >&2
  rc=1
fi

[ "$rc" -eq 0 ] &&
  echo "ok: debian/ packages $version, symbols of $(wc -l <"$tmp/api") functions"
exit "$rc"
