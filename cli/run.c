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
};

#define DEFAULT_MAX_OUTPUT ((size_t)1 << 20)
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
  int64_t timeout_ms;
  int quiet;
  const char *key;
  size_t key_len;
  char **cmd;
  char keyshow[CLI_KEY_DISPLAY_MAX];
};

/* Returns 0 to go on, or the exit status; *done is set when idem should
 * exit with that status even though it is 0 (--help, --version). */
static int parse(int argc, char **argv, struct run_opts *o, int *done) {
  static const struct option longopts[] = {
      {"db", required_argument, NULL, 'd'},
      {"ttl", required_argument, NULL, 't'},
      {"max-attempts", required_argument, NULL, 'a'},
      {"wait", optional_argument, NULL, 'w'},
      {"conflict-exit-code", required_argument, NULL, 'E'},
      {"fingerprint", required_argument, NULL, 'f'},
      {"no-fingerprint", no_argument, NULL, OPT_NO_FINGERPRINT},
      {"name", required_argument, NULL, 'n'},
      {"cache-failure", no_argument, NULL, OPT_CACHE_FAILURE},
      {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"retention", required_argument, NULL, OPT_RETENTION},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  uint64_t u;
  int c;

  memset(o, 0, sizeof *o);
  o->max_attempts = -1;
  o->retention_ms = -1;
  o->conflict_exit = CLI_EXIT_BUSY;
  o->max_output = DEFAULT_MAX_OUTPUT;
  /* "+": stop at KEY, so the command's own options are left alone;
   * ":": report a missing argument apart from an unknown option. */
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "+:d:t:a:w::E:f:n:qhV", longopts,
                          NULL)) != -1) {
    switch (c) {
    case 'd':
      o->db_opt = optarg;
      break;
    case 't':
      if (cli_parse_seconds(optarg, &o->ttl_ms) != 0 || o->ttl_ms <= 0)
        return cli_usage_error("invalid TTL '%s': expected seconds > 0",
                               optarg);
      break;
    case 'a':
      if (cli_parse_u64(optarg, UINT32_MAX, &u) != 0)
        return cli_usage_error("invalid number of attempts '%s'", optarg);
      o->max_attempts = (int64_t)u;
      break;
    case 'w':
      o->wait_ms = -1;
      if (optarg != NULL && cli_parse_seconds(optarg, &o->wait_ms) != 0)
        return cli_usage_error("invalid wait '%s': expected seconds", optarg);
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
    case OPT_TIMEOUT:
      if (cli_parse_seconds(optarg, &o->timeout_ms) != 0)
        return cli_usage_error("invalid --timeout '%s': expected seconds",
                               optarg);
      break;
    case OPT_RETENTION:
      if (cli_parse_seconds(optarg, &o->retention_ms) != 0)
        return cli_usage_error("invalid --retention '%s': expected seconds",
                               optarg);
      break;
    case 'q':
      o->quiet = 1;
      break;
    case 'h':
      *done = 1;
      cli_usage(stdout);
      return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_INTERNAL;
    case 'V':
      *done = 1;
      return cli_version();
    default:
      return cli_getopt_error(c, argv);
    }
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

/* Prints the command that resets the key, ready to paste when it can be. */
static void suggest_reset(const struct run_opts *o) {
  fputs("idem: to run it again: idem reset ", stderr);
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
              "(--max-output); not recorded",
              o->keyshow, sp->max_output);
    ex = CLI_EXIT_INTERNAL;
  } else if (status != 0 && !o->cache_failure) {
    if (WIFSIGNALED(sp->wstatus))
      snprintf(reason, sizeof reason, "killed by signal %d",
               WTERMSIG(sp->wstatus));
    else
      snprintf(reason, sizeof reason, "exit status %d", status);
    release(o, lease, reason);
    ex = status;
  } else {
    int rc = record(lease, status != 0, status, sp->out, sp->out_len);
    if (rc == IDEM_OK) {
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
  cli_spawn sp;
  memset(&sp, 0, sizeof sp);
  sp.argv = o->cmd;
  sp.envp = envp;
  sp.max_output = o->max_output;
  sp.timeout_ms = o->timeout_ms;
  sp.lease = l;
  sp.wake = wake;
  int src = cli_spawn_run(&sp);
  int ex = finish(o, db, l, &sp, src, reraise);
  cli_spawn_free(&sp);
  cli_env_free(envp);
  return ex;
}

static int answer(const struct run_opts *o, idem_db *db, cli_wake *wake, int rc,
                  idem_answer *a, int *reraise) {
  switch (rc) {
  case IDEM_CLAIMED:
    return run_claimed(o, db, a->lease, wake, reraise);
  case IDEM_COMPLETED:
    return replay(a);
  case IDEM_FAILED: {
    int ex = replay(a);
    if (ex != 0)
      return ex;
    /* The stored code is the failed run's status; anything that cannot
     * be one still must not read as success. */
    return a->code >= 1 && a->code <= 255 ? a->code : 1;
  }
  case IDEM_BUSY:
    if (!o->quiet)
      cli_error("key '%s' is busy%s: held by %.36s, lease ends in %" PRId64
                ".%03d s",
                o->keyshow, o->wait_ms != 0 ? " after waiting" : "",
                a->owner[0] ? a->owner : "another run", a->lease_ms / 1000,
                (int)(a->lease_ms % 1000));
    return o->conflict_exit;
  case IDEM_POISONED:
    if (!o->quiet) {
      cli_error("key '%s' is poisoned: all %" PRIu32
                " attempts are spent; not running",
                o->keyshow, a->attempts);
      suggest_reset(o);
    }
    return CLI_EXIT_POISONED;
  case IDEM_EMISMATCH:
    if (!o->quiet)
      cli_error("key '%s' was recorded with another fingerprint (a "
                "different command line or --fingerprint); not running",
                o->keyshow);
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
