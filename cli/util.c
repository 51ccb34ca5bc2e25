/*
 * util.c - small helpers every subcommand needs: messages and exit
 * statuses, strict number parsing, opening the database, safe writes.
 *
 * They live together so that every subcommand reports errors, parses
 * numbers and names keys the same way.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("idem: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

int cli_usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("idem: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fputs("Try 'idem --help'.\n", stderr);
  return CLI_EXIT_USAGE;
}

int cli_getopt_error(int c, char **argv) {
  /* getopt's own messages carry argv[0], a path that varies; these are
   * worded the same for every subcommand. optind has moved past the
   * offending word except inside a cluster of short options, where optopt
   * names the letter. */
  const char *word = optind > 0 ? argv[optind - 1] : "";
  if (c == ':') {
    if (optopt > 0 && optopt < 128 && word[0] == '-' && word[1] != '-')
      return cli_usage_error("option requires an argument -- '%c'", optopt);
    return cli_usage_error("option '%s' requires an argument", word);
  }
  if (optopt > 0 && optopt < 128)
    return cli_usage_error("invalid option -- '%c'", optopt);
  return cli_usage_error("unrecognized option '%s'", word);
}

int cli_parse_u64(const char *s, uint64_t max, uint64_t *out) {
  /* strtoull() alone would accept blanks, signs ("-1" wraps around) and
   * hexadecimal; only plain digits are numbers here. */
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  for (const char *p = s; *p; p++)
    if (*p < '0' || *p > '9')
      return -1;
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v > max)
    return -1;
  *out = (uint64_t)v;
  return 0;
}

int cli_parse_seconds(const char *s, int64_t *out_ms) {
  /* Parsed by hand rather than with strtod() so that "0.1" is exactly
   * 100 ms and no locale changes the decimal point. */
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  int64_t whole = 0;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++) {
    whole = whole * 10 + (*p - '0');
    if (whole > CLI_MAX_DURATION_MS / 1000)
      return -1;
  }
  int64_t frac = 0;
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9')
      return -1;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
      if (digits == 3)
        return -1; /* idem(1): up to three decimals, never cut off */
      frac = frac * 10 + (*p - '0');
    }
    for (; digits < 3; digits++)
      frac *= 10;
  }
  if (*p != '\0' || whole * 1000 + frac > CLI_MAX_DURATION_MS)
    return -1;
  *out_ms = whole * 1000 + frac;
  return 0;
}

const char *cli_db_path(const char *opt) {
  if (opt != NULL)
    return opt;
  const char *env = getenv("IDEM_DB");
  if (env != NULL && env[0] != '\0')
    return env;
  return "idem.db";
}

int cli_exit_for(int code) {
  switch (code) {
  case IDEM_EMISMATCH:
    return CLI_EXIT_MISMATCH;
  case IDEM_ELEASELOST:
    return CLI_EXIT_BUSY;
  case IDEM_ENOTFOUND:
    return CLI_EXIT_NOTFOUND;
  case IDEM_ETOOBIG:
    return CLI_EXIT_USAGE;
  case IDEM_ECANTOPEN:
  case IDEM_ENOTDB:
  case IDEM_EFOREIGN:
  case IDEM_ESCHEMA:
  case IDEM_EREADONLY:
  case IDEM_EFULL:
  case IDEM_EBUSY:
  case IDEM_EIO:
  case IDEM_ECORRUPT:
  case IDEM_EUNKNOWN:
    return CLI_EXIT_STORAGE;
  default:
    return CLI_EXIT_INTERNAL;
  }
}

int cli_db_error(idem_db *db, const char *path, int code, const char *what) {
  /* The handle's message is the most precise; it usually names the file
   * already, and the file must be named. */
  const char *msg = idem_errmsg(db);
  if (msg == NULL || msg[0] == '\0')
    cli_error("%s: %s: %s", path, what, idem_errstr(code));
  else if (strncmp(msg, what, strlen(what)) == 0)
    cli_error("%s", msg);
  else if (strstr(msg, path) != NULL)
    cli_error("%s: %s", what, msg);
  else
    cli_error("%s: %s: %s", path, what, msg);
  return cli_exit_for(code);
}

int cli_open(idem_db **out, const char *path, const idem_options *opts) {
  idem_db *db = NULL;
  *out = NULL;
  int rc = idem_open(&db, path, opts);
  if (rc == IDEM_OK && db != NULL) {
    *out = db;
    return 0;
  }
  if (rc == IDEM_OK)
    rc = IDEM_ENOMEM; /* no handle and no error: cannot go on */
  int ex = cli_db_error(db, path, rc, "cannot open database");
  /* idem_open() may hand back a handle that explains the failure; it
   * must still be closed. */
  if (db != NULL)
    idem_close(db);
  return ex;
}

static size_t key_char_width(unsigned char c) {
  if (c == '\\')
    return 2;
  return c >= 0x20 && c < 0x7f ? 1 : 4;
}

void cli_key_display(const void *key, size_t len, char *buf, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *k = key;
  if (cap < 4) {
    if (cap > 0)
      buf[0] = '\0';
    return;
  }
  size_t need = 0;
  for (size_t i = 0; i < len; i++)
    need += key_char_width(k[i]);
  /* A key too long to show whole keeps its start and ends in "...". */
  size_t room = need < cap ? cap - 1 : cap - 4;
  size_t o = 0;
  for (size_t i = 0; i < len && o + key_char_width(k[i]) <= room; i++) {
    unsigned char c = k[i];
    if (c == '\\') {
      buf[o++] = '\\';
      buf[o++] = '\\';
    } else if (c >= 0x20 && c < 0x7f) {
      buf[o++] = (char)c;
    } else {
      buf[o++] = '\\';
      buf[o++] = 'x';
      buf[o++] = hex[c >> 4];
      buf[o++] = hex[c & 15];
    }
  }
  if (need >= cap) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o] = '\0';
}

int cli_write_all(int fd, const void *buf, size_t len) {
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

void cli_format_time(int64_t ms, char *buf, size_t cap) {
  int64_t sec = ms / 1000, rem = ms % 1000;
  if (rem < 0) {
    rem += 1000;
    sec -= 1;
  }
  time_t t = (time_t)sec;
  struct tm tm;
  char date[32];
  if (gmtime_r(&t, &tm) == NULL ||
      strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
    snprintf(buf, cap, "@%lld", (long long)ms);
    return;
  }
  snprintf(buf, cap, "%s.%03dZ", date, (int)rem);
}

int cli_std_fds(void) {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
      continue;
    /* The lowest free descriptor is this one, as the lower ones are
     * open by now. */
    int nfd = open("/dev/null", O_RDWR);
    if (nfd < 0)
      return -1;
    if (nfd != fd) {
      close(nfd);
      return -1;
    }
  }
  return 0;
}

static const char *const state_names[] = {"absent", "pending", "completed",
                                          "failed", "poisoned"};

const char *cli_state_name(int state) {
  if (state >= 0 && (size_t)state < sizeof state_names / sizeof state_names[0])
    return state_names[state];
  return "unknown";
}

int cli_state_parse(const char *name) {
  for (size_t i = 1; i < sizeof state_names / sizeof state_names[0]; i++)
    if (strcmp(name, state_names[i]) == 0)
      return (int)i;
  return -2;
}
