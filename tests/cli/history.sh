#!/bin/sh
# SPDX-License-Identifier: MIT
# `idem get` shows the key's attempts after its record: one line each as
# text, the array "history" with --json; valid JSON whatever bytes a
# message holds.
# Usage: sh history.sh PATH-TO-IDEM PATH-TO-MKRELEASE
. "$(dirname "$0")/lib.sh"
MKRELEASE=${2:?usage: sh history.sh IDEM MKRELEASE}

TIME='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'

# JSON checks are queued (as in json.sh) and run in one python3 at the end:
# check 'ASSERTIONS' tests the document now in ./out, as `doc`.
NCHECK=0
cat >checks.py <<'PY'
import base64, datetime, json, re
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
def raw(obj, name):
    if name in obj:
        return obj[name].encode("utf-8")
    return base64.b64decode(obj[name + "_base64"], validate=True)
def iso(ms):
    t = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ms % 1000)
def times_ok(h):
    for a in h:
        assert a["started_at"] == iso(a["started_at_ms"]), a
        if a["ended_at_ms"] is None:
            assert a["ended_at"] is None, a
        else:
            assert a["ended_at"] == iso(a["ended_at_ms"]), a
            assert a["started_at_ms"] <= a["ended_at_ms"], a
    for a, b in zip(h, h[1:]):
        assert a["ended_at_ms"] <= b["started_at_ms"], (a, b)
    assert [a["attempt"] for a in h] == list(range(1, len(h) + 1)), h
PY
check() {
  NCHECK=$((NCHECK + 1))
  cp out "doc.$NCHECK"
  {
    echo "doc = load('doc.$NCHECK')"
    printf '%s\n' "$1" | sed '/^$/d'
  } >>checks.py
}

# A failing run, then a successful one of the same command line, told
# apart by a file. Each prints the pid of the idem running it.
job='echo $PPID; [ -e ok ] || exit 3'
idem run k sh -c "$job"
expect_rc 3 "failing run"
PID1=$(cat out)
touch ok
idem run k sh -c "$job"
expect_rc 0 "successful run"
PID2=$(cat out)
[ "$PID1" -gt 0 ] && [ "$PID2" -gt 0 ] && [ "$PID1" != "$PID2" ] ||
  fail "runs' pids: '$PID1' '$PID2'"
ok

idem get k
expect_rc 0 "get"
expect_no_err "get"
grep -qx "state: completed" out || fail "get: the record is still shown"
ok
# The history follows the record, one line per attempt, oldest first.
tail -n 3 out >hist
[ "$(head -n 1 hist)" = "history: 2 attempts" ] || fail "history header: $(cat hist)"
ok
sed -n 2p hist | grep -Eqx \
  "  1: fence 1, released, $TIME to $TIME, pid $PID1: exit status 3" ||
  fail "attempt 1: $(sed -n 2p hist)"
ok
sed -n 3p hist | grep -Eqx "  2: fence 2, completed, $TIME to $TIME, pid $PID2" ||
  fail "attempt 2: $(sed -n 3p hist)"
ok

idem get --json k
expect_rc 0 "get --json"
check "
h = doc['history']
assert doc['state'] == 'completed' and doc['attempts'] == 2, doc
assert len(h) == 2, h
times_ok(h)
assert [a['fence'] for a in h] == [1, 2], h
assert [a['outcome'] for a in h] == ['released', 'completed'], h
assert [a['pid'] for a in h] == [$PID1, $PID2], h
assert h[0]['message'] == 'exit status 3' and h[1]['message'] is None, h
assert [a['code'] for a in h] == [0, 0], h
assert all(UUID.fullmatch(a['owner']) for a in h), h
assert h[0]['owner'] != h[1]['owner'], h
"

# --output is the output alone, as before.
idem get --output k
expect_out "$PID2" "get --output"

# A failure recorded with --cache-failure keeps its code.
idem run --cache-failure f sh -c 'exit 7'
expect_rc 7 "failure recorded"
idem get f
grep -Eqx "  1: fence [1-9][0-9]*, failed \(code 7\), $TIME to $TIME, pid [1-9][0-9]*" out ||
  fail "failed attempt: $(tail -n 1 out)"
ok
idem get --json f
check "
h = doc['history']
assert [(a['outcome'], a['code'], a['message']) for a in h] == [('failed', 7, None)], h
times_ok(h)
"

# Attempts spent: the refused one has no fence, no holder, and says why.
"$IDEM" run -a 1 p false >/dev/null 2>&1
"$IDEM" run -a 1 p false >/dev/null 2>&1
idem get p
grep -qx "history: 2 attempts" out || fail "poisoned: $(tail -n 3 out)"
ok
tail -n 1 out | grep -Eqx \
  "  2: fence -, poisoned, $TIME to $TIME, pid -: max_attempts \(1\) spent" ||
  fail "poisoned attempt: $(tail -n 1 out)"
ok
idem get --json p
check "
h = doc['history']
times_ok(h)
assert h[0]['outcome'] == 'released' and h[0]['message'] == 'exit status 1', h
p = h[1]
assert p['outcome'] == 'poisoned' and p['message'] == 'max_attempts (1) spent', p
assert p['fence'] is None and p['owner'] is None and p['pid'] is None, p
assert p['started_at_ms'] == p['ended_at_ms'], p
"

# A run in progress: its attempt has no end yet. Then its idem dies, and
# the next run, which takes the key over at once, says of whom.
"$IDEM" run -t 600 -f fp h sh -c \
  'touch started; while [ ! -f release ]; do sleep 0.05; done' \
  >/dev/null 2>&1 &
HOLDER=$!
BG_PIDS="$BG_PIDS $HOLDER"
wait_for 10 test -f started
idem get h
tail -n 1 out | grep -Eqx "  1: fence [1-9][0-9]*, running, $TIME to -, pid $HOLDER" ||
  fail "running attempt: $(tail -n 1 out)"
ok
idem get --json h
check "
a = doc['history'][0]
assert a['outcome'] == 'running' and a['pid'] == $HOLDER, a
assert a['ended_at'] is None and a['ended_at_ms'] is None, a
assert a['message'] is None and a['owner'] == doc['owner'], (a, doc)
"
kill -KILL "$HOLDER"
wait "$HOLDER"
idem run -f fp h true
expect_rc 0 "run after the holder died"
idem get h
tail -n 2 out | head -n 1 | grep -Eqx \
  "  1: fence [1-9][0-9]*, expired, $TIME to $TIME, pid $HOLDER: holder process $HOLDER died" ||
  fail "expired attempt: $(tail -n 2 out)"
ok
idem get --json h
check "
h = doc['history']
times_ok(h)
assert [a['outcome'] for a in h] == ['expired', 'completed'], h
assert h[0]['message'] == 'holder process $HOLDER died', h
"

# An idem stopped past its TTL is overtaken; continued, it learns so and is
# refused: its attempt shows as lost.
"$IDEM" run -t 1 -f fp s sh -c \
  'touch s.started; while [ ! -f s.go ]; do sleep 0.05; done' \
  >/dev/null 2>&1 &
STOPPED=$!
BG_PIDS="$BG_PIDS $STOPPED"
wait_for 10 test -f s.started
kill -STOP "$STOPPED"
takeover() { "$IDEM" run -f fp s true >/dev/null 2>&1; }
wait_for 10 takeover
kill -CONT "$STOPPED"
wait "$STOPPED"
RC=$?
expect_rc 75 "the overtaken run"
idem get s
tail -n 3 out >hist
[ "$(head -n 1 hist)" = "history: 2 attempts" ] || fail "overtaken: $(cat hist)"
ok
sed -n 2p hist | grep -Eqx "  1: fence [1-9][0-9]*, lost, $TIME to $TIME, pid $STOPPED(: .*)?" ||
  fail "lost attempt: $(sed -n 2p hist)"
ok
sed -n 3p hist | grep -Eq "^  2: fence [1-9][0-9]*, completed, " ||
  fail "the takeover: $(sed -n 3p hist)"
ok

# Messages of any bytes: shown escaped on one line as text, and as JSON
# strings, or base64 when they are not UTF-8.
M1=$(printf 'q"b\\\\s/n\nt\tc\001 caf\303\251 \360\237\230\200 {"x":[1]}')
M2=$(printf 'bad\377\376 end')
"$MKRELEASE" "$IDEM_DB" m "$M1" || fail "mkrelease m M1"
"$MKRELEASE" "$IDEM_DB" m "$M2" || fail "mkrelease m M2"
idem get m
expect_rc 0 "get m"
tail -n 3 out >hist
[ "$(head -n 1 hist)" = "history: 2 attempts" ] || fail "messages: $(cat out)"
ok
sed -n 2p hist | grep -qF \
  ': q"b\\\\s/n\x0at\x09c\x01 caf\xc3\xa9 \xf0\x9f\x98\x80 {"x":[1]}' ||
  fail "escaped message: $(sed -n 2p hist)"
ok
sed -n 3p hist | grep -qF ': bad\xff\xfe end' ||
  fail "escaped message: $(sed -n 3p hist)"
ok
idem get --json m
check '
h = doc["history"]
assert raw(h[0], "message") == b"q\"b\\\\s/n\nt\tc\x01 caf\xc3\xa9 \xf0\x9f\x98\x80 {\"x\":[1]}", h
assert "message" not in h[1] and raw(h[1], "message") == b"bad\xff\xfe end", h
assert [a["outcome"] for a in h] == ["released", "released"], h
'

# A reset starts the history over; the fence goes on above the old ones.
"$IDEM" reset k
idem run k sh -c "$job"
PID3=$(cat out)
idem get k
tail -n 2 out >hist
[ "$(head -n 1 hist)" = "history: 1 attempt" ] || fail "after reset: $(cat hist)"
ok
sed -n 2p hist | grep -Eqx "  1: fence 3, completed, $TIME to $TIME, pid $PID3" ||
  fail "after reset: $(sed -n 2p hist)"
ok

# list --json stays a list of records, without their histories.
idem list --json
check '
assert len(doc) == 6 and all("history" not in r for r in doc), doc
'

python3 checks.py || fail "JSON checks failed"
CHECKS=$((CHECKS + NCHECK))
done_ok
