/* SPDX-License-Identifier: MIT */
/*
 * admin.c - what operators do: look, list, reset, purge, count.
 *
 * Reads run in one read snapshot, so a listing or a count is consistent
 * with itself while workers go on writing. Deletions raise the fence floor
 * first (store.c), so that a key which comes back continues its fences
 * above every one it had. Purge works in small transactions so that it
 * never holds the write lock for long, and it only ever selects completed
 * and failed rows past retention: a pending row, leased or not, and a
 * poisoned row are never its to delete. Those go only when asked for by
 * age (idem_purge_stale), and a pending row then only if a begin would
 * take its lease, judged by the begin's own rule in the same transaction.
 */
#include "machine.h"
#include "schema.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PURGE_BATCH 1000

static int fail_storage(idem_db *db, int rc, const char *what) {
  int code = idem__storage_error(db, rc, what, idem__store_errmsg(db->store));
  idem__tx_rollback(db->store);
  return code;
}

static void fill_record(const idem__row *row, const idem__time *now,
                        idem_record *out) {
  out->state = row->state;
  out->attempts = row->attempts;
  out->fence = row->fence;
  out->owner[0] = '\0';
  if (row->has_owner)
    idem__uuid_format(row->owner, out->owner);
  /* A deadline of another boot has no meaning here: report it as gone. */
  out->lease_ms = idem__lease_live(row, now)
                      ? idem__ms_sub(row->lease_until, now->lease)
                      : 0;
  out->created_at = row->created_at;
  out->updated_at = row->updated_at;
  out->expires_at = row->expires_at;
  out->code = row->code;
  out->result_len = row->result_len;
  out->has_fingerprint = row->fingerprint != NULL;
  out->name[0] = '\0';
  if (row->name)
    snprintf(out->name, sizeof out->name, "%s", row->name);
}

static void *dup_bytes(const void *p, size_t n) {
  char *c = malloc(n + 1);
  if (c) {
    if (n)
      memcpy(c, p, n);
    c[n] = '\0';
  }
  return c;
}

void idem_record_clear(idem_record *rec) {
  if (!rec)
    return;
  static const idem_record init = IDEM_RECORD_INIT;
  free(rec->key);
  free(rec->result);
  *rec = init;
}

static int check_record(idem_db *db, const idem_record *out) {
  if (!out || out->version != IDEM_RECORD_VERSION)
    return idem__error(db, IDEM_EINVAL,
                       "the record must be initialised with IDEM_RECORD_INIT");
  return IDEM_OK;
}

int idem_get(idem_db *db, const void *key, size_t key_len, idem_record *out) {
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_get");
  idem__lock(db);
  int code = idem__check_key(db, key, key_len);
  if (!code)
    code = check_record(db, out);
  if (code) {
    idem__unlock(db);
    return code;
  }
  idem__row row;
  int rc = idem__row_get(db->store, key, key_len, &row, IDEM__ROW_RESULT);
  if (rc) {
    code = fail_storage(db, rc, "get");
  } else if (row.state == IDEM_STATE_ABSENT) {
    code = idem__error(db, IDEM_ENOTFOUND, "no such key");
  } else {
    idem_record_clear(out);
    idem__time now;
    idem__time_of(db, &now);
    fill_record(&row, &now, out);
    out->key = dup_bytes(key, key_len);
    out->key_len = key_len;
    if (row.result)
      out->result = dup_bytes(row.result, row.result_len);
    if (!out->key || (row.result && !out->result)) {
      idem_record_clear(out);
      code = idem__error(db, IDEM_ENOMEM, "out of memory");
    }
  }
  idem__row_done(db->store);
  idem__unlock(db);
  return code;
}

typedef struct counted {
  idem_attempt_fn fn;
  void *ctx;
  unsigned n;
} counted;

static int count_attempt(void *ctx, const idem_attempt *a) {
  counted *c = ctx;
  c->n++;
  return c->fn(c->ctx, a);
}

int idem_history(idem_db *db, const void *key, size_t key_len,
                 idem_attempt_fn fn, void *ctx, unsigned *count_out) {
  if (count_out)
    *count_out = 0;
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_history");
  idem__lock(db);
  int code = idem__check_key(db, key, key_len);
  if (!code && !fn)
    code = idem__error(db, IDEM_EINVAL, "history function is NULL");
  counted c = {fn, ctx, 0};
  if (!code) {
    idem__row row;
    int rc = idem__tx_read(db->store);
    if (rc == 0)
      rc = idem__row_get(db->store, key, key_len, &row, 0);
    if (rc == 0 && row.state == IDEM_STATE_ABSENT)
      code = idem__error(db, IDEM_ENOTFOUND, "no such key");
    else if (rc == 0)
      rc = idem__history_scan(db->store, key, key_len, count_attempt, &c);
    if (rc)
      code = fail_storage(db, rc, "history");
    idem__tx_rollback(db->store);
  }
  idem__unlock(db);
  if (count_out)
    *count_out = c.n;
  return code;
}

/* Rows of a listing, gathered under the lock and handed out after it. The
 * array grows with what is read, not with the limit asked for, which may
 * be far larger than the table. */
typedef struct gathered {
  idem__time now;
  idem_record *recs;
  size_t n, cap;
  bool nomem;
} gathered;

static int gather(void *ctx, const void *key, size_t key_len,
                  const idem__row *row) {
  gathered *g = ctx;
  if (g->n == g->cap) {
    size_t cap = g->cap ? 2 * g->cap : 16;
    idem_record *recs = realloc(g->recs, cap * sizeof *recs);
    if (!recs) {
      g->nomem = true;
      return 1;
    }
    g->recs = recs;
    g->cap = cap;
  }
  idem_record *r = &g->recs[g->n];
  static const idem_record init = IDEM_RECORD_INIT;
  *r = init;
  fill_record(row, &g->now, r);
  r->key = dup_bytes(key, key_len);
  r->key_len = key_len;
  if (!r->key) {
    g->nomem = true;
    return 1;
  }
  g->n++;
  return 0;
}

int idem_list(idem_db *db, int state, const void *after, size_t after_len,
              unsigned limit, idem_list_fn fn, void *ctx, unsigned *count_out) {
  if (count_out)
    *count_out = 0;
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_list");
  idem__lock(db);
  int code = IDEM_OK;
  if (!fn || state < -1 || state > IDEM_STATE_POISONED || (after_len && !after))
    code = idem__error(db, IDEM_EINVAL,
                       "idem_list needs a function, a state from -1 to %d "
                       "and a key to start after (or none)",
                       IDEM_STATE_POISONED);
  else if (after_len > IDEM_MAX_KEY)
    code = idem__error(db, IDEM_ETOOBIG, "the key to start after is too long");
  gathered g = {.recs = NULL};
  idem__time_of(db, &g.now);
  if (!code && limit) {
    int rc =
        idem__rows_scan(db->store, state, after, after_len, limit, gather, &g);
    if (rc)
      code = fail_storage(db, rc, "list");
    else if (g.nomem)
      code = idem__error(db, IDEM_ENOMEM, "out of memory");
  }
  idem__unlock(db);
  unsigned told = 0;
  bool stop = code != IDEM_OK;
  for (size_t i = 0; i < g.n; i++) {
    if (!stop) {
      told++;
      stop = fn(ctx, &g.recs[i]) != 0;
    }
    idem_record_clear(&g.recs[i]);
  }
  free(g.recs);
  if (count_out)
    *count_out = told;
  return code;
}

/* Runs one deleting statement in a write transaction. */
static int delete_tx(idem_db *db, const char *what, const void *key,
                     size_t key_len, int state, idem__cursor *purge,
                     unsigned batch, uint64_t *count) {
  int rc = idem__tx_write(db->store);
  int changed = 0;
  if (rc == 0) {
    if (key)
      rc = idem__row_delete(db->store, key, key_len, &changed);
    else if (!purge)
      rc = idem__rows_delete_state(db->store, state, count);
    else
      rc = idem__rows_purge(db->store, idem__now(db, IDEM_CLOCK_WALL), batch,
                            purge, count);
  }
  if (rc == 0)
    rc = idem__tx_commit(db->store);
  if (rc) {
    *count = 0; /* rolled back: nothing was deleted */
    return fail_storage(db, rc, what);
  }
  if (key)
    *count = (uint64_t)changed;
  return IDEM_OK;
}

static int check_writable(idem_db *db) {
  if (db->readonly)
    return idem__error(db, IDEM_EREADONLY, "%s: opened with IDEM_OPEN_READONLY",
                       db->path);
  return IDEM_OK;
}

int idem_reset(idem_db *db, const void *key, size_t key_len) {
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_reset");
  idem__lock(db);
  uint64_t n = 0;
  int code = idem__check_key(db, key, key_len);
  if (!code)
    code = check_writable(db);
  if (!code)
    code = delete_tx(db, "reset", key, key_len, -1, NULL, 0, &n);
  if (!code && n == 0)
    code = idem__error(db, IDEM_ENOTFOUND, "no such key");
  idem__unlock(db);
  return code;
}

int idem_reset_state(idem_db *db, int state, uint64_t *count_out) {
  if (count_out)
    *count_out = 0;
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_reset_state");
  idem__lock(db);
  uint64_t n = 0;
  int code = check_writable(db);
  if (!code && (state < IDEM_STATE_PENDING || state > IDEM_STATE_POISONED))
    code =
        idem__error(db, IDEM_EINVAL, "state %d is not a stored state", state);
  if (!code)
    code = delete_tx(db, "reset", NULL, 0, state, NULL, 0, &n);
  idem__unlock(db);
  if (count_out)
    *count_out = n;
  return code;
}

/* Keys chosen for deletion in one transaction, copied out of the scan that
 * found them: the rows are deleted once the scan's statement is done. */
typedef struct chosen {
  void **keys;
  size_t *lens;
  unsigned n, cap;
  bool nomem;
} chosen;

static void chosen_init(chosen *c, unsigned cap) {
  *c = (chosen){.cap = cap};
  c->keys = calloc(cap, sizeof *c->keys);
  c->lens = calloc(cap, sizeof *c->lens);
  c->nomem = !c->keys || !c->lens;
}

/* Adds a key; false once there is no room or no memory. */
static bool choose(chosen *c, const void *key, size_t key_len) {
  if (c->n == c->cap)
    return false;
  if (!(c->keys[c->n] = dup_bytes(key, key_len))) {
    c->nomem = true;
    return false;
  }
  c->lens[c->n++] = key_len;
  return true;
}

/* Deletes the chosen rows (each raising the fence floor) in the write
 * transaction the caller opened, rc being its result so far, and commits,
 * or rolls back on any failure. Frees the keys; *count gets the number
 * deleted. */
static int delete_chosen(idem_db *db, chosen *c, int rc, const char *what,
                         uint64_t *count) {
  for (unsigned i = 0; rc == 0 && !c->nomem && i < c->n; i++) {
    int changed;
    rc = idem__row_delete(db->store, c->keys[i], c->lens[i], &changed);
  }
  if (rc == 0 && !c->nomem)
    rc = idem__tx_commit(db->store);
  for (unsigned i = 0; i < c->n; i++)
    free(c->keys[i]);
  free(c->keys);
  free(c->lens);
  if (c->nomem) {
    idem__tx_rollback(db->store);
    return idem__error(db, IDEM_ENOMEM, "out of memory");
  }
  if (rc)
    return fail_storage(db, rc, what);
  *count = c->n;
  return IDEM_OK;
}

/* Completed and failed rows to evict until the caps hold. */
typedef struct victims {
  chosen c;
  uint64_t rows_over, bytes_over;
} victims;

static int pick_victim(void *ctx, const void *key, size_t key_len,
                       uint64_t bytes) {
  victims *v = ctx;
  if ((!v->rows_over && !v->bytes_over) || !choose(&v->c, key, key_len))
    return 1;
  if (v->rows_over)
    v->rows_over--;
  v->bytes_over = v->bytes_over > bytes ? v->bytes_over - bytes : 0;
  return 0;
}

/* One transaction of eviction: at most PURGE_BATCH rows. */
static int evict_batch(idem_db *db, uint64_t *count) {
  victims v = {.rows_over = 0};
  uint64_t rows, bytes;
  int rc = idem__tx_write(db->store);
  if (rc == 0)
    rc = idem__terminal_totals(db->store, &rows, &bytes);
  if (rc == 0) {
    if (db->opt.max_rows && rows > db->opt.max_rows)
      v.rows_over = rows - db->opt.max_rows;
    if (db->opt.max_bytes && bytes > db->opt.max_bytes)
      v.bytes_over = bytes - db->opt.max_bytes;
  }
  if (rc == 0 && (v.rows_over || v.bytes_over)) {
    chosen_init(&v.c, PURGE_BATCH);
    if (!v.c.nomem)
      rc = idem__rows_evictable(db->store, pick_victim, &v);
  }
  /* Counted before the deletions, in their transaction: the count is of
   * the rows chosen, which delete_chosen() deletes all or none of. */
  if (rc == 0 && !v.c.nomem && v.c.n)
    rc = idem__counter_add(db->store, IDEM__COUNT_EVICTIONS, v.c.n);
  return delete_chosen(db, &v.c, rc, "evict", count);
}

/* Gives the pages deletions freed back to the file system, after a purge. */
static void compact(idem_db *db) {
  idem__lock(db);
  idem__store_compact(db->store);
  idem__unlock(db);
}

int idem_purge(idem_db *db, uint64_t limit, uint64_t *count_out) {
  if (count_out)
    *count_out = 0;
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_purge");
  uint64_t total = 0;
  int code = IDEM_OK;
  idem__cursor cur = {NULL, 0, false};
  /* The lock is let go between batches so that begin calls of other
   * threads are not held up by a long purge. */
  while (!cur.done && (!limit || total < limit)) {
    idem__lock(db);
    uint64_t n = 0;
    unsigned batch = PURGE_BATCH;
    if (limit && limit - total < batch)
      batch = (unsigned)(limit - total);
    code = check_writable(db);
    if (!code)
      code = delete_tx(db, "purge", NULL, 0, -1, &cur, batch, &n);
    idem__unlock(db);
    total += n;
    if (code)
      break;
  }
  free(cur.key);
  bool capped = db->opt.max_rows || db->opt.max_bytes;
  uint64_t evicted = 0;
  for (uint64_t n = PURGE_BATCH; !code && capped && n == PURGE_BATCH;) {
    idem__lock(db);
    n = 0;
    code = evict_batch(db, &n);
    idem__unlock(db);
    evicted += n;
  }
  if (evicted) {
    atomic_fetch_add(&db->n_evicted, evicted);
    idem__log(db, IDEM_LOG_INFO,
              "%s: evicted %llu row(s) to stay under max_rows/max_bytes",
              db->path, (unsigned long long)evicted);
  }
  if (!code)
    compact(db);
  if (count_out)
    *count_out = total + evicted;
  return code;
}

/* One batch of stale rows, judged at `now`. */
typedef struct stale {
  chosen c;
  idem__time now;
} stale;

static int pick_stale(void *ctx, const void *key, size_t key_len,
                      const idem__row *row) {
  stale *s = ctx;
  /* The very rule a begin uses: a lease it would not take, this does not
   * delete, however old the row. */
  if (idem__lease_live(row, &s->now))
    return 0;
  return choose(&s->c, key, key_len) ? 0 : 1;
}

/* One transaction: up to `batch` stale rows read after the cursor, and
 * those whose lease is not live deleted, each raising the fence floor. */
static int stale_batch(idem_db *db, int state, int64_t before, unsigned batch,
                       idem__cursor *cur, uint64_t *count) {
  stale s;
  chosen_init(&s.c, batch);
  int rc = s.c.nomem ? 0 : idem__tx_write(db->store);
  if (rc == 0 && !s.c.nomem) {
    /* Read once the write lock is held, as a begin reads it: no claim can
     * come between this judgement and the deletion. */
    idem__time_of(db, &s.now);
    rc = idem__rows_stale(db->store, state, before, batch, cur, pick_stale, &s);
  }
  return delete_chosen(db, &s.c, rc, "purge stale rows", count);
}

int idem_purge_stale(idem_db *db, int state, int64_t older_than_ms,
                     uint64_t *count_out) {
  if (count_out)
    *count_out = 0;
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_purge_stale");
  idem__lock(db);
  int code = IDEM_OK;
  if (state != -1 && state != IDEM_STATE_PENDING &&
      state != IDEM_STATE_POISONED)
    code = idem__error(db, IDEM_EINVAL,
                       "idem_purge_stale takes IDEM_STATE_PENDING, "
                       "IDEM_STATE_POISONED or -1, not %d",
                       state);
  else if (older_than_ms < 0 || older_than_ms > IDEM_MAX_DURATION_MS)
    code = idem__error(db, IDEM_EINVAL,
                       "older_than_ms must be 0 to IDEM_MAX_DURATION_MS");
  else
    code = check_writable(db);
  /* One cut-off for the whole call, so that the rows it selects do not
   * depend on how long the batches take. */
  int64_t before = idem__ms_sub(idem__now(db, IDEM_CLOCK_WALL), older_than_ms);
  idem__unlock(db);
  uint64_t total = 0;
  idem__cursor cur = {NULL, 0, false};
  /* The lock is let go between batches, as by idem_purge(). */
  while (!code && !cur.done) {
    idem__lock(db);
    uint64_t n = 0;
    code = stale_batch(db, state, before, PURGE_BATCH, &cur, &n);
    idem__unlock(db);
    total += n;
  }
  free(cur.key);
  if (total) {
    idem__log(db, IDEM_LOG_INFO,
              "%s: deleted %llu stale pending or poisoned row(s)", db->path,
              (unsigned long long)total);
    if (!code)
      compact(db);
  }
  if (count_out)
    *count_out = total;
  return code;
}

/* The size of idem_stats at each version: a caller compiled with an older
 * header has the smaller struct, and nothing past it may be written. */
static size_t stats_size(unsigned version) {
  switch (version) {
  case 1:
    return offsetof(idem_stats, total_evictions);
  case 2:
    return sizeof(idem_stats);
  default:
    return 0;
  }
}

int idem_stats_get(idem_db *db, idem_stats *out) {
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_stats_get");
  size_t size = out ? stats_size(out->version) : 0;
  idem__lock(db);
  int code = IDEM_OK;
  /* Filled whole here, then copied out through the caller's size. */
  idem_stats all;
  memset(&all, 0, sizeof all);
  if (!size) {
    code = idem__error(db, IDEM_EINVAL,
                       "the stats must be initialised with IDEM_STATS_INIT");
  } else {
    int rc = idem__tx_read(db->store);
    if (rc == 0)
      rc = idem__rows_count(db->store, idem__now(db, IDEM_CLOCK_LEASE),
                            idem__now(db, IDEM_CLOCK_WALL),
                            db->self.has_boot ? db->self.boot : NULL, &all);
    if (rc == 0)
      rc = idem__tx_commit(db->store);
    if (rc)
      code = fail_storage(db, rc, "stats");
    all.schema_version = idem__schema_version();
  }
  idem__unlock(db);
  if (!size)
    return code;
  if (code == IDEM_OK) {
    all.hits = atomic_load(&db->n_hits);
    all.claims = atomic_load(&db->n_claims);
    all.busy = atomic_load(&db->n_busy);
    all.poisoned = atomic_load(&db->n_poisoned);
    all.lost = atomic_load(&db->n_lost);
    all.mismatches = atomic_load(&db->n_mismatches);
    all.storage_errors = atomic_load(&db->n_storage_errors);
    all.evicted = atomic_load(&db->n_evicted);
  }
  all.version = out->version;
  memcpy(out, &all, size);
  return code;
}
