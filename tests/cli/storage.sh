#!/bin/sh
# SPDX-License-Identifier: MIT
# Databases that cannot be used: exit 74 with a message naming the file,
# the command not run, and a file that is not ours left byte for byte.
. "$(dirname "$0")/lib.sh"

sum() { sha256sum "$1" | cut -d' ' -f1; }

# Random bytes: not an SQLite database.
head -c 8192 /dev/urandom >garbage.db
before=$(sum garbage.db)
idem run -d garbage.db k sh -c 'touch ran; echo hi'
expect_rc 74 "garbage database"
[ ! -s out ] || fail "garbage database: output"
ok
[ ! -e ran ] || fail "garbage database: the command ran"
ok
expect_err "garbage\\.db" "garbage database: message names the file"
for cmd in "get k" "list" "stats" "reset k" "reset --all-poisoned" "gc"; do
  # shellcheck disable=SC2086
  idem $cmd -d garbage.db
  expect_rc 74 "garbage database: $cmd"
done
[ "$(sum garbage.db)" = "$before" ] || fail "garbage database was modified"
ok
[ ! -e garbage.db-wal ] && [ ! -e garbage.db-journal ] ||
  fail "garbage database got a journal"
ok

# Another application's SQLite database.
python3 -c '
import sqlite3
c = sqlite3.connect("foreign.db")
c.execute("create table accounts(id integer primary key, name text)")
c.execute("insert into accounts(name) values (\"alice\")")
c.commit()
'
before=$(sum foreign.db)
idem run -d foreign.db k sh -c 'touch ran'
expect_rc 74 "foreign database"
[ ! -e ran ] || fail "foreign database: the command ran"
ok
expect_err "foreign\\.db" "foreign database: message names the file"
[ "$(sum foreign.db)" = "$before" ] || fail "foreign database was modified"
ok

# A directory, a missing directory.
mkdir dir.db
idem run -d dir.db k true
expect_rc 74 "database is a directory"
expect_err "dir\\.db" "directory: message names it"
idem run -d "$T/no/such/dir/x.db" k true
expect_rc 74 "database in a missing directory"
expect_err "no/such/dir/x\\.db" "missing directory: message names the file"

# The read-only subcommands neither create a database nor its directory.
for cmd in "get k" "list" "stats" "reset k" "gc"; do
  # shellcheck disable=SC2086
  idem $cmd -d absent.db
  expect_rc 74 "missing database: $cmd"
  [ ! -e absent.db ] || fail "$cmd created the database"
  ok
done

# A database that cannot be written (not testable as root, who may write
# anything).
if [ "$(id -u)" -ne 0 ]; then
  idem run -d ro.db k true
  chmod 444 ro.db
  chmod 555 "$T"
  idem run -d ro.db k2 true
  chmod 755 "$T"
  expect_rc 74 "read-only database"
fi

done_ok
