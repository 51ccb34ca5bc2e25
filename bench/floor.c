/* SPDX-License-Identifier: MIT */
/*
 * floor.c - the least any idempotency layer on SQLite must do.
 *
 * A claim must be on disk before the job runs and a completion after it:
 * per key BEGIN IMMEDIATE; upsert; COMMIT; then BEGIN IMMEDIATE; update;
 * COMMIT. A cached answer is one primary-key SELECT. Same table as
 * libidem's idem_keys (WITHOUT ROWID, keyed by BLOB, same columns), same
 * pragmas (WAL, synchronous, incremental auto_vacuum), prepared statements
 * kept, and SQLite's own busy handler (sqlite3_busy_timeout), which is what
 * a program written straight against SQLite gets.
 *
 * Variants, to price what libidem does or could do differently:
 * FLOOR_INDEX adds libidem's partial expiry index; FLOOR_BGCKPT moves the
 * WAL checkpoint out of COMMIT into a thread with its own connection;
 * FLOOR_QUEUE makes writers of all processes wait their turn in libidem's
 * writers' queue (lib/queue.h) before BEGIN IMMEDIATE, with turns of
 * turn_us, instead of polling in SQLite's busy handler. FLOOR_HISTORY
 * writes an attempt history of the size libidem keeps into the row, in
 * the claim's and the completion's own statements, as libidem does;
 * FLOOR_HISTORY_TABLE writes it into a table of its own instead.
 *
 * Built with FLOOR_MAIN it is also a program of its own that prints the
 * cycle and hit floors.
 */
#define _GNU_SOURCE
#include "bench.h"

#include "../lib/queue.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
  F_BEGIN,
  F_COMMIT,
  F_CLAIM,
  F_FINISH,
  F_RELEASE,
  F_TOUCH,
  F_GET,
  F_HIST_PUT,
  F_HIST_ADD,
  F_NSTMT
};

static const char *const floor_sql[F_NSTMT] = {
    [F_BEGIN] = "BEGIN IMMEDIATE",
    [F_COMMIT] = "COMMIT",
    [F_CLAIM] =
        "INSERT INTO idem_keys (key, state, attempts, fence, owner, "
        "lease_boot, lease_until, fingerprint, name, code, result, "
        "created_at, updated_at, expires_at, history) "
        "VALUES (?1, 1, 1, ?2, ?3, ?4, ?5, NULL, NULL, 0, NULL, ?6, ?6, NULL, "
        "?7) "
        "ON CONFLICT (key) DO UPDATE SET state = 1, attempts = attempts + 1, "
        "fence = ?2, owner = ?3, lease_boot = ?4, lease_until = ?5, "
        "updated_at = ?6, expires_at = NULL, history = ?7",
    [F_FINISH] = "UPDATE idem_keys SET state = 2, code = 0, result = ?4, "
                 "owner = NULL, lease_boot = NULL, lease_until = NULL, "
                 "updated_at = ?5, expires_at = ?6, history = history || ?7 "
                 "WHERE key = ?1 AND owner = ?2 AND fence = ?3",
    [F_RELEASE] = "UPDATE idem_keys SET owner = NULL, lease_boot = NULL, "
                  "lease_until = NULL, updated_at = ?4 "
                  "WHERE key = ?1 AND owner = ?2 AND fence = ?3",
    [F_TOUCH] = "UPDATE idem_keys SET lease_until = ?4 "
                "WHERE key = ?1 AND owner = ?2 AND fence = ?3",
    [F_GET] = "SELECT state, attempts, fence, code, updated_at, result "
              "FROM idem_keys WHERE key = ?1",
    [F_HIST_PUT] = "INSERT OR REPLACE INTO idem_history VALUES (?1, ?2)",
    [F_HIST_ADD] = "UPDATE idem_history SET lines = lines || ?2 WHERE key = ?1",
};

static const char floor_schema[] =
    "CREATE TABLE IF NOT EXISTS idem_keys ("
    " key BLOB PRIMARY KEY NOT NULL, state INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, fence INTEGER NOT NULL, owner BLOB,"
    " lease_boot BLOB, lease_until INTEGER, owner_pid INTEGER,"
    " owner_pidns INTEGER, owner_start INTEGER, fingerprint BLOB, name TEXT,"
    " code INTEGER NOT NULL DEFAULT 0, result BLOB,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " expires_at INTEGER, history TEXT) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS idem_history ("
    " key BLOB PRIMARY KEY NOT NULL, lines TEXT NOT NULL) WITHOUT ROWID";

static const char floor_index[] =
    "CREATE INDEX IF NOT EXISTS idem_keys_expiry ON idem_keys (expires_at)"
    " WHERE expires_at IS NOT NULL";

typedef struct held {
  char key[BENCH_KEY_LEN];
  unsigned char owner[16];
  int64_t fence;
} held;

typedef struct floor_db {
  sqlite3 *conn;
  sqlite3_stmt *s[F_NSTMT];
  pthread_mutex_t mu; /* one connection, many threads: like libidem */
  uint64_t seq;
  unsigned char boot[16];
  held *held;
  size_t nheld, capheld;
  /* FLOOR_BGCKPT */
  bool bg;
  sqlite3 *ck;
  pthread_t ck_thread;
  pthread_mutex_t ck_mu;
  pthread_cond_t ck_cond;
  bool ck_due, ck_stop;
  idem__queue *queue; /* FLOOR_QUEUE */
  unsigned history;   /* FLOOR_HISTORY, FLOOR_HISTORY_TABLE or 0 */
  int pid;            /* for the history, read once as libidem does */
} floor_db;

#define CKPT_PAGES 1000 /* SQLite's default wal_autocheckpoint */

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wal_hook(void *arg, sqlite3 *conn, const char *name, int pages) {
  (void)conn;
  (void)name;
  floor_db *f = arg;
  if (pages >= CKPT_PAGES) {
    pthread_mutex_lock(&f->ck_mu);
    f->ck_due = true;
    pthread_cond_signal(&f->ck_cond);
    pthread_mutex_unlock(&f->ck_mu);
  }
  return SQLITE_OK;
}

static void *ck_main(void *arg) {
  floor_db *f = arg;
  pthread_mutex_lock(&f->ck_mu);
  while (!f->ck_stop) {
    if (!f->ck_due) {
      pthread_cond_wait(&f->ck_cond, &f->ck_mu);
      continue;
    }
    f->ck_due = false;
    pthread_mutex_unlock(&f->ck_mu);
    /* PASSIVE never waits for the write lock, so writers never wait for
     * it either; the WAL restarts at the next write once it is copied. */
    sqlite3_wal_checkpoint_v2(f->ck, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL,
                              NULL);
    pthread_mutex_lock(&f->ck_mu);
  }
  pthread_mutex_unlock(&f->ck_mu);
  return NULL;
}

static void floor_close(void *h);

static int open_conn(const char *path, unsigned flags, sqlite3 **out) {
  int rc = sqlite3_open_v2(
      path, out,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_busy_timeout(*out, 5000);
  return sqlite3_exec(*out,
                      flags & FLOOR_FULL ? "PRAGMA auto_vacuum = INCREMENTAL;"
                                           "PRAGMA journal_mode = WAL;"
                                           "PRAGMA synchronous = FULL"
                                         : "PRAGMA auto_vacuum = INCREMENTAL;"
                                           "PRAGMA journal_mode = WAL;"
                                           "PRAGMA synchronous = NORMAL",
                      NULL, NULL, NULL);
}

static void *floor_open(const char *path, const void *cfgp) {
  const floor_cfg *cfg = cfgp;
  floor_db *f = calloc(1, sizeof *f);
  if (!f)
    return NULL;
  pthread_mutex_init(&f->mu, NULL);
  uint64_t seed = bench_seed();
  for (int i = 0; i < 16; i++)
    f->boot[i] = (unsigned char)bench_rand(&seed);
  f->seq = bench_rand(&seed) >> 16;
  f->history = cfg->flags & (FLOOR_HISTORY | FLOOR_HISTORY_TABLE);
  f->pid = (int)getpid();
  int rc = open_conn(path, cfg->flags, &f->conn);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(f->conn, floor_schema, NULL, NULL, NULL);
  if (rc == SQLITE_OK && (cfg->flags & FLOOR_INDEX))
    rc = sqlite3_exec(f->conn, floor_index, NULL, NULL, NULL);
  for (int i = 0; rc == SQLITE_OK && i < F_NSTMT; i++)
    rc = sqlite3_prepare_v3(f->conn, floor_sql[i], -1,
                            SQLITE_PREPARE_PERSISTENT, &f->s[i], NULL);
  if (rc == SQLITE_OK && (cfg->flags & FLOOR_BGCKPT)) {
    f->bg = true;
    pthread_mutex_init(&f->ck_mu, NULL);
    pthread_cond_init(&f->ck_cond, NULL);
    rc = open_conn(path, cfg->flags, &f->ck);
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(f->conn, "PRAGMA wal_autocheckpoint = 0", NULL, NULL,
                        NULL);
    if (rc == SQLITE_OK) {
      sqlite3_wal_hook(f->conn, wal_hook, f);
      if (pthread_create(&f->ck_thread, NULL, ck_main, f) != 0)
        rc = SQLITE_ERROR;
    }
    if (rc != SQLITE_OK)
      f->bg = false;
  }
  if (rc == SQLITE_OK && (cfg->flags & FLOOR_QUEUE)) {
    f->queue = idem__queue_open(path, cfg->turn_us);
    if (!f->queue)
      rc = SQLITE_CANTOPEN;
  }
  if (rc != SQLITE_OK) {
    fprintf(stderr, "floor: %s: %s\n", path, sqlite3_errmsg(f->conn));
    floor_close(f);
    return NULL;
  }
  return f;
}

static void floor_close(void *h) {
  floor_db *f = h;
  if (!f)
    return;
  if (f->bg) {
    pthread_mutex_lock(&f->ck_mu);
    f->ck_stop = true;
    pthread_cond_signal(&f->ck_cond);
    pthread_mutex_unlock(&f->ck_mu);
    pthread_join(f->ck_thread, NULL);
  }
  for (int i = 0; i < F_NSTMT; i++)
    sqlite3_finalize(f->s[i]);
  sqlite3_close(f->ck);
  sqlite3_close(f->conn);
  idem__queue_close(f->queue);
  free(f->held);
  free(f);
}

static int step(sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void make_owner(floor_db *f, unsigned char owner[16]) {
  uint64_t v = ++f->seq;
  memcpy(owner, &v, 8);
  memcpy(owner + 8, f->boot, 8);
}

/* The lines libidem's history gets for an attempt that starts (with its
 * owner as a UUID) and one that completes. */
static int history_line(bool end, const unsigned char owner[16], int pid,
                        int64_t now, char *out, size_t size) {
  if (end)
    return snprintf(out, size, "e 1 completed %lld 0 -\n", (long long)now);
  char uuid[37], *p = uuid;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      *p++ = '-';
    p += snprintf(p, 3, "%02x", owner[i]);
  }
  return snprintf(out, size, "c 1 1 %s %d %lld\n", uuid, pid, (long long)now);
}

/* Binds the history line to parameter 7 of a row's own statement, or
 * writes it to the history table. */
static int put_history(floor_db *f, sqlite3_stmt *row, bool end,
                       const char *key, size_t len,
                       const unsigned char owner[16], int64_t now) {
  char line[128];
  int n =
      f->history ? history_line(end, owner, f->pid, now, line, sizeof line) : 0;
  if (f->history != FLOOR_HISTORY_TABLE)
    return f->history ? sqlite3_bind_text(row, 7, line, n, SQLITE_TRANSIENT)
                      : sqlite3_bind_null(row, 7);
  sqlite3_bind_null(row, 7);
  sqlite3_stmt *h = f->s[end ? F_HIST_ADD : F_HIST_PUT];
  sqlite3_bind_blob(h, 1, key, (int)len, SQLITE_STATIC);
  sqlite3_bind_text(h, 2, line, n, SQLITE_TRANSIENT);
  return step(h);
}

/* BEGIN IMMEDIATE, in this handle's turn when it queues. */
static int tx_begin(floor_db *f) {
  idem__queue_enter(f->queue, INT64_MAX / 1000);
  int rc = step(f->s[F_BEGIN]);
  if (rc != SQLITE_OK)
    idem__queue_leave(f->queue);
  return rc;
}

static int tx_end_commit(floor_db *f, int rc) {
  if (rc == SQLITE_OK)
    rc = step(f->s[F_COMMIT]);
  if (rc != SQLITE_OK)
    sqlite3_exec(f->conn, "ROLLBACK", NULL, NULL, NULL);
  idem__queue_leave(f->queue);
  return rc;
}

static int tx_claim(floor_db *f, const char *key, size_t len,
                    const unsigned char owner[16], int64_t fence) {
  sqlite3_stmt *c = f->s[F_CLAIM];
  int64_t now = wall_ms();
  int rc = tx_begin(f);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_blob(c, 1, key, (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(c, 2, fence);
  sqlite3_bind_blob(c, 3, owner, 16, SQLITE_STATIC);
  sqlite3_bind_blob(c, 4, f->boot, 16, SQLITE_STATIC);
  sqlite3_bind_int64(c, 5, now + 60000);
  sqlite3_bind_int64(c, 6, now);
  rc = put_history(f, c, false, key, len, owner, now);
  return tx_end_commit(f, rc == SQLITE_OK ? step(c) : rc);
}

static int tx_end(floor_db *f, int id, const char *key, size_t len,
                  const unsigned char owner[16], int64_t fence) {
  static const char result[BENCH_RESULT_LEN] =
      "{\"status\":\"ok\",\"id\":12345}";
  sqlite3_stmt *u = f->s[id];
  int64_t now = wall_ms();
  int rc = tx_begin(f);
  if (rc != SQLITE_OK)
    return rc;
  sqlite3_bind_blob(u, 1, key, (int)len, SQLITE_STATIC);
  sqlite3_bind_blob(u, 2, owner, 16, SQLITE_STATIC);
  sqlite3_bind_int64(u, 3, fence);
  if (id == F_FINISH) {
    sqlite3_bind_blob(u, 4, result, sizeof result, SQLITE_STATIC);
    sqlite3_bind_int64(u, 5, now);
    sqlite3_bind_int64(u, 6, now + 86400000);
    rc = put_history(f, u, true, key, len, owner, now);
  } else {
    sqlite3_bind_int64(u, 4, now);
  }
  return tx_end_commit(f, rc == SQLITE_OK ? step(u) : rc);
}

static int floor_cycle(void *h, const char *key, size_t len) {
  floor_db *f = h;
  unsigned char owner[16];
  pthread_mutex_lock(&f->mu);
  make_owner(f, owner);
  int rc = tx_claim(f, key, len, owner, 1);
  if (rc == SQLITE_OK)
    rc = tx_end(f, F_FINISH, key, len, owner, 1);
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int floor_read(void *h, const char *key, size_t len) {
  floor_db *f = h;
  pthread_mutex_lock(&f->mu);
  sqlite3_stmt *g = f->s[F_GET];
  sqlite3_bind_blob(g, 1, key, (int)len, SQLITE_STATIC);
  int rc = sqlite3_step(g);
  /* Touch what an answer carries, as a caller would. */
  volatile int state = rc == SQLITE_ROW ? sqlite3_column_int(g, 0) : -1;
  volatile int bytes = rc == SQLITE_ROW ? sqlite3_column_bytes(g, 5) : 0;
  (void)state;
  (void)bytes;
  sqlite3_reset(g);
  pthread_mutex_unlock(&f->mu);
  return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int floor_hot(void *h, const char *key, size_t len) {
  floor_db *f = h;
  unsigned char owner[16];
  pthread_mutex_lock(&f->mu);
  make_owner(f, owner);
  int64_t fence = (int64_t)f->seq;
  int rc = tx_claim(f, key, len, owner, fence);
  if (rc == SQLITE_OK)
    rc = tx_end(f, F_RELEASE, key, len, owner, fence);
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int floor_hold(void *h, const char *key, size_t len) {
  floor_db *f = h;
  if (len != BENCH_KEY_LEN)
    return SQLITE_MISUSE;
  pthread_mutex_lock(&f->mu);
  if (f->nheld == f->capheld) {
    size_t cap = f->capheld ? 2 * f->capheld : 64;
    held *n = realloc(f->held, cap * sizeof *n);
    if (!n) {
      pthread_mutex_unlock(&f->mu);
      return SQLITE_NOMEM;
    }
    f->held = n;
    f->capheld = cap;
  }
  held *e = &f->held[f->nheld];
  memcpy(e->key, key, len);
  make_owner(f, e->owner);
  e->fence = 1;
  int rc = tx_claim(f, key, len, e->owner, e->fence);
  if (rc == SQLITE_OK)
    f->nheld++;
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int floor_heartbeat(void *h) {
  floor_db *f = h;
  pthread_mutex_lock(&f->mu);
  sqlite3_stmt *t = f->s[F_TOUCH];
  int64_t until = wall_ms() + 60000;
  int rc = step(f->s[F_BEGIN]);
  for (size_t i = 0; rc == SQLITE_OK && i < f->nheld; i++) {
    sqlite3_bind_blob(t, 1, f->held[i].key, BENCH_KEY_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(t, 2, f->held[i].owner, 16, SQLITE_STATIC);
    sqlite3_bind_int64(t, 3, f->held[i].fence);
    sqlite3_bind_int64(t, 4, until);
    rc = step(t);
  }
  if (rc == SQLITE_OK)
    rc = step(f->s[F_COMMIT]);
  if (rc != SQLITE_OK)
    sqlite3_exec(f->conn, "ROLLBACK", NULL, NULL, NULL);
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static void floor_drop(void *h) {
  floor_db *f = h;
  pthread_mutex_lock(&f->mu);
  sqlite3_exec(f->conn,
               "UPDATE idem_keys SET owner = NULL, lease_boot = NULL, "
               "lease_until = NULL WHERE state = 1",
               NULL, NULL, NULL);
  f->nheld = 0;
  pthread_mutex_unlock(&f->mu);
}

const bench_sys floor_sys = {
    "floor",   floor_open, floor_close,     floor_cycle, floor_read,
    floor_hot, floor_hold, floor_heartbeat, floor_drop,
};

#ifdef FLOOR_MAIN
/* The floor alone: a fresh-key cycle and a hit loop on a file that the
 * caller names and that is removed afterwards. */
int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE [N] [full]\n", argv[0]);
    return 2;
  }
  long n = argc > 2 ? strtol(argv[2], NULL, 10) : 5000;
  floor_cfg cfg = {
      .flags = argc > 3 && strcmp(argv[3], "full") == 0 ? FLOOR_FULL : 0};
  if (n <= 0)
    n = 5000;
  void *h = floor_open(argv[1], &cfg);
  if (!h)
    return 1;
  char *keys = malloc((size_t)n * BENCH_KEY_LEN);
  bench_samples s;
  if (!keys || bench_samples_init(&s, (size_t)n) != 0)
    return 1;
  uint64_t seed = bench_seed();
  for (long i = 0; i < n; i++)
    bench_key(&seed, keys + i * BENCH_KEY_LEN);
  bench_meas m;
  const char *what[2] = {"cycle", "hit"};
  for (int pass = 0; pass < 2; pass++) {
    s.n = 0;
    uint64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
      uint64_t a = bench_now_ns();
      int rc = pass == 0
                   ? floor_cycle(h, keys + i * BENCH_KEY_LEN, BENCH_KEY_LEN)
                   : floor_read(h, keys + i * BENCH_KEY_LEN, BENCH_KEY_LEN);
      if (rc != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", what[pass], sqlite3_errstr(rc));
        return 1;
      }
      bench_samples_add(&s, bench_now_ns() - a);
    }
    m.rate = (double)n * 1e9 / (double)(bench_now_ns() - t0);
    bench_summarise(s.ns, s.n, &m);
    printf("%-5s %10.0f/s  p50 %8.1f us  p99 %8.1f us  p99.9 %8.1f us  "
           "max %8.1f us\n",
           what[pass], m.rate, m.p50, m.p99, m.p999, m.max);
  }
  floor_close(h);
  free(keys);
  bench_samples_free(&s);
  return 0;
}
#endif
