#!/bin/sh
# SPDX-License-Identifier: MIT
# Without -d or IDEM_DB, the database is the user's state directory's
# (XDG_STATE_HOME, else ~/.local/state) or, for root, /var/lib/idem's:
# never the current directory. idem run creates its directory (0700, or
# 0755 for root); the other subcommands create nothing; -d and IDEM_DB
# win and then nothing is created.
#
# The user's part runs as nobody when the tests run as root. Root's part
# runs in a private mount namespace with a tmpfs over /var/lib, so that the
# machine's /var/lib is never written; it is skipped where that cannot be
# had (not root, or no unshare).
. "$(dirname "$0")/lib.sh"
# Directories made unwritable below are made writable again before they
# are removed.
trap 'chmod -R u+w "$T" 2>/dev/null; cleanup' EXIT

mode_of() { stat -c %a "$1"; }

# as_user CMD...: runs CMD as a user who is not root: nobody when the
# tests run as root, else the user running them.
if [ "$(id -u)" -eq 0 ]; then
  chmod 755 "$T"
  as_user() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
else
  as_user() { "$@"; }
fi
if ! as_user "$IDEM" --version >/dev/null 2>&1; then
  echo "skip: $IDEM cannot be run as another user here"
  exit 0
fi

# user_idem VAR=VALUE... COMMAND...: runs COMMAND as that user with only
# PATH and the variables given, stdout in ./out, stderr in ./err.
mkdir -m 777 cwd
user_idem() {
  as_user env -i PATH="$PATH" "$@" >"$T/out" 2>"$T/err"
  RC=$?
}

# XDG_STATE_HOME, absolute and not there yet: created, 0700.
mkdir -m 777 u
user_idem XDG_STATE_HOME="$T/u/xdg" HOME="$T/u/home" sh -c \
  "cd '$T/cwd' && exec '$IDEM' run k echo hi"
expect_rc 0 "run with the default database"
expect_out "hi" "run with the default database"
[ -f "$T/u/xdg/idem/idem.db" ] || fail "not in \$XDG_STATE_HOME/idem: $(find "$T/u" "$T/cwd")"
ok
[ "$(mode_of "$T/u/xdg/idem")" = 700 ] || fail "mode of xdg/idem: $(mode_of "$T/u/xdg/idem")"
ok
[ ! -e "$T/u/home" ] || fail "HOME was used though XDG_STATE_HOME is set"
ok
[ -z "$(ls -A "$T/cwd")" ] || fail "something was created in the current directory: $(ls -A "$T/cwd")"
ok
# The same database again, from another directory: replayed.
user_idem XDG_STATE_HOME="$T/u/xdg" HOME="$T/u/home" sh -c \
  "cd / && exec '$IDEM' run --no-fingerprint k echo again"
expect_out "hi" "the default database found again"
user_idem XDG_STATE_HOME="$T/u/xdg" HOME="$T/u/home" "$IDEM" list
expect_rc 0 "list of the default database"
[ "$(cut -f5 out)" = k ] || fail "list: $(cat out)"
ok

# Without XDG_STATE_HOME, or with a relative one (which the XDG
# specification says to ignore): ~/.local/state/idem, every missing
# directory made 0700 whatever the umask lets through.
mkdir -m 777 h
for xdg in unset relative; do
  set -- HOME="$T/h/$xdg"
  [ "$xdg" = relative ] && set -- "$@" XDG_STATE_HOME=rel/state
  user_idem "$@" sh -c "umask 022; cd '$T/cwd' && exec '$IDEM' run k echo $xdg"
  expect_rc 0 "XDG_STATE_HOME $xdg"
  [ -f "$T/h/$xdg/.local/state/idem/idem.db" ] ||
    fail "XDG_STATE_HOME $xdg: not in ~/.local/state/idem: $(find "$T/h" "$T/cwd")"
  ok
  for d in .local .local/state .local/state/idem; do
    [ "$(mode_of "$T/h/$xdg/$d")" = 700 ] ||
      fail "XDG_STATE_HOME $xdg: mode of $d: $(mode_of "$T/h/$xdg/$d")"
    ok
  done
done
[ ! -e "$T/cwd/rel" ] || fail "a relative XDG_STATE_HOME was used"
ok

# The subcommands that do not create a database create no directory
# either, and say that there is none yet.
mkdir -m 777 n
for cmd in "list" "stats" "get k" "gc" "reset k"; do
  # shellcheck disable=SC2086
  user_idem XDG_STATE_HOME="$T/n/xdg" "$IDEM" $cmd
  expect_rc 74 "$cmd without a database"
  expect_err "no database at the default path yet" "$cmd without a database"
  expect_err "$T/n/xdg/idem/idem\\.db" "$cmd: names the default path"
  [ ! -e "$T/n/xdg" ] || fail "$cmd created $(find "$T/n")"
  ok
done

# -d and IDEM_DB win, and then no default directory is made (not even
# when the database given cannot be opened).
mkdir -m 777 w
user_idem XDG_STATE_HOME="$T/w/xdg" IDEM_DB="$T/w/env.db" "$IDEM" run k true
expect_rc 0 "IDEM_DB"
[ -f "$T/w/env.db" ] && [ ! -e "$T/w/xdg" ] || fail "IDEM_DB: $(find "$T/w")"
ok
user_idem XDG_STATE_HOME="$T/w/xdg" IDEM_DB="$T/w/env.db" "$IDEM" run \
  -d "$T/w/opt.db" k true
[ -f "$T/w/opt.db" ] && [ ! -e "$T/w/xdg" ] || fail "-d: $(find "$T/w")"
ok
user_idem XDG_STATE_HOME="$T/w/xdg" "$IDEM" run -d "$T/w/no/such/x.db" k true
expect_rc 74 "-d in a missing directory"
[ ! -e "$T/w/no" ] && [ ! -e "$T/w/xdg" ] || fail "-d: a directory was created: $(find "$T/w")"
ok

# A state directory that cannot be made: the message names it.
mkdir -m 555 ro
user_idem XDG_STATE_HOME="$T/ro/xdg" "$IDEM" run k true
expect_rc 74 "unwritable state directory"
expect_err "cannot create directory '$T/ro/xdg'.*Permission denied" \
  "unwritable state directory"

# Root: /var/lib/idem/idem.db, its directory made 0755 whatever the umask,
# and neither HOME nor XDG_STATE_HOME used. In a mount namespace of its
# own with an empty tmpfs on /var/lib: the machine's is never touched.
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: root's default database is not checked"
  done_ok
fi
cat >root.sh <<EOF
set -u
# Not a tmpfs of our own: touch nothing.
mount -t tmpfs tmpfs /var/lib || exit 3
[ "\$(stat -f -c %T /var/lib)" = tmpfs ] || exit 3
[ -z "\$(ls -A /var/lib)" ] || exit 3
export HOME="$T/roothome" XDG_STATE_HOME="$T/rootxdg"
unset IDEM_DB
cd "$T/cwd" || exit 1
"$IDEM" list >"$T/root-list.out" 2>"$T/root-list.err"
echo "list \$?"
[ -e /var/lib/idem ] && echo "list created /var/lib/idem"
umask 077
"$IDEM" run k echo root
echo "run \$?"
stat -c 'mode %a' /var/lib/idem
[ -f /var/lib/idem/idem.db ] && echo "database there"
"$IDEM" list | cut -f5
EOF
if ! command -v unshare >/dev/null 2>&1; then
  echo "no unshare: root's default database is not checked"
  done_ok
fi
unshare -m sh root.sh >out 2>err
RC=$?
if [ "$RC" -eq 3 ] || grep -q "unshare: " err; then
  echo "no private tmpfs over /var/lib here: root's default database is not checked"
  done_ok
fi
expect_rc 0 "root's part"
grep -qx "list 74" out || fail "root: list without a database: $(cat out)"
ok
grep -q "no database at the default path yet" root-list.err ||
  fail "root: list message: $(cat root-list.err)"
ok
grep -q "/var/lib/idem/idem\\.db" root-list.err || fail "root: list names the path"
ok
! grep -q "list created" out || fail "root: list created /var/lib/idem"
ok
grep -qx "root" out && grep -qx "run 0" out || fail "root: run: $(cat out)"
ok
grep -qx "mode 755" out || fail "root: mode of /var/lib/idem: $(cat out)"
ok
grep -qx "database there" out || fail "root: no /var/lib/idem/idem.db: $(cat out)"
ok
[ "$(tail -1 out)" = k ] || fail "root: list: $(cat out)"
ok
[ ! -e "$T/roothome" ] && [ ! -e "$T/rootxdg" ] && [ -z "$(ls -A "$T/cwd")" ] ||
  fail "root: HOME, XDG_STATE_HOME or the current directory was used"
ok

done_ok
