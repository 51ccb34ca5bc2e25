/* SPDX-License-Identifier: MIT */
/*
 * faultvfs.c - the "idemfault" VFS shim: injected faults and power loss.
 * See faultvfs.h.
 *
 * The synced image of a file is kept per path, not per open handle, since
 * SQLite opens the same file several times (the probe, the main and the
 * heartbeat connection) and they must all see one file. An image lives as
 * long as a handle has its file open; a file that no handle has open is
 * taken as durable when it is opened next (SQLite syncs before the last
 * handle closes).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "faultvfs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

/* --- Synced images ------------------------------------------------------- */

typedef struct pending {
  sqlite3_int64 off;
  int len; /* < 0: a truncation to off */
  unsigned char *data;
} pending;

typedef struct image {
  struct image *next;
  char *path;
  int refs;
  int frozen; /* the power went off with this file open; < 0: forgotten */
  int gone;   /* deleted */
  unsigned char *buf; /* content as of the last sync */
  size_t len, cap;
  pending *ops; /* writes and truncations since then, in order */
  size_t nops, capops;
} image;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static image *images;

static int grow(image *im, size_t len) {
  if (len <= im->cap)
    return 0;
  size_t cap = im->cap ? im->cap : 4096;
  while (cap < len)
    cap *= 2;
  unsigned char *b = realloc(im->buf, cap);
  if (!b)
    return -1;
  memset(b + im->cap, 0, cap - im->cap);
  im->buf = b;
  im->cap = cap;
  return 0;
}

/* Reads what is on disk as the image of a file no handle has open. */
static image *image_new(const char *path) {
  image *im = calloc(1, sizeof *im);
  if (!im || !(im->path = strdup(path))) {
    free(im);
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (f) {
    unsigned char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
      if (grow(im, im->len + n) != 0)
        break;
      memcpy(im->buf + im->len, chunk, n);
      im->len += n;
    }
    fclose(f);
  }
  return im;
}

static void image_free(image *im) {
  for (size_t i = 0; i < im->nops; i++)
    free(im->ops[i].data);
  free(im->ops);
  free(im->buf);
  free(im->path);
  free(im);
}

static void unlink_image(image *im) {
  for (image **p = &images; *p; p = &(*p)->next)
    if (*p == im) {
      *p = im->next;
      return;
    }
}

static image *image_ref(const char *path) {
  pthread_mutex_lock(&mu);
  image *im = images;
  while (im && (im->frozen || strcmp(im->path, path) != 0))
    im = im->next;
  if (!im && (im = image_new(path)) != NULL) {
    im->next = images;
    images = im;
  }
  if (im) {
    im->refs++;
    im->gone = 0; /* created again: still empty */
  }
  pthread_mutex_unlock(&mu);
  return im;
}

/* A frozen image stays until fv_forget(), for fv_save(). */
static void image_unref(image *im) {
  pthread_mutex_lock(&mu);
  if (--im->refs == 0 && !im->frozen) {
    unlink_image(im);
    image_free(im);
  } else if (im->refs == 0 && im->frozen < 0) {
    image_free(im); /* forgotten while open: already unlinked */
  }
  pthread_mutex_unlock(&mu);
}

/* Under mu. */
static int record(image *im, sqlite3_int64 off, int len, const void *data) {
  if (im->nops == im->capops) {
    size_t cap = im->capops ? im->capops * 2 : 16;
    pending *ops = realloc(im->ops, cap * sizeof *ops);
    if (!ops)
      return -1;
    im->ops = ops;
    im->capops = cap;
  }
  pending *p = &im->ops[im->nops];
  p->off = off;
  p->len = len;
  p->data = NULL;
  if (len > 0) {
    if (!(p->data = malloc((size_t)len)))
      return -1;
    memcpy(p->data, data, (size_t)len);
  }
  im->nops++;
  return 0;
}

/* The sync: what was written since the last one becomes durable. Short
 * of memory, what was not applied stays pending for the next sync. */
static int apply(image *im) {
  size_t i;
  int rc = 0;
  for (i = 0; i < im->nops && rc == 0; i++) {
    pending *p = &im->ops[i];
    size_t off = (size_t)p->off;
    size_t end = p->len < 0 ? off : off + (size_t)p->len;
    if (grow(im, end) != 0) {
      rc = -1;
      break;
    }
    if (p->len < 0) {
      if (off < im->len)
        memset(im->buf + off, 0, im->len - off);
      im->len = off;
    } else {
      if (p->len > 0)
        memcpy(im->buf + off, p->data, (size_t)p->len);
      if (end > im->len)
        im->len = end;
    }
    free(p->data);
  }
  if (im->nops > i) /* ops may be NULL when there are none */
    memmove(im->ops, im->ops + i, (im->nops - i) * sizeof *im->ops);
  im->nops -= i;
  return rc;
}

/* --- Faults ----------------------------------------------------------------
 */

static atomic_int countdown = -1; /* writes/syncs left before failing */
static atomic_int fired;          /* the armed fault fired */
static atomic_int fault_rc = SQLITE_IOERR_WRITE;
static atomic_int fault_mode = FV_STICKY;
static atomic_long ops;

void fv_arm(int n, int rc, int mode) {
  atomic_store(&fault_rc, rc);
  atomic_store(&fault_mode, mode);
  atomic_store(&fired, 0);
  atomic_store(&countdown, n);
}

void fv_disarm(void) {
  atomic_store(&countdown, -1);
}

int fv_fired(void) {
  return atomic_load(&fired);
}

long fv_ops(void) {
  return atomic_load(&ops);
}

void fv_power_off(void) {
  pthread_mutex_lock(&mu);
  for (image *im = images; im; im = im->next)
    if (!im->frozen)
      im->frozen = 1;
  pthread_mutex_unlock(&mu);
}

/* Whether this write or sync is failed by the armed fault. */
static int should_fail(void) {
  atomic_fetch_add(&ops, 1);
  int n = atomic_load(&countdown);
  if (n < 0)
    return 0;
  if (n > 0) {
    atomic_store(&countdown, n - 1);
    return 0;
  }
  atomic_store(&fired, 1);
  int mode = atomic_load(&fault_mode);
  if (mode == FV_ONCE) {
    atomic_store(&countdown, -1);
  } else if (mode == FV_CUT) {
    atomic_store(&countdown, -1);
    fv_power_off();
  }
  return 1;
}

/* --- The shim's files ------------------------------------------------------
 */

static sqlite3_vfs *base_vfs;
static sqlite3_vfs fault_vfs;

typedef struct fault_file {
  sqlite3_file base;
  image *im;          /* NULL for files without a name */
  sqlite3_file *real; /* allocated right after this struct */
} fault_file;

#define FF(f) ((fault_file *)(f))
#define REAL(f) (FF(f)->real)

static int frozen(sqlite3_file *f) {
  image *im = FF(f)->im;
  if (!im)
    return 0;
  pthread_mutex_lock(&mu);
  int z = im->frozen != 0;
  pthread_mutex_unlock(&mu);
  return z;
}

static int f_close(sqlite3_file *f) {
  int rc = REAL(f)->pMethods->xClose(REAL(f));
  if (FF(f)->im)
    image_unref(FF(f)->im);
  return rc;
}
static int f_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int f_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
  if (frozen(f))
    return SQLITE_IOERR_WRITE;
  if (should_fail())
    return frozen(f) ? SQLITE_IOERR_WRITE : atomic_load(&fault_rc);
  image *im = FF(f)->im;
  if (im) {
    pthread_mutex_lock(&mu);
    int bad = record(im, off, n, buf);
    pthread_mutex_unlock(&mu);
    if (bad)
      return SQLITE_IOERR_NOMEM;
  }
  return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size) {
  if (frozen(f))
    return SQLITE_IOERR_TRUNCATE;
  image *im = FF(f)->im;
  if (im) {
    pthread_mutex_lock(&mu);
    int bad = record(im, size, -1, NULL);
    pthread_mutex_unlock(&mu);
    if (bad)
      return SQLITE_IOERR_NOMEM;
  }
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags) {
  (void)flags;
  if (frozen(f))
    return SQLITE_IOERR_FSYNC;
  if (should_fail()) {
    if (frozen(f))
      return SQLITE_IOERR_FSYNC;
    return atomic_load(&fault_rc) == SQLITE_FULL ? SQLITE_FULL
                                                 : SQLITE_IOERR_FSYNC;
  }
  image *im = FF(f)->im;
  int bad = 0;
  if (im) {
    pthread_mutex_lock(&mu);
    bad = apply(im);
    pthread_mutex_unlock(&mu);
  }
  return bad ? SQLITE_IOERR_NOMEM : SQLITE_OK;
}
static int f_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int level) {
  return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int f_unlock(sqlite3_file *f, int level) {
  return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int f_check_reserved(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_file_control(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector_size(sqlite3_file *f) {
  return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_device_chars(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int pgsz, int extend,
                     void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, pp);
}
static int f_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void f_shm_barrier(sqlite3_file *f) {
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
/* No memory-mapped reads: a page must come through xRead. */
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp) {
  (void)f;
  (void)off;
  (void)amt;
  *pp = NULL;
  return SQLITE_OK;
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  (void)f;
  (void)off;
  (void)p;
  return SQLITE_OK;
}

static const sqlite3_io_methods fault_methods = {
    3,
    f_close,
    f_read,
    f_write,
    f_truncate,
    f_sync,
    f_file_size,
    f_lock,
    f_unlock,
    f_check_reserved,
    f_file_control,
    f_sector_size,
    f_device_chars,
    f_shm_map,
    f_shm_lock,
    f_shm_barrier,
    f_shm_unmap,
    f_fetch,
    f_unfetch,
};

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file,
                  int flags, int *out_flags) {
  (void)vfs;
  fault_file *ff = (fault_file *)file;
  ff->real = (sqlite3_file *)&ff[1];
  ff->im = NULL;
  int rc = base_vfs->xOpen(base_vfs, name, ff->real, flags, out_flags);
  /* Only a file the real VFS opened gets methods (and so an xClose). */
  file->pMethods = ff->real->pMethods != NULL ? &fault_methods : NULL;
  if (rc == SQLITE_OK && name != NULL && !(flags & SQLITE_OPEN_DELETEONCLOSE)) {
    ff->im = image_ref(name);
    if (!ff->im) {
      ff->real->pMethods->xClose(ff->real);
      file->pMethods = NULL;
      return SQLITE_NOMEM;
    }
  }
  return rc;
}

static int f_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
  (void)vfs;
  /* A deletion is taken as durable at once; on a frozen file it fails. */
  int stop = 0;
  pthread_mutex_lock(&mu);
  for (image *im = images; im; im = im->next)
    if (strcmp(im->path, name) == 0) {
      if (im->frozen) {
        stop = 1;
      } else {
        for (size_t i = 0; i < im->nops; i++)
          free(im->ops[i].data);
        im->nops = 0;
        im->len = 0;
        im->gone = 1;
      }
    }
  pthread_mutex_unlock(&mu);
  if (stop)
    return SQLITE_IOERR_DELETE;
  return base_vfs->xDelete(base_vfs, name, sync_dir);
}
static int f_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  (void)vfs;
  return base_vfs->xAccess(base_vfs, name, flags, out);
}
static int f_full_pathname(sqlite3_vfs *vfs, const char *name, int n,
                           char *out) {
  (void)vfs;
  return base_vfs->xFullPathname(base_vfs, name, n, out);
}
static int f_randomness(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return base_vfs->xRandomness(base_vfs, n, out);
}
static int f_sleep(sqlite3_vfs *vfs, int us) {
  (void)vfs;
  return base_vfs->xSleep(base_vfs, us);
}
static int f_current_time(sqlite3_vfs *vfs, double *out) {
  (void)vfs;
  return base_vfs->xCurrentTime(base_vfs, out);
}
static int f_last_error(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  return base_vfs->xGetLastError(base_vfs, n, out);
}
static int f_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
  (void)vfs;
  return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

int fv_register(void) {
  if (sqlite3_vfs_find("idemfault") != NULL)
    return 0;
  base_vfs = sqlite3_vfs_find(NULL);
  if (base_vfs == NULL)
    return -1;
  memset(&fault_vfs, 0, sizeof fault_vfs);
  fault_vfs.iVersion = 2;
  fault_vfs.szOsFile = (int)sizeof(fault_file) + base_vfs->szOsFile;
  fault_vfs.mxPathname = base_vfs->mxPathname;
  fault_vfs.zName = "idemfault";
  fault_vfs.xOpen = f_open;
  fault_vfs.xDelete = f_delete;
  fault_vfs.xAccess = f_access;
  fault_vfs.xFullPathname = f_full_pathname;
  fault_vfs.xRandomness = f_randomness;
  fault_vfs.xSleep = f_sleep;
  fault_vfs.xCurrentTime = f_current_time;
  fault_vfs.xGetLastError = f_last_error;
  fault_vfs.xCurrentTimeInt64 = f_current_time64;
  return sqlite3_vfs_register(&fault_vfs, 0) == SQLITE_OK ? 0 : -1;
}

char *fv_uri(const char *path) {
  size_t n = strlen(path) + 32;
  char *uri = malloc(n);
  if (uri)
    snprintf(uri, n, "file:%s?vfs=idemfault", path);
  return uri;
}

/* --- Saving what survived ------------------------------------------------ */

static int copy_real(const char *from, FILE *to) {
  FILE *f = fopen(from, "rb");
  if (!f)
    return 0; /* deleted before the power went off: nothing to copy */
  unsigned char chunk[65536];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (fwrite(chunk, 1, n, to) != n)
      rc = -1;
  fclose(f);
  return rc;
}

int fv_save(const char *dir, int what) {
  int count = 0;
  pthread_mutex_lock(&mu);
  for (image *im = images; im && count >= 0; im = im->next) {
    if (im->frozen <= 0 || im->gone)
      continue;
    const char *base = strrchr(im->path, '/');
    base = base ? base + 1 : im->path;
    size_t n = strlen(dir) + strlen(base) + 2;
    char *dst = malloc(n);
    if (!dst) {
      count = -1;
      break;
    }
    snprintf(dst, n, "%s/%s", dir, base);
    FILE *out = fopen(dst, "wb");
    free(dst);
    if (!out) {
      count = -1;
      break;
    }
    int rc = what == FV_WRITTEN ? copy_real(im->path, out)
             : im->len && fwrite(im->buf, 1, im->len, out) != im->len ? -1
                                                                      : 0;
    if (fclose(out) != 0 || rc != 0)
      count = -1;
    else
      count++;
  }
  pthread_mutex_unlock(&mu);
  return count;
}

void fv_forget(void) {
  pthread_mutex_lock(&mu);
  image **p = &images;
  while (*p) {
    image *im = *p;
    if (im->frozen > 0) {
      *p = im->next;
      if (im->refs == 0)
        image_free(im);
      else
        im->frozen = -1; /* freed by its last close */
    } else {
      p = &im->next;
    }
  }
  pthread_mutex_unlock(&mu);
}
