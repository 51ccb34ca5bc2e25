/* SPDX-License-Identifier: MIT */
/*
 * admin.c - the subcommands that look at or tidy the database: get, list,
 * reset, gc and stats.
 *
 * They run no job, so they open the database without a heartbeat thread,
 * never create it, and the ones that only read open it read-only: an
 * operator looking at a database must not change or lock it for writing.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
  OPT_JSON = 256,
  OPT_OUTPUT,
  OPT_STATE,
  OPT_LIMIT,
  OPT_ALL_POISONED,
  OPT_FORMAT,
  OPT_PREFIX,
  OPT_JSON_LINES,
  OPT_LONG,
  OPT_OLDER_THAN,
  OPT_MAX_ROWS,
  OPT_MAX_BYTES,
};

/* How a subcommand writes what it found. */
enum { FMT_TEXT, FMT_JSON, FMT_PROMETHEUS, FMT_JSON_LINES, FMT_LONG };

/* Rows asked of idem_list() per call while paging. */
#define LIST_PAGE 1000

/* --- Help ------------------------------------------------------------- */

#define DB_HELP                                                                \
  "  -d, --db PATH     the database (default: $IDEM_DB, else\n"                \
  "                    ~/.local/state/idem/idem.db, for root\n"                \
  "                    /var/lib/idem/idem.db)\n"

static const struct {
  const char *name;
  const char *text;
} usages[] = {
    {"get", "Usage: idem get [-d PATH] [--json | --output] KEY\n"
            "\n"
            "Show the record of KEY and how each of its attempts ended.\n"
            "\n" DB_HELP
            "      --json        as one JSON object, the output included\n"
            "      --output      only the recorded output, byte for byte\n"
            "\n"
            "Exit status: 0; 1 no such key; 64 usage; 74 database error.\n"},
    {"list",
     "Usage: idem list [-d PATH] [--state STATE] [--prefix P] [--limit N]\n"
     "                 [--long | --json | --json-lines]\n"
     "\n"
     "List the keys in key order, one line each, tab-separated: state,\n"
     "attempts, last change (UTC), output bytes, key.\n"
     "\n" DB_HELP
     "      --state STATE only keys in STATE: pending, completed, failed\n"
     "                    or poisoned\n"
     "      --prefix P    only keys that begin with P\n"
     "      --limit N     at most N keys\n"
     "      --long        also the last attempt's outcome and the exit\n"
     "                    status it ended with, before the key\n"
     "      --json        one JSON array of records\n"
     "      --json-lines  one JSON record per line, as they are read\n"
     "\n"
     "Exit status: 0; 64 usage; 74 database error.\n"},
    {"reset", "Usage: idem reset [-d PATH] KEY | --all-poisoned\n"
              "\n"
              "Make KEY absent again, so that its next run starts at\n"
              "attempt 1; a run holding its lease loses it.\n"
              "\n" DB_HELP "      --all-poisoned  reset every poisoned key\n"
              "\n"
              "Exit status: 0; 1 no such key; 64 usage; 74 database "
              "error.\n"},
    {"gc",
     "Usage: idem gc [-d PATH] [--older-than DURATION] [--max-rows N]\n"
     "               [--max-bytes N]\n"
     "\n"
     "Delete the completed and failed keys whose retention has ended.\n"
     "\n" DB_HELP "      --older-than DURATION\n"
     "                    also delete pending keys that no run holds and\n"
     "                    poisoned keys unchanged for DURATION (30s, 12h,\n"
     "                    7d; a bare number is seconds); a live lease is\n"
     "                    never touched\n"
     "      --max-rows N  then evict completed and failed keys, oldest\n"
     "                    first, until at most N are left (default\n"
     "                    $IDEM_MAX_ROWS; 0 = no limit)\n"
     "      --max-bytes N the same for the bytes of their outputs (default\n"
     "                    $IDEM_MAX_BYTES; 0 = no limit)\n"
     "\n"
     "Exit status: 0; 64 usage; 74 database error.\n"},
    {"stats",
     "Usage: idem stats [-d PATH] [--json | --format=text|json|prometheus]\n"
     "\n"
     "Count the keys in each state, the live leases, the keys past their\n"
     "retention, and show the database's size.\n"
     "\n" DB_HELP "      --json        the same as --format=json\n"
     "      --format=FORMAT\n"
     "                    text (the default), json, or prometheus: the\n"
     "                    node_exporter textfile format\n"
     "\n"
     "Exit status: 0; 64 usage; 74 database error.\n"},
};

int cli_admin_usage(FILE *f, const char *cmd) {
  for (size_t i = 0; i < sizeof usages / sizeof usages[0]; i++)
    if (strcmp(cmd, usages[i].name) == 0) {
      fputs(usages[i].text, f);
      fputs("See idem(1).\n", f);
      return 0;
    }
  return -1;
}

static int open_admin(idem_db **db, const char *path, int readonly,
                      uint64_t max_rows, uint64_t max_bytes) {
  idem_options o = IDEM_OPTIONS_INIT;
  o.heartbeat_ms = -1;
  o.flags = IDEM_OPEN_NOCREATE | (readonly ? IDEM_OPEN_READONLY : 0);
  o.max_rows = max_rows;
  o.max_bytes = max_bytes;
  return cli_open(db, path, &o);
}

/* Every byte written to stdout must have arrived, or the exit status says
 * otherwise. */
static int flush_stdout(int ex) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    cli_error("write error on standard output: %s", strerror(errno));
    return ex == 0 ? CLI_EXIT_INTERNAL : ex;
  }
  return ex;
}

static int help_or_version(int c, const char *cmd) {
  if (c == 'V')
    return cli_version();
  if (cli_admin_usage(stdout, cmd) != 0)
    cli_usage(stdout);
  return flush_stdout(CLI_EXIT_OK);
}

/* --- Options ------------------------------------------------------------ */

/* The options every admin subcommand shares, parsed with its own. Returns
 * 0 when parsing is over; sets *ex and returns 1 when idem must exit. */
static const struct option common_long[] = {
    {"db", required_argument, NULL, 'd'},
    {"json", no_argument, NULL, OPT_JSON},
    {"output", no_argument, NULL, OPT_OUTPUT},
    {"state", required_argument, NULL, OPT_STATE},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"all-poisoned", no_argument, NULL, OPT_ALL_POISONED},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"json-lines", no_argument, NULL, OPT_JSON_LINES},
    {"long", no_argument, NULL, OPT_LONG},
    {"older-than", required_argument, NULL, OPT_OLDER_THAN},
    {"max-rows", required_argument, NULL, OPT_MAX_ROWS},
    {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

struct admin_opts {
  const char *db;
  int format; /* FMT_* */
  int output;
  int state;      /* -1: all */
  uint64_t limit; /* 0: no limit */
  int all_poisoned;
  const char *prefix; /* NULL: every key */
  size_t prefix_len;
  int64_t older_than_ms; /* -1: not asked for */
  const char *max_rows;  /* as given, NULL if not */
  const char *max_bytes;
  uint64_t rows_cap; /* what the caps came to, the environment's included */
  uint64_t bytes_cap;
  const char *key;
  size_t key_len;
};

/* Sets the output format, refusing two different ones: the last of two
 * contradicting options winning silently would hide a typo in a script. */
static int set_format(struct admin_opts *o, int format, int *given,
                      const char *word) {
  if (*given && o->format != format)
    return cli_usage_error("'%s' contradicts an output format given before",
                           word);
  o->format = format;
  *given = 1;
  return 0;
}

/* `allowed` lists the long options the subcommand takes (by value), so
 * that one table serves all and each still refuses what it does not know.
 * `want_key`: 1 a KEY is required, 2 a KEY is optional, 0 none. */
static int parse(int argc, char **argv, const int *allowed, int want_key,
                 struct admin_opts *o, int *done) {
  int c, ex, format_given = 0;
  const char *db = NULL;
  memset(o, 0, sizeof *o);
  /* Never NULL, whichever way parsing ends. */
  o->db = "";
  o->state = -1;
  o->older_than_ms = -1;
  optind = 0;
  opterr = 0;
  /* No "+": these take no command line, so options may follow KEY. */
  while ((c = getopt_long(argc, argv, ":d:hV", common_long, NULL)) != -1) {
    if (c == '?' || c == ':')
      return cli_getopt_error(c, argv);
    int ok = c == 'd' || c == 'h' || c == 'V';
    for (const int *a = allowed; !ok && *a != 0; a++)
      ok = *a == c;
    if (!ok)
      return cli_usage_error("unrecognized option '%s' for '%s'",
                             argv[optind - 1], argv[0]);
    uint64_t u;
    char why[CLI_WHY_MAX];
    switch (c) {
    case 'd':
      db = optarg;
      break;
    case 'h':
    case 'V':
      *done = 1;
      return help_or_version(c, argv[0]);
    case OPT_JSON:
      if ((ex = set_format(o, FMT_JSON, &format_given, "--json")) != 0)
        return ex;
      break;
    case OPT_JSON_LINES:
      if ((ex = set_format(o, FMT_JSON_LINES, &format_given, "--json-lines")))
        return ex;
      break;
    case OPT_LONG:
      if ((ex = set_format(o, FMT_LONG, &format_given, "--long")) != 0)
        return ex;
      break;
    case OPT_FORMAT: {
      static const char *const names[] = {"text", "json", "prometheus"};
      int f = -1;
      for (int i = 0; i < 3; i++)
        if (strcmp(optarg, names[i]) == 0)
          f = i;
      if (f < 0)
        return cli_option_error("--format", optarg,
                                "expected text, json or prometheus");
      if ((ex = set_format(o, f, &format_given, "--format")) != 0)
        return ex;
      break;
    }
    case OPT_OUTPUT:
      o->output = 1;
      break;
    case OPT_STATE:
      o->state = cli_state_parse(optarg);
      if (o->state < 0)
        return cli_usage_error("invalid state '%s': expected pending, "
                               "completed, failed or poisoned",
                               optarg);
      break;
    case OPT_LIMIT:
      if (cli_parse_u64(optarg, UINT64_MAX, &u) != 0 || u == 0)
        return cli_usage_error("invalid limit '%s': expected a number > 0",
                               optarg);
      o->limit = u;
      break;
    case OPT_ALL_POISONED:
      o->all_poisoned = 1;
      break;
    case OPT_PREFIX:
      o->prefix = optarg;
      o->prefix_len = strlen(optarg);
      if (o->prefix_len > IDEM_MAX_KEY)
        return cli_usage_error("--prefix is longer than %d bytes",
                               IDEM_MAX_KEY);
      break;
    case OPT_OLDER_THAN:
      if (cli_parse_duration(optarg, &o->older_than_ms, why, sizeof why) != 0)
        return cli_option_error("--older-than", optarg, why);
      break;
    case OPT_MAX_ROWS:
      o->max_rows = optarg;
      break;
    case OPT_MAX_BYTES:
      o->max_bytes = optarg;
      break;
    }
  }
  if (want_key != 0 && optind < argc) {
    o->key = argv[optind++];
    o->key_len = strlen(o->key);
    if (o->key_len == 0)
      return cli_usage_error("KEY must not be empty");
    if (o->key_len > IDEM_MAX_KEY)
      return cli_usage_error("KEY is longer than %d bytes", IDEM_MAX_KEY);
  } else if (want_key == 1) {
    return cli_usage_error("missing KEY");
  }
  if (optind < argc)
    return cli_usage_error("unexpected argument '%s'", argv[optind]);
  o->db = cli_db_path(db);
  return 0;
}

static void no_such_key(const struct admin_opts *o) {
  char show[CLI_KEY_DISPLAY_MAX];
  cli_key_display(o->key, o->key_len, show, sizeof show);
  cli_error("no such key '%s' in '%s'", show, o->db);
}

/* --- get ---------------------------------------------------------------- */

int cli_cmd_get(int argc, char **argv) {
  static const int allowed[] = {OPT_JSON, OPT_OUTPUT, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 1, &o, &done);
  if (ex != 0 || done)
    return ex;
  if (o.format == FMT_JSON && o.output)
    return cli_usage_error("--json and --output cannot be used together");

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 1, 0, 0)) != 0)
    return ex;
  idem_record rec = IDEM_RECORD_INIT;
  cli_history hist = {NULL, 0, 0, 0};
  int rc = idem_get(db, o.key, o.key_len, &rec);
  /* Gathered whole before anything is printed, so that a failure part way
   * leaves no half a document on stdout. A key reset between the two reads
   * is gone by now, and reported so. */
  if (rc >= 0 && !o.output)
    rc = idem_history(db, o.key, o.key_len, cli_history_add, &hist, NULL);
  if (rc == IDEM_ENOTFOUND) {
    no_such_key(&o);
    ex = CLI_EXIT_NOTFOUND;
  } else if (rc < 0) {
    ex = cli_db_error(db, o.db, rc, "cannot read");
  } else if (hist.oom) {
    cli_error("out of memory");
    ex = CLI_EXIT_INTERNAL;
  } else if (o.output) {
    if (rec.result_len > 0)
      fwrite(rec.result, 1, rec.result_len, stdout);
  } else if (o.format == FMT_JSON) {
    cli_record_json(stdout, &rec, 1, &hist);
    fputc('\n', stdout);
  } else {
    cli_record_text(stdout, &rec, &hist);
  }
  cli_history_free(&hist);
  idem_record_clear(&rec);
  idem_close(db);
  return flush_stdout(ex);
}

/* --- list --------------------------------------------------------------- */

/* Keeps a copy of the key of the row just seen, the key a listing pages
 * on from; 0, or -1 out of memory (the old copy is kept). */
static int keep_key(unsigned char **last, size_t *last_len,
                    const idem_record *rec) {
  unsigned char *p = realloc(*last, rec->key_len > 0 ? rec->key_len : 1);
  if (p == NULL)
    return -1;
  memcpy(p, rec->key, rec->key_len);
  *last = p;
  *last_len = rec->key_len;
  return 0;
}

struct list_ctx {
  idem_db *db;
  int format;
  const char *prefix;
  size_t prefix_len;
  uint64_t rows;
  unsigned char *last; /* key of the last row seen, to page from */
  size_t last_len;
  int past_prefix; /* a key after every key with the prefix was reached */
  int oom;
  int rc; /* a failed read of a key's history */
};

/* The last attempt of a key, kept from idem_history(), whose callback
 * lends its message for the call only. */
struct last_attempt {
  int seen;
  idem_attempt a;
  char *message;
  int oom;
};

static int keep_last(void *ctx, const idem_attempt *a) {
  struct last_attempt *l = ctx;
  free(l->message);
  l->message = NULL;
  l->a = *a;
  l->a.message = NULL;
  l->seen = 1;
  if (a->message != NULL && (l->message = strdup(a->message)) == NULL) {
    l->oom = 1;
    return 1;
  }
  return 0;
}

static int list_row(void *ctx, const idem_record *rec) {
  struct list_ctx *c = ctx;
  /* Keys are in byte order, so the ones with the prefix are together: the
   * first one without it after them ends the listing. */
  if (c->prefix != NULL && (rec->key_len < c->prefix_len ||
                            memcmp(rec->key, c->prefix, c->prefix_len) != 0)) {
    c->past_prefix = 1;
    return 1;
  }
  cli_last_run run = {NULL, NULL, 0, 0};
  struct last_attempt last = {0, IDEM_ATTEMPT_INIT, NULL, 0};
  if (c->format != FMT_TEXT) {
    int rc =
        idem_history(c->db, rec->key, rec->key_len, keep_last, &last, NULL);
    /* A key reset since the page was read has no history left: it is
     * shown as the page found it. */
    if (rc < 0 && rc != IDEM_ENOTFOUND) {
      c->rc = rc;
      free(last.message);
      return 1;
    }
    if (last.oom) {
      c->oom = 1;
      free(last.message);
      return 1;
    }
    if (last.seen) {
      last.a.message = last.message;
      run.last = &last.a;
    }
    cli_last_run_of(rec, &run);
  }
  switch (c->format) {
  case FMT_JSON:
    fputs(c->rows == 0 ? "\n" : ",\n", stdout);
    cli_record_json_last(stdout, rec, &run);
    break;
  case FMT_JSON_LINES:
    cli_record_json_last(stdout, rec, &run);
    fputc('\n', stdout);
    break;
  case FMT_LONG:
    cli_record_line_long(stdout, rec, &run);
    break;
  default:
    cli_record_line(stdout, rec);
  }
  free(last.message);
  c->rows++;
  if (keep_key(&c->last, &c->last_len, rec) != 0) {
    c->oom = 1;
    return 1;
  }
  return 0;
}

/* The key that is exactly the prefix, which paging from the prefix (keys
 * after it) leaves out. Returns 0, or the exit status of a failure. */
static int list_prefix_itself(const struct admin_opts *o, struct list_ctx *c,
                              uint64_t *left) {
  if (o->prefix_len == 0)
    return 0;
  idem_record rec = IDEM_RECORD_INIT;
  int rc = idem_get(c->db, o->prefix, o->prefix_len, &rec);
  int ex = 0;
  if (rc == IDEM_ENOTFOUND)
    return 0;
  if (rc < 0)
    return cli_db_error(c->db, o->db, rc, "cannot list the keys of");
  if (o->state < 0 || rec.state == o->state) {
    list_row(c, &rec);
    (*left)--;
  }
  idem_record_clear(&rec);
  if (c->oom) {
    cli_error("out of memory");
    ex = CLI_EXIT_INTERNAL;
  } else if (c->rc < 0) {
    ex = cli_db_error(c->db, o->db, c->rc, "cannot read the history in");
  }
  return ex;
}

int cli_cmd_list(int argc, char **argv) {
  static const int allowed[] = {
      OPT_JSON, OPT_STATE, OPT_LIMIT, OPT_PREFIX, OPT_JSON_LINES, OPT_LONG, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 0, &o, &done);
  if (ex != 0 || done)
    return ex;

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 1, 0, 0)) != 0)
    return ex;
  struct list_ctx c = {db, o.format, o.prefix, o.prefix_len, 0, NULL, 0,
                       0,  0,        0};
  /* The key to page from is a copy: list_row() replaces c.last while the
   * library may still be reading the `after` it was given. */
  unsigned char *after = NULL;
  size_t after_len = 0;
  uint64_t left = o.limit != 0 ? o.limit : UINT64_MAX;
  if (o.format == FMT_JSON)
    fputc('[', stdout);
  if (o.prefix != NULL) {
    ex = list_prefix_itself(&o, &c, &left);
    after_len = o.prefix_len;
    after = malloc(after_len > 0 ? after_len : 1);
    if (after == NULL && ex == 0) {
      cli_error("out of memory");
      ex = CLI_EXIT_INTERNAL;
    }
    if (after != NULL)
      memcpy(after, o.prefix, after_len);
  }
  while (ex == 0 && left > 0) {
    unsigned want = left < LIST_PAGE ? (unsigned)left : LIST_PAGE;
    unsigned got = 0;
    int rc = idem_list(db, o.state, after, after_len, want, list_row, &c, &got);
    if (rc < 0) {
      ex = cli_db_error(db, o.db, rc, "cannot list the keys of");
      break;
    }
    if (c.oom) {
      cli_error("out of memory");
      ex = CLI_EXIT_INTERNAL;
      break;
    }
    if (c.rc < 0) {
      ex = cli_db_error(db, o.db, c.rc, "cannot read the history in");
      break;
    }
    if (c.past_prefix)
      break;
    left -= got;
    if (got < want)
      break;
    unsigned char *p = realloc(after, c.last_len > 0 ? c.last_len : 1);
    if (p == NULL) {
      cli_error("out of memory");
      ex = CLI_EXIT_INTERNAL;
      break;
    }
    after = p;
    memcpy(after, c.last, c.last_len);
    after_len = c.last_len;
  }
  if (o.format == FMT_JSON)
    fputs(c.rows > 0 ? "\n]\n" : "]\n", stdout);
  free(after);
  free(c.last);
  idem_close(db);
  return flush_stdout(ex);
}

/* --- reset -------------------------------------------------------------- */

int cli_cmd_reset(int argc, char **argv) {
  static const int allowed[] = {OPT_ALL_POISONED, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 2, &o, &done);
  if (ex != 0 || done)
    return ex;
  if ((o.key != NULL) == o.all_poisoned)
    return cli_usage_error("give either KEY or --all-poisoned");

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 0, 0, 0)) != 0)
    return ex;
  if (o.all_poisoned) {
    uint64_t n = 0;
    int rc = idem_reset_state(db, IDEM_STATE_POISONED, &n);
    if (rc < 0)
      ex = cli_db_error(db, o.db, rc, "cannot reset keys in");
    else
      printf("%" PRIu64 " poisoned key%s reset\n", n, n == 1 ? "" : "s");
  } else {
    int rc = idem_reset(db, o.key, o.key_len);
    if (rc == IDEM_ENOTFOUND) {
      no_such_key(&o);
      ex = CLI_EXIT_NOTFOUND;
    } else if (rc < 0) {
      ex = cli_db_error(db, o.db, rc, "cannot reset the key in");
    }
  }
  idem_close(db);
  return flush_stdout(ex);
}

/* --- gc ----------------------------------------------------------------- */

int cli_cmd_gc(int argc, char **argv) {
  static const int allowed[] = {OPT_OLDER_THAN, OPT_MAX_ROWS, OPT_MAX_BYTES, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 0, &o, &done);
  if (ex != 0 || done)
    return ex;
  if ((ex = cli_storage_caps(o.max_rows, o.max_bytes, &o.rows_cap,
                             &o.bytes_cap)) != 0)
    return ex;

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 0, o.rows_cap, o.bytes_cap)) != 0)
    return ex;
  /* The stale rows first: idem_purge() then gives back the pages of both
   * and checkpoints once. */
  uint64_t stale = 0;
  int rc = IDEM_OK;
  if (o.older_than_ms >= 0) {
    rc = idem_purge_stale(db, -1, o.older_than_ms, &stale);
    if (rc < 0)
      ex = cli_db_error(db, o.db, rc, "cannot purge stale keys in");
  }
  uint64_t n = 0;
  idem_stats st = IDEM_STATS_INIT;
  if (rc >= 0) {
    rc = idem_purge(db, 0, &n);
    /* The handle is this command's alone: its count of evictions is this
     * purge's. */
    if (rc >= 0)
      rc = idem_stats_get(db, &st);
    if (rc < 0)
      ex = cli_db_error(db, o.db, rc, "cannot purge");
  }
  if (rc >= 0) {
    uint64_t evicted = st.evicted <= n ? st.evicted : n;
    printf("%" PRIu64 " expired row%s purged\n", n - evicted,
           n - evicted == 1 ? "" : "s");
    if (o.rows_cap != 0 || o.bytes_cap != 0)
      printf("%" PRIu64 " row%s evicted to stay within the limits\n", evicted,
             evicted == 1 ? "" : "s");
  }
  /* Reported even when the purge after them failed: they are gone. */
  if (o.older_than_ms >= 0 && (rc >= 0 || stale > 0))
    printf("%" PRIu64 " stale pending or poisoned row%s purged\n", stale,
           stale == 1 ? "" : "s");
  idem_close(db);
  return flush_stdout(ex);
}

/* --- stats -------------------------------------------------------------- */

/* The oldest lease that a begin would find live, found from the pending
 * rows: the age of its claim, in ms, or -1 when there is none. The
 * library's own count of leases (idem_stats.leased) goes by deadline
 * alone; this goes by the begin's whole rule (lease_ms > 0). */
struct oldest {
  int64_t claimed_at; /* wall ms; 0: none yet */
  unsigned char *last;
  size_t last_len;
  int oom;
};

static int oldest_row(void *ctx, const idem_record *rec) {
  struct oldest *c = ctx;
  /* A claim writes updated_at; heartbeats do not: it is the claim's time. */
  if (rec->lease_ms > 0 && rec->updated_at > 0 &&
      (c->claimed_at == 0 || rec->updated_at < c->claimed_at))
    c->claimed_at = rec->updated_at;
  if (keep_key(&c->last, &c->last_len, rec) != 0) {
    c->oom = 1;
    return 1;
  }
  return 0;
}

static int oldest_lease(idem_db *db, int64_t *age_ms) {
  struct oldest c = {0, NULL, 0, 0};
  unsigned char *after = NULL;
  size_t after_len = 0;
  int rc = IDEM_OK;
  for (;;) {
    unsigned got = 0;
    rc = idem_list(db, IDEM_STATE_PENDING, after, after_len, LIST_PAGE,
                   oldest_row, &c, &got);
    if (rc < 0 || c.oom || got < LIST_PAGE)
      break;
    unsigned char *p = realloc(after, c.last_len > 0 ? c.last_len : 1);
    if (p == NULL) {
      c.oom = 1;
      break;
    }
    after = p;
    memcpy(after, c.last, c.last_len);
    after_len = c.last_len;
  }
  free(after);
  free(c.last);
  if (rc >= 0 && c.oom)
    rc = IDEM_ENOMEM;
  *age_ms = -1;
  if (rc >= 0 && c.claimed_at != 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    /* A wall clock stepped back since the claim makes no negative age. */
    *age_ms = now > c.claimed_at ? now - c.claimed_at : 0;
  }
  return rc;
}

static void stats_text(const char *path, const idem_stats *s, int64_t oldest) {
  printf("database: %s\n", path);
  printf("schema version: %d\n", s->schema_version);
  printf("size: %" PRId64 " bytes\n", s->db_bytes);
  printf("pending: %" PRIu64 " (%" PRIu64 " with a live lease)\n",
         s->rows[IDEM_STATE_PENDING], s->leased);
  printf("completed: %" PRIu64 "\n", s->rows[IDEM_STATE_COMPLETED]);
  printf("failed: %" PRIu64 "\n", s->rows[IDEM_STATE_FAILED]);
  printf("poisoned: %" PRIu64 "\n", s->rows[IDEM_STATE_POISONED]);
  printf("expired: %" PRIu64 " (removed by idem gc)\n", s->expired);
  if (oldest >= 0)
    printf("oldest live lease: claimed %" PRId64 ".%03d s ago\n", oldest / 1000,
           (int)(oldest % 1000));
  else
    fputs("oldest live lease: none\n", stdout);
  printf("evictions: %" PRIu64 "\n", s->total_evictions);
  printf("poisonings: %" PRIu64 "\n", s->total_poisonings);
  printf("takeovers: %" PRIu64 "\n", s->total_takeovers);
}

static void stats_json(const char *path, const idem_stats *s, int64_t oldest) {
  fputc('{', stdout);
  cli_json_bytes(stdout, "database", path, strlen(path));
  printf(",\"schema_version\":%d,\"db_bytes\":%" PRId64, s->schema_version,
         s->db_bytes);
  printf(",\"rows\":{\"pending\":%" PRIu64 ",\"completed\":%" PRIu64
         ",\"failed\":%" PRIu64 ",\"poisoned\":%" PRIu64 "}",
         s->rows[IDEM_STATE_PENDING], s->rows[IDEM_STATE_COMPLETED],
         s->rows[IDEM_STATE_FAILED], s->rows[IDEM_STATE_POISONED]);
  printf(",\"leased\":%" PRIu64 ",\"expired\":%" PRIu64, s->leased, s->expired);
  printf(",\"evictions\":%" PRIu64 ",\"poisonings\":%" PRIu64
         ",\"takeovers\":%" PRIu64,
         s->total_evictions, s->total_poisonings, s->total_takeovers);
  if (oldest >= 0)
    printf(",\"oldest_lease_age_ms\":%" PRId64 "}\n", oldest);
  else
    fputs(",\"oldest_lease_age_ms\":null}\n", stdout);
}

/* A label value of the Prometheus text format: a backslash, a double
 * quote and a newline escaped; bytes that are not UTF-8 become '?', as
 * the format takes UTF-8 only. */
static void prom_label(const char *s) {
  int utf8 = cli_utf8_valid(s, strlen(s));
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\\' || *p == '"')
      printf("\\%c", *p);
    else if (*p == '\n')
      fputs("\\n", stdout);
    else if (*p >= 0x80 && !utf8)
      fputc('?', stdout);
    else
      fputc(*p, stdout);
  }
}

/* One metric's HELP and TYPE lines, before its samples (prom_sample). */
static void prom_head_of(const char *name, const char *type, const char *help) {
  printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_head(const char *name, const char *help) {
  prom_head_of(name, "gauge", help);
}

static void prom_sample(const char *name, const char *path, const char *state,
                        const char *value) {
  printf("%s{database=\"", name);
  prom_label(path);
  if (state != NULL)
    printf("\",state=\"%s", state);
  printf("\"} %s\n", value);
}

/* A counter kept in the database, which only grows: a scraper may take
 * rates of it across processes and restarts. */
static void prom_counter(const char *name, const char *path, uint64_t value,
                         const char *help) {
  char v[32];
  prom_head_of(name, "counter", help);
  snprintf(v, sizeof v, "%" PRIu64, value);
  prom_sample(name, path, NULL, v);
}

static void stats_prometheus(const char *path, const idem_stats *s,
                             int64_t oldest) {
  char v[32];
  prom_head("idem_rows", "Keys stored in the idem database, by state.");
  for (int st = IDEM_STATE_PENDING; st <= IDEM_STATE_POISONED; st++) {
    snprintf(v, sizeof v, "%" PRIu64, s->rows[st]);
    prom_sample("idem_rows", path, cli_state_name(st), v);
  }
  prom_head("idem_leased",
            "Pending keys whose lease deadline is ahead: jobs running now.");
  snprintf(v, sizeof v, "%" PRIu64, s->leased);
  prom_sample("idem_leased", path, NULL, v);
  prom_head("idem_expired", "Completed and failed keys past their "
                            "retention, deleted by the next idem gc.");
  snprintf(v, sizeof v, "%" PRIu64, s->expired);
  prom_sample("idem_expired", path, NULL, v);
  prom_head("idem_db_bytes", "Size of the idem database file in bytes.");
  snprintf(v, sizeof v, "%" PRId64, s->db_bytes);
  prom_sample("idem_db_bytes", path, NULL, v);
  prom_head("idem_oldest_lease_age_seconds",
            "Seconds since the oldest live lease was claimed; 0 when no "
            "lease is live.");
  int64_t age = oldest > 0 ? oldest : 0;
  snprintf(v, sizeof v, "%" PRId64 ".%03d", age / 1000, (int)(age % 1000));
  prom_sample("idem_oldest_lease_age_seconds", path, NULL, v);
  prom_head("idem_schema_version", "Schema version of the idem database.");
  snprintf(v, sizeof v, "%d", s->schema_version);
  prom_sample("idem_schema_version", path, NULL, v);
  prom_counter("idem_evictions_total", path, s->total_evictions,
               "Completed and failed keys evicted to stay under "
               "max_rows/max_bytes, since the database was created.");
  prom_counter("idem_poisonings_total", path, s->total_poisonings,
               "Keys poisoned after max_attempts claims, since the database "
               "was created.");
  prom_counter("idem_takeovers_total", path, s->total_takeovers,
               "Claims of a key whose lease had expired, or whose holder had "
               "died, since the database was created.");
}

int cli_cmd_stats(int argc, char **argv) {
  static const int allowed[] = {OPT_JSON, OPT_FORMAT, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 0, &o, &done);
  if (ex != 0 || done)
    return ex;

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 1, 0, 0)) != 0)
    return ex;
  idem_stats s = IDEM_STATS_INIT;
  int64_t oldest = -1;
  int rc = idem_stats_get(db, &s);
  if (rc >= 0)
    rc = oldest_lease(db, &oldest);
  if (rc < 0)
    ex = cli_db_error(db, o.db, rc, "cannot read the statistics of");
  else if (o.format == FMT_JSON)
    stats_json(o.db, &s, oldest);
  else if (o.format == FMT_PROMETHEUS)
    stats_prometheus(o.db, &s, oldest);
  else
    stats_text(o.db, &s, oldest);
  idem_close(db);
  return flush_stdout(ex);
}
