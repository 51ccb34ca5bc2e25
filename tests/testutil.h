/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - helpers shared by the libidem test suites.
 *
 * Every suite is a cmocka binary. A test gets a fixture (tu_fx) with a fresh
 * temporary directory that is removed afterwards, a database path inside it,
 * a fake clock and idem_options that use that clock and no heartbeat thread.
 * Tests move the fake clock instead of sleeping for a TTL.
 */
#ifndef IDEM_TESTUTIL_H
#define IDEM_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <idem.h>

/* --- Fake clock ----------------------------------------------------------
 * Two independent clocks, as the library asks for them: IDEM_CLOCK_LEASE
 * (boot-time ms, lease deadlines) and IDEM_CLOCK_WALL (epoch ms, retention).
 * Thread-safe: the values are atomics, so a heartbeat thread may read them
 * while a test moves them. */
typedef struct tu_clock {
  _Atomic int64_t lease_ms;
  _Atomic int64_t wall_ms;
} tu_clock;

#define TU_LEASE_START INT64_C(1000000)
#define TU_WALL_START INT64_C(1700000000000)

void tu_clock_init(tu_clock *c);
/* Moves the lease clock forward (never backwards: the library may rely on
 * it being monotonic). */
void tu_clock_advance_lease(tu_clock *c, int64_t ms);
/* Moves the wall clock by ms, which may be negative (a `date -s` step). */
void tu_clock_step_wall(tu_clock *c, int64_t ms);
/* Moves both clocks forward by ms. */
void tu_clock_advance(tu_clock *c, int64_t ms);
int64_t tu_clock_now(tu_clock *c, int which);
/* The idem_options.clock callback; ctx is a tu_clock. */
int64_t tu_clock_cb(void *ctx, int which);

/* --- Files ------------------------------------------------------------ */

/* A new private directory under $TMPDIR (or /tmp); malloc'd path. */
char *tu_tmpdir(void);
/* Removes a directory tree; returns 0 on success. */
int tu_rmtree(const char *path);
/* dir + "/" + name, malloc'd. */
char *tu_path(const char *dir, const char *name);
/* path + suffix (e.g. "-wal"), malloc'd. */
char *tu_suffix(const char *path, const char *suffix);
int tu_exists(const char *path);
/* FNV-1a 64 over the file's bytes; returns 0 on success, -1 if unreadable. */
int tu_checksum(const char *path, uint64_t *out);
/* Writes (creates or truncates) a file; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file into a malloc'd, NUL-terminated buffer; NULL on
 * failure. */
char *tu_read_file(const char *path, size_t *len);

/* --- Direct SQL ----------------------------------------------------------
 * Runs `sql` on the file with SQLite directly (to simulate what the API
 * cannot, e.g. a lease written under another boot). Returns SQLite's code. */
int tu_sql(const char *path, const char *sql);
/* Runs a query returning one integer; returns SQLite's code. */
int tu_sql_int(const char *path, const char *sql, int64_t *out);
/* Asserts that PRAGMA integrity_check of the file says "ok". */
void tu_assert_integrity(const char *path);

/* --- Opening --------------------------------------------------------------
 * Test defaults: ttl 10000 ms, no heartbeat thread (heartbeat_ms -1), 5
 * attempts, retention forever, the given fake clock (NULL: real clocks). */
idem_options tu_options(tu_clock *clock);
/* idem_open(); on failure closes any handle it returned and sets *db NULL. */
int tu_open(idem_db **db, const char *path, const idem_options *opts);

/* --- Short forms ------------------------------------------------------- */

/* Clears *out and begins the NUL-terminated key with no options. */
int tu_begin(idem_db *db, const char *key, idem_answer *out);
/* Clears *out and begins with a fingerprint (a NUL-terminated string, or
 * NULL for none). */
int tu_begin_fp(idem_db *db, const char *key, const char *fp, idem_answer *out);
/* Begins `key` and asserts IDEM_CLAIMED; returns the lease. */
idem_lease *tu_claim(idem_db *db, const char *key);
/* Claims `key` and completes it with the NUL-terminated result. */
void tu_claim_complete(idem_db *db, const char *key, const char *result);
/* Asserts that `key` answers IDEM_COMPLETED with exactly `result`. */
void tu_assert_completed(idem_db *db, const char *key, const char *result);
/* idem_stats_get(), asserting IDEM_OK. */
idem_stats tu_stats(idem_db *db);
/* idem_get() of a NUL-terminated key. */
int tu_get(idem_db *db, const char *key, idem_record *rec);

/* --- Real time and the write lock --------------------------------------
 * For tests that line up threads behind SQLite's write lock: they wait on
 * events they can see (tickets of the writers' queue), never for a TTL. */

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t tu_real_ms(void);
void tu_sleep_ms(long ms);
/* Tickets the writers' queue of the database at `path` has handed out
 * (lib/queue.c keeps the count in the second word of "<path>-lockq"). */
uint32_t tu_queue_tickets(const char *path);
/* Waits, for at most 10 s of real time, until `n` tickets were handed out:
 * that many writers have begun to wait for their turn. */
void tu_wait_tickets(const char *path, uint32_t n);
struct sqlite3;
/* Opens a plain SQLite connection to `path` and takes the write lock with
 * BEGIN IMMEDIATE, outside the writers' queue; asserts it did. */
struct sqlite3 *tu_hold_write_lock(const char *path);
/* Commits and closes what tu_hold_write_lock() opened. */
void tu_drop_write_lock(struct sqlite3 *conn);

/* --- on_lost ------------------------------------------------------------
 * Records what idem_options.on_lost was told, from any thread. */
typedef struct tu_lost {
  _Atomic int calls;
  _Atomic(idem_lease *) lease; /* the last lease told of */
} tu_lost;

/* Clears the record and points o->on_lost at it. */
void tu_lost_watch(tu_lost *seen, idem_options *o);

/* --- Fixture ----------------------------------------------------------- */
typedef struct tu_fx {
  char *dir;  /* temporary directory, removed by the teardown */
  char *path; /* dir/idem.db */
  tu_clock clock;
  idem_options opts; /* tu_options(&clock) */
  idem_db *db;       /* opened by tu_fx_setup_open, closed by teardown */
} tu_fx;

int tu_fx_setup(void **state);
int tu_fx_setup_open(void **state);
int tu_fx_teardown(void **state);

#endif
