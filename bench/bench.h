/* SPDX-License-Identifier: MIT */
/*
 * bench.h - what the floor and the libidem benchmarks share: the clock,
 * latency samples, keys, and the one interface both systems implement so
 * that every scenario runs them through the same loop.
 */
#ifndef IDEM_BENCH_H
#define IDEM_BENCH_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_KEY_LEN 32 /* 16 random bytes in hex, like a UUID key */
#define BENCH_RESULT_LEN 32

uint64_t bench_now_ns(void);

/* A splitmix64 generator: keys must be random (like real idempotency keys)
 * so that inserts land all over the b-tree, yet cheap to make. */
uint64_t bench_rand(uint64_t *state);
void bench_key(uint64_t *state, char key[BENCH_KEY_LEN]);
uint64_t bench_seed(void);

/* Latency samples of one measurement, in nanoseconds. */
typedef struct bench_samples {
  uint64_t *ns;
  size_t n, cap;
} bench_samples;

int bench_samples_init(bench_samples *s, size_t cap);
void bench_samples_add(bench_samples *s, uint64_t ns);
void bench_samples_free(bench_samples *s);

/* One measurement: a rate and latency percentiles, in microseconds. */
typedef struct bench_meas {
  double rate; /* operations per second */
  double p50, p99, p999, max;
  double extra; /* scenario-specific (e.g. CPU ms per minute) */
} bench_meas;

/* Sorts the samples and fills the percentiles of *m. */
void bench_summarise(uint64_t *ns, size_t n, bench_meas *m);

/* Resident memory of this process in KiB, from /proc/self/status. */
long bench_rss_kib(void);
/* User + system CPU time of this process, in nanoseconds. */
uint64_t bench_cpu_ns(void);

/* A system under test. A handle may be shared by threads (each system
 * serialises its own calls) but never across fork(). */
typedef struct bench_sys {
  const char *name;
  void *(*open)(const char *path, const void *cfg);
  void (*close)(void *h);
  /* claim + complete of a fresh key: the two write transactions */
  int (*cycle)(void *h, const char *key, size_t len);
  /* one begin on a completed (hit) or foreign-leased (busy) key */
  int (*read)(void *h, const char *key, size_t len);
  /* one begin on a hot key; claims are given back at once */
  int (*hot)(void *h, const char *key, size_t len);
  /* takes a lease and keeps it (heartbeat, memory) */
  int (*hold)(void *h, const char *key, size_t len);
  /* one refresh of every held lease, in one transaction */
  int (*heartbeat)(void *h);
  /* gives back every held lease */
  void (*drop)(void *h);
} bench_sys;

/* Floor configuration (floor.c). */
#define FLOOR_FULL 0x1     /* synchronous = FULL */
#define FLOOR_INDEX 0x2    /* add libidem's partial expiry index */
#define FLOOR_BGCKPT 0x4   /* checkpoint in a thread, not inside COMMIT */
#define FLOOR_QUEUE 0x8    /* writers wait in libidem's queue (lib/queue.h) */
#define FLOOR_HISTORY 0x10 /* libidem's attempt history, in the row */
#define FLOOR_HISTORY_TABLE 0x20 /* the same, in a table of its own */

typedef struct floor_cfg {
  unsigned flags;
  unsigned turn_us; /* FLOOR_QUEUE: how long a turn may last (0: one
                       transaction) */
} floor_cfg;

extern const bench_sys floor_sys;

/* Fills idem_keys of an existing database with `rows` completed rows of
 * random keys, in key order so that the b-tree is built by appends. */
int bench_fill(const char *path, long rows);

#endif
