/* SPDX-License-Identifier: MIT */
/*
 * test_states.c - every transition of the key state machine, driven by the
 * fake clock (no test sleeps for a TTL).
 *
 * Fixture defaults (testutil.h): ttl 10000 ms, no heartbeat thread, 5
 * attempts, retention forever. Tests that need other options open a second
 * handle on the same file with the same fake clock.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define TTL 10000

static tu_fx *fx_of(void **state) {
  return *state;
}

/* Another handle on the fixture's file with the given options. */
static idem_db *open_with(tu_fx *fx, const idem_options *o) {
  idem_db *db = NULL;
  int rc = tu_open(&db, fx->path, o);
  if (rc != IDEM_OK)
    fail_msg("idem_open: %s", idem_errstr(rc));
  return db;
}

static void close_db(idem_db *db) {
  assert_int_equal(idem_close(db), IDEM_OK);
}

static int is_uuid(const char *s) {
  if (strlen(s) != 36)
    return 0;
  for (int i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return 0;
    } else if (!isxdigit((unsigned char)s[i])) {
      return 0;
    }
  }
  return 1;
}

/* The row of a key, which must exist. */
static idem_record row_of(idem_db *db, const char *key) {
  idem_record r = IDEM_RECORD_INIT;
  int rc = tu_get(db, key, &r);
  if (rc != IDEM_OK)
    fail_msg("idem_get(%s): %s", key, idem_errstr(rc));
  return r;
}

/* The key has no row: reset and purge make a key absent. A row kept only
 * to carry the fence forward may report IDEM_STATE_ABSENT. */
static void assert_absent(idem_db *db, const char *key) {
  idem_record r = IDEM_RECORD_INIT;
  int rc = tu_get(db, key, &r);
  if (rc == IDEM_OK)
    assert_int_equal(r.state, IDEM_STATE_ABSENT);
  else
    assert_int_equal(rc, IDEM_ENOTFOUND);
  idem_record_clear(&r);
}

/* Two snapshots of a row are the same in everything a write would touch. */
static void assert_same_row(const idem_record *a, const idem_record *b) {
  assert_int_equal(a->state, b->state);
  assert_int_equal(a->attempts, b->attempts);
  assert_int_equal(a->fence, b->fence);
  assert_string_equal(a->owner, b->owner);
  assert_int_equal(a->lease_ms, b->lease_ms);
  assert_int_equal(a->updated_at, b->updated_at);
  assert_int_equal(a->expires_at, b->expires_at);
  assert_int_equal(a->code, b->code);
  assert_int_equal(a->result_len, b->result_len);
}

struct poison_log {
  int calls;
  uint32_t attempts;
  char key[32];
  size_t key_len;
  idem_db *db;    /* if set, the callback reads the key's row through it */
  int get_rc;     /* what that idem_get returned */
  int state_seen; /* and the state it saw */
};

static void on_poison_cb(void *ctx, const void *key, size_t key_len,
                         uint32_t attempts) {
  struct poison_log *p = ctx;
  p->calls++;
  p->attempts = attempts;
  p->key_len = key_len < sizeof p->key ? key_len : sizeof p->key;
  memcpy(p->key, key, p->key_len);
  if (p->db != NULL) {
    idem_record r = IDEM_RECORD_INIT;
    p->get_rc = idem_get(p->db, key, key_len, &r);
    p->state_seen = r.state;
    idem_record_clear(&r);
  }
}

struct lost_log {
  int calls;
  idem_lease *last;
};

static void on_lost_cb(void *ctx, idem_lease *lease) {
  struct lost_log *l = ctx;
  l->calls++;
  l->last = lease;
}

/* --- Claim, busy, complete, fail, release ------------------------------- */

/* A key never seen is claimed at once: attempt 1, a fence of at least 1, a
 * UUID owner and the full TTL on the lease; idem_get shows the same. */
static void test_claim_fresh(void **state) {
  tu_fx *fx = fx_of(state);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.status, IDEM_CLAIMED);
  assert_non_null(a.lease);
  assert_int_equal(a.attempts, 1);
  assert_true(a.fence >= 1);
  assert_true(is_uuid(a.owner));
  assert_int_equal(a.lease_ms, TTL);
  assert_int_equal(a.unguarded, 0);
  assert_int_equal(idem_lease_fence(a.lease), a.fence);
  assert_int_equal(idem_lease_attempt(a.lease), 1);
  assert_int_equal(idem_lease_lost(a.lease), 0);

  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  assert_int_equal(r.key_len, 1);
  assert_memory_equal(r.key, "k", 2);
  assert_int_equal(r.attempts, 1);
  assert_int_equal(r.fence, a.fence);
  assert_string_equal(r.owner, a.owner);
  assert_int_equal(r.lease_ms, TTL);
  assert_int_equal(r.created_at, TU_WALL_START);
  assert_int_equal(r.has_fingerprint, 0);
  assert_int_equal(r.result_len, 0);
  idem_record_clear(&r);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
}

/* While a lease is live every other begin (same handle or another) answers
 * BUSY with the real time left on it, the holder's owner id, and no attempt
 * counted: a caller can sleep exactly that long (seed weakness 7). */
static void test_busy_reports_time_left(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_answer a = IDEM_ANSWER_INIT, b = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);

  tu_clock_advance_lease(&fx->clock, 3000);
  assert_int_equal(tu_begin(fx->db, "k", &b), IDEM_BUSY);
  assert_int_equal(b.status, IDEM_BUSY);
  assert_null(b.lease);
  assert_int_equal(b.lease_ms, 7000);
  assert_string_equal(b.owner, a.owner);
  assert_int_equal(b.attempts, 1);
  assert_int_equal(tu_begin(db2, "k", &b), IDEM_BUSY);
  assert_int_equal(b.lease_ms, 7000);

  tu_clock_advance_lease(&fx->clock, 6999);
  assert_int_equal(tu_begin(db2, "k", &b), IDEM_BUSY);
  assert_int_equal(b.lease_ms, 1);

  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.attempts, 1);
  assert_int_equal(r.lease_ms, 1);
  idem_record_clear(&r);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  idem_answer_clear(&b);
  close_db(db2);
}

/* After complete, every begin answers COMPLETED with exactly the stored
 * bytes (binary, NUL-terminated copy), code 0, the claim's attempt and
 * fence, and the completion time, and writes nothing: attempts and
 * updated_at stay as they were, whatever the clocks do. */
static void test_complete_serves_cached(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  const char res[] = "res\0ult";
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  uint64_t fence = a.fence;
  tu_clock_advance(&fx->clock, 500);
  assert_int_equal(idem_complete(a.lease, res, sizeof res - 1), IDEM_OK);
  idem_lease_free(a.lease);

  idem_record before = row_of(fx->db, "k");
  assert_int_equal(before.state, IDEM_STATE_COMPLETED);
  assert_int_equal(before.updated_at, TU_WALL_START + 500);
  assert_string_equal(before.owner, "");

  tu_clock_advance(&fx->clock, 1000);
  tu_clock_advance_lease(&fx->clock, INT64_C(1000000000));
  idem_db *dbs[] = {fx->db, db2, fx->db};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(tu_begin(dbs[i], "k", &a), IDEM_COMPLETED);
    assert_int_equal(a.status, IDEM_COMPLETED);
    assert_null(a.lease);
    assert_int_equal(a.result_len, sizeof res - 1);
    assert_memory_equal(a.result, res, sizeof res);
    assert_int_equal(a.code, 0);
    assert_int_equal(a.attempts, 1);
    assert_int_equal(a.fence, fence);
    assert_int_equal(a.finished_at, TU_WALL_START + 500);
  }
  idem_answer_clear(&a);
  idem_record after = row_of(fx->db, "k");
  assert_same_row(&before, &after);
  idem_record_clear(&before);
  idem_record_clear(&after);
  close_db(db2);
}

/* fail() is terminal: the key answers FAILED with the bytes and the code,
 * and is never claimed again, not even long after the TTL (seed weakness
 * 4: no half state where a failed row is leased again). */
static void test_fail_serves_failure(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "k");
  assert_int_equal(idem_fail(l, 42, "boom", 4), IDEM_OK);
  idem_lease_free(l);
  idem_answer a = IDEM_ANSWER_INIT;
  for (int i = 0; i < 2; i++) {
    assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_FAILED);
    assert_int_equal(a.status, IDEM_FAILED);
    assert_null(a.lease);
    assert_int_equal(a.code, 42);
    assert_int_equal(a.result_len, 4);
    assert_memory_equal(a.result, "boom", 5);
    assert_int_equal(a.attempts, 1);
    tu_clock_advance(&fx->clock, 100 * TTL);
  }
  idem_answer_clear(&a);
  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.state, IDEM_STATE_FAILED);
  assert_int_equal(r.code, 42);
  assert_int_equal(r.attempts, 1);
  assert_string_equal(r.owner, "");
  idem_record_clear(&r);
}

/* release() gives the key back at once: no lease on the row, the attempt
 * stays counted, and the next begin (without moving the clock) claims it
 * as attempt 2 with a higher fence and a new owner (seed weakness 5). */
static void test_release_claimable_now(void **state) {
  tu_fx *fx = fx_of(state);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  uint64_t f1 = a.fence;
  char o1[37];
  memcpy(o1, a.owner, sizeof o1);
  assert_int_equal(idem_release(a.lease, "transient error"), IDEM_OK);
  idem_lease_free(a.lease);

  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  assert_int_equal(r.attempts, 1);
  assert_string_equal(r.owner, "");
  assert_true(r.lease_ms <= 0);
  idem_record_clear(&r);

  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > f1);
  assert_string_not_equal(a.owner, o1);
  assert_int_equal(a.lease_ms, TTL);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
}

/* A lease that is not refreshed ends by its TTL: one millisecond before,
 * the key is BUSY for 1 ms; after it, another handle claims it as attempt 2
 * with a higher fence and a full TTL. */
static void test_ttl_expiry_reclaims(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_answer a = IDEM_ANSWER_INIT, b = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  tu_clock_advance_lease(&fx->clock, TTL - 1);
  assert_int_equal(tu_begin(db2, "k", &b), IDEM_BUSY);
  assert_int_equal(b.lease_ms, 1);
  tu_clock_advance_lease(&fx->clock, 2);
  assert_int_equal(tu_begin(db2, "k", &b), IDEM_CLAIMED);
  assert_int_equal(b.attempts, 2);
  assert_true(b.fence > a.fence);
  assert_string_not_equal(b.owner, a.owner);
  assert_int_equal(b.lease_ms, TTL);
  assert_int_equal(idem_complete(b.lease, "second", 6), IDEM_OK);
  idem_lease_free(b.lease);
  idem_lease_free(a.lease);
  tu_assert_completed(fx->db, "k", "second");
  idem_answer_clear(&a);
  idem_answer_clear(&b);
  close_db(db2);
}

/* --- Attempts and poison ------------------------------------------------- */

/* With max_attempts 3, three claims succeed (whether their leases are
 * released or expire) and the fourth begin answers POISONED, telling
 * on_poison exactly once with attempts 3; later begins stay POISONED
 * without the callback, and freeing the stale leases does not revive the
 * key. */
static void test_poison_at_max_attempts(void **state) {
  tu_fx *fx = fx_of(state);
  struct poison_log plog = {0, 0, {0}, 0, NULL, 0, 0};
  idem_options o = fx->opts;
  o.max_attempts = 3;
  o.on_poison = on_poison_cb;
  o.poison_ctx = &plog;
  idem_db *db = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;

  /* Attempts given back by release(). */
  for (uint32_t i = 1; i <= 3; i++) {
    assert_int_equal(tu_begin(db, "p", &a), IDEM_CLAIMED);
    assert_int_equal(a.attempts, i);
    assert_int_equal(idem_release(a.lease, NULL), IDEM_OK);
    idem_lease_free(a.lease);
  }
  assert_int_equal(plog.calls, 0);
  assert_int_equal(tu_begin(db, "p", &a), IDEM_POISONED);
  assert_int_equal(a.status, IDEM_POISONED);
  assert_null(a.lease);
  assert_int_equal(a.attempts, 3);
  assert_int_equal(plog.calls, 1);
  assert_int_equal(plog.attempts, 3);
  assert_int_equal(plog.key_len, 1);
  assert_memory_equal(plog.key, "p", 1);
  tu_clock_advance(&fx->clock, 10 * TTL);
  assert_int_equal(tu_begin(db, "p", &a), IDEM_POISONED);
  assert_int_equal(tu_begin(fx->db, "p", &a), IDEM_POISONED);
  assert_int_equal(plog.calls, 1);
  idem_record r = row_of(db, "p");
  assert_int_equal(r.state, IDEM_STATE_POISONED);
  assert_int_equal(r.attempts, 3);
  assert_string_equal(r.owner, "");
  idem_record_clear(&r);

  /* Attempts lost to expired leases (a crashing job). */
  idem_lease *stale[3];
  for (uint32_t i = 1; i <= 3; i++) {
    assert_int_equal(tu_begin(db, "q", &a), IDEM_CLAIMED);
    assert_int_equal(a.attempts, i);
    stale[i - 1] = a.lease;
    tu_clock_advance_lease(&fx->clock, TTL + 1);
  }
  assert_int_equal(tu_begin(db, "q", &a), IDEM_POISONED);
  assert_int_equal(plog.calls, 2);
  assert_int_equal(plog.attempts, 3);
  for (int i = 0; i < 3; i++)
    idem_lease_free(stale[i]);
  assert_int_equal(tu_begin(db, "q", &a), IDEM_POISONED);
  assert_int_equal(plog.calls, 2);
  idem_answer_clear(&a);

  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_POISONED], 2);
  close_db(db);
}

/* on_poison runs after the commit with no lock held: it may call into the
 * same handle, and it already sees the key poisoned. */
static void test_on_poison_after_commit(void **state) {
  tu_fx *fx = fx_of(state);
  struct poison_log plog = {0, 0, {0}, 0, NULL, 0, 0};
  idem_options o = fx->opts;
  o.max_attempts = 1;
  o.on_poison = on_poison_cb;
  o.poison_ctx = &plog;
  idem_db *db = open_with(fx, &o);
  plog.db = db;
  idem_lease *l = tu_claim(db, "p");
  assert_int_equal(idem_release(l, NULL), IDEM_OK);
  idem_lease_free(l);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "p", &a), IDEM_POISONED);
  idem_answer_clear(&a);
  assert_int_equal(plog.calls, 1);
  assert_int_equal(plog.get_rc, IDEM_OK);
  assert_int_equal(plog.state_seen, IDEM_STATE_POISONED);
  close_db(db);
}

/* max_attempts 0 means unlimited: many claims, never poisoned. */
static void test_unlimited_attempts(void **state) {
  tu_fx *fx = fx_of(state);
  struct poison_log plog = {0, 0, {0}, 0, NULL, 0, 0};
  idem_options o = fx->opts;
  o.max_attempts = 0;
  o.on_poison = on_poison_cb;
  o.poison_ctx = &plog;
  idem_db *db = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;
  for (uint32_t i = 1; i <= 12; i++) {
    assert_int_equal(tu_begin(db, "u", &a), IDEM_CLAIMED);
    assert_int_equal(a.attempts, i);
    assert_int_equal(idem_release(a.lease, NULL), IDEM_OK);
    idem_lease_free(a.lease);
  }
  idem_answer_clear(&a);
  assert_int_equal(plog.calls, 0);
  close_db(db);
}

/* --- Reset and the monotonic fence --------------------------------------- */

/* idem_reset() makes a completed, failed or poisoned key absent: its next
 * begin is attempt 1 again, with a fence above every fence it had. */
static void test_reset_restarts_attempts(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 2;
  idem_db *db = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;
  const char *keys[] = {"completed", "failed", "poisoned"};
  for (int k = 0; k < 3; k++) {
    uint64_t maxfence = 0;
    for (int i = 0; i < 2; i++) {
      assert_int_equal(tu_begin(db, keys[k], &a), IDEM_CLAIMED);
      assert_true(a.fence > maxfence);
      maxfence = a.fence;
      if (i == 0 || k == 2)
        assert_int_equal(idem_release(a.lease, NULL), IDEM_OK);
      else if (k == 0)
        assert_int_equal(idem_complete(a.lease, "c", 1), IDEM_OK);
      else
        assert_int_equal(idem_fail(a.lease, 1, "f", 1), IDEM_OK);
      idem_lease_free(a.lease);
    }
    if (k == 2)
      assert_int_equal(tu_begin(db, keys[k], &a), IDEM_POISONED);

    assert_int_equal(idem_reset(db, keys[k], strlen(keys[k])), IDEM_OK);
    assert_absent(db, keys[k]);
    assert_int_equal(tu_begin(db, keys[k], &a), IDEM_CLAIMED);
    assert_int_equal(a.attempts, 1);
    assert_true(a.fence > maxfence);
    assert_int_equal(idem_complete(a.lease, "again", 5), IDEM_OK);
    idem_lease_free(a.lease);
    tu_assert_completed(db, keys[k], "again");
  }
  idem_answer_clear(&a);
  close_db(db);
}

/* Resetting a key under a live lease takes the lease away: the holder's
 * complete is IDEM_ELEASELOST and does not bring the row back, its
 * heartbeat reports it lost, and a new claim gets a higher fence. */
static void test_reset_revokes_live_lease(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_answer a = IDEM_ANSWER_INIT;

  /* The old holder tries to finish after the reset and a new claim. */
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  idem_lease *l1 = a.lease;
  uint64_t f1 = a.fence;
  assert_int_equal(idem_reset(fx->db, "k", 1), IDEM_OK);
  assert_int_equal(tu_begin(db2, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 1);
  assert_true(a.fence > f1);
  idem_record before = row_of(fx->db, "k");
  assert_int_equal(idem_complete(l1, "stale", 5), IDEM_ELEASELOST);
  assert_true(idem_lease_lost(l1) != 0);
  idem_record after = row_of(fx->db, "k");
  assert_same_row(&before, &after);
  assert_int_equal(idem_complete(a.lease, "new", 3), IDEM_OK);
  idem_lease_free(a.lease);
  idem_lease_free(l1);
  tu_assert_completed(fx->db, "k", "new");

  /* The old holder finishes while the key is still absent. */
  idem_lease *l2 = tu_claim(fx->db, "j");
  assert_int_equal(idem_reset(db2, "j", 1), IDEM_OK);
  assert_int_equal(idem_complete(l2, "stale", 5), IDEM_ELEASELOST);
  assert_absent(fx->db, "j");
  idem_lease_free(l2);

  /* The old holder only heartbeats. */
  idem_lease *l3 = tu_claim(fx->db, "h");
  assert_int_equal(idem_reset(db2, "h", 1), IDEM_OK);
  unsigned lost = 99;
  assert_int_equal(idem_heartbeat(fx->db, &lost), IDEM_OK);
  assert_int_equal(lost, 1);
  assert_true(idem_lease_lost(l3) != 0);
  assert_absent(fx->db, "h");
  idem_lease_free(l3);

  idem_record_clear(&before);
  idem_record_clear(&after);
  idem_answer_clear(&a);
  close_db(db2);
}

/* The fence never goes back, not even after the row was purged and the
 * database reopened: a downstream system that saw fence N must never see a
 * claim with fence <= N for that key again. */
static void test_fence_survives_purge_and_reopen(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.retention_ms = 1000;
  idem_db *db = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;
  uint64_t last = 0, n = 0;
  for (int round = 0; round < 3; round++) {
    assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
    assert_int_equal(a.attempts, 1);
    assert_true(a.fence > last);
    last = a.fence;
    assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
    idem_lease_free(a.lease);
    tu_clock_step_wall(&fx->clock, 1001);
    assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
    assert_int_equal(n, 1);
    assert_absent(db, "k");
    if (round == 1) {
      close_db(db);
      db = open_with(fx, &o);
    }
  }
  /* And after idem_reset_state() of a failed row. */
  assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
  assert_true(a.fence > last);
  last = a.fence;
  assert_int_equal(idem_fail(a.lease, 1, "x", 1), IDEM_OK);
  idem_lease_free(a.lease);
  assert_int_equal(idem_reset_state(db, IDEM_STATE_FAILED, &n), IDEM_OK);
  assert_int_equal(n, 1);
  assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 1);
  assert_true(a.fence > last);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  close_db(db);
}

/* --- Fencing ------------------------------------------------------------- */

enum { OP_COMPLETE, OP_RELEASE, OP_FAIL };

/* A holder paused past its TTL and overtaken cannot finish the job over its
 * successor: complete, release and fail all answer IDEM_ELEASELOST, mark
 * the lease lost, count in the handle's `lost` counter and leave the
 * successor's row exactly as it was (seed weakness 1). */
static void test_stale_owner_rejected(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_answer a = IDEM_ANSWER_INIT;
  const int ops[] = {OP_COMPLETE, OP_RELEASE, OP_FAIL};
  for (int i = 0; i < 3; i++) {
    char key[8];
    snprintf(key, sizeof key, "s%d", i);
    idem_lease *l1 = tu_claim(fx->db, key);
    tu_clock_advance_lease(&fx->clock, TTL + 1);
    assert_int_equal(tu_begin(db2, key, &a), IDEM_CLAIMED);
    assert_true(a.fence > idem_lease_fence(l1));
    idem_record before = row_of(fx->db, key);

    int rc;
    if (ops[i] == OP_COMPLETE)
      rc = idem_complete(l1, "stale", 5);
    else if (ops[i] == OP_RELEASE)
      rc = idem_release(l1, "stale");
    else
      rc = idem_fail(l1, 5, "stale", 5);
    if (rc != IDEM_ELEASELOST)
      fail_msg("stale op %d: got %s", i, idem_errstr(rc));
    assert_true(idem_lease_lost(l1) != 0);
    idem_record after = row_of(fx->db, key);
    assert_same_row(&before, &after);
    assert_int_equal(after.state, IDEM_STATE_PENDING);
    assert_string_equal(after.owner, a.owner);
    assert_int_equal(after.fence, a.fence);

    /* The successor is unaffected. */
    assert_int_equal(idem_lease_lost(a.lease), 0);
    assert_int_equal(idem_complete(a.lease, "winner", 6), IDEM_OK);
    idem_lease_free(a.lease);
    idem_lease_free(l1);
    tu_assert_completed(fx->db, key, "winner");
    idem_record_clear(&before);
    idem_record_clear(&after);
  }
  idem_answer_clear(&a);
  idem_stats st = tu_stats(fx->db);
  assert_int_equal(st.lost, 3);
  close_db(db2);
}

/* A heartbeat that finds its lease taken over reports it lost (count,
 * idem_lease_lost, on_lost) and changes nothing: the successor keeps its
 * lease with its own deadline. */
static void test_heartbeat_reports_takeover(void **state) {
  tu_fx *fx = fx_of(state);
  struct lost_log llog = {0, NULL};
  idem_options o = fx->opts;
  o.on_lost = on_lost_cb;
  o.lost_ctx = &llog;
  idem_db *dba = open_with(fx, &o);
  idem_db *dbb = open_with(fx, &fx->opts);
  idem_lease *l1 = tu_claim(dba, "k");
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  idem_answer b = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(dbb, "k", &b), IDEM_CLAIMED);
  tu_clock_advance_lease(&fx->clock, 1000);
  idem_record before = row_of(dbb, "k");

  unsigned lost = 0;
  assert_int_equal(idem_heartbeat(dba, &lost), IDEM_OK);
  assert_int_equal(lost, 1);
  assert_true(idem_lease_lost(l1) != 0);
  assert_int_equal(llog.calls, 1);
  assert_ptr_equal(llog.last, l1);
  idem_record after = row_of(dbb, "k");
  assert_same_row(&before, &after);
  assert_string_equal(after.owner, b.owner);
  assert_int_equal(after.lease_ms, TTL - 1000);

  assert_int_equal(idem_complete(l1, "stale", 5), IDEM_ELEASELOST);
  assert_int_equal(idem_complete(b.lease, "winner", 6), IDEM_OK);
  idem_lease_free(b.lease);
  idem_lease_free(l1);
  tu_assert_completed(dba, "k", "winner");
  idem_record_clear(&before);
  idem_record_clear(&after);
  idem_answer_clear(&b);
  close_db(dba);
  close_db(dbb);
}

/* A heartbeat never revives a lease another owner has claimed, even when
 * the successor has since released the key: the key stays claimable. */
static void test_heartbeat_never_revives(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *dbb = open_with(fx, &fx->opts);
  idem_lease *l1 = tu_claim(fx->db, "k");
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  idem_answer b = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(dbb, "k", &b), IDEM_CLAIMED);
  uint64_t f2 = b.fence;
  assert_int_equal(idem_release(b.lease, NULL), IDEM_OK);
  idem_lease_free(b.lease);

  unsigned lost = 0;
  assert_int_equal(idem_heartbeat(fx->db, &lost), IDEM_OK);
  assert_int_equal(lost, 1);
  assert_true(idem_lease_lost(l1) != 0);
  idem_record r = row_of(dbb, "k");
  assert_string_equal(r.owner, "");
  assert_int_equal(r.fence, f2);
  idem_record_clear(&r);

  assert_int_equal(tu_begin(dbb, "k", &b), IDEM_CLAIMED);
  assert_int_equal(b.attempts, 3);
  assert_true(b.fence > f2);
  assert_int_equal(idem_complete(l1, "stale", 5), IDEM_ELEASELOST);
  assert_int_equal(idem_complete(b.lease, "third", 5), IDEM_OK);
  idem_lease_free(b.lease);
  idem_lease_free(l1);
  idem_answer_clear(&b);
  close_db(dbb);
}

/* A heartbeat pushes a live lease's deadline to now + TTL: after 0.9 TTL,
 * a heartbeat, and another 0.9 TTL (1.8 TTL in all), another handle still
 * gets BUSY with exactly 0.1 TTL left. */
static void test_heartbeat_extends_live_lease(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_lease *l = tu_claim(fx->db, "k");
  tu_clock_advance_lease(&fx->clock, TTL * 9 / 10);
  unsigned lost = 99;
  assert_int_equal(idem_heartbeat(fx->db, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  idem_record r = row_of(db2, "k");
  assert_int_equal(r.lease_ms, TTL);
  idem_record_clear(&r);
  tu_clock_advance_lease(&fx->clock, TTL * 9 / 10);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db2, "k", &a), IDEM_BUSY);
  assert_int_equal(a.lease_ms, TTL / 10);
  assert_int_equal(a.attempts, 1);
  assert_int_equal(idem_lease_lost(l), 0);
  assert_int_equal(idem_complete(l, "v", 1), IDEM_OK);
  idem_lease_free(l);
  idem_answer_clear(&a);
  close_db(db2);
}

/* One heartbeat refreshes every live lease of the handle, not only one:
 * three leases held 0.9 TTL all get a full TTL back from a single round,
 * and after another 0.9 TTL another handle finds each of them busy. */
static void test_heartbeat_refreshes_every_lease(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  const char *keys[] = {"a", "b", "c"};
  idem_lease *l[3];
  for (int i = 0; i < 3; i++) {
    l[i] = tu_claim(fx->db, keys[i]);
    tu_clock_advance_lease(&fx->clock, 100);
  }
  tu_clock_advance_lease(&fx->clock, TTL * 9 / 10);
  unsigned lost = 99;
  assert_int_equal(idem_heartbeat(fx->db, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  for (int i = 0; i < 3; i++) {
    idem_record r = row_of(db2, keys[i]);
    if (r.lease_ms != TTL)
      fail_msg("lease of %s: %lld ms left after the round", keys[i],
               (long long)r.lease_ms);
    idem_record_clear(&r);
  }
  tu_clock_advance_lease(&fx->clock, TTL * 9 / 10);
  for (int i = 0; i < 3; i++) {
    idem_answer a = IDEM_ANSWER_INIT;
    assert_int_equal(tu_begin(db2, keys[i], &a), IDEM_BUSY);
    idem_answer_clear(&a);
    assert_int_equal(idem_complete(l[i], "v", 1), IDEM_OK);
    idem_lease_free(l[i]);
  }
  close_db(db2);
}

/* A lease past its TTL that nobody took over still carries the row's owner
 * and fence, so its holder may still complete (nobody else ran the job). */
static void test_expired_not_retaken_completes(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "k");
  tu_clock_advance_lease(&fx->clock, 5 * TTL);
  assert_int_equal(idem_complete(l, "late", 4), IDEM_OK);
  assert_int_equal(idem_lease_lost(l), 0);
  idem_lease_free(l);
  tu_assert_completed(fx->db, "k", "late");
}

/* Completing twice with one lease is misuse and cannot replace the first
 * result: a completed key's result never changes. */
static void test_complete_twice_is_misuse(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "k");
  assert_int_equal(idem_complete(l, "first", 5), IDEM_OK);
  assert_int_equal(idem_complete(l, "second", 6), IDEM_EMISUSE);
  idem_lease_free(l);
  tu_assert_completed(fx->db, "k", "first");
}

/* Stands in for a reboot: every lease in the file now carries another
 * boot id. */
static void simulate_reboot(tu_fx *fx) {
  assert_int_equal(
      tu_sql(fx->path, "UPDATE idem_keys SET lease_boot = zeroblob(16)"),
      SQLITE_OK);
}

static int have_boot_id(void) {
  if (access("/proc/sys/kernel/random/boot_id", R_OK) == 0)
    return 1;
  print_message("no boot id on this system: a reboot cannot be seen\n");
  return 0;
}

/* A lease written under another boot id is expired whatever its deadline
 * says: after a reboot, the key is claimable at once, as attempt 2 with a
 * higher fence, and the old holder's completion is refused. */
static void test_other_boot_lease_expired(void **state) {
  tu_fx *fx = fx_of(state);
  if (!have_boot_id())
    skip();
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_lease *l1 = tu_claim(fx->db, "k");
  simulate_reboot(fx);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db2, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > idem_lease_fence(l1));
  assert_int_equal(a.lease_ms, TTL);
  assert_int_equal(idem_complete(l1, "stale", 5), IDEM_ELEASELOST);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_lease_free(l1);
  idem_answer_clear(&a);
  close_db(db2);
}

/* idem_get and stats agree with begin about such a lease: it has no time
 * left (lease_ms <= 0, as documented for an expired lease) and is not
 * counted as leased. */
static void test_other_boot_lease_reported_expired(void **state) {
  tu_fx *fx = fx_of(state);
  if (!have_boot_id())
    skip();
  idem_lease *l1 = tu_claim(fx->db, "k");
  simulate_reboot(fx);
  idem_stats st = tu_stats(fx->db);
  assert_int_equal(st.leased, 0);
  idem_record r = row_of(fx->db, "k");
  if (r.lease_ms > 0)
    fail_msg("idem_get reports %lld ms left on a lease of another boot",
             (long long)r.lease_ms);
  idem_record_clear(&r);
  idem_lease_free(l1);
}

/* --- Fingerprints -------------------------------------------------------- */

/* A key reused with a different request fingerprint is IDEM_EMISMATCH,
 * whether pending (leased or released), completed or failed, and reveals
 * nothing of the other request's result; the same fingerprint gets the
 * normal answers and a begin without a fingerprint is not checked (seed
 * weakness 8). A mismatch counts no attempt. */
static void test_fingerprint_mismatch(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_answer a = IDEM_ANSWER_INIT, b = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin_fp(fx->db, "k", "A", &a), IDEM_CLAIMED);

  assert_int_equal(tu_begin_fp(db2, "k", "A", &b), IDEM_BUSY);
  assert_int_equal(tu_begin_fp(db2, "k", "B", &b), IDEM_EMISMATCH);
  assert_null(b.lease);
  assert_null(b.result);
  assert_int_equal(tu_begin_fp(db2, "k", NULL, &b), IDEM_BUSY);

  assert_int_equal(idem_complete(a.lease, "resA", 4), IDEM_OK);
  idem_lease_free(a.lease);
  assert_int_equal(tu_begin_fp(db2, "k", "A", &b), IDEM_COMPLETED);
  assert_memory_equal(b.result, "resA", 5);
  assert_int_equal(tu_begin_fp(db2, "k", "B", &b), IDEM_EMISMATCH);
  assert_null(b.result);
  assert_int_equal(b.result_len, 0);
  assert_int_equal(tu_begin_fp(db2, "k", NULL, &b), IDEM_COMPLETED);
  assert_memory_equal(b.result, "resA", 5);

  idem_record r = row_of(db2, "k");
  assert_int_equal(r.attempts, 1);
  assert_int_equal(r.has_fingerprint, 1);
  idem_record_clear(&r);

  /* A released key keeps its fingerprint. */
  assert_int_equal(tu_begin_fp(fx->db, "r", "X", &a), IDEM_CLAIMED);
  assert_int_equal(idem_release(a.lease, NULL), IDEM_OK);
  idem_lease_free(a.lease);
  assert_int_equal(tu_begin_fp(db2, "r", "Y", &b), IDEM_EMISMATCH);
  assert_int_equal(tu_begin_fp(db2, "r", "X", &b), IDEM_CLAIMED);
  assert_int_equal(b.attempts, 2);
  assert_int_equal(idem_fail(b.lease, 4, "err", 3), IDEM_OK);
  idem_lease_free(b.lease);
  /* A failed key too. */
  assert_int_equal(tu_begin_fp(db2, "r", "Y", &b), IDEM_EMISMATCH);
  assert_null(b.result);
  assert_int_equal(tu_begin_fp(db2, "r", "X", &b), IDEM_FAILED);
  assert_int_equal(b.code, 4);

  /* Binary fingerprints that differ only after a NUL byte differ. */
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.fingerprint = "z\0one";
  bo.fingerprint_len = 5;
  idem_answer_clear(&a);
  assert_int_equal(idem_begin(fx->db, "n", 1, &bo, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "n", 1), IDEM_OK);
  idem_lease_free(a.lease);
  bo.fingerprint = "z\0two";
  idem_answer_clear(&b);
  assert_int_equal(idem_begin(db2, "n", 1, &bo, &b), IDEM_EMISMATCH);

  idem_stats st = tu_stats(db2);
  assert_int_equal(st.mismatches, 5);
  idem_answer_clear(&a);
  idem_answer_clear(&b);
  close_db(db2);
}

/* A key stored without a fingerprint has nothing to mismatch: a later
 * begin that brings one gets the stored answer. */
static void test_fingerprint_absent_not_checked(void **state) {
  tu_fx *fx = fx_of(state);
  tu_claim_complete(fx->db, "k", "plain");
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin_fp(fx->db, "k", "anything", &a), IDEM_COMPLETED);
  assert_memory_equal(a.result, "plain", 6);
  idem_answer_clear(&a);
  idem_stats st = tu_stats(fx->db);
  assert_int_equal(st.mismatches, 0);
}

/* --- Retention and purge ------------------------------------------------- */

/* A completed or failed row is served for retention_ms of wall time and
 * not after: once it is over, begin claims the key again with a higher
 * fence instead of replaying the stale result. idem_get reports the end of
 * retention. */
static void test_retention_expiry(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.retention_ms = 1000;
  idem_db *db = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;
  const char *keys[] = {"c", "f"};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(tu_begin(db, keys[i], &a), IDEM_CLAIMED);
    uint64_t f1 = a.fence;
    int64_t t = tu_clock_now(&fx->clock, IDEM_CLOCK_WALL);
    if (i == 0)
      assert_int_equal(idem_complete(a.lease, "old", 3), IDEM_OK);
    else
      assert_int_equal(idem_fail(a.lease, 2, "old", 3), IDEM_OK);
    idem_lease_free(a.lease);
    idem_record r = row_of(db, keys[i]);
    assert_int_equal(r.expires_at, t + 1000);
    idem_record_clear(&r);

    tu_clock_step_wall(&fx->clock, 999);
    assert_int_equal(tu_begin(db, keys[i], &a),
                     i == 0 ? IDEM_COMPLETED : IDEM_FAILED);
    tu_clock_step_wall(&fx->clock, 2);
    assert_int_equal(tu_begin(db, keys[i], &a), IDEM_CLAIMED);
    assert_true(a.fence > f1);
    assert_int_equal(idem_complete(a.lease, "new", 3), IDEM_OK);
    idem_lease_free(a.lease);
    tu_assert_completed(db, keys[i], "new");
  }
  idem_answer_clear(&a);
  close_db(db);
}

/* Each clock does one job (seed weakness 10): moving the lease clock does
 * not end retention, and moving the wall clock (an NTP step or `date -s`,
 * forwards or backwards) neither ends a live lease early nor keeps a dead
 * one alive. */
static void test_clocks_are_separate(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.retention_ms = 1000;
  idem_db *db = open_with(fx, &o);
  tu_claim_complete(db, "done", "kept");
  tu_clock_advance_lease(&fx->clock, INT64_C(1000000000));
  tu_assert_completed(db, "done", "kept");

  idem_lease *l = tu_claim(db, "live");
  idem_answer a = IDEM_ANSWER_INIT;
  tu_clock_step_wall(&fx->clock, INT64_C(86400000));
  assert_int_equal(tu_begin(db, "live", &a), IDEM_BUSY);
  assert_int_equal(a.lease_ms, TTL);
  tu_clock_step_wall(&fx->clock, INT64_C(-2) * 86400000);
  assert_int_equal(tu_begin(db, "live", &a), IDEM_BUSY);
  assert_int_equal(a.lease_ms, TTL);
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  assert_int_equal(tu_begin(db, "live", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_lease_free(l);
  idem_answer_clear(&a);
  close_db(db);
}

/* idem_purge() deletes exactly the completed and failed rows past their
 * retention, and never a pending row (leased or not) or a poisoned one
 * (seed weakness 6); stats count expired rows before and after. */
static void test_purge_selects_rows(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.retention_ms = 1000;
  idem_db *db = open_with(fx, &o);
  o.max_attempts = 1;
  idem_db *dbp = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;

  tu_claim_complete(db, "c", "c");
  idem_lease *l = tu_claim(db, "f");
  assert_int_equal(idem_fail(l, 1, "f", 1), IDEM_OK);
  idem_lease_free(l);
  l = tu_claim(dbp, "q");
  assert_int_equal(idem_release(l, NULL), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(tu_begin(dbp, "q", &a), IDEM_POISONED);
  idem_lease *p2 = tu_claim(db, "p2"); /* will expire */
  tu_clock_advance_lease(&fx->clock, 6000);
  idem_lease *p = tu_claim(db, "p"); /* stays live */
  tu_clock_advance_lease(&fx->clock, 6000);
  tu_clock_step_wall(&fx->clock, 1001);
  tu_claim_complete(db, "fresh", "fresh");

  idem_stats st = tu_stats(db);
  assert_int_equal(st.expired, 2);
  assert_int_equal(st.leased, 1);
  uint64_t n = 0;
  assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
  assert_int_equal(n, 2);
  assert_absent(db, "c");
  assert_absent(db, "f");
  idem_record r = row_of(db, "p");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  assert_int_equal(r.lease_ms, 4000);
  idem_record_clear(&r);
  r = row_of(db, "p2");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);
  r = row_of(db, "q");
  assert_int_equal(r.state, IDEM_STATE_POISONED);
  idem_record_clear(&r);
  tu_assert_completed(db, "fresh", "fresh");
  st = tu_stats(db);
  assert_int_equal(st.expired, 0);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 1);
  assert_int_equal(st.rows[IDEM_STATE_FAILED], 0);
  assert_int_equal(st.rows[IDEM_STATE_PENDING], 2);
  assert_int_equal(st.rows[IDEM_STATE_POISONED], 1);

  /* Years later only the terminal row goes. */
  tu_clock_step_wall(&fx->clock, INT64_C(100000000000));
  assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
  assert_int_equal(n, 1);
  r = row_of(db, "q");
  assert_int_equal(r.state, IDEM_STATE_POISONED);
  idem_record_clear(&r);
  r = row_of(db, "p");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);
  assert_int_equal(idem_complete(p, "p", 1), IDEM_OK);
  idem_lease_free(p);
  idem_lease_free(p2);
  idem_answer_clear(&a);
  close_db(dbp);
  close_db(db);
}

/* purge honours its limit and deletes more rows than one batch (1000) when
 * asked for all of them. */
static void test_purge_limit_and_batches(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.retention_ms = 1000;
  idem_db *db = open_with(fx, &o);
  const int rows = 1203;
  for (int i = 0; i < rows; i++) {
    char key[16];
    snprintf(key, sizeof key, "b%05d", i);
    tu_claim_complete(db, key, "x");
  }
  tu_clock_step_wall(&fx->clock, 1001);
  uint64_t n = 0;
  assert_int_equal(idem_purge(db, 3, &n), IDEM_OK);
  assert_int_equal(n, 3);
  assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
  assert_int_equal(n, rows - 3);
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 0);
  assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
  assert_int_equal(n, 0);
  close_db(db);
}

/* retention_ms 0 keeps results forever: served after ten years, never
 * purged, and idem_get says expires_at 0. */
static void test_retention_zero_forever(void **state) {
  tu_fx *fx = fx_of(state);
  tu_claim_complete(fx->db, "k", "forever");
  tu_clock_step_wall(&fx->clock, INT64_C(10) * 365 * 86400000);
  tu_assert_completed(fx->db, "k", "forever");
  uint64_t n = 99;
  assert_int_equal(idem_purge(fx->db, 0, &n), IDEM_OK);
  assert_int_equal(n, 0);
  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.expires_at, 0);
  idem_record_clear(&r);
  idem_stats st = tu_stats(fx->db);
  assert_int_equal(st.expired, 0);
}

/* --- Administration ------------------------------------------------------ */

/* idem_get reports everything about a row: name, fingerprint presence,
 * times, owner (cleared once finished), result and code. */
static void test_get_record_fields(void **state) {
  tu_fx *fx = fx_of(state);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.name = "send-invoice";
  bo.fingerprint = "fp";
  bo.fingerprint_len = 2;
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(fx->db, "key-1", 5, &bo, &a), IDEM_CLAIMED);
  idem_record r = row_of(fx->db, "key-1");
  assert_string_equal(r.name, "send-invoice");
  assert_int_equal(r.has_fingerprint, 1);
  assert_string_equal(r.owner, a.owner);
  idem_record_clear(&r);
  tu_clock_advance(&fx->clock, 250);
  assert_int_equal(idem_fail(a.lease, -3, "bad", 3), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);

  r = row_of(fx->db, "key-1");
  assert_int_equal(r.version, IDEM_RECORD_VERSION);
  assert_int_equal(r.state, IDEM_STATE_FAILED);
  assert_int_equal(r.key_len, 5);
  assert_string_equal((char *)r.key, "key-1");
  assert_int_equal(r.attempts, 1);
  assert_string_equal(r.owner, "");
  assert_int_equal(r.created_at, TU_WALL_START);
  assert_int_equal(r.updated_at, TU_WALL_START + 250);
  assert_int_equal(r.expires_at, 0);
  assert_int_equal(r.code, -3);
  assert_int_equal(r.result_len, 3);
  assert_string_equal((char *)r.result, "bad");
  assert_string_equal(r.name, "send-invoice");
  assert_int_equal(r.has_fingerprint, 1);
  idem_record_clear(&r);
}

#define MAX_SEEN 32
struct seen {
  int n;
  int stop_after;
  char keys[MAX_SEEN][16];
  int states[MAX_SEEN];
  int had_result;
};

static int collect(void *ctx, const idem_record *rec) {
  struct seen *s = ctx;
  if (s->n < MAX_SEEN) {
    size_t len = rec->key_len < 15 ? rec->key_len : 15;
    memcpy(s->keys[s->n], rec->key, len);
    s->keys[s->n][len] = '\0';
    s->states[s->n] = rec->state;
  }
  if (rec->result != NULL)
    s->had_result = 1;
  s->n++;
  return s->stop_after > 0 && s->n >= s->stop_after;
}

struct reentrant {
  idem_db *db;
  int calls;
  int bad;
};

static int get_from_list(void *ctx, const idem_record *rec) {
  struct reentrant *re = ctx;
  idem_record r = IDEM_RECORD_INIT;
  re->calls++;
  if (idem_get(re->db, rec->key, rec->key_len, &r) != IDEM_OK ||
      r.state != rec->state)
    re->bad++;
  idem_record_clear(&r);
  return 0;
}

/* idem_list walks rows in key order, filters by state, pages with the last
 * key seen and a limit, reports the count, stops when the callback asks,
 * and does not load results. */
static void test_list_filter_and_paging(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *held[3];
  int nheld = 0;
  for (int i = 9; i >= 0; i--) { /* inserted out of order */
    char key[8];
    snprintf(key, sizeof key, "k%d", i);
    idem_lease *l = tu_claim(fx->db, key);
    if (i % 3 == 0)
      assert_int_equal(idem_complete(l, "c", 1), IDEM_OK);
    else if (i % 3 == 1)
      assert_int_equal(idem_fail(l, 1, "f", 1), IDEM_OK);
    else
      held[nheld++] = l;
    if (i % 3 != 2)
      idem_lease_free(l);
  }

  struct seen s = {0};
  unsigned count = 0;
  assert_int_equal(idem_list(fx->db, -1, NULL, 0, 100, collect, &s, &count),
                   IDEM_OK);
  assert_int_equal(count, 10);
  assert_int_equal(s.n, 10);
  assert_int_equal(s.had_result, 0);
  for (int i = 0; i < 10; i++) {
    char key[8];
    snprintf(key, sizeof key, "k%d", i);
    assert_string_equal(s.keys[i], key);
  }

  memset(&s, 0, sizeof s);
  assert_int_equal(idem_list(fx->db, IDEM_STATE_COMPLETED, NULL, 0, 100,
                             collect, &s, &count),
                   IDEM_OK);
  assert_int_equal(count, 4);
  const char *done[] = {"k0", "k3", "k6", "k9"};
  for (int i = 0; i < 4; i++) {
    assert_string_equal(s.keys[i], done[i]);
    assert_int_equal(s.states[i], IDEM_STATE_COMPLETED);
  }

  /* Pages of 3 over all rows: 3 + 3 + 3 + 1, in order, no repeats. */
  struct seen all = {0};
  char after[16] = "";
  int pages = 0;
  for (;;) {
    memset(&s, 0, sizeof s);
    assert_int_equal(
        idem_list(fx->db, -1, after, strlen(after), 3, collect, &s, &count),
        IDEM_OK);
    assert_int_equal(count, (unsigned)s.n);
    if (s.n == 0)
      break;
    pages++;
    assert_true(s.n <= 3);
    for (int i = 0; i < s.n; i++)
      memcpy(all.keys[all.n++], s.keys[i], 16);
    strcpy(after, s.keys[s.n - 1]);
  }
  assert_int_equal(pages, 4);
  assert_int_equal(all.n, 10);
  for (int i = 0; i < 10; i++) {
    char key[8];
    snprintf(key, sizeof key, "k%d", i);
    assert_string_equal(all.keys[i], key);
  }

  /* Paging within a state. */
  memset(&s, 0, sizeof s);
  assert_int_equal(
      idem_list(fx->db, IDEM_STATE_PENDING, "k2", 2, 10, collect, &s, &count),
      IDEM_OK);
  assert_int_equal(count, 2);
  assert_string_equal(s.keys[0], "k5");
  assert_string_equal(s.keys[1], "k8");

  /* The callback runs with no lock held: it may call into the handle. */
  struct reentrant re = {fx->db, 0, 0};
  assert_int_equal(idem_list(fx->db, IDEM_STATE_FAILED, NULL, 0, 100,
                             get_from_list, &re, &count),
                   IDEM_OK);
  assert_int_equal(count, 3);
  assert_int_equal(re.calls, 3);
  assert_int_equal(re.bad, 0);

  /* The callback stops the walk. */
  memset(&s, 0, sizeof s);
  s.stop_after = 2;
  assert_int_equal(idem_list(fx->db, -1, NULL, 0, 100, collect, &s, &count),
                   IDEM_OK);
  assert_int_equal(s.n, 2);
  assert_int_equal(count, 2);

  for (int i = 0; i < nheld; i++) {
    assert_int_equal(idem_complete(held[i], "h", 1), IDEM_OK);
    idem_lease_free(held[i]);
  }
}

/* idem_reset_state() resets every row of one state and no other: poisoned
 * keys start again at attempt 1, a completed key stays completed. */
static void test_reset_state(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 1;
  idem_db *db = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;
  const char *keys[] = {"p1", "p2", "p3"};
  for (int i = 0; i < 3; i++) {
    idem_lease *l = tu_claim(db, keys[i]);
    assert_int_equal(idem_release(l, NULL), IDEM_OK);
    idem_lease_free(l);
    assert_int_equal(tu_begin(db, keys[i], &a), IDEM_POISONED);
  }
  tu_claim_complete(db, "done", "d");
  uint64_t n = 0;
  assert_int_equal(idem_reset_state(db, IDEM_STATE_POISONED, &n), IDEM_OK);
  assert_int_equal(n, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(tu_begin(db, keys[i], &a), IDEM_CLAIMED);
    assert_int_equal(a.attempts, 1);
    assert_int_equal(idem_complete(a.lease, "ok", 2), IDEM_OK);
    idem_lease_free(a.lease);
  }
  tu_assert_completed(db, "done", "d");
  assert_int_equal(idem_reset_state(db, IDEM_STATE_POISONED, &n), IDEM_OK);
  assert_int_equal(n, 0);
  idem_answer_clear(&a);
  close_db(db);
}

/* idem_stats_get counts rows per state, live leases and expired rows, and
 * the handle's own counters: each kind of answer is counted on the handle
 * that gave it, and only there. */
static void test_stats_counts(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 1;
  idem_db *db = open_with(fx, &o);
  idem_answer a = IDEM_ANSWER_INIT;

  tu_claim_complete(db, "c1", "c");                         /* claims 1 */
  assert_int_equal(tu_begin(db, "c1", &a), IDEM_COMPLETED); /* hits 1 */
  assert_int_equal(tu_begin(db, "c1", &a), IDEM_COMPLETED); /* hits 2 */
  idem_lease *l = tu_claim(db, "f1");                       /* claims 2 */
  assert_int_equal(idem_fail(l, 1, "f", 1), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(tu_begin(db, "f1", &a), IDEM_FAILED);          /* hits 3 */
  assert_int_equal(tu_begin_fp(db, "p1", "x", &a), IDEM_CLAIMED); /* 3 */
  idem_lease *lp = a.lease;
  assert_int_equal(tu_begin(db, "p1", &a), IDEM_BUSY);              /* busy */
  assert_int_equal(tu_begin_fp(db, "p1", "y", &a), IDEM_EMISMATCH); /* mm */
  l = tu_claim(db, "q1"); /* claims 4 */
  assert_int_equal(idem_release(l, NULL), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(tu_begin(db, "q1", &a), IDEM_POISONED); /* poisoned */
  idem_lease *l1 = tu_claim(db, "s1");                     /* claims 5 */
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  idem_lease *l2 = tu_claim(fx->db, "s1");
  assert_int_equal(idem_complete(l1, "x", 1), IDEM_ELEASELOST); /* lost */

  idem_stats st = tu_stats(db);
  assert_int_equal(st.version, IDEM_STATS_VERSION);
  assert_int_equal(st.rows[IDEM_STATE_ABSENT], 0);
  assert_int_equal(st.rows[IDEM_STATE_PENDING], 2);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 1);
  assert_int_equal(st.rows[IDEM_STATE_FAILED], 1);
  assert_int_equal(st.rows[IDEM_STATE_POISONED], 1);
  assert_int_equal(st.leased, 1); /* p1's lease has expired, s1's is live */
  assert_int_equal(st.expired, 0);
  assert_true(st.db_bytes > 0);
  assert_int_equal(st.schema_version, 1);
  assert_int_equal(st.hits, 3);
  assert_int_equal(st.claims, 5);
  assert_int_equal(st.busy, 1);
  assert_int_equal(st.poisoned, 1);
  assert_int_equal(st.lost, 1);
  assert_int_equal(st.mismatches, 1);
  assert_int_equal(st.storage_errors, 0);

  st = tu_stats(fx->db);
  assert_int_equal(st.claims, 1);
  assert_int_equal(st.hits + st.busy + st.poisoned + st.lost + st.mismatches,
                   0);

  assert_int_equal(idem_complete(l2, "x", 1), IDEM_OK);
  idem_lease_free(l2);
  idem_lease_free(l1);
  idem_lease_free(lp);
  idem_answer_clear(&a);
  close_db(db);
}

/* --- Storage errors and the fail policy ---------------------------------- */

/* Another connection (an administrator's sqlite3 shell, say) holds the
 * write lock of the file until drop_write_lock(). */
static sqlite3 *hold_write_lock(const char *path) {
  sqlite3 *c = NULL;
  assert_int_equal(sqlite3_open_v2(path, &c, SQLITE_OPEN_READWRITE, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_exec(c, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                   SQLITE_OK);
  return c;
}

static void drop_write_lock(sqlite3 *c) {
  assert_int_equal(sqlite3_exec(c, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_close(c), SQLITE_OK);
}

/* The write lock is held by `raw`; when a begin waits for it, `raw`
 * finishes key "k" (as a completion by its holder would) and commits. */
struct finisher {
  sqlite3 *raw;
  int64_t wall;
  int calls;
};

static int finish_while_waiting(void *ctx, int count) {
  struct finisher *f = ctx;
  if (f->calls++ == 0) {
    char sql[256];
    snprintf(
        sql, sizeof sql,
        "UPDATE idem_keys SET state = %d, code = 0, result = 'done', "
        "owner = NULL, lease_boot = NULL, lease_until = NULL, "
        "owner_pid = NULL, updated_at = %lld WHERE key = CAST('k' AS BLOB); "
        "COMMIT",
        IDEM_STATE_COMPLETED, (long long)f->wall);
    assert_int_equal(sqlite3_exec(f->raw, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_changes(f->raw), 1);
  }
  return count < 100;
}

/* A completion that lands after a begin's read snapshot but before it gets
 * the write lock is what the begin answers: the snapshot showed a lease
 * past its TTL (claimable), but under the lock the row is read again and
 * found completed, so the begin serves the result, counts no attempt and
 * claims nothing. The begin's handle runs on a connection of the test's
 * own, whose busy handler lands the completion while the begin waits. */
static void test_completion_between_snapshot_and_lock(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "k");
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  sqlite3 *conn = NULL;
  assert_int_equal(
      sqlite3_open_v2(fx->path, &conn, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  idem_db *db2 = NULL;
  assert_int_equal(idem_open_db(&db2, conn, &fx->opts), IDEM_OK);
  struct finisher f = {hold_write_lock(fx->path),
                       tu_clock_now(&fx->clock, IDEM_CLOCK_WALL), 0};
  sqlite3_busy_handler(conn, finish_while_waiting, &f);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db2, "k", &a), IDEM_COMPLETED);
  assert_true(f.calls >= 1);
  assert_int_equal(a.result_len, 4);
  assert_memory_equal(a.result, "done", 4);
  assert_int_equal(a.attempts, 1);
  assert_null(a.lease);
  idem_answer_clear(&a);
  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  assert_int_equal(r.attempts, 1);
  idem_record_clear(&r);
  assert_int_equal(sqlite3_close(f.raw), SQLITE_OK);
  close_db(db2);
  assert_int_equal(sqlite3_close(conn), SQLITE_OK);
  idem_lease_free(l);
}

struct log_lines {
  int calls;
  int errors; /* calls at IDEM_LOG_ERROR */
  int bad;    /* empty messages or messages of more than one line */
};

static void log_cb(void *ctx, int level, const char *msg) {
  struct log_lines *l = ctx;
  l->calls++;
  if (level == IDEM_LOG_ERROR)
    l->errors++;
  if (msg == NULL || msg[0] == '\0' || strchr(msg, '\n') != NULL)
    l->bad++;
}

/* With the write lock held elsewhere past busy_timeout_ms, begin fails
 * closed by default: IDEM_EBUSY (its own code, not a generic I/O error),
 * no lease, nothing written, a message naming the file, a log line and a
 * storage error counted. Reads still work meanwhile (WAL), and once the
 * lock is gone the key is claimed as attempt 1. */
static void test_write_lock_fails_closed(void **state) {
  tu_fx *fx = fx_of(state);
  struct log_lines logs = {0, 0, 0};
  idem_options o = fx->opts;
  o.busy_timeout_ms = 50;
  o.log = log_cb;
  o.log_ctx = &logs;
  idem_db *db = open_with(fx, &o);
  tu_claim_complete(db, "done", "d");
  sqlite3 *lock = hold_write_lock(fx->path);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k", &a), IDEM_EBUSY);
  assert_null(a.lease);
  assert_non_null(strstr(idem_errmsg(db), "idem.db"));
  assert_true(logs.calls >= 1);
  assert_int_equal(logs.bad, 0);
  idem_stats st = tu_stats(db);
  assert_true(st.storage_errors >= 1);
  idem_record r = row_of(db, "done");
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  idem_record_clear(&r);
  drop_write_lock(lock);

  assert_absent(db, "k");
  assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 1);
  assert_int_equal(a.unguarded, 0);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  close_db(db);
}

/* Under IDEM_FAIL_OPEN the same storage error lets the job run, and says
 * so: IDEM_CLAIMED with `unguarded` set, logged as an error, and no row
 * protecting the run (seed weakness 3 made an explicit, visible policy). */
static void test_write_lock_fail_open(void **state) {
  tu_fx *fx = fx_of(state);
  struct log_lines logs = {0, 0, 0};
  idem_options o = fx->opts;
  o.busy_timeout_ms = 50;
  o.fail_policy = IDEM_FAIL_OPEN;
  o.log = log_cb;
  o.log_ctx = &logs;
  idem_db *db = open_with(fx, &o);
  sqlite3 *lock = hold_write_lock(fx->path);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
  assert_non_null(a.lease);
  assert_true(a.unguarded != 0);
  assert_true(logs.errors >= 1);
  assert_int_equal(logs.bad, 0);
  drop_write_lock(lock);
  assert_absent(db, "k");
  idem_lease_free(a.lease);

  assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.unguarded, 0);
  assert_int_equal(a.attempts, 1);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  close_db(db);
}

/* A completion that cannot get the write lock is IDEM_EBUSY, stores
 * nothing and keeps the lease, so the caller can simply call again. */
static void test_complete_retried_after_busy(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.busy_timeout_ms = 50;
  idem_db *db = open_with(fx, &o);
  idem_lease *l = tu_claim(db, "k");
  sqlite3 *lock = hold_write_lock(fx->path);
  assert_int_equal(idem_complete(l, "v", 1), IDEM_EBUSY);
  assert_int_equal(idem_lease_lost(l), 0);
  drop_write_lock(lock);
  idem_record r = row_of(db, "k");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);
  assert_int_equal(idem_complete(l, "v", 1), IDEM_OK);
  idem_lease_free(l);
  tu_assert_completed(db, "k", "v");
  close_db(db);
}

/* The log callback hears about poisoned keys and about leases a heartbeat
 * finds lost, one line each. */
static void test_log_events(void **state) {
  tu_fx *fx = fx_of(state);
  struct log_lines logs = {0, 0, 0};
  idem_options o = fx->opts;
  o.max_attempts = 1;
  o.log = log_cb;
  o.log_ctx = &logs;
  idem_db *db = open_with(fx, &o);
  idem_lease *l = tu_claim(db, "p");
  assert_int_equal(idem_release(l, NULL), IDEM_OK);
  idem_lease_free(l);
  int before = logs.calls;
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "p", &a), IDEM_POISONED);
  assert_true(logs.calls > before);

  l = tu_claim(db, "s");
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  idem_lease *l2 = tu_claim(fx->db, "s");
  before = logs.calls;
  unsigned lost = 0;
  assert_int_equal(idem_heartbeat(db, &lost), IDEM_OK);
  assert_int_equal(lost, 1);
  assert_true(logs.calls > before);
  assert_int_equal(logs.bad, 0);
  assert_int_equal(idem_complete(l, "x", 1), IDEM_ELEASELOST);
  assert_int_equal(idem_complete(l2, "y", 1), IDEM_OK);
  idem_lease_free(l2);
  idem_lease_free(l);
  idem_answer_clear(&a);
  close_db(db);
}

/* --- idem_run ------------------------------------------------------------ */

struct job_ctx {
  int calls;
  int verdict; /* IDEM_JOB_* to return */
  const char *result;
  int code;
  uint32_t attempt_seen;
  uint64_t fence_seen;
  int set_rc;
  /* For the lease-lost job: */
  tu_fx *fx;
  idem_db *thief;
  idem_lease *stolen;
  int steal_rc;
};

static int job(void *ctx, idem_lease *lease) {
  struct job_ctx *j = ctx;
  j->calls++;
  j->attempt_seen = idem_lease_attempt(lease);
  j->fence_seen = idem_lease_fence(lease);
  if (j->result != NULL)
    j->set_rc =
        idem_lease_set_result(lease, j->result, strlen(j->result), j->code);
  if (j->thief != NULL) {
    /* Stall past the TTL and let another handle take the key over. */
    idem_answer a = IDEM_ANSWER_INIT;
    tu_clock_advance_lease(&j->fx->clock, TTL + 1);
    j->steal_rc = idem_begin(j->thief, "k", 1, NULL, &a);
    j->stolen = a.lease;
    idem_answer_clear(&a);
  }
  return j->verdict;
}

/* idem_run with a job that succeeds: the key is completed with the result
 * the job set, ran is 1, no lease is left in the answer; a second run
 * serves the cached result without calling the job (ran 0). The first
 * answer is the one a later begin gets: code 0 (a completion stores none,
 * whatever code the job set) and the time of the completion. */
static void test_run_done_then_cached(void **state) {
  tu_fx *fx = fx_of(state);
  struct job_ctx j = {0};
  j.verdict = IDEM_JOB_DONE;
  j.result = "job-result";
  j.code = 7;
  idem_answer a = IDEM_ANSWER_INIT;
  int64_t done_at = tu_clock_now(&fx->clock, IDEM_CLOCK_WALL);
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job, &j, &a), IDEM_COMPLETED);
  assert_int_equal(a.status, IDEM_COMPLETED);
  assert_int_equal(a.ran, 1);
  assert_null(a.lease);
  assert_int_equal(a.result_len, 10);
  assert_memory_equal(a.result, "job-result", 11);
  assert_int_equal(a.code, 0);
  assert_int_equal(a.finished_at, done_at);
  assert_int_equal(j.calls, 1);
  assert_int_equal(j.set_rc, IDEM_OK);
  assert_int_equal(j.attempt_seen, 1);
  assert_true(j.fence_seen >= 1);
  idem_answer_clear(&a);

  tu_clock_advance(&fx->clock, 1000);
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job, &j, &a), IDEM_COMPLETED);
  assert_int_equal(a.ran, 0);
  assert_int_equal(j.calls, 1);
  assert_memory_equal(a.result, "job-result", 11);
  assert_int_equal(a.code, 0);
  assert_int_equal(a.finished_at, done_at);
  idem_answer_clear(&a);
  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  assert_int_equal(r.fence, j.fence_seen);
  idem_record_clear(&r);
}

/* A job that asks for a retry releases the key: IDEM_RELEASED, the attempt
 * counted, and the next run claims attempt 2. */
static void test_run_retry_releases(void **state) {
  tu_fx *fx = fx_of(state);
  struct job_ctx j = {0};
  j.verdict = IDEM_JOB_RETRY;
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job, &j, &a), IDEM_RELEASED);
  assert_int_equal(a.status, IDEM_RELEASED);
  assert_int_equal(a.ran, 1);
  assert_null(a.lease);
  idem_answer_clear(&a);
  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  assert_int_equal(r.attempts, 1);
  assert_string_equal(r.owner, "");
  idem_record_clear(&r);

  j.verdict = IDEM_JOB_DONE;
  j.result = "second";
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job, &j, &a), IDEM_COMPLETED);
  assert_int_equal(a.ran, 1);
  assert_int_equal(a.attempts, 2);
  assert_int_equal(j.attempt_seen, 2);
  assert_int_equal(j.calls, 2);
  idem_answer_clear(&a);
}

/* A job that fails terminally stores its result and code: IDEM_FAILED, and
 * later runs serve the failure without calling the job. */
static void test_run_fail(void **state) {
  tu_fx *fx = fx_of(state);
  struct job_ctx j = {0};
  j.verdict = IDEM_JOB_FAIL;
  j.result = "bad input";
  j.code = 7;
  idem_answer a = IDEM_ANSWER_INIT;
  int64_t failed_at = tu_clock_now(&fx->clock, IDEM_CLOCK_WALL);
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job, &j, &a), IDEM_FAILED);
  assert_int_equal(a.ran, 1);
  assert_int_equal(a.code, 7);
  assert_int_equal(a.finished_at, failed_at);
  assert_memory_equal(a.result, "bad input", 10);
  assert_null(a.lease);
  idem_answer_clear(&a);
  tu_clock_advance(&fx->clock, 1000);
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job, &j, &a), IDEM_FAILED);
  assert_int_equal(a.ran, 0);
  assert_int_equal(a.code, 7);
  assert_int_equal(a.finished_at, failed_at);
  assert_int_equal(j.calls, 1);
  idem_answer_clear(&a);
}

/* Without a wait, idem_run answers BUSY for a key leased elsewhere and
 * POISONED for a spent key, and calls the job in neither case. */
static void test_run_busy_and_poisoned(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 1;
  idem_db *db = open_with(fx, &o);
  struct job_ctx j = {0};
  j.verdict = IDEM_JOB_RETRY;
  idem_answer a = IDEM_ANSWER_INIT;
  idem_lease *l = tu_claim(fx->db, "busy");
  tu_clock_advance_lease(&fx->clock, 100);
  assert_int_equal(idem_run(db, "busy", 4, NULL, job, &j, &a), IDEM_BUSY);
  assert_int_equal(a.lease_ms, TTL - 100);
  assert_int_equal(a.ran, 0);
  assert_null(a.lease);
  assert_int_equal(j.calls, 0);
  idem_answer_clear(&a);

  assert_int_equal(idem_run(db, "p", 1, NULL, job, &j, &a), IDEM_RELEASED);
  idem_answer_clear(&a);
  assert_int_equal(idem_run(db, "p", 1, NULL, job, &j, &a), IDEM_POISONED);
  assert_int_equal(a.ran, 0);
  assert_null(a.lease);
  assert_int_equal(j.calls, 1);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(l, "x", 1), IDEM_OK);
  idem_lease_free(l);
  close_db(db);
}

/* If the job outlives its lease and another owner takes the key over, the
 * job's result is refused: idem_run answers IDEM_ELEASELOST and the row is
 * the new owner's. */
static void test_run_lease_lost(void **state) {
  tu_fx *fx = fx_of(state);
  struct job_ctx j = {0};
  j.verdict = IDEM_JOB_DONE;
  j.result = "stale";
  j.fx = fx;
  j.thief = open_with(fx, &fx->opts);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job, &j, &a),
                   IDEM_ELEASELOST);
  assert_null(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(j.steal_rc, IDEM_CLAIMED);
  assert_non_null(j.stolen);
  idem_record r = row_of(fx->db, "k");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  assert_int_equal(r.attempts, 2);
  assert_int_equal(r.fence, idem_lease_fence(j.stolen));
  idem_record_clear(&r);
  assert_int_equal(idem_complete(j.stolen, "thief", 5), IDEM_OK);
  idem_lease_free(j.stolen);
  tu_assert_completed(fx->db, "k", "thief");
  close_db(j.thief);
}

struct holder {
  idem_lease *lease;
  int complete; /* 1: complete with "winner"; 0: release */
  int rc;
  idem_db *waiter; /* the waiter's handle, whose busy answers are counted */
  uint64_t busy0;  /* its count before the waiter began */
};

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static uint64_t busy_count(idem_db *db) {
  idem_stats st = IDEM_STATS_INIT;
  return idem_stats_get(db, &st) == IDEM_OK ? st.busy : 0;
}

/* Finishes only once the waiter has been answered BUSY at least once, so
 * that it is waiting, not arriving after the finish (up to 20 s). */
static void *holder_main(void *arg) {
  struct holder *h = arg;
  for (int i = 0; i < 20000 && busy_count(h->waiter) == h->busy0; i++)
    sleep_ms(1);
  h->rc = h->complete ? idem_complete(h->lease, "winner", 6)
                      : idem_release(h->lease, NULL);
  idem_lease_free(h->lease);
  return NULL;
}

/* idem_run with wait_ms waits for a key another owner is running and
 * returns the winner's result without running the job; if the winner
 * releases instead, the waiter claims and runs the job itself. Both with
 * the holder on another handle and on the same handle (woken early, and
 * with a wait without limit). */
static void test_run_waits_for_winner(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *other = open_with(fx, &fx->opts);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  for (int same = 0; same < 2; same++) {
    bo.wait_ms = same ? -1 : 20000; /* -1: no limit */
    for (int complete = 1; complete >= 0; complete--) {
      char key[8];
      snprintf(key, sizeof key, "w%d%d", same, complete);
      idem_db *holder_db = same ? fx->db : other;
      struct holder h = {tu_claim(holder_db, key), complete, 1, fx->db,
                         busy_count(fx->db)};
      pthread_t t;
      assert_int_equal(pthread_create(&t, NULL, holder_main, &h), 0);
      struct job_ctx j = {0};
      j.verdict = IDEM_JOB_DONE;
      j.result = "mine";
      idem_answer a = IDEM_ANSWER_INIT;
      int rc = idem_run(fx->db, key, strlen(key), &bo, job, &j, &a);
      assert_int_equal(pthread_join(t, NULL), 0);
      assert_int_equal(h.rc, IDEM_OK);
      assert_true(busy_count(fx->db) > h.busy0);
      assert_int_equal(rc, IDEM_COMPLETED);
      assert_null(a.lease);
      if (complete) {
        assert_int_equal(a.ran, 0);
        assert_int_equal(j.calls, 0);
        assert_memory_equal(a.result, "winner", 7);
      } else {
        assert_int_equal(a.ran, 1);
        assert_int_equal(j.calls, 1);
        assert_int_equal(a.attempts, 2);
        assert_memory_equal(a.result, "mine", 5);
      }
      idem_answer_clear(&a);
    }
  }
  close_db(other);
}

/* idem_begin itself waits too: it answers the winner's COMPLETED, or
 * CLAIMED (attempt 2) if the winner released. */
static void test_begin_waits(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *other = open_with(fx, &fx->opts);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.wait_ms = 20000;
  for (int complete = 1; complete >= 0; complete--) {
    const char *key = complete ? "wc" : "wr";
    struct holder h = {tu_claim(other, key), complete, 1, fx->db,
                       busy_count(fx->db)};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, holder_main, &h), 0);
    idem_answer a = IDEM_ANSWER_INIT;
    int rc = idem_begin(fx->db, key, 2, &bo, &a);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(h.rc, IDEM_OK);
    assert_true(busy_count(fx->db) > h.busy0);
    if (complete) {
      assert_int_equal(rc, IDEM_COMPLETED);
      assert_memory_equal(a.result, "winner", 7);
    } else {
      assert_int_equal(rc, IDEM_CLAIMED);
      assert_int_equal(a.attempts, 2);
      assert_int_equal(idem_complete(a.lease, "mine", 4), IDEM_OK);
      idem_lease_free(a.lease);
    }
    idem_answer_clear(&a);
  }
  close_db(other);
}

static int64_t real_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A wait that runs out answers BUSY, about wait_ms later, without running
 * the job. Real clocks here: a wait is real time. */
static void test_run_wait_times_out(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = tu_options(NULL);
  o.ttl_ms = 60000;
  idem_db *a_db = open_with(fx, &o);
  idem_db *b_db = open_with(fx, &o);
  idem_lease *l = tu_claim(b_db, "k");
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.wait_ms = 150;
  struct job_ctx j = {0};
  idem_answer a = IDEM_ANSWER_INIT;
  int64_t t0 = real_ms();
  assert_int_equal(idem_run(a_db, "k", 1, &bo, job, &j, &a), IDEM_BUSY);
  int64_t elapsed = real_ms() - t0;
  assert_true(elapsed >= 100);
  assert_true(elapsed < 5000);
  assert_true(a.lease_ms > 0 && a.lease_ms <= 60000);
  assert_int_equal(j.calls, 0);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(l, "x", 1), IDEM_OK);
  idem_lease_free(l);
  close_db(a_db);
  close_db(b_db);
}

/* --- Files and handles --------------------------------------------------- */

/* Rows outlive the handle: after close and reopen, a completed key serves
 * its result, a failed key its failure, a released key is claimed as
 * attempt 2 with a higher fence. */
static void test_reopen_finds_rows(void **state) {
  tu_fx *fx = fx_of(state);
  tu_claim_complete(fx->db, "a", "alpha");
  idem_lease *l = tu_claim(fx->db, "b");
  assert_int_equal(idem_fail(l, 11, "beta", 4), IDEM_OK);
  idem_lease_free(l);
  l = tu_claim(fx->db, "c");
  uint64_t fc = idem_lease_fence(l);
  assert_int_equal(idem_release(l, NULL), IDEM_OK);
  idem_lease_free(l);
  close_db(fx->db);
  fx->db = NULL;

  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(fx->db, "a", "alpha");
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "b", &a), IDEM_FAILED);
  assert_int_equal(a.code, 11);
  assert_memory_equal(a.result, "beta", 5);
  assert_int_equal(tu_begin(fx->db, "c", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > fc);
  assert_int_equal(idem_complete(a.lease, "gamma", 5), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
}

/* Two handles in one process are two owners on one file: each sees the
 * other's rows and leases at once. */
static void test_two_handles_share_rows(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db2 = open_with(fx, &fx->opts);
  idem_answer a = IDEM_ANSWER_INIT;
  idem_lease *l = tu_claim(fx->db, "k");
  assert_int_equal(tu_begin(db2, "k", &a), IDEM_BUSY);
  idem_record r = row_of(db2, "k");
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);
  assert_int_equal(idem_complete(l, "shared", 6), IDEM_OK);
  idem_lease_free(l);
  tu_assert_completed(db2, "k", "shared");
  tu_claim_complete(db2, "j", "from-2");
  tu_assert_completed(fx->db, "j", "from-2");
  idem_stats st = tu_stats(fx->db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 2);
  idem_answer_clear(&a);
  close_db(db2);
}

#define TO(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, tu_fx_setup_open, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      TO(test_claim_fresh),
      TO(test_busy_reports_time_left),
      TO(test_complete_serves_cached),
      TO(test_fail_serves_failure),
      TO(test_release_claimable_now),
      TO(test_ttl_expiry_reclaims),
      TO(test_poison_at_max_attempts),
      TO(test_on_poison_after_commit),
      TO(test_unlimited_attempts),
      TO(test_reset_restarts_attempts),
      TO(test_reset_revokes_live_lease),
      TO(test_fence_survives_purge_and_reopen),
      TO(test_stale_owner_rejected),
      TO(test_heartbeat_reports_takeover),
      TO(test_heartbeat_never_revives),
      TO(test_heartbeat_extends_live_lease),
      TO(test_heartbeat_refreshes_every_lease),
      TO(test_expired_not_retaken_completes),
      TO(test_complete_twice_is_misuse),
      TO(test_other_boot_lease_expired),
      TO(test_other_boot_lease_reported_expired),
      TO(test_fingerprint_mismatch),
      TO(test_fingerprint_absent_not_checked),
      TO(test_retention_expiry),
      TO(test_clocks_are_separate),
      TO(test_purge_selects_rows),
      TO(test_purge_limit_and_batches),
      TO(test_retention_zero_forever),
      TO(test_get_record_fields),
      TO(test_list_filter_and_paging),
      TO(test_reset_state),
      TO(test_stats_counts),
      TO(test_write_lock_fails_closed),
      TO(test_completion_between_snapshot_and_lock),
      TO(test_write_lock_fail_open),
      TO(test_complete_retried_after_busy),
      TO(test_log_events),
      TO(test_run_done_then_cached),
      TO(test_run_retry_releases),
      TO(test_run_fail),
      TO(test_run_busy_and_poisoned),
      TO(test_run_lease_lost),
      TO(test_run_waits_for_winner),
      TO(test_begin_waits),
      TO(test_run_wait_times_out),
      TO(test_reopen_finds_rows),
      TO(test_two_handles_share_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
