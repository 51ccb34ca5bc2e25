/* SPDX-License-Identifier: MIT */
/*
 * heartbeat.c - keeping a handle's leases alive, all in one transaction.
 *
 * One thread per handle, not one per lease: every heartbeat_ms it takes
 * the list of held leases and pushes each deadline to now + ttl in a
 * single write transaction on its own connection, so a thousand leases
 * cost one commit, and the main connection's mutex is never waited for.
 * The thread starts with the first lease and stops with the handle.
 *
 * The refresh is fenced like every other write: it matches only a row that
 * still carries the lease's owner and fence, so a heartbeat can never
 * revive a lease that another owner has claimed since. When it matches
 * nothing, the row is read: a different fence (or no row) means the lease
 * is lost and the job is told; the same fence means the lease was ended by
 * its holder while the round ran, which is not a loss.
 *
 * The same thread takes the WAL checkpoint off the callers' path. SQLite
 * checkpoints inside the COMMIT that crosses the WAL's size threshold,
 * which puts milliseconds of copying into one unlucky begin or complete.
 * Instead, the main connection's WAL hook only notes that the threshold
 * was crossed and wakes this thread, which checkpoints on its own
 * connection. A handle without the thread checkpoints inline, as SQLite
 * would, and so does a writer that finds the WAL grown past four times
 * the threshold because the thread's checkpoints cannot catch up. Under
 * IDEM_SYNC_FULL, whose commits wait for the disk anyway, writers
 * checkpoint inline at the threshold.
 */
#include "machine.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What a round found of a lease. */
#define ROUND_REFRESHED 0
#define ROUND_LOST 1   /* the row moved on without its holder */
#define ROUND_ENDED 2  /* its holder ended it: completed, failed, released */
#define ROUND_ENDING 3 /* its holder's end is under way: its verdict */

/* A lease whose holder is ending it, when the row no longer matches:
 * either that end committed before this round (the row shows it ended) or
 * it has yet to take the lock, and the row will refuse it and tell the
 * holder. A completion in the application's transaction is not under way:
 * that transaction held the lock, so a row moved on since means it rolled
 * back. */
static bool ending(idem_lease *l) {
  return atomic_load(&l->ending) &&
         atomic_load(&l->status) != IDEM__LEASE_IN_TX;
}

static int refresh(idem_db *db, idem__store *st, idem_lease **ls, size_t n,
                   unsigned char *found) {
  int rc = idem__tx_write(st);
  /* From a reading taken with the lock held: the wait for it may have been
   * long, and a deadline counted from before it could be past already. */
  int64_t until = idem__ms_add(idem__now(db, IDEM_CLOCK_LEASE), db->opt.ttl_ms);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    idem_lease *l = ls[i];
    idem__fence f = {l->key, l->key_len, l->owner, l->fence};
    int changed = 0;
    found[i] = ROUND_REFRESHED;
    rc = idem__row_touch(st, &f, until, &changed);
    if (rc == 0 && !changed) {
      idem__row row;
      rc = idem__row_get(st, l->key, l->key_len, &row, 0);
      found[i] = rc == 0 && idem__ended_under(&row, l->fence) ? ROUND_ENDED
                 : ending(l)                                  ? ROUND_ENDING
                                                              : ROUND_LOST;
      idem__row_done(st);
      /* The holder is back and learns it lost the key: its attempt's
       * history says so, as when a fenced call is the first to find out. */
      if (rc == 0 && found[i] == ROUND_LOST && !idem_lease_lost(l))
        rc = idem__row_mark_lost(st, l->key, l->key_len, l->fence);
    }
  }
  if (rc == 0)
    rc = idem__tx_commit(st);
  if (rc) {
    idem__tx_rollback(st);
    return rc;
  }
  for (size_t i = 0; i < n; i++)
    if (found[i] == ROUND_REFRESHED)
      atomic_store(&ls[i]->until, until);
  return 0;
}

/* A lease with the first eight bytes of its key, big-endian: most
 * comparisons of the sort then need neither the lease's memory, which is
 * scattered over the heap, nor a call to memcmp. */
typedef struct keyed {
  uint64_t prefix;
  idem_lease *l;
} keyed;

/* SQLite's order of BLOB keys: memcmp over the shorter length, then the
 * shorter key first. */
static int key_cmp(const void *pa, const void *pb) {
  const keyed *a = pa, *b = pb;
  if (a->prefix != b->prefix)
    return a->prefix < b->prefix ? -1 : 1;
  size_t la = a->l->key_len, lb = b->l->key_len;
  int c = memcmp(a->l->key, b->l->key, la < lb ? la : lb);
  return c ? c : (la > lb) - (la < lb);
}

/* In key order a round walks the b-tree once from left to right and is
 * done with each page when it leaves it. In the list's order it jumps
 * about the tree and comes back to a page once per lease on it; when the
 * round outgrows the page cache the page has often been spilled to the WAL
 * in between, to be read back and written a second time. Without memory
 * for the sort the list's order still works. */
static void order_by_key(idem_lease **ls, size_t n) {
  keyed *e = n > 1 ? malloc(n * sizeof *e) : NULL;
  if (!e)
    return;
  for (size_t i = 0; i < n; i++) {
    uint64_t p = 0;
    for (size_t b = 0; b < 8; b++)
      p = p << 8 | (b < ls[i]->key_len ? ls[i]->key[b] : 0);
    e[i] = (keyed){p, ls[i]};
  }
  qsort(e, n, sizeof *e, key_cmp);
  for (size_t i = 0; i < n; i++)
    ls[i] = e[i].l;
  free(e);
}

/* Takes a reference on every held lease so none is freed under the
 * round. */
static idem_lease **snapshot(idem_db *db, size_t *n) {
  pthread_mutex_lock(&db->reg);
  size_t count = 0;
  for (idem_lease *l = db->leases; l; l = l->next)
    count++;
  idem_lease **ls = count ? malloc(count * sizeof *ls) : NULL;
  size_t i = 0;
  if (ls)
    for (idem_lease *l = db->leases; l; l = l->next, i++) {
      atomic_fetch_add(&l->refs, 1);
      ls[i] = l;
    }
  pthread_mutex_unlock(&db->reg);
  *n = i;
  return ls;
}

/* Opens the heartbeat's connection on first use, with the handle's
 * durability: under NORMAL a refresh must not pay for an fsync. Under
 * db->hb_mu. */
static int hb_store_ready(idem_db *db, char *msg, size_t msg_size) {
  if (db->hb_store)
    return SQLITE_OK;
  int rc =
      idem__store_open(&db->hb_store, db->path, 0, db->opt.busy_timeout_ms);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(idem__store_conn(db->hb_store),
                      db->opt.synchronous == IDEM_SYNC_FULL
                          ? "PRAGMA synchronous = FULL"
                          : "PRAGMA synchronous = NORMAL",
                      NULL, NULL, NULL);
  /* A round dirties every page that holds a lease in one transaction.
   * Once they outgrow the cache (SQLite's default 2 MiB holds about 10,000
   * leases packed together) they spill to the WAL mid-transaction, and the
   * next round reads them back even when no other connection wrote in
   * between. 16 MiB holds a round of 4,000 leases even if each has a page
   * to itself; the cache grows only as far as the rounds need it. */
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(idem__store_conn(db->hb_store),
                      "PRAGMA cache_size = -16384", NULL, NULL, NULL);
  /* A round polling beside queued writers would find the lock free only
   * by chance, and could lose its leases before it does. */
  if (rc == SQLITE_OK)
    idem__store_queue(db->hb_store);
  if (rc) {
    snprintf(msg, msg_size, "%s", idem__store_errmsg(db->hb_store));
    idem__store_close(db->hb_store);
    db->hb_store = NULL;
  }
  return rc;
}

static void checkpoint(idem_db *db) {
  char msg[256] = "";
  pthread_mutex_lock(&db->hb_mu);
  int rc = hb_store_ready(db, msg, sizeof msg);
  if (rc == SQLITE_OK)
    rc = sqlite3_wal_checkpoint_v2(idem__store_conn(db->hb_store), NULL,
                                   SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  if (rc != SQLITE_OK && !msg[0])
    snprintf(msg, sizeof msg, "%s", idem__store_errmsg(db->hb_store));
  pthread_mutex_unlock(&db->hb_mu);
  /* A busy checkpoint is retried at the next commit past the threshold. */
  if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
    idem__log(db, IDEM_LOG_WARN, "%s: checkpoint failed: %s", db->path, msg);
}

#define CHECKPOINT_PAGES 1000 /* SQLite's own default threshold */

/* Past this many pages the writer checkpoints inline after all, as SQLite
 * would. A checkpoint that runs beside a busy writer rarely catches up
 * with it, and SQLite can only start the WAL over from a checkpoint that
 * did: under NORMAL, four times the threshold bounds the WAL. Under FULL
 * every commit waits for a sync anyway, and while the WAL grows each of
 * those syncs must also record the file's new size: one process ran its
 * first second at 0.38-0.59x the floor, whose WAL starts over after 1000
 * frames, with this bound at four times the threshold, and at 0.86-0.99x
 * with it at the threshold (benchmarks.md, finding 15). */
static int inline_pages(const idem_db *db) {
  return db->opt.synchronous == IDEM_SYNC_FULL ? CHECKPOINT_PAGES
                                               : 4 * CHECKPOINT_PAGES;
}

/* New frames between two passes of the thread: a checkpoint that runs
 * again at once copies the same hot pages again, while one that waits too
 * long leaves the writer at the bound much to copy. */
#define CHECKPOINT_STEP 256

static int wal_hook(void *arg, sqlite3 *conn, const char *name, int pages) {
  idem_db *db = arg;
  if (pages < CHECKPOINT_PAGES)
    return SQLITE_OK;
  pthread_mutex_lock(&db->reg);
  bool thread = db->hb_running && !db->hb_stop && pages < inline_pages(db);
  /* A pass costs the same for few new frames as for many: ask for the next
   * one only once the WAL has grown by a step, or has started over. */
  bool grown =
      pages < db->ckpt_pages || pages >= db->ckpt_pages + CHECKPOINT_STEP;
  if (thread && !db->ckpt_wanted && grown) {
    db->ckpt_wanted = true;
    db->ckpt_pages = pages;
    pthread_cond_signal(&db->hb_wake);
  }
  pthread_mutex_unlock(&db->reg);
  if (thread)
    return SQLITE_OK;
  /* Past the bound, wait out a pass of the heartbeat's connection rather
   * than have this checkpoint refused as busy while the WAL keeps
   * growing. hb_mu is never held while waiting for db->mu. The writer
   * still holds its turn in the writers' queue (queue.h), which keeps the
   * other writers back until the checkpoint has caught up and the WAL can
   * start over: handed on first, 8 processes grew the WAL to 29,000
   * frames and checkpointed on every commit. */
  pthread_mutex_lock(&db->hb_mu);
  (void)sqlite3_wal_checkpoint_v2(conn, name, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                  NULL);
  pthread_mutex_unlock(&db->hb_mu);
  return SQLITE_OK;
}

void idem__checkpoint_hook(idem_db *db) {
  sqlite3_wal_hook(idem__store_conn(db->store), wal_hook, db);
}

static int heartbeat_round(idem_db *db, unsigned *lost_out, char *msg,
                           size_t msg_size) {
  size_t n;
  idem_lease **ls = snapshot(db, &n);
  order_by_key(ls, n);
  unsigned char *found = n ? calloc(n, sizeof *found) : NULL;
  int rc = 0;
  unsigned nlost = 0;
  if (n && !found) {
    rc = SQLITE_NOMEM;
    snprintf(msg, msg_size, "out of memory");
  }
  pthread_mutex_lock(&db->hb_mu);
  if (rc == 0 && n)
    rc = hb_store_ready(db, msg, msg_size);
  if (rc == 0 && n) {
    rc = refresh(db, db->hb_store, ls, n, found);
    if (rc)
      snprintf(msg, msg_size, "%s", idem__store_errmsg(db->hb_store));
  }
  pthread_mutex_unlock(&db->hb_mu);
  for (size_t i = 0; i < n; i++) {
    /* A lease completed in the application's transaction is done once the
     * round sees that transaction's commit. */
    if (rc == 0 && found[i] == ROUND_ENDED)
      idem__lease_settled(ls[i]);
    /* Only a lease still held is reported: one its holder ended or freed
     * in the meantime is no longer the job's concern. */
    if (rc == 0 && found[i] == ROUND_LOST && idem__lease_mark_lost(ls[i])) {
      nlost++;
      idem__log(db, IDEM_LOG_WARN,
                "%s: a lease (fence %llu) was taken over by another owner",
                db->path, (unsigned long long)ls[i]->fence);
      if (db->opt.on_lost)
        db->opt.on_lost(db->opt.lost_ctx, ls[i]);
    }
    idem__lease_unref(ls[i]);
  }
  free(ls);
  free(found);
  if (lost_out)
    *lost_out = nlost;
  return rc;
}

int idem_heartbeat(idem_db *db, unsigned *lost_out) {
  if (lost_out)
    *lost_out = 0;
  if (!db)
    return IDEM_EINVAL;
  if (idem__forked(db))
    return idem__fork_refused(db, "idem_heartbeat");
  char msg[256] = "";
  int rc = heartbeat_round(db, lost_out, msg, sizeof msg);
  if (rc == 0)
    return IDEM_OK;
  idem__lock(db);
  int code = idem__storage_error(db, rc, "heartbeat", msg);
  idem__unlock(db);
  return code;
}

static bool past(const struct timespec *t) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > t->tv_sec ||
         (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void add_ms(struct timespec *t, int64_t ms) {
  t->tv_sec += (time_t)(ms / 1000);
  t->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000L;
  }
}

/* How often a thread that holds leases looks at the lease clock between
 * rounds: an eighth of the period, from 1 ms to 1 s. */
static int64_t lease_look_ms(int64_t period) {
  int64_t ms = period / 8;
  return ms < 1 ? 1 : ms > 1000 ? 1000 : ms;
}

/* Rounds are due every heartbeat_ms by the lease clock (boot time, which
 * counts a suspend), and at the latest every heartbeat_ms of real time.
 * The condition variable can only wait on CLOCK_MONOTONIC, which stops
 * while the host sleeps: after a resume the wait alone would run on for
 * the rest of its period while the leases lapse. So while leases are held
 * the thread also wakes a few times a period to read the lease clock, and
 * a round follows a resume within lease_look_ms(). A lease clock that runs
 * ahead all the time (a test's) brings a round at most once per
 * lease_look_ms() of real time: rounds back to back would only fight the
 * leases' holders for the write lock. Under db->reg. */
static bool round_due(idem_db *db, const struct timespec *next,
                      int64_t lease_next, const struct timespec *looked) {
  return past(next) ||
         (past(looked) && idem__now(db, IDEM_CLOCK_LEASE) >= lease_next);
}

static void *heartbeat_main(void *arg) {
  idem_db *db = arg;
  int64_t ms = db->opt.heartbeat_ms;
  int64_t look = lease_look_ms(ms);
  struct timespec next, looked;
  clock_gettime(CLOCK_MONOTONIC, &next);
  pthread_mutex_lock(&db->reg);
  int64_t lease_next = idem__ms_add(db->hb_started, ms);
  while (!db->hb_stop) {
    add_ms(&next, ms);
    /* The lease clock may bring the round on once this much real time has
     * passed since the last. */
    clock_gettime(CLOCK_MONOTONIC, &looked);
    add_ms(&looked, look);
    /* Checkpoints asked for in between do not move the next round. A
     * request made while a checkpoint ran is served before waiting again:
     * the hook signals once per request, and that signal found no
     * waiter. */
    while (!db->hb_stop) {
      if (db->ckpt_wanted) {
        db->ckpt_wanted = false;
        pthread_mutex_unlock(&db->reg);
        checkpoint(db);
        pthread_mutex_lock(&db->reg);
      }
      if (round_due(db, &next, lease_next, &looked))
        break;
      struct timespec wake = next;
      if (db->leases) {
        clock_gettime(CLOCK_MONOTONIC, &wake);
        add_ms(&wake, look);
        if (wake.tv_sec > next.tv_sec ||
            (wake.tv_sec == next.tv_sec && wake.tv_nsec > next.tv_nsec))
          wake = next;
      }
      pthread_cond_timedwait(&db->hb_wake, &db->reg, &wake);
    }
    if (db->hb_stop)
      break;
    pthread_mutex_unlock(&db->reg);
    char msg[256] = "";
    int rc = heartbeat_round(db, NULL, msg, sizeof msg);
    if (rc)
      idem__log(db, IDEM_LOG_ERROR,
                "%s: heartbeat failed: %s (SQLite code %d); retrying in %lld "
                "ms",
                db->path, msg, rc, (long long)ms);
    pthread_mutex_lock(&db->reg);
    lease_next = idem__ms_add(idem__now(db, IDEM_CLOCK_LEASE), ms);
  }
  pthread_mutex_unlock(&db->reg);
  return NULL;
}

int idem__heartbeat_start(idem_db *db) {
  /* Signals meant for the application must not land on our thread, whose
   * caller knows nothing of it; it inherits a mask that blocks them all. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  db->hb_stop = false;
  db->hb_started = idem__now(db, IDEM_CLOCK_LEASE);
  int rc = pthread_create(&db->hb_thread, NULL, heartbeat_main, db);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0)
    return -1;
  db->hb_running = true;
  return 0;
}

void idem__heartbeat_stop(idem_db *db) {
  pthread_mutex_lock(&db->reg);
  bool running = db->hb_running;
  db->hb_stop = true;
  pthread_cond_signal(&db->hb_wake);
  pthread_mutex_unlock(&db->reg);
  if (running)
    pthread_join(db->hb_thread, NULL);
  db->hb_running = false;
}
