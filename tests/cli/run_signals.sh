#!/bin/sh
# SPDX-License-Identifier: MIT
# SIGTERM and SIGHUP to idem reach the command's process group; the run is
# released, not recorded, and idem dies of the same signal. --timeout
# stops the command (SIGTERM, then SIGKILL) and exits 124.
. "$(dirname "$0")/lib.sh"

# A command that reports the signal it gets and exits 0 anyway: idem must
# still not record the run.
catcher='trap "echo got-$SIG > got; exit 0" TERM HUP; echo $$ > cmd.pid;
echo started; while :; do sleep 0.05; done'

for sig in TERM HUP; do
  rm -f got cmd.pid
  SIG=$sig "$IDEM" run -f fp "sig-$sig" sh -c "$catcher" >out 2>err &
  P=$!
  BG_PIDS="$BG_PIDS $P"
  wait_for 10 test -s cmd.pid
  kill "-$sig" "$P"
  wait "$P"
  rc=$?
  case $sig in
  TERM) want=143 ;;
  HUP) want=129 ;;
  esac
  [ "$rc" -eq "$want" ] || fail "SIG$sig: idem exited $rc, expected $want"
  ok
  [ "$(cat got 2>/dev/null)" = "got-$sig" ] || fail "SIG$sig did not reach the command"
  ok
  wait_for 5 dead "$(cat cmd.pid)"
  [ "$(state "sig-$sig")" = pending ] || fail "SIG$sig: state $(state "sig-$sig")"
  ok
  grep -q "interrupted by signal" err || fail "SIG$sig: no message"
  ok
  # Released, not left to its TTL: the next run claims it at once.
  idem run -f fp "sig-$sig" sh -c 'echo "attempt $IDEM_ATTEMPT"'
  expect_rc 0 "run after SIG$sig"
  expect_out "attempt 2" "run after SIG$sig"
done

# The whole process group gets the signal, not only the command.
rm -f cmd.pid
"$IDEM" run grp sh -c 'sleep 60 & echo $! > child.pid; echo $$ > cmd.pid; wait' \
  >/dev/null 2>&1 &
P=$!
BG_PIDS="$BG_PIDS $P"
wait_for 10 test -s child.pid
wait_for 10 test -s cmd.pid
GRANDCHILD=$(cat child.pid)
BG_PIDS="$BG_PIDS $GRANDCHILD"
kill -TERM "$P"
wait "$P"
wait_for 5 dead "$GRANDCHILD"
ok

# --timeout: SIGTERM to the group; 124; not recorded; the attempt counts.
rm -f cmd.pid
idem run --timeout 0.5 slow sh -c 'echo $$ > cmd.pid; echo partial; exec sleep 60'
expect_rc 124 "--timeout"
expect_out "partial" "--timeout passes output on"
expect_err "timed out after 0.500 s" "--timeout message"
wait_for 5 dead "$(cat cmd.pid)"
[ "$(state slow)" = pending ] || fail "timed out run: state $(state slow)"
ok
"$IDEM" get slow | grep -q '^attempts: 1$' || fail "timed out run: attempts"
ok

# A command that ignores SIGTERM gets SIGKILL after the grace period.
rm -f cmd.pid
idem run --timeout 0.2 stubborn sh -c 'trap "" TERM; echo $$ > cmd.pid; while :; do sleep 0.05; done'
expect_rc 124 "--timeout on a command ignoring SIGTERM"
wait_for 5 dead "$(cat cmd.pid)"
ok

# A command that ends before its timeout is not disturbed.
idem run --timeout 30 quick echo fine
expect_rc 0 "--timeout not reached"
expect_out "fine" "--timeout not reached"

done_ok
