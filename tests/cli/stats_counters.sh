#!/bin/sh
# SPDX-License-Identifier: MIT
# The counters idem stats reads from the database: evictions, poisonings
# and takeovers since the database was created, by every process. Each
# idem command below is a process of its own, so what stats reports was
# counted by others and kept in the file.
. "$(dirname "$0")/lib.sh"

expect_counts() { # evictions poisonings takeovers, description
  idem stats --format=prometheus
  expect_rc 0 "$4: stats"
  for m in "idem_evictions_total $1" "idem_poisonings_total $2" \
    "idem_takeovers_total $3"; do
    name=${m% *}
    want=${m#* }
    grep -qx "# TYPE $name counter" out || fail "$4: no TYPE of $name"
    grep -q "^# HELP $name ." out || fail "$4: no HELP of $name"
    got=$(sed -n "s/^$name{database=\"[^\"]*\"} //p" out)
    [ "$got" = "$want" ] || fail "$4: $name is '$got', expected $want"
    ok
  done
}

"$IDEM" run finished echo finished >/dev/null
"$IDEM" run -d new.db other true
expect_counts 0 0 0 "new database"

# A poisoning: counted once, by the run that poisons, not by later runs.
"$IDEM" run -a 1 p false >/dev/null
"$IDEM" run -a 1 p false 2>/dev/null
"$IDEM" run -a 1 p false 2>/dev/null
expect_counts 0 1 0 "poisoning"

# A takeover of a dead holder: idem killed while its command runs. A run
# that ends and one after it take nothing over.
"$IDEM" run -t 600 -f k killed sh -c 'echo $$ > cmd.pid; exec sleep 60' \
  >/dev/null 2>&1 &
P=$!
BG_PIDS="$BG_PIDS $P"
wait_for 10 test -s cmd.pid
BG_PIDS="$BG_PIDS $(cat cmd.pid)"
kill -KILL "$P"
wait "$P" 2>/dev/null
idem run -f k killed echo again
expect_rc 0 "run after the kill"
expect_counts 0 1 1 "dead holder"

# A takeover of an expired lease: idem stopped, so that its heartbeat no
# longer renews a short TTL; the next run waits for the key and takes it
# once the TTL is over.
rm -f cmd.pid
"$IDEM" run -t 0.5s -f s stopped sh -c 'echo $$ > cmd.pid; exec sleep 60' \
  >/dev/null 2>&1 &
P=$!
BG_PIDS="$BG_PIDS $P"
wait_for 10 test -s cmd.pid
BG_PIDS="$BG_PIDS $(cat cmd.pid)"
kill -STOP "$P"
idem run -w 10s -f s stopped echo took
expect_rc 0 "run after the TTL"
expect_out took "run after the TTL"
expect_counts 0 1 2 "expired lease"
kill -KILL "$P" "$(cat cmd.pid)"

# Evictions: idem gc --max-rows 1 keeps one of the three finished keys.
idem gc --max-rows 1
expect_rc 0 "gc --max-rows 1"
grep -qx "2 rows evicted to stay within the limits" out ||
  fail "gc: $(cat out)"
ok
expect_counts 2 1 2 "eviction"
idem gc --max-rows 1
expect_counts 2 1 2 "nothing more to evict"

# JSON and text carry the same counts.
idem stats --json
python3 -c '
import json
s = json.load(open("out"))
assert (s["evictions"], s["poisonings"], s["takeovers"]) == (2, 1, 2), s
' || fail "stats JSON: $(cat out)"
ok
idem stats
for line in "evictions: 2" "poisonings: 1" "takeovers: 2"; do
  grep -qxF "$line" out || fail "stats lacks '$line': $(cat out)"
  ok
done

# Another database counts its own.
idem stats -d new.db --json
python3 -c '
import json
s = json.load(open("out"))
assert (s["evictions"], s["poisonings"], s["takeovers"]) == (0, 0, 0), s
' || fail "other database: $(cat out)"
ok

done_ok
