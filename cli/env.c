/* SPDX-License-Identifier: MIT */
/*
 * env.c - the environment of the job's command: idem's own plus IDEM_KEY,
 * IDEM_ATTEMPT and IDEM_FENCE; and what idem itself reads from its own
 * environment besides IDEM_DB: the storage caps.
 *
 * It is built as a fresh array before fork() and handed to execve(),
 * because the library runs a heartbeat thread: between fork() and exec
 * only async-signal-safe calls are allowed, and setenv() in the parent
 * would race with any thread reading the environment.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ours(const char *entry) {
  static const char *const names[] = {
      "IDEM_KEY=", "IDEM_ATTEMPT=", "IDEM_FENCE="};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strncmp(entry, names[i], strlen(names[i])) == 0)
      return 1;
  return 0;
}

static char *entry(const char *name, const char *value) {
  size_t n = strlen(name) + 1 + strlen(value) + 1;
  char *e = malloc(n);
  if (e != NULL)
    snprintf(e, n, "%s=%s", name, value);
  return e;
}

char **cli_env_build(const char *key, uint32_t attempt, uint64_t fence) {
  size_t n = 0;
  for (char **e = environ; e != NULL && *e != NULL; e++)
    n++;
  /* Inherited entries, the three of this claim, the terminating NULL. */
  char **envp = calloc(n + 4, sizeof *envp);
  if (envp == NULL)
    return NULL;
  size_t o = 0;
  for (char **e = environ; e != NULL && *e != NULL; e++) {
    if (ours(*e))
      continue;
    envp[o] = strdup(*e);
    if (envp[o] == NULL)
      goto fail;
    o++;
  }
  char num[32];
  envp[o] = entry("IDEM_KEY", key);
  if (envp[o++] == NULL)
    goto fail;
  snprintf(num, sizeof num, "%" PRIu32, attempt);
  envp[o] = entry("IDEM_ATTEMPT", num);
  if (envp[o++] == NULL)
    goto fail;
  snprintf(num, sizeof num, "%" PRIu64, fence);
  envp[o] = entry("IDEM_FENCE", num);
  if (envp[o++] == NULL)
    goto fail;
  envp[o] = NULL;
  return envp;
fail:
  cli_env_free(envp);
  return NULL;
}

void cli_env_free(char **envp) {
  if (envp == NULL)
    return;
  for (char **e = envp; *e != NULL; e++)
    free(*e);
  free(envp);
}

/* --- Storage caps -------------------------------------------------------
 * Read here with the rest of what idem takes from its environment, so
 * that every subcommand that opens a database for writing bounds it the
 * same way. */

static int one_cap(const char *opt, const char *env, const char *given,
                   uint64_t *out) {
  const char *v = given;
  const char *name = opt;
  if (v == NULL) {
    v = getenv(env);
    name = env;
    if (v == NULL || v[0] == '\0') {
      *out = 0;
      return 0;
    }
  }
  /* INT64_MAX: SQLite's integers are signed, and no table gets near. */
  if (cli_parse_u64(v, INT64_MAX, out) != 0)
    return cli_option_error(name, v, "expected a whole number (0 = no limit)");
  return 0;
}

int cli_storage_caps(const char *max_rows, const char *max_bytes,
                     uint64_t *rows_out, uint64_t *bytes_out) {
  int ex = one_cap("--max-rows", "IDEM_MAX_ROWS", max_rows, rows_out);
  if (ex == 0)
    ex = one_cap("--max-bytes", "IDEM_MAX_BYTES", max_bytes, bytes_out);
  return ex;
}
