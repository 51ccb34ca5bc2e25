/* SPDX-License-Identifier: MIT */
/*
 * demo.c - libidem in one minute.
 *
 * Three scenes, each with its expectations checked, so that the demo is
 * also a test:
 *
 *   1. A race. Eight processes ask for the same three keys at the same
 *      moment. For each key one of them runs the job, once; the others wait
 *      and are handed its result.
 *   2. A crash, then a hang. The holder of a key is killed in the middle
 *      of its job: the next caller claims the key at once, with a higher
 *      fencing token, long before the dead holder's lease would end. That
 *      new holder then hangs (it is stopped), which nobody can tell from a
 *      slow job: the key stays locked for exactly what is left of its
 *      lease, then the next caller claims it; when the stopped holder goes
 *      on, its result is refused.
 *   3. Poison. A job that always fails is retried until max_attempts claims
 *      are spent; then the key stops running and on_poison is told once.
 *
 * Usage: demo [DATABASE]
 * Without an argument the database is a file in a fresh temporary directory
 * that is removed at the end. Given one, the demo resets its own keys in it
 * first, so it can be run again on the same file.
 * Exit status: 0 when every expectation held, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <idem.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 8
#define NKEYS 3
#define JOB_MS 200
#define KILLED_TTL_MS 30000 /* never waited out: the holder is dead */
#define HUNG_TTL_MS 1000    /* waited out: the holder may only be slow */
#define POISON_MAX 3

static const char *const race_keys[NKEYS] = {"invoice-1001", "invoice-1002",
                                             "invoice-1003"};
static const char *const crash_key = "invoice-2001";
static const char *const poison_key = "invoice-3001";

static char tmp_dir[4000]; /* shorter, so that names joined to it fit */
static char db_path[4096];
static char log_path[4096];
static int failures;

/* --- Small helpers ------------------------------------------------------ */

#ifdef __GNUC__
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

static void expect(int ok, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void expect(int ok, const char *fmt, ...) {
  va_list ap;

  if (ok)
    return;
  failures++;
  fflush(stdout);
  fputs("   EXPECTATION FAILED: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* A failed library call: the code's name and the handle's own account. */
static void report(const char *what, int rc, const idem_db *db) {
  fflush(stdout);
  fprintf(stderr, "demo: %s: %s", what, idem_errstr(rc));
  if (db && idem_errmsg(db)[0])
    fprintf(stderr, " (%s)", idem_errmsg(db));
  fputc('\n', stderr);
}

static const char *answer_name(int rc) {
  switch (rc) {
  case IDEM_CLAIMED:
    return "IDEM_CLAIMED";
  case IDEM_COMPLETED:
    return "IDEM_COMPLETED";
  case IDEM_FAILED:
    return "IDEM_FAILED";
  case IDEM_BUSY:
    return "IDEM_BUSY";
  case IDEM_POISONED:
    return "IDEM_POISONED";
  case IDEM_RELEASED:
    return "IDEM_RELEASED";
  case IDEM_ELEASELOST:
    return "IDEM_ELEASELOST";
  default:
    return idem_errstr(rc);
  }
}

static int64_t now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* Whether snprintf's answer n means the whole text fitted in cap bytes. */
static int fits(int n, size_t cap) {
  return n >= 0 && (size_t)n < cap;
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The job's visible side effect. O_APPEND and one write per line keep the
 * lines of concurrent processes whole, so counting them counts executions. */
static int log_execution(const char *key, uint64_t fence) {
  char line[256];
  int fd, rc;
  int n = snprintf(line, sizeof line, "%s pid=%ld fence=%" PRIu64 "\n", key,
                   (long)getpid(), fence);

  if (!fits(n, sizeof line))
    return -1;
  fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) {
    perror(log_path);
    return -1;
  }
  rc = write_all(fd, line, (size_t)n);
  if (close(fd) != 0)
    rc = -1;
  if (rc != 0)
    perror(log_path);
  return rc;
}

static int count_executions(const char *key) {
  char line[256];
  size_t klen = strlen(key);
  int count = 0;
  FILE *f = fopen(log_path, "r");

  if (!f)
    return 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
      count++;
  fclose(f);
  return count;
}

static int open_db(idem_db **db, const idem_options *opts) {
  int rc = idem_open(db, db_path, opts);

  if (rc != IDEM_OK) {
    report("idem_open", rc, *db);
    idem_close(*db);
    *db = NULL;
  }
  return rc;
}

static void close_db(idem_db *db) {
  int rc = idem_close(db);

  if (rc != IDEM_OK) {
    report("idem_close", rc, db);
    failures++;
  }
}

/* The stored row must say completed, with this result and attempt count. */
static void expect_stored(idem_db *db, const char *key, const char *result,
                          uint32_t attempts) {
  idem_record rec = IDEM_RECORD_INIT;
  int rc = idem_get(db, key, strlen(key), &rec);

  if (rc != IDEM_OK) {
    report("idem_get", rc, db);
    failures++;
    return;
  }
  expect(rec.state == IDEM_STATE_COMPLETED, "%s: stored state %d", key,
         rec.state);
  expect(rec.attempts == attempts, "%s: %u attempts stored, expected %u", key,
         (unsigned)rec.attempts, (unsigned)attempts);
  expect(rec.result && rec.result_len == strlen(result) &&
             memcmp(rec.result, result, rec.result_len) == 0,
         "%s: stored result differs from \"%s\"", key, result);
  idem_record_clear(&rec);
}

/* --- 1. The race -------------------------------------------------------- */

/* One worker process: asks for every key, starting at a different one than
 * its neighbours so that all three keys are contended at once. It reports
 * one line per key on out_fd: the key, C (claimed) or W (was handed the
 * result), and the result. */
static int race_worker(int idx, int go_fd, int out_fd) {
  idem_db *db = NULL;
  int bad = 0;
  char c;

  if (open_db(&db, NULL) != IDEM_OK)
    return 1;
  /* Opened first, then parked until every sibling exists: the begins below
   * then really happen at the same moment. */
  while (read(go_fd, &c, 1) < 0 && errno == EINTR)
    ;

  for (int n = 0; n < NKEYS; n++) {
    const char *key = race_keys[(idx + n) % NKEYS];
    idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
    idem_answer ans = IDEM_ANSWER_INIT;
    char result[256], line[320];
    char how = 'W';
    int rc, len;

    bo.wait_ms = 30000;
    rc = idem_begin(db, key, strlen(key), &bo, &ans);
    if (rc == IDEM_CLAIMED) {
      how = 'C';
      printf("   worker %d (pid %ld) claimed %s (attempt %u, fence %" PRIu64
             "): runs the job\n",
             idx, (long)getpid(), key, (unsigned)ans.attempts, ans.fence);
      fflush(stdout);
      sleep_ms(JOB_MS);
      if (log_execution(key, ans.fence) != 0)
        bad = 1;
      snprintf(result, sizeof result,
               "sent invoice %s (by pid %ld, attempt %u, fence %" PRIu64 ")",
               key + strlen("invoice-"), (long)getpid(), (unsigned)ans.attempts,
               ans.fence);
      rc = idem_complete(ans.lease, result, strlen(result));
      if (rc != IDEM_OK) {
        report("idem_complete", rc, db);
        bad = 1;
      }
      idem_lease_free(ans.lease);
    } else if (rc == IDEM_COMPLETED) {
      snprintf(result, sizeof result, "%.*s", (int)ans.result_len,
               (const char *)ans.result);
    } else {
      report("idem_begin", rc, db);
      how = 'E';
      snprintf(result, sizeof result, "%s", answer_name(rc));
      bad = 1;
    }
    idem_answer_clear(&ans);
    len = snprintf(line, sizeof line, "%s %c %s\n", key, how, result);
    if (!fits(len, sizeof line) || write_all(out_fd, line, (size_t)len) != 0)
      bad = 1;
  }
  if (idem_close(db) != IDEM_OK)
    bad = 1;
  return bad;
}

struct key_tally {
  int claimed, handed, errors, differ;
  char result[256];
};

static void scene_race(void) {
  struct key_tally tally[NKEYS];
  pid_t pids[WORKERS];
  int go[2], out[2], started = 0;
  char line[320];
  FILE *in;
  idem_db *db = NULL;

  printf("\n1. A race: %d processes ask for the same %d keys at once; each "
         "job takes %d ms\n",
         WORKERS, NKEYS, JOB_MS);
  memset(tally, 0, sizeof tally);
  if (pipe(go) != 0) {
    perror("pipe");
    failures++;
    return;
  }
  if (pipe(out) != 0) {
    perror("pipe");
    close(go[0]);
    close(go[1]);
    failures++;
    return;
  }
  /* No handle is open in this process across the forks: a handle must not
   * be used across fork(), so each worker opens its own. */
  fflush(stdout);
  for (; started < WORKERS; started++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      failures++;
      break;
    }
    if (pid == 0) {
      int bad;
      close(go[1]);
      close(out[0]);
      bad = race_worker(started, go[0], out[1]);
      fflush(stdout);
      _exit(bad);
    }
    pids[started] = pid;
  }
  close(go[0]);
  close(out[1]);
  close(go[1]); /* end of file on go[0]: every worker starts now */

  /* The reports are read only after everyone exited: they are a few lines
   * per worker, far below what the pipe holds. */
  for (int i = 0; i < started; i++) {
    int status = -1;
    while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR)
      ;
    expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "worker %d did not finish cleanly (status %d)", i, status);
  }

  in = fdopen(out[0], "r");
  if (!in) {
    perror("fdopen");
    close(out[0]);
    failures++;
    return;
  }
  while (fgets(line, sizeof line, in)) {
    char *sep = strchr(line, ' ');
    int k;

    line[strcspn(line, "\n")] = '\0';
    if (!sep || !sep[1] || sep[2] != ' ')
      continue;
    *sep = '\0';
    for (k = 0; k < NKEYS && strcmp(line, race_keys[k]) != 0; k++)
      ;
    if (k == NKEYS)
      continue;
    if (sep[1] == 'C')
      tally[k].claimed++;
    else if (sep[1] == 'W')
      tally[k].handed++;
    else
      tally[k].errors++;
    if (!tally[k].result[0])
      snprintf(tally[k].result, sizeof tally[k].result, "%s", sep + 3);
    else if (strcmp(tally[k].result, sep + 3) != 0)
      tally[k].differ++;
  }
  fclose(in);

  if (open_db(&db, NULL) != IDEM_OK) {
    failures++;
    return;
  }
  for (int k = 0; k < NKEYS; k++) {
    int runs = count_executions(race_keys[k]);
    int answers = tally[k].claimed + tally[k].handed + tally[k].errors;

    printf("   %s: job ran %d time%s, %d workers were handed its result, "
           "%s\n",
           race_keys[k], runs, runs == 1 ? "" : "s", tally[k].handed,
           !tally[k].differ && answers == WORKERS ? "all agree"
                                                  : "they DISAGREE");
    expect(runs == 1, "%s: the job ran %d times", race_keys[k], runs);
    expect(tally[k].claimed == 1, "%s: claimed %d times", race_keys[k],
           tally[k].claimed);
    expect(answers == WORKERS && !tally[k].errors, "%s: %d answers, %d errors",
           race_keys[k], answers, tally[k].errors);
    expect(!tally[k].differ, "%s: workers got different results", race_keys[k]);
    expect_stored(db, race_keys[k], tally[k].result, 1);
  }
  printf("   the result every worker got for %s: \"%s\"\n", race_keys[0],
         tally[0].result);
  close_db(db);
}

/* --- 2. A crash and a hang ---------------------------------------------- */

/* What a holder child and the parent tell each other through pipes: one
 * message of this size each way per step. */
struct crash_msg {
  int64_t rc;      /* an answer or error code */
  int64_t attempt; /* or, for a completion, idem_lease_lost() */
  int64_t fence;
  int64_t ms; /* parent to child: when the kill was sent (now_ms());
                 child to parent: how long its claim came after it */
};

static int send_msg(int fd, const struct crash_msg *m) {
  return write_all(fd, (const char *)m, sizeof *m);
}

static int recv_msg(int fd, struct crash_msg *m) {
  char *p = (char *)m;
  size_t got = 0;

  while (got < sizeof *m) {
    ssize_t n = read(fd, p + got, sizeof *m - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    got += (size_t)n;
  }
  return 0;
}

/* The first holder: claims the key with a long lease, says so, and never
 * finishes: the parent kills it. */
static void killed_holder(int to_parent) {
  idem_options o = IDEM_OPTIONS_INIT;
  idem_answer ans = IDEM_ANSWER_INIT;
  struct crash_msg m = {0, 0, 0, 0};
  idem_db *db = NULL;

  o.ttl_ms = KILLED_TTL_MS;
  if (open_db(&db, &o) != IDEM_OK)
    _exit(1);
  m.rc = idem_begin(db, crash_key, strlen(crash_key), NULL, &ans);
  m.attempt = ans.attempts;
  m.fence = (int64_t)ans.fence;
  if (send_msg(to_parent, &m) != 0 || m.rc != IDEM_CLAIMED)
    _exit(1);
  for (;;)
    pause();
}

/* The second holder: opened and parked before the kill, so that what is
 * measured is the claim alone. Told when the kill was sent, it begins
 * without waiting and reports. Its job then "hangs" (the parent stops it);
 * told to go on, it completes and reports what it got. */
static void hung_holder(int from_parent, int to_parent) {
  idem_options o = IDEM_OPTIONS_INIT;
  idem_answer ans = IDEM_ANSWER_INIT;
  struct crash_msg m;
  char result[128];
  idem_db *db = NULL;
  int rc;

  o.ttl_ms = HUNG_TTL_MS;
  if (open_db(&db, &o) != IDEM_OK || recv_msg(from_parent, &m) != 0)
    _exit(1);
  rc = idem_begin(db, crash_key, strlen(crash_key), NULL, &ans);
  m.ms = now_ms() - m.ms;
  m.rc = rc;
  m.attempt = ans.attempts;
  m.fence = (int64_t)ans.fence;
  if (send_msg(to_parent, &m) != 0 || rc != IDEM_CLAIMED)
    _exit(1);
  if (recv_msg(from_parent, &m) != 0)
    _exit(1);
  snprintf(result, sizeof result, "sent invoice %s (by pid %ld, attempt %u)",
           crash_key + strlen("invoice-"), (long)getpid(),
           (unsigned)ans.attempts);
  m.rc = idem_complete(ans.lease, result, strlen(result));
  m.attempt = idem_lease_lost(ans.lease);
  idem_lease_free(ans.lease);
  idem_answer_clear(&ans);
  if (send_msg(to_parent, &m) != 0)
    _exit(1);
  _exit(idem_close(db) == IDEM_OK ? 0 : 1);
}

/* Forks a holder with a pipe each way; returns its pid, or -1. */
static pid_t fork_holder(int hung, int *to_child, int *from_child) {
  int down[2], up[2];
  pid_t pid;

  if (pipe(down) != 0) {
    perror("pipe");
    return -1;
  }
  if (pipe(up) != 0) {
    perror("pipe");
    close(down[0]);
    close(down[1]);
    return -1;
  }
  fflush(stdout);
  pid = fork();
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    if (hung)
      hung_holder(down[0], up[1]);
    killed_holder(up[1]);
  }
  close(down[0]);
  close(up[1]);
  if (pid < 0) {
    perror("fork");
    close(down[1]);
    close(up[0]);
    return -1;
  }
  *to_child = down[1];
  *from_child = up[0];
  return pid;
}

static int reap(pid_t pid) {
  int status = -1;

  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  return status;
}

/* (b): the second holder is stopped with its lease; the parent is told
 * BUSY with the real time left, waits it out, claims, completes; then the
 * stopped holder goes on and is refused. */
static int hang_and_take_over(pid_t pid, int to_child, int from_child,
                              uint64_t hung_fence) {
  idem_options o = IDEM_OPTIONS_INIT;
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  idem_answer ans = IDEM_ANSWER_INIT;
  struct crash_msg m = {0, 0, 0, 0};
  idem_db *db = NULL;
  int64_t t0, waited, left;
  char result[128];
  int status = -1, rc, done;

  kill(pid, SIGSTOP);
  while (waitpid(pid, &status, WUNTRACED) < 0 && errno == EINTR)
    ;
  if (!WIFSTOPPED(status)) {
    expect(0, "pid %ld could not be stopped", (long)pid);
    return 0;
  }
  printf("   pid %ld hangs (SIGSTOP, lease TTL %d ms): it cannot be told "
         "from a slow job\n",
         (long)pid, HUNG_TTL_MS);

  o.ttl_ms = HUNG_TTL_MS;
  if (open_db(&db, &o) != IDEM_OK) {
    failures++;
    return 0;
  }
  t0 = now_ms();
  rc = idem_begin(db, crash_key, strlen(crash_key), NULL, &ans);
  if (rc < 0)
    report("idem_begin", rc, db);
  left = ans.lease_ms;
  printf("   next caller: %s, %" PRId64 " ms left on its lease\n",
         answer_name(rc), left);
  expect(rc == IDEM_BUSY, "expected IDEM_BUSY, got %s", answer_name(rc));
  expect(left > 0 && left <= HUNG_TTL_MS, "lease_ms %" PRId64 " out of range",
         left);
  if (rc == IDEM_CLAIMED)
    idem_lease_free(ans.lease);
  idem_answer_clear(&ans);

  bo.wait_ms = 5 * HUNG_TTL_MS;
  rc = idem_begin(db, crash_key, strlen(crash_key), &bo, &ans);
  waited = now_ms() - t0;
  if (rc != IDEM_CLAIMED) {
    report("idem_begin (waiting)", rc, db);
    expect(0, "expected IDEM_CLAIMED after the wait, got %s", answer_name(rc));
    idem_answer_clear(&ans);
    close_db(db);
    return 0;
  }
  printf("   waited %" PRId64 " ms, then %s: attempt %u, fence %" PRIu64 "\n",
         waited, answer_name(rc), (unsigned)ans.attempts, ans.fence);
  /* A couple of ms of slack for the rounding of lease_ms to whole ms. */
  expect(waited + 2 >= left,
         "claimed after %" PRId64 " ms, before the lease ran out", waited);
  expect(ans.attempts == 3, "attempt %u, expected 3", (unsigned)ans.attempts);
  expect(ans.fence > hung_fence, "fence %" PRIu64 " is not above %" PRIu64,
         ans.fence, hung_fence);
  snprintf(result, sizeof result, "sent invoice %s (by pid %ld, attempt %u)",
           crash_key + strlen("invoice-"), (long)getpid(),
           (unsigned)ans.attempts);
  rc = idem_complete(ans.lease, result, strlen(result));
  if (rc != IDEM_OK) {
    report("idem_complete", rc, db);
    failures++;
  }
  idem_lease_free(ans.lease);
  idem_answer_clear(&ans);
  printf("   stored \"%s\"\n", result);

  kill(pid, SIGCONT);
  done = send_msg(to_child, &m) == 0 && recv_msg(from_child, &m) == 0;
  if (!done) {
    expect(0, "pid %ld did not report its completion", (long)pid);
  } else {
    printf("   pid %ld continued: idem_complete got %s, "
           "idem_lease_lost() %s\n",
           (long)pid, answer_name((int)m.rc),
           m.attempt ? "is true" : "is FALSE");
    expect(m.rc == IDEM_ELEASELOST, "the stale holder's completion got %s",
           answer_name((int)m.rc));
    expect(m.attempt != 0, "the stale holder's lease is not marked lost");
  }
  expect_stored(db, crash_key, result, 3);
  printf("   the stored result is still attempt 3's\n");
  close_db(db);
  return done;
}

static void scene_crash(void) {
  struct crash_msg m = {0, 0, 0, 0};
  int a_to = -1, a_from = -1, b_to = -1, b_from = -1, b_done = 0, status;
  pid_t a, b = -1;
  uint64_t dead_fence = 0;

  printf("\n2. A crash, then a hang: the holders of %s die or stop mid-job\n",
         crash_key);
  a = fork_holder(0, &a_to, &a_from);
  if (a < 0) {
    failures++;
    return;
  }
  if (recv_msg(a_from, &m) != 0) {
    expect(0, "the first holder never claimed %s", crash_key);
    goto out;
  }
  dead_fence = (uint64_t)m.fence;
  printf("   pid %ld claimed it (attempt %u, fence %" PRIu64
         ", lease TTL %d ms) and is killed with SIGKILL\n",
         (long)a, (unsigned)m.attempt, dead_fence, KILLED_TTL_MS);
  b = fork_holder(1, &b_to, &b_from);
  if (b < 0) {
    failures++;
    goto out;
  }

  m.ms = now_ms();
  kill(a, SIGKILL);
  status = reap(a);
  a = -1;
  expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
         "the first holder was not killed by SIGKILL");
  if (send_msg(b_to, &m) != 0 || recv_msg(b_from, &m) != 0) {
    expect(0, "the second holder did not report its claim");
    goto out;
  }
  printf("   next caller, pid %ld: %s %" PRId64
         " ms after the kill: attempt %u, fence %" PRId64 "\n",
         (long)b, answer_name((int)m.rc), m.ms, (unsigned)m.attempt, m.fence);
  expect(m.rc == IDEM_CLAIMED, "expected IDEM_CLAIMED at once, got %s",
         answer_name((int)m.rc));
  expect(m.attempt == 2, "attempt %u, expected 2", (unsigned)m.attempt);
  expect((uint64_t)m.fence > dead_fence,
         "fence %" PRId64 " is not above %" PRIu64, m.fence, dead_fence);
  /* Far below the TTL: the key was not left to expire. */
  expect(m.ms < KILLED_TTL_MS / 10, "the claim took %" PRId64 " ms", m.ms);
  if (m.rc == IDEM_CLAIMED)
    b_done = hang_and_take_over(b, b_to, b_from, (uint64_t)m.fence);

out:
  /* Whatever failed above, no holder is left behind, stopped or not. */
  if (a > 0) {
    kill(a, SIGKILL);
    reap(a);
  }
  if (b > 0) {
    if (!b_done) {
      kill(b, SIGKILL);
      kill(b, SIGCONT);
    }
    status = reap(b);
    expect(!b_done || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
           "the second holder did not finish cleanly (status %d)", status);
  }
  close(a_to);
  close(a_from);
  if (b_to >= 0) {
    close(b_to);
    close(b_from);
  }
}

/* --- 3. Poison ---------------------------------------------------------- */

struct poison_seen {
  int calls;
  uint32_t attempts;
};

static void on_poison(void *ctx, const void *key, size_t key_len,
                      uint32_t attempts) {
  struct poison_seen *seen = ctx;

  (void)key;
  (void)key_len;
  seen->calls++;
  seen->attempts = attempts;
}

static int always_refused(void *ctx, idem_lease *lease) {
  int *runs = ctx;

  (void)lease;
  (*runs)++;
  return IDEM_JOB_RETRY; /* as if the mail server had said "try later" */
}

static void scene_poison(void) {
  idem_options o = IDEM_OPTIONS_INIT;
  struct poison_seen seen = {0, 0};
  idem_db *db = NULL;
  int runs = 0;

  printf("\n3. Poison: the job for %s always fails; max_attempts = %d\n",
         poison_key, POISON_MAX);
  o.max_attempts = POISON_MAX;
  o.on_poison = on_poison;
  o.poison_ctx = &seen;
  if (open_db(&db, &o) != IDEM_OK) {
    failures++;
    return;
  }
  for (int call = 1; call <= POISON_MAX + 2; call++) {
    idem_answer ans = IDEM_ANSWER_INIT;
    int before = runs, told = seen.calls;
    int rc = idem_run(db, poison_key, strlen(poison_key), NULL, always_refused,
                      &runs, &ans);
    int expected = call <= POISON_MAX ? IDEM_RELEASED : IDEM_POISONED;

    if (rc < 0)
      report("idem_run", rc, db);
    if (call <= POISON_MAX)
      printf("   run %d: the job ran and failed -> %s (attempt %u)\n", call,
             answer_name(rc), (unsigned)ans.attempts);
    else
      printf("   run %d: %s, the job did not run%s\n", call, answer_name(rc),
             seen.calls > told ? "; on_poison was told" : "");
    expect(rc == expected, "run %d: expected %s, got %s", call,
           answer_name(expected), answer_name(rc));
    expect(runs - before == (call <= POISON_MAX),
           "run %d: the job ran %d times", call, runs - before);
    expect(call > POISON_MAX || ans.attempts == (uint32_t)call,
           "run %d: attempt %u", call, (unsigned)ans.attempts);
    idem_answer_clear(&ans);
  }
  expect(seen.calls == 1, "on_poison was called %d times", seen.calls);
  expect(seen.attempts == POISON_MAX, "on_poison told %u attempts",
         (unsigned)seen.attempts);
  printf("   the job ran %d times, on_poison was told %d time%s; "
         "idem_reset() would rearm the key\n",
         runs, seen.calls, seen.calls == 1 ? "" : "s");
  close_db(db);
}

/* --- Setup and teardown ------------------------------------------------- */

/* Creates the database before any worker exists. In a database the user
 * named, clears the demo's keys from an earlier run on the same file, so
 * that the expectations hold again; a fresh one has nothing to clear. */
static int prepare(int fresh) {
  const char *keys[] = {race_keys[0], race_keys[1], race_keys[2], crash_key,
                        poison_key};
  idem_db *db = NULL;
  int cleared = 0;

  if (open_db(&db, NULL) != IDEM_OK)
    return -1;
  for (size_t i = 0; !fresh && i < sizeof keys / sizeof keys[0]; i++) {
    int rc = idem_reset(db, keys[i], strlen(keys[i]));
    if (rc == IDEM_OK)
      cleared++;
    else if (rc != IDEM_ENOTFOUND) {
      report("idem_reset", rc, db);
      close_db(db);
      return -1;
    }
  }
  if (cleared)
    printf("(reset %d keys left in the database by an earlier run)\n", cleared);
  close_db(db);
  return 0;
}

static void remove_file(const char *path) {
  if (unlink(path) != 0 && errno != ENOENT)
    perror(path);
}

/* Every file of the database, as the library names them: besides the
 * database and SQLite's own files there is the writers' queue, and a later
 * version may add more. */
static void remove_database(const char *path) {
  char name[sizeof db_path + 64];
  const char *suffix;

  for (unsigned i = 0; (suffix = idem_file_suffix(i)) != NULL; i++)
    if (fits(snprintf(name, sizeof name, "%s%s", path, suffix), sizeof name))
      remove_file(name);
}

int main(int argc, char **argv) {
  const char *tmp = getenv("TMPDIR");
  int own_db = argc < 2;

  if (argc > 2 || (argc == 2 && (!argv[1][0] || argv[1][0] == '-'))) {
    fprintf(stderr, "usage: %s [DATABASE]\n", argv[0]);
    return 2;
  }
  if (!fits(snprintf(tmp_dir, sizeof tmp_dir, "%s/idem-demo-XXXXXX",
                     tmp && tmp[0] ? tmp : "/tmp"),
            sizeof tmp_dir) ||
      (!own_db && !fits(snprintf(db_path, sizeof db_path, "%s", argv[1]),
                        sizeof db_path))) {
    fprintf(stderr, "demo: path too long\n");
    return 2;
  }
  if (!mkdtemp(tmp_dir)) {
    perror(tmp_dir);
    return 1;
  }
  snprintf(log_path, sizeof log_path, "%s/executions.log", tmp_dir);
  if (own_db)
    snprintf(db_path, sizeof db_path, "%s/demo.db", tmp_dir);

  printf("libidem %s demo; database %s\n", idem_version(), db_path);
  if (prepare(own_db) == 0) {
    scene_race();
    scene_crash();
    scene_poison();
  } else {
    failures++;
  }

  remove_file(log_path);
  if (own_db)
    remove_database(db_path);
  /* A directory left behind is a file the demo did not know it made. */
  if (rmdir(tmp_dir) != 0) {
    perror(tmp_dir);
    failures++;
  }

  if (failures) {
    printf("\n%d check%s FAILED\n", failures, failures == 1 ? "" : "s");
    return 1;
  }
  printf("\nAll expectations held: every job ran once per key and every "
         "caller got its result.\n");
  return 0;
}
