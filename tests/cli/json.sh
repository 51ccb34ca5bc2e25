#!/bin/sh
# SPDX-License-Identifier: MIT
# --json output is valid JSON for any key and output bytes; bytes that are
# not UTF-8 come base64-encoded under a "_base64" name.
. "$(dirname "$0")/lib.sh"

# Keys and outputs that need escaping, and some that are not UTF-8.
K1=$(printf 'quote"back\\slash\ttab')
K2=$(printf 'bin\377\376key')
K3=$(printf 'caf\303\251 \342\202\254')
"$IDEM" run "$K1" printf 'line1\nline2\t"q"\\\001\000end' >/dev/null
"$IDEM" run "$K2" printf '\377\000\200' >/dev/null
"$IDEM" run "$K3" printf 'ok' >/dev/null
"$IDEM" run -n "$(printf 'n\377')" named true >/dev/null
"$IDEM" run pend false >/dev/null

# check 'ASSERTIONS': queues python3 assertions on the JSON document now in
# ./out (as `doc`); run_checks runs them all in one python3, which is slow
# to start.
NCHECK=0
cat >checks.py <<'PY'
import base64, json
def raw(obj, name):
    if name in obj:
        return obj[name].encode("utf-8")
    return base64.b64decode(obj[name + "_base64"], validate=True)
def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
PY
check() {
  NCHECK=$((NCHECK + 1))
  cp out "doc.$NCHECK"
  {
    echo "doc = load('doc.$NCHECK')"
    printf '%s\n' "$1" | sed '/^$/d'
  } >>checks.py
}
run_checks() {
  python3 checks.py || fail "JSON checks failed"
  CHECKS=$((CHECKS + NCHECK))
}

idem get --json "$K1"
expect_rc 0 "get --json"
check '
assert raw(doc, "key") == b"quote\"back\\slash\ttab", doc
assert raw(doc, "output") == b"line1\nline2\t\"q\"\\\x01\x00end", doc
assert doc["state"] == "completed" and doc["attempts"] == 1
assert doc["output_bytes"] == 21 and doc["code"] == 0
assert doc["name"] is None and doc["has_fingerprint"] is True
assert doc["owner"] is None and doc["created_at"].endswith("Z")
'

idem get --json "$K2"
check '
assert "key" not in doc and raw(doc, "key") == b"bin\xff\xfekey", doc
assert "output" not in doc and raw(doc, "output") == b"\xff\x00\x80", doc
'

idem get --json "$K3"
check '
assert doc["key"] == "caf\u00e9 \u20ac", doc
assert doc["output"] == "ok"
'

idem get --json named
check 'assert raw(doc, "name") == b"n\xff", doc'

idem get --json pend
check '
assert doc["state"] == "pending" and "output" not in doc, doc
assert doc["expires_at"] is None
'

# list --json: an array of records without their output.
idem list --json
expect_rc 0 "list --json"
check '
assert isinstance(doc, list) and len(doc) == 5, doc
keys = sorted(raw(r, "key") for r in doc)
assert b"bin\xff\xfekey" in keys and b"pend" in keys, keys
assert all("output" not in r and "output_base64" not in r for r in doc)
'
idem list --json --state pending
check 'assert [r["key"] for r in doc] == ["pend"], doc'
idem list --json --state poisoned
check 'assert doc == [], doc'

# stats --json.
idem stats --json
expect_rc 0 "stats --json"
check '
assert doc["rows"] == {"pending": 1, "completed": 4, "failed": 0, "poisoned": 0}, doc
assert doc["schema_version"] >= 1 and doc["db_bytes"] > 0
assert doc["leased"] == 0 and doc["expired"] == 0
'

# An empty database (created by run, then emptied).
"$IDEM" reset pend >/dev/null
idem list --json --state pending
check 'assert doc == []'

run_checks
done_ok
