/* SPDX-License-Identifier: MIT */
/*
 * fence_sql.c - idem_fence_ok(key, fence), fencing inside the
 * application's own SQL.
 *
 * A fencing token only protects a resource that checks it. When the
 * resource is a table in the same database, the check can be part of the
 * application's own statement:
 *
 *   UPDATE accounts SET balance = balance + 10
 *    WHERE id = 7 AND idem_fence_ok('invoice-1001', 42);
 *
 * changes nothing unless fence 42 is still the key's current claim, so a
 * holder that was overtaken cannot write, even if it never calls libidem
 * again. It is true while the key's row carries that fence and the lease
 * is held, or the key was completed or failed under it; false otherwise
 * (released, taken over, reset, unknown key). It reads the row through the
 * caller's connection, so it sees the caller's own uncommitted writes.
 */
#include "internal.h"

#include <sqlite3.h>

static void fence_ok(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL ||
      sqlite3_value_type(argv[1]) == SQLITE_NULL) {
    sqlite3_result_int(ctx, 0);
    return;
  }
  sqlite3 *conn = sqlite3_context_db_handle(ctx);
  sqlite3_stmt *s;
  int rc = sqlite3_prepare_v2(
      conn,
      "SELECT 1 FROM idem_keys WHERE key = ?1 AND fence = ?2 "
      "AND (owner IS NOT NULL OR state IN (2, 3))",
      -1, &s, NULL);
  if (rc != SQLITE_OK) {
    sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
    return;
  }
  /* Keys are stored as blobs; a text argument names the same bytes. */
  const void *key = sqlite3_value_blob(argv[0]);
  int len = sqlite3_value_bytes(argv[0]);
  sqlite3_bind_blob(s, 1, key ? key : "", len, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 2, sqlite3_value_int64(argv[1]));
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW || rc == SQLITE_DONE)
    sqlite3_result_int(ctx, rc == SQLITE_ROW);
  else
    sqlite3_result_error(ctx, sqlite3_errmsg(conn), -1);
  sqlite3_finalize(s);
}

int idem__fence_sql_register(sqlite3 *conn) {
  return sqlite3_create_function(conn, "idem_fence_ok", 2, SQLITE_UTF8, NULL,
                                 fence_ok, NULL, NULL);
}
