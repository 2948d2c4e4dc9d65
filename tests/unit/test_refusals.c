/*
 * tests/unit/test_refusals.c — gateway/refusals.c: refusals audited one by
 * one up to the burst per source network, the rest counted into one
 * summary per window, bounded whatever the number of sources.
 */
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "gateway/refusals.h"
#include "tt.h"

static uint64_t
total_suppressed(const struct refusal_summary *s, size_t n, const char *type)
{
	uint64_t t = 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(s[i].event_type, type) == 0)
			t += s[i].suppressed;
	return t;
}

static int
test_burst_then_summary(void)
{
	struct refusals *rf = NULL;
	struct refusal_summary s[8];
	int own = 0;
	TT_BEGIN;
	CHECK_EQ_INT(refusals_new(1000, 3, &rf), 0);
	for (int i = 0; i < 2000; i++)
		own += refusals_admit(rf, "auth.failed", i % 2 ? "10.0.0.1" : "10.0.0.77", 5000);
	CHECK_EQ_INT(own, 3); /* one /24: one burst */
	own = refusals_admit(rf, "webhook.refused", "10.0.0.1", 5000);
	CHECK_EQ_INT(own, 1); /* its own event type */
	/* The window is still running: nothing to write yet. */
	CHECK_EQ_INT((int)refusals_drain(rf, 5500, 0, s, 8), 0);
	CHECK_EQ_INT((int)refusals_drain(rf, 6000, 0, s, 8), 1);
	CHECK_STR(s[0].event_type, "auth.failed");
	CHECK_STR(s[0].bucket, "10.0.0.0/24");
	CHECK(s[0].suppressed == 1997);
	CHECK(refusals_suppressed_total(rf) == 1997);
	/* A new window starts with a fresh burst. */
	CHECK_EQ_INT(refusals_admit(rf, "auth.failed", "10.0.0.1", 6001), 1);
	CHECK_EQ_INT((int)refusals_drain(rf, 6002, 1, s, 8), 0); /* nothing suppressed */
end:
	refusals_free(rf);
	TT_END;
}

static int
test_many_sources_bounded(void)
{
	struct refusals *rf = NULL;
	struct refusal_summary s[REFUSALS_SLOTS + 8];
	char ip[64];
	size_t n, got = 0;
	int own = 0;
	TT_BEGIN;
	CHECK_EQ_INT(refusals_new(1000, 5, &rf), 0);
	for (int i = 0; i < 10000; i++) {
		snprintf(ip, sizeof(ip), "2001:db8:%x:%x::1", i / 256, i % 256);
		own += refusals_admit(rf, "auth.failed", ip, 100);
	}
	CHECK_EQ_INT(own, 20); /* 4 * burst in all, however many networks */
	while ((n = refusals_drain(rf, 100, 1, s + got, 4)) > 0 && got < REFUSALS_SLOTS + 4)
		got += n;
	CHECK(got <= REFUSALS_SLOTS);
	CHECK(total_suppressed(s, got, "auth.failed") == 10000 - 20);
end:
	refusals_free(rf);
	TT_END;
}

static int
test_buckets(void)
{
	char b[REFUSALS_BUCKET_MAX];
	TT_BEGIN;
	refusals_bucket("192.0.2.200", b);
	CHECK_STR(b, "192.0.2.0/24");
	refusals_bucket("2001:db8:1:2:3:4:5:6", b);
	CHECK_STR(b, "2001:db8:1:2::/64");
	refusals_bucket("", b);
	CHECK_STR(b, "unknown");
	CHECK_EQ_INT(refusals_admit(NULL, "auth.failed", "::1", 1), 1);
end:
	TT_END;
}

static const struct tt_case cases[] = {
	{ "burst_then_summary", test_burst_then_summary },
	{ "many_sources_bounded", test_many_sources_bounded },
	{ "buckets", test_buckets },
	{ NULL, NULL },
};

int
main(int argc, char **argv)
{
	return tt_run(cases, argc, argv);
}
