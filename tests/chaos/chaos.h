/* SPDX-License-Identifier: MIT */
/*
 * chaos.h - what the chaos driver and its worker processes agree on.
 */
#ifndef IDEM_CHAOS_H
#define IDEM_CHAOS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <idem.h>

#define CHAOS_NKEYS 50
#define CHAOS_KEY_PREFIX "key-"
/* Short enough that a key whose holder is alive but gone quiet settles
 * quickly; dead holders are taken over at once anyway (liveness). */
#define CHAOS_TTL_MS 2000
#define CHAOS_STALE_TTL_MS 1000
/* Low, so that releases and kills poison a few keys in every run. */
#define CHAOS_MAX_ATTEMPTS 4
/* The settle pass waits longer than a TTL: a lease left by a worker that
 * is gone but not provably dead still ends in time. */
#define CHAOS_SETTLE_WAIT_MS (CHAOS_TTL_MS + 3000)
/* The shared side-effect file in the history directory: one line
 * "KEY FENCE PID" per job body. */
#define CHAOS_EFFECTS "effects.log"

static inline int64_t chaos_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void chaos_key(char *buf, size_t n, int i) {
  snprintf(buf, n, CHAOS_KEY_PREFIX "%02d", i);
}

/* FNV-1a 64, as check_history.py computes it. */
static inline uint64_t chaos_hash(const void *data, size_t len) {
  const unsigned char *p = data;
  uint64_t h = UINT64_C(14695981039346656037);
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= UINT64_C(1099511628211);
  }
  return h;
}

#endif
