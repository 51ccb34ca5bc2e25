/* SPDX-License-Identifier: MIT */
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
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Writes the reason of a refused value, formatted, into why. */
static void why_set(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t why_len, const char *fmt, ...) {
  if (why == NULL || why_len == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, why_len, fmt, ap);
  va_end(ap);
}

/* The units a duration may carry, in ms each. Upper case is not taken: an
 * "M" could as well mean months. */
static const struct {
  const char *name;
  int64_t ms;
} units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};

int cli_parse_duration(const char *s, int64_t *out_ms, char *why,
                       size_t why_len) {
  /* Parsed by hand rather than with strtod() so that "0.1" is exactly
   * 100 ms and no locale changes the decimal point. The syntax is checked
   * whole before the range, so that a typo is named as one even in a
   * number too large. */
  if (why != NULL && why_len > 0)
    why[0] = '\0';
  if (s == NULL || s[0] == '\0') {
    why_set(why, why_len, "no value (expected e.g. 30, 500ms, 5m, 2h, 7d)");
    return -1;
  }
  if (s[0] == '-') {
    why_set(why, why_len, "must not be negative");
    return -1;
  }
  if (*s < '0' || *s > '9') {
    why_set(why, why_len,
            "not a number (expected e.g. 30, 500ms, 5m, 2h, "
            "7d)");
    return -1;
  }
  /* Past the limit the whole part only needs to stay past it: saturating
   * keeps the products below from overflowing. */
  int64_t whole = 0;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++) {
    whole = whole * 10 + (*p - '0');
    if (whole > CLI_MAX_DURATION_MS)
      whole = CLI_MAX_DURATION_MS + 1;
  }
  int64_t frac = 0; /* thousandths */
  int decimals = -1;
  if (*p == '.') {
    p++;
    if (*p < '0' || *p > '9') {
      why_set(why, why_len, "no digit after '.'");
      return -1;
    }
    decimals = 0;
    for (; *p >= '0' && *p <= '9'; p++, decimals++)
      if (decimals < 3)
        frac = frac * 10 + (*p - '0');
    if (decimals > 3) {
      /* idem(1): up to three decimals, never cut off */
      why_set(why, why_len, "more than 3 decimals");
      return -1;
    }
    for (int d = decimals; d < 3; d++)
      frac *= 10;
  }
  int64_t unit = 1000; /* a bare number is seconds */
  if (*p != '\0') {
    size_t i = 0;
    for (; i < sizeof units / sizeof units[0]; i++)
      if (strcmp(p, units[i].name) == 0)
        break;
    if (i == sizeof units / sizeof units[0]) {
      char shown[24];
      /* The unit as typed, escaped and shortened: it may be any bytes. */
      cli_key_display(p, strlen(p), shown, sizeof shown);
      why_set(why, why_len, "unknown unit '%s' (ms, s, m, h, d)", shown);
      return -1;
    }
    unit = units[i].ms;
  }
  if (unit == 1 && decimals >= 0) {
    why_set(why, why_len, "no decimals with ms");
    return -1;
  }
  /* frac is in thousandths of the unit, a whole number of ms for every
   * unit from seconds up. */
  int64_t ms = whole * unit + frac * (unit / 1000);
  if (ms > CLI_MAX_DURATION_MS) {
    why_set(why, why_len, "over the limit of 366d");
    return -1;
  }
  *out_ms = ms;
  return 0;
}

int cli_option_error(const char *opt, const char *value, const char *why) {
  char shown[64];
  cli_key_display(value, strlen(value), shown, sizeof shown);
  return cli_usage_error("%s %s: %s", opt, shown[0] != '\0' ? shown : "''",
                         why);
}

/* The default database, kept here so that cli_open() can tell it from a
 * path that was given (only the default's directory is created), and the
 * reason when there is none. */
static char default_db[PATH_MAX];
static const char *no_default_why;

/* Writes dir + "/idem/idem.db" (or dir + tail) into default_db. */
static const char *default_in(const char *dir, const char *tail) {
  int n = snprintf(default_db, sizeof default_db, "%s%s", dir, tail);
  if (n < 0 || (size_t)n >= sizeof default_db) {
    no_default_why = "the home directory's path is too long";
    default_db[0] = '\0';
  }
  return default_db;
}

const char *cli_db_default(void) {
  /* Never the current directory: under cron that is $HOME, under systemd
   * "/", and a job would not find its keys again from elsewhere. Root's
   * database is the system's, where the FHS puts state; a user's is in
   * the XDG state directory, which only that user can read. */
  no_default_why = NULL;
  if (geteuid() == 0)
    return default_in(CLI_ROOT_DB_DIR, "/idem.db");
  const char *state = getenv("XDG_STATE_HOME");
  /* The XDG specification: a relative path is invalid and ignored. */
  if (state != NULL && state[0] == '/')
    return default_in(state, "/idem/idem.db");
  const char *home = getenv("HOME");
  if (home == NULL || home[0] != '/') {
    const struct passwd *pw = getpwuid(geteuid());
    home = pw != NULL ? pw->pw_dir : NULL;
  }
  if (home == NULL || home[0] != '/') {
    no_default_why = "there is no home directory for the default database "
                     "($HOME is not set)";
    default_db[0] = '\0';
    return default_db;
  }
  return default_in(home, "/.local/state/idem/idem.db");
}

const char *cli_db_path(const char *opt) {
  if (opt != NULL)
    return opt;
  const char *env = getenv("IDEM_DB");
  if (env != NULL && env[0] != '\0')
    return env;
  return cli_db_default();
}

int cli_db_is_default(const char *path) {
  return path == default_db;
}

/* Creates the directory of the default database and the ones above it
 * that are missing: the user's with mode 0700 (the XDG specification's),
 * root's with 0755, so that other users may read a database that root's
 * jobs share with them (SQLite gives its files the database's mode). The
 * mode of the last one is set whatever the umask. Returns 0 or -1 with
 * errno set, and the directory that failed in `failed`. */
static int make_default_dir(const char *db, char *failed, size_t cap) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", db);
  char *slash = strrchr(dir, '/');
  if (slash == NULL || slash == dir)
    return 0;
  *slash = '\0';
  mode_t mode = geteuid() == 0 ? 0755 : 0700;
  struct stat st;
  if (stat(dir, &st) == 0)
    return 0;
  /* Each missing directory from the top down. */
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char c = *p;
    *p = '\0';
    if (mkdir(dir, mode) != 0 && errno != EEXIST) {
      snprintf(failed, cap, "%s", dir);
      return -1;
    }
    if (c == '\0')
      break;
    *p = c;
  }
  if (chmod(dir, mode) != 0) {
    snprintf(failed, cap, "%s", dir);
    return -1;
  }
  return 0;
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

/* The flags of the last cli_open(): whether the failure to explain is a
 * reader's or a writer's, and whether the database was to be created.
 * The command opens one database at a time. */
static unsigned last_open_flags;

/* The directory part of path ("." for none) into dir. */
static void dir_of(const char *path, char *dir, size_t cap) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    snprintf(dir, cap, ".");
  else if (slash == path)
    snprintf(dir, cap, "/");
  else
    snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

/* A name for the owner of a file, for advice on whom to run as. */
static void owner_of(const struct stat *st, char *buf, size_t cap) {
  const struct passwd *pw = getpwuid(st->st_uid);
  if (pw != NULL)
    snprintf(buf, cap, "%s", pw->pw_name);
  else
    snprintf(buf, cap, "uid %ld", (long)st->st_uid);
}

/* Looks at the file system to say why `path` could not be opened, read
 * or written: the errno text and what to do, in `out`. Returns 0 when it
 * found nothing to say. The library reports SQLite's words, which are the
 * same for a missing directory and a denied one. */
static int diagnose(const char *path, int code, char *out, size_t cap) {
  if (code != IDEM_ECANTOPEN && code != IDEM_EREADONLY)
    return 0;
  /* An SQLite URI names its file in its own syntax. */
  if (strncmp(path, "file:", 5) == 0)
    return 0;
  int reader = (last_open_flags & IDEM_OPEN_READONLY) != 0;
  int create =
      (last_open_flags & (IDEM_OPEN_READONLY | IDEM_OPEN_NOCREATE)) == 0;
  const char *again = cli_db_is_default(path)
                          ? "choose another database with -d or IDEM_DB"
                          : "choose another database with -d";
  char dir[PATH_MAX];
  dir_of(path, dir, sizeof dir);
  struct stat st, dst;
  char who[64];
  if (stat(path, &st) != 0) {
    int e = errno;
    if (e == ENOENT && !create && cli_db_is_default(path)) {
      snprintf(out, cap,
               "%s: there is no database at the default path yet ('idem "
               "run' creates it): %s",
               strerror(e), again);
      return 1;
    }
    if (e != ENOENT) {
      snprintf(out, cap,
               "%s: this user cannot reach the file: run as a user who "
               "can, or %s",
               strerror(e), again);
      return 1;
    }
    if (stat(dir, &dst) != 0) {
      int de = errno;
      if (de == ENOENT || de == ENOTDIR)
        snprintf(out, cap, "%s: directory '%s' does not exist: create it or %s",
                 strerror(e), dir, again);
      else
        snprintf(out, cap,
                 "%s: this user cannot reach directory '%s': run as a user "
                 "who can, or %s",
                 strerror(de), dir, again);
      return 1;
    }
    if (!create) {
      snprintf(out, cap,
               "%s: there is no database there yet ('idem run' creates it): "
               "check the path",
               strerror(e));
      return 1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
      int we = errno;
      owner_of(&dst, who, sizeof who);
      snprintf(out, cap,
               "%s: this user cannot create files in '%s': run as %s, who "
               "owns it, or %s",
               strerror(we), dir, who, again);
      return 1;
    }
    return 0;
  }
  if (S_ISDIR(st.st_mode)) {
    snprintf(out, cap, "%s: give the path of a database file",
             strerror(EISDIR));
    return 1;
  }
  owner_of(&st, who, sizeof who);
  if (access(path, R_OK) != 0) {
    snprintf(out, cap,
             "%s: this user may not read the file: run as %s, who owns it, "
             "or ask for read access to it",
             strerror(errno), who);
    return 1;
  }
  if (!reader && access(path, W_OK) != 0) {
    snprintf(out, cap,
             "%s: this user may not write the file: run as %s, who owns "
             "it ('idem get', 'list' and 'stats' only read)",
             strerror(errno), who);
    return 1;
  }
  /* SQLite keeps "-wal" and "-shm" beside a database in WAL mode, and
   * even a reader writes the "-shm" index: it must be able to create it
   * in the directory, or to open an existing one for writing. They exist
   * only while some process has the database open, so a reader without
   * write access to the directory works only at those moments. */
  char shm[PATH_MAX + 8];
  snprintf(shm, sizeof shm, "%s-shm", path);
  int dir_ok = access(dir, W_OK | X_OK) == 0;
  int dir_errno = errno;
  int shm_ok = access(shm, R_OK | W_OK) == 0;
  if (!dir_ok && !shm_ok) {
    snprintf(out, cap,
             "%s: %s this user cannot create '%s' in '%s', nor write it: "
             "run as %s, who owns the database (e.g. sudo -u %s), or give "
             "this user write access to that directory and the database "
             "(a shared group, with g+w on both)",
             strerror(dir_errno),
             reader ? "even reading a database in WAL mode writes its -shm "
                      "file, and"
                    : "a database in WAL mode needs its -wal and -shm files, "
                      "and",
             shm, dir, who, who);
    return 1;
  }
  return 0;
}

/* The handle's message without what the operator already has or cannot
 * use: the path at its front (the message is printed after it) and a
 * parenthesis naming a C flag (the command has options, not flags). */
static void library_words(const char *msg, const char *path, char *out,
                          size_t cap) {
  const char *at = strstr(msg, path);
  if (at != NULL && at[strlen(path)] == ':' && at[strlen(path) + 1] == ' ')
    msg = at + strlen(path) + 2;
  snprintf(out, cap, "%s", msg);
  char *flag = strstr(out, " (IDEM_");
  if (flag != NULL) {
    char *end = strchr(flag, ')');
    memmove(flag, end != NULL ? end + 1 : flag + strlen(flag),
            strlen(end != NULL ? end + 1 : flag + strlen(flag)) + 1);
  }
}

/* What an operator can do about the errors whose cause the message says
 * but not the cure. */
static const char *advice_for(int code) {
  switch (code) {
  case IDEM_ENOTDB:
  case IDEM_EFOREIGN:
    return "choose the right file with -d";
  case IDEM_EFULL:
    return "free some space, or remove old results with 'idem gc'";
  case IDEM_EBUSY:
    return "another process held the write lock for too long; try again";
  case IDEM_ECORRUPT:
    return "restore it from a backup, or move it aside to start afresh";
  default:
    return NULL;
  }
}

int cli_db_error(idem_db *db, const char *path, int code, const char *what) {
  char why[2 * PATH_MAX + 512];
  const char *msg = idem_errmsg(db);
  if (path[0] == '\0') {
    cli_error("%s: no database given, and %s: give one with -d or IDEM_DB",
              what,
              no_default_why != NULL ? no_default_why : "no default path");
    return cli_exit_for(code);
  }
  if (!diagnose(path, code, why, sizeof why)) {
    if (msg == NULL || msg[0] == '\0')
      snprintf(why, sizeof why, "%s", idem_errstr(code));
    else
      library_words(msg, path, why, sizeof why);
    const char *advice = advice_for(code);
    if (advice != NULL) {
      size_t n = strlen(why);
      snprintf(why + n, sizeof why - n, ": %s", advice);
    }
  }
  cli_error("%s '%s': %s", what, path, why);
  return cli_exit_for(code);
}

int cli_open(idem_db **out, const char *path, const idem_options *opts) {
  idem_db *db = NULL;
  *out = NULL;
  last_open_flags = opts != NULL ? opts->flags : 0;
  if (path[0] == '\0')
    return cli_db_error(NULL, path, IDEM_ECANTOPEN, "cannot open database");
  int create =
      (last_open_flags & (IDEM_OPEN_READONLY | IDEM_OPEN_NOCREATE)) == 0;
  char failed[PATH_MAX];
  if (create && cli_db_is_default(path) &&
      make_default_dir(path, failed, sizeof failed) != 0) {
    cli_error("cannot create directory '%s' for the database '%s': %s: "
              "choose another database with -d or IDEM_DB",
              failed, path, strerror(errno));
    return CLI_EXIT_STORAGE;
  }
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
