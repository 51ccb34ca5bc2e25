/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the parts of the library share and nothing else.
 *
 * Names shared between files start with idem__; only the public API uses
 * idem_. Two locks guard a handle, always taken in this order:
 *
 *   db->mu   serialises the transactions on the main connection, and the
 *            error message;
 *   db->reg  guards the registry of held leases and the heartbeat thread's
 *            start and stop.
 *
 * The heartbeat runs on its own connection (db->hb_store, under db->hb_mu)
 * so that refreshing leases never waits for the main connection's mutex,
 * only for SQLite's write lock like any other process.
 */
#ifndef IDEM_INTERNAL_H
#define IDEM_INTERNAL_H

#include "idem.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct idem__store idem__store;
struct sqlite3;

/* This process, as a lease row records its owner: the boot, and the
 * process by PID namespace, pid and start time (clock ticks after boot),
 * which together name one process of one boot even after its pid is
 * reused. Zero where /proc cannot tell. */
typedef struct idem__self {
  unsigned char boot[16];
  bool has_boot;
  int64_t pid;
  int64_t pidns;
  int64_t start;
  unsigned char owner_base[16]; /* a UUID from libuuid, one per handle */
  _Atomic uint64_t owners;      /* lease owners made from it so far */
} idem__self;

struct idem_db {
  idem_options opt; /* effective options, defaults filled in */
  char *path;
  idem__self self;
  bool readonly;
  bool app_conn; /* opened on the application's connection (idem_open_db) */
  unsigned long fork_gen; /* fork.c: the generation it was opened in */

  pthread_mutex_t mu;
  idem__store *store; /* main connection, under mu */
  char errmsg[512];   /* under mu */
  bool claiming;      /* under mu: the last begin claimed (lease.c) */

  pthread_mutex_t reg;
  pthread_cond_t ended; /* a lease of this handle ended (under reg) */
  uint64_t ends;        /* how many have ended: lets waiters not miss one */
  idem_lease *leases;   /* held leases, a doubly linked list (under reg) */
  unsigned nleases;     /* leases not yet freed, held or not (under reg) */
  pthread_t hb_thread;
  bool hb_running;  /* under reg */
  bool hb_stop;     /* under reg; hb_wake is signalled when it is set */
  bool ckpt_wanted; /* under reg: the WAL wants a checkpoint */
  int ckpt_pages;   /* under reg: the WAL's size at the last request */
  pthread_cond_t hb_wake;
  int64_t hb_started; /* lease clock when the thread was started: the first
                         round is due a period later (under reg) */

  pthread_mutex_t hb_mu;
  idem__store *hb_store; /* heartbeat connection, opened on first use */

  _Atomic uint64_t n_hits, n_claims, n_busy, n_poisoned, n_lost, n_mismatches,
      n_storage_errors, n_evicted;
};

#define IDEM__LEASE_HELD 0
#define IDEM__LEASE_DONE 1 /* completed, failed or released */
#define IDEM__LEASE_LOST 2 /* another owner's claim was seen */
/* Completed inside the application's open transaction (idem_complete_in_tx):
 * still held, and kept alive, until that transaction is known to have
 * committed (then DONE) or rolled back (then HELD again). */
#define IDEM__LEASE_IN_TX 3

struct idem_lease {
  idem_db *db;
  idem_lease *prev, *next; /* registry links, under db->reg */
  bool registered;         /* under db->reg */
  _Atomic int refs;        /* the caller's, plus a heartbeat round's */
  _Atomic int status;      /* IDEM__LEASE_* */
  /* Set before its holder's fenced call that ends it takes the write lock,
   * cleared if that call fails: a heartbeat round that finds the row moved
   * on while this is set leaves the verdict to that call, which commits
   * first or learns of the loss itself. */
  _Atomic bool ending;
  bool unguarded; /* IDEM_FAIL_OPEN: no row behind this lease */
  uint32_t attempt;
  uint64_t fence;
  unsigned char owner[16];
  _Atomic int64_t until; /* lease deadline, boot-clock ms */
  /* What idem_run() stores when the job returns. */
  void *result;
  size_t result_len;
  int result_code;
  int64_t finished_at; /* wall ms that this lease's finish wrote, or 0 */
  size_t key_len;
  unsigned char key[]; /* key_len bytes, then a NUL */
};

/* clock.c */
int64_t idem__now(const idem_db *db, int which);
int64_t idem__monotonic_ms(void);
int64_t idem__monotonic_us(void);
/* a + b and a - b of milliseconds, saturated at INT64_MIN and INT64_MAX. */
int64_t idem__ms_add(int64_t t, int64_t d);
int64_t idem__ms_sub(int64_t a, int64_t b);
void idem__self_init(idem__self *self);
/* A new owner id: unique per lease, without a call into libuuid. */
void idem__owner_next(idem__self *self, unsigned char out[16]);
/* Whether the process that wrote a lease is known to be gone: it ran in
 * this PID namespace and its pid now names no process, a zombie, or a
 * process started at another time. False whenever it cannot be told,
 * which includes a holder whose /proc entry we may not see (hidepid). */
bool idem__owner_gone(const idem__self *self, int64_t pid, int64_t pidns,
                      int64_t start);
/* Whether pid names no process (kill() answers ESRCH), or a dead one not
 * yet reaped (a zombie, as a /proc of this PID namespace shows it). A
 * reused pid looks alive, and so does a process hidden from us. */
bool idem__pid_gone(int64_t pid);
void idem__uuid_format(const unsigned char uuid[16], char out[37]);

/* error.c */
int idem__error(idem_db *db, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int idem__storage_error(idem_db *db, int sqlite_rc, const char *what,
                        const char *sqlite_msg);
int idem__code_of_sqlite(int sqlite_rc);
void idem__log(const idem_db *db, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* db.c */
void idem__lock(idem_db *db);
void idem__unlock(idem_db *db);
int idem__check_key(idem_db *db, const void *key, size_t key_len);

/* lease.c */
void idem__lease_unref(idem_lease *lease);
/* Marks a held lease lost; false (and nothing done) when it was not held
 * any more: ended by its holder, or already marked. */
bool idem__lease_mark_lost(idem_lease *lease);
/* Ends a lease completed in the application's transaction once a heartbeat
 * saw that transaction committed. */
void idem__lease_settled(idem_lease *lease);

/* fence_sql.c */
int idem__fence_sql_register(struct sqlite3 *conn);

/* heartbeat.c */
int idem__heartbeat_start(idem_db *db); /* called under db->reg */
void idem__heartbeat_stop(idem_db *db);
/* Moves the WAL checkpoint of the main connection to the heartbeat thread
 * (inline when there is none). */
void idem__checkpoint_hook(idem_db *db);

/* fork.c: handles and leases that crossed fork() (see fork.c's comment).
 * A handle is tracked from its allocation, before any connection opens,
 * until idem_close() has closed its connections (then untracked). */
void idem__fork_track(idem_db *db);
void idem__fork_untrack(void);
/* At the start of idem_open() and idem_open_db(): IDEM_EFORKED, with the
 * message and a log line, in a process that inherited open handles through
 * fork(); IDEM_ENOMEM if no fork handler could be registered. */
int idem__fork_check_open(idem_db *db, const char *path);
/* Whether `db` was opened before a fork() in this process's history, that
 * is, in an ancestor of this process. One atomic load: no system call, no
 * lock. A call on such a handle, or on a lease of it, must return
 * idem__fork_refused() before it touches SQLite, the handle's mutexes or
 * the heartbeat, none of which can be used in this process. */
bool idem__forked(const idem_db *db);
/* Logs the refusal of `call` and returns IDEM_EFORKED; writes nothing to
 * the handle. */
int idem__fork_refused(const idem_db *db, const char *call);
/* What idem_errmsg() says of an inherited handle. */
const char *idem__fork_errmsg(void);
/* idem_close() and idem_lease_free() of an inherited handle or lease. */
int idem__forked_close(idem_db *db);
void idem__forked_lease_free(idem_lease *lease);

#endif
