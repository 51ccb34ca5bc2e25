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
  static const int list[] = {OPT_JSON, OPT_STATE, OPT_LIMIT, 0};
  static const int reset[] = {OPT_ALL_POISONED, 0};
  static const int none[] = {0};
  static const int stats[] = {OPT_JSON, 0};
  static const struct {
    const int *allowed;
    int want_key;
  } cmds[] = {{get, 1}, {list, 0}, {reset, 2}, {none, 0}, {stats, 0}};
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
  int may_json = which != 2 && which != 3;
  FUZZ_CHECK(!o.json || may_json);
  FUZZ_CHECK(!o.output || which == 0);
  FUZZ_CHECK(o.state == -1 || which == 1);
  FUZZ_CHECK(o.limit == 0 || which == 1);
  FUZZ_CHECK(!o.all_poisoned || which == 2);
}
