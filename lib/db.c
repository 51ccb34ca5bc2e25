/* SPDX-License-Identifier: MIT */
/*
 * db.c - opening and closing a handle, and the checks every call shares.
 *
 * Opening judges the file first (schema.c) on a read-only connection and
 * writes nothing until it knows the file is new or ours; only then is the
 * read-write connection opened, switched to WAL, and the schema created
 * inside BEGIN IMMEDIATE, where a second process creating the same file at
 * the same moment is seen and respected.
 */
#include "schema.h"
#include "store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *idem_version(void) {
  return IDEM_VERSION_STRING;
}

int idem_version_number(void) {
  return IDEM_VERSION_NUMBER;
}

void idem__lock(idem_db *db) {
  pthread_mutex_lock(&db->mu);
}

void idem__unlock(idem_db *db) {
  pthread_mutex_unlock(&db->mu);
}

int idem__check_key(idem_db *db, const void *key, size_t key_len) {
  if (!key)
    return idem__error(db, IDEM_EINVAL, "key is NULL");
  if (key_len == 0)
    return idem__error(db, IDEM_EINVAL, "key is empty");
  if (key_len > IDEM_MAX_KEY)
    return idem__error(db, IDEM_ETOOBIG, "key is %zu bytes; the limit is %d",
                       key_len, IDEM_MAX_KEY);
  return IDEM_OK;
}

/* How much of idem_options a caller compiled with `version` passes: the
 * struct only grows at its end, so an older caller's is a prefix. A new
 * version adds a case, and version 1 becomes the offset of its first new
 * field. */
static size_t options_size(unsigned version) {
  return version == 1 ? sizeof(idem_options) : 0;
}

/* Copies the caller's options over the defaults, reading no further than
 * the version the caller was compiled with, and settles what the defaults
 * leave to be derived (NULL options get exactly what IDEM_OPTIONS_INIT
 * gets). */
static int take_options(idem_db *db, const idem_options *in) {
  static const idem_options defaults = IDEM_OPTIONS_INIT;
  db->opt = defaults;
  if (in) {
    size_t n = options_size(in->version);
    if (n == 0)
      return idem__error(db, IDEM_EINVAL,
                         "options version %u is not supported (1..%d); "
                         "initialise them with IDEM_OPTIONS_INIT",
                         in->version, IDEM_OPTIONS_VERSION);
    memcpy(&db->opt, in, n);
  }
  idem_options *o = &db->opt;
  const unsigned known = IDEM_OPEN_READONLY | IDEM_OPEN_NOCREATE |
                         IDEM_OPEN_SHARED | IDEM_OPEN_TTL_ONLY;
  if (o->ttl_ms <= 0 || o->ttl_ms > IDEM_MAX_DURATION_MS)
    return idem__error(db, IDEM_EINVAL,
                       "ttl_ms (%lld) must be from 1 to %lld "
                       "(IDEM_MAX_DURATION_MS)",
                       (long long)o->ttl_ms, (long long)IDEM_MAX_DURATION_MS);
  if (o->heartbeat_ms == 0)
    o->heartbeat_ms = o->ttl_ms / 2 > 0 ? o->ttl_ms / 2 : 1;
  if (o->heartbeat_ms >= o->ttl_ms)
    return idem__error(db, IDEM_EINVAL,
                       "heartbeat_ms (%lld) must be below ttl_ms (%lld)",
                       (long long)o->heartbeat_ms, (long long)o->ttl_ms);
  if (o->retention_ms < 0 || o->retention_ms > IDEM_MAX_DURATION_MS)
    return idem__error(db, IDEM_EINVAL,
                       "retention_ms (%lld) must be from 0 (forever) to %lld "
                       "(IDEM_MAX_DURATION_MS)",
                       (long long)o->retention_ms,
                       (long long)IDEM_MAX_DURATION_MS);
  if (o->busy_timeout_ms < 0)
    return idem__error(db, IDEM_EINVAL, "busy_timeout_ms must not be negative");
  if (o->synchronous != IDEM_SYNC_NORMAL && o->synchronous != IDEM_SYNC_FULL)
    return idem__error(db, IDEM_EINVAL,
                       "synchronous must be "
                       "IDEM_SYNC_NORMAL or IDEM_SYNC_FULL");
  if (o->fail_policy != IDEM_FAIL_CLOSED && o->fail_policy != IDEM_FAIL_OPEN)
    return idem__error(db, IDEM_EINVAL,
                       "fail_policy must be "
                       "IDEM_FAIL_CLOSED or IDEM_FAIL_OPEN");
  if (o->flags & ~known)
    return idem__error(db, IDEM_EINVAL, "unknown flags 0x%x",
                       o->flags & ~known);
  return IDEM_OK;
}

static int open_error(idem_db *db, idem__store *st, int rc, const char *what) {
  return idem__storage_error(db, rc, what, st ? idem__store_errmsg(st) : NULL);
}

/* The name to probe a file by. A WAL database with no -wal file beside it
 * holds all its content in the file itself, so it is read as immutable:
 * a plain read-only open would create -wal and -shm files next to a
 * database that may be refused, and could not remove them. */
static char *probe_name(const char *path) {
  unsigned char hdr[20];
  ssize_t n = -1;
  int fd =
      strncmp(path, "file:", 5) == 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    n = read(fd, hdr, sizeof hdr);
    close(fd);
  }
  size_t len = strlen(path);
  char *wal = malloc(len + 5);
  if (!wal)
    return NULL;
  snprintf(wal, len + 5, "%s-wal", path);
  bool immutable = n == (ssize_t)sizeof hdr &&
                   memcmp(hdr, "SQLite format 3", 16) == 0 && hdr[18] == 2 &&
                   access(wal, F_OK) != 0;
  free(wal);
  if (!immutable)
    return strdup(path);
  char *uri = malloc(5 + 3 * len + 13);
  if (!uri)
    return NULL;
  char *o = uri + snprintf(uri, 6, "file:");
  for (const char *c = path; *c; c++) {
    if (*c == '%' || *c == '?' || *c == '#')
      o += snprintf(o, 4, "%%%02X", (unsigned char)*c);
    else
      *o++ = *c;
  }
  snprintf(o, 13, "?immutable=1");
  return uri;
}

/* Judges the file without changing it. *kind is IDEM__SCHEMA_NEW for a
 * file that does not exist yet (or cannot be opened read-only: the
 * read-write open that follows tells why). */
static int probe(idem_db *db, int *kind, int *version) {
  idem__store *st;
  *kind = IDEM__SCHEMA_NEW;
  *version = 0;
  char *name = probe_name(db->path);
  if (!name)
    return idem__error(db, IDEM_ENOMEM, "out of memory");
  int rc = idem__store_open(&st, name, IDEM__STORE_READONLY,
                            db->opt.busy_timeout_ms);
  free(name);
  if (rc == SQLITE_OK)
    rc = idem__schema_classify(idem__store_conn(st), kind, version);
  int code = IDEM_OK;
  bool ro = db->opt.flags & IDEM_OPEN_READONLY;
  if ((rc & 0xff) == SQLITE_CANTOPEN) {
    *kind = IDEM__SCHEMA_NEW;
    code = (db->opt.flags & (IDEM_OPEN_NOCREATE | IDEM_OPEN_READONLY))
               ? open_error(db, st, rc, "open")
               : IDEM_OK;
  } else if ((rc & 0xff) == SQLITE_READONLY && !ro) {
    /* A hot journal or a WAL to recover, left by a writer that crashed
     * (for instance during our own first open): a read-only connection
     * cannot roll it back. The read-write connection does, as any SQLite
     * open would, and judges the file then, before writing anything. */
    *kind = IDEM__SCHEMA_RECHECK;
  } else if (rc != SQLITE_OK) {
    code = open_error(db, st, rc, "read");
    if (code == IDEM_ENOTDB)
      idem__error(db, code, "%s: not an SQLite database; left untouched",
                  db->path);
  }
  idem__store_close(st);
  return code;
}

static int judge(idem_db *db, int kind, int version) {
  if (kind == IDEM__SCHEMA_UNKNOWN) {
    if (version > idem__schema_version())
      return idem__error(db, IDEM_ESCHEMA,
                         "%s: idem schema version %d is newer than this "
                         "library's (%d); left untouched",
                         db->path, version, idem__schema_version());
    return idem__error(db, IDEM_ESCHEMA,
                       "%s: holds idem tables of an unknown layout; left "
                       "untouched",
                       db->path);
  }
  if (kind == IDEM__SCHEMA_FOREIGN && !(db->opt.flags & IDEM_OPEN_SHARED))
    return idem__error(db, IDEM_EFOREIGN,
                       "%s: a database of another application; left "
                       "untouched (IDEM_OPEN_SHARED adds the idem tables to "
                       "it)",
                       db->path);
  if (kind == IDEM__SCHEMA_NEW && (db->opt.flags & IDEM_OPEN_READONLY))
    return idem__error(db, IDEM_ECANTOPEN, "%s: no idem database to read",
                       db->path);
  return IDEM_OK;
}

/* Creates the tables unless another process did so since the probe. */
static int create_schema(idem_db *db) {
  sqlite3 *conn = idem__store_conn(db->store);
  int rc = idem__tx_write(db->store);
  int kind, version;
  if (rc == SQLITE_OK)
    rc = idem__schema_classify(conn, &kind, &version);
  if (rc == SQLITE_OK) {
    int code = judge(db, kind, version);
    if (code) {
      idem__tx_rollback(db->store);
      return code;
    }
    if (kind != IDEM__SCHEMA_OURS)
      rc = idem__schema_create(conn);
  }
  if (rc == SQLITE_OK)
    rc = idem__tx_commit(db->store);
  if (rc != SQLITE_OK) {
    int code = open_error(db, db->store, rc, "create the idem tables");
    idem__tx_rollback(db->store);
    return code;
  }
  return IDEM_OK;
}

/* WAL, synchronous, and for a new file auto_vacuum. Switching a new file
 * to WAL while another process does the same can be refused at once,
 * without the busy handler: SQLite will not let a reader wait to become
 * the writer, as that could deadlock. So it is retried here. */
static int configure(idem_db *db, int kind) {
  sqlite3 *conn = idem__store_conn(db->store);
  int64_t start = idem__monotonic_ms();
  for (unsigned pause_us = 100;;
       pause_us = pause_us < 8000 ? pause_us * 2 : pause_us) {
    int rc = idem__schema_configure(conn, db->opt.synchronous, db->readonly,
                                    kind == IDEM__SCHEMA_NEW);
    if ((rc & 0xff) != SQLITE_BUSY ||
        idem__monotonic_ms() - start >= db->opt.busy_timeout_ms)
      return rc;
    struct timespec ts = {0, (long)pause_us * 1000};
    nanosleep(&ts, NULL);
  }
}

static int open_store(idem_db *db, int kind) {
  bool ro = db->opt.flags & IDEM_OPEN_READONLY;
  unsigned flags = ro                                     ? IDEM__STORE_READONLY
                   : (db->opt.flags & IDEM_OPEN_NOCREATE) ? 0
                                                          : IDEM__STORE_CREATE;
  int rc =
      idem__store_open(&db->store, db->path, flags, db->opt.busy_timeout_ms);
  if (rc != SQLITE_OK)
    return open_error(db, db->store, rc, "open");
  sqlite3 *conn = idem__store_conn(db->store);
  if (!ro && sqlite3_db_readonly(conn, "main") == 1)
    return idem__error(db, IDEM_EREADONLY,
                       "%s: the file is read-only (IDEM_OPEN_READONLY "
                       "opens it for reading)",
                       db->path);
  if (kind == IDEM__SCHEMA_RECHECK) {
    int version, code;
    if ((rc = idem__schema_classify(conn, &kind, &version)) != SQLITE_OK)
      return open_error(db, db->store, rc, "read");
    if ((code = judge(db, kind, version)))
      return code;
  }
  rc = configure(db, kind);
  if (rc != SQLITE_OK)
    return open_error(db, db->store, rc, "configure");
  if (!ro) {
    idem__checkpoint_hook(db);
    idem__store_queue(db->store);
  }
  return ro || kind == IDEM__SCHEMA_OURS ? IDEM_OK : create_schema(db);
}

static idem_db *handle_new(void) {
  idem_db *db = calloc(1, sizeof *db);
  if (!db)
    return NULL;
  pthread_mutex_init(&db->mu, NULL);
  pthread_mutex_init(&db->reg, NULL);
  pthread_mutex_init(&db->hb_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&db->ended, &ca);
  pthread_cond_init(&db->hb_wake, &ca);
  pthread_condattr_destroy(&ca);
  idem__fork_track(db);
  return db;
}

/* The start both opening calls share: a handle in *out, even when what
 * follows fails, so that idem_errmsg() can say why. A process that got
 * open handles through fork() opens nothing: see fork.c. */
static int handle_start(idem_db **out, const idem_options *opts,
                        const char *path) {
  if (!out)
    return IDEM_EINVAL;
  idem_db *db = *out = handle_new();
  if (!db)
    return IDEM_ENOMEM;
  int code = take_options(db, opts);
  return code ? code : idem__fork_check_open(db, path);
}

int idem_open(idem_db **out, const char *path, const idem_options *opts) {
  int code = handle_start(out, opts, path);
  if (code)
    return code;
  idem_db *db = *out;
  if (!path || !*path)
    return idem__error(db, IDEM_EINVAL, "path is NULL or empty");
  if (!(db->path = strdup(path)))
    return idem__error(db, IDEM_ENOMEM, "out of memory");
  idem__self_init(&db->self);
  db->readonly = db->opt.flags & IDEM_OPEN_READONLY;

  struct stat sb;
  if (strncmp(path, "file:", 5) != 0 && stat(path, &sb) == 0 &&
      S_ISDIR(sb.st_mode))
    return idem__error(db, IDEM_ECANTOPEN, "%s: is a directory", path);
  int kind, version;
  if ((code = probe(db, &kind, &version)) || (code = judge(db, kind, version)))
    return code;
  return open_store(db, kind);
}

int idem_open_db(idem_db **out, sqlite3 *conn, const idem_options *opts) {
  int code = handle_start(out, opts, NULL);
  if (code)
    return code;
  idem_db *db = *out;
  const char *file = conn ? sqlite3_db_filename(conn, "main") : NULL;
  if (!file || !*file)
    return idem__error(db, IDEM_EINVAL,
                       "idem_open_db needs a connection to a database file "
                       "(the heartbeat and other processes open it too)");
  if (db->opt.flags & IDEM_OPEN_READONLY)
    return idem__error(db, IDEM_EINVAL,
                       "idem_open_db does not take IDEM_OPEN_READONLY");
  if (!sqlite3_get_autocommit(conn))
    return idem__error(db, IDEM_EMISUSE,
                       "a transaction is open on the connection");
  if (!(db->path = strdup(file)))
    return idem__error(db, IDEM_ENOMEM, "out of memory");
  idem__self_init(&db->self);
  /* The application's own tables live beside ours by design. */
  db->opt.flags |= IDEM_OPEN_SHARED;
  db->app_conn = true;
  int kind, version;
  int rc = idem__store_wrap(&db->store, conn, db->opt.busy_timeout_ms);
  if (rc == SQLITE_OK)
    rc = idem__schema_classify(conn, &kind, &version);
  if (rc != SQLITE_OK)
    return open_error(db, db->store, rc, "read");
  if ((code = judge(db, kind, version)))
    return code;
  if ((rc = configure(db, kind)) != SQLITE_OK)
    return open_error(db, db->store, rc, "configure");
  if (kind != IDEM__SCHEMA_OURS && (code = create_schema(db)))
    return code;
  if ((rc = idem__fence_sql_register(conn)) != SQLITE_OK)
    return open_error(db, db->store, rc, "register idem_fence_ok()");
  idem__store_queue(db->store);
  return IDEM_OK;
}

int idem_close(idem_db *db) {
  if (!db)
    return IDEM_OK;
  if (idem__forked(db))
    return idem__forked_close(db);
  pthread_mutex_lock(&db->reg);
  unsigned held = db->nleases;
  pthread_mutex_unlock(&db->reg);
  if (held) {
    idem__lock(db);
    idem__error(db, IDEM_EMISUSE,
                "%u lease(s) of this handle are not freed; finish and free "
                "them with idem_lease_free() before closing",
                held);
    idem__unlock(db);
    return IDEM_EMISUSE;
  }
  idem__heartbeat_stop(db);
  idem__store_close(db->hb_store);
  idem__store_close(db->store);
  pthread_cond_destroy(&db->hb_wake);
  pthread_cond_destroy(&db->ended);
  pthread_mutex_destroy(&db->hb_mu);
  pthread_mutex_destroy(&db->reg);
  pthread_mutex_destroy(&db->mu);
  free(db->path);
  free(db);
  idem__fork_untrack();
  return IDEM_OK;
}
