#!/bin/sh
# SPDX-License-Identifier: MIT
# -w takes a value, as flock -w does: `idem run -w 30 KEY -- CMD` waits up
# to 30 s for a busy KEY instead of taking 30 for the key. --wait alone
# still waits with no limit, and --wait=S and -wS as before.
. "$(dirname "$0")/lib.sh"

# The holder waits for a file, so the test decides when it ends.
hold() { # key
  "$IDEM" run -f "fp-$1" "$1" sh -c \
    'touch started; while [ ! -f release ]; do sleep 0.05; done; echo "held $IDEM_ATTEMPT"' \
    >holder.out 2>holder.err &
  HOLDER=$!
  BG_PIDS="$BG_PIDS $HOLDER"
  wait_for 10 test -f started
}
finish_holder() {
  touch release
  wait "$HOLDER"
  HRC=$?
  rm -f started release
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# -w 1, separate: a wait of one second on the busy key, then 75. The key
# is "nightly", not "1", and nothing runs.
hold nightly
t0=$(now_ms)
idem run -w 1 -f fp-nightly nightly -- sh -c 'echo ran >>ran'
t1=$(now_ms)
expect_rc 75 "-w 1 on a busy key"
expect_err "key 'nightly' is busy after waiting" "-w 1 waited for nightly"
[ $((t1 - t0)) -ge 900 ] || fail "-w 1 returned after $((t1 - t0)) ms"
ok
[ ! -e ran ] || fail "-w 1 ran a command"
ok
[ "$(state 1)" = absent ] || fail "-w 1 took 1 for the key"
ok

# -w 30s while the holder finishes: the waiter replays its output.
"$IDEM" run -w 30s -f fp-nightly nightly -- echo never >waiter.out \
  2>waiter.err &
W=$!
BG_PIDS="$BG_PIDS $W"
sleep 0.3
finish_holder
[ "$HRC" -eq 0 ] || fail "holder exited $HRC"
ok
wait "$W"
WRC=$?
[ "$WRC" -eq 0 ] || fail "-w 30s waiter exited $WRC: $(cat waiter.err)"
ok
[ "$(cat waiter.out)" = "held 1" ] || fail "waiter printed '$(cat waiter.out)'"
ok

# In a cluster of short options, and attached, as before.
hold clustered
idem run -qw 0.2 -f fp-clustered clustered true
expect_rc 75 "-qw 0.2"
expect_no_err "-qw 0.2 is quiet"
idem run -w0.2 -f fp-clustered clustered true
expect_rc 75 "-w0.2"
expect_err "busy after waiting" "-w0.2"
# -w 0: no wait at all.
idem run -w 0 -f fp-clustered clustered true
expect_rc 75 "-w 0"
expect_err "key 'clustered' is busy: " "-w 0 does not wait"
# --wait alone: no limit, and it takes no value from the next word.
"$IDEM" run --wait -f fp-clustered clustered echo never >waiter.out \
  2>waiter.err &
W=$!
BG_PIDS="$BG_PIDS $W"
sleep 0.5
alive "$W" || fail "--wait gave up: $(cat waiter.err)"
ok
finish_holder
wait "$W"
WRC=$?
[ "$WRC" -eq 0 ] || fail "--wait waiter exited $WRC: $(cat waiter.err)"
ok
[ "$(cat waiter.out)" = "held 1" ] || fail "--wait printed '$(cat waiter.out)'"
ok
# --wait=S as before.
hold eq
idem run --wait=0.2 -f fp-eq eq true
expect_rc 75 "--wait=0.2"
expect_err "busy after waiting" "--wait=0.2"
finish_holder

# -w without a value, or with what is no duration, is a usage error.
idem run -w
expect_rc 64 "-w at the end"
expect_err "option requires an argument -- 'w'" "-w at the end"
idem run -w nightly -- true
expect_rc 64 "-w KEY"
expect_err "^idem: -w nightly: not a number.*--wait" "-w KEY names --wait"
[ "$(state true)" = absent ] || fail "-w KEY claimed a key"
ok

done_ok
