/* SPDX-License-Identifier: MIT */
/*
 * chaos.c - the driver of the chaos scenarios: it starts worker processes
 * (worker.c), breaks them on purpose, and has check_history.py judge what
 * they recorded against the final database.
 *
 *   chaos_driver crash WORKER PYTHON CHECKER
 *     Scenario 1. Per seed: 8 workers over 50 keys while the driver
 *     SIGKILLs a random one every 50-200 ms and starts it again; then the
 *     faults stop, one worker settles every key, and the checker runs.
 *     20 seeds (IDEM_CHAOS_SEEDS), or only IDEM_CHAOS_SEED to replay one.
 *     IDEM_CHAOS_MS sets the faulty time per seed; with IDEM_CHAOS_KEEP
 *     every run keeps its files, not only a failing one.
 *   chaos_driver stale WORKER PYTHON CHECKER
 *     Scenario 2. A holder stopped with SIGSTOP past its TTL, overtaken by
 *     another process, and continued: every call it makes is refused.
 *
 * The driver's decisions (kill times, victims, the workers' seeds) come
 * from the seed; the interleaving of the processes does not, so a replay
 * repeats the faults, not the exact history. A failing run keeps its
 * directory and says where it is.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chaos.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NWORKERS 8
#define NSEEDS 20
/* Three faulty seconds per seed keep the 20 seeds, with their settle
 * passes and checks, near a minute and a half on two cores. The 50 keys
 * are mostly done within that time anyway; more seeds find more than
 * longer runs. */
#define CHAOS_MS 3000
#define KILL_MIN_MS 50
#define KILL_MAX_MS 200

static const char *worker_exe, *python_exe, *checker;

/* Assertions of the driver: say what and where, and fail the test. */
#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      return -1;                                                               \
    }                                                                          \
  } while (0)

static void sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static int64_t random_between(int64_t lo, int64_t hi) {
  return lo + random() % (hi - lo + 1);
}

/* The driver's own history: kills, stops and continues, in the workers'
 * line format, so the checker sees them in one timeline. */
static int driver_fd = -1;
static void rec_signal(const char *op, const char *name, pid_t pid) {
  char line[256];
  int n = snprintf(line, sizeof line,
                   "{\"op\":\"%s\",\"phase\":\"ok\",\"w\":\"%s\",\"pid\":%ld,"
                   "\"t\":%" PRId64 "}\n",
                   op, name, (long)pid, chaos_now_ns());
  if (write(driver_fd, line, (size_t)n) != n)
    perror("driver history");
}

/* Starts the worker with the given arguments (NULL-terminated after the
 * mode). With in/out, its stdin and stdout are pipes to the driver. */
static pid_t spawn(int *to_child, int *from_child, const char *mode, ...) {
  const char *argv[16];
  int argc = 0;
  argv[argc++] = worker_exe;
  argv[argc++] = mode;
  va_list ap;
  va_start(ap, mode);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  if (to_child && (pipe(in) != 0 || pipe(out) != 0))
    return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    if (to_child) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      close(in[0]);
      close(in[1]);
      close(out[0]);
      close(out[1]);
    }
    execv(worker_exe, (char *const *)argv);
    _exit(127);
  }
  if (to_child) {
    close(in[0]);
    close(out[1]);
    *to_child = in[1];
    *from_child = out[0];
  }
  return pid;
}

static int wait_exit(pid_t pid, const char *what) {
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid, "%s: waitpid: %s", what,
        strerror(errno));
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "%s: worker %ld ended with %s %d", what, (long)pid,
        WIFEXITED(status) ? "exit code" : "signal",
        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  return 0;
}

static int run_checker(const char *hist, const char *db) {
  pid_t pid = fork();
  if (pid == 0) {
    char max[16];
    snprintf(max, sizeof max, "%d", CHAOS_MAX_ATTEMPTS);
    execlp(python_exe, python_exe, checker, "--max-attempts", max, hist, db,
           (char *)NULL);
    _exit(127);
  }
  return wait_exit(pid, "check_history.py");
}

struct run {
  char *dir, *db, *hist;
};

static int run_open(struct run *r) {
  r->dir = tu_tmpdir();
  CHECK(r->dir != NULL, "no temporary directory");
  r->db = tu_path(r->dir, "idem.db");
  r->hist = tu_path(r->dir, "history");
  CHECK(mkdir(r->hist, 0755) == 0, "mkdir: %s", strerror(errno));
  char *drv = tu_path(r->hist, "driver.jsonl");
  driver_fd = open(drv, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  free(drv);
  CHECK(driver_fd >= 0, "driver history: %s", strerror(errno));
  return 0;
}

/* Removes a passing run's files; keeps a failing one's for the replay. */
static void run_close(struct run *r, int failed) {
  close(driver_fd);
  driver_fd = -1;
  if (failed || getenv("IDEM_CHAOS_KEEP") != NULL)
    fprintf(stderr, "kept the history and database in %s\n", r->dir);
  else
    tu_rmtree(r->dir);
  free(r->dir);
  free(r->db);
  free(r->hist);
}

/* --- Scenario 1: crash chaos -------------------------------------------- */

struct worker {
  pid_t pid;
  int gen;
  char name[32];
};

/* The worker's own seed comes from the driver's sequence, so the whole
 * run follows from the one logged seed. */
static void start_worker(struct worker *w, int i, const struct run *r,
                         int64_t until) {
  char wseed[32], wuntil[32];
  snprintf(w->name, sizeof w->name, "w%d-g%d", i, w->gen);
  snprintf(wseed, sizeof wseed, "%lu", (unsigned long)random());
  snprintf(wuntil, sizeof wuntil, "%" PRId64, until);
  w->pid = spawn(NULL, NULL, "chaos", r->db, r->hist, w->name, wseed, wuntil,
                 (const char *)NULL);
}

static int crash_seed(unsigned seed, int64_t chaos_ms, struct run *r) {
  srandom(seed);
  int64_t until = chaos_now_ns() + chaos_ms * 1000000;
  struct worker w[NWORKERS];
  for (int i = 0; i < NWORKERS; i++) {
    w[i].gen = 0;
    start_worker(&w[i], i, r, until);
    CHECK(w[i].pid > 0, "fork: %s", strerror(errno));
  }
  int kills = 0;
  for (;;) {
    sleep_ms(random_between(KILL_MIN_MS, KILL_MAX_MS));
    if (chaos_now_ns() >= until)
      break;
    int i = (int)(random() % NWORKERS);
    int status = 0;
    /* A worker only exits by itself at `until`, which is still ahead. */
    CHECK(waitpid(w[i].pid, &status, WNOHANG) == 0,
          "worker %s ended early with status %d", w[i].name, status);
    CHECK(kill(w[i].pid, SIGKILL) == 0, "kill: %s", strerror(errno));
    CHECK(waitpid(w[i].pid, &status, 0) == w[i].pid, "waitpid: %s",
          strerror(errno));
    rec_signal("kill", w[i].name, w[i].pid);
    kills++;
    w[i].gen++;
    start_worker(&w[i], i, r, until);
    CHECK(w[i].pid > 0, "fork: %s", strerror(errno));
  }
  for (int i = 0; i < NWORKERS; i++)
    if (wait_exit(w[i].pid, w[i].name) != 0)
      return -1;
  int64_t settle_start = chaos_now_ns();
  if (wait_exit(spawn(NULL, NULL, "settle", r->db, r->hist, "settle",
                      (const char *)NULL),
                "settle") != 0)
    return -1;
  int64_t check_start = chaos_now_ns();
  if (run_checker(r->hist, r->db) != 0)
    return -1;
  printf("seed %u: %d kills, settle %" PRId64 " ms, check %" PRId64 " ms\n",
         seed, kills, (check_start - settle_start) / 1000000,
         (chaos_now_ns() - check_start) / 1000000);
  return 0;
}

static int scenario_crash(void) {
  const char *one = getenv("IDEM_CHAOS_SEED");
  const char *count = getenv("IDEM_CHAOS_SEEDS");
  const char *ms = getenv("IDEM_CHAOS_MS");
  unsigned first = one ? (unsigned)strtoul(one, NULL, 10) : 1;
  int nseeds = one ? 1 : count ? atoi(count) : NSEEDS;
  int64_t chaos_ms = ms ? atoll(ms) : CHAOS_MS;
  int failed = 0;
  for (int s = 0; s < nseeds; s++) {
    unsigned seed = first + (unsigned)s;
    /* Printed first, so that a run that hangs or crashes names its seed. */
    printf("seed %u (replay: IDEM_CHAOS_SEED=%u)\n", seed, seed);
    fflush(stdout);
    struct run r;
    if (run_open(&r) != 0)
      return 1;
    int bad = crash_seed(seed, chaos_ms, &r) != 0;
    if (bad)
      fprintf(stderr, "seed %u FAILED\n", seed);
    run_close(&r, bad);
    failed += bad;
  }
  printf("%d of %d seeds failed\n", failed, nseeds);
  return failed ? 1 : 0;
}

/* --- Scenario 2: stale owner -------------------------------------------- */

struct attempts {
  unsigned n;
  int outcome[4];
  uint64_t fence[4];
};

static int collect(void *ctx, const idem_attempt *a) {
  struct attempts *h = ctx;
  if (h->n < 4) {
    h->outcome[h->n] = a->outcome;
    h->fence[h->n] = a->fence;
  }
  h->n++;
  return 0;
}

static int stale(struct run *r) {
  const char *key = CHAOS_KEY_PREFIX "07";
  int to_holder, from_holder;
  pid_t holder = spawn(&to_holder, &from_holder, "hold", r->db, r->hist,
                       "holder", key, (const char *)NULL);
  CHECK(holder > 0, "fork: %s", strerror(errno));
  FILE *from = fdopen(from_holder, "r");
  CHECK(from != NULL, "fdopen: %s", strerror(errno));
  char line[256];
  uint64_t fence1 = 0;
  CHECK(fgets(line, sizeof line, from) != NULL &&
            sscanf(line, "claimed %" SCNu64, &fence1) == 1,
        "the holder did not claim %s", key);

  /* Stopped, its heartbeat thread stops too: the lease runs out. */
  CHECK(kill(holder, SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
  int status = 0;
  CHECK(waitpid(holder, &status, WUNTRACED) == holder && WIFSTOPPED(status),
        "the holder did not stop");
  rec_signal("stop", "holder", holder);
  sleep_ms(CHAOS_STALE_TTL_MS + 500);

  /* The holder is alive, so only the TTL lets the successor in. */
  if (wait_exit(spawn(NULL, NULL, "take", r->db, r->hist, "successor", key,
                      (const char *)NULL),
                "successor") != 0)
    return -1;

  CHECK(write(to_holder, "go\n", 3) == 3, "write: %s", strerror(errno));
  CHECK(kill(holder, SIGCONT) == 0, "SIGCONT: %s", strerror(errno));
  rec_signal("cont", "holder", holder);
  int hb, c, rl, f, lease_lost;
  unsigned hb_lost, by_thread, by_call;
  CHECK(fgets(line, sizeof line, from) != NULL &&
            sscanf(line,
                   "hb %d hb_lost %u by_thread %u by_call %u lease_lost %d "
                   "complete %d release %d fail %d",
                   &hb, &hb_lost, &by_thread, &by_call, &lease_lost, &c, &rl,
                   &f) == 8,
        "the holder said nothing after SIGCONT");
  fclose(from);
  close(to_holder);
  if (wait_exit(holder, "holder") != 0)
    return -1;
  printf("holder after SIGCONT: %s", line);

  /* The loss is found by exactly one heartbeat round: the holder's
   * idem_heartbeat(), or its thread when that woke first. */
  CHECK(hb == IDEM_OK, "idem_heartbeat: %s", idem_errstr(hb));
  CHECK(by_thread + by_call == 1, "on_lost told %u times", by_thread + by_call);
  CHECK(hb_lost == by_call, "idem_heartbeat reported %u lost, on_lost %u",
        hb_lost, by_call);
  CHECK(lease_lost, "idem_lease_lost() is false");
  CHECK(c == IDEM_ELEASELOST, "complete: %s", idem_errstr(c));
  CHECK(rl == IDEM_ELEASELOST, "release: %s", idem_errstr(rl));
  CHECK(f == IDEM_ELEASELOST, "fail: %s", idem_errstr(f));

  /* The database: the successor's completion, and the history. */
  idem_options o = IDEM_OPTIONS_INIT;
  o.flags = IDEM_OPEN_READONLY;
  idem_db *db = NULL;
  CHECK(idem_open(&db, r->db, &o) == IDEM_OK, "open: %s", idem_errmsg(db));
  idem_record rec = IDEM_RECORD_INIT;
  int grc = idem_get(db, key, strlen(key), &rec);
  int state = rec.state;
  uint64_t fence = rec.fence;
  char result[128] = "";
  if (grc == IDEM_OK && rec.result)
    snprintf(result, sizeof result, "%s", (const char *)rec.result);
  idem_record_clear(&rec);
  struct attempts h = {0, {0}, {0}};
  unsigned count = 0;
  int hrc = idem_history(db, key, strlen(key), collect, &h, &count);
  idem_close(db);
  CHECK(grc == IDEM_OK && state == IDEM_STATE_COMPLETED, "state %d", state);
  CHECK(fence > fence1, "fence %" PRIu64 " after %" PRIu64, fence, fence1);
  CHECK(strstr(result, "attempt 2 ") != NULL, "stored result \"%s\"", result);
  CHECK(hrc == IDEM_OK && count == 2, "history: %s, %u attempts",
        idem_errstr(hrc), count);
  CHECK(h.fence[0] == fence1 && h.fence[1] == fence,
        "history fences %" PRIu64 ", %" PRIu64, h.fence[0], h.fence[1]);
  CHECK(h.outcome[1] == IDEM_OUTCOME_COMPLETED, "attempt 2 outcome %d",
        h.outcome[1]);
  /* The holder came back and was refused: its attempt reads as lost, not
   * as a lease that merely ran out. */
  CHECK(h.outcome[0] == IDEM_OUTCOME_LOST,
        "attempt 1 ended with outcome %d, not lost (%d), though its holder "
        "came back and its heartbeat, complete, release and fail were refused",
        h.outcome[0], IDEM_OUTCOME_LOST);
  return 0;
}

static int scenario_stale(void) {
  struct run r;
  if (run_open(&r) != 0)
    return 1;
  int bad = stale(&r) != 0;
  if (!bad)
    bad = run_checker(r.hist, r.db) != 0;
  run_close(&r, bad);
  return bad;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: chaos_driver crash|stale WORKER PYTHON CHECKER\n");
    return 2;
  }
  worker_exe = argv[2];
  python_exe = argv[3];
  checker = argv[4];
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strcmp(argv[1], "crash") == 0)
    return scenario_crash();
  if (strcmp(argv[1], "stale") == 0)
    return scenario_stale();
  fprintf(stderr, "unknown scenario %s\n", argv[1]);
  return 2;
}
