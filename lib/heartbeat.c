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
 */
#include "store.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int refresh(idem_db *db, idem__store *st, idem_lease **ls, size_t n,
                   bool *lost) {
  int64_t until = idem__now(db, IDEM_CLOCK_LEASE) + db->opt.ttl_ms;
  int rc = idem__tx_write(st);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    idem_lease *l = ls[i];
    idem__fence f = {l->key, l->key_len, l->owner, l->fence};
    int changed = 0;
    lost[i] = false;
    rc = idem__row_touch(st, &f, until, &changed);
    if (rc == 0 && !changed) {
      idem__row row;
      rc = idem__row_get(st, l->key, l->key_len, &row, false);
      lost[i] =
          rc == 0 && (row.state == IDEM_STATE_ABSENT || row.fence != l->fence);
      idem__row_done(st);
    }
  }
  if (rc == 0)
    rc = idem__tx_commit(st);
  if (rc) {
    idem__tx_rollback(st);
    return rc;
  }
  for (size_t i = 0; i < n; i++)
    if (!lost[i])
      atomic_store(&ls[i]->until, until);
  return 0;
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

static int heartbeat_round(idem_db *db, unsigned *lost_out, char *msg,
                           size_t msg_size) {
  size_t n;
  idem_lease **ls = snapshot(db, &n);
  bool *lost = n ? calloc(n, sizeof *lost) : NULL;
  int rc = 0;
  unsigned nlost = 0;
  if (n && !lost) {
    rc = SQLITE_NOMEM;
    snprintf(msg, msg_size, "out of memory");
  }
  pthread_mutex_lock(&db->hb_mu);
  if (rc == 0 && n && !db->hb_store) {
    rc = idem__store_open(&db->hb_store, db->path, 0, db->opt.busy_timeout_ms);
    if (rc) {
      snprintf(msg, msg_size, "%s", idem__store_errmsg(db->hb_store));
      idem__store_close(db->hb_store);
      db->hb_store = NULL;
    }
  }
  if (rc == 0 && n) {
    rc = refresh(db, db->hb_store, ls, n, lost);
    if (rc)
      snprintf(msg, msg_size, "%s", idem__store_errmsg(db->hb_store));
  }
  pthread_mutex_unlock(&db->hb_mu);
  for (size_t i = 0; i < n; i++) {
    if (rc == 0 && lost[i] && !idem_lease_lost(ls[i])) {
      nlost++;
      idem__lease_mark_lost(ls[i]);
      idem__log(db, IDEM_LOG_WARN,
                "%s: a lease (fence %llu) was taken over by another owner",
                db->path, (unsigned long long)ls[i]->fence);
      if (db->opt.on_lost)
        db->opt.on_lost(db->opt.lost_ctx, ls[i]);
    }
    idem__lease_unref(ls[i]);
  }
  free(ls);
  free(lost);
  if (lost_out)
    *lost_out = nlost;
  return rc;
}

int idem_heartbeat(idem_db *db, unsigned *lost_out) {
  if (lost_out)
    *lost_out = 0;
  if (!db)
    return IDEM_EINVAL;
  char msg[256] = "";
  int rc = heartbeat_round(db, lost_out, msg, sizeof msg);
  if (rc == 0)
    return IDEM_OK;
  idem__lock(db);
  int code = idem__storage_error(db, rc, "heartbeat", msg);
  idem__unlock(db);
  return code;
}

static void *heartbeat_main(void *arg) {
  idem_db *db = arg;
  pthread_mutex_lock(&db->reg);
  while (!db->hb_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ms = db->opt.heartbeat_ms;
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&db->hb_wake, &db->reg, &ts);
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
