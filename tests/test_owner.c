/* SPDX-License-Identifier: MIT */
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
 *
 * "Cannot tell" must never read as "dead": the last tests run a checker
 * in a child that is denied part of /proc, as systemd's ProtectProc= and
 * ProcSubset= deny it to a service, and that must still answer IDEM_BUSY
 * for a live lease. They need root to build that sandbox, and are skipped
 * without it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
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
  CHILD_OPEN = 10,     /* idem_open failed */
  CHILD_CLAIM = 11,    /* its begin did not claim */
  CHILD_PIPE = 12,     /* talking to the parent failed */
  CHILD_CLOSE = 13,    /* idem_close failed */
  CHILD_NOPRIV = 14,   /* the kernel refused the sandbox: skip the test */
  CHILD_SETUP = 15,    /* building the sandbox failed otherwise */
  CHILD_SEES = 16,     /* the sandbox does not show /proc as needed */
  CHILD_NOACCESS = 17, /* uid 65534 cannot reach the database: skip */
  CHILD_BUSY = 18,     /* a live lease was not answered IDEM_BUSY */
  CHILD_REPORT = 19,   /* idem_get or the stats disagree with the begin */
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

/* --- What cannot be told ------------------------------------------------ */

#define BOOT_ID "/proc/sys/kernel/random/boot_id"
#define NOBODY 65534

static int have_boot_id(void) {
  if (access(BOOT_ID, R_OK) == 0)
    return 1;
  print_message("no boot id on this system: nothing to compare\n");
  return 0;
}

static int have_root(void) {
  if (geteuid() == 0)
    return 1;
  print_message("not root: cannot build the sandbox of this test\n");
  return 0;
}

/* A lease row as a holder writes it that could not read its boot id (no
 * /proc/sys, as under systemd's ProcSubset=pid): lease_boot NULL. For a
 * process that knows its own boot id, that unknown id is not another one:
 * the holder may well run on this boot, so its lease holds until its
 * deadline, for begin, idem_get and the stats alike, and only then is the
 * key claimed. */
static void test_unknown_boot_row_kept(void **state) {
  tu_fx *fx = fx_of(state);
  if (!have_boot_id())
    skip();
  holder h;
  start_holder(fx, &h);
  char sql[128];
  snprintf(sql, sizeof sql,
           "UPDATE idem_keys SET lease_boot = NULL WHERE key = %s", SQL_KEY);
  assert_int_equal(tu_sql(fx->path, sql), 0);
  assert_int_equal(row_int(fx, "lease_boot IS NULL"), 1);

  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  expect_busy(db);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(db, KEY, &r), IDEM_OK);
  assert_true(r.lease_ms > 0 && r.lease_ms <= TTL);
  idem_record_clear(&r);
  assert_int_equal(tu_stats(db).leased, 1);

  tu_clock_advance_lease(&fx->clock, TTL - 1);
  expect_busy(db);
  tu_clock_advance_lease(&fx->clock, 2);
  assert_int_equal(tu_stats(db).leased, 0);
  expect_takeover(db, h.fence, 2);
  int lost = 0;
  assert_int_equal(holder_complete(&h, &lost), IDEM_ELEASELOST);
  assert_true(lost != 0);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* What a checker child's sandbox does. */
enum {
  HIDE_PROCS,   /* /proc hidepid=invisible, and uid 65534 */
  HIDE_BOOT_ID, /* the boot id reads empty */
  FOREIGN_PROC, /* after the open, /proc is another PID namespace's */
};

/* What a checker is told: its sandbox, and the holder it checks. */
typedef struct checker {
  int sandbox;
  pid_t holder;
  int64_t holder_start; /* the row's owner_start */
  uint64_t fence;
  bool holder_alive;
} checker;

static const char *child_what(int code) {
  switch (code) {
  case CHILD_OPEN:
    return "idem_open failed";
  case CHILD_CLAIM:
    return "the key was not claimed as attempt 2 when it should have been";
  case CHILD_PIPE:
    return "the parent-death signal could not be set";
  case CHILD_CLOSE:
    return "idem_close failed";
  case CHILD_SETUP:
    return "the sandbox could not be built";
  case CHILD_SEES:
    return "the sandbox does not show /proc as the test needs";
  case CHILD_BUSY:
    return "a live lease was not answered IDEM_BUSY";
  case CHILD_REPORT:
    return "idem_get or the stats do not count the live lease";
  default:
    return "unexpected exit";
  }
}

/* Mounts a /proc of this mount namespace that shows only our own user's
 * processes, as ProtectProc=invisible does, then becomes uid and gid
 * 65534. The holder, root's, is then hidden: no /proc entry, and kill()
 * answers EPERM while it lives. */
static int hide_procs(const tu_fx *fx, const checker *c) {
  pid_t holder_pid = c->holder;
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "hidepid=invisible") != 0 &&
      /* Kernels before 5.8 know only the number. */
      (errno != EINVAL ||
       mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
             "hidepid=2") != 0))
    return errno == EPERM ? CHILD_NOPRIV : CHILD_SETUP;
  if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
    return CHILD_SETUP;
  char path[96];
  snprintf(path, sizeof path, "/proc/%ld/task/%ld/stat", (long)holder_pid,
           (long)holder_pid);
  int fd = open(path, O_RDONLY);
  if (fd >= 0) {
    close(fd);
    return CHILD_SEES;
  }
  if (errno != ENOENT)
    return CHILD_SEES;
  if (c->holder_alive && (kill(holder_pid, 0) == 0 || errno != EPERM))
    return CHILD_SEES;
  if (access(fx->dir, R_OK | W_OK | X_OK) != 0 ||
      access(fx->path, R_OK | W_OK) != 0)
    return CHILD_NOACCESS;
  return 0;
}

/* Hides the boot id behind an empty file, as if /proc/sys were not
 * mounted: it reads as nothing. */
static int hide_boot_id(void) {
  if (mount("/dev/null", BOOT_ID, NULL, MS_BIND, NULL) != 0)
    return errno == EPERM ? CHILD_NOPRIV : CHILD_SETUP;
  char buf[64];
  int fd = open(BOOT_ID, O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
  if (fd >= 0)
    close(fd);
  return n >= 36 ? CHILD_SEES : 0;
}

/* The start time (field 22) of a process in /proc/PID/stat; -1 if it
 * cannot be read. */
static int64_t proc_start(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  for (int field = 2; p && field < 22; field++)
    p = strchr(p + 1, ' ');
  return p ? strtoll(p + 1, NULL, 10) : -1;
}

/* The first process of a new PID namespace: mounts that namespace's
 * /proc over ours (the mount namespace is the checker's), starts a twin
 * under the holder's pid number, reports on `up`, and lives until the
 * checker closes `down`. Its death takes the twin with it. */
static _Noreturn void foreign_init(const checker *c, int up, int down) {
  char byte = 0;
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
    _exit(CHILD_SETUP);
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
    _exit(CHILD_SETUP);
  /* The twin must start a clock tick or more after the holder, so that
   * its start time differs from the one the row records. */
  struct timespec tick = {0, 30 * 1000 * 1000};
  nanosleep(&tick, NULL);
  int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
  if (fd < 0 || dprintf(fd, "%ld", (long)c->holder - 1) <= 0)
    _exit(CHILD_SETUP);
  close(fd);
  pid_t twin = fork();
  if (twin == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;)
      pause();
  }
  if (twin != c->holder || write(up, &byte, 1) != 1)
    _exit(CHILD_SETUP);
  while (read(down, &byte, 1) < 0 && errno == EINTR)
    ;
  _exit(CHILD_OK);
}

/* Mounts over /proc that of a new PID namespace in which the holder's pid
 * names another, younger process. */
static int foreign_proc(const checker *c) {
  int up[2], down[2];
  if (c->holder <= 2 || c->holder_start <= 0)
    return CHILD_SETUP;
  if (unshare(CLONE_NEWPID) != 0)
    return errno == EPERM ? CHILD_NOPRIV : CHILD_SETUP;
  if (pipe(up) != 0 || pipe(down) != 0)
    return CHILD_SETUP;
  pid_t init = fork();
  if (init < 0)
    return CHILD_SETUP;
  if (init == 0) {
    close(up[0]);
    close(down[1]);
    foreign_init(c, up[1], down[0]);
  }
  close(up[1]);
  close(down[0]);
  char byte;
  if (read(up[0], &byte, 1) != 1)
    return CHILD_SETUP;
  /* The write end of `down` stays open till the checker exits. */
  char link[32];
  if (readlink("/proc/self", link, sizeof link) >= 0)
    return CHILD_SEES;
  int64_t start = proc_start(c->holder);
  return start > 0 && start != c->holder_start ? 0 : CHILD_SEES;
}

/* Builds the checker's sandbox in a mount namespace of its own, so that
 * nothing it mounts is seen outside it. */
static int enter_sandbox(const tu_fx *fx, pid_t parent, const checker *c) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
    return CHILD_PIPE;
  if (unshare(CLONE_NEWNS) != 0)
    return errno == EPERM ? CHILD_NOPRIV : CHILD_SETUP;
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
    return CHILD_SETUP;
  int rc = c->sandbox == HIDE_PROCS     ? hide_procs(fx, c)
           : c->sandbox == HIDE_BOOT_ID ? hide_boot_id()
                                        : foreign_proc(c);
  if (rc)
    return rc;
  /* A change of uid clears the parent-death signal: set it again. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
    return CHILD_PIPE;
  return 0;
}

static int child_begin(idem_db *db, idem_answer *a) {
  idem_answer_clear(a);
  return idem_begin(db, KEY, strlen(KEY), NULL, a);
}

/* Claims KEY as attempt 2 after `fence` and completes it. */
static int child_claim(idem_db *db, uint64_t fence) {
  idem_answer a = IDEM_ANSWER_INIT;
  bool ok = child_begin(db, &a) == IDEM_CLAIMED && a.attempts == 2 &&
            a.fence > fence &&
            idem_complete(a.lease, "successor", 9) == IDEM_OK;
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  return ok ? CHILD_OK : CHILD_CLAIM;
}

/* KEY's lease is live: it is answered IDEM_BUSY, counted by idem_get and
 * the stats, until the TTL runs out on the (inherited) fake clock; then
 * the key is claimed. */
static int child_kept(tu_fx *fx, idem_db *db, uint64_t fence) {
  idem_answer a = IDEM_ANSWER_INIT;
  bool ok =
      child_begin(db, &a) == IDEM_BUSY && a.lease_ms > 0 && a.lease_ms <= TTL;
  idem_answer_clear(&a);
  if (!ok)
    return CHILD_BUSY;
  idem_record r = IDEM_RECORD_INIT;
  idem_stats st = IDEM_STATS_INIT;
  ok = idem_get(db, KEY, strlen(KEY), &r) == IDEM_OK && r.lease_ms > 0 &&
       idem_stats_get(db, &st) == IDEM_OK && st.leased == 1;
  idem_record_clear(&r);
  if (!ok)
    return CHILD_REPORT;
  /* Not tu_clock_advance_lease(): a child asserts nothing. */
  atomic_fetch_add(&fx->clock.lease_ms, TTL - 1);
  ok = child_begin(db, &a) == IDEM_BUSY;
  idem_answer_clear(&a);
  if (!ok)
    return CHILD_BUSY;
  atomic_fetch_add(&fx->clock.lease_ms, 2);
  return child_claim(db, fence);
}

/* The checker: builds its sandbox, opens the database (before, for
 * FOREIGN_PROC: its handle was opened under the host's /proc) and begins
 * KEY, whose lease the holder took. A live holder's lease must be kept; a
 * dead one's taken over at once, the clock standing still. */
static _Noreturn void checker_main(tu_fx *fx, pid_t parent, const checker *c) {
  idem_db *db = NULL;
  if (c->sandbox == FOREIGN_PROC &&
      tu_open(&db, fx->path, &fx->opts) != IDEM_OK)
    _exit(CHILD_OPEN);
  int rc = enter_sandbox(fx, parent, c);
  if (rc)
    _exit(rc);
  if (!db && tu_open(&db, fx->path, &fx->opts) != IDEM_OK)
    _exit(CHILD_OPEN);
  rc = c->holder_alive ? child_kept(fx, db, c->fence)
                       : child_claim(db, c->fence);
  if (idem_close(db) != IDEM_OK && rc == CHILD_OK)
    rc = CHILD_CLOSE;
  _exit(rc);
}

/* Runs a checker and fails the test unless it succeeds; skips the test
 * (after the holder is killed, if it lives) when the kernel would not
 * build the sandbox. */
static void run_checker(tu_fx *fx, int sandbox, holder *h, bool holder_alive) {
  checker c = {sandbox, h->pid, row_int(fx, "owner_start"), h->fence,
               holder_alive};
  pid_t parent = getpid();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    checker_main(fx, parent, &c);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  int code = WEXITSTATUS(status);
  if (code == CHILD_NOPRIV || code == CHILD_NOACCESS) {
    if (holder_alive)
      kill_holder(h);
    print_message("%s\n", code == CHILD_NOPRIV
                              ? "the kernel refused the sandbox"
                              : "uid 65534 cannot reach the test directory");
    skip();
  }
  if (code != CHILD_OK)
    fail_msg("checker: %s (exit %d)", child_what(code), code);
}

/* Lets uid 65534 open the database that the root holder created: the
 * directory, and the files SQLite and the library keep beside it. */
static void share_with_nobody(tu_fx *fx) {
  static const char *const suffixes[] = {"", "-wal", "-shm", "-lockq"};
  assert_int_equal(chmod(fx->dir, 0777), 0);
  for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
    char *p = tu_suffix(fx->path, suffixes[i]);
    if (tu_exists(p))
      assert_int_equal(chmod(p, 0666), 0);
    free(p);
  }
}

/* /proc mounted hidepid=invisible (systemd's ProtectProc=invisible): a
 * checker of another user sees no /proc entry for the live root holder.
 * That is no proof of death: its begin answers IDEM_BUSY while the fake
 * clock stands still, and claims only after the TTL; the holder's own
 * completion is then refused. */
static void test_hidden_live_holder_kept(void **state) {
  tu_fx *fx = fx_of(state);
  if (!have_root())
    skip();
  holder h;
  start_holder(fx, &h);
  share_with_nobody(fx);
  run_checker(fx, HIDE_PROCS, &h, true);
  int lost = 0;
  assert_int_equal(holder_complete(&h, &lost), IDEM_ELEASELOST);
  assert_true(lost != 0);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Under the same hidepid, a holder that is really dead and reaped is
 * still taken over at once: kill() proves its pid names no process. */
static void test_hidden_dead_holder_taken(void **state) {
  tu_fx *fx = fx_of(state);
  if (!have_root())
    skip();
  holder h;
  start_holder(fx, &h);
  share_with_nobody(fx);
  kill_holder(&h);
  run_checker(fx, HIDE_PROCS, &h, false);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A checker that cannot read its boot id (as under systemd's
 * ProcSubset=pid) meets a live lease written by a holder that could: an
 * unknown boot id is not another one, so the lease is kept until its
 * TTL, for begin, idem_get and the stats alike. */
static void test_no_boot_id_checker_waits(void **state) {
  tu_fx *fx = fx_of(state);
  if (!have_root() || !have_boot_id())
    skip();
  holder h;
  start_holder(fx, &h);
  assert_int_equal(row_int(fx, "length(lease_boot)"), 16);
  run_checker(fx, HIDE_BOOT_ID, &h, true);
  int lost = 0;
  assert_int_equal(holder_complete(&h, &lost), IDEM_ELEASELOST);
  assert_true(lost != 0);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* The checker opened its handle under the host's /proc, which a /proc of
 * a new PID namespace then covers, where the holder's pid names a younger
 * process. That process's start time is no news of the holder, whose
 * live lease is kept. */
static void test_foreign_proc_holder_kept(void **state) {
  tu_fx *fx = fx_of(state);
  if (!have_root())
    skip();
  holder h;
  start_holder(fx, &h);
  run_checker(fx, FOREIGN_PROC, &h, true);
  int lost = 0;
  assert_int_equal(holder_complete(&h, &lost), IDEM_ELEASELOST);
  assert_true(lost != 0);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(db, KEY, "successor");
  assert_int_equal(idem_close(db), IDEM_OK);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_row_names_holder),
      T(test_killed_reaped),
      T(test_killed_zombie),
      T(test_ttl_only),
      T(test_foreign_pidns),
      T(test_live_holder_kept),
      T(test_pid_reused_self),
      T(test_pid_reused_other),
      T(test_unknown_boot_row_kept),
      T(test_hidden_live_holder_kept),
      T(test_hidden_dead_holder_taken),
      T(test_no_boot_id_checker_waits),
      T(test_foreign_proc_holder_kept),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
