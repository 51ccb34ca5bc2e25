/* SPDX-License-Identifier: MIT */
/*
 * queue.c - the writers' queue of queue.h: a ticket lock in a shared file.
 *
 * Ticket numbers wrap at 2^32 and are only ever compared by difference.
 * Each ticket sleeps on the futex of its own slot (ticket modulo the slot
 * count), so a turn handed on wakes one process, not all of them; tickets
 * that share a slot are only woken early, and check again.
 *
 * Races cost order, never safety: a late store of an idle mark, or two
 * processes that both think the turn is theirs, only send two writers to
 * SQLite's lock, where the busy handler sorts them out.
 */
#include "queue.h"

#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAGIC 0x3171646du /* "mdq1" little-endian: format 1 */
#define QUEUE_SLOTS 64

typedef struct slot {                /* a cache line each */
  _Alignas(64) _Atomic uint32_t seq; /* bumped to wake the ticket's sleeper */
  _Atomic uint32_t sleepers; /* a FUTEX_WAKE is only needed when nonzero */
  _Atomic uint32_t idle;     /* holder between transactions: its µs | 1 */
  _Atomic int32_t pid;       /* the ticket's process; 0 once it gave up */
} slot;

typedef struct shared {
  _Atomic uint32_t magic; /* 0 in a file just created */
  _Atomic uint32_t next;  /* the next ticket to hand out */
  _Atomic uint32_t serving;
  slot slot[QUEUE_SLOTS];
} shared;

/* The file's layout is its format: the same on every ABI. */
_Static_assert(sizeof(shared) == 64 + QUEUE_SLOTS * 64, "queue format 1");

struct idem__queue {
  shared *sh;
  uint32_t ticket;
  int64_t turn_us;
  bool held;     /* the turn is ours, perhaps idle between transactions */
  int64_t since; /* when the turn began, µs */
};

static slot *slot_of(shared *sh, uint32_t ticket) {
  return &sh->slot[ticket % QUEUE_SLOTS];
}

static void wake(shared *sh, uint32_t ticket) {
  slot *sl = slot_of(sh, ticket);
  atomic_fetch_add(&sl->seq, 1);
  if (atomic_load(&sl->sleepers))
    syscall(SYS_futex, &sl->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Ends turn `ticket`, unless someone else has already. */
static void pass(shared *sh, uint32_t ticket) {
  uint32_t expected = ticket;
  if (atomic_compare_exchange_strong(&sh->serving, &expected, ticket + 1))
    wake(sh, ticket + 1);
}

/* Sleeps until woken, at most `us`, unless the turn has moved on from
 * `serving` meanwhile. */
static void nap(shared *sh, uint32_t ticket, uint32_t serving, int64_t us) {
  slot *sl = slot_of(sh, ticket);
  uint32_t seq = atomic_load(&sl->seq);
  atomic_fetch_add(&sl->sleepers, 1);
  if (atomic_load(&sh->serving) == serving) {
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    syscall(SYS_futex, &sl->seq, FUTEX_WAIT, seq, &ts, NULL, 0);
  }
  atomic_fetch_sub(&sl->sleepers, 1);
}

static uint32_t idle_mark(int64_t now_us) {
  return (uint32_t)now_us | 1u;
}

/* Whether the process of ticket `serving` will never take or end its
 * turn. A pid of another PID namespace may name no process here, which
 * only skips it early. */
static bool holder_gone(shared *sh, uint32_t serving) {
  pid_t pid = atomic_load(&slot_of(sh, serving)->pid);
  return pid == 0 || idem__pid_gone(pid);
}

/* How long the holder of turn `serving` has been away, or -1 if it is in
 * a transaction. */
static int64_t idle_for(shared *sh, uint32_t serving, int64_t now_us) {
  uint32_t mark = atomic_load(&slot_of(sh, serving)->idle);
  return mark ? (int64_t)(uint32_t)(idle_mark(now_us) - mark) : -1;
}

idem__queue *idem__queue_open(const char *db_path, unsigned turn_us) {
  struct stat db;
  if (!db_path || !*db_path || stat(db_path, &db) != 0)
    return NULL;
  size_t size = strlen(db_path) + sizeof "-lockq";
  char *path = malloc(size);
  idem__queue *q = calloc(1, sizeof *q);
  int fd = -1;
  if (path && q) {
    snprintf(path, size, "%s-lockq", db_path);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
              db.st_mode & 0666);
  }
  free(path);
  struct stat st;
  bool ok = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (ok && st.st_size == 0) {
    /* New (or left empty by a creator that died): as SQLite does for its
     * -wal and -shm files, give it the database's owner and mode, so that
     * every user who may write the database may queue. */
    (void)!fchmod(fd, db.st_mode & 0666);
    if (geteuid() == 0)
      (void)!fchown(fd, db.st_uid, db.st_gid);
    ok = ftruncate(fd, sizeof(shared)) == 0;
  } else if (ok) {
    ok = st.st_size == (off_t)sizeof(shared);
  }
  void *map = MAP_FAILED;
  if (ok)
    map = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (fd >= 0)
    close(fd);
  if (map == MAP_FAILED) {
    free(q);
    return NULL;
  }
  q->sh = map;
  q->turn_us = turn_us;
  /* A file of the right size that is not a queue of this format is left
   * as it is: a zero word is a file just created. */
  uint32_t magic = 0;
  if (!atomic_compare_exchange_strong(&q->sh->magic, &magic, QUEUE_MAGIC) &&
      magic != QUEUE_MAGIC) {
    munmap(map, sizeof(shared));
    free(q);
    return NULL;
  }
  return q;
}

void idem__queue_close(idem__queue *q) {
  if (!q)
    return;
  if (q->held)
    pass(q->sh, q->ticket);
  munmap(q->sh, sizeof(shared));
  free(q);
}

/* Hands ticket `ticket` to this process: no idle mark, and its pid. */
static void own_ticket(shared *sh, uint32_t ticket) {
  atomic_store(&slot_of(sh, ticket)->idle, 0);
  atomic_store(&slot_of(sh, ticket)->pid, (int32_t)getpid());
}

/* Marks the turn of `ticket` as ours. */
static void take(idem__queue *q, uint32_t ticket) {
  q->ticket = ticket;
  q->held = true;
  q->since = idem__monotonic_us();
}

/* Whether the turn this connection held between transactions is still
 * its own; if so it is in a transaction again. */
static bool turn_kept(idem__queue *q) {
  if (q->held && atomic_load(&q->sh->serving) == q->ticket) {
    atomic_store(&slot_of(q->sh, q->ticket)->idle, 0);
    return true;
  }
  q->held = false; /* none, or taken over while away */
  return false;
}

void idem__queue_enter(idem__queue *q, int64_t deadline_ms) {
  if (!q)
    return;
  if (turn_kept(q))
    return;
  shared *sh = q->sh;
  uint32_t ticket = atomic_fetch_add(&sh->next, 1);
  own_ticket(sh, ticket);
  int64_t deadline = deadline_ms * 1000, seen_at = 0;
  uint32_t seen = 0;
  for (;;) {
    uint32_t s = atomic_load(&sh->serving);
    if ((int32_t)(s - ticket) >= 0)
      break; /* our turn, or we were skipped */
    int64_t now = idem__monotonic_us();
    if (now >= deadline) {
      atomic_store(&slot_of(sh, ticket)->pid, 0); /* skip it at once */
      break;
    }
    if (!seen_at || s != seen) {
      seen = s;
      seen_at = now;
    }
    /* A turn that does not move: its holder died or was stopped, or got
     * no CPU. Skip the dead at once and the living only after long. */
    int64_t stuck = now - seen_at;
    if (stuck >= IDEM__QUEUE_STUCK_US &&
        (stuck >= IDEM__QUEUE_DEAD_US || holder_gone(sh, s))) {
      pass(sh, s);
      continue;
    }
    int64_t wait = IDEM__QUEUE_STUCK_US - stuck % IDEM__QUEUE_STUCK_US;
    if (deadline - now < wait)
      wait = deadline - now;
    if (ticket - s == 1) {
      int64_t away = idle_for(sh, s, now);
      if (away > IDEM__QUEUE_GRACE_US) {
        pass(sh, s);
        continue;
      }
      if (away >= 0 && IDEM__QUEUE_GRACE_US - away < wait)
        wait = IDEM__QUEUE_GRACE_US - away;
      if (now - seen_at < IDEM__QUEUE_SPIN_US) {
        /* sched_yield(), not a pause: with more writers than cores, the
         * holder may be waiting for this very CPU. */
        sched_yield();
        continue;
      }
    }
    nap(sh, ticket, s, wait > 0 ? wait : 1);
  }
  q->ticket = ticket;
  if (atomic_load(&sh->serving) == ticket) {
    take(q, ticket);
    wake(sh, ticket + 1); /* the new next in line wakes up to poll */
  }
}

bool idem__queue_try(idem__queue *q) {
  if (!q)
    return true;
  if (turn_kept(q))
    return true;
  shared *sh = q->sh;
  /* Free when every ticket handed out has had its turn. */
  uint32_t s = atomic_load(&sh->serving), n = s;
  if (!atomic_compare_exchange_strong(&sh->next, &n, s + 1))
    return false;
  own_ticket(sh, s);
  take(q, s);
  return true;
}

void idem__queue_leave(idem__queue *q) {
  if (!q)
    return;
  shared *sh = q->sh;
  if (!q->held) {
    pass(sh, q->ticket); /* a wait that ran out, if its turn has come */
    return;
  }
  int64_t now = idem__monotonic_us();
  if (now - q->since < q->turn_us && atomic_load(&sh->serving) == q->ticket) {
    atomic_store(&slot_of(sh, q->ticket)->idle, idle_mark(now));
    wake(sh, q->ticket + 1); /* a next in line asleep may take it soon */
    return;
  }
  q->held = false;
  pass(sh, q->ticket);
}
