/* SPDX-License-Identifier: MIT */
/*
 * record.c - how `idem get` and `idem list` show a stored row: as lines
 * for people, as one tab-separated line for scripts, or as JSON; and how
 * `idem get` shows the key's attempts after it.
 *
 * Kept apart from the subcommands so that get and list show the same
 * fields under the same names.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A key escaped whole (4 bytes per byte at worst) plus the NUL. */
#define KEY_TEXT_MAX (IDEM_MAX_KEY * 4 + 1)

static size_t name_len(const idem_record *rec) {
  return strnlen(rec->name, sizeof rec->name);
}

static void text_time(FILE *f, const char *label, int64_t ms) {
  char buf[CLI_TIME_MAX];
  if (ms == 0) {
    fprintf(f, "%s: -\n", label);
    return;
  }
  cli_format_time(ms, buf, sizeof buf);
  fprintf(f, "%s: %s\n", label, buf);
}

static int terminal(const idem_record *rec) {
  return rec->state == IDEM_STATE_COMPLETED || rec->state == IDEM_STATE_FAILED;
}

/* --- History ------------------------------------------------------------ */

int cli_history_add(void *ctx, const idem_attempt *a) {
  cli_history *h = ctx;
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 8;
    idem_attempt *p = realloc(h->a, cap * sizeof *p);
    if (p == NULL) {
      h->oom = 1;
      return 1;
    }
    h->a = p;
    h->cap = cap;
  }
  idem_attempt *copy = &h->a[h->n];
  *copy = *a;
  copy->message = NULL;
  if (a->message != NULL && (copy->message = strdup(a->message)) == NULL) {
    h->oom = 1;
    return 1;
  }
  h->n++;
  return 0;
}

void cli_history_free(cli_history *h) {
  for (size_t i = 0; i < h->n; i++)
    free((char *)h->a[i].message);
  free(h->a);
  memset(h, 0, sizeof *h);
}

const char *cli_outcome_name(int outcome) {
  static const char *const names[] = {
      [IDEM_OUTCOME_RUNNING] = "running",
      [IDEM_OUTCOME_COMPLETED] = "completed",
      [IDEM_OUTCOME_RELEASED] = "released",
      [IDEM_OUTCOME_FAILED] = "failed",
      [IDEM_OUTCOME_LOST] = "lost",
      [IDEM_OUTCOME_EXPIRED] = "expired",
      [IDEM_OUTCOME_POISONED] = "poisoned",
  };
  if (outcome < 0 || (size_t)outcome >= sizeof names / sizeof names[0])
    return "unknown";
  return names[outcome];
}

/* Escaped like keys, so that a message with a newline still takes one
 * line (4 bytes per byte at worst, plus the NUL). */
#define MESSAGE_TEXT_MAX (IDEM_MAX_REASON * 4 + 1)

static void history_text(FILE *f, const cli_history *h) {
  if (h->n == 0) {
    fputs("history: none\n", f);
    return;
  }
  fprintf(f, "history: %zu attempt%s\n", h->n, h->n == 1 ? "" : "s");
  char msg[MESSAGE_TEXT_MAX];
  for (size_t i = 0; i < h->n; i++) {
    const idem_attempt *a = &h->a[i];
    char started[CLI_TIME_MAX], ended[CLI_TIME_MAX];
    cli_format_time(a->started_at, started, sizeof started);
    if (a->ended_at != 0)
      cli_format_time(a->ended_at, ended, sizeof ended);
    else
      snprintf(ended, sizeof ended, "-");
    fprintf(f, "  %" PRIu32 ": fence ", a->attempt);
    /* A refused attempt never held a fence, nor had a holder. */
    if (a->fence != 0)
      fprintf(f, "%" PRIu64, a->fence);
    else
      fputc('-', f);
    fprintf(f, ", %s", cli_outcome_name(a->outcome));
    if (a->outcome == IDEM_OUTCOME_FAILED)
      fprintf(f, " (code %d)", a->code);
    fprintf(f, ", %s to %s, pid ", started, ended);
    if (a->pid != 0)
      fprintf(f, "%" PRId64, a->pid);
    else
      fputc('-', f);
    if (a->message != NULL && a->message[0] != '\0') {
      cli_key_display(a->message, strlen(a->message), msg, sizeof msg);
      fprintf(f, ": %s", msg);
    }
    fputc('\n', f);
  }
}

static void json_time(FILE *f, const char *name, int64_t ms) {
  char buf[CLI_TIME_MAX];
  if (ms == 0) {
    fprintf(f, ",\"%s\":null,\"%s_ms\":null", name, name);
    return;
  }
  cli_format_time(ms, buf, sizeof buf);
  fprintf(f, ",\"%s\":\"%s\",\"%s_ms\":%" PRId64, name, buf, name, ms);
}

static void history_json(FILE *f, const cli_history *h) {
  fputs(",\"history\":[", f);
  for (size_t i = 0; i < h->n; i++) {
    const idem_attempt *a = &h->a[i];
    fprintf(f, "%s{\"attempt\":%" PRIu32, i == 0 ? "" : ",", a->attempt);
    if (a->fence != 0)
      fprintf(f, ",\"fence\":%" PRIu64, a->fence);
    else
      fputs(",\"fence\":null", f);
    fprintf(f, ",\"outcome\":\"%s\"", cli_outcome_name(a->outcome));
    if (a->owner[0] != '\0') {
      fputs(",\"owner\":", f);
      cli_json_string(f, a->owner, strnlen(a->owner, sizeof a->owner));
    } else {
      fputs(",\"owner\":null", f);
    }
    if (a->pid != 0)
      fprintf(f, ",\"pid\":%" PRId64, a->pid);
    else
      fputs(",\"pid\":null", f);
    json_time(f, "started_at", a->started_at);
    json_time(f, "ended_at", a->ended_at);
    fprintf(f, ",\"code\":%d,", a->code);
    if (a->message != NULL)
      cli_json_bytes(f, "message", a->message, strlen(a->message));
    else
      fputs("\"message\":null", f);
    fputc('}', f);
  }
  fputc(']', f);
}

/* --- Records ------------------------------------------------------------ */

void cli_record_text(FILE *f, const idem_record *rec, const cli_history *hist) {
  char *key = malloc(KEY_TEXT_MAX);
  if (key != NULL) {
    cli_key_display(rec->key, rec->key_len, key, KEY_TEXT_MAX);
    fprintf(f, "key: %s\n", key);
    free(key);
  }
  fprintf(f, "state: %s\n", cli_state_name(rec->state));
  if (name_len(rec) > 0) {
    char name[IDEM_MAX_NAME * 4 + 1];
    cli_key_display(rec->name, name_len(rec), name, sizeof name);
    fprintf(f, "name: %s\n", name);
  }
  fprintf(f, "attempts: %" PRIu32 "\n", rec->attempts);
  fprintf(f, "fence: %" PRIu64 "\n", rec->fence);
  if (rec->owner[0] != '\0' && rec->lease_ms > 0)
    fprintf(f, "lease: held by %.36s, %" PRId64 ".%03d s left\n", rec->owner,
            rec->lease_ms / 1000, (int)(rec->lease_ms % 1000));
  else if (rec->owner[0] != '\0')
    fprintf(f, "lease: expired (was held by %.36s)\n", rec->owner);
  else
    fputs("lease: none\n", f);
  text_time(f, "created", rec->created_at);
  text_time(f, "updated", rec->updated_at);
  if (rec->expires_at == 0 && terminal(rec))
    fputs("expires: never\n", f);
  else
    text_time(f, "expires", rec->expires_at);
  if (rec->state == IDEM_STATE_FAILED)
    fprintf(f, "code: %d\n", rec->code);
  fprintf(f, "output: %zu bytes\n", rec->result_len);
  fprintf(f, "fingerprint: %s\n", rec->has_fingerprint ? "yes" : "no");
  if (hist != NULL)
    history_text(f, hist);
}

void cli_record_line(FILE *f, const idem_record *rec) {
  char updated[CLI_TIME_MAX];
  char *key = malloc(KEY_TEXT_MAX);
  if (key == NULL)
    return;
  cli_format_time(rec->updated_at, updated, sizeof updated);
  cli_key_display(rec->key, rec->key_len, key, KEY_TEXT_MAX);
  fprintf(f, "%s\t%" PRIu32 "\t%s\t%zu\t%s\n", cli_state_name(rec->state),
          rec->attempts, updated, rec->result_len, key);
  free(key);
}

/* --- The last run ------------------------------------------------------ */

/* The exit status `idem run` ended an attempt with, from the reason it
 * released the key with (idem(1) documents these words); -1 if the words
 * do not say. */
/* The number that is all of msg after `words`, from 0 to max; -1 if msg
 * is anything else. */
static int number_after(const char *msg, const char *words, int max) {
  size_t n = strlen(words);
  uint64_t v;
  if (strncmp(msg, words, n) != 0 ||
      cli_parse_u64(msg + n, (uint64_t)max, &v) != 0)
    return -1;
  return (int)v;
}

static int status_of_reason(const char *msg) {
  if (msg == NULL)
    return -1;
  int n = number_after(msg, "exit status ", 255);
  if (n >= 0)
    return n;
  n = number_after(msg, "killed by signal ", 127);
  if (n > 0)
    return 128 + n;
  if (strncmp(msg, "timed out", 9) == 0)
    return CLI_EXIT_TIMEOUT;
  return -1;
}

/* The status a recorded failure is replayed with (run.c: 1 when the code
 * cannot be an exit status). */
static int replayed_status(int code) {
  return code >= 1 && code <= 255 ? code : 1;
}

void cli_last_run_of(const idem_record *rec, cli_last_run *run) {
  run->outcome = NULL;
  run->has_status = 0;
  run->status = 0;
  const idem_attempt *a = run->last;
  if (a != NULL) {
    run->outcome = cli_outcome_name(a->outcome);
    int st = -1;
    if (a->outcome == IDEM_OUTCOME_COMPLETED)
      st = 0;
    else if (a->outcome == IDEM_OUTCOME_FAILED)
      st = replayed_status(a->code);
    else if (a->outcome == IDEM_OUTCOME_RELEASED)
      st = status_of_reason(a->message);
    run->has_status = st >= 0;
    run->status = st >= 0 ? st : 0;
    return;
  }
  /* No history to read (the key was reset meanwhile): what the row
   * itself records. */
  if (rec->state == IDEM_STATE_COMPLETED) {
    run->has_status = 1;
  } else if (rec->state == IDEM_STATE_FAILED) {
    run->has_status = 1;
    run->status = replayed_status(rec->code);
  }
}

static void last_run_json(FILE *f, const cli_last_run *run) {
  if (run->outcome != NULL)
    fprintf(f, ",\"last_outcome\":\"%s\"", run->outcome);
  else
    fputs(",\"last_outcome\":null", f);
  const char *msg = run->last != NULL ? run->last->message : NULL;
  if (msg != NULL) {
    fputc(',', f);
    cli_json_bytes(f, "last_message", msg, strlen(msg));
  } else {
    fputs(",\"last_message\":null", f);
  }
  if (run->has_status)
    fprintf(f, ",\"exit_status\":%d", run->status);
  else
    fputs(",\"exit_status\":null", f);
}

/* The fields of a record's JSON object, without its closing brace. */
static void record_json_fields(FILE *f, const idem_record *rec,
                               int with_output) {
  fputc('{', f);
  cli_json_bytes(f, "key", rec->key, rec->key_len);
  fprintf(f, ",\"state\":\"%s\"", cli_state_name(rec->state));
  if (name_len(rec) > 0) {
    fputc(',', f);
    cli_json_bytes(f, "name", rec->name, name_len(rec));
  } else {
    fputs(",\"name\":null", f);
  }
  fprintf(f, ",\"attempts\":%" PRIu32 ",\"fence\":%" PRIu64, rec->attempts,
          rec->fence);
  if (rec->owner[0] != '\0') {
    fputs(",\"owner\":", f);
    cli_json_string(f, rec->owner, strnlen(rec->owner, sizeof rec->owner));
    fprintf(f, ",\"lease_ms\":%" PRId64, rec->lease_ms > 0 ? rec->lease_ms : 0);
  } else {
    fputs(",\"owner\":null,\"lease_ms\":0", f);
  }
  json_time(f, "created_at", rec->created_at);
  json_time(f, "updated_at", rec->updated_at);
  json_time(f, "expires_at", rec->expires_at);
  fprintf(f, ",\"code\":%d,\"output_bytes\":%zu,\"has_fingerprint\":%s",
          rec->code, rec->result_len, rec->has_fingerprint ? "true" : "false");
  if (with_output && terminal(rec)) {
    fputc(',', f);
    cli_json_bytes(f, "output", rec->result != NULL ? rec->result : "",
                   rec->result != NULL ? rec->result_len : 0);
  }
}

void cli_record_json(FILE *f, const idem_record *rec, int with_output,
                     const cli_history *hist) {
  record_json_fields(f, rec, with_output);
  if (hist != NULL) {
    cli_last_run run = {hist->n > 0 ? &hist->a[hist->n - 1] : NULL, NULL, 0, 0};
    cli_last_run_of(rec, &run);
    last_run_json(f, &run);
    history_json(f, hist);
  }
  fputc('}', f);
}

void cli_record_json_last(FILE *f, const idem_record *rec,
                          const cli_last_run *run) {
  record_json_fields(f, rec, 0);
  last_run_json(f, run);
  fputc('}', f);
}

void cli_record_line_long(FILE *f, const idem_record *rec,
                          const cli_last_run *run) {
  char updated[CLI_TIME_MAX], status[16];
  char *key = malloc(KEY_TEXT_MAX);
  if (key == NULL)
    return;
  cli_format_time(rec->updated_at, updated, sizeof updated);
  cli_key_display(rec->key, rec->key_len, key, KEY_TEXT_MAX);
  if (run->has_status)
    snprintf(status, sizeof status, "%d", run->status);
  else
    snprintf(status, sizeof status, "-");
  fprintf(f, "%s\t%" PRIu32 "\t%s\t%zu\t%s\t%s\t%s\n",
          cli_state_name(rec->state), rec->attempts, updated, rec->result_len,
          run->outcome != NULL ? run->outcome : "-", status, key);
  free(key);
}
