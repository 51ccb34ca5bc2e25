/* SPDX-License-Identifier: MIT */
/*
 * test_ledger.c - completion inside the application's own transaction.
 *
 * A small ledger credits an account once per key: the credit (the job's
 * side effect) and the completion commit in one transaction on the
 * application's connection, and the credit is fenced in SQL with
 * idem_fence_ok(). A worker process is killed at every step of the
 * protocol; after each crash, and after a settling run, the balance must
 * equal ten times the number of completed keys: never credited twice,
 * never credited without its completion, never completed without its
 * credit.
 */
#include "testutil.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NKEYS 4
#define CREDIT 10

/* The steps after which a worker may die. */
enum {
  CRASH_NONE,
  CRASH_AFTER_CLAIM,
  CRASH_AFTER_APP_BEGIN,
  CRASH_AFTER_CREDIT,
  CRASH_AFTER_COMPLETE_IN_TX,
  CRASH_AFTER_COMMIT,
  CRASH_POINTS
};

static sqlite3 *app_open(const char *path) {
  sqlite3 *conn = NULL;
  if (sqlite3_open(path, &conn) != SQLITE_OK)
    fail_msg("sqlite3_open: %s", sqlite3_errmsg(conn));
  return conn;
}

static void exec_ok(sqlite3 *conn, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(conn, sql, NULL, NULL, &err) != SQLITE_OK)
    fail_msg("%s: %s", sql, err ? err : "?");
}

static long long query_int(sqlite3 *conn, const char *sql) {
  sqlite3_stmt *s;
  assert_int_equal(sqlite3_prepare_v2(conn, sql, -1, &s, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(s), SQLITE_ROW);
  long long v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return v;
}

/* The application's credit, fenced: it changes a row only while `fence`
 * is the key's current claim. Returns the number of rows changed. */
static int credit(sqlite3 *conn, const char *key, uint64_t fence) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(conn,
                         "UPDATE accounts SET balance = balance + ?3 "
                         "WHERE id = 1 AND idem_fence_ok(?1, ?2)",
                         -1, &s, NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)fence);
  sqlite3_bind_int(s, 3, CREDIT);
  int rc = sqlite3_step(s);
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? sqlite3_changes(conn) : -1;
}

/* One worker, as a real application would write it. Returns 0 when the
 * key ends completed (by this worker or before it). */
static int worker(const char *path, const char *key, int crash_at) {
  sqlite3 *conn = app_open(path);
  idem_db *db = NULL;
  idem_options o = tu_options(NULL);
  if (idem_open_db(&db, conn, &o) != IDEM_OK)
    return 10;
  idem_answer a = IDEM_ANSWER_INIT;
  int answer = idem_begin(db, key, strlen(key), NULL, &a);
  if (answer == IDEM_COMPLETED)
    return 0;
  if (answer != IDEM_CLAIMED)
    return 11;
  if (crash_at == CRASH_AFTER_CLAIM)
    _exit(99);
  exec_ok(conn, "BEGIN IMMEDIATE");
  if (crash_at == CRASH_AFTER_APP_BEGIN)
    _exit(99);
  if (credit(conn, key, a.fence) != 1)
    return 12;
  if (crash_at == CRASH_AFTER_CREDIT)
    _exit(99);
  if (idem_complete_in_tx(a.lease, "credited", 8) != IDEM_OK)
    return 13;
  if (crash_at == CRASH_AFTER_COMPLETE_IN_TX)
    _exit(99);
  exec_ok(conn, "COMMIT");
  if (crash_at == CRASH_AFTER_COMMIT)
    _exit(99);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  int rc = idem_close(db);
  sqlite3_close(conn);
  return rc == IDEM_OK ? 0 : 14;
}

static int run_worker(const char *path, const char *key, int crash_at) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(worker(path, key, crash_at));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

/* The invariant: every completed key was credited once, and nothing else
 * was. Returns the number of completed keys. */
static long long check_ledger(const char *path) {
  sqlite3 *conn = app_open(path);
  long long completed =
      query_int(conn, "SELECT count(*) FROM idem_keys WHERE state = 2");
  long long balance = query_int(conn, "SELECT balance FROM accounts");
  if (balance != completed * CREDIT)
    fail_msg("balance %lld with %lld completed keys", balance, completed);
  sqlite3_close(conn);
  tu_assert_integrity(path);
  return completed;
}

static char *make_ledger(tu_fx *fx, const char *name) {
  char *path = tu_path(fx->dir, name);
  sqlite3 *conn = app_open(path);
  exec_ok(conn, "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance "
                "INTEGER NOT NULL); INSERT INTO accounts VALUES (1, 0)");
  sqlite3_close(conn);
  return path;
}

/* Kill a worker after each step, for every key; after each crash the
 * ledger must hold; then a worker with no crash settles the key (the dead
 * holder's lease is taken over at once) and the key is credited exactly
 * once. */
static void test_crash_at_every_step(void **state) {
  tu_fx *fx = *state;
  char *path = make_ledger(fx, "ledger.db");
  int keys = 0;
  for (int at = CRASH_AFTER_CLAIM; at < CRASH_POINTS; at++) {
    for (int k = 0; k < NKEYS; k++, keys++) {
      char key[32];
      snprintf(key, sizeof key, "credit-%d-%d", at, k);
      int rc = run_worker(path, key, at);
      if (rc != 99)
        fail_msg("crash point %d, %s: worker exit %d", at, key, rc);
      long long before = check_ledger(path);
      assert_int_equal(run_worker(path, key, CRASH_NONE), 0);
      long long after = check_ledger(path);
      /* A crash after the commit left the key completed already. */
      assert_int_equal(after, keys + 1);
      assert_true(after - before <= 1);
      /* And it stays credited once whatever runs it again. */
      assert_int_equal(run_worker(path, key, CRASH_NONE), 0);
      assert_int_equal(check_ledger(path), keys + 1);
    }
  }
  free(path);
}

/* A holder that was overtaken cannot credit: its fenced UPDATE changes
 * nothing and its completion is refused, so it rolls back. */
static void test_stale_holder_cannot_credit(void **state) {
  tu_fx *fx = *state;
  char *path = make_ledger(fx, "stale.db");
  sqlite3 *c1 = app_open(path), *c2 = app_open(path);
  idem_options o = tu_options(&fx->clock);
  idem_db *d1 = NULL, *d2 = NULL;
  assert_int_equal(idem_open_db(&d1, c1, &o), IDEM_OK);
  assert_int_equal(idem_open_db(&d2, c2, &o), IDEM_OK);

  idem_answer a1 = IDEM_ANSWER_INIT, a2 = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(d1, "k", 1, NULL, &a1), IDEM_CLAIMED);
  /* Holder 1 stalls past its TTL; holder 2 takes over and credits. */
  tu_clock_advance_lease(&fx->clock, o.ttl_ms + 1);
  assert_int_equal(idem_begin(d2, "k", 1, NULL, &a2), IDEM_CLAIMED);
  assert_true(a2.fence > a1.fence);
  exec_ok(c2, "BEGIN IMMEDIATE");
  assert_int_equal(credit(c2, "k", a2.fence), 1);
  assert_int_equal(idem_complete_in_tx(a2.lease, "two", 3), IDEM_OK);
  exec_ok(c2, "COMMIT");

  /* Holder 1 wakes up. */
  exec_ok(c1, "BEGIN IMMEDIATE");
  assert_int_equal(credit(c1, "k", a1.fence), 0);
  assert_int_equal(idem_complete_in_tx(a1.lease, "one", 3), IDEM_ELEASELOST);
  assert_true(idem_lease_lost(a1.lease));
  exec_ok(c1, "ROLLBACK");
  assert_int_equal(check_ledger(path), 1);

  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(idem_get(d1, "k", 1, &r), IDEM_OK);
  assert_int_equal(r.result_len, 3);
  assert_memory_equal(r.result, "two", 3);
  idem_record_clear(&r);

  idem_lease_free(a1.lease);
  idem_lease_free(a2.lease);
  idem_answer_clear(&a1);
  idem_answer_clear(&a2);
  assert_int_equal(idem_close(d1), IDEM_OK);
  assert_int_equal(idem_close(d2), IDEM_OK);
  /* The connections stay the application's, and still work. */
  assert_int_equal(query_int(c1, "SELECT balance FROM accounts"), CREDIT);
  sqlite3_close(c1);
  sqlite3_close(c2);
  free(path);
}

/* What idem_fence_ok() says through a lease's life. */
static void test_fence_ok_follows_the_lease(void **state) {
  tu_fx *fx = *state;
  char *path = make_ledger(fx, "fence.db");
  sqlite3 *c = app_open(path);
  idem_options o = tu_options(&fx->clock);
  idem_db *d = NULL;
  assert_int_equal(idem_open_db(&d, c, &o), IDEM_OK);
  assert_int_equal(query_int(c, "SELECT idem_fence_ok('k', 1)"), 0);
  assert_int_equal(query_int(c, "SELECT idem_fence_ok(NULL, 1)"), 0);

  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(d, "k", 1, NULL, &a), IDEM_CLAIMED);
  char sql[96];
  snprintf(sql, sizeof sql, "SELECT idem_fence_ok('k', %llu)",
           (unsigned long long)a.fence);
  assert_int_equal(query_int(c, sql), 1);
  snprintf(sql, sizeof sql, "SELECT idem_fence_ok('k', %llu)",
           (unsigned long long)a.fence - 1);
  assert_int_equal(query_int(c, sql), 0);
  /* Released: the holder may no longer write. */
  assert_int_equal(idem_release(a.lease, NULL), IDEM_OK);
  snprintf(sql, sizeof sql, "SELECT idem_fence_ok('k', %llu)",
           (unsigned long long)a.fence);
  assert_int_equal(query_int(c, sql), 0);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(d), IDEM_OK);
  sqlite3_close(c);
  free(path);
}

/* Misuse is refused with its code, and changes nothing. */
static void test_misuse(void **state) {
  tu_fx *fx = *state;
  char *path = make_ledger(fx, "misuse.db");
  sqlite3 *c = app_open(path);
  idem_options o = tu_options(&fx->clock);
  idem_db *d = NULL;

  exec_ok(c, "BEGIN");
  assert_int_equal(idem_open_db(&d, c, &o), IDEM_EMISUSE);
  idem_close(d);
  exec_ok(c, "COMMIT");

  sqlite3 *mem = app_open(":memory:");
  assert_int_equal(idem_open_db(&d, mem, &o), IDEM_EINVAL);
  idem_close(d);
  sqlite3_close(mem);
  assert_int_equal(idem_open_db(&d, NULL, &o), IDEM_EINVAL);
  idem_close(d);

  assert_int_equal(idem_open_db(&d, c, &o), IDEM_OK);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(d, "k", 1, NULL, &a), IDEM_CLAIMED);
  /* No transaction open. */
  assert_int_equal(idem_complete_in_tx(a.lease, "x", 1), IDEM_EMISUSE);
  assert_int_equal(idem_complete(a.lease, "x", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  /* Inside the application's own transaction a cached answer is still
   * given, though the handle's last begin claimed, which has it try the
   * write lock first. */
  exec_ok(c, "BEGIN");
  assert_int_equal(idem_begin(d, "k", 1, NULL, &a), IDEM_COMPLETED);
  assert_int_equal(a.result_len, 1);
  idem_answer_clear(&a);
  exec_ok(c, "COMMIT");
  /* A call that needs a transaction of its own fails inside the
   * application's, and leaves the application's open and whole. */
  exec_ok(c, "CREATE TABLE app_rows (x)");
  assert_int_equal(idem_begin(d, "k2", 2, NULL, &a), IDEM_CLAIMED);
  exec_ok(c, "BEGIN");
  exec_ok(c, "INSERT INTO app_rows VALUES (1)");
  assert_true(idem_complete(a.lease, "y", 1) < 0);
  assert_int_equal(sqlite3_get_autocommit(c), 0);
  exec_ok(c, "COMMIT");
  assert_int_equal(query_int(c, "SELECT count(*) FROM app_rows"), 1);
  assert_int_equal(idem_complete(a.lease, "y", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(d), IDEM_OK);

  /* A handle of its own has no application transaction to join. */
  assert_int_equal(tu_open(&d, fx->path, &o), IDEM_OK);
  assert_int_equal(idem_begin(d, "k", 1, NULL, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete_in_tx(a.lease, "x", 1), IDEM_EMISUSE);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(d), IDEM_OK);
  sqlite3_close(c);
  free(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_crash_at_every_step, tu_fx_setup,
                                      tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_stale_holder_cannot_credit,
                                      tu_fx_setup, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_fence_ok_follows_the_lease,
                                      tu_fx_setup, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_misuse, tu_fx_setup, tu_fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
