/* SPDX-License-Identifier: MIT */
/*
 * test_hostile.c - hostile keys, results, fingerprints, names and reasons.
 *
 * Every byte string the API takes is stored and given back through every
 * path that returns it (the begin answer, idem_get, idem_list,
 * idem_history), or refused with the documented code; never truncated,
 * never taken for SQL, never changed on the way. The inputs are what a
 * C-string, text or SQL-building store gets wrong: every byte value, NUL
 * bytes, invalid UTF-8, quotes and SQL, LIKE wildcards, the limits and
 * one byte past them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tu_fx *fx_of(void **state) {
  return *state;
}

#define SQL_KEY "'; DROP TABLE idem_keys; --"

/* Bytes that are not UTF-8: a lone continuation byte, an overlong NUL, a
 * surrogate, a code point past U+10FFFF, a truncated sequence, 0xff. */
static const char bad_utf8[] = "\x80\xc0\x80\xed\xa0\x80\xf4\x90\x80\x80\xe2"
                               "\x82\xff";
#define BAD_UTF8_LEN (sizeof bad_utf8 - 1)

/* Claims key and completes it with result; asserts both succeed. */
static void claim_complete(idem_db *db, const void *key, size_t key_len,
                           const void *res, size_t res_len) {
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(db, key, key_len, NULL, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, res, res_len), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
}

/* Asserts that key answers COMPLETED with exactly these bytes, through the
 * begin answer and through idem_get. */
static void assert_round_trip(idem_db *db, const void *key, size_t key_len,
                              const void *res, size_t res_len) {
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(db, key, key_len, NULL, &a), IDEM_COMPLETED);
  assert_int_equal(a.result_len, res_len);
  assert_non_null(a.result);
  if (res_len > 0)
    assert_memory_equal(a.result, res, res_len);
  assert_int_equal(((const char *)a.result)[res_len], '\0');
  idem_answer_clear(&a);

  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(idem_get(db, key, key_len, &r), IDEM_OK);
  assert_int_equal(r.key_len, key_len);
  assert_memory_equal(r.key, key, key_len);
  assert_int_equal(((const char *)r.key)[key_len], '\0');
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  assert_int_equal(r.result_len, res_len);
  if (res_len > 0)
    assert_memory_equal(r.result, res, res_len);
  idem_record_clear(&r);
}

/* Rows of the table, counted behind the library's back: the table is
 * still there and holds exactly what the test stored. */
static int64_t count_rows(tu_fx *fx) {
  int64_t n = -1;
  assert_int_equal(tu_sql_int(fx->path, "SELECT count(*) FROM idem_keys", &n),
                   0);
  return n;
}

/* --- Listing ------------------------------------------------------------ */

struct seen {
  unsigned n;
  unsigned cap;
  unsigned char **keys;
  size_t *lens;
  char names[8][IDEM_MAX_NAME + 1];
};

static int collect(void *ctx, const idem_record *rec) {
  struct seen *s = ctx;
  assert_true(s->n < s->cap);
  s->keys[s->n] = malloc(rec->key_len + 1);
  assert_non_null(s->keys[s->n]);
  memcpy(s->keys[s->n], rec->key, rec->key_len + 1);
  s->lens[s->n] = rec->key_len;
  if (s->n < 8)
    memcpy(s->names[s->n], rec->name, sizeof rec->name);
  s->n++;
  return 0;
}

static void seen_init(struct seen *s, unsigned cap) {
  memset(s, 0, sizeof *s);
  s->cap = cap;
  s->keys = calloc(cap, sizeof *s->keys);
  s->lens = calloc(cap, sizeof *s->lens);
  assert_non_null(s->keys);
  assert_non_null(s->lens);
}

static void seen_free(struct seen *s) {
  for (unsigned i = 0; i < s->n; i++)
    free(s->keys[i]);
  free(s->keys);
  free(s->lens);
}

/* Lists every row, `page` at a time, each page after the last key of the
 * previous one. */
static void list_all(idem_db *db, unsigned page, struct seen *s) {
  for (;;) {
    const void *after = s->n ? s->keys[s->n - 1] : NULL;
    size_t after_len = s->n ? s->lens[s->n - 1] : 0;
    unsigned got = 0;
    assert_int_equal(
        idem_list(db, -1, after, after_len, page, collect, s, &got), IDEM_OK);
    if (got < page)
      return;
  }
}

/* Whether the listing holds exactly this key once. */
static int listed_once(const struct seen *s, const void *key, size_t len) {
  int found = 0;
  for (unsigned i = 0; i < s->n; i++)
    found += s->lens[i] == len && memcmp(s->keys[i], key, len) == 0;
  return found == 1;
}

/* --- Keys --------------------------------------------------------------- */

/* All 256 one-byte keys, NUL and 0xff included, are 256 distinct rows,
 * each holding its own byte as result; listing them in pages of 7, each
 * page after a key that may be a NUL byte or a lone 0xff, finds every one
 * exactly once. */
static void test_every_byte_key(void **state) {
  tu_fx *fx = fx_of(state);
  for (int b = 0; b < 256; b++) {
    unsigned char k = (unsigned char)b;
    claim_complete(fx->db, &k, 1, &k, 1);
  }
  for (int b = 0; b < 256; b++) {
    unsigned char k = (unsigned char)b;
    assert_round_trip(fx->db, &k, 1, &k, 1);
  }
  assert_int_equal(count_rows(fx), 256);
  struct seen s;
  seen_init(&s, 300);
  list_all(fx->db, 7, &s);
  assert_int_equal(s.n, 256);
  for (int b = 0; b < 256; b++) {
    unsigned char k = (unsigned char)b;
    if (!listed_once(&s, &k, 1))
      fail_msg("key \\x%02x is not listed exactly once", b);
  }
  seen_free(&s);
}

/* Keys that share a prefix up to a NUL byte, keys of every byte value at
 * the full IDEM_MAX_KEY length differing only in their last byte, and the
 * same key as valid and invalid UTF-8 are all told apart. */
static void test_keys_differing_late(void **state) {
  tu_fx *fx = fx_of(state);
  unsigned char *k = malloc(IDEM_MAX_KEY);
  assert_non_null(k);
  for (size_t i = 0; i < IDEM_MAX_KEY; i++)
    k[i] = (unsigned char)i; /* every byte value, NULs included, 16 times */
  for (int last = 0; last < 4; last++) {
    k[IDEM_MAX_KEY - 1] = (unsigned char)last;
    char res[2] = {(char)('A' + last), 0};
    claim_complete(fx->db, k, IDEM_MAX_KEY, res, 1);
  }
  for (int last = 0; last < 4; last++) {
    k[IDEM_MAX_KEY - 1] = (unsigned char)last;
    char res[2] = {(char)('A' + last), 0};
    assert_round_trip(fx->db, k, IDEM_MAX_KEY, res, 1);
  }
  /* Past the limit, even with the same first IDEM_MAX_KEY bytes. */
  unsigned char *over = malloc(IDEM_MAX_KEY + 1);
  assert_non_null(over);
  memcpy(over, k, IDEM_MAX_KEY);
  over[IDEM_MAX_KEY] = 'x';
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(fx->db, over, IDEM_MAX_KEY + 1, NULL, &a),
                   IDEM_ETOOBIG);
  assert_null(a.lease);
  assert_int_equal(count_rows(fx), 4);

  /* Invalid UTF-8 and its repaired look-alikes. */
  claim_complete(fx->db, bad_utf8, BAD_UTF8_LEN, "bad", 3);
  claim_complete(fx->db, "\xef\xbf\xbd", 3, "U+FFFD", 6);
  assert_round_trip(fx->db, bad_utf8, BAD_UTF8_LEN, "bad", 3);
  assert_round_trip(fx->db, "\xef\xbf\xbd", 3, "U+FFFD", 6);
  assert_int_equal(count_rows(fx), 6);
  free(over);
  free(k);
}

/* Keys made of SQL, quotes and LIKE wildcards are only keys: the table
 * survives, a reset of "a%" or "_" removes that key and no other, and a
 * lookup of "%" finds nothing while only "a%" exists. */
static void test_sql_keys(void **state) {
  tu_fx *fx = fx_of(state);
  static const char *const keys[] = {
      SQL_KEY, "'",  "\"", "a%",    "ab",
      "_",     "x",  "\\", "*/ --", "?1",
      ":key",  "$1", "@k", "a'b",   "'); DELETE FROM idem_meta; --",
      "%"};
  const size_t n = sizeof keys / sizeof keys[0];
  idem_record r = IDEM_RECORD_INIT;
  /* "%" is listed last: before it exists, it must not match "a%". */
  for (size_t i = 0; i + 1 < n; i++)
    claim_complete(fx->db, keys[i], strlen(keys[i]), keys[i], strlen(keys[i]));
  assert_int_equal(idem_get(fx->db, "%", 1, &r), IDEM_ENOTFOUND);
  assert_int_equal(idem_reset(fx->db, "%", 1), IDEM_ENOTFOUND);
  claim_complete(fx->db, keys[n - 1], strlen(keys[n - 1]), keys[n - 1],
                 strlen(keys[n - 1]));
  for (size_t i = 0; i < n; i++)
    assert_round_trip(fx->db, keys[i], strlen(keys[i]), keys[i],
                      strlen(keys[i]));
  assert_int_equal(count_rows(fx), (int64_t)n);

  assert_int_equal(idem_reset(fx->db, "a%", 2), IDEM_OK);
  assert_int_equal(idem_reset(fx->db, "_", 1), IDEM_OK);
  assert_int_equal(count_rows(fx), (int64_t)n - 2);
  assert_round_trip(fx->db, "ab", 2, "ab", 2);
  assert_round_trip(fx->db, "x", 1, "x", 1);
  assert_round_trip(fx->db, SQL_KEY, strlen(SQL_KEY), SQL_KEY, strlen(SQL_KEY));

  /* The library's own table of metadata is intact: fences still rise. */
  int64_t floor = -1;
  assert_int_equal(tu_sql_int(fx->path,
                              "SELECT value FROM idem_meta WHERE name = "
                              "'fence_floor'",
                              &floor),
                   0);
  assert_true(floor >= 1);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(fx->db, "a%", 2, NULL, &a), IDEM_CLAIMED);
  assert_true(a.fence > (uint64_t)floor);
  assert_int_equal(idem_release(a.lease, NULL), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
}

/* --- Results ------------------------------------------------------------ */

/* A result of every byte value, one of only NUL bytes, one that starts
 * with NUL, invalid UTF-8 and SQL: each comes back whole, including
 * through idem_fail with the extreme codes. */
static void test_hostile_results(void **state) {
  tu_fx *fx = fx_of(state);
  unsigned char all[512];
  for (size_t i = 0; i < sizeof all; i++)
    all[i] = (unsigned char)(255 - i % 256);
  static const unsigned char nuls[64];
  const struct {
    const void *p;
    size_t n;
  } res[] = {
      {all, sizeof all},        {nuls, sizeof nuls},           {"\0tail", 5},
      {bad_utf8, BAD_UTF8_LEN}, {SQL_KEY, sizeof SQL_KEY - 1}, {"", 0},
  };
  const size_t n = sizeof res / sizeof res[0];
  for (size_t i = 0; i < n; i++) {
    char key[16];
    snprintf(key, sizeof key, "r%zu", i);
    claim_complete(fx->db, key, strlen(key), res[i].p, res[i].n);
  }
  for (size_t i = 0; i < n; i++) {
    char key[16];
    snprintf(key, sizeof key, "r%zu", i);
    assert_round_trip(fx->db, key, strlen(key), res[i].p, res[i].n);
  }

  static const int codes[] = {INT_MIN, -1, 0, 1, 255, 256, INT_MAX};
  idem_answer a = IDEM_ANSWER_INIT;
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    char key[16];
    snprintf(key, sizeof key, "f%zu", i);
    idem_lease *l = tu_claim(fx->db, key);
    assert_int_equal(idem_fail(l, codes[i], all, sizeof all), IDEM_OK);
    idem_lease_free(l);
    assert_int_equal(tu_begin(fx->db, key, &a), IDEM_FAILED);
    assert_int_equal(a.code, codes[i]);
    assert_int_equal(a.result_len, sizeof all);
    assert_memory_equal(a.result, all, sizeof all);
  }
  idem_answer_clear(&a);
}

struct job {
  const void *p;
  size_t n;
  int set_rc;
};

static int set_result_job(void *ctx, idem_lease *lease) {
  struct job *j = ctx;
  j->set_rc = idem_lease_set_result(lease, j->p, j->n, 0);
  return IDEM_JOB_DONE;
}

/* Through idem_run: a result of exactly IDEM_MAX_RESULT bytes, made of
 * every byte value, is stored whole; one byte more is refused by
 * idem_lease_set_result() with IDEM_ETOOBIG, and what the job then leaves
 * (no result) is stored as the empty result, not a truncated one. */
static void test_max_result_through_run(void **state) {
  tu_fx *fx = fx_of(state);
  size_t max = IDEM_MAX_RESULT;
  unsigned char *buf = malloc(max + 1);
  assert_non_null(buf);
  for (size_t i = 0; i <= max; i++)
    buf[i] = (unsigned char)(i ^ (i >> 8) ^ (i >> 16));
  struct job j = {buf, max, -99};
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_run(fx->db, "max", 3, NULL, set_result_job, &j, &a),
                   IDEM_COMPLETED);
  assert_int_equal(j.set_rc, IDEM_OK);
  assert_int_equal(a.ran, 1);
  idem_answer_clear(&a);
  assert_round_trip(fx->db, "max", 3, buf, max);

  j = (struct job){buf, max + 1, -99};
  assert_int_equal(idem_run(fx->db, "over", 4, NULL, set_result_job, &j, &a),
                   IDEM_COMPLETED);
  assert_int_equal(j.set_rc, IDEM_ETOOBIG);
  idem_answer_clear(&a);
  assert_round_trip(fx->db, "over", 4, "", 0);
  free(buf);
}

/* --- Fingerprints ------------------------------------------------------- */

/* A fingerprint of IDEM_MAX_FINGERPRINT bytes full of NULs and invalid
 * UTF-8 is compared whole: the same bytes match, and one that differs only
 * in its last byte, or only after its first NUL, is a mismatch. */
static void test_fingerprint_whole(void **state) {
  tu_fx *fx = fx_of(state);
  size_t n = IDEM_MAX_FINGERPRINT;
  unsigned char *fp = malloc(n), *other = malloc(n);
  assert_non_null(fp);
  assert_non_null(other);
  for (size_t i = 0; i < n; i++)
    fp[i] = i % 3 == 0 ? 0 : (unsigned char)(0x80 + i % 128);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.fingerprint = fp;
  bo.fingerprint_len = n;
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_COMPLETED);
  idem_answer_clear(&a);

  bo.fingerprint = other;
  memcpy(other, fp, n);
  other[n - 1] ^= 1;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EMISMATCH);
  assert_null(a.result);
  memcpy(other, fp, n);
  other[1] ^= 1; /* just after the first NUL */
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EMISMATCH);
  bo.fingerprint_len = n - 1; /* a prefix */
  memcpy(other, fp, n);
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EMISMATCH);
  idem_answer_clear(&a);
  free(fp);
  free(other);
}

/* An empty fingerprint (a pointer and length 0) is a fingerprint like any
 * other, as the header makes no exception for it: it is recorded, the
 * same empty one matches, and a non-empty one is a mismatch. */
static void test_fingerprint_empty(void **state) {
  tu_fx *fx = fx_of(state);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.fingerprint = "";
  bo.fingerprint_len = 0;
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "v", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "k", &r), IDEM_OK);
  assert_int_equal(r.has_fingerprint, 1);
  idem_record_clear(&r);
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_COMPLETED);
  idem_answer_clear(&a);
  bo.fingerprint = "x";
  bo.fingerprint_len = 1;
  assert_int_equal(idem_begin(fx->db, "k", 1, &bo, &a), IDEM_EMISMATCH);
  idem_answer_clear(&a);
}

/* --- Names and reasons -------------------------------------------------- */

/* A name of exactly IDEM_MAX_NAME bytes of quotes, SQL and invalid UTF-8
 * is recorded whole, through idem_get and idem_list; an empty name is
 * kept as empty; one byte more is IDEM_ETOOBIG and creates no row. */
static void test_hostile_names(void **state) {
  tu_fx *fx = fx_of(state);
  char name[IDEM_MAX_NAME + 2];
  size_t o = 0;
  while (o < IDEM_MAX_NAME) {
    const char *piece = (o / 16) % 2 ? SQL_KEY : bad_utf8;
    size_t len = strlen(piece);
    for (size_t i = 0; i < len && o < IDEM_MAX_NAME; i++)
      name[o++] = piece[i];
  }
  name[o] = '\0';
  assert_int_equal(strlen(name), IDEM_MAX_NAME);

  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  idem_answer a = IDEM_ANSWER_INIT;
  bo.name = name;
  assert_int_equal(idem_begin(fx->db, "named", 5, &bo, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "x", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  bo.name = "";
  assert_int_equal(idem_begin(fx->db, "empty", 5, &bo, &a), IDEM_CLAIMED);
  assert_int_equal(idem_complete(a.lease, "x", 1), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);

  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "named", &r), IDEM_OK);
  assert_int_equal(strlen(r.name), IDEM_MAX_NAME);
  assert_memory_equal(r.name, name, IDEM_MAX_NAME + 1);
  assert_int_equal(tu_get(fx->db, "empty", &r), IDEM_OK);
  assert_string_equal(r.name, "");
  idem_record_clear(&r);

  struct seen s;
  seen_init(&s, 8);
  list_all(fx->db, 10, &s);
  assert_int_equal(s.n, 2);
  /* Key order: "empty" before "named". */
  assert_string_equal(s.names[0], "");
  assert_memory_equal(s.names[1], name, IDEM_MAX_NAME + 1);
  seen_free(&s);

  name[IDEM_MAX_NAME] = 'n';
  name[IDEM_MAX_NAME + 1] = '\0';
  bo.name = name;
  assert_int_equal(idem_begin(fx->db, "over", 4, &bo, &a), IDEM_ETOOBIG);
  assert_int_equal(tu_get(fx->db, "over", &r), IDEM_ENOTFOUND);
  idem_answer_clear(&a);
}

struct messages {
  unsigned n;
  char *msg[4];
  int outcome[4];
};

static int keep_message(void *ctx, const idem_attempt *at) {
  struct messages *m = ctx;
  if (m->n < 4) {
    m->msg[m->n] = at->message ? strdup(at->message) : NULL;
    m->outcome[m->n] = at->outcome;
  }
  m->n++;
  return 0;
}

/* A release reason of exactly IDEM_MAX_REASON bytes of quotes, backslashes,
 * control characters, SQL and invalid UTF-8 comes back from idem_history
 * byte for byte (the history is text inside the row: nothing may be
 * escaped away or cut); the key stays usable after; one byte more is
 * IDEM_ETOOBIG and keeps the lease. */
static void test_hostile_reasons(void **state) {
  tu_fx *fx = fx_of(state);
  char reason[IDEM_MAX_REASON + 2];
  static const char piece[] = "\"\\\x01\n\t" SQL_KEY "\x80\xc0\x80\xed\xa0\x80"
                              "\xff}]";
  for (size_t i = 0; i < IDEM_MAX_REASON; i++)
    reason[i] = piece[i % (sizeof piece - 1)];
  reason[IDEM_MAX_REASON] = 'x';
  reason[IDEM_MAX_REASON + 1] = '\0';

  idem_lease *l = tu_claim(fx->db, "k");
  assert_int_equal(idem_release(l, reason), IDEM_ETOOBIG);
  assert_int_equal(idem_lease_lost(l), 0);
  reason[IDEM_MAX_REASON] = '\0';
  assert_int_equal(idem_release(l, reason), IDEM_OK);
  idem_lease_free(l);

  l = tu_claim(fx->db, "k");
  assert_int_equal(idem_release(l, "second"), IDEM_OK);
  idem_lease_free(l);

  struct messages m = {0, {NULL}, {0}};
  unsigned count = 0;
  assert_int_equal(idem_history(fx->db, "k", 1, keep_message, &m, &count),
                   IDEM_OK);
  assert_int_equal(count, 2);
  assert_int_equal(m.outcome[0], IDEM_OUTCOME_RELEASED);
  assert_non_null(m.msg[0]);
  assert_int_equal(strlen(m.msg[0]), IDEM_MAX_REASON);
  assert_memory_equal(m.msg[0], reason, IDEM_MAX_REASON);
  assert_int_equal(m.outcome[1], IDEM_OUTCOME_RELEASED);
  assert_non_null(m.msg[1]);
  assert_string_equal(m.msg[1], "second");
  for (unsigned i = 0; i < 4; i++)
    free(m.msg[i]);

  /* The row with that history still works end to end. */
  tu_claim_complete(fx->db, "k", "done");
  tu_assert_completed(fx->db, "k", "done");
  assert_int_equal(tu_sql(fx->path, "PRAGMA integrity_check"), 0);
}

/* Every hostile input at once on one key, then the file is checked by
 * SQLite itself and holds exactly the rows stored. */
static void test_integrity_after(void **state) {
  tu_fx *fx = fx_of(state);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.fingerprint = bad_utf8;
  bo.fingerprint_len = BAD_UTF8_LEN;
  bo.name = SQL_KEY;
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(fx->db, SQL_KEY "\0" SQL_KEY,
                              2 * strlen(SQL_KEY) + 1, &bo, &a),
                   IDEM_CLAIMED);
  assert_int_equal(idem_fail(a.lease, INT_MIN, bad_utf8, BAD_UTF8_LEN),
                   IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  assert_int_equal(idem_begin(fx->db, SQL_KEY "\0" SQL_KEY,
                              2 * strlen(SQL_KEY) + 1, &bo, &a),
                   IDEM_FAILED);
  assert_int_equal(a.code, INT_MIN);
  assert_int_equal(a.result_len, BAD_UTF8_LEN);
  assert_memory_equal(a.result, bad_utf8, BAD_UTF8_LEN);
  idem_answer_clear(&a);
  int64_t ok = 0;
  assert_int_equal(tu_sql_int(fx->path,
                              "SELECT integrity_check = 'ok' FROM "
                              "pragma_integrity_check",
                              &ok),
                   0);
  assert_int_equal(ok, 1);
  assert_int_equal(count_rows(fx), 1);
}

#define T(f)                                                                   \
  cmocka_unit_test_setup_teardown(f, tu_fx_setup_open, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_every_byte_key),
      T(test_keys_differing_late),
      T(test_sql_keys),
      T(test_hostile_results),
      T(test_max_result_through_run),
      T(test_fingerprint_whole),
      T(test_fingerprint_empty),
      T(test_hostile_names),
      T(test_hostile_reasons),
      T(test_integrity_after),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
