/* SPDX-License-Identifier: MIT */
/*
 * main.c - entry point of the idem command: picks the subcommand and
 * prints the help and version.
 *
 * Each subcommand parses its own options, so that `idem run` can stop at
 * the job's command line and leave the command's own flags alone.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <string.h>

void cli_usage(FILE *f) {
  fputs(
      "Usage: idem run [OPTIONS] KEY [--] COMMAND [ARG...]\n"
      "       idem get [-d PATH] [--json | --output] KEY\n"
      "       idem list [-d PATH] [--state STATE] [--prefix P] [--limit N]\n"
      "                 [--long | --json | --json-lines]\n"
      "       idem reset [-d PATH] KEY | --all-poisoned\n"
      "       idem gc [-d PATH] [--older-than DURATION] [--max-rows N]\n"
      "               [--max-bytes N]\n"
      "       idem stats [-d PATH] [--json | --format=FORMAT]\n"
      "       idem help [COMMAND] | --help | --version\n"
      "\n"
      "Run COMMAND at most once per KEY on this host and replay its\n"
      "standard output to later callers.\n"
      "\n"
      "  run    run COMMAND for KEY, or replay its recorded output\n"
      "  get    show a key's record and the history of its attempts\n"
      "  list   list the keys, with their state and last outcome\n"
      "  reset  forget a key, or every poisoned one\n"
      "  gc     delete expired results and stale keys, within limits\n"
      "  stats  count the keys, as text, JSON or for Prometheus\n"
      "\n"
      "'idem COMMAND --help' (or 'idem help COMMAND') shows the options of\n"
      "COMMAND. Without -d PATH or $IDEM_DB, the database is\n"
      "~/.local/state/idem/idem.db, or /var/lib/idem/idem.db for root.\n"
      "\n"
      "Exit status of run: COMMAND's own status, or a replayed one; 64 usage,\n"
      "65 fingerprint mismatch, 69 poisoned, 74 database error, 75 busy or\n"
      "lease lost, 124 timeout, 125 idem failed, 126 COMMAND not executable,\n"
      "127 COMMAND not found, 128+N interrupted by signal N.\n"
      "See idem(1).\n",
      f);
}

int cli_version(void) {
  printf("idem %s (libidem %s)\n", IDEM_VERSION_STRING, idem_version());
  if (fflush(stdout) != 0 || ferror(stdout)) {
    cli_error("write error on standard output");
    return CLI_EXIT_INTERNAL;
  }
  return CLI_EXIT_OK;
}

static int flush_help(void) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    cli_error("write error on standard output");
    return CLI_EXIT_INTERNAL;
  }
  return CLI_EXIT_OK;
}

static int help(void) {
  cli_usage(stdout);
  return flush_help();
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    int (*fn)(int, char **);
  } cmds[] = {
      {"run", cli_cmd_run},     {"get", cli_cmd_get}, {"list", cli_cmd_list},
      {"reset", cli_cmd_reset}, {"gc", cli_cmd_gc},   {"stats", cli_cmd_stats},
  };

  if (argc < 2)
    return cli_usage_error("missing command");
  const char *cmd = argv[1];
  /* `idem help get` is `idem get --help`; an unknown name gets it all. */
  if (strcmp(cmd, "help") == 0 && argc == 3) {
    if (strcmp(argv[2], "run") == 0) {
      cli_run_usage(stdout);
      return flush_help();
    }
    if (cli_admin_usage(stdout, argv[2]) == 0)
      return flush_help();
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
      strcmp(cmd, "help") == 0)
    return help();
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0)
    return cli_version();
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    if (strcmp(cmd, cmds[i].name) == 0)
      return cmds[i].fn(argc - 1, argv + 1);
  if (cmd[0] == '-')
    return cli_usage_error("unrecognized option '%s'", cmd);
  return cli_usage_error("unknown command '%s'", cmd);
}
