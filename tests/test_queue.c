/* SPDX-License-Identifier: MIT */
/*
 * test_queue.c - the writers' queue (lib/queue.c) across processes.
 *
 * Turns go in ticket order; the turn of a process that died, or of a wait
 * that ran out, is skipped without waiting for long; a file that is not a
 * queue is neither used nor changed; the queue file takes the database's
 * mode; a libidem handle that writes uses the queue. Children report
 * through pipes and _exit() with a code; they never call cmocka.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include "../lib/queue.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILDREN 4
#define FAR_MS 30000 /* a deadline no test should reach */
/* Far above a skip of the dead (IDEM__QUEUE_STUCK_US), far below a skip of
 * the living (IDEM__QUEUE_DEAD_US). */
#define SOON_MS 500

int64_t idem__monotonic_ms(void);

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *queue_path(tu_fx *fx) {
  return tu_suffix(fx->path, "-lockq");
}

/* The database file need not be a database for the queue: it is only
 * stat()ed. */
static idem__queue *open_queue(tu_fx *fx) {
  if (!tu_exists(fx->path))
    assert_int_equal(tu_write_file(fx->path, "", 0), 0);
  idem__queue *q = idem__queue_open(fx->path, IDEM__QUEUE_TURN_US);
  assert_non_null(q);
  return q;
}

/* Tickets handed out so far: the second word of the file (queue.c). */
static uint32_t tickets(tu_fx *fx) {
  char *path = queue_path(fx);
  int fd = open(path, O_RDONLY);
  free(path);
  uint32_t next = 0;
  if (fd >= 0) {
    if (pread(fd, &next, sizeof next, 4) != (ssize_t)sizeof next)
      next = 0;
    close(fd);
  }
  return next;
}

static void wait_tickets(tu_fx *fx, uint32_t n) {
  int64_t until = now_ms() + FAR_MS;
  while (tickets(fx) < n) {
    assert_true(now_ms() < until);
    usleep(1000);
  }
}

/* In a child: its own handle on the queue, in its turn. */
static idem__queue *child_enter(tu_fx *fx) {
  idem__queue *q = idem__queue_open(fx->path, IDEM__QUEUE_TURN_US);
  if (!q)
    _exit(10);
  idem__queue_enter(q, idem__monotonic_ms() + FAR_MS);
  return q;
}

static void reap_ok(pid_t pid) {
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* Children queue up one after the other behind the parent, then report
 * the order of their turns. */
static void test_turns_in_ticket_order(void **state) {
  tu_fx *fx = *state;
  idem__queue *q = open_queue(fx);
  idem__queue_enter(q, idem__monotonic_ms() + FAR_MS);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pids[CHILDREN];
  for (int i = 0; i < CHILDREN; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      close(fds[0]);
      idem__queue *cq = child_enter(fx);
      unsigned char me = (unsigned char)i;
      if (write(fds[1], &me, 1) != 1)
        _exit(11);
      idem__queue_leave(cq);
      idem__queue_close(cq);
      _exit(0);
    }
    wait_tickets(fx, (uint32_t)i + 2);
  }
  close(fds[1]);
  idem__queue_leave(q);
  idem__queue_close(q);
  unsigned char order[CHILDREN];
  for (int i = 0; i < CHILDREN; i++)
    assert_int_equal(read(fds[0], &order[i], 1), 1);
  close(fds[0]);
  for (int i = 0; i < CHILDREN; i++) {
    reap_ok(pids[i]);
    assert_int_equal(order[i], i);
  }
}

/* A child takes the turn and dies in it, inside a transaction (no idle
 * mark) or between two (idle), and is reaped or left a zombie: the next
 * waiter gets in soon. */
static void dies_holding(tu_fx *fx, bool idle, bool reap) {
  idem__queue *q = open_queue(fx);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    idem__queue *cq = child_enter(fx);
    if (idle)
      idem__queue_leave(cq);
    _exit(0); /* neither leaves nor closes */
  }
  if (reap) {
    reap_ok(pid);
  } else { /* until it has exited, leaving a zombie */
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
  }
  int64_t start = now_ms();
  idem__queue_enter(q, idem__monotonic_ms() + FAR_MS);
  assert_true(now_ms() - start < SOON_MS);
  idem__queue_leave(q);
  idem__queue_close(q);
  if (!reap)
    reap_ok(pid);
}

static void test_dead_holder_skipped(void **state) {
  tu_fx *fx = *state;
  dies_holding(fx, false, true);
  dies_holding(fx, true, true);
  dies_holding(fx, false, false);
  dies_holding(fx, true, false);
}

/* A wait that runs out gives up its ticket: when its turn comes, the
 * next waiter does not wait for it. */
static void test_wait_that_ran_out_is_skipped(void **state) {
  tu_fx *fx = *state;
  idem__queue *holder = open_queue(fx);
  idem__queue *late = open_queue(fx);
  idem__queue_enter(holder, idem__monotonic_ms() + FAR_MS);
  int64_t start = now_ms();
  idem__queue_enter(late, idem__monotonic_ms() + 50);
  assert_true(now_ms() - start >= 50);
  /* `late` still holds a ticket, ahead of the child's. */
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int64_t t0 = now_ms();
    child_enter(fx);
    _exit(now_ms() - t0 < SOON_MS ? 0 : 12);
  }
  wait_tickets(fx, 3);
  idem__queue_close(holder); /* passes to `late`'s ticket: skipped */
  reap_ok(pid);
  idem__queue_close(late);
}

/* Files at the queue's name that are not a queue stay as they are. */
static void test_foreign_file_untouched(void **state) {
  tu_fx *fx = *state;
  assert_int_equal(tu_write_file(fx->path, "", 0), 0);
  char *path = queue_path(fx);
  static const char *const contents[] = {"not a queue", NULL};
  unsigned char same_size[4160];
  memset(same_size, 0xA5, sizeof same_size);
  for (int i = 0; i < 2; i++) {
    const void *data = contents[i] ? (const void *)contents[i] : same_size;
    size_t len = contents[i] ? strlen(contents[i]) : sizeof same_size;
    assert_int_equal(tu_write_file(path, data, len), 0);
    uint64_t before, after;
    assert_int_equal(tu_checksum(path, &before), 0);
    assert_null(idem__queue_open(fx->path, IDEM__QUEUE_TURN_US));
    assert_int_equal(tu_checksum(path, &after), 0);
    assert_true(before == after);
  }
  /* Nor is a symbolic link followed. */
  unlink(path);
  char *target = tu_path(fx->dir, "elsewhere");
  assert_int_equal(tu_write_file(target, "", 0), 0);
  assert_int_equal(symlink(target, path), 0);
  assert_null(idem__queue_open(fx->path, IDEM__QUEUE_TURN_US));
  struct stat st;
  assert_int_equal(stat(target, &st), 0);
  assert_int_equal(st.st_size, 0);
  free(target);
  free(path);
}

/* The queue file takes the database's mode, whatever the umask, so that
 * whoever may write the database may queue. */
static void test_mode_of_database(void **state) {
  tu_fx *fx = *state;
  assert_int_equal(tu_write_file(fx->path, "", 0), 0);
  mode_t old = umask(077);
  assert_int_equal(chmod(fx->path, 0664), 0);
  idem__queue *q = idem__queue_open(fx->path, IDEM__QUEUE_TURN_US);
  umask(old);
  assert_non_null(q);
  idem__queue_close(q);
  char *path = queue_path(fx);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0664);
  free(path);
}

/* A handle that writes queues; a read-only handle never creates the file. */
static void test_handle_uses_queue(void **state) {
  tu_fx *fx = *state;
  char *path = queue_path(fx);
  assert_int_equal(tu_open(&fx->db, fx->path, &fx->opts), IDEM_OK);
  tu_claim_complete(fx->db, "a", "done");
  assert_true(tu_exists(path));
  assert_true(tickets(fx) >= 1);
  idem_close(fx->db);
  fx->db = NULL;
  unlink(path);
  idem_options ro = fx->opts;
  ro.flags |= IDEM_OPEN_READONLY;
  assert_int_equal(tu_open(&fx->db, fx->path, &ro), IDEM_OK);
  idem_record rec = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(fx->db, "a", &rec), IDEM_OK);
  assert_int_equal(rec.state, IDEM_STATE_COMPLETED);
  idem_record_clear(&rec);
  assert_false(tu_exists(path));
  free(path);
}

/* Writers of several processes at full speed: a writer that finds the WAL
 * at its bound checkpoints while it holds its turn, so the others wait and
 * the WAL can start over. Handed on first, or polled past, the WAL grew
 * without end; here it must stay below journal_size_limit (32 MiB), the
 * size a WAL that did start over is cut back to. */
static void test_queue_bounds_wal(void **state) {
  tu_fx *fx = *state;
  idem_options o = IDEM_OPTIONS_INIT; /* real clocks, heartbeat thread */
  /* The schema first; then no handle is open across the forks. */
  assert_int_equal(tu_open(&fx->db, fx->path, &o), IDEM_OK);
  assert_int_equal(idem_close(fx->db), IDEM_OK);
  fx->db = NULL;
  enum { WRITERS = 4, CYCLES = 3000 };
  int go[2];
  assert_int_equal(pipe(go), 0);
  pid_t pids[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      idem_db *db;
      char c;
      close(go[1]);
      if (idem_open(&db, fx->path, &o) != IDEM_OK)
        _exit(10);
      if (read(go[0], &c, 1) != 0) /* end of file: all may start */
        _exit(13);
      for (int n = 0; n < CYCLES; n++) {
        char key[32];
        snprintf(key, sizeof key, "%d-%d", i, n);
        idem_answer a = IDEM_ANSWER_INIT;
        if (idem_begin(db, key, strlen(key), NULL, &a) != IDEM_CLAIMED ||
            idem_complete(a.lease, "ok", 2) != IDEM_OK)
          _exit(11);
        idem_lease_free(a.lease);
        idem_answer_clear(&a);
      }
      _exit(idem_close(db) == IDEM_OK ? 0 : 12);
    }
  }
  /* A handle of this process, opened after the forks, keeps the WAL (which
   * the last connection to close deletes) for the measure below. */
  assert_int_equal(tu_open(&fx->db, fx->path, &o), IDEM_OK);
  close(go[0]);
  close(go[1]);
  for (int i = 0; i < WRITERS; i++)
    reap_ok(pids[i]);
  char *wal = tu_suffix(fx->path, "-wal");
  struct stat st;
  assert_int_equal(stat(wal, &st), 0);
  assert_true(st.st_size < 30 * 1024 * 1024);
  free(wal);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_turns_in_ticket_order),
      T(test_dead_holder_skipped),
      T(test_wait_that_ran_out_is_skipped),
      T(test_foreign_file_untouched),
      T(test_mode_of_database),
      T(test_handle_uses_queue),
      T(test_queue_bounds_wal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
