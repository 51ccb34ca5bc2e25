# SPDX-License-Identifier: MIT
# Shared helpers of the idem command's shell tests; sourced, not run.
#
# Each test script is started as `sh TEST.sh PATH-TO-IDEM`. It gets its own
# temporary directory as the current directory, with IDEM_DB pointing into
# it, and everything is removed (and every process it started killed) on
# exit. A failed check prints what was expected and exits 1 at once.

set -u

IDEM=${1:?usage: sh TEST.sh PATH-TO-IDEM}
case $IDEM in
/*) ;;
*) IDEM=$PWD/$IDEM ;;
esac
[ -x "$IDEM" ] || {
  echo "not executable: $IDEM" >&2
  exit 1
}

T=$(mktemp -d "${TMPDIR:-/tmp}/idem-cli-test.XXXXXX") || exit 1
BG_PIDS=""

cleanup() {
  for p in $BG_PIDS; do
    kill -CONT "$p" 2>/dev/null
    kill -KILL "$p" 2>/dev/null
  done
  cd /
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

cd "$T" || exit 1
export IDEM_DB="$T/test.db"
unset IDEM_KEY IDEM_ATTEMPT IDEM_FENCE

CHECKS=0

fail() {
  echo "FAIL: $*" >&2
  for f in out err; do
    [ -s "$T/$f" ] && {
      echo "--- $f:" >&2
      head -c 2000 "$T/$f" >&2
    }
  done
  exit 1
}

ok() {
  CHECKS=$((CHECKS + 1))
}

# idem ARG... : runs idem with stdout in ./out and stderr in ./err, and
# sets RC to its exit status.
idem() {
  "$IDEM" "$@" >"$T/out" 2>"$T/err"
  RC=$?
}

expect_rc() { # expected, description
  [ "$RC" -eq "$1" ] || fail "$2: exit status $RC, expected $1"
  ok
}

expect_out() { # expected stdout (exact, without the final newline), description
  [ "$(cat "$T/out")" = "$1" ] ||
    fail "$2: stdout '$(cat "$T/out")', expected '$1'"
  ok
}

expect_err() { # pattern for grep -E on stderr, description
  grep -Eq -- "$1" "$T/err" || fail "$2: stderr does not match '$1'"
  ok
}

expect_no_err() { # description
  [ ! -s "$T/err" ] || fail "$1: unexpected stderr"
  ok
}

# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds; fails the
# test if it does not within SECONDS. Waiting on a condition rather than
# sleeping a fixed time keeps the tests correct on a loaded machine.
wait_for() {
  _limit=$(($1 * 20))
  shift
  _i=0
  while ! "$@"; do
    _i=$((_i + 1))
    [ "$_i" -le "$_limit" ] || fail "timed out waiting for: $*"
    sleep 0.05
  done
}

# alive PID: the process exists and is not a zombie (a zombie whose parent
# died may linger when PID 1 does not reap).
alive() {
  _st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" \
    2>/dev/null)
  [ -n "$_st" ] && [ "$_st" != Z ]
}

dead() {
  ! alive "$1"
}

# state KEY: prints the key's state as `idem get` reports it, or "absent".
state() {
  "$IDEM" get -- "$1" 2>/dev/null | sed -n 's/^state: //p' | grep . ||
    echo absent
}

# json FILE: the file is valid JSON.
json_valid() {
  python3 -m json.tool "$1" >/dev/null 2>&1
}

done_ok() {
  echo "ok: $CHECKS checks"
  exit 0
}
