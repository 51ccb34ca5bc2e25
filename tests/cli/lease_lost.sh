#!/bin/sh
# SPDX-License-Identifier: MIT
# A run whose lease is taken over while it is stopped past its TTL: when it
# resumes, its result is refused (75) and the new owner's result stays.
. "$(dirname "$0")/lib.sh"

lost_run() { # key, command script of the first run
  "$IDEM" run -t 1 -f fp "$1" sh -c "$2" >a.out 2>a.err &
  A=$!
  BG_PIDS="$BG_PIDS $A"
  wait_for 10 test -f started
  rm -f started
  kill -STOP "$A"
  # The lease runs out 1 s after the last heartbeat; B keeps trying until
  # it claims the key, and completes it.
  n=0
  while :; do
    idem run -t 1 -f fp "$1" sh -c 'echo "B $IDEM_ATTEMPT"'
    [ "$RC" -eq 75 ] || break
    n=$((n + 1))
    [ "$n" -lt 200 ] || fail "the stopped run's lease never ran out"
    sleep 0.05
  done
  expect_rc 0 "second run after the lease ran out"
  expect_out "B 2" "second run is attempt 2"
  kill -CONT "$A"
  wait "$A"
  ARC=$?
}

# The command is still running when idem resumes: it is stopped.
lost_run running 'touch started; echo $$ > cmd.pid; exec sleep 60'
[ "$ARC" -eq 75 ] || fail "resumed run exited $ARC, expected 75: $(cat a.err)"
ok
grep -q "lost the lease on key 'running'" a.err || fail "no lease-lost message"
ok
wait_for 5 dead "$(cat cmd.pid)"
"$IDEM" get --output running >out
expect_out "B 2" "the new owner's result stays"

# The command finished while idem was stopped: its completion is refused.
lost_run finished 'touch started; sleep 0.5; echo A'
[ "$ARC" -eq 75 ] || fail "resumed run exited $ARC, expected 75: $(cat a.err)"
ok
grep -q "lost the lease on key 'finished'" a.err || fail "no lease-lost message"
ok
"$IDEM" get --output finished >out
expect_out "B 2" "the new owner's result stays"

done_ok
