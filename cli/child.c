/* SPDX-License-Identifier: MIT */
/*
 * child.c - runs the job's command under the lease: fork and exec it,
 * copy its stdout to idem's stdout while keeping what --output asks for,
 * pass signals on to it, enforce --timeout, and stop it when the lease is
 * lost.
 *
 * One poll() loop waits on the output pipe and on a self-pipe written by
 * the signal handlers and by the library's on_lost callback, so idem
 * sleeps until something happens and costs no CPU while the command runs.
 * The library runs a heartbeat thread, so the child calls only
 * async-signal-safe functions between fork() and execve(): everything it
 * needs (environment, candidate paths) is allocated before the fork.
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The write end of the self-pipe. A signal handler can reach nothing but
 * globals, hence this one; it is set before any handler is installed and
 * not changed while one is. */
static volatile sig_atomic_t wake_fd = -1;

/* What the self-pipe carries: a signal number, or this for a lost lease
 * (no signal is numbered 0). */
#define WAKE_LOST 0

/* Between the stop signal and SIGKILL when the command must stop, unless
 * --kill-after says otherwise. */
#define GRACE_MS 2000
#define CHUNK 65536

/* Why the child gave up before or at execve(), sent back over a pipe that
 * the exec closes (O_CLOEXEC): reading end-of-file means it ran. */
enum {
  STAGE_SETPGID = 1,
  STAGE_PDEATHSIG,
  STAGE_ORPHAN,
  STAGE_DUP,
  STAGE_EXEC
};
struct report {
  int stage;
  int err;
};

/* The signals idem changes while the command runs; SIGINT, SIGTERM and
 * SIGHUP are relayed, SIGCHLD wakes the loop, SIGPIPE is ignored so that
 * a closed stdout is an error to report rather than a silent death. */
static const int relayed[] = {SIGINT, SIGTERM, SIGHUP};
#define NRELAYED (sizeof relayed / sizeof relayed[0])

struct sigstate {
  struct sigaction old_relayed[NRELAYED];
  struct sigaction old_chld;
  struct sigaction old_pipe;
  sigset_t old_mask;
};

static void on_signal(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  ssize_t r = write(wake_fd, &b, 1); /* a full pipe already wakes us */
  (void)r;
  errno = saved;
}

int cli_wake_open(cli_wake *w) {
  int fds[2];
  w->rd = w->wr = -1;
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
    return -1;
  w->rd = fds[0];
  w->wr = fds[1];
  return 0;
}

void cli_wake_close(cli_wake *w) {
  /* A late signal must not write to whatever reuses the number. */
  if (wake_fd == w->wr)
    wake_fd = -1;
  if (w->rd >= 0)
    close(w->rd);
  if (w->wr >= 0)
    close(w->wr);
  w->rd = w->wr = -1;
}

void cli_on_lost(void *ctx, idem_lease *lease) {
  /* Runs on the heartbeat thread: it must not block, and only wakes the
   * loop, which asks idem_lease_lost() itself. */
  const cli_wake *w = ctx;
  unsigned char b = WAKE_LOST;
  ssize_t r = write(w->wr, &b, 1);
  (void)r;
  (void)lease;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The names --signal takes: the standard signals as kill -l lists them,
 * without "SIG". Real-time signals are taken by number only. */
static const struct {
  const char *name;
  int sig;
} signames[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},       {"QUIT", SIGQUIT},
    {"ILL", SIGILL},   {"TRAP", SIGTRAP},     {"ABRT", SIGABRT},
    {"BUS", SIGBUS},   {"FPE", SIGFPE},       {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},     {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM},
    {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
    {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},     {"TTOU", SIGTTOU},
    {"URG", SIGURG},   {"XCPU", SIGXCPU},     {"XFSZ", SIGXFSZ},
    {"PROF", SIGPROF}, {"VTALRM", SIGVTALRM}, {"WINCH", SIGWINCH},
    {"IO", SIGIO},     {"PWR", SIGPWR},       {"SYS", SIGSYS},
};

int cli_parse_signal(const char *s, int *sig, char *why, size_t why_len) {
  if (why != NULL && why_len > 0)
    why[0] = '\0';
  if (s == NULL || s[0] == '\0') {
    if (why != NULL)
      snprintf(why, why_len, "no signal (expected e.g. TERM, INT or 15)");
    return -1;
  }
  if (s[0] >= '0' && s[0] <= '9') {
    uint64_t n;
    /* Real-time signals included; 0 would send nothing. */
    if (cli_parse_u64(s, (uint64_t)SIGRTMAX, &n) != 0 || n == 0) {
      if (why != NULL)
        snprintf(why, why_len, "no such signal number (1 to %d)", SIGRTMAX);
      return -1;
    }
    *sig = (int)n;
    return 0;
  }
  const char *name = s;
  if (strncasecmp(name, "SIG", 3) == 0)
    name += 3;
  for (size_t i = 0; i < sizeof signames / sizeof signames[0]; i++)
    if (strcasecmp(name, signames[i].name) == 0) {
      *sig = signames[i].sig;
      return 0;
    }
  if (why != NULL)
    snprintf(why, why_len,
             "unknown signal (a name such as TERM, INT, HUP, KILL, or a "
             "number)");
  return -1;
}

static int install_signals(struct sigstate *st) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigfillset(&sa.sa_mask);
  /* SA_RESTART: the library's threads may take a signal too, and its
   * system calls must not see EINTR because of us. */
  sa.sa_flags = SA_RESTART;
  for (size_t i = 0; i < NRELAYED; i++) {
    if (sigaction(relayed[i], NULL, &st->old_relayed[i]) != 0)
      return -1;
    /* A signal ignored when idem started (nohup, a daemon's children)
     * stays ignored, for idem and for the command, as a shell does. */
    if (st->old_relayed[i].sa_handler == SIG_IGN)
      continue;
    if (sigaction(relayed[i], &sa, NULL) != 0)
      return -1;
  }
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &sa, &st->old_chld) != 0)
    return -1;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGPIPE, &sa, &st->old_pipe) != 0)
    return -1;
  return 0;
}

/* Where execvp() would look for argv[0], computed before the fork because
 * execvp() may allocate and the child must not. */
static char **candidates(const char *file) {
  if (strchr(file, '/') != NULL || file[0] == '\0') {
    char **v = calloc(2, sizeof *v);
    if (v == NULL)
      return NULL;
    if (file[0] != '\0' && (v[0] = strdup(file)) == NULL) {
      free(v);
      return NULL;
    }
    return v;
  }
  const char *path = getenv("PATH");
  if (path == NULL)
    path = "/bin:/usr/bin"; /* glibc's default when PATH is unset */
  size_t n = 1;
  for (const char *p = path; *p; p++)
    n += *p == ':';
  char **v = calloc(n + 1, sizeof *v);
  if (v == NULL)
    return NULL;
  size_t flen = strlen(file);
  const char *dir = path;
  for (size_t i = 0; i < n; i++) {
    const char *end = strchr(dir, ':');
    size_t dlen = end != NULL ? (size_t)(end - dir) : strlen(dir);
    /* An empty entry means the current directory, as for execvp(). */
    const char *d = dlen > 0 ? dir : ".";
    size_t dl = dlen > 0 ? dlen : 1;
    size_t sz = dl + 1 + flen + 1;
    v[i] = malloc(sz);
    if (v[i] == NULL) {
      for (size_t k = 0; k < i; k++)
        free(v[k]);
      free(v);
      return NULL;
    }
    snprintf(v[i], sz, "%.*s/%s", (int)dl, d, file);
    dir = end != NULL ? end + 1 : dir + dlen;
  }
  return v;
}

static void free_strv(char **v) {
  if (v == NULL)
    return;
  for (char **p = v; *p != NULL; p++)
    free(*p);
  free(v);
}

static _Noreturn void child_fail(int fd, int stage, int err, int status) {
  struct report r = {stage, err};
  ssize_t w = write(fd, &r, sizeof r);
  (void)w;
  _exit(status);
}

/* The child side of the fork: async-signal-safe calls only. */
static _Noreturn void child_main(const cli_spawn *s, char **paths,
                                 char **sh_argv, int out_wr, int rep_wr,
                                 pid_t parent, const struct sigstate *st) {
  for (size_t i = 0; i < NRELAYED; i++)
    sigaction(relayed[i], &st->old_relayed[i], NULL);
  sigaction(SIGCHLD, &st->old_chld, NULL);
  sigaction(SIGPIPE, &st->old_pipe, NULL);

  /* Its own process group, so that idem can signal the command and all
   * it started at once. */
  if (setpgid(0, 0) != 0)
    child_fail(rep_wr, STAGE_SETPGID, errno, CLI_EXIT_INTERNAL);
  /* If idem dies, even by SIGKILL, the command dies too: nothing may run
   * without someone keeping its lease alive. The signal comes when the
   * forking thread ends; that is idem's main thread, which lives until
   * idem exits. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
    child_fail(rep_wr, STAGE_PDEATHSIG, errno, CLI_EXIT_INTERNAL);
  /* idem may have died before prctl() took effect. */
  if (getppid() != parent)
    child_fail(rep_wr, STAGE_ORPHAN, 0, CLI_EXIT_INTERNAL);
  if (dup2(out_wr, STDOUT_FILENO) < 0)
    child_fail(rep_wr, STAGE_DUP, errno, CLI_EXIT_INTERNAL);
  sigprocmask(SIG_SETMASK, &st->old_mask, NULL);

  /* execvp()'s search: go on past missing or unreadable candidates,
   * report EACCES if one was found but not executable, and hand a file
   * without a known format to the shell. */
  int err = ENOENT, eacces = 0;
  for (char **p = paths; *p != NULL; p++) {
    execve(*p, s->argv, s->envp);
    err = errno;
    if (err == ENOEXEC) {
      sh_argv[1] = *p;
      execve("/bin/sh", sh_argv, s->envp);
      err = errno;
      break;
    }
    if (err == EACCES) {
      eacces = 1;
      continue;
    }
    if (err == ENOENT || err == ENOTDIR || err == ESTALE || err == ENODEV ||
        err == ETIMEDOUT)
      continue;
    break;
  }
  if (eacces && (err == ENOENT || err == ENOTDIR || err == ESTALE ||
                 err == ENODEV || err == ETIMEDOUT))
    err = EACCES;
  child_fail(rep_wr, STAGE_EXEC, err,
             err == ENOENT || err == ENOTDIR ? CLI_EXIT_NOCMD
                                             : CLI_EXIT_NOEXEC);
}

/* The buffer that keeps the output: its size, and under
 * CLI_OUTPUT_TAIL once full, where its oldest byte is (a ring). */
struct kept {
  size_t cap;
  size_t head;
};

/* Makes room for `want` bytes (at most max_output). Returns 0 or -1 (and
 * marks the run as failed). */
static int reserve(cli_spawn *s, struct kept *k, size_t want) {
  if (want <= k->cap)
    return 0;
  size_t cap = k->cap < 4096 ? 4096 : k->cap;
  while (cap < want)
    cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
  if (cap > s->max_output)
    cap = s->max_output;
  unsigned char *p = realloc(s->out, cap);
  if (p == NULL) {
    s->setup_errno = ENOMEM;
    s->setup_what = "capturing the output";
    return -1;
  }
  s->out = p;
  k->cap = cap;
  return 0;
}

static void reverse(unsigned char *p, size_t n) {
  for (size_t i = 0; i < n / 2; i++) {
    unsigned char t = p[i];
    p[i] = p[n - 1 - i];
    p[n - 1 - i] = t;
  }
}

/* Puts a full ring of CLI_OUTPUT_TAIL back in order, oldest byte first,
 * in place: no second buffer of up to 16 MiB. */
static void unring(cli_spawn *s, struct kept *k) {
  if (s->out == NULL || k->head == 0)
    return;
  reverse(s->out, k->head);
  reverse(s->out + k->head, s->out_len - k->head);
  reverse(s->out, s->out_len);
  k->head = 0;
}

/* CLI_OUTPUT_TAIL: appends until max_output bytes are kept, then writes
 * over the oldest. */
static void keep_tail(cli_spawn *s, struct kept *k, const unsigned char *buf,
                      size_t n) {
  size_t max = s->max_output;
  if (max == 0)
    return;
  if (n >= max) {
    /* The chunk alone fills the buffer: only its end counts. */
    if (reserve(s, k, max) != 0)
      return;
    memcpy(s->out, buf + (n - max), max);
    s->out_len = max;
    k->head = 0;
    return;
  }
  if (s->out_len < max) {
    size_t fit = max - s->out_len < n ? max - s->out_len : n;
    if (reserve(s, k, s->out_len + fit) != 0)
      return;
    memcpy(s->out + s->out_len, buf, fit);
    s->out_len += fit;
    buf += fit;
    n -= fit;
    if (n > 0 && reserve(s, k, max) != 0)
      return;
  }
  while (n > 0) {
    size_t chunk = max - k->head < n ? max - k->head : n;
    memcpy(s->out + k->head, buf, chunk);
    k->head = (k->head + chunk) % max;
    buf += chunk;
    n -= chunk;
  }
}

static void capture(cli_spawn *s, struct kept *k, const unsigned char *buf,
                    size_t n) {
  s->out_total += n;
  if (s->overflow || s->setup_errno != 0 ||
      s->output_mode == CLI_OUTPUT_DISCARD)
    return;
  if (s->output_mode == CLI_OUTPUT_TAIL) {
    keep_tail(s, k, buf, n);
    return;
  }
  if (n > s->max_output - s->out_len) {
    /* Never a truncated result: keep relaying, store nothing. */
    s->overflow = 1;
    free(s->out);
    s->out = NULL;
    s->out_len = 0;
    k->cap = 0;
    return;
  }
  if (reserve(s, k, s->out_len + n) != 0)
    return;
  memcpy(s->out + s->out_len, buf, n);
  s->out_len += n;
}

/* Reads what the pipe holds now. Returns 1 at end of file, else 0. */
static int pump(cli_spawn *s, int fd, unsigned char *buf, struct kept *k) {
  for (;;) {
    ssize_t n = read(fd, buf, CHUNK);
    if (n == 0)
      return 1;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
    }
    /* Relayed as produced: a reader of idem's stdout sees progress. */
    if (s->stdout_errno == 0 &&
        cli_write_all(STDOUT_FILENO, buf, (size_t)n) != 0)
      s->stdout_errno = errno;
    capture(s, k, buf, (size_t)n);
  }
}

/* Asks the command to stop: the stop signal now, SIGKILL once the grace
 * is over. */
static void stop_group(const cli_spawn *s, pid_t pgid, int64_t *kill_at) {
  if (*kill_at >= 0)
    return;
  kill(-pgid, s->stop_signal > 0 ? s->stop_signal : SIGTERM);
  *kill_at = now_ms() + (s->kill_after_ms > 0 ? s->kill_after_ms : GRACE_MS);
}

static void read_wake(cli_spawn *s, pid_t pgid) {
  unsigned char b[64];
  ssize_t n;
  while ((n = read(s->wake->rd, b, sizeof b)) > 0 || (n < 0 && errno == EINTR))
    for (ssize_t i = 0; i < n; i++) {
      int sig = b[i];
      if (sig != SIGINT && sig != SIGTERM && sig != SIGHUP)
        continue; /* SIGCHLD or a lost lease: looked at by the caller */
      if (s->signal == 0)
        s->signal = sig;
      kill(-pgid, sig);
    }
}

static int exited(pid_t pid) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  /* WNOWAIT leaves the zombie in place, which keeps the process group's
   * number from being reused while idem may still signal it. */
  if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno == ECHILD;
  return si.si_pid == pid;
}

static void loop(cli_spawn *s, pid_t pid, int out_rd) {
  unsigned char *buf = malloc(CHUNK);
  struct kept k = {0, 0};
  int out_open = 1;
  int64_t deadline = s->timeout_ms > 0 ? now_ms() + s->timeout_ms : -1;
  int64_t kill_at = -1;

  if (buf == NULL) {
    s->setup_errno = ENOMEM;
    s->setup_what = "capturing the output";
  }
  for (;;) {
    if (exited(pid))
      break;
    if (s->setup_errno != 0 && kill_at < 0)
      stop_group(s, pid, &kill_at); /* idem cannot go on: neither may it */

    int64_t now = now_ms();
    if (deadline >= 0 && now >= deadline) {
      s->timed_out = 1;
      deadline = -1;
      stop_group(s, pid, &kill_at);
    }
    if (kill_at >= 0 && now >= kill_at) {
      kill(-pid, SIGKILL);
      kill_at = INT64_MAX; /* sent; nothing more to escalate to */
    }
    int64_t next = deadline;
    if (kill_at >= 0 && kill_at != INT64_MAX && (next < 0 || kill_at < next))
      next = kill_at;
    int timeout = -1;
    if (next >= 0)
      timeout = next - now > INT_MAX ? INT_MAX : (int)(next - now);

    struct pollfd pf[2] = {{s->wake->rd, POLLIN, 0}, {out_rd, POLLIN, 0}};
    int npf = out_open && buf != NULL ? 2 : 1;
    if (poll(pf, (nfds_t)npf, timeout) < 0 && errno != EINTR &&
        errno != EAGAIN) {
      if (s->setup_errno == 0) {
        s->setup_errno = errno;
        s->setup_what = "waiting for the command";
      }
      kill(-pid, SIGKILL);
      break;
    }
    if (pf[0].revents != 0)
      read_wake(s, pid);
    if (npf == 2 && pf[1].revents != 0 && pump(s, out_rd, buf, &k)) {
      out_open = 0;
    }
    if (!s->lease_lost && s->lease != NULL && idem_lease_lost(s->lease)) {
      /* Its result would be refused; stop it rather than let it work on
       * beside the new owner. */
      s->lease_lost = 1;
      stop_group(s, pid, &kill_at);
    }
  }

  /* Whatever the command's group still holds after a stop idem decided on
   * goes now, before the zombie is reaped and its number freed. */
  if (s->timed_out || s->lease_lost || s->setup_errno != 0)
    kill(-pid, SIGKILL);
  pid_t w;
  while ((w = waitpid(pid, &s->wstatus, 0)) < 0 && errno == EINTR)
    ;
  if (w != pid && s->setup_errno == 0) {
    /* Without its status the outcome is unknown: never take it for a
     * success. */
    s->setup_errno = errno != 0 ? errno : ECHILD;
    s->setup_what = "waiting for the command";
  }
  /* The command has ended, so what it wrote is in the pipe; take that
   * much and no more, in case something it started in the background
   * still holds the pipe open. */
  if (out_open && buf != NULL)
    pump(s, out_rd, buf, &k);
  free(buf);
  if (s->output_mode == CLI_OUTPUT_TAIL)
    unring(s, &k);
}

int cli_spawn_run(cli_spawn *s) {
  int out[2] = {-1, -1}, rep[2] = {-1, -1};
  char **paths = NULL, **sh_argv = NULL;
  struct sigstate st;
  int rc = -1;
  size_t argc = 0;

  s->out = NULL;
  s->out_len = 0;
  s->out_total = 0;
  s->overflow = s->started = s->timed_out = s->lease_lost = s->signal = 0;
  s->exec_errno = s->setup_errno = s->stdout_errno = s->wstatus = 0;
  s->setup_what = NULL;

  while (s->argv[argc] != NULL)
    argc++;
  paths = candidates(s->argv[0]);
  sh_argv = calloc(argc + 2, sizeof *sh_argv);
  if (paths == NULL || sh_argv == NULL) {
    s->setup_errno = ENOMEM;
    s->setup_what = "preparing the command";
    goto out;
  }
  sh_argv[0] = "/bin/sh";
  for (size_t i = 1; i < argc; i++)
    sh_argv[i + 1] = s->argv[i];

  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0 ||
      fcntl(out[0], F_SETFL, O_NONBLOCK) != 0) {
    s->setup_errno = errno;
    s->setup_what = "creating a pipe";
    goto out;
  }

  wake_fd = s->wake->wr;
  if (install_signals(&st) != 0) {
    s->setup_errno = errno;
    s->setup_what = "installing signal handlers";
    goto out;
  }

  /* No handler may run in the child before it has put the old ones back:
   * block everything across the fork. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &st.old_mask);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0)
    child_main(s, paths, sh_argv, out[1], rep[1], parent, &st);
  int fork_errno = errno;
  if (pid > 0)
    setpgid(pid, pid); /* also here: a signal may come before the child
                          has done it itself */
  /* The child got the mask idem was started with; idem itself must
   * receive what it handles even if its parent blocked those signals. */
  sigset_t mine = st.old_mask;
  sigdelset(&mine, SIGCHLD);
  for (size_t i = 0; i < NRELAYED; i++)
    if (st.old_relayed[i].sa_handler != SIG_IGN)
      sigdelset(&mine, relayed[i]);
  pthread_sigmask(SIG_SETMASK, &mine, NULL);
  if (pid < 0) {
    s->setup_errno = fork_errno;
    s->setup_what = "starting the command";
    goto out;
  }
  close(out[1]);
  close(rep[1]);
  out[1] = rep[1] = -1;

  struct report r;
  ssize_t n;
  while ((n = read(rep[0], &r, sizeof r)) < 0 && errno == EINTR)
    ;
  /* Anything but a whole report means the exec happened, or that idem
   * cannot tell: the loop then waits for the command either way. */
  if (n == (ssize_t)sizeof r) {
    while (waitpid(pid, &s->wstatus, 0) < 0 && errno == EINTR)
      ;
    if (r.stage == STAGE_EXEC) {
      s->exec_errno = r.err;
      rc = 0;
    } else {
      s->setup_errno = r.err != 0 ? r.err : ECHILD;
      s->setup_what = "starting the command";
    }
    goto out;
  }
  s->started = 1;
  loop(s, pid, out[0]);
  rc = s->setup_errno != 0 ? -1 : 0;

out:
  for (int i = 0; i < 2; i++) {
    if (out[i] >= 0)
      close(out[i]);
    if (rep[i] >= 0)
      close(rep[i]);
  }
  /* The handlers stay installed: a signal that comes while the result is
   * being recorded must not cut the recording short. */
  free_strv(paths);
  free(sh_argv);
  return rc;
}

void cli_spawn_free(cli_spawn *s) {
  free(s->out);
  s->out = NULL;
  s->out_len = 0;
}

void cli_spawn_reraise(int sig) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sigaction(sig, &sa, NULL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  raise(sig);
}
