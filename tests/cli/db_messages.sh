#!/bin/sh
# SPDX-License-Identifier: MIT
# A database that cannot be opened, read or written is reported with its
# path, the system's words for the cause (errno's text) and what to do,
# never with a name of the C API (IDEM_OPEN_..., IDEM_E...). A user who
# may only read gets told that a reader of a database in WAL mode writes
# its -shm file, and what works instead. Exit status 74 throughout.
#
# The permission cases run as nobody when the tests run as root (who may
# write anything), else as the user running them.
. "$(dirname "$0")/lib.sh"
# Directories made unwritable below are made writable again before they
# are removed.
trap 'chmod -R u+w "$T" 2>/dev/null; cleanup' EXIT

no_api_names() { # description
  ! grep -Eq 'IDEM_[A-Z]|SQLITE_' err || fail "$1: names the C API: $(cat err)"
  ok
}

# A missing directory.
idem run -d "$T/no/such/x.db" k true
expect_rc 74 "missing directory"
expect_err "'$T/no/such/x\\.db': No such file or directory" "missing directory: path and errno"
expect_err "directory '$T/no/such' does not exist: create it or choose another database with -d" \
  "missing directory: what to do"
no_api_names "missing directory"
idem list -d "$T/no/such/x.db"
expect_rc 74 "list, missing directory"
expect_err "directory '$T/no/such' does not exist" "list, missing directory"

# A missing file, for the subcommands that never create one.
for cmd in "get k" "list" "stats" "reset k" "gc"; do
  # shellcheck disable=SC2086
  idem $cmd -d "$T/absent.db"
  expect_rc 74 "$cmd, missing file"
  expect_err "'$T/absent\\.db': No such file or directory: there is no database there yet \\('idem run' creates it\\)" \
    "$cmd, missing file"
  no_api_names "$cmd, missing file"
done

# A directory.
mkdir dir.db
idem run -d dir.db k true
expect_rc 74 "a directory"
expect_err "'dir\\.db': Is a directory: give the path of a database file" "a directory"
no_api_names "a directory"

# Not a database, another application's database: left alone, and the
# message says so without the library's flag for sharing a database.
head -c 4096 /dev/urandom >garbage.db
idem list -d garbage.db
expect_rc 74 "garbage"
expect_err "'garbage\\.db': not an SQLite database; left untouched: choose the right file with -d" \
  "garbage"
no_api_names "garbage"
python3 -c '
import sqlite3
c = sqlite3.connect("foreign.db")
c.execute("create table accounts(id integer primary key)")
c.commit()
'
idem run -d foreign.db k true
expect_rc 74 "foreign"
expect_err "'foreign\\.db': a database of another application; left untouched: choose the right file with -d" \
  "foreign"
no_api_names "foreign"

# Permissions, as a user who is not root.
if [ "$(id -u)" -eq 0 ]; then
  chmod 755 "$T"
  as_user() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
  owner=root
else
  as_user() { "$@"; }
  owner=$(id -un)
fi
if ! as_user "$IDEM" --version >/dev/null 2>&1; then
  echo "skip: $IDEM cannot be run as another user here"
  done_ok
fi
user_idem() {
  as_user "$IDEM" "$@" >"$T/out" 2>"$T/err"
  RC=$?
}

# A database in a directory this user may not write, the database itself
# readable but not writable: made by its owner, then closed (so no -wal
# or -shm is left).
mkdir shared
"$IDEM" run -d shared/jobs.db finished echo finished >/dev/null
chmod 444 shared/jobs.db
chmod 555 shared
[ ! -e shared/jobs.db-shm ] || fail "a -shm file was left behind"
ok

for cmd in "list" "stats" "get finished"; do
  # shellcheck disable=SC2086
  user_idem $cmd -d "$T/shared/jobs.db"
  expect_rc 74 "reader: $cmd"
  expect_err "'$T/shared/jobs\\.db': Permission denied: even reading a database in WAL mode writes its -shm file" \
    "reader: $cmd: says why"
  expect_err "cannot create '$T/shared/jobs\\.db-shm' in '$T/shared'" "reader: $cmd: names the file"
  expect_err "run as $owner, who owns the database" "reader: $cmd: what works"
  no_api_names "reader: $cmd"
done

# The same user may read it while another process has it open, as the
# -shm file then exists (and is readable): what the message says.
if [ "$(id -u)" -eq 0 ]; then
  chmod 755 shared
  chmod 644 shared/jobs.db
  "$IDEM" run -d shared/jobs.db holder sh -c 'touch started; exec sleep 30' >/dev/null 2>&1 &
  BG_PIDS="$BG_PIDS $!"
  wait_for 10 test -e started
  chmod 555 shared
  user_idem list -d "$T/shared/jobs.db"
  expect_rc 0 "reader while a writer has it open"
  grep -q "finished" out || fail "reader while a writer has it open: $(cat out)"
  ok
  chmod 755 shared
fi

# A writer that may not write the database.
user_idem run -d "$T/shared/jobs.db" k true
expect_rc 74 "writer, read-only file"
expect_err "'$T/shared/jobs\\.db': Permission denied: this user may not write the file: run as $owner" \
  "writer, read-only file"
no_api_names "writer, read-only file"

# A new database in a directory this user may not write.
mkdir closed
chmod 555 closed
user_idem run -d "$T/closed/new.db" k true
expect_rc 74 "writer, closed directory"
expect_err "'$T/closed/new\\.db': Permission denied: this user cannot create files in '$T/closed'" \
  "writer, closed directory"
no_api_names "writer, closed directory"

done_ok
