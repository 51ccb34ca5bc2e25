#!/bin/sh
# SPDX-License-Identifier: MIT
# `kill -9` of idem while its command runs: the command dies with it, and
# since idem is known to be dead, the next run on this host claims the key
# at once as attempt 2, long before the lease's TTL would have run out.
. "$(dirname "$0")/lib.sh"

# The command execs into sleep, so that its pid is the command itself. The
# TTL is far longer than the test, so only idem's death can free the key.
"$IDEM" run -t 600 -f fp k9 sh -c \
  'echo "$IDEM_ATTEMPT" >> attempts; echo $$ > cmd.pid; exec sleep 60' \
  >/dev/null 2>&1 &
P=$!
BG_PIDS="$BG_PIDS $P"
wait_for 10 test -s cmd.pid
CMD=$(cat cmd.pid)
BG_PIDS="$BG_PIDS $CMD"
alive "$CMD" || fail "command not running"
ok

# While idem lives, the key is busy.
idem run -f fp k9 sh -c 'echo "$IDEM_ATTEMPT" >> attempts; echo second'
expect_rc 75 "key busy while idem runs"

kill -KILL "$P"
wait "$P"
rc=$?
[ "$rc" -eq 137 ] || fail "idem exited $rc after SIGKILL"
ok

# PR_SET_PDEATHSIG: the command was killed when idem died, so it cannot run
# beside the next attempt.
wait_for 5 dead "$CMD"
ok
[ "$(state k9)" = pending ] || fail "state after kill: $(state k9)"
ok
"$IDEM" get k9 >out 2>err
grep -q '^lease: expired' out || fail "the dead run's lease: $(grep lease out)"
ok

# No wait and no TTL to run out: the dead run's key is claimed at once.
idem run -f fp k9 sh -c 'echo "attempt $IDEM_ATTEMPT"'
expect_rc 0 "run right after the kill"
expect_out "attempt 2" "run right after the kill"
[ "$(cat attempts)" = 1 ] || fail "attempts file: $(cat attempts)"
ok
[ "$(state k9)" = completed ] || fail "state: $(state k9)"
ok

done_ok
