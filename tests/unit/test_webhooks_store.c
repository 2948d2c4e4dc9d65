/*
 * tests/unit/test_webhooks_store.c — store/webhooks.c: inbound event
 * deduplication, the outbox's due list, attempts moving rows, operator
 * retries and the listing.
 *
 * Jobs are submitted without a waker (done runs on the writer thread) and
 * waited for by polling a flag, bounded by WAIT_MS.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/store.h"
#include "store/webhooks.h"
#include "tt.h"

#define WAIT_MS 10000

static int
test_mac(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	(void)ctx;
	return crypto_generichash(mac, 32, msg, len, NULL, 0) == 0 ? 0 : FGW_ERR_CRYPTO;
}

struct fix {
	char dir[64];
	char path[96];
	struct store *st;
	struct store_reader *rd;
};

struct wait {
	atomic_int done;
	int rc;
};

static void
on_done(void *arg, int rc)
{
	struct wait *w = arg;
	w->rc = rc;
	atomic_store(&w->done, 1);
}

/* Waits for a submitted job; returns its rc, or FGW_ERR_TIMEOUT. */
static int
wait_job(struct wait *w)
{
	struct timespec ts = { 0, 1000000 };
	for (int i = 0; i < WAIT_MS && !atomic_load(&w->done); i++)
		nanosleep(&ts, NULL);
	return atomic_load(&w->done) ? w->rc : FGW_ERR_TIMEOUT;
}

static int
fix_setup(struct fix *f)
{
	struct store_opts o = { 0 };
	memset(f, 0, sizeof(*f));
	if (fgw_strlcpy(f->dir, "/tmp/fgw-wh-XXXXXX", sizeof(f->dir)) != 0 ||
	    mkdtemp(f->dir) == NULL)
		return -1;
	if (snprintf(f->path, sizeof(f->path), "%s/gw.db", f->dir) >= (int)sizeof(f->path))
		return -1;
	o.path = f->path;
	o.sync_full = 0;
	o.batch_max = 16;
	o.audit_mac = test_mac;
	if (store_open(&o, &f->st) != 0)
		return -1;
	return store_reader_open(f->st, &f->rd);
}

static void
fix_teardown(struct fix *f)
{
	static const char *const sfx[] = { "", "-wal", "-shm", "-journal" };
	char p[128];
	store_reader_close(f->rd);
	store_close(f->st);
	for (size_t i = 0; i < 4; i++)
		if (snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]) < (int)sizeof(p))
			(void)unlink(p);
	if (f->dir[0])
		(void)rmdir(f->dir);
}

static int
test_inbound_dedupe(void)
{
	struct fix f;
	struct wait w1 = { 0 }, w2 = { 0 };
	char result[24];
	TT_BEGIN;
	CHECK(fix_setup(&f) == 0);
	CHECK_EQ_INT(store_webhook_seen(f.rd, "sandbox", "evt_1", result), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(store_webhook_record(f.st, NULL, "sandbox", "evt_1",
	                                  "payment_intent.succeeded", "txn_1", "applied",
	                                  NULL, 0, on_done, &w1),
	             0);
	CHECK_EQ_INT(wait_job(&w1), 0);
	CHECK_EQ_INT(store_webhook_seen(f.rd, "sandbox", "evt_1", result), 0);
	CHECK_STR(result, "applied");
	/* The same id again is refused by the table itself (concurrent
	 * duplicates), and the first result stands. */
	CHECK_EQ_INT(store_webhook_record(f.st, NULL, "sandbox", "evt_1",
	                                  "payment_intent.payment_failed", "txn_1", "no_move",
	                                  NULL, 0, on_done, &w2),
	             0);
	CHECK_EQ_INT(wait_job(&w2), FGW_ERR_EXISTS);
	CHECK_EQ_INT(store_webhook_seen(f.rd, "sandbox", "evt_1", result), 0);
	CHECK_STR(result, "applied");
	/* Event ids are per processor. */
	CHECK_EQ_INT(store_webhook_seen(f.rd, "stripe", "evt_1", result), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(store_webhook_record(f.st, NULL, "sandbox", NULL, "t", "", "x", NULL, 0,
	                                  NULL, NULL),
	             FGW_ERR_INVALID);
end:
	fix_teardown(&f);
	TT_END;
}

static int count_rows;

static void
count_row(void *arg, const struct store_outbox_row *row)
{
	(void)arg;
	(void)row;
	count_rows++;
}

static int count_attempts;

static void
count_attempt(void *arg, int attempt, int64_t at, int http_status, const char *error,
              long elapsed_ms, const char *outcome)
{
	(void)arg;
	(void)attempt;
	(void)at;
	(void)http_status;
	(void)error;
	(void)elapsed_ms;
	(void)outcome;
	count_attempts++;
}

static int
test_outbox_lifecycle(void)
{
	struct fix f;
	struct store_outbox_row rows[2], due[4];
	struct store_outbox_attempt a;
	struct wait w[6];
	int64_t now = fgw_now_ms();
	int n = 0;
	TT_BEGIN;
	memset(w, 0, sizeof(w));
	memset(rows, 0, sizeof(rows));
	memset(due, 0, sizeof(due));
	CHECK(fix_setup(&f) == 0);
	for (int i = 0; i < 2; i++) {
		snprintf(rows[i].id, sizeof(rows[i].id), "whd_%d", i);
		snprintf(rows[i].endpoint_url, sizeof(rows[i].endpoint_url),
		         "http://127.0.0.1:9/%d", i);
		fgw_strlcpy(rows[i].event_id, "evt_a", sizeof(rows[i].event_id));
		fgw_strlcpy(rows[i].event_type, "transaction.succeeded",
		            sizeof(rows[i].event_type));
		fgw_strlcpy(rows[i].txn_id, "txn_a", sizeof(rows[i].txn_id));
		rows[i].payload = "{\"id\":\"evt_a\"}";
		rows[i].next_attempt_at = now;
	}
	CHECK_EQ_INT(store_outbox_enqueue(f.st, NULL, rows, 0, NULL, 0, NULL, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_outbox_enqueue(f.st, NULL, rows, 2, NULL, 0, on_done, &w[0]), 0);
	CHECK_EQ_INT(wait_job(&w[0]), 0);
	CHECK_EQ_INT(store_outbox_due(f.rd, now, due, 4, &n), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_STR(due[0].payload, "{\"id\":\"evt_a\"}");
	CHECK_STR(due[0].status, "pending");
	for (int i = 0; i < n; i++)
		store_outbox_row_clear(&due[i]);

	/* A failed attempt pushes whd_0 into the future. */
	memset(&a, 0, sizeof(a));
	fgw_strlcpy(a.outbox_id, "whd_0", sizeof(a.outbox_id));
	a.at = now;
	a.http_status = 500;
	fgw_strlcpy(a.error, "HTTP 500", sizeof(a.error));
	fgw_strlcpy(a.outcome, "retry", sizeof(a.outcome));
	a.next_attempt_at = now + 60000;
	CHECK_EQ_INT(store_outbox_attempt(f.st, NULL, &a, NULL, 0, on_done, &w[1]), 0);
	CHECK_EQ_INT(wait_job(&w[1]), 0);
	CHECK_EQ_INT(store_outbox_due(f.rd, now, due, 4, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(due[0].id, "whd_1");
	store_outbox_row_clear(&due[0]);
	CHECK_EQ_INT(store_outbox_due(f.rd, now + 60000, due, 4, &n), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_INT(due[0].attempts + due[1].attempts, 1);
	for (int i = 0; i < n; i++)
		store_outbox_row_clear(&due[i]);

	/* Delivered: never due again; a late second answer is refused. */
	fgw_strlcpy(a.outcome, "delivered", sizeof(a.outcome));
	a.http_status = 200;
	a.error[0] = '\0';
	CHECK_EQ_INT(store_outbox_attempt(f.st, NULL, &a, NULL, 0, on_done, &w[2]), 0);
	CHECK_EQ_INT(wait_job(&w[2]), 0);
	CHECK_EQ_INT(store_outbox_attempt(f.st, NULL, &a, NULL, 0, on_done, &w[3]), 0);
	CHECK_EQ_INT(wait_job(&w[3]), FGW_ERR_STATE);
	CHECK_EQ_INT(store_outbox_due(f.rd, now + 600000, due, 4, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(due[0].id, "whd_1");
	store_outbox_row_clear(&due[0]);

	/* The operator's retry makes it pending and due again. */
	CHECK_EQ_INT(store_outbox_retry(f.st, NULL, "whd_0", now, NULL, 0, on_done, &w[4]),
	             0);
	CHECK_EQ_INT(wait_job(&w[4]), 0);
	CHECK_EQ_INT(store_outbox_due(f.rd, now, due, 4, &n), 0);
	CHECK_EQ_INT(n, 2);
	for (int i = 0; i < n; i++)
		store_outbox_row_clear(&due[i]);
	CHECK_EQ_INT(store_outbox_retry(f.st, NULL, "whd_none", now, NULL, 0, on_done, &w[5]),
	             0);
	CHECK_EQ_INT(wait_job(&w[5]), FGW_ERR_NOT_FOUND);

	fgw_strlcpy(a.outcome, "bogus", sizeof(a.outcome));
	CHECK_EQ_INT(store_outbox_attempt(f.st, NULL, &a, NULL, 0, NULL, NULL),
	             FGW_ERR_INVALID);

	count_rows = count_attempts = 0;
	CHECK_EQ_INT(store_outbox_list(f.rd, 10, count_row, count_attempt, NULL), 0);
	CHECK_EQ_INT(count_rows, 2);
	CHECK_EQ_INT(count_attempts, 2);
end:
	fix_teardown(&f);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "inbound_dedupe", test_inbound_dedupe },
	{ "outbox_lifecycle", test_outbox_lifecycle },
	{ NULL, NULL },
};

int
main(int argc, char **argv)
{
	log_setup(LOG_LVL_ERROR, 0, 2);
	return tt_run(cases, argc, argv);
}
