/* SPDX-License-Identifier: MIT */
/*
 * test_storage.c - storage bounded by caps, for small devices.
 *
 * max_rows and max_bytes bound the completed and failed rows; idem_purge()
 * evicts the rows whose retention ends soonest, then those kept forever,
 * oldest first, and never a pending or poisoned row. The soak test runs
 * 200,000 distinct keys through a capped database and checks that the
 * files on disk stop growing.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static idem_db *open_capped(tu_fx *fx, int64_t retention_ms, uint64_t rows,
                            uint64_t bytes) {
  idem_options o = fx->opts;
  o.retention_ms = retention_ms;
  o.max_rows = rows;
  o.max_bytes = bytes;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  return db;
}

static void complete_n(tu_fx *fx, idem_db *db, const char *prefix, int n,
                       size_t result_len) {
  char *result = malloc(result_len + 1);
  assert_non_null(result);
  memset(result, 'r', result_len);
  result[result_len] = '\0';
  for (int i = 0; i < n; i++) {
    char key[64];
    snprintf(key, sizeof key, "%s-%03d", prefix, i);
    tu_claim_complete(db, key, result);
    /* Each row finishes a millisecond after the last: an order to evict
     * in. */
    tu_clock_advance(&fx->clock, 1);
  }
  free(result);
}

static int state_of(idem_db *db, const char *key) {
  idem_record r = IDEM_RECORD_INIT;
  int rc = tu_get(db, key, &r);
  int state = rc == IDEM_OK ? r.state : IDEM_STATE_ABSENT;
  idem_record_clear(&r);
  return state;
}

/* Over max_rows, the rows whose retention ends soonest go first; pending
 * and poisoned rows neither count nor go. */
static void test_max_rows_evicts_oldest(void **state) {
  tu_fx *fx = *state;
  idem_db *db = open_capped(fx, 3600000, 10, 0);
  idem_lease *held = tu_claim(db, "held");
  complete_n(fx, db, "k", 25, 8);

  uint64_t n = 0;
  assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
  assert_int_equal(n, 15);
  idem_stats st = tu_stats(db);
  assert_int_equal(st.evicted, 15);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 10);
  assert_int_equal(st.rows[IDEM_STATE_PENDING], 1);
  for (int i = 0; i < 25; i++) {
    char key[16];
    snprintf(key, sizeof key, "k-%03d", i);
    assert_int_equal(state_of(db, key),
                     i < 15 ? IDEM_STATE_ABSENT : IDEM_STATE_COMPLETED);
  }
  assert_int_equal(state_of(db, "held"), IDEM_STATE_PENDING);

  /* Under the caps, a purge evicts nothing. */
  assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
  assert_int_equal(n, 0);

  /* An evicted key runs again, above every fence it had. */
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k-000", &a), IDEM_CLAIMED);
  assert_true(a.fence > 1);
  assert_int_equal(a.attempts, 1);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(held, "h", 1), IDEM_OK);
  idem_lease_free(held);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Over max_bytes, rows go oldest first until the stored results fit. */
static void test_max_bytes(void **state) {
  tu_fx *fx = *state;
  idem_db *db = open_capped(fx, 3600000, 0, 1000);
  complete_n(fx, db, "b", 10, 300);
  uint64_t n = 0;
  assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
  assert_int_equal(n, 7);
  for (int i = 0; i < 10; i++) {
    char key[16];
    snprintf(key, sizeof key, "b-%03d", i);
    assert_int_equal(state_of(db, key),
                     i < 7 ? IDEM_STATE_ABSENT : IDEM_STATE_COMPLETED);
  }
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Rows kept forever are evicted oldest first, after every row that would
 * expire; failed rows count like completed ones; poisoned rows stay. */
static void test_forever_rows_go_last_oldest_first(void **state) {
  tu_fx *fx = *state;
  idem_db *forever = open_capped(fx, 0, 4, 0);
  complete_n(fx, forever, "f", 3, 4);
  idem_db *expiring = open_capped(fx, 3600000, 4, 0);
  complete_n(fx, expiring, "e", 2, 4);
  idem_lease *l = tu_claim(expiring, "failed");
  assert_int_equal(idem_fail(l, 3, "no", 2), IDEM_OK);
  idem_lease_free(l);

  /* A poisoned key: one attempt allowed, released, then refused. */
  idem_options o = fx->opts;
  o.max_attempts = 1;
  idem_db *one = NULL;
  assert_int_equal(tu_open(&one, fx->path, &o), IDEM_OK);
  l = tu_claim(one, "poison");
  assert_int_equal(idem_release(l, NULL), IDEM_OK);
  idem_lease_free(l);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(one, "poison", &a), IDEM_POISONED);
  idem_answer_clear(&a);

  /* 6 terminal rows, cap 4: the two expiring completed rows go first
   * (their retention ends soonest), and no forever row. */
  uint64_t n = 0;
  assert_int_equal(idem_purge(forever, 0, &n), IDEM_OK);
  assert_int_equal(n, 2);
  assert_int_equal(state_of(forever, "e-000"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(forever, "e-001"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(forever, "failed"), IDEM_STATE_FAILED);
  assert_int_equal(state_of(forever, "f-000"), IDEM_STATE_COMPLETED);

  /* Cap 2: the failed row (expiring) goes, then the oldest forever row. */
  idem_db *two = open_capped(fx, 0, 2, 0);
  assert_int_equal(idem_purge(two, 0, &n), IDEM_OK);
  assert_int_equal(n, 2);
  assert_int_equal(state_of(two, "failed"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(two, "f-000"), IDEM_STATE_ABSENT);
  assert_int_equal(state_of(two, "f-001"), IDEM_STATE_COMPLETED);
  assert_int_equal(state_of(two, "f-002"), IDEM_STATE_COMPLETED);
  assert_int_equal(state_of(two, "poison"), IDEM_STATE_POISONED);

  assert_int_equal(idem_close(two), IDEM_OK);
  assert_int_equal(idem_close(one), IDEM_OK);
  assert_int_equal(idem_close(expiring), IDEM_OK);
  assert_int_equal(idem_close(forever), IDEM_OK);
}

static int64_t file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static int64_t disk_bytes(const char *path) {
  char *wal = tu_suffix(path, "-wal");
  int64_t n = file_size(path) + file_size(wal);
  free(wal);
  return n;
}

/* 200,000 distinct keys through a database capped at 1,000 rows, purged
 * every 2,000 keys: the file and its WAL must stop growing. */
static void test_soak_stays_bounded(void **state) {
  tu_fx *fx = *state;
  enum { KEYS = 200000, EVERY = 2000, CAP = 1000 };
  idem_db *db = open_capped(fx, 0, CAP, 0);
  char result[200];
  memset(result, 'x', sizeof result - 1);
  result[sizeof result - 1] = '\0';
  int64_t early = 0, peak = 0;
  for (int i = 0; i < KEYS; i++) {
    char key[32];
    snprintf(key, sizeof key, "soak-key-%07d", i);
    idem_answer a = IDEM_ANSWER_INIT;
    assert_int_equal(idem_begin(db, key, strlen(key), NULL, &a), IDEM_CLAIMED);
    assert_int_equal(idem_complete(a.lease, result, sizeof result - 1),
                     IDEM_OK);
    idem_lease_free(a.lease);
    idem_answer_clear(&a);
    if ((i + 1) % EVERY == 0) {
      uint64_t n;
      assert_int_equal(idem_purge(db, 0, &n), IDEM_OK);
      int64_t now = disk_bytes(fx->path);
      if (i + 1 == KEYS / 10)
        early = now;
      if (i + 1 > KEYS / 10 && now > peak)
        peak = now;
    }
  }
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], CAP);
  assert_int_equal(st.evicted, KEYS - CAP);
  print_message("on disk after %d keys: %lld bytes; peak after: %lld\n",
                KEYS / 10, (long long)early, (long long)peak);
  /* The WAL may grow to its size limit between checkpoints, and the file
   * by the pages of one purge interval; not with the number of keys. */
  assert_true(peak <= early + 2 * 1024 * 1024);
  assert_true(peak < 16 * 1024 * 1024);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A writer that never pauses, with the heartbeat thread running and no
 * purge: the checkpoints must still keep the WAL from growing with the
 * number of writes. */
static void test_wal_stays_bounded(void **state) {
  tu_fx *fx = *state;
  idem_options o = fx->opts;
  o.heartbeat_ms = 1000; /* the thread, which starts with the first lease */
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  idem_lease *held = tu_claim(db, "held");
  char *wal = tu_suffix(fx->path, "-wal");
  int64_t peak = 0;
  for (int i = 0; i < 20000; i++) {
    char key[32];
    snprintf(key, sizeof key, "wal-%06d", i);
    tu_claim_complete(db, key, "a result of some length to fill pages");
    int64_t n = file_size(wal);
    if (n > peak)
      peak = n;
  }
  print_message("peak WAL: %lld bytes\n", (long long)peak);
  /* 20,000 cycles write some 40,000 frames (160 MB) if nothing restarts
   * the WAL; the inline fallback caps it near 4,000 pages. */
  assert_true(peak < 24 * 1024 * 1024);
  free(wal);
  assert_int_equal(idem_complete(held, "h", 1), IDEM_OK);
  idem_lease_free(held);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* With the argument "soak", only the soak test runs: it takes long enough
 * to have its own CTest entry, kept out of the sanitizer builds. */
int main(int argc, char **argv) {
  const struct CMUnitTest caps[] = {
      cmocka_unit_test_setup_teardown(test_max_rows_evicts_oldest, tu_fx_setup,
                                      tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_max_bytes, tu_fx_setup,
                                      tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_forever_rows_go_last_oldest_first,
                                      tu_fx_setup, tu_fx_teardown),
  };
  const struct CMUnitTest soak[] = {
      cmocka_unit_test_setup_teardown(test_soak_stays_bounded, tu_fx_setup,
                                      tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_wal_stays_bounded, tu_fx_setup,
                                      tu_fx_teardown),
  };
  if (argc > 1 && strcmp(argv[1], "soak") == 0)
    return cmocka_run_group_tests(soak, NULL, NULL);
  return cmocka_run_group_tests(caps, NULL, NULL);
}
