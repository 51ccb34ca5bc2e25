/* SPDX-License-Identifier: MIT */
/*
 * run.c - `idem run`: claim the key, run the command once, record its
 * output; or replay a recorded output, or say why nothing ran.
 *
 * Everything that decides an exit status lives here, so that the table in
 * the manual can be checked against one file. Spawning and watching the
 * command is child.c's job.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
  OPT_NO_FINGERPRINT = 256,
  OPT_CACHE_FAILURE,
  OPT_MAX_OUTPUT,
  OPT_TIMEOUT,
  OPT_RETENTION,
  OPT_WAIT,
  OPT_SIGNAL,
  OPT_KILL_AFTER,
  OPT_OUTPUT,
};

#define DEFAULT_MAX_OUTPUT ((size_t)1 << 20)
/* timeout(1)'s signal, and the grace idem has always given before
 * SIGKILL. */
#define DEFAULT_STOP_SIGNAL SIGTERM
#define DEFAULT_KILL_AFTER_MS 2000
/* Tries of a completion that failed in storage: idem_complete() keeps the
 * lease on such failures so that the result can still be stored. */
#define RECORD_TRIES 3

struct run_opts {
  const char *db_opt; /* -d, if given */
  const char *db;
  int64_t ttl_ms;       /* 0: the library's default */
  int64_t max_attempts; /* -1: the library's default */
  int64_t retention_ms; /* -1: the library's default */
  int64_t wait_ms;
  int conflict_exit;
  const char *fingerprint;
  int no_fingerprint;
  const char *name;
  int cache_failure;
  size_t max_output;
  int output_mode; /* CLI_OUTPUT_* */
  int64_t timeout_ms;
  int stop_signal;
  int64_t kill_after_ms;
  int quiet;
  int verbose;
  const char *key;
  size_t key_len;
  char **cmd;
  char keyshow[CLI_KEY_DISPLAY_MAX];
};

void cli_run_usage(FILE *f) {
  fputs(
      "Usage: idem run [OPTIONS] KEY [--] COMMAND [ARG...]\n"
      "\n"
      "Run COMMAND once for KEY and record its standard output; later runs\n"
      "of KEY replay that output instead of running COMMAND again.\n"
      "\n"
      "  -d, --db PATH            database (default $IDEM_DB, else\n"
      "                           ~/.local/state/idem/idem.db, for root\n"
      "                           /var/lib/idem/idem.db)\n"
      "  -t, --ttl DURATION       lease lifetime, renewed while COMMAND runs\n"
      "                           (default 60s)\n"
      "  -a, --max-attempts N     runs of a key before it is poisoned\n"
      "                           (default 5, 0 = no limit)\n"
      "  -w DURATION              if KEY is busy, wait for it at most that\n"
      "                           long (as flock -w)\n"
      "      --wait[=DURATION]    the same; without a value, with no limit\n"
      "  -E, --conflict-exit-code N\n"
      "                           exit status when KEY is busy (default 75)\n"
      "  -f, --fingerprint STRING what the request is (default: the command\n"
      "                           line); another one for KEY is refused\n"
      "      --no-fingerprint     record no fingerprint\n"
      "  -n, --name NAME          task name to record\n"
      "      --cache-failure      record a failed COMMAND too and replay its\n"
      "                           status\n"
      "      --output=MODE        what is recorded of the output: store (all\n"
      "                           of it; more than --max-output fails with\n"
      "                           125), discard (none, only the status) or\n"
      "                           tail (its last --max-output bytes)\n"
      "      --max-output BYTES   largest output recorded (default 1048576)\n"
      "      --timeout DURATION   stop COMMAND after that long (exit 124)\n"
      "      --signal SIG         what stops COMMAND (default TERM)\n"
      "      --kill-after DURATION\n"
      "                           then SIGKILL after that long (default 2s)\n"
      "      --retention DURATION how long a result is replayed (default\n"
      "                           1d, 0 = forever)\n"
      "  -q, --quiet              no message for busy, poisoned, mismatched\n"
      "                           or lost keys\n"
      "  -v, --verbose            say whether the output was replayed or\n"
      "                           COMMAND ran now\n"
      "  -h, --help               show this help\n"
      "  -V, --version            show the version\n"
      "\n"
      "DURATION: a number with up to 3 decimals and a unit, ms, s, m, h or\n"
      "d (500ms, 30s, 1.5h, 7d); without a unit, seconds.\n"
      "\n"
      "Exit status: COMMAND's own status, or a replayed one; 64 usage,\n"
      "65 fingerprint mismatch, 69 poisoned, 74 database error, 75 busy or\n"
      "lease lost, 124 timeout, 125 idem failed, 126 COMMAND not executable,\n"
      "127 COMMAND not found, 128+N interrupted by signal N.\n"
      "See idem(1).\n",
      f);
}

/* The name of the option getopt_long() just returned, as it was given:
 * "--ttl" or "-t". */
static const char *opt_name(const struct option *longopts, int longindex, int c,
                            char *buf, size_t cap) {
  if (longindex >= 0)
    snprintf(buf, cap, "--%s", longopts[longindex].name);
  else
    snprintf(buf, cap, "-%c", c);
  return buf;
}

/* A duration option's value into *out. `positive`: 0 is refused too. */
static int duration_opt(const char *opt, const char *arg, int64_t *out,
                        int positive) {
  char why[CLI_WHY_MAX];
  if (cli_parse_duration(arg, out, why, sizeof why) != 0)
    return cli_option_error(opt, arg, why);
  if (positive && *out == 0)
    return cli_option_error(opt, arg, "must be above 0");
  return 0;
}

/* The CLI_OUTPUT_* named by --output's value, or -1. */
static int output_mode(const char *s) {
  static const char *const names[] = {
      [CLI_OUTPUT_STORE] = "store",
      [CLI_OUTPUT_DISCARD] = "discard",
      [CLI_OUTPUT_TAIL] = "tail",
  };
  for (size_t i = 0; s != NULL && i < sizeof names / sizeof names[0]; i++)
    if (strcmp(s, names[i]) == 0)
      return (int)i;
  return -1;
}

/* Returns 0 to go on, or the exit status; *done is set when idem should
 * exit with that status even though it is 0 (--help, --version). */
static int parse(int argc, char **argv, struct run_opts *o, int *done) {
  /* -w takes a value, as flock's does; --wait alone waits with no limit
   * and --wait=S as long as -w S, as they always have. */
  static const struct option longopts[] = {
      {"db", required_argument, NULL, 'd'},
      {"ttl", required_argument, NULL, 't'},
      {"max-attempts", required_argument, NULL, 'a'},
      {"wait", optional_argument, NULL, OPT_WAIT},
      {"conflict-exit-code", required_argument, NULL, 'E'},
      {"fingerprint", required_argument, NULL, 'f'},
      {"no-fingerprint", no_argument, NULL, OPT_NO_FINGERPRINT},
      {"name", required_argument, NULL, 'n'},
      {"cache-failure", no_argument, NULL, OPT_CACHE_FAILURE},
      {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
      {"output", required_argument, NULL, OPT_OUTPUT},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"signal", required_argument, NULL, OPT_SIGNAL},
      {"kill-after", required_argument, NULL, OPT_KILL_AFTER},
      {"retention", required_argument, NULL, OPT_RETENTION},
      {"quiet", no_argument, NULL, 'q'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  uint64_t u;
  int c, li = -1;
  char name[32], why[CLI_WHY_MAX];

  memset(o, 0, sizeof *o);
  o->max_attempts = -1;
  o->retention_ms = -1;
  o->conflict_exit = CLI_EXIT_BUSY;
  o->max_output = DEFAULT_MAX_OUTPUT;
  o->output_mode = CLI_OUTPUT_STORE;
  o->stop_signal = DEFAULT_STOP_SIGNAL;
  o->kill_after_ms = DEFAULT_KILL_AFTER_MS;
  /* "+": stop at KEY, so the command's own options are left alone;
   * ":": report a missing argument apart from an unknown option. */
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "+:d:t:a:w:E:f:n:qvhV", longopts, &li)) !=
         -1) {
    const char *opt = opt_name(longopts, li, c, name, sizeof name);
    int ex = 0;
    li = -1;
    switch (c) {
    case 'd':
      o->db_opt = optarg;
      break;
    case 't':
      ex = duration_opt(opt, optarg, &o->ttl_ms, 1);
      break;
    case 'a':
      if (cli_parse_u64(optarg, UINT32_MAX, &u) != 0)
        return cli_usage_error("invalid number of attempts '%s'", optarg);
      o->max_attempts = (int64_t)u;
      break;
    case 'w':
      if (cli_parse_duration(optarg, &o->wait_ms, why, sizeof why) != 0) {
        /* Most likely a KEY, from when -w took no value. */
        char more[CLI_WHY_MAX + 128];
        snprintf(more, sizeof more,
                 "%s; -w takes the longest wait, as in -w 30s (--wait alone "
                 "waits with no limit)",
                 why);
        return cli_option_error(opt, optarg, more);
      }
      break;
    case OPT_WAIT:
      o->wait_ms = -1;
      if (optarg != NULL)
        ex = duration_opt(opt, optarg, &o->wait_ms, 0);
      break;
    case 'E':
      if (cli_parse_u64(optarg, 255, &u) != 0)
        return cli_usage_error("invalid exit code '%s': expected 0 to 255",
                               optarg);
      o->conflict_exit = (int)u;
      break;
    case 'f':
      o->fingerprint = optarg;
      break;
    case OPT_NO_FINGERPRINT:
      o->no_fingerprint = 1;
      break;
    case 'n':
      o->name = optarg;
      break;
    case OPT_CACHE_FAILURE:
      o->cache_failure = 1;
      break;
    case OPT_MAX_OUTPUT:
      if (cli_parse_u64(optarg, IDEM_MAX_RESULT, &u) != 0)
        return cli_usage_error("invalid --max-output '%s': expected 0 to %d "
                               "bytes",
                               optarg, IDEM_MAX_RESULT);
      o->max_output = (size_t)u;
      break;
    case OPT_OUTPUT:
      o->output_mode = output_mode(optarg);
      if (o->output_mode < 0)
        return cli_option_error(opt, optarg, "expected store, discard or tail");
      break;
    case OPT_TIMEOUT:
      ex = duration_opt(opt, optarg, &o->timeout_ms, 0);
      break;
    case OPT_SIGNAL:
      if (cli_parse_signal(optarg, &o->stop_signal, why, sizeof why) != 0)
        return cli_option_error(opt, optarg, why);
      break;
    case OPT_KILL_AFTER:
      ex = duration_opt(opt, optarg, &o->kill_after_ms, 1);
      break;
    case OPT_RETENTION:
      ex = duration_opt(opt, optarg, &o->retention_ms, 0);
      break;
    case 'q':
      o->quiet = 1;
      break;
    case 'v':
      o->verbose = 1;
      break;
    case 'h':
      *done = 1;
      cli_run_usage(stdout);
      return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_INTERNAL;
    case 'V':
      *done = 1;
      return cli_version();
    default:
      return cli_getopt_error(c, argv);
    }
    if (ex != 0)
      return ex;
  }

  if (optind >= argc)
    return cli_usage_error("missing KEY");
  o->key = argv[optind++];
  o->key_len = strlen(o->key);
  if (optind < argc && strcmp(argv[optind], "--") == 0)
    optind++;
  if (optind >= argc)
    return cli_usage_error("missing COMMAND");
  o->cmd = argv + optind;

  if (o->key_len == 0)
    return cli_usage_error("KEY must not be empty");
  if (o->key_len > IDEM_MAX_KEY)
    return cli_usage_error("KEY is longer than %d bytes", IDEM_MAX_KEY);
  if (o->fingerprint != NULL && o->no_fingerprint)
    return cli_usage_error(
        "--fingerprint and --no-fingerprint cannot be used together");
  if (o->fingerprint != NULL && strlen(o->fingerprint) > IDEM_MAX_FINGERPRINT)
    return cli_usage_error("fingerprint is longer than %d bytes",
                           IDEM_MAX_FINGERPRINT);
  if (o->name != NULL && strlen(o->name) > IDEM_MAX_NAME)
    return cli_usage_error("name is longer than %d bytes", IDEM_MAX_NAME);
  o->db = cli_db_path(o->db_opt);
  cli_key_display(o->key, o->key_len, o->keyshow, sizeof o->keyshow);
  return 0;
}

/* Does the key need quoting to be typed back into a shell? */
static int shell_plain(const char *s) {
  for (; *s; s++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                "0123456789_./:@%+=,-",
                *s))
      return 0;
  return 1;
}

static int printable(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
      return 0;
  return 1;
}

/* Prints the command that resets the key after `lead`, ready to paste when
 * it can be; a key that cannot be shown as it is stays "KEY". */
static void suggest_reset(const struct run_opts *o, const char *lead) {
  fprintf(stderr, "idem: %s: idem reset ", lead);
  if (o->db_opt != NULL) {
    if (shell_plain(o->db_opt))
      fprintf(stderr, "--db %s ", o->db_opt);
    else
      fputs("--db PATH ", stderr);
  }
  if (o->key[0] == '-')
    fputs("-- ", stderr);
  if (shell_plain(o->key)) {
    fputs(o->key, stderr);
  } else if (printable(o->key)) {
    fputc('\'', stderr);
    for (const char *s = o->key; *s; s++)
      if (*s == '\'')
        fputs("'\\''", stderr);
      else
        fputc(*s, stderr);
    fputc('\'', stderr);
  } else {
    fputs("KEY", stderr);
  }
  fputc('\n', stderr);
}

static int replay(const idem_answer *a) {
  if (a->result_len > 0 &&
      cli_write_all(STDOUT_FILENO, a->result, a->result_len) != 0) {
    cli_error("write error on standard output: %s", strerror(errno));
    return CLI_EXIT_INTERNAL;
  }
  return 0;
}

static void release(const struct run_opts *o, idem_lease *lease,
                    const char *reason) {
  int rc = idem_release(lease, reason);
  /* A lost lease needs no release; any other failure leaves the lease to
   * run out by its TTL, which is worth knowing about. */
  if (rc < 0 && rc != IDEM_ELEASELOST && rc != IDEM_EMISUSE)
    cli_error("could not release key '%s' (%s); it is claimable again once "
              "its lease runs out",
              o->keyshow, idem_errstr(rc));
}

/* Completes or fails the key with the output, retrying storage failures
 * while the lease is still ours. */
static int record(idem_lease *lease, int failed, int code, const void *buf,
                  size_t len) {
  int rc = IDEM_OK;
  for (int i = 0; i < RECORD_TRIES; i++) {
    rc = failed ? idem_fail(lease, code, buf, len)
                : idem_complete(lease, buf, len);
    if (rc == IDEM_OK || rc == IDEM_ELEASELOST || rc == IDEM_EMISUSE ||
        rc == IDEM_EINVAL || rc == IDEM_ETOOBIG || rc == IDEM_ENOMEM)
      break;
  }
  return rc;
}

static int status_of(int wstatus) {
  if (WIFEXITED(wstatus))
    return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus))
    return 128 + WTERMSIG(wstatus);
  return CLI_EXIT_INTERNAL;
}

/* A span in ms as "12.345", for "... s" in messages. */
static void secs(int64_t ms, char *buf, size_t cap) {
  if (ms < 0)
    ms = 0;
  snprintf(buf, cap, "%" PRId64 ".%03d", ms / 1000, (int)(ms % 1000));
}

/* -v: what was recorded of a run that completed or failed. */
static void say_recorded(const struct run_opts *o, const cli_spawn *sp,
                         int status) {
  if (o->output_mode == CLI_OUTPUT_DISCARD)
    cli_error("key '%s': recorded exit status %d; its %" PRIu64
              " bytes of output were not kept (--output=discard)",
              o->keyshow, status, sp->out_total);
  else if (sp->out_total > sp->out_len)
    cli_error("key '%s': recorded exit status %d and the last %zu of %" PRIu64
              " bytes of output (--output=tail)",
              o->keyshow, status, sp->out_len, sp->out_total);
  else
    cli_error("key '%s': recorded exit status %d and %zu bytes of output",
              o->keyshow, status, sp->out_len);
}

/* Decides what the run leaves behind and idem's exit status. *reraise
 * gets a signal idem should die of, after cleaning up. */
static int finish(const struct run_opts *o, idem_db *db, idem_lease *lease,
                  cli_spawn *sp, int spawn_rc, int *reraise) {
  char reason[128];
  if (spawn_rc != 0) {
    snprintf(reason, sizeof reason, "idem failed %s: %s", sp->setup_what,
             strerror(sp->setup_errno));
    release(o, lease, reason);
    cli_error("%s", reason);
    return CLI_EXIT_INTERNAL;
  }
  if (!sp->started) {
    int notfound = sp->exec_errno == ENOENT || sp->exec_errno == ENOTDIR;
    snprintf(reason, sizeof reason, "cannot run the command: %s",
             strerror(sp->exec_errno));
    release(o, lease, reason);
    cli_error("%s: %s", o->cmd[0],
              notfound ? "command not found" : strerror(sp->exec_errno));
    return notfound ? CLI_EXIT_NOCMD : CLI_EXIT_NOEXEC;
  }

  int status = status_of(sp->wstatus);
  int ex;
  if (sp->lease_lost) {
    release(o, lease, "lease lost");
    if (!o->quiet)
      cli_error("lost the lease on key '%s' while the command ran (another "
                "run took the key over); the command was stopped and its "
                "result not recorded",
                o->keyshow);
    ex = CLI_EXIT_BUSY;
  } else if (sp->timed_out) {
    snprintf(reason, sizeof reason, "timed out after %" PRId64 ".%03d s",
             sp->timeout_ms / 1000, (int)(sp->timeout_ms % 1000));
    release(o, lease, reason);
    if (!o->quiet)
      cli_error("key '%s': command %s and was stopped; not recorded",
                o->keyshow, reason);
    ex = CLI_EXIT_TIMEOUT;
  } else if (sp->signal != 0) {
    snprintf(reason, sizeof reason, "interrupted by signal %d", sp->signal);
    release(o, lease, reason);
    if (!o->quiet)
      cli_error("key '%s': %s, passed on to the command; not recorded",
                o->keyshow, reason);
    *reraise = sp->signal;
    ex = 128 + sp->signal;
  } else if (sp->overflow) {
    snprintf(reason, sizeof reason, "output over %zu bytes", sp->max_output);
    release(o, lease, reason);
    cli_error("key '%s': the command's output went over %zu bytes "
              "(--max-output); not recorded (--output=tail or "
              "--output=discard records such a run)",
              o->keyshow, sp->max_output);
    ex = CLI_EXIT_INTERNAL;
  } else if (status != 0 && !o->cache_failure) {
    if (WIFSIGNALED(sp->wstatus))
      snprintf(reason, sizeof reason, "killed by signal %d",
               WTERMSIG(sp->wstatus));
    else
      snprintf(reason, sizeof reason, "exit status %d", status);
    release(o, lease, reason);
    if (o->verbose)
      cli_error("key '%s': %s; not recorded, the key can be claimed again",
                o->keyshow, reason);
    ex = status;
  } else {
    int rc = record(lease, status != 0, status, sp->out, sp->out_len);
    if (rc == IDEM_OK) {
      if (o->verbose)
        say_recorded(o, sp, status);
      ex = status;
    } else if (rc == IDEM_ELEASELOST) {
      if (!o->quiet)
        cli_error("lost the lease on key '%s' while the command ran (another "
                  "run took the key over); its result was not recorded",
                  o->keyshow);
      ex = CLI_EXIT_BUSY;
    } else {
      ex = cli_db_error(db, o->db, rc, "could not record the result");
      release(o, lease, "result not recorded");
    }
  }

  if (sp->stdout_errno == EPIPE && *reraise == 0) {
    /* The reader went away, as `| head` does: once the result is safe,
     * idem dies of SIGPIPE quietly, like any other writer in a pipeline
     * (and like idem itself when it replays). */
    *reraise = SIGPIPE;
  } else if (sp->stdout_errno != 0) {
    cli_error("write error on standard output: %s", strerror(sp->stdout_errno));
    if (ex == 0)
      ex = CLI_EXIT_INTERNAL;
  }
  return ex;
}

static int run_claimed(const struct run_opts *o, idem_db *db, idem_lease *l,
                       cli_wake *wake, int *reraise) {
  char **envp =
      cli_env_build(o->key, idem_lease_attempt(l), idem_lease_fence(l));
  if (envp == NULL) {
    release(o, l, "idem ran out of memory");
    cli_error("out of memory");
    return CLI_EXIT_INTERNAL;
  }
  if (o->verbose)
    cli_error("key '%s': running the command now (attempt %" PRIu32
              ", fence %" PRIu64 ")",
              o->keyshow, idem_lease_attempt(l), idem_lease_fence(l));
  cli_spawn sp;
  memset(&sp, 0, sizeof sp);
  sp.argv = o->cmd;
  sp.envp = envp;
  sp.max_output = o->max_output;
  sp.output_mode = o->output_mode;
  sp.timeout_ms = o->timeout_ms;
  sp.stop_signal = o->stop_signal;
  sp.kill_after_ms = o->kill_after_ms;
  sp.lease = l;
  sp.wake = wake;
  int src = cli_spawn_run(&sp);
  int ex = finish(o, db, l, &sp, src, reraise);
  cli_spawn_free(&sp);
  cli_env_free(envp);
  return ex;
}

/* What idem_history() is asked for: the process of the running attempt
 * that holds `owner`. */
struct holder {
  const char *owner;
  int64_t pid;
};

static int find_holder(void *ctx, const idem_attempt *a) {
  struct holder *h = ctx;
  if (a->outcome == IDEM_OUTCOME_RUNNING && strcmp(a->owner, h->owner) == 0)
    h->pid = a->pid;
  return 0;
}

/* The pid of the idem that holds the key's lease, 0 if unknown: the
 * answer names the lease, the key's history the process that took it. */
static int64_t holder_pid(const struct run_opts *o, idem_db *db,
                          const char *owner) {
  struct holder h = {owner, 0};
  if (owner[0] == '\0' ||
      idem_history(db, o->key, o->key_len, find_holder, &h, NULL) != IDEM_OK)
    return 0;
  return h.pid;
}

static void say_busy(const struct run_opts *o, idem_db *db,
                     const idem_answer *a) {
  char owner[sizeof a->owner], left[32];
  snprintf(owner, sizeof owner, "%s", a->owner);
  secs(a->lease_ms, left, sizeof left);
  const char *after = o->wait_ms != 0 ? " after waiting" : "";
  int64_t pid = holder_pid(o, db, owner);
  if (pid > 0)
    cli_error("key '%s' is busy%s: held by pid %" PRId64
              " (lease owner %s), %s s left",
              o->keyshow, after, pid, owner, left);
  else
    cli_error("key '%s' is busy%s: held by %s, %s s left", o->keyshow, after,
              owner[0] ? owner : "another run", left);
}

/* -v: where a replayed result comes from. */
static void say_replay(const struct run_opts *o, const idem_answer *a,
                       int status) {
  char when[CLI_TIME_MAX];
  cli_format_time(a->finished_at, when, sizeof when);
  if (a->status == IDEM_FAILED)
    cli_error("key '%s': replaying the failure (exit status %d, %zu bytes of "
              "output) recorded by attempt %" PRIu32
              " at %s; the command is not run",
              o->keyshow, status, a->result_len, a->attempts, when);
  else
    cli_error("key '%s': replaying the output (%zu bytes) recorded by "
              "attempt %" PRIu32 " at %s; the command is not run",
              o->keyshow, a->result_len, a->attempts, when);
}

static int answer(const struct run_opts *o, idem_db *db, cli_wake *wake, int rc,
                  idem_answer *a, int *reraise) {
  switch (rc) {
  case IDEM_CLAIMED:
    return run_claimed(o, db, a->lease, wake, reraise);
  case IDEM_COMPLETED:
    if (o->verbose)
      say_replay(o, a, 0);
    return replay(a);
  case IDEM_FAILED: {
    /* The stored code is the failed run's status; anything that cannot
     * be one still must not read as success. */
    int status = a->code >= 1 && a->code <= 255 ? a->code : 1;
    if (o->verbose)
      say_replay(o, a, status);
    int ex = replay(a);
    return ex != 0 ? ex : status;
  }
  case IDEM_BUSY:
    if (!o->quiet)
      say_busy(o, db, a);
    return o->conflict_exit;
  case IDEM_POISONED:
    if (!o->quiet) {
      cli_error("key '%s' is poisoned: all %" PRIu32
                " attempts are spent; not running",
                o->keyshow, a->attempts);
      suggest_reset(o, "to run it again");
    }
    return CLI_EXIT_POISONED;
  case IDEM_EMISMATCH:
    if (!o->quiet) {
      cli_error("key '%s' was recorded with another fingerprint (a "
                "different command line or --fingerprint); not running",
                o->keyshow);
      suggest_reset(o, "to use the key for this command instead, forget "
                       "its record first");
    }
    return CLI_EXIT_MISMATCH;
  default:
    if (rc >= 0) {
      cli_error("unexpected answer %d for key '%s'", rc, o->keyshow);
      return CLI_EXIT_INTERNAL;
    }
    return cli_db_error(db, o->db, rc, "cannot claim the key");
  }
}

int cli_cmd_run(int argc, char **argv) {
  struct run_opts o;
  int done = 0;
  int ex = parse(argc, argv, &o, &done);
  if (ex != 0 || done)
    return ex;

  if (cli_std_fds() != 0) {
    cli_error("cannot open /dev/null: %s", strerror(errno));
    return CLI_EXIT_INTERNAL;
  }

  unsigned char *fp = NULL;
  size_t fp_len = 0;
  if (o.fingerprint != NULL) {
    fp_len = strlen(o.fingerprint);
  } else if (!o.no_fingerprint && cli_fingerprint(o.cmd, &fp, &fp_len) != 0) {
    cli_error("out of memory");
    return CLI_EXIT_INTERNAL;
  }

  cli_wake wake;
  if (cli_wake_open(&wake) != 0) {
    cli_error("cannot create a pipe: %s", strerror(errno));
    free(fp);
    return CLI_EXIT_INTERNAL;
  }

  idem_options opts = IDEM_OPTIONS_INIT;
  if (o.ttl_ms > 0)
    opts.ttl_ms = o.ttl_ms;
  if (o.max_attempts >= 0)
    opts.max_attempts = (uint32_t)o.max_attempts;
  if (o.retention_ms >= 0)
    opts.retention_ms = o.retention_ms;
  opts.on_lost = cli_on_lost;
  opts.lost_ctx = &wake;

  idem_db *db = NULL;
  int reraise = 0;
  ex = cli_open(&db, o.db, &opts);
  if (ex == 0) {
    idem_begin_opts bo = IDEM_BEGIN_OPTS_INIT;
    if (o.fingerprint != NULL)
      bo.fingerprint = o.fingerprint;
    else
      bo.fingerprint = fp;
    bo.fingerprint_len = fp_len;
    bo.name = o.name;
    bo.wait_ms = o.wait_ms;

    idem_answer a = IDEM_ANSWER_INIT;
    int rc = idem_begin(db, o.key, o.key_len, &bo, &a);
    ex = answer(&o, db, &wake, rc, &a, &reraise);
    idem_lease_free(a.lease);
    idem_answer_clear(&a);
    idem_close(db);
  }
  cli_wake_close(&wake);
  free(fp);
  if (reraise != 0) {
    fflush(stderr);
    cli_spawn_reraise(reraise);
  }
  return ex;
}
