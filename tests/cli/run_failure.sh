#!/bin/sh
# SPDX-License-Identifier: MIT
# --cache-failure: a failed run is recorded with its output and status and
# replayed like a success; the command does not run again.
. "$(dirname "$0")/lib.sh"

idem run --cache-failure cf sh -c 'echo x >> runs; echo oops; exit 3'
expect_rc 3 "failed run"
expect_out "oops" "failed run output"
idem run --cache-failure cf sh -c 'echo x >> runs; echo oops; exit 3'
expect_rc 3 "failed replay keeps the status"
expect_out "oops" "failed replay output"
[ "$(wc -l <runs)" -eq 1 ] || fail "failed command ran $(wc -l <runs) times"
ok
# Any later run of the key replays it, with or without the option.
idem run cf sh -c 'echo x >> runs; echo oops; exit 3'
expect_rc 3 "failed replay without --cache-failure"
[ "$(state cf)" = failed ] || fail "state: $(state cf)"
ok
"$IDEM" get cf >out
grep -q '^code: 3$' out || fail "get does not show code 3"
ok

# Killed by a signal: recorded as 128+N.
idem run --cache-failure sigk sh -c 'echo before; kill -9 $$'
expect_rc 137 "killed command"
idem run --cache-failure sigk sh -c 'echo before; kill -9 $$'
expect_rc 137 "killed command replayed"
expect_out "before" "killed command replayed output"

# Success is recorded as usual.
idem run --cache-failure good echo fine
expect_rc 0 "successful run with --cache-failure"
idem run --cache-failure good echo fine
expect_rc 0 "successful replay with --cache-failure"
expect_out "fine" "successful replay with --cache-failure"

# A run over --max-output is not a failure to record.
idem run --cache-failure --max-output 2 big sh -c 'echo 12345; exit 2'
expect_rc 125 "over --max-output with --cache-failure"
[ "$(state big)" = pending ] || fail "over-limit failure recorded"
ok

# Without the option a failure is only released.
idem run nocache sh -c 'exit 5'
expect_rc 5 "failure without --cache-failure"
[ "$(state nocache)" = pending ] || fail "state: $(state nocache)"
ok

done_ok
