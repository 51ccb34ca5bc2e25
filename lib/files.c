/* SPDX-License-Identifier: MIT */
/*
 * files.c - the names of the files kept beside a database.
 *
 * The list lives in the library, not in each caller, because it grows with
 * the library: when the writers' queue (-lockq) was added, every program
 * that spelled the names out by hand began to leave a file behind.
 */
#include "idem.h"

#include <stddef.h>

/* Appended to, never reordered: callers may remember an index. "-journal"
 * is last because it only exists for a moment, while SQLite creates a new
 * database in rollback mode before it is switched to WAL; a crash then
 * leaves it behind, and it must go with the database. */
static const char *const suffixes[] = {"", "-wal", "-shm", "-lockq",
                                       "-journal"};

const char *idem_file_suffix(unsigned i) {
  return i < sizeof suffixes / sizeof suffixes[0] ? suffixes[i] : NULL;
}
