/* SPDX-License-Identifier: MIT */
/*
 * fork.c - handles and leases that crossed fork() are refused.
 *
 * SQLite's unix VFS keeps, per process, one record of the locks held on
 * each open file (keyed by device and inode), and takes the POSIX advisory
 * locks that record describes once for all the connections of the process.
 * A child of fork() inherits the records but not the locks, which POSIX
 * keeps per process. A connection the child opens to a file that an
 * inherited connection has open joins the inherited record, believes the
 * locks are held, and takes none that other processes can see. When the
 * parent then closes its handle, it finds no lock but its own, checkpoints
 * and deletes the WAL under the child: what the child writes afterwards
 * goes to a file nobody else reads, so its completions are lost and its
 * keys run again. Nor can the child close the inherited connection: that
 * could checkpoint and delete the WAL the parent is using. Hence SQLite's
 * rule, which libidem enforces for its own handles: no open connection
 * across fork().
 *
 * fork() is an event of the whole process, so what is kept here is
 * process-wide too: a generation that a pthread_atfork() child handler
 * bumps in every child, and the number of handles whose connections may
 * be open in this process, of which the child handler records how many
 * the child inherited. A handle remembers the generation it was made in; a
 * call on it compares that with the current one, one atomic load without
 * a system call (getpid() on every call would show on a cached hit). A
 * process that inherited any handle opens none, since the inherited
 * records stay for as long as it lives.
 *
 * The counters are word-sized so that their atomics are lock-free: the
 * child handler runs right after fork(), when a lock (such as one libatomic
 * would take for a wider type) may have been held by a thread of the
 * parent that the child does not have. glibc unregisters the atfork
 * handlers of a library that is dlclose()d, so the handler never outlives
 * its code in a shared library.
 */
#include "internal.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_bool installed;
static atomic_ulong generation; /* forks between the first process and us */
static atomic_long handles;     /* handles whose connections may be open */
static atomic_long inherited;   /* handles this process got through fork() */

/* In the child, before fork() returns there: only atomics, nothing that
 * could wait for a lock. Every handle counted is inherited, including
 * those the parent inherited itself: their connections are still open. */
static void in_child(void) {
  atomic_store(&inherited, atomic_load(&handles));
  atomic_fetch_add(&generation, 1);
}

static void install(void) {
  atomic_store(&installed, pthread_atfork(NULL, NULL, in_child) == 0);
}

/* Counted before the handle opens any connection and until idem_close()
 * has closed them, so that a fork() at any moment in between, from another
 * thread, leaves a child that knows. */
void idem__fork_track(idem_db *db) {
  pthread_once(&once, install);
  atomic_fetch_add(&handles, 1);
  db->fork_gen = atomic_load(&generation);
}

void idem__fork_untrack(void) {
  atomic_fetch_sub(&handles, 1);
}

bool idem__forked(const idem_db *db) {
  return atomic_load_explicit(&generation, memory_order_relaxed) !=
         db->fork_gen;
}

int idem__fork_check_open(idem_db *db, const char *path) {
  if (!atomic_load(&installed))
    return idem__error(db, IDEM_ENOMEM,
                       "out of memory for a fork handler: without one a "
                       "child could not be told from its parent");
  long n = atomic_load(&inherited);
  if (n == 0)
    return IDEM_OK;
  idem__error(db, IDEM_EFORKED,
              "%s%srefused: this process was forked from one with %ld "
              "libidem handle(s) open, and a connection opened here would "
              "share their SQLite lock records and hold no real lock, so its "
              "writes could be lost; close every handle before fork(), open "
              "handles only in the child processes, or exec() a new program",
              path && *path ? path : "", path && *path ? ": " : "", n);
  idem__log(db, IDEM_LOG_ERROR, "%s", db->errmsg);
  return IDEM_EFORKED;
}

const char *idem__fork_errmsg(void) {
  return "this handle was opened before fork() and inherited by this "
         "process, which must not use it: SQLite's locks do not cross "
         "fork(); close handles before fork(), open them only in the child "
         "processes, or exec() a new program";
}

/* Neither the message buffer nor anything else behind the handle's mutexes
 * is written: a thread of the parent may have held them at fork(), and it
 * does not exist here to let go. */
int idem__fork_refused(const idem_db *db, const char *call) {
  idem__log(db, IDEM_LOG_ERROR, "%s: %s refused (IDEM_EFORKED): %s",
            db->path ? db->path : "", call, idem__fork_errmsg());
  return IDEM_EFORKED;
}

/* The connections are left open, and with them the handle that points to
 * them, until the process exits or execs: closing one could checkpoint and
 * delete the parent's WAL, and the application's connection (idem_open_db)
 * keeps a busy handler that points into the handle's store. Freeing the
 * handle alone would only turn what must stay into a leak. Its mutexes are
 * not touched: one may be locked for good. */
int idem__forked_close(idem_db *db) {
  return idem__fork_refused(db, "idem_close");
}

/* The lease is the parent's, which still holds it in the database: the
 * child only drops its copy, unless a heartbeat round of the parent had
 * a reference to it at fork() (then it stays allocated). */
void idem__forked_lease_free(idem_lease *lease) {
  (void)idem__fork_refused(lease->db, "idem_lease_free");
  idem__lease_unref(lease);
}
