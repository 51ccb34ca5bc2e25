/*
 * test_faults.c - storage failures injected under the library.
 *
 * A VFS shim ("idemfault") wraps SQLite's default VFS and, once armed,
 * fails the Nth write or sync and every one after it (a disk that filled
 * up or went bad) until disarmed. The database is opened through an SQLite
 * URI naming the shim, as idem.h allows. Each test loops N upward over one
 * operation and checks, for every N, that the answer is one idem.h
 * documents, that the handle works again once the fault is gone, that the
 * file passes PRAGMA integrity_check, and that the key is either untouched
 * or finished with exactly the right result, never something in between.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

/* --- The shim ------------------------------------------------------------ */

static sqlite3_vfs *base_vfs;
static sqlite3_vfs fault_vfs;
static atomic_int countdown = -1; /* writes/syncs left before failing */
static atomic_int fired;          /* a fault was injected since armed */
static atomic_int fault_rc = SQLITE_IOERR_WRITE;

static void arm(int n, int rc) {
  atomic_store(&fault_rc, rc);
  atomic_store(&fired, 0);
  atomic_store(&countdown, n);
}

static void disarm(void) {
  atomic_store(&countdown, -1);
}

/* Whether this write or sync fails. */
static int should_fail(void) {
  int n = atomic_load(&countdown);
  if (n < 0)
    return 0;
  if (n == 0) {
    atomic_store(&fired, 1);
    return 1;
  }
  atomic_store(&countdown, n - 1);
  return 0;
}

typedef struct fault_file {
  sqlite3_file base;
  sqlite3_file *real; /* allocated right after this struct */
} fault_file;

#define REAL(f) (((fault_file *)(f))->real)

static int f_close(sqlite3_file *f) {
  return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int f_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
  if (should_fail())
    return atomic_load(&fault_rc);
  return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size) {
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags) {
  if (should_fail())
    return atomic_load(&fault_rc) == SQLITE_FULL ? SQLITE_FULL
                                                 : SQLITE_IOERR_FSYNC;
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int level) {
  return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int f_unlock(sqlite3_file *f, int level) {
  return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int f_check_reserved(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_file_control(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector_size(sqlite3_file *f) {
  return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_device_chars(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int pgsz, int extend,
                     void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}
static int f_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void f_shm_barrier(sqlite3_file *f) {
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp) {
  return REAL(f)->pMethods->xFetch(REAL(f), off, amt, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods fault_methods = {
    3,
    f_close,
    f_read,
    f_write,
    f_truncate,
    f_sync,
    f_file_size,
    f_lock,
    f_unlock,
    f_check_reserved,
    f_file_control,
    f_sector_size,
    f_device_chars,
    f_shm_map,
    f_shm_lock,
    f_shm_barrier,
    f_shm_unmap,
    f_fetch,
    f_unfetch,
};

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file,
                  int flags, int *out_flags) {
  (void)vfs;
  fault_file *ff = (fault_file *)file;
  ff->real = (sqlite3_file *)&ff[1];
  int rc = base_vfs->xOpen(base_vfs, name, ff->real, flags, out_flags);
  /* Only a file the real VFS opened gets methods (and so an xClose). */
  file->pMethods = ff->real->pMethods != NULL ? &fault_methods : NULL;
  return rc;
}

static int f_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
  (void)vfs;
  return base_vfs->xDelete(base_vfs, name, sync_dir);
}
static int f_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  (void)vfs;
  return base_vfs->xAccess(base_vfs, name, flags, out);
}
static int f_full_pathname(sqlite3_vfs *vfs, const char *name, int n,
                           char *out) {
  (void)vfs;
  return base_vfs->xFullPathname(base_vfs, name, n, out);
}
static int f_randomness(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return base_vfs->xRandomness(base_vfs, n, out);
}
static int f_sleep(sqlite3_vfs *vfs, int us) {
  (void)vfs;
  return base_vfs->xSleep(base_vfs, us);
}
static int f_current_time(sqlite3_vfs *vfs, double *out) {
  (void)vfs;
  return base_vfs->xCurrentTime(base_vfs, out);
}
static int f_last_error(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return base_vfs->xGetLastError(base_vfs, n, out);
}
static int f_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
  (void)vfs;
  return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

static int register_fault_vfs(void **state) {
  (void)state;
  base_vfs = sqlite3_vfs_find(NULL);
  if (base_vfs == NULL)
    return -1;
  memset(&fault_vfs, 0, sizeof fault_vfs);
  fault_vfs.iVersion = 2;
  fault_vfs.szOsFile = (int)sizeof(fault_file) + base_vfs->szOsFile;
  fault_vfs.mxPathname = base_vfs->mxPathname;
  fault_vfs.zName = "idemfault";
  fault_vfs.xOpen = f_open;
  fault_vfs.xDelete = f_delete;
  fault_vfs.xAccess = f_access;
  fault_vfs.xFullPathname = f_full_pathname;
  fault_vfs.xRandomness = f_randomness;
  fault_vfs.xSleep = f_sleep;
  fault_vfs.xCurrentTime = f_current_time;
  fault_vfs.xGetLastError = f_last_error;
  fault_vfs.xCurrentTimeInt64 = f_current_time64;
  return sqlite3_vfs_register(&fault_vfs, 0) == SQLITE_OK ? 0 : -1;
}

/* --- Helpers -------------------------------------------------------------- */

static tu_fx *fx_of(void **state) {
  return *state;
}

/* Opens the fixture's file through the shim. */
static idem_db *open_faulty(tu_fx *fx, int synchronous) {
  char uri[4200];
  snprintf(uri, sizeof uri, "file:%s?vfs=idemfault", fx->path);
  idem_options o = fx->opts;
  o.synchronous = synchronous;
  o.busy_timeout_ms = 200;
  idem_db *db = NULL;
  int rc = tu_open(&db, uri, &o);
  if (rc != IDEM_OK)
    fail_msg("open through the shim: %s", idem_errstr(rc));
  return db;
}

/* PRAGMA integrity_check says "ok" (read with SQLite directly). */
static void assert_integrity(const char *path) {
  sqlite3 *c = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open_v2(path, &c, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  assert_int_equal(
      sqlite3_prepare_v2(c, "PRAGMA integrity_check", -1, &st, NULL),
      SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  const char *res = (const char *)sqlite3_column_text(st, 0);
  if (res == NULL || strcmp(res, "ok") != 0)
    fail_msg("integrity_check: %s", res != NULL ? res : "(null)");
  sqlite3_finalize(st);
  sqlite3_close(c);
}

/* The storage errors a call may report for an injected fault. */
static int is_storage_error(int rc) {
  return rc == IDEM_EIO || rc == IDEM_EFULL;
}

/* Sweeps N = 0, 1, ... until the operation runs without reaching its Nth
 * write; `step` runs the operation on a fresh database with the fault
 * armed at N and checks its outcome. */
typedef void (*sweep_fn)(tu_fx *fx, int n, int fault, int synchronous);

static void sweep(tu_fx *fx, sweep_fn step, int fault, int synchronous) {
  int n;
  for (n = 0; n < 500; n++) {
    tu_rmtree(fx->dir);
    free(fx->dir);
    fx->dir = tu_tmpdir();
    assert_non_null(fx->dir);
    free(fx->path);
    fx->path = tu_path(fx->dir, "idem.db");
    step(fx, n, fault, synchronous);
    if (!atomic_load(&fired))
      break; /* the operation needed fewer than n + 1 writes */
  }
  assert_true(n > 0); /* at least one fault was injected */
  assert_true(n < 500);
}

/* --- Steps ---------------------------------------------------------------- */

/* begin under a fault: either a documented storage error that changed
 * nothing (the key stays absent and claimable as attempt 1 once the disk
 * is back), or a claim that really is in the file. */
static void step_begin(tu_fx *fx, int n, int fault, int synchronous) {
  idem_db *db = open_faulty(fx, synchronous);
  idem_answer a = IDEM_ANSWER_INIT;
  arm(n, fault);
  int rc = tu_begin(db, "k", &a);
  disarm();
  if (rc == IDEM_CLAIMED) {
    assert_int_equal(idem_complete(a.lease, "R", 1), IDEM_OK);
    idem_lease_free(a.lease);
  } else {
    if (!is_storage_error(rc))
      fail_msg("fault at write %d: begin answered %s", n, idem_errstr(rc));
    if (fault == SQLITE_FULL)
      assert_int_equal(rc, IDEM_EFULL);
    assert_null(a.lease);
    assert_int_equal(tu_begin(db, "k", &a), IDEM_CLAIMED);
    assert_int_equal(a.attempts, 1);
    assert_int_equal(idem_complete(a.lease, "R", 1), IDEM_OK);
    idem_lease_free(a.lease);
  }
  idem_answer_clear(&a);
  assert_int_equal(idem_close(db), IDEM_OK);
  assert_integrity(fx->path);
  db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(db, "k", "R");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* complete under a fault: IDEM_OK (stored), a storage error (nothing
 * stored, the lease still held: calling again succeeds) or IDEM_EUNKNOWN
 * (calling again with the same result returns IDEM_OK). In every case the
 * key ends completed with exactly the result given, once. */
static void step_complete(tu_fx *fx, int n, int fault, int synchronous) {
  idem_db *db = open_faulty(fx, synchronous);
  idem_lease *l = tu_claim(db, "k");
  uint64_t fence = idem_lease_fence(l);
  arm(n, fault);
  int rc = idem_complete(l, "RESULT", 6);
  disarm();
  if (rc != IDEM_OK) {
    if (rc != IDEM_EUNKNOWN && !is_storage_error(rc))
      fail_msg("fault at write %d: complete answered %s", n, idem_errstr(rc));
    if (rc != IDEM_EUNKNOWN) {
      idem_record r = IDEM_RECORD_INIT;
      assert_int_equal(tu_get(db, "k", &r), IDEM_OK);
      assert_int_equal(r.state, IDEM_STATE_PENDING);
      idem_record_clear(&r);
    }
    assert_int_equal(idem_lease_lost(l), 0);
    rc = idem_complete(l, "RESULT", 6);
    if (rc != IDEM_OK)
      fail_msg("fault at write %d: the second complete answered %s", n,
               idem_errstr(rc));
  }
  idem_lease_free(l);
  assert_int_equal(idem_close(db), IDEM_OK);
  assert_integrity(fx->path);
  db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  idem_answer a = IDEM_ANSWER_INIT;
  assert_int_equal(tu_begin(db, "k", &a), IDEM_COMPLETED);
  assert_int_equal(a.result_len, 6);
  assert_memory_equal(a.result, "RESULT", 6);
  assert_int_equal(a.attempts, 1);
  assert_int_equal(a.fence, fence);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* --- Tests ---------------------------------------------------------------- */

/* A failing write under begin never leaves a half claim (I/O error). */
static void test_begin_io_error(void **state) {
  sweep(fx_of(state), step_begin, SQLITE_IOERR_WRITE, IDEM_SYNC_NORMAL);
}

/* A full disk under begin is reported as IDEM_EFULL, its own code. */
static void test_begin_disk_full(void **state) {
  sweep(fx_of(state), step_begin, SQLITE_FULL, IDEM_SYNC_FULL);
}

/* A failing write or sync under complete: the outcome is always either
 * stored or retryable, as documented (synchronous NORMAL and FULL). */
static void test_complete_io_error(void **state) {
  sweep(fx_of(state), step_complete, SQLITE_IOERR_WRITE, IDEM_SYNC_NORMAL);
  sweep(fx_of(state), step_complete, SQLITE_IOERR_WRITE, IDEM_SYNC_FULL);
}

/* The same with a full disk. */
static void test_complete_disk_full(void **state) {
  sweep(fx_of(state), step_complete, SQLITE_FULL, IDEM_SYNC_FULL);
}

/* A handle whose write failed keeps working for other keys right after
 * the disk recovers: the failed transaction was rolled back. */
static void test_handle_recovers(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = open_faulty(fx, IDEM_SYNC_NORMAL);
  tu_claim_complete(db, "before", "b");
  idem_answer a = IDEM_ANSWER_INIT;
  arm(0, SQLITE_IOERR_WRITE);
  int rc = tu_begin(db, "k", &a);
  disarm();
  assert_true(is_storage_error(rc));
  assert_true(strlen(idem_errmsg(db)) > 0);
  idem_stats st = tu_stats(db);
  assert_true(st.storage_errors >= 1);
  for (int i = 0; i < 5; i++) {
    char key[8];
    snprintf(key, sizeof key, "n%d", i);
    tu_claim_complete(db, key, key);
  }
  tu_assert_completed(db, "before", "b");
  idem_answer_clear(&a);
  assert_int_equal(idem_close(db), IDEM_OK);
  assert_integrity(fx->path);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_begin_io_error),    T(test_begin_disk_full),
      T(test_complete_io_error), T(test_complete_disk_full),
      T(test_handle_recovers),
  };
  return cmocka_run_group_tests(tests, register_fault_vfs, NULL);
}
