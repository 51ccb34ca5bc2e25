/*
 * clock.c - the one place the library reads time and learns who it is.
 *
 * Lease deadlines are kept in boot-time milliseconds: every process of a
 * host reads the same CLOCK_BOOTTIME, it counts time spent in suspend (so a
 * lease does not outlive a laptop's sleep), and neither NTP nor a manual
 * date change moves it. Because it restarts at zero on every boot, a
 * deadline is only meaningful with the boot id it was taken under, which
 * each lease row records. The wall clock serves retention and display only.
 * Every reading goes through idem__now(), which a test can redirect with
 * idem_options.clock.
 */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#ifndef CLOCK_BOOTTIME
#define CLOCK_BOOTTIME CLOCK_MONOTONIC
#endif

static int64_t read_ms(clockid_t id) {
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0)
    return 0;
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t idem__now(const idem_db *db, int which) {
  if (db->opt.clock)
    return db->opt.clock(db->opt.clock_ctx, which);
  return read_ms(which == IDEM_CLOCK_WALL ? CLOCK_REALTIME : CLOCK_BOOTTIME);
}

/* Lock waits are real waits, whatever clock the handle was given. */
int64_t idem__monotonic_ms(void) {
  return read_ms(CLOCK_MONOTONIC);
}

void idem__self_init(idem__self *self) {
  memset(self, 0, sizeof *self);
  char text[64] = {0};
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  if (n < 36)
    return;
  text[36] = '\0';
  self->has_boot = uuid_parse(text, self->boot) == 0;
}

void idem__uuid_format(const unsigned char uuid[16], char out[37]) {
  uuid_unparse_lower(uuid, out);
}
