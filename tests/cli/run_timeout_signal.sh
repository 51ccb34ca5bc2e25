#!/bin/sh
# SPDX-License-Identifier: MIT
# How idem stops a command, as timeout(1) does: --signal SIG (a name, with
# or without SIG, or a number) at --timeout, then SIGKILL --kill-after
# later (SIGTERM and 2 s by default, as before). A lost lease stops the
# command the same way.
. "$(dirname "$0")/lib.sh"

# GNU date: python3 can take a second to start on a loaded machine.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# A command that writes down the signal it gets and exits 0 anyway: still
# a timeout, 124, not recorded.
catcher='for s in INT HUP TERM USR1; do trap "echo $s >>got; exit 0" $s; done
echo $$ > cmd.pid; while :; do sleep 0.05; done'

for pair in INT:INT SIGHUP:HUP usr1:USR1 2:INT 15:TERM; do
  arg=${pair%%:*}
  want=${pair#*:}
  rm -f got cmd.pid
  idem run --timeout 0.3 --signal "$arg" "sig-$arg" sh -c "$catcher"
  expect_rc 124 "--signal $arg"
  expect_err "timed out after 0\\.300 s" "--signal $arg"
  [ "$(cat got 2>/dev/null)" = "$want" ] ||
    fail "--signal $arg: the command got '$(cat got 2>/dev/null)', expected $want"
  ok
  [ "$(state "sig-$arg")" = pending ] || fail "--signal $arg: recorded"
  ok
done

# --signal KILL: nothing to catch, the command is gone at once.
rm -f got
idem run --timeout 0.2 --signal KILL kill sh -c "$catcher"
expect_rc 124 "--signal KILL"
[ ! -e got ] || fail "--signal KILL was caught as $(cat got)"
ok

# --kill-after: a command that ignores SIGTERM gets SIGKILL that long after
# it, here well after the default 2 s...
ignorer='trap "" TERM; echo $$ > cmd.pid; while :; do sleep 0.05; done'
rm -f cmd.pid
t0=$(now_ms)
"$IDEM" run --timeout 0.2 --kill-after 4s late sh -c "$ignorer" \
  >/dev/null 2>late.err &
P=$!
BG_PIDS="$BG_PIDS $P"
wait_for 10 test -s cmd.pid
CMD=$(cat cmd.pid)
BG_PIDS="$BG_PIDS $CMD"
sleep 2.8
alive "$CMD" || fail "--kill-after 4s: the command was killed before 2.8 s"
ok
wait "$P"
rc=$?
t1=$(now_ms)
[ "$rc" -eq 124 ] || fail "--kill-after 4s: exit $rc: $(cat late.err)"
ok
[ $((t1 - t0)) -ge 4000 ] || fail "--kill-after 4s: over after $((t1 - t0)) ms"
ok
wait_for 5 dead "$CMD"
ok

# ...and here well before it (the default would take 2.2 s at least).
rm -f cmd.pid
t0=$(now_ms)
idem run --timeout 0.2 --kill-after 100ms soon sh -c "$ignorer"
t1=$(now_ms)
expect_rc 124 "--kill-after 100ms"
[ $((t1 - t0)) -lt 2100 ] || fail "--kill-after 100ms took $((t1 - t0)) ms"
ok
wait_for 5 dead "$(cat cmd.pid)"
ok

# A lost lease: the resumed idem stops its command with --signal too.
rm -f got cmd.pid started
"$IDEM" run -t 1 -f fp --signal USR1 lost sh -c "touch started; $catcher" \
  >a.out 2>a.err &
A=$!
BG_PIDS="$BG_PIDS $A"
wait_for 10 test -f started
wait_for 10 test -s cmd.pid
BG_PIDS="$BG_PIDS $(cat cmd.pid)"
kill -STOP "$A"
n=0
while :; do
  idem run -t 1 -f fp lost echo B
  [ "$RC" -eq 75 ] || break
  n=$((n + 1))
  [ "$n" -lt 200 ] || fail "the stopped run's lease never ran out"
  sleep 0.05
done
expect_rc 0 "takeover"
kill -CONT "$A"
wait "$A"
rc=$?
[ "$rc" -eq 75 ] || fail "resumed run exited $rc: $(cat a.err)"
ok
wait_for 5 test -s got
[ "$(cat got)" = USR1 ] || fail "lost lease: the command got '$(cat got)'"
ok

# Refused values.
idem run --signal FOO k true
expect_rc 64 "--signal FOO"
expect_err "^idem: --signal FOO: unknown signal" "--signal FOO"
idem run --signal 0 k true
expect_rc 64 "--signal 0"
idem run --signal 99999 k true
expect_rc 64 "--signal 99999"
idem run --signal "" k true
expect_rc 64 "--signal ''"
idem run --kill-after 0 k true
expect_rc 64 "--kill-after 0"
expect_err "^idem: --kill-after 0: must be above 0$" "--kill-after 0"
[ "$(state k)" = absent ] || fail "a refused option claimed the key"
ok

done_ok
