/* SPDX-License-Identifier: MIT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

/* --- Fake clock ---------------------------------------------------------- */

void tu_clock_init(tu_clock *c) {
  atomic_init(&c->lease_ms, TU_LEASE_START);
  atomic_init(&c->wall_ms, TU_WALL_START);
}

void tu_clock_advance_lease(tu_clock *c, int64_t ms) {
  assert_true(ms >= 0);
  atomic_fetch_add(&c->lease_ms, ms);
}

void tu_clock_step_wall(tu_clock *c, int64_t ms) {
  atomic_fetch_add(&c->wall_ms, ms);
}

void tu_clock_advance(tu_clock *c, int64_t ms) {
  tu_clock_advance_lease(c, ms);
  tu_clock_step_wall(c, ms);
}

int64_t tu_clock_now(tu_clock *c, int which) {
  return which == IDEM_CLOCK_WALL ? atomic_load(&c->wall_ms)
                                  : atomic_load(&c->lease_ms);
}

int64_t tu_clock_cb(void *ctx, int which) {
  return tu_clock_now(ctx, which);
}

/* --- Files --------------------------------------------------------------- */

char *tu_tmpdir(void) {
  const char *base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0')
    base = "/tmp";
  char *dir = tu_path(base, "idem-test-XXXXXX");
  if (mkdtemp(dir) == NULL) {
    fprintf(stderr, "mkdtemp under %s: %s\n", base, strerror(errno));
    free(dir);
    return NULL;
  }
  return dir;
}

static int rm_entry(const char *path, const struct stat *sb, int type,
                    struct FTW *ftw) {
  (void)sb;
  (void)type;
  (void)ftw;
  return remove(path);
}

int tu_rmtree(const char *path) {
  if (path == NULL)
    return 0;
  return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_path(const char *dir, const char *name) {
  size_t n = strlen(dir) + 1 + strlen(name) + 1;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

char *tu_suffix(const char *path, const char *suffix) {
  size_t n = strlen(path) + strlen(suffix) + 1;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s%s", path, suffix);
  return p;
}

int tu_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

int tu_checksum(const char *path, uint64_t *out) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -1;
  uint64_t h = UINT64_C(14695981039346656037);
  unsigned char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    for (size_t i = 0; i < n; i++) {
      h ^= buf[i];
      h *= UINT64_C(1099511628211);
    }
  }
  int bad = ferror(f);
  fclose(f);
  if (bad)
    return -1;
  *out = h;
  return 0;
}

int tu_write_file(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return -1;
  const char *p = data;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      close(fd);
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return close(fd);
}

char *tu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  while (buf != NULL) {
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (n < cap)
      break;
    char *nb = realloc(buf, cap * 2 + 1);
    if (nb == NULL) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  if (buf != NULL && ferror(f)) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf != NULL) {
    buf[n] = '\0';
    if (len != NULL)
      *len = n;
  }
  return buf;
}

/* --- Direct SQL ---------------------------------------------------------- */

int tu_sql(const char *path, const char *sql) {
  sqlite3 *conn = NULL;
  int rc = sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(conn, 5000);
    rc = sqlite3_exec(conn, sql, NULL, NULL, NULL);
  }
  sqlite3_close(conn);
  return rc;
}

int tu_sql_int(const char *path, const char *sql, int64_t *out) {
  sqlite3 *conn = NULL;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(conn, 5000);
    rc = sqlite3_prepare_v2(conn, sql, -1, &st, NULL);
  }
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(conn);
  return rc;
}

void tu_assert_integrity(const char *path) {
  /* Read-write: a file just saved after a crash may come with a WAL but no
   * shared-memory index, which a read-only connection cannot rebuild. */
  sqlite3 *conn = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE, NULL),
                   SQLITE_OK);
  assert_int_equal(
      sqlite3_prepare_v2(conn, "PRAGMA integrity_check", -1, &st, NULL),
      SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  const char *res = (const char *)sqlite3_column_text(st, 0);
  if (res == NULL || strcmp(res, "ok") != 0)
    fail_msg("integrity_check of %s: %s", path, res ? res : "(null)");
  sqlite3_finalize(st);
  sqlite3_close(conn);
}

/* --- Opening ------------------------------------------------------------- */

idem_options tu_options(tu_clock *clock) {
  idem_options o = IDEM_OPTIONS_INIT;
  o.ttl_ms = 10000;
  o.heartbeat_ms = -1;
  o.max_attempts = 5;
  o.retention_ms = 0;
  if (clock != NULL) {
    o.clock = tu_clock_cb;
    o.clock_ctx = clock;
  }
  return o;
}

int tu_open(idem_db **db, const char *path, const idem_options *opts) {
  *db = NULL;
  int rc = idem_open(db, path, opts);
  if (rc != IDEM_OK && *db != NULL) {
    idem_close(*db);
    *db = NULL;
  }
  return rc;
}

/* --- Short forms --------------------------------------------------------- */

int tu_begin(idem_db *db, const char *key, idem_answer *out) {
  idem_answer_clear(out);
  return idem_begin(db, key, strlen(key), NULL, out);
}

int tu_begin_fp(idem_db *db, const char *key, const char *fp,
                idem_answer *out) {
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  if (fp != NULL) {
    bo.fingerprint = fp;
    bo.fingerprint_len = strlen(fp);
  }
  idem_answer_clear(out);
  return idem_begin(db, key, strlen(key), &bo, out);
}

idem_lease *tu_claim(idem_db *db, const char *key) {
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, key, &a), IDEM_CLAIMED);
  assert_non_null(a.lease);
  idem_lease *l = a.lease;
  idem_answer_clear(&a);
  return l;
}

void tu_claim_complete(idem_db *db, const char *key, const char *result) {
  idem_lease *l = tu_claim(db, key);
  assert_int_equal(idem_complete(l, result, strlen(result)), IDEM_OK);
  idem_lease_free(l);
}

void tu_assert_completed(idem_db *db, const char *key, const char *result) {
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, key, &a), IDEM_COMPLETED);
  assert_int_equal(a.status, IDEM_COMPLETED);
  assert_null(a.lease);
  assert_int_equal(a.result_len, strlen(result));
  assert_non_null(a.result);
  assert_memory_equal(a.result, result, strlen(result) + 1);
  idem_answer_clear(&a);
}

idem_stats tu_stats(idem_db *db) {
  /* Zeroed by hand: IDEM_STATS_INIT names only the version, which
   * -Wmissing-field-initializers (in -Wextra) reports. */
  idem_stats st;
  memset(&st, 0, sizeof st);
  st.version = IDEM_STATS_VERSION;
  assert_int_equal(idem_stats_get(db, &st), IDEM_OK);
  return st;
}

int tu_get(idem_db *db, const char *key, idem_record *rec) {
  idem_record_clear(rec);
  return idem_get(db, key, strlen(key), rec);
}

/* --- Fixture ------------------------------------------------------------- */

int tu_fx_setup(void **state) {
  tu_fx *fx = calloc(1, sizeof *fx);
  if (fx == NULL)
    return -1;
  fx->dir = tu_tmpdir();
  if (fx->dir == NULL) {
    free(fx);
    return -1;
  }
  fx->path = tu_path(fx->dir, "idem.db");
  tu_clock_init(&fx->clock);
  fx->opts = tu_options(&fx->clock);
  *state = fx;
  return 0;
}

int tu_fx_setup_open(void **state) {
  if (tu_fx_setup(state) != 0)
    return -1;
  tu_fx *fx = *state;
  int rc = tu_open(&fx->db, fx->path, &fx->opts);
  if (rc != IDEM_OK) {
    fprintf(stderr, "idem_open(%s): %s\n", fx->path, idem_errstr(rc));
    tu_fx_teardown(state);
    return -1;
  }
  return 0;
}

int tu_fx_teardown(void **state) {
  tu_fx *fx = *state;
  int ret = 0;
  if (fx == NULL)
    return 0;
  if (fx->db != NULL && idem_close(fx->db) != IDEM_OK) {
    /* A lease of the test was left held (only after a failed assertion). */
    fprintf(stderr, "teardown: idem_close refused: %s\n", idem_errmsg(fx->db));
    ret = -1;
  }
  if (tu_rmtree(fx->dir) != 0)
    ret = -1;
  free(fx->dir);
  free(fx->path);
  free(fx);
  *state = NULL;
  return ret;
}

/* --- Real time and the write lock ---------------------------------------- */

int64_t tu_real_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tu_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

uint32_t tu_queue_tickets(const char *path) {
  char *q = tu_suffix(path, "-lockq");
  int fd = open(q, O_RDONLY | O_CLOEXEC);
  free(q);
  uint32_t next = 0;
  if (fd >= 0) {
    if (pread(fd, &next, sizeof next, 4) != (ssize_t)sizeof next)
      next = 0;
    close(fd);
  }
  return next;
}

void tu_wait_tickets(const char *path, uint32_t n) {
  int64_t until = tu_real_ms() + 10000;
  while (tu_queue_tickets(path) < n) {
    if (tu_real_ms() > until)
      fail_msg("%u writer(s) expected in the queue of %s, %u came", n, path,
               tu_queue_tickets(path));
    tu_sleep_ms(1);
  }
}

struct sqlite3 *tu_hold_write_lock(const char *path) {
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE, NULL),
                   SQLITE_OK);
  sqlite3_busy_timeout(conn, 5000);
  assert_int_equal(sqlite3_exec(conn, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                   SQLITE_OK);
  return conn;
}

void tu_drop_write_lock(struct sqlite3 *conn) {
  assert_int_equal(sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_close(conn), SQLITE_OK);
}

/* --- on_lost ------------------------------------------------------------- */

static void tu_lost_cb(void *ctx, idem_lease *lease) {
  tu_lost *seen = ctx;
  atomic_store(&seen->lease, lease);
  atomic_fetch_add(&seen->calls, 1);
}

void tu_lost_watch(tu_lost *seen, idem_options *o) {
  atomic_init(&seen->calls, 0);
  atomic_init(&seen->lease, NULL);
  o->on_lost = tu_lost_cb;
  o->lost_ctx = seen;
}
