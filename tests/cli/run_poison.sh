#!/bin/sh
# SPDX-License-Identifier: MIT
# -a N: after N failed attempts the key is poisoned (69) and the command
# no longer runs, until `idem reset`.
. "$(dirname "$0")/lib.sh"

fails() { idem run -a 2 "$1" sh -c 'echo x >> runs; echo "attempt $IDEM_ATTEMPT"; exit 1'; }

fails p1
expect_rc 1 "attempt 1"
expect_out "attempt 1" "attempt 1"
fails p1
expect_rc 1 "attempt 2"
expect_out "attempt 2" "attempt 2"
fails p1
expect_rc 69 "poisoned"
[ ! -s out ] || fail "poisoned key printed on stdout"
ok
expect_err "key 'p1' is poisoned" "poisoned message"
expect_err "idem reset p1" "poisoned message tells how to reset"
[ "$(wc -l <runs)" -eq 2 ] || fail "command ran $(wc -l <runs) times"
ok
[ "$(state p1)" = poisoned ] || fail "state: $(state p1)"
ok

# The suggested command is quoted for the shell and names -d's database.
idem run -d "$T/other.db" -a 1 "it's" false
idem run -d "$T/other.db" -a 1 "it's" false
expect_rc 69 "poisoned with -d"
expect_err "idem reset --db $T/other.db 'it'\\\\''s'" "reset hint with -d and quoting"

# -q: no message, same status.
idem run -q -a 2 p1 sh -c 'echo x >> runs; echo "attempt $IDEM_ATTEMPT"; exit 1'
expect_rc 69 "poisoned, quiet"
expect_no_err "-q on a poisoned key"

# reset: the key runs again from attempt 1.
idem reset p1
expect_rc 0 "reset"
fails p1
expect_rc 1 "after reset"
expect_out "attempt 1" "attempt numbering restarts after reset"

# reset --all-poisoned resets every poisoned key, and only those.
fails p1
fails p2
fails p2
fails p1
expect_rc 69 "p1 poisoned again"
fails p2
expect_rc 69 "p2 poisoned"
idem run done1 true
idem reset --all-poisoned
expect_rc 0 "reset --all-poisoned"
expect_out "2 poisoned keys reset" "reset --all-poisoned count"
[ "$(state p1)" = absent ] && [ "$(state p2)" = absent ] ||
  fail "poisoned keys still there"
ok
[ "$(state done1)" = completed ] || fail "reset --all-poisoned touched a completed key"
ok

# -a 0: no limit.
i=0
while [ "$i" -lt 7 ]; do
  i=$((i + 1))
  idem run -a 0 unlimited false
  expect_rc 1 "unlimited attempt $i"
done

done_ok
