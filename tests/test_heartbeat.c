/* SPDX-License-Identifier: MIT */
/*
 * test_heartbeat.c - what a heartbeat round writes and whom it tells.
 *
 * A round must push a lease's deadline from the time it holds the lock,
 * follow the lease clock when the host sleeps, and tell a job of a lost
 * lease exactly when the lease was lost: not when its own holder ended it
 * while the round waited for the lock, and surely when another begin
 * poisoned the key under the same fence.
 *
 * Threads are lined up behind SQLite's write lock by the tickets of the
 * writers' queue, which the test can see; the fake clock moves instead of
 * anyone sleeping for a TTL.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TTL 10000

static tu_fx *fx_of(void **state) {
  tu_fx *fx = *state;
  fx->opts.ttl_ms = TTL;
  return fx;
}

/* lease_until of the row of `key`, as stored. */
static int64_t stored_deadline(tu_fx *fx, const char *key) {
  char sql[128];
  int64_t v = -1;
  snprintf(sql, sizeof sql,
           "SELECT lease_until FROM idem_keys WHERE key = CAST('%s' AS BLOB)",
           key);
  assert_int_equal(tu_sql_int(fx->path, sql, &v), 0);
  return v;
}

/* A call run on a thread of its own, so that it can wait for the lock. */
typedef struct call {
  pthread_t th;
  idem_db *db;
  idem_lease *lease;
  const char *key;
  idem_answer answer;
  unsigned lost;
  int rc;
} call;

static void *heartbeat_main(void *arg) {
  call *c = arg;
  c->rc = idem_heartbeat(c->db, &c->lost);
  return NULL;
}

static void *release_main(void *arg) {
  call *c = arg;
  c->rc = idem_release(c->lease, "the job is done with it");
  return NULL;
}

static void *begin_main(void *arg) {
  call *c = arg;
  c->rc = tu_begin(c->db, c->key, &c->answer);
  return NULL;
}

static void start(call *c, void *(*fn)(void *)) {
  static const idem_answer init = IDEM_ANSWER_INIT;
  c->answer = init;
  assert_int_equal(pthread_create(&c->th, NULL, fn, c), 0);
}

static void join(call *c) {
  assert_int_equal(pthread_join(c->th, NULL), 0);
}

/* A round that waited for the lock counts the new deadline from the moment
 * it holds it: a deadline from before the wait would be shorter than the
 * TTL, or over already. */
static void test_refresh_counts_from_lock(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *holder = NULL, *other = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(holder, "k");
  assert_int_equal(stored_deadline(fx, "k"), TU_LEASE_START + TTL);

  uint32_t t0 = tu_queue_tickets(fx->path);
  struct sqlite3 *lock = tu_hold_write_lock(fx->path);
  call hb = {.db = holder};
  start(&hb, heartbeat_main);
  tu_wait_tickets(fx->path, t0 + 1);
  tu_clock_advance_lease(&fx->clock, TTL * 6 / 10);
  tu_drop_write_lock(lock);
  join(&hb);
  assert_int_equal(hb.rc, IDEM_OK);
  assert_int_equal(hb.lost, 0);
  assert_int_equal(stored_deadline(fx, "k"), TU_LEASE_START + TTL * 16 / 10);

  /* Past the deadline a reading from before the wait would have given. */
  tu_clock_advance_lease(&fx->clock, TTL / 2);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(other, "k", &a), IDEM_BUSY);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(l, "done", 4), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

/* The lease clock jumps (the host slept: boot time went on, the monotonic
 * clock did not) while the thread waits for its next round, which is a
 * long real-time period away: a round follows within about a second, not
 * at the end of the period. */
static void test_round_follows_resume(void **state) {
  tu_fx *fx = fx_of(state);
  const int64_t ttl = 60000, period = 20000;
  idem_options o = fx->opts;
  o.ttl_ms = ttl;
  o.heartbeat_ms = period; /* real ms, far beyond the wait below */
  idem_db *holder = NULL, *reader = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &o), IDEM_OK);
  assert_int_equal(tu_open(&reader, fx->path, &o), IDEM_OK);
  idem_lease *l = tu_claim(holder, "k");
  int64_t claimed = tu_clock_now(&fx->clock, IDEM_CLOCK_LEASE);
  assert_int_equal(stored_deadline(fx, "k"), claimed + ttl);

  int64_t t0 = tu_real_ms();
  tu_clock_advance_lease(&fx->clock, period);
  int64_t want = claimed + period + ttl;
  while (stored_deadline(fx, "k") < want) {
    if (tu_real_ms() - t0 > period / 2)
      fail_msg("no round within %lld ms of a resume: the deadline is %lld, "
               "a round would make it %lld",
               (long long)(period / 2), (long long)stored_deadline(fx, "k"),
               (long long)want);
    tu_sleep_ms(5);
  }
  assert_false(idem_lease_lost(l));
  assert_int_equal(idem_complete(l, "done", 4), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(idem_close(reader), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

/* A lease that lapsed and whose key another begin then poisoned keeps its
 * fence in the row, but is no longer held: the round tells the job, as it
 * would of a takeover, and the completion is refused. */
static void test_poisoned_under_same_fence_is_lost(void **state) {
  tu_fx *fx = fx_of(state);
  tu_lost seen;
  idem_options o = fx->opts;
  o.max_attempts = 1;
  tu_lost_watch(&seen, &o);
  idem_db *holder = NULL, *other = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &o), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &o), IDEM_OK);
  idem_lease *l = tu_claim(holder, "k");
  uint64_t fence = idem_lease_fence(l);

  tu_clock_advance_lease(&fx->clock, TTL + 1);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(other, "k", &a), IDEM_POISONED);
  assert_int_equal(a.fence, fence);
  idem_answer_clear(&a);

  unsigned lost = 0;
  assert_int_equal(idem_heartbeat(holder, &lost), IDEM_OK);
  assert_int_equal(lost, 1);
  assert_true(idem_lease_lost(l));
  assert_int_equal(atomic_load(&seen.calls), 1);
  assert_ptr_equal(atomic_load(&seen.lease), l);
  /* Told once. */
  assert_int_equal(idem_heartbeat(holder, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  assert_int_equal(atomic_load(&seen.calls), 1);
  assert_int_equal(idem_complete(l, "late", 4), IDEM_ELEASELOST);
  idem_lease_free(l);
  assert_int_equal(tu_begin(other, "k", &a), IDEM_POISONED);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

static int no_lost_attempt(void *ctx, const idem_attempt *at) {
  int *lost = ctx;
  if (at->outcome == IDEM_OUTCOME_LOST)
    ++*lost;
  return 0;
}

static int outcome_of_first(void *ctx, const idem_attempt *at) {
  if (at->attempt == 1)
    *(int *)ctx = at->outcome;
  return 0;
}

/* A round takes its list of leases, then waits for the lock; meanwhile the
 * holder releases its lease and frees it, and another begin claims the
 * key. The round must not call that lease lost: on_lost would get a lease
 * the application has freed, and the history would call the released
 * attempt lost. Writers go in the order of their queue tickets: the
 * release, the claim, then the round. */
static void test_released_while_round_waits(void **state) {
  tu_fx *fx = fx_of(state);
  tu_lost seen;
  idem_options o = fx->opts;
  tu_lost_watch(&seen, &o);
  idem_db *holder = NULL, *other = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &o), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(holder, "k");
  /* Lapsed, so that the other begin goes for the lock at once. */
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  /* A connection keeps its turn in the queue while no one else asks for
   * it: the other handle writes last, so that each call below takes a
   * ticket of its own. */
  tu_claim_complete(other, "warm", "w");

  uint32_t t0 = tu_queue_tickets(fx->path);
  struct sqlite3 *lock = tu_hold_write_lock(fx->path);
  call rel = {.lease = l}, claim = {.db = other, .key = "k"},
       hb = {.db = holder};
  start(&rel, release_main);
  tu_wait_tickets(fx->path, t0 + 1);
  start(&claim, begin_main);
  tu_wait_tickets(fx->path, t0 + 2);
  start(&hb, heartbeat_main);
  tu_wait_tickets(fx->path, t0 + 3);
  tu_drop_write_lock(lock);

  join(&rel);
  assert_int_equal(rel.rc, IDEM_OK);
  idem_lease_free(l); /* the round still has it; the application does not */
  join(&claim);
  assert_int_equal(claim.rc, IDEM_CLAIMED);
  assert_int_equal(claim.answer.attempts, 2);
  join(&hb);
  assert_int_equal(hb.rc, IDEM_OK);
  assert_int_equal(hb.lost, 0);
  assert_int_equal(atomic_load(&seen.calls), 0);
  assert_int_equal(tu_stats(holder).lost, 0);

  int lost = 0, first = -1;
  assert_int_equal(idem_history(other, "k", 1, no_lost_attempt, &lost, NULL),
                   IDEM_OK);
  assert_int_equal(lost, 0);
  assert_int_equal(idem_history(other, "k", 1, outcome_of_first, &first, NULL),
                   IDEM_OK);
  assert_int_equal(first, IDEM_OUTCOME_RELEASED);

  assert_int_equal(idem_complete(claim.answer.lease, "next", 4), IDEM_OK);
  idem_lease_free(claim.answer.lease);
  idem_answer_clear(&claim.answer);
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_refresh_counts_from_lock),
      T(test_round_follows_resume),
      T(test_poisoned_under_same_fence_is_lost),
      T(test_released_while_round_waits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
