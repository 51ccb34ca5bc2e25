/* SPDX-License-Identifier: MIT */
/*
 * test_gc.c - idem_purge_stale(): pending rows nobody holds any more and
 * poisoned rows go once they are old enough; a live lease never does.
 *
 * "Live" is idem_begin()'s own rule, so each way a begin may take a lease
 * (deadline passed, another boot, a holder known to be dead) makes a row
 * deletable, and each way it may not (deadline ahead, holder alive or
 * unknowable, IDEM_OPEN_TTL_ONLY) keeps it, whatever the row's age. The
 * fake clock makes rows old without waiting.
 */
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DAY INT64_C(86400000)
#define TTL 10000 /* tu_options() */

static tu_fx *fx_of(void **state) {
  return *state;
}

static int state_of(idem_db *db, const char *key) {
  idem_record r = IDEM_RECORD_INIT;
  int rc = tu_get(db, key, &r);
  int st = rc == IDEM_OK ? r.state : IDEM_STATE_ABSENT;
  idem_record_clear(&r);
  return st;
}

static uint64_t fence_of(idem_db *db, const char *key) {
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(db, key, &r), IDEM_OK);
  uint64_t f = r.fence;
  idem_record_clear(&r);
  return f;
}

/* Claims and releases `key`: pending, with no lease, claimable now. */
static void released(idem_db *db, const char *key) {
  idem_lease *l = tu_claim(db, key);
  assert_int_equal(idem_release(l, "exit status 3"), IDEM_OK);
  idem_lease_free(l);
}

/* Makes `key` poisoned on a handle of max_attempts 1. */
static void poisoned(tu_fx *fx, const char *key) {
  idem_options o = fx->opts;
  o.max_attempts = 1;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  released(db, key);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, key, &a), IDEM_POISONED);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(db), IDEM_OK);
}

static uint64_t purge_stale(idem_db *db, int state, int64_t older_than) {
  uint64_t n = 99;
  assert_int_equal(idem_purge_stale(db, state, older_than, &n), IDEM_OK);
  return n;
}

/* Released and poisoned rows go once older than asked, and only then;
 * completed and failed rows are idem_purge()'s, never this call's. */
static void test_old_released_and_poisoned_go(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = fx->db;
  released(db, "old-released");
  poisoned(fx, "old-poisoned");
  tu_claim_complete(db, "old-completed", "r");
  idem_lease *l = tu_claim(db, "old-failed");
  assert_int_equal(idem_fail(l, 3, "f", 1), IDEM_OK);
  idem_lease_free(l);
  tu_clock_advance(&fx->clock, 7 * DAY);
  released(db, "new-released");
  poisoned(fx, "new-poisoned");
  tu_clock_advance(&fx->clock, 1000);

  /* Younger than asked: nothing goes. */
  assert_int_equal(purge_stale(db, -1, 8 * DAY), 0);
  /* Exactly as old as asked counts as old enough. */
  assert_int_equal(purge_stale(db, -1, 7 * DAY + 1000), 2);
  assert_int_equal(state_of(db, "old-released"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(db, "old-poisoned"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(db, "new-released"), IDEM_STATE_PENDING);
  assert_int_equal(state_of(db, "new-poisoned"), IDEM_STATE_POISONED);
  assert_int_equal(state_of(db, "old-completed"), IDEM_STATE_COMPLETED);
  assert_int_equal(state_of(db, "old-failed"), IDEM_STATE_FAILED);
  /* 0: any age. */
  assert_int_equal(purge_stale(db, -1, 0), 2);
  assert_int_equal(state_of(db, "new-released"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(db, "new-poisoned"), IDEM_STATE_ABSENT);
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 1);
  assert_int_equal(st.rows[IDEM_STATE_FAILED], 1);
  assert_int_equal(st.rows[IDEM_STATE_PENDING], 0);
  assert_int_equal(st.rows[IDEM_STATE_POISONED], 0);
}

/* `state` picks the pending or the poisoned rows alone. */
static void test_state_filter(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = fx->db;
  released(db, "p");
  poisoned(fx, "x");
  tu_clock_advance(&fx->clock, DAY);
  assert_int_equal(purge_stale(db, IDEM_STATE_POISONED, 0), 1);
  assert_int_equal(state_of(db, "x"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(db, "p"), IDEM_STATE_PENDING);
  poisoned(fx, "y");
  assert_int_equal(purge_stale(db, IDEM_STATE_PENDING, 0), 1);
  assert_int_equal(state_of(db, "p"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(db, "y"), IDEM_STATE_POISONED);
}

/* A live lease stays, however long ago it was claimed: its wall time may
 * be a year old (a job that runs that long, or a wall clock stepped
 * forward), its heartbeats keep it. Once the deadline passes, as a begin
 * would see it, it goes. */
static void test_live_lease_never_goes(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = fx->db;
  idem_lease *held = tu_claim(db, "held");
  tu_clock_step_wall(&fx->clock, 365 * DAY);
  assert_int_equal(purge_stale(db, -1, 0), 0);
  assert_int_equal(purge_stale(db, IDEM_STATE_PENDING, DAY), 0);
  /* Two hours of heartbeats, each well within the TTL. */
  for (int i = 0; i < 2 * 3600 / 4; i++) {
    tu_clock_advance(&fx->clock, 4000);
    assert_int_equal(idem_heartbeat(db, NULL), IDEM_OK);
  }
  assert_int_equal(purge_stale(db, -1, 0), 0);
  assert_int_equal(state_of(db, "held"), IDEM_STATE_PENDING);
  assert_false(idem_lease_lost(held));

  /* The deadline passes: a begin would take the key over, so the row is
   * abandoned; its holder's completion is then refused. */
  uint64_t fence = idem_lease_fence(held);
  tu_clock_advance_lease(&fx->clock, TTL);
  assert_int_equal(purge_stale(db, -1, DAY), 1);
  assert_int_equal(state_of(db, "held"), IDEM_STATE_ABSENT);
  assert_int_equal(idem_complete(held, "late", 4), IDEM_ELEASELOST);
  idem_lease_free(held);

  /* The key starts over at attempt 1, its fence still above the old one. */
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "held", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 1);
  assert_true(a.fence > fence);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
}

/* A lease of another handle, in another process's place: the rule is the
 * begin's, whoever holds it. */
static void test_lease_of_another_handle(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *other = NULL;
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *held = tu_claim(other, "k");
  tu_clock_step_wall(&fx->clock, 30 * DAY);
  assert_int_equal(purge_stale(fx->db, -1, DAY), 0);
  assert_int_equal(idem_complete(held, "done", 4), IDEM_OK);
  idem_lease_free(held);
  assert_int_equal(idem_close(other), IDEM_OK);
  /* Completed now: not this call's to delete, however old. */
  tu_clock_step_wall(&fx->clock, 30 * DAY);
  assert_int_equal(purge_stale(fx->db, -1, 0), 0);
  tu_assert_completed(fx->db, "k", "done");
}

/* A lease written under another boot is not live, as for a begin, even
 * with its deadline ahead. */
static void test_lease_of_another_boot(void **state) {
  tu_fx *fx = fx_of(state);
  if (access("/proc/sys/kernel/random/boot_id", R_OK) != 0) {
    print_message("no boot id on this system: a reboot cannot be seen\n");
    skip();
  }
  idem_lease *held = tu_claim(fx->db, "k");
  assert_int_equal(
      tu_sql(fx->path, "UPDATE idem_keys SET lease_boot = zeroblob(16)"),
      SQLITE_OK);
  tu_clock_advance(&fx->clock, 2 * DAY);
  assert_int_equal(purge_stale(fx->db, -1, DAY), 1);
  assert_int_equal(state_of(fx->db, "k"), IDEM_STATE_ABSENT);
  idem_lease_free(held);
}

/* A pid that names no process any more: a child, reaped. */
static pid_t dead_pid(void) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(0);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return pid;
}

/* A holder known to be dead frees its lease at once for a begin, and so
 * for this call; under IDEM_OPEN_TTL_ONLY its lease runs its TTL for both,
 * and stays. */
static void test_dead_holder(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *held = tu_claim(fx->db, "k");
  char sql[128];
  snprintf(sql, sizeof sql, "UPDATE idem_keys SET owner_pid = %ld",
           (long)dead_pid());
  assert_int_equal(tu_sql(fx->path, sql), SQLITE_OK);
  tu_clock_step_wall(&fx->clock, 2 * DAY);

  idem_options o = fx->opts;
  o.flags |= IDEM_OPEN_TTL_ONLY;
  idem_db *ttl_only = NULL;
  assert_int_equal(tu_open(&ttl_only, fx->path, &o), IDEM_OK);
  assert_int_equal(purge_stale(ttl_only, -1, DAY), 0);
  assert_int_equal(idem_close(ttl_only), IDEM_OK);
  assert_int_equal(state_of(fx->db, "k"), IDEM_STATE_PENDING);

  assert_int_equal(purge_stale(fx->db, -1, DAY), 1);
  assert_int_equal(state_of(fx->db, "k"), IDEM_STATE_ABSENT);
  idem_lease_free(held);
}

/* More rows than one transaction takes, live leases among them: every
 * stale one goes, each live one stays, and the fence floor is above every
 * deleted fence. */
static void test_batches(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = fx->db;
  enum { N = 2600 };
  idem_lease *held[N / 500 + 1];
  int nheld = 0;
  for (int i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%05d", i);
    if (i % 500 == 250)
      held[nheld++] = tu_claim(db, key);
    else
      released(db, key);
  }
  tu_clock_advance_lease(&fx->clock, TTL / 2);
  tu_clock_step_wall(&fx->clock, DAY);
  uint64_t top = 0;
  for (int i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%05d", i);
    uint64_t f = fence_of(db, key);
    top = f > top ? f : top;
  }
  assert_int_equal(purge_stale(db, -1, DAY), N - nheld);
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_PENDING], nheld);
  for (int i = 0; i < nheld; i++) {
    assert_false(idem_lease_lost(held[i]));
    assert_int_equal(idem_complete(held[i], "v", 1), IDEM_OK);
    idem_lease_free(held[i]);
  }
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k00000", &a), IDEM_CLAIMED);
  assert_true(a.fence > top);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  tu_assert_integrity(fx->path);
}

/* What is refused, and changes nothing. */
static void test_refused(void **state) {
  tu_fx *fx = fx_of(state);
  released(fx->db, "k");
  tu_clock_advance(&fx->clock, DAY);
  uint64_t n = 7;
  assert_int_equal(idem_purge_stale(NULL, -1, 0, &n), IDEM_EINVAL);
  assert_int_equal(n, 0);
  assert_int_equal(idem_purge_stale(fx->db, IDEM_STATE_COMPLETED, 0, NULL),
                   IDEM_EINVAL);
  assert_int_equal(idem_purge_stale(fx->db, IDEM_STATE_ABSENT, 0, NULL),
                   IDEM_EINVAL);
  assert_int_equal(idem_purge_stale(fx->db, -2, 0, NULL), IDEM_EINVAL);
  assert_int_equal(idem_purge_stale(fx->db, -1, -1, NULL), IDEM_EINVAL);
  assert_int_equal(idem_purge_stale(fx->db, -1, IDEM_MAX_DURATION_MS + 1, NULL),
                   IDEM_EINVAL);
  /* The longest duration is accepted, and finds nothing that old. */
  assert_int_equal(purge_stale(fx->db, -1, IDEM_MAX_DURATION_MS), 0);

  idem_options o = fx->opts;
  o.flags |= IDEM_OPEN_READONLY;
  idem_db *ro = NULL;
  assert_int_equal(tu_open(&ro, fx->path, &o), IDEM_OK);
  n = 7;
  assert_int_equal(idem_purge_stale(ro, -1, 0, &n), IDEM_EREADONLY);
  assert_int_equal(n, 0);
  assert_int_equal(idem_close(ro), IDEM_OK);
  assert_int_equal(state_of(fx->db, "k"), IDEM_STATE_PENDING);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_old_released_and_poisoned_go,
                                      tu_fx_setup_open, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_state_filter, tu_fx_setup_open,
                                      tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_live_lease_never_goes,
                                      tu_fx_setup_open, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_lease_of_another_handle,
                                      tu_fx_setup_open, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_lease_of_another_boot,
                                      tu_fx_setup_open, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_dead_holder, tu_fx_setup_open,
                                      tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_batches, tu_fx_setup_open,
                                      tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_refused, tu_fx_setup_open,
                                      tu_fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
