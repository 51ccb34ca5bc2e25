/* SPDX-License-Identifier: MIT */
/*
 * store.h - the storage interface of the state machine.
 *
 * Every SQL statement of the state machine lives behind this interface, in
 * store.c. The rules that decide what a begin may do live in machine.c and
 * only see idem__row values, so a second backend (PostgreSQL, with SELECT
 * ... FOR UPDATE in place of BEGIN IMMEDIATE) implements this file's
 * functions and reuses the rules unchanged.
 *
 * Functions return SQLite result codes (SQLITE_OK, SQLITE_BUSY, ...); the
 * caller turns them into IDEM_E* codes with idem__storage_error(), which
 * reads the connection's message through idem__store_errmsg().
 */
#ifndef IDEM_STORE_H
#define IDEM_STORE_H

#include "internal.h"

struct sqlite3;

/* One row of idem_keys. Blob pointers borrow from the store and are valid
 * until the next call on that store. */
typedef struct idem__row {
  int state; /* IDEM_STATE_*; IDEM_STATE_ABSENT when there is no row */
  uint32_t attempts;
  uint64_t fence;
  bool has_owner;
  unsigned char owner[16];
  bool has_boot;
  unsigned char boot[16];
  int64_t lease_until;
  const void *fingerprint; /* NULL when none was recorded */
  size_t fingerprint_len;
  const char *name; /* NULL when none */
  int code;
  const void *result; /* NULL unless terminal */
  size_t result_len;
  int64_t created_at;
  int64_t updated_at;
  int64_t expires_at; /* 0 = kept forever */
  int64_t owner_pid;  /* the lease holder's process; 0 when unknown */
  int64_t owner_pidns;
  int64_t owner_start;
  const char *history; /* history.h; read only when asked for */
  size_t history_len;
} idem__row;

/* What a claim writes; the rest of the row is cleared. */
typedef struct idem__claim {
  uint32_t attempts;
  uint64_t fence;
  const unsigned char *owner;
  const unsigned char *boot; /* NULL when unknown */
  int64_t lease_until;
  const void *fingerprint;
  size_t fingerprint_len;
  const char *name;
  int64_t created_at;
  int64_t now;
  const idem__self *self; /* the claiming process */
  const char *history;    /* the whole new history (history.h) */
  size_t history_len;
} idem__claim;

/* What a fenced call identifies itself with. */
typedef struct idem__fence {
  const void *key;
  size_t key_len;
  const unsigned char *owner;
  uint64_t fence;
} idem__fence;

#define IDEM__STORE_READONLY 0x1
#define IDEM__STORE_CREATE 0x2

int idem__store_open(idem__store **out, const char *path, unsigned flags,
                     int busy_timeout_ms);
/* Uses the application's connection: statements are ours, the connection
 * stays the application's and is not closed. */
int idem__store_wrap(idem__store **out, struct sqlite3 *conn,
                     int busy_timeout_ms);
void idem__store_close(idem__store *st);
/* Makes the connection's write transactions wait in the writers' queue of
 * its database file (queue.h), when that file can be used. */
void idem__store_queue(idem__store *st);
/* Whether a transaction is open on the connection. */
bool idem__store_in_tx(const idem__store *st);
const char *idem__store_errmsg(const idem__store *st);
/* The schema is checked and created by schema.c on this connection. */
struct sqlite3 *idem__store_conn(idem__store *st);

int idem__tx_read(idem__store *st);  /* a read snapshot */
int idem__tx_write(idem__store *st); /* BEGIN IMMEDIATE */
/* BEGIN IMMEDIATE, but SQLITE_BUSY at once when the lock is held. */
int idem__tx_write_now(idem__store *st);
int idem__tx_commit(idem__store *st);
void idem__tx_rollback(idem__store *st);

/* What a get reads beyond the row's fixed columns. */
#define IDEM__ROW_RESULT 0x1
#define IDEM__ROW_HISTORY 0x2 /* with the result */

/* Reads the row of key; row->state is IDEM_STATE_ABSENT if none. `want`
 * is a mask of IDEM__ROW_*. */
int idem__row_get(idem__store *st, const void *key, size_t key_len,
                  idem__row *row, unsigned want);
/* Reads the row of key as a begin's snapshot needs it, for less than a
 * get: the state, attempts, fence, code and fingerprint, and the lease of
 * a pending row or updated_at, expires_at and the result (empty, never
 * NULL) of a completed or failed one. The name, created_at and the history
 * are not read. */
int idem__row_peek(idem__store *st, const void *key, size_t key_len,
                   idem__row *row);
/* Lets go of the row a get lent out (and of the read snapshot it holds
 * outside a transaction). */
void idem__row_done(idem__store *st);
/* The next fence for a key that has no row: above every fence a deleted
 * row ever had. */
int idem__fence_floor(idem__store *st, uint64_t *out);

int idem__row_claim(idem__store *st, const void *key, size_t key_len,
                    const idem__claim *c);
/* history is the whole new history, the poisoning included. */
int idem__row_poison(idem__store *st, const void *key, size_t key_len,
                     int64_t now, const char *history, size_t history_len);
/* Fenced writes: *changed is 0 when the row no longer carries the fence. */
int idem__row_finish(idem__store *st, const idem__fence *f, int state, int code,
                     const void *result, size_t len, int64_t now,
                     int64_t expires_at, int *changed);
int idem__row_release(idem__store *st, const idem__fence *f, int64_t now,
                      const char *reason, int *changed);
/* Marks the attempt with this fence lost in the key's history, when a
 * stale holder tried to end it. */
int idem__row_mark_lost(idem__store *st, const void *key, size_t key_len,
                        uint64_t fence);
/* Calls fn for each attempt of the key, oldest first. */
int idem__history_scan(idem__store *st, const void *key, size_t key_len,
                       int (*fn)(void *ctx, const idem_attempt *a), void *ctx);
int idem__row_touch(idem__store *st, const idem__fence *f, int64_t lease_until,
                    int *changed);

/* Deletes rows, raising the fence floor past their fences first. */
int idem__row_delete(idem__store *st, const void *key, size_t key_len,
                     int *changed);
int idem__rows_delete_state(idem__store *st, int state, uint64_t *count);
/* Deletes up to `batch` completed and failed rows past retention (`now`),
 * in key order after the cursor, which it then moves on; cur->done once
 * the table is through. The cursor's key is freed by the caller. */
typedef struct idem__cursor {
  void *key;
  size_t len;
  bool done;
} idem__cursor;
int idem__rows_purge(idem__store *st, int64_t now, unsigned batch,
                     idem__cursor *cur, uint64_t *count);
/* Calls fn, inside the caller's transaction, for up to `batch` pending and
 * poisoned rows (only those of `state`, unless it is -1) last updated at
 * or before `before` (wall ms), in key order after the cursor, which it
 * then moves past the last row read; cur->done once the table is through.
 * fn's row borrows from the store and carries its lease; whether a lease
 * is live is fn's to judge (machine.h), as SQL cannot ask /proc. */
int idem__rows_stale(idem__store *st, int state, int64_t before, unsigned batch,
                     idem__cursor *cur,
                     int (*fn)(void *ctx, const void *key, size_t key_len,
                               const idem__row *row),
                     void *ctx);

/* Calls fn for up to limit rows after `after` in key order, inside the
 * caller's transaction; fn's row borrows from the store. */
int idem__rows_scan(idem__store *st, int state, const void *after,
                    size_t after_len, unsigned limit,
                    int (*fn)(void *ctx, const void *key, size_t key_len,
                              const idem__row *row),
                    void *ctx);
/* The number of completed and failed rows and their stored bytes. */
int idem__terminal_totals(idem__store *st, uint64_t *rows, uint64_t *bytes);
/* Calls fn with the completed and failed rows in the order the storage
 * caps evict them: the soonest end of retention first, then the rows kept
 * forever, oldest first, until fn returns non-zero. */
int idem__rows_evictable(idem__store *st,
                         int (*fn)(void *ctx, const void *key, size_t key_len,
                                   uint64_t bytes),
                         void *ctx);
/* Gives free pages back to the file system and checkpoints the WAL. */
void idem__store_compact(idem__store *st);
/* Counts rows per state, and reads the counters of events below, in the
 * caller's read snapshot. */
int idem__rows_count(idem__store *st, int64_t lease_now, int64_t wall_now,
                     const unsigned char *boot, idem_stats *out);

/* Counters of events kept in the database, for every process to see: each
 * is added to in the transaction of its event, so a rolled-back event is
 * not counted. */
#define IDEM__COUNT_EVICTIONS "evictions"   /* rows evicted by the caps */
#define IDEM__COUNT_POISONINGS "poisonings" /* keys poisoned by a begin */
#define IDEM__COUNT_TAKEOVERS "takeovers"   /* claims over an ended lease */
int idem__counter_add(idem__store *st, const char *name, uint64_t n);

#endif
