#!/bin/sh
# tests/fuzz/run.sh — build every tests/fuzz/fuzz_*.c as a libFuzzer target
# (ASan + UBSan) and run each for FUZZ_SECONDS (default 60).
#
# Library sources come from `make -s print-LIB_SRC`; they are compiled once
# into a temporary object set with -fsanitize=fuzzer-no-link. Each target
# keeps its corpus in build/fuzz/corpus-NAME, seeded from
# tests/fuzz/seeds/NAME/ when that exists; crash artifacts land in
# build/fuzz/NAME-crash-*. Exits non-zero if a target fails to build or
# finds a crash (the seeds are run first, so a seed that crashes fails at
# once). Ends with "N passed, M failed", one per target, which tests/run.sh
# adds to `make test`'s total. FUZZ_TARGETS="fuzz_a fuzz_b" runs only those.
# A crashing input found here must not go into tests/fuzz/seeds/ until the
# bug is fixed: the seeds are what every CI run starts from.
set -u

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
OUT=build/fuzz
APT="apt-get install -y clang libclang-rt-14-dev libfuzzer-14-dev"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-g -O1 -fno-omit-frame-pointer -std=c11 -D_GNU_SOURCE -I."

cd "$(dirname "$0")/../.." || exit 2

if command -v clang >/dev/null 2>&1; then CC=clang; else CC=clang-14; fi

# libfuzzer_works: can CC link a trivial fuzz target?
libfuzzer_works() {
	probe=$(mktemp -d) || return 1
	printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$probe/p.c"
	"$CC" -fsanitize=fuzzer,address "$probe/p.c" -o "$probe/p" >/dev/null 2>&1
	rc=$?
	rm -rf "$probe"
	return $rc
}

if ! command -v "$CC" >/dev/null 2>&1 || ! libfuzzer_works; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "fuzz: installing clang and libFuzzer: $APT"
		apt-get update -q && DEBIAN_FRONTEND=noninteractive $APT || exit 1
		command -v clang >/dev/null 2>&1 && CC=clang || CC=clang-14
		libfuzzer_works || { echo "fuzz: $CC still cannot link libFuzzer targets"; exit 1; }
	else
		echo "fuzz: clang with libFuzzer is needed; run as root: $APT"
		exit 1
	fi
fi

# FUZZ_TARGETS="fuzz_a fuzz_b" runs only those (default: every target).
if [ -n "${FUZZ_TARGETS:-}" ]; then
	TARGETS=""
	for t in $FUZZ_TARGETS; do TARGETS="$TARGETS tests/fuzz/$t.c"; done
else
	TARGETS=$(ls tests/fuzz/fuzz_*.c 2>/dev/null)
fi
if [ -z "$TARGETS" ]; then
	echo "fuzz: no tests/fuzz/fuzz_*.c targets"
	exit 1
fi

# The Makefile's library list, so a new library (libpq) is not missed here.
PKGS=$(make -s --no-print-directory print-PKGS) || exit 1
LIB_SRC=$(make -s --no-print-directory print-LIB_SRC) || {
	echo "fuzz: 'make -s print-LIB_SRC' failed"
	exit 1
}
# shellcheck disable=SC2086 # PKGS is a list
PKG_CFLAGS=$(pkg-config --cflags $PKGS) || exit 1
# shellcheck disable=SC2086
PKG_LIBS=$(pkg-config --libs $PKGS) || exit 1

OBJ=$(mktemp -d) || exit 2
trap 'rm -rf "$OBJ"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"

echo "fuzz: compiling library sources with $CC"
objs=""
for src in $LIB_SRC; do
	obj="$OBJ/$(echo "$src" | tr / _).o"
	# shellcheck disable=SC2086 # word splitting of flag lists is intended
	$CC $CFLAGS $SAN -fsanitize=fuzzer-no-link $PKG_CFLAGS -c "$src" -o "$obj" || {
		echo "fuzz: failed to compile $src"
		exit 1
	}
	objs="$objs $obj"
done

passed=0
failed=0
for target in $TARGETS; do
	name=$(basename "$target" .c)
	bin="$OUT/$name"
	corpus="$OUT/corpus-$name"
	seeds="tests/fuzz/seeds/${name#fuzz_}"
	[ -d "$seeds" ] || seeds="tests/fuzz/seeds/$name"
	echo "== $name (${FUZZ_SECONDS}s)"
	# shellcheck disable=SC2086
	if ! $CC $CFLAGS $SAN -fsanitize=fuzzer $PKG_CFLAGS "$target" $objs -o "$bin" \
		$PKG_LIBS -lpthread -lm; then
		echo "FAIL $name (build)"
		failed=$((failed + 1))
		continue
	fi
	mkdir -p "$corpus"
	[ -d "$seeds" ] && cp -R "$seeds"/. "$corpus"/
	t0=$(date +%s)
	if ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$OUT/$name-" "$corpus" \
		>"$OUT/$name.log" 2>&1; then
		echo "ok $name ($(grep -E '^stat::number_of_executed_units' "$OUT/$name.log" |
			awk '{print $2}') runs in $(($(date +%s) - t0)) s, corpus $(find "$corpus" -type f | wc -l))"
		passed=$((passed + 1))
	else
		echo "FAIL $name: see $OUT/$name.log"
		grep -E 'ERROR:|runtime error:|SUMMARY:|Test unit written' "$OUT/$name.log" | head -n 20
		failed=$((failed + 1))
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
