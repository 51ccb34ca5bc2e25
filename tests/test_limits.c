/* SPDX-License-Identifier: MIT */
/*
 * test_limits.c - durations, counts and sizes at their documented edges.
 *
 * Every duration the API takes is bounded by IDEM_MAX_DURATION_MS, and a
 * sum of times saturates instead of wrapping: a lease of "forever" must
 * never turn into a lease that ended long ago, which would let a second
 * owner claim a live key. Counts that could wrap stop at their end, and
 * what a call allocates follows what it reads, not what it was allowed to
 * read.
 */
#include "testutil.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static tu_fx *fx_of(void **state) {
  return *state;
}

static int open_code(tu_fx *fx, const idem_options *o) {
  idem_db *db = NULL;
  int rc = idem_open(&db, fx->path, o);
  idem_close(db);
  return rc;
}

/* Each duration option at its limit opens; one past it, and INT64_MAX,
 * are refused. */
static void test_duration_options_bounded(void **state) {
  tu_fx *fx = fx_of(state);
  const int64_t max = IDEM_MAX_DURATION_MS;
  idem_options o = fx->opts;
  o.ttl_ms = max;
  assert_int_equal(open_code(fx, &o), IDEM_OK);
  o.ttl_ms = max + 1;
  assert_int_equal(open_code(fx, &o), IDEM_EINVAL);
  o.ttl_ms = INT64_MAX;
  assert_int_equal(open_code(fx, &o), IDEM_EINVAL);
  o = fx->opts;
  o.retention_ms = max;
  assert_int_equal(open_code(fx, &o), IDEM_OK);
  o.retention_ms = max + 1;
  assert_int_equal(open_code(fx, &o), IDEM_EINVAL);
  o.retention_ms = INT64_MAX;
  assert_int_equal(open_code(fx, &o), IDEM_EINVAL);
  /* heartbeat_ms stays below ttl_ms, so it is bounded too. */
  o = fx->opts;
  o.ttl_ms = max;
  o.heartbeat_ms = INT64_MAX;
  assert_int_equal(open_code(fx, &o), IDEM_EINVAL);
}

/* A lease of the longest TTL is still held a century of lease clock
 * later, less a millisecond; a result kept for the longest retention is
 * still served. */
static void test_longest_lease_and_retention_hold(void **state) {
  tu_fx *fx = fx_of(state);
  const int64_t max = IDEM_MAX_DURATION_MS;
  idem_options o = fx->opts;
  o.ttl_ms = max;
  o.retention_ms = max;
  idem_db *holder = NULL, *other = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &o), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(holder, "forever");
  tu_clock_advance(&fx->clock, max - 1);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(other, "forever", &a), IDEM_BUSY);
  assert_int_equal(a.lease_ms, 1);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(l, "kept", 4), IDEM_OK);
  idem_lease_free(l);
  tu_clock_advance(&fx->clock, max - 1);
  tu_assert_completed(other, "forever", "kept");
  tu_clock_advance(&fx->clock, 1);
  assert_int_equal(tu_begin(other, "forever", &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "again", 5), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

/* wait_ms beyond the limit is refused before anything is looked up. */
static void test_wait_bounded(void **state) {
  tu_fx *fx = fx_of(state);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  idem_answer a = IDEM_ANSWER_INIT;
  bo.wait_ms = IDEM_MAX_DURATION_MS + 1;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EINVAL);
  bo.wait_ms = INT64_MAX;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EINVAL);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "k", &r), IDEM_ENOTFOUND);
  /* At the limit, a free key is claimed at once. */
  bo.wait_ms = IDEM_MAX_DURATION_MS;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "", 0), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
}

/* A clock callback near the end of int64: the deadline saturates at
 * INT64_MAX instead of wrapping into the past, so the lease is held, not
 * claimable by the next caller. */
static void test_deadline_saturates(void **state) {
  tu_fx *fx = fx_of(state);
  atomic_store(&fx->clock.lease_ms, INT64_MAX - 5);
  idem_db *holder = NULL, *other = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(holder, "late");
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(other, "late", &a), IDEM_BUSY);
  assert_int_equal(a.lease_ms, 5);
  idem_answer_clear(&a);
  unsigned lost = 9;
  assert_int_equal(idem_heartbeat(holder, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  assert_int_equal(tu_begin(other, "late", &a), IDEM_BUSY);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(l, "x", 1), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

/* With unlimited attempts the count stops at UINT32_MAX: the claim that
 * would wrap it to 0 poisons the key instead. */
static void test_attempts_never_wrap(void **state) {
  tu_fx *fx = fx_of(state);
  fx->opts.max_attempts = 0;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(db, "k");
  assert_int_equal(idem_release(l, "again"), IDEM_OK);
  idem_lease_free(l);
  char sql[128];
  snprintf(sql, sizeof sql, "UPDATE idem_keys SET attempts = %lu",
           (unsigned long)UINT32_MAX - 1);
  assert_int_equal(tu_sql(fx->path, sql), 0);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, UINT32_MAX);
  assert_int_equal(idem_release(a.lease, "again"), IDEM_OK);
  idem_lease_free(a.lease);
  assert_int_equal(tu_begin(db, "k", &a), IDEM_POISONED);
  assert_int_equal(a.attempts, UINT32_MAX);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(db), IDEM_OK);
}

static int count_rows(void *ctx, const idem_record *r) {
  (void)r;
  ++*(unsigned *)ctx;
  return 0;
}

/* A listing sizes its memory by the rows it reads: the largest limit over
 * three rows lists three. */
static void test_list_largest_limit(void **state) {
  tu_fx *fx = fx_of(state);
  tu_claim_complete(fx->db, "a", "1");
  tu_claim_complete(fx->db, "b", "2");
  tu_claim_complete(fx->db, "c", "3");
  unsigned seen = 0, count = 0;
  assert_int_equal(
      idem_list(fx->db, -1, NULL, 0, UINT_MAX, count_rows, &seen, &count),
      IDEM_OK);
  assert_int_equal(seen, 3);
  assert_int_equal(count, 3);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)
#define TO(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, tu_fx_setup_open, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_duration_options_bounded),
      T(test_longest_lease_and_retention_hold),
      TO(test_wait_bounded),
      T(test_deadline_saturates),
      T(test_attempts_never_wrap),
      TO(test_list_largest_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
