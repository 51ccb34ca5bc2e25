/* SPDX-License-Identifier: MIT */
/*
 * json.c - JSON strings for arbitrary bytes.
 *
 * Keys and outputs are bytes, JSON strings are Unicode: valid UTF-8 is
 * written as an escaped string, anything else as base64 under a name with
 * a "_base64" suffix, so that every document stays valid JSON and no byte
 * is lost or guessed at.
 */
#include "cli.h"

int cli_utf8_valid(const void *p, size_t n) {
  const unsigned char *s = p;
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    unsigned cp;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1fu;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0fu;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07u;
      min = 0x10000;
    } else {
      return 0; /* continuation byte first, or 0xc0, 0xc1, 0xf5.. */
    }
    if (n - i < len)
      return 0;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i + k] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

void cli_json_string(FILE *f, const void *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = p;
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = s[i];
    switch (c) {
    case '"':
      fputs("\\\"", f);
      break;
    case '\\':
      fputs("\\\\", f);
      break;
    case '\b':
      fputs("\\b", f);
      break;
    case '\f':
      fputs("\\f", f);
      break;
    case '\n':
      fputs("\\n", f);
      break;
    case '\r':
      fputs("\\r", f);
      break;
    case '\t':
      fputs("\\t", f);
      break;
    default:
      if (c < 0x20) {
        fputs("\\u00", f);
        fputc(hex[c >> 4], f);
        fputc(hex[c & 15], f);
      } else {
        fputc(c, f);
      }
    }
  }
  fputc('"', f);
}

static void base64(FILE *f, const unsigned char *s, size_t n) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  fputc('"', f);
  size_t i = 0;
  for (; n - i >= 3; i += 3) {
    unsigned long v =
        (unsigned long)s[i] << 16 | (unsigned long)s[i + 1] << 8 | s[i + 2];
    fputc(tab[v >> 18 & 63], f);
    fputc(tab[v >> 12 & 63], f);
    fputc(tab[v >> 6 & 63], f);
    fputc(tab[v & 63], f);
  }
  if (n - i == 1) {
    unsigned long v = (unsigned long)s[i] << 16;
    fputc(tab[v >> 18 & 63], f);
    fputc(tab[v >> 12 & 63], f);
    fputs("==", f);
  } else if (n - i == 2) {
    unsigned long v = (unsigned long)s[i] << 16 | (unsigned long)s[i + 1] << 8;
    fputc(tab[v >> 18 & 63], f);
    fputc(tab[v >> 12 & 63], f);
    fputc(tab[v >> 6 & 63], f);
    fputc('=', f);
  }
  fputc('"', f);
}

void cli_json_bytes(FILE *f, const char *name, const void *p, size_t n) {
  if (cli_utf8_valid(p, n)) {
    fprintf(f, "\"%s\":", name);
    cli_json_string(f, p, n);
  } else {
    fprintf(f, "\"%s_base64\":", name);
    base64(f, p, n);
  }
}
