/* SPDX-License-Identifier: MIT */
/*
 * common.c - clock, samples, keys and the bulk fill shared by both systems.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

void bench_key(uint64_t *state, char key[BENCH_KEY_LEN]) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < BENCH_KEY_LEN; i += 16) {
    uint64_t r = bench_rand(state);
    for (int j = 0; j < 16; j++, r >>= 4)
      key[i + j] = hex[r & 15];
  }
}

uint64_t bench_seed(void) {
  /* Keys of two runs, or of two workers, must not collide. */
  return bench_now_ns() ^ ((uint64_t)getpid() << 32);
}

int bench_samples_init(bench_samples *s, size_t cap) {
  s->n = 0;
  s->cap = cap;
  s->ns = malloc(cap * sizeof *s->ns);
  return s->ns ? 0 : -1;
}

void bench_samples_add(bench_samples *s, uint64_t ns) {
  if (s->n < s->cap)
    s->ns[s->n++] = ns;
}

void bench_samples_free(bench_samples *s) {
  free(s->ns);
  s->ns = NULL;
  s->n = s->cap = 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double pct(const uint64_t *s, size_t n, double q) {
  size_t i = (size_t)(q * (double)n);
  if (i >= n)
    i = n - 1;
  return (double)s[i] / 1000.0;
}

void bench_summarise(uint64_t *ns, size_t n, bench_meas *m) {
  if (n == 0) {
    m->p50 = m->p99 = m->p999 = m->max = 0;
    return;
  }
  qsort(ns, n, sizeof *ns, cmp_u64);
  m->p50 = pct(ns, n, 0.50);
  m->p99 = pct(ns, n, 0.99);
  m->p999 = pct(ns, n, 0.999);
  m->max = (double)ns[n - 1] / 1000.0;
}

long bench_rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f)
    return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kib = strtol(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kib;
}

uint64_t bench_cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) *
             1000000000u +
         ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) *
             1000u;
}

int bench_fill(const char *path, long rows) {
  /* Random keys sorted before the insert: the tree ends up as a random
   * workload would leave it, at the cost of a sort instead of a million
   * random page writes. Terminal rows, as a cache of old jobs would be. */
  static const char sql[] =
      "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
      "WHERE n < ?1) "
      "INSERT INTO idem_keys (key, state, attempts, fence, owner, lease_boot, "
      "lease_until, fingerprint, name, code, result, created_at, updated_at, "
      "expires_at) "
      "SELECT k, 2, 1, 1, NULL, NULL, NULL, NULL, NULL, 0, zeroblob(32), "
      "?2, ?2, ?2 + 86400000 + n FROM (SELECT CAST(lower(hex(randomblob(16))) "
      "AS BLOB) AS k, n FROM c) ORDER BY k";
  sqlite3 *db;
  if (sqlite3_open(path, &db) != SQLITE_OK)
    return -1;
  sqlite3_stmt *s = NULL;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000;
  int rc = sqlite3_exec(db, "PRAGMA cache_size = -262144; BEGIN IMMEDIATE",
                        NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(s, 1, rows);
    sqlite3_bind_int64(s, 2, now);
    rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
  }
  sqlite3_finalize(s);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(db, "COMMIT; PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL,
                      NULL);
  if (rc != SQLITE_OK)
    fprintf(stderr, "fill %s: %s\n", path, sqlite3_errmsg(db));
  sqlite3_close(db);
  return rc == SQLITE_OK ? 0 : -1;
}
