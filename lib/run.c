/* SPDX-License-Identifier: MIT */
/*
 * run.c - idem_run(): begin, run the job, and end the lease as it says.
 *
 * This is the whole protocol in one call, for callers who would otherwise
 * write the same switch around idem_begin() every time. The job tells what
 * to store with idem_lease_set_result(); the lease is always ended and
 * freed before idem_run() returns, so no lease escapes it.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int idem_lease_set_result(idem_lease *lease, const void *result, size_t len,
                          int code) {
  if (!lease || (!result && len))
    return IDEM_EINVAL;
  if (idem__forked(lease->db))
    return idem__fork_refused(lease->db, "idem_lease_set_result");
  if (len > IDEM_MAX_RESULT)
    return IDEM_ETOOBIG;
  void *copy = malloc(len + 1);
  if (!copy)
    return IDEM_ENOMEM;
  if (len)
    memcpy(copy, result, len);
  ((char *)copy)[len] = '\0';
  free(lease->result);
  lease->result = copy;
  lease->result_len = len;
  lease->result_code = code;
  return IDEM_OK;
}

/* Moves the job's result into the answer, as a later begin would see it:
 * a completion stores no code, whatever the job set. */
static void take_result(idem_lease *l, idem_answer *out) {
  out->result = l->result;
  out->result_len = l->result_len;
  out->code = out->status == IDEM_FAILED ? l->result_code : 0;
  out->finished_at = l->finished_at;
  l->result = NULL;
  l->result_len = 0;
  if (!out->result) {
    out->result = calloc(1, 1);
    out->result_len = 0;
  }
}

int idem_run(idem_db *db, const void *key, size_t key_len,
             const idem_begin_opts *opts, idem_job_fn fn, void *ctx,
             idem_answer *out) {
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_run");
  if (!fn) {
    idem__lock(db);
    int code = idem__error(db, IDEM_EINVAL, "job function is NULL");
    idem__unlock(db);
    return code;
  }
  int answer = idem_begin(db, key, key_len, opts, out);
  if (answer != IDEM_CLAIMED)
    return answer;
  idem_lease *l = out->lease;
  out->lease = NULL;
  out->ran = 1;
  int verdict = fn(ctx, l);
  const void *res = l->result ? l->result : "";
  int rc;
  switch (verdict) {
  case IDEM_JOB_DONE:
    rc = idem_complete(l, res, l->result_len);
    /* A failed commit may have landed; asking again settles it. */
    for (int i = 0; rc == IDEM_EUNKNOWN && i < 3; i++)
      rc = idem_complete(l, res, l->result_len);
    answer = IDEM_COMPLETED;
    break;
  case IDEM_JOB_FAIL:
    rc = idem_fail(l, l->result_code, res, l->result_len);
    for (int i = 0; rc == IDEM_EUNKNOWN && i < 3; i++)
      rc = idem_fail(l, l->result_code, res, l->result_len);
    answer = IDEM_FAILED;
    break;
  default:
    rc = idem_release(l, "the job asked to be retried");
    answer = IDEM_RELEASED;
    break;
  }
  if (rc == IDEM_OK) {
    out->status = answer;
    if (answer != IDEM_RELEASED)
      take_result(l, out);
  }
  idem_lease_free(l);
  return rc == IDEM_OK ? answer : rc;
}
