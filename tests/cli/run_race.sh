#!/bin/sh
# SPDX-License-Identifier: MIT
# Many `idem run` of one key at once: the command runs exactly once, and
# every caller that waits prints the winner's output.
. "$(dirname "$0")/lib.sh"

N=10

# With --wait: all succeed with the same output.
i=0
while [ "$i" -lt "$N" ]; do
  i=$((i + 1))
  ("$IDEM" run -w60 race sh -c \
    'echo run >> runs; sleep 1; echo "winner $$ attempt $IDEM_ATTEMPT"' \
    >"out.$i" 2>"err.$i"
  echo $? >"rc.$i") &
done
wait
[ "$(wc -l <runs)" -eq 1 ] || fail "command ran $(wc -l <runs) times"
ok
grep -q '^winner [0-9]* attempt 1$' out.1 || fail "unexpected output: $(cat out.1)"
ok
i=0
while [ "$i" -lt "$N" ]; do
  i=$((i + 1))
  [ "$(cat "rc.$i")" -eq 0 ] || fail "caller $i exited $(cat "rc.$i"): $(cat "err.$i")"
  cmp -s out.1 "out.$i" || fail "caller $i printed '$(cat "out.$i")'"
  ok
done

# Without --wait: still exactly one run; the others are told the key is
# busy (75) or, if they come after the end, get the replay (0).
i=0
while [ "$i" -lt "$N" ]; do
  i=$((i + 1))
  ("$IDEM" run nowait sh -c 'echo run >> runs2; sleep 1; echo "only $$"' \
    >"o.$i" 2>"e.$i"
  echo $? >"r.$i") &
done
wait
[ "$(wc -l <runs2)" -eq 1 ] || fail "command ran $(wc -l <runs2) times"
ok
winner=$(cat o.*)
busy=0
i=0
while [ "$i" -lt "$N" ]; do
  i=$((i + 1))
  case $(cat "r.$i") in
  0) [ "$(cat "o.$i")" = "$winner" ] || fail "caller $i printed '$(cat "o.$i")'" ;;
  75)
    busy=$((busy + 1))
    [ ! -s "o.$i" ] || fail "busy caller $i printed something"
    grep -q 'is busy: held by .*, [0-9.]* s left' "e.$i" ||
      fail "busy message: $(cat "e.$i")"
    ;;
  *) fail "caller $i exited $(cat "r.$i"): $(cat "e.$i")" ;;
  esac
  ok
done
[ "$busy" -ge 1 ] || fail "no caller found the key busy"
ok

done_ok
