/*
 * tests/unit/test_outbox.c — the delivery policy both outbox senders share
 * (gateway/outbox.c): backoff, giving up at the maximum age, the secret
 * file a sender reads.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "crypto/secmem.h"
#include "gateway/outbox.h"
#include "tt.h"

static int
test_backoff(void)
{
	CHECK_EQ_INT(outbox_backoff_ms(1000, 1), 1000);
	CHECK_EQ_INT(outbox_backoff_ms(1000, 2), 2000);
	CHECK_EQ_INT(outbox_backoff_ms(1000, 4), 8000);
	CHECK_EQ_INT(outbox_backoff_ms(1000, 0), 1000);
	/* capped: a long outage does not overflow the delay */
	CHECK_EQ_INT(outbox_backoff_ms(1, 100), 1LL << 30);
	return 0;
end:
	return 1;
}

static int
test_give_up(void)
{
	const struct outbox_policy p = { 1000, 10 };
	int64_t next = 0;

	/* first failure at 9 s: retry at 10 s, the last moment allowed */
	CHECK_EQ_INT(outbox_after_failure(&p, 0, 0, 9000, &next), OUTBOX_RETRY);
	CHECK_EQ_INT(next, 10000);
	/* one millisecond later the retry would fall past the maximum age */
	CHECK_EQ_INT(outbox_after_failure(&p, 0, 0, 9001, &next), OUTBOX_FAILED);
	CHECK_EQ_INT(next, 10001);
	/* the third failure waits 4 s */
	CHECK_EQ_INT(outbox_after_failure(&p, 2, 0, 1000, &next), OUTBOX_RETRY);
	CHECK_EQ_INT(next, 5000);
	return 0;
end:
	return 1;
}

/* The decision both senders take when an attempt ends, with its count. */
static int
test_settle(void)
{
	const struct outbox_policy p = { 1000, 10 };
	atomic_ullong counters[3] = { 0, 0, 0 };
	int64_t next = 0;

	/* delivered: the row keeps its due time */
	CHECK_EQ_INT(outbox_settle(&p, counters,
	                           &(struct outbox_attempt){ .attempts = 3,
	                                                     .created_at = 0,
	                                                     .due_at = 777,
	                                                     .error = "" },
	                           9999, &next),
	             OUTBOX_DELIVERED);
	CHECK_EQ_INT(next, 777);
	/* a failure within the maximum age: the backoff, as outbox_after_failure */
	CHECK_EQ_INT(outbox_settle(&p, counters,
	                           &(struct outbox_attempt){ .attempts = 2,
	                                                     .error = "HTTP 500" },
	                           1000, &next),
	             OUTBOX_RETRY);
	CHECK_EQ_INT(next, 5000);
	/* given up at once (an endpoint no longer configured), whatever its age */
	CHECK_EQ_INT(outbox_settle(&p, counters,
	                           &(struct outbox_attempt){ .error = "gone", .give_up = 1 },
	                           0, &next),
	             OUTBOX_FAILED);
	/* past the maximum age */
	CHECK_EQ_INT(outbox_settle(&p, counters, &(struct outbox_attempt){ .error = "x" },
	                           9001, &next),
	             OUTBOX_FAILED);
	CHECK_EQ_INT((int)atomic_load(&counters[OUTBOX_DELIVERED]), 1);
	CHECK_EQ_INT((int)atomic_load(&counters[OUTBOX_RETRY]), 1);
	CHECK_EQ_INT((int)atomic_load(&counters[OUTBOX_FAILED]), 2);
	return 0;
end:
	return 1;
}

static int
write_file(const char *path, const char *text, int mode)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fputs(text, f);
	fclose(f);
	return chmod(path, (mode_t)mode);
}

static int
test_read_secret(void)
{
	char dir[] = "/tmp/fgw-outbox-XXXXXX", path[64], msg[700];
	struct secbuf *b = NULL;
	struct fgw_why why;
	int fail = 1;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/secret", dir);
	CHECK_EQ_INT(outbox_read_secret(path, 1024, 16, 0, &b, &why), FGW_ERR_NOT_FOUND);
	CHECK(strcmp(why.where, path) == 0);

	CHECK_EQ_INT(write_file(path, "0123456789abcdef\n", 0644), 0);
	CHECK_EQ_INT(outbox_read_secret(path, 1024, 16, 0, &b, &why), FGW_ERR_INVALID);
	CHECK(strstr(fgw_why_format(&why, msg, sizeof(msg)), "mode 0600") != NULL);

	CHECK_EQ_INT(write_file(path, "short\n", 0600), 0);
	CHECK_EQ_INT(outbox_read_secret(path, 1024, 16, 0, &b, &why), FGW_ERR_INVALID);
	CHECK(strstr(why.msg, "at least 16 bytes") != NULL);

	CHECK_EQ_INT(write_file(path, "user\nname\n", 0600), 0);
	CHECK_EQ_INT(outbox_read_secret(path, 1024, 1, 1, &b, &why), FGW_ERR_INVALID);
	CHECK(strstr(why.msg, "one line") != NULL);

	/* the trailing newline is not part of the secret */
	CHECK_EQ_INT(write_file(path, "0123456789abcdef\n", 0600), 0);
	CHECK_EQ_INT(outbox_read_secret(path, 1024, 16, 0, &b, &why), 0);
	CHECK_EQ_INT(b->len, 16);
	CHECK(memcmp(b->data, "0123456789abcdef", 16) == 0);
	fail = 0;
end:
	secbuf_free(b);
	unlink(path);
	rmdir(dir);
	return fail;
}

static const struct tt_case cases[] = {
	{ "backoff", test_backoff },
	{ "give_up", test_give_up },
	{ "settle", test_settle },
	{ "read_secret", test_read_secret },
	{ NULL, NULL },
};

TT_MAIN(cases)
