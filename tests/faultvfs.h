/* SPDX-License-Identifier: MIT */
/*
 * faultvfs.h - an SQLite VFS shim ("idemfault") that breaks storage on
 * purpose, shared by the fault and power-loss suites.
 *
 * A database opened through the URI fv_uri() returns is read and written
 * by SQLite's default VFS underneath, with two kinds of trouble on top:
 *
 * Faults: once armed, the Nth write or sync (counted over every file of
 * the shim) fails with a chosen code, either that one only (a transient
 * error) or with every write and sync after it (a disk that filled up or
 * went bad), until disarmed.
 *
 * Power loss: for each file the shim keeps its content as of the last
 * xSync (the "synced image"): writes and truncations reach the real file
 * at once, so SQLite reads what it wrote, and are replayed onto the image
 * only when the file is synced. Cutting the power (now, or at the Nth
 * write or sync) freezes every file open at that moment: from then on
 * their writes, syncs, truncations and deletions fail, as on a machine
 * that is off. fv_save() then writes either the synced images (what a
 * power loss leaves) or the real files (what a crash of the process
 * leaves) into another directory, where the database is opened afresh.
 *
 * Real fsyncs are skipped: durability is what the images model, and
 * skipping them keeps the sweeps fast on any disk.
 */
#ifndef IDEM_FAULTVFS_H
#define IDEM_FAULTVFS_H

/* Registers the shim (once; later calls do nothing). 0 on success. */
int fv_register(void);

/* "file:<path>?vfs=idemfault", malloc'd. */
char *fv_uri(const char *path);

#define FV_STICKY 0 /* the Nth write or sync fails, and all after it */
#define FV_ONCE 1   /* only the Nth fails */
#define FV_CUT 2    /* the power goes off at the Nth (see fv_power_off) */

/* Arms a fault at the Nth write or sync from now (0 = the next one). `rc`
 * is the code of a failed write (SQLITE_IOERR_WRITE or SQLITE_FULL); a
 * failed sync reports SQLITE_FULL for SQLITE_FULL, else
 * SQLITE_IOERR_FSYNC. */
void fv_arm(int n, int rc, int mode);
void fv_disarm(void);
/* Whether the armed fault fired since fv_arm(). */
int fv_fired(void);
/* Writes and syncs seen since fv_register(). */
long fv_ops(void);

/* Cuts the power now: every file the shim has open is frozen. */
void fv_power_off(void);

#define FV_SYNCED 0  /* the content as of each file's last sync */
#define FV_WRITTEN 1 /* everything written, synced or not */

/* Writes the frozen files, under their own names, into `dir`. Returns the
 * number of files written, or -1 on an error. */
int fv_save(const char *dir, int what);
/* Forgets the frozen files (after the handles on them are closed or set
 * aside), so that later saves hold only what is cut next. */
void fv_forget(void);

#endif
