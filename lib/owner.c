/* SPDX-License-Identifier: MIT */
/*
 * owner.c - who holds a lease, and whether that process is still there.
 *
 * A lease row names its holder by boot id, PID namespace, pid and process
 * start time. On one host this proves death faster than any timeout: when
 * the holder ran in our PID namespace and its pid now names no process, a
 * zombie, or a process that started at another time (the pid was reused),
 * nobody holds the lease any more and it may be claimed at once instead of
 * after its TTL. Everything else (another namespace, an unreadable /proc,
 * a /proc mounted for another PID namespace than ours, a holder we cannot
 * see) proves nothing, and the lease runs its TTL. A missing /proc entry
 * is one of those: under hidepid=2 (systemd's ProtectProc=invisible) a
 * live process of another user has none, so only kill()'s ESRCH proves
 * that a pid names no process.
 * Liveness can only ever shorten a wait for a dead holder; it never takes
 * a lease from a live one, which is what keeps it safe to get wrong in the
 * "cannot tell" direction.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

/* Whether pid is proved to name no process of our PID namespace. Only
 * kill()'s ESRCH proves it: a missing /proc entry does not, as /proc
 * mounted hidepid=2 hides every other user's live process just so, and
 * success or EPERM is a process that exists. */
static bool pid_absent(int64_t pid) {
  if (pid <= 0 || pid > INT_MAX) /* not a pid kill() can be asked about */
    return false;
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Reads the stat line of a process's main thread. Returns 1 with the state
 * letter, start time and thread count, 0 if there is no such process, -1
 * if it cannot be told. The task path, not /proc/PID/stat, because an
 * emulator such as qemu-user rewrites the latter for its guest; a main
 * thread that called pthread_exit() shows as a zombie while its other
 * threads run on, hence the thread count. */
static int proc_stat(int64_t pid, char *state, int64_t *start,
                     int64_t *threads) {
  char path[96], buf[1024];
  snprintf(path, sizeof path, "/proc/%lld/task/%lld/stat", (long long)pid,
           (long long)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  /* Unreadable: gone only if kill() says so. A process we may not inspect
   * has an unknown start time, so even a reused pid cannot be told. */
  if (fd < 0)
    return pid_absent(pid) ? 0 : -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return pid_absent(pid) ? 0 : -1;
  buf[n] = '\0';
  /* The command name may hold spaces and parentheses: fields are counted
   * from the last ')'. The state is field 3, the start time field 22. */
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ' || !p[2])
    return -1;
  *state = p[2];
  p += 3;
  char *end;
  for (int field = 4; field < 22; field++) {
    p = strchr(p + 1, ' ');
    if (!p)
      return -1;
    if (field == 19) { /* p is now before field 20 */
      *threads = strtoll(p + 1, &end, 10);
      /* Unparsed, the count would read as 0, and a zombie main thread
       * whose other threads run on would look like a dead process. */
      if (end == p + 1)
        return -1;
    }
  }
  long long v = strtoll(p + 1, &end, 10);
  if (end == p + 1)
    return -1;
  *start = v;
  return 1;
}

/* Whether /proc is mounted for our PID namespace, so that its entries
 * describe our pids and not another namespace's processes of the same
 * numbers. */
static bool proc_is_ours(void) {
  char link[32];
  ssize_t n = readlink("/proc/self", link, sizeof link - 1);
  if (n <= 0)
    return false;
  link[n] = '\0';
  return strtoll(link, NULL, 10) == (long long)getpid();
}

void idem__self_init(idem__self *self) {
  memset(self, 0, sizeof *self);
  uuid_generate(self->owner_base);
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char text[64] = {0};
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n >= 36) {
      text[36] = '\0';
      self->has_boot = uuid_parse(text, self->boot) == 0;
    }
  }
  struct stat sb;
  char state;
  int64_t start, threads;
  if (proc_is_ours() && stat("/proc/self/ns/pid", &sb) == 0 &&
      proc_stat(getpid(), &state, &start, &threads) == 1) {
    self->pid = getpid();
    self->pidns = (int64_t)sb.st_ino;
    self->start = start;
  }
}

/* A zombie whose other threads still run is not dead yet. */
static bool dead(char state, int64_t threads) {
  return (state == 'Z' && threads <= 1) || state == 'X';
}

bool idem__owner_gone(const idem__self *self, int64_t pid, int64_t pidns,
                      int64_t start) {
  if (!self->pidns || pid <= 0 || pidns != self->pidns || !start)
    return false;
  if (pid == self->pid)
    return start != self->start;
  /* /proc may have been mounted over since the handle was opened. One of
   * another PID namespace shows other processes under the same numbers,
   * whose start times would make a live holder look like a reused pid. */
  if (!proc_is_ours())
    return pid_absent(pid);
  char state;
  int64_t now_start, threads = 0;
  int r = proc_stat(pid, &state, &now_start, &threads);
  if (r == 0)
    return true;
  if (r < 0)
    return false;
  return dead(state, threads) || now_start != start;
}

bool idem__pid_gone(int64_t pid) {
  if (pid_absent(pid))
    return true;
  /* A zombie is only seen in a /proc of our own namespace: another's
   * would show some other process under the same number. */
  char state;
  int64_t start, threads = 0;
  return proc_is_ours() && proc_stat(pid, &state, &start, &threads) == 1 &&
         dead(state, threads);
}

void idem__owner_next(idem__self *self, unsigned char out[16]) {
  /* libuuid reads the kernel's random source for every UUID, which costs
   * more than the rest of a claim's own work. One random UUID per handle,
   * with a counter folded into its last seven bytes, names each lease
   * uniquely: the version and variant bits (bytes 6 and 8) are untouched,
   * and two handles would have to draw bases equal in 115 random bits to
   * meet. */
  uint64_t n = atomic_fetch_add(&self->owners, 1);
  memcpy(out, self->owner_base, 16);
  for (int i = 15; i >= 9 && n; i--, n >>= 8)
    out[i] ^= (unsigned char)(n & 0xff);
}

void idem__uuid_format(const unsigned char uuid[16], char out[37]) {
  uuid_unparse_lower(uuid, out);
}
