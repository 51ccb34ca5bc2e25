/* SPDX-License-Identifier: MIT */
/*
 * fuzz_cli.h - what the parts of fuzz_cli share: the command's static
 * option parsers, reached through the files that include run.c and
 * admin.c, each checking what a successful parse promises.
 */
#ifndef IDEM_FUZZ_CLI_H
#define IDEM_FUZZ_CLI_H

#include <stddef.h>

/* A failed check: prints where and aborts. */
void fuzz_cli_die(const char *file, int line, const char *what)
    __attribute__((noreturn));
#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond))                                                               \
      fuzz_cli_die(__FILE__, __LINE__, #cond);                                 \
  } while (0)

/* `idem run` option parsing of argv[0..argc-1] (argv[argc] is NULL). */
void fuzz_cli_run_parse(int argc, char **argv);
/* The parsing of the admin subcommand `which` (0 get, 1 list, 2 reset,
 * 3 gc, 4 stats). */
void fuzz_cli_admin_parse(int which, int argc, char **argv);

#endif
