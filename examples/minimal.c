/* SPDX-License-Identifier: MIT */
/* minimal.c - do the work for a key once, however often it is asked for.
 * Usage: minimal DATABASE KEY */
#include <idem.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  idem_db *db = NULL;
  idem_answer ans = IDEM_ANSWER_INIT;
  int rc, ok = 0;

  if (argc != 3) {
    fprintf(stderr, "usage: %s DATABASE KEY\n", argv[0]);
    return 2;
  }
  rc = idem_open(&db, argv[1], NULL);
  if (rc != IDEM_OK) {
    fprintf(stderr, "open: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
    idem_close(db); /* a handle may come back even on failure */
    return 1;
  }

  rc = idem_begin(db, argv[2], strlen(argv[2]), NULL, &ans);
  switch (rc) {
  case IDEM_CLAIMED: { /* ours: do the work, then record its result */
    char result[64];
    snprintf(result, sizeof result, "done at attempt %u",
             (unsigned)ans.attempts);
    rc = idem_complete(ans.lease, result, strlen(result));
    if (rc == IDEM_OK)
      printf("ran the job: %s\n", result);
    else
      fprintf(stderr, "complete: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
    ok = rc == IDEM_OK;
    break;
  }
  case IDEM_COMPLETED: /* done before: the stored result, no second run */
    printf("already done: %.*s\n", (int)ans.result_len, (char *)ans.result);
    ok = 1;
    break;
  case IDEM_BUSY:
    printf("running elsewhere; retry in %lld ms\n", (long long)ans.lease_ms);
    break;
  case IDEM_FAILED:
  case IDEM_POISONED:
    printf("%s: not retried until reset\n", idem_errstr(rc));
    break;
  default:
    fprintf(stderr, "begin: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
  }

  idem_lease_free(ans.lease); /* the answer does not own the lease */
  idem_answer_clear(&ans);
  rc = idem_close(db);
  if (rc != IDEM_OK)
    fprintf(stderr, "close: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
  return ok && rc == IDEM_OK ? 0 : 1;
}
