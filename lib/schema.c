/* SPDX-License-Identifier: MIT */
/*
 * schema.c - recognising, creating and configuring an idem database.
 *
 * A file is judged before anything is written to it, on a read-only
 * connection that cannot change it (not even by the checkpoint that
 * closing the last read-write connection of a WAL database performs):
 *
 *   no tables at all       -> new: ours to set up;
 *   idem_meta, version 1   -> ours;
 *   idem_meta, other       -> IDEM_ESCHEMA, written by a newer library;
 *   other idem_* tables    -> IDEM_ESCHEMA, not a layout we know;
 *   only other tables      -> IDEM_EFOREIGN unless IDEM_OPEN_SHARED;
 *   not readable as SQLite -> IDEM_ENOTDB / IDEM_ECORRUPT.
 *
 * A file of zero bytes is an empty SQLite database and counts as new: it
 * holds nothing a write could destroy, and it is what a crash between
 * creating a file and writing its first page leaves behind.
 *
 * The fence floor in idem_meta is the largest fence any deleted row had, so
 * a key that comes back after a reset or purge continues above it.
 */
#include "schema.h"

#include <sqlite3.h>
#include <string.h>

#define SCHEMA_VERSION 1

static const char create_sql[] =
    "CREATE TABLE IF NOT EXISTS idem_meta ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO idem_meta VALUES ('schema_version', 1);"
    "INSERT OR IGNORE INTO idem_meta VALUES ('fence_floor', 0);"
    "CREATE TABLE IF NOT EXISTS idem_keys ("
    " key BLOB PRIMARY KEY NOT NULL,"
    " state INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " fence INTEGER NOT NULL,"
    " owner BLOB,"
    " lease_boot BLOB,"
    " lease_until INTEGER,"
    " owner_pid INTEGER,"
    " owner_pidns INTEGER,"
    " owner_start INTEGER,"
    " fingerprint BLOB,"
    " name TEXT,"
    " code INTEGER NOT NULL DEFAULT 0,"
    " result BLOB,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " expires_at INTEGER,"
    " history TEXT) WITHOUT ROWID;";

int idem__schema_version(void) {
  return SCHEMA_VERSION;
}

/* Reads schema_version from idem_meta; -1 when it is missing or garbled. */
static int meta_version(sqlite3 *conn, int *rc_out) {
  sqlite3_stmt *s;
  int version = -1;
  *rc_out = sqlite3_prepare_v2(
      conn, "SELECT value FROM idem_meta WHERE name = 'schema_version'", -1, &s,
      NULL);
  if (*rc_out != SQLITE_OK)
    return -1;
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) == SQLITE_INTEGER)
    version = sqlite3_column_int(s, 0);
  else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    *rc_out = rc;
  sqlite3_finalize(s);
  return version;
}

/* Whether idem_keys has the columns this version reads: a file written
 * by a development build of the same version number may lack some. Any
 * other failure (out of memory, I/O) is an error, not an answer. */
static int has_columns(sqlite3 *conn, bool *has) {
  sqlite3_stmt *s;
  int rc =
      sqlite3_prepare_v2(conn,
                         "SELECT key, state, attempts, fence, owner, "
                         "lease_boot, lease_until, owner_pid, owner_pidns, "
                         "owner_start, fingerprint, name, code, result, "
                         "created_at, updated_at, expires_at, history "
                         "FROM idem_keys LIMIT 0",
                         -1, &s, NULL);
  sqlite3_finalize(s);
  *has = rc == SQLITE_OK;
  return rc == SQLITE_ERROR ? SQLITE_OK : rc;
}

int idem__schema_classify(sqlite3 *conn, int *kind, int *version) {
  sqlite3_stmt *s;
  *kind = IDEM__SCHEMA_NEW;
  *version = 0;
  int rc = sqlite3_prepare_v2(conn,
                              "SELECT name LIKE 'idem\\_%' ESCAPE '\\',"
                              " name = 'idem_meta' FROM sqlite_schema",
                              -1, &s, NULL);
  if (rc != SQLITE_OK)
    return rc;
  int ours = 0, meta = 0, others = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (sqlite3_column_int(s, 1))
      meta = 1;
    if (sqlite3_column_int(s, 0))
      ours++;
    else
      others++;
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE)
    return rc;
  if (meta) {
    *version = meta_version(conn, &rc);
    if (rc != SQLITE_OK)
      return rc;
    bool has = false;
    if (*version == SCHEMA_VERSION && (rc = has_columns(conn, &has)))
      return rc;
    *kind = has ? IDEM__SCHEMA_OURS : IDEM__SCHEMA_UNKNOWN;
  } else if (ours) {
    *kind = IDEM__SCHEMA_UNKNOWN;
  } else if (others) {
    *kind = IDEM__SCHEMA_FOREIGN;
  }
  return SQLITE_OK;
}

int idem__schema_create(sqlite3 *conn) {
  return sqlite3_exec(conn, create_sql, NULL, NULL, NULL);
}

int idem__schema_configure(sqlite3 *conn, int synchronous, bool readonly,
                           bool new_file) {
  if (readonly)
    return sqlite3_exec(conn, "PRAGMA query_only = 1", NULL, NULL, NULL);
  /* auto_vacuum can only be chosen before the first page is written; in a
   * shared database the application's choice stands. */
  int rc = new_file ? sqlite3_exec(conn, "PRAGMA auto_vacuum = INCREMENTAL",
                                   NULL, NULL, NULL)
                    : SQLITE_OK;
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_stmt *s;
  rc = sqlite3_prepare_v2(conn, "PRAGMA journal_mode = WAL", -1, &s, NULL);
  if (rc != SQLITE_OK)
    return rc;
  rc = sqlite3_step(s);
  bool wal = rc == SQLITE_ROW &&
             strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
  sqlite3_finalize(s);
  if (rc != SQLITE_ROW)
    return rc;
  if (!wal)
    return SQLITE_CANTOPEN; /* e.g. a VFS without shared memory */
  /* The WAL is cut back to this size after a checkpoint, so one burst of
   * writes does not keep its disk space for good. It is above the size the
   * checkpoints hold the WAL to (heartbeat.c), or every restart of the WAL
   * under a steady writer would cost that writer a truncate of milliseconds
   * and the file system the blocks to grow it again. */
  rc = sqlite3_exec(conn, "PRAGMA journal_size_limit = 33554432", NULL, NULL,
                    NULL);
  if (rc != SQLITE_OK)
    return rc;
  return sqlite3_exec(conn,
                      synchronous == IDEM_SYNC_FULL
                          ? "PRAGMA synchronous = FULL"
                          : "PRAGMA synchronous = NORMAL",
                      NULL, NULL, NULL);
}
