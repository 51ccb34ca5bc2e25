#!/bin/sh
# SPDX-License-Identifier: MIT
# What idem run says when it does not run the command: a busy key names
# the process holding it, its lease and the time left; a fingerprint
# mismatch says how to reset the key, quoting the key for the shell, and
# shows it only when it can be shown as it is.
. "$(dirname "$0")/lib.sh"

json_field() { # KEY FIELD
  "$IDEM" get --json -- "$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# Busy: "held by pid P (lease owner U), N s left", P being the holding
# idem and U the owner `idem get` shows.
"$IDEM" run -t 30 -f fp held sh -c \
  'touch started; while [ ! -f release ]; do sleep 0.05; done' \
  >/dev/null 2>&1 &
HOLDER=$!
BG_PIDS="$BG_PIDS $HOLDER"
wait_for 10 test -f started
owner=$(json_field held owner)
idem run -f fp held true
expect_rc 75 "busy"
expect_err "^idem: key 'held' is busy: held by pid $HOLDER \\(lease owner $owner\\), [0-9]+\\.[0-9]{3} s left$" \
  "busy names pid, owner and time left"
left=$(sed -n 's/.*, \([0-9]*\)\.[0-9]* s left$/\1/p' err)
[ "$left" -le 30 ] && [ "$left" -ge 20 ] || fail "time left: $left s of a 30 s TTL"
ok
idem run -q -f fp held true
expect_rc 75 "busy, quiet"
expect_no_err "busy, quiet"
touch release
wait "$HOLDER"

# Mismatch: the hint is a command to paste.
mismatch() { # expected hint (fixed string), key, then more options
  hint=$1
  key=$2
  shift 2
  idem run "$@" -- "$key" echo one
  expect_rc 0 "first use of '$key'"
  idem run "$@" -- "$key" echo two
  expect_rc 65 "mismatch of '$key'"
  expect_err "was recorded with another fingerprint" "mismatch of '$key'"
  grep -qxF "idem: to use the key for this command instead, forget its record first: $hint" err ||
    fail "mismatch hint for '$key': $(cat err)"
  ok
}
mismatch "idem reset plain-key_1" plain-key_1
mismatch "idem reset 'two words'" "two words"
mismatch "idem reset 'it'\\''s'" "it's"
mismatch "idem reset -- -dash" -dash
mismatch "idem reset --db $T/other.db dbkey" dbkey -d "$T/other.db"
mismatch "idem reset --db PATH dbkey2" dbkey2 -d "$T/with space.db"
# A key that cannot be shown as it is (a newline) is not shown.
nl='line
break'
mismatch "idem reset KEY" "$nl"
# The hint works: after it, the key runs the new command.
idem reset "two words" >/dev/null
idem run "two words" echo two
expect_rc 0 "after the reset"
expect_out "two" "after the reset"
# -q: nothing.
idem run -q plain-key_1 echo three
expect_rc 65 "mismatch, quiet"
expect_no_err "mismatch, quiet"

done_ok
