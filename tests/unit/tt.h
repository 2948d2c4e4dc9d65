/*
 * tests/unit/tt.h — a tiny table-driven test harness (tinytest shape).
 *
 * A test file defines cases as `static int test_x(void)` returning 0 on
 * pass, uses CHECK()/CHECK_EQ_INT()/CHECK_STR() which report and `goto end`,
 * and ends with:
 *     static const struct tt_case cases[] = { {"x", test_x}, ..., {NULL, NULL} };
 *     TT_MAIN(cases)
 * Each binary prints "ok NAME" / "FAIL NAME" lines and a final
 * "N passed, M failed" line, and exits non-zero on any failure.
 * Run a single case with: ./test_x NAME
 */
#ifndef FGW_TESTS_TT_H
#define FGW_TESTS_TT_H

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sodium.h>

struct tt_case {
	const char *name;
	int (*fn)(void);
};

#define CHECK(cond)                                                                    \
	do {                                                                               \
		if (!(cond)) {                                                                 \
			fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			tt_fail = 1;                                                               \
			goto end;                                                                  \
		}                                                                              \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                          \
	do {                                                                            \
		long long va_ = (long long)(a), vb_ = (long long)(b);                       \
		if (va_ != vb_) {                                                           \
			fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, \
			        __LINE__, #a, va_, #b, vb_);                                    \
			tt_fail = 1;                                                            \
			goto end;                                                               \
		}                                                                           \
	} while (0)

#define CHECK_STR(a, b)                                                           \
	do {                                                                          \
		const char *sa_ = (a), *sb_ = (b);                                        \
		if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {                \
			fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, \
			        __LINE__, #a, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");    \
			tt_fail = 1;                                                          \
			goto end;                                                             \
		}                                                                         \
	} while (0)

static int tt_fail;

/* Use as: static int test_x(void) { TT_BEGIN; ...CHECKs...; end: cleanup; TT_END; } */
#define TT_BEGIN tt_fail = 0
#define TT_END return tt_fail

static inline int
tt_run(const struct tt_case *cases, int argc, char **argv)
{
	int passed = 0, failed = 0;
	if (sodium_init() < 0) {
		fprintf(stderr, "sodium_init failed\n");
		return 2;
	}
	for (const struct tt_case *c = cases; c->name != NULL; c++) {
		if (argc > 1 && strcmp(argv[1], c->name) != 0)
			continue;
		tt_fail = 0;
		int r = c->fn();
		if (r == 0 && tt_fail == 0) {
			printf("ok %s\n", c->name);
			passed++;
		} else {
			printf("FAIL %s\n", c->name);
			failed++;
		}
		fflush(stdout);
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#define TT_MAIN(cases)                      \
	int main(int argc, char **argv)         \
	{                                       \
		return tt_run((cases), argc, argv); \
	}

#endif
