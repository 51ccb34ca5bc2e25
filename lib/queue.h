/* SPDX-License-Identifier: MIT */
/*
 * queue.h - writers of every process of a database take turns, first come
 * first served.
 *
 * SQLite lets a writer that finds the lock taken only poll for it. Among
 * many processes the one that holds the lock wins it again and again, and
 * the others poll on, each wait longer than the last; with more processes
 * than cores, the pollers also take CPU from the writer they wait for.
 * The queue lines writers up in a small file beside the database,
 * "<database>-lockq", shared through mmap: a writer takes a ticket and
 * sleeps on a futex until its turn, and only the next in line stays awake.
 *
 * The queue is advice: SQLite's lock still decides who writes, so nothing
 * here can corrupt or deadlock anything. A writer that cannot use the file
 * (it cannot be created, is not ours, or the database has no file) simply
 * polls as before; the turn of a process that died is skipped after
 * IDEM__QUEUE_STUCK_US, any turn after IDEM__QUEUE_DEAD_US; a wait never
 * outlasts the busy timeout.
 *
 * A turn covers several transactions, up to IDEM__QUEUE_TURN_US: handing
 * the lock to another process costs a wake-up, and paying it on every
 * transaction would halve the write rate. A holder that goes away for more
 * than IDEM__QUEUE_GRACE_US between transactions loses the rest of its
 * turn to the next in line.
 */
#ifndef IDEM_QUEUE_H
#define IDEM_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

/* A build may set another turn (-DIDEM__QUEUE_TURN_US=500): bench/turns
 * measures what its length gives the aggregate and costs the tail. */
#ifndef IDEM__QUEUE_TURN_US
#define IDEM__QUEUE_TURN_US 250
#endif
#define IDEM__QUEUE_GRACE_US 30
#define IDEM__QUEUE_SPIN_US 300 /* the next in line polls this long */
#define IDEM__QUEUE_STUCK_US                                                   \
  10000                             /* a turn stuck this long: is its holder   \
                                       dead? */
#define IDEM__QUEUE_DEAD_US 1000000 /* a turn stuck this long is skipped */

typedef struct idem__queue idem__queue;

/* The queue of the database file at db_path, or NULL when it cannot be
 * used. A turn lasts up to turn_us (IDEM__QUEUE_TURN_US; 0 is a turn per
 * transaction). One idem__queue serves one connection, whose user
 * serialises its calls. */
idem__queue *idem__queue_open(const char *db_path, unsigned turn_us);
/* Gives up a turn still held. NULL is a no-op. */
void idem__queue_close(idem__queue *q);

/* Waits for this connection's turn, until deadline_ms of
 * idem__monotonic_ms(): a wait that runs out returns without the turn. */
void idem__queue_enter(idem__queue *q, int64_t deadline_ms);
/* Takes the turn only if it is this connection's or no one's: true when
 * it did (or there is no queue), false when others hold or wait for it. */
bool idem__queue_try(idem__queue *q);
/* After the transaction: keeps the turn for a next transaction while the
 * turn is young, else passes it on. */
void idem__queue_leave(idem__queue *q);

#endif
