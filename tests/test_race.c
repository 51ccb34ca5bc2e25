/* SPDX-License-Identifier: MIT */
/*
 * test_race.c - many processes on one database file.
 *
 * The central promise of libidem: however many processes race for a key,
 * its job body runs once and everyone gets the same result. Children are
 * forked, released together through a pipe, and report through files; the
 * parent checks. Children never use cmocka: they _exit() with a code that
 * says what went wrong (see child_fail()).
 *
 * The race tests use the real clocks (processes cannot share a fake one).
 * The crash tests use a fake clock that the child inherits by fork() at the
 * same reading, and that the parent alone moves afterwards: a claim made
 * while it stands still cannot be a lease running out.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NPROC 10
#define NKEYS 50
#define TTL 10000

/* Exit codes of a child. */
enum {
  CHILD_OK = 0,
  CHILD_OPEN = 10,     /* idem_open failed */
  CHILD_FILES = 11,    /* its own log or output file */
  CHILD_COMPLETE = 12, /* complete of a claimed key failed */
  CHILD_ANSWER = 13,   /* an answer other than CLAIMED/COMPLETED/BUSY */
  CHILD_STARVED = 14,  /* still BUSY after many waits */
  CHILD_CLOSE = 15,    /* idem_close failed */
  CHILD_RESULT = 16,   /* a result of the wrong form */
};

static tu_fx *fx_of(void **state) {
  return *state;
}

static void key_name(int i, char *buf, size_t n) {
  snprintf(buf, n, "key-%02d", i);
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* The job body: one line "key pid" appended to the shared log in a single
 * write, so that lines of different processes never interleave. */
static int job_body(int logfd, const char *key, char *result, size_t n) {
  char line[64];
  int len = snprintf(line, sizeof line, "%s %ld\n", key, (long)getpid());
  if (write(logfd, line, (size_t)len) != len)
    return -1;
  sleep_us(500 + (getpid() % 7) * 100); /* widen the window for rivals */
  snprintf(result, n, "%s done by %ld", key, (long)getpid());
  return 0;
}

struct child_args {
  const char *db_path;
  const char *log_path;
  const char *out_path;
  int index;
  int use_run; /* idem_run instead of begin/complete */
  int start_fd;
};

struct run_ctx {
  int logfd;
  const char *key;
  int failed;
};

static int run_job(void *ctx, idem_lease *lease) {
  struct run_ctx *c = ctx;
  char result[64];
  if (job_body(c->logfd, c->key, result, sizeof result) != 0 ||
      idem_lease_set_result(lease, result, strlen(result), 0) != IDEM_OK) {
    c->failed = 1;
    return IDEM_JOB_RETRY;
  }
  return IDEM_JOB_DONE;
}

/* One racing process: every key, in one of two orders; writes "key result" for
 * each to its output file. Returns an exit code. */
static int race_child(const struct child_args *ca) {
  char c;
  while (read(ca->start_fd, &c, 1) < 0 && errno == EINTR)
    ; /* released when the parent closes the pipe */
  idem_options o = tu_options(NULL);
  o.ttl_ms = 30000;
  o.heartbeat_ms = 0; /* the background thread, as in production */
  idem_db *db = NULL;
  FILE *out = fopen(ca->out_path, "w");
  if (out == NULL)
    return CHILD_FILES;
  int orc = idem_open(&db, ca->db_path, &o);
  if (orc != IDEM_OK) {
    /* The parent shows this line with the failure. */
    fprintf(out, "idem_open: %s: %s\n", idem_errstr(orc), idem_errmsg(db));
    fclose(out);
    idem_close(db);
    return CHILD_OPEN;
  }
  int logfd = open(ca->log_path, O_WRONLY | O_APPEND);
  if (logfd < 0)
    return CHILD_FILES;
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.wait_ms = 20000;
  for (int j = 0; j < NKEYS; j++) {
    char key[16];
    /* Half the processes go up, half go down: every key is contended. */
    key_name(ca->index % 2 ? NKEYS - 1 - j : j, key, sizeof key);
    idem_answer a = IDEM_ANSWER_INIT;
    char result[64] = "";
    int tries = 0;
    for (;;) {
      int rc;
      if (ca->use_run) {
        struct run_ctx rctx = {logfd, key, 0};
        rc = idem_run(db, key, strlen(key), &bo, run_job, &rctx, &a);
        if (rctx.failed)
          return CHILD_FILES;
      } else {
        rc = idem_begin(db, key, strlen(key), &bo, &a);
        if (rc == IDEM_CLAIMED) {
          if (job_body(logfd, key, result, sizeof result) != 0)
            return CHILD_FILES;
          if (idem_complete(a.lease, result, strlen(result)) != IDEM_OK)
            return CHILD_COMPLETE;
          idem_lease_free(a.lease);
          break;
        }
      }
      if (rc == IDEM_COMPLETED) {
        if (a.result == NULL || a.result_len >= sizeof result)
          return CHILD_RESULT;
        memcpy(result, a.result, a.result_len);
        result[a.result_len] = '\0';
        break;
      }
      if (rc != IDEM_BUSY)
        return CHILD_ANSWER;
      if (++tries > 50)
        return CHILD_STARVED;
      idem_answer_clear(&a);
    }
    idem_answer_clear(&a);
    fprintf(out, "%s %s\n", key, result);
  }
  if (fclose(out) != 0 || close(logfd) != 0)
    return CHILD_FILES;
  return idem_close(db) == IDEM_OK ? CHILD_OK : CHILD_CLOSE;
}

/* Forks NPROC racing children, releases them together, waits for all and
 * asserts they exited cleanly. */
static void run_race(tu_fx *fx, const char *log_path, int use_run) {
  int start[2];
  assert_int_equal(pipe(start), 0);
  pid_t pids[NPROC];
  char *outs[NPROC];
  for (int i = 0; i < NPROC; i++) {
    char name[32];
    snprintf(name, sizeof name, "out-%d.txt", i);
    outs[i] = tu_path(fx->dir, name);
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      close(start[1]);
      struct child_args ca = {fx->path, log_path, outs[i],
                              i,        use_run,  start[0]};
      _exit(race_child(&ca));
    }
  }
  close(start[0]);
  close(start[1]); /* go */
  for (int i = 0; i < NPROC; i++) {
    int status = 0;
    assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != CHILD_OK) {
      char *said = tu_read_file(outs[i], NULL);
      char first[256] = "";
      if (said != NULL)
        snprintf(first, sizeof first, "%.*s", (int)strcspn(said, "\n"), said);
      free(said);
      fail_msg(
          "child %d: %s %d %s", i, WIFEXITED(status) ? "exit code" : "signal",
          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), first);
    }
  }
  for (int i = 0; i < NPROC; i++)
    free(outs[i]);
}

/* Checks the outcome of a race: the shared log names each key exactly once
 * (one job body per key), every child's output gives for each key the
 * result the one executor produced, and the database agrees. */
static void check_race(tu_fx *fx, const char *log_path) {
  long executor[NKEYS] = {0};
  int runs[NKEYS] = {0};
  FILE *f = fopen(log_path, "r");
  assert_non_null(f);
  char line[128];
  int lines = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    int k;
    long pid;
    if (sscanf(line, "key-%d %ld", &k, &pid) != 2 || k < 0 || k >= NKEYS)
      fail_msg("bad log line: %s", line);
    runs[k]++;
    executor[k] = pid;
    lines++;
  }
  fclose(f);
  for (int k = 0; k < NKEYS; k++)
    if (runs[k] != 1)
      fail_msg("key-%02d: the job body ran %d times", k, runs[k]);
  assert_int_equal(lines, NKEYS);

  for (int i = 0; i < NPROC; i++) {
    char name[32];
    snprintf(name, sizeof name, "out-%d.txt", i);
    char *path = tu_path(fx->dir, name);
    f = fopen(path, "r");
    assert_non_null(f);
    int seen[NKEYS] = {0};
    while (fgets(line, sizeof line, f) != NULL) {
      int k;
      char key[16], expect[128];
      if (sscanf(line, "key-%d", &k) != 1 || k < 0 || k >= NKEYS)
        fail_msg("child %d: bad output line: %s", i, line);
      key_name(k, key, sizeof key);
      snprintf(expect, sizeof expect, "%s %s done by %ld\n", key, key,
               executor[k]);
      if (strcmp(line, expect) != 0)
        fail_msg("child %d got \"%.60s\" for %s, the executor was %ld", i, line,
                 key, executor[k]);
      seen[k]++;
    }
    fclose(f);
    free(path);
    for (int k = 0; k < NKEYS; k++)
      if (seen[k] != 1)
        fail_msg("child %d reported key-%02d %d times", i, k, seen[k]);
  }

  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  for (int k = 0; k < NKEYS; k++) {
    char key[16], expect[64];
    key_name(k, key, sizeof key);
    snprintf(expect, sizeof expect, "%s done by %ld", key, executor[k]);
    idem_record r = IDEM_RECORD_INIT;
    assert_int_equal(tu_get(db, key, &r), IDEM_OK);
    assert_int_equal(r.state, IDEM_STATE_COMPLETED);
    assert_int_equal(r.attempts, 1);
    idem_record_clear(&r);
    tu_assert_completed(db, key, expect);
  }
  assert_int_equal(idem_close(db), IDEM_OK);
}

static char *make_log(tu_fx *fx) {
  char *log_path = tu_path(fx->dir, "jobs.log");
  assert_int_equal(tu_write_file(log_path, "", 0), 0);
  return log_path;
}

/* NPROC processes race over NKEYS keys with idem_begin (waiting while
 * busy) and idem_complete: each key's job body runs exactly once and every
 * process gets the same result for it. */
static void test_race_begin_complete(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
  char *log_path = make_log(fx);
  run_race(fx, log_path, 0);
  check_race(fx, log_path);
  free(log_path);
}

/* The same race through idem_run with a wait, the one-call form most
 * callers use. */
static void test_race_run(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
  char *log_path = make_log(fx);
  run_race(fx, log_path, 1);
  check_race(fx, log_path);
  free(log_path);
}

/* The race starts on a file that does not exist yet: the processes also
 * race to create the schema, and none of them may fail or run a job twice.
 */
static void test_race_on_creation(void **state) {
  tu_fx *fx = fx_of(state);
  char *log_path = make_log(fx);
  run_race(fx, log_path, 0);
  check_race(fx, log_path);
  free(log_path);
}

/* A child that claims a key and reports its fence through a pipe. With
 * `how` 0 it then exits without finishing (a crash); with 1 it waits to be
 * killed with SIGKILL; with 2 it stops itself (a long pause) and, once
 * continued, tries to complete and reports what it got. */
static void holder_child(tu_fx *fx, int how, int to_parent) {
  idem_db *db = NULL;
  idem_answer a = IDEM_ANSWER_INIT;
  uint64_t msg[2] = {0, 0};
  if (tu_open(&db, fx->path, &fx->opts) != IDEM_OK ||
      idem_begin(db, "crash", 5, NULL, &a) != IDEM_CLAIMED)
    _exit(CHILD_OPEN);
  msg[0] = a.fence;
  if (write(to_parent, msg, sizeof msg) != (ssize_t)sizeof msg)
    _exit(CHILD_FILES);
  if (how == 0)
    _exit(CHILD_OK); /* dies holding the lease */
  if (how == 1)
    for (;;)
      pause();
  raise(SIGSTOP);
  /* Continued long after the TTL: the key has moved on. */
  msg[0] = (uint64_t)(int64_t)idem_complete(a.lease, "stale", 5);
  msg[1] = (uint64_t)idem_lease_lost(a.lease);
  if (write(to_parent, msg, sizeof msg) != (ssize_t)sizeof msg)
    _exit(CHILD_FILES);
  idem_lease_free(a.lease);
  _exit(idem_close(db) == IDEM_OK ? CHILD_OK : CHILD_CLOSE);
}

static pid_t start_holder(tu_fx *fx, int how, int *from_child,
                          uint64_t *fence) {
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    holder_child(fx, how, p[1]);
  }
  close(p[1]);
  uint64_t msg[2];
  if (read(p[0], msg, sizeof msg) != (ssize_t)sizeof msg) {
    /* The child ended before it could report: its exit code says why. */
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    fail_msg("holder %s %d before reporting its claim",
             WIFEXITED(status) ? "exited with" : "killed by signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  }
  *fence = msg[0];
  *from_child = p[0];
  return pid;
}

/* Makes a holder die with its lease (`how` 0: it exits, 1: SIGKILL while
 * its SQLite connection is open), reaps it, checks that it ended that way
 * and not by a failure of its own, and returns its fence. */
static uint64_t dead_holder(tu_fx *fx, int how) {
  int from_child;
  uint64_t fence;
  pid_t pid = start_holder(fx, how, &from_child, &fence);
  if (how == 1)
    assert_int_equal(kill(pid, SIGKILL), 0);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (how == 0)
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK);
  else
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  close(from_child);
  return fence;
}

/* Another process takes the key over from the dead holder, as attempt 2
 * with a higher fence, and its result stands.
 *
 * By default the survivor's first begin claims at once: the lease row names
 * the holder's pid, PID namespace and start time, and a reaped holder of our
 * namespace on this boot names no process any more, which proves that
 * nobody holds the lease. The fake clock still reads what the holder read
 * when it claimed, so its lease had the whole TTL left: only that proof of
 * death can explain the claim.
 *
 * With IDEM_OPEN_TTL_ONLY (ttl_only) the survivor does not look at the
 * holder process, so the lease is honoured like a live one: BUSY, with the
 * whole TTL and then its last millisecond left, no attempt counted, until
 * the fake clock passes its deadline. */
static void survivor_takes_over(tu_fx *fx, uint64_t dead_fence, int ttl_only) {
  idem_options o = fx->opts;
  if (ttl_only)
    o.flags |= IDEM_OPEN_TTL_ONLY;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  assert_int_equal(tu_clock_now(&fx->clock, IDEM_CLOCK_LEASE), TU_LEASE_START);
  idem_answer a = IDEM_ANSWER_INIT;
  if (ttl_only) {
    assert_int_equal(tu_begin(db, "crash", &a), IDEM_BUSY);
    assert_int_equal(a.lease_ms, TTL);
    tu_clock_advance_lease(&fx->clock, TTL - 1);
    assert_int_equal(tu_begin(db, "crash", &a), IDEM_BUSY);
    assert_int_equal(a.lease_ms, 1);
    tu_clock_advance_lease(&fx->clock, 2);
  }
  assert_int_equal(tu_begin(db, "crash", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > dead_fence);
  assert_int_equal(idem_complete(a.lease, "survivor", 8), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  tu_assert_completed(db, "crash", "survivor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A holder that exits without completing does not block the key: its death
 * is seen at once. */
static void test_crash_exit(void **state) {
  tu_fx *fx = fx_of(state);
  survivor_takes_over(fx, dead_holder(fx, 0), 0);
}

/* The same under IDEM_OPEN_TTL_ONLY: the key waits for the lease's TTL. */
static void test_crash_exit_ttl_only(void **state) {
  tu_fx *fx = fx_of(state);
  survivor_takes_over(fx, dead_holder(fx, 0), 1);
}

/* A holder killed by SIGKILL mid-lease, with its SQLite connection open:
 * the file stays usable and the key is taken over at once. */
static void test_crash_kill9(void **state) {
  tu_fx *fx = fx_of(state);
  survivor_takes_over(fx, dead_holder(fx, 1), 0);
}

/* The same under IDEM_OPEN_TTL_ONLY: the key waits for the lease's TTL. */
static void test_crash_kill9_ttl_only(void **state) {
  tu_fx *fx = fx_of(state);
  survivor_takes_over(fx, dead_holder(fx, 1), 1);
}

/* A holder process paused past its TTL (SIGSTOP) and overtaken by another
 * process is refused when it wakes up and completes: IDEM_ELEASELOST, its
 * lease reads as lost, and the successor's result stands. Fencing works
 * across processes, not only across handles. */
static void test_paused_process_fenced(void **state) {
  tu_fx *fx = fx_of(state);
  int from_child;
  uint64_t fence;
  pid_t pid = start_holder(fx, 2, &from_child, &fence);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
  assert_true(WIFSTOPPED(status));

  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "crash", &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > fence);
  assert_int_equal(idem_complete(a.lease, "successor", 9), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);

  assert_int_equal(kill(pid, SIGCONT), 0);
  uint64_t msg[2];
  assert_int_equal(read(from_child, msg, sizeof msg), (ssize_t)sizeof msg);
  close(from_child);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK);
  assert_int_equal((int)(int64_t)msg[0], IDEM_ELEASELOST);
  assert_true(msg[1] != 0);
  tu_assert_completed(db, "crash", "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_race_begin_complete),  T(test_race_run),
      T(test_race_on_creation),     T(test_crash_exit),
      T(test_crash_exit_ttl_only),  T(test_crash_kill9),
      T(test_crash_kill9_ttl_only), T(test_paused_process_fenced),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
