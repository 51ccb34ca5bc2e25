/* SPDX-License-Identifier: MIT */
/*
 * error.c - result codes, their names, and the handle's last message.
 *
 * SQLite's many result codes are folded into the few a caller can act on:
 * wait and retry (busy), free space (full), fix permissions (read-only),
 * replace the file (not a database, corrupt), or report (I/O). The
 * message keeps SQLite's own words and extended code, so nothing is lost
 * in the folding.
 */
#include "internal.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

const char *idem_errstr(int code) {
  switch (code) {
  case IDEM_OK:
    return "ok";
  case IDEM_EINVAL:
    return "invalid argument";
  case IDEM_EMISUSE:
    return "library misuse";
  case IDEM_ENOMEM:
    return "out of memory";
  case IDEM_ELEASELOST:
    return "lease lost";
  case IDEM_EMISMATCH:
    return "fingerprint mismatch";
  case IDEM_ETOOBIG:
    return "too big";
  case IDEM_ENOTFOUND:
    return "no such key";
  case IDEM_ECANTOPEN:
    return "cannot open database";
  case IDEM_ENOTDB:
    return "not an SQLite database";
  case IDEM_EFOREIGN:
    return "database of another application";
  case IDEM_ESCHEMA:
    return "unknown idem schema";
  case IDEM_EREADONLY:
    return "database is read-only";
  case IDEM_EFULL:
    return "disk full";
  case IDEM_EBUSY:
    return "database is locked";
  case IDEM_EIO:
    return "storage error";
  case IDEM_ECORRUPT:
    return "database is corrupt";
  case IDEM_EUNKNOWN:
    return "outcome unknown";
  case IDEM_EFORKED:
    return "handle carried across fork()";
  case IDEM_CLAIMED:
    return "claimed";
  case IDEM_COMPLETED:
    return "completed";
  case IDEM_FAILED:
    return "failed";
  case IDEM_BUSY:
    return "busy";
  case IDEM_POISONED:
    return "poisoned";
  case IDEM_RELEASED:
    return "released";
  default:
    return "unknown result code";
  }
}

const char *idem_errmsg(const idem_db *db) {
  if (!db)
    return "";
  /* The handle's own message sits behind its mutex, which a thread of the
   * parent may have held at fork(). */
  return idem__forked(db) ? idem__fork_errmsg() : db->errmsg;
}

int idem__code_of_sqlite(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
    return IDEM_OK;
  case SQLITE_NOMEM:
    return IDEM_ENOMEM;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return IDEM_EBUSY;
  case SQLITE_FULL:
    return IDEM_EFULL;
  case SQLITE_READONLY:
  case SQLITE_PERM:
    return IDEM_EREADONLY;
  case SQLITE_CORRUPT:
    return IDEM_ECORRUPT;
  case SQLITE_NOTADB:
    return IDEM_ENOTDB;
  case SQLITE_CANTOPEN:
    return IDEM_ECANTOPEN;
  case SQLITE_TOOBIG:
    return IDEM_ETOOBIG;
  default:
    return IDEM_EIO;
  }
}

__attribute__((format(printf, 3, 0))) static void
vlog(const idem_db *db, int level, const char *fmt, va_list ap) {
  if (!db->opt.log)
    return;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  db->opt.log(db->opt.log_ctx, level, msg);
}

void idem__log(const idem_db *db, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(db, level, fmt, ap);
  va_end(ap);
}

int idem__error(idem_db *db, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(db->errmsg, sizeof db->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

int idem__storage_error(idem_db *db, int rc, const char *what,
                        const char *sqlite_msg) {
  int code = idem__code_of_sqlite(rc);
  if (code == IDEM_ENOMEM)
    return idem__error(db, code, "%s: out of memory", what);
  atomic_fetch_add(&db->n_storage_errors, 1);
  idem__error(db, code, "%s: %s: %s (SQLite code %d)", what, db->path,
              sqlite_msg ? sqlite_msg : sqlite3_errstr(rc), rc);
  idem__log(db, IDEM_LOG_ERROR, "%s", db->errmsg);
  return code;
}
