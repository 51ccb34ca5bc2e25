#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the command line of idem-job@.service as systemd would, for an
# instance "backup", against a temporary database: a job that fails is
# tried again, a fixed command then runs, and later starts the same day
# replay it without running it again. Run by CTest (pkg_systemd_example).
# Usage: sh test-job.sh IDEM SERVICE
#
# The command is taken from the unit itself, with systemd's escapes undone
# (%% and $$; %i is the instance), so that a mistake in it fails here.
# Stand-ins replace the job (it prints "report", appends a line per run to a
# file, and fails when given "fail") and date (a fixed day, given only for
# +%F, which also proves that the % escape was written right).
set -u
idem=$1 unit=$2

d=$(mktemp -d "${TMPDIR:-/tmp}/idem-example.XXXXXX") || exit 1
trap 'rm -rf "$d"' EXIT
fail() {
  echo "FAILED: $*" >&2
  exit 1
}

mkdir "$d/bin" || exit 1
printf '#!/bin/sh\necho report\necho ran >>"%s/runs"\n[ "${1-}" != fail ]\n' "$d" \
  >"$d/bin/job"
printf '#!/bin/sh\n[ "$*" = +%%F ] && echo 2030-01-02\n' >"$d/bin/date"
chmod +x "$d/bin/job" "$d/bin/date" || exit 1
PATH="$d/bin:$(dirname "$idem"):$PATH"
export PATH
[ "$(command -v idem)" = "$idem" ] || fail "the built idem is not first on PATH"

line=$(sed -n 's/^ExecStart=//p' "$unit")
[ -n "$line" ] || fail "no ExecStart= in $unit"
[ "$(printf '%s\n' "$line" | wc -l)" -eq 1 ] || fail "more than one ExecStart="
# Every % and $ must be escaped or a specifier systemd knows to expand here.
rest=$(printf '%s\n' "$line" | sed -e 's/%%//g' -e 's/%i//g' -e 's/\$\$//g')
case $rest in
*%* | *'$'*) fail "an unescaped % or \$ in: $line" ;;
esac
cmd=$(printf '%s\n' "$line" |
  sed -e 's/%%/@PERCENT@/g' -e 's/%i/backup/g' -e 's/@PERCENT@/%/g' -e 's/\$\$/$/g')
echo "ExecStart: $cmd"

grep -qx 'Environment=IDEM_DB=/var/lib/idem/idem.db IDEM_JOB= IDEM_RUN_OPTIONS=' \
  "$unit" || fail "not the expected Environment= line"
grep -qx 'SuccessExitStatus=75' "$unit" || fail "a busy key would fail the unit"
IDEM_DB=$d/idem.db
export IDEM_DB

cd "$d" || exit 1
start() { # IDEM_JOB: the unit started once; prints its exit status
  IDEM_JOB=$1 IDEM_RUN_OPTIONS='-a 10 -q' sh -c "$cmd" >"$d/out" 2>"$d/err"
  echo $?
}
runs() { if [ -f runs ]; then wc -l <runs; else echo 0; fi; }

[ "$(start '')" -ne 0 ] || fail "started without a job"
grep -q 'systemctl edit idem-job@backup.service' err ||
  fail "no hint for an empty IDEM_JOB: $(cat err)"
[ ! -e idem.db ] || fail "a start without a job made the database"

st=$(start "$d/bin/job fail")
[ "$st" -eq 1 ] || fail "the failing job exited $st, not 1"
st=$(start "$d/bin/job")
[ "$st" -eq 0 ] || fail "the fixed job exited $st: $(cat err)"
[ "$(runs)" -eq 2 ] || fail "the job ran $(runs) times, not twice"
st=$(start "$d/bin/job")
[ "$st" -eq 0 ] || fail "the replay exited $st: $(cat err)"
[ "$(cat out)" = report ] || fail "replayed: $(cat out)"
[ "$(runs)" -eq 2 ] || fail "a start after the success ran the job again"
out=$(idem get --output backup-2030-01-02) || fail "no key backup-2030-01-02"
[ "$out" = report ] || fail "recorded output: $out"
echo "failed, ran again, then replayed"
