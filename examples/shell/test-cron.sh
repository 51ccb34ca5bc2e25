#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the job line of a crontab as cron would, twice, against a temporary
# database: the first run must make the report, the second must replay it
# without running make-report again. Run by CTest (example_shell_cron).
# Usage: sh test-cron.sh IDEM CRONTAB
#
# The command is taken from the file itself, so that a mistake in it fails
# here. Stand-ins replace make-report (it prints "report" and appends a line
# per run to a file) and date (a fixed day, given only for +%F, which also
# proves that cron's \% escape was written right).
set -u
idem=$1 crontab=$2

d=$(mktemp -d "${TMPDIR:-/tmp}/idem-example.XXXXXX") || exit 1
trap 'rm -rf "$d"' EXIT
fail() {
  echo "FAILED: $*" >&2
  exit 1
}

mkdir "$d/bin" || exit 1
printf '#!/bin/sh\necho report\necho ran >>"%s/runs"\n' "$d" \
  >"$d/bin/make-report"
printf '#!/bin/sh\n[ "$*" = +%%F ] && echo 2030-01-02\n' >"$d/bin/date"
chmod +x "$d/bin/make-report" "$d/bin/date" || exit 1
PATH="$d/bin:$(dirname "$idem"):$PATH"
export PATH
[ "$(command -v idem)" = "$idem" ] || fail "the built idem is not first on PATH"

# The one line that is neither a comment, a blank nor a variable, without
# its five time fields.
line=$(grep -v -e '^#' -e '^[A-Za-z_]*=' -e '^[[:space:]]*$' "$crontab")
[ -n "$line" ] || fail "no job line in $crontab"
[ "$(printf '%s\n' "$line" | wc -l)" -eq 1 ] || fail "more than one job line"
cmd=$(printf '%s\n' "$line" | sed 's/^\([^[:space:]]*[[:space:]]*\)\{5\}//')

# cron ends the command at an unescaped % and turns \% into %.
case $(printf '%s\n' "$cmd" | sed 's/[\]%//g') in
*%*) fail "an unescaped % in: $cmd" ;;
esac
cmd=$(printf '%s\n' "$cmd" | sed 's/[\]%/%/g')
echo "crontab command: $cmd"

case $cmd in
*' -d /var/lib/idem/jobs.db '*' /usr/local/bin/make-report'*) ;;
*) fail "not the expected database and command" ;;
esac
cmd=$(printf '%s\n' "$cmd" | sed -e "s|/var/lib/idem/jobs.db|$d/jobs.db|" \
  -e "s|/usr/local/bin/make-report|$d/bin/make-report|")

cd "$d" || exit 1
sh -c "$cmd" || fail "the first run exited $?"
sh -c "$cmd" || fail "the second run exited $?"
n=0
[ -f runs ] && n=$(wc -l <runs)
[ "$n" -eq 1 ] || fail "make-report ran $n times, not once"
out=$(idem get -d jobs.db --output report-2030-01-02) ||
  fail "no key report-2030-01-02"
[ "$out" = report ] || fail "recorded output: $out"
echo "ran once, replayed once"
