/* SPDX-License-Identifier: MIT */
/*
 * idem_bench.c - libidem against the SQLite floor, side by side.
 *
 * Every scenario runs each system in turn inside one repetition, and the
 * order flips from one repetition to the next, so that the drift of a
 * shared machine hits both alike: absolute rates wander between runs, the
 * ratio measured within one repetition holds. Medians are over the
 * repetitions; the ratio is the median of the per-repetition ratios.
 *
 * Output: results.json, results.md and plot data in the directory given
 * with --out. Databases live in a fresh directory under $TMPDIR.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <idem.h>

#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* --- libidem as a bench_sys -------------------------------------------- */

typedef struct idem_cfg {
  int synchronous;
  int64_t heartbeat_ms;
  uint32_t max_attempts;
  bool polling; /* without the writers' queue: its file cannot be made */
} idem_cfg;

typedef struct idem_h {
  idem_db *db;
  pthread_mutex_t mu; /* guards the list of held leases only */
  idem_lease **held;
  size_t nheld, capheld;
} idem_h;

static const char bench_result[BENCH_RESULT_LEN] =
    "{\"status\":\"ok\",\"id\":12345}";

static void *ib_open(const char *path, const void *cfgp) {
  const idem_cfg *cfg = cfgp;
  idem_h *h = calloc(1, sizeof *h);
  if (!h)
    return NULL;
  pthread_mutex_init(&h->mu, NULL);
  idem_options o = IDEM_OPTIONS_INIT;
  o.synchronous = cfg->synchronous;
  o.heartbeat_ms = cfg->heartbeat_ms;
  o.max_attempts = cfg->max_attempts;
  if (cfg->polling) {
    char queue[620];
    snprintf(queue, sizeof queue, "%s-lockq", path);
    (void)mkdir(queue, 0700); /* a directory where the file would go */
  }
  int rc = idem_open(&h->db, path, &o);
  if (rc != IDEM_OK) {
    fprintf(stderr, "idem_open %s: %s\n", path, idem_errmsg(h->db));
    idem_close(h->db);
    free(h);
    return NULL;
  }
  return h;
}

static void ib_drop(void *hp) {
  idem_h *h = hp;
  for (size_t i = 0; i < h->nheld; i++)
    idem_lease_free(h->held[i]);
  h->nheld = 0;
}

static void ib_close(void *hp) {
  idem_h *h = hp;
  if (!h)
    return;
  ib_drop(h);
  idem_close(h->db);
  free(h->held);
  free(h);
}

static int ib_cycle(void *hp, const char *key, size_t len) {
  idem_h *h = hp;
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = idem_begin(h->db, key, len, NULL, &a);
  if (rc == IDEM_CLAIMED) {
    rc = idem_complete(a.lease, bench_result, sizeof bench_result);
    idem_lease_free(a.lease);
  } else if (rc >= 0) {
    rc = -100 - rc; /* a fresh key must be claimed */
  }
  idem_answer_clear(&a);
  return rc;
}

static int ib_read(void *hp, const char *key, size_t len) {
  idem_h *h = hp;
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = idem_begin(h->db, key, len, NULL, &a);
  if (rc == IDEM_CLAIMED) {
    idem_lease_free(a.lease);
    rc = -100 - rc; /* a hit or a busy answer was expected */
  }
  idem_answer_clear(&a);
  return rc == IDEM_COMPLETED || rc == IDEM_BUSY ? 0 : rc;
}

static int ib_hot(void *hp, const char *key, size_t len) {
  idem_h *h = hp;
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = idem_begin(h->db, key, len, NULL, &a);
  if (rc == IDEM_CLAIMED) {
    rc = idem_release(a.lease, NULL);
    idem_lease_free(a.lease);
  } else if (rc == IDEM_BUSY) {
    rc = 0;
  }
  idem_answer_clear(&a);
  return rc;
}

static int ib_hold(void *hp, const char *key, size_t len) {
  idem_h *h = hp;
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = idem_begin(h->db, key, len, NULL, &a);
  if (rc != IDEM_CLAIMED) {
    idem_answer_clear(&a);
    return rc < 0 ? rc : -100 - rc;
  }
  pthread_mutex_lock(&h->mu);
  if (h->nheld == h->capheld) {
    size_t cap = h->capheld ? 2 * h->capheld : 64;
    idem_lease **n = realloc(h->held, cap * sizeof *n);
    if (!n) {
      pthread_mutex_unlock(&h->mu);
      idem_lease_free(a.lease);
      return IDEM_ENOMEM;
    }
    h->held = n;
    h->capheld = cap;
  }
  h->held[h->nheld++] = a.lease;
  pthread_mutex_unlock(&h->mu);
  idem_answer_clear(&a);
  return 0;
}

static int ib_heartbeat(void *hp) {
  idem_h *h = hp;
  unsigned lost = 0;
  int rc = idem_heartbeat(h->db, &lost);
  return rc ? rc : (int)lost;
}

static const bench_sys idem_sys = {
    "libidem", ib_open, ib_close,     ib_cycle, ib_read,
    ib_hot,    ib_hold, ib_heartbeat, ib_drop,
};

/* --- Files ------------------------------------------------------------- */

static char tmpdir[512];
static unsigned file_seq;

static void db_path(char *out, size_t size, const char *tag) {
  snprintf(out, size, "%s/%s-%u.db", tmpdir, tag, file_seq++);
}

static void db_remove(const char *path) {
  static const char *const suffix[] = {"-wal", "-shm", "-lockq"};
  char p[608];
  size_t n = strnlen(path, 600);
  unlink(path);
  memcpy(p, path, n);
  for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
    memcpy(p + n, suffix[i], strlen(suffix[i]) + 1);
    if (unlink(p) != 0)
      rmdir(p); /* a queue file made impossible */
  }
}

static void die(const char *what, int rc) {
  fprintf(stderr, "idem_bench: %s failed (%d: %s)\n", what, rc,
          rc < 0 ? idem_errstr(rc) : sqlite3_errstr(rc));
  exit(1);
}

/* --- Results ----------------------------------------------------------- */

#define MAXREP 15
#define MAXVAR 6

typedef struct variant {
  const char *name;
  const bench_sys *sys;
  const void *cfg;
  bool own_file; /* each process on a database of its own: no lock shared */
} variant;

typedef struct entry {
  char id[64];
  char title[128];
  const char *unit;
  int nvar;
  const char *var[MAXVAR];
  bench_meas m[MAXVAR][MAXREP];
} entry;

static entry entries[80];
static int nentries;
static int reps = 5;
static double scale = 1.0; /* multiplies every count and duration */
static const char *label = "libidem";

static entry *new_entry(const char *id, const char *title, const char *unit,
                        const variant *v, int nvar) {
  entry *e = &entries[nentries++];
  snprintf(e->id, sizeof e->id, "%s", id);
  snprintf(e->title, sizeof e->title, "%s", title);
  e->unit = unit;
  e->nvar = nvar;
  for (int i = 0; i < nvar; i++)
    e->var[i] = v[i].name;
  fprintf(stderr, "  %s\n", title);
  return e;
}

static entry *find_entry(const char *id) {
  for (int i = 0; i < nentries; i++)
    if (strcmp(entries[i].id, id) == 0)
      return &entries[i];
  return NULL;
}

/* The index of the variant of that name in e, or -1. */
static int find_var(const entry *e, const char *name) {
  for (int v = 0; v < e->nvar; v++)
    if (strcmp(e->var[v], name) == 0)
      return v;
  return -1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  double s[MAXREP];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

typedef enum { F_RATE, F_P50, F_P99, F_P999, F_MAX, F_EXTRA } field;

static double get(const bench_meas *m, field f) {
  switch (f) {
  case F_RATE:
    return m->rate;
  case F_P50:
    return m->p50;
  case F_P99:
    return m->p99;
  case F_P999:
    return m->p999;
  case F_MAX:
    return m->max;
  default:
    return m->extra;
  }
}

static double med(const entry *e, int var, field f) {
  double v[MAXREP];
  for (int r = 0; r < reps; r++)
    v[r] = get(&e->m[var][r], f);
  return median(v, reps);
}

/* Per-repetition ratio a/b of one field, summarised. */
typedef struct ratio {
  double med, min, max;
} ratio;

static ratio ratio_of(const entry *ea, int va, const entry *eb, int vb,
                      field f) {
  double v[MAXREP];
  ratio r = {0, INFINITY, -INFINITY};
  for (int i = 0; i < reps; i++) {
    double b = get(&eb->m[vb][i], f);
    v[i] = b > 0 ? get(&ea->m[va][i], f) / b : 0;
    r.min = fmin(r.min, v[i]);
    r.max = fmax(r.max, v[i]);
  }
  r.med = median(v, reps);
  return r;
}

/* (max - min) / median of one field over the repetitions. */
static double spread(const entry *e, int var, field f) {
  double lo = INFINITY, hi = -INFINITY;
  for (int r = 0; r < reps; r++) {
    lo = fmin(lo, get(&e->m[var][r], f));
    hi = fmax(hi, get(&e->m[var][r], f));
  }
  double m = med(e, var, f);
  return m > 0 ? (hi - lo) / m : 0;
}

/* --- Single-process scenarios ----------------------------------------- */

static long scaled(long n) {
  long v = (long)((double)n * scale);
  return v < 1 ? 1 : v;
}

static void check(const char *what, int rc) {
  if (rc != 0)
    die(what, rc);
}

/* Fresh-key cycles on `path`, which may already hold rows. */
static void run_cycle(const variant *v, const char *path, long n,
                      bench_meas *m) {
  void *h = v->sys->open(path, v->cfg);
  if (!h)
    die("open", -1);
  uint64_t seed = bench_seed();
  char key[BENCH_KEY_LEN];
  for (int i = 0; i < 20; i++) { /* statements prepared, pages cached */
    bench_key(&seed, key);
    check("warm-up cycle", v->sys->cycle(h, key, sizeof key));
  }
  bench_samples s;
  if (bench_samples_init(&s, (size_t)n))
    die("malloc", -1);
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    bench_key(&seed, key);
    uint64_t a = bench_now_ns();
    check("cycle", v->sys->cycle(h, key, sizeof key));
    bench_samples_add(&s, bench_now_ns() - a);
  }
  m->rate = (double)n * 1e9 / (double)(bench_now_ns() - t0);
  bench_summarise(s.ns, s.n, m);
  bench_samples_free(&s);
  v->sys->close(h);
}

/* Begins on `nkeys` keys that are completed (hit) or leased by another
 * handle (busy). */
static void run_read(const variant *v, const variant *holder, bool busy,
                     long nkeys, long n, bench_meas *m) {
  char path[600];
  db_path(path, sizeof path, busy ? "busy" : "hit");
  void *h = v->sys->open(path, v->cfg);
  void *other = busy ? holder->sys->open(path, holder->cfg) : NULL;
  char *keys = malloc((size_t)nkeys * BENCH_KEY_LEN);
  if (!h || (busy && !other) || !keys)
    die("open", -1);
  uint64_t seed = bench_seed();
  for (long i = 0; i < nkeys; i++) {
    char *k = keys + i * BENCH_KEY_LEN;
    bench_key(&seed, k);
    check("setup", busy ? holder->sys->hold(other, k, BENCH_KEY_LEN)
                        : v->sys->cycle(h, k, BENCH_KEY_LEN));
  }
  bench_samples s;
  if (bench_samples_init(&s, (size_t)n))
    die("malloc", -1);
  for (long i = 0; i < 100; i++)
    check("warm-up read",
          v->sys->read(h, keys + (i % nkeys) * BENCH_KEY_LEN, BENCH_KEY_LEN));
  uint64_t t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    const char *k =
        keys + (bench_rand(&seed) % (uint64_t)nkeys) * BENCH_KEY_LEN;
    uint64_t a = bench_now_ns();
    check("read", v->sys->read(h, k, BENCH_KEY_LEN));
    bench_samples_add(&s, bench_now_ns() - a);
  }
  m->rate = (double)n * 1e9 / (double)(bench_now_ns() - t0);
  bench_summarise(s.ns, s.n, m);
  bench_samples_free(&s);
  if (other)
    holder->sys->close(other);
  v->sys->close(h);
  free(keys);
  db_remove(path);
}

/* Rounds over `nleases` held leases; extra = CPU microseconds per round. */
static void run_heartbeat(const variant *v, long nleases, int rounds,
                          bench_meas *m) {
  char path[600];
  db_path(path, sizeof path, "hb");
  void *h = v->sys->open(path, v->cfg);
  if (!h)
    die("open", -1);
  uint64_t seed = bench_seed();
  char key[BENCH_KEY_LEN];
  for (long i = 0; i < nleases; i++) {
    bench_key(&seed, key);
    check("hold", v->sys->hold(h, key, sizeof key));
  }
  check("warm-up heartbeat", v->sys->heartbeat(h));
  bench_samples s;
  if (bench_samples_init(&s, (size_t)rounds))
    die("malloc", -1);
  uint64_t cpu0 = bench_cpu_ns(), t0 = bench_now_ns();
  for (int i = 0; i < rounds; i++) {
    uint64_t a = bench_now_ns();
    check("heartbeat", v->sys->heartbeat(h));
    bench_samples_add(&s, bench_now_ns() - a);
  }
  uint64_t wall = bench_now_ns() - t0, cpu = bench_cpu_ns() - cpu0;
  m->rate = (double)rounds * 1e9 / (double)wall;
  m->extra = (double)cpu / 1000.0 / rounds;
  bench_summarise(s.ns, s.n, m);
  bench_samples_free(&s);
  v->sys->close(h);
  db_remove(path);
}

/* --- Processes and threads -------------------------------------------- */

#define MAXW 8
#define WCAP (1u << 19)
#define HOT_KEYS 16

typedef struct shared {
  atomic_int ready;
  atomic_uint_fast64_t start, end;
  struct {
    atomic_uint_fast64_t ops, errors, last;
  } w[MAXW];
} shared;

typedef struct worker {
  shared *sh;
  uint64_t *samples; /* WCAP of this worker */
  int index;
  const bench_sys *sys;
  void *h;
  bool hot;
  const char *hot_keys;
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  shared *sh = w->sh;
  uint64_t seed = bench_seed() ^ ((uint64_t)w->index * 0x9e3779b97f4a7c15u);
  atomic_fetch_add(&sh->ready, 1);
  uint64_t start;
  while (!(start = atomic_load(&sh->start)))
    usleep(200);
  struct timespec ts = {(time_t)(start / 1000000000u),
                        (long)(start % 1000000000u)};
  clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
  uint64_t end = atomic_load(&sh->end), ops = 0, errors = 0, last = start;
  char key[BENCH_KEY_LEN];
  for (;;) {
    const char *k = key;
    if (w->hot)
      k = w->hot_keys + (bench_rand(&seed) % HOT_KEYS) * BENCH_KEY_LEN;
    else
      bench_key(&seed, key);
    uint64_t a = bench_now_ns();
    if (a >= end)
      break;
    int rc = w->hot ? w->sys->hot(w->h, k, BENCH_KEY_LEN)
                    : w->sys->cycle(w->h, k, BENCH_KEY_LEN);
    last = bench_now_ns();
    if (rc != 0) {
      if (errors++ == 0)
        fprintf(stderr, "    worker %d: error %d\n", w->index, rc);
      continue;
    }
    if (ops < WCAP)
      w->samples[ops] = last - a;
    ops++;
  }
  atomic_store(&sh->w[w->index].ops, ops);
  atomic_store(&sh->w[w->index].errors, errors);
  atomic_store(&sh->w[w->index].last, last);
  return NULL;
}

/* `procs` processes with one thread each, or one process with `threads`
 * threads on one handle. extra = errors (e.g. busy timeouts). */
static void run_parallel(const variant *v, int procs, int threads, bool hot,
                         double seconds, bench_meas *m) {
  int nw = procs > 1 ? procs : threads;
  char path[600];
  db_path(path, sizeof path, hot ? "hot" : "par");
  void *setup = v->sys->open(path, v->cfg); /* schema before anyone races */
  if (!setup)
    die("open", -1);
  char hot_keys[HOT_KEYS * BENCH_KEY_LEN];
  uint64_t hseed = 42;
  for (int i = 0; i < HOT_KEYS; i++)
    bench_key(&hseed, hot_keys + i * BENCH_KEY_LEN);
  size_t bytes = sizeof(shared) + (size_t)nw * WCAP * sizeof(uint64_t);
  shared *sh = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED)
    die("mmap", -1);
  uint64_t *samples = (uint64_t *)(sh + 1);
  worker ws[MAXW];
  pthread_t tids[MAXW];
  pid_t pids[MAXW];
  for (int i = 0; i < nw; i++)
    ws[i] = (worker){sh,      samples + (size_t)i * WCAP, i, v->sys, setup, hot,
                     hot_keys};
  if (procs > 1) {
    v->sys->close(setup);
    setup = NULL;
    for (int i = 0; i < nw; i++) {
      pids[i] = fork();
      if (pids[i] < 0)
        die("fork", -1);
      if (pids[i] == 0) {
        char own[sizeof path + 16];
        snprintf(own, sizeof own, "%s.%d", path, i);
        ws[i].h = v->sys->open(v->own_file ? own : path, v->cfg);
        if (!ws[i].h)
          _exit(1);
        worker_main(&ws[i]);
        v->sys->close(ws[i].h);
        _exit(0);
      }
    }
  } else {
    for (int i = 0; i < nw; i++)
      if (pthread_create(&tids[i], NULL, worker_main, &ws[i]) != 0)
        die("pthread_create", -1);
  }
  while (atomic_load(&sh->ready) < nw)
    usleep(500);
  uint64_t start = bench_now_ns() + 20000000u;
  atomic_store(&sh->end, start + (uint64_t)(seconds * 1e9));
  atomic_store(&sh->start, start);
  if (procs > 1) {
    for (int i = 0; i < nw; i++) {
      int status;
      waitpid(pids[i], &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("worker process", -1);
    }
  } else {
    for (int i = 0; i < nw; i++)
      pthread_join(tids[i], NULL);
    v->sys->close(setup);
  }
  uint64_t total = 0, errors = 0, last = start;
  size_t n = 0;
  for (int i = 0; i < nw; i++) {
    uint64_t ops = atomic_load(&sh->w[i].ops);
    total += ops;
    errors += atomic_load(&sh->w[i].errors);
    if (atomic_load(&sh->w[i].last) > last)
      last = atomic_load(&sh->w[i].last);
    size_t k = ops < WCAP ? (size_t)ops : WCAP;
    memmove(samples + n, samples + (size_t)i * WCAP, k * sizeof *samples);
    n += k;
  }
  m->rate = (double)total * 1e9 / (double)(last - start);
  m->extra = (double)errors;
  bench_summarise(samples, n, m);
  munmap(sh, bytes);
  db_remove(path);
  for (int i = 0; v->own_file && i < nw; i++) {
    char own[sizeof path + 16];
    snprintf(own, sizeof own, "%s.%d", path, i);
    db_remove(own);
  }
}

/* --- Memory, in a fresh process --------------------------------------- */

/* The child: one handle, then 1000 live leases; prints three RSS values. */
static int rss_child(const char *sys_name, const char *path) {
  floor_cfg fc = {0};
  idem_cfg ic = {IDEM_SYNC_NORMAL, 0, 5, false};
  bool idem = strcmp(sys_name, "libidem") == 0;
  const bench_sys *sys = idem ? &idem_sys : &floor_sys;
  long rss0 = bench_rss_kib();
  void *h = sys->open(path, idem ? (const void *)&ic : (const void *)&fc);
  if (!h)
    return 1;
  long rss1 = bench_rss_kib();
  uint64_t seed = bench_seed();
  char key[BENCH_KEY_LEN];
  for (int i = 0; i < 1000; i++) {
    bench_key(&seed, key);
    if (sys->hold(h, key, sizeof key) != 0)
      return 1;
  }
  long rss2 = bench_rss_kib();
  printf("%ld %ld %ld\n", rss0, rss1, rss2);
  fflush(stdout);
  sys->close(h);
  return 0;
}

/* extra = RSS with 1000 leases; p50 = after open; p99 = at start (KiB). */
static void run_rss(const char *sys_name, bench_meas *m) {
  char path[600];
  db_path(path, sizeof path, "rss");
  int fd[2];
  if (pipe(fd) != 0)
    die("pipe", -1);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[1], STDOUT_FILENO);
    close(fd[0]);
    close(fd[1]);
    char *argv[] = {"idem_bench", "--rss-child", (char *)sys_name, path, NULL};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  close(fd[1]);
  char buf[128] = {0};
  ssize_t got = read(fd[0], buf, sizeof buf - 1);
  close(fd[0]);
  int status;
  waitpid(pid, &status, 0);
  char *end;
  memset(m, 0, sizeof *m);
  if (got > 0) {
    m->p99 = (double)strtol(buf, &end, 10);
    m->p50 = (double)strtol(end, &end, 10);
    m->extra = (double)strtol(end, &end, 10);
  }
  db_remove(path);
}

/* --- The plan ---------------------------------------------------------- */

static const floor_cfg fl_normal = {.flags = 0},
                       fl_full = {.flags = FLOOR_FULL},
                       fl_queue = {.flags = FLOOR_QUEUE, .turn_us = 250},
                       fl_queue_strict = {.flags = FLOOR_QUEUE, .turn_us = 0},
                       fl_full_queue = {.flags = FLOOR_FULL | FLOOR_QUEUE,
                                        .turn_us = 250},
                       fl_index = {.flags = FLOOR_INDEX},
                       fl_bg = {.flags = FLOOR_BGCKPT},
                       fl_full_bg = {.flags = FLOOR_FULL | FLOOR_BGCKPT},
                       fl_history = {.flags = FLOOR_HISTORY},
                       fl_history_table = {.flags = FLOOR_HISTORY_TABLE};
static const idem_cfg id_normal = {IDEM_SYNC_NORMAL, 0, 5, false},
                      id_full = {IDEM_SYNC_FULL, 0, 5, false},
                      id_polling = {IDEM_SYNC_NORMAL, 0, 5, true},
                      id_full_polling = {IDEM_SYNC_FULL, 0, 5, true},
                      id_hot = {IDEM_SYNC_NORMAL, 0, 0, false},
                      id_manual = {IDEM_SYNC_NORMAL, -1, 5, false};

/* The order of the variants in rep r: flipped every other rep. */
static void order(int nv, int r, int out[MAXVAR]) {
  for (int k = 0; k < nv; k++)
    out[k] = r % 2 ? nv - 1 - k : k;
}

static void bench_cycles(void) {
  /* The floor with libidem's attempt history, in the row and in a table of
   * its own, prices the history and where it is kept. */
  const variant normal[] = {
      {"floor", &floor_sys, &fl_normal, false},
      {"floor+index", &floor_sys, &fl_index, false},
      {"floor+bg-checkpoint", &floor_sys, &fl_bg, false},
      {"floor+history", &floor_sys, &fl_history, false},
      {"floor+history table", &floor_sys, &fl_history_table, false},
      {"libidem", &idem_sys, &id_normal, false}};
  const int nn = sizeof normal / sizeof *normal;
  const variant full[] = {
      {"floor", &floor_sys, &fl_full, false},
      {"floor+bg-checkpoint", &floor_sys, &fl_full_bg, false},
      {"libidem", &idem_sys, &id_full, false}};
  entry *e =
      new_entry("cycle_normal", "Fresh-key cycle (begin + complete), NORMAL",
                "cycles/s", normal, nn);
  long n = scaled(6000);
  for (int r = 0; r < reps; r++) {
    int ord[MAXVAR];
    order(nn, r, ord);
    for (int k = 0; k < nn; k++) {
      char path[600];
      db_path(path, sizeof path, "cycle");
      run_cycle(&normal[ord[k]], path, n, &e->m[ord[k]][r]);
      db_remove(path);
    }
  }
  e = new_entry("cycle_full", "Fresh-key cycle (begin + complete), FULL",
                "cycles/s", full, 3);
  n = scaled(300);
  for (int r = 0; r < reps; r++) {
    int ord[MAXVAR];
    order(3, r, ord);
    for (int k = 0; k < 3; k++) {
      char path[600];
      db_path(path, sizeof path, "cyclef");
      run_cycle(&full[ord[k]], path, n, &e->m[ord[k]][r]);
      db_remove(path);
    }
  }
}

static void bench_reads(void) {
  /* A history in the row makes the rows, and so the b-tree, larger. */
  const variant v[] = {{"floor", &floor_sys, &fl_normal, false},
                       {"floor+history", &floor_sys, &fl_history, false},
                       {"libidem", &idem_sys, &id_normal, false}};
  const variant holder[] = {{"floor", &floor_sys, &fl_normal, false},
                            {"floor+history", &floor_sys, &fl_history, false},
                            {"libidem", &idem_sys, &id_manual, false}};
  const int nv = sizeof v / sizeof *v;
  entry *hit = new_entry("hit", "Cached hit (begin on a completed key)",
                         "answers/s", v, nv);
  entry *busy =
      new_entry("busy", "Busy answer (begin on a key leased elsewhere)",
                "answers/s", v, nv);
  for (int r = 0; r < reps; r++) {
    int ord[MAXVAR];
    order(nv, r, ord);
    for (int k = 0; k < nv; k++) {
      int i = ord[k];
      run_read(&v[i], &holder[i], false, 1000, scaled(40000), &hit->m[i][r]);
      run_read(&v[i], &holder[i], true, 1000, scaled(40000), &busy->m[i][r]);
    }
  }
}

static void bench_contention(void) {
  /* Processes on disjoint keys also run the floor in libidem's writers'
   * queue, with its turns and with a turn per transaction, to tell what
   * the queue gives from what libidem's cycle costs; and the floor with a
   * database file per process, which waits for no lock at all: its tail is
   * what the CPU scheduler alone costs. */
  const variant disj[] = {
      {"floor", &floor_sys, &fl_normal, false},
      {"libidem", &idem_sys, &id_normal, false},
      {"floor+queue", &floor_sys, &fl_queue, false},
      {"floor+queue, a turn per transaction", &floor_sys, &fl_queue_strict,
       false},
      {"floor, a file each", &floor_sys, &fl_normal, true},
      {"libidem, polling (no queue)", &idem_sys, &id_polling, false}};
  const variant hot[] = {{"floor", &floor_sys, &fl_normal, false},
                         {"libidem", &idem_sys, &id_hot, false}};
  const int ns[] = {1, 2, 4, 8};
  double secs = 0.5 * scale;
  /* A repetition runs every count, so that the aggregate target compares
   * 8 processes with 1 process of the same repetition, seconds apart, not
   * minutes: the machine's speed drifts more than that ratio. */
  entry *grid[2][2][4];
  for (int kind = 0; kind < 2; kind++)
    for (int h = 0; h < 2; h++)
      for (int j = 0; j < 4; j++) {
        char id[64], title[128];
        snprintf(id, sizeof id, "%s_%s_%d", kind ? "threads" : "procs",
                 h ? "hot" : "disjoint", ns[j]);
        snprintf(title, sizeof title, "%d %s, %s, NORMAL", ns[j],
                 kind ? (ns[j] > 1 ? "threads on one handle" : "thread")
                      : (ns[j] > 1 ? "processes" : "process"),
                 h ? "16 hot keys (claim + release)"
                   : "disjoint keys (begin + complete)");
        int nv = !h && !kind ? (ns[j] > 1 ? 6 : 3) : 2;
        grid[kind][h][j] =
            new_entry(id, title, h ? "ops/s" : "cycles/s", h ? hot : disj, nv);
      }
  for (int r = 0; r < reps; r++)
    for (int kind = 0; kind < 2; kind++)
      for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++) {
          entry *e = grid[kind][h][j];
          const variant *v = h ? hot : disj;
          int ord[MAXVAR];
          order(e->nvar, r, ord);
          for (int k = 0; k < e->nvar; k++)
            run_parallel(&v[ord[k]], kind ? 1 : ns[j], kind ? ns[j] : 1, h,
                         secs, &e->m[ord[k]][r]);
        }
  const variant full[] = {
      {"floor", &floor_sys, &fl_full, false},
      {"libidem", &idem_sys, &id_full, false},
      {"floor+queue", &floor_sys, &fl_full_queue, false},
      {"libidem, polling (no queue)", &idem_sys, &id_full_polling, false}};
  const int fp[] = {1, 8};
  entry *fe[2];
  for (int j = 0; j < 2; j++) {
    char id[64], title[128];
    snprintf(id, sizeof id, "procs_disjoint_%d_full", fp[j]);
    snprintf(title, sizeof title, "%d process%s, disjoint keys, FULL", fp[j],
             fp[j] > 1 ? "es" : "");
    fe[j] = new_entry(id, title, "cycles/s", full, fp[j] > 1 ? 4 : 3);
  }
  for (int r = 0; r < reps; r++)
    for (int j = 0; j < 2; j++) {
      int ord[MAXVAR];
      order(fe[j]->nvar, r, ord);
      for (int k = 0; k < fe[j]->nvar; k++)
        run_parallel(&full[ord[k]], fp[j], 1, false, 1.0 * scale,
                     &fe[j]->m[ord[k]][r]);
    }
}

static void bench_heartbeat(void) {
  const variant v[] = {{"floor", &floor_sys, &fl_normal, false},
                       {"libidem", &idem_sys, &id_manual, false}};
  const long ns[] = {10, 1000, 10000};
  const int rounds[] = {50, 20, 5};
  for (int j = 0; j < 3; j++) {
    char id[64], title[128];
    snprintf(id, sizeof id, "heartbeat_%ld", ns[j]);
    snprintf(title, sizeof title, "Heartbeat round, %ld live leases", ns[j]);
    entry *e = new_entry(id, title, "rounds/s", v, 2);
    for (int r = 0; r < reps; r++) {
      int ord[MAXVAR];
      order(2, r, ord);
      for (int k = 0; k < 2; k++)
        run_heartbeat(&v[ord[k]], ns[j], rounds[j], &e->m[ord[k]][r]);
    }
  }
}

static void bench_size(void) {
  const variant v[] = {{"floor", &floor_sys, &fl_normal, false},
                       {"libidem", &idem_sys, &id_normal, false}};
  const long rows[] = {0, 100000, 1000000};
  for (int j = 0; j < 3; j++) {
    char paths[2][600];
    for (int i = 0; i < 2; i++) {
      db_path(paths[i], sizeof paths[i], "size");
      void *h = v[i].sys->open(paths[i], v[i].cfg); /* the schema */
      if (!h)
        die("open", -1);
      v[i].sys->close(h);
      uint64_t t0 = bench_now_ns();
      long nrows = (long)((double)rows[j] * (scale < 1 ? scale : 1));
      if (nrows && bench_fill(paths[i], nrows) != 0)
        die("fill", -1);
      fprintf(stderr, "    filled %ld rows in %.1f s\n", nrows,
              (double)(bench_now_ns() - t0) / 1e9);
    }
    char id[64], title[128];
    snprintf(id, sizeof id, "size_%ld", rows[j]);
    snprintf(title, sizeof title, "Fresh-key cycle, %ld existing rows, NORMAL",
             rows[j]);
    entry *e = new_entry(id, title, "cycles/s", v, 2);
    for (int r = 0; r < reps; r++) {
      int ord[MAXVAR];
      order(2, r, ord);
      for (int k = 0; k < 2; k++)
        run_cycle(&v[ord[k]], paths[ord[k]], scaled(3000), &e->m[ord[k]][r]);
    }
    for (int i = 0; i < 2; i++)
      db_remove(paths[i]);
  }
}

static void bench_memory(void) {
  const variant v[] = {{"floor", &floor_sys, &fl_normal, false},
                       {"libidem", &idem_sys, &id_normal, false}};
  entry *e = new_entry("rss", "Resident memory: one handle, 1000 live leases",
                       "KiB", v, 2);
  for (int r = 0; r < reps; r++)
    for (int i = 0; i < 2; i++)
      run_rss(v[i].name, &e->m[i][r]);
}

/* --- Machine ----------------------------------------------------------- */

typedef struct machine {
  long ncpu;
  char cpu[128], kernel[128], fs[32];
} machine;

static void machine_of(machine *mc) {
  mc->ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  snprintf(mc->cpu, sizeof mc->cpu, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[256];
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "model name", 10) == 0) {
      char *c = strchr(line, ':');
      if (c) {
        c += 1 + (c[1] == ' ');
        c[strcspn(c, "\n")] = '\0';
        snprintf(mc->cpu, sizeof mc->cpu, "%s", c);
      }
      break;
    }
  if (f)
    fclose(f);
  struct utsname u;
  snprintf(mc->kernel, sizeof mc->kernel, "%s",
           uname(&u) == 0 ? u.release : "unknown");
  struct statfs sf;
  const char *fs = "unknown";
  if (statfs(tmpdir, &sf) == 0) {
    switch ((unsigned long)sf.f_type) {
    case 0xEF53:
      fs = "ext4";
      break;
    case 0x01021994:
      fs = "tmpfs";
      break;
    case 0x58465342:
      fs = "xfs";
      break;
    case 0x9123683E:
      fs = "btrfs";
      break;
    case 0x794c7630:
      fs = "overlayfs";
      break;
    case 0x2FC12FC1:
      fs = "zfs";
      break;
    default:
      break;
    }
  }
  snprintf(mc->fs, sizeof mc->fs, "%s", fs);
}

/* --- Output ------------------------------------------------------------ */

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fputc('\\', f);
    if ((unsigned char)*s >= 0x20)
      fputc(*s, f);
  }
  fputc('"', f);
}

static const char *const field_name[] = {"rate",    "p50_us", "p99_us",
                                         "p999_us", "max_us", "extra"};

static void write_json(const char *dir, const machine *mc, long lib_size) {
  char path[600];
  snprintf(path, sizeof path, "%s/results.json", dir);
  FILE *f = fopen(path, "w");
  if (!f)
    die("write results.json", -1);
  fprintf(f, "{\n  \"machine\": {\"nproc\": %ld, \"cpu\": ", mc->ncpu);
  json_str(f, mc->cpu);
  fprintf(f, ", \"kernel\": ");
  json_str(f, mc->kernel);
  fprintf(f, ", \"sqlite\": ");
  json_str(f, sqlite3_libversion());
  fprintf(f, ", \"tmp_fs\": ");
  json_str(f, mc->fs);
  fprintf(f, "},\n  \"libidem\": ");
  json_str(f, idem_version());
  fprintf(f, ",\n  \"label\": ");
  json_str(f, label);
  fprintf(f, ",\n  \"reps\": %d,\n  \"scale\": %g,\n", reps, scale);
  fprintf(f, "  \"stripped_library_bytes\": %ld,\n  \"benchmarks\": [\n",
          lib_size);
  for (int i = 0; i < nentries; i++) {
    const entry *e = &entries[i];
    fprintf(f, "    {\"id\": \"%s\", \"title\": ", e->id);
    json_str(f, e->title);
    fprintf(f, ", \"unit\": \"%s\", \"variants\": [\n", e->unit);
    for (int v = 0; v < e->nvar; v++) {
      fprintf(f, "      {\"name\": \"%s\", \"median\": {", e->var[v]);
      for (int fl = 0; fl <= F_EXTRA; fl++)
        fprintf(f, "%s\"%s\": %.3f", fl ? ", " : "", field_name[fl],
                med(e, v, (field)fl));
      ratio rr = ratio_of(e, v, e, 0, F_RATE);
      fprintf(f,
              "}, \"ratio_to_floor\": {\"median\": %.4f, \"min\": %.4f, "
              "\"max\": %.4f}, \"rate_spread\": %.4f, \"runs\": [",
              rr.med, rr.min, rr.max, spread(e, v, F_RATE));
      for (int r = 0; r < reps; r++) {
        fprintf(f, "%s{", r ? ", " : "");
        for (int fl = 0; fl <= F_EXTRA; fl++)
          fprintf(f, "%s\"%s\": %.3f", fl ? ", " : "", field_name[fl],
                  get(&e->m[v][r], (field)fl));
        fputc('}', f);
      }
      fprintf(f, "]}%s\n", v + 1 < e->nvar ? "," : "");
    }
    fprintf(f, "    ]}%s\n", i + 1 < nentries ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  fclose(f);
}

static void fmt_us(char *out, size_t size, double us) {
  if (us >= 10000)
    snprintf(out, size, "%.1f ms", us / 1000);
  else if (us >= 1000)
    snprintf(out, size, "%.2f ms", us / 1000);
  else
    snprintf(out, size, "%.1f µs", us);
}

/* What libidem's attempt history costs the floor, where it is kept: the
 * bound it puts on the cycle and the hit. */
static void write_history_cost(FILE *f) {
  entry *c = find_entry("cycle_normal"), *h = find_entry("hit");
  int row = c ? find_var(c, "floor+history") : -1;
  int table = c ? find_var(c, "floor+history table") : -1;
  int hrow = h ? find_var(h, "floor+history") : -1;
  if (row < 0 || table < 0 || hrow < 0)
    return;
  ratio cr = ratio_of(c, row, c, 0, F_RATE);
  ratio ct = ratio_of(c, table, c, 0, F_RATE);
  ratio hr = ratio_of(h, hrow, h, 0, F_RATE);
  ratio hl = ratio_of(h, h->nvar - 1, h, hrow, F_RATE);
  fprintf(f,
          "\nlibidem's attempt history, written into the floor's rows, "
          "costs the floor's cycle %.2f× [%.2f–%.2f] and its hit %.2f× "
          "[%.2f–%.2f]; kept in a table of its own, it costs the cycle "
          "%.2f× [%.2f–%.2f]. libidem's hit is %.2f× [%.2f–%.2f] the hit "
          "of the floor with the history in its rows.\n",
          cr.med, cr.min, cr.max, hr.med, hr.min, hr.max, ct.med, ct.min,
          ct.max, hl.med, hl.min, hl.max);
}

/* A target line: what, the figure, the bound, met or not. */
static void target(FILE *f, const char *what, const char *figure, bool met) {
  fprintf(f, "| %s | %s | %s |\n", what, figure, met ? "met" : "**not met**");
}

static void write_targets(FILE *f) {
  char fig[256];
  fprintf(f,
          "\n## Targets\n\n| target | measured (median of %d runs, "
          "[min–max] of the per-run ratios) | |\n|---|---|---|\n",
          reps);
  const char *cyc[2] = {"cycle_normal", "cycle_full"};
  for (int i = 0; i < 2; i++) {
    entry *e = find_entry(cyc[i]);
    if (!e)
      continue;
    ratio r = ratio_of(e, e->nvar - 1, e, 0, F_RATE);
    snprintf(fig, sizeof fig, "%.2f× [%.2f–%.2f]", r.med, r.min, r.max);
    char what[128];
    snprintf(what, sizeof what, "fresh-key cycle ≥ 0.85× floor, %s",
             i ? "FULL" : "NORMAL");
    target(f, what, fig, r.med >= 0.85);
  }
  entry *e = find_entry("hit");
  if (e) {
    ratio r = ratio_of(e, e->nvar - 1, e, 0, F_RATE);
    snprintf(fig, sizeof fig, "%.2f× [%.2f–%.2f]", r.med, r.min, r.max);
    target(f, "cached hit ≥ 0.9× point-read floor", fig, r.med >= 0.9);
  }
  entry *p1 = find_entry("procs_disjoint_1"),
        *p8 = find_entry("procs_disjoint_8");
  if (p1 && p8) {
    ratio r = ratio_of(p8, 1, p1, 1, F_RATE);
    snprintf(fig, sizeof fig, "%.2f× [%.2f–%.2f]", r.med, r.min, r.max);
    target(f, "8 processes, disjoint: aggregate ≥ 0.8× 1 process", fig,
           r.med >= 0.8);
    char a[32], b[32];
    fmt_us(a, sizeof a, med(p8, 1, F_P99));
    fmt_us(b, sizeof b, med(p8, 0, F_P99));
    snprintf(fig, sizeof fig, "libidem %s, floor %s", a, b);
    target(f, "8 processes: p99 below the floor's (SQLite's busy handler)", fig,
           med(p8, 1, F_P99) < med(p8, 0, F_P99));
  }
  e = find_entry("cycle_normal");
  if (e) {
    char a[32], b[32];
    fmt_us(a, sizeof a, med(e, e->nvar - 1, F_P999));
    fmt_us(b, sizeof b, med(e, 0, F_P999));
    snprintf(fig, sizeof fig, "libidem %s, floor %s", a, b);
    target(f, "p99.9 of the single-process cycle ≤ 1 ms (NORMAL)", fig,
           med(e, e->nvar - 1, F_P999) <= 1000);
  }
  const char *worst[2] = {"procs_disjoint_8", "procs_disjoint_8_full"};
  for (int i = 0; i < 2; i++) {
    e = find_entry(worst[i]);
    if (!e)
      continue;
    double hi = 0, hf = 0;
    for (int r = 0; r < reps; r++) {
      hi = fmax(hi, e->m[1][r].max);
      hf = fmax(hf, e->m[0][r].max);
    }
    char a[32], b[32], c[32];
    fmt_us(a, sizeof a, med(e, 1, F_MAX));
    fmt_us(b, sizeof b, hi);
    fmt_us(c, sizeof c, hf);
    int n = snprintf(fig, sizeof fig,
                     "libidem median %s, worst %s (floor worst %s", a, b, c);
    if (e->nvar == 6) {
      /* What the scheduler alone costs: no process waits for another. */
      fmt_us(a, sizeof a, med(e, 4, F_MAX));
      n += snprintf(fig + n, sizeof fig - (size_t)n,
                    "; a file each, no lock shared: median %s", a);
    }
    snprintf(fig + n, sizeof fig - (size_t)n, ")");
    char what[128];
    snprintf(what, sizeof what, "worst case at 8 processes ≤ 25 ms, %s",
             i ? "FULL" : "NORMAL");
    target(f, what, fig, hi <= 25000);
  }
  e = find_entry("heartbeat_10000");
  if (e) {
    char a[32];
    fmt_us(a, sizeof a, med(e, 1, F_P50));
    snprintf(fig, sizeof fig, "%s", a);
    target(f, "heartbeat round over 10,000 leases < 50 ms", fig,
           med(e, 1, F_P50) < 50000);
  }
  entry *s0 = find_entry("size_0"), *s1 = find_entry("size_1000000");
  if (s0 && s1) {
    ratio r = ratio_of(s1, 1, s0, 1, F_RATE);
    ratio rf = ratio_of(s1, 0, s0, 0, F_RATE);
    snprintf(fig, sizeof fig, "%.2f× [%.2f–%.2f] (floor %.2f×)", r.med, r.min,
             r.max, rf.med);
    target(f, "cycle at 1,000,000 rows ≥ 0.8× empty", fig, r.med >= 0.8);
  }
  e = find_entry("cycle_normal");
  int v = e ? find_var(e, "floor+index") : -1;
  if (v >= 0) {
    ratio r = ratio_of(e, v, e, 0, F_RATE);
    fprintf(f,
            "\nThe partial expiry index costs the floor %.0f%% of its cycle "
            "rate (floor+index / floor = %.2f× [%.2f–%.2f]).\n",
            (1 - r.med) * 100, r.med, r.min, r.max);
  }
  write_history_cost(f);
}

static void write_md(const char *dir, const machine *mc, long lib_size) {
  char path[600];
  snprintf(path, sizeof path, "%s/results.md", dir);
  FILE *f = fopen(path, "w");
  if (!f)
    die("write results.md", -1);
  fprintf(f,
          "# Benchmark results\n\n%s (version %s), SQLite %s; %ld CPUs (%s), "
          "Linux %s, temp dir on %s. Medians of %d runs; the ratio is "
          "libidem (or the variant) over the floor measured in the same "
          "run, median [min–max] over the runs; spread is (max − min) / "
          "median of the rate.\n\n",
          label, idem_version(), sqlite3_libversion(), mc->ncpu, mc->cpu,
          mc->kernel, mc->fs, reps);
  fprintf(f, "| benchmark | system | rate | p50 | p99 | p99.9 | max | "
             "ratio to floor | spread |\n"
             "|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int i = 0; i < nentries; i++) {
    const entry *e = &entries[i];
    if (strcmp(e->id, "rss") == 0)
      continue;
    for (int v = 0; v < e->nvar; v++) {
      char p[4][32];
      field fs[4] = {F_P50, F_P99, F_P999, F_MAX};
      for (int j = 0; j < 4; j++)
        fmt_us(p[j], sizeof p[j], med(e, v, fs[j]));
      ratio r = ratio_of(e, v, e, 0, F_RATE);
      char rs[64] = "—";
      if (v > 0)
        snprintf(rs, sizeof rs, "%.2f× [%.2f–%.2f]", r.med, r.min, r.max);
      fprintf(f, "| %s | %s | %.0f %s | %s | %s | %s | %s | %s | %.0f%% |\n",
              v == 0 ? e->title : "", e->var[v], med(e, v, F_RATE), e->unit,
              p[0], p[1], p[2], p[3], rs, 100 * spread(e, v, F_RATE));
    }
  }
  fprintf(f, "\nHeartbeat CPU (user + system, per round; per minute at the "
             "default period of ttl/2 = 30 s, i.e. 2 rounds a minute, and at "
             "a 1 s period):\n\n| live leases | system | round p50 | CPU per "
             "round | CPU per minute (30 s) | CPU per minute (1 s) |\n"
             "|---:|---|---:|---:|---:|---:|\n");
  const long hb[] = {10, 1000, 10000};
  for (int j = 0; j < 3; j++) {
    char id[64];
    snprintf(id, sizeof id, "heartbeat_%ld", hb[j]);
    entry *e = find_entry(id);
    if (!e)
      continue;
    for (int v = 0; v < e->nvar; v++) {
      char a[32], b[32], c[32], d[32];
      double cpu = med(e, v, F_EXTRA);
      fmt_us(a, sizeof a, med(e, v, F_P50));
      fmt_us(b, sizeof b, cpu);
      fmt_us(c, sizeof c, cpu * 2);
      fmt_us(d, sizeof d, cpu * 60);
      fprintf(f, "| %ld | %s | %s | %s | %s | %s |\n", hb[j], e->var[v], a, b,
              c, d);
    }
  }
  entry *e = find_entry("rss");
  if (e) {
    fprintf(f, "\nMemory (VmRSS of a fresh process, KiB):\n\n| system | at "
               "start | one handle open | + 1000 live leases |\n"
               "|---|---:|---:|---:|\n");
    for (int v = 0; v < e->nvar; v++)
      fprintf(f, "| %s | %.0f | %.0f | %.0f |\n", e->var[v], med(e, v, F_P99),
              med(e, v, F_P50), med(e, v, F_EXTRA));
  }
  if (lib_size > 0)
    fprintf(f, "\nStripped shared library: %ld bytes (%.1f KiB).\n", lib_size,
            (double)lib_size / 1024);
  write_targets(f);
  fclose(f);
}

/* Plot data: one file per figure, one line per x value. */
static void write_plot_data(const char *dir) {
  char path[600];
  const char *kinds[4] = {"procs_disjoint", "threads_disjoint", "procs_hot",
                          "threads_hot"};
  for (int k = 0; k < 4; k++) {
    snprintf(path, sizeof path, "%s/%s.dat", dir, kinds[k]);
    FILE *f = fopen(path, "w");
    if (!f)
      continue;
    fprintf(f, "# n floor_rate libidem_rate floor_p99_us libidem_p99_us "
               "floor_max_us libidem_max_us [queue_rate queue_p99_us "
               "queue_max_us]\n");
    for (int n = 1; n <= 8; n *= 2) {
      char id[64];
      snprintf(id, sizeof id, "%s_%d", kinds[k], n);
      entry *e = find_entry(id);
      if (!e)
        continue;
      fprintf(f, "%d %.1f %.1f %.1f %.1f %.1f %.1f", n, med(e, 0, F_RATE),
              med(e, 1, F_RATE), med(e, 0, F_P99), med(e, 1, F_P99),
              med(e, 0, F_MAX), med(e, 1, F_MAX));
      if (e->nvar > 2)
        fprintf(f, " %.1f %.1f %.1f", med(e, 2, F_RATE), med(e, 2, F_P99),
                med(e, 2, F_MAX));
      fputc('\n', f);
    }
    fclose(f);
  }
  snprintf(path, sizeof path, "%s/heartbeat.dat", dir);
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "# leases floor_round_us libidem_round_us floor_cpu_us "
               "libidem_cpu_us\n");
    const long hb[] = {10, 1000, 10000};
    for (int j = 0; j < 3; j++) {
      char id[64];
      snprintf(id, sizeof id, "heartbeat_%ld", hb[j]);
      entry *e = find_entry(id);
      if (e)
        fprintf(f, "%ld %.1f %.1f %.1f %.1f\n", hb[j], med(e, 0, F_P50),
                med(e, 1, F_P50), med(e, 0, F_EXTRA), med(e, 1, F_EXTRA));
    }
    fclose(f);
  }
  snprintf(path, sizeof path, "%s/size.dat", dir);
  f = fopen(path, "w");
  if (f) {
    fprintf(f, "# rows floor_rate libidem_rate floor_p99_us libidem_p99_us\n");
    const long rows[] = {0, 100000, 1000000};
    for (int j = 0; j < 3; j++) {
      char id[64];
      snprintf(id, sizeof id, "size_%ld", rows[j]);
      entry *e = find_entry(id);
      if (e)
        fprintf(f, "%ld %.1f %.1f %.1f %.1f\n", rows[j], med(e, 0, F_RATE),
                med(e, 1, F_RATE), med(e, 0, F_P99), med(e, 1, F_P99));
    }
    fclose(f);
  }
}

/* --- Main -------------------------------------------------------------- */

static void usage(void) {
  fprintf(stderr,
          "usage: idem_bench --out DIR [--reps N] [--scale X] [--lib-size B]"
          " [--label TEXT] [--only LIST]\n"
          "       idem_bench --profile floor|libidem N\n"
          "       idem_bench --wal-growth floor|libidem SECONDS\n"
          "       idem_bench --procs floor|libidem N SECONDS\n"
          "  LIST: comma-separated among cycle,read,contention,heartbeat,"
          "size,memory\n");
  exit(2);
}

static bool wanted(const char *only, const char *name) {
  if (!only)
    return true;
  size_t n = strlen(name);
  for (const char *p = only; (p = strstr(p, name)); p += n)
    if ((p == only || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
      return true;
  return false;
}

static void cleanup_tmp(void) {
  if (tmpdir[0])
    rmdir(tmpdir);
}

/* The floor or libidem, as named on the command line, under NORMAL. */
static variant normal_variant(const char *sys_name) {
  bool idem = strcmp(sys_name, "libidem") == 0;
  return (variant){sys_name, idem ? &idem_sys : &floor_sys,
                   idem ? (const void *)&id_normal : (const void *)&fl_normal,
                   false};
}

/* For a profiler: n fresh-key cycles and n hits of one system, NORMAL. */
static int profile(const char *sys_name, long n) {
  const variant v = normal_variant(sys_name);
  char path[600];
  db_path(path, sizeof path, "profile");
  bench_meas m;
  run_cycle(&v, path, n, &m);
  fprintf(stderr, "%s: %.0f cycles/s\n", sys_name, m.rate);
  db_remove(path);
  run_read(&v, &v, false, 1000, n, &m);
  fprintf(stderr, "%s: %.0f hits/s\n", sys_name, m.rate);
  return 0;
}

/* One process under FULL for secs seconds: the cycle rate of every 250 ms
 * and the WAL's size then. While the WAL file grows, each commit's sync
 * must also record its new size (benchmarks.md, finding 15). */
static int wal_growth(const char *sys_name, double secs) {
  bool idem = strcmp(sys_name, "libidem") == 0;
  const bench_sys *sys = idem ? &idem_sys : &floor_sys;
  char path[600], wal[608];
  db_path(path, sizeof path, "growth");
  snprintf(wal, sizeof wal, "%s-wal", path);
  void *h =
      sys->open(path, idem ? (const void *)&id_full : (const void *)&fl_full);
  if (!h)
    die("open", -1);
  uint64_t seed = bench_seed();
  uint64_t start = bench_now_ns(), from = start;
  long n = 0;
  printf("# %s, FULL: seconds cycles_per_s wal_frames\n", sys_name);
  for (;;) {
    char key[BENCH_KEY_LEN];
    bench_key(&seed, key);
    int rc = sys->cycle(h, key, sizeof key);
    if (rc != 0)
      die("cycle", rc);
    n++;
    uint64_t now = bench_now_ns();
    if (now - from < 250000000u)
      continue;
    struct stat sb;
    long frames = stat(wal, &sb) == 0 ? (long)(sb.st_size / (4096 + 24)) : 0;
    printf("%.2f %.0f %ld\n", (double)(now - start) / 1e9,
           (double)n * 1e9 / (double)(now - from), frames);
    n = 0;
    from = now;
    if ((double)(now - start) >= secs * 1e9)
      break;
  }
  sys->close(h);
  db_remove(path);
  return 0;
}

/* One run of `procs` processes on disjoint keys, NORMAL, for secs seconds:
 * one line of rate and latencies (µs), for a script or a profiler. */
static int one_parallel(const char *sys_name, int procs, double secs) {
  const variant v = normal_variant(sys_name);
  if (procs < 1 || procs > MAXW || !(secs > 0))
    usage();
  bench_meas m;
  run_parallel(&v, procs, 1, false, secs, &m);
  printf("%s procs=%d rate=%.0f p50=%.1f p99=%.1f max=%.1f\n", sys_name, procs,
         m.rate, m.p50, m.p99, m.max);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--rss-child") == 0)
    return rss_child(argv[2], argv[3]);
  bool prof = argc == 4 && strcmp(argv[1], "--profile") == 0;
  bool growth = argc == 4 && strcmp(argv[1], "--wal-growth") == 0;
  bool procs = argc == 5 && strcmp(argv[1], "--procs") == 0;
  if (prof || growth || procs) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/idem-bench.XXXXXX",
             t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir))
      die("mkdtemp", -1);
    atexit(cleanup_tmp);
    if (procs)
      return one_parallel(argv[2], (int)strtol(argv[3], NULL, 10),
                          strtod(argv[4], NULL));
    return prof ? profile(argv[2], strtol(argv[3], NULL, 10))
                : wal_growth(argv[2], strtod(argv[3], NULL));
  }
  const char *out = NULL, *only = NULL;
  long lib_size = 0;
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc)
      usage();
    char *end;
    if (strcmp(argv[i], "--out") == 0)
      out = argv[++i];
    else if (strcmp(argv[i], "--label") == 0)
      label = argv[++i];
    else if (strcmp(argv[i], "--only") == 0)
      only = argv[++i];
    else if (strcmp(argv[i], "--reps") == 0) {
      reps = (int)strtol(argv[++i], &end, 10);
      if (*end || reps < 1 || reps > MAXREP)
        usage();
    } else if (strcmp(argv[i], "--scale") == 0) {
      scale = strtod(argv[++i], &end);
      if (*end || scale <= 0)
        usage();
    } else if (strcmp(argv[i], "--lib-size") == 0) {
      lib_size = strtol(argv[++i], &end, 10);
      if (*end)
        usage();
    } else {
      usage();
    }
  }
  if (!out)
    usage();
  const char *t = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/idem-bench.XXXXXX", t && *t ? t : "/tmp");
  if (!mkdtemp(tmpdir))
    die("mkdtemp", -1);
  atexit(cleanup_tmp);
  machine mc;
  machine_of(&mc);
  fprintf(stderr, "idem_bench: %d runs, scale %g, databases in %s (%s)\n", reps,
          scale, tmpdir, mc.fs);
  uint64_t t0 = bench_now_ns();
  if (wanted(only, "cycle"))
    bench_cycles();
  if (wanted(only, "read"))
    bench_reads();
  if (wanted(only, "contention"))
    bench_contention();
  if (wanted(only, "heartbeat"))
    bench_heartbeat();
  if (wanted(only, "size"))
    bench_size();
  if (wanted(only, "memory"))
    bench_memory();
  write_json(out, &mc, lib_size);
  write_md(out, &mc, lib_size);
  write_plot_data(out);
  fprintf(stderr, "idem_bench: done in %.0f s\n",
          (double)(bench_now_ns() - t0) / 1e9);
  return 0;
}
