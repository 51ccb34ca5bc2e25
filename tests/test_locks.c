/* SPDX-License-Identifier: MIT */
/*
 * test_locks.c - another process holding SQLite's locks.
 *
 * A forked child opens the database with SQLite directly and holds either
 * a long read transaction or the write lock, until the parent lets it go.
 * WAL mode promises that a reader blocks no writer; a writer blocks other
 * writers, and idem.h promises that a call waits at most busy_timeout_ms
 * for it and then answers IDEM_EBUSY, having changed nothing. And once a
 * reader is gone the WAL must stop growing: the library checkpoints,
 * inline or from its heartbeat thread, and under IDEM_SYNC_FULL inline at
 * SQLite's threshold.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define BUSY_MS 300
#define MARGIN_MS 700

static tu_fx *fx_of(void **state) {
  return *state;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- The child holding a lock --------------------------------------------- */

typedef struct holder {
  pid_t pid;
  int go_fd;   /* the parent writes here to let go */
  int done_fd; /* the child wrote here once it held the lock */
} holder;

#define HOLD_READ 0
#define HOLD_WRITE 1

/* Forks a child that holds the lock until told, or 30 s at most, so that
 * a failing parent never leaves it behind. */
static holder hold(const char *path, int what) {
  int go[2], done[2];
  assert_int_equal(pipe(go), 0);
  assert_int_equal(pipe(done), 0);
  holder h = {fork(), go[1], done[0]};
  assert_true(h.pid >= 0);
  if (h.pid == 0) {
    close(go[1]);
    close(done[0]);
    alarm(30);
    sqlite3 *c = NULL;
    int rc = sqlite3_open_v2(path, &c, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(c,
                        what == HOLD_WRITE
                            ? "BEGIN IMMEDIATE; UPDATE idem_keys SET code = "
                              "code WHERE 0"
                            : "BEGIN; SELECT count(*) FROM idem_keys",
                        NULL, NULL, NULL);
    char ok = rc == SQLITE_OK ? 'y' : 'n';
    if (write(done[1], &ok, 1) != 1)
      _exit(2);
    char byte;
    if (read(go[0], &byte, 1) < 0)
      _exit(2);
    sqlite3_exec(c, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(c);
    _exit(rc == SQLITE_OK ? 0 : 1);
  }
  close(go[0]);
  close(done[1]);
  char ok = 0;
  assert_int_equal(read(h.done_fd, &ok, 1), 1);
  assert_int_equal(ok, 'y');
  return h;
}

static void let_go(holder *h) {
  char byte = 'g';
  assert_int_equal(write(h->go_fd, &byte, 1), 1);
  int status = 0;
  assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  close(h->go_fd);
  close(h->done_fd);
}

static idem_db *open_db(tu_fx *fx, int64_t heartbeat_ms) {
  idem_options o = fx->opts;
  o.busy_timeout_ms = BUSY_MS;
  o.heartbeat_ms = heartbeat_ms;
  if (heartbeat_ms > 0) {
    /* The heartbeat thread runs on real time. */
    o.clock = NULL;
    o.clock_ctx = NULL;
  }
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  return db;
}

static int64_t wal_size(const char *path) {
  char *wal = tu_suffix(path, "-wal");
  struct stat sb;
  int64_t size = stat(wal, &sb) == 0 ? (int64_t)sb.st_size : 0;
  free(wal);
  return size;
}

static void claim_complete_n(idem_db *db, const char *prefix, int n) {
  for (int i = 0; i < n; i++) {
    char key[64];
    snprintf(key, sizeof key, "%s-%06d", prefix, i);
    tu_claim_complete(db, key, key);
  }
}

/* --- Tests ------------------------------------------------------------------
 */

/* While the write lock is held elsewhere every writing call answers
 * IDEM_EBUSY within the busy timeout plus a margin, changes nothing, and
 * works once the lock is free; reads and cached answers are served all
 * along. */
static void test_write_lock_gives_ebusy(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = open_db(fx, -1);
  tu_claim_complete(db, "done", "D");
  idem_lease *l = tu_claim(db, "held");
  holder h = hold(fx->path, HOLD_WRITE);

  idem_answer a = IDEM_ANSWER_INIT;
  unsigned lost = 0;
  uint64_t count = 0;
  for (int call = 0; call < 6; call++) {
    int64_t start = now_ms();
    int rc;
    switch (call) {
    case 0:
      rc = tu_begin(db, "new", &a);
      break;
    case 1:
      rc = idem_complete(l, "R", 1);
      break;
    case 2:
      rc = idem_release(l, NULL);
      break;
    case 3:
      rc = idem_heartbeat(db, &lost);
      break;
    case 4:
      rc = idem_reset(db, "done", 4);
      break;
    default:
      rc = idem_purge(db, 0, &count);
      break;
    }
    int64_t took = now_ms() - start;
    if (rc != IDEM_EBUSY)
      fail_msg("call %d under a held write lock answered %s", call,
               idem_errstr(rc));
    if (took > BUSY_MS + MARGIN_MS)
      fail_msg("call %d took %lld ms with a busy timeout of %d ms", call,
               (long long)took, BUSY_MS);
    /* It did wait: an immediate answer would make callers spin. */
    if (took < BUSY_MS / 2)
      fail_msg("call %d gave up after %lld ms", call, (long long)took);
    idem_answer_clear(&a);
  }
  assert_int_equal(idem_lease_lost(l), 0);
  /* Reads need no write lock, even on a handle whose last begin claimed,
   * which tries the write lock first ("held" was claimed last). */
  tu_assert_completed(db, "done", "D");
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(db, "new", &r), IDEM_ENOTFOUND);
  assert_int_equal(tu_get(db, "held", &r), IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_PENDING);
  idem_record_clear(&r);

  let_go(&h);
  assert_int_equal(idem_heartbeat(db, &lost), IDEM_OK);
  assert_int_equal(lost, 0);
  assert_int_equal(idem_complete(l, "R", 1), IDEM_OK);
  idem_lease_free(l);
  tu_claim_complete(db, "new", "N");
  tu_assert_completed(db, "held", "R");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* A long reader blocks no writer; once it is gone the WAL stops growing:
 * without a heartbeat thread the library checkpoints inline. */
static void test_reader_inline_checkpoint(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = open_db(fx, -1);
  holder h = hold(fx->path, HOLD_READ);
  int64_t start = now_ms();
  claim_complete_n(db, "during", 1500);
  int64_t during_ms = now_ms() - start;
  int64_t with_reader = wal_size(fx->path);
  let_go(&h);

  /* SQLite starts a fully checkpointed WAL over from its start, and the
   * library checkpoints at every commit once the WAL has 1000 pages: the
   * file never needs more than the size it reached with the reader, or the
   * 4000 pages at which any writer checkpoints, plus a little. Without
   * checkpoints each round of 3000 keys would add some 40 MB. */
  int64_t threshold = 4000 * (4096 + 24) + 32;
  int64_t sizes[3];
  for (int round = 0; round < 3; round++) {
    char prefix[16];
    snprintf(prefix, sizeof prefix, "after%d", round);
    claim_complete_n(db, prefix, 3000);
    sizes[round] = wal_size(fx->path);
  }
  print_message("WAL: %lld bytes with a reader after 1500 keys (%lld ms); "
                "without it, after each 3000 more: %lld, %lld, %lld bytes\n",
                (long long)with_reader, (long long)during_ms,
                (long long)sizes[0], (long long)sizes[1], (long long)sizes[2]);
  int64_t bound = (with_reader > threshold ? with_reader : threshold) + 512000;
  for (int round = 0; round < 3; round++)
    if (sizes[round] > bound)
      fail_msg("the WAL grew to %lld bytes (bound %lld)",
               (long long)sizes[round], (long long)bound);
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 1500 + 3 * 3000);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* What the heartbeat thread does is seen in SQLite's files
 * (https://www.sqlite.org/walformat.html): the "-shm" file begins with the
 * WAL-index header, whose mxFrame counts the frames of the WAL, and the
 * checkpoint information, whose nBackfill counts those copied into the
 * database; both are native-endian. The WAL's own header carries a
 * checkpoint sequence number, big-endian, that SQLite increments each time
 * it starts the WAL over. */
#define SHM_MX_FRAME 16
#define SHM_BACKFILL 96

/* The 4 bytes at `at` of the database's file with `suffix`. */
static void read4(const char *path, const char *suffix, off_t at,
                  unsigned char out[4]) {
  char *name = tu_suffix(path, suffix);
  int fd = open(name, O_RDONLY);
  free(name);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, out, 4, at), 4);
  close(fd);
}

static uint32_t shm_field(const char *path, off_t at) {
  unsigned char b[4];
  read4(path, "-shm", at, b);
  uint32_t v;
  memcpy(&v, b, sizeof v);
  return v;
}

static uint32_t wal_restarts(const char *path) {
  unsigned char b[4];
  read4(path, "-wal", 12, b);
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
         b[3];
}

/* Waits for the heartbeat thread to have copied `frames` frames of the WAL
 * into the database; a loaded machine under a sanitizer may take its time
 * to run the thread, but not this long. */
static void wait_backfill(const char *path, uint32_t frames) {
  int64_t deadline = now_ms() + 20000;
  uint32_t done;
  while ((done = shm_field(path, SHM_BACKFILL)) < frames) {
    if (now_ms() > deadline)
      fail_msg("after 20 s the heartbeat thread had checkpointed %u of %u "
               "frames",
               (unsigned)done, (unsigned)frames);
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
  }
}

/* The WAL's length at which a commit asks the heartbeat thread for a
 * checkpoint, and by how much it must have grown since the last request
 * before the next one (lib/heartbeat.c). */
#define CHECKPOINT_PAGES 1000
#define CHECKPOINT_STEP 256
#define MAX_CLAIMS 4000

/* Claims one key, in a commit of its own, and returns the WAL's length
 * after it. */
static uint32_t claim_one(tu_fx *fx, idem_db *db, idem_lease **ls, int *n) {
  assert_true(*n < MAX_CLAIMS);
  char key[32];
  snprintf(key, sizeof key, "k-%06d", *n);
  ls[(*n)++] = tu_claim(db, key);
  return shm_field(fx->path, SHM_MX_FRAME);
}

/* Claims keys until the WAL holds at least `frames` frames, and stops right
 * after the commit that got there: that commit asks for a checkpoint, and
 * a commit while the checkpoint runs would leave it short of the WAL's end,
 * to wait for another request some 256 frames later. */
static uint32_t claim_until(tu_fx *fx, idem_db *db, idem_lease **ls, int *n,
                            uint32_t frames) {
  uint32_t len = shm_field(fx->path, SHM_MX_FRAME);
  while (len < frames)
    len = claim_one(fx, db, ls, n);
  return len;
}

/* A reader holding its snapshot stops the heartbeat thread's checkpoint
 * short of the WAL's end, so the WAL cannot start over; once the reader is
 * gone the thread's next checkpoint copies it all and the next commit
 * starts the WAL over, well below the 4000 pages at which a writer would
 * checkpoint inline. The thread's rounds are kept out of the way: a
 * round's commit would checkpoint on its own, as SQLite does by default. */
static void test_reader_heartbeat_checkpoint(void **state) {
  tu_fx *fx = fx_of(state);
  fx->opts.ttl_ms = 600000;
  idem_db *db = open_db(fx, 300000);
  idem_lease **ls = calloc(MAX_CLAIMS, sizeof *ls);
  assert_non_null(ls);
  int n = 0;
  idem_lease *keep = tu_claim(db, "keep-the-heartbeat-running");
  holder h = hold(fx->path, HOLD_READ);
  uint32_t snapshot = shm_field(fx->path, SHM_MX_FRAME);
  assert_true(shm_field(fx->path, SHM_BACKFILL) < snapshot);
  uint32_t asked = claim_until(fx, db, ls, &n, CHECKPOINT_PAGES);
  /* Once the thread's pass has stopped at the snapshot no request is
   * pending, and the next one comes exactly a step past `asked`. */
  wait_backfill(fx->path, snapshot);
  uint32_t grown = claim_one(fx, db, ls, &n);
  assert_int_equal(shm_field(fx->path, SHM_BACKFILL), snapshot);
  assert_true(grown > asked);
  let_go(&h);

  /* The checkpoint keeps a lock for a moment after it has recorded that it
   * copied everything. A commit in that moment reads the WAL instead of the
   * database, and only a commit that reads the database may start the WAL
   * over: that takes the next request, a step later. */
  uint32_t len = 0, after = 0, restarts = 0;
  for (int attempt = 0; attempt < 3; attempt++) {
    len = claim_until(fx, db, ls, &n, asked + CHECKPOINT_STEP);
    asked = len;
    wait_backfill(fx->path, len);
    restarts = wal_restarts(fx->path);
    int64_t size = wal_size(fx->path);
    after = claim_one(fx, db, ls, &n);
    if (wal_restarts(fx->path) != restarts) {
      /* Starting over, the WAL overwrites its first frames in place. */
      assert_true(after < len);
      assert_int_equal(wal_size(fx->path), size);
      break;
    }
  }
  print_message("WAL: the thread's checkpoint stopped at the reader's "
                "snapshot, frame %u of %u; without the reader it copied all "
                "%u frames, and the next commit left %u\n",
                (unsigned)snapshot, (unsigned)grown, (unsigned)len,
                (unsigned)after);
  if (wal_restarts(fx->path) != restarts + 1)
    fail_msg("the WAL did not start over: %u frames", (unsigned)after);

  for (int i = 0; i < n; i++) {
    assert_int_equal(idem_complete(ls[i], "R", 1), IDEM_OK);
    idem_lease_free(ls[i]);
  }
  free(ls);
  assert_int_equal(idem_complete(keep, "K", 1), IDEM_OK);
  idem_lease_free(keep);
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], n + 1);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Under IDEM_SYNC_FULL a writer checkpoints inline at SQLite's threshold
 * of 1000 pages, heartbeat thread or not, so the WAL starts over there
 * instead of growing to 4000 pages: while the file grows, each commit's
 * sync must also record its new size. 1000 keys write some 2000 frames. */
static void test_full_wal_starts_over_at_threshold(void **state) {
  tu_fx *fx = fx_of(state);
  fx->opts.synchronous = IDEM_SYNC_FULL;
  idem_db *db = open_db(fx, 1000);
  idem_lease *keep = tu_claim(db, "keep-the-heartbeat-running");
  claim_complete_n(db, "full", 1000);
  int64_t size = wal_size(fx->path);
  print_message("WAL under FULL after 1000 keys: %lld bytes\n",
                (long long)size);
  /* A heartbeat's commit beside a checkpoint can put the start over off
   * by a commit or two. */
  int64_t bound = 1100 * (4096 + 24) + 32;
  if (size > bound)
    fail_msg("the WAL grew to %lld bytes (bound %lld)", (long long)size,
             (long long)bound);
  assert_int_equal(idem_complete(keep, "K", 1), IDEM_OK);
  idem_lease_free(keep);
  assert_int_equal(idem_close(db), IDEM_OK);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_write_lock_gives_ebusy),
      T(test_reader_inline_checkpoint),
      T(test_reader_heartbeat_checkpoint),
      T(test_full_wal_starts_over_at_threshold),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
