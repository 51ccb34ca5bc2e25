/* SPDX-License-Identifier: MIT */
/*
 * machine.c - the rules: which begin claims, which waits, which is refused.
 *
 * The invariants they keep:
 *  - a completed or failed row within retention is answered, never claimed;
 *  - a live lease is never taken: the caller is told how long it has left;
 *  - a claim counts one attempt, and the attempt that would go past
 *    max_attempts poisons the key instead of running it;
 *  - a poisoned row stays poisoned (only a reset removes it);
 *  - a fingerprint recorded for the key must match the caller's, if the
 *    caller gives one, before anything about the key is revealed.
 * The fence of a claim is not decided here: the caller takes the row's
 * fence plus one, or the store's floor plus one for a key without a row.
 */
#include "machine.h"

#include <string.h>

static bool row_owner_gone(const void *self, const idem__row *row) {
  return idem__owner_gone(self, row->owner_pid, row->owner_pidns,
                          row->owner_start);
}

void idem__time_of(const idem_db *db, idem__time *now) {
  now->lease = idem__now(db, IDEM_CLOCK_LEASE);
  now->wall = idem__now(db, IDEM_CLOCK_WALL);
  now->boot = db->self.has_boot ? db->self.boot : NULL;
  bool ttl_only = db->opt.flags & IDEM_OPEN_TTL_ONLY;
  now->owner_gone = ttl_only ? NULL : row_owner_gone;
  now->owner_ctx = &db->self;
}

bool idem__boot_differs(const idem__row *row, const idem__time *now) {
  /* An unknown boot id is not a different one: a process denied
   * /proc/sys (systemd's ProcSubset=pid) runs on the same boot as its
   * neighbours, and taking its lease, or letting it take theirs, would run
   * the job twice at once. Only the deadline can decide then, which is
   * why an unreadable boot id is documented as a limit: a reboot is not
   * seen. */
  return row->has_boot && now->boot && memcmp(row->boot, now->boot, 16) != 0;
}

bool idem__lease_live(const idem__row *row, const idem__time *now) {
  if (row->state != IDEM_STATE_PENDING || !row->has_owner)
    return false;
  /* A deadline on another boot's clock means nothing here: that holder is
   * gone. */
  if (idem__boot_differs(row, now))
    return false;
  if (row->lease_until <= now->lease)
    return false;
  return !(now->owner_gone && now->owner_gone(now->owner_ctx, row));
}

/* Whether a completed or failed row has outlived its retention. */
static bool row_expired(const idem__row *row, const idem__time *now) {
  return (row->state == IDEM_STATE_COMPLETED ||
          row->state == IDEM_STATE_FAILED) &&
         row->expires_at != 0 && row->expires_at <= now->wall;
}

static bool fingerprint_differs(const idem__row *row, const void *fp,
                                size_t fp_len) {
  if (!fp || !row->fingerprint)
    return false;
  return row->fingerprint_len != fp_len ||
         (fp_len && memcmp(row->fingerprint, fp, fp_len) != 0);
}

void idem__decide(const idem__row *row, const idem__time *now,
                  uint32_t max_attempts, const void *fingerprint,
                  size_t fingerprint_len, idem__decision *d) {
  memset(d, 0, sizeof *d);
  d->attempts = row->attempts;

  if (row->state == IDEM_STATE_ABSENT || row_expired(row, now)) {
    /* max_attempts >= 1 when set, so a first attempt always fits. */
    d->action = IDEM__DO_CLAIM;
    d->answer = IDEM_CLAIMED;
    d->fresh = true;
    d->attempts = 1;
    return;
  }
  if (fingerprint_differs(row, fingerprint, fingerprint_len)) {
    d->action = IDEM__DO_MISMATCH;
    return;
  }
  d->action = IDEM__DO_ANSWER;
  switch (row->state) {
  case IDEM_STATE_COMPLETED:
    d->answer = IDEM_COMPLETED;
    return;
  case IDEM_STATE_FAILED:
    d->answer = IDEM_FAILED;
    return;
  case IDEM_STATE_POISONED:
    d->answer = IDEM_POISONED;
    return;
  default:
    break;
  }
  if (idem__lease_live(row, now)) {
    d->answer = IDEM_BUSY;
    d->lease_ms = idem__ms_sub(row->lease_until, now->lease);
    return;
  }
  /* Unlimited attempts end where the count would wrap. */
  if ((max_attempts && row->attempts >= max_attempts) ||
      row->attempts == UINT32_MAX) {
    d->action = IDEM__DO_POISON;
    d->answer = IDEM_POISONED;
    return;
  }
  d->action = IDEM__DO_CLAIM;
  d->answer = IDEM_CLAIMED;
  d->attempts = row->attempts + 1;
}

bool idem__ended_under(const idem__row *row, uint64_t fence) {
  if (row->state == IDEM_STATE_ABSENT || row->fence != fence)
    return false;
  return row->state == IDEM_STATE_COMPLETED ||
         row->state == IDEM_STATE_FAILED ||
         (row->state == IDEM_STATE_PENDING && !row->has_owner);
}
