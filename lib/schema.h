/* SPDX-License-Identifier: MIT */
/*
 * schema.h - recognising and creating the idem tables (schema.c).
 */
#ifndef IDEM_SCHEMA_H
#define IDEM_SCHEMA_H

#include "internal.h"

struct sqlite3;

#define IDEM__SCHEMA_NEW 0     /* no tables at all */
#define IDEM__SCHEMA_OURS 1    /* idem tables of this version */
#define IDEM__SCHEMA_UNKNOWN 2 /* idem tables of another or no version */
#define IDEM__SCHEMA_FOREIGN 3 /* other tables only */
#define IDEM__SCHEMA_RECHECK 4 /* to judge on the read-write connection */

int idem__schema_version(void);
/* Reads, never writes. Returns an SQLite code; *kind is IDEM__SCHEMA_*. */
int idem__schema_classify(struct sqlite3 *conn, int *kind, int *version);
/* Creates the tables; call inside a write transaction. */
int idem__schema_create(struct sqlite3 *conn);
/* WAL and synchronous (and auto_vacuum for a new file), or query_only for
 * a read-only handle. Call before the schema is created. */
int idem__schema_configure(struct sqlite3 *conn, int synchronous, bool readonly,
                           bool new_file);

#endif
