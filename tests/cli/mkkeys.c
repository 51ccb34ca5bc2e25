/* SPDX-License-Identifier: MIT */
/*
 * mkkeys.c - fills a database with many keys through the public API, for
 * the shell tests of `idem list`: starting thousands of `idem run` would
 * take far longer than the paging it is meant to exercise.
 *
 * Usage: mkkeys PATH N  makes key00000 .. key(N-1), every third one left
 * pending (released), the others completed with their own name as output.
 */
#include <idem.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: mkkeys PATH N\n");
    return 64;
  }
  char *end = NULL;
  long n = strtol(argv[2], &end, 10);
  if (end == argv[2] || *end != '\0' || n < 0 || n > 100000) {
    fprintf(stderr, "mkkeys: bad count '%s'\n", argv[2]);
    return 64;
  }
  idem_options o = IDEM_OPTIONS_INIT;
  o.heartbeat_ms = -1;
  idem_db *db = NULL;
  int rc = idem_open(&db, argv[1], &o);
  if (rc != IDEM_OK) {
    fprintf(stderr, "mkkeys: %s\n", idem_errstr(rc));
    idem_close(db);
    return 1;
  }
  for (long i = 0; i < n && rc >= 0; i++) {
    char key[32];
    snprintf(key, sizeof key, "key%05ld", i);
    idem_answer a = IDEM_ANSWER_INIT;
    rc = idem_begin(db, key, strlen(key), NULL, &a);
    if (rc == IDEM_CLAIMED)
      rc = i % 3 == 0 ? idem_release(a.lease, "left pending")
                      : idem_complete(a.lease, key, strlen(key));
    else if (rc >= 0)
      rc = IDEM_EINVAL; /* a fresh database answers nothing else */
    idem_lease_free(a.lease);
    idem_answer_clear(&a);
  }
  if (rc < 0)
    fprintf(stderr, "mkkeys: %s\n", idem_errmsg(db));
  idem_close(db);
  return rc < 0 ? 1 : 0;
}
