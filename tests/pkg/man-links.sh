#!/bin/sh
# SPDX-License-Identifier: MIT
# `man 3 FUNCTION` finds a page for every public function of idem.h, as
# installed: installs the built tree into a temporary prefix and checks that
#   - every function of the header has a page in man3, either its own
#     (naming it) or a `.so` link to a page that is installed;
#   - every page in man3 but libidem.3 is named after a function of the
#     header (none is left over from a function that is gone);
#   - the SYNOPSIS of libidem(3) declares exactly the header's functions;
#   - man(1), when there is one, shows libidem(3) for `man 3 idem_begin`.
# Usage: sh man-links.sh CMAKE BUILD_DIR SOURCE_DIR
set -eu
cmake=${1:?usage: man-links.sh CMAKE BUILD_DIR SOURCE_DIR}
build=${2:?} src=${3:?}
here=$(dirname "$0")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/idem-pkg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
rc=0
bad() { echo "FAIL: $*" >&2; rc=1; }

"$cmake" --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" ||
  { cat "$tmp/install.log" >&2; fail "cmake --install"; }
page=$(find "$tmp/prefix" -path '*/man3/libidem.3')
[ -n "$page" ] || fail "libidem.3 is not installed"
man3=$(dirname "$page")
mandir=$(dirname "$man3")
funcs=$(sh "$here/api-functions.sh" "$src/include/idem.h")
[ -n "$funcs" ] || fail "no function found in idem.h"

for f in $funcs; do
  p=$man3/$f.3
  if [ ! -f "$p" ]; then
    bad "no page for $f: man3/$f.3 is not installed"
    continue
  fi
  target=$(sed -n '1s/^\.so[[:space:]]\{1,\}//p' "$p")
  if [ -n "$target" ]; then
    [ "$(wc -l <"$p")" -eq 1 ] || bad "man3/$f.3: more than its .so line"
    [ -f "$mandir/$target" ] || bad "man3/$f.3 links to $target, not installed"
  else
    # A page of its own: its NAME section names the function.
    sed -n '/^\.Sh NAME/,/^\.Sh /p' "$p" | grep -qw -- "$f" ||
      bad "man3/$f.3 does not name $f in its NAME section"
  fi
done

for p in "$man3"/*; do
  name=$(basename "$p")
  [ "$name" = libidem.3 ] && continue
  printf '%s\n' "$funcs" | grep -qx -- "${name%.3}" ||
    bad "man3/$name names no function of idem.h"
done

# The functions the SYNOPSIS declares with .Fn or .Fo; the typedefs of
# callbacks, such as .Fn "(*idem_job_fn)", are not functions of the API.
sed -n '/^\.Sh SYNOPSIS/,/^\.Sh /p' "$page" |
  sed -n 's/^\.F[no][[:space:]]\{1,\}\([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' |
  LC_ALL=C sort -u >"$tmp/synopsis"
printf '%s\n' "$funcs" >"$tmp/header"
for f in $(LC_ALL=C comm -13 "$tmp/synopsis" "$tmp/header"); do
  bad "libidem.3: $f is in idem.h but not in the SYNOPSIS"
done
for f in $(LC_ALL=C comm -23 "$tmp/synopsis" "$tmp/header"); do
  bad "libidem.3: the SYNOPSIS has $f, which idem.h does not declare"
done

# What a user types. man -w prints the file it would show, .so followed.
if command -v man >/dev/null 2>&1; then
  for f in $funcs; do
    [ -f "$man3/$f.3" ] || continue # reported above
    shown=$(man -M "$mandir" -w 3 "$f" 2>&1) || true
    case $shown in
    "$man3/libidem.3" | "$man3/$f.3") ;;
    *) bad "man 3 $f finds: $shown" ;;
    esac
  done
  MANWIDTH=80 man -M "$mandir" -P cat 3 idem_begin 2>&1 | grep -q 'LIBIDEM(3)' ||
    bad "man 3 idem_begin does not show libidem(3)"
else
  echo "man not found: resolution through man(1) not checked"
fi

[ "$rc" -eq 0 ] &&
  echo "ok: $(printf '%s\n' "$funcs" | wc -l) functions, each with a page; SYNOPSIS agrees"
exit "$rc"
