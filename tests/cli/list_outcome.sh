#!/bin/sh
# SPDX-License-Identifier: MIT
# idem list --long shows how each key's last attempt ended and the exit
# status it ended with; --prefix lists only the keys that begin with it;
# --json-lines writes one JSON record per line. The JSON records of list
# and get gain "last_outcome", "last_message" and "exit_status", and keep
# every field they had.
. "$(dirname "$0")/lib.sh"

"$IDEM" run ab echo ab >/dev/null
"$IDEM" run --cache-failure abc sh -c 'echo bad; exit 7' >/dev/null
"$IDEM" run abd sh -c 'exit 3' >/dev/null
"$IDEM" run abe sh -c 'kill -9 $$' >/dev/null 2>&1
"$IDEM" run -a 1 abf false >/dev/null
"$IDEM" run -a 1 abf false 2>/dev/null
"$IDEM" run a echo a >/dev/null
"$IDEM" run b echo b >/dev/null
"$IDEM" run aa echo aa >/dev/null
"$IDEM" run abz sh -c 'touch started; exec sleep 30' >/dev/null 2>&1 &
BG_PIDS="$BG_PIDS $!"
wait_for 10 test -e started

# --long: state, attempts, time, bytes, outcome, exit status, key.
idem list --long
expect_rc 0 "list --long"
[ "$(cut -f7 out | tr '\n' ' ')" = "a aa ab abc abd abe abf abz b " ] ||
  fail "--long keys: $(cut -f7 out | tr '\n' ' ')"
ok
TIME='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{3}Z'
for line in "completed	1	T	3	completed	0	ab" \
  "failed	1	T	4	failed	7	abc" \
  "pending	1	T	0	released	3	abd" \
  "pending	1	T	0	released	137	abe" \
  "poisoned	1	T	0	poisoned	-	abf" \
  "pending	1	T	0	running	-	abz"; do
  re="^$(printf '%s' "$line" | sed "s/	T	/	$TIME	/")\$"
  grep -Eq "$re" out || fail "--long lacks '$line': $(cat out)"
  ok
done
# The plain listing keeps its five fields.
idem list
[ "$(head -1 out | awk -F'	' '{ print NF }')" = 5 ] || fail "plain list: $(head -1 out)"
ok

# --prefix: the key that is the prefix itself, then the ones after it
# that begin with it, and nothing past them.
idem list --prefix ab
expect_rc 0 "--prefix ab"
[ "$(cut -f5 out | tr '\n' ' ')" = "ab abc abd abe abf abz " ] ||
  fail "--prefix ab: $(cut -f5 out | tr '\n' ' ')"
ok
idem list --prefix abc
[ "$(cut -f5 out)" = abc ] || fail "--prefix abc: $(cat out)"
ok
idem list --prefix abd --long
[ "$(cut -f5-7 out)" = "released	3	abd" ] || fail "--prefix abd --long: $(cat out)"
ok
idem list --prefix zz
expect_rc 0 "--prefix with no key"
expect_out "" "--prefix with no key"
idem list --prefix ab --state pending
[ "$(cut -f5 out | tr '\n' ' ')" = "abd abe abz " ] || fail "--prefix --state: $(cat out)"
ok
idem list --prefix ab --limit 2
[ "$(cut -f5 out | tr '\n' ' ')" = "ab abc " ] || fail "--prefix --limit 2: $(cat out)"
ok
idem list --prefix ab --state failed --limit 1
[ "$(cut -f5 out)" = "abc" ] || fail "--prefix --state --limit: $(cat out)"
ok
idem list --prefix a --limit 1
[ "$(cut -f5 out)" = "a" ] || fail "--prefix a --limit 1: $(cat out)"
ok
idem list --prefix ""
[ "$(wc -l <out)" -eq 9 ] || fail "--prefix '': $(wc -l <out) lines"
ok

# --json-lines: one record per line, the same records as --json; and the
# new fields in both, the old ones kept.
idem list --json
cp out array
idem list --json-lines
expect_rc 0 "--json-lines"
cp out lines
[ "$(wc -l <lines)" -eq 9 ] || fail "--json-lines: $(wc -l <lines) lines"
ok
python3 - <<'PY' || fail "JSON records: $(cat lines)"
import json
array = json.load(open("array"))
lines = [json.loads(l) for l in open("lines").read().splitlines()]
# The live lease's time left moves on between the two listings.
for r in array + lines:
    r.pop("lease_ms")
assert array == lines, "--json and --json-lines differ"
by = {r["key"]: r for r in lines}
old = {"key", "state", "name", "attempts", "fence", "owner", "lease_ms",
       "created_at", "created_at_ms", "updated_at", "updated_at_ms",
       "expires_at", "expires_at_ms", "code", "output_bytes",
       "has_fingerprint"}
new = {"last_outcome", "last_message", "exit_status"}
for r in lines:
    assert set(r) | {"lease_ms"} == old | new, sorted(set(r) ^ (old | new))
want = {
    "ab": ("completed", 0, None),
    "abc": ("failed", 7, None),
    "abd": ("released", 3, "exit status 3"),
    "abe": ("released", 137, "killed by signal 9"),
    "abf": ("poisoned", None, None),
    "abz": ("running", None, None),
}
for k, (outcome, status, msg) in want.items():
    r = by[k]
    assert r["last_outcome"] == outcome and r["exit_status"] == status, r
    if msg is not None:
        assert r["last_message"] == msg, r
assert by["abf"]["last_message"], by["abf"]
assert by["abc"]["code"] == 7 and by["abc"]["state"] == "failed"
PY
ok
idem list --json-lines --prefix ab --state completed
[ "$(wc -l <out)" -eq 1 ] && python3 -c '
import json
r = json.loads(open("out").read())
assert r["key"] == "ab" and r["exit_status"] == 0, r
' || fail "--json-lines --prefix --state: $(cat out)"
ok
idem list --json-lines --prefix zz
expect_out "" "--json-lines with no key"

# get --json has them too, beside its history.
idem get --json abd
python3 -c '
import json
r = json.load(open("out"))
assert r["last_outcome"] == "released" and r["exit_status"] == 3, r
assert r["history"][-1]["outcome"] == "released", r
' || fail "get --json: $(cat out)"
ok

# What is refused.
for args in "--long --json" "--json --json-lines" "--json-lines --long" \
  "--prefix" "--prefix $(printf '%04097d' 0)"; do
  # shellcheck disable=SC2086
  idem list $args
  expect_rc 64 "list $args"
done
idem get --prefix a a
expect_rc 64 "get --prefix"
idem stats --long
expect_rc 64 "stats --long"

done_ok
