/* SPDX-License-Identifier: MIT */
/*
 * lease.c - begin, and the fenced calls that end a lease.
 *
 * A begin first reads the row in a plain read snapshot: a completed,
 * failed or poisoned key, a key leased elsewhere, or a fingerprint
 * mismatch is answered from it without taking SQLite's write lock, which
 * is what keeps cached hits and busy answers cheap under contention. Those
 * answers are true at the moment of the snapshot, inside the call. Any
 * answer that writes (a claim, a poisoning) is decided again from a fresh
 * read inside BEGIN IMMEDIATE, so lookup, poison check and claim are one
 * atomic step and two callers can never both claim.
 *
 * Ending a lease (complete, fail, release) is one fenced UPDATE. When it
 * matches nothing, the row is read to tell a lost lease from a retry of a
 * call whose commit was reported failed but did land.
 */
#include "history.h"
#include "machine.h"
#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void idem_answer_clear(idem_answer *out) {
  if (!out)
    return;
  static const idem_answer init = IDEM_ANSWER_INIT;
  free(out->result);
  *out = init;
}

static int answer_from_row(idem_db *db, const idem__row *row,
                           const idem__decision *d, idem_answer *out) {
  out->status = d->answer;
  out->attempts = row->attempts;
  out->fence = row->fence;
  out->code = row->code;
  if (d->answer == IDEM_COMPLETED || d->answer == IDEM_FAILED) {
    out->finished_at = row->updated_at;
    out->result = malloc(row->result_len + 1);
    if (!out->result)
      return idem__error(db, IDEM_ENOMEM,
                         "out of memory for a result of "
                         "%zu bytes",
                         row->result_len);
    if (row->result_len)
      memcpy(out->result, row->result, row->result_len);
    ((char *)out->result)[row->result_len] = '\0';
    out->result_len = row->result_len;
    atomic_fetch_add(&db->n_hits, 1);
  } else if (d->answer == IDEM_BUSY) {
    if (row->has_owner)
      idem__uuid_format(row->owner, out->owner);
    out->lease_ms = d->lease_ms;
    atomic_fetch_add(&db->n_busy, 1);
  } else if (d->answer == IDEM_POISONED) {
    atomic_fetch_add(&db->n_poisoned, 1);
  }
  return d->answer;
}

static idem_lease *lease_new(idem_db *db, const void *key, size_t key_len) {
  idem_lease *l = calloc(1, sizeof *l + key_len + 1);
  if (!l)
    return NULL;
  l->db = db;
  atomic_init(&l->refs, 1);
  atomic_init(&l->status, IDEM__LEASE_HELD);
  l->key_len = key_len;
  memcpy(l->key, key, key_len);
  return l;
}

/* Makes a new lease known to its handle: counted until freed, and kept
 * alive by the heartbeat while held. */
static void lease_register(idem_lease *l, bool held) {
  idem_db *db = l->db;
  pthread_mutex_lock(&db->reg);
  db->nleases++;
  if (held) {
    l->next = db->leases;
    if (db->leases)
      db->leases->prev = l;
    db->leases = l;
    l->registered = true;
    if (db->opt.heartbeat_ms > 0 && !db->hb_running &&
        idem__heartbeat_start(db) != 0)
      idem__log(db, IDEM_LOG_WARN,
                "%s: cannot start the heartbeat thread; leases will lapse "
                "unless idem_heartbeat() is called",
                db->path);
  }
  pthread_mutex_unlock(&db->reg);
}

/* Takes a lease out of the heartbeat's list and wakes begin calls waiting
 * for a lease of this handle to end. Under db->reg. */
static void lease_unlist(idem_lease *l) {
  idem_db *db = l->db;
  if (l->registered) {
    if (l->prev)
      l->prev->next = l->next;
    else
      db->leases = l->next;
    if (l->next)
      l->next->prev = l->prev;
    l->prev = l->next = NULL;
    l->registered = false;
  }
  db->ends++;
  pthread_cond_broadcast(&db->ended);
}

static void lease_end(idem_lease *l, int status) {
  pthread_mutex_lock(&l->db->reg);
  atomic_store(&l->status, status);
  lease_unlist(l);
  pthread_mutex_unlock(&l->db->reg);
}

bool idem__lease_mark_lost(idem_lease *l) {
  /* Once only, and never for a lease its holder has ended: whoever tells
   * the job (the heartbeat's on_lost, a fenced call's answer) holds a
   * lease that the job has not let go of. */
  int s = atomic_load(&l->status);
  do {
    if (s != IDEM__LEASE_HELD && s != IDEM__LEASE_IN_TX)
      return false;
  } while (!atomic_compare_exchange_weak(&l->status, &s, IDEM__LEASE_LOST));
  atomic_fetch_add(&l->db->n_lost, 1);
  pthread_mutex_lock(&l->db->reg);
  lease_unlist(l);
  pthread_mutex_unlock(&l->db->reg);
  return true;
}

void idem__lease_settled(idem_lease *l) {
  int in_tx = IDEM__LEASE_IN_TX;
  pthread_mutex_lock(&l->db->reg);
  if (atomic_compare_exchange_strong(&l->status, &in_tx, IDEM__LEASE_DONE))
    lease_unlist(l);
  pthread_mutex_unlock(&l->db->reg);
}

void idem__lease_unref(idem_lease *l) {
  if (atomic_fetch_sub(&l->refs, 1) == 1) {
    free(l->result);
    free(l);
  }
}

/* Why the attempt a row still shows as running has ended, if it has: for
 * its history, when a claim or a poisoning takes the key over. */
static const char *closing_reason(const idem__row *row, const idem__time *now,
                                  char *buf, size_t size) {
  if (row->state != IDEM_STATE_PENDING || !row->has_owner)
    return NULL;
  if (idem__boot_differs(row, now))
    return "the host rebooted";
  if (row->lease_until <= now->lease)
    return "the lease expired";
  snprintf(buf, size, "holder process %lld died", (long long)row->owner_pid);
  return buf;
}

/* The row's history as a claim or a poisoning goes on from it: the
 * attempts kept, and the end of one the row still shows running, which
 * ended before another call could take the key. */
static void carry_history(idem__text *hist, const idem__row *row,
                          const idem__time *now) {
  char why[64];
  const char *closing = closing_reason(row, now, why, sizeof why);
  idem__hist_keep(hist, row->history, row->history_len, 1);
  if (closing)
    idem__hist_end(hist, row->fence, IDEM_OUTCOME_EXPIRED, now->wall, 0,
                   closing);
}

/* The fence of a new claim: above the row's, or for a key without a row,
 * above every fence a deleted row ever had. */
static int next_fence(idem_db *db, const idem__row *row, uint64_t *fence) {
  if (row->state != IDEM_STATE_ABSENT) {
    *fence = row->fence + 1;
    return 0;
  }
  int rc = idem__fence_floor(db->store, fence);
  *fence += 1;
  return rc;
}

static int claim(idem_db *db, const void *key, size_t key_len,
                 const idem_begin_opts *bo, const idem__row *row,
                 const idem__decision *d, const idem__time *now, idem_lease *l,
                 idem_answer *out) {
  /* A re-claim keeps what the first caller recorded unless this one says
   * otherwise; a fresh claim (new or expired row) starts from this one.
   * The row's blobs are borrowed from a statement the next store call
   * reuses, so what is kept is copied first. */
  bool keep = !d->fresh;
  const void *fp = bo ? bo->fingerprint : NULL;
  size_t fp_len = bo ? bo->fingerprint_len : 0;
  const char *name = bo ? bo->name : NULL;
  void *fp_copy = NULL;
  char *name_copy = NULL;
  if (!fp && keep && row->fingerprint) {
    if (!(fp_copy = malloc(row->fingerprint_len + 1)))
      return SQLITE_NOMEM;
    memcpy(fp_copy, row->fingerprint, row->fingerprint_len);
    fp = fp_copy;
    fp_len = row->fingerprint_len;
  }
  if (!name && keep && row->name) {
    if (!(name_copy = strdup(row->name))) {
      free(fp_copy);
      return SQLITE_NOMEM;
    }
    name = name_copy;
  }
  /* The history goes on unless the key starts anew. */
  idem__text hist = {0};
  if (!d->fresh)
    carry_history(&hist, row, now);
  uint64_t fence = 0;
  int rc = next_fence(db, row, &fence);
  idem__owner_next(&db->self, l->owner);
  char owner_text[37];
  idem__uuid_format(l->owner, owner_text);
  if (rc == 0)
    idem__hist_start(&hist, fence, d->attempts, owner_text, db->self.pid,
                     now->wall);
  if (rc == 0 && hist.failed)
    rc = SQLITE_NOMEM;
  idem__claim c = {
      .attempts = d->attempts,
      .fence = fence,
      .owner = l->owner,
      .boot = now->boot,
      .lease_until = idem__ms_add(now->lease, db->opt.ttl_ms),
      .fingerprint = fp,
      .fingerprint_len = fp_len,
      .name = name,
      .created_at = d->fresh ? now->wall : row->created_at,
      .now = now->wall,
      .self = &db->self,
      .history = hist.p,
      .history_len = hist.len,
  };
  if (rc == 0)
    rc = idem__row_claim(db->store, key, key_len, &c);
  /* A row that still names an owner was taken from a lease that ended
   * without its holder ending it (closing_reason()): worth counting, and
   * rare, so only this claim pays the statement. A new key and a released
   * one (no owner) cost nothing more. */
  if (rc == 0 && row->state == IDEM_STATE_PENDING && row->has_owner)
    rc = idem__counter_add(db->store, IDEM__COUNT_TAKEOVERS, 1);
  idem__text_free(&hist);
  free(fp_copy);
  free(name_copy);
  if (rc)
    return rc;
  l->fence = fence;
  l->attempt = d->attempts;
  atomic_store(&l->until, c.lease_until);
  out->status = IDEM_CLAIMED;
  out->attempts = d->attempts;
  out->fence = fence;
  out->lease_ms = db->opt.ttl_ms;
  idem__uuid_format(l->owner, out->owner);
  return 0;
}

static int check_begin(idem_db *db, const void *key, size_t key_len,
                       const idem_begin_opts *bo, idem_answer *out) {
  int code = idem__check_key(db, key, key_len);
  if (code)
    return code;
  if (!out || out->version != IDEM_ANSWER_VERSION)
    return idem__error(db, IDEM_EINVAL,
                       "the answer must be initialised with IDEM_ANSWER_INIT");
  if (bo) {
    if (bo->version < 1 || bo->version > IDEM_BEGIN_OPTS_VERSION)
      return idem__error(db, IDEM_EINVAL,
                         "begin options must be initialised with "
                         "IDEM_BEGIN_OPTS_INIT");
    if (!bo->fingerprint && bo->fingerprint_len)
      return idem__error(db, IDEM_EINVAL, "fingerprint is NULL");
    if (bo->fingerprint_len > IDEM_MAX_FINGERPRINT)
      return idem__error(db, IDEM_ETOOBIG,
                         "fingerprint is %zu bytes; the limit is %d",
                         bo->fingerprint_len, IDEM_MAX_FINGERPRINT);
    if (bo->name && strlen(bo->name) > IDEM_MAX_NAME)
      return idem__error(db, IDEM_ETOOBIG, "name is over %d bytes",
                         IDEM_MAX_NAME);
    if (bo->wait_ms > IDEM_MAX_DURATION_MS)
      return idem__error(db, IDEM_EINVAL,
                         "wait_ms (%lld) is over IDEM_MAX_DURATION_MS "
                         "(%lld); < 0 waits without limit",
                         (long long)bo->wait_ms,
                         (long long)IDEM_MAX_DURATION_MS);
  }
  if (db->readonly)
    return idem__error(db, IDEM_EREADONLY, "%s: opened with IDEM_OPEN_READONLY",
                       db->path);
  return IDEM_OK;
}

/* Answers what needs no write from a read snapshot; returns 0 when the
 * begin has to take the write lock. Under db->mu. */
static int begin_read(idem_db *db, const void *key, size_t key_len,
                      const void *fp, size_t fp_len, const idem__time *now,
                      idem_answer *out, int *sqlite_rc) {
  idem__row row;
  idem__decision d;
  *sqlite_rc = idem__row_peek(db->store, key, key_len, &row);
  if (*sqlite_rc)
    return 0;
  idem__decide(&row, now, db->opt.max_attempts, fp, fp_len, &d);
  int answer = 0;
  if (d.action == IDEM__DO_MISMATCH) {
    atomic_fetch_add(&db->n_mismatches, 1);
    answer = idem__error(db, IDEM_EMISMATCH,
                         "the key was first used with another fingerprint");
  } else if (d.action == IDEM__DO_ANSWER) {
    answer = answer_from_row(db, &row, &d, out);
  }
  idem__row_done(db->store);
  return answer;
}

/* One begin, without waiting. Under db->mu. */
static int begin_write(idem_db *db, const void *key, size_t key_len,
                       const idem_begin_opts *bo, const idem__time *now,
                       bool wait, idem_lease *l, idem_answer *out,
                       int *sqlite_rc, bool *poisoned_now) {
  const void *fp = bo ? bo->fingerprint : NULL;
  size_t fp_len = bo ? bo->fingerprint_len : 0;
  idem__row row;
  idem__decision d;
  /* Two readings of the clock. The rules judge the row by the one taken
   * before the wait for the lock: a lease that ended during the wait
   * still counts as held, which can only delay a takeover, never cause
   * one. What is written counts from the moment the lock is held: a new
   * deadline from a reading before a long wait could be over already. */
  idem__time at;
  int rc = wait ? idem__tx_write(db->store) : idem__tx_write_now(db->store);
  if (rc == 0) {
    idem__time_of(db, &at);
    rc = idem__row_get(db->store, key, key_len, &row,
                       IDEM__ROW_RESULT | IDEM__ROW_HISTORY);
  }
  if (rc) {
    *sqlite_rc = rc;
    idem__tx_rollback(db->store);
    return 0;
  }
  idem__decide(&row, now, db->opt.max_attempts, fp, fp_len, &d);
  int answer;
  switch (d.action) {
  case IDEM__DO_MISMATCH:
    atomic_fetch_add(&db->n_mismatches, 1);
    answer = idem__error(db, IDEM_EMISMATCH,
                         "the key was first used with another fingerprint");
    break;
  case IDEM__DO_ANSWER:
    answer = answer_from_row(db, &row, &d, out);
    break;
  case IDEM__DO_POISON: {
    char spent[64];
    snprintf(spent, sizeof spent, "max_attempts (%u) spent",
             db->opt.max_attempts);
    /* The refused attempt is recorded, so an operator sees why. */
    idem__text hist = {0};
    carry_history(&hist, &row, &at);
    idem__hist_start(&hist, 0, row.attempts + 1, NULL, 0, at.wall);
    idem__hist_end(&hist, 0, IDEM_OUTCOME_POISONED, at.wall, 0, spent);
    rc = hist.failed ? SQLITE_NOMEM
                     : idem__row_poison(db->store, key, key_len, at.wall,
                                        hist.p, hist.len);
    if (rc == 0)
      rc = idem__counter_add(db->store, IDEM__COUNT_POISONINGS, 1);
    idem__text_free(&hist);
    answer = answer_from_row(db, &row, &d, out);
    break;
  }
  default:
    rc = claim(db, key, key_len, bo, &row, &d, &at, l, out);
    answer = IDEM_CLAIMED;
    break;
  }
  bool writes = d.action == IDEM__DO_POISON || d.action == IDEM__DO_CLAIM;
  if (rc == 0 && writes)
    rc = idem__tx_commit(db->store);
  if (rc || !writes || answer < 0)
    idem__tx_rollback(db->store);
  if (rc) {
    *sqlite_rc = rc;
    return 0;
  }
  /* Told only of a poisoning that was committed. */
  *poisoned_now = d.action == IDEM__DO_POISON;
  return answer;
}

/* The lease object is made only for a begin that may claim: an answer
 * from the snapshot needs none. */
static bool lease_for(idem_db *db, const void *key, size_t key_len,
                      idem_lease **lp) {
  if (!*lp && !(*lp = lease_new(db, key, key_len)))
    idem__error(db, IDEM_ENOMEM, "out of memory for a lease");
  return *lp != NULL;
}

static int begin_locked(idem_db *db, const void *key, size_t key_len,
                        const idem_begin_opts *bo, idem_lease **lp,
                        idem_answer *out, bool *poisoned_now) {
  idem__time now;
  idem__time_of(db, &now);
  int src = 0, answer = 0;
  /* A handle whose last begin claimed is likely running new keys, which
   * the snapshot cannot answer: it tries the write lock first, but only if
   * it is free, so that an answer the snapshot can give never waits for
   * another writer. A begin under the lock that finds an answer sends the
   * handle back to the snapshot first. Any failure of the first try
   * leaves the begin to the usual path. */
  if (db->claiming) {
    if (!lease_for(db, key, key_len, lp))
      return IDEM_ENOMEM;
    answer = begin_write(db, key, key_len, bo, &now, false, *lp, out, &src,
                         poisoned_now);
    /* Busy, or e.g. inside the application's own transaction (a handle
     * of idem_open_db): the usual path answers or tells. */
    if (src == 0)
      goto wrote;
    src = 0;
  }
  answer = begin_read(db, key, key_len, bo ? bo->fingerprint : NULL,
                      bo ? bo->fingerprint_len : 0, &now, out, &src);
  if (answer || src)
    goto done;
  if (!lease_for(db, key, key_len, lp))
    return IDEM_ENOMEM;
  answer = begin_write(db, key, key_len, bo, &now, true, *lp, out, &src,
                       poisoned_now);
wrote:
  if (src == 0)
    db->claiming = answer == IDEM_CLAIMED;
done:
  if (src == 0)
    return answer;
  int code =
      idem__storage_error(db, src, "begin", idem__store_errmsg(db->store));
  if (db->opt.fail_policy != IDEM_FAIL_OPEN || code == IDEM_ENOMEM)
    return code;
  if (!lease_for(db, key, key_len, lp))
    return IDEM_ENOMEM;
  /* Fail open: the caller asked for a run without protection rather than
   * none; say so loudly. */
  idem__log(db, IDEM_LOG_ERROR,
            "%s: running a job unguarded after a storage error "
            "(IDEM_FAIL_OPEN)",
            db->path);
  (*lp)->unguarded = true;
  out->status = IDEM_CLAIMED;
  out->unguarded = 1;
  return IDEM_CLAIMED;
}

/* One begin attempt; a claim's lease is registered with the handle. The
 * arguments are checked first when `check` is set, under the same lock. */
static int begin_once(idem_db *db, const void *key, size_t key_len,
                      const idem_begin_opts *bo, idem_answer *out, bool check) {
  idem_lease *l = NULL;
  bool poisoned_now = false;
  idem__lock(db);
  int answer = check ? check_begin(db, key, key_len, bo, out) : 0;
  if (answer == 0)
    answer = begin_locked(db, key, key_len, bo, &l, out, &poisoned_now);
  idem__unlock(db);
  /* Only the write path claims, and it always has a lease. */
  if (answer == IDEM_CLAIMED && l) {
    atomic_fetch_add(&db->n_claims, 1);
    lease_register(l, !l->unguarded);
    out->lease = l;
  } else if (l) {
    idem__lease_unref(l);
  }
  if (poisoned_now) {
    idem__log(db, IDEM_LOG_WARN,
              "%s: a key was poisoned after %u attempts; idem_reset() lets "
              "it run again",
              db->path, out->attempts);
    if (db->opt.on_poison)
      db->opt.on_poison(db->opt.poison_ctx, key, key_len, out->attempts);
  }
  return answer;
}

int idem_begin(idem_db *db, const void *key, size_t key_len,
               const idem_begin_opts *bo, idem_answer *out) {
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_begin");
  int64_t wait = bo && bo->version >= 1 ? bo->wait_ms : 0;
  if (wait == 0)
    return begin_once(db, key, key_len, bo, out, true);
  int64_t deadline = idem__ms_add(idem__now(db, IDEM_CLOCK_LEASE), wait);
  int64_t nap = 1;
  for (bool first = true;; first = false) {
    pthread_mutex_lock(&db->reg);
    uint64_t ends = db->ends;
    pthread_mutex_unlock(&db->reg);
    int answer = begin_once(db, key, key_len, bo, out, first);
    if (answer != IDEM_BUSY)
      return answer;
    int64_t left = idem__ms_sub(deadline, idem__now(db, IDEM_CLOCK_LEASE));
    if (wait > 0 && left <= 0)
      return answer;
    /* Poll other processes with a growing pause, never past the moment
     * the other lease runs out or our deadline; a lease of this process
     * that ends wakes us at once. */
    int64_t pause = nap < out->lease_ms ? nap : out->lease_ms;
    if (wait > 0 && left < pause)
      pause = left;
    if (pause < 1)
      pause = 1;
    nap = nap * 2 > 100 ? 100 : nap * 2;
    pthread_mutex_lock(&db->reg);
    if (db->ends == ends) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_sec += pause / 1000;
      ts.tv_nsec += (pause % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&db->ended, &db->reg, &ts);
    }
    pthread_mutex_unlock(&db->reg);
    idem_answer_clear(out);
  }
}

/* --- Ending a lease ---------------------------------------------------- */

#define END_COMPLETE 0
#define END_FAIL 1
#define END_RELEASE 2
#define END_COMPLETE_IN_TX 3 /* inside the application's transaction */

static const char *const end_name[] = {"complete", "fail", "release",
                                       "complete in transaction"};

/* Whether a row that the fenced write did not match shows that this lease
 * already did what is asked (a retry after IDEM_EUNKNOWN). */
static bool already_done(const idem__row *row, const idem_lease *l, int op) {
  if (!idem__ended_under(row, l->fence))
    return false;
  switch (op) {
  case END_COMPLETE:
  case END_COMPLETE_IN_TX:
    return row->state == IDEM_STATE_COMPLETED;
  case END_FAIL:
    return row->state == IDEM_STATE_FAILED;
  default:
    return row->state == IDEM_STATE_PENDING;
  }
}

static int64_t retention_end(const idem_db *db, int64_t wall) {
  return db->opt.retention_ms ? idem__ms_add(wall, db->opt.retention_ms) : 0;
}

static int finish_row(idem_db *db, const idem__fence *f, int op, int code,
                      const void *res, size_t len, const char *reason,
                      int64_t wall, int *changed) {
  if (op == END_RELEASE)
    return idem__row_release(db->store, f, wall, reason, changed);
  return idem__row_finish(
      db->store, f, op == END_FAIL ? IDEM_STATE_FAILED : IDEM_STATE_COMPLETED,
      code, res, len, wall, retention_end(db, wall), changed);
}

/* Commits what an end wrote under its own transaction (rc == 0 so far), or
 * rolls back and reports rc. */
static int end_commit(idem_db *db, int op, int rc, int changed) {
  if (rc == 0 && changed) {
    rc = idem__tx_commit(db->store);
    if (rc && op != END_RELEASE) {
      idem__tx_rollback(db->store);
      idem__storage_error(db, rc, end_name[op], idem__store_errmsg(db->store));
      return idem__error(db, IDEM_EUNKNOWN,
                         "%s: the commit failed (%s); the result may or may "
                         "not be stored: call again to find out",
                         db->path, sqlite3_errstr(rc));
    }
  }
  if (rc) {
    int err = idem__storage_error(db, rc, end_name[op],
                                  idem__store_errmsg(db->store));
    idem__tx_rollback(db->store);
    return err;
  }
  idem__tx_rollback(db->store);
  return IDEM_OK;
}

static int end_write(idem_db *db, idem_lease *l, int op, int code,
                     const void *res, size_t len, const char *reason,
                     bool *lost) {
  idem__time now;
  idem__fence f = {l->key, l->key_len, l->owner, l->fence};
  int changed = 0;
  /* Inside the application's transaction, it commits or rolls back. */
  bool own_tx = op != END_COMPLETE_IN_TX;
  int rc = own_tx ? idem__tx_write(db->store) : 0;
  /* Retention starts when the lock is held, not before its wait. */
  idem__time_of(db, &now);
  if (rc == 0)
    rc = finish_row(db, &f, op, code, res, len, reason, now.wall, &changed);
  /* Kept across a commit that failed but landed: the retry that finds the
   * row finished writes nothing, and this stays the time on the row. */
  if (rc == 0 && changed && op != END_RELEASE)
    l->finished_at = now.wall;
  if (!own_tx) {
    if (rc == 0 && !changed) {
      idem__row row;
      rc = idem__row_get(db->store, l->key, l->key_len, &row, 0);
      *lost = rc == 0 && !already_done(&row, l, op);
      idem__row_done(db->store);
    }
    return rc ? idem__storage_error(db, rc, end_name[op],
                                    idem__store_errmsg(db->store))
              : IDEM_OK;
  }
  if (rc == 0 && !changed) {
    idem__row row;
    rc = idem__row_get(db->store, l->key, l->key_len, &row, 0);
    *lost = rc == 0 && !already_done(&row, l, op);
    idem__row_done(db->store);
    /* The history keeps that the stale holder came back: worth a commit,
     * and harmless if it fails. */
    if (*lost &&
        idem__row_mark_lost(db->store, l->key, l->key_len, l->fence) == 0)
      (void)idem__tx_commit(db->store);
  }
  return end_commit(db, op, rc, changed);
}

/* A lease of IDEM_FAIL_OPEN has no row behind it: its job ran unguarded.
 * Its result is still stored where that takes nothing from anyone, so that
 * the next begin finds it instead of running the job once more: when a
 * begin could claim the key now (no row, past retention, no live lease,
 * not poisoned), this lease claims it and finishes it in one transaction.
 * Where another owner holds, finished or poisoned the key, nothing is
 * written and the caller is told IDEM_ELEASELOST. A release has nothing to
 * give back. */
static int end_unguarded(idem_db *db, idem_lease *l, int op, int code,
                         const void *res, size_t len, bool *lost) {
  if (op == END_RELEASE)
    return IDEM_OK;
  bool own_tx = op != END_COMPLETE_IN_TX;
  int rc = own_tx ? idem__tx_write(db->store) : 0;
  idem__time now;
  idem__time_of(db, &now);
  idem__row row;
  idem__decision d;
  bool done = false;
  int changed = 0;
  if (rc == 0)
    rc = idem__row_get(db->store, l->key, l->key_len, &row,
                       IDEM__ROW_RESULT | IDEM__ROW_HISTORY);
  if (rc == 0) {
    /* A retry after IDEM_EUNKNOWN finds its own completion. */
    done = l->fence && already_done(&row, l, op);
    /* The job has run: its success is worth keeping even on a key whose
     * attempts are spent, as long as no call poisoned it yet. */
    idem__decide(&row, &now, 0, NULL, 0, &d);
    *lost = !done && d.action != IDEM__DO_CLAIM;
  }
  if (rc == 0 && !done && !*lost) {
    idem_answer scratch = IDEM_ANSWER_INIT;
    rc = claim(db, l->key, l->key_len, NULL, &row, &d, &now, l, &scratch);
    idem__fence f = {l->key, l->key_len, l->owner, l->fence};
    if (rc == 0)
      rc = finish_row(db, &f, op, code, res, len, NULL, now.wall, &changed);
  }
  if (rc == 0 && changed)
    l->finished_at = now.wall;
  if (!own_tx)
    return rc ? idem__storage_error(db, rc, end_name[op],
                                    idem__store_errmsg(db->store))
              : IDEM_OK;
  return end_commit(db, op, rc, changed);
}

/* A lease completed in the application's transaction stays held until that
 * transaction has ended. The row, as the application's connection sees
 * it, tells how it ended: completed under the lease's fence is committed,
 * unless a transaction is open, which may be the one holding the
 * completion still; the lease's own pending row means the completion was
 * rolled back (the lease is held again, to complete, fail or release
 * anew); anything else, lost. Under db->mu, on the application's thread,
 * the only one that may use its connection. Returns 0 or the storage error
 * of the read, which leaves the lease as it was. */
static int settle_in_tx(idem_db *db, idem_lease *l) {
  if (atomic_load(&l->status) != IDEM__LEASE_IN_TX)
    return 0;
  idem__row row;
  int rc = idem__row_get(db->store, l->key, l->key_len, &row, 0);
  bool completed =
      rc == 0 && row.state == IDEM_STATE_COMPLETED && row.fence == l->fence;
  if (completed && idem__store_in_tx(db->store)) {
    idem__row_done(db->store);
    return 0;
  }
  bool committed = completed;
  bool held = rc == 0 && row.state == IDEM_STATE_PENDING && row.has_owner &&
              row.fence == l->fence && memcmp(row.owner, l->owner, 16) == 0;
  idem__row_done(db->store);
  if (rc)
    return rc;
  if (committed) {
    idem__lease_settled(l);
  } else if (held) {
    int in_tx = IDEM__LEASE_IN_TX;
    atomic_store(&l->ending, false);
    atomic_compare_exchange_strong(&l->status, &in_tx, IDEM__LEASE_HELD);
  } else {
    idem__lease_mark_lost(l);
  }
  return 0;
}

static int lease_end_call(idem_lease *l, int op, int code, const void *res,
                          size_t len, const char *reason) {
  if (!l)
    return IDEM_EINVAL;
  idem_db *db = l->db;
  if (idem__forked(db))
    return idem__fork_refused(db, end_name[op]);
  idem__lock(db);
  int rc = settle_in_tx(db, l);
  int status = atomic_load(&l->status);
  int err = IDEM_OK;
  bool lost = false;
  if (rc)
    err = idem__storage_error(db, rc, end_name[op],
                              idem__store_errmsg(db->store));
  else if (status == IDEM__LEASE_LOST)
    err = idem__error(db, IDEM_ELEASELOST,
                      "the lease was taken over by another owner");
  else if (status == IDEM__LEASE_DONE)
    err = idem__error(db, IDEM_EMISUSE, "the lease was already finished");
  else if (status == IDEM__LEASE_IN_TX)
    err = idem__error(db, IDEM_EMISUSE,
                      "the lease was completed in the transaction still open "
                      "on the connection: commit it, or roll it back to "
                      "finish the lease anew");
  else if (!res && len)
    err = idem__error(db, IDEM_EINVAL, "result is NULL but its length is %zu",
                      len);
  else if (len > IDEM_MAX_RESULT)
    err = idem__error(db, IDEM_ETOOBIG, "result is %zu bytes; the limit is %d",
                      len, IDEM_MAX_RESULT);
  else if (reason && strlen(reason) > IDEM_MAX_REASON)
    err = idem__error(db, IDEM_ETOOBIG, "reason is over %d bytes",
                      IDEM_MAX_REASON);
  else if (op == END_COMPLETE_IN_TX && !db->app_conn)
    err = idem__error(db, IDEM_EMISUSE,
                      "idem_complete_in_tx needs a handle made by "
                      "idem_open_db");
  else if (op == END_COMPLETE_IN_TX && !idem__store_in_tx(db->store))
    err = idem__error(db, IDEM_EMISUSE,
                      "idem_complete_in_tx needs a transaction open on the "
                      "connection");
  else {
    atomic_store(&l->ending, true);
    err = l->unguarded ? end_unguarded(db, l, op, code, res, len, &lost)
                       : end_write(db, l, op, code, res, len, reason, &lost);
    /* Still held after a storage error: the heartbeat judges it again. */
    if (err != IDEM_OK && !lost)
      atomic_store(&l->ending, false);
  }
  if (err == IDEM_OK && lost)
    err = idem__error(db, IDEM_ELEASELOST,
                      "%s: the lease was taken over by another owner (fence "
                      "%llu); nothing was changed",
                      end_name[op], (unsigned long long)l->fence);
  /* In the application's transaction the completion is not done before
   * that transaction commits: the lease stays held, and alive, till then. */
  bool in_tx = err == IDEM_OK && op == END_COMPLETE_IN_TX && !l->unguarded;
  if (in_tx) {
    int held = IDEM__LEASE_HELD;
    atomic_compare_exchange_strong(&l->status, &held, IDEM__LEASE_IN_TX);
  }
  idem__unlock(db);

  /* A lease completed in a transaction is settled by the next call on it,
   * or by a heartbeat round. */
  if (err == IDEM_OK && !in_tx) {
    if (op == END_RELEASE && reason)
      idem__log(db, IDEM_LOG_INFO, "%s: lease released: %s", db->path, reason);
    lease_end(l, IDEM__LEASE_DONE);
  } else if (lost) {
    idem__log(db, IDEM_LOG_WARN,
              "%s: %s refused: the lease (fence %llu) was taken over by "
              "another owner",
              db->path, end_name[op], (unsigned long long)l->fence);
    idem__lease_mark_lost(l);
  }
  return err;
}

int idem_complete(idem_lease *lease, const void *result, size_t len) {
  return lease_end_call(lease, END_COMPLETE, 0, result, len, NULL);
}

int idem_complete_in_tx(idem_lease *lease, const void *result, size_t len) {
  return lease_end_call(lease, END_COMPLETE_IN_TX, 0, result, len, NULL);
}

int idem_fail(idem_lease *lease, int code, const void *result, size_t len) {
  return lease_end_call(lease, END_FAIL, code, result, len, NULL);
}

int idem_release(idem_lease *lease, const char *reason) {
  return lease_end_call(lease, END_RELEASE, 0, NULL, 0, reason);
}

int idem_lease_lost(const idem_lease *lease) {
  return lease && atomic_load(&lease->status) == IDEM__LEASE_LOST;
}

uint64_t idem_lease_fence(const idem_lease *lease) {
  return lease ? lease->fence : 0;
}

uint32_t idem_lease_attempt(const idem_lease *lease) {
  return lease ? lease->attempt : 0;
}

void idem_lease_free(idem_lease *lease) {
  if (!lease)
    return;
  if (idem__forked(lease->db)) {
    idem__forked_lease_free(lease);
    return;
  }
  idem_db *db = lease->db;
  /* Completed in a transaction that has ended since: done, or held again
   * and released below. Freed while that transaction is still open, the
   * lease is left to it: a rollback leaves the key pending till the TTL. */
  if (atomic_load(&lease->status) == IDEM__LEASE_IN_TX) {
    idem__lock(db);
    (void)settle_in_tx(db, lease);
    idem__unlock(db);
  }
  if (atomic_load(&lease->status) == IDEM__LEASE_HELD)
    (void)idem_release(lease, "freed while held");
  pthread_mutex_lock(&db->reg);
  if (lease->registered)
    lease_unlist(lease);
  db->nleases--;
  pthread_mutex_unlock(&db->reg);
  idem__lease_unref(lease);
}
