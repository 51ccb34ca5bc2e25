#!/bin/sh
# SPDX-License-Identifier: MIT
# Usage errors exit 64 with a hint and touch nothing; --help and --version
# exit 0.
. "$(dirname "$0")/lib.sh"

usage() { # description, then idem's arguments
  d=$1
  shift
  idem "$@"
  expect_rc 64 "$d"
  expect_err "^Try 'idem --help'\\.$" "$d: hint"
  [ ! -s out ] || fail "$d: printed on stdout"
  ok
}

usage "no arguments"
usage "unknown command" frobnicate
usage "unknown option" --frobnicate
usage "run: nothing" run
usage "run: no command" run key
usage "run: no command after --" run key --
usage "run: empty key" run "" true
usage "run: unknown option" run --frobnicate key true
usage "run: -t missing value" run -t
usage "run: bad ttl" run -t abc key true
usage "run: zero ttl" run -t 0 key true
usage "run: negative ttl" run -t -1 key true
usage "run: bad attempts" run -a 1x key true
usage "run: negative attempts" run -a -1 key true
usage "run: attempts too large" run -a 4294967296 key true
usage "run: -E too large" run -E 256 key true
usage "run: -E not a number" run -E x key true
usage "run: bad wait" run --wait=soon key true
usage "run: bad timeout" run --timeout 1.5sec key true
usage "run: bad retention" run --retention x key true
usage "run: --max-output too large" run --max-output 16777217 key true
usage "run: --max-output hex" run --max-output 0x10 key true
usage "run: both fingerprint options" run -f a --no-fingerprint key true
usage "run: name too long" run -n "$(printf '%0300d' 0)" key true
usage "run: key too long" run "$(printf '%04097d' 0)" true
usage "get: no key" get
usage "get: two keys" get a b
usage "get: --json with --output" get --json --output a
usage "get: option of another command" get --state pending a
usage "list: bad state" list --state done
usage "list: bad limit" list --limit 0
usage "list: a key" list a
usage "reset: nothing" reset
usage "reset: key and --all-poisoned" reset a --all-poisoned
usage "gc: an argument" gc now
usage "stats: --output" stats --output
[ ! -e "$IDEM_DB" ] || fail "a usage error created the database"
ok

idem run -a 1x key true
expect_err "invalid number of attempts '1x'" "message names the bad value"
idem run --frobnicate key true
expect_err "unrecognized option '--frobnicate'" "message names the option"

# --help and --version, for idem and for its subcommands (help.sh checks
# that each of the others shows its own usage).
for args in "--help" "-h" "help" "run --help"; do
  # shellcheck disable=SC2086
  idem $args
  expect_rc 0 "$args"
  grep -q "^Usage: idem run \\[OPTIONS\\] KEY \\[--\\] COMMAND" out ||
    fail "$args: no usage on stdout"
  ok
done
for args in "--version" "-V" "run --version" "stats --version"; do
  # shellcheck disable=SC2086
  idem $args
  expect_rc 0 "$args"
  grep -Eq "^idem [0-9]+\\.[0-9]+\\.[0-9]+ \\(libidem [0-9.]+\\)$" out ||
    fail "$args: version line: $(cat out)"
  ok
done
[ ! -e "$IDEM_DB" ] || fail "--help or --version created the database"
ok

# Seconds may have decimals; -w takes its value attached.
idem run -t 0.5 -w0.5 --timeout 10.25 dec echo ok
expect_rc 0 "decimal durations"
idem run --wait key2 echo ok
expect_rc 0 "--wait without a value"
expect_out "ok" "--wait without a value"

done_ok
