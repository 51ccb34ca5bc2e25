#!/bin/sh
# SPDX-License-Identifier: MIT
# The systemd units, as installed: installs the built tree into a temporary
# prefix and checks that idem-gc.service and idem-gc.timer are there, that
# the service runs the idem of that prefix, and that its command line
# works on a database. With systemd-analyze, `systemd-analyze verify` must
# accept them, and the example template units of examples/systemd, without
# a word: it reports unknown keys and bad values on stderr but exits 0.
# Usage: sh systemd.sh CMAKE BUILD_DIR SOURCE_DIR [SYSTEMD_ANALYZE]
set -eu
cmake=${1:?usage: systemd.sh CMAKE BUILD_DIR SOURCE_DIR [SYSTEMD_ANALYZE]}
build=${2:?} src=${3:?} analyze=${4:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/idem-pkg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
prefix=$tmp/prefix

"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" ||
  { cat "$tmp/install.log" >&2; fail "cmake --install"; }
service=$(find "$prefix" -name idem-gc.service)
[ -n "$service" ] || fail "idem-gc.service is not installed"
unitdir=$(dirname "$service")
[ -f "$unitdir/idem-gc.timer" ] || fail "idem-gc.timer is not beside idem-gc.service"
echo "units in ${unitdir#"$prefix"/}"
if grep -n '@[A-Za-z_]*@' "$unitdir/idem-gc.service" "$unitdir/idem-gc.timer"; then
  fail "a placeholder was left in the units"
fi

# ExecStart=PATH gc, where PATH is the idem installed with the units.
exec_start=$(sed -n 's/^ExecStart=//p' "$service")
[ "$(printf '%s\n' "$exec_start" | wc -l)" -eq 1 ] || fail "not one ExecStart: $exec_start"
idem=${exec_start%% *}
[ "$idem ${exec_start#* }" = "$exec_start" ] || fail "ExecStart: $exec_start"
[ "${exec_start#* }" = gc ] || fail "ExecStart does not run 'idem gc': $exec_start"
case $idem in
"$prefix"/*) ;;
*) fail "ExecStart names $idem, not the idem installed under the prefix" ;;
esac
[ -x "$idem" ] || fail "$idem is not installed"
grep -qx 'Type=oneshot' "$service" || fail "idem-gc.service is not Type=oneshot"
grep -qx 'Persistent=true' "$unitdir/idem-gc.timer" || fail "idem-gc.timer is not Persistent"

# Its command line at work, on a database of this test ($IDEM_DB wins over
# the default database, which must not be touched here).
IDEM_DB=$tmp/gc.db
export IDEM_DB
"$idem" run some-key -- true || fail "idem run"
$exec_start >"$tmp/gc.out" || fail "'$exec_start' exited $?"
echo "$exec_start: $(cat "$tmp/gc.out")"

[ -n "$analyze" ] || { echo "ok (systemd-analyze not found: not verified)"; exit 0; }

# systemd-analyze verify also runs `man` for Documentation=man:idem(1):
# point it at the pages just installed, or tell it not to without man.
MANPATH=$(dirname "$(dirname "$(find "$prefix" -path '*/man1/idem.1')")"):
export MANPATH
man_opt=--man=yes
command -v man >/dev/null 2>&1 || man_opt=--man=no
verify() { # unit files...
  out=$("$analyze" verify "$man_opt" "$@" 2>&1) && [ -z "$out" ] && return 0
  printf 'systemd-analyze verify %s:\n%s\n' "$*" "${out:-(exit status $?)}" >&2
  return 1
}
# Whether it can work here at all (it needs no running systemd, but a
# container may lack what it loads); if not, say so rather than fail.
printf '[Service]\nType=oneshot\nExecStart=/bin/true\n' >"$tmp/idem-probe.service"
if ! probe=$("$analyze" verify "$tmp/idem-probe.service" 2>&1) || [ -n "$probe" ]; then
  echo "ok (systemd-analyze cannot verify units here: $probe)"
  exit 0
fi

rc=0
verify "$service" "$unitdir/idem-gc.timer" || rc=1
# A template is verified through an instance; the files are copied so that
# nothing else of the source tree is in the units' search path.
mkdir "$tmp/examples"
cp "$src/examples/systemd/idem-job@.service" "$src/examples/systemd/idem-job@.timer" \
  "$tmp/examples/"
verify "$tmp/examples/idem-job@example.service" "$tmp/examples/idem-job@example.timer" || rc=1
[ "$rc" -eq 0 ] && echo "ok: systemd-analyze verify accepts the units and the example"
exit "$rc"
