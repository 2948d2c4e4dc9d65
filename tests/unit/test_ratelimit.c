/*
 * tests/unit/test_ratelimit.c — gateway/browser.c token buckets: a burst
 * of per_min, refill at per_min a minute, Retry-After in whole seconds,
 * separate keys, and a table that never grows past its size.
 */
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "gateway/browser.h"
#include "tt.h"

static int
test_burst_refill_retry_after(void)
{
	struct ratelimit *rl = NULL;
	int wait = -1, admitted = 0;
	TT_BEGIN;
	CHECK_EQ_INT(ratelimit_new(64, &rl), 0);
	for (int i = 0; i < 8; i++)
		admitted += ratelimit_take(rl, "2|10.0.0.1", 10, 5, 1000, &wait) == 0;
	CHECK_EQ_INT(admitted, 5);
	/* one token comes back every 12 s at 5 a minute */
	CHECK_EQ_INT(ratelimit_take(rl, "2|10.0.0.1", 10, 5, 1000, &wait), 1);
	CHECK_EQ_INT(wait, 12);
	CHECK_EQ_INT(ratelimit_take(rl, "2|10.0.0.1", 10, 5, 11001, &wait), 1);
	CHECK_EQ_INT(wait, 2);
	CHECK_EQ_INT(ratelimit_take(rl, "2|10.0.0.1", 10, 5, 13000, &wait), 0);
	/* another key, and a limit of 0, are not held back */
	CHECK_EQ_INT(ratelimit_take(rl, "2|10.0.0.2", 10, 5, 13000, &wait), 0);
	CHECK_EQ_INT(ratelimit_take(rl, "2|10.0.0.1", 10, 0, 13000, &wait), 0);
	/* a full minute refills the whole burst, no more */
	admitted = 0;
	for (int i = 0; i < 8; i++)
		admitted += ratelimit_take(rl, "2|10.0.0.1", 10, 5, 600000, &wait) == 0;
	CHECK_EQ_INT(admitted, 5);
end:
	ratelimit_free(rl);
	TT_END;
}

static int
test_table_bounded(void)
{
	struct ratelimit *rl = NULL;
	char key[32];
	int wait;
	TT_BEGIN;
	CHECK_EQ_INT(ratelimit_new(100, &rl), 0);
	for (int i = 0; i < 100000; i++) {
		int n = snprintf(key, sizeof(key), "1|192.0.%d.%d", i / 256, i % 256);
		CHECK_EQ_INT(ratelimit_take(rl, key, (size_t)n, 1, i, &wait), 0);
	}
	CHECK(ratelimit_used(rl) <= 128);
	CHECK(ratelimit_used(rl) >= 64);
end:
	ratelimit_free(rl);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "burst_refill_retry_after", test_burst_refill_retry_after },
	{ "table_bounded", test_table_bounded },
	{ NULL, NULL },
};

int
main(int argc, char **argv)
{
	return tt_run(cases, argc, argv);
}
