#!/bin/sh
# SPDX-License-Identifier: MIT
# A busy key: exit 75 or -E's status with who holds it and for how long;
# --wait replays the winner's output, runs the command itself when the
# holder gives the key back, or gives up after its time.
. "$(dirname "$0")/lib.sh"

# The holder waits for a file, so the test decides when it ends.
hold() { # key, then the holder's extra options
  k=$1
  shift
  "$IDEM" run "$@" -f "fp-$k" "$k" sh -c \
    'touch started; while [ ! -f release ]; do sleep 0.05; done; echo "result $IDEM_ATTEMPT"; exit $(cat release)' \
    >holder.out 2>holder.err &
  HOLDER=$!
  BG_PIDS="$BG_PIDS $HOLDER"
  wait_for 10 test -f started
}
finish_holder() { # exit status for the holder's command
  echo "$1" >release
  wait "$HOLDER"
  HRC=$?
  rm -f started release
}

hold busy
idem run -f fp-busy busy echo never
expect_rc 75 "busy key"
[ ! -s out ] || fail "busy run printed on stdout"
ok
expect_err "key 'busy' is busy: held by pid $HOLDER \(lease owner [0-9a-f-]{36}\), [0-9]+\.[0-9]{3} s left" \
  "busy message names holder, owner and time left"
idem run -E 3 -f fp-busy busy echo never
expect_rc 3 "-E"
idem run -E 0 -q -f fp-busy busy echo never
expect_rc 0 "-E 0"
expect_no_err "-q"

# --wait with a limit that passes: 75.
idem run -w0.3 -f fp-busy busy echo never
expect_rc 75 "wait that runs out"
expect_err "busy after waiting" "wait that runs out"

# --wait without a limit: gets the holder's output when it completes.
"$IDEM" run --wait -f fp-busy busy echo never >waiter.out 2>waiter.err &
W=$!
BG_PIDS="$BG_PIDS $W"
sleep 0.3
finish_holder 0
[ "$HRC" -eq 0 ] || fail "holder exited $HRC"
ok
wait "$W"
WRC=$?
[ "$WRC" -eq 0 ] || fail "waiter exited $WRC: $(cat waiter.err)"
ok
[ "$(cat waiter.out)" = "result 1" ] || fail "waiter printed '$(cat waiter.out)'"
ok
cmp -s holder.out waiter.out || fail "waiter's output differs from holder's"
ok

# --wait=S when the holder fails: the waiter claims the key and runs.
hold retry
"$IDEM" run --wait=30 -f fp-retry retry sh -c 'echo "second $IDEM_ATTEMPT"' \
  >waiter.out 2>waiter.err &
W=$!
BG_PIDS="$BG_PIDS $W"
sleep 0.3
finish_holder 4
[ "$HRC" -eq 4 ] || fail "holder exited $HRC, expected 4"
ok
wait "$W"
WRC=$?
[ "$WRC" -eq 0 ] || fail "waiter exited $WRC: $(cat waiter.err)"
ok
[ "$(cat waiter.out)" = "second 2" ] || fail "waiter printed '$(cat waiter.out)'"
ok

# Waiting costs no CPU to speak of: a one-second wait uses a small part of
# a second of CPU time (children's time of this shell, before and after).
cputicks() { awk '{print $16 + $17}' "/proc/$$/stat"; }
hold cpu
before=$(cputicks)
"$IDEM" run -w1 -f fp-cpu cpu true 2>/dev/null &
W=$!
wait "$W"
after=$(cputicks)
finish_holder 0
hz=$(getconf CLK_TCK)
[ $(((after - before) * 5)) -lt "$hz" ] ||
  fail "waiting 1 s used $((after - before)) ticks of CPU (CLK_TCK $hz)"
ok

done_ok
