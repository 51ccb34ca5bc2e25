/* SPDX-License-Identifier: MIT */
/*
 * header.c - idem.h on its own, compiled as C11 and as C++ with -Wall
 * -Wextra -pedantic -Werror: the header includes what it needs, and its
 * initialiser macros and declarations suit both languages.
 */
#include <idem.h>

int main(void) {
  idem_options o = IDEM_OPTIONS_INIT;
  idem_begin_opts b = IDEM_BEGIN_OPTS_INIT;
  idem_answer a = IDEM_ANSWER_INIT;
  idem_record r = IDEM_RECORD_INIT;
  idem_stats s = IDEM_STATS_INIT;
  int (*open_fn)(idem_db **, const char *, const idem_options *) = idem_open;
  (void)o;
  (void)b;
  (void)a;
  (void)r;
  (void)s;
  (void)open_fn;
  return IDEM_VERSION_NUMBER > 0 ? 0 : 1;
}
