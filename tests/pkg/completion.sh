#!/bin/bash
# SPDX-License-Identifier: MIT
# The bash completion of idem, as installed: installs the built tree into a
# temporary prefix, sources the file in a bare bash (no bash-completion
# package), and completes command lines by setting COMP_WORDS and
# COMP_CWORD and calling the function it registered for idem, as bash does
# on <TAB>. Besides a few fixed cases, every subcommand of cli/main.c and
# every option in the getopt tables of the command's sources (cli/*.c) must
# be offered: those of cli/run.c by `idem run -<TAB>`, the others by one of
# the other subcommands, so that one added to the command and not to the
# completion fails.
# Usage: bash completion.sh CMAKE BUILD_DIR SOURCE_DIR
set -u
cmake=${1:?usage: completion.sh CMAKE BUILD_DIR SOURCE_DIR}
build=${2:?} src=${3:?}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/idem-pkg.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
rc=0
bad() { echo "FAIL: $*" >&2; rc=1; }

"$cmake" --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" ||
  { cat "$tmp/install.log" >&2; fail "cmake --install"; }
file=$(find "$tmp/prefix" -path '*/bash-completion/completions/idem')
[ -n "$file" ] || fail "no bash-completion/completions/idem installed"
echo "completion in ${file#"$tmp/prefix"/}"

# shellcheck source=/dev/null
. "$file" || fail "sourcing $file"
spec=$(complete -p idem 2>/dev/null) || fail "$file registers no completion for idem"
func=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
[ -n "$func" ] || fail "not a completion function: $spec"

# Completes the words given, the last one being the one under the cursor;
# prints the candidates, one a line, sorted.
comp() {
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  "$func" idem "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>/dev/null
  ((${#COMPREPLY[@]})) && printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort -u
}
# expect WANT WORDS...: the candidates are exactly WANT (words, any order).
expect() {
  local want got
  want=$(tr ' ' '\n' <<<"$1" | grep . | LC_ALL=C sort -u)
  shift
  got=$(comp "$@")
  [ "$got" = "$want" ] ||
    bad "'$*<TAB>' offers [${got//$'\n'/ }], not [${want//$'\n'/ }]"
}
# offers WORD... -- WORDS...: the candidates include each WORD.
offers() {
  local words=() got w
  while [ "$1" != -- ]; do words+=("$1"); shift; done
  shift
  got=$(comp "$@")
  for w in "${words[@]}"; do
    grep -qxF -- "$w" <<<"$got" || bad "'$*<TAB>' does not offer $w"
  done
}

subs='run get list reset gc stats'
expect "$subs" idem ''
expect 'run reset' idem r
expect '--help --version' idem --

run_long='--db --ttl --max-attempts --wait --conflict-exit-code --fingerprint
  --no-fingerprint --name --cache-failure --output --max-output --timeout
  --signal --kill-after --retention --quiet --verbose
  --help --version'
expect "$run_long" idem run --
expect '--max-attempts --max-output' idem run --max
offers -d -t -a -w -E -f -n -q -v -h -V -- idem run -
expect '--db --json --output --help --version' idem get --
expect '--db --state --limit --prefix --json --json-lines --long --help --version' \
  idem list --
expect '--db --all-poisoned --help --version' idem reset --
expect '--db --older-than --max-rows --max-bytes --help --version' idem gc --
expect '--db --json --format --help --version' idem stats --
for s in $subs; do offers --help -- idem "$s" --; done

# Values: the fixed sets, and files after -d / --db.
expect 'pending completed failed poisoned' idem list --state ''
expect 'prometheus json text' idem stats --format = ''
expect 'prometheus' idem stats --format=p
expect 'store discard tail' idem run --output ''
expect 'tail' idem run --output = t
expect '' idem run --ttl ''
expect '' idem gc --older-than ''
mkdir "$tmp/dir" && : >"$tmp/dir/jobs.db" && : >"$tmp/dir/other.txt"
expect "$tmp/dir/jobs.db" idem run -d "$tmp/dir/j"
expect "$tmp/dir/jobs.db" idem gc --db "$tmp/dir/j"
expect "$tmp/dir/jobs.db" idem stats --db = "$tmp/dir/j"

# idem run: options stop at KEY, after which comes the job's command line.
expect '' idem run -w 30 ''
expect '' idem run --wait = 30 ''
offers echo -- idem run -w 30 -n nightly nightly -- ech
offers echo -- idem run --output = tail nightly ech
offers "$tmp/dir/jobs.db" -- idem run nightly -- ls "$tmp/dir/j"
expect '' idem run nightly -- ls --
expect '' idem run -- ''

# Every option in the command's getopt tables: long ones ({"name", ...})
# and short ones (the optstring of getopt_long).
options() { # files...: -x and --name, one a line
  perl -0777 -ne '
    s{/\*.*?\*/}{}gs;
    print "--$1\n" while /\{\s*"([a-z0-9-]+)"\s*,\s*(?:no|required|optional)_argument/g;
    while (/getopt_long\s*\([^"]*"([^"]*)"/g) {
      my $s = $1; $s =~ s/[^A-Za-z0-9]//g; print "-$_\n" for split //, $s;
    }' "$@" | LC_ALL=C sort -u
}
run_src=$src/cli/run.c
other_src=()
for f in "$src"/cli/*.c; do [ "$f" = "$run_src" ] || other_src+=("$f"); done
[ -n "$(options "$run_src")" ] || fail "no option found in $run_src"
[ -n "$(options "${other_src[@]}")" ] || fail "no option found in cli/*.c"
run_offers=$(comp idem run -; comp idem run --)
for o in $(options "$run_src"); do
  grep -qxF -- "$o" <<<"$run_offers" || bad "idem run: $o (cli/run.c) is not offered"
done
admin_offers=$(for s in get list reset gc stats; do comp idem "$s" -; comp idem "$s" --; done)
for o in $(options "${other_src[@]}"); do
  grep -qxF -- "$o" <<<"$admin_offers" ||
    bad "$o (cli/*.c) is not offered by any of get, list, reset, gc, stats"
done

# Every subcommand of main.c's table.
subs_src=$(grep -o '{"[a-z-]*", *cli_cmd_' "$src/cli/main.c" | sed 's/{"\([^"]*\)".*/\1/')
[ -n "$subs_src" ] || fail "no subcommand found in cli/main.c"
sub_offers=$(comp idem '')
for s in $subs_src; do
  grep -qxF -- "$s" <<<"$sub_offers" || bad "idem: the subcommand $s (cli/main.c) is not offered"
done

[ "$rc" -eq 0 ] && echo "ok: subcommands, options and values complete"
exit "$rc"
