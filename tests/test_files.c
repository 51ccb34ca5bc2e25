/* SPDX-License-Identifier: MIT */
/*
 * test_files.c - hostile and unusual files at idem_open().
 *
 * A file that is not an idem database must be refused with a specific code
 * and left exactly as it was: same bytes (FNV-1a checksum before and after)
 * and no -wal, -shm or -journal file created next to it. Files that are
 * fine (an existing idem database, a shared one, a read-only one opened
 * read-only) must open and keep their rows.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "testutil.h"

#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

static tu_fx *fx_of(void **state) {
  return *state;
}

static const char *const side_suffixes[] = {"-wal", "-shm", "-journal"};
#define NSIDE 3

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s != NULL ? s + 1 : path;
}

/* Opens `path` with `o`, expects one of two codes, and checks that the file
 * kept its bytes, that no side file appeared, and that the handle idem_open
 * hands out explains the failure naming the file. */
static void assert_refused(const char *path, const idem_options *o, int want_a,
                           int want_b) {
  uint64_t before = 0, after = 0;
  int had[NSIDE];
  assert_int_equal(tu_checksum(path, &before), 0);
  for (int i = 0; i < NSIDE; i++) {
    char *side = tu_suffix(path, side_suffixes[i]);
    had[i] = tu_exists(side);
    free(side);
  }
  idem_db *db = NULL;
  int rc = idem_open(&db, path, o);
  if (rc != want_a && rc != want_b)
    fail_msg("%s: expected %s, got %s (%s)", base_name(path),
             idem_errstr(want_a), idem_errstr(rc), idem_errmsg(db));
  if (db != NULL) {
    if (strstr(idem_errmsg(db), base_name(path)) == NULL)
      fail_msg("the message does not name the file: \"%s\"", idem_errmsg(db));
    assert_int_equal(idem_close(db), IDEM_OK);
  }
  assert_int_equal(tu_checksum(path, &after), 0);
  if (before != after)
    fail_msg("%s was modified by a refused open", base_name(path));
  for (int i = 0; i < NSIDE; i++) {
    char *side = tu_suffix(path, side_suffixes[i]);
    int now = tu_exists(side);
    free(side);
    if (!had[i] && now)
      fail_msg("%s%s was created next to a refused file", base_name(path),
               side_suffixes[i]);
  }
}

/* A valid idem database with `rows` completed keys "row-N", closed again
 * (so its WAL is checkpointed and removed). */
static void make_idem_db(tu_fx *fx, const char *path, int rows) {
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, path, &fx->opts), IDEM_OK);
  for (int i = 0; i < rows; i++) {
    char key[16], res[64];
    snprintf(key, sizeof key, "row-%d", i);
    snprintf(res, sizeof res, "result of row %d, padded to some length", i);
    tu_claim_complete(db, key, res);
  }
  assert_int_equal(idem_close(db), IDEM_OK);
  char *wal = tu_suffix(path, "-wal");
  assert_false(tu_exists(wal));
  free(wal);
}

/* Random bytes are not a database: IDEM_ENOTDB, untouched. */
static void test_random_bytes(void **state) {
  tu_fx *fx = fx_of(state);
  unsigned char buf[8192];
  uint64_t x = UINT64_C(0x9E3779B97F4A7C15);
  for (size_t i = 0; i < sizeof buf; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
  assert_int_equal(tu_write_file(fx->path, buf, sizeof buf), 0);
  assert_refused(fx->path, &fx->opts, IDEM_ENOTDB, IDEM_ENOTDB);
}

/* A text file (say, a config file given by mistake): IDEM_ENOTDB. */
static void test_text_file(void **state) {
  tu_fx *fx = fx_of(state);
  char text[3000];
  size_t n = 0;
  while (n + 40 < sizeof text)
    n += (size_t)snprintf(text + n, sizeof text - n,
                          "jobs_db = /var/lib/app/jobs.db # %zu\n", n);
  assert_int_equal(tu_write_file(fx->path, text, n), 0);
  assert_refused(fx->path, &fx->opts, IDEM_ENOTDB, IDEM_ENOTDB);
}

/* The first 1000 bytes of a real idem database (a valid SQLite header over
 * a truncated first page): refused as not a database or corrupt, never
 * taken for an empty database and written to. */
static void test_truncated_db(void **state) {
  tu_fx *fx = fx_of(state);
  make_idem_db(fx, fx->path, 20);
  size_t len = 0;
  char *bytes = tu_read_file(fx->path, &len);
  assert_non_null(bytes);
  assert_true(len > 1000);
  char trunc[4096];
  snprintf(trunc, sizeof trunc, "%s/truncated.db", fx->dir);
  int wrote = tu_write_file(trunc, bytes, 1000);
  free(bytes);
  assert_int_equal(wrote, 0);
  assert_refused(trunc, &fx->opts, IDEM_ENOTDB, IDEM_ECORRUPT);
}

/* Pages after the first overwritten with garbage: the damage is reported
 * as IDEM_ECORRUPT (at open, or by the first call that reads it), never as
 * another code, and nothing crashes. */
static void test_garbage_pages(void **state) {
  tu_fx *fx = fx_of(state);
  make_idem_db(fx, fx->path, 200);
  size_t len = 0;
  char *bytes = tu_read_file(fx->path, &len);
  assert_non_null(bytes);
  assert_true(len > 3 * 4096);
  memset(bytes + 4096, 0x5A, len - 4096);
  char bad[4096];
  snprintf(bad, sizeof bad, "%s/garbage.db", fx->dir);
  int wrote = tu_write_file(bad, bytes, len);
  free(bytes);
  assert_int_equal(wrote, 0);

  idem_db *db = NULL;
  int rc = idem_open(&db, bad, &fx->opts);
  if (rc == IDEM_ECORRUPT) {
    assert_int_equal(idem_close(db), IDEM_OK);
    return;
  }
  assert_int_equal(rc, IDEM_OK);
  int corrupt = 0;
  for (int i = 0; i < 200; i++) {
    char key[16];
    idem_record r = IDEM_RECORD_INIT;
    snprintf(key, sizeof key, "row-%d", i);
    rc = tu_get(db, key, &r);
    idem_record_clear(&r);
    if (rc == IDEM_ECORRUPT)
      corrupt++;
    else if (rc != IDEM_OK && rc != IDEM_ENOTFOUND)
      fail_msg("idem_get on a damaged file: %s", idem_errstr(rc));
  }
  assert_true(corrupt > 0);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Creates an application's database with one table and one row. */
static void make_foreign_db(const char *path) {
  sqlite3 *conn = NULL;
  assert_int_equal(sqlite3_open(path, &conn), SQLITE_OK);
  assert_int_equal(
      sqlite3_exec(conn,
                   "CREATE TABLE invoices(id INTEGER PRIMARY KEY, amount INT);"
                   "INSERT INTO invoices VALUES (1, 4200);",
                   NULL, NULL, NULL),
      SQLITE_OK);
  assert_int_equal(sqlite3_close(conn), SQLITE_OK);
}

/* Another application's database is refused with IDEM_EFOREIGN and left
 * untouched: a wrong path must not graft tables onto someone's data. */
static void test_foreign_db_refused(void **state) {
  tu_fx *fx = fx_of(state);
  make_foreign_db(fx->path);
  assert_refused(fx->path, &fx->opts, IDEM_EFOREIGN, IDEM_EFOREIGN);
}

/* With IDEM_OPEN_SHARED the idem tables join the application's database:
 * keys work, survive a reopen, and the application's table and row are
 * still there. */
static void test_foreign_db_shared(void **state) {
  tu_fx *fx = fx_of(state);
  make_foreign_db(fx->path);
  idem_options o = fx->opts;
  o.flags = IDEM_OPEN_SHARED;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  tu_claim_complete(db, "k", "shared");
  assert_int_equal(idem_close(db), IDEM_OK);
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  tu_assert_completed(db, "k", "shared");
  assert_int_equal(idem_close(db), IDEM_OK);

  int64_t v = 0;
  assert_int_equal(
      tu_sql_int(fx->path, "SELECT amount FROM invoices WHERE id = 1", &v),
      SQLITE_OK);
  assert_int_equal(v, 4200);
  assert_int_equal(tu_sql_int(fx->path, "SELECT count(*) FROM invoices", &v),
                   SQLITE_OK);
  assert_int_equal(v, 1);
}

/* An idem database written by a newer library (schema_version 999) is
 * refused with IDEM_ESCHEMA and left untouched: this library must not
 * "upgrade" or misread a format it does not know. */
static void test_newer_schema(void **state) {
  tu_fx *fx = fx_of(state);
  make_idem_db(fx, fx->path, 3);
  assert_int_equal(tu_sql(fx->path, "UPDATE idem_meta SET value = 999 "
                                    "WHERE name = 'schema_version'"),
                   SQLITE_OK);
  assert_refused(fx->path, &fx->opts, IDEM_ESCHEMA, IDEM_ESCHEMA);
  /* Read-only opening does not get around it either. */
  idem_options o = fx->opts;
  o.flags = IDEM_OPEN_READONLY;
  assert_refused(fx->path, &o, IDEM_ESCHEMA, IDEM_ESCHEMA);
}

/* A directory cannot be a database: IDEM_ECANTOPEN. */
static void test_directory(void **state) {
  tu_fx *fx = fx_of(state);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->dir, &fx->opts), IDEM_ECANTOPEN);
  struct stat st;
  assert_int_equal(stat(fx->dir, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
}

/* A path in a directory that does not exist: IDEM_ECANTOPEN, and the
 * directory is not created. */
static void test_missing_directory(void **state) {
  tu_fx *fx = fx_of(state);
  char *sub = tu_path(fx->dir, "no-such-dir");
  char *path = tu_path(sub, "jobs.db");
  idem_db *db = NULL;
  int rc = idem_open(&db, path, &fx->opts);
  assert_int_equal(rc, IDEM_ECANTOPEN);
  if (db != NULL) {
    assert_true(strlen(idem_errmsg(db)) > 0);
    assert_int_equal(idem_close(db), IDEM_OK);
  }
  assert_false(tu_exists(sub));
  free(path);
  free(sub);
}

/* IDEM_OPEN_NOCREATE on a missing file: IDEM_ECANTOPEN and no file; on an
 * existing database it opens normally. */
static void test_nocreate(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.flags = IDEM_OPEN_NOCREATE;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_ECANTOPEN);
  assert_false(tu_exists(fx->path));
  make_idem_db(fx, fx->path, 1);
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  tu_assert_completed(db, "row-0", "result of row 0, padded to some length");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* What a process that cannot write the file observes. */
struct ro_result {
  int ran;      /* the checks ran (privileges could be dropped) */
  int open_rw;  /* idem_open without IDEM_OPEN_READONLY */
  int open_ro;  /* idem_open with IDEM_OPEN_READONLY */
  int get_rc;   /* idem_get of an existing key, read-only handle */
  int state;    /* its state */
  int begin_rc; /* idem_begin on the read-only handle */
  int same;     /* the file kept its bytes */
};

static void ro_checks(tu_fx *fx, struct ro_result *r) {
  uint64_t before = 0, after = 0;
  r->ran = 1;
  tu_checksum(fx->path, &before);
  idem_db *db = NULL;
  r->open_rw = tu_open(&db, fx->path, &fx->opts);
  if (db != NULL)
    idem_close(db);
  idem_options o = fx->opts;
  o.flags = IDEM_OPEN_READONLY;
  r->open_ro = tu_open(&db, fx->path, &o);
  if (db != NULL) {
    idem_record rec = IDEM_RECORD_INIT;
    idem_answer a = IDEM_ANSWER_INIT;
    r->get_rc = idem_get(db, "row-0", 5, &rec);
    r->state = rec.state;
    idem_record_clear(&rec);
    r->begin_rc = idem_begin(db, "new", 3, NULL, &a);
    if (a.lease != NULL) {
      idem_release(a.lease, NULL);
      idem_lease_free(a.lease);
    }
    idem_answer_clear(&a);
    idem_close(db);
  }
  tu_checksum(fx->path, &after);
  r->same = before == after;
}

/* Runs ro_checks as an unprivileged user: root writes through chmod 0444,
 * so a child process drops to nobody first. The directory gets dir_mode:
 * writable (0777), as a user's own directory would be, or not (0555). */
static int ro_checks_unprivileged(tu_fx *fx, struct ro_result *r,
                                  mode_t dir_mode) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  assert_int_equal(chmod(fx->dir, dir_mode), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct ro_result c = {0};
    close(fds[0]);
    if (setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0 &&
        access(fx->path, R_OK) == 0)
      ro_checks(fx, &c);
    ssize_t w = write(fds[1], &c, sizeof c);
    _exit(w == (ssize_t)sizeof c ? 0 : 1);
  }
  close(fds[1]);
  ssize_t got = read(fds[0], r, sizeof *r);
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_int_equal(got, (ssize_t)sizeof *r);
  return r->ran;
}

/* A database file the process cannot write: opening it for writing is
 * IDEM_EREADONLY (not a later surprise on the first begin); with
 * IDEM_OPEN_READONLY it opens, idem_get reads rows, begin is
 * IDEM_EREADONLY, and the file keeps its bytes. */
static void test_readonly_file(void **state) {
  tu_fx *fx = fx_of(state);
  make_idem_db(fx, fx->path, 2);
  assert_int_equal(chmod(fx->path, 0444), 0);
  struct ro_result r = {0};
  if (geteuid() == 0) {
    if (!ro_checks_unprivileged(fx, &r, 0777)) {
      print_message("running as root and cannot drop to an unprivileged "
                    "user: chmod 0444 does not stop root from writing\n");
      skip();
    }
  } else {
    ro_checks(fx, &r);
  }
  assert_int_equal(r.open_rw, IDEM_EREADONLY);
  assert_int_equal(r.open_ro, IDEM_OK);
  assert_int_equal(r.get_rc, IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  assert_int_equal(r.begin_rc, IDEM_EREADONLY);
  assert_true(r.same);
}

/* A database the process may write, in a directory it may not: WAL mode
 * needs to create its -wal and -shm files there. Opening for writing is
 * IDEM_EREADONLY, and neither the file nor the directory changes. */
static void test_readonly_directory(void **state) {
  tu_fx *fx = fx_of(state);
  make_idem_db(fx, fx->path, 2);
  assert_int_equal(chmod(fx->path, 0666), 0);
  char *wal = tu_suffix(fx->path, "-wal");
  struct ro_result r = {0};
  if (geteuid() == 0) {
    if (!ro_checks_unprivileged(fx, &r, 0555)) {
      print_message("running as root and cannot drop to an unprivileged "
                    "user: a read-only directory does not stop root\n");
      free(wal);
      skip();
    }
  } else {
    assert_int_equal(chmod(fx->dir, 0555), 0);
    ro_checks(fx, &r);
  }
  assert_int_equal(chmod(fx->dir, 0755), 0);
  assert_int_equal(r.open_rw, IDEM_EREADONLY);
  assert_true(r.same);
  assert_false(tu_exists(wal));
  free(wal);
}

/* An existing file of zero bytes is an empty SQLite database: it holds
 * nothing a write could destroy, and it is what a crash between creating
 * a file and writing its first page leaves, so it opens as a new idem
 * database instead of being refused (docs/design.md, "Storage errors"). */
static void test_empty_file(void **state) {
  tu_fx *fx = fx_of(state);
  assert_int_equal(tu_write_file(fx->path, "", 0), 0);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_claim_complete(db, "k", "r");
  tu_assert_completed(db, "k", "r");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* IDEM_OPEN_READONLY on a writable database changes nothing: reads work,
 * every writing call is IDEM_EREADONLY, and the file keeps its bytes. */
static void test_readonly_flag(void **state) {
  tu_fx *fx = fx_of(state);
  make_idem_db(fx, fx->path, 2);
  uint64_t before = 0, after = 0;
  assert_int_equal(tu_checksum(fx->path, &before), 0);
  idem_options o = fx->opts;
  o.flags = IDEM_OPEN_READONLY;
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &o), IDEM_OK);
  idem_record r = IDEM_RECORD_INIT;
  assert_int_equal(tu_get(db, "row-1", &r), IDEM_OK);
  assert_int_equal(r.state, IDEM_STATE_COMPLETED);
  idem_record_clear(&r);
  idem_answer a = IDEM_ANSWER_INIT;
  uint64_t n = 0;
  assert_int_equal(tu_begin(db, "new", &a), IDEM_EREADONLY);
  assert_null(a.lease);
  assert_int_equal(idem_reset(db, "row-1", 5), IDEM_EREADONLY);
  assert_int_equal(idem_purge(db, 0, &n), IDEM_EREADONLY);
  assert_int_equal(idem_reset_state(db, IDEM_STATE_COMPLETED, &n),
                   IDEM_EREADONLY);
  idem_answer_clear(&a);
  assert_int_equal(idem_close(db), IDEM_OK);
  assert_int_equal(tu_checksum(fx->path, &after), 0);
  assert_true(before == after);
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  assert_int_equal(tu_get(db, "new", &r), IDEM_ENOTFOUND);
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* IDEM_OPEN_READONLY on a missing file cannot create it. */
static void test_readonly_missing(void **state) {
  tu_fx *fx = fx_of(state);
  idem_options o = fx->opts;
  o.flags = IDEM_OPEN_READONLY;
  idem_db *db = NULL;
  int rc = tu_open(&db, fx->path, &o);
  assert_true(rc == IDEM_ECANTOPEN || rc == IDEM_EREADONLY);
  assert_false(tu_exists(fx->path));
}

/* An existing idem database reopens with its rows, also through an SQLite
 * URI file name; reopening does not change the schema version. */
static void test_reopen_existing(void **state) {
  tu_fx *fx = fx_of(state);
  make_idem_db(fx, fx->path, 5);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  tu_assert_completed(db, "row-4", "result of row 4, padded to some length");
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], 5);
  assert_int_equal(st.schema_version, 1);
  assert_int_equal(idem_close(db), IDEM_OK);

  char *uri = malloc(strlen(fx->path) + 16);
  assert_non_null(uri);
  sprintf(uri, "file:%s", fx->path);
  assert_int_equal(tu_open(&db, uri, &fx->opts), IDEM_OK);
  tu_assert_completed(db, "row-0", "result of row 0, padded to some length");
  assert_int_equal(idem_close(db), IDEM_OK);
  free(uri);
  int64_t v = 0;
  assert_int_equal(tu_sql_int(fx->path,
                              "SELECT value FROM idem_meta "
                              "WHERE name = 'schema_version'",
                              &v),
                   SQLITE_OK);
  assert_int_equal(v, 1);
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_random_bytes),       T(test_text_file),
      T(test_truncated_db),       T(test_garbage_pages),
      T(test_foreign_db_refused), T(test_foreign_db_shared),
      T(test_newer_schema),       T(test_directory),
      T(test_readonly_directory), T(test_empty_file),
      T(test_missing_directory),  T(test_nocreate),
      T(test_readonly_file),      T(test_readonly_flag),
      T(test_readonly_missing),   T(test_reopen_existing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
