/* SPDX-License-Identifier: MIT */
/*
 * test_history.c - idem_history(): every way an attempt can end, and every
 * field of what is reported about it.
 *
 * Fixture defaults (testutil.h): ttl 10000 ms, no heartbeat thread, 5
 * attempts, retention forever, a fake clock. The wall clock is moved
 * between steps so that each start and end time is a value no other step
 * could have written.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#define TTL 10000
#define MAX_SEEN 32

static tu_fx *fx_of(void **state) {
  return *state;
}

static int64_t wall(tu_fx *fx) {
  return tu_clock_now(&fx->clock, IDEM_CLOCK_WALL);
}

/* What the callback saw. The message is only valid during the call, so it
 * is copied; the copy replaces the pointer in the kept attempt. */
typedef struct seen {
  unsigned n;
  unsigned stop_at; /* return non-zero from the stop_at-th call; 0 never */
  int overflow;     /* more calls than MAX_SEEN */
  int bad_version;  /* an attempt without IDEM_ATTEMPT_VERSION */
  idem_attempt a[MAX_SEEN];
  char *msg[MAX_SEEN];
} seen;

/* No cmocka assertion in here: it would jump out of the library with the
 * handle's lock held, and the teardown would then hang on it. */
static int collect(void *ctx, const idem_attempt *a) {
  seen *s = ctx;
  if (s->n == MAX_SEEN) {
    s->overflow = 1;
    return 1;
  }
  if (a->version != IDEM_ATTEMPT_VERSION)
    s->bad_version = 1;
  s->a[s->n] = *a;
  s->msg[s->n] = a->message != NULL ? strdup(a->message) : NULL;
  s->a[s->n].message = s->msg[s->n];
  s->n++;
  return s->stop_at != 0 && s->n >= s->stop_at;
}

static void seen_clear(seen *s) {
  for (unsigned i = 0; i < s->n; i++)
    free(s->msg[i]);
  memset(s, 0, sizeof *s);
}

/* The history of a key that has one, checked for what holds of every
 * history: the count matches the calls, and attempts are numbered on from
 * `first` without a gap. */
/* first == 0: the oldest attempts were dropped, so the history starts
 * wherever it does, and goes on without a gap. */
static void history_from(idem_db *db, const void *key, size_t len,
                         uint32_t first, seen *s) {
  seen_clear(s);
  unsigned count = 12345;
  int rc = idem_history(db, key, len, collect, s, &count);
  if (rc != IDEM_OK)
    fail_msg("idem_history: %s (%s)", idem_errstr(rc), idem_errmsg(db));
  assert_false(s->overflow);
  assert_false(s->bad_version);
  assert_int_equal(count, s->n);
  if (first == 0 && s->n)
    first = s->a[0].attempt;
  for (unsigned i = 0; i < s->n; i++)
    assert_int_equal(s->a[i].attempt, first + i);
}

/* A history short enough to be whole: attempts 1..n. */
static void history_of_bytes(idem_db *db, const void *key, size_t len,
                             seen *s) {
  history_from(db, key, len, 1, s);
}

static void history_of(idem_db *db, const char *key, seen *s) {
  history_of_bytes(db, key, strlen(key), s);
}

/* Fences of the claims in a history only ever go up. A refused (poisoned)
 * attempt never held a fence. */
static void assert_fences_increase(const seen *s) {
  uint64_t last = 0;
  for (unsigned i = 0; i < s->n; i++) {
    if (s->a[i].outcome == IDEM_OUTCOME_POISONED) {
      assert_int_equal(s->a[i].fence, 0);
      continue;
    }
    if (s->a[i].fence <= last)
      fail_msg("attempt %u has fence %llu after %llu", s->a[i].attempt,
               (unsigned long long)s->a[i].fence, (unsigned long long)last);
    last = s->a[i].fence;
  }
}

/* A claim made through the API, and what its answer said about it. */
typedef struct claimed {
  idem_lease *lease;
  uint32_t attempt;
  uint64_t fence;
  char owner[37];
  int64_t at; /* the fake wall clock when it was made */
} claimed;

static claimed claim_on(tu_fx *fx, idem_db *db, const void *key, size_t len) {
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = idem_begin(db, key, len, NULL, &a);
  if (rc != IDEM_CLAIMED)
    fail_msg("idem_begin: %s, expected IDEM_CLAIMED", idem_errstr(rc));
  claimed c = {a.lease, a.attempts, a.fence, {0}, wall(fx)};
  memcpy(c.owner, a.owner, sizeof c.owner);
  assert_int_equal(strlen(c.owner), 36);
  idem_answer_clear(&a);
  return c;
}

static claimed claim(tu_fx *fx, const char *key) {
  return claim_on(fx, fx->db, key, strlen(key));
}

/* The attempt describes this claim, made by this process. */
static void assert_attempt_of(const idem_attempt *a, const claimed *c) {
  assert_int_equal(a->attempt, c->attempt);
  assert_int_equal(a->fence, c->fence);
  assert_string_equal(a->owner, c->owner);
  assert_int_equal(a->pid, (int64_t)getpid());
  assert_int_equal(a->started_at, c->at);
}

static void assert_running(const idem_attempt *a) {
  assert_int_equal(a->outcome, IDEM_OUTCOME_RUNNING);
  assert_int_equal(a->ended_at, 0);
  assert_int_equal(a->code, 0);
  assert_null(a->message);
}

static idem_db *open_with(tu_fx *fx, const idem_options *o) {
  idem_db *db = NULL;
  int rc = tu_open(&db, fx->path, o);
  if (rc != IDEM_OK)
    fail_msg("idem_open: %s", idem_errstr(rc));
  return db;
}

/* --- Each way an attempt ends -------------------------------------------- */

/* A claim shows at once as a running attempt: who holds it, since when,
 * and no end; completing it records the end time and the outcome. */
static void test_running_then_completed(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  tu_clock_advance(&fx->clock, 1234);
  claimed c = claim(fx, "k");
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_int_equal(c.attempt, 1);
  assert_attempt_of(&s.a[0], &c);
  assert_int_equal(s.a[0].started_at, TU_WALL_START + 1234);
  assert_running(&s.a[0]);

  tu_clock_advance(&fx->clock, 500);
  assert_int_equal(idem_complete(c.lease, "done", 4), IDEM_OK);
  idem_lease_free(c.lease);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_COMPLETED);
  assert_int_equal(s.a[0].ended_at, c.at + 500);
  assert_int_equal(s.a[0].code, 0);
  assert_null(s.a[0].message);

  /* A cached answer runs nothing and adds no attempt. */
  tu_assert_completed(fx->db, "k", "done");
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  seen_clear(&s);
}

static void test_failed_keeps_code(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  claimed c = claim(fx, "k");
  tu_clock_advance(&fx->clock, 70);
  assert_int_equal(idem_fail(c.lease, -42, "bad", 3), IDEM_OK);
  idem_lease_free(c.lease);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_FAILED);
  assert_int_equal(s.a[0].code, -42);
  assert_int_equal(s.a[0].ended_at, c.at + 70);
  assert_null(s.a[0].message);
  seen_clear(&s);
}

/* Releases with and without a reason, then a completion: three attempts,
 * each of its own claim, numbered and fenced in order. */
static void test_released_with_and_without_reason(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  claimed c[3];
  c[0] = claim(fx, "k");
  tu_clock_advance(&fx->clock, 10);
  assert_int_equal(idem_release(c[0].lease, "try again later"), IDEM_OK);
  idem_lease_free(c[0].lease);
  tu_clock_advance(&fx->clock, 10);
  c[1] = claim(fx, "k");
  tu_clock_advance(&fx->clock, 10);
  assert_int_equal(idem_release(c[1].lease, NULL), IDEM_OK);
  idem_lease_free(c[1].lease);
  tu_clock_advance(&fx->clock, 10);
  c[2] = claim(fx, "k");

  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 3);
  assert_fences_increase(&s);
  for (int i = 0; i < 3; i++)
    assert_attempt_of(&s.a[i], &c[i]);
  assert_string_not_equal(c[0].owner, c[1].owner);
  assert_string_not_equal(c[1].owner, c[2].owner);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_RELEASED);
  assert_int_equal(s.a[0].ended_at, c[0].at + 10);
  assert_non_null(s.a[0].message);
  assert_string_equal(s.a[0].message, "try again later");
  assert_int_equal(s.a[1].outcome, IDEM_OUTCOME_RELEASED);
  assert_int_equal(s.a[1].ended_at, c[1].at + 10);
  assert_null(s.a[1].message);
  assert_running(&s.a[2]);

  assert_int_equal(idem_complete(c[2].lease, "v", 1), IDEM_OK);
  idem_lease_free(c[2].lease);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 3);
  assert_int_equal(s.a[2].outcome, IDEM_OUTCOME_COMPLETED);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_RELEASED);
  seen_clear(&s);
}

/* A lease that ran out is closed as expired by the claim that takes the
 * key over, at that claim's time; a busy answer before that adds nothing.
 * When the stale holder comes back, its completion is refused and its
 * attempt shows as lost, while the successor's stays running. */
static void test_expired_then_lost(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  claimed c1 = claim(fx, "k");
  idem_answer a = IDEM_ANSWER_INIT;
  tu_clock_advance(&fx->clock, TTL - 1);
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_BUSY);
  idem_answer_clear(&a);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_running(&s.a[0]);

  tu_clock_advance(&fx->clock, 2);
  claimed c2 = claim(fx, "k");
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 2);
  assert_fences_increase(&s);
  assert_attempt_of(&s.a[0], &c1);
  assert_attempt_of(&s.a[1], &c2);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_EXPIRED);
  assert_int_equal(s.a[0].ended_at, c2.at);
  assert_non_null(s.a[0].message);
  assert_string_equal(s.a[0].message, "the lease expired");
  assert_running(&s.a[1]);

  tu_clock_advance(&fx->clock, 5);
  assert_int_equal(idem_complete(c1.lease, "stale", 5), IDEM_ELEASELOST);
  idem_lease_free(c1.lease);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 2);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_LOST);
  assert_int_equal(s.a[0].ended_at, c2.at);
  assert_attempt_of(&s.a[0], &c1);
  assert_running(&s.a[1]);

  assert_int_equal(idem_complete(c2.lease, "fresh", 5), IDEM_OK);
  idem_lease_free(c2.lease);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_LOST);
  assert_int_equal(s.a[1].outcome, IDEM_OUTCOME_COMPLETED);
  assert_int_equal(s.a[1].ended_at, c2.at + 5);
  seen_clear(&s);
}

/* A stale holder that releases or fails instead of completing is refused
 * the same way, and neither its reason nor its code is recorded over the
 * successor's attempt. */
static void test_lost_by_release_and_fail(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  claimed c1 = claim(fx, "k");
  tu_clock_advance(&fx->clock, TTL + 1);
  claimed c2 = claim(fx, "k");
  assert_int_equal(idem_release(c1.lease, "late"), IDEM_ELEASELOST);
  idem_lease_free(c1.lease);
  tu_clock_advance(&fx->clock, TTL + 1);
  claimed c3 = claim(fx, "k");
  assert_int_equal(idem_fail(c2.lease, 9, "late", 4), IDEM_ELEASELOST);
  idem_lease_free(c2.lease);

  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 3);
  assert_fences_increase(&s);
  assert_attempt_of(&s.a[0], &c1);
  assert_attempt_of(&s.a[1], &c2);
  assert_attempt_of(&s.a[2], &c3);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_LOST);
  assert_int_equal(s.a[1].outcome, IDEM_OUTCOME_LOST);
  assert_int_equal(s.a[1].code, 0);
  assert_running(&s.a[2]);
  assert_int_equal(idem_complete(c3.lease, "v", 1), IDEM_OK);
  idem_lease_free(c3.lease);
  seen_clear(&s);
}

/* The holder may learn of the takeover from its heartbeat before any call
 * of its own: that is coming back too, and the attempt shows as lost at
 * once; the refused completion after it changes nothing more. */
static void test_lost_found_by_heartbeat(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  idem_db *db1 = open_with(fx, &fx->opts);
  claimed c1 = claim_on(fx, db1, "k", 1);
  tu_clock_advance(&fx->clock, TTL + 1);
  claimed c2 = claim(fx, "k");
  history_of(fx->db, "k", &s);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_EXPIRED);
  unsigned lost = 0;
  assert_int_equal(idem_heartbeat(db1, &lost), IDEM_OK);
  assert_int_equal(lost, 1);
  assert_true(idem_lease_lost(c1.lease));
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 2);
  assert_attempt_of(&s.a[0], &c1);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_LOST);
  assert_int_equal(s.a[0].ended_at, c2.at);
  assert_running(&s.a[1]);
  assert_int_equal(idem_complete(c1.lease, "stale", 5), IDEM_ELEASELOST);
  idem_lease_free(c1.lease);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 2);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_LOST);
  assert_running(&s.a[1]);
  assert_int_equal(idem_complete(c2.lease, "v", 1), IDEM_OK);
  idem_lease_free(c2.lease);
  seen_clear(&s);
  assert_int_equal(idem_close(db1), IDEM_OK);
}

/* Stands in for a reboot: the lease in the file carries another boot id. */
static void test_expired_by_reboot(void **state) {
  tu_fx *fx = fx_of(state);
  if (access("/proc/sys/kernel/random/boot_id", R_OK) != 0) {
    print_message("no boot id on this system: a reboot cannot be seen\n");
    skip();
  }
  seen s = {0};
  claimed c1 = claim(fx, "k");
  assert_int_equal(
      tu_sql(fx->path, "UPDATE idem_keys SET lease_boot = zeroblob(16)"),
      SQLITE_OK);
  tu_clock_advance(&fx->clock, 3);
  claimed c2 = claim(fx, "k");
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 2);
  assert_attempt_of(&s.a[0], &c1);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_EXPIRED);
  assert_int_equal(s.a[0].ended_at, c2.at);
  assert_non_null(s.a[0].message);
  assert_string_equal(s.a[0].message, "the host rebooted");
  assert_running(&s.a[1]);
  assert_int_equal(idem_complete(c2.lease, "v", 1), IDEM_OK);
  idem_lease_free(c2.lease);
  idem_lease_free(c1.lease);
  seen_clear(&s);
}

/* A holder process that died with its lease is found dead by the next
 * begin, which claims at once, long before the TTL: the history names the
 * dead process, and the takeover is by this one. */
static void test_expired_by_dead_holder(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  int p[2];
  assert_int_equal(pipe(p), 0);
  /* No handle may be open across fork(): the child opens its own, and this
   * process opens again once it is gone. */
  assert_int_equal(idem_close(fx->db), IDEM_OK);
  fx->db = NULL;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The child inherits the fake clock as it is now, and dies holding. */
    close(p[0]);
    idem_db *db = NULL;
    idem_answer a = IDEM_ANSWER_INIT;
    if (idem_open(&db, fx->path, &fx->opts) != IDEM_OK ||
        idem_begin(db, "k", 1, NULL, &a) != IDEM_CLAIMED)
      _exit(2);
    char msg[37 + 20] = {0};
    memcpy(msg, a.owner, 37);
    snprintf(msg + 37, 20, "%llu", (unsigned long long)a.fence);
    _exit(write(p[1], msg, sizeof msg) == (ssize_t)sizeof msg ? 0 : 3);
  }
  close(p[1]);
  char msg[37 + 20];
  assert_int_equal(read(p[0], msg, sizeof msg), (ssize_t)sizeof msg);
  close(p[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);

  tu_clock_advance(&fx->clock, 100);
  claimed c2 = claim(fx, "k");
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 2);
  assert_fences_increase(&s);
  assert_int_equal(s.a[0].pid, (int64_t)pid);
  assert_string_equal(s.a[0].owner, msg);
  char fence[20];
  snprintf(fence, sizeof fence, "%llu", (unsigned long long)s.a[0].fence);
  assert_string_equal(fence, msg + 37);
  assert_int_equal(s.a[0].started_at, TU_WALL_START);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_EXPIRED);
  assert_int_equal(s.a[0].ended_at, c2.at);
  char why[64];
  snprintf(why, sizeof why, "holder process %lld died", (long long)pid);
  assert_non_null(s.a[0].message);
  assert_string_equal(s.a[0].message, why);
  assert_attempt_of(&s.a[1], &c2);
  assert_running(&s.a[1]);
  assert_int_equal(idem_complete(c2.lease, "v", 1), IDEM_OK);
  idem_lease_free(c2.lease);
  seen_clear(&s);
}

/* The begin that finds the attempts spent is itself recorded: refused,
 * with no fence, no holder, and the limit in its message. Later begins of
 * the poisoned key add nothing. */
static void test_poisoned(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  claimed c[5];
  for (int i = 0; i < 5; i++) {
    tu_clock_advance(&fx->clock, 10);
    c[i] = claim(fx, "k");
    assert_int_equal(idem_release(c[i].lease, "again"), IDEM_OK);
    idem_lease_free(c[i].lease);
  }
  tu_clock_advance(&fx->clock, 10);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_POISONED);
  int64_t poisoned_at = wall(fx);
  tu_clock_advance(&fx->clock, 10);
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_POISONED);
  idem_answer_clear(&a);

  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 6);
  assert_fences_increase(&s);
  for (int i = 0; i < 5; i++) {
    assert_attempt_of(&s.a[i], &c[i]);
    assert_int_equal(s.a[i].outcome, IDEM_OUTCOME_RELEASED);
    assert_string_equal(s.a[i].message, "again");
  }
  const idem_attempt *p = &s.a[5];
  assert_int_equal(p->attempt, 6);
  assert_int_equal(p->outcome, IDEM_OUTCOME_POISONED);
  assert_int_equal(p->fence, 0);
  assert_string_equal(p->owner, "");
  assert_int_equal(p->pid, 0);
  assert_int_equal(p->started_at, poisoned_at);
  assert_int_equal(p->ended_at, poisoned_at);
  assert_non_null(p->message);
  assert_string_equal(p->message, "max_attempts (5) spent");
  seen_clear(&s);
}

/* The last attempt ran out instead of being released: the poisoning closes
 * it as expired first, and its holder coming back turns that into lost. */
static void test_poisoned_after_expiry(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 2;
  idem_db *db = open_with(fx, &o);
  seen s = {0};
  claimed c1 = claim_on(fx, db, "k", 1);
  assert_int_equal(idem_release(c1.lease, NULL), IDEM_OK);
  idem_lease_free(c1.lease);
  claimed c2 = claim_on(fx, db, "k", 1);
  tu_clock_advance(&fx->clock, TTL);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k", &a), IDEM_POISONED);
  idem_answer_clear(&a);
  history_of(db, "k", &s);
  assert_int_equal(s.n, 3);
  assert_attempt_of(&s.a[1], &c2);
  assert_int_equal(s.a[1].outcome, IDEM_OUTCOME_EXPIRED);
  assert_int_equal(s.a[1].ended_at, c2.at + TTL);
  assert_string_equal(s.a[1].message, "the lease expired");
  assert_int_equal(s.a[2].outcome, IDEM_OUTCOME_POISONED);
  assert_int_equal(s.a[2].fence, 0);
  assert_int_equal(s.a[2].started_at, c2.at + TTL);
  assert_string_equal(s.a[2].message, "max_attempts (2) spent");

  assert_int_equal(idem_complete(c2.lease, "late", 4), IDEM_ELEASELOST);
  idem_lease_free(c2.lease);
  history_of(db, "k", &s);
  assert_int_equal(s.n, 3);
  assert_int_equal(s.a[1].outcome, IDEM_OUTCOME_LOST);
  assert_int_equal(s.a[2].outcome, IDEM_OUTCOME_POISONED);
  seen_clear(&s);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* --- Where a history ends and starts anew -------------------------------- */

/* A reset takes the history with the row; the next claim starts a new one
 * at attempt 1, its fence still above the old ones. */
static void test_reset_clears_history(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  claimed c1 = claim(fx, "k");
  assert_int_equal(idem_release(c1.lease, "r"), IDEM_OK);
  idem_lease_free(c1.lease);
  claimed c2 = claim(fx, "k");
  assert_int_equal(idem_reset(fx->db, "k", 1), IDEM_OK);
  unsigned count = 99;
  assert_int_equal(idem_history(fx->db, "k", 1, collect, &s, &count),
                   IDEM_ENOTFOUND);
  assert_int_equal(count, 0);
  assert_int_equal(s.n, 0);

  tu_clock_advance(&fx->clock, 10);
  claimed c3 = claim(fx, "k");
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c3);
  assert_true(c3.fence > c2.fence);
  assert_running(&s.a[0]);
  assert_int_equal(idem_complete(c2.lease, "x", 1), IDEM_ELEASELOST);
  idem_lease_free(c2.lease);
  /* The reset holder's attempt is in no history any more: nothing in the
   * new one may change because of it. */
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_running(&s.a[0]);
  assert_int_equal(idem_complete(c3.lease, "v", 1), IDEM_OK);
  idem_lease_free(c3.lease);
  seen_clear(&s);
}

static void test_reset_state_clears_history(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 1;
  idem_db *db = open_with(fx, &o);
  seen s = {0};
  claimed c = claim_on(fx, db, "p", 1);
  assert_int_equal(idem_release(c.lease, NULL), IDEM_OK);
  idem_lease_free(c.lease);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "p", &a), IDEM_POISONED);
  idem_answer_clear(&a);
  history_of(db, "p", &s);
  assert_int_equal(s.n, 2);
  uint64_t n = 0;
  assert_int_equal(idem_reset_state(db, IDEM_STATE_POISONED, &n), IDEM_OK);
  assert_int_equal(n, 1);
  seen_clear(&s);
  assert_int_equal(idem_history(db, "p", 1, collect, &s, NULL), IDEM_ENOTFOUND);
  assert_int_equal(s.n, 0);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Once a completed key's retention has ended, the next claim starts it
 * over: attempt 1 in a history of one, not the fourth of the old one. */
static void test_history_restarts_after_retention(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.retention_ms = 1000;
  idem_db *db = open_with(fx, &o);
  seen s = {0};
  claimed c1 = claim_on(fx, db, "k", 1);
  assert_int_equal(idem_release(c1.lease, "r"), IDEM_OK);
  idem_lease_free(c1.lease);
  claimed c2 = claim_on(fx, db, "k", 1);
  assert_int_equal(idem_complete(c2.lease, "v", 1), IDEM_OK);
  idem_lease_free(c2.lease);
  history_of(db, "k", &s);
  assert_int_equal(s.n, 2);

  /* Still within retention: the cached answer, no new attempt. */
  tu_clock_advance(&fx->clock, 999);
  tu_assert_completed(db, "k", "v");
  history_of(db, "k", &s);
  assert_int_equal(s.n, 2);

  tu_clock_advance(&fx->clock, 1);
  claimed c3 = claim_on(fx, db, "k", 1);
  assert_int_equal(c3.attempt, 1);
  assert_true(c3.fence > c2.fence);
  history_of(db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c3);
  assert_running(&s.a[0]);

  /* The same for a failed key. */
  assert_int_equal(idem_fail(c3.lease, 3, "f", 1), IDEM_OK);
  idem_lease_free(c3.lease);
  tu_clock_advance(&fx->clock, 1000);
  claimed c4 = claim_on(fx, db, "k", 1);
  history_of(db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c4);
  assert_int_equal(idem_complete(c4.lease, "v", 1), IDEM_OK);
  idem_lease_free(c4.lease);

  /* And a purged key has no history left at all. */
  tu_clock_advance(&fx->clock, 1000);
  uint64_t purged = 0;
  assert_int_equal(idem_purge(db, 0, &purged), IDEM_OK);
  assert_int_equal(purged, 1);
  seen_clear(&s);
  assert_int_equal(idem_history(db, "k", 1, collect, &s, NULL), IDEM_ENOTFOUND);
  assert_int_equal(s.n, 0);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* idem.h: the history keeps the last 4 attempts, and older ones while its
 * text stays within 512 bytes. */
#define HISTORY_LEAST 4

/* Claims the key `times` times, releasing each attempt with `why(i)`. */
static void retry(tu_fx *fx, idem_db *db, uint32_t times,
                  const char *(*why)(uint32_t i, char *buf, size_t size)) {
  char buf[256];
  for (uint32_t i = 1; i <= times; i++) {
    tu_clock_advance(&fx->clock, 10);
    claimed c = claim_on(fx, db, "k", 1);
    assert_int_equal(idem_release(c.lease, why(i, buf, sizeof buf)), IDEM_OK);
    idem_lease_free(c.lease);
  }
}

static const char *why_try(uint32_t i, char *buf, size_t size) {
  snprintf(buf, size, "try %u", (unsigned)i);
  return buf;
}

static const char *why_long(uint32_t i, char *buf, size_t size) {
  (void)i;
  memset(buf, 'r', size - 1);
  buf[size - 1] = '\0';
  return buf;
}

static const char *why_none(uint32_t i, char *buf, size_t size) {
  (void)i;
  (void)buf;
  (void)size;
  return NULL;
}

static idem_db *open_unlimited(tu_fx *fx) {
  idem_options o = fx->opts;
  o.max_attempts = 0;
  return open_with(fx, &o);
}

/* A key retried without a limit keeps its latest attempts, oldest first,
 * without a gap, the running one last; the oldest are gone. */
static void test_history_keeps_the_last(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = open_unlimited(fx);
  seen s = {0};
  const uint32_t total = 40;
  retry(fx, db, total - 1, why_try);
  tu_clock_advance(&fx->clock, 10);
  claimed c = claim_on(fx, db, "k", 1);
  assert_int_equal(c.attempt, total);
  history_from(db, "k", 1, 0, &s);
  assert_in_range(s.n, HISTORY_LEAST, total - 1);
  assert_fences_increase(&s);
  char why[32];
  for (unsigned i = 0; i + 1 < s.n; i++) {
    assert_int_equal(s.a[i].outcome, IDEM_OUTCOME_RELEASED);
    assert_string_equal(s.a[i].message, why_try(s.a[i].attempt, why, 32));
  }
  assert_attempt_of(&s.a[s.n - 1], &c);
  assert_running(&s.a[s.n - 1]);
  assert_int_equal(idem_complete(c.lease, "v", 1), IDEM_OK);
  idem_lease_free(c.lease);
  seen_clear(&s);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The byte bound decides how many: attempts with long reasons leave only
 * the last 4, short ones leave more. */
static void test_history_bound_is_bytes(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = open_unlimited(fx);
  seen s = {0};
  retry(fx, db, 12, why_long);
  history_from(db, "k", 1, 0, &s);
  assert_int_equal(s.n, HISTORY_LEAST);
  assert_int_equal(s.a[s.n - 1].attempt, 12);
  assert_int_equal(strlen(s.a[0].message), 255);

  /* Short attempts push the long ones out and keep more than 4. */
  retry(fx, db, 12, why_none);
  history_from(db, "k", 1, 0, &s);
  assert_in_range(s.n, HISTORY_LEAST + 1, 11);
  assert_int_equal(s.a[s.n - 1].attempt, 24);
  for (unsigned i = 0; i < s.n; i++)
    assert_null(s.a[i].message);
  seen_clear(&s);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The refused attempt that poisons a key with more attempts than the
 * history keeps is the one an operator needs: it is kept, last. */
static void test_history_keeps_the_poisoning(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 20;
  idem_db *db = open_with(fx, &o);
  seen s = {0};
  retry(fx, db, o.max_attempts, why_none);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k", &a), IDEM_POISONED);
  idem_answer_clear(&a);
  history_from(db, "k", 1, 0, &s);
  assert_in_range(s.n, HISTORY_LEAST, o.max_attempts);
  const idem_attempt *p = &s.a[s.n - 1];
  assert_int_equal(p->attempt, o.max_attempts + 1);
  assert_int_equal(p->outcome, IDEM_OUTCOME_POISONED);
  char why[64];
  snprintf(why, sizeof why, "max_attempts (%u) spent",
           (unsigned)o.max_attempts);
  assert_string_equal(p->message, why);
  seen_clear(&s);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* --- Arguments ----------------------------------------------------------- */

static void test_missing_key(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  unsigned count = 99;
  assert_int_equal(idem_history(fx->db, "nope", 4, collect, &s, &count),
                   IDEM_ENOTFOUND);
  assert_int_equal(count, 0);
  assert_int_equal(s.n, 0);
  /* Another key's row does not make this one found. */
  tu_claim_complete(fx->db, "nopf", "v");
  count = 99;
  assert_int_equal(idem_history(fx->db, "nope", 4, collect, &s, &count),
                   IDEM_ENOTFOUND);
  assert_int_equal(count, 0);
  assert_int_equal(s.n, 0);
}

static void test_bad_arguments(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  tu_claim_complete(fx->db, "k", "v");
  unsigned count = 99;
  assert_int_equal(idem_history(NULL, "k", 1, collect, &s, &count),
                   IDEM_EINVAL);
  assert_int_equal(count, 0);
  count = 99;
  assert_int_equal(idem_history(fx->db, NULL, 1, collect, &s, &count),
                   IDEM_EINVAL);
  assert_int_equal(count, 0);
  count = 99;
  assert_int_equal(idem_history(fx->db, "k", 0, collect, &s, &count),
                   IDEM_EINVAL);
  assert_int_equal(count, 0);
  count = 99;
  assert_int_equal(idem_history(fx->db, "k", 1, NULL, &s, &count), IDEM_EINVAL);
  assert_int_equal(count, 0);
  static char big[IDEM_MAX_KEY + 1];
  memset(big, 'k', sizeof big);
  count = 99;
  assert_int_equal(idem_history(fx->db, big, sizeof big, collect, &s, &count),
                   IDEM_ETOOBIG);
  assert_int_equal(count, 0);
  assert_int_equal(s.n, 0);
  /* count_out is optional. */
  assert_int_equal(idem_history(fx->db, "k", 1, collect, &s, NULL), IDEM_OK);
  assert_int_equal(s.n, 1);
  seen_clear(&s);
}

/* A history can be read on a handle that may not write, as an operator's
 * tool opens one. */
static void test_readonly_handle(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  claimed c = claim(fx, "k");
  assert_int_equal(idem_fail(c.lease, 5, "f", 1), IDEM_OK);
  idem_lease_free(c.lease);
  idem_options o = fx->opts;
  o.flags |= IDEM_OPEN_READONLY;
  idem_db *ro = open_with(fx, &o);
  history_of(ro, "k", &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_FAILED);
  assert_int_equal(s.a[0].code, 5);
  seen_clear(&s);
  assert_int_equal(idem_close(ro), IDEM_OK);
}

/* A callback that returns non-zero is not called again, and count_out
 * counts the calls made, the stopping one included. */
static void test_callback_stops_early(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  for (int i = 0; i < 3; i++) {
    claimed c = claim(fx, "k");
    assert_int_equal(idem_release(c.lease, NULL), IDEM_OK);
    idem_lease_free(c.lease);
  }
  for (unsigned stop = 1; stop <= 3; stop++) {
    seen_clear(&s);
    s.stop_at = stop;
    unsigned count = 99;
    assert_int_equal(idem_history(fx->db, "k", 1, collect, &s, &count),
                     IDEM_OK);
    assert_int_equal(s.n, stop);
    assert_int_equal(count, stop);
    assert_int_equal(s.a[stop - 1].attempt, stop);
  }
  seen_clear(&s);
}

/* --- Bytes -------------------------------------------------------------- */

/* Keys are bytes: keys that differ only after a NUL byte have histories of
 * their own, and the part before the NUL is another key. */
static void test_keys_with_nul_bytes(void **state) {
  tu_fx *fx = fx_of(state);
  seen s = {0};
  static const char k1[] = {'a', '\0', 'b'};
  static const char k2[] = {'a', '\0', 'c'};
  claimed c1 = claim_on(fx, fx->db, k1, sizeof k1);
  assert_int_equal(idem_release(c1.lease, "one"), IDEM_OK);
  idem_lease_free(c1.lease);
  claimed c2 = claim_on(fx, fx->db, k2, sizeof k2);
  assert_int_equal(idem_complete(c2.lease, "v", 1), IDEM_OK);
  idem_lease_free(c2.lease);

  history_of_bytes(fx->db, k1, sizeof k1, &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c1);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_RELEASED);
  assert_string_equal(s.a[0].message, "one");
  history_of_bytes(fx->db, k2, sizeof k2, &s);
  assert_int_equal(s.n, 1);
  assert_attempt_of(&s.a[0], &c2);
  assert_int_equal(s.a[0].outcome, IDEM_OUTCOME_COMPLETED);
  seen_clear(&s);
  assert_int_equal(idem_history(fx->db, "a", 1, collect, &s, NULL),
                   IDEM_ENOTFOUND);
  assert_int_equal(idem_history(fx->db, k1, 2, collect, &s, NULL),
                   IDEM_ENOTFOUND);
  assert_int_equal(s.n, 0);
}

/* The history is text inside the row; a reason must come back as given,
 * whatever an encoding would make of it: quotes, backslashes, escapes
 * spelled out, control characters, text that looks like history lines or
 * JSON, and UTF-8 beyond ASCII up to four-byte sequences. */
static void test_reason_bytes_kept(void **state) {
  tu_fx *fx = fx_of(state);
  static const char *const reasons[] = {
      "say \"hi\"",
      "back\\slash \\\" \\n \\u0041 \\",
      "line1\nline2\r\n\ttab \x01\x1f\x7f",
      "x\nc 1 1 - 0 0\ne 1 completed 0 0 -\nl 1",
      "\\x41 \\x4 \\xzz \\",
      "{\"outcome\":\"completed\",\"x\":[1,2]}",
      "[1]",
      "null",
      "caf\xc3\xa9 \xe2\x82\xac \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
      "'); DROP TABLE idem_keys; --",
      " ",
  };
  enum { N = sizeof reasons / sizeof reasons[0] };
  idem_db *db = open_unlimited(fx);
  seen s = {0};
  for (size_t i = 0; i < N; i++) {
    claimed c = claim_on(fx, db, "k", 1);
    assert_int_equal(idem_release(c.lease, reasons[i]), IDEM_OK);
    idem_lease_free(c.lease);
    history_from(db, "k", 1, 0, &s);
    const idem_attempt *last = &s.a[s.n - 1];
    assert_int_equal(last->attempt, i + 1);
    assert_int_equal(last->outcome, IDEM_OUTCOME_RELEASED);
    assert_non_null(last->message);
    assert_int_equal(strlen(last->message), strlen(reasons[i]));
    assert_memory_equal(last->message, reasons[i], strlen(reasons[i]) + 1);
  }
  seen_clear(&s);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The longest reason allowed, made of characters that must be escaped, is kept
 * whole; one byte more is refused and the lease stays held. */
static void test_longest_reason(void **state) {
  tu_fx *fx = fx_of(state);
  static char reason[IDEM_MAX_REASON + 2];
  static const char pattern[] = "\"\\\n\x01\xc3\xa9";
  for (size_t i = 0; i < IDEM_MAX_REASON + 1; i++)
    reason[i] = pattern[i % (sizeof pattern - 1)];
  reason[IDEM_MAX_REASON + 1] = '\0';
  seen s = {0};
  claimed c = claim(fx, "k");
  assert_int_equal(idem_release(c.lease, reason), IDEM_ETOOBIG);
  history_of(fx->db, "k", &s);
  assert_running(&s.a[0]);
  /* Cut on a character boundary, not inside the two-byte é. */
  size_t len = IDEM_MAX_REASON;
  while ((reason[len] & 0xc0) == 0x80)
    len--;
  reason[len] = '\0';
  assert_int_equal(idem_release(c.lease, reason), IDEM_OK);
  idem_lease_free(c.lease);
  history_of(fx->db, "k", &s);
  assert_int_equal(s.n, 1);
  assert_non_null(s.a[0].message);
  assert_int_equal(strlen(s.a[0].message), len);
  assert_memory_equal(s.a[0].message, reason, len + 1);
  seen_clear(&s);
}

#define TO(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, tu_fx_setup_open, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      TO(test_running_then_completed),
      TO(test_failed_keeps_code),
      TO(test_released_with_and_without_reason),
      TO(test_expired_then_lost),
      TO(test_lost_by_release_and_fail),
      TO(test_lost_found_by_heartbeat),
      TO(test_expired_by_reboot),
      TO(test_expired_by_dead_holder),
      TO(test_poisoned),
      TO(test_poisoned_after_expiry),
      TO(test_reset_clears_history),
      TO(test_reset_state_clears_history),
      TO(test_history_restarts_after_retention),
      TO(test_history_keeps_the_last),
      TO(test_history_bound_is_bytes),
      TO(test_history_keeps_the_poisoning),
      TO(test_missing_key),
      TO(test_bad_arguments),
      TO(test_readonly_handle),
      TO(test_callback_stops_early),
      TO(test_keys_with_nul_bytes),
      TO(test_reason_bytes_kept),
      TO(test_longest_reason),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
