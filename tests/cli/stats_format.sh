#!/bin/sh
# SPDX-License-Identifier: MIT
# idem stats --format=prometheus writes the node_exporter textfile format:
# a HELP and a TYPE line for each gauge and counter, then its samples,
# labelled with the database. --format=json is --json, which gains the age of the
# oldest live lease; the text keeps its lines and gains that age too.
. "$(dirname "$0")/lib.sh"

"$IDEM" run finished echo finished >/dev/null
"$IDEM" run --cache-failure failed sh -c 'exit 7' >/dev/null
"$IDEM" run released sh -c 'exit 3' >/dev/null
"$IDEM" run -a 1 poisoned false >/dev/null
"$IDEM" run -a 1 poisoned false 2>/dev/null
"$IDEM" run --retention 0.001 gone echo gone >/dev/null
"$IDEM" run live sh -c 'touch started; exec sleep 30' >/dev/null 2>&1 &
BG_PIDS="$BG_PIDS $!"
wait_for 10 test -e started
sleep 1.2

idem stats --format=prometheus
expect_rc 0 "--format=prometheus"
expect_no_err "--format=prometheus"
cp out prom
python3 - "$IDEM_DB" <<'PY' || fail "prometheus output: $(cat prom)"
import re, sys
db = sys.argv[1]
lines = open("prom").read().split("\n")
assert lines[-1] == "", "no final newline"
lines = lines[:-1]
# The text format: comments "# HELP name text" and "# TYPE name gauge"
# (or counter, for the counters kept in the database, named *_total), then
# samples "name{labels} value"; each metric's HELP and TYPE come before its
# samples, once.
sample = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*)\} ([0-9]+(?:\.[0-9]+)?)$')
helped, typed, values = set(), set(), {}
for l in lines:
    if l.startswith("# HELP "):
        name = l.split(" ")[2]
        assert name not in helped, l
        assert len(l.split(" ", 3)[3]) > 10, l
        helped.add(name)
    elif l.startswith("# TYPE "):
        _, _, name, kind = l.split(" ")
        want = "counter" if name.endswith("_total") else "gauge"
        assert kind == want and name in helped and name not in typed, l
        typed.add(name)
    else:
        m = sample.match(l)
        assert m, "not a sample: %r" % l
        name, labels, value = m.groups()
        assert name in typed, l
        labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', labels))
        assert labels.pop("database") == db, l
        values[(name, tuple(sorted(labels.items())))] = float(value)
def v(name, **labels):
    return values[(name, tuple(sorted(labels.items())))]
assert v("idem_rows", state="pending") == 2, values
assert v("idem_rows", state="completed") == 2, values
assert v("idem_rows", state="failed") == 1, values
assert v("idem_rows", state="poisoned") == 1, values
assert v("idem_leased") == 1, values
assert v("idem_expired") == 1, values
assert v("idem_db_bytes") > 0, values
assert 1.0 <= v("idem_oldest_lease_age_seconds") < 60, values
assert v("idem_schema_version") >= 1, values
assert v("idem_poisonings_total") == 1, values
assert v("idem_takeovers_total") == 0, values
assert v("idem_evictions_total") == 0, values
assert len(values) == 12, values
PY
ok

# JSON: --json and --format=json are one, and keep their fields.
idem stats --json
cp out json1
idem stats --format=json
expect_rc 0 "--format=json"
python3 - <<'PY' || fail "stats JSON: $(cat out)"
import json
a = json.load(open("json1"))
b = json.load(open("out"))
a.pop("oldest_lease_age_ms"), b.pop("oldest_lease_age_ms")
assert a == b, (a, b)
assert b["rows"] == {"pending": 2, "completed": 2, "failed": 1, "poisoned": 1}, b
assert b["leased"] == 1 and b["expired"] == 1 and b["db_bytes"] > 0, b
assert (b["evictions"], b["poisonings"], b["takeovers"]) == (0, 1, 0), b
PY
ok
python3 -c '
import json
age = json.load(open("out"))["oldest_lease_age_ms"]
assert isinstance(age, int) and 1000 <= age < 60000, age
' || fail "oldest_lease_age_ms: $(cat out)"
ok

# Text: the same lines as ever, and the oldest lease.
idem stats --format=text
grep -v '^oldest live lease' out >text
idem stats
grep -v '^oldest live lease' out | cmp -s - text ||
  fail "--format=text is not the default"
ok
for line in "pending: 2 (1 with a live lease)" "completed: 2" "failed: 1" \
  "poisoned: 1" "expired: 1 (removed by idem gc)" "database: $IDEM_DB" \
  "evictions: 0" "poisonings: 1" "takeovers: 0"; do
  grep -qxF "$line" out || fail "stats lacks '$line': $(cat out)"
  ok
done
grep -Eq '^oldest live lease: claimed [0-9]+\.[0-9]{3} s ago$' out ||
  fail "stats: oldest live lease: $(cat out)"
ok

# Once the lease is gone: none, and 0 for Prometheus.
for p in $BG_PIDS; do kill -TERM "$p"; done
no_lease() { "$IDEM" stats 2>/dev/null | grep -q '^pending: .*(0 with a live lease)$'; }
wait_for 10 no_lease
idem stats
grep -qx "oldest live lease: none" out || fail "no lease: $(cat out)"
ok
idem stats --json
python3 -c 'import json; assert json.load(open("out"))["oldest_lease_age_ms"] is None' ||
  fail "no lease, JSON: $(cat out)"
ok
idem stats --format=prometheus
grep -Eq '^idem_oldest_lease_age_seconds\{database=".*"\} 0\.000$' out ||
  fail "no lease, prometheus: $(grep oldest out)"
ok

# A path that needs escaping in a label.
mkdir 'we"ird\dir'
DB2="$T/we\"ird\\dir/x.db"
"$IDEM" run -d "$DB2" k true
idem stats -d "$DB2" --format=prometheus
expect_rc 0 "escaped path"
grep -qF 'idem_db_bytes{database="'"$T"'/we\"ird\\dir/x.db"}' out ||
  fail "label not escaped: $(grep idem_db_bytes out)"
ok

# What is refused.
for args in "--format=xml" "--format" "--format=" "--json --format=prometheus" \
  "--format=prometheus --json" "--format=text --format=json"; do
  # shellcheck disable=SC2086
  idem stats $args
  expect_rc 64 "stats $args"
done
idem list --format=json
expect_rc 64 "list --format"
idem stats --format=json --json
expect_rc 0 "--format=json with --json"

done_ok
