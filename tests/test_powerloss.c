/* SPDX-License-Identifier: MIT */
/*
 * test_powerloss.c - power cuts and crashes under the library.
 *
 * The "idemfault" shim (faultvfs.h) keeps, for every file, its content as
 * of its last sync. Cutting the power freezes the files; the synced images
 * are then written to a new directory and opened there, as a machine
 * would find its disk after the power came back. The real files, with
 * everything written but not necessarily synced, are what a crash of the
 * process leaves.
 *
 * What idem.h promises: under IDEM_SYNC_FULL every answer is on stable
 * storage before it is returned, so no acknowledged completion is ever
 * lost; under IDEM_SYNC_NORMAL a power loss may undo the last
 * transactions, and a completion so undone leaves the key claimable again,
 * never half-written. The workload test measures how much NORMAL loses.
 *
 * The seed of the cut points is printed; IDEM_SEED=<n> replays a run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "faultvfs.h"
#include "testutil.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

static tu_fx *fx_of(void **state) {
  return *state;
}

/* --- Helpers -------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng(void) {
  /* xorshift64*: small, and the same sequence on every platform. */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * UINT64_C(2685821657736338717);
}

static uint64_t seed_from_env(void) {
  const char *s = getenv("IDEM_SEED");
  uint64_t seed = s && *s ? strtoull(s, NULL, 10) : UINT64_C(20240611);
  return seed ? seed : 1;
}

static idem_db *open_shim(tu_fx *fx, int synchronous) {
  char *uri = fv_uri(fx->path);
  assert_non_null(uri);
  idem_options o = fx->opts;
  o.synchronous = synchronous;
  idem_db *db = NULL;
  int rc = idem_open(&db, uri, &o);
  if (rc != IDEM_OK)
    fail_msg("open %s: %s: %s", uri, idem_errstr(rc), idem_errmsg(db));
  free(uri);
  return db;
}

/* Saves what the cut left (synced images or written files) to a new
 * directory; returns its database path. */
static char *save_to_new_dir(int what, char **dir_out) {
  char *dir = tu_tmpdir();
  assert_non_null(dir);
  if (fv_save(dir, what) < 1)
    fail_msg("saving the frozen files into %s failed", dir);
  *dir_out = dir;
  return tu_path(dir, "idem.db");
}

static void result_of(int key, char *buf, size_t size) {
  /* Long enough to span more than one write of a page. */
  snprintf(buf, size, "result-%d-%0200d", key, key);
}

static void key_of(int key, char *buf, size_t size) {
  snprintf(buf, size, "key-%04d", key);
}

/* --- The workload --------------------------------------------------------- */

#define KEYS 200
#define CUTS 20

typedef struct tally {
  int acked;         /* completions answered IDEM_OK */
  int lost;          /* of those, undone by a power cut */
  int lost_pending;  /* ... leaving the key pending */
  int lost_absent;   /* ... leaving no row (the claim was undone too) */
  int fences_reused; /* claims that got a fence handed out before */
  int exposed;       /* completed keys acknowledged when a cut came */
  int worst;         /* most completions one cut undid */
  int cuts;
} tally;

typedef struct workload {
  tu_fx *fx;
  int synchronous;
  idem_db *db;
  int acked[KEYS];      /* completion acknowledged since the last check */
  uint64_t fence[KEYS]; /* highest fence a claim was answered with */
  tally t;
} workload;

/* Claims and completes `key`. Returns 0, or -1 when the power went off
 * under the calls (the key's outcome is then unknown). */
static int run_key(workload *w, int key) {
  char k[32], res[256];
  key_of(key, k, sizeof k);
  result_of(key, res, sizeof res);
  idem_answer a = IDEM_ANSWER_INIT;
  int rc = tu_begin(w->db, k, &a);
  if (rc != IDEM_CLAIMED) {
    if (!fv_fired())
      fail_msg("begin %s answered %s", k, idem_errstr(rc));
    idem_answer_clear(&a);
    return -1;
  }
  if (a.fence <= w->fence[key]) {
    if (w->synchronous == IDEM_SYNC_FULL)
      fail_msg("%s: fence %llu handed out again (had %llu)", k,
               (unsigned long long)a.fence, (unsigned long long)w->fence[key]);
    w->t.fences_reused++;
  } else {
    w->fence[key] = a.fence;
  }
  rc = idem_complete(a.lease, res, strlen(res));
  idem_lease_free(a.lease);
  idem_answer_clear(&a);
  if (rc == IDEM_OK) {
    w->acked[key] = 1;
    w->t.acked++;
  } else if (!fv_fired()) {
    fail_msg("complete %s answered %s", k, idem_errstr(rc));
  }
  return fv_fired() ? -1 : 0;
}

/* After a power cut: the synced images come up in a new directory; every
 * key up to `upto` is checked against what was acknowledged, and every key
 * left unfinished must be claimable once the dead holder's TTL is over. */
static void recover(workload *w, int upto) {
  tu_fx *fx = w->fx;
  char *dir;
  char *path = save_to_new_dir(FV_SYNCED, &dir);
  assert_int_equal(idem_close(w->db), IDEM_OK);
  fv_forget();
  tu_rmtree(fx->dir);
  free(fx->dir);
  free(fx->path);
  fx->dir = dir;
  fx->path = path;
  w->t.cuts++;
  int lost_before = w->t.lost;
  for (int key = 0; key <= upto; key++)
    w->t.exposed += w->acked[key];
  w->db = open_shim(fx, w->synchronous);
  tu_assert_integrity(fx->path);
  for (int key = 0; key <= upto; key++) {
    char k[32], res[256];
    key_of(key, k, sizeof k);
    result_of(key, res, sizeof res);
    idem_record r = IDEM_RECORD_INIT;
    int rc = tu_get(w->db, k, &r);
    int state = rc == IDEM_ENOTFOUND ? IDEM_STATE_ABSENT : r.state;
    if (rc != IDEM_OK && rc != IDEM_ENOTFOUND)
      fail_msg("get %s: %s", k, idem_errstr(rc));
    if (state == IDEM_STATE_COMPLETED) {
      /* Never half-written: exactly the result given. */
      if (r.result_len != strlen(res) || memcmp(r.result, res, r.result_len))
        fail_msg("%s: completed with another result", k);
    } else if (state != IDEM_STATE_PENDING && state != IDEM_STATE_ABSENT) {
      fail_msg("%s: state %d after a power cut", k, state);
    } else if (w->acked[key]) {
      if (w->synchronous == IDEM_SYNC_FULL)
        fail_msg("%s: an acknowledged completion was lost under FULL", k);
      w->t.lost++;
      if (state == IDEM_STATE_PENDING)
        w->t.lost_pending++;
      else
        w->t.lost_absent++;
      w->acked[key] = 0;
    }
    idem_record_clear(&r);
  }
  if (w->t.lost - lost_before > w->t.worst)
    w->t.worst = w->t.lost - lost_before;
  /* The dead process's leases run out; then nothing may be stuck. */
  tu_clock_advance(&fx->clock, fx->opts.ttl_ms + 1);
  for (int key = 0; key <= upto; key++)
    if (!w->acked[key]) {
      char k[32];
      key_of(key, k, sizeof k);
      idem_record r = IDEM_RECORD_INIT;
      if (tu_get(w->db, k, &r) == IDEM_OK && r.state == IDEM_STATE_COMPLETED) {
        w->acked[key] = 1; /* the call in flight did land */
        idem_record_clear(&r);
        continue;
      }
      idem_record_clear(&r);
      if (run_key(w, key) != 0)
        fail_msg("%s: not claimable and completable after a power cut", k);
    }
}

/* 200 keys claimed and completed one after another; the power goes off at
 * 20 points drawn from the seed, each in the middle of a key's calls.
 * With `purge_every`, idem_purge() runs after every that many keys, as a
 * maintenance timer would: it checkpoints, which syncs the WAL. */
static tally run_workload(tu_fx *fx, int synchronous, int purge_every,
                          uint64_t seed) {
  static workload w;
  memset(&w, 0, sizeof w);
  w.fx = fx;
  w.synchronous = synchronous;
  rng_state = seed;
  int cut_at[KEYS] = {0};
  for (int i = 0; i < CUTS;) {
    int key = (int)(rng() % KEYS);
    if (!cut_at[key]) {
      /* 1 + writes into the key: a key takes at least four (one WAL frame,
       * header and page, for the claim and for the completion), so every
       * cut falls inside its key's calls. */
      cut_at[key] = 1 + (int)(rng() % 4);
      i++;
    }
  }
  w.db = open_shim(fx, synchronous);
  for (int key = 0; key < KEYS; key++) {
    if (cut_at[key])
      fv_arm(cut_at[key] - 1, SQLITE_IOERR_WRITE, FV_CUT);
    int rc = run_key(&w, key);
    fv_disarm();
    if (rc != 0 || fv_fired()) {
      fv_arm(-1, 0, FV_STICKY); /* clears fired */
      recover(&w, key);
    }
    if (purge_every && (key + 1) % purge_every == 0)
      assert_int_equal(idem_purge(w.db, 0, NULL), IDEM_OK);
  }
  assert_int_equal(idem_close(w.db), IDEM_OK);
  tu_assert_integrity(fx->path);
  idem_db *db = NULL;
  assert_int_equal(tu_open(&db, fx->path, &fx->opts), IDEM_OK);
  idem_stats st = tu_stats(db);
  assert_int_equal(st.rows[IDEM_STATE_COMPLETED], KEYS);
  assert_int_equal(idem_close(db), IDEM_OK);
  assert_int_equal(w.t.cuts, CUTS);
  return w.t;
}

static void report(const char *name, uint64_t seed, const tally *t) {
  print_message("%s: seed %llu, %d keys, %d power cuts: %d acknowledged "
                "completions; the cuts found %d of them done and undid %d "
                "(at most %d in one cut; %d left pending, %d left absent); "
                "%d fences handed out twice\n",
                name, (unsigned long long)seed, KEYS, t->cuts, t->acked,
                t->exposed, t->lost, t->worst, t->lost_pending, t->lost_absent,
                t->fences_reused);
}

/* FULL: not one acknowledged completion lost, no fence handed out twice. */
static void test_full_loses_nothing(void **state) {
  uint64_t seed = seed_from_env();
  tally t = run_workload(fx_of(state), IDEM_SYNC_FULL, 0, seed);
  report("FULL", seed, &t);
  assert_int_equal(t.lost, 0);
  assert_int_equal(t.fences_reused, 0);
}

/* NORMAL: completions may be lost, but only whole, and each such key is
 * claimable again (recover() checks both). That some are lost shows the
 * shim really drops unsynced writes: without it FULL's pass would prove
 * nothing. */
static void test_normal_loses_only_whole(void **state) {
  uint64_t seed = seed_from_env();
  tally t = run_workload(fx_of(state), IDEM_SYNC_NORMAL, 0, seed);
  report("NORMAL", seed, &t);
  assert_true(t.lost > 0);
  assert_int_equal(t.lost, t.lost_pending + t.lost_absent);
}

/* --- Crash-point sweep ---------------------------------------------------- */

#define OP_OPEN 0
#define OP_BEGIN 1
#define OP_COMPLETE 2
static const char *const op_name[] = {"open", "begin", "complete"};

static int hot_journal_refusals;

/* Opens what a cut left; see test_faults.c for the known bug that a hot
 * journal left by an interrupted creation makes idem_open refuse the
 * file with IDEM_EREADONLY until a read-write connection rolls it back. */
static idem_db *open_after_cut(tu_fx *fx, const char *path, const char *what) {
  idem_db *db = NULL;
  int rc = idem_open(&db, path, &fx->opts);
  if (rc == IDEM_EREADONLY) {
    char *journal = tu_suffix(path, "-journal");
    int hot = tu_exists(journal);
    free(journal);
    if (hot) {
      hot_journal_refusals++;
      idem_close(db);
      db = NULL;
      assert_int_equal(tu_sql(path, "SELECT count(*) FROM sqlite_master"),
                       SQLITE_OK);
      rc = idem_open(&db, path, &fx->opts);
    }
  }
  if (rc != IDEM_OK)
    fail_msg("opening what %s left: %s: %s", what, idem_errstr(rc),
             idem_errmsg(db));
  return db;
}

/* Checks one image of a cut during `op`, which answered `rc`. `durable`:
 * whether an acknowledged answer must be in it (a crash of the process
 * keeps everything written; a power cut keeps it only under FULL). */
static void check_cut(tu_fx *fx, const char *path, int op, int rc, int durable,
                      const char *what) {
  idem_db *db = open_after_cut(fx, path, what);
  tu_assert_integrity(path);
  idem_record r = IDEM_RECORD_INIT;
  int grc = tu_get(db, "k", &r);
  int state = grc == IDEM_ENOTFOUND ? IDEM_STATE_ABSENT : r.state;
  if (grc != IDEM_OK && grc != IDEM_ENOTFOUND)
    fail_msg("%s: get: %s", what, idem_errstr(grc));
  if (state == IDEM_STATE_COMPLETED) {
    assert_int_equal(op, OP_COMPLETE);
    assert_int_equal(r.result_len, 6);
    assert_memory_equal(r.result, "RESULT", 6);
  } else if (state != IDEM_STATE_ABSENT && state != IDEM_STATE_PENDING) {
    fail_msg("%s: state %d", what, state);
  }
  if (durable && op == OP_BEGIN && rc == IDEM_CLAIMED &&
      state != IDEM_STATE_PENDING)
    fail_msg("%s: an acknowledged claim is missing", what);
  if (durable && op == OP_COMPLETE && rc == IDEM_OK &&
      state != IDEM_STATE_COMPLETED)
    fail_msg("%s: an acknowledged completion is missing", what);
  idem_record_clear(&r);
  /* Nothing is stuck once the dead holder's lease runs out. */
  tu_clock_advance(&fx->clock, fx->opts.ttl_ms + 1);
  if (state != IDEM_STATE_COMPLETED)
    tu_claim_complete(db, "k", "RESULT");
  tu_assert_completed(db, "k", "RESULT");
  assert_int_equal(idem_close(db), IDEM_OK);
}

/* Cuts the power at write or sync N = 0, 1, ... of `op` until it runs
 * without reaching N, and checks both what the disk kept and what a crash
 * of the process would have left. Returns the number of cut points. */
static int cut_sweep(tu_fx *fx, int op, int synchronous) {
  int n;
  for (n = 0; n < 500; n++) {
    tu_rmtree(fx->dir);
    free(fx->dir);
    fx->dir = tu_tmpdir();
    assert_non_null(fx->dir);
    free(fx->path);
    fx->path = tu_path(fx->dir, "idem.db");
    idem_db *db = NULL;
    idem_lease *l = NULL;
    int rc;
    if (op == OP_OPEN) {
      char *uri = fv_uri(fx->path);
      idem_options o = fx->opts;
      o.synchronous = synchronous;
      fv_arm(n, SQLITE_IOERR_WRITE, FV_CUT);
      rc = idem_open(&db, uri, &o);
      free(uri);
    } else {
      db = open_shim(fx, synchronous);
      if (op == OP_COMPLETE)
        l = tu_claim(db, "k");
      idem_answer a = IDEM_ANSWER_INIT;
      fv_arm(n, SQLITE_IOERR_WRITE, FV_CUT);
      rc = op == OP_BEGIN ? tu_begin(db, "k", &a)
                          : idem_complete(l, "RESULT", 6);
      if (op == OP_BEGIN)
        l = a.lease;
      idem_answer_clear(&a);
    }
    fv_disarm();
    int fired = fv_fired();
    if (!fired)
      fv_power_off(); /* the call got through: cut right after it */
    char *dir_synced, *dir_written;
    char *synced = save_to_new_dir(FV_SYNCED, &dir_synced);
    char *written = save_to_new_dir(FV_WRITTEN, &dir_written);
    idem_lease_free(l);
    assert_int_equal(idem_close(db), IDEM_OK);
    fv_forget();
    char what[128];
    snprintf(what, sizeof what, "a power cut at write %d of %s (%s)", n,
             op_name[op], synchronous == IDEM_SYNC_FULL ? "FULL" : "NORMAL");
    check_cut(fx, synced, op, rc, synchronous == IDEM_SYNC_FULL, what);
    snprintf(what, sizeof what, "a crash at write %d of %s", n, op_name[op]);
    check_cut(fx, written, op, rc, 1, what);
    tu_rmtree(dir_synced);
    tu_rmtree(dir_written);
    free(dir_synced);
    free(dir_written);
    free(synced);
    free(written);
    if (!fired)
      break;
  }
  assert_true(n > 0);
  assert_true(n < 500);
  return n;
}

static void test_cut_sweep(void **state) {
  tu_fx *fx = fx_of(state);
  hot_journal_refusals = 0;
  for (int op = OP_OPEN; op <= OP_COMPLETE; op++) {
    int points = cut_sweep(fx, op, IDEM_SYNC_NORMAL);
    points += cut_sweep(fx, op, IDEM_SYNC_FULL);
    print_message("%s: %d cut points\n", op_name[op], points);
  }
  if (hot_journal_refusals)
    fail_msg("open: %d cut(s) during the creation of a database left a hot "
             "journal that made idem_open answer IDEM_EREADONLY",
             hot_journal_refusals);
}

/* NORMAL with a purge every 50 keys: the checkpoint of each purge makes
 * everything before it durable, so a cut undoes at most what came since. */
static void test_normal_with_purges(void **state) {
  uint64_t seed = seed_from_env();
  tally t = run_workload(fx_of(state), IDEM_SYNC_NORMAL, 50, seed);
  report("NORMAL, purge every 50 keys", seed, &t);
  assert_true(t.lost > 0);
  assert_true(t.worst <= 50);
}

static int setup_group(void **state) {
  (void)state;
  return fv_register();
}

#define T(f) cmocka_unit_test_setup_teardown(f, tu_fx_setup, tu_fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_cut_sweep),
      T(test_full_loses_nothing),
      T(test_normal_loses_only_whole),
      T(test_normal_with_purges),
  };
  return cmocka_run_group_tests(tests, setup_group, NULL);
}
