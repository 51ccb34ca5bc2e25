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

enum { OPT_JSON = 256, OPT_OUTPUT, OPT_STATE, OPT_LIMIT, OPT_ALL_POISONED };

/* Rows asked of idem_list() per call while paging. */
#define LIST_PAGE 1000

static int open_admin(idem_db **db, const char *path, int readonly) {
  idem_options o = IDEM_OPTIONS_INIT;
  o.heartbeat_ms = -1;
  o.flags = IDEM_OPEN_NOCREATE | (readonly ? IDEM_OPEN_READONLY : 0);
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

static int help_or_version(int c) {
  if (c == 'V')
    return cli_version();
  cli_usage(stdout);
  return flush_stdout(CLI_EXIT_OK);
}

/* The options every admin subcommand shares, parsed with its own. Returns
 * 0 when parsing is over; sets *ex and returns 1 when idem must exit. */
static const struct option common_long[] = {
    {"db", required_argument, NULL, 'd'},
    {"json", no_argument, NULL, OPT_JSON},
    {"output", no_argument, NULL, OPT_OUTPUT},
    {"state", required_argument, NULL, OPT_STATE},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"all-poisoned", no_argument, NULL, OPT_ALL_POISONED},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

struct admin_opts {
  const char *db;
  int json;
  int output;
  int state;      /* -1: all */
  uint64_t limit; /* 0: no limit */
  int all_poisoned;
  const char *key;
  size_t key_len;
};

/* `allowed` lists the long options the subcommand takes (by value), so
 * that one table serves all and each still refuses what it does not know.
 * `want_key`: 1 a KEY is required, 2 a KEY is optional, 0 none. */
static int parse(int argc, char **argv, const int *allowed, int want_key,
                 struct admin_opts *o, int *done) {
  int c;
  memset(o, 0, sizeof *o);
  o->state = -1;
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
    switch (c) {
    case 'd':
      o->db = optarg;
      break;
    case 'h':
    case 'V':
      *done = 1;
      return help_or_version(c);
    case OPT_JSON:
      o->json = 1;
      break;
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
  o->db = cli_db_path(o->db);
  return 0;
}

static void no_such_key(const struct admin_opts *o) {
  char show[CLI_KEY_DISPLAY_MAX];
  cli_key_display(o->key, o->key_len, show, sizeof show);
  cli_error("no such key '%s' in '%s'", show, o->db);
}

int cli_cmd_get(int argc, char **argv) {
  static const int allowed[] = {OPT_JSON, OPT_OUTPUT, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 1, &o, &done);
  if (ex != 0 || done)
    return ex;
  if (o.json && o.output)
    return cli_usage_error("--json and --output cannot be used together");

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 1)) != 0)
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
  } else if (o.json) {
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

struct list_ctx {
  int json;
  uint64_t rows;
  unsigned char *last; /* key of the last row seen, to page from */
  size_t last_len;
  int oom;
};

static int list_row(void *ctx, const idem_record *rec) {
  struct list_ctx *c = ctx;
  if (c->json) {
    fputs(c->rows == 0 ? "\n" : ",\n", stdout);
    cli_record_json(stdout, rec, 0, NULL);
  } else {
    cli_record_line(stdout, rec);
  }
  c->rows++;
  unsigned char *p = realloc(c->last, rec->key_len > 0 ? rec->key_len : 1);
  if (p == NULL) {
    c->oom = 1;
    return 1;
  }
  memcpy(p, rec->key, rec->key_len);
  c->last = p;
  c->last_len = rec->key_len;
  return 0;
}

int cli_cmd_list(int argc, char **argv) {
  static const int allowed[] = {OPT_JSON, OPT_STATE, OPT_LIMIT, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 0, &o, &done);
  if (ex != 0 || done)
    return ex;

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 1)) != 0)
    return ex;
  struct list_ctx c = {o.json, 0, NULL, 0, 0};
  /* The key to page from is a copy: list_row() replaces c.last while the
   * library may still be reading the `after` it was given. */
  unsigned char *after = NULL;
  size_t after_len = 0;
  uint64_t left = o.limit != 0 ? o.limit : UINT64_MAX;
  if (o.json)
    fputc('[', stdout);
  while (left > 0) {
    unsigned want = left < LIST_PAGE ? (unsigned)left : LIST_PAGE;
    unsigned got = 0;
    int rc = idem_list(db, o.state, after, after_len, want, list_row, &c, &got);
    if (rc < 0) {
      ex = cli_db_error(db, o.db, rc, "cannot list");
      break;
    }
    if (c.oom) {
      cli_error("out of memory");
      ex = CLI_EXIT_INTERNAL;
      break;
    }
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
  if (o.json)
    fputs(c.rows > 0 ? "\n]\n" : "]\n", stdout);
  free(after);
  free(c.last);
  idem_close(db);
  return flush_stdout(ex);
}

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
  if ((ex = open_admin(&db, o.db, 0)) != 0)
    return ex;
  if (o.all_poisoned) {
    uint64_t n = 0;
    int rc = idem_reset_state(db, IDEM_STATE_POISONED, &n);
    if (rc < 0)
      ex = cli_db_error(db, o.db, rc, "cannot reset keys");
    else
      printf("%" PRIu64 " poisoned key%s reset\n", n, n == 1 ? "" : "s");
  } else {
    int rc = idem_reset(db, o.key, o.key_len);
    if (rc == IDEM_ENOTFOUND) {
      no_such_key(&o);
      ex = CLI_EXIT_NOTFOUND;
    } else if (rc < 0) {
      ex = cli_db_error(db, o.db, rc, "cannot reset the key");
    }
  }
  idem_close(db);
  return flush_stdout(ex);
}

int cli_cmd_gc(int argc, char **argv) {
  static const int allowed[] = {0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 0, &o, &done);
  if (ex != 0 || done)
    return ex;

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 0)) != 0)
    return ex;
  uint64_t n = 0;
  int rc = idem_purge(db, 0, &n);
  if (rc < 0)
    ex = cli_db_error(db, o.db, rc, "cannot purge");
  else
    printf("%" PRIu64 " expired row%s purged\n", n, n == 1 ? "" : "s");
  idem_close(db);
  return flush_stdout(ex);
}

static void stats_text(const char *path, const idem_stats *s) {
  printf("database: %s\n", path);
  printf("schema version: %d\n", s->schema_version);
  printf("size: %" PRId64 " bytes\n", s->db_bytes);
  printf("pending: %" PRIu64 " (%" PRIu64 " with a live lease)\n",
         s->rows[IDEM_STATE_PENDING], s->leased);
  printf("completed: %" PRIu64 "\n", s->rows[IDEM_STATE_COMPLETED]);
  printf("failed: %" PRIu64 "\n", s->rows[IDEM_STATE_FAILED]);
  printf("poisoned: %" PRIu64 "\n", s->rows[IDEM_STATE_POISONED]);
  printf("expired: %" PRIu64 " (removed by idem gc)\n", s->expired);
}

static void stats_json(const char *path, const idem_stats *s) {
  fputc('{', stdout);
  cli_json_bytes(stdout, "database", path, strlen(path));
  printf(",\"schema_version\":%d,\"db_bytes\":%" PRId64, s->schema_version,
         s->db_bytes);
  printf(",\"rows\":{\"pending\":%" PRIu64 ",\"completed\":%" PRIu64
         ",\"failed\":%" PRIu64 ",\"poisoned\":%" PRIu64 "}",
         s->rows[IDEM_STATE_PENDING], s->rows[IDEM_STATE_COMPLETED],
         s->rows[IDEM_STATE_FAILED], s->rows[IDEM_STATE_POISONED]);
  printf(",\"leased\":%" PRIu64 ",\"expired\":%" PRIu64 "}\n", s->leased,
         s->expired);
}

int cli_cmd_stats(int argc, char **argv) {
  static const int allowed[] = {OPT_JSON, 0};
  struct admin_opts o;
  int done = 0;
  int ex = parse(argc, argv, allowed, 0, &o, &done);
  if (ex != 0 || done)
    return ex;

  idem_db *db;
  if ((ex = open_admin(&db, o.db, 1)) != 0)
    return ex;
  idem_stats s = IDEM_STATS_INIT;
  int rc = idem_stats_get(db, &s);
  if (rc < 0)
    ex = cli_db_error(db, o.db, rc, "cannot read statistics");
  else if (o.json)
    stats_json(o.db, &s);
  else
    stats_text(o.db, &s);
  idem_close(db);
  return flush_stdout(ex);
}
