/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - handles and leases that cross fork().
 *
 * SQLite keeps, per process, records of the POSIX locks it holds on each
 * file; a child of fork() inherits the records without the locks. A
 * connection that the child opens beside an inherited one holds no lock
 * that other processes see, and when the parent closes its handle it
 * checkpoints and deletes the WAL under the child. libidem refuses with
 * IDEM_EFORKED every open in a process that inherited open handles, and
 * every call on an inherited handle or lease, without touching SQLite or
 * the handle's mutexes; a child whose parent had no handle open at fork()
 * works normally.
 *
 * Children never use cmocka: they report what each call answered through
 * a pipe and _exit() with a code that says what went wrong (see the enum
 * below), and die with the parent (PR_SET_PDEATHSIG). A child that hangs
 * in a call is killed after HANG_MS and named.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How long a child may take to answer one call: every call it makes is
 * refused at once or answered from a small file, so this is only reached
 * by a child stuck on a lock. */
#define HANG_MS 5000
#define MAX_REPORTS 32

/* Exit codes of a child. */
enum {
  CHILD_OK = 0,
  CHILD_ORPHAN = 20, /* its parent was gone before PR_SET_PDEATHSIG held */
  CHILD_PIPE = 21,   /* talking to the parent failed */
  CHILD_CALL = 22,   /* a call did not answer what the child needs */
  CHILD_FORK = 23,   /* its own fork() failed */
};

/* --- Children ----------------------------------------------------------- */

/* The first thing every child does: die with the parent, which may fail a
 * test half-way and must not leave a child waiting on a pipe. */
static void child_start(pid_t parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
    _exit(CHILD_ORPHAN);
}

static void put(int fd, int v) {
  if (write(fd, &v, sizeof v) != (ssize_t)sizeof v)
    _exit(CHILD_PIPE);
}

static void await_byte(int fd) {
  char c;
  ssize_t n;
  while ((n = read(fd, &c, 1)) < 0 && errno == EINTR)
    ;
  if (n != 1)
    _exit(CHILD_PIPE);
}

/* Counts the error lines the library logs: a refusal must be loud. */
static int logged_refusals;

static void count_log(void *ctx, int level, const char *msg) {
  (void)ctx;
  if (level == IDEM_LOG_ERROR && strstr(msg, "fork()") != NULL)
    logged_refusals++;
}

/* --- The parent's side ---------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads one int the child reported, waiting at most HANG_MS. False if
 * none came: the child hung, or ended without reporting. */
static bool get(int fd, int *v) {
  int64_t deadline = now_ms() + HANG_MS;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    int64_t left = deadline - now_ms();
    if (left <= 0)
      return false;
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return false;
    return read(fd, v, sizeof *v) == (ssize_t)sizeof *v;
  }
}

/* Waits for the child to end (killing it if it does not within HANG_MS)
 * and returns its exit code, or -signal if a signal ended it. */
static int reap(pid_t pid) {
  int status = 0;
  int64_t deadline = now_ms() + HANG_MS;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      break;
    assert_int_equal(r, 0);
    if (now_ms() >= deadline) {
      kill(pid, SIGKILL);
      assert_int_equal(waitpid(pid, &status, 0), pid);
      break;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* The child's reports: the answer of each call, in order. */
typedef struct reports {
  int v[MAX_REPORTS];
  int n;
  bool hung; /* the next report did not come */
} reports;

static void read_reports(int fd, int expected, reports *r) {
  r->n = 0;
  r->hung = false;
  while (r->n < expected && r->n < MAX_REPORTS) {
    if (!get(fd, &r->v[r->n])) {
      r->hung = true;
      return;
    }
    r->n++;
  }
}

/* Asserts that the child answered call i of `names` as `want`, naming the
 * call where it hung or answered otherwise. */
static void expect_reports(const reports *r, const char *const *names,
                           const int *want, int count) {
  for (int i = 0; i < count; i++) {
    if (i >= r->n)
      fail_msg("the child %s in call %d, %s: a call on an inherited handle "
               "took a lock that a thread of the parent held at fork()",
               r->hung ? "hung" : "stopped", i, names[i]);
    if (r->v[i] != want[i])
      fail_msg("call %d, %s: the child got %d (%s), expected %d (%s)", i,
               names[i], r->v[i], idem_errstr(r->v[i]), want[i],
               idem_errstr(want[i]));
  }
}

/* A lease the parent holds during a test: freed (and so released) by the
 * teardown if an assertion ended the test, so that the teardown can close
 * fx->db, and no handle stays open for the next test's children to
 * inherit. */
static idem_lease *parent_lease;

static int fork_teardown(void **state) {
  idem_lease_free(parent_lease);
  parent_lease = NULL;
  return tu_fx_teardown(state);
}

static const char *state_name(int state) {
  static const char *const names[] = {"absent", "pending", "completed",
                                      "failed", "poisoned"};
  return state >= 0 && state <= IDEM_STATE_POISONED ? names[state] : "?";
}

/* --- 1. The data loss the refusal prevents ----------------------------- */

/* The child of test_open_beside_inherited_handle. With the fix its open is
 * refused; without it, it claims KEY, waits for the parent to close its
 * handle, and completes KEY. */
static _Noreturn void beside_child(tu_fx *fx, pid_t parent, int up, int down) {
  child_start(parent);
  idem_db *db = NULL;
  int rc = idem_open(&db, fx->path, &fx->opts);
  put(up, rc);
  if (rc != IDEM_OK) {
    put(up, strstr(idem_errmsg(db), "fork()") != NULL);
    put(up, idem_close(db));
    _exit(CHILD_OK);
  }
  idem_answer a = IDEM_ANSWER_INIT;
  rc = idem_begin(db, "job", 3, NULL, &a);
  put(up, rc);
  if (rc != IDEM_CLAIMED)
    _exit(CHILD_CALL);
  await_byte(down);
  put(up, idem_complete(a.lease, "child", 5));
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  idem_close(db);
  _exit(CHILD_OK);
}

/* A prefork pool that opened its handle too early: the parent opens a
 * handle and forks; the child opens its own handle to the same file and
 * would complete a key; the parent closes its handle. Before the fix the
 * child's handle held no real lock, the parent's close checkpointed and
 * deleted the WAL under it, and the completion the child was told had
 * succeeded was lost: the key came back claimable and its job ran again.
 * Now the child's open answers IDEM_EFORKED and writes nothing. */
static void test_open_beside_inherited_handle(void **state) {
  tu_fx *fx = *state;
  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  tu_claim_complete(fx->db, "before", "parent");
  char *wal = tu_suffix(fx->path, "-wal");
  uint64_t db_sum, wal_sum;
  assert_int_equal(tu_checksum(fx->path, &db_sum), 0);
  assert_int_equal(tu_checksum(wal, &wal_sum), 0);

  int up[2], down[2];
  assert_int_equal(pipe(up), 0);
  assert_int_equal(pipe(down), 0);
  pid_t parent = getpid();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(up[0]);
    close(down[1]);
    beside_child(fx, parent, up[1], down[0]);
  }
  close(up[1]);
  close(down[0]);

  int open_rc = 0, said_fork = 0, close_rc = 0;
  assert_true(get(up[0], &open_rc));
  if (open_rc != IDEM_OK) {
    assert_true(get(up[0], &said_fork));
    assert_true(get(up[0], &close_rc));
    assert_int_equal(reap(pid), CHILD_OK);
    close(up[0]);
    close(down[1]);
    assert_int_equal(open_rc, IDEM_EFORKED);
    assert_true(said_fork);
    assert_int_equal(close_rc, IDEM_OK); /* its own, refused handle */
    /* Nothing was written: not a byte of the file or the WAL. */
    uint64_t db_after, wal_after;
    assert_int_equal(tu_checksum(fx->path, &db_after), 0);
    assert_int_equal(tu_checksum(wal, &wal_after), 0);
    free(wal);
    assert_true(db_after == db_sum && wal_after == wal_sum);
    assert_int_equal(idem_close(fx->db), IDEM_OK);
    assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
    idem_record rec = IDEM_RECORD_INIT;
    assert_int_equal(tu_get(fx->db, "job", &rec), IDEM_ENOTFOUND);
    tu_assert_completed(fx->db, "before", "parent");
    return;
  }

  /* The old behaviour, played to the end to show what it costs. */
  free(wal);
  int begin_rc = 0, complete_rc = 0;
  assert_true(get(up[0], &begin_rc));
  assert_int_equal(begin_rc, IDEM_CLAIMED);
  int parent_close = idem_close(fx->db); /* the parent closes its handle */
  fx->db = NULL;
  assert_int_equal(parent_close, IDEM_OK);
  assert_int_equal(write(down[1], "c", 1), 1);
  assert_true(get(up[0], &complete_rc));
  assert_int_equal(reap(pid), CHILD_OK);
  close(up[0]);
  close(down[1]);
  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  idem_record rec = IDEM_RECORD_INIT;
  int get_rc = tu_get(fx->db, "job", &rec);
  idem_answer a = IDEM_ANSWER_INIT;
  int again = tu_begin(fx->db, "job", &a);
  if (a.lease) {
    idem_release(a.lease, NULL);
    idem_lease_free(a.lease);
  }
  idem_answer_clear(&a);
  if (complete_rc == IDEM_OK &&
      (get_rc != IDEM_OK || rec.state != IDEM_STATE_COMPLETED))
    fail_msg("the child's idem_complete() answered IDEM_OK, but once the "
             "parent had closed its handle the key was %s (attempts %u) and "
             "the next begin answered %s: the completion was lost and the "
             "job runs again",
             get_rc == IDEM_OK ? state_name(rec.state) : "absent",
             (unsigned)rec.attempts, idem_errstr(again));
  idem_record_clear(&rec);
  fail_msg("idem_open() in a child beside an inherited handle answered %s, "
           "not IDEM_EFORKED (the child's complete answered %s)",
           idem_errstr(open_rc), idem_errstr(complete_rc));
}

/* --- 2. Calls on an inherited handle and lease ---------------------------- */

/* The parent's handle, with a heartbeat thread (that the child does not
 * have), a completed key and a held lease. The thread runs on real time
 * and never comes round during a test. */
typedef struct inherited {
  tu_fx *fx;
  idem_options opts;
  idem_db *db;       /* fx->db */
  idem_lease *lease; /* parent_lease */
  int up[2];
  pid_t pid;
  void (*child)(struct inherited *in);
} inherited;

static void inherited_open(tu_fx *fx, inherited *in) {
  memset(in, 0, sizeof *in);
  in->fx = fx;
  in->opts = fx->opts;
  in->opts.ttl_ms = 3600000;
  in->opts.heartbeat_ms = 1800000;
  in->opts.log = count_log;
  assert_int_equal(tu_open(&fx->db, fx->path, &in->opts), IDEM_OK);
  in->db = fx->db;
  tu_claim_complete(in->db, "done", "parent");
  in->lease = parent_lease = tu_claim(in->db, "held");
  assert_int_equal(pipe(in->up), 0);
}

/* Called by idem_history() with the handle's mutex held: the child is
 * forked right there, so that its copy of the mutex stays locked for good,
 * as when another thread of the parent is inside a call at fork(). Any
 * call of the child that takes the mutex hangs. */
static int fork_holding_lock(void *ctx, const idem_attempt *att) {
  (void)att;
  inherited *in = ctx;
  pid_t parent = getpid();
  in->pid = fork();
  if (in->pid == 0) {
    child_start(parent);
    close(in->up[0]);
    logged_refusals = 0;
    in->child(in);
    _exit(CHILD_OK);
  }
  return 1;
}

static void inherited_fork(inherited *in, void (*child)(inherited *)) {
  in->child = child;
  in->pid = -1;
  unsigned count = 0;
  assert_int_equal(
      idem_history(in->db, "done", 4, fork_holding_lock, in, &count), IDEM_OK);
  assert_true(in->pid > 0);
  close(in->up[1]);
}

/* After the child: the parent's handle and lease work on, and nothing of
 * what the child was refused happened. */
static void inherited_check_parent(inherited *in) {
  assert_false(idem_lease_lost(in->lease));
  assert_int_equal(idem_complete(in->lease, "parent", 6), IDEM_OK);
  idem_lease_free(in->lease);
  in->lease = parent_lease = NULL;
  tu_assert_completed(in->db, "done", "parent");
  tu_assert_completed(in->db, "held", "parent");
  idem_record rec = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(in->db, "held", &rec), IDEM_OK);
  assert_int_equal(rec.attempts, 1);
  idem_record_clear(&rec);
  assert_int_equal(tu_get(in->db, "new", &rec), IDEM_ENOTFOUND);
  idem_stats st = tu_stats(in->db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 2);
  assert_int_equal(st.rows[IDEM_STATE_PENDING], 0);
}

/* Reads the child's reports and reaps it. */
static void inherited_finish(inherited *in, int count, reports *r) {
  read_reports(in->up[0], count, r);
  int code = reap(in->pid);
  close(in->up[0]);
  if (!r->hung && r->n == count && code != CHILD_OK)
    fail_msg("the child ended with %d", code);
}

/* Callbacks and a job that count their calls in *ctx: a refused call
 * makes none. The pool's workers run the job as their work. */
static int never_list(void *ctx, const idem_record *rec) {
  (void)rec;
  *(int *)ctx += 1;
  return 0;
}

static int never_attempt(void *ctx, const idem_attempt *a) {
  (void)a;
  *(int *)ctx += 1;
  return 0;
}

static int never_job(void *ctx, idem_lease *lease) {
  (void)lease;
  *(int *)ctx += 1;
  return IDEM_JOB_DONE;
}

static const char *const handle_calls[] = {
    "idem_get",
    "idem_list",
    "idem_list: callbacks",
    "idem_history",
    "idem_reset",
    "idem_reset_state",
    "idem_purge",
    "idem_stats_get",
    "idem_run",
    "idem_run: job ran",
    "idem_lease_set_result",
    "idem_errmsg says inherited",
    "idem_open",
    "idem_errmsg of the refused open says fork()",
    "idem_close of the refused open",
    "idem_open_db",
    "idem_close",
    "error lines logged"};
enum { HANDLE_CALLS = sizeof handle_calls / sizeof *handle_calls };

static void handle_child(inherited *in) {
  int fd = in->up[1];
  idem_db *db = in->db;
  idem_record rec = IDEM_RECORD_INIT;
  int seen = 0;
  unsigned listed = 1;
  uint64_t count = 1;
  put(fd, idem_get(db, "done", 4, &rec));
  put(fd, idem_list(db, -1, NULL, 0, 10, never_list, &seen, &listed));
  put(fd, seen + (int)listed);
  put(fd, idem_history(db, "done", 4, never_attempt, &seen, NULL));
  put(fd, idem_reset(db, "done", 4));
  put(fd, idem_reset_state(db, IDEM_STATE_COMPLETED, &count));
  put(fd, idem_purge(db, 0, &count));
  idem_stats st = IDEM_STATS_INIT;
  put(fd, idem_stats_get(db, &st));
  idem_answer a = IDEM_ANSWER_INIT;
  put(fd, idem_run(db, "new", 3, NULL, never_job, &seen, &a));
  put(fd, seen + a.ran);
  put(fd, idem_lease_set_result(in->lease, "x", 1, 0));
  put(fd, strstr(idem_errmsg(db), "inherited") != NULL);
  idem_db *own = NULL;
  put(fd, idem_open(&own, in->fx->path, &in->opts));
  put(fd, strstr(idem_errmsg(own), "fork()") != NULL);
  put(fd, idem_close(own));
  /* Refused before the connection is even looked at. */
  own = NULL;
  int rc = idem_open_db(&own, NULL, &in->opts);
  idem_close(own);
  put(fd, rc);
  put(fd, idem_close(db));
  put(fd, logged_refusals);
}

/* Every call of db.c, admin.c, run.c and error.c on a handle opened
 * before fork(), made in the child, answers IDEM_EFORKED at once, though
 * the child's copy of the handle's mutex is locked for good; callbacks and
 * jobs are never called; idem_open() in the child is refused too; each
 * refusal is logged. The parent's handle and lease work on. */
static void test_inherited_handle_refused(void **state) {
  inherited in;
  inherited_open(*state, &in);
  inherited_fork(&in, handle_child);
  reports r;
  inherited_finish(&in, HANDLE_CALLS, &r);
  const int want[HANDLE_CALLS] = {
      IDEM_EFORKED, IDEM_EFORKED, 0, IDEM_EFORKED, IDEM_EFORKED, IDEM_EFORKED,
      IDEM_EFORKED, IDEM_EFORKED, IDEM_EFORKED, 0, IDEM_EFORKED, 1,
      IDEM_EFORKED, 1, IDEM_OK, IDEM_EFORKED, IDEM_EFORKED,
      /* every refusal above: 10 calls on the handle and lease, 2 opens */
      12};
  expect_reports(&r, handle_calls, want, HANDLE_CALLS);
  inherited_check_parent(&in);
}

static const char *const lease_calls[] = {
    "idem_begin",     "idem_begin with wait_ms",
    "idem_complete",  "idem_fail",
    "idem_release",   "idem_complete_in_tx",
    "idem_heartbeat", "idem_lease_free",
    "idem_close"};
enum { LEASE_CALLS = sizeof lease_calls / sizeof *lease_calls };

static void lease_child(inherited *in) {
  int fd = in->up[1];
  idem_db *db = in->db;
  idem_answer a = IDEM_ANSWER_INIT;
  put(fd, idem_begin(db, "new", 3, NULL, &a));
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  bo.wait_ms = -1;
  put(fd, idem_begin(db, "held", 4, &bo, &a));
  put(fd, idem_complete(in->lease, "child", 5));
  put(fd, idem_fail(in->lease, 7, "child", 5));
  put(fd, idem_release(in->lease, "child"));
  put(fd, idem_complete_in_tx(in->lease, "child", 5));
  unsigned lost = 0;
  put(fd, idem_heartbeat(db, &lost));
  idem_lease_free(in->lease);
  put(fd, IDEM_EFORKED); /* it returned */
  put(fd, idem_close(db));
}

/* The calls of lease.c and heartbeat.c on a handle and a lease opened
 * before fork(), made in the child while its copy of the handle's mutex is
 * locked for good: each answers IDEM_EFORKED at once; freeing the lease
 * does not release it, which stays the parent's to complete. */
static void test_inherited_lease_refused(void **state) {
  inherited in;
  inherited_open(*state, &in);
  inherited_fork(&in, lease_child);
  reports r;
  inherited_finish(&in, LEASE_CALLS, &r);
  int want[LEASE_CALLS];
  for (int i = 0; i < LEASE_CALLS; i++)
    want[i] = IDEM_EFORKED;
  expect_reports(&r, lease_calls, want, LEASE_CALLS);
  inherited_check_parent(&in);
}

/* --- 3, 4. Children that may open ---------------------------------------- */

#define POOL 4
#define POOL_KEYS 20

/* A worker of a prefork pool: its own handle, every key through idem_run,
 * waiting while another worker holds it. */
static _Noreturn void pool_worker(const char *path, const idem_options *o,
                                  pid_t parent) {
  child_start(parent);
  idem_db *db = NULL;
  if (idem_open(&db, path, o) != IDEM_OK)
    _exit(CHILD_CALL);
  for (int k = 0; k < POOL_KEYS; k++) {
    char key[16];
    snprintf(key, sizeof key, "job-%d", k);
    idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
    bo.wait_ms = -1;
    idem_answer a = IDEM_ANSWER_INIT;
    int seen = 0;
    if (idem_run(db, key, strlen(key), &bo, never_job, &seen, &a) !=
        IDEM_COMPLETED)
      _exit(CHILD_CALL);
    idem_answer_clear(&a);
  }
  _exit(idem_close(db) == IDEM_OK ? CHILD_OK : CHILD_CALL);
}

static void assert_pool_done(const char *path, const idem_options *o) {
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, path, o), IDEM_OK);
  for (int k = 0; k < POOL_KEYS; k++) {
    char key[16];
    snprintf(key, sizeof key, "job-%d", k);
    idem_record rec = IDEM_RECORD_INIT;
    assert_int_equal(tu_get(db, key, &rec), IDEM_OK);
    assert_int_equal(rec.state, IDEM_STATE_COMPLETED);
    assert_int_equal(rec.attempts, 1);
    idem_record_clear(&rec);
  }
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The common case: a parent with no handle open forks its workers, and
 * each opens its own handle, claims and completes; every key is claimed
 * once. */
static void test_prefork_pool_opens_in_children(void **state) {
  tu_fx *fx = *state;
  idem_options o = fx->opts;
  o.clock = NULL; /* processes cannot share a fake clock */
  o.clock_ctx = NULL;
  pid_t parent = getpid();
  pid_t pids[POOL];
  for (int w = 0; w < POOL; w++) {
    pids[w] = fork();
    assert_true(pids[w] >= 0);
    if (pids[w] == 0)
      pool_worker(fx->path, &o, parent);
  }
  for (int w = 0; w < POOL; w++)
    assert_int_equal(reap(pids[w]), CHILD_OK);
  assert_pool_done(fx->path, &o);
}

/* The child of test_closed_before_fork: claims "b", says so, and completes
 * it when told. */
static _Noreturn void after_close_child(tu_fx *fx, pid_t parent, int up,
                                        int down) {
  child_start(parent);
  idem_db *db = NULL;
  int rc = idem_open(&db, fx->path, &fx->opts);
  put(up, rc);
  if (rc != IDEM_OK)
    _exit(CHILD_CALL);
  idem_answer a = IDEM_ANSWER_INIT;
  put(up, idem_begin(db, "a", 1, NULL, &a));
  idem_answer_clear(&a);
  rc = idem_begin(db, "b", 1, NULL, &a);
  put(up, rc);
  if (rc != IDEM_CLAIMED)
    _exit(CHILD_CALL);
  await_byte(down);
  put(up, idem_complete(a.lease, "child", 5));
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  put(up, idem_close(db));
  _exit(CHILD_OK);
}

/* A parent that used a handle and closed it before fork(): the child
 * opens, sees the parent's work and claims; the parent, with a handle
 * opened after the fork, sees the child's lease, and closing that handle
 * takes nothing from the child, whose completion stands. */
static void test_closed_before_fork(void **state) {
  tu_fx *fx = *state;
  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  tu_claim_complete(fx->db, "a", "parent");
  assert_int_equal(idem_close(fx->db), IDEM_OK);
  fx->db = NULL;

  int up[2], down[2];
  assert_int_equal(pipe(up), 0);
  assert_int_equal(pipe(down), 0);
  pid_t parent = getpid();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(up[0]);
    close(down[1]);
    after_close_child(fx, parent, up[1], down[0]);
  }
  close(up[1]);
  close(down[0]);
  int v[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++)
    if (!get(up[0], &v[i]))
      fail_msg("the child stopped after %d reports, exit %d", i, reap(pid));
  assert_int_equal(v[0], IDEM_OK);
  assert_int_equal(v[1], IDEM_COMPLETED);
  assert_int_equal(v[2], IDEM_CLAIMED);

  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(fx->db, "b", &a), IDEM_BUSY);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(fx->db), IDEM_OK);
  fx->db = NULL;

  assert_int_equal(write(down[1], "c", 1), 1);
  for (int i = 0; i < 2; i++)
    if (!get(up[0], &v[i]))
      fail_msg("the child stopped before completing, exit %d", reap(pid));
  assert_int_equal(v[0], IDEM_OK);
  assert_int_equal(v[1], IDEM_OK);
  assert_int_equal(reap(pid), CHILD_OK);
  close(up[0]);
  close(down[1]);
  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(fx->db, "b", "child");
  idem_record rec = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "b", &rec), IDEM_OK);
  assert_int_equal(rec.attempts, 1);
  idem_record_clear(&rec);
}

/* --- 5. Further down the line -----------------------------------------------
 */

static _Noreturn void grandparent_child(tu_fx *fx, idem_db *inherited_db,
                                        pid_t parent, int up) {
  child_start(parent);
  /* Ends the inherited handle: it does not end the inheritance. */
  put(up, idem_close(inherited_db));
  idem_db *db = NULL;
  put(up, idem_open(&db, fx->path, &fx->opts));
  idem_close(db);
  pid_t me = getpid();
  pid_t pid = fork();
  if (pid < 0)
    _exit(CHILD_FORK);
  if (pid == 0) {
    child_start(me);
    db = NULL;
    put(up, idem_open(&db, fx->path, &fx->opts));
    idem_close(db);
    _exit(CHILD_OK);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : CHILD_FORK);
}

/* A child that inherited a handle and closed it still cannot open one,
 * and neither can its own child: the SQLite records it inherited stay in
 * the process, and in every process forked from it. */
static void test_refusal_reaches_grandchildren(void **state) {
  tu_fx *fx = *state;
  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  int up[2];
  assert_int_equal(pipe(up), 0);
  pid_t parent = getpid();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(up[0]);
    grandparent_child(fx, fx->db, parent, up[1]);
  }
  close(up[1]);
  int v[3] = {0, 0, 0};
  int n = 0;
  while (n < 3 && get(up[0], &v[n]))
    n++;
  int code = reap(pid);
  close(up[0]);
  assert_int_equal(n, 3);
  assert_int_equal(code, CHILD_OK);
  assert_int_equal(v[0], IDEM_EFORKED); /* close of the inherited handle */
  assert_int_equal(v[1], IDEM_EFORKED); /* open in the child */
  assert_int_equal(v[2], IDEM_EFORKED); /* open in the grandchild */
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, fork_teardown)

int main(void) {
  /* The calls of lease.c and heartbeat.c last: they are the ones a
   * half-done change would leave unguarded. */
  const struct CMUnitTest tests[] = {
      T(test_open_beside_inherited_handle),   T(test_inherited_handle_refused),
      T(test_prefork_pool_opens_in_children), T(test_closed_before_fork),
      T(test_refusal_reaches_grandchildren),  T(test_inherited_lease_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
