# Shared by the command-line tests (tests/cli_*.sh): sourced as
#   . "$(dirname "$0")/support/cli_lib.sh" "$@"
# with the mtl binary and the source directory as arguments. Gives $mtl, $src, a scratch directory
# $work removed on exit, Debian's Python as $py, pass/fail counting and the closing line that
# ctest's log shows.
set -u
mtl=$1
src=${2:-.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=/usr/bin/python3
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAILED: $*" >&2; }
expect_rc() { # expected_rc description command...: output lands in $work/out and $work/err
  local want=$1 what=$2; shift 2
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "$what: exit $rc, expected $want"; cat "$work/out" "$work/err" >&2; fi
}
expect_grep() { # pattern file description
  if grep -q -- "$1" "$2"; then ok; else bad "$3: '$1' not in $2"; head -20 "$2" >&2; fi
}
expect_py() { # description python-code args...: the code exits non-zero (or raises) on failure
  local what=$1 code=$2; shift 2
  if $py -c "$code" "$@" >"$work/py" 2>&1; then ok; else bad "$what"; cat "$work/py" >&2; fi
}
cli_finish() { # prints the counts; the exit status fails the test when anything failed
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
