/* SPDX-License-Identifier: MIT */
/*
 * rss.c - the memory a process needs to hold one handle with N live leases.
 *
 * Opens a fresh database in a temporary directory, claims N distinct keys
 * (default 1000) and keeps every lease held, heartbeat thread included,
 * then prints its resident set size (VmRSS, VmHWM from /proc/self/status)
 * and the heap in use (mallinfo2) at three points: at start, after opening
 * the handle, and with the N leases held. Exits non-zero if any claim
 * fails, so CTest keeps it working. Under qemu-user the RSS figures are
 * those of the emulator process, which includes its translated code; the
 * heap figures are the emulated program's own. docs/portability.md lists
 * the results.
 * Usage: rss [N]
 */
#define _GNU_SOURCE

#include <idem.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Value in kB of one "Name:   123 kB" line of /proc/self/status. */
static long status_kb(const char *name) {
  char line[256];
  long kb = -1;
  size_t n = strlen(name);
  FILE *f = fopen("/proc/self/status", "r");

  if (!f)
    return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, name, n) == 0 && line[n] == ':') {
      kb = strtol(line + n + 1, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

static void report(const char *when) {
  struct mallinfo2 mi = mallinfo2();
  printf("%-22s VmRSS %6ld kB  VmHWM %6ld kB  heap in use %6zu kB\n", when,
         status_kb("VmRSS"), status_kb("VmHWM"),
         (mi.uordblks + mi.hblkhd) / 1024);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000;
  char dir[] = "/tmp/idem-rss-XXXXXX", path[64], key[32];
  idem_lease **leases = calloc(n > 0 ? (size_t)n : 1, sizeof *leases);
  idem_db *db = NULL;
  int rc, held = 0;

  if (n <= 0 || !leases || !mkdtemp(dir)) {
    fprintf(stderr, "usage: rss [N > 0]\n");
    return 2;
  }
  snprintf(path, sizeof path, "%s/rss.db", dir);
  report("start");

  rc = idem_open(&db, path, NULL);
  if (rc != IDEM_OK) {
    fprintf(stderr, "open: %s: %s\n", idem_errstr(rc), idem_errmsg(db));
    return 1;
  }
  report("handle open");

  for (int i = 0; i < n; i++) {
    idem_answer a = IDEM_ANSWER_INIT;
    int len = snprintf(key, sizeof key, "rss-key-%d", i);

    rc = idem_begin(db, key, (size_t)len, NULL, &a);
    if (rc == IDEM_CLAIMED)
      leases[held++] = a.lease;
    else
      fprintf(stderr, "begin %s: %s: %s\n", key, idem_errstr(rc),
              idem_errmsg(db));
    idem_answer_clear(&a);
  }
  char label[48];
  snprintf(label, sizeof label, "%d leases held", held);
  report(label);

  for (int i = 0; i < held; i++)
    idem_lease_free(leases[i]);
  free(leases);
  rc = idem_close(db);
  const char *suffix;
  for (unsigned i = 0; (suffix = idem_file_suffix(i)) != NULL; i++) {
    snprintf(path, sizeof path, "%s/rss.db%s", dir, suffix);
    unlink(path);
  }
  /* Left non-empty only by a file the library made but did not name. */
  int removed = rmdir(dir) == 0;
  if (!removed)
    perror(dir);
  return held == n && rc == IDEM_OK && removed ? 0 : 1;
}
