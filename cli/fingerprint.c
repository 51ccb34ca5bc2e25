/* SPDX-License-Identifier: MIT */
/*
 * fingerprint.c - the default fingerprint of `idem run`: the command line.
 *
 * Recording what a key was first used for lets idem refuse the same key
 * for another command (exit 65) instead of replaying an unrelated result.
 * The arguments are joined with NUL bytes, which no argument can contain,
 * so that distinct command lines never join to the same bytes. A command
 * line longer than the library takes is replaced by a digest of it; no
 * cryptographic library is linked, so the digest is a 64-bit FNV-1a hash
 * plus the length, which catches mistakes but not a deliberate collision.
 * The format is in the manual and must not change, or every stored key
 * would start to mismatch.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#define FNV64_OFFSET 0xcbf29ce484222325ull
#define FNV64_PRIME 0x100000001b3ull

int cli_fingerprint(char *const *argv, unsigned char **out, size_t *len) {
  size_t total = 0;
  uint64_t h = FNV64_OFFSET;
  for (size_t i = 0; argv[i] != NULL; i++) {
    size_t n = strlen(argv[i]);
    if (i > 0) {
      total++;
      h *= FNV64_PRIME; /* the NUL separator: h ^ 0 is h */
    }
    for (size_t k = 0; k < n; k++) {
      h ^= (unsigned char)argv[i][k];
      h *= FNV64_PRIME;
    }
    if (total > SIZE_MAX - n)
      return -1;
    total += n;
  }

  if (total > IDEM_MAX_FINGERPRINT) {
    char buf[96];
    int w = snprintf(buf, sizeof buf, "idem-argv-fnv1a64:%zu:%016llx", total,
                     (unsigned long long)h);
    if (w < 0 || (size_t)w >= sizeof buf)
      return -1;
    *out = malloc((size_t)w);
    if (*out == NULL)
      return -1;
    memcpy(*out, buf, (size_t)w);
    *len = (size_t)w;
    return 0;
  }

  /* malloc(0) may return NULL; an empty command line is refused earlier,
   * but ask for at least one byte all the same. */
  unsigned char *p = malloc(total > 0 ? total : 1);
  if (p == NULL)
    return -1;
  size_t o = 0;
  for (size_t i = 0; argv[i] != NULL; i++) {
    size_t n = strlen(argv[i]);
    if (i > 0)
      p[o++] = '\0';
    memcpy(p + o, argv[i], n);
    o += n;
  }
  *out = p;
  *len = total;
  return 0;
}
