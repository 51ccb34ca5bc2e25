#!/bin/sh
# SPDX-License-Identifier: MIT
# --output=store|discard|tail: what is recorded of a command's stdout.
# store (the default) keeps it all up to --max-output and refuses to
# record more (125); discard keeps none and replays only the exit status;
# tail keeps the last --max-output bytes. stdout is passed on whole in
# every mode, and a chatty job is recorded once instead of failing.
. "$(dirname "$0")/lib.sh"

json_field() { # KEY FIELD
  "$IDEM" get --json -- "$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# store: as before, explicit or not; over the limit it is 125, not
# recorded, and the message names the other modes.
idem run --output=store --max-output 5 s1 printf 12345
expect_rc 0 "store at the limit"
idem run --output store --max-output 4 s2 printf 12345
expect_rc 125 "store over the limit"
expect_out "12345" "store over the limit passes it on"
expect_err "went over 4 bytes.*--output=tail" "store over the limit hints"
[ "$(state s2)" = pending ] || fail "store over the limit: $(state s2)"
ok

# tail: the last bytes; the run passes everything on and the replay gives
# the tail.
idem run --output=tail --max-output 4 t1 printf 123456789
expect_rc 0 "tail"
expect_out "123456789" "tail passes all on"
[ "$(state t1)" = completed ] || fail "tail: $(state t1)"
ok
idem run --output=tail --max-output 4 t1 printf 123456789
expect_rc 0 "tail replay"
expect_out "6789" "tail replay"
# Under the limit, tail keeps it all.
idem run --output=tail t2 printf 'short\n'
"$IDEM" get --output t2 >got
[ "$(cat got)" = short ] || fail "tail under the limit: $(cat got)"
ok
# Many small writes, wrapping the kept bytes around many times.
idem run --output=tail --max-output 1000 t3 sh -c \
  'i=0; while [ $i -lt 3000 ]; do i=$((i + 1)); echo "line $i"; done'
expect_rc 0 "tail of many lines"
tail -c 1000 out >want
"$IDEM" get --output t3 >got
cmp -s got want || fail "tail of many lines is not the last 1000 bytes"
ok
# Reads larger than the limit and binary bytes.
head -c 700000 /dev/urandom >big.bin
idem run --output=tail --max-output 100000 t4 cat big.bin
expect_rc 0 "tail of 700 kB"
cmp -s out big.bin || fail "tail of 700 kB not passed on whole"
ok
tail -c 100000 big.bin >want
"$IDEM" get --output t4 >got
cmp -s got want || fail "tail of 700 kB is not the last 100000 bytes"
ok
[ "$(json_field t4 output_bytes)" -eq 100000 ] || fail "tail of 700 kB: size"
ok
# Over the default limit (1 MiB): the last 1 MiB.
head -c 3000000 /dev/urandom >huge.bin
idem run --output=tail t5 cat huge.bin
expect_rc 0 "tail over the default limit"
tail -c 1048576 huge.bin >want
"$IDEM" get --output t5 >got
cmp -s got want || fail "tail over the default limit is not the last 1 MiB"
ok
# --max-output 0: nothing kept, the run still recorded.
idem run --output=tail --max-output 0 t6 echo gone
expect_rc 0 "tail of 0 bytes"
[ "$(state t6)" = completed ] && [ "$(json_field t6 output_bytes)" -eq 0 ] ||
  fail "tail of 0 bytes: $(state t6)"
ok

# discard: passed on, not kept; the replay gives only the exit status.
idem run --output=discard d1 cat huge.bin
expect_rc 0 "discard"
cmp -s out huge.bin || fail "discard did not pass the output on"
ok
[ "$(state d1)" = completed ] && [ "$(json_field d1 output_bytes)" -eq 0 ] ||
  fail "discard: $(state d1), $(json_field d1 output_bytes) bytes"
ok
idem run --output=discard d1 cat huge.bin
expect_rc 0 "discard replay"
[ ! -s out ] || fail "discard replay printed something"
ok
idem run --output=discard --cache-failure d2 sh -c 'echo no; exit 3'
expect_rc 3 "discard of a failure"
expect_out "no" "discard of a failure passes it on"
idem run --output=discard --cache-failure d2 sh -c 'echo no; exit 3'
expect_rc 3 "discard replay of a failure"
[ ! -s out ] || fail "discard replay of a failure printed something"
ok

# The chatty cron job: every tick after the first replays, none fails.
for tick in 1 2 3; do
  idem run --output=tail chatty sh -c 'echo run >>runs; cat huge.bin'
  expect_rc 0 "chatty tick $tick"
done
[ "$(wc -l <runs)" -eq 1 ] || fail "chatty job ran $(wc -l <runs) times"
ok

# -v tells what was kept.
idem run -v --output=tail --max-output 3 v1 printf abcdef
expect_err "recorded exit status 0 and the last 3 of 6 bytes of output \\(--output=tail\\)" \
  "-v with tail"
idem run -v --output=discard v2 printf abcdef
expect_err "recorded exit status 0; its 6 bytes of output were not kept \\(--output=discard\\)" \
  "-v with discard"

idem run --output=all k true
expect_rc 64 "--output=all"
expect_err "^idem: --output all: expected store, discard or tail$" \
  "--output=all"
# Its value may be the next word, which is then no KEY.
idem run --output tail k echo x
expect_rc 0 "--output tail"
[ "$(state k)" = completed ] || fail "--output tail: $(state k)"
ok
idem run --output k true
expect_rc 64 "--output KEY"
expect_err "^idem: --output k: expected" "--output KEY"

done_ok
