#!/bin/sh
# SPDX-License-Identifier: MIT
# Prints the public functions of idem.h, one a line, sorted: every name
# declared with IDEM_EXPORT, comments left out (they mention functions too).
# The header is the only list of the API, so the checks derive theirs from
# it and need no update when a function is added.
# Usage: sh api-functions.sh IDEM_H
set -eu
header=${1:?usage: api-functions.sh IDEM_H}
perl -0777 -ne '
  s{/\*.*?\*/}{}gs;                 # drop comments
  print "$1\n" while /\bIDEM_EXPORT\b[^;{]*?\b(idem_\w+)\s*\(/g;
' "$header" | LC_ALL=C sort -u
