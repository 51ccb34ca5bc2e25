/*
 * record.c - how `idem get` and `idem list` show a stored row: as lines
 * for people, as one tab-separated line for scripts, or as JSON.
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

void cli_record_text(FILE *f, const idem_record *rec) {
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

static void json_time(FILE *f, const char *name, int64_t ms) {
  char buf[CLI_TIME_MAX];
  if (ms == 0) {
    fprintf(f, ",\"%s\":null,\"%s_ms\":null", name, name);
    return;
  }
  cli_format_time(ms, buf, sizeof buf);
  fprintf(f, ",\"%s\":\"%s\",\"%s_ms\":%" PRId64, name, buf, name, ms);
}

void cli_record_json(FILE *f, const idem_record *rec, int with_output) {
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
  fputc('}', f);
}
