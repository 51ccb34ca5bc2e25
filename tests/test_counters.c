/* SPDX-License-Identifier: MIT */
/*
 * test_counters.c - the counters of events kept in the database
 * (idem_stats.total_evictions, total_poisonings, total_takeovers).
 *
 * They are what a monitor scrapes from any process, so each is checked on a
 * second handle of the same file and after reopening, not only on the
 * handle that caused the event. Each is counted in the transaction of its
 * event: a poisoning whose commit fails is not counted. A caller compiled
 * against version 1 of idem_stats has the smaller struct, and nothing past
 * it may be written.
 */
#include "faultvfs.h"
#include "testutil.h"

#include <sqlite3.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define TTL 10000 /* tu_options() */

static tu_fx *fx_of(void **state) {
  return *state;
}

static idem_db *open_other(tu_fx *fx, const idem_options *o) {
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, o ? o : &fx->opts), IDEM_OK);
  return db;
}

static void assert_totals(idem_db *db, uint64_t evictions, uint64_t poisonings,
                          uint64_t takeovers) {
  idem_stats s = tu_stats(db);
  assert_int_equal(s.version, IDEM_STATS_VERSION);
  assert_int_equal(s.total_evictions, evictions);
  assert_int_equal(s.total_poisonings, poisonings);
  assert_int_equal(s.total_takeovers, takeovers);
}

/* Claims `key` and releases it: pending, with no owner. */
static void released(idem_db *db, const char *key) {
  idem_lease *l = tu_claim(db, key);
  assert_int_equal(idem_release(l, "exit status 3"), IDEM_OK);
  idem_lease_free(l);
}

/* A new file counts nothing; claims, completions, hits, releases and
 * re-claims of a released key are not events. */
static void test_ordinary_calls_count_nothing(void **state) {
  tu_fx *fx = fx_of(state);
  assert_totals(fx->db, 0, 0, 0);
  tu_claim_complete(fx->db, "done", "r");
  tu_assert_completed(fx->db, "done", "r");
  released(fx->db, "again");
  idem_lease *l = tu_claim(fx->db, "again");
  assert_int_equal(idem_complete(l, "x", 1), IDEM_OK);
  idem_lease_free(l);
  assert_totals(fx->db, 0, 0, 0);
  /* A database written before the counters existed has no rows for them:
   * they read as 0, and the first event makes its row. */
  int64_t rows = -1;
  assert_int_equal(tu_sql_int(fx->path,
                              "SELECT count(*) FROM idem_meta WHERE name IN "
                              "('evictions', 'poisonings', 'takeovers')",
                              &rows),
                   SQLITE_OK);
  assert_int_equal(rows, 0);
}

/* Each event is counted once, seen by another handle of the file, and
 * kept across reopening. */
static void test_events_seen_everywhere(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.max_attempts = 2;
  o.max_rows = 2;
  idem_db *a = open_other(fx, &o);
  idem_db *b = open_other(fx, NULL);

  /* Takeovers: a lease that expired, taken by a claim of this handle and
   * then of the other. */
  idem_lease *first = tu_claim(a, "expires");
  tu_clock_advance(&fx->clock, TTL + 1);
  idem_lease *second = tu_claim(a, "expires");
  assert_totals(b, 0, 0, 1);
  tu_clock_advance(&fx->clock, TTL + 1);
  idem_lease *third = tu_claim(b, "expires");
  assert_totals(a, 0, 0, 2);
  assert_int_equal(idem_complete(third, "t", 1), IDEM_OK);
  idem_lease_free(first);
  idem_lease_free(second);
  idem_lease_free(third);

  /* A poisoning: two claims spent, the third begin poisons; begins after
   * it only answer IDEM_POISONED and count nothing more. */
  released(a, "poison");
  released(a, "poison");
  idem_answer ans = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(a, "poison", &ans), IDEM_POISONED);
  assert_int_equal(tu_begin(a, "poison", &ans), IDEM_POISONED);
  assert_int_equal(tu_begin(b, "poison", &ans), IDEM_POISONED);
  idem_answer_clear(&ans);
  assert_totals(b, 0, 1, 2);

  /* Evictions: four finished rows (with "expires") under max_rows 2. */
  tu_claim_complete(a, "e1", "1");
  tu_clock_advance(&fx->clock, 1);
  tu_claim_complete(a, "e2", "2");
  tu_clock_advance(&fx->clock, 1);
  tu_claim_complete(a, "e3", "3");
  uint64_t n = 0;
  assert_int_equal(idem_purge(a, 0, &n), IDEM_OK);
  assert_int_equal(n, 2);
  assert_int_equal(tu_stats(a).evicted, 2);
  assert_totals(b, 2, 1, 2);
  /* The handle's own count is its own; the database's is everyone's. */
  assert_int_equal(tu_stats(b).evicted, 0);
  assert_int_equal(idem_purge(a, 0, &n), IDEM_OK);
  assert_int_equal(n, 0);
  assert_totals(b, 2, 1, 2);

  assert_int_equal(idem_close(a), IDEM_OK);
  assert_int_equal(idem_close(b), IDEM_OK);
  idem_db *c = open_other(fx, NULL);
  assert_totals(c, 2, 1, 2);
  assert_int_equal(idem_close(c), IDEM_OK);
  /* Read-only handles read them too. */
  o = fx->opts;
  o.flags |= IDEM_OPEN_READONLY;
  c = open_other(fx, &o);
  assert_totals(c, 2, 1, 2);
  assert_int_equal(idem_close(c), IDEM_OK);
}

/* A poisoning whose transaction fails to commit did not happen: neither
 * the row nor the count changed. */
static void test_rolled_back_poisoning_not_counted(void **state) {
  tu_fx *fx = fx_of(state);
  assert_int_equal(fv_register(), 0);
  char *uri = fv_uri(fx->path);
  assert_non_null(uri);
  idem_options o = fx->opts;
  o.max_attempts = 1;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, uri, &o), IDEM_OK);
  free(uri);
  released(db, "k");
  idem_answer ans = IDEM_ANSWER_INIT;
  fv_arm(0, SQLITE_IOERR_WRITE, FV_STICKY);
  assert_int_equal(tu_begin(db, "k", &ans), IDEM_EIO);
  assert_true(fv_fired());
  fv_disarm();
  idem_db *plain = open_other(fx, NULL);
  assert_totals(plain, 0, 0, 0);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(plain, "k", &r), IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);
  /* Called again once the disk is well: poisoned, and counted once. */
  assert_int_equal(tu_begin(db, "k", &ans), IDEM_POISONED);
  idem_answer_clear(&ans);
  assert_totals(plain, 0, 1, 0);
  /* A begin whose first try under the lock fails goes on to a second
   * (lease.c): the poisoning of the try rolled back is not counted. */
  released(db, "k2");
  fv_arm(0, SQLITE_IOERR_WRITE, FV_ONCE);
  assert_int_equal(tu_begin(db, "k2", &ans), IDEM_POISONED);
  assert_true(fv_fired());
  fv_disarm();
  idem_answer_clear(&ans);
  assert_totals(plain, 0, 2, 0);
  assert_int_equal(idem_close(plain), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A caller compiled against version 1 of idem_stats passes the smaller
 * struct: it gets its fields, and not one byte after them is written. */
typedef struct stats_v1 {
  unsigned version;
  uint64_t rows[5];
  uint64_t leased;
  uint64_t expired;
  int64_t db_bytes;
  int schema_version;
  uint64_t hits, claims, busy, poisoned, lost, mismatches, storage_errors;
  uint64_t evicted;
} stats_v1;

static void test_version_1_caller(void **state) {
  tu_fx *fx = fx_of(state);
  assert_int_equal(sizeof(stats_v1), offsetof(idem_stats, total_evictions));
  tu_claim_complete(fx->db, "k", "r");
  /* Something for the version-2 fields to hold, were they written. */
  idem_lease *l = tu_claim(fx->db, "t");
  tu_clock_advance(&fx->clock, TTL + 1);
  idem_lease *l2 = tu_claim(fx->db, "t");
  idem_lease_free(l);
  idem_lease_free(l2);

  union {
    stats_v1 v1;
    idem_stats v2;
    unsigned char bytes[sizeof(idem_stats) + 64];
  } u;
  memset(&u, 0xA5, sizeof u);
  u.v1.version = 1;
  assert_int_equal(idem_stats_get(fx->db, (idem_stats *)&u), IDEM_OK);
  assert_int_equal(u.v1.version, 1);
  assert_int_equal(u.v1.rows[IDEM_STATE_COMPLETED], 1);
  assert_int_equal(u.v1.rows[IDEM_STATE_PENDING], 1);
  assert_int_equal(u.v1.rows[IDEM_STATE_ABSENT], 0);
  assert_int_equal(u.v1.claims, 3);
  assert_int_equal(u.v1.evicted, 0);
  assert_true(u.v1.schema_version >= 1);
  for (size_t i = sizeof(stats_v1); i < sizeof u.bytes; i++)
    if (u.bytes[i] != 0xA5)
      fail_msg("byte %zu past a version-1 idem_stats was written", i);

  /* Version 2 gets the whole struct. */
  idem_stats s = tu_stats(fx->db);
  assert_int_equal(s.version, 2);
  assert_int_equal(s.total_takeovers, 1);

  /* A version this library does not know, or none, is refused untouched. */
  static const unsigned refused[] = {0, IDEM_STATS_VERSION + 1};
  for (size_t k = 0; k < sizeof refused / sizeof *refused; k++) {
    unsigned v = refused[k];
    memset(&u, 0xA5, sizeof u);
    u.v1.version = v;
    assert_int_equal(idem_stats_get(fx->db, (idem_stats *)&u), IDEM_EINVAL);
    assert_int_equal(u.v1.version, v);
    for (size_t i = sizeof u.v1.version; i < sizeof u.bytes; i++)
      if (u.bytes[i] != 0xA5)
        fail_msg("byte %zu of a refused idem_stats was written", i);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_ordinary_calls_count_nothing,
                                      tu_fx_setup_open, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_events_seen_everywhere,
                                      tu_fx_setup_open, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_rolled_back_poisoning_not_counted,
                                      tu_fx_setup, tu_fx_teardown),
      cmocka_unit_test_setup_teardown(test_version_1_caller, tu_fx_setup_open,
                                      tu_fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
