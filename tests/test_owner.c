/*
 * test_owner.c - a lease whose holder process is gone.
 *
 * A begin that finds a live lease claims the key at once when the holder
 * ran in our PID namespace and is known to be dead (no such pid, a zombie,
 * a reused pid); a holder that is alive, or that it cannot judge, keeps
 * its lease until the TTL. Children are forked and report through pipes;
 * they never use cmocka but _exit() with a code that says what went wrong.
 *
 * The fake clock never moves unless a test moves it, so a claim made while
 * it stands still cannot be a TTL running out: only liveness explains it.
 * Children inherit the clock at the same reading by fork().
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
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TTL 30000
/* What "at once" means on a loaded machine, far below the TTL. */
#define AT_ONCE_MS 2000
#define KEY "job"
/* The key as SQL sees it: stored as a blob. */
#define SQL_KEY "CAST('" KEY "' AS BLOB)"

/* Exit codes of a child. */
enum {
  CHILD_OK = 0,
  CHILD_OPEN = 10,  /* idem_open failed */
  CHILD_CLAIM = 11, /* its begin did not claim */
  CHILD_PIPE = 12,  /* talking to the parent failed */
  CHILD_CLOSE = 13, /* idem_close failed */
};

/* What a child reports: first its claim, then what completing gave. */
struct report {
  int64_t a;
  int64_t b;
};

typedef struct holder {
  pid_t pid;
  int from_child; /* reports */
  int to_child;   /* a byte asks it to complete; EOF lets it go */
  uint64_t fence;
  uint32_t attempt;
} holder;

static tu_fx *fx_of(void **state) {
  tu_fx *fx = *state;
  fx->opts.ttl_ms = TTL;
  return fx;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int write_report(int fd, int64_t a, int64_t b) {
  struct report r = {a, b};
  return write(fd, &r, sizeof r) == (ssize_t)sizeof r ? 0 : -1;
}

/* The child: claims KEY with its own handle, reports fence and attempt,
 * then waits. Asked to, it completes and reports the code and whether its
 * lease reads as lost. */
static _Noreturn void holder_main(const tu_fx *fx, pid_t parent, int rd,
                                  int wr) {
  idem_db *db = NULL;
  idem_answer a = IDEM_ANSWER_INIT;
  char c;
  /* A test that fails half-way must not leave a holder behind, stopped or
   * waiting. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
    _exit(CHILD_PIPE);
  if (tu_open(&db, fx->path, &fx->opts) != IDEM_OK)
    _exit(CHILD_OPEN);
  if (idem_begin(db, KEY, strlen(KEY), NULL, &a) != IDEM_CLAIMED)
    _exit(CHILD_CLAIM);
  if (write_report(wr, (int64_t)a.fence, a.attempts) != 0)
    _exit(CHILD_PIPE);
  ssize_t n;
  while ((n = read(rd, &c, 1)) < 0 && errno == EINTR)
    ;
  if (n == 1) {
    int rc = idem_complete(a.lease, "holder", 6);
    if (write_report(wr, rc, idem_lease_lost(a.lease)) != 0)
      _exit(CHILD_PIPE);
  }
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  _exit(idem_close(db) == IDEM_OK ? CHILD_OK : CHILD_CLOSE);
}

/* Forks a holder and waits until it holds KEY. */
static void start_holder(tu_fx *fx, holder *h) {
  int up[2], down[2];
  assert_int_equal(pipe(up), 0);
  assert_int_equal(pipe(down), 0);
  pid_t parent = getpid();
  h->pid = fork();
  assert_true(h->pid >= 0);
  if (h->pid == 0) {
    close(up[0]);
    close(down[1]);
    holder_main(fx, parent, down[0], up[1]);
  }
  close(up[1]);
  close(down[0]);
  h->from_child = up[0];
  h->to_child = down[1];
  struct report r;
  ssize_t n = read(h->from_child, &r, sizeof r);
  if (n != (ssize_t)sizeof r) {
    int status = 0;
    waitpid(h->pid, &status, 0);
    fail_msg("holder did not claim: exit status %d",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  h->fence = (uint64_t)r.a;
  h->attempt = (uint32_t)r.b;
  assert_int_equal(h->attempt, 1);
}

static void close_pipes(holder *h) {
  close(h->from_child);
  close(h->to_child);
}

/* Kills the holder and reaps it. */
static void kill_holder(holder *h) {
  int status = 0;
  assert_int_equal(kill(h->pid, SIGKILL), 0);
  assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  close_pipes(h);
}

/* Asks a live holder to complete; returns what idem_complete() gave it and
 * sets *lost to what idem_lease_lost() said. Reaps it. */
static int holder_complete(holder *h, int *lost) {
  struct report r;
  assert_int_equal(write(h->to_child, "c", 1), 1);
  assert_int_equal(read(h->from_child, &r, sizeof r), (ssize_t)sizeof r);
  int status = 0;
  assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK);
  close_pipes(h);
  *lost = (int)r.b;
  return (int)r.a;
}

/* The state letter of a process, from /proc/PID/stat; 0 if unreadable. */
static char proc_state(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  return p && p[1] == ' ' ? p[2] : 0;
}

static int64_t row_int(tu_fx *fx, const char *column) {
  char sql[128];
  int64_t v = -1;
  snprintf(sql, sizeof sql, "SELECT %s FROM idem_keys WHERE key = %s", column,
           SQL_KEY);
  assert_int_equal(tu_sql_int(fx->path, sql, &v), 0);
  return v;
}

/* Changes one owner column of KEY's row by `delta`, and checks it did. */
static void shift_column(tu_fx *fx, const char *column, int64_t delta) {
  int64_t before = row_int(fx, column);
  char sql[160];
  snprintf(sql, sizeof sql,
           "UPDATE idem_keys SET %s = %s + %lld WHERE key = %s", column, column,
           (long long)delta, SQL_KEY);
  assert_int_equal(tu_sql(fx->path, sql), 0);
  assert_int_equal(row_int(fx, column), before + delta);
}

static void expect_busy(idem_db *db) {
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, KEY, &a), IDEM_BUSY);
  assert_null(a.lease);
  assert_true(a.lease_ms > 0 && a.lease_ms <= TTL);
  idem_answer_clear(&a);
}

/* Claims KEY as the attempt after `prev_fence`'s, completes it and checks
 * the stored result. */
static void expect_takeover(idem_db *db, uint64_t prev_fence,
                            uint32_t attempt) {
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, KEY, &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, attempt);
  assert_true(a.fence > prev_fence);
  assert_int_equal(idem_complete(a.lease, "successor", 9), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  tu_assert_completed(db, KEY, "successor");
}

/* The row names its holder: the child's pid, with a namespace and a start
 * time, so that there is something to check. */
static void test_row_names_holder(void **state) {
  tu_fx *fx = fx_of(state);
  holder h;
  start_holder(fx, &h);
  assert_int_equal(row_int(fx, "owner_pid"), h.pid);
  assert_true(row_int(fx, "owner_pidns") > 0);
  assert_true(row_int(fx, "owner_start") > 0);
  kill_holder(&h);
}

/* A holder killed with SIGKILL and reaped: the next begin claims at once,
 * as attempt 2 with a higher fence, while the fake clock stands still. */
static void test_killed_reaped(void **state) {
  tu_fx *fx = fx_of(state);
  holder h;
  start_holder(fx, &h);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  expect_busy(db);

  int64_t t0 = mono_ms();
  kill_holder(&h);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, KEY, &a), IDEM_CLAIMED);
  int64_t took = mono_ms() - t0;
  assert_true(took < AT_ONCE_MS);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > h.fence);
  assert_int_equal(idem_complete(a.lease, "successor", 9), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Killed but not yet reaped: a zombie holds no lease either. */
static void test_killed_zombie(void **state) {
  tu_fx *fx = fx_of(state);
  holder h;
  start_holder(fx, &h);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);

  int64_t t0 = mono_ms();
  assert_int_equal(kill(h.pid, SIGKILL), 0);
  /* Waits for the death without reaping, so the pid stays a zombie. */
  siginfo_t si;
  memset(&si, 0, sizeof si);
  assert_int_equal(waitid(P_PID, (id_t)h.pid, &si, WEXITED | WNOWAIT), 0);
  assert_int_equal(si.si_pid, h.pid);
  assert_int_equal(proc_state(h.pid), 'Z');

  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, KEY, &a), IDEM_CLAIMED);
  int64_t took = mono_ms() - t0;
  assert_true(took < AT_ONCE_MS);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > h.fence);
  /* Still a zombie: the claim did not wait for the reaping. */
  assert_int_equal(proc_state(h.pid), 'Z');

  int status = 0;
  assert_int_equal(waitpid(h.pid, &status, 0), h.pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  close_pipes(&h);
  assert_int_equal(idem_complete(a.lease, "successor", 9), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* IDEM_OPEN_TTL_ONLY: the dead holder's lease runs its TTL. */
static void test_ttl_only(void **state) {
  tu_fx *fx = fx_of(state);
  holder h;
  start_holder(fx, &h);
  kill_holder(&h);
  idem_options o = fx->opts;
  o.flags |= IDEM_OPEN_TTL_ONLY;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  expect_busy(db);
  tu_clock_advance_lease(&fx->clock, TTL + 1);
  expect_takeover(db, h.fence, 2);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A holder in another PID namespace proves nothing by its pid, even one
 * that names no process here: its lease runs its TTL. */
static void test_foreign_pidns(void **state) {
  tu_fx *fx = fx_of(state);
  holder h;
  start_holder(fx, &h);
  kill_holder(&h);
  shift_column(fx, "owner_pidns", 1);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  expect_busy(db);
  tu_clock_advance_lease(&fx->clock, TTL - 1);
  expect_busy(db);
  tu_clock_advance_lease(&fx->clock, 2);
  expect_takeover(db, h.fence, 2);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A live holder keeps its lease: another handle of this very process, a
 * child waiting in its job, and that child stopped (SIGSTOP). No begin
 * counts an attempt, and the holder completes normally. */
static void test_live_holder_kept(void **state) {
  tu_fx *fx = fx_of(state);
  holder h;
  start_holder(fx, &h);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  for (int i = 0; i < 3; i++)
    expect_busy(db);

  assert_int_equal(kill(h.pid, SIGSTOP), 0);
  int status = 0;
  assert_int_equal(waitpid(h.pid, &status, WUNTRACED), h.pid);
  assert_true(WIFSTOPPED(status));
  expect_busy(db);
  assert_int_equal(kill(h.pid, SIGCONT), 0);

  int lost = -1;
  assert_int_equal(holder_complete(&h, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  tu_assert_completed(db, KEY, "holder");
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(db, KEY, &r), IDEM_OK);
  assert_int_equal(r.attempts, 1);
  idem_record_clear(&r);

  /* This process as the holder, through a second handle. */
  idem_db *db2 = NULL;
  assert_int_equal(tu_open(&db2, fx->path, &fx->opts), IDEM_OK);
  idem_lease *l = NULL;
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(idem_begin(db2, "mine", 4, NULL, &a), IDEM_CLAIMED);
  l = a.lease;
  idem_answer_clear(&a);
  assert_int_equal(idem_begin(db, "mine", 4, NULL, &a), IDEM_BUSY);
  idem_answer_clear(&a);
  assert_int_equal(idem_complete(l, "mine", 4), IDEM_OK);
  assert_false(idem_lease_lost(l));
  idem_lease_free(l);
  assert_int_equal(idem_close(db2), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A pid reused by another process: this process holds the lease through a
 * second handle, and the row's start time is made another one's. The key
 * is claimable, and the holder that was taken over is refused. */
static void test_pid_reused_self(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = NULL, *db2 = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(tu_open(&db2, fx->path, &fx->opts), IDEM_OK);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db2, KEY, &a), IDEM_CLAIMED);
  idem_lease *old = a.lease;
  uint64_t old_fence = a.fence;
  idem_answer_clear(&a);
  assert_int_equal(row_int(fx, "owner_pid"), getpid());
  expect_busy(db);

  shift_column(fx, "owner_start", -1);
  assert_int_equal(tu_begin(db, KEY, &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > old_fence);
  idem_lease *now = a.lease;
  idem_answer_clear(&a);

  assert_int_equal(idem_complete(old, "stale", 5), IDEM_ELEASELOST);
  assert_true(idem_lease_lost(old));
  assert_int_equal(idem_complete(now, "successor", 9), IDEM_OK);
  idem_lease_free(old);
  idem_lease_free(now);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db2), IDEM_OK);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The same for a pid that names a live process of another start time, as
 * /proc shows it: the holder is a child, which is refused when it then
 * tries to complete. */
static void test_pid_reused_other(void **state) {
  tu_fx *fx = fx_of(state);
  holder h;
  start_holder(fx, &h);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  expect_busy(db);
  shift_column(fx, "owner_start", 1);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, KEY, &a), IDEM_CLAIMED);
  assert_int_equal(a.attempts, 2);
  assert_true(a.fence > h.fence);

  int lost = 0;
  assert_int_equal(holder_complete(&h, &lost), IDEM_ELEASELOST);
  assert_true(lost != 0);
  assert_int_equal(idem_complete(a.lease, "successor", 9), IDEM_OK);
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_row_names_holder), T(test_killed_reaped),
      T(test_killed_zombie),    T(test_ttl_only),
      T(test_foreign_pidns),    T(test_live_holder_kept),
      T(test_pid_reused_self),  T(test_pid_reused_other),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
