/* SPDX-License-Identifier: MIT */
/*
 * files.c - idem_file_suffix() names every file the library keeps beside a
 * database, so that a program removing a database by that list removes it
 * whole.
 *
 * Checks the list's form (the database first, then distinct "-..."
 * suffixes, then NULL for good), then opens a database in an empty
 * directory, writes to it and, with the handle open and after closing it,
 * finds in the directory only files the list names, SQLite's and the
 * writers' queue among them. Removing the listed files must then empty the
 * directory. A library that starts keeping another file beside a database
 * fails here until the list names it.
 * Usage: files
 */
#define _POSIX_C_SOURCE 200809L

#include <idem.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DB_NAME "jobs.db"

static int failures;

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "FAIL: %s%s%s\n", what, detail ? ": " : "",
          detail ? detail : "");
  failures++;
}

/* The index of the suffix that makes `name` from DB_NAME, or -1. */
static int suffix_of(const char *name) {
  size_t n = strlen(DB_NAME);
  const char *s;

  if (strncmp(name, DB_NAME, n) != 0)
    return -1;
  for (unsigned i = 0; (s = idem_file_suffix(i)) != NULL; i++)
    if (strcmp(name + n, s) == 0)
      return (int)i;
  return -1;
}

/* Every entry of dir must be a listed file; the suffixes of `need` (NULL
 * ends it) must be among them. */
static void check_dir(const char *dir, const char *when,
                      const char *const *need) {
  unsigned seen = 0; /* a bit per suffix index found */
  struct dirent *e;
  DIR *d = opendir(dir);

  if (!d) {
    fail("opendir", strerror(errno));
    return;
  }
  while ((e = readdir(d)) != NULL) {
    int i;

    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    i = suffix_of(e->d_name);
    if (i < 0) {
      fprintf(stderr, "%s: ", when);
      fail("a file idem_file_suffix() does not name", e->d_name);
    } else if (i < (int)(sizeof seen * CHAR_BIT)) {
      seen |= 1u << i;
    }
  }
  closedir(d);
  for (; *need; need++) {
    int i = suffix_of(*need);
    if (i < 0 || !(seen & 1u << i)) {
      fprintf(stderr, "%s: ", when);
      fail("missing", *need);
    }
  }
}

/* Removes what the list did not name, and the directory. */
static void remove_rest(const char *dir) {
  char name[4200];
  struct dirent *e;
  DIR *d = opendir(dir);

  while (d && (e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
        snprintf(name, sizeof name, "%s/%s", dir, e->d_name) < (int)sizeof name)
      unlink(name);
  if (d)
    closedir(d);
  rmdir(dir);
}

static void check_list(void) {
  const char *s, *t;
  unsigned n = 0;

  if (!idem_file_suffix(0) || idem_file_suffix(0)[0] != '\0')
    fail("idem_file_suffix(0) is not \"\", the database itself", NULL);
  for (unsigned i = 1; (s = idem_file_suffix(i)) != NULL; i++) {
    n = i;
    if (s[0] != '-' || !s[1])
      fail("a suffix that does not start with '-'", s);
    for (unsigned j = 1; j < i; j++)
      if ((t = idem_file_suffix(j)) != NULL && strcmp(s, t) == 0)
        fail("a suffix listed twice", s);
    if (i > 64) {
      fail("no NULL after 64 suffixes", NULL);
      return;
    }
  }
  if (n < 3)
    fail("fewer suffixes than -wal, -shm and -lockq", NULL);
  if (idem_file_suffix(n + 2) || idem_file_suffix(UINT_MAX))
    fail("a suffix after the NULL that ends the list", NULL);
}

int main(void) {
  static const char *const open_files[] = {
      DB_NAME, DB_NAME "-wal", DB_NAME "-shm", DB_NAME "-lockq", NULL};
  static const char *const closed_files[] = {DB_NAME, NULL};
  const char *tmp = getenv("TMPDIR"), *s;
  char dir[2048], path[2100], name[2200];
  idem_answer ans = IDEM_ANSWER_INIT;
  idem_db *db = NULL;
  int rc;

  check_list();

  snprintf(dir, sizeof dir, "%s/idem-files-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror(dir);
    return 1;
  }
  snprintf(path, sizeof path, "%s/" DB_NAME, dir);

  rc = idem_open(&db, path, NULL);
  if (rc == IDEM_OK)
    rc = idem_begin(db, "key", 3, NULL, &ans);
  if (rc == IDEM_CLAIMED)
    rc = idem_complete(ans.lease, "done", 4);
  if (rc == IDEM_OK)
    check_dir(dir, "with the handle open", open_files);
  else
    fail(idem_errstr(rc), idem_errmsg(db));
  idem_lease_free(ans.lease);
  idem_answer_clear(&ans);
  if (idem_close(db) != IDEM_OK)
    fail("idem_close", NULL);
  check_dir(dir, "after idem_close()", closed_files);

  for (unsigned i = 0; (s = idem_file_suffix(i)) != NULL; i++) {
    snprintf(name, sizeof name, "%s%s", path, s);
    if (unlink(name) != 0 && errno != ENOENT)
      perror(name);
  }
  if (rmdir(dir) != 0) {
    perror(dir);
    failures++;
    remove_rest(dir); /* reported: now leave nothing behind */
  }

  if (failures)
    return 1;
  printf("ok: no file but those idem_file_suffix() names:");
  for (unsigned i = 0; (s = idem_file_suffix(i)) != NULL; i++)
    printf(" \"%s\"", s);
  printf("\n");
  return 0;
}
