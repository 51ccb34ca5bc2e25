/* SPDX-License-Identifier: MIT */
/*
 * idem.h - run a job once per idempotency key on one host, with SQLite.
 *
 * This header is the whole public interface of libidem and its manual.
 * Anything not declared here is not API and may change at any time.
 *
 * CONCEPTS
 *
 * A key names one job. Every process and thread on the host that opens the
 * same database file agrees, for each key, on one row holding a small state
 * machine:
 *
 *   absent --claim--> pending --complete--> completed
 *                        |   --fail------> failed
 *                        |   --release---> pending, no lease (claimable now)
 *                        |   --lease expires or owner dies--> claimable
 *                        +---(attempts spent)-> poisoned
 *
 * idem_begin() looks the key up, and in the same SQLite write transaction
 * either hands the caller a lease (IDEM_CLAIMED) or tells it why not: the
 * cached result (IDEM_COMPLETED, IDEM_FAILED), a live lease held elsewhere
 * (IDEM_BUSY, with the real time left on it) or a spent attempt budget
 * (IDEM_POISONED). Every claim counts one attempt and carries a fencing
 * token: a 64-bit number that strictly increases with every claim of the
 * key and is never reused, not even after idem_reset() or a purge (nor
 * after a power loss, under IDEM_SYNC_FULL).
 * idem_complete(), idem_release(), idem_fail() and heartbeats only take
 * effect while the row still carries the caller's owner id and fence, so a
 * holder that was paused past its TTL and overtaken cannot finish the job
 * over its successor: it gets IDEM_ELEASELOST and nothing changes.
 *
 * WHAT "ONCE" MEANS
 *
 * A key is completed at most once and its result never changes afterwards.
 * A job body can run a second time only when the first holder crashed or
 * lost its lease (it was paused or cut off past its TTL); that holder's
 * completion is then rejected. Side effects outside the database should
 * carry the fencing token so that the system receiving them can refuse a
 * stale holder too.
 *
 * TIME
 *
 * Leases are kept on the boot-time clock (CLOCK_BOOTTIME), which every
 * process of one host shares and which neither NTP nor `date -s` moves; the
 * row also records the boot id (/proc/sys/kernel/random/boot_id), and a
 * lease written under another boot id is treated as expired. The wall clock
 * is used only for retention and display. Limits: processes in different
 * Linux time namespaces see different boot-time clocks and must not share a
 * database; where a boot id cannot be read (no /proc/sys, as under
 * systemd's ProcSubset=pid) it counts as unknown, not as another one: only
 * two boot ids that were both read and differ prove a reboot. When either
 * side's is unknown, a reboot is not detected, and a lease from before it
 * ends by its recorded deadline.
 *
 * LIVENESS
 *
 * A lease row also names its holder process: PID namespace, pid and start
 * time. When a begin finds a live lease whose holder ran in the caller's
 * PID namespace on this boot, and that pid now names no process, a zombie,
 * or a process that started at another time (a reused pid), the holder is
 * dead and the key is claimed at once, as a new attempt with a new fence,
 * instead of after the TTL. Only kill(pid, 0) failing with ESRCH, or /proc
 * showing a zombie or another start time, proves it. Holders in another
 * PID namespace, holders whose /proc entry the caller may not see
 * (hidepid=2, systemd's ProtectProc=invisible), or where /proc cannot be
 * read, are waited out by their TTL. This only proves death on this host;
 * IDEM_OPEN_TTL_ONLY turns it off.
 *
 * THREADS, PROCESSES, FORK
 *
 * An idem_db handle may be used by any number of threads at once: every call
 * takes the handle's mutex around its transaction. A lease may be used by
 * one thread at a time; idem_lease_lost() may be called from any thread.
 * Any number of processes may open the same file, on one host only: SQLite's
 * WAL mode needs shared memory, so network file systems are not supported.
 *
 * Do not carry an open handle across fork(). POSIX advisory locks belong
 * to a process, and SQLite keeps, per process, one record of those it holds
 * on each file; a child inherits the records but not the locks. A handle
 * the child opens to the same file while an inherited one is open shares
 * the inherited record and holds no lock that other processes can see:
 * when the parent closes its handle, it checkpoints and deletes the WAL
 * under the child, whose completions are then lost and whose keys run
 * again. So open handles only in the children, after fork(); or close
 * every handle before fork(); or exec() in the child before calling
 * libidem.
 *
 * libidem refuses anything else with IDEM_EFORKED, and no other effect. In
 * a process that inherited open handles, from its parent or an earlier
 * ancestor (even if it has closed them since), idem_open() and
 * idem_open_db() fail, and so does every call on an inherited handle or
 * lease, before it touches the database, the handle's locks or the
 * heartbeat (which the child does not have); idem_lease_lost(),
 * idem_lease_fence() and idem_lease_attempt() read the child's copy.
 * idem_close() of an inherited handle returns IDEM_EFORKED and ends the
 * handle, but leaves its SQLite connections open, and their memory
 * allocated, until the process exits or execs: closing them could delete
 * the WAL the parent is using. idem_lease_free() of an inherited lease
 * frees the child's copy; the lease stays the parent's. The parent's
 * handles are not affected, and a child whose parent had no handle open
 * at fork() opens its own normally. libidem sees only its own handles and
 * the forks that run pthread_atfork() handlers: a connection opened with
 * SQLite directly is not counted, and a process made by a raw clone() or
 * _Fork() is not seen as a child.
 *
 * ERRORS
 *
 * Functions that can fail return an int: 0 (IDEM_OK) or a positive answer
 * on success, a negative IDEM_E* code on failure. idem_errstr() names a code;
 * idem_errmsg() describes the last failure on a handle, with the file name
 * and SQLite's own message where there is one. The library never writes to
 * stdout or stderr; it reports through the optional log callback.
 *
 * MEMORY
 *
 * Input buffers are copied; the library keeps no pointer to them after a
 * call returns. Memory the library hands out is released with the matching
 * function named in each declaration (idem_answer_clear(),
 * idem_record_clear(), idem_lease_free()), never with free().
 */
#ifndef IDEM_H
#define IDEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(IDEM_STATIC)
#define IDEM_EXPORT
#elif defined(__GNUC__)
#define IDEM_EXPORT __attribute__((visibility("default")))
#else
#define IDEM_EXPORT
#endif

/* The version, kept here and nowhere else; the build reads it from here. */
#define IDEM_VERSION_MAJOR 0
#define IDEM_VERSION_MINOR 2
#define IDEM_VERSION_PATCH 0
#define IDEM_VERSION_STRING "0.2.0"
#define IDEM_VERSION_NUMBER                                                    \
  (IDEM_VERSION_MAJOR * 1000000 + IDEM_VERSION_MINOR * 1000 +                  \
   IDEM_VERSION_PATCH)

/* Limits on what the library stores, in bytes. Larger inputs are refused
 * with IDEM_ETOOBIG, never truncated. */
#define IDEM_MAX_KEY 4096
#define IDEM_MAX_RESULT (16 * 1024 * 1024)
#define IDEM_MAX_FINGERPRINT 65536
#define IDEM_MAX_NAME 256
#define IDEM_MAX_REASON 1024
/* The longest duration an option or argument takes, in milliseconds
 * (ttl_ms, heartbeat_ms, retention_ms, wait_ms): 100 years, which is
 * "forever" for any job, and far enough from INT64_MAX that adding one to
 * any clock reading cannot overflow. Longer values are refused with
 * IDEM_EINVAL. */
#define IDEM_MAX_DURATION_MS INT64_C(3155760000000)

/* --- Result codes -------------------------------------------------------
 * Errors are negative. Their numbers are fixed: new codes are appended,
 * none is ever reused. */
#define IDEM_OK 0
/* An argument is NULL, empty or malformed, or a struct was not initialised
 * with its _INIT macro. */
#define IDEM_EINVAL (-1)
/* A call out of order: a lease already finished, a handle closed while its
 * leases are not freed. */
#define IDEM_EMISUSE (-2)
/* Out of memory; nothing was changed. */
#define IDEM_ENOMEM (-3)
/* The lease is no longer the caller's: another owner claimed the key, or
 * it was reset. Nothing was changed. */
#define IDEM_ELEASELOST (-4)
/* The key is known with another fingerprint. */
#define IDEM_EMISMATCH (-5)
/* A key, result, fingerprint, name or reason is over its IDEM_MAX_*. */
#define IDEM_ETOOBIG (-6)
/* No row for that key (idem_get(), idem_reset()). */
#define IDEM_ENOTFOUND (-7)
/* The file cannot be opened or created: no such directory, a directory,
 * permissions. */
#define IDEM_ECANTOPEN (-8)
/* The file is not an SQLite database. */
#define IDEM_ENOTDB (-9)
/* An SQLite database of another application (see IDEM_OPEN_SHARED). */
#define IDEM_EFOREIGN (-10)
/* idem tables of an unknown or newer schema. */
#define IDEM_ESCHEMA (-11)
/* The database cannot be written. */
#define IDEM_EREADONLY (-12)
/* The disk or file system is full. */
#define IDEM_EFULL (-13)
/* The database stayed locked past the busy timeout; nothing was changed. */
#define IDEM_EBUSY (-14)
/* An I/O error or another storage failure. */
#define IDEM_EIO (-15)
/* The database file is damaged. */
#define IDEM_ECORRUPT (-16)
/* The commit of a completion failed: it may or may not be stored (see
 * idem_complete()). */
#define IDEM_EUNKNOWN (-17)
/* A handle or lease used in a child of fork() that was made before the
 * fork, or a handle opened in a process that inherited open handles
 * through fork() (see THREADS, PROCESSES, FORK). Nothing was done. */
#define IDEM_EFORKED (-18)

/* Answers of idem_begin() and idem_run(): positive, never errors. */
#define IDEM_CLAIMED 1   /* the caller holds the lease and runs the job */
#define IDEM_COMPLETED 2 /* done before (or by idem_run now): the result */
#define IDEM_FAILED 3    /* failed terminally with idem_fail(): its result */
#define IDEM_BUSY 4      /* another owner holds a live lease */
#define IDEM_POISONED 5  /* max_attempts spent; runs again after a reset */
#define IDEM_RELEASED 6  /* idem_run() only: the job asked to be retried */

/* States of a stored row, as idem_get() and idem_list() report them. */
#define IDEM_STATE_ABSENT 0
#define IDEM_STATE_PENDING 1
#define IDEM_STATE_COMPLETED 2
#define IDEM_STATE_FAILED 3
#define IDEM_STATE_POISONED 4

typedef struct idem_db idem_db;
typedef struct idem_lease idem_lease;
struct sqlite3; /* from <sqlite3.h>, for idem_open_db() */

/* --- Version and errors ------------------------------------------------ */

/* The library's version string and number (IDEM_VERSION_NUMBER of the
 * library actually linked). Thread-safe. */
IDEM_EXPORT const char *idem_version(void);
IDEM_EXPORT int idem_version_number(void);

/* A short static English description of a result code or answer, e.g.
 * "lease lost". Unknown codes give "unknown result code". Thread-safe; the
 * string is static and must not be freed. */
IDEM_EXPORT const char *idem_errstr(int code);

/* The message of the most recent failure on this handle, naming the file
 * and cause, or "" if none. The pointer is owned by the handle and valid
 * until the next call on it. When threads share a handle the message may
 * belong to another thread's call; the code each call returned is always
 * its own. Returns "" for NULL. */
IDEM_EXPORT const char *idem_errmsg(const idem_db *db);

/* --- Opening a database ------------------------------------------------ */

/* Durability (idem_options.synchronous). Both use WAL mode.
 * IDEM_SYNC_NORMAL: every answer survives a crash of the application; a
 *   power loss may undo the transactions since the last checkpoint, claims
 *   included: a completed key may come back pending or absent (never
 *   half-written), and the fences handed out since may be handed out
 *   again. Only FULL keeps "never reused" across power loss.
 * IDEM_SYNC_FULL: every answer is on stable storage before it is returned. */
#define IDEM_SYNC_NORMAL 1
#define IDEM_SYNC_FULL 2

/* What a begin does when storage fails (idem_options.fail_policy).
 * IDEM_FAIL_CLOSED: the error is returned and nothing runs (the default).
 * IDEM_FAIL_OPEN: the answer is IDEM_CLAIMED with an unguarded lease
 *   (idem_answer.unguarded), so the job runs without protection and may run
 *   more than once. Unsafe: only for callers who prefer a duplicate run to
 *   no run at all. The error is still logged and counted. Completing or
 *   failing an unguarded lease stores its result once storage allows, if
 *   no one else has the key by then (see idem_complete()). */
#define IDEM_FAIL_CLOSED 0
#define IDEM_FAIL_OPEN 1

/* Flags of idem_options.flags. */
/* Reading only: idem_get(), idem_list(), idem_stats_get(); no file change. */
#define IDEM_OPEN_READONLY 0x1
/* Fail with IDEM_ECANTOPEN instead of creating a missing file. */
#define IDEM_OPEN_NOCREATE 0x2
/* Allow adding the idem tables to a database that holds other tables. */
#define IDEM_OPEN_SHARED 0x4
/* End a lease by its TTL only; by default a lease whose holder process is
 * known to be gone is claimable at once (see LIVENESS above). */
#define IDEM_OPEN_TTL_ONLY 0x8

/* Which clock the clock callback is asked for. */
#define IDEM_CLOCK_LEASE 0 /* milliseconds of boot time: lease deadlines */
#define IDEM_CLOCK_WALL 1  /* milliseconds since the Unix epoch: retention */

#define IDEM_LOG_ERROR 0
#define IDEM_LOG_WARN 1
#define IDEM_LOG_INFO 2

typedef struct idem_options {
  /* IDEM_OPTIONS_VERSION of the header the caller was compiled with. The
   * struct only grows at its end; the library reads only the fields that
   * version has and uses defaults for the rest. */
  unsigned version;
  int64_t ttl_ms;        /* lease lifetime; default 60000; 1 to
                            IDEM_MAX_DURATION_MS */
  int64_t heartbeat_ms;  /* refresh period; 0 = ttl_ms / 2; < 0 = no
                            background thread (call idem_heartbeat()) */
  uint32_t max_attempts; /* claims per key before it is poisoned;
                            default 5; 0 = unlimited (up to
                            UINT32_MAX claims: the count never
                            wraps) */
  int64_t retention_ms;  /* how long completed and failed rows are served;
                            default 86400000 (24 h); 0 = forever; at
                            most IDEM_MAX_DURATION_MS */
  int busy_timeout_ms;   /* wait for the write lock (in the writers'
                            queue, then polling); default 5000; 0 =
                            never wait */
  int synchronous;       /* IDEM_SYNC_NORMAL (default) or IDEM_SYNC_FULL */
  int fail_policy;       /* IDEM_FAIL_CLOSED (default) or IDEM_FAIL_OPEN */
  unsigned flags;        /* IDEM_OPEN_* */
  /* Called with a message of one line for events worth an operator's eye
   * (storage errors, lost leases, poisoned keys). May be called from the
   * heartbeat thread; must not call back into the same handle. */
  void (*log)(void *ctx, int level, const char *msg);
  void *log_ctx;
  /* Replaces the clock (tests move time instead of sleeping). Must return
   * milliseconds of the clock named by `which` (IDEM_CLOCK_*), never going
   * backwards for IDEM_CLOCK_LEASE; called from any thread. */
  int64_t (*clock)(void *ctx, int which);
  void *clock_ctx;
  /* Told once, after the commit, when a claim turns a key poisoned. Runs on
   * the calling thread with no lock held. */
  void (*on_poison)(void *ctx, const void *key, size_t key_len,
                    uint32_t attempts);
  void *poison_ctx;
  /* Told from the heartbeat when it finds that a lease of this handle,
   * still held by the job, was taken over or its key poisoned or reset;
   * never for a lease its holder ended or freed before the round saw it.
   * The lease stays valid during the call, even if the job frees it at
   * the same moment. Must not block; must not free the lease. */
  void (*on_lost)(void *ctx, idem_lease *lease);
  void *lost_ctx;
  /* Storage caps for small devices, enforced by idem_purge(): at most
   * max_rows completed and failed rows, holding at most max_bytes of
   * results. Over a cap, purge evicts the rows whose retention ends
   * soonest, then those kept forever, oldest first. Pending and poisoned
   * rows are never evicted. 0 = no cap. */
  uint64_t max_rows;
  uint64_t max_bytes;
} idem_options;

#define IDEM_OPTIONS_VERSION 1
#define IDEM_OPTIONS_INIT                                                      \
  {                                                                            \
    IDEM_OPTIONS_VERSION, 60000, 0, 5, 86400000, 5000, IDEM_SYNC_NORMAL,       \
        IDEM_FAIL_CLOSED, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,   \
        0, 0                                                                   \
  }

/* Opens (and if needed creates) the database at `path`: a file name or an
 * SQLite URI ("file:jobs.db?vfs=..."). `opts` may be NULL for the defaults;
 * it is copied. On success *out is a handle to close with idem_close().
 *
 * Before writing anything the file is checked: a file that is not an SQLite
 * database (IDEM_ENOTDB), a database of another application (IDEM_EFOREIGN,
 * unless IDEM_OPEN_SHARED) and an idem schema newer than this library
 * (IDEM_ESCHEMA) are refused and left byte for byte as they were.
 *
 * Besides SQLite's "-wal" and "-shm" files, a handle that writes keeps a
 * file "<path>-lockq" beside the database, with the database's owner and
 * mode: the queue in which writers of all processes wait their turn for
 * the write lock, first come first served. It holds no data; deleting it
 * is harmless. Where it cannot be created, writers poll for the lock
 * instead (see docs/design.md). idem_file_suffix() names every file that
 * may be found beside a database.
 *
 * Returns IDEM_OK, IDEM_EINVAL, IDEM_ENOMEM, IDEM_ECANTOPEN, IDEM_ENOTDB,
 * IDEM_EFOREIGN, IDEM_ESCHEMA, IDEM_EREADONLY, IDEM_EFULL, IDEM_EBUSY,
 * IDEM_EIO, IDEM_ECORRUPT. Like sqlite3_open(), *out is set to a handle
 * even when opening fails (unless there was no memory for one, when it is
 * NULL), so that idem_errmsg() can say why; close it with idem_close(),
 * which accepts NULL. Thread-safe. */
IDEM_EXPORT int idem_open(idem_db **out, const char *path,
                          const idem_options *opts);

/* The files of the database at `path` are named `path` followed by each of
 * these suffixes, for i = 0, 1, ... until the answer is NULL:
 *   ""          the database itself
 *   "-wal"      SQLite's write-ahead log: committed transactions that may
 *               not be in the database yet
 *   "-shm"      the write-ahead log's shared index
 *   "-lockq"    the writers' queue (see idem_open())
 *   "-journal"  SQLite's rollback journal: only while a new database is
 *               being created, or after a crash then
 * Any but the database may be missing at a given moment. Later versions may
 * append suffixes but never remove or reorder them, so loop until NULL
 * instead of counting. To delete a database, remove all of its files once
 * no process has it open: a "-wal" or "-journal" may hold transactions the
 * database needs, and one left behind would be applied to a new database
 * created under the same name. For an SQLite URI, `path` is the file name
 * it gives. Returns a static string, not to be freed, or NULL once i is
 * past the last suffix. Thread-safe. */
IDEM_EXPORT const char *idem_file_suffix(unsigned i);

/* Opens libidem on a connection the application already has, to a file
 * that holds its own tables too, so that a job whose effect is a write to
 * that database can commit the effect and the completion in one
 * transaction (idem_complete_in_tx()). The idem tables are added if
 * missing; the connection is switched to WAL mode, given `synchronous`
 * and a busy handler of busy_timeout_ms, and gets the SQL function
 *   idem_fence_ok(key, fence)
 * which is 1 while `fence` is the key's current claim (held, or completed
 * or failed under it) and 0 otherwise, so the application's own writes can
 * refuse a stale holder: UPDATE ... WHERE ... AND idem_fence_ok(?, ?).
 *
 * The connection stays the application's: it must outlive the handle, and
 * idem_close() does not close it (it leaves a busy timeout in place of the
 * handler). Call idem_begin() and the other calls outside the
 * application's transactions, except idem_complete_in_tx(): inside one, a
 * call that must write fails with a storage error and leaves the
 * application's transaction open and unchanged (libidem never ends a
 * transaction it did not begin). The handle and the connection are used by
 * one thread at a time. The heartbeat opens its
 * own connection to the same file.
 * Returns what idem_open() returns; IDEM_EINVAL for a NULL, in-memory or
 * temporary connection or IDEM_OPEN_READONLY; IDEM_EMISUSE if a
 * transaction is open. *out is set as by idem_open(). */
IDEM_EXPORT int idem_open_db(idem_db **out, struct sqlite3 *conn,
                             const idem_options *opts);

/* Closes the handle and frees it. Refused with IDEM_EMISUSE (and nothing
 * happens) while lease objects of this handle are not yet freed with
 * idem_lease_free(), held or not. idem_close(NULL) returns IDEM_OK. Not
 * thread-safe: no other call on `db` may run or follow. */
IDEM_EXPORT int idem_close(idem_db *db);

/* --- Claiming and finishing a key -------------------------------------- */

typedef struct idem_begin_opts {
  unsigned version;        /* IDEM_BEGIN_OPTS_VERSION */
  const void *fingerprint; /* what the request was; may be NULL */
  size_t fingerprint_len;  /* <= IDEM_MAX_FINGERPRINT */
  const char *name;        /* task name to record; may be NULL */
  int64_t wait_ms;         /* if busy, wait up to this long for the key
                              to complete or become claimable; 0 = no
                              wait; < 0 = wait without limit; at most
                              IDEM_MAX_DURATION_MS */
} idem_begin_opts;

#define IDEM_BEGIN_OPTS_VERSION 1
#define IDEM_BEGIN_OPTS_INIT                                                   \
  { IDEM_BEGIN_OPTS_VERSION, NULL, 0, NULL, 0 }

/* What idem_begin() and idem_run() found. Initialise with IDEM_ANSWER_INIT;
 * release with idem_answer_clear(), which may be called any number of
 * times. */
typedef struct idem_answer {
  unsigned version;  /* IDEM_ANSWER_VERSION */
  int status;        /* the answer, IDEM_CLAIMED ... IDEM_RELEASED */
  idem_lease *lease; /* IDEM_CLAIMED: the lease, owned by the caller, to
                        finish with idem_complete/release/fail and then
                        free with idem_lease_free(); not freed by
                        idem_answer_clear() */
  void *result;      /* IDEM_COMPLETED, IDEM_FAILED: the stored bytes
                        (a private copy, NUL-terminated for convenience,
                        owned by the answer) */
  size_t result_len;
  int code;            /* the code given to idem_fail() (0 if completed) */
  uint32_t attempts;   /* claims counted so far, this one included */
  uint64_t fence;      /* fencing token of the current or last claim */
  char owner[37];      /* IDEM_CLAIMED, IDEM_BUSY: the lease owner's UUID */
  int64_t lease_ms;    /* IDEM_CLAIMED, IDEM_BUSY: milliseconds left on the
                          lease */
  int64_t finished_at; /* IDEM_COMPLETED, IDEM_FAILED: wall time, ms */
  int unguarded;       /* IDEM_CLAIMED under IDEM_FAIL_OPEN after a storage
                          error: no row protects this run */
  int ran;             /* idem_run(): the job ran in this call */
} idem_answer;

#define IDEM_ANSWER_VERSION 1
#define IDEM_ANSWER_INIT                                                       \
  { IDEM_ANSWER_VERSION, 0, NULL, NULL, 0, 0, 0, 0, {0}, 0, 0, 0, 0 }

/* Looks up `key` (any bytes, 1..IDEM_MAX_KEY long, NUL bytes allowed) and,
 * in one write transaction, claims it or reports why not. `opts` may be
 * NULL. `out` must have been initialised with IDEM_ANSWER_INIT or cleared.
 *
 * Returns the answer (also in out->status):
 *   IDEM_CLAIMED   out->lease is the caller's; attempts, fence, owner and
 *                  lease_ms describe it; the heartbeat keeps it alive.
 *   IDEM_COMPLETED out->result holds the cached result; nothing was written.
 *   IDEM_FAILED    out->result and out->code hold the recorded failure.
 *   IDEM_BUSY      out->lease_ms is the real time left on the other owner's
 *                  lease (a good moment to retry); no attempt was counted.
 *   IDEM_POISONED  the attempts are spent (maybe by this very call, which
 *                  then tells on_poison); stays so until idem_reset().
 * or an error: IDEM_EINVAL, IDEM_ETOOBIG, IDEM_EMISMATCH (a different
 * fingerprint was recorded for the key; nothing is revealed of it),
 * IDEM_EREADONLY, IDEM_ENOMEM, IDEM_EBUSY, IDEM_EFULL, IDEM_EIO,
 * IDEM_ECORRUPT. On error nothing was changed.
 * Thread-safe. */
IDEM_EXPORT int idem_begin(idem_db *db, const void *key, size_t key_len,
                           const idem_begin_opts *opts, idem_answer *out);

/* Frees what the answer owns (not the lease) and resets it to
 * IDEM_ANSWER_INIT. NULL is a no-op. Thread-safe for distinct answers. */
IDEM_EXPORT void idem_answer_clear(idem_answer *out);

/* Stores `result` (len bytes, 0..IDEM_MAX_RESULT; NULL only when len is 0)
 * and makes the key completed, if and only if the row still carries this
 * lease's owner and fence. Retention starts now.
 *
 * Returns IDEM_OK; IDEM_ELEASELOST (another owner claimed the key or it was
 * reset; nothing changed); IDEM_EMISUSE (the lease was already finished);
 * IDEM_EINVAL; IDEM_ETOOBIG; IDEM_ENOMEM, IDEM_EBUSY, IDEM_EFULL,
 * IDEM_EREADONLY, IDEM_EIO, IDEM_ECORRUPT (nothing was stored; the lease is
 * still held, call again); or IDEM_EUNKNOWN: the commit itself failed, so
 * the completion may or may not be on disk. After IDEM_EUNKNOWN call
 * idem_complete() again with the same result: it returns IDEM_OK once the
 * completion is stored, whether by the first call or this one, or
 * IDEM_ELEASELOST if it was not and the key has moved on.
 * An unguarded lease (IDEM_FAIL_OPEN) has no row: its result is stored
 * with a claim of its own, in the same transaction, when a begin could
 * claim the key now; where another owner holds, finished or poisoned the
 * key it is IDEM_ELEASELOST and nothing is stored; after a storage error
 * nothing is stored, and the call can be made again.
 * Not thread-safe for one lease; thread-safe across leases. */
IDEM_EXPORT int idem_complete(idem_lease *lease, const void *result,
                              size_t len);

/* Like idem_complete(), but inside the transaction the application has
 * open on its own connection (see idem_open_db()), so that the job's own
 * writes and the completion commit together, or not at all. It neither
 * begins nor commits: the application does. Fenced: on IDEM_ELEASELOST
 * the application must roll back, and nothing of the job is kept.
 * On IDEM_OK the lease stays held, and kept alive by the heartbeat, until
 * the transaction ends, and the lease's other calls answer IDEM_EMISUSE
 * until then. If the application commits, the lease is finished. If it
 * rolls back, nothing was completed and the lease is the job's again: the
 * next call on it (idem_complete_in_tx() in a new transaction,
 * idem_complete(), idem_fail(), idem_release()) works as before the first
 * one, and idem_lease_free() releases it. A lease freed while the
 * transaction is still open is left to it: a rollback then leaves the key
 * pending until this lease's TTL ends.
 * Returns IDEM_OK, IDEM_ELEASELOST, IDEM_EMISUSE (not an idem_open_db()
 * handle, no transaction open, lease already finished), IDEM_EINVAL,
 * IDEM_ETOOBIG, or a storage error (roll back). Not thread-safe for one
 * lease. */
IDEM_EXPORT int idem_complete_in_tx(idem_lease *lease, const void *result,
                                    size_t len);

/* Records a terminal failure: the key answers IDEM_FAILED with `result`
 * and `code` until retention ends or it is reset. Fenced like
 * idem_complete(), with the same result codes. */
IDEM_EXPORT int idem_fail(idem_lease *lease, int code, const void *result,
                          size_t len);

/* Gives the lease back: the attempt stays counted and the key can be
 * claimed again at once. `reason` (may be NULL, <= IDEM_MAX_REASON) is kept
 * for the log. Fenced; returns IDEM_OK, IDEM_ELEASELOST, IDEM_EMISUSE,
 * IDEM_EINVAL (NULL lease), IDEM_ETOOBIG or a storage error. After a storage
 * error the lease is still held, and still kept alive by the heartbeat: call
 * idem_release() again, or finish the job; a lease freed while the release
 * still cannot be written ends by its TTL. */
IDEM_EXPORT int idem_release(idem_lease *lease, const char *reason);

/* Non-zero once the lease is known to be lost: a heartbeat or a fenced call
 * found another owner's claim. The job should stop; its result will be
 * refused. Thread-safe. */
IDEM_EXPORT int idem_lease_lost(const idem_lease *lease);

/* The lease's fencing token and attempt number. Thread-safe. */
IDEM_EXPORT uint64_t idem_lease_fence(const idem_lease *lease);
IDEM_EXPORT uint32_t idem_lease_attempt(const idem_lease *lease);

/* Frees a lease object. A lease that is still held is released first (its
 * attempt stays counted). NULL is a no-op. After this call the pointer is
 * invalid. Not thread-safe for one lease. */
IDEM_EXPORT void idem_lease_free(idem_lease *lease);

/* Refreshes every live lease of the handle in one transaction, as the
 * background thread does every heartbeat_ms (of the lease clock: a round
 * follows a suspend of the host within a second). Each deadline is set to
 * ttl_ms after the moment the write lock is held. For callers that run
 * without the thread (heartbeat_ms < 0) or want a refresh now. *lost_out
 * (may be NULL) gets the number of leases found lost in this round.
 * Returns IDEM_OK, IDEM_EINVAL (NULL handle) or a storage error.
 * Thread-safe. */
IDEM_EXPORT int idem_heartbeat(idem_db *db, unsigned *lost_out);

/* --- The whole cycle in one call --------------------------------------- */

/* What a job returns to idem_run(). */
#define IDEM_JOB_DONE 0  /* complete the key with the result set */
#define IDEM_JOB_RETRY 1 /* release: the key may be claimed again */
#define IDEM_JOB_FAIL 2  /* fail terminally with the result set */

/* The job. It may call idem_lease_set_result() to say what to store, and
 * should check idem_lease_lost() in long loops. */
typedef int (*idem_job_fn)(void *ctx, idem_lease *lease);

/* Inside a job run by idem_run(): the bytes (copied) and code to store.
 * Returns IDEM_OK, IDEM_EINVAL, IDEM_ETOOBIG, IDEM_ENOMEM. */
IDEM_EXPORT int idem_lease_set_result(idem_lease *lease, const void *result,
                                      size_t len, int code);

/* idem_begin(), then on IDEM_CLAIMED runs fn and completes, releases or
 * fails the key as fn says, all fenced. With opts->wait_ms a busy key is
 * waited for (woken early when a lease of this handle ends) and its result
 * returned. The answer is IDEM_COMPLETED (out->ran tells whether fn ran in
 * this call), IDEM_FAILED, IDEM_RELEASED, IDEM_BUSY or IDEM_POISONED, or
 * any error of idem_begin() and idem_complete(); IDEM_ELEASELOST means fn
 * ran but its result was refused. out->lease is always NULL on return.
 * Thread-safe. */
IDEM_EXPORT int idem_run(idem_db *db, const void *key, size_t key_len,
                         const idem_begin_opts *opts, idem_job_fn fn, void *ctx,
                         idem_answer *out);

/* --- Administration ---------------------------------------------------- */

/* A stored row, as idem_get() and idem_list() report it. */
typedef struct idem_record {
  unsigned version; /* IDEM_RECORD_VERSION */
  int state;        /* IDEM_STATE_* */
  void *key;        /* the key bytes (NUL-terminated copy) */
  size_t key_len;
  uint32_t attempts;
  uint64_t fence;
  char owner[37];     /* "" when no lease is held */
  int64_t lease_ms;   /* ms left on the lease; <= 0 when expired */
  int64_t created_at; /* wall time, ms since the epoch */
  int64_t updated_at;
  int64_t expires_at; /* end of retention; 0 = kept forever */
  int code;
  size_t result_len;
  void *result; /* idem_get() only, NUL-terminated; else NULL */
  int has_fingerprint;
  char name[IDEM_MAX_NAME + 1];
} idem_record;

#define IDEM_RECORD_VERSION 1
#define IDEM_RECORD_INIT                                                       \
  {                                                                            \
    IDEM_RECORD_VERSION, 0, NULL, 0, 0, 0, {0}, 0, 0, 0, 0, 0, 0, NULL, 0, {   \
      0                                                                        \
    }                                                                          \
  }

/* Fills *out with the row of `key`. Returns IDEM_OK, IDEM_ENOTFOUND,
 * IDEM_EINVAL, IDEM_ETOOBIG or a storage error. Release with
 * idem_record_clear(). Thread-safe. */
IDEM_EXPORT int idem_get(idem_db *db, const void *key, size_t key_len,
                         idem_record *out);

/* Frees what the record owns and resets it. NULL is a no-op. */
IDEM_EXPORT void idem_record_clear(idem_record *rec);

/* Called once per row by idem_list(), with no lock held; the record is
 * valid during the call only. Return non-zero to stop. */
typedef int (*idem_list_fn)(void *ctx, const idem_record *rec);

/* Lists up to `limit` rows in key order, after the key `after` (NULL or
 * after_len 0 to start at the beginning), of state `state`
 * (IDEM_STATE_*, or -1 for all). To page, pass the last key seen.
 * *count_out (may be NULL) gets the number of rows reported.
 * Returns IDEM_OK, IDEM_EINVAL, IDEM_ETOOBIG (after_len over
 * IDEM_MAX_KEY), IDEM_ENOMEM or a storage error.
 * Thread-safe. */
IDEM_EXPORT int idem_list(idem_db *db, int state, const void *after,
                          size_t after_len, unsigned limit, idem_list_fn fn,
                          void *ctx, unsigned *count_out);

/* How an attempt ended, in a key's history. */
#define IDEM_OUTCOME_RUNNING 0   /* not ended yet */
#define IDEM_OUTCOME_COMPLETED 1 /* idem_complete() */
#define IDEM_OUTCOME_RELEASED 2  /* idem_release(); message: its reason */
#define IDEM_OUTCOME_FAILED 3    /* idem_fail(); code: its code */
#define IDEM_OUTCOME_LOST 4      /* taken over, and its holder came back */
#define IDEM_OUTCOME_EXPIRED                                                   \
  5                             /* taken over after its lease ended;           \
                                   message: expiry, reboot or dead holder */
#define IDEM_OUTCOME_POISONED 6 /* the attempt refused by max_attempts */

/* One attempt of a key, as idem_history() reports it. */
typedef struct idem_attempt {
  unsigned version;    /* IDEM_ATTEMPT_VERSION */
  uint32_t attempt;    /* 1-based */
  uint64_t fence;      /* 0 for a poisoned (refused) attempt */
  char owner[37];      /* the holder's lease UUID, "" if none */
  int64_t pid;         /* the holder's process id, 0 if unknown */
  int64_t started_at;  /* wall time, ms since the epoch */
  int64_t ended_at;    /* 0 while running */
  int outcome;         /* IDEM_OUTCOME_* */
  int code;            /* the code given to idem_fail() */
  const char *message; /* may be NULL; valid during the callback only */
} idem_attempt;

#define IDEM_ATTEMPT_VERSION 1
#define IDEM_ATTEMPT_INIT                                                      \
  { IDEM_ATTEMPT_VERSION, 0, 0, {0}, 0, 0, 0, 0, 0, NULL }

/* Called once per attempt by idem_history(), oldest first, with the
 * handle's lock held: it must not call into the same handle. Return
 * non-zero to stop. */
typedef int (*idem_attempt_fn)(void *ctx, const idem_attempt *a);

/* Reports the attempts of `key` since it was last created: who held it,
 * when, and how each attempt ended, so an operator can see why a key was
 * poisoned. The history lives in the key's row and goes with it (reset,
 * purge). It keeps the latest attempts: always the last 4 (or all there
 * were), and older ones while the history's text stays within 512 bytes
 * (about 5 attempts), so that a key claimed again and again keeps a row
 * small enough for one page. *count_out (may be NULL) gets the
 * number reported. Returns IDEM_OK, IDEM_ENOTFOUND, IDEM_EINVAL, IDEM_ETOOBIG
 * or a storage error. Thread-safe. */
IDEM_EXPORT int idem_history(idem_db *db, const void *key, size_t key_len,
                             idem_attempt_fn fn, void *ctx,
                             unsigned *count_out);

/* Makes the key absent again, so its next begin starts at attempt 1; its
 * fence stays monotonic. A holder of a live lease on it loses the lease.
 * Returns IDEM_OK, IDEM_ENOTFOUND, IDEM_EINVAL, IDEM_ETOOBIG,
 * IDEM_EREADONLY or a storage error (IDEM_EBUSY, IDEM_EFULL, IDEM_EIO,
 * IDEM_ECORRUPT, IDEM_ENOMEM). Thread-safe. */
IDEM_EXPORT int idem_reset(idem_db *db, const void *key, size_t key_len);

/* Resets every row of the given state (e.g. IDEM_STATE_POISONED), with
 * the fence floor raised as by idem_reset(). *count_out (may be NULL) gets
 * the number reset. Returns IDEM_OK, IDEM_EINVAL (not a stored state),
 * IDEM_EREADONLY or a storage error. Thread-safe. */
IDEM_EXPORT int idem_reset_state(idem_db *db, int state, uint64_t *count_out);

/* Deletes completed and failed rows whose retention has ended, in
 * transactions of at most 1000 rows, up to `limit` rows (0 = all); then,
 * whatever `limit` says, evicts rows until the max_rows and max_bytes caps
 * hold; then gives free pages back to the file system (incremental vacuum)
 * and checkpoints the WAL. Never touches a pending or poisoned row.
 * *count_out (may be NULL) gets the number of rows deleted, evicted ones
 * included (idem_stats.evicted counts those apart). Returns IDEM_OK,
 * IDEM_EREADONLY or a storage error. Thread-safe. */
IDEM_EXPORT int idem_purge(idem_db *db, uint64_t limit, uint64_t *count_out);

/* Deletes the rows that idem_purge() never touches once nothing has
 * happened to them for `older_than_ms` (0 to IDEM_MAX_DURATION_MS; 0 =
 * any age): pending rows whose lease is not live, left by holders that
 * crashed or were released and never claimed again, and poisoned rows.
 * Their age is the wall time since the row last changed state (claimed,
 * released, poisoned); a heartbeat does not make a row younger. A
 * pending row whose lease is live, as idem_begin() would judge it at that
 * moment (the deadline ahead, the same boot, the holder not known to be
 * dead; see LIVENESS), is never deleted, however old. `state` is
 * IDEM_STATE_PENDING or IDEM_STATE_POISONED for only those rows, or -1
 * for both. Deleted keys start again at attempt 1, with their fences kept
 * monotonic as by idem_reset(); a holder of an expired lease on one gets
 * IDEM_ELEASELOST. Works in transactions of at most 1000 rows, each
 * judging its rows' leases after taking the write lock, then gives free
 * pages back and checkpoints the WAL as idem_purge() does. *count_out
 * (may be NULL) gets the number of rows deleted, also when a later batch
 * fails. Returns IDEM_OK, IDEM_EINVAL, IDEM_EREADONLY, IDEM_ENOMEM or a
 * storage error. Thread-safe. */
IDEM_EXPORT int idem_purge_stale(idem_db *db, int state, int64_t older_than_ms,
                                 uint64_t *count_out);

typedef struct idem_stats {
  unsigned version; /* IDEM_STATS_VERSION */
  uint64_t rows[5]; /* rows per IDEM_STATE_* (ABSENT stays 0) */
  uint64_t leased;  /* pending rows whose lease deadline is ahead (a
                       dead holder's lease counts until a begin or its
                       TTL ends it) */
  uint64_t expired; /* completed/failed rows past retention */
  int64_t db_bytes; /* size of the database (pages * page size) */
  int schema_version;
  /* Counters of this handle since it was opened. */
  uint64_t hits; /* answers IDEM_COMPLETED or IDEM_FAILED */
  uint64_t claims;
  uint64_t busy;
  uint64_t poisoned;
  uint64_t lost; /* fenced calls or heartbeats that found a lease
                    lost */
  uint64_t mismatches;
  uint64_t storage_errors;
  uint64_t evicted; /* rows idem_purge() evicted to stay under the caps */
  /* Version 2. Counters kept in the database: events since the database
   * was created, by all processes, each counted in the transaction of the
   * event (one rolled back is not counted). A database written before
   * version 2 counts from its first event under a newer library. */
  uint64_t total_evictions;  /* rows evicted to stay under the caps */
  uint64_t total_poisonings; /* keys a begin poisoned (max_attempts) */
  uint64_t total_takeovers;  /* claims of a key whose lease had ended
                                without its holder ending it: expired,
                                holder dead, or another boot */
} idem_stats;

#define IDEM_STATS_VERSION 2
#define IDEM_STATS_INIT                                                        \
  {                                                                            \
    IDEM_STATS_VERSION, {0, 0, 0, 0, 0}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,   \
        0, 0, 0                                                                \
  }

/* Counts rows per state (in one read snapshot) and reports the handle's
 * counters and the database's. `out` must be initialised with
 * IDEM_STATS_INIT; a caller compiled with an older header (version 1) gets
 * only the fields of its version, and nothing after them is written.
 * Returns IDEM_OK, IDEM_EINVAL or a storage error. Thread-safe. */
IDEM_EXPORT int idem_stats_get(idem_db *db, idem_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* IDEM_H */
