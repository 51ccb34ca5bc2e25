/* SPDX-License-Identifier: MIT */
/*
 * history.c - writing and reading the lines of a key's attempt history
 * (the format is in history.h).
 */
#include "history.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void idem__text_free(idem__text *t) {
  free(t->p);
  t->p = NULL;
  t->len = t->cap = 0;
}

static bool reserve(idem__text *t, size_t n) {
  if (t->failed)
    return false;
  if (t->len + n + 1 <= t->cap)
    return true;
  size_t cap = t->cap ? t->cap : 256;
  while (cap < t->len + n + 1)
    cap *= 2;
  char *p = realloc(t->p, cap);
  if (!p) {
    t->failed = true;
    return false;
  }
  t->p = p;
  t->cap = cap;
  return true;
}

static void append(idem__text *t, const char *s, size_t n) {
  if (!reserve(t, n))
    return;
  memcpy(t->p + t->len, s, n);
  t->len += n;
  t->p[t->len] = '\0';
}

static bool line_start(const char *text, size_t i) {
  return i == 0 || text[i - 1] == '\n';
}

void idem__hist_keep(idem__text *t, const char *old, size_t len,
                     unsigned room) {
  unsigned least = room < IDEM__HISTORY_MIN ? IDEM__HISTORY_MIN - room : 0;
  /* Walks back over the attempts' start lines, newest first. Events of a
   * dropped attempt that come after the cut (a late "lost") find no start
   * line and are skipped when read; a later cut drops them. */
  size_t from = len;
  unsigned kept = 0;
  for (size_t i = len; i-- > 0;) {
    if (old[i] != 'c' || !line_start(old, i))
      continue;
    if (kept >= least && len - i > IDEM__HISTORY_BYTES)
      break;
    kept++;
    from = i;
  }
  if (from < len)
    append(t, old + from, len - from);
}

/* The fields of a line, each after a space. snprintf cost more than the
 * rest of a claim's history work together. */
static void put_number(idem__text *t, uint64_t v, bool negative) {
  char buf[24], *p = buf + sizeof buf;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  if (negative)
    *--p = '-';
  *--p = ' ';
  append(t, p, (size_t)(buf + sizeof buf - p));
}

static void put_signed(idem__text *t, int64_t v) {
  put_number(t, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0);
}

static void put_word(idem__text *t, const char *w) {
  append(t, " ", 1);
  append(t, w, strlen(w));
}

void idem__hist_start(idem__text *t, uint64_t fence, uint32_t attempt,
                      const char *owner, int64_t pid, int64_t started) {
  append(t, "c", 1);
  put_number(t, fence, false);
  put_number(t, attempt, false);
  put_word(t, owner ? owner : "-");
  put_signed(t, pid);
  put_signed(t, started);
  append(t, "\n", 1);
}

static const char *const outcome_name[] = {
    [IDEM_OUTCOME_RUNNING] = "running",
    [IDEM_OUTCOME_COMPLETED] = "completed",
    [IDEM_OUTCOME_RELEASED] = "released",
    [IDEM_OUTCOME_FAILED] = "failed",
    [IDEM_OUTCOME_LOST] = "lost",
    [IDEM_OUTCOME_EXPIRED] = "expired",
    [IDEM_OUTCOME_POISONED] = "poisoned"};

static void append_message(idem__text *t, const char *m) {
  if (!m) {
    append(t, "-", 1);
    return;
  }
  size_t n = strlen(m);
  if (!reserve(t, 1 + 4 * n))
    return;
  char *o = t->p + t->len;
  *o++ = '=';
  for (const unsigned char *s = (const unsigned char *)m; *s; s++) {
    if (*s >= 0x20 && *s < 0x7f && *s != '\\') {
      *o++ = (char)*s;
    } else {
      static const char hex[] = "0123456789abcdef";
      *o++ = '\\';
      *o++ = 'x';
      *o++ = hex[*s >> 4];
      *o++ = hex[*s & 15];
    }
  }
  t->len = (size_t)(o - t->p);
  t->p[t->len] = '\0';
}

void idem__hist_end(idem__text *t, uint64_t fence, int outcome, int64_t ended,
                    int code, const char *message) {
  append(t, "e", 1);
  put_number(t, fence, false);
  put_word(t, outcome_name[outcome]);
  put_signed(t, ended);
  put_signed(t, code);
  append(t, " ", 1);
  append_message(t, message);
  append(t, "\n", 1);
}

size_t idem__hist_marker(char out[32], char kind, uint64_t fence) {
  return (size_t)snprintf(out, 32, "\n%c %" PRIu64 "%c", kind, fence,
                          kind == 'l' ? '\n' : ' ');
}

/* --- Reading ------------------------------------------------------------ */

/* A cursor over one line; every field reader fails once the line has. */
typedef struct line {
  const char *p, *end;
  bool ok;
} line;

static const char *field(line *l, size_t *n) {
  const char *s = l->p;
  while (l->p < l->end && *l->p != ' ')
    l->p++;
  *n = (size_t)(l->p - s);
  l->ok = l->ok && *n > 0;
  if (l->p < l->end)
    l->p++;
  return s;
}

static int64_t number(line *l) {
  size_t n;
  const char *s = field(l, &n);
  char buf[24];
  if (!l->ok || n >= sizeof buf) {
    l->ok = false;
    return 0;
  }
  memcpy(buf, s, n);
  buf[n] = '\0';
  char *stop;
  long long v = strtoll(buf, &stop, 10);
  l->ok = *stop == '\0';
  return v;
}

static int outcome_of(const char *s, size_t n) {
  for (int i = IDEM_OUTCOME_COMPLETED; i <= IDEM_OUTCOME_POISONED; i++)
    if (strlen(outcome_name[i]) == n && memcmp(s, outcome_name[i], n) == 0)
      return i;
  return -1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Decodes the message field to the end of the line into out; NULL for
 * "-" or a malformed field. */
static const char *message(line *l, char **out) {
  const char *s = l->p;
  size_t n = (size_t)(l->end - s);
  if (n == 0 || s[0] != '=')
    return NULL;
  char *start = *out, *o = start;
  for (size_t i = 1; i < n; i++) {
    if (s[i] != '\\') {
      *o++ = s[i];
      continue;
    }
    if (i + 3 >= n || s[i + 1] != 'x')
      return NULL;
    int hi = hexval(s[i + 2]), lo = hexval(s[i + 3]);
    if (hi < 0 || lo < 0)
      return NULL;
    *o++ = (char)(hi << 4 | lo);
    i += 3;
  }
  *o++ = '\0';
  *out = o;
  return start;
}

static idem_attempt *find(idem_attempt *a, size_t n, uint64_t fence) {
  while (n--)
    if (a[n].fence == fence)
      return &a[n];
  return NULL;
}

int idem__hist_scan(const char *text, size_t len,
                    int (*fn)(void *ctx, const idem_attempt *a), void *ctx) {
  size_t cap = 0;
  for (size_t i = 0; i < len; i++)
    cap += text[i] == 'c' && line_start(text, i);
  idem_attempt *a = cap ? malloc(cap * sizeof *a) : NULL;
  char *msgs = cap ? malloc(len + 1) : NULL;
  if (cap && (!a || !msgs)) {
    free(a);
    free(msgs);
    return -1;
  }
  char *next_msg = msgs;
  size_t n = 0;
  for (const char *p = text, *stop = text + len; p < stop;) {
    const char *eol = memchr(p, '\n', (size_t)(stop - p));
    line l = {p + 2, eol ? eol : stop, p + 1 < stop && p[1] == ' '};
    char kind = *p;
    p = eol ? eol + 1 : stop;
    uint64_t fence = (uint64_t)number(&l);
    if (!l.ok)
      continue;
    if (kind == 'c' && n < cap) {
      idem_attempt at = IDEM_ATTEMPT_INIT;
      at.fence = fence;
      at.attempt = (uint32_t)number(&l);
      size_t on;
      const char *owner = field(&l, &on);
      at.pid = number(&l);
      at.started_at = number(&l);
      if (!l.ok || on >= sizeof at.owner)
        continue;
      if (!(on == 1 && owner[0] == '-'))
        memcpy(at.owner, owner, on);
      a[n++] = at;
    } else if (kind == 'e') {
      size_t wn;
      const char *word = field(&l, &wn);
      int outcome = outcome_of(word, wn);
      int64_t ended = number(&l);
      int code = (int)number(&l);
      idem_attempt *at = find(a, n, fence);
      if (!l.ok || outcome < 0 || !at)
        continue;
      at->outcome = outcome;
      at->ended_at = ended;
      at->code = code;
      at->message = message(&l, &next_msg);
    } else if (kind == 'l') {
      idem_attempt *at = find(a, n, fence);
      if (at)
        at->outcome = IDEM_OUTCOME_LOST;
    }
  }
  for (size_t i = 0; i < n; i++)
    if (fn(ctx, &a[i]))
      break;
  free(a);
  free(msgs);
  return 0;
}
