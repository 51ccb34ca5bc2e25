/* SPDX-License-Identifier: MIT */
/*
 * fuzz_cli.c - the idem command's parsing and formatting of untrusted
 * text: the options of every subcommand, numbers, durations and signals,
 * keys shown to humans, JSON and base64 of arbitrary bytes, fingerprints
 * and times.
 *
 * The first byte picks what is fuzzed; the rest is its input, split at NUL
 * bytes where a command line is wanted. Numbers and durations are checked
 * against reference parsers written from the documentation (cli.h), not
 * from the code; JSON output is decoded again and must give back the very
 * bytes, so a lossy or ambiguous escape fails.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cli.h"
#include "fuzz_cli.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

void fuzz_cli_die(const char *file, int line, const char *what) {
  fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
  abort();
}

/* main.c is left out (it has main()); what the parsers call of it. */
void cli_usage(FILE *f) {
  (void)f;
}

int cli_version(void) {
  return CLI_EXIT_OK;
}

/* --- Command lines ------------------------------------------------------ */

#define MAX_ARGS 32

/* Splits the bytes at NULs into a NULL-terminated argv behind argv0, each
 * argument its own allocation so that a read past its end is caught. */
static int make_argv(const char *argv0, const uint8_t *p, size_t n,
                     char **argv) {
  int argc = 0;
  argv[argc++] = strdup(argv0);
  size_t start = 0;
  for (size_t i = 0; i <= n && argc < MAX_ARGS; i++) {
    if (i == n || p[i] == '\0') {
      if (i == n && i == start && n > 0)
        break; /* a trailing NUL ends the last argument */
      argv[argc] = strndup((const char *)p + start, i - start);
      FUZZ_CHECK(argv[argc] != NULL);
      argc++;
      start = i + 1;
    }
  }
  argv[argc] = NULL;
  return argc;
}

static void free_argv(char **argv) {
  for (int i = 0; argv[i] != NULL; i++)
    free(argv[i]);
}

/* A NUL-terminated copy of the bytes (up to the first NUL). */
static char *text(const uint8_t *p, size_t n) {
  char *s = strndup((const char *)p, n);
  FUZZ_CHECK(s != NULL);
  return s;
}

/* --- Numbers ------------------------------------------------------------
 * cli.h: "the whole string, digits only, in range". */
static int ref_u64(const char *s, uint64_t max, uint64_t *out) {
  if (s[0] == '\0')
    return -1;
  uint64_t v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    if (__builtin_mul_overflow(v, 10, &v) ||
        __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
      return -1;
  }
  if (v > max)
    return -1;
  *out = v;
  return 0;
}

static void fuzz_u64(const uint8_t *p, size_t n) {
  uint64_t max = UINT64_MAX;
  if (n >= 1) {
    /* A few real maxima of the command, or any. */
    static const uint64_t maxima[] = {UINT64_MAX, UINT32_MAX, 255,
                                      IDEM_MAX_RESULT, 0};
    max = maxima[p[0] % 5];
    p++;
    n--;
  }
  char *s = text(p, n);
  uint64_t got = 7, want = 9;
  int rc = cli_parse_u64(s, max, &got);
  int ref = ref_u64(s, max, &want);
  FUZZ_CHECK(rc == ref);
  FUZZ_CHECK(rc != 0 || got == want);
  free(s);
}

/* cli.h and idem(1): a number "with up to three decimals and an optional
 * unit, ms, s, m, h or d", seconds without one, "ms take no decimals", as
 * ms, and no more than CLI_MAX_DURATION_MS ("Largest value accepted for a
 * duration option"). */
static int ref_duration(const char *s, int64_t *out_ms) {
  static const struct {
    const char *name;
    int64_t ms;
  } units[] = {{"", 1000},   {"ms", 1},      {"s", 1000},
               {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  size_t whole_len = strspn(s, "0123456789");
  if (whole_len == 0)
    return -1;
  const char *p = s + whole_len;
  int64_t frac = 0;
  int has_frac = 0;
  if (*p == '.') {
    size_t fl = strspn(p + 1, "0123456789");
    if (fl == 0 || fl > 3)
      return -1;
    for (size_t i = 0; i < 3; i++)
      frac = frac * 10 + (i < fl ? p[1 + i] - '0' : 0);
    p += 1 + fl;
    has_frac = 1;
  }
  int64_t unit = -1;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(p, units[i].name) == 0)
      unit = units[i].ms;
  if (unit < 0 || (unit == 1 && has_frac))
    return -1;
  while (whole_len > 1 && *s == '0') {
    s++;
    whole_len--;
  }
  if (whole_len > 12)
    return -1;
  int64_t whole = 0;
  for (size_t i = 0; i < whole_len; i++)
    whole = whole * 10 + (s[i] - '0');
  int64_t ms;
  if (__builtin_mul_overflow(whole, unit, &ms) ||
      __builtin_add_overflow(ms, frac * unit / 1000, &ms))
    return -1;
  if (ms > CLI_MAX_DURATION_MS)
    return -1;
  *out_ms = ms;
  return 0;
}

static void fuzz_duration(const uint8_t *p, size_t n) {
  char *s = text(p, n);
  char why[CLI_WHY_MAX + 1];
  int64_t got = -7, want = -9;
  why[CLI_WHY_MAX] = 'Z';
  int rc = cli_parse_duration(s, &got, why, CLI_WHY_MAX);
  int ref = ref_duration(s, &want);
  FUZZ_CHECK(why[CLI_WHY_MAX] == 'Z');
  if (rc == 0)
    FUZZ_CHECK(got >= 0 && got <= CLI_MAX_DURATION_MS);
  else /* a refusal always says why, within the buffer */
    FUZZ_CHECK(why[0] != '\0' && strnlen(why, CLI_WHY_MAX) < CLI_WHY_MAX);
  FUZZ_CHECK(rc == ref);
  FUZZ_CHECK(rc != 0 || got == want);
  /* A short buffer, or none, changes nothing but the reason's length. */
  char small[6];
  int64_t again = -5;
  small[5] = 'Z';
  FUZZ_CHECK(cli_parse_duration(s, &again, small, 5) == rc);
  FUZZ_CHECK(small[5] == 'Z' && memchr(small, '\0', 5) != NULL);
  FUZZ_CHECK(rc != 0 || again == got);
  FUZZ_CHECK(cli_parse_duration(s, &again, NULL, 0) == rc);
  free(s);
}

/* cli.h: a signal "as a name, with or without SIG, in any case, or as a
 * number". The names are the parser's own table; what is checked is that
 * the spellings of one name agree and numbers are plain and in range. */
static void fuzz_signal(const uint8_t *p, size_t n) {
  char *s = text(p, n);
  char why[CLI_WHY_MAX];
  int sig = -1;
  int rc = cli_parse_signal(s, &sig, why, sizeof why);
  if (rc == 0)
    FUZZ_CHECK(sig >= 1 && sig <= SIGRTMAX);
  else
    FUZZ_CHECK(why[0] != '\0');
  if (s[0] >= '0' && s[0] <= '9') {
    uint64_t v = 0;
    int ok = ref_u64(s, (uint64_t)SIGRTMAX, &v) == 0 && v >= 1;
    FUZZ_CHECK(ok == (rc == 0));
    FUZZ_CHECK(!ok || (uint64_t)sig == v);
  } else if (s[0] != '\0') {
    /* The same name in the other case, and with "SIG" before it. */
    size_t len = strlen(s);
    char *other = malloc(len + 4);
    FUZZ_CHECK(other != NULL);
    for (size_t i = 0; i <= len; i++) {
      char c = s[i];
      other[i] = (char)(c >= 'a' && c <= 'z'   ? c - 32
                        : c >= 'A' && c <= 'Z' ? c + 32
                                               : c);
    }
    int sig2 = -2;
    FUZZ_CHECK(cli_parse_signal(other, &sig2, NULL, 0) == rc);
    FUZZ_CHECK(rc != 0 || sig2 == sig);
    if (strncasecmp(s, "sig", 3) != 0) {
      memcpy(other, "SiG", 3);
      memcpy(other + 3, s, len + 1);
      sig2 = -2;
      FUZZ_CHECK(cli_parse_signal(other, &sig2, NULL, 0) == rc);
      FUZZ_CHECK(rc != 0 || sig2 == sig);
    }
    free(other);
  }
  free(s);
}

/* --- Keys shown to humans ----------------------------------------------- */

static size_t escape_key(const uint8_t *k, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (k[i] == '\\')
      o += (size_t)sprintf(out + o, "\\\\");
    else if (k[i] >= 0x20 && k[i] < 0x7f)
      out[o++] = (char)k[i];
    else
      o += (size_t)sprintf(out + o, "\\x%02x", k[i]);
  }
  out[o] = '\0';
  return o;
}

static void fuzz_key_display(const uint8_t *p, size_t n) {
  if (n < 1)
    return;
  size_t cap = p[0] % 64 == 63 ? CLI_KEY_DISPLAY_MAX : p[0] % 64;
  p++;
  n--;
  char *full = malloc(4 * n + 1);
  char *buf = malloc(cap + 1);
  FUZZ_CHECK(full != NULL && buf != NULL);
  size_t flen = escape_key(p, n, full);
  /* A canary past the end: nothing may be written beyond cap. */
  buf[cap] = 'Z';
  if (cap > 0)
    memset(buf, 'Y', cap);
  cli_key_display(p, n, buf, cap);
  FUZZ_CHECK(buf[cap] == 'Z');
  if (cap == 0) {
    free(full);
    free(buf);
    return;
  }
  size_t len = strnlen(buf, cap);
  FUZZ_CHECK(len < cap);
  if (cap < 4) {
    FUZZ_CHECK(len == 0);
  } else if (flen < cap) {
    FUZZ_CHECK(len == flen && memcmp(buf, full, flen) == 0);
  } else {
    /* Shortened: a prefix of the whole form, whole escapes only, then
     * "...". */
    FUZZ_CHECK(len >= 3 && memcmp(buf + len - 3, "...", 3) == 0);
    FUZZ_CHECK(memcmp(buf, full, len - 3) == 0);
    char *again = malloc(4 * n + 1);
    FUZZ_CHECK(again != NULL);
    size_t cut = 0, o = 0;
    while (cut < n && o < len - 3) {
      o += escape_key(p + cut, 1, again);
      cut++;
    }
    FUZZ_CHECK(o == len - 3);
    free(again);
  }
  free(full);
  free(buf);
}

/* --- UTF-8, JSON and base64 -------------------------------------------- */

/* Well-formed UTF-8 as the Unicode Standard's table 3-7 lists it. */
static int ref_utf8(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    uint8_t lo = 0x80, hi = 0xbf;
    size_t more;
    if (c <= 0x7f) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      more = 1;
    } else if (c == 0xe0) {
      more = 2;
      lo = 0xa0;
    } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
      more = 2;
    } else if (c == 0xed) {
      more = 2;
      hi = 0x9f;
    } else if (c == 0xf0) {
      more = 3;
      lo = 0x90;
    } else if (c >= 0xf1 && c <= 0xf3) {
      more = 3;
    } else if (c == 0xf4) {
      more = 3;
      hi = 0x8f;
    } else {
      return 0;
    }
    if (n - i - 1 < more)
      return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return 0;
    for (size_t k = 2; k <= more; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xbf)
        return 0;
    i += 1 + more;
  }
  return 1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decodes the JSON string at *pp (its opening quote) into out; returns
 * its length. Only the escapes a writer of bytes needs are accepted, and
 * no raw control character. */
static size_t json_unescape(const char **pp, uint8_t *out) {
  const char *p = *pp;
  FUZZ_CHECK(*p == '"');
  p++;
  size_t o = 0;
  for (;;) {
    unsigned char c = (unsigned char)*p++;
    FUZZ_CHECK(c != '\0' && c >= 0x20);
    if (c == '"')
      break;
    if (c != '\\') {
      out[o++] = c;
      continue;
    }
    c = (unsigned char)*p++;
    switch (c) {
    case '"':
    case '\\':
    case '/':
      out[o++] = c;
      break;
    case 'b':
      out[o++] = '\b';
      break;
    case 'f':
      out[o++] = '\f';
      break;
    case 'n':
      out[o++] = '\n';
      break;
    case 'r':
      out[o++] = '\r';
      break;
    case 't':
      out[o++] = '\t';
      break;
    case 'u': {
      int v = 0;
      for (int k = 0; k < 4; k++) {
        int h = hexval(p[k]);
        FUZZ_CHECK(h >= 0);
        v = v * 16 + h;
      }
      /* Bytes below U+0020 only: everything else is written as is. */
      FUZZ_CHECK(v < 0x20);
      out[o++] = (uint8_t)v;
      p += 4;
      break;
    }
    default:
      FUZZ_CHECK(!"unknown escape");
    }
  }
  *pp = p;
  return o;
}

static size_t base64_decode(const char **pp, uint8_t *out) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const char *p = *pp;
  FUZZ_CHECK(*p == '"');
  p++;
  size_t o = 0;
  for (;;) {
    if (*p == '"')
      break;
    int v[4], pad = 0;
    for (int k = 0; k < 4; k++) {
      FUZZ_CHECK(p[k] != '\0' && p[k] != '"');
      if (p[k] == '=') {
        pad++;
        v[k] = 0;
        continue;
      }
      FUZZ_CHECK(pad == 0);
      const char *t = strchr(tab, p[k]);
      FUZZ_CHECK(t != NULL);
      v[k] = (int)(t - tab);
    }
    FUZZ_CHECK(pad <= 2);
    uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                 (uint32_t)v[2] << 6 | (uint32_t)v[3];
    out[o++] = (uint8_t)(x >> 16);
    if (pad < 2)
      out[o++] = (uint8_t)(x >> 8);
    if (pad < 1)
      out[o++] = (uint8_t)x;
    p += 4;
    /* Padding ends the string. */
    FUZZ_CHECK(pad == 0 || *p == '"');
  }
  *pp = p + 1;
  return o;
}

static void fuzz_json(const uint8_t *p, size_t n) {
  int valid = cli_utf8_valid(p, n);
  FUZZ_CHECK(valid == ref_utf8(p, n));
  char *doc = NULL;
  size_t doc_len = 0;
  FILE *f = open_memstream(&doc, &doc_len);
  FUZZ_CHECK(f != NULL);
  cli_json_bytes(f, "key", p, n);
  FUZZ_CHECK(fclose(f) == 0);
  FUZZ_CHECK(strlen(doc) == doc_len);
  uint8_t *back = malloc(n + 1);
  FUZZ_CHECK(back != NULL);
  const char *q = doc;
  size_t len;
  if (valid) {
    FUZZ_CHECK(strncmp(q, "\"key\":", 6) == 0);
    q += 6;
    len = json_unescape(&q, back);
  } else {
    FUZZ_CHECK(strncmp(q, "\"key_base64\":", 13) == 0);
    q += 13;
    len = base64_decode(&q, back);
  }
  FUZZ_CHECK(*q == '\0');
  FUZZ_CHECK(len == n && (n == 0 || memcmp(back, p, n) == 0));
  free(back);
  free(doc);
}

/* --- Fingerprints, states, times --------------------------------------- */

static void fuzz_fingerprint(const uint8_t *p, size_t n) {
  char *argv[MAX_ARGS + 1];
  int argc = make_argv("cmd", p, n, argv);
  unsigned char *fp = NULL;
  size_t len = 0;
  FUZZ_CHECK(cli_fingerprint(argv, &fp, &len) == 0);
  /* The arguments joined with NUL bytes: the documented format. */
  size_t total = 0;
  for (int i = 0; i < argc; i++)
    total += strlen(argv[i]) + (i > 0);
  FUZZ_CHECK(total <= IDEM_MAX_FINGERPRINT);
  FUZZ_CHECK(len == total);
  size_t o = 0;
  for (int i = 0; i < argc; i++) {
    if (i > 0)
      FUZZ_CHECK(fp[o++] == '\0');
    size_t al = strlen(argv[i]);
    FUZZ_CHECK(memcmp(fp + o, argv[i], al) == 0);
    o += al;
  }
  free(fp);
  free_argv(argv);
}

static void fuzz_state(const uint8_t *p, size_t n) {
  char *s = text(p, n);
  int st = cli_state_parse(s);
  FUZZ_CHECK(st == -2 ||
             (st >= IDEM_STATE_PENDING && st <= IDEM_STATE_POISONED));
  if (st != -2)
    FUZZ_CHECK(strcmp(cli_state_name(st), s) == 0);
  free(s);
}

static void fuzz_time(const uint8_t *p, size_t n) {
  int64_t ms = 0;
  for (size_t i = 0; i < n && i < 8; i++)
    ms = (int64_t)((uint64_t)ms << 8 | p[i]);
  if (n > 0 && p[0] & 0x80 && n <= 6)
    ms = -ms; /* small negative times too, before the epoch */
  char buf[CLI_TIME_MAX + 1];
  buf[CLI_TIME_MAX] = 'Z';
  cli_format_time(ms, buf, CLI_TIME_MAX);
  FUZZ_CHECK(buf[CLI_TIME_MAX] == 'Z');
  FUZZ_CHECK(strnlen(buf, CLI_TIME_MAX) < CLI_TIME_MAX);
  /* Years 1000 to 9999 in the documented form, which must read back as the
   * same instant. */
  if (ms >= INT64_C(-30610224000000) && ms <= INT64_C(253402300799999)) {
    struct tm tm;
    int msec = -1, used = 0;
    memset(&tm, 0, sizeof tm);
    FUZZ_CHECK(strlen(buf) == 24);
    FUZZ_CHECK(sscanf(buf, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year,
                      &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                      &tm.tm_sec, &msec, &used) == 7);
    FUZZ_CHECK(used == 24);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    FUZZ_CHECK((int64_t)t * 1000 + msec == ms);
  }
}

/* --- Entry -------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t mode = data[0];
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  char *argv[MAX_ARGS + 1];
  switch (mode % 10) {
  case 0:
  case 1: {
    int argc = make_argv("run", p, n, argv);
    fuzz_cli_run_parse(argc, argv);
    free_argv(argv);
    break;
  }
  case 2: {
    static const char *const names[] = {"get", "list", "reset", "gc", "stats"};
    int which = (mode / 10) % 5;
    int argc = make_argv(names[which], p, n, argv);
    fuzz_cli_admin_parse(which, argc, argv);
    free_argv(argv);
    break;
  }
  case 3:
    fuzz_u64(p, n);
    break;
  case 4:
    /* 4, 24, ...: durations; 14, 34, ...: signals. */
    if ((mode / 10) % 2 == 0)
      fuzz_duration(p, n);
    else
      fuzz_signal(p, n);
    break;
  case 5:
    fuzz_key_display(p, n);
    break;
  case 6:
    fuzz_json(p, n);
    break;
  case 7:
    fuzz_fingerprint(p, n);
    break;
  case 8:
    fuzz_state(p, n);
    break;
  default:
    fuzz_time(p, n);
    break;
  }
  return 0;
}
