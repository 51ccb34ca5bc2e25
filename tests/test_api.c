/* SPDX-License-Identifier: MIT */
/*
 * test_api.c - bad input and misuse of the public API.
 *
 * Each test feeds the library one kind of wrong or extreme argument and
 * checks that it answers with the specific code idem.h documents, that it
 * does not crash, and that nothing was stored or changed by the refused
 * call.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tu_fx *fx_of(void **state) {
  return *state;
}

/* Finishing operations applied to a lease, by index. */
enum { OP_COMPLETE, OP_RELEASE, OP_FAIL, OP_COUNT };

static int apply_op(int op, idem_lease *l) {
  switch (op) {
  case OP_COMPLETE:
    return idem_complete(l, "done", 4);
  case OP_RELEASE:
    return idem_release(l, "give back");
  default:
    return idem_fail(l, 9, "failed", 6);
  }
}

/* Counts rows of every state, to prove a refused call stored nothing. */
static uint64_t total_rows(idem_db *db) {
  idem_stats st = tu_stats(db);
  uint64_t n = 0;
  for (int i = 0; i < 5; i++)
    n += st.rows[i];
  return n;
}

/* The version the library reports is the one of the header we compiled
 * against; a mismatch means the build picked up another libidem. */
static void test_version(void **state) {
  (void)state;
  assert_non_null(idem_version());
  assert_string_equal(idem_version(), IDEM_VERSION_STRING);
  assert_int_equal(idem_version_number(), IDEM_VERSION_NUMBER);
}

/* Every code and answer has its own non-empty name, so a log line tells
 * them apart; unknown codes get the documented fallback, not NULL. */
static void test_errstr_all_codes(void **state) {
  (void)state;
  const char *unknown = "unknown result code";
  const int first = IDEM_EFORKED, last = IDEM_RELEASED;
  const char *names[32];
  int n = 0;
  for (int code = first; code <= last; code++) {
    const char *s = idem_errstr(code);
    assert_non_null(s);
    assert_true(s[0] != '\0');
    assert_string_not_equal(s, unknown);
    for (int j = 0; j < n; j++)
      assert_string_not_equal(s, names[j]);
    names[n++] = s;
  }
  assert_int_equal(n, 25);
  assert_non_null(strstr(idem_errstr(IDEM_ELEASELOST), "lease lost"));
  const int bad[] = {IDEM_EFORKED - 1, IDEM_RELEASED + 1, -1000, 1000, INT_MIN,
                     INT_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_string_equal(idem_errstr(bad[i]), unknown);
}

/* idem_errmsg() is "" for NULL and for a fresh handle, and explains a
 * failure afterwards: a caller can always print it. */
static void test_errmsg(void **state) {
  tu_fx *fx = fx_of(state);
  assert_string_equal(idem_errmsg(NULL), "");
  assert_string_equal(idem_errmsg(fx->db), "");
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(fx->db, "k", 0, NULL, &a), IDEM_EINVAL);
  assert_true(strlen(idem_errmsg(fx->db)) > 0);
  char *big = calloc(1, IDEM_MAX_KEY + 1);
  assert_non_null(big);
  assert_int_equal(idem_begin(fx->db, big, IDEM_MAX_KEY + 1, NULL, &a),
                   IDEM_ETOOBIG);
  assert_true(strlen(idem_errmsg(fx->db)) > 0);
  free(big);
  idem_answer_clear(&a);
}

/* idem_open() refuses NULL out, a NULL path and an empty path (which
 * SQLite would take for a private temporary database) without creating
 * anything. Like sqlite3_open(), it may still hand out a handle to close. */
static void test_open_null_args(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = NULL;
  assert_int_equal(idem_open(NULL, fx->path, &fx->opts), IDEM_EINVAL);
  assert_false(tu_exists(fx->path));
  assert_int_equal(idem_open(&db, NULL, &fx->opts), IDEM_EINVAL);
  assert_int_equal(idem_close(db), IDEM_OK);
  db = NULL;
  assert_int_equal(idem_open(&db, "", &fx->opts), IDEM_EINVAL);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Malformed options are refused with IDEM_EINVAL before any file is made,
 * so a typo in a configuration cannot leave a half-made database behind. */
static void test_open_options_invalid(void **state) {
  tu_fx *fx = fx_of(state);
  struct {
    const char *what;
    idem_options o;
  } cases[7];
  for (int i = 0; i < 7; i++)
    cases[i].o = fx->opts;
  cases[0].what = "ttl 0";
  cases[0].o.ttl_ms = 0;
  cases[1].what = "ttl negative";
  cases[1].o.ttl_ms = -5;
  cases[2].what = "synchronous 0";
  cases[2].o.synchronous = 0;
  cases[3].what = "synchronous 3";
  cases[3].o.synchronous = 3;
  cases[4].what = "fail policy 7";
  cases[4].o.fail_policy = 7;
  cases[5].what = "version 0";
  cases[5].o.version = 0;
  cases[6].what = "synchronous -1";
  cases[6].o.synchronous = -1;
  for (int i = 0; i < 7; i++) {
    idem_db *db = NULL;
    int rc = idem_open(&db, fx->path, &cases[i].o);
    if (rc != IDEM_EINVAL)
      fail_msg("%s: got %s", cases[i].what, idem_errstr(rc));
    if (db != NULL)
      idem_close(db);
    if (tu_exists(fx->path))
      fail_msg("%s: the database file was created", cases[i].what);
  }
}

/* The documented edge values of the options are accepted. */
static void test_open_options_edges(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.ttl_ms = 1;
  o.max_attempts = 0;
  o.retention_ms = 0;
  o.heartbeat_ms = -1;
  o.synchronous = IDEM_SYNC_FULL;
  o.fail_policy = IDEM_FAIL_OPEN;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
  /* NULL options mean the defaults. */
  assert_int_equal(tu_open(&db, fx->path, NULL), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The threads of this process, from /proc/self/status; -1 if unknown. */
static int thread_count(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %d", &n) == 1)
      break;
  if (f)
    fclose(f);
  return n;
}

static void *nothing(void *arg) {
  return arg;
}

/* NULL options are IDEM_OPTIONS_INIT's, heartbeat included: the first
 * claim starts the thread that keeps a job longer than the TTL its lease.
 * NULL must not skip the step that turns heartbeat_ms 0 into ttl_ms / 2.
 * A thread started and joined first lets a sanitizer's runtime start its
 * own threads before the count. */
static void test_null_options_heartbeat(void **state) {
  tu_fx *fx = fx_of(state);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, nothing, NULL), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  static const idem_options init = IDEM_OPTIONS_INIT;
  const idem_options *cases[] = {NULL, &init};
  for (int i = 0; i < 2; i++) {
    idem_db *db = NULL;
    assert_int_equal(tu_open(&db, fx->path, cases[i]), IDEM_OK);
    int before = thread_count();
    assert_true(before > 0);
    idem_lease *l = tu_claim(db, i ? "init" : "null");
    if (thread_count() <= before)
      fail_msg("%s options: %d threads before the claim, %d after",
               i ? "IDEM_OPTIONS_INIT" : "NULL", before, thread_count());
    assert_int_equal(idem_complete(l, "ok", 2), IDEM_OK);
    idem_lease_free(l);
    assert_int_equal(idem_close(db), IDEM_OK);
  }
}

/* idem_close(NULL) is a harmless no-op. */
static void test_close_null(void **state) {
  (void)state;
  assert_int_equal(idem_close(NULL), IDEM_OK);
}

static int job_noop(void *ctx, idem_lease *lease) {
  (void)lease;
  if (ctx != NULL)
    (*(int *)ctx)++;
  return IDEM_JOB_DONE;
}

static int list_noop(void *ctx, const idem_record *rec) {
  (void)ctx;
  (void)rec;
  return 0;
}

/* Every function that takes a handle refuses NULL with IDEM_EINVAL. */
static void test_null_db(void **state) {
  (void)state;
  idem_answer a = IDEM_ANSWER_INIT;
  idem_record r = IDEM_RECORD_INIT;
  idem_stats st;
  memset(&st, 0, sizeof st);
  st.version = IDEM_STATS_VERSION;
  unsigned lost = 0, count = 0;
  uint64_t n = 0;
  int ran = 0;
  assert_int_equal(idem_begin(NULL, "k", 1, NULL, &a), IDEM_EINVAL);
  assert_int_equal(idem_run(NULL, "k", 1, NULL, job_noop, &ran, &a),
                   IDEM_EINVAL);
  assert_int_equal(ran, 0);
  assert_int_equal(idem_heartbeat(NULL, &lost), IDEM_EINVAL);
  assert_int_equal(idem_get(NULL, "k", 1, &r), IDEM_EINVAL);
  assert_int_equal(idem_list(NULL, -1, NULL, 0, 10, list_noop, NULL, &count),
                   IDEM_EINVAL);
  assert_int_equal(idem_reset(NULL, "k", 1), IDEM_EINVAL);
  assert_int_equal(idem_reset_state(NULL, IDEM_STATE_POISONED, &n),
                   IDEM_EINVAL);
  assert_int_equal(idem_purge(NULL, 0, &n), IDEM_EINVAL);
  assert_int_equal(idem_stats_get(NULL, &st), IDEM_EINVAL);
  idem_answer_clear(&a);
  idem_record_clear(&r);
}

/* With a valid handle, the other required pointers (key, out, record,
 * callbacks, stats) are checked too, and a refused begin claims nothing:
 * otherwise a lease would be held with nobody to finish it. */
static void test_null_args(void **state) {
  tu_fx *fx = fx_of(state);
  idem_answer a = IDEM_ANSWER_INIT;
  idem_record r = IDEM_RECORD_INIT;
  int ran = 0;
  assert_int_equal(idem_begin(fx->db, NULL, 1, NULL, &a), IDEM_EINVAL);
  assert_int_equal(idem_begin(fx->db, "k", 1, NULL, NULL), IDEM_EINVAL);
  assert_int_equal(idem_run(fx->db, NULL, 1, NULL, job_noop, &ran, &a),
                   IDEM_EINVAL);
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, NULL, NULL, &a), IDEM_EINVAL);
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job_noop, &ran, NULL),
                   IDEM_EINVAL);
  assert_int_equal(ran, 0);
  assert_int_equal(idem_get(fx->db, NULL, 1, &r), IDEM_EINVAL);
  assert_int_equal(idem_get(fx->db, "k", 1, NULL), IDEM_EINVAL);
  assert_int_equal(idem_reset(fx->db, NULL, 1), IDEM_EINVAL);
  assert_int_equal(idem_list(fx->db, -1, NULL, 0, 10, NULL, NULL, NULL),
                   IDEM_EINVAL);
  assert_int_equal(idem_stats_get(fx->db, NULL), IDEM_EINVAL);
  assert_int_equal(total_rows(fx->db), 0);
  /* The key is untouched: the first real claim is attempt 1. */
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 1);
  assert_int_equal(idem_complete(a.lease, "x", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  /* Optional out-parameters may be NULL. */
  assert_int_equal(idem_heartbeat(fx->db, NULL), IDEM_OK);
  assert_int_equal(idem_list(fx->db, -1, NULL, 0, 10, list_noop, NULL, NULL),
                   IDEM_OK);
  assert_int_equal(idem_purge(fx->db, 0, NULL), IDEM_OK);
  assert_int_equal(idem_reset_state(fx->db, IDEM_STATE_POISONED, NULL),
                   IDEM_OK);
}

/* Lease functions refuse a NULL lease; the freeing functions accept NULL as
 * a no-op. */
static void test_null_lease(void **state) {
  (void)state;
  assert_int_equal(idem_complete(NULL, "x", 1), IDEM_EINVAL);
  assert_int_equal(idem_fail(NULL, 1, "x", 1), IDEM_EINVAL);
  assert_int_equal(idem_release(NULL, NULL), IDEM_EINVAL);
  assert_int_equal(idem_lease_set_result(NULL, "x", 1, 0), IDEM_EINVAL);
  idem_lease_free(NULL);
  idem_answer_clear(NULL);
  idem_record_clear(NULL);
}

/* An empty key names nothing: refused everywhere a key is taken. */
static void test_empty_key(void **state) {
  tu_fx *fx = fx_of(state);
  idem_answer a = IDEM_ANSWER_INIT;
  idem_record r = IDEM_RECORD_INIT;
  int ran = 0;
  assert_int_equal(idem_begin(fx->db, "", 0, NULL, &a), IDEM_EINVAL);
  assert_int_equal(idem_begin(fx->db, "k", 0, NULL, &a), IDEM_EINVAL);
  assert_int_equal(idem_run(fx->db, "", 0, NULL, job_noop, &ran, &a),
                   IDEM_EINVAL);
  assert_int_equal(ran, 0);
  assert_int_equal(idem_get(fx->db, "", 0, &r), IDEM_EINVAL);
  assert_int_equal(idem_reset(fx->db, "", 0), IDEM_EINVAL);
  assert_int_equal(total_rows(fx->db), 0);
}

/* A key of exactly IDEM_MAX_KEY bytes is stored whole; one byte more is
 * IDEM_ETOOBIG, never truncated (a truncated key would alias another). */
static void test_key_max_length(void **state) {
  tu_fx *fx = fx_of(state);
  unsigned char *key = malloc(IDEM_MAX_KEY + 1);
  assert_non_null(key);
  for (size_t i = 0; i <= IDEM_MAX_KEY; i++)
    key[i] = (unsigned char)(i * 7 + 1);
  idem_answer a = IDEM_ANSWER_INIT;
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(idem_begin(fx->db, key, IDEM_MAX_KEY + 1, NULL, &a),
                   IDEM_ETOOBIG);
  assert_null(a.lease);
  assert_int_equal(idem_get(fx->db, key, IDEM_MAX_KEY + 1, &r), IDEM_ETOOBIG);
  assert_int_equal(idem_reset(fx->db, key, IDEM_MAX_KEY + 1), IDEM_ETOOBIG);
  assert_int_equal(total_rows(fx->db), 0);

  idem_answer_clear(&a);
  assert_int_equal(idem_begin(fx->db, key, IDEM_MAX_KEY, NULL, &a),
                   IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "ok", 2), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_get(fx->db, key, IDEM_MAX_KEY, &r), IDEM_OK);
  assert_int_equal(r.key_len, IDEM_MAX_KEY);
  assert_memory_equal(r.key, key, IDEM_MAX_KEY);
  assert_int_equal(((char *)r.key)[IDEM_MAX_KEY], '\0');
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  idem_record_clear(&r);
  free(key);
}

/* Keys are byte strings with a length: "a", "a\0", "a\0b", "\0" and
 * "\0\0" are five different keys with five different results, and none is
 * confused with its prefix as a C-string comparison would. */
static void test_key_embedded_nul(void **state) {
  tu_fx *fx = fx_of(state);
  static const struct {
    const char *k;
    size_t n;
  } keys[] = {{"a", 1}, {"a\0", 2}, {"a\0b", 3}, {"\0", 1}, {"\0\0", 2}};
  const size_t nkeys = sizeof keys / sizeof keys[0];
  idem_answer a = IDEM_ANSWER_INIT;
  for (size_t i = 0; i < nkeys; i++) {
    char res[8];
    snprintf(res, sizeof res, "r%zu", i);
    idem_answer_clear(&a);
    assert_int_equal(idem_begin(fx->db, keys[i].k, keys[i].n, NULL, &a),
                     IDEM_CLAIMED);
    assert_int_equal(a.attempts, 1);
    assert_int_equal(idem_complete(a.lease, res, strlen(res)), IDEM_OK);
    idem_lease_free(a.lease);
  }
  for (size_t i = 0; i < nkeys; i++) {
    char res[8];
    snprintf(res, sizeof res, "r%zu", i);
    idem_answer_clear(&a);
    assert_int_equal(idem_begin(fx->db, keys[i].k, keys[i].n, NULL, &a),
                     IDEM_COMPLETED);
    assert_int_equal(a.result_len, strlen(res));
    assert_memory_equal(a.result, res, strlen(res));
  }
  idem_answer_clear(&a);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(idem_get(fx->db, "a\0b", 3, &r), IDEM_OK);
  assert_int_equal(r.key_len, 3);
  assert_memory_equal(r.key, "a\0b", 3);
  assert_int_equal(r.result_len, 2);
  assert_memory_equal(r.result, "r2", 2);
  idem_record_clear(&r);
  assert_int_equal(total_rows(fx->db), nkeys);
}

/* A result of 0 bytes is a real result: the key answers COMPLETED with an
 * empty (and, as documented, NUL-terminated) buffer, not "absent". The
 * same holds for an empty failure. */
static void test_result_empty(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "null-empty");
  assert_int_equal(idem_complete(l, NULL, 0), IDEM_OK);
  idem_lease_free(l);
  l = tu_claim(fx->db, "str-empty");
  assert_int_equal(idem_complete(l, "", 0), IDEM_OK);
  idem_lease_free(l);
  l = tu_claim(fx->db, "fail-empty");
  assert_int_equal(idem_fail(l, 3, NULL, 0), IDEM_OK);
  idem_lease_free(l);

  idem_answer a = IDEM_ANSWER_INIT;
  const char *done[] = {"null-empty", "str-empty"};
  for (int i = 0; i < 2; i++) {
    assert_int_equal(tu_begin(fx->db, done[i], &a), IDEM_COMPLETED);
    assert_int_equal(a.result_len, 0);
    assert_non_null(a.result);
    assert_int_equal(((char *)a.result)[0], '\0');
    assert_int_equal(a.code, 0);
  }
  assert_int_equal(tu_begin(fx->db, "fail-empty", &a), IDEM_FAILED);
  assert_int_equal(a.result_len, 0);
  assert_int_equal(a.code, 3);
  idem_answer_clear(&a);

  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "null-empty", &r), IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  assert_int_equal(r.result_len, 0);
  idem_record_clear(&r);
}

/* A result of IDEM_MAX_RESULT bytes is stored whole; one byte more is
 * IDEM_ETOOBIG, stores nothing, and leaves the lease held so the job can
 * still finish with a smaller result. */
static void test_result_max(void **state) {
  tu_fx *fx = fx_of(state);
  unsigned char *buf = malloc((size_t)IDEM_MAX_RESULT + 1);
  assert_non_null(buf);
  for (size_t i = 0; i <= IDEM_MAX_RESULT; i++)
    buf[i] = (unsigned char)(i * 31 + 7);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "big", &a), IDEM_CLAIMED);
  idem_lease *l = a.lease;
  char owner[37];
  memcpy(owner, a.owner, sizeof owner);

  assert_int_equal(idem_complete(l, buf, (size_t)IDEM_MAX_RESULT + 1),
                   IDEM_ETOOBIG);
  assert_int_equal(idem_fail(l, 1, buf, (size_t)IDEM_MAX_RESULT + 1),
                   IDEM_ETOOBIG);
  assert_int_equal(idem_lease_lost(l), 0);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "big", &r), IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  assert_int_equal(r.result_len, 0);
  assert_string_equal(r.owner, owner);

  assert_int_equal(idem_complete(l, buf, IDEM_MAX_RESULT), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(tu_begin(fx->db, "big", &a), IDEM_COMPLETED);
  assert_int_equal(a.result_len, IDEM_MAX_RESULT);
  assert_memory_equal(a.result, buf, IDEM_MAX_RESULT);
  assert_int_equal(a.attempts, 1);
  idem_answer_clear(&a);
  assert_int_equal(tu_get(fx->db, "big", &r), IDEM_OK);
  assert_int_equal(r.result_len, IDEM_MAX_RESULT);
  idem_record_clear(&r);
  free(buf);
}

/* NULL with a non-zero length is malformed: IDEM_EINVAL, and the lease is
 * still usable afterwards. */
static void test_result_null_with_len(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "k");
  assert_int_equal(idem_complete(l, NULL, 5), IDEM_EINVAL);
  assert_int_equal(idem_fail(l, 1, NULL, 5), IDEM_EINVAL);
  assert_int_equal(idem_lease_lost(l), 0);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "k", &r), IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);
  assert_int_equal(idem_complete(l, "fine", 4), IDEM_OK);
  idem_lease_free(l);
  tu_assert_completed(fx->db, "k", "fine");
}

/* Every pair of finishing calls on one lease: the second is IDEM_EMISUSE
 * and changes nothing, so the first outcome stands. */
static void test_finish_twice(void **state) {
  tu_fx *fx = fx_of(state);
  idem_answer a = IDEM_ANSWER_INIT;
  for (int first = 0; first < OP_COUNT; first++) {
    for (int second = 0; second < OP_COUNT; second++) {
      char key[16];
      snprintf(key, sizeof key, "k%d%d", first, second);
      idem_lease *l = tu_claim(fx->db, key);
      assert_int_equal(apply_op(first, l), IDEM_OK);
      int rc = apply_op(second, l);
      if (rc != IDEM_EMISUSE)
        fail_msg("op %d after op %d: got %s", second, first, idem_errstr(rc));
      idem_lease_free(l);
      switch (first) {
      case OP_COMPLETE:
        tu_assert_completed(fx->db, key, "done");
        break;
      case OP_RELEASE:
        assert_int_equal(tu_begin(fx->db, key, &a), IDEM_CLAIMED);
        assert_int_equal(a.attempts, 2);
        assert_int_equal(idem_release(a.lease, NULL), IDEM_OK);
        idem_lease_free(a.lease);
        break;
      default:
        assert_int_equal(tu_begin(fx->db, key, &a), IDEM_FAILED);
        assert_int_equal(a.code, 9);
        assert_int_equal(a.result_len, 6);
        assert_memory_equal(a.result, "failed", 6);
        break;
      }
    }
  }
  idem_answer_clear(&a);
}

/* A release reason over IDEM_MAX_REASON is IDEM_ETOOBIG and keeps the
 * lease; one of exactly IDEM_MAX_REASON is accepted. */
static void test_release_reason_limits(void **state) {
  tu_fx *fx = fx_of(state);
  char *reason = malloc(IDEM_MAX_REASON + 2);
  assert_non_null(reason);
  memset(reason, 'r', IDEM_MAX_REASON + 1);
  reason[IDEM_MAX_REASON + 1] = '\0';
  idem_lease *l = tu_claim(fx->db, "k");
  assert_int_equal(idem_release(l, reason), IDEM_ETOOBIG);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_BUSY);
  reason[IDEM_MAX_REASON] = '\0';
  assert_int_equal(idem_release(l, reason), IDEM_OK);
  idem_lease_free(l);
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_int_equal(idem_complete(a.lease, "x", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  free(reason);
}

/* Fingerprint and name limits of idem_begin_opts: over the limit is
 * IDEM_ETOOBIG, a NULL fingerprint with a length or an unknown struct
 * version is IDEM_EINVAL, none of them creates a row; exactly at the limit
 * is accepted and the name is recorded whole. */
static void test_begin_opts_limits(void **state) {
  tu_fx *fx = fx_of(state);
  char *fp = calloc(1, IDEM_MAX_FINGERPRINT + 1);
  char name[IDEM_MAX_NAME + 2];
  assert_non_null(fp);
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  idem_answer a = IDEM_ANSWER_INIT;
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;

  bo.fingerprint = fp;
  bo.fingerprint_len = IDEM_MAX_FINGERPRINT + 1;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_ETOOBIG);
  bo.fingerprint = NULL;
  bo.fingerprint_len = 3;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EINVAL);
  bo.fingerprint_len = 0;
  bo.name = name; /* IDEM_MAX_NAME + 1 characters */
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_ETOOBIG);
  bo.name = NULL;
  bo.version = 0;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EINVAL);
  assert_null(a.lease);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(idem_get(fx->db, "k", 1, &r), IDEM_ENOTFOUND);

  bo.version = IDEM_BEGIN_OPTS_VERSION;
  bo.fingerprint = fp;
  bo.fingerprint_len = IDEM_MAX_FINGERPRINT;
  name[IDEM_MAX_NAME] = '\0';
  bo.name = name;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "x", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_get(fx->db, "k", 1, &r), IDEM_OK);
  assert_int_equal(r.has_fingerprint, 1);
  assert_string_equal(r.name, name);
  idem_record_clear(&r);
  free(fp);
}

/* Closing a handle while one of its leases is held is IDEM_EMISUSE and
 * does nothing: the handle keeps working and the lease can still be
 * completed. A finished lease that is not yet freed still blocks the close
 * (the lease object points into the handle); once freed, it succeeds. */
static void test_close_with_live_lease(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "held");
  assert_int_equal(idem_close(fx->db), IDEM_EMISUSE);
  assert_true(strlen(idem_errmsg(fx->db)) > 0);

  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "held", &r), IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);
  assert_int_equal(idem_heartbeat(fx->db, NULL), IDEM_OK);
  tu_claim_complete(fx->db, "other", "o");

  assert_int_equal(idem_complete(l, "v", 1), IDEM_OK);
  assert_int_equal(idem_close(fx->db), IDEM_EMISUSE);
  tu_assert_completed(fx->db, "held", "v");
  idem_lease_free(l);
  assert_int_equal(idem_close(fx->db), IDEM_OK);
  fx->db = NULL;

  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(fx->db, "held", "v");
}

/* Freeing a lease that is still held releases it: the key is claimable at
 * once (attempt 2) instead of staying blocked for a TTL, and the handle
 * can be closed. */
static void test_lease_free_releases(void **state) {
  tu_fx *fx = fx_of(state);
  idem_lease *l = tu_claim(fx->db, "k");
  idem_lease_free(l);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(fx->db), IDEM_OK);
  fx->db = NULL;
}

/* idem_answer_clear() may be called any number of times and leaves the
 * answer as IDEM_ANSWER_INIT. */
static void test_answer_clear_idempotent(void **state) {
  tu_fx *fx = fx_of(state);
  tu_claim_complete(fx->db, "k", "result");
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "k", &a), IDEM_COMPLETED);
  assert_non_null(a.result);
  idem_answer_clear(&a);
  assert_null(a.result);
  assert_int_equal(a.result_len, 0);
  assert_int_equal(a.status, 0);
  assert_int_equal(a.version, IDEM_ANSWER_VERSION);
  idem_answer_clear(&a);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "k", &r), IDEM_OK);
  idem_record_clear(&r);
  assert_null(r.key);
  assert_null(r.result);
  idem_record_clear(&r);
}

/* A key never seen is IDEM_ENOTFOUND for idem_get and idem_reset, and
 * neither creates it. */
static void test_get_reset_missing(void **state) {
  tu_fx *fx = fx_of(state);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "nope", &r), IDEM_ENOTFOUND);
  assert_int_equal(idem_reset(fx->db, "nope", 4), IDEM_ENOTFOUND);
  assert_int_equal(total_rows(fx->db), 0);
}

/* A state number outside IDEM_STATE_* is IDEM_EINVAL for list and
 * reset_state. */
static void test_bad_state_filter(void **state) {
  tu_fx *fx = fx_of(state);
  unsigned count = 99;
  uint64_t n = 99;
  assert_int_equal(idem_list(fx->db, 5, NULL, 0, 10, list_noop, NULL, &count),
                   IDEM_EINVAL);
  assert_int_equal(idem_list(fx->db, -2, NULL, 0, 10, list_noop, NULL, &count),
                   IDEM_EINVAL);
  assert_int_equal(idem_reset_state(fx->db, 9, &n), IDEM_EINVAL);
  assert_int_equal(idem_reset_state(fx->db, -7, &n), IDEM_EINVAL);
}

struct set_result_ctx {
  unsigned char *big;
  int rc_null, rc_big, rc_ok;
};

static int job_set_result(void *ctx, idem_lease *lease) {
  struct set_result_ctx *c = ctx;
  c->rc_null = idem_lease_set_result(lease, NULL, 3, 0);
  c->rc_big =
      idem_lease_set_result(lease, c->big, (size_t)IDEM_MAX_RESULT + 1, 0);
  c->rc_ok = idem_lease_set_result(lease, "ok", 2, 0);
  return IDEM_JOB_DONE;
}

/* idem_lease_set_result() inside a job checks its input like complete():
 * NULL with a length is IDEM_EINVAL, over the limit IDEM_ETOOBIG, and the
 * valid call that follows is what gets stored. */
static void test_set_result_limits(void **state) {
  tu_fx *fx = fx_of(state);
  struct set_result_ctx c = {calloc(1, (size_t)IDEM_MAX_RESULT + 1), 1, 1, 1};
  assert_non_null(c.big);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_run(fx->db, "k", 1, NULL, job_set_result, &c, &a),
                   IDEM_COMPLETED);
  assert_int_equal(c.rc_null, IDEM_EINVAL);
  assert_int_equal(c.rc_big, IDEM_ETOOBIG);
  assert_int_equal(c.rc_ok, IDEM_OK);
  assert_int_equal(a.ran, 1);
  assert_int_equal(a.result_len, 2);
  assert_memory_equal(a.result, "ok", 2);
  assert_null(a.lease);
  idem_answer_clear(&a);
  free(c.big);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)
#define TO(f)                                                                  \
  cmocka_unit_test_setup_teardown(f, tu_fx_setup_open, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_version),
      T(test_errstr_all_codes),
      TO(test_errmsg),
      T(test_open_null_args),
      T(test_open_options_invalid),
      T(test_open_options_edges),
      T(test_null_options_heartbeat),
      T(test_close_null),
      T(test_null_db),
      TO(test_null_args),
      T(test_null_lease),
      TO(test_empty_key),
      TO(test_key_max_length),
      TO(test_key_embedded_nul),
      TO(test_result_empty),
      TO(test_result_max),
      TO(test_result_null_with_len),
      TO(test_finish_twice),
      TO(test_release_reason_limits),
      TO(test_begin_opts_limits),
      TO(test_close_with_live_lease),
      TO(test_lease_free_releases),
      TO(test_answer_clear_idempotent),
      TO(test_get_reset_missing),
      TO(test_bad_state_filter),
      TO(test_set_result_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
