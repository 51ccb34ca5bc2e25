/* SPDX-License-Identifier: MIT */
/*
 * clock.c - the one place the library reads time.
 *
 * Lease deadlines are kept in boot-time milliseconds: every process of a
 * host reads the same CLOCK_BOOTTIME, it counts time spent in suspend (so a
 * lease does not outlive a laptop's sleep), and neither NTP nor a manual
 * date change moves it. Because it restarts at zero on every boot, a
 * deadline is only meaningful with the boot id it was taken under, which
 * each lease row records. The wall clock serves retention and display only.
 * Every reading goes through idem__now(), which a test can redirect with
 * idem_options.clock.
 */
#include "internal.h"

#include <time.h>

#ifndef CLOCK_BOOTTIME
#define CLOCK_BOOTTIME CLOCK_MONOTONIC
#endif

static int64_t read_us(clockid_t id) {
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0)
    return 0;
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t read_ms(clockid_t id) {
  return read_us(id) / 1000;
}

int64_t idem__now(const idem_db *db, int which) {
  if (db->opt.clock)
    return db->opt.clock(db->opt.clock_ctx, which);
  return read_ms(which == IDEM_CLOCK_WALL ? CLOCK_REALTIME : CLOCK_BOOTTIME);
}

/* Lock waits are real waits, whatever clock the handle was given. */
int64_t idem__monotonic_ms(void) {
  return read_ms(CLOCK_MONOTONIC);
}

int64_t idem__monotonic_us(void) {
  return read_us(CLOCK_MONOTONIC);
}

/* Sums and differences of times saturate instead of wrapping: a deadline
 * of "forever" must stay in the future, never turn into the past. The
 * options are range-checked (IDEM_MAX_DURATION_MS), but a clock callback
 * or a stored row may still hold any value. */
int64_t idem__ms_add(int64_t t, int64_t d) {
  if (d > 0 && t > INT64_MAX - d)
    return INT64_MAX;
  if (d < 0 && t < INT64_MIN - d)
    return INT64_MIN;
  return t + d;
}

int64_t idem__ms_sub(int64_t a, int64_t b) {
  if (b == INT64_MIN)
    return a >= 0 ? INT64_MAX : a - b;
  return idem__ms_add(a, -b);
}
