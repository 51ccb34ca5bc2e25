#!/bin/sh
# SPDX-License-Identifier: MIT
# get, list, reset, gc and stats, as text.
. "$(dirname "$0")/lib.sh"

"$IDEM" run -n "the task" alpha echo one >/dev/null
"$IDEM" run beta sh -c 'exit 2' >/dev/null
"$IDEM" run --cache-failure gamma sh -c 'echo bad; exit 7' >/dev/null
"$IDEM" run -a 1 delta false >/dev/null
"$IDEM" run -a 1 delta false 2>/dev/null

# get: the record as lines; exit 1 for a missing key.
idem get alpha
expect_rc 0 "get"
for line in "key: alpha" "state: completed" "name: the task" "attempts: 1" \
  "lease: none" "output: 4 bytes" "fingerprint: yes"; do
  grep -qx "$line" out || fail "get alpha lacks '$line'"
  ok
done
grep -Eq '^created: [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$' out || fail "get: created"
ok
idem get gamma
grep -qx "state: failed" out && grep -qx "code: 7" out || fail "get gamma"
ok
idem get delta
grep -qx "state: poisoned" out || fail "get delta"
ok
idem get nosuch
expect_rc 1 "get of a missing key"
expect_err "no such key 'nosuch'" "get of a missing key"
idem get --output alpha
expect_rc 0 "get --output"
expect_out "one" "get --output"
# Options may follow the key.
idem get alpha --output -d "$IDEM_DB"
expect_out "one" "get with options after KEY"

# list: one tab-separated line per key, in key order.
idem list
expect_rc 0 "list"
[ "$(wc -l <out)" -eq 4 ] || fail "list: $(wc -l <out) lines"
ok
[ "$(cut -f5 out | tr '\n' ' ')" = "alpha beta delta gamma " ] || fail "list keys: $(cut -f5 out)"
ok
[ "$(cut -f1 out | tr '\n' ' ')" = "completed pending poisoned failed " ] ||
  fail "list states: $(cut -f1 out)"
ok
grep -q "^completed	1	[0-9T:.-]*Z	4	alpha$" out || fail "list line: $(head -1 out)"
ok
idem list --state pending
[ "$(cut -f5 out)" = beta ] || fail "list --state pending: $(cat out)"
ok
idem list --state completed --limit 1
[ "$(cut -f5 out)" = alpha ] || fail "list --state completed --limit 1"
ok
idem list --limit 2
[ "$(wc -l <out)" -eq 2 ] || fail "list --limit 2: $(wc -l <out) lines"
ok
idem list --state poisoned
[ "$(cut -f5 out)" = delta ] || fail "list --state poisoned"
ok

# stats.
idem stats
expect_rc 0 "stats"
for line in "pending: 1 (0 with a live lease)" "completed: 1" "failed: 1" \
  "poisoned: 1" "expired: 0 (removed by idem gc)" "database: $IDEM_DB"; do
  grep -qxF "$line" out || fail "stats lacks '$line': $(cat out)"
  ok
done
grep -Eq '^schema version: [1-9][0-9]*$' out || fail "stats: schema version"
ok
grep -Eq '^size: [1-9][0-9]* bytes$' out || fail "stats: size"
ok

# reset.
idem reset alpha
expect_rc 0 "reset"
[ "$(state alpha)" = absent ] || fail "reset alpha: $(state alpha)"
ok
idem reset nosuch
expect_rc 1 "reset of a missing key"
idem run alpha echo two
expect_out "two" "run after reset"

# gc: only completed and failed rows past their retention go.
"$IDEM" run --retention 0.001 short echo s >/dev/null
"$IDEM" run --retention 0.001 --cache-failure shortfail false >/dev/null
"$IDEM" run --retention 0 forever echo f >/dev/null
sleep 0.1
idem gc
expect_rc 0 "gc"
expect_out "2 expired rows purged" "gc count"
[ "$(state short)" = absent ] && [ "$(state shortfail)" = absent ] ||
  fail "gc left expired rows"
ok
for k in alpha beta gamma delta forever; do
  [ "$(state $k)" != absent ] || fail "gc removed $k"
  ok
done
idem get forever
grep -qx "expires: never" out || fail "retention 0: expires"
ok
idem gc
expect_out "0 expired rows purged" "second gc"

done_ok
