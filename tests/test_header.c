/* SPDX-License-Identifier: MIT */
/*
 * test_header.c - the public header compiles warning-free on its own.
 *
 * Not a program to run: CTest compiles it with -Wall -Wextra -Wpedantic
 * -Werror. Every initialiser macro is used, because a user who writes
 * `idem_stats st = IDEM_STATS_INIT;` in a -Werror build must not be broken
 * by the header.
 */
#include <idem.h>

int main(void) {
  idem_options o = IDEM_OPTIONS_INIT;
  idem_begin_opts b = IDEM_BEGIN_OPTS_INIT;
  idem_answer a = IDEM_ANSWER_INIT;
  idem_record r = IDEM_RECORD_INIT;
  idem_stats s = IDEM_STATS_INIT;
  (void)o;
  (void)b;
  (void)a;
  (void)r;
  (void)s;
  return 0;
}
