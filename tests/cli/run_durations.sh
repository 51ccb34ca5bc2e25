#!/bin/sh
# SPDX-License-Identifier: MIT
# Durations of idem run (-t, -w, --wait=, --timeout, --retention,
# --kill-after) take a unit, ms, s, m, h or d; a bare number is seconds.
# A refused one says which option, the value and the real reason.
. "$(dirname "$0")/lib.sh"

# check_json FILE: each line of FILE is "OPTION VALUE EXPECTED FIELD JSON",
# the record of a run made with OPTION VALUE; FIELD is "retention" (the
# time from the record's making to its expiry, exactly EXPECTED ms) or
# "lease_ms" (seen by the command: at most EXPECTED, by at most 5 s).
# One python3 for all: it starts slowly on a loaded machine.
check_json() {
  _bad=$(python3 - "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    opt, val, want, field, doc = line.split(" ", 4)
    rec, want = json.loads(doc), int(want)
    if field == "retention":
        got = rec["expires_at_ms"] - rec["updated_at_ms"]
        good = got == want
    else:
        got = rec["lease_ms"]
        good = want - 5000 < got <= want
    if not good:
        print(f"{opt} {val}: {field} {got}, expected {want};", end=" ")
EOF
  ) || fail "cannot check $1"
  [ -z "$_bad" ] || fail "$_bad"
  ok
}

# --retention: the record is kept for exactly that long after it is made.
: >ret.txt
for pair in 36:36000 0.5:500 1500ms:1500 90s:90000 90m:5400000 \
  1.5h:5400000 2d:172800000 0.001d:86400 366d:31622400000 \
  31622400:31622400000; do
  arg=${pair%%:*}
  want=${pair#*:}
  idem run --retention "$arg" "ret-$arg" echo x
  expect_rc 0 "--retention $arg"
  printf '%s %s %s retention %s\n' --retention "$arg" "$want" \
    "$("$IDEM" get --json "ret-$arg")" >>ret.txt
done
check_json ret.txt

# -t: the lease the command runs under is that long (a little less by the
# time the command looks).
: >ttl.txt
for pair in 90s:90000 2m:120000 1.5h:5400000 7500ms:7500; do
  arg=${pair%%:*}
  want=${pair#*:}
  idem run -t "$arg" "ttl-$arg" "$IDEM" get --json "ttl-$arg"
  expect_rc 0 "-t $arg"
  printf '%s %s %s lease_ms %s\n' -t "$arg" "$want" "$(cat out)" >>ttl.txt
done
check_json ttl.txt

# --timeout in ms: the command is stopped after 0.3 s, not 300 s.
idem run --timeout 300ms slow sleep 60
expect_rc 124 "--timeout 300ms"
expect_err "timed out after 0\\.300 s" "--timeout 300ms"

# Waits with units, on a free key: nothing to wait for, the command runs.
idem run -w 1m w1 echo a
expect_rc 0 "-w 1m"
expect_out "a" "-w 1m"
idem run --wait=500ms w2 echo b
expect_rc 0 "--wait=500ms"
idem run --kill-after 10s --timeout 1h ka echo c
expect_rc 0 "--kill-after 10s"

# Refusals name the option as given, the value and the reason.
refused() { # pattern for stderr, then idem's arguments
  pat=$1
  shift
  idem "$@"
  expect_rc 64 "$*"
  expect_err "$pat" "$*"
  expect_err "^Try 'idem --help'\\.$" "$*: hint"
  [ ! -s out ] || fail "$*: printed on stdout"
  ok
}
refused "^idem: -t 1\\.2345: more than 3 decimals$" run -t 1.2345 k true
refused "^idem: -t 5x: unknown unit 'x' \\(ms, s, m, h, d\\)$" run -t 5x k true
refused "^idem: -t 0: must be above 0$" run -t 0 k true
refused "^idem: --ttl 0ms: must be above 0$" run --ttl 0ms k true
refused "^idem: --timeout 367d: over the limit of 366d$" \
  run --timeout 367d k true
refused "over the limit of 366d" run --retention 31622400.001 k true
refused "over the limit of 366d" run --retention 99999999999999999999d k true
refused "^idem: --retention 1\\.5ms: no decimals with ms$" \
  run --retention 1.5ms k true
refused "^idem: --wait -1: must not be negative$" run --wait=-1 k true
refused "^idem: --kill-after 2\\.: no digit after '\\.'$" \
  run --kill-after 2. k true
refused "^idem: --kill-after 0: must be above 0$" run --kill-after 0 k true
refused "^idem: -t '': no value" run -t "" k true
refused "unknown unit 'e3'" run --timeout 1e3 k true
refused "unknown unit 'M'" run -t 5M k true
refused "unknown unit ' s'" run -t "5 s" k true
refused "unknown unit '\\\\x01'" run -t "$(printf '5\001')" k true
refused "^idem: --timeout \\.5: not a number" run --timeout .5 k true
[ ! -e "$IDEM_DB" ] || [ "$(state k)" = absent ] ||
  fail "a refused duration claimed the key"
ok

done_ok
