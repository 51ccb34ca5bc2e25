/* SPDX-License-Identifier: MIT */
/*
 * fuzz_cli_run.c - reaches the static option parser of `idem run` by
 * including run.c, and checks what a successful parse promises: the values
 * that the rest of run.c relies on without checking again.
 */
#include "../../cli/run.c"

#include "fuzz_cli.h"

static int in_argv(char **p, int argc, char **argv) {
  return p >= argv && p < argv + argc;
}

void fuzz_cli_run_parse(int argc, char **argv) {
  struct run_opts o;
  int done = 0;
  int ex = parse(argc, argv, &o, &done);
  if (done) {
    /* --help and --version: the stubs of fuzz_cli.c succeed. */
    FUZZ_CHECK(ex == CLI_EXIT_OK);
    return;
  }
  if (ex != 0) {
    FUZZ_CHECK(ex == CLI_EXIT_USAGE);
    return;
  }
  FUZZ_CHECK(o.key != NULL && o.key_len == strlen(o.key));
  FUZZ_CHECK(o.key_len >= 1 && o.key_len <= IDEM_MAX_KEY);
  FUZZ_CHECK(o.cmd != NULL && in_argv(o.cmd, argc, argv) && o.cmd[0] != NULL);
  FUZZ_CHECK(o.ttl_ms >= 0 && o.ttl_ms <= CLI_MAX_DURATION_MS);
  FUZZ_CHECK(o.wait_ms >= -1 && o.wait_ms <= CLI_MAX_DURATION_MS);
  FUZZ_CHECK(o.timeout_ms >= 0 && o.timeout_ms <= CLI_MAX_DURATION_MS);
  FUZZ_CHECK(o.retention_ms >= -1 && o.retention_ms <= CLI_MAX_DURATION_MS);
  FUZZ_CHECK(o.max_attempts >= -1 && o.max_attempts <= (int64_t)UINT32_MAX);
  FUZZ_CHECK(o.conflict_exit >= 0 && o.conflict_exit <= 255);
  FUZZ_CHECK(o.max_output <= IDEM_MAX_RESULT);
  FUZZ_CHECK(o.output_mode == CLI_OUTPUT_STORE ||
             o.output_mode == CLI_OUTPUT_DISCARD ||
             o.output_mode == CLI_OUTPUT_TAIL);
  FUZZ_CHECK(o.stop_signal >= 1 && o.stop_signal <= SIGRTMAX);
  FUZZ_CHECK(o.kill_after_ms >= 1 && o.kill_after_ms <= CLI_MAX_DURATION_MS);
  FUZZ_CHECK(!(o.fingerprint != NULL && o.no_fingerprint));
  FUZZ_CHECK(o.fingerprint == NULL ||
             strlen(o.fingerprint) <= IDEM_MAX_FINGERPRINT);
  FUZZ_CHECK(o.name == NULL || strlen(o.name) <= IDEM_MAX_NAME);
  FUZZ_CHECK(o.db != NULL);
  FUZZ_CHECK(memchr(o.keyshow, '\0', sizeof o.keyshow) != NULL);
}
