/* SPDX-License-Identifier: MIT */
/*
 * test_finish.c - what a claim and a finish write, and when they count.
 *
 * A begin and a completion that waited for the write lock take their times
 * from after the wait; an unguarded run (IDEM_FAIL_OPEN) has its result
 * stored once storage is back, where no one else owns the key; and a
 * completion inside the application's transaction keeps the lease alive
 * until that transaction is known to have committed or rolled back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TTL 10000

static tu_fx *fx_of(void **state) {
  tu_fx *fx = *state;
  fx->opts.ttl_ms = TTL;
  return fx;
}

static int64_t row_column(tu_fx *fx, const char *column, const char *key) {
  char sql[160];
  int64_t v = -1;
  snprintf(sql, sizeof sql,
           "SELECT %s FROM idem_keys WHERE key = CAST('%s' AS BLOB)", column,
           key);
  assert_int_equal(tu_sql_int(fx->path, sql, &v), 0);
  return v;
}

typedef struct call {
  pthread_t th;
  idem_db *db;
  idem_lease *lease;
  idem_answer answer;
  int rc;
} call;

static void *begin_main(void *arg) {
  call *c = arg;
  c->rc = tu_begin(c->db, "k", &c->answer);
  return NULL;
}

static void *complete_main(void *arg) {
  call *c = arg;
  c->rc = idem_complete(c->lease, "done", 4);
  return NULL;
}

/* Runs fn on a thread that waits behind the write lock while the fake
 * clock moves by lease_ms and wall_ms, then lets it through. */
static void behind_lock(tu_fx *fx, call *c, void *(*fn)(void *),
                        int64_t lease_ms, int64_t wall_ms) {
  static const idem_answer init = IDEM_ANSWER_INIT;
  c->answer = init;
  uint32_t t0 = tu_queue_tickets(fx->path);
  struct sqlite3 *lock = tu_hold_write_lock(fx->path);
  assert_int_equal(pthread_create(&c->th, NULL, fn, c), 0);
  tu_wait_tickets(fx->path, t0 + 1);
  tu_clock_advance_lease(&fx->clock, lease_ms);
  tu_clock_step_wall(&fx->clock, wall_ms);
  tu_drop_write_lock(lock);
  assert_int_equal(pthread_join(c->th, NULL), 0);
}

/* A claim that waited for the lock longer than the TTL: the lease it
 * stores and reports runs a full TTL from the claim, not from the call. */
static void test_claim_counts_from_lock(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = NULL, *other = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  call c = {.db = db};
  behind_lock(fx, &c, begin_main, 2 * TTL, 0);
  assert_int_equal(c.rc, IDEM_CLAIMED);
  assert_int_equal(c.answer.lease_ms, TTL);
  assert_int_equal(row_column(fx, "lease_until", "k"),
                   TU_LEASE_START + 3 * TTL);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(other, "k", &a), IDEM_BUSY);
  assert_int_equal(a.lease_ms, TTL);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(c.answer.lease, "mine", 4), IDEM_OK);
  idem_lease_free(c.answer.lease);
  idem_answer_clear(&c.answer);
  tu_assert_completed(other, "k", "mine");
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Retention starts when the completion is written: a completion that
 * waited for the lock longer than the retention is still served. */
static void test_retention_counts_from_lock(void **state) {
  tu_fx *fx = fx_of(state);
  fx->opts.retention_ms = 1000;
  idem_db *db = NULL, *other = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  call c = {.lease = tu_claim(db, "k")};
  /* Another connection's write takes the queue's turn from this one, so
   * that the completion waits in the queue where the test can see it. */
  tu_claim_complete(other, "warm", "w");
  behind_lock(fx, &c, complete_main, 0, 5000);
  assert_int_equal(c.rc, IDEM_OK);
  assert_int_equal(row_column(fx, "expires_at", "k"),
                   TU_WALL_START + 5000 + 1000);
  tu_assert_completed(other, "k", "done");
  idem_lease_free(c.lease);
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Begins `key` while another connection holds the write lock past the busy
 * timeout: under IDEM_FAIL_OPEN the answer is an unguarded claim. */
static idem_lease *unguarded_claim(tu_fx *fx, idem_db *db, const char *key) {
  struct sqlite3 *lock = tu_hold_write_lock(fx->path);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, key, &a), IDEM_CLAIMED);
  assert_true(a.unguarded);
  idem_lease *l = a.lease;
  idem_answer_clear(&a);
  tu_drop_write_lock(lock);
  return l;
}

/* The job of an unguarded claim ran: once storage is back its completion
 * is stored, so that the next begin is answered instead of running the
 * job again. While storage still fails the caller is told, and may call
 * again. */
static void test_unguarded_completion_stored(void **state) {
  tu_fx *fx = fx_of(state);
  fx->opts.fail_policy = IDEM_FAIL_OPEN;
  fx->opts.busy_timeout_ms = 50;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = unguarded_claim(fx, db, "k");

  struct sqlite3 *lock = tu_hold_write_lock(fx->path);
  assert_int_equal(idem_complete(l, "ran", 3), IDEM_EBUSY);
  tu_drop_write_lock(lock);
  assert_int_equal(idem_complete(l, "ran", 3), IDEM_OK);
  idem_lease_free(l);

  tu_assert_completed(db, "k", "ran");
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(db, "k", &r), IDEM_OK);
  assert_int_equal(r.attempts, 1);
  assert_true(r.fence > 0);
  idem_record_clear(&r);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Where another owner claimed the key meanwhile, the unguarded result is
 * not stored over it: IDEM_ELEASELOST, and the owner completes as usual.
 * The same for a failure recorded by the unguarded job. */
static void test_unguarded_yields_to_owner(void **state) {
  tu_fx *fx = fx_of(state);
  fx->opts.fail_policy = IDEM_FAIL_OPEN;
  fx->opts.busy_timeout_ms = 50;
  idem_db *db = NULL, *other = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = unguarded_claim(fx, db, "k");
  idem_lease *owner = tu_claim(other, "k");
  assert_int_equal(idem_fail(l, 7, "no", 2), IDEM_ELEASELOST);
  assert_true(idem_lease_lost(l));
  idem_lease_free(l);
  assert_int_equal(idem_complete(owner, "owner", 5), IDEM_OK);
  idem_lease_free(owner);
  tu_assert_completed(db, "k", "owner");

  /* Completed before the unguarded job ends: its result is refused too. */
  l = unguarded_claim(fx, db, "k2");
  tu_claim_complete(other, "k2", "owner");
  assert_int_equal(idem_complete(l, "late", 4), IDEM_ELEASELOST);
  idem_lease_free(l);
  tu_assert_completed(db, "k2", "owner");
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The application's connection, and a handle on it. */
typedef struct app {
  sqlite3 *conn;
  idem_db *db;
} app;

static void app_open(tu_fx *fx, app *a) {
  assert_int_equal(sqlite3_open(fx->path, &a->conn), SQLITE_OK);
  assert_int_equal(sqlite3_exec(a->conn,
                                "CREATE TABLE IF NOT EXISTS effects(v TEXT)",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  a->db = NULL;
  assert_int_equal(idem_open_db(&a->db, a->conn, &fx->opts), IDEM_OK);
}

static void app_close(app *a) {
  assert_int_equal(idem_close(a->db), IDEM_OK);
  assert_int_equal(sqlite3_close(a->conn), SQLITE_OK);
}

static void app_exec(app *a, const char *sql) {
  assert_int_equal(sqlite3_exec(a->conn, sql, NULL, NULL, NULL), SQLITE_OK);
}

/* Completes the lease in a transaction of the application's, with a write
 * of its own, and leaves the transaction open. */
static void complete_in_tx(app *a, idem_lease *l, const char *result) {
  app_exec(a, "BEGIN");
  app_exec(a, "INSERT INTO effects VALUES ('effect')");
  assert_int_equal(idem_complete_in_tx(l, result, strlen(result)), IDEM_OK);
}

static void expect_busy(idem_db *db, uint32_t attempts) {
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k", &a), IDEM_BUSY);
  assert_int_equal(a.attempts, attempts);
  idem_answer_clear(&a);
}

/* The application rolls back after the completion: the lease is still the
 * job's, kept alive by the heartbeat well past its TTL, and can finish the
 * job anew. No attempt is spent on the rollback. */
static void test_in_tx_rollback_keeps_lease(void **state) {
  tu_fx *fx = fx_of(state);
  app a;
  app_open(fx, &a);
  idem_db *other = NULL;
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(a.db, "k");
  complete_in_tx(&a, l, "first");
  /* Not finished while the transaction is open. */
  assert_int_equal(idem_complete(l, "other", 5), IDEM_EMISUSE);
  assert_int_equal(idem_complete_in_tx(l, "again", 5), IDEM_EMISUSE);
  app_exec(&a, "ROLLBACK");
  expect_busy(other, 1);

  for (int i = 0; i < 4; i++) {
    tu_clock_advance_lease(&fx->clock, TTL / 2);
    unsigned lost = 9;
    assert_int_equal(idem_heartbeat(a.db, &lost), IDEM_OK);
    assert_int_equal(lost, 0);
    expect_busy(other, 1);
  }
  assert_false(idem_lease_lost(l));

  complete_in_tx(&a, l, "second");
  app_exec(&a, "COMMIT");
  idem_lease_free(l);
  tu_assert_completed(other, "k", "second");
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(other, "k", &r), IDEM_OK);
  assert_int_equal(r.attempts, 1);
  idem_record_clear(&r);
  int64_t effects = 0;
  assert_int_equal(
      tu_sql_int(fx->path, "SELECT count(*) FROM effects", &effects), 0);
  assert_int_equal(effects, 1);
  assert_int_equal(idem_close(other), IDEM_OK);
  app_close(&a);
}

/* After a rollback the lease can also be completed, or released, the
 * usual way. */
static void test_in_tx_rollback_then_release(void **state) {
  tu_fx *fx = fx_of(state);
  app a;
  app_open(fx, &a);
  idem_lease *l = tu_claim(a.db, "k");
  complete_in_tx(&a, l, "first");
  app_exec(&a, "ROLLBACK");
  assert_int_equal(idem_release(l, "try later"), IDEM_OK);
  idem_lease_free(l);
  idem_answer ans = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(a.db, "k", &ans), IDEM_CLAIMED);
  assert_int_equal(ans.attempts, 2);
  assert_int_equal(idem_complete(ans.lease, "done", 4), IDEM_OK);
  idem_lease_free(ans.lease);
  idem_answer_clear(&ans);
  app_close(&a);
}

/* The application commits: the lease is finished, and neither a heartbeat
 * nor a later call calls it lost. */
static void test_in_tx_commit_finishes(void **state) {
  tu_fx *fx = fx_of(state);
  app a;
  app_open(fx, &a);
  idem_lease *l = tu_claim(a.db, "k");
  complete_in_tx(&a, l, "first");
  app_exec(&a, "COMMIT");
  unsigned lost = 9;
  assert_int_equal(idem_heartbeat(a.db, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  assert_false(idem_lease_lost(l));
  assert_int_equal(idem_complete(l, "again", 5), IDEM_EMISUSE);
  assert_false(idem_lease_lost(l));
  idem_lease_free(l);
  tu_assert_completed(a.db, "k", "first");

  /* The same when the heartbeat is first to see the commit. */
  l = tu_claim(a.db, "k2");
  app_exec(&a, "BEGIN");
  assert_int_equal(idem_complete_in_tx(l, "k2", 2), IDEM_OK);
  app_exec(&a, "COMMIT");
  assert_int_equal(idem_heartbeat(a.db, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  assert_int_equal(idem_release(l, "late"), IDEM_EMISUSE);
  idem_lease_free(l);
  idem_answer ans = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(a.db, "k2", 2, NULL, &ans), IDEM_COMPLETED);
  idem_answer_clear(&ans);
  app_close(&a);
}

/* A lease freed while its transaction is still open is left to it: the
 * commit completes the key; a rollback leaves it pending until its TTL. */
static void test_in_tx_freed_before_end(void **state) {
  tu_fx *fx = fx_of(state);
  app a;
  app_open(fx, &a);
  idem_db *other = NULL;
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(a.db, "k");
  complete_in_tx(&a, l, "first");
  idem_lease_free(l);
  app_exec(&a, "ROLLBACK");
  expect_busy(other, 1);
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  idem_answer ans = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(other, "k", &ans), IDEM_CLAIMED);
  assert_int_equal(ans.attempts, 2);
  assert_int_equal(idem_complete(ans.lease, "done", 4), IDEM_OK);
  idem_lease_free(ans.lease);
  idem_answer_clear(&ans);

  l = tu_claim(a.db, "k3");
  app_exec(&a, "BEGIN");
  assert_int_equal(idem_complete_in_tx(l, "k3", 2), IDEM_OK);
  idem_lease_free(l);
  app_exec(&a, "COMMIT");
  assert_int_equal(idem_begin(other, "k3", 2, NULL, &ans), IDEM_COMPLETED);
  idem_answer_clear(&ans);
  assert_int_equal(idem_close(other), IDEM_OK);
  app_close(&a);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_claim_counts_from_lock),      T(test_retention_counts_from_lock),
      T(test_unguarded_completion_stored), T(test_unguarded_yields_to_owner),
      T(test_in_tx_rollback_keeps_lease),  T(test_in_tx_rollback_then_release),
      T(test_in_tx_commit_finishes),       T(test_in_tx_freed_before_end),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
