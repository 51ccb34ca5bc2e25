#!/bin/sh
# SPDX-License-Identifier: MIT
# `idem list` pages through idem_list(): more keys than one page, in key
# order, none repeated or left out, with --limit and --state across pages.
# Usage: sh list_paging.sh PATH-TO-IDEM PATH-TO-MKKEYS
. "$(dirname "$0")/lib.sh"
MKKEYS=${2:?usage: sh list_paging.sh IDEM MKKEYS}

"$MKKEYS" "$IDEM_DB" 2500 || fail "mkkeys"
ok

idem list
expect_rc 0 "list of 2500 keys"
[ "$(wc -l <out)" -eq 2500 ] || fail "list: $(wc -l <out) lines"
ok
cut -f5 out >keys
i=0
while [ "$i" -lt 2500 ]; do
  printf 'key%05d\n' "$i"
  i=$((i + 1))
done >expected
cmp -s keys expected || fail "list: keys missing, repeated or out of order"
ok

idem list --limit 1500
[ "$(wc -l <out)" -eq 1500 ] || fail "--limit 1500: $(wc -l <out) lines"
ok
[ "$(tail -1 out | cut -f5)" = key01499 ] || fail "--limit 1500: last $(tail -1 out)"
ok

idem list --state pending
[ "$(wc -l <out)" -eq 834 ] || fail "--state pending: $(wc -l <out) lines"
ok
[ "$(cut -f1 out | sort -u)" = pending ] || fail "--state pending: other states"
ok
idem list --state completed --limit 1200
[ "$(wc -l <out)" -eq 1200 ] || fail "--state completed --limit 1200"
ok

idem list --json
python3 -c '
import json
doc = json.load(open("out"))
keys = [r["key"] for r in doc]
assert keys == ["key%05d" % i for i in range(2500)], len(keys)
' || fail "list --json of 2500 keys"
ok

done_ok
