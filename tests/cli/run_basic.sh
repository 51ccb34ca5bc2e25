#!/bin/sh
# SPDX-License-Identifier: MIT
# idem run: a first run records stdout, later runs replay it without running
# the command; the command's environment, arguments, stderr and exec errors.
. "$(dirname "$0")/lib.sh"

# First run: the command runs, stdout passes through, exit 0.
idem run k1 sh -c 'echo ran >> count; echo "hello $IDEM_KEY"'
expect_rc 0 "first run"
expect_out "hello k1" "first run output"
expect_no_err "first run"
[ "$(wc -l <count)" -eq 1 ] || fail "command did not run once"
ok
[ "$(state k1)" = completed ] || fail "k1 not completed"
ok

# Replay: same output, the command does not run again.
idem run k1 sh -c 'echo ran >> count; echo "hello $IDEM_KEY"'
expect_rc 0 "replay"
expect_out "hello k1" "replay output"
[ "$(wc -l <count)" -eq 1 ] || fail "replay ran the command"
ok

# Environment: IDEM_KEY, IDEM_ATTEMPT, IDEM_FENCE; an inherited IDEM_KEY is
# replaced, not duplicated; other variables pass.
IDEM_KEY=bogus FOO=bar idem run envkey sh -c \
  'echo "$IDEM_KEY $IDEM_ATTEMPT $FOO"; env | grep -c "^IDEM_KEY="; echo "$IDEM_FENCE"'
expect_rc 0 "env run"
[ "$(sed -n 1p out)" = "envkey 1 bar" ] || fail "environment: $(sed -n 1p out)"
ok
[ "$(sed -n 2p out)" = 1 ] || fail "IDEM_KEY appears $(sed -n 2p out) times"
ok
sed -n 3p out | grep -Eq '^[1-9][0-9]*$' || fail "IDEM_FENCE not a number"
ok

# A failing command: released, its status passed on, attempts counted, and
# the next run runs it again with a higher attempt and fence.
idem run fails sh -c 'echo "try $IDEM_ATTEMPT $IDEM_FENCE"; exit 3'
expect_rc 3 "failing command"
fence1=$(sed -n 's/^try 1 //p' out)
[ -n "$fence1" ] || fail "first attempt not 1: $(cat out)"
ok
[ "$(state fails)" = pending ] || fail "failed run not released"
ok
idem run fails sh -c 'echo "try $IDEM_ATTEMPT $IDEM_FENCE"; exit 3'
expect_rc 3 "failing command again"
fence2=$(sed -n 's/^try 2 //p' out)
[ -n "$fence2" ] && [ "$fence2" -gt "$fence1" ] ||
  fail "second attempt/fence wrong: $(cat out), first fence $fence1"
ok

# Killed by a signal: 128+N, released.
idem run killed sh -c 'kill -9 $$'
expect_rc 137 "command killed by SIGKILL"
[ "$(state killed)" = pending ] || fail "killed run not released"
ok

# stderr passes through and is not recorded.
idem run errk sh -c 'echo to-out; echo to-err >&2'
expect_rc 0 "stderr run"
expect_out "to-out" "stderr run stdout"
expect_err '^to-err$' "stderr passes through"
idem run errk sh -c 'echo to-out; echo to-err >&2'
expect_out "to-out" "stderr replay stdout"
expect_no_err "stderr is not replayed"

# The command's options are its own; "--" between KEY and COMMAND.
idem run opts sh -c 'echo "$@"' sh -q --db x -t 1
expect_rc 0 "command options"
expect_out "-q --db x -t 1" "command options left alone"
idem run dashes -- echo -q --help
expect_rc 0 "-- before command"
expect_out "-q --help" "-- before command"
idem run -- -leading-dash echo dash
expect_rc 0 "key with a leading dash"
expect_out "dash" "key with a leading dash"

# Not a shell: metacharacters reach the command as they are.
idem run noshell echo '$HOME' '*' ';'
expect_out '$HOME * ;' "no shell in between"

# Output as it is produced: the first line is seen while the command still
# waits for the test to let it finish.
"$IDEM" run stream sh -c \
  'echo first; while [ ! -f go ]; do sleep 0.05; done; echo second' \
  >stream.out 2>/dev/null &
pid=$!
BG_PIDS="$BG_PIDS $pid"
seen_first() { grep -q first stream.out; }
if ! (wait_for 10 seen_first); then
  touch go
  fail "output not passed on while the command runs"
fi
ok
touch go
wait "$pid"
[ "$(cat stream.out)" = "$(printf 'first\nsecond')" ] || fail "stream output"
ok

# Command not found: 127; found but not executable: 126; a file without a
# "#!" line goes to /bin/sh as with execvp().
idem run nf no-such-command-idem-test
expect_rc 127 "command not found"
expect_err 'no-such-command-idem-test: command not found' "127 message"
printf 'echo hi\n' >plain.sh
chmod 644 plain.sh
idem run noexec ./plain.sh
expect_rc 126 "not executable"
mkdir adir
idem run isdir ./adir
expect_rc 126 "a directory"
chmod 755 plain.sh
idem run script ./plain.sh
expect_rc 0 "script without #! line"
expect_out "hi" "script without #! line"
mkdir bin
printf '#!/bin/sh\necho from-path\n' >bin/mycmd
chmod 755 bin/mycmd
PATH="$T/bin:$PATH" idem run pathcmd mycmd
expect_rc 0 "found in PATH"
expect_out "from-path" "found in PATH"

# No descriptor of the database reaches the command.
idem run fds ls -l /proc/self/fd/
expect_rc 0 "fd listing"
grep -q 'proc/self/fd\|/dev/\|pipe' out || fail "fd listing looks empty"
ok
if grep -E '\.db(-wal|-shm|-journal)?$' out >/dev/null; then
  fail "the command inherited a database descriptor: $(grep -E '\.db' out)"
fi
ok

# $IDEM_DB and -d. (The default database, outside the current directory,
# is default_db.sh's: it must not land on the machine running the tests.)
idem run -d "$T/other.db" dk echo other
expect_rc 0 "-d"
[ -f "$T/other.db" ] || fail "-d database not created"
ok

# --name is recorded.
idem run -n "nightly job" named true
"$IDEM" get named >out
grep -q '^name: nightly job$' out || fail "name not recorded"
ok

done_ok
