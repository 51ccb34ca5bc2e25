/* SPDX-License-Identifier: MIT */
/*
 * mkrelease.c - claims a key and gives it back with any reason, through
 * the public API, for the shell tests of `idem get`: idem run releases
 * only with reasons of its own making, which never need escaping.
 *
 * Usage: mkrelease PATH KEY REASON  claims KEY in the database at PATH and
 * releases it with REASON (any bytes but NUL), as the next attempt.
 */
#include <idem.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: mkrelease PATH KEY REASON\n");
    return 64;
  }
  idem_options o = IDEM_OPTIONS_INIT;
  o.heartbeat_ms = -1;
  idem_db *db = NULL;
  int rc = idem_open(&db, argv[1], &o);
  if (rc != IDEM_OK) {
    fprintf(stderr, "mkrelease: %s\n", idem_errstr(rc));
    idem_close(db);
    return 1;
  }
  idem_answer a = IDEM_ANSWER_INIT;
  rc = idem_begin(db, argv[2], strlen(argv[2]), NULL, &a);
  if (rc == IDEM_CLAIMED)
    rc = idem_release(a.lease, argv[3]);
  else if (rc >= 0)
    rc = IDEM_EINVAL; /* the tests only ever hand it a claimable key */
  if (rc < 0)
    fprintf(stderr, "mkrelease: %s (%s)\n", idem_errstr(rc), idem_errmsg(db));
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  idem_close(db);
  return rc < 0 ? 1 : 0;
}
