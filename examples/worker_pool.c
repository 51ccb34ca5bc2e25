/* SPDX-License-Identifier: MIT */
/*
 * worker_pool.c - a pool of worker processes sharing one database.
 *
 * N workers (fork) go through the same jobs, "job-1" to "job-20", in turn.
 * For each they call idem_run(): the first to get there claims the key and
 * runs the job; the others find it busy and, because wait_ms is set, wait
 * and are handed its stored result instead of running it again. The job's
 * side effect is a line appended to a shared log: that is what the parent
 * checks at the end, together with the database (one claim per key).
 * Expect one worker to run most jobs: having just finished one, it is first
 * at the next while the others are still waking from their wait.
 *
 * Usage: worker_pool [DATABASE [WORKERS]]
 * The log, and the database when none is given, go in a temporary
 * directory removed at the end.
 * On a DATABASE whose jobs were done before, nothing runs again.
 */
#define _POSIX_C_SOURCE 200809L

#include <idem.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define JOBS 20
#define MAX_WORKERS 64

static int log_fd = -1; /* opened O_APPEND by the parent, shared by all */

/* One write() per line: with O_APPEND each line lands whole at the end of
 * the file, however many processes write at once. */
static void log_line(const char *what, int job, int worker) {
  char line[64];
  int n = snprintf(line, sizeof line, "%s %d %d\n", what, job, worker);
  if (write(log_fd, line, (size_t)n) != n)
    perror("log");
}

struct job {
  int job, worker;
};

/* The job body: a few ms of work, its side effect, and the result that the
 * other workers will be handed: who ran it. */
static int run_job(void *ctx, idem_lease *lease) {
  const struct job *j = ctx;
  struct timespec work = {0, 3 * 1000000L};
  char result[32];

  nanosleep(&work, NULL);
  log_line("ran", j->job, j->worker);
  snprintf(result, sizeof result, "worker %d", j->worker);
  if (idem_lease_set_result(lease, result, strlen(result), 0) != IDEM_OK)
    return IDEM_JOB_RETRY; /* let another attempt record it */
  return IDEM_JOB_DONE;
}

/* One worker process. It opens its own handle: a handle must not be used
 * across fork(). Returns 0 when every job ended completed. */
static int work(const char *path, int w) {
  idem_db *db = NULL;
  int rc = idem_open(&db, path, NULL), bad = rc != IDEM_OK;

  for (int k = 1; k <= JOBS && !bad; k++) {
    idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
    idem_answer ans = IDEM_ANSWER_INIT;
    struct job j = {k, w};
    char key[16];

    snprintf(key, sizeof key, "job-%d", k);
    bo.wait_ms = 30000; /* busy elsewhere: wait and take its result */
    rc = idem_run(db, key, strlen(key), &bo, run_job, &j, &ans);
    if (rc == IDEM_COMPLETED && !ans.ran)
      log_line("took", k, w);
    bad = rc != IDEM_COMPLETED;
    idem_answer_clear(&ans);
  }
  if (bad)
    fprintf(stderr, "worker %d: %s: %s\n", w, idem_errstr(rc), idem_errmsg(db));
  return idem_close(db) != IDEM_OK || bad;
}

int main(int argc, char **argv) {
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char dir[2048], db_path[4096], log_path[4096], line[64], what[8];
  int ran_by[JOBS + 1], runs[JOBS + 1] = {0}, took[MAX_WORKERS] = {0};
  int n = 4, bad = 0, fresh, opened, k, w;
  pid_t pids[MAX_WORKERS];
  idem_db *db = NULL;
  FILE *log;

  if (argc > 2) { /* the number of workers, checked */
    char *end;
    long v = strtol(argv[2], &end, 10);
    n = *end || v < 1 || v > MAX_WORKERS ? 0 : (int)v;
  }
  if (argc > 3 || n == 0) {
    fprintf(stderr, "usage: %s [DATABASE [WORKERS 1-%d]]\n", argv[0],
            MAX_WORKERS);
    return 2;
  }
  snprintf(dir, sizeof dir, "%s/idem-worker_pool.XXXXXX", tmp);
  if (!mkdtemp(dir)) {
    perror(dir);
    return 1;
  }
  snprintf(db_path, sizeof db_path, "%s/pool.db", dir);
  snprintf(log_path, sizeof log_path, "%s/jobs.log", dir);
  if (argc > 1)
    snprintf(db_path, sizeof db_path, "%s", argv[1]);
  fresh = access(db_path, F_OK) != 0; /* then every job must run now */
  log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (log_fd < 0) {
    perror(log_path);
    return 1;
  }

  /* No handle is open here: each child opens its own. Flush stdout so the
   * children do not inherit buffered output and print it twice. */
  fflush(stdout);
  for (w = 0; w < n; w++) {
    pids[w] = fork();
    if (pids[w] == 0)
      _exit(work(db_path, w));
    bad |= pids[w] < 0;
  }
  for (w = 0; w < n; w++) {
    int st = 0;
    if (pids[w] > 0 && (waitpid(pids[w], &st, 0) < 0 || st != 0))
      bad = 1;
  }
  close(log_fd);

  /* The log says who ran what in this run, and who was handed results. */
  for (k = 0; k <= JOBS; k++)
    ran_by[k] = -1;
  log = fopen(log_path, "r");
  while (log && fgets(line, sizeof line, log)) {
    if (sscanf(line, "%7s %d %d", what, &k, &w) != 3 || k < 1 || k > JOBS ||
        w < 0 || w >= n)
      bad = 1;
    else if (strcmp(what, "ran") == 0) {
      runs[k]++;
      ran_by[k] = w;
    } else {
      took[w]++;
    }
  }
  bad |= !log;
  if (log)
    fclose(log);

  /* The database must agree: each key completed after a single claim, with
   * the result of the worker that the log names. */
  opened = idem_open(&db, db_path, NULL) == IDEM_OK;
  bad |= !opened;
  for (k = 1; k <= JOBS && opened; k++) {
    idem_record rec = IDEM_RECORD_INIT;
    char key[16], want[32];

    snprintf(key, sizeof key, "job-%d", k);
    snprintf(want, sizeof want, "worker %d", ran_by[k]);
    if (idem_get(db, key, strlen(key), &rec) != IDEM_OK ||
        rec.state != IDEM_STATE_COMPLETED || rec.attempts != 1 || runs[k] > 1 ||
        (fresh && runs[k] != 1) ||
        (runs[k] == 1 && strcmp(rec.result, want) != 0)) {
      fprintf(stderr, "%s: ran %d times in this run, %u claims\n", key, runs[k],
              (unsigned)rec.attempts);
      bad = 1;
    }
    idem_record_clear(&rec);
  }
  bad |= idem_close(db) != IDEM_OK;

  for (w = 0; w < n; w++) {
    int mine = 0;
    printf("worker %d ran", w);
    for (k = 1; k <= JOBS; k++)
      if (ran_by[k] == w) {
        printf(" job-%d", k);
        mine++;
      }
    printf("%s; took %d results from others\n", mine ? "" : " nothing",
           took[w]);
    bad |= mine + took[w] != JOBS; /* each job either ran or was handed */
  }
  printf("%s\n", bad ? "FAILED" : "every job ran exactly once");

  unlink(log_path);
  if (argc < 2) {
    /* Every file the library keeps beside the database: it names them,
     * so that this list cannot fall behind it. */
    const char *suffix;
    for (unsigned i = 0; (suffix = idem_file_suffix(i)) != NULL; i++) {
      snprintf(log_path, sizeof log_path, "%s%s", db_path, suffix);
      unlink(log_path);
    }
  }
  if (rmdir(dir) != 0) {
    perror(dir);
    bad = 1;
  }
  return bad;
}
