/* SPDX-License-Identifier: MIT */
/*
 * cli.h - what the files of the idem command share.
 *
 * The command is built on the public <idem.h> only; nothing here is API.
 * Every subcommand returns its exit status instead of calling exit(), so
 * that handles and leases are always closed on the way out.
 */
#ifndef IDEM_CLI_H
#define IDEM_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <idem.h>

/* Exit statuses. The numbers follow sysexits(3) where one fits, and the
 * shell's conventions (126, 127, 128+N) for running a command. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_NOTFOUND 1   /* get/reset: no such key */
#define CLI_EXIT_USAGE 64     /* EX_USAGE */
#define CLI_EXIT_MISMATCH 65  /* EX_DATAERR: fingerprint mismatch */
#define CLI_EXIT_POISONED 69  /* EX_UNAVAILABLE: attempts spent */
#define CLI_EXIT_STORAGE 74   /* EX_IOERR: the database failed */
#define CLI_EXIT_BUSY 75      /* EX_TEMPFAIL: busy key, lost lease */
#define CLI_EXIT_TIMEOUT 124  /* as timeout(1) */
#define CLI_EXIT_INTERNAL 125 /* idem itself failed */
#define CLI_EXIT_NOEXEC 126   /* the command cannot be executed */
#define CLI_EXIT_NOCMD 127    /* the command was not found */

/* Largest value accepted for a duration option, in milliseconds: a year is
 * more than any lease or timeout needs and keeps arithmetic far from
 * overflow. */
#define CLI_MAX_DURATION_MS ((int64_t)366 * 24 * 3600 * 1000)

/* --- main.c ------------------------------------------------------------ */

/* Prints the one-screen help of all subcommands on `f`. */
void cli_usage(FILE *f);
/* Prints the version line on stdout; returns the exit status. */
int cli_version(void);

/* --- util.c ------------------------------------------------------------ */

/* "idem: " + message + newline on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* As cli_error(), then "Try 'idem --help'."; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reports a getopt_long() failure ('?' or ':') for argv; returns
 * CLI_EXIT_USAGE. */
int cli_getopt_error(int c, char **argv);

/* Strict decimal parsers: the whole string, digits only, in range.
 * Return 0 on success, -1 on any malformed or out-of-range input. */
int cli_parse_u64(const char *s, uint64_t max, uint64_t *out);
/* A duration, as ms: a number with up to three decimals and an optional
 * unit, ms, s, m, h or d ("30", "0.5", "500ms", "1.5h", "7d"); without a
 * unit, seconds. ms take no decimals. 0 is accepted (callers refuse it
 * where it means nothing); more than CLI_MAX_DURATION_MS is not. Returns
 * 0, or -1 with the reason, such as "more than 3 decimals", written into
 * why (why_len bytes, CLI_WHY_MAX is enough; why may be NULL). */
int cli_parse_duration(const char *s, int64_t *out_ms, char *why,
                       size_t why_len);
#define CLI_WHY_MAX 96
/* Reports a refused option value as "OPT VALUE: WHY" (VALUE escaped as
 * keys are) with the usage hint; returns CLI_EXIT_USAGE. */
int cli_option_error(const char *opt, const char *value, const char *why);

/* The database path: the option if given, else $IDEM_DB if set and not
 * empty, else cli_db_default(). */
const char *cli_db_path(const char *opt);
/* The default database: CLI_ROOT_DB_DIR/idem.db for root (effective uid
 * 0), else $XDG_STATE_HOME/idem/idem.db, or ~/.local/state/idem/idem.db
 * when XDG_STATE_HOME is unset or not absolute. A static buffer; "" when
 * there is no home directory (cli_open() then says so). */
const char *cli_db_default(void);
#define CLI_ROOT_DB_DIR "/var/lib/idem"
/* Whether `path` is the pointer cli_db_default() returned, i.e. no path
 * was given. */
int cli_db_is_default(const char *path);

/* Opens the database, reporting a failure on stderr. The default database
 * (cli_db_is_default()) has its directory created first when opts may
 * create the file (neither IDEM_OPEN_READONLY nor IDEM_OPEN_NOCREATE); a
 * path that was given is never helped along. Returns 0, or the exit status
 * to return. */
int cli_open(idem_db **out, const char *path, const idem_options *opts);
/* Reports a failed library call on the database at `path` (db may be
 * NULL) as "WHAT 'PATH': CAUSE: WHAT TO DO", and returns the exit status
 * that goes with the code. Missing directories, permissions and WAL
 * readers that cannot write the -shm file are told apart by looking at the
 * files, for a reader or a writer as the last cli_open() was. */
int cli_db_error(idem_db *db, const char *path, int code, const char *what);
/* The exit status for a negative IDEM_E* code. */
int cli_exit_for(int code);

/* Writes a key for a human: printable ASCII as is, anything else as \xHH,
 * shortened with "..." past a reasonable length. Always NUL-terminates. */
void cli_key_display(const void *key, size_t len, char *buf, size_t cap);
#define CLI_KEY_DISPLAY_MAX 256

/* Writes all of buf to fd, retrying short writes and EINTR. Returns 0, or
 * -1 with errno set. */
int cli_write_all(int fd, const void *buf, size_t len);

/* Formats a wall time in ms since the epoch as UTC ISO 8601
 * ("2024-05-01T12:00:00.000Z"). */
void cli_format_time(int64_t ms, char *buf, size_t cap);
#define CLI_TIME_MAX 40

/* Makes sure descriptors 0, 1 and 2 are open (on /dev/null if they were
 * not), so that no pipe or database lands on them by accident. Returns 0
 * or -1. */
int cli_std_fds(void);

/* The name of an IDEM_STATE_* value, and the reverse (-2 if unknown). */
const char *cli_state_name(int state);
int cli_state_parse(const char *name);

/* --- json.c ------------------------------------------------------------ */

/* Non-zero if the bytes are well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF). NUL bytes are allowed. */
int cli_utf8_valid(const void *p, size_t n);
/* Writes `"name":value` for arbitrary bytes: a JSON string when they are
 * valid UTF-8, else `"name_base64":"..."` (RFC 4648 base64). */
void cli_json_bytes(FILE *f, const char *name, const void *p, size_t n);
/* Writes a JSON string literal of valid UTF-8 bytes. */
void cli_json_string(FILE *f, const void *p, size_t n);

/* --- record.c ---------------------------------------------------------- */

/* A key's attempts, copied out of idem_history(): its callback runs under
 * the handle's lock and its messages live only as long as the call, so
 * they are kept here and printed once the history is whole. */
typedef struct cli_history {
  idem_attempt *a; /* each message a malloc'ed copy, or NULL */
  size_t n;
  size_t cap;
  int oom; /* a copy failed: the history is incomplete */
} cli_history;

/* The idem_attempt_fn that fills a cli_history (ctx); stops on no memory. */
int cli_history_add(void *ctx, const idem_attempt *a);
void cli_history_free(cli_history *h);
/* The name of an IDEM_OUTCOME_* value ("running", "released", ...). */
const char *cli_outcome_name(int outcome);

/* A record as "field: value" lines, for `idem get`, followed by its
 * history, one line per attempt, when hist is not NULL. */
void cli_record_text(FILE *f, const idem_record *rec, const cli_history *hist);
/* A record as one JSON object. With with_output (rows from idem_get()),
 * a completed or failed row also carries its result, as "output" or
 * "output_base64"; with hist, its attempts as the array "history". */
void cli_record_json(FILE *f, const idem_record *rec, int with_output,
                     const cli_history *hist);
/* A record as one line, for `idem list`. */
void cli_record_line(FILE *f, const idem_record *rec);

/* How a key's last run ended, for `idem list`: its last attempt (set by
 * the caller, NULL when it has none) and what cli_last_run_of() makes of
 * it: the outcome's name, and the exit status that run ended with when
 * that is known (completed: 0; failed: its replayed status; released: as
 * its reason says, "exit status N", "killed by signal N", "timed out"). */
typedef struct cli_last_run {
  const idem_attempt *last;
  const char *outcome; /* NULL without an attempt */
  int has_status;
  int status;
} cli_last_run;
void cli_last_run_of(const idem_record *rec, cli_last_run *run);
/* The record's JSON object (without output) with "last_outcome",
 * "last_message" and "exit_status" added; cli_record_json() adds them too
 * when given the history. */
void cli_record_json_last(FILE *f, const idem_record *rec,
                          const cli_last_run *run);
/* cli_record_line() with the last outcome and exit status ("-" when not
 * known) before the key. */
void cli_record_line_long(FILE *f, const idem_record *rec,
                          const cli_last_run *run);

/* --- fingerprint.c ----------------------------------------------------- */

/* The default fingerprint of a command line: its arguments joined with NUL
 * bytes, or a digest of them when that is longer than
 * IDEM_MAX_FINGERPRINT. *out is malloc'ed. Returns 0 or -1 (no memory). */
int cli_fingerprint(char *const *argv, unsigned char **out, size_t *len);

/* --- env.c ------------------------------------------------------------- */

/* A copy of the environment without IDEM_KEY, IDEM_ATTEMPT and IDEM_FENCE,
 * plus those three for this claim. Free with cli_env_free(). NULL if out
 * of memory. */
char **cli_env_build(const char *key, uint32_t attempt, uint64_t fence);
void cli_env_free(char **envp);

/* The storage caps (idem_options.max_rows and max_bytes): the values of
 * --max-rows and --max-bytes when given (not NULL), else of IDEM_MAX_ROWS
 * and IDEM_MAX_BYTES when set and not empty, else 0 (no cap). Numbers are
 * plain decimal. Returns 0, or CLI_EXIT_USAGE after saying which value is
 * wrong. */
int cli_storage_caps(const char *max_rows, const char *max_bytes,
                     uint64_t *rows_out, uint64_t *bytes_out);

/* --- child.c ----------------------------------------------------------- */

/* The self-pipe that turns signals and lost leases into something poll()
 * can wait for. Made before the database is opened, because the handle's
 * on_lost callback writes to it. */
typedef struct cli_wake {
  int rd;
  int wr;
} cli_wake;

int cli_wake_open(cli_wake *w);
void cli_wake_close(cli_wake *w);
/* idem_options.on_lost: wakes the loop of cli_spawn_run(). ctx is the
 * cli_wake. */
void cli_on_lost(void *ctx, idem_lease *lease);

/* What of the command's stdout is kept to be recorded (--output). */
#define CLI_OUTPUT_STORE 0   /* all of it, or nothing past max_output */
#define CLI_OUTPUT_DISCARD 1 /* none: only the exit status is recorded */
#define CLI_OUTPUT_TAIL 2    /* its last max_output bytes */

/* Parses a signal given as a name, with or without "SIG", in any case
 * ("TERM", "SIGKILL", "int"), or as a number. Returns 0, or -1 with the
 * reason written into why (as cli_parse_duration()). */
int cli_parse_signal(const char *s, int *sig, char *why, size_t why_len);

typedef struct cli_spawn {
  /* What to run. */
  char **argv;        /* the command, argv[0] looked up in $PATH */
  char **envp;        /* its whole environment */
  size_t max_output;  /* bytes of stdout to keep at most */
  int output_mode;    /* CLI_OUTPUT_* */
  int64_t timeout_ms; /* 0 = none */
  /* How the command is stopped when idem decides it must (timeout, lost
   * lease): stop_signal (0: SIGTERM), then SIGKILL after kill_after_ms
   * (0: 2 s). */
  int stop_signal;
  int64_t kill_after_ms;
  const idem_lease *lease;
  cli_wake *wake;

  /* What happened. */
  unsigned char *out; /* kept stdout, malloc'ed (may be NULL) */
  size_t out_len;
  uint64_t out_total; /* bytes the command wrote to stdout in all */
  int overflow;       /* CLI_OUTPUT_STORE: stdout went past max_output */
  int wstatus;        /* as from waitpid(), when started */
  int started;        /* the command was executed */
  int exec_errno;     /* why it could not be, when not started */
  int setup_errno;    /* idem failed before or instead of exec */
  const char *setup_what;
  int stdout_errno; /* writing to idem's stdout failed */
  int timed_out;
  int lease_lost;
  int signal; /* first of SIGINT/SIGTERM/SIGHUP received */
} cli_spawn;

/* Runs the command to its end, filling in the fields under "What
 * happened". Returns 0 when the outcome is in *s (a command that could not
 * be executed included), -1 when idem itself failed (s->setup_errno says
 * why); either way the command has ended and been waited for. */
int cli_spawn_run(cli_spawn *s);
void cli_spawn_free(cli_spawn *s);
/* Sets `sig` back to its default action, unblocks it and raises it, so
 * that a shell sees idem die of the signal it passed on (or of SIGPIPE).
 * Returns only if that fails. */
void cli_spawn_reraise(int sig);

/* --- run.c, admin.c ---------------------------------------------------- */

int cli_cmd_run(int argc, char **argv);
/* Prints the usage of `idem run`, with all its options, on f. */
void cli_run_usage(FILE *f);
/* Prints the usage of the admin subcommand `cmd` (get, list, reset, gc,
 * stats) on f; -1 if it is not one. */
int cli_admin_usage(FILE *f, const char *cmd);
int cli_cmd_get(int argc, char **argv);
int cli_cmd_list(int argc, char **argv);
int cli_cmd_reset(int argc, char **argv);
int cli_cmd_gc(int argc, char **argv);
int cli_cmd_stats(int argc, char **argv);

#endif /* IDEM_CLI_H */
