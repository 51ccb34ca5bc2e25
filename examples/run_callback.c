/* SPDX-License-Identifier: MIT */
/*
 * run_callback.c - the whole claim/run/complete cycle in one idem_run() call.
 *
 * The job is a callback. It works in steps and looks at idem_lease_lost()
 * between them: once another owner has taken the key over, whatever this
 * run produces will be refused, so it stops early instead of finishing
 * work nobody can record. It says what to store with
 * idem_lease_set_result() and returns IDEM_JOB_DONE, IDEM_JOB_RETRY or
 * IDEM_JOB_FAIL.
 *
 * The program asks for the key twice. The first call runs the job (unless
 * the key was done before, on an earlier run of the program); the second
 * must be handed the stored result without running anything.
 *
 * Usage: run_callback DATABASE [KEY]
 */
#define _POSIX_C_SOURCE 200809L

#include <idem.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct report_job {
  const char *name;
  int steps;
  int runs; /* how often the body ran, to prove the second call did not */
};

static int render_report(void *ctx, idem_lease *lease) {
  struct report_job *job = ctx;
  struct timespec step = {0, 20 * 1000000L};
  char result[128];
  int rc;

  job->runs++;
  for (int i = 0; i < job->steps; i++) {
    if (idem_lease_lost(lease))
      return IDEM_JOB_RETRY; /* overtaken: our result would be refused */
    nanosleep(&step, NULL);  /* one step of real work */
  }
  snprintf(result, sizeof result,
           "%s rendered in %d steps (attempt %u, fence %" PRIu64 ")", job->name,
           job->steps, (unsigned)idem_lease_attempt(lease),
           idem_lease_fence(lease));
  rc = idem_lease_set_result(lease, result, strlen(result), 0);
  if (rc != IDEM_OK) {
    /* The work is not lost for good: let a later attempt store it. */
    fprintf(stderr, "set_result: %s\n", idem_errstr(rc));
    return IDEM_JOB_RETRY;
  }
  return IDEM_JOB_DONE;
}

/* Runs the job for key; returns 0 when the key ends completed. */
static int run_once(idem_db *db, const char *key, struct report_job *job,
                    idem_answer *ans) {
  idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
  int rc;

  bo.name = "render-report";
  bo.wait_ms = 10000; /* if another process runs it, wait for its result */
  rc = idem_run(db, key, strlen(key), &bo, render_report, job, ans);
  switch (rc) {
  case IDEM_COMPLETED:
    printf("%s: %.*s\n", ans->ran ? "ran the job" : "stored result",
           (int)ans->result_len, (const char *)ans->result);
    return 0;
  case IDEM_FAILED:
    printf("failed with code %d: %.*s\n", ans->code, (int)ans->result_len,
           (const char *)ans->result);
    return 1;
  case IDEM_RELEASED:
    printf("the job asked to be retried (attempt %u)\n",
           (unsigned)ans->attempts);
    return 1;
  case IDEM_BUSY:
    printf("still running elsewhere, %lld ms left on its lease\n",
           (long long)ans->lease_ms);
    return 1;
  case IDEM_POISONED:
    printf("poisoned after %u attempts; reset the key to retry\n",
           (unsigned)ans->attempts);
    return 1;
  case IDEM_ELEASELOST:
    fprintf(stderr, "the job ran but lost its lease: result refused\n");
    return 1;
  default:
    fprintf(stderr, "idem_run: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
    return 1;
  }
}

int main(int argc, char **argv) {
  struct report_job job = {"monthly report", 5, 0};
  idem_answer first = IDEM_ANSWER_INIT, second = IDEM_ANSWER_INIT;
  const char *key = argc > 2 ? argv[2] : "report-2024-06";
  idem_db *db = NULL;
  int rc, bad;

  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s DATABASE [KEY]\n", argv[0]);
    return 2;
  }
  rc = idem_open(&db, argv[1], NULL);
  if (rc != IDEM_OK) {
    fprintf(stderr, "open: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
    idem_close(db);
    return 1;
  }

  bad = run_once(db, key, &job, &first);
  if (!bad) {
    int runs = job.runs;
    bad = run_once(db, key, &job, &second);
    if (!bad && (second.ran || job.runs != runs ||
                 second.result_len != first.result_len ||
                 memcmp(second.result, first.result, first.result_len))) {
      fprintf(stderr, "the second call did not replay the first result\n");
      bad = 1;
    }
  }
  idem_answer_clear(&first);
  idem_answer_clear(&second);

  rc = idem_close(db);
  if (rc != IDEM_OK) {
    fprintf(stderr, "close: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
    bad = 1;
  }
  return bad;
}
