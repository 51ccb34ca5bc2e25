#!/bin/sh
# `kill -9` of idem while its command runs: the command dies with it, the
# key stays busy until the lease's TTL has passed, then the next run
# claims it as attempt 2.
. "$(dirname "$0")/lib.sh"

# The command execs into sleep, so that its pid is the command itself.
"$IDEM" run -t 3 -f fp k9 sh -c \
  'echo "$IDEM_ATTEMPT" >> attempts; echo $$ > cmd.pid; exec sleep 60' \
  >/dev/null 2>&1 &
P=$!
BG_PIDS="$BG_PIDS $P"
wait_for 10 test -s cmd.pid
CMD=$(cat cmd.pid)
BG_PIDS="$BG_PIDS $CMD"
alive "$CMD" || fail "command not running"
ok

kill -KILL "$P"
wait "$P"
rc=$?
[ "$rc" -eq 137 ] || fail "idem exited $rc after SIGKILL"
ok

# The lease outlives idem until its TTL (3 s, renewed every 1.5 s, so at
# least 1.5 s are left).
idem run -f fp k9 sh -c 'echo "$IDEM_ATTEMPT" >> attempts; echo second'
expect_rc 75 "key busy right after the kill"
[ "$(state k9)" = pending ] || fail "state after kill: $(state k9)"
ok

# PR_SET_PDEATHSIG: the command was killed when idem died.
wait_for 5 dead "$CMD"
ok

# Once the TTL has run out, the key is claimable: attempt 2.
idem run -w10 -f fp k9 sh -c 'echo "attempt $IDEM_ATTEMPT"'
expect_rc 0 "run after the TTL"
expect_out "attempt 2" "run after the TTL"
[ "$(cat attempts)" = 1 ] || fail "attempts file: $(cat attempts)"
ok
[ "$(state k9)" = completed ] || fail "state: $(state k9)"
ok

done_ok
