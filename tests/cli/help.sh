#!/bin/sh
# SPDX-License-Identifier: MIT
# Each subcommand's --help (or -h, or `idem help COMMAND`) prints that
# subcommand's own usage on stdout and exits 0, touching no database.
. "$(dirname "$0")/lib.sh"

for cmd in get list reset gc stats; do
  for args in "$cmd --help" "$cmd -h" "help $cmd"; do
    # shellcheck disable=SC2086
    idem $args
    expect_rc 0 "$args"
    expect_no_err "$args"
    head -1 out | grep -q "^Usage: idem $cmd " ||
      fail "$args: first line: $(head -1 out)"
    ok
    ! grep -q "Usage: idem run" out || fail "$args: shows run's usage"
    ok
    grep -q "^See idem(1)\\.$" out || fail "$args: no pointer to idem(1)"
    ok
  done
  # The same text whichever way it is asked for.
  idem "$cmd" --help
  cp out a
  idem help "$cmd"
  cmp -s out a || fail "help $cmd differs from $cmd --help"
  ok
done

# Each names its own options.
idem get --help
grep -q -- "--output" out && ! grep -q -- "--prefix" out || fail "get --help: $(cat out)"
ok
idem list --help
for opt in --state --prefix --limit --long --json --json-lines; do
  grep -q -- "$opt" out || fail "list --help lacks $opt"
  ok
done
idem reset --help
grep -q -- "--all-poisoned" out || fail "reset --help lacks --all-poisoned"
ok
idem gc --help
for opt in --older-than --max-rows --max-bytes IDEM_MAX_ROWS IDEM_MAX_BYTES; do
  grep -q -- "$opt" out || fail "gc --help lacks $opt"
  ok
done
idem stats --help
grep -q -- "--format" out && grep -q prometheus out || fail "stats --help: $(cat out)"
ok
# The default database is named where -d is.
idem gc --help
# shellcheck disable=SC2088 # the text, not a path to expand
grep -qF '~/.local/state/idem/idem.db' out && grep -q "/var/lib/idem/idem.db" out ||
  fail "gc --help: no default database"
ok

# After other options, and with a bad one after it: --help wins as getopt
# reaches it first.
idem list --state pending --help
expect_rc 0 "list --state pending --help"
head -1 out | grep -q "^Usage: idem list " || fail "list --state pending --help"
ok

# The whole summary still names every subcommand; an unknown one after
# help gets it too.
for args in "--help" "help" "help frobnicate"; do
  # shellcheck disable=SC2086
  idem $args
  expect_rc 0 "$args"
  for cmd in run get list reset gc stats; do
    grep -q "idem $cmd " out || fail "$args lacks $cmd"
    ok
  done
done
[ ! -e "$IDEM_DB" ] || fail "help created the database"
ok

done_ok
