/* SPDX-License-Identifier: MIT */
/*
 * fuzz_api.c - the public API driven by a byte string of steps, checked
 * against a model of the state machine after every step.
 *
 * An input is a short header (TTL, max_attempts, retention, storage caps)
 * and then steps: begin, complete, fail, release, free a lease, heartbeat,
 * purge, reset, get, stats, moves of either clock, and calls that must be
 * refused. Two handles share one fresh database file and one fake clock.
 * The model predicts every answer exactly (the rules are small and
 * documented in idem.h), and on top of that the invariants the library
 * promises are asserted on their own, so a failure names the broken
 * promise and not only a difference: the fence of a key strictly
 * increases across claims and is never reused, attempts never exceed
 * max_attempts, a completed key's result never changes while its row
 * lives, and every code is one the call is documented to return.
 *
 * A failed check prints the step and aborts, which libFuzzer reports as a
 * crash and the replay driver as a failed test.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <idem.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* --- Failing ------------------------------------------------------------ */

static unsigned g_step; /* for messages */

static void die(int line, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void die(int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fuzz_api.c:%d: step %u: ", line, g_step);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond))                                                               \
      die(__LINE__, __VA_ARGS__);                                              \
  } while (0)

/* With FUZZ_API_TRACE set, every checked call is printed: the history
 * that led to a failure. */
static int g_trace = -1;

static void trace(const char *what, int rc) {
  if (g_trace < 0)
    g_trace = getenv("FUZZ_API_TRACE") != NULL;
  if (g_trace)
    fprintf(stderr, "step %u: %s -> %d (%s)\n", g_step, what, rc,
            idem_errstr(rc));
}

/* rc must equal want; both are named in the message. */
#define CHECK_RC(rc, want, what)                                               \
  do {                                                                         \
    int got_ = (rc), want_ = (want);                                           \
    trace(what, got_);                                                         \
    CHECK(got_ == want_, "%s: got %d (%s), expected %d (%s)", what, got_,      \
          idem_errstr(got_), want_, idem_errstr(want_));                       \
  } while (0)

/* --- Input -------------------------------------------------------------- */

typedef struct input {
  const uint8_t *p;
  size_t n;
} input;

/* The next byte; 0 once the input is spent, so every input is valid. */
static uint8_t next(input *in) {
  if (in->n == 0)
    return 0;
  in->n--;
  return *in->p++;
}

/* --- The keys ------------------------------------------------------------
 * Few keys, so that steps meet on them; bytes chosen to trip a store that
 * treated keys as C strings or text: NUL bytes, invalid UTF-8, SQL. */
#define NKEYS 6
static const struct {
  const char *bytes;
  size_t len;
} keys[NKEYS] = {
    {"a", 1},
    {"b", 1},
    {"\0", 1},
    {"k\0x", 3},
    {"'; DROP TABLE idem_keys; --", 27},
    {"\xff\xfe\xc0\x80", 4},
};

/* Fingerprints: none, or one of two that differ in their last byte only. */
static const char *const fps[3] = {NULL, "fp\0A", "fp\0B"};
#define FP_LEN 4

/* --- The model ---------------------------------------------------------- */

#define NHANDLES 2
#define NSLOTS 6
#define NOBODY (-1)

enum { L_EMPTY, L_HELD, L_LOST, L_DONE };

typedef struct slot {
  idem_lease *lease;
  int status; /* L_*: what the library knows of the lease */
  int key;
  int h;
  uint64_t fence;
} slot;

typedef struct mkey {
  int state; /* IDEM_STATE_* */
  uint32_t attempts;
  uint64_t fence;
  int owner;           /* slot holding the row's lease, or NOBODY */
  int64_t lease_until; /* lease clock */
  unsigned char *result;
  size_t result_len;
  int code;
  int64_t expires_at; /* wall clock; 0 = forever */
  int fp;             /* index into fps */
  uint64_t max_fence; /* largest fence ever handed out for this key */
  int done_before;    /* completed once: result must not change */
} mkey;

typedef struct world {
  idem_db *db[NHANDLES];
  char *dir;
  char *path;
  _Atomic int64_t lease_now;
  _Atomic int64_t wall_now;
  int64_t ttl;
  uint32_t max_attempts;
  int64_t retention;
  uint64_t max_rows, max_bytes;
  uint64_t floor; /* largest fence of any deleted row */
  unsigned poison_calls, poison_expected;
  mkey k[NKEYS];
  slot s[NSLOTS];
} world;

static int64_t fake_clock(void *ctx, int which) {
  world *w = ctx;
  return which == IDEM_CLOCK_WALL ? w->wall_now : w->lease_now;
}

static void on_poison(void *ctx, const void *key, size_t key_len,
                      uint32_t attempts) {
  world *w = ctx;
  (void)key;
  (void)key_len;
  CHECK(w->max_attempts != 0 && attempts == w->max_attempts,
        "on_poison told of %" PRIu32 " attempts, max_attempts is %" PRIu32,
        attempts, w->max_attempts);
  w->poison_calls++;
}

static void set_result(mkey *k, const void *p, size_t n) {
  free(k->result);
  k->result = NULL;
  k->result_len = n;
  if (n > 0) {
    k->result = malloc(n);
    CHECK(k->result != NULL, "out of memory");
    memcpy(k->result, p, n);
  }
}

/* The row goes away (purge, eviction, reset): its fence raises the floor
 * every later fresh key starts above. */
static void row_deleted(world *w, int ki) {
  mkey *k = &w->k[ki];
  if (k->fence > w->floor)
    w->floor = k->fence;
  k->state = IDEM_STATE_ABSENT;
  k->attempts = 0;
  k->owner = NOBODY;
  k->fp = 0;
  k->done_before = 0;
  set_result(k, NULL, 0);
}

static int row_expired(const world *w, const mkey *k) {
  return (k->state == IDEM_STATE_COMPLETED || k->state == IDEM_STATE_FAILED) &&
         k->expires_at != 0 && k->expires_at <= w->wall_now;
}

static int lease_matches(const world *w, int si) {
  const slot *s = &w->s[si];
  const mkey *k = &w->k[s->key];
  return k->state == IDEM_STATE_PENDING && k->owner == si &&
         k->fence == s->fence;
}

/* --- Results ------------------------------------------------------------ */

/* A result made from the input: mostly short and taken from it, sometimes
 * large (a pattern), sometimes empty. *buf is malloc'd or NULL. */
static size_t make_result(input *in, unsigned char **buf) {
  size_t n = next(in);
  if (n >= 250)
    n = (n - 249) * 20000 + next(in);
  *buf = NULL;
  if (n == 0)
    return 0;
  *buf = malloc(n);
  CHECK(*buf != NULL, "out of memory");
  for (size_t i = 0; i < n; i++)
    (*buf)[i] = i < 32 ? next(in) : (unsigned char)(i * 31 + (i >> 8));
  return n;
}

/* --- Documented codes ---------------------------------------------------
 * Storage failures are documented for every call but cannot happen on a
 * private temporary file; they are accepted here as documented and then
 * rejected by the model's exact expectation. */
static int storage_code(int rc) {
  return rc == IDEM_ENOMEM || rc == IDEM_EBUSY || rc == IDEM_EFULL ||
         rc == IDEM_EIO || rc == IDEM_ECORRUPT || rc == IDEM_EREADONLY;
}

static int documented_begin(int rc) {
  return (rc >= IDEM_CLAIMED && rc <= IDEM_POISONED) || rc == IDEM_EINVAL ||
         rc == IDEM_ETOOBIG || rc == IDEM_EMISMATCH || storage_code(rc);
}

static int documented_end(int rc) {
  return rc == IDEM_OK || rc == IDEM_ELEASELOST || rc == IDEM_EMISUSE ||
         rc == IDEM_EINVAL || rc == IDEM_ETOOBIG || rc == IDEM_EUNKNOWN ||
         storage_code(rc);
}

/* --- Steps -------------------------------------------------------------- */

static void check_answer_result(const idem_answer *a, const mkey *k) {
  CHECK(a->result_len == k->result_len,
        "result of %zu bytes, the key holds %zu", a->result_len, k->result_len);
  CHECK(a->result != NULL, "a cached answer without its result buffer");
  CHECK(k->result_len == 0 || memcmp(a->result, k->result, k->result_len) == 0,
        "the cached result changed");
  CHECK(((const char *)a->result)[a->result_len] == '\0',
        "result is not NUL-terminated");
  CHECK(a->code == k->code, "code %d, expected %d", a->code, k->code);
}

static void step_begin(world *w, input *in) {
  uint8_t b = next(in);
  int ki = b % NKEYS, h = (b / NKEYS) % NHANDLES, fp = next(in) % 3;
  int si = 0;
  while (si < NSLOTS && w->s[si].status != L_EMPTY)
    si++;
  if (si == NSLOTS)
    return; /* nowhere to keep a lease: free one first */
  mkey *k = &w->k[ki];
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  if (fps[fp] != NULL) {
    bo.fingerprint = fps[fp];
    bo.fingerprint_len = FP_LEN;
  }
  bo.name = (b & 0x80) ? "job name" : NULL;
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = idem_begin(w->db[h], keys[ki].bytes, keys[ki].len, &bo, &a);
  CHECK(documented_begin(rc), "idem_begin returned %d (%s), not documented", rc,
        idem_errstr(rc));
  CHECK(rc < 0 || a.status == rc, "status %d but returned %d", a.status, rc);
  CHECK((rc == IDEM_CLAIMED) == (a.lease != NULL),
        "a lease must come with IDEM_CLAIMED and only with it");

  int64_t now = w->lease_now;
  int want;
  int fresh = k->state == IDEM_STATE_ABSENT || row_expired(w, k);
  if (fresh)
    want = IDEM_CLAIMED;
  else if (fp != 0 && k->fp != 0 && fp != k->fp)
    want = IDEM_EMISMATCH;
  else if (k->state == IDEM_STATE_COMPLETED)
    want = IDEM_COMPLETED;
  else if (k->state == IDEM_STATE_FAILED)
    want = IDEM_FAILED;
  else if (k->state == IDEM_STATE_POISONED)
    want = IDEM_POISONED;
  else if (k->owner != NOBODY && k->lease_until > now)
    want = IDEM_BUSY;
  else if (w->max_attempts != 0 && k->attempts >= w->max_attempts)
    want = IDEM_POISONED;
  else
    want = IDEM_CLAIMED;
  CHECK_RC(rc, want, "idem_begin");

  switch (rc) {
  case IDEM_CLAIMED: {
    uint64_t fence =
        k->state == IDEM_STATE_ABSENT ? w->floor + 1 : k->fence + 1;
    uint32_t attempts = fresh ? 1 : k->attempts + 1;
    CHECK(a.fence > k->max_fence,
          "fence %" PRIu64 " does not increase past %" PRIu64, a.fence,
          k->max_fence);
    CHECK(a.fence == fence, "fence %" PRIu64 ", expected %" PRIu64, a.fence,
          fence);
    CHECK(a.attempts == attempts, "attempt %" PRIu32 ", expected %" PRIu32,
          a.attempts, attempts);
    CHECK(w->max_attempts == 0 || a.attempts <= w->max_attempts,
          "attempt %" PRIu32 " over max_attempts %" PRIu32, a.attempts,
          w->max_attempts);
    CHECK(a.lease_ms == w->ttl, "lease_ms %" PRId64 ", ttl %" PRId64,
          a.lease_ms, w->ttl);
    CHECK(strlen(a.owner) == 36, "owner \"%s\" is not a UUID", a.owner);
    CHECK(idem_lease_fence(a.lease) == a.fence &&
              idem_lease_attempt(a.lease) == a.attempts,
          "the lease disagrees with its answer");
    CHECK(!idem_lease_lost(a.lease), "a new lease is lost");
    if (fresh) {
      set_result(k, NULL, 0);
      k->fp = fp;
      k->done_before = 0;
    } else if (fp != 0) {
      k->fp = fp;
    }
    k->state = IDEM_STATE_PENDING;
    k->attempts = attempts;
    k->fence = fence;
    k->max_fence = fence;
    k->owner = si;
    k->lease_until = now + w->ttl;
    k->code = 0;
    k->expires_at = 0;
    w->s[si] = (slot){a.lease, L_HELD, ki, h, fence};
    break;
  }
  case IDEM_COMPLETED:
  case IDEM_FAILED:
    check_answer_result(&a, k);
    CHECK(a.fence == k->fence, "fence %" PRIu64 ", the row has %" PRIu64,
          a.fence, k->fence);
    break;
  case IDEM_BUSY:
    CHECK(a.lease_ms == k->lease_until - now,
          "lease_ms %" PRId64 ", expected %" PRId64, a.lease_ms,
          k->lease_until - now);
    CHECK(strlen(a.owner) == 36, "busy owner \"%s\" is not a UUID", a.owner);
    break;
  case IDEM_POISONED:
    CHECK(a.attempts == k->attempts,
          "poisoned after %" PRIu32 " attempts, expected %" PRIu32, a.attempts,
          k->attempts);
    if (k->state == IDEM_STATE_PENDING) {
      w->poison_expected++;
      k->state = IDEM_STATE_POISONED;
      k->owner = NOBODY;
    }
    break;
  default:
    break;
  }
  CHECK(w->poison_calls == w->poison_expected,
        "on_poison told %u times, expected %u", w->poison_calls,
        w->poison_expected);
  idem_answer_clear(&a);
  CHECK(a.result == NULL && a.lease == NULL && a.status == 0,
        "idem_answer_clear left the answer set");
}

/* complete (op 0), fail (op 1) or release (op 2) of a slot's lease. */
static void step_end(world *w, input *in, int op) {
  int si = next(in) % NSLOTS;
  slot *s = &w->s[si];
  if (s->status == L_EMPTY)
    return;
  uint8_t how = next(in);
  unsigned char *res = NULL;
  size_t len = 0;
  int code = 0, rc, bad_arg = 0;
  char *reason = NULL;
  const char *name = op == 0   ? "idem_complete"
                     : op == 1 ? "idem_fail"
                               : "idem_release";
  if (op == 2) {
    /* No reason, a short one, exactly the limit, one byte over. */
    size_t rlen = how % 4 == 0   ? 0
                  : how % 4 == 1 ? how / 4
                  : how % 4 == 2 ? IDEM_MAX_REASON
                                 : IDEM_MAX_REASON + 1;
    if (how % 4 != 0) {
      reason = malloc(rlen + 1);
      CHECK(reason != NULL, "out of memory");
      memset(reason, '\'', rlen);
      reason[rlen] = '\0';
    }
    bad_arg = rlen > IDEM_MAX_REASON ? IDEM_ETOOBIG : 0;
    rc = idem_release(s->lease, reason);
  } else {
    len = make_result(in, &res);
    code = (int)(int8_t)next(in) * 1000 + next(in);
    /* Now and then a NULL result with a length, which is refused. */
    const void *p = res;
    if (how % 16 == 15 && len > 0) {
      p = NULL;
      bad_arg = IDEM_EINVAL;
    }
    rc = op == 0 ? idem_complete(s->lease, p, len)
                 : idem_fail(s->lease, code, p, len);
  }
  CHECK(documented_end(rc), "%s returned %d (%s), not documented", name, rc,
        idem_errstr(rc));

  int want;
  if (s->status == L_LOST)
    want = IDEM_ELEASELOST;
  else if (s->status == L_DONE)
    want = IDEM_EMISUSE;
  else if (bad_arg)
    want = bad_arg;
  else if (!lease_matches(w, si))
    want = IDEM_ELEASELOST;
  else
    want = IDEM_OK;
  CHECK_RC(rc, want, name);
  CHECK((idem_lease_lost(s->lease) != 0) ==
            (rc == IDEM_ELEASELOST || s->status == L_LOST),
        "idem_lease_lost() disagrees with %s", name);

  if (rc == IDEM_OK) {
    mkey *k = &w->k[s->key];
    k->owner = NOBODY;
    if (op != 2) {
      CHECK(!k->done_before, "a key was completed twice in one life");
      k->state = op == 0 ? IDEM_STATE_COMPLETED : IDEM_STATE_FAILED;
      k->done_before = 1;
      set_result(k, res, len);
      k->code = op == 0 ? 0 : code;
      k->expires_at = w->retention ? w->wall_now + w->retention : 0;
    }
    s->status = L_DONE;
  } else if (rc == IDEM_ELEASELOST) {
    s->status = L_LOST;
  }
  free(res);
  free(reason);
}

static void step_free(world *w, input *in) {
  int si = next(in) % NSLOTS;
  slot *s = &w->s[si];
  if (s->status == L_EMPTY)
    return;
  /* A held lease is released on the way out; a stale one changes nothing. */
  if (s->status == L_HELD && lease_matches(w, si))
    w->k[s->key].owner = NOBODY;
  idem_lease_free(s->lease);
  *s = (slot){NULL, L_EMPTY, 0, 0, 0};
}

static void step_heartbeat(world *w, input *in) {
  int h = next(in) % NHANDLES;
  unsigned lost = 12345, want = 0;
  int rc = idem_heartbeat(w->db[h], &lost);
  CHECK_RC(rc, IDEM_OK, "idem_heartbeat");
  for (int si = 0; si < NSLOTS; si++) {
    slot *s = &w->s[si];
    if (s->status != L_HELD || s->h != h)
      continue;
    mkey *k = &w->k[s->key];
    if (lease_matches(w, si)) {
      k->lease_until = w->lease_now + w->ttl;
    } else if (k->state == IDEM_STATE_ABSENT || k->fence != s->fence ||
               k->state == IDEM_STATE_POISONED) {
      /* Another owner's claim, a reset, or the lapsed lease's key poisoned
       * under its own fence: the holder is told. */
      s->status = L_LOST;
      want++;
    }
    CHECK((idem_lease_lost(s->lease) != 0) == (s->status == L_LOST),
          "idem_lease_lost() disagrees with the heartbeat");
  }
  CHECK(lost == want, "heartbeat found %u lease(s) lost, expected %u", lost,
        want);
}

/* Moves the lease clock (and the wall clock with it) forward, often to
 * exactly a lease's end or just short of it. */
static void step_clock(world *w, input *in) {
  uint8_t b = next(in);
  int64_t dt;
  switch (b % 4) {
  case 0:
    dt = w->ttl;
    break;
  case 1:
    dt = w->ttl - 1;
    break;
  case 2:
    dt = 1;
    break;
  default:
    dt = b / 4;
  }
  w->lease_now += dt;
  w->wall_now += dt;
}

/* Steps the wall clock alone, either way: retention follows it. */
static void step_wall(world *w, input *in) {
  int8_t b = (int8_t)next(in);
  w->wall_now += (int64_t)b * (w->retention ? w->retention / 4 + 1 : 10);
}

/* Reads a key's row back and checks it against the model. Returns 0 when
 * the row is absent. */
static int check_row(world *w, int ki) {
  mkey *k = &w->k[ki];
  idem_record r = IDEM_RECORD_INIT;
  int rc = idem_get(w->db[ki % NHANDLES], keys[ki].bytes, keys[ki].len, &r);
  CHECK(rc == IDEM_OK || rc == IDEM_ENOTFOUND, "idem_get: %d (%s)", rc,
        idem_errstr(rc));
  if (rc == IDEM_ENOTFOUND) {
    idem_record_clear(&r);
    return 0;
  }
  CHECK(r.key_len == keys[ki].len &&
            memcmp(r.key, keys[ki].bytes, r.key_len) == 0,
        "idem_get returned another key");
  CHECK(r.state == k->state, "key %d: state %d, expected %d", ki, r.state,
        k->state);
  CHECK(r.attempts == k->attempts,
        "key %d: attempts %" PRIu32 ", expected %" PRIu32, ki, r.attempts,
        k->attempts);
  CHECK(w->max_attempts == 0 || r.attempts <= w->max_attempts,
        "key %d: %" PRIu32 " attempts over max_attempts", ki, r.attempts);
  CHECK(r.fence == k->fence, "key %d: fence %" PRIu64 ", expected %" PRIu64, ki,
        r.fence, k->fence);
  CHECK((r.owner[0] != '\0') == (k->owner != NOBODY),
        "key %d: owner \"%s\" but the model says %s", ki, r.owner,
        k->owner != NOBODY ? "held" : "not held");
  /* Time left on a live lease exactly; an ended one is documented only
   * as <= 0. */
  if (k->owner != NOBODY && k->lease_until > w->lease_now)
    CHECK(r.lease_ms == k->lease_until - w->lease_now,
          "key %d: lease_ms %" PRId64 ", expected %" PRId64, ki, r.lease_ms,
          k->lease_until - w->lease_now);
  else if (k->owner != NOBODY)
    CHECK(r.lease_ms <= 0, "key %d: lease_ms %" PRId64 " on an ended lease", ki,
          r.lease_ms);
  if (k->state == IDEM_STATE_COMPLETED || k->state == IDEM_STATE_FAILED) {
    CHECK(r.result_len == k->result_len &&
              (k->result_len == 0 ||
               memcmp(r.result, k->result, k->result_len) == 0),
          "key %d: the stored result changed", ki);
    CHECK(r.code == k->code, "key %d: code %d, expected %d", ki, r.code,
          k->code);
    CHECK(r.expires_at == k->expires_at,
          "key %d: expires_at %" PRId64 ", expected %" PRId64, ki, r.expires_at,
          k->expires_at);
  }
  CHECK(r.has_fingerprint == (k->fp != 0), "key %d: fingerprint %s", ki,
        r.has_fingerprint ? "recorded" : "missing");
  idem_record_clear(&r);
  CHECK(r.key == NULL && r.result == NULL, "idem_record_clear left memory");
  return 1;
}

static void step_get(world *w, input *in) {
  int ki = next(in) % NKEYS;
  int present = check_row(w, ki);
  CHECK(present == (w->k[ki].state != IDEM_STATE_ABSENT),
        "key %d is %s, the model says state %d", ki,
        present ? "present" : "absent", w->k[ki].state);
}

/* idem.h: idem_history() keeps the latest attempts, "always the last 4 (or
 * all there were)", and older ones within a byte bound the model does not
 * repeat. */
#define HISTORY_LEAST 4u

struct hist {
  unsigned n;
  uint32_t first; /* attempt number of the first entry */
  uint64_t last_fence;
};

static int on_attempt(void *ctx, const idem_attempt *a) {
  struct hist *h = ctx;
  if (h->n == 0)
    h->first = a->attempt;
  CHECK(a->attempt == h->first + h->n,
        "history: attempt %" PRIu32 " at position %u after %" PRIu32,
        a->attempt, h->n, h->first);
  h->n++;
  if (a->outcome != IDEM_OUTCOME_POISONED) {
    CHECK(a->fence > h->last_fence, "history: fence %" PRIu64 " after %" PRIu64,
          a->fence, h->last_fence);
    h->last_fence = a->fence;
  }
  return 0;
}

static void step_history(world *w, input *in) {
  int ki = next(in) % NKEYS;
  mkey *k = &w->k[ki];
  struct hist h = {0, 0, 0};
  unsigned count = 9999;
  int rc = idem_history(w->db[0], keys[ki].bytes, keys[ki].len, on_attempt, &h,
                        &count);
  if (k->state == IDEM_STATE_ABSENT) {
    CHECK_RC(rc, IDEM_ENOTFOUND, "idem_history");
    return;
  }
  CHECK_RC(rc, IDEM_OK, "idem_history");
  /* One entry per claim, plus the refused one of a poisoning; the latest
   * of them, ending with the newest. */
  unsigned total = k->attempts + (k->state == IDEM_STATE_POISONED ? 1u : 0u);
  unsigned least = total < HISTORY_LEAST ? total : HISTORY_LEAST;
  CHECK(count == h.n && h.n >= least && h.n <= total,
        "history of %u attempts (%u reported), expected %u to %u", h.n, count,
        least, total);
  CHECK(h.first + h.n - 1 == total,
        "history ends at attempt %" PRIu32 ", expected %u", h.first + h.n - 1,
        total);
  CHECK(h.last_fence == k->fence,
        "history ends at fence %" PRIu64 ", the row has %" PRIu64, h.last_fence,
        k->fence);
}

static void step_reset(world *w, input *in) {
  int ki = next(in) % NKEYS;
  int rc = idem_reset(w->db[1], keys[ki].bytes, keys[ki].len);
  CHECK_RC(rc, w->k[ki].state == IDEM_STATE_ABSENT ? IDEM_ENOTFOUND : IDEM_OK,
           "idem_reset");
  if (rc == IDEM_OK)
    row_deleted(w, ki);
}

static void step_purge(world *w, input *in) {
  uint64_t limit = next(in) % 3;
  int expired[NKEYS], nexp = 0;
  for (int i = 0; i < NKEYS; i++) {
    expired[i] = row_expired(w, &w->k[i]);
    nexp += expired[i];
  }
  uint64_t count = 12345;
  int rc = idem_purge(w->db[0], limit, &count);
  CHECK_RC(rc, IDEM_OK, "idem_purge");
  /* Which rows went is read back: the caps evict by an order the model
   * does not repeat, and a limited purge goes in key order. */
  uint64_t gone = 0, rows = 0, bytes = 0;
  for (int i = 0; i < NKEYS; i++) {
    mkey *k = &w->k[i];
    if (k->state == IDEM_STATE_ABSENT)
      continue;
    if (check_row(w, i)) {
      if (k->state == IDEM_STATE_COMPLETED || k->state == IDEM_STATE_FAILED) {
        rows++;
        bytes += k->result_len;
      }
      CHECK(!(limit == 0 && expired[i]),
            "key %d: past retention and still there after a full purge", i);
      continue;
    }
    CHECK(k->state == IDEM_STATE_COMPLETED || k->state == IDEM_STATE_FAILED,
          "key %d: purge deleted a row in state %d", i, k->state);
    CHECK(expired[i] || w->max_rows || w->max_bytes,
          "key %d: purge deleted a row within its retention", i);
    row_deleted(w, i);
    gone++;
  }
  CHECK(count == gone, "purge counted %" PRIu64 " row(s), %" PRIu64 " went",
        count, gone);
  if (!w->max_rows && !w->max_bytes)
    CHECK(gone == (limit && limit < (uint64_t)nexp ? limit : (uint64_t)nexp),
          "purge with limit %" PRIu64 " deleted %" PRIu64 " of %d expired",
          limit, gone, nexp);
  CHECK(!w->max_rows || rows <= w->max_rows,
        "%" PRIu64 " finished rows over max_rows %" PRIu64, rows, w->max_rows);
  CHECK(!w->max_bytes || bytes <= w->max_bytes,
        "%" PRIu64 " result bytes over max_bytes %" PRIu64, bytes,
        w->max_bytes);
}

static void step_stats(world *w, input *in) {
  int h = next(in) % NHANDLES;
  idem_stats st;
  memset(&st, 0, sizeof st);
  st.version = IDEM_STATS_VERSION;
  int rc = idem_stats_get(w->db[h], &st);
  CHECK_RC(rc, IDEM_OK, "idem_stats_get");
  uint64_t rows[5] = {0, 0, 0, 0, 0}, leased = 0;
  for (int i = 0; i < NKEYS; i++) {
    const mkey *k = &w->k[i];
    rows[k->state]++;
    leased += k->owner != NOBODY && k->lease_until > w->lease_now;
  }
  for (int s = IDEM_STATE_PENDING; s <= IDEM_STATE_POISONED; s++)
    CHECK(st.rows[s] == rows[s],
          "stats: %" PRIu64 " row(s) in state %d, expected %" PRIu64,
          st.rows[s], s, rows[s]);
  CHECK(st.leased == leased, "stats: %" PRIu64 " leased, expected %" PRIu64,
        st.leased, leased);
}

/* Calls that must be refused, and change nothing. */
static void step_refused(world *w, input *in) {
  static char big[IDEM_MAX_FINGERPRINT + 2];
  uint8_t b = next(in);
  idem_db *db = w->db[b & 1];
  idem_answer a = IDEM_ANSWER_INIT;
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  idem_record r = IDEM_RECORD_INIT;
  int rc;
  switch ((b >> 1) % 8) {
  case 0:
    rc = idem_begin(db, "", 0, NULL, &a);
    CHECK_RC(rc, IDEM_EINVAL, "begin with an empty key");
    break;
  case 1:
    rc = idem_begin(db, big, IDEM_MAX_KEY + 1, NULL, &a);
    CHECK_RC(rc, IDEM_ETOOBIG, "begin with a key over IDEM_MAX_KEY");
    break;
  case 2:
    bo.fingerprint = big;
    bo.fingerprint_len = IDEM_MAX_FINGERPRINT + 1;
    rc = idem_begin(db, "a", 1, &bo, &a);
    CHECK_RC(rc, IDEM_ETOOBIG, "begin with a fingerprint over the limit");
    break;
  case 3:
    memset(big, 'n', IDEM_MAX_NAME + 1);
    big[IDEM_MAX_NAME + 1] = '\0';
    bo.name = big;
    rc = idem_begin(db, "a", 1, &bo, &a);
    memset(big, 0, sizeof big);
    CHECK_RC(rc, IDEM_ETOOBIG, "begin with a name over the limit");
    break;
  case 4:
    bo.fingerprint_len = 1;
    rc = idem_begin(db, "a", 1, &bo, &a);
    CHECK_RC(rc, IDEM_EINVAL, "begin with a NULL fingerprint of length 1");
    break;
  case 5:
    rc = idem_get(db, big, IDEM_MAX_KEY + 1, &r);
    CHECK_RC(rc, IDEM_ETOOBIG, "get with a key over IDEM_MAX_KEY");
    break;
  case 6:
    rc = idem_reset(db, NULL, 1);
    CHECK_RC(rc, IDEM_EINVAL, "reset of a NULL key");
    break;
  default:
    a.version = 0;
    rc = idem_begin(db, "a", 1, NULL, &a);
    CHECK_RC(rc, IDEM_EINVAL, "begin with an uninitialised answer");
    break;
  }
  CHECK(a.lease == NULL, "a refused call handed out a lease");
  idem_answer_clear(&a);
  idem_record_clear(&r);
}

/* --- One input ---------------------------------------------------------- */

static char *tmp_base(void) {
  /* Memory-backed when there is one: a run is many small databases. */
  const char *base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0')
    base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  size_t n = strlen(base) + 32;
  char *dir = malloc(n);
  CHECK(dir != NULL, "out of memory");
  snprintf(dir, n, "%s/idem-fuzz-XXXXXX", base);
  CHECK(mkdtemp(dir) != NULL, "mkdtemp %s: %s", dir, strerror(errno));
  return dir;
}

static void remove_db(world *w) {
  const char *suffix;
  for (unsigned i = 0; (suffix = idem_file_suffix(i)) != NULL; i++) {
    char p[4096];
    snprintf(p, sizeof p, "%s%s", w->path, suffix);
    unlink(p);
  }
  rmdir(w->dir);
}

static void integrity(const char *path) {
  sqlite3 *c = NULL;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_open_v2(path, &c, SQLITE_OPEN_READONLY, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &st, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  CHECK(rc == SQLITE_ROW, "integrity_check: %s", sqlite3_errmsg(c));
  const char *ok = (const char *)sqlite3_column_text(st, 0);
  CHECK(ok != NULL && strcmp(ok, "ok") == 0, "integrity_check: %s",
        ok ? ok : "(null)");
  sqlite3_finalize(st);
  sqlite3_close(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input in = {data, size};
  world *w = calloc(1, sizeof *w);
  CHECK(w != NULL, "out of memory");
  g_step = 0;
  w->lease_now = 1000000;
  w->wall_now = INT64_C(1700000000000);
  w->ttl = 1 + next(&in) % 64 * 8;
  w->max_attempts = next(&in) % 5;
  uint8_t r = next(&in);
  w->retention = r % 4 == 0 ? 0 : (r / 4) * 8 + 1;
  uint8_t caps = next(&in);
  if (caps & 1)
    w->max_rows = 1 + (caps >> 2) % 4;
  if (caps & 2)
    w->max_bytes = (uint64_t)(caps >> 4) * 8;
  for (int i = 0; i < NKEYS; i++)
    w->k[i].owner = NOBODY;

  w->dir = tmp_base();
  size_t plen = strlen(w->dir) + 16;
  w->path = malloc(plen);
  CHECK(w->path != NULL, "out of memory");
  snprintf(w->path, plen, "%s/idem.db", w->dir);

  idem_options o = IDEM_OPTIONS_INIT;
  o.ttl_ms = w->ttl;
  o.heartbeat_ms = -1; /* the steps call idem_heartbeat() */
  o.max_attempts = w->max_attempts;
  o.retention_ms = w->retention;
  o.max_rows = w->max_rows;
  o.max_bytes = w->max_bytes;
  o.clock = fake_clock;
  o.clock_ctx = w;
  o.on_poison = on_poison;
  o.poison_ctx = w;
  for (int h = 0; h < NHANDLES; h++) {
    int rc = idem_open(&w->db[h], w->path, &o);
    CHECK_RC(rc, IDEM_OK, "idem_open");
  }

  while (in.n > 0 && g_step < 400) {
    g_step++;
    switch (next(&in) % 16) {
    case 0:
    case 1:
    case 2:
      step_begin(w, &in);
      break;
    case 3:
    case 4:
      step_end(w, &in, 0);
      break;
    case 5:
      step_end(w, &in, 1);
      break;
    case 6:
      step_end(w, &in, 2);
      break;
    case 7:
      step_free(w, &in);
      break;
    case 8:
      step_heartbeat(w, &in);
      break;
    case 9:
    case 10:
      step_clock(w, &in);
      break;
    case 11:
      step_wall(w, &in);
      break;
    case 12:
      step_purge(w, &in);
      break;
    case 13:
      step_reset(w, &in);
      break;
    case 14:
      if (next(&in) & 1)
        step_history(w, &in);
      else
        step_get(w, &in);
      break;
    default:
      if (next(&in) & 1)
        step_stats(w, &in);
      else
        step_refused(w, &in);
      break;
    }
  }

  /* Every key agrees with the model at the end, the file is sound, and
   * the handles close once their leases are freed. */
  g_step++;
  for (int i = 0; i < NKEYS; i++)
    CHECK(check_row(w, i) == (w->k[i].state != IDEM_STATE_ABSENT),
          "key %d: presence differs from the model at the end", i);
  for (int si = 0; si < NSLOTS; si++)
    if (w->s[si].status != L_EMPTY)
      idem_lease_free(w->s[si].lease);
  for (int h = 0; h < NHANDLES; h++)
    CHECK_RC(idem_close(w->db[h]), IDEM_OK, "idem_close");
  integrity(w->path);
  remove_db(w);
  for (int i = 0; i < NKEYS; i++)
    free(w->k[i].result);
  free(w->path);
  free(w->dir);
  free(w);
  return 0;
}
