#!/bin/sh
# SPDX-License-Identifier: MIT
# -v/--verbose says on stderr whether the command ran now (its attempt and
# fence) or its recorded output was replayed (from which attempt, recorded
# when, in UTC ISO 8601); stdout and the exit status stay the same.
. "$(dirname "$0")/lib.sh"

ISO='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'
json_field() { # KEY FIELD
  "$IDEM" get --json -- "$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# Run now: attempt 1 and the fence the command itself was given.
idem run -v k1 sh -c 'echo "out $IDEM_FENCE"'
expect_rc 0 "-v run"
fence=$(sed -n 's/^out //p' out)
[ -n "$fence" ] || fail "no fence in the output: $(cat out)"
ok
expect_err "^idem: key 'k1': running the command now \\(attempt 1, fence $fence\\)$" \
  "-v says the command runs, with attempt and fence"
expect_err "^idem: key 'k1': recorded exit status 0 and [0-9]+ bytes of output$" \
  "-v says what was recorded"
grep -q replay err && fail "a run said it replayed"
ok

# Replay: from attempt 1, at the time the record was made.
idem run --verbose k1 sh -c 'echo "out $IDEM_FENCE"'
expect_rc 0 "--verbose replay"
expect_out "out $fence" "--verbose replay output"
expect_err "^idem: key 'k1': replaying the output \\([0-9]+ bytes\\) recorded by attempt 1 at $ISO; the command is not run$" \
  "--verbose says it replayed"
when=$(json_field k1 updated_at)
grep -q "at $when;" err || fail "replay time is not the record's, $when: $(cat err)"
ok
grep -q "running the command" err && fail "a replay said it ran"
ok

# A failed first attempt: the second runs as attempt 2 with a higher
# fence, and its replay names attempt 2.
idem run -v k2 sh -c '[ "$IDEM_ATTEMPT" -ge 2 ] || exit 3; echo second'
expect_rc 3 "-v failing run"
expect_err "^idem: key 'k2': running the command now \\(attempt 1, fence [0-9]+\\)$" \
  "-v first attempt"
expect_err "^idem: key 'k2': exit status 3; not recorded" \
  "-v says the failure was not recorded"
idem run -v k2 sh -c '[ "$IDEM_ATTEMPT" -ge 2 ] || exit 3; echo second'
expect_rc 0 "-v second attempt"
expect_err "running the command now \\(attempt 2, fence [0-9]+\\)$" \
  "-v second attempt"
idem run -v k2 sh -c '[ "$IDEM_ATTEMPT" -ge 2 ] || exit 3; echo second'
expect_out "second" "-v replay of attempt 2"
expect_err "recorded by attempt 2 at $ISO; the command is not run$" \
  "-v replay names attempt 2"

# A recorded failure (--cache-failure) says so, with its status.
idem run -v --cache-failure k3 sh -c 'echo bad; exit 4'
expect_rc 4 "-v cached failure"
idem run -v --cache-failure k3 sh -c 'echo bad; exit 4'
expect_rc 4 "-v cached failure replay"
expect_out "bad" "-v cached failure replay output"
expect_err "^idem: key 'k3': replaying the failure \\(exit status 4, [0-9]+ bytes of output\\) recorded by attempt 1 at $ISO; the command is not run$" \
  "-v names a replayed failure"

# -v changes nothing on stdout: the same bytes as without it.
idem run k4 printf 'a\nb'
cp out plain.out
idem run -v k4 printf 'a\nb'
cmp -s out plain.out || fail "-v changed stdout"
ok
# Without -v a run and a replay say nothing.
idem run k5 echo quiet
expect_no_err "run without -v"
idem run k5 echo quiet
expect_no_err "replay without -v"

done_ok
