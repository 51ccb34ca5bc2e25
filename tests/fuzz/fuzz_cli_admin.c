/* SPDX-License-Identifier: MIT */
/*
 * fuzz_cli_admin.c - reaches the static option parser the admin
 * subcommands share by including admin.c, with each subcommand's own
 * table of allowed options, and checks what a successful parse promises.
 */
#include "../../cli/admin.c"

#include "fuzz_cli.h"

void fuzz_cli_admin_parse(int which, int argc, char **argv) {
  /* The tables of cli_cmd_get, _list, _reset, _gc and _stats. */
  static const int get[] = {OPT_JSON, OPT_OUTPUT, 0};
  static const int list[] = {OPT_JSON,       OPT_STATE, OPT_LIMIT, OPT_PREFIX,
                             OPT_JSON_LINES, OPT_LONG,  0};
  static const int reset[] = {OPT_ALL_POISONED, 0};
  static const int gc[] = {OPT_OLDER_THAN, OPT_MAX_ROWS, OPT_MAX_BYTES, 0};
  static const int stats[] = {OPT_JSON, OPT_FORMAT, 0};
  static const struct {
    const int *allowed;
    int want_key;
  } cmds[] = {{get, 1}, {list, 0}, {reset, 2}, {gc, 0}, {stats, 0}};
  struct admin_opts o;
  int done = 0;
  int ex =
      parse(argc, argv, cmds[which].allowed, cmds[which].want_key, &o, &done);
  if (done) {
    FUZZ_CHECK(ex == CLI_EXIT_OK);
    return;
  }
  if (ex != 0) {
    FUZZ_CHECK(ex == CLI_EXIT_USAGE);
    return;
  }
  FUZZ_CHECK(o.db != NULL);
  if (cmds[which].want_key == 1)
    FUZZ_CHECK(o.key != NULL);
  if (cmds[which].want_key == 0)
    FUZZ_CHECK(o.key == NULL);
  if (o.key != NULL)
    FUZZ_CHECK(o.key_len == strlen(o.key) && o.key_len >= 1 &&
               o.key_len <= IDEM_MAX_KEY);
  FUZZ_CHECK(o.state == -1 ||
             (o.state >= IDEM_STATE_PENDING && o.state <= IDEM_STATE_POISONED));
  /* Only what the subcommand takes can have been set. */
  FUZZ_CHECK(o.format == FMT_TEXT || o.format == FMT_JSON || which == 1 ||
             which == 4);
  FUZZ_CHECK(o.format == FMT_TEXT || which != 2);
  FUZZ_CHECK(o.format != FMT_PROMETHEUS || which == 4);
  FUZZ_CHECK((o.format != FMT_JSON_LINES && o.format != FMT_LONG) ||
             which == 1);
  FUZZ_CHECK(o.format != FMT_JSON || which == 0 || which == 1 || which == 4);
  FUZZ_CHECK(!o.output || which == 0);
  FUZZ_CHECK(o.state == -1 || which == 1);
  FUZZ_CHECK(o.limit == 0 || which == 1);
  FUZZ_CHECK(o.prefix == NULL || which == 1);
  if (o.prefix != NULL)
    FUZZ_CHECK(o.prefix_len == strlen(o.prefix) &&
               o.prefix_len <= IDEM_MAX_KEY);
  FUZZ_CHECK(!o.all_poisoned || which == 2);
  FUZZ_CHECK(o.older_than_ms == -1 || which == 3);
  FUZZ_CHECK(o.older_than_ms >= -1 && o.older_than_ms <= CLI_MAX_DURATION_MS);
  FUZZ_CHECK((o.max_rows == NULL && o.max_bytes == NULL) || which == 3);
  if (which == 3) {
    /* The caps as gc reads them: a number, or a usage error. */
    uint64_t rows = 1, bytes = 1;
    int cx = cli_storage_caps(o.max_rows, o.max_bytes, &rows, &bytes);
    FUZZ_CHECK(cx == 0 || cx == CLI_EXIT_USAGE);
    if (cx == 0)
      FUZZ_CHECK(rows <= INT64_MAX && bytes <= INT64_MAX);
  }
}
