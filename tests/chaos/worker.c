/* SPDX-License-Identifier: MIT */
/*
 * worker.c - one process of the chaos scenarios (see chaos.c).
 *
 * Every call a worker makes is recorded as JSON lines in its own history
 * file: an "invoke" line before the call and an "ok", "fail" or "unknown"
 * line after it, so that a worker killed inside a call leaves an invoke
 * without an answer, which the checker reads as "may or may not have
 * happened". A job body records an "exec" line before its side effect.
 * Each line goes out in a single write() on an O_APPEND descriptor: a
 * SIGKILL can cut the last line short but never mix two lines.
 *
 * Usage:
 *   chaos_worker chaos  DB HISTDIR NAME SEED UNTIL_NS   random work
 *   chaos_worker settle DB HISTDIR NAME                 finish every key
 *   chaos_worker hold   DB HISTDIR NAME KEY             claim, then wait
 *   chaos_worker take   DB HISTDIR NAME KEY             claim and complete
 * UNTIL_NS is a CLOCK_MONOTONIC reading at which the worker stops.
 * Exit codes: 0 done, 2 usage, 3 open or files, 4 an unexpected answer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chaos.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_USAGE = 2, EXIT_FILES = 3, EXIT_ANSWER = 4 };

static int hist_fd = -1;
static int effects_fd = -1;
static pthread_t main_thread;
static atomic_uint lost_by_thread;
static atomic_uint lost_by_main;
/* The key of the lease held now, for on_lost, which the API tells only
 * the lease; a worker holds one lease at a time. */
static atomic_int held_key = -1;

static _Noreturn void die(int code, const char *what) {
  fprintf(stderr, "chaos_worker %ld: %s\n", (long)getpid(), what);
  exit(code);
}

/* Appends one line: the common fields, then `fmt` (JSON members, no
 * leading comma; may be empty). One write() keeps lines whole under SIGKILL,
 * so a short write is not retried: a torn line is better than a line made
 * of two pieces with another process's line between them. */
static void rec(const char *op, const char *phase, const char *key,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void rec(const char *op, const char *phase, const char *key,
                const char *fmt, ...) {
  char extra[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(extra, sizeof extra, fmt, ap);
  va_end(ap);
  char line[512];
  int n = snprintf(line, sizeof line,
                   "{\"op\":\"%s\",\"phase\":\"%s\",\"key\":\"%s\",\"pid\":%ld,"
                   "\"t\":%" PRId64 "%s%s",
                   op, phase, key ? key : "", (long)getpid(), chaos_now_ns(),
                   extra[0] ? "," : "", extra);
  if (n > (int)sizeof line - 3)
    die(EXIT_FILES, "history line too long");
  line[n++] = '}';
  line[n++] = '\n';
  if (write(hist_fd, line, (size_t)n) != n)
    die(EXIT_FILES, "writing the history");
}

/* The answer of a begin, named as the checker expects it: idem_errstr()'s
 * name of the answer, or "error". */
static const char *answer_name(int rc) {
  return rc > 0 ? idem_errstr(rc) : "error";
}

/* Phase of a finishing call: IDEM_EUNKNOWN is the one answer after which
 * the write may or may not have landed. */
static const char *end_phase(int rc) {
  return rc == IDEM_OK ? "ok" : rc == IDEM_EUNKNOWN ? "unknown" : "fail";
}

/* Told from a heartbeat round (the thread's or idem_heartbeat()'s) that a
 * lease of this handle was taken over. */
static void on_lost(void *ctx, idem_lease *lease) {
  (void)ctx;
  int by_thread = !pthread_equal(pthread_self(), main_thread);
  atomic_fetch_add(by_thread ? &lost_by_thread : &lost_by_main, 1);
  char key[16] = "";
  int k = atomic_load(&held_key);
  if (k >= 0)
    chaos_key(key, sizeof key, k);
  rec("heartbeat", "ok", key,
      "\"lost\":1,\"by\":\"%s\",\"fence\":%" PRIu64 ",\"attempt\":%" PRIu32,
      by_thread ? "thread" : "call", idem_lease_fence(lease),
      idem_lease_attempt(lease));
}

static idem_db *open_db(const char *path, int64_t ttl_ms) {
  idem_options o = IDEM_OPTIONS_INIT;
  o.ttl_ms = ttl_ms;
  o.heartbeat_ms = 0; /* the background thread, as in production */
  o.max_attempts = CHAOS_MAX_ATTEMPTS;
  o.retention_ms = 0;
  o.on_lost = on_lost;
  idem_db *db = NULL;
  int rc = idem_open(&db, path, &o);
  if (rc != IDEM_OK) {
    fprintf(stderr, "idem_open: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
    die(EXIT_FILES, "cannot open the database");
  }
  return db;
}

static void open_files(const char *histdir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.jsonl", histdir, name);
  hist_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  snprintf(path, sizeof path, "%s/" CHAOS_EFFECTS, histdir);
  effects_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (hist_fd < 0 || effects_fd < 0)
    die(EXIT_FILES, "cannot open the history or effects file");
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* splitmix64: each worker draws its own decisions from its own seed, so a
 * run's choices do not depend on how the processes were scheduled. */
static uint64_t rnd_state;
static uint64_t rnd(void) {
  uint64_t z = (rnd_state += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}
static int64_t rnd_between(int64_t lo, int64_t hi) {
  return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

/* A begin, recorded. The answer stays in *a for the caller. */
static int do_begin(idem_db *db, const char *key, int64_t wait_ms,
                    idem_answer *a) {
  idem_answer_clear(a);
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.wait_ms = wait_ms;
  rec("begin", "invoke", key, "\"wait_ms\":%" PRId64, wait_ms);
  int rc = idem_begin(db, key, strlen(key), &bo, a);
  if (rc == IDEM_CLAIMED)
    atomic_store(&held_key, atoi(key + strlen(CHAOS_KEY_PREFIX)));
  char hash[20] = "";
  if (rc == IDEM_COMPLETED || rc == IDEM_FAILED)
    snprintf(hash, sizeof hash, "%016" PRIx64,
             chaos_hash(a->result, a->result_len));
  rec("begin", rc > 0 ? "ok" : "fail", key,
      "\"answer\":\"%s\",\"rc\":%d,\"attempt\":%" PRIu32 ",\"fence\":%" PRIu64
      ",\"result_hash\":\"%s\"",
      answer_name(rc), rc, a->attempts, a->fence, hash);
  return rc;
}

/* The job body: recorded first, then a side effect that carries the
 * fence (as the manual asks of real side effects), then the work. With
 * `beat`, an explicit heartbeat halfway through. */
static void do_exec(idem_db *db, const char *key, idem_lease *l, int64_t ms,
                    int beat) {
  uint64_t fence = idem_lease_fence(l);
  rec("exec", "ok", key, "\"attempt\":%" PRIu32 ",\"fence\":%" PRIu64,
      idem_lease_attempt(l), fence);
  char line[128];
  int n = snprintf(line, sizeof line, "%s %" PRIu64 " %ld\n", key, fence,
                   (long)getpid());
  if (write(effects_fd, line, (size_t)n) != n)
    die(EXIT_FILES, "writing the side effect");
  sleep_ms(ms / 2);
  if (beat) {
    unsigned lost = 0;
    rec("heartbeat", "invoke", key, "\"fence\":%" PRIu64, fence);
    int rc = idem_heartbeat(db, &lost);
    rec("heartbeat", rc == IDEM_OK ? "ok" : "fail", key,
        "\"fence\":%" PRIu64 ",\"rc\":%d,\"lost\":%u", fence, rc, lost);
  }
  sleep_ms(ms - ms / 2);
}

static void make_result(const char *key, idem_lease *l, char *buf, size_t n) {
  snprintf(buf, n, "%s fence %" PRIu64 " attempt %" PRIu32 " pid %ld", key,
           idem_lease_fence(l), idem_lease_attempt(l), (long)getpid());
}

enum { END_COMPLETE, END_RELEASE, END_FAIL };
static const char *const end_name[] = {"complete", "release", "fail"};

/* One finishing call, recorded. A complete carries the hash of the result
 * it tries to store, so that an unanswered one can be matched with what
 * the database holds. */
static int do_end(const char *key, idem_lease *l, int how) {
  char result[128];
  make_result(key, l, result, sizeof result);
  uint64_t fence = idem_lease_fence(l);
  uint64_t h = chaos_hash(result, strlen(result));
  rec(end_name[how], "invoke", key,
      "\"attempt\":%" PRIu32 ",\"fence\":%" PRIu64
      ",\"result_hash\":\"%016" PRIx64 "\"",
      idem_lease_attempt(l), fence, h);
  int rc;
  if (how == END_COMPLETE)
    rc = idem_complete(l, result, strlen(result));
  else if (how == END_RELEASE)
    rc = idem_release(l, "chaos");
  else
    rc = idem_fail(l, 7, result, strlen(result));
  rec(end_name[how], end_phase(rc), key,
      "\"attempt\":%" PRIu32 ",\"fence\":%" PRIu64 ",\"rc\":%d,"
      "\"result_hash\":\"%016" PRIx64 "\"",
      idem_lease_attempt(l), fence, rc, h);
  return rc;
}

/* Finishes a held lease the chosen way. A storage error leaves the lease
 * held, so the call is repeated; IDEM_EUNKNOWN is settled by calling
 * again, as the manual says. Gives up with a release, which is fenced
 * too, so that the worker never leaves a lease to idem_lease_free(). */
static void finish(const char *key, idem_lease *l, int how) {
  for (int i = 0; i < 5; i++) {
    int rc = do_end(key, l, how);
    if (rc == IDEM_OK || rc == IDEM_ELEASELOST || rc == IDEM_EMISUSE)
      return;
  }
  if (how != END_RELEASE)
    (void)do_end(key, l, END_RELEASE);
}

static int run_chaos(idem_db *db, uint64_t seed, int64_t until_ns) {
  rnd_state = seed;
  idem_answer a = IDEM_ANSWER_INIT;
  while (chaos_now_ns() < until_ns) {
    char key[16];
    chaos_key(key, sizeof key, (int)(rnd() % CHAOS_NKEYS));
    int rc = do_begin(db, key, rnd_between(0, 200), &a);
    if (rc == IDEM_CLAIMED) {
      idem_lease *l = a.lease;
      a.lease = NULL;
      do_exec(db, key, l, rnd_between(5, 30), rnd() % 5 == 0);
      int64_t r = rnd_between(0, 99);
      /* Many releases: with CHAOS_MAX_ATTEMPTS, some keys get poisoned. */
      finish(key, l, r < 45 ? END_COMPLETE : r < 90 ? END_RELEASE : END_FAIL);
      idem_lease_free(l);
    } else {
      /* Cached and busy answers are quick: without a pause the history
       * would fill with them and drown the claims. */
      sleep_ms(rnd_between(1, 4));
    }
  }
  idem_answer_clear(&a);
  return 0;
}

/* Brings every key to completed, resetting the failed and poisoned ones
 * (an operator's move, recorded so the checker knows the key starts
 * over), then reads every key once more. */
static int run_settle(idem_db *db) {
  idem_answer a = IDEM_ANSWER_INIT;
  int bad = 0;
  for (int k = 0; k < CHAOS_NKEYS; k++) {
    char key[16];
    chaos_key(key, sizeof key, k);
    int done = 0;
    for (int tries = 0; !done && tries < 10; tries++) {
      int rc = do_begin(db, key, CHAOS_SETTLE_WAIT_MS, &a);
      if (rc == IDEM_CLAIMED) {
        idem_lease *l = a.lease;
        a.lease = NULL;
        do_exec(db, key, l, 5, 0);
        done = do_end(key, l, END_COMPLETE) == IDEM_OK;
        if (!done)
          (void)do_end(key, l, END_RELEASE);
        idem_lease_free(l);
      } else if (rc == IDEM_COMPLETED) {
        done = 1;
      } else if (rc == IDEM_FAILED || rc == IDEM_POISONED) {
        rec("reset", "invoke", key, "%s", "");
        int r = idem_reset(db, key, strlen(key));
        rec("reset", r == IDEM_OK ? "ok" : "fail", key, "\"rc\":%d", r);
      }
    }
    if (!done) {
      fprintf(stderr, "settle: %s not completed\n", key);
      bad = 1;
    }
  }
  for (int k = 0; k < CHAOS_NKEYS; k++) {
    char key[16];
    chaos_key(key, sizeof key, k);
    if (do_begin(db, key, 0, &a) != IDEM_COMPLETED)
      bad = 1;
  }
  idem_answer_clear(&a);
  return bad ? EXIT_ANSWER : 0;
}

/* Scenario 2, the first holder: claims, runs the job, says "claimed FENCE"
 * on stdout and waits for a line on stdin. The driver stops it past its
 * TTL meanwhile. Then every call a stale holder could make, each reported
 * on stdout for the driver to judge. */
static int run_hold(idem_db *db, const char *key) {
  idem_answer a = IDEM_ANSWER_INIT;
  if (do_begin(db, key, 0, &a) != IDEM_CLAIMED)
    return EXIT_ANSWER;
  idem_lease *l = a.lease;
  do_exec(db, key, l, 5, 0);
  printf("claimed %" PRIu64 "\n", idem_lease_fence(l));
  fflush(stdout);
  char go[16];
  if (fgets(go, sizeof go, stdin) == NULL)
    return EXIT_FILES;

  unsigned lost = 0;
  rec("heartbeat", "invoke", key, "\"fence\":%" PRIu64, idem_lease_fence(l));
  int hb = idem_heartbeat(db, &lost);
  rec("heartbeat", hb == IDEM_OK ? "ok" : "fail", key,
      "\"fence\":%" PRIu64 ",\"rc\":%d,\"lost\":%u", idem_lease_fence(l), hb,
      lost);
  int is_lost = idem_lease_lost(l);
  int c = do_end(key, l, END_COMPLETE);
  int r = do_end(key, l, END_RELEASE);
  int f = do_end(key, l, END_FAIL);
  printf("hb %d hb_lost %u by_thread %u by_call %u lease_lost %d complete %d "
         "release %d fail %d\n",
         hb, lost, atomic_load(&lost_by_thread), atomic_load(&lost_by_main),
         is_lost, c, r, f);
  fflush(stdout);
  idem_lease_free(l);
  idem_answer_clear(&a);
  return 0;
}

/* Scenario 2, the successor: claims the key the paused holder lost and
 * completes it. */
static int run_take(idem_db *db, const char *key) {
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = do_begin(db, key, 0, &a);
  if (rc != IDEM_CLAIMED) {
    fprintf(stderr, "take: %s answered %s\n", key, idem_errstr(rc));
    idem_answer_clear(&a);
    return EXIT_ANSWER;
  }
  idem_lease *l = a.lease;
  do_exec(db, key, l, 5, 0);
  rc = do_end(key, l, END_COMPLETE);
  idem_lease_free(l);
  idem_answer_clear(&a);
  return rc == IDEM_OK ? 0 : EXIT_ANSWER;
}

int main(int argc, char **argv) {
  if (argc < 5)
    die(EXIT_USAGE, "usage: chaos_worker MODE DB HISTDIR NAME ...");
  main_thread = pthread_self();
  const char *mode = argv[1], *dbpath = argv[2];
  open_files(argv[3], argv[4]);
  int rc;
  if (strcmp(mode, "chaos") == 0 && argc == 7) {
    idem_db *db = open_db(dbpath, CHAOS_TTL_MS);
    rc = run_chaos(db, strtoull(argv[5], NULL, 10),
                   (int64_t)strtoll(argv[6], NULL, 10));
    idem_close(db);
  } else if (strcmp(mode, "settle") == 0 && argc == 5) {
    idem_db *db = open_db(dbpath, CHAOS_TTL_MS);
    rc = run_settle(db);
    idem_close(db);
  } else if (strcmp(mode, "hold") == 0 && argc == 6) {
    idem_db *db = open_db(dbpath, CHAOS_STALE_TTL_MS);
    rc = run_hold(db, argv[5]);
    idem_close(db);
  } else if (strcmp(mode, "take") == 0 && argc == 6) {
    idem_db *db = open_db(dbpath, CHAOS_STALE_TTL_MS);
    rc = run_take(db, argv[5]);
    idem_close(db);
  } else {
    die(EXIT_USAGE, "unknown mode or wrong number of arguments");
  }
  return rc;
}
