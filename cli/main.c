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
      "       idem list [-d PATH] [--state STATE] [--limit N] [--json]\n"
      "       idem reset [-d PATH] KEY | --all-poisoned\n"
      "       idem gc [-d PATH]\n"
      "       idem stats [-d PATH] [--json]\n"
      "       idem --help | --version\n"
      "\n"
      "Run COMMAND at most once per KEY on this host and replay its\n"
      "standard output to later callers.\n"
      "\n"
      "Options of run:\n"
      "  -d, --db PATH            database (default $IDEM_DB, else "
      "./idem.db)\n"
      "  -t, --ttl SECONDS        lease lifetime, renewed while COMMAND runs\n"
      "                           (default 60)\n"
      "  -a, --max-attempts N     runs of a key before it is poisoned\n"
      "                           (default 5, 0 = no limit)\n"
      "  -w, --wait[=SECONDS]     if KEY is busy, wait for it (no value: no\n"
      "                           limit); give the value as -wS or "
      "--wait=S\n"
      "  -E, --conflict-exit-code N\n"
      "                           exit status when KEY is busy (default 75)\n"
      "  -f, --fingerprint STRING what the request is (default: the command\n"
      "                           line); another one for KEY is refused\n"
      "      --no-fingerprint     record no fingerprint\n"
      "  -n, --name NAME          task name to record\n"
      "      --cache-failure      record a failed COMMAND too and replay its\n"
      "                           status\n"
      "      --max-output BYTES   largest output recorded (default 1048576)\n"
      "      --timeout SECONDS    kill COMMAND after that long\n"
      "      --retention SECONDS  how long a result is replayed (default\n"
      "                           86400, 0 = forever)\n"
      "  -q, --quiet              no message for busy, poisoned, mismatched\n"
      "                           or lost keys\n"
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

static int help(void) {
  cli_usage(stdout);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    cli_error("write error on standard output");
    return CLI_EXIT_INTERNAL;
  }
  return CLI_EXIT_OK;
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
