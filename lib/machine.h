/* SPDX-License-Identifier: MIT */
/*
 * machine.h - the rules of the state machine, apart from any storage.
 *
 * idem__decide() looks at a key's row as read inside the begin transaction
 * and says what the begin answers and what, if anything, it must write.
 * It is a pure function of its inputs, so every backend reuses it and the
 * tests can drive it row by row.
 */
#ifndef IDEM_MACHINE_H
#define IDEM_MACHINE_H

#include "store.h"

/* What a begin does. */
#define IDEM__DO_ANSWER 0   /* answer from the row; write nothing */
#define IDEM__DO_CLAIM 1    /* write a claim (insert or overwrite) */
#define IDEM__DO_POISON 2   /* mark the row poisoned; answer IDEM_POISONED */
#define IDEM__DO_MISMATCH 3 /* refuse with IDEM_EMISMATCH */

typedef struct idem__time {
  int64_t lease;             /* boot-clock ms */
  int64_t wall;              /* epoch ms */
  const unsigned char *boot; /* this host's boot id, NULL when unknown */
  /* Whether a lease's holder is known to be gone; NULL trusts the TTL. */
  bool (*owner_gone)(const void *ctx, const idem__row *row);
  const void *owner_ctx;
} idem__time;

typedef struct idem__decision {
  int action;        /* IDEM__DO_* */
  int answer;        /* IDEM_CLAIMED ... IDEM_POISONED */
  bool fresh;        /* a claim that starts the key anew (attempt 1) */
  uint32_t attempts; /* attempt count after this begin */
  int64_t lease_ms;  /* IDEM_BUSY: time left on the other lease */
} idem__decision;

/* Reads both clocks of the handle, once, for one decision. */
void idem__time_of(const idem_db *db, idem__time *now);

/* Whether the row's lease was written under another boot than `now`'s:
 * only when both boot ids are known and differ. When either is unknown,
 * nothing proves a reboot, and the lease's deadline decides. */
bool idem__boot_differs(const idem__row *row, const idem__time *now);

/* Whether the row's lease still holds at `now`: it has an owner, was not
 * written under another boot (idem__boot_differs), its deadline is ahead,
 * and its holder is not known to be gone. */
bool idem__lease_live(const idem__row *row, const idem__time *now);

/* Decides a begin on `row` (read in the write transaction, or in a read
 * snapshot: then only IDEM__DO_ANSWER decisions may be acted on). */
void idem__decide(const idem__row *row, const idem__time *now,
                  uint32_t max_attempts, const void *fingerprint,
                  size_t fingerprint_len, idem__decision *d);

/* Whether the row shows the attempt under `fence` ended by its own holder:
 * completed, failed or released (pending with no lease) under that fence.
 * Anything else that no longer carries the lease (another fence, no row,
 * a poisoning) means the holder lost it. */
bool idem__ended_under(const idem__row *row, uint64_t fence);

#endif
