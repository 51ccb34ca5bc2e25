#!/bin/sh
# SPDX-License-Identifier: MIT
# The recorded output: binary bytes replay exactly, --max-output refuses
# to record more than it allows, and a failed write to stdout is an error.
. "$(dirname "$0")/lib.sh"

# Every byte value, NULs included, and no final newline.
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 3 + b"\0\0end\0")' >expected.bin
idem run bin cat expected.bin
expect_rc 0 "binary run"
cmp -s out expected.bin || fail "binary output not passed on exactly"
ok
idem run bin cat expected.bin
expect_rc 0 "binary replay"
cmp -s out expected.bin || fail "binary output not replayed exactly"
ok
"$IDEM" get --output bin >got.bin
cmp -s got.bin expected.bin || fail "get --output differs"
ok

# Empty output is a result too.
idem run empty true
expect_rc 0 "empty output"
[ ! -s out ] || fail "empty output"
ok
idem run empty true
[ ! -s out ] || fail "empty replay"
ok
[ "$(state empty)" = completed ] || fail "empty output not completed"
ok

# A large output, streamed and recorded.
head -c 3000000 /dev/urandom >big.bin
idem run --max-output 3000000 big cat big.bin
expect_rc 0 "3 MB output"
cmp -s out big.bin || fail "3 MB output passed on wrong"
ok
idem run --max-output 3000000 big cat big.bin
cmp -s out big.bin || fail "3 MB output replayed wrong"
ok

# --max-output: exactly at the limit is fine; one byte over is refused
# (125), passed on all the same, and not recorded.
idem run --max-output 5 at-limit printf 12345
expect_rc 0 "output at the limit"
idem run --max-output 4 over printf 12345
expect_rc 125 "output over the limit"
expect_out "12345" "output over the limit is still passed on"
expect_err "went over 4 bytes" "output over the limit message"
[ "$(state over)" = pending ] || fail "over-limit run: state $(state over)"
ok
idem run --max-output 0 zero echo x
expect_rc 125 "--max-output 0 with output"
idem run --max-output 0 zero2 true
expect_rc 0 "--max-output 0 without output"
# The default limit is 1 MiB.
head -c 1048577 /dev/zero >mib1
idem run defmax cat mib1
expect_rc 125 "default --max-output"

# A write error on stdout: the command's result is still recorded (it ran
# to completion), but idem reports the error and fails.
if [ -w /dev/full ]; then
  "$IDEM" run full echo hi >/dev/full 2>err
  rc=$?
  [ "$rc" -eq 125 ] || fail "write error on stdout: exit $rc"
  ok
  grep -q "write error" err || fail "write error message"
  ok
  [ "$(state full)" = completed ] || fail "write error: state $(state full)"
  ok
  "$IDEM" run full echo hi >/dev/full 2>err
  rc=$?
  [ "$rc" -eq 125 ] || fail "write error on replay: exit $rc"
  ok
fi

# A reader that goes away early: the result is still recorded whole, and
# idem dies of SIGPIPE like any writer in a pipeline, run or replay.
python3 -c 'import sys; sys.stdout.write("x" * 300000)' >long.txt
("$IDEM" run early cat long.txt 2>err.early
echo $? >rc.early) | head -c 10 >/dev/null
[ "$(cat rc.early)" -eq 141 ] || fail "closed pipe: exit $(cat rc.early)"
ok
[ ! -s err.early ] || fail "closed pipe: message $(cat err.early)"
ok
"$IDEM" get --output early >got.txt
cmp -s got.txt long.txt || fail "closed pipe: result not recorded whole"
ok
("$IDEM" run early cat long.txt 2>err.early
echo $? >rc.early) | head -c 10 >/dev/null
[ "$(cat rc.early)" -eq 141 ] || fail "closed pipe on replay: exit $(cat rc.early)"
ok

done_ok
