#!/bin/sh
# SPDX-License-Identifier: MIT
# idem gc --older-than removes pending keys that no run holds and poisoned
# keys once unchanged for that long, never a live lease nor a result still
# within its retention; --max-rows and --max-bytes (or IDEM_MAX_ROWS and
# IDEM_MAX_BYTES) evict results down to those limits.
. "$(dirname "$0")/lib.sh"
unset IDEM_MAX_ROWS IDEM_MAX_BYTES

"$IDEM" run finished echo finished >/dev/null
"$IDEM" run --cache-failure failed sh -c 'exit 7' >/dev/null
"$IDEM" run released sh -c 'echo "$IDEM_FENCE" >fence.released; exit 3' >/dev/null
"$IDEM" run -a 1 poisoned false >/dev/null
"$IDEM" run -a 1 poisoned false 2>/dev/null
[ "$(state poisoned)" = poisoned ] || fail "setup: poisoned is $(state poisoned)"
ok
# A live lease, held by a run still going.
"$IDEM" run live sh -c 'touch started; exec sleep 30' >/dev/null 2>&1 &
BG_PIDS="$BG_PIDS $!"
wait_for 10 test -e started

# Younger than asked: nothing goes; the usual purge line comes first.
idem gc --older-than 1h
expect_rc 0 "gc --older-than 1h"
expect_out "0 expired rows purged
0 stale pending or poisoned rows purged" "gc --older-than 1h"
for k in finished failed released poisoned live; do
  [ "$(state $k)" != absent ] || fail "--older-than 1h removed $k"
  ok
done

# Old enough (0: any age): the released and the poisoned key go, the live
# lease and the results stay.
sleep 0.1
idem gc --older-than 0.05
expect_rc 0 "gc --older-than 0.05"
expect_out "0 expired rows purged
2 stale pending or poisoned rows purged" "gc --older-than 0.05"
[ "$(state released)" = absent ] && [ "$(state poisoned)" = absent ] ||
  fail "stale keys left: released $(state released), poisoned $(state poisoned)"
ok
[ "$(state live)" = pending ] || fail "the live lease was removed: $(state live)"
ok
[ "$(state finished)" = completed ] && [ "$(state failed)" = failed ] ||
  fail "results removed: finished $(state finished), failed $(state failed)"
ok
idem gc --older-than 0
expect_out "0 expired rows purged
0 stale pending or poisoned rows purged" "gc --older-than 0 with a live lease"
[ "$(state live)" = pending ] || fail "the live lease was removed by --older-than 0"
ok

# A removed key starts over at attempt 1, with a fence above its old one.
idem run released sh -c 'echo "$IDEM_ATTEMPT $IDEM_FENCE"'
expect_rc 0 "run of a removed key"
# shellcheck disable=SC2046 # two words: the attempt and the fence
set -- $(cat out)
[ "$1" = 1 ] || fail "removed key: attempt $1"
ok
[ "$2" -gt "$(cat fence.released)" ] || fail "removed key: fence $2 after $(cat fence.released)"
ok
idem run poisoned true
expect_rc 0 "a removed poisoned key runs again"

# Durations take units; bad ones are usage errors; only gc has the option.
idem gc --older-than 7d
expect_rc 0 "--older-than 7d"
for bad in x -1 1.2345 5y ""; do
  idem gc --older-than "$bad"
  expect_rc 64 "--older-than '$bad'"
  expect_err "^Try 'idem --help'\\.$" "--older-than '$bad': hint"
done
idem list --older-than 1d
expect_rc 64 "list --older-than"

# Caps: the oldest results (of 8) are evicted down to the limit, told apart
# from the expired ones.
for k in c1 c2 c3 c4; do
  "$IDEM" run "$k" echo "$k" >/dev/null
  sleep 0.01
done
idem gc --max-rows 3
expect_rc 0 "gc --max-rows 3"
expect_out "0 expired rows purged
5 rows evicted to stay within the limits" "gc --max-rows 3"
"$IDEM" list --state completed >kept
[ "$(cut -f5 kept | sort | tr '\n' ' ')" = "c2 c3 c4 " ] ||
  fail "--max-rows 3 kept: $(cut -f5 kept | tr '\n' ' ')"
ok
[ "$(state failed)" = absent ] || fail "--max-rows 3: the failed result stayed"
ok
[ "$(state live)" = pending ] || fail "--max-rows evicted a live lease"
ok

# From the environment; the option wins over it; 0 is no limit.
IDEM_MAX_ROWS=2 idem gc
expect_out "0 expired rows purged
1 row evicted to stay within the limits" "IDEM_MAX_ROWS=2"
IDEM_MAX_ROWS=1 idem gc --max-rows 0
expect_out "0 expired rows purged" "--max-rows 0 over IDEM_MAX_ROWS"
# Each result holds 3 bytes ("cN\n"): 4 bytes keep one.
IDEM_MAX_BYTES=4 idem gc
expect_out "0 expired rows purged
1 row evicted to stay within the limits" "IDEM_MAX_BYTES=4"
[ "$(state c4)" = completed ] && [ "$(state c3)" = absent ] ||
  fail "IDEM_MAX_BYTES=4: c3 $(state c3), c4 $(state c4)"
ok
idem gc --max-bytes 0
expect_out "0 expired rows purged" "--max-bytes 0"

# Bad values are usage errors that name where they came from.
IDEM_MAX_ROWS=many idem gc
expect_rc 64 "IDEM_MAX_ROWS=many"
expect_err "IDEM_MAX_ROWS many" "IDEM_MAX_ROWS=many: named"
IDEM_MAX_BYTES=-1 idem gc
expect_rc 64 "IDEM_MAX_BYTES=-1"
expect_err "IDEM_MAX_BYTES -1" "IDEM_MAX_BYTES=-1: named"
idem gc --max-rows 1k
expect_rc 64 "--max-rows 1k"
expect_err "--max-rows 1k" "--max-rows 1k: named"
idem gc --max-bytes 0x10
expect_rc 64 "--max-bytes 0x10"
idem stats --max-rows 1
expect_rc 64 "stats --max-rows"

done_ok
