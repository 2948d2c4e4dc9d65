#!/bin/sh
# tests/run.sh BUILD_DIR — run every unit test binary in BUILD_DIR/tests/,
# the integration suite on each store backend (TEST_BACKENDS, default
# "sqlite pg": SQLite, then PostgreSQL on a cluster the harness starts),
# then every libFuzzer target for FUZZ_SECONDS each
# (default 20; tests/fuzz/run.sh, ASan + UBSan, seeds first), and end with
# one line "N passed, M failed" (each fuzz target counts as one test).
# Exits non-zero on any failure; a binary that exits non-zero without
# reporting a failure (crash, sanitizer abort, leak at exit) counts as one
# failed test.
set -u

BUILD=${1:?usage: sh tests/run.sh BUILD_DIR}
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS UBSAN_OPTIONS

passed=0
failed=0
out=$(mktemp) || exit 2
rcfile=$(mktemp) || exit 2
trap 'rm -f "$out" "$rcfile"' EXIT
trap 'exit 130' INT TERM

# run LABEL CMD...: run a suite, echo its output, add its summary to the totals.
run() {
	label=$1
	shift
	{
		"$@" 2>&1
		echo $? >"$rcfile"
	} | tee "$out"
	rc=$(cat "$rcfile")
	summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
	if [ -n "$summary" ]; then
		p=${summary%% passed*}
		f=${summary#*passed, }
		f=${f%% failed}
	else
		p=0
		f=0
	fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "FAIL $label (exit code $rc without a reported failure)"
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
}

for t in "$BUILD"/tests/*; do
	if [ ! -f "$t" ] || [ ! -x "$t" ]; then continue; fi
	echo "== $t"
	run "$t" "$t"
done

for backend in ${TEST_BACKENDS:-sqlite pg}; do
	echo "== integration ($backend)"
	run "integration ($backend)" "$PY" tests/integration/run.py --build "$BUILD" --backend "$backend"
done

echo "== fuzz"
run fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" sh tests/fuzz/run.sh

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
