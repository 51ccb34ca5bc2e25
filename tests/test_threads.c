/* SPDX-License-Identifier: MIT */
/*
 * test_threads.c - many threads on shared handles, and the heartbeat
 * thread.
 *
 * One idem_db may be used by any number of threads at once. Threads race
 * over shared keys through one handle and through several; each key must
 * be completed once and every thread must get the same result. The suite
 * is meant to be clean under ThreadSanitizer (IDEM_SANITIZE=thread), so
 * everything the threads share here is atomic or written before the
 * threads start and read after they are joined.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTHREADS 8
#define NKEYS 50
#define RESULT_MAX 48

static tu_fx *fx_of(void **state) {
  return *state;
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static int64_t real_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Real time a heartbeat thread gets to show a round before a test gives up:
 * far beyond a round's cost even under valgrind or TSan on a loaded
 * machine, so only a thread that does not refresh at all runs into it. */
#define ROUND_WAIT_MS 10000

/* Milliseconds left on the lease of `key`, as `db` reads its row. */
static int64_t lease_left(idem_db *db, const char *key) {
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(db, key, &r), IDEM_OK);
  int64_t left = r.lease_ms;
  idem_record_clear(&r);
  return left;
}

/* Moves the lease clock by step_ms, then waits until a heartbeat round has
 * pushed the lease of `key` back to a full ttl_ms. Only a round that read
 * the clock after the move can leave a full TTL on the row, so each call
 * witnesses a round that began after the previous call returned: n calls
 * in a row prove n distinct rounds. */
static void await_refresh(tu_clock *clock, idem_db *reader, const char *key,
                          int64_t ttl_ms, int64_t step_ms) {
  tu_clock_advance_lease(clock, step_ms);
  int64_t deadline = real_ms() + ROUND_WAIT_MS;
  int64_t left;
  while ((left = lease_left(reader, key)) != ttl_ms) {
    if (real_ms() > deadline)
      fail_msg("no heartbeat round refreshed \"%s\" within %d ms of real "
               "time: %lld ms left of %lld",
               key, ROUND_WAIT_MS, (long long)left, (long long)ttl_ms);
    sleep_us(2000);
  }
}

struct shared {
  idem_db *dbs[NTHREADS];
  int ndb;
  int use_run;
  pthread_barrier_t start;
  atomic_int runs[NKEYS]; /* job bodies executed per key */
  atomic_int error;       /* first unexpected code, as (line << 8 | -rc) */
  char results[NTHREADS][NKEYS][RESULT_MAX];
};

struct worker {
  struct shared *sh;
  int t;
  int key; /* the key of the current idem_run job */
};

static void note_error(struct shared *sh, int line, int rc) {
  int expected = 0;
  atomic_compare_exchange_strong(&sh->error, &expected,
                                 line * 256 + (rc < 0 ? -rc : rc));
}

/* The job body: counts the run and makes the result of this thread. */
static void job_body(struct worker *w, int k, char *result) {
  atomic_fetch_add(&w->sh->runs[k], 1);
  sleep_us(200);
  snprintf(result, RESULT_MAX, "key %d by thread %d", k, w->t);
}

static int run_job(void *ctx, idem_lease *lease) {
  struct worker *w = ctx;
  char result[RESULT_MAX];
  job_body(w, w->key, result);
  if (idem_lease_set_result(lease, result, strlen(result), 0) != IDEM_OK)
    note_error(w->sh, __LINE__, -1);
  return IDEM_JOB_DONE;
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct shared *sh = w->sh;
  idem_db *db = sh->dbs[w->t % sh->ndb];
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.wait_ms = 20000;
  pthread_barrier_wait(&sh->start);
  for (int j = 0; j < NKEYS; j++) {
    int k = w->t % 2 ? NKEYS - 1 - j : j;
    char key[16];
    snprintf(key, sizeof key, "key-%02d", k);
    char *result = sh->results[w->t][k];
    idem_answer a = IDEM_ANSWER_INIT;
    for (int tries = 0;; tries++) {
      int rc;
      if (sh->use_run) {
        w->key = k;
        rc = idem_run(db, key, strlen(key), &bo, run_job, w, &a);
      } else {
        rc = idem_begin(db, key, strlen(key), &bo, &a);
        if (rc == IDEM_CLAIMED) {
          job_body(w, k, result);
          int crc = idem_complete(a.lease, result, strlen(result));
          if (crc != IDEM_OK)
            note_error(sh, __LINE__, crc);
          idem_lease_free(a.lease);
          break;
        }
      }
      if (rc == IDEM_COMPLETED) {
        if (a.result_len >= RESULT_MAX)
          note_error(sh, __LINE__, rc);
        else
          memcpy(result, a.result, a.result_len + 1);
        break;
      }
      if (rc != IDEM_BUSY || tries > 50) {
        note_error(sh, __LINE__, rc);
        break;
      }
      idem_answer_clear(&a);
    }
    idem_answer_clear(&a);
  }
  return NULL;
}

/* Runs NTHREADS workers over NKEYS keys spread over `ndb` handles and
 * checks: no unexpected code, one job body per key, one result per key
 * that every thread and the database agree on. */
static void run_threads(tu_fx *fx, int ndb, int use_run) {
  struct shared *sh = calloc(1, sizeof *sh);
  assert_non_null(sh);
  idem_options o = tu_options(NULL);
  o.ttl_ms = 30000;
  o.heartbeat_ms = 0; /* background heartbeat thread on every handle */
  for (int i = 0; i < ndb; i++)
    assert_int_equal(tu_open(&sh->dbs[i], fx->path, &o), IDEM_OK);
  sh->ndb = ndb;
  sh->use_run = use_run;
  for (int k = 0; k < NKEYS; k++)
    atomic_init(&sh->runs[k], 0);
  atomic_init(&sh->error, 0);
  assert_int_equal(pthread_barrier_init(&sh->start, NULL, NTHREADS), 0);

  pthread_t th[NTHREADS];
  struct worker w[NTHREADS];
  for (int t = 0; t < NTHREADS; t++) {
    w[t].sh = sh;
    w[t].t = t;
    w[t].key = -1;
    assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
  }
  for (int t = 0; t < NTHREADS; t++)
    assert_int_equal(pthread_join(th[t], NULL), 0);
  pthread_barrier_destroy(&sh->start);

  int err = atomic_load(&sh->error);
  if (err != 0)
    fail_msg("a worker got %s at line %d", idem_errstr(-(err % 256)),
             err / 256);
  for (int k = 0; k < NKEYS; k++) {
    int runs = atomic_load(&sh->runs[k]);
    if (runs != 1)
      fail_msg("key-%02d: the job body ran %d times", k, runs);
    for (int t = 1; t < NTHREADS; t++)
      if (strcmp(sh->results[t][k], sh->results[0][k]) != 0)
        fail_msg("key-%02d: thread 0 got \"%s\", thread %d \"%s\"", k,
                 sh->results[0][k], t, sh->results[t][k]);
    char key[16];
    snprintf(key, sizeof key, "key-%02d", k);
    tu_assert_completed(sh->dbs[0], key, sh->results[0][k]);
  }
  idem_stats st = tu_stats(sh->dbs[0]);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], NKEYS);
  for (int i = 0; i < ndb; i++)
    assert_int_equal(idem_close(sh->dbs[i]), IDEM_OK);
  free(sh);
}

/* Eight threads share one handle with begin/complete. */
static void test_threads_one_handle(void **state) {
  run_threads(fx_of(state), 1, 0);
}

/* Eight threads over four handles (two each) with begin/complete. */
static void test_threads_four_handles(void **state) {
  run_threads(fx_of(state), 4, 0);
}

/* Eight threads on one handle with idem_run and a wait: waiters are woken
 * by completions of the same handle. */
static void test_threads_run_one_handle(void **state) {
  run_threads(fx_of(state), 1, 1);
}

/* Eight threads over four handles with idem_run and a wait. */
static void test_threads_run_four_handles(void **state) {
  run_threads(fx_of(state), 4, 1);
}

/* The background heartbeat keeps a lease alive well past its TTL while the
 * holder works: the fake clock moves a quarter of the TTL at a time, four
 * TTLs in all, and after each move the thread must bring the deadline back
 * to a full TTL by itself. Another handle sees BUSY throughout, and the
 * holder can complete at the end. */
static void test_heartbeat_thread_keeps_lease(void **state) {
  tu_fx *fx = fx_of(state);
  const int64_t ttl = fx->opts.ttl_ms;
  idem_options o = fx->opts;
  o.heartbeat_ms = 20; /* real ms; the deadlines it writes are fake time */
  idem_db *holder = NULL, *other = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &o), IDEM_OK);
  assert_int_equal(tu_open(&other, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = tu_claim(holder, "long-job");
  idem_answer a = IDEM_ANSWER_INIT;
  for (int step = 0; step < 16; step++) {
    await_refresh(&fx->clock, other, "long-job", ttl, ttl / 4);
    int rc = tu_begin(other, "long-job", &a);
    if (rc != IDEM_BUSY)
      fail_msg("the lease lapsed while the holder was alive: %s",
               idem_errstr(rc));
    assert_true(a.lease_ms > 0 && a.lease_ms <= ttl);
    assert_int_equal(idem_lease_lost(l), 0);
  }
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(l, "finished", 8), IDEM_OK);
  idem_lease_free(l);
  tu_assert_completed(other, "long-job", "finished");
  assert_int_equal(idem_close(other), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

/* When a lease is revoked (here by idem_reset on another handle), the
 * background heartbeat finds out by itself: idem_lease_lost() becomes
 * non-zero for the job polling it from its own thread, on_lost is told
 * exactly once with that lease, and the handle counts it. A second lease
 * of the holder, which stays alive, shows on the fake clock how many rounds
 * have run, so "once" is checked across rounds that surely happened. */
static void test_heartbeat_thread_reports_lost(void **state) {
  tu_fx *fx = fx_of(state);
  tu_lost seen;
  idem_options o = fx->opts;
  o.heartbeat_ms = 20;
  tu_lost_watch(&seen, &o);
  idem_db *holder = NULL, *admin = NULL;
  assert_int_equal(tu_open(&holder, fx->path, &o), IDEM_OK);
  assert_int_equal(tu_open(&admin, fx->path, &fx->opts), IDEM_OK);
  const int64_t ttl = fx->opts.ttl_ms;
  idem_lease *l = tu_claim(holder, "k");
  idem_lease *witness = tu_claim(holder, "witness");
  /* Each round that refreshes "k" has found it alive. */
  for (int i = 0; i < 3; i++)
    await_refresh(&fx->clock, admin, "k", ttl, ttl / 10);
  assert_int_equal(idem_lease_lost(l), 0);
  assert_int_equal(atomic_load(&seen.calls), 0);

  assert_int_equal(idem_reset(admin, "k", 1), IDEM_OK);
  int64_t deadline = real_ms() + ROUND_WAIT_MS;
  while (!idem_lease_lost(l) && real_ms() < deadline)
    sleep_us(2000);
  assert_true(idem_lease_lost(l) != 0);
  /* The round that marked the lease lost tells on_lost after marking it;
   * these rounds begin after that one has ended, and must not tell again. */
  for (int i = 0; i < 3; i++)
    await_refresh(&fx->clock, admin, "witness", ttl, ttl / 10);
  assert_int_equal(atomic_load(&seen.calls), 1);
  assert_ptr_equal(atomic_load(&seen.lease), l);
  assert_int_equal(idem_lease_lost(witness), 0);
  idem_stats st = tu_stats(holder);
  assert_int_equal(st.lost, 1);
  assert_int_equal(idem_complete(l, "stale", 5), IDEM_ELEASELOST);
  idem_lease_free(l);
  assert_int_equal(idem_complete(witness, "alive", 5), IDEM_OK);
  idem_lease_free(witness);
  assert_int_equal(idem_close(admin), IDEM_OK);
  assert_int_equal(idem_close(holder), IDEM_OK);
}

/* --- Short leases: takeovers under load ---------------------------------
 * Threads claim, heartbeat and complete keys whose leases last 20 ms of a
 * fake clock that a clock thread moves about 2 ms every 100 us of real
 * time, so leases run out all the time: each handle's heartbeat thread,
 * the holders' own idem_heartbeat() calls, begins that take expired keys
 * over and completions of overtaken holders all race. Every third claim
 * pauses with the clock jumping past its TTL, so takeovers surely happen.
 * From what the threads saw, after they are joined:
 *  - no fence was granted twice for a key;
 *  - each key was completed exactly once, by the holder of its highest
 *    fence (a completion under any older fence would have overwritten a
 *    newer holder's claim);
 *  - every claim but the completing one ended in IDEM_ELEASELOST, with
 *    idem_lease_lost() set: each extra run of a job is a lost lease;
 *  - every thread saw the one stored result. */

#define ST_THREADS 8
#define ST_KEYS 20
#define ST_TTL 20
#define ST_MAX_CLAIMS 4096

struct st_key {
  pthread_mutex_t mu;
  uint64_t fences[ST_MAX_CLAIMS]; /* granted, in the order seen */
  unsigned nclaims;
  unsigned nlost;
  unsigned ncompleted;
  uint64_t completed_fence;
  char result[RESULT_MAX];
};

struct st_shared {
  idem_db *dbs[ST_THREADS];
  int ndb;
  tu_clock clock;
  atomic_int stop_clock;
  atomic_int error;
  pthread_barrier_t start;
  struct st_key keys[ST_KEYS];
  char seen[ST_THREADS][ST_KEYS][RESULT_MAX];
};

struct st_worker {
  struct st_shared *sh;
  int t;
};

static void st_error(struct st_shared *sh, int line, int rc) {
  int expected = 0;
  atomic_compare_exchange_strong(&sh->error, &expected,
                                 line * 256 + (rc < 0 ? -rc : rc));
}

static void *st_clock_main(void *arg) {
  struct st_shared *sh = arg;
  while (!atomic_load(&sh->stop_clock)) {
    tu_clock_advance(&sh->clock, 2);
    sleep_us(100);
  }
  return NULL;
}

/* The job: a few slices of work with a heartbeat between them; or, on
 * every third claim, a pause as a suspended or descheduled process makes
 * one: the clock jumps past the TTL again and again with no heartbeat
 * from this thread, until the lease is found lost or 20 ms have passed. A
 * heartbeat of another thread on the same handle refreshes this lease too,
 * so the jumps are what lets a begin in between take it over. */
static void st_work(struct st_worker *w, idem_db *db, idem_lease *l,
                    unsigned nth) {
  if (nth % 3 == 2) {
    for (int i = 0; i < 100 && !idem_lease_lost(l); i++) {
      tu_clock_advance(&w->sh->clock, 2 * ST_TTL);
      sleep_us(200);
    }
    return;
  }
  for (int i = 0; i < 4 && !idem_lease_lost(l); i++) {
    sleep_us(150);
    unsigned lost = 0;
    int rc = idem_heartbeat(db, &lost);
    if (rc != IDEM_OK)
      st_error(w->sh, __LINE__, rc);
  }
}

static void st_claimed(struct st_worker *w, idem_db *db, int k, idem_answer *a,
                       unsigned *nth) {
  struct st_key *key = &w->sh->keys[k];
  idem_lease *l = a->lease;
  uint64_t fence = a->fence;
  pthread_mutex_lock(&key->mu);
  if (key->nclaims < ST_MAX_CLAIMS)
    key->fences[key->nclaims] = fence;
  key->nclaims++;
  pthread_mutex_unlock(&key->mu);

  st_work(w, db, l, (*nth)++);
  char result[RESULT_MAX];
  snprintf(result, sizeof result, "key %d fence %llu thread %d", k,
           (unsigned long long)fence, w->t);
  int rc = idem_complete(l, result, strlen(result));
  pthread_mutex_lock(&key->mu);
  if (rc == IDEM_OK) {
    key->ncompleted++;
    key->completed_fence = fence;
    memcpy(key->result, result, sizeof result);
  } else if (rc == IDEM_ELEASELOST) {
    key->nlost++;
    if (!idem_lease_lost(l))
      st_error(w->sh, __LINE__, rc);
  } else {
    st_error(w->sh, __LINE__, rc);
  }
  pthread_mutex_unlock(&key->mu);
  idem_lease_free(l);
}

static void *st_worker_main(void *arg) {
  struct st_worker *w = arg;
  struct st_shared *sh = w->sh;
  idem_db *db = sh->dbs[w->t % sh->ndb];
  unsigned nth = (unsigned)w->t; /* threads stall on different claims */
  pthread_barrier_wait(&sh->start);
  for (int j = 0; j < ST_KEYS; j++) {
    int k = (j + w->t * 3) % ST_KEYS;
    char key[16];
    snprintf(key, sizeof key, "short-%02d", k);
    idem_answer a = IDEM_ANSWER_INIT;
    for (long tries = 0;; tries++) {
      idem_answer_clear(&a);
      int rc = idem_begin(db, key, strlen(key), NULL, &a);
      if (rc == IDEM_COMPLETED) {
        if (a.result_len >= RESULT_MAX)
          st_error(sh, __LINE__, rc);
        else
          memcpy(sh->seen[w->t][k], a.result, a.result_len + 1);
        break;
      }
      if (rc == IDEM_CLAIMED) {
        st_claimed(w, db, k, &a, &nth);
        a.lease = NULL;
      } else if (rc == IDEM_BUSY && tries < 200000) {
        sleep_us(50);
      } else {
        st_error(sh, __LINE__, rc);
        break;
      }
    }
    idem_answer_clear(&a);
  }
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void run_short_ttl(tu_fx *fx, int ndb) {
  struct st_shared *sh = calloc(1, sizeof *sh);
  assert_non_null(sh);
  tu_clock_init(&sh->clock);
  atomic_init(&sh->stop_clock, 0);
  atomic_init(&sh->error, 0);
  idem_options o = tu_options(&sh->clock);
  o.ttl_ms = ST_TTL;
  o.heartbeat_ms = 3; /* real ms: the thread refreshes on the fake clock */
  o.max_attempts = 0; /* takeovers must never poison a key here */
  for (int i = 0; i < ndb; i++)
    assert_int_equal(tu_open(&sh->dbs[i], fx->path, &o), IDEM_OK);
  sh->ndb = ndb;
  for (int k = 0; k < ST_KEYS; k++)
    assert_int_equal(pthread_mutex_init(&sh->keys[k].mu, NULL), 0);
  assert_int_equal(pthread_barrier_init(&sh->start, NULL, ST_THREADS), 0);

  pthread_t clock_th, th[ST_THREADS];
  struct st_worker w[ST_THREADS];
  assert_int_equal(pthread_create(&clock_th, NULL, st_clock_main, sh), 0);
  for (int t = 0; t < ST_THREADS; t++) {
    w[t].sh = sh;
    w[t].t = t;
    assert_int_equal(pthread_create(&th[t], NULL, st_worker_main, &w[t]), 0);
  }
  for (int t = 0; t < ST_THREADS; t++)
    assert_int_equal(pthread_join(th[t], NULL), 0);
  atomic_store(&sh->stop_clock, 1);
  assert_int_equal(pthread_join(clock_th, NULL), 0);
  pthread_barrier_destroy(&sh->start);

  int err = atomic_load(&sh->error);
  if (err != 0)
    fail_msg("a worker got %s at line %d", idem_errstr(-(err % 256)),
             err / 256);
  unsigned takeovers = 0;
  for (int k = 0; k < ST_KEYS; k++) {
    struct st_key *key = &sh->keys[k];
    assert_true(key->nclaims <= ST_MAX_CLAIMS);
    if (key->ncompleted != 1)
      fail_msg("short-%02d: completed %u times", k, key->ncompleted);
    if (key->nclaims != 1 + key->nlost)
      fail_msg("short-%02d: %u claims, but %u lost leases besides the "
               "completion",
               k, key->nclaims, key->nlost);
    qsort(key->fences, key->nclaims, sizeof key->fences[0], cmp_u64);
    for (unsigned i = 1; i < key->nclaims; i++)
      if (key->fences[i] == key->fences[i - 1])
        fail_msg("short-%02d: fence %llu granted twice", k,
                 (unsigned long long)key->fences[i]);
    uint64_t top = key->fences[key->nclaims - 1];
    if (key->completed_fence != top)
      fail_msg("short-%02d: completed under fence %llu, but fence %llu was "
               "granted",
               k, (unsigned long long)key->completed_fence,
               (unsigned long long)top);
    for (int t = 0; t < ST_THREADS; t++)
      if (strcmp(sh->seen[t][k], key->result) != 0)
        fail_msg("short-%02d: thread %d saw \"%s\", stored \"%s\"", k, t,
                 sh->seen[t][k], key->result);
    char name[16];
    snprintf(name, sizeof name, "short-%02d", k);
    tu_assert_completed(sh->dbs[0], name, key->result);
    idem_record r = IDEM_RECORD_INIT;
    assert_int_equal(tu_get(sh->dbs[0], name, &r), IDEM_OK);
    assert_int_equal(r.fence, top);
    assert_int_equal(r.attempts, key->nclaims);
    idem_record_clear(&r);
    takeovers += key->nlost;
    pthread_mutex_destroy(&key->mu);
  }
  /* The pauses must have caused takeovers, or nothing above was tested. */
  print_message("%d handle(s): %u lease(s) taken over\n", ndb, takeovers);
  if (takeovers == 0)
    fail_msg("no lease was ever taken over");
  for (int i = 0; i < ndb; i++)
    assert_int_equal(idem_close(sh->dbs[i]), IDEM_OK);
  free(sh);
}

/* Eight threads on one handle, short leases. */
static void test_short_ttl_one_handle(void **state) {
  run_short_ttl(fx_of(state), 1);
}

/* Eight threads on eight handles, short leases. */
static void test_short_ttl_many_handles(void **state) {
  run_short_ttl(fx_of(state), ST_THREADS);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_threads_one_handle),
      T(test_threads_four_handles),
      T(test_threads_run_one_handle),
      T(test_threads_run_four_handles),
      T(test_heartbeat_thread_keeps_lease),
      T(test_heartbeat_thread_reports_lost),
      T(test_short_ttl_one_handle),
      T(test_short_ttl_many_handles),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
