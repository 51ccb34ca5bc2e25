/* SPDX-License-Identifier: MIT */
/*
 * history.h - the text a key's attempt history is kept in.
 *
 * One line per event, appended by the call that causes it:
 *
 *   c FENCE ATTEMPT OWNER PID STARTED    an attempt starts; a poisoning is
 *                                        an attempt of fence 0, owner "-"
 *   e FENCE OUTCOME ENDED CODE MESSAGE   the attempt of FENCE has ended
 *   l FENCE                              its holder came back: it was lost
 *
 * OUTCOME is a word (completed, failed, ...); MESSAGE is "-" for none, or
 * "=" and the text with the backslash and every byte outside printable
 * ASCII written as \xHH, so a line never holds a newline and the column
 * stays plain ASCII whatever a caller passed.
 *
 * Lines rather than JSON: ending an attempt is then a concatenation inside
 * the fenced UPDATE, with nothing parsed. Only a claim or a poisoning,
 * which read the row anyway, rewrite the text, to drop the oldest
 * attempts.
 */
#ifndef IDEM_HISTORY_H
#define IDEM_HISTORY_H

#include "idem.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The attempts kept: the older ones only while their text stays within
 * IDEM__HISTORY_BYTES, but never fewer than the last IDEM__HISTORY_MIN.
 * The byte bound keeps a row that is claimed again and again within one
 * b-tree page: a row that spills onto an overflow page makes every write
 * to it free and allocate that page, three times the pages per commit. */
#define IDEM__HISTORY_MIN 4
#define IDEM__HISTORY_BYTES 512

/* A growing text; `failed` is set, and the text left as it was, when an
 * allocation fails. */
typedef struct idem__text {
  char *p;
  size_t len, cap;
  bool failed;
} idem__text;

void idem__text_free(idem__text *t);

/* Appends the end of an old history that leaves room for `room` more
 * attempts within the bounds above. */
void idem__hist_keep(idem__text *t, const char *old, size_t len, unsigned room);
/* owner is a UUID string, or NULL for a poisoning. */
void idem__hist_start(idem__text *t, uint64_t fence, uint32_t attempt,
                      const char *owner, int64_t pid, int64_t started);
/* outcome is an IDEM_OUTCOME_* other than RUNNING and LOST; message may be
 * NULL. */
void idem__hist_end(idem__text *t, uint64_t fence, int outcome, int64_t ended,
                    int code, const char *message);
/* What starts the line of an event of fence in "\n" followed by the text:
 * kind 'c' or 'l'. An "l" line has nothing more, so past its "\n" the
 * marker is the line that marks the attempt lost. Returns the length
 * written (buffer of 32 bytes). */
size_t idem__hist_marker(char out[32], char kind, uint64_t fence);

/* Calls fn for each attempt, oldest first, until it returns non-zero.
 * Lines that do not parse are skipped. Returns 0, or -1 when out of
 * memory. */
int idem__hist_scan(const char *text, size_t len,
                    int (*fn)(void *ctx, const idem_attempt *a), void *ctx);

#endif
