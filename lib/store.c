/* SPDX-License-Identifier: MIT */
/*
 * store.c - all SQL of the state machine, on one SQLite connection.
 *
 * Statements are prepared once per connection and kept, so a begin costs
 * its SQL steps and no parsing. Fenced writes carry the owner and the fence
 * in their WHERE clause: a row that another claim has moved on simply does
 * not match, which is what makes a stale holder harmless.
 *
 * The busy handler replaces SQLite's default one, whose sleeps of up to
 * 100 ms make a waiting writer miss many chances to take the lock: ours
 * yields, then sleeps for a few tens of microseconds growing to 1 ms, until
 * the busy timeout.
 */
#include "store.h"

#include "history.h"
#include "queue.h"

#include <sched.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
  S_BEGIN_READ,
  S_BEGIN_WRITE,
  S_COMMIT,
  S_ROLLBACK,
  S_GET,
  S_GET_RESULT,
  S_GET_ALL,
  S_PEEK,
  S_FLOOR,
  S_RAISE_FLOOR,
  S_CLAIM,
  S_POISON,
  S_FINISH,
  S_RELEASE,
  S_MARK_LOST,
  S_HISTORY,
  S_TOUCH,
  S_DELETE,
  S_RAISE_FLOOR_STATE,
  S_DELETE_STATE,
  S_PURGE_LAST,
  S_RAISE_FLOOR_PURGE,
  S_PURGE,
  S_TERMINAL_TOTALS,
  S_EVICT_EXPIRING,
  S_EVICT_FOREVER,
  S_COUNT_STATES,
  S_COUNT_LEASED,
  S_COUNT_EXPIRED,
  S_COUNTER_ADD,
  S_COUNTERS,
  S_NSTMT
};

/* A row is read in parts: the head that every answer needs, the lease that
 * only a pending row has, what a finished (completed or failed) row is
 * answered with, and the rest, which only claims and the admin calls use.
 * SQLite's cost per step grows with every column it returns, NULL or not,
 * and a cached hit costs little more than that step: a begin's snapshot
 * (idem__row_peek) leaves out the rest. */
#define HEAD_COLUMNS "state, attempts, fence, code, fingerprint"
#define LEASE_COLUMNS                                                          \
  "owner, lease_boot, lease_until, owner_pid, owner_pidns, owner_start"
#define FINISHED_COLUMNS(result) "updated_at, expires_at, " result
/* The result's column holds its length when the result itself is not
 * read; reading both would cost a function call per begin. */
#define ROW_COLUMNS_WITH(result)                                               \
  HEAD_COLUMNS ", " LEASE_COLUMNS                                              \
               ", " FINISHED_COLUMNS(result) ", name, created_at"
#define ROW_COLUMNS ROW_COLUMNS_WITH("length(result)")
#define RESULT_COLUMNS ROW_COLUMNS_WITH("result")
#define LEASE_COLUMN 5
#define FINISHED_COLUMN 11
#define RESULT_COLUMN 13
#define NAME_COLUMN 14
#define CREATED_COLUMN 15
#define TAIL_COLUMN 16 /* the history, or a scan's key */
#define BY_KEY " FROM idem_keys WHERE key = ?1"

static const char *const sql_text[S_NSTMT] = {
    [S_BEGIN_READ] = "BEGIN",
    [S_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_GET] = "SELECT " ROW_COLUMNS BY_KEY,
    [S_GET_RESULT] = "SELECT " RESULT_COLUMNS BY_KEY,
    [S_GET_ALL] = "SELECT " RESULT_COLUMNS ", history" BY_KEY,
    [S_PEEK] = "SELECT " HEAD_COLUMNS ", " LEASE_COLUMNS
               ", " FINISHED_COLUMNS("result") BY_KEY,
    [S_FLOOR] = "SELECT value FROM idem_meta WHERE name = 'fence_floor'",
    [S_RAISE_FLOOR] =
        "UPDATE idem_meta SET value = max(value, coalesce((SELECT fence FROM "
        "idem_keys WHERE key = ?1), 0)) WHERE name = 'fence_floor'",
    /* The history (history.h) is written whole by a claim or a poisoning,
     * which have read it, and appended to by the calls that end an
     * attempt, which have not: concatenation needs no parse. */
    [S_CLAIM] =
        "INSERT INTO idem_keys (key, state, attempts, fence, owner, "
        "lease_boot, lease_until, fingerprint, name, code, result, "
        "created_at, updated_at, expires_at, owner_pid, owner_pidns, "
        "owner_start, history) "
        "VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, NULL, ?9, ?10, NULL, "
        "?11, ?12, ?13, ?14) "
        "ON CONFLICT (key) DO UPDATE SET state = 1, attempts = ?2, "
        "fence = ?3, owner = ?4, lease_boot = ?5, lease_until = ?6, "
        "fingerprint = ?7, name = ?8, code = 0, result = NULL, "
        "created_at = ?9, updated_at = ?10, expires_at = NULL, "
        "owner_pid = ?11, owner_pidns = ?12, owner_start = ?13, "
        "history = ?14",
    [S_POISON] = "UPDATE idem_keys SET state = 4, owner = NULL, "
                 "lease_boot = NULL, lease_until = NULL, owner_pid = NULL, "
                 "updated_at = ?2, expires_at = NULL, history = ?3 "
                 "WHERE key = ?1",
    [S_FINISH] = "UPDATE idem_keys SET state = ?5, code = ?6, result = ?7, "
                 "owner = NULL, lease_boot = NULL, lease_until = NULL, "
                 "owner_pid = NULL, updated_at = ?8, expires_at = ?9, "
                 "history = history || ?10 "
                 "WHERE key = ?1 AND state = 1 AND owner = ?2 AND fence = ?3",
    [S_RELEASE] = "UPDATE idem_keys SET owner = NULL, lease_boot = NULL, "
                  "lease_until = NULL, owner_pid = NULL, updated_at = ?4, "
                  "history = history || ?5 "
                  "WHERE key = ?1 AND state = 1 AND owner = ?2 AND fence = ?3",
    /* Once, and only for an attempt the history still holds. */
    [S_MARK_LOST] = "UPDATE idem_keys SET history = history || ?2 "
                    "WHERE key = ?1 AND instr(char(10) || history, ?3) > 0 "
                    "AND instr(char(10) || history, ?4) = 0",
    [S_HISTORY] = "SELECT history FROM idem_keys WHERE key = ?1",
    [S_TOUCH] = "UPDATE idem_keys SET lease_until = ?4 "
                "WHERE key = ?1 AND state = 1 AND owner = ?2 AND fence = ?3",
    [S_DELETE] = "DELETE FROM idem_keys WHERE key = ?1",
    [S_RAISE_FLOOR_STATE] =
        "UPDATE idem_meta SET value = max(value, (SELECT coalesce(max(fence), "
        "0) FROM idem_keys WHERE state = ?1)) WHERE name = 'fence_floor'",
    [S_DELETE_STATE] = "DELETE FROM idem_keys WHERE state = ?1",
    /* Purge walks the table in key order, one range of rows per
     * transaction. The completed and failed rows have no index of their own:
     * it would add a page to every completion's commit, where a purge
     * reads the table once per call. */
    [S_PURGE_LAST] =
        "SELECT max(key), count(*) FROM (SELECT key FROM idem_keys "
        "WHERE key > ?1 AND state IN (2, 3) AND expires_at <= ?2 "
        "ORDER BY key LIMIT ?3)",
    [S_RAISE_FLOOR_PURGE] =
        "UPDATE idem_meta SET value = max(value, coalesce((SELECT max(fence) "
        "FROM idem_keys WHERE key > ?1 AND key <= ?2 AND state IN (2, 3) "
        "AND expires_at <= ?3), 0)) WHERE name = 'fence_floor'",
    [S_PURGE] = "DELETE FROM idem_keys WHERE key > ?1 AND key <= ?2 "
                "AND state IN (2, 3) AND expires_at <= ?3",
    [S_TERMINAL_TOTALS] = "SELECT count(*), coalesce(sum(length(result)), 0) "
                          "FROM idem_keys WHERE state IN (2, 3)",
    [S_EVICT_EXPIRING] = "SELECT key, length(result) FROM idem_keys "
                         "WHERE state IN (2, 3) AND expires_at IS NOT NULL "
                         "ORDER BY expires_at",
    [S_EVICT_FOREVER] = "SELECT key, length(result) FROM idem_keys "
                        "WHERE state IN (2, 3) AND expires_at IS NULL "
                        "ORDER BY updated_at",
    [S_COUNT_STATES] = "SELECT state, count(*) FROM idem_keys GROUP BY state",
    /* Live by idem__boot_differs(): only two known boot ids that differ
     * (a row's is known when it is 16 bytes, ours when ?2 is not NULL)
     * put a lease on another boot; otherwise the deadline decides. */
    [S_COUNT_LEASED] =
        "SELECT count(*) FROM idem_keys WHERE state = 1 AND owner IS NOT NULL "
        "AND lease_until > ?1 AND (?2 IS NULL OR lease_boot = ?2 "
        "OR length(CAST(lease_boot AS BLOB)) IS NOT 16)",
    [S_COUNT_EXPIRED] = "SELECT count(*) FROM idem_keys WHERE expires_at <= ?1 "
                        "AND state IN (2, 3)",
    /* The counters of events are rows of idem_meta, made by their first
     * event: a database written before they existed needs no migration,
     * and a missing row reads as 0. */
    [S_COUNTER_ADD] = "INSERT INTO idem_meta (name, value) VALUES (?1, ?2) "
                      "ON CONFLICT (name) DO UPDATE SET value = value + ?2",
    [S_COUNTERS] =
        "SELECT name, value FROM idem_meta "
        "WHERE name IN ('" IDEM__COUNT_EVICTIONS "', '" IDEM__COUNT_POISONINGS
        "', '" IDEM__COUNT_TAKEOVERS "')",
};

struct idem__store {
  sqlite3 *conn;
  bool app_conn; /* the application's connection: not ours to close */
  sqlite3_stmt *stmt[S_NSTMT];
  sqlite3_stmt *borrowed; /* a stepped statement whose columns a row uses */
  int busy_timeout_ms;
  int64_t busy_since;
  bool no_wait; /* the busy handler gives up at once */
  bool waited;  /* the wait for the lock began in the queue, at busy_since */
  idem__queue *queue; /* NULL: polling alone */
  bool queued;        /* the open transaction was begun in the queue */
  bool own_tx;        /* the open transaction is ours, not the application's */
  char msg[256];      /* errors of our own, e.g. a failed prepare */
};

static int busy_wait(void *arg, int count) {
  idem__store *st = arg;
  if (st->no_wait)
    return 0;
  int64_t now = idem__monotonic_ms();
  if (count == 0 && !st->waited)
    st->busy_since = now;
  if (now - st->busy_since >= st->busy_timeout_ms)
    return 0;
  if (count < 3) {
    sched_yield();
    return 1;
  }
  long us = 20L << (count < 9 ? count - 3 : 6); /* 20 us .. 1.28 ms */
  if (us > 1000)
    us = 1000;
  struct timespec ts = {0, us * 1000L};
  nanosleep(&ts, NULL);
  return 1;
}

static int stmt(idem__store *st, int id, sqlite3_stmt **out);

/* ROLLBACK is prepared with the connection: undoing a failure must not
 * itself need memory, or an allocation failure would leave a transaction
 * open, holding the write lock, until the next call. */
static int prepare_rollback(idem__store *st) {
  sqlite3_stmt *s;
  return stmt(st, S_ROLLBACK, &s);
}

int idem__store_open(idem__store **out, const char *path, unsigned flags,
                     int busy_timeout_ms) {
  *out = NULL;
  idem__store *st = calloc(1, sizeof *st);
  if (!st)
    return SQLITE_NOMEM;
  int oflags = SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;
#ifdef SQLITE_OPEN_EXRESCODE
  oflags |= SQLITE_OPEN_EXRESCODE;
#endif
  if (flags & IDEM__STORE_READONLY)
    oflags |= SQLITE_OPEN_READONLY;
  else
    oflags |= SQLITE_OPEN_READWRITE;
  if (flags & IDEM__STORE_CREATE)
    oflags |= SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path, &st->conn, oflags, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_extended_result_codes(st->conn, 1);
    st->busy_timeout_ms = busy_timeout_ms;
    sqlite3_busy_handler(st->conn, busy_wait, st);
    rc = prepare_rollback(st);
  }
  *out = st;
  return rc;
}

int idem__store_wrap(idem__store **out, sqlite3 *conn, int busy_timeout_ms) {
  idem__store *st = calloc(1, sizeof *st);
  *out = st;
  if (!st)
    return SQLITE_NOMEM;
  st->conn = conn;
  st->app_conn = true;
  st->busy_timeout_ms = busy_timeout_ms;
  sqlite3_busy_handler(conn, busy_wait, st);
  return prepare_rollback(st);
}

bool idem__store_in_tx(const idem__store *st) {
  return !sqlite3_get_autocommit(st->conn);
}

void idem__store_queue(idem__store *st) {
  if (!st->queue)
    st->queue = idem__queue_open(sqlite3_db_filename(st->conn, "main"),
                                 IDEM__QUEUE_TURN_US);
}

void idem__store_close(idem__store *st) {
  if (!st)
    return;
  idem__queue_close(st->queue);
  for (int i = 0; i < S_NSTMT; i++)
    sqlite3_finalize(st->stmt[i]);
  if (st->app_conn) {
    /* Our handler points into this store: leave the application SQLite's
     * own wait of the same length instead. */
    sqlite3_busy_timeout(st->conn, st->busy_timeout_ms);
  } else {
    sqlite3_close(st->conn);
  }
  free(st);
}

const char *idem__store_errmsg(const idem__store *st) {
  if (st->msg[0])
    return st->msg;
  return st->conn ? sqlite3_errmsg(st->conn) : "out of memory";
}

sqlite3 *idem__store_conn(idem__store *st) {
  return st->conn;
}

void idem__row_done(idem__store *st) {
  if (st->borrowed) {
    sqlite3_reset(st->borrowed);
    st->borrowed = NULL;
  }
}

/* Hands out statement `id`, prepared on first use and reset for reuse. */
static int stmt(idem__store *st, int id, sqlite3_stmt **out) {
  idem__row_done(st);
  if (!st->stmt[id]) {
    int rc = sqlite3_prepare_v3(st->conn, sql_text[id], -1,
                                SQLITE_PREPARE_PERSISTENT, &st->stmt[id], NULL);
    if (rc != SQLITE_OK)
      return rc;
  }
  *out = st->stmt[id];
  return SQLITE_OK;
}

/* Steps a statement that returns no row, then resets it; an error's message
 * stays readable because reset returns the same code and keeps it. */
static int run(sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW)
    return SQLITE_OK;
  return rc;
}

static int bind_blob(sqlite3_stmt *s, int i, const void *p, size_t n) {
  if (!p)
    return sqlite3_bind_null(s, i);
  if (n == 0)
    return sqlite3_bind_zeroblob(s, i, 0);
  return sqlite3_bind_blob64(s, i, p, n, SQLITE_STATIC);
}

static int bind_fence(sqlite3_stmt *s, const idem__fence *f) {
  int rc = bind_blob(s, 1, f->key, f->key_len);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_blob(s, 2, f->owner, 16, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)f->fence);
  return rc;
}

static int simple(idem__store *st, int id) {
  sqlite3_stmt *s;
  int rc = stmt(st, id, &s);
  return rc ? rc : run(s);
}

/* A transaction starts a new operation: the message of an old error no
 * longer applies. */
static int tx_begin(idem__store *st, int id) {
  st->msg[0] = '\0';
  int rc = simple(st, id);
  st->own_tx = rc == SQLITE_OK;
  return rc;
}

int idem__tx_read(idem__store *st) {
  return tx_begin(st, S_BEGIN_READ);
}

/* Leaves the queue once the transaction it was begun in has ended. */
static void tx_ended(idem__store *st) {
  if (st->queued)
    idem__queue_leave(st->queue);
  st->queued = false;
}

/* BEGIN IMMEDIATE in this connection's turn. A handle that may not wait
 * polls only; one that must not wait takes a turn only if it is free. */
static int tx_write(idem__store *st, bool now) {
  if (st->queue && now) {
    if (!idem__queue_try(st->queue))
      return SQLITE_BUSY;
    st->queued = true;
  } else if (st->queue && st->busy_timeout_ms > 0) {
    st->busy_since = idem__monotonic_ms();
    idem__queue_enter(st->queue, st->busy_since + st->busy_timeout_ms);
    st->queued = st->waited = true;
  }
  st->no_wait = now;
  int rc = tx_begin(st, S_BEGIN_WRITE);
  st->no_wait = st->waited = false;
  if (rc != SQLITE_OK)
    tx_ended(st);
  return rc;
}

int idem__tx_write(idem__store *st) {
  return tx_write(st, false);
}

int idem__tx_write_now(idem__store *st) {
  return tx_write(st, true);
}

int idem__tx_commit(idem__store *st) {
  int rc = simple(st, S_COMMIT);
  if (rc == SQLITE_OK) {
    st->own_tx = false;
    tx_ended(st);
  }
  return rc;
}

void idem__tx_rollback(idem__store *st) {
  /* The rollback succeeds and so clears the connection's message: keep the
   * failure's words for the caller's report. */
  if (!st->msg[0] && sqlite3_errcode(st->conn) != SQLITE_OK)
    snprintf(st->msg, sizeof st->msg, "%s", sqlite3_errmsg(st->conn));
  /* A BEGIN that failed began nothing: the transaction open on the
   * connection, if any, is the application's (idem_open_db), and not ours
   * to roll back. */
  if (st->own_tx && !sqlite3_get_autocommit(st->conn))
    (void)simple(st, S_ROLLBACK);
  st->own_tx = false;
  tx_ended(st);
}

static void copy16(const void *p, int n, unsigned char out[16], bool *has) {
  *has = p && n == 16;
  if (*has)
    memcpy(out, p, 16);
}

/* The head, columns 0 to 4. */
static void read_head(sqlite3_stmt *s, idem__row *row) {
  row->state = sqlite3_column_int(s, 0);
  row->attempts = (uint32_t)sqlite3_column_int64(s, 1);
  row->fence = (uint64_t)sqlite3_column_int64(s, 2);
  row->code = sqlite3_column_int(s, 3);
  if (sqlite3_column_type(s, 4) != SQLITE_NULL) {
    /* A zero-length blob has a NULL pointer; keep "recorded" apart from
     * "absent" with a non-NULL empty string. */
    row->fingerprint_len = (size_t)sqlite3_column_bytes(s, 4);
    row->fingerprint = sqlite3_column_blob(s, 4);
    if (!row->fingerprint)
      row->fingerprint = "";
  }
}

/* The lease, columns 5 to 10. Only a pending row has one; the others'
 * lease columns are NULL, and not reading them saves six calls. */
static void read_lease(sqlite3_stmt *s, idem__row *row) {
  if (row->state != IDEM_STATE_PENDING)
    return;
  int c = LEASE_COLUMN;
  copy16(sqlite3_column_blob(s, c), sqlite3_column_bytes(s, c), row->owner,
         &row->has_owner);
  copy16(sqlite3_column_blob(s, c + 1), sqlite3_column_bytes(s, c + 1),
         row->boot, &row->has_boot);
  row->lease_until = sqlite3_column_int64(s, c + 2);
  row->owner_pid = sqlite3_column_int64(s, c + 3);
  row->owner_pidns = sqlite3_column_int64(s, c + 4);
  row->owner_start = sqlite3_column_int64(s, c + 5);
}

/* What a finished row is answered with, from column c on. */
static void read_finished(sqlite3_stmt *s, int c, idem__row *row) {
  row->updated_at = sqlite3_column_int64(s, c);
  row->expires_at = sqlite3_column_int64(s, c + 1);
}

/* What every read of a row reads: the head, the lease, the finish. */
static void read_answer(sqlite3_stmt *s, idem__row *row) {
  read_head(s, row);
  read_lease(s, row);
  read_finished(s, FINISHED_COLUMN, row);
}

/* The rest of a zeroed row after read_answer(). */
static void read_rest(sqlite3_stmt *s, idem__row *row, unsigned want) {
  if (!(want & IDEM__ROW_RESULT)) {
    row->result_len = (size_t)sqlite3_column_int64(s, RESULT_COLUMN);
  } else if (sqlite3_column_type(s, RESULT_COLUMN) != SQLITE_NULL) {
    row->result = sqlite3_column_blob(s, RESULT_COLUMN);
    row->result_len = (size_t)sqlite3_column_bytes(s, RESULT_COLUMN);
    if (!row->result)
      row->result = "";
  }
  row->name = (const char *)sqlite3_column_text(s, NAME_COLUMN);
  row->created_at = sqlite3_column_int64(s, CREATED_COLUMN);
  if (want & IDEM__ROW_HISTORY) {
    row->history = (const char *)sqlite3_column_text(s, TAIL_COLUMN);
    row->history_len = (size_t)sqlite3_column_bytes(s, TAIL_COLUMN);
  }
}

/* Steps statement `id` on key and reads what read_answer() reads. *s is
 * the statement, lent to the row until the next call, when the key has a
 * row; NULL (the statement reset, the row absent) when not. */
static int fetch(idem__store *st, int id, const void *key, size_t key_len,
                 idem__row *row, sqlite3_stmt **s) {
  memset(row, 0, sizeof *row);
  row->state = IDEM_STATE_ABSENT;
  *s = NULL;
  sqlite3_stmt *q;
  int rc = stmt(st, id, &q);
  if (rc)
    return rc;
  rc = bind_blob(q, 1, key, key_len);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(q);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  read_answer(q, row);
  st->borrowed = *s = q;
  return SQLITE_OK;
}

int idem__row_get(idem__store *st, const void *key, size_t key_len,
                  idem__row *row, unsigned want) {
  sqlite3_stmt *s;
  int rc = fetch(st,
                 want & IDEM__ROW_HISTORY  ? S_GET_ALL
                 : want & IDEM__ROW_RESULT ? S_GET_RESULT
                                           : S_GET,
                 key, key_len, row, &s);
  if (s)
    read_rest(s, row, want);
  return rc;
}

int idem__row_peek(idem__store *st, const void *key, size_t key_len,
                   idem__row *row) {
  sqlite3_stmt *s;
  int rc = fetch(st, S_PEEK, key, key_len, row, &s);
  if (!s)
    return rc;
  /* An answer makes no difference between a NULL and an empty result: no
   * call to tell them apart. */
  row->result = sqlite3_column_blob(s, RESULT_COLUMN);
  row->result_len = (size_t)sqlite3_column_bytes(s, RESULT_COLUMN);
  if (!row->result)
    row->result = "";
  return rc;
}

int idem__fence_floor(idem__store *st, uint64_t *out) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_FLOOR, &s);
  if (rc)
    return rc;
  rc = sqlite3_step(s);
  *out = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
  sqlite3_reset(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int idem__row_claim(idem__store *st, const void *key, size_t key_len,
                    const idem__claim *c) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_CLAIM, &s);
  if (rc)
    return rc;
  if ((rc = bind_blob(s, 1, key, key_len)) ||
      (rc = sqlite3_bind_int64(s, 2, c->attempts)) ||
      (rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)c->fence)) ||
      (rc = sqlite3_bind_blob(s, 4, c->owner, 16, SQLITE_STATIC)) ||
      (rc = bind_blob(s, 5, c->boot, c->boot ? 16 : 0)) ||
      (rc = sqlite3_bind_int64(s, 6, c->lease_until)) ||
      (rc = bind_blob(s, 7, c->fingerprint, c->fingerprint_len)) ||
      (rc = c->name ? sqlite3_bind_text(s, 8, c->name, -1, SQLITE_STATIC)
                    : sqlite3_bind_null(s, 8)) ||
      (rc = sqlite3_bind_int64(s, 9, c->created_at)) ||
      (rc = sqlite3_bind_int64(s, 10, c->now)) ||
      (rc = sqlite3_bind_int64(s, 11, c->self->pid)) ||
      (rc = sqlite3_bind_int64(s, 12, c->self->pidns)) ||
      (rc = sqlite3_bind_int64(s, 13, c->self->start)) ||
      (rc = sqlite3_bind_text64(s, 14, c->history, c->history_len,
                                SQLITE_STATIC, SQLITE_UTF8)))
    return rc;
  return run(s);
}

int idem__row_poison(idem__store *st, const void *key, size_t key_len,
                     int64_t now, const char *history, size_t history_len) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_POISON, &s);
  if (rc)
    return rc;
  if ((rc = bind_blob(s, 1, key, key_len)) ||
      (rc = sqlite3_bind_int64(s, 2, now)) ||
      (rc = sqlite3_bind_text64(s, 3, history, history_len, SQLITE_STATIC,
                                SQLITE_UTF8)))
    return rc;
  return run(s);
}

static int bind_line(sqlite3_stmt *s, int i, const idem__text *line) {
  if (line->failed)
    return SQLITE_NOMEM;
  return sqlite3_bind_text64(s, i, line->p, line->len, SQLITE_STATIC,
                             SQLITE_UTF8);
}

static int run_fenced(idem__store *st, sqlite3_stmt *s, int *changed) {
  int rc = run(s);
  *changed = rc == SQLITE_OK ? sqlite3_changes(st->conn) : 0;
  return rc;
}

int idem__row_finish(idem__store *st, const idem__fence *f, int state, int code,
                     const void *result, size_t len, int64_t now,
                     int64_t expires_at, int *changed) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_FINISH, &s);
  if (rc)
    return rc;
  if ((rc = bind_fence(s, f)) || (rc = sqlite3_bind_int(s, 5, state)) ||
      (rc = sqlite3_bind_int(s, 6, code)) ||
      (rc = bind_blob(s, 7, result ? result : "", len)) ||
      (rc = sqlite3_bind_int64(s, 8, now)) ||
      (rc = expires_at ? sqlite3_bind_int64(s, 9, expires_at)
                       : sqlite3_bind_null(s, 9)))
    return rc;
  idem__text line = {0};
  idem__hist_end(&line, f->fence,
                 state == IDEM_STATE_COMPLETED ? IDEM_OUTCOME_COMPLETED
                                               : IDEM_OUTCOME_FAILED,
                 now, code, NULL);
  rc = bind_line(s, 10, &line);
  if (rc == SQLITE_OK)
    rc = run_fenced(st, s, changed);
  idem__text_free(&line);
  return rc;
}

int idem__row_release(idem__store *st, const idem__fence *f, int64_t now,
                      const char *reason, int *changed) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_RELEASE, &s);
  if (rc)
    return rc;
  if ((rc = bind_fence(s, f)) || (rc = sqlite3_bind_int64(s, 4, now)))
    return rc;
  idem__text line = {0};
  idem__hist_end(&line, f->fence, IDEM_OUTCOME_RELEASED, now, 0, reason);
  rc = bind_line(s, 5, &line);
  if (rc == SQLITE_OK)
    rc = run_fenced(st, s, changed);
  idem__text_free(&line);
  return rc;
}

int idem__row_mark_lost(idem__store *st, const void *key, size_t key_len,
                        uint64_t fence) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_MARK_LOST, &s);
  if (rc)
    return rc;
  char started[32], lost[32];
  size_t started_len = idem__hist_marker(started, 'c', fence);
  size_t lost_len = idem__hist_marker(lost, 'l', fence);
  if ((rc = bind_blob(s, 1, key, key_len)) ||
      (rc = sqlite3_bind_text(s, 2, lost + 1, (int)lost_len - 1,
                              SQLITE_STATIC)) ||
      (rc =
           sqlite3_bind_text(s, 3, started, (int)started_len, SQLITE_STATIC)) ||
      (rc = sqlite3_bind_text(s, 4, lost, (int)lost_len, SQLITE_STATIC)))
    return rc;
  return run(s);
}

int idem__history_scan(idem__store *st, const void *key, size_t key_len,
                       int (*fn)(void *ctx, const idem_attempt *a), void *ctx) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_HISTORY, &s);
  if (rc || (rc = bind_blob(s, 1, key, key_len)))
    return rc;
  rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    const char *text = (const char *)sqlite3_column_text(s, 0);
    size_t len = (size_t)sqlite3_column_bytes(s, 0);
    rc = idem__hist_scan(text, len, fn, ctx) ? SQLITE_NOMEM : SQLITE_DONE;
  }
  sqlite3_reset(s);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int idem__row_touch(idem__store *st, const idem__fence *f, int64_t lease_until,
                    int *changed) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_TOUCH, &s);
  if (rc)
    return rc;
  if ((rc = bind_fence(s, f)) || (rc = sqlite3_bind_int64(s, 4, lease_until)))
    return rc;
  return run_fenced(st, s, changed);
}

int idem__row_delete(idem__store *st, const void *key, size_t key_len,
                     int *changed) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_RAISE_FLOOR, &s);
  if (rc || (rc = bind_blob(s, 1, key, key_len)) || (rc = run(s)))
    return rc;
  if ((rc = stmt(st, S_DELETE, &s)) || (rc = bind_blob(s, 1, key, key_len)))
    return rc;
  return run_fenced(st, s, changed);
}

int idem__rows_delete_state(idem__store *st, int state, uint64_t *count) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_RAISE_FLOOR_STATE, &s);
  if (rc || (rc = sqlite3_bind_int(s, 1, state)) || (rc = run(s)))
    return rc;
  int changed;
  if ((rc = stmt(st, S_DELETE_STATE, &s)) ||
      (rc = sqlite3_bind_int(s, 1, state)) ||
      (rc = run_fenced(st, s, &changed)))
    return rc;
  *count = (uint64_t)changed;
  return SQLITE_OK;
}

int idem__rows_purge(idem__store *st, int64_t now, unsigned batch,
                     idem__cursor *cur, uint64_t *count) {
  sqlite3_stmt *s;
  *count = 0;
  const void *after = cur->key ? cur->key : "";
  int rc = stmt(st, S_PURGE_LAST, &s);
  if (rc || (rc = bind_blob(s, 1, after, cur->len)) ||
      (rc = sqlite3_bind_int64(s, 2, now)) ||
      (rc = sqlite3_bind_int(s, 3, (int)batch)))
    return rc;
  rc = sqlite3_step(s);
  int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(s, 1) : 0;
  void *last = NULL;
  size_t last_len = 0;
  if (rc == SQLITE_ROW && n > 0) {
    last_len = (size_t)sqlite3_column_bytes(s, 0);
    if ((last = malloc(last_len + 1)))
      memcpy(last, sqlite3_column_blob(s, 0), last_len);
  }
  sqlite3_reset(s);
  if (rc != SQLITE_ROW)
    return rc;
  if (n == 0) {
    cur->done = true;
    return SQLITE_OK;
  }
  if (!last)
    return SQLITE_NOMEM;
  int changed = 0;
  if ((rc = stmt(st, S_RAISE_FLOOR_PURGE, &s)) ||
      (rc = bind_blob(s, 1, after, cur->len)) ||
      (rc = bind_blob(s, 2, last, last_len)) ||
      (rc = sqlite3_bind_int64(s, 3, now)) || (rc = run(s)) ||
      (rc = stmt(st, S_PURGE, &s)) || (rc = bind_blob(s, 1, after, cur->len)) ||
      (rc = bind_blob(s, 2, last, last_len)) ||
      (rc = sqlite3_bind_int64(s, 3, now)) ||
      (rc = run_fenced(st, s, &changed))) {
    free(last);
    return rc;
  }
  free(cur->key);
  cur->key = last;
  cur->len = last_len;
  cur->done = n < (int64_t)batch;
  *count = (uint64_t)changed;
  return SQLITE_OK;
}

int idem__rows_stale(idem__store *st, int state, int64_t before, unsigned batch,
                     idem__cursor *cur,
                     int (*fn)(void *ctx, const void *key, size_t key_len,
                               const idem__row *row),
                     void *ctx) {
  /* Rare, like listing: prepared each time rather than cached. Pending and
   * poisoned rows have no index of their own either, for the reason purge
   * gives: every claim would pay for it. */
  static const char sql[] =
      "SELECT " ROW_COLUMNS ", key FROM idem_keys WHERE key > ?1 "
      "AND state IN (1, 4) AND (?2 < 0 OR state = ?2) AND updated_at <= ?3 "
      "ORDER BY key LIMIT ?4";
  const void *after = cur->key ? cur->key : "";
  sqlite3_stmt *s;
  idem__row_done(st);
  int rc = sqlite3_prepare_v2(st->conn, sql, -1, &s, NULL);
  if (rc)
    return rc;
  if ((rc = bind_blob(s, 1, after, cur->len)) ||
      (rc = sqlite3_bind_int(s, 2, state)) ||
      (rc = sqlite3_bind_int64(s, 3, before)) ||
      (rc = sqlite3_bind_int64(s, 4, batch))) {
    sqlite3_finalize(s);
    return rc;
  }
  unsigned n = 0;
  void *last = NULL;
  size_t last_len = 0;
  int stop = 0;
  while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    idem__row row = {0};
    read_answer(s, &row);
    read_rest(s, &row, 0);
    const void *key = sqlite3_column_blob(s, TAIL_COLUMN);
    size_t key_len = (size_t)sqlite3_column_bytes(s, TAIL_COLUMN);
    void *copy = realloc(last, key_len + 1);
    if (!copy) {
      rc = SQLITE_NOMEM;
      break;
    }
    last = copy;
    if (key_len)
      memcpy(last, key, key_len);
    last_len = key_len;
    n++;
    stop = fn(ctx, key ? key : "", key_len, &row);
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    free(last);
    return rc;
  }
  if (n > 0) {
    free(cur->key);
    cur->key = last;
    cur->len = last_len;
  }
  /* A stop asked for by fn is not the end of the table. */
  cur->done = !stop && n < batch;
  return SQLITE_OK;
}

int idem__terminal_totals(idem__store *st, uint64_t *rows, uint64_t *bytes) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_TERMINAL_TOTALS, &s);
  if (rc)
    return rc;
  rc = sqlite3_step(s);
  *rows = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
  *bytes = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 1) : 0;
  sqlite3_reset(s);
  return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

int idem__rows_evictable(idem__store *st,
                         int (*fn)(void *ctx, const void *key, size_t key_len,
                                   uint64_t bytes),
                         void *ctx) {
  static const int order[] = {S_EVICT_EXPIRING, S_EVICT_FOREVER};
  int rc = SQLITE_OK, stop = 0;
  for (int i = 0; i < 2 && !stop && rc == SQLITE_OK; i++) {
    sqlite3_stmt *s;
    if ((rc = stmt(st, order[i], &s)))
      break;
    while (!stop && (rc = sqlite3_step(s)) == SQLITE_ROW) {
      const void *key = sqlite3_column_blob(s, 0);
      stop = fn(ctx, key ? key : "", (size_t)sqlite3_column_bytes(s, 0),
                (uint64_t)sqlite3_column_int64(s, 1));
    }
    sqlite3_reset(s);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
      rc = SQLITE_OK;
  }
  return rc;
}

void idem__store_compact(idem__store *st) {
  /* Both are best effort: free pages go back to the file system only in a
   * database created with auto_vacuum, and a checkpoint stops short of
   * readers still using old pages. */
  idem__row_done(st);
  (void)sqlite3_exec(st->conn, "PRAGMA incremental_vacuum", NULL, NULL, NULL);
  (void)sqlite3_wal_checkpoint_v2(st->conn, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                  NULL, NULL);
}

int idem__rows_scan(idem__store *st, int state, const void *after,
                    size_t after_len, unsigned limit,
                    int (*fn)(void *ctx, const void *key, size_t key_len,
                              const idem__row *row),
                    void *ctx) {
  /* Admin listing is rare: a statement of its own each time keeps the
   * cache of hot statements small. */
  static const char sql[] =
      "SELECT " ROW_COLUMNS ", key FROM idem_keys WHERE (?1 < 0 OR state = ?1) "
      "AND (?2 IS NULL OR key > ?2) ORDER BY key LIMIT ?3";
  sqlite3_stmt *s;
  idem__row_done(st);
  int rc = sqlite3_prepare_v2(st->conn, sql, -1, &s, NULL);
  if (rc)
    return rc;
  if ((rc = sqlite3_bind_int(s, 1, state)) ||
      (rc = after_len ? bind_blob(s, 2, after, after_len)
                      : sqlite3_bind_null(s, 2)) ||
      (rc = sqlite3_bind_int64(s, 3, limit))) {
    sqlite3_finalize(s);
    return rc;
  }
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    idem__row row = {0};
    read_answer(s, &row);
    read_rest(s, &row, 0);
    const void *key = sqlite3_column_blob(s, TAIL_COLUMN);
    size_t key_len = (size_t)sqlite3_column_bytes(s, TAIL_COLUMN);
    if (fn(ctx, key ? key : "", key_len, &row))
      break;
  }
  sqlite3_finalize(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int count_one(idem__store *st, int id, int64_t a,
                     const unsigned char *boot, uint64_t *out) {
  sqlite3_stmt *s;
  int rc = stmt(st, id, &s);
  if (rc || (rc = sqlite3_bind_int64(s, 1, a)) ||
      (rc = id == S_COUNT_LEASED ? bind_blob(s, 2, boot, boot ? 16 : 0)
                                 : SQLITE_OK))
    return rc;
  rc = sqlite3_step(s);
  *out = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(s, 0) : 0;
  sqlite3_reset(s);
  return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

int idem__counter_add(idem__store *st, const char *name, uint64_t n) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_COUNTER_ADD, &s);
  if (rc || (rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC)) ||
      (rc = sqlite3_bind_int64(s, 2, (sqlite3_int64)n)))
    return rc;
  return run(s);
}

static int read_counters(idem__store *st, idem_stats *out) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_COUNTERS, &s);
  if (rc)
    return rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(s, 0);
    uint64_t v = (uint64_t)sqlite3_column_int64(s, 1);
    if (!name)
      continue;
    if (strcmp(name, IDEM__COUNT_EVICTIONS) == 0)
      out->total_evictions = v;
    else if (strcmp(name, IDEM__COUNT_POISONINGS) == 0)
      out->total_poisonings = v;
    else if (strcmp(name, IDEM__COUNT_TAKEOVERS) == 0)
      out->total_takeovers = v;
  }
  sqlite3_reset(s);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int idem__rows_count(idem__store *st, int64_t lease_now, int64_t wall_now,
                     const unsigned char *boot, idem_stats *out) {
  sqlite3_stmt *s;
  int rc = stmt(st, S_COUNT_STATES, &s);
  if (rc)
    return rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    int state = sqlite3_column_int(s, 0);
    if (state > IDEM_STATE_ABSENT && state <= IDEM_STATE_POISONED)
      out->rows[state] = (uint64_t)sqlite3_column_int64(s, 1);
  }
  sqlite3_reset(s);
  if (rc != SQLITE_DONE)
    return rc;
  if ((rc = count_one(st, S_COUNT_LEASED, lease_now, boot, &out->leased)) ||
      (rc = count_one(st, S_COUNT_EXPIRED, wall_now, NULL, &out->expired)) ||
      (rc = read_counters(st, out)))
    return rc;
  sqlite3_stmt *p;
  int64_t pages = 0, size = 0;
  if (sqlite3_prepare_v2(st->conn, "PRAGMA page_count", -1, &p, NULL) ==
      SQLITE_OK) {
    if (sqlite3_step(p) == SQLITE_ROW)
      pages = sqlite3_column_int64(p, 0);
    sqlite3_finalize(p);
  }
  if (sqlite3_prepare_v2(st->conn, "PRAGMA page_size", -1, &p, NULL) ==
      SQLITE_OK) {
    if (sqlite3_step(p) == SQLITE_ROW)
      size = sqlite3_column_int64(p, 0);
    sqlite3_finalize(p);
  }
  out->db_bytes = pages * size;
  return SQLITE_OK;
}
