/*
 * tests/unit/test_risk.c — the gateway's rules glue (pipeline/risk.c):
 * deciding is atomic across threads (a count limit lets exactly N
 * through), reload swaps whole files only, recorded rows replay into the
 * same velocity keys as live decisions, and processor declines reach
 * declines() while rule declines are not counted twice.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/util.h"
#include "pipeline/risk.h"
#include "tests/unit/tt.h"

static int
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f);
}

/* A rules file in a fresh directory; path gets its name (cap >= 64). */
static int
setup(struct risk *rk, const char *text, char *path, size_t cap)
{
	struct fgw_why err;
	char dir[] = "/tmp/fgw-risk-XXXXXX";
	int n;
	path[0] = '\0';
	if (mkdtemp(dir) == NULL)
		return -1;
	n = snprintf(path, cap, "%s/rules.conf", dir);
	if (n < 0 || (size_t)n >= cap || write_file(path, text) != 0)
		return -1;
	return risk_init(rk, path, "development", &err);
}

static void
teardown(struct risk *rk, char *path)
{
	char *slash;
	risk_free(rk);
	if (path[0] == '\0')
		return;
	unlink(path);
	if ((slash = strrchr(path, '/')) != NULL) {
		*slash = '\0';
		rmdir(path);
	}
}

static void
input(struct rules_input *in, const char *ip, int64_t now)
{
	memset(in, 0, sizeof(*in));
	in->amount = 1000;
	in->currency = "USD";
	in->bin = "424242";
	in->ip = ip;
	in->email = "a@example.com";
	in->fingerprint = "fp1";
	in->threeds = "none";
	in->mode = "development";
	in->now_ms = now;
}

struct worker {
	struct risk *rk;
	int64_t now;
	int allowed;
};

static void *
decide_many(void *arg)
{
	struct worker *w = arg;
	struct rules_input in;
	struct rules_decision d;
	for (int i = 0; i < 50; i++) {
		input(&in, "192.0.2.1", w->now + i);
		if (risk_decide(w->rk, &in, &d) == 0 && d.action == RULES_ALLOW)
			w->allowed++;
	}
	return NULL;
}

static int
test_decide_atomic(void)
{
	struct risk rk;
	struct worker w[4];
	pthread_t th[4];
	char path[256] = "";
	int started = 0, total = 0;
	TT_BEGIN;
	memset(&rk, 0, sizeof(rk));
	CHECK_EQ_INT(setup(&rk,
	                   "rule V: when count(ip, 1h) > 5 then decline VELOCITY_LIMIT\n",
	                   path, sizeof(path)),
	             0);
	for (; started < 4; started++) {
		w[started] = (struct worker){ &rk, fgw_now_ms(), 0 };
		CHECK_EQ_INT(pthread_create(&th[started], NULL, decide_many, &w[started]), 0);
	}
end:
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		total += w[i].allowed;
	}
	if (!tt_fail && total != 5) {
		fprintf(stderr, "  %d allowed by count(ip, 1h) > 5 over 4 threads, expected 5\n",
		        total);
		tt_fail = 1;
	}
	teardown(&rk, path);
	TT_END;
}

static int
test_reload_whole_or_nothing(void)
{
	struct risk rk;
	struct rules_input in;
	struct rules_decision d;
	struct fgw_why err;
	char path[256] = "";
	size_t n = 0;
	TT_BEGIN;
	memset(&rk, 0, sizeof(rk));
	CHECK_EQ_INT(setup(&rk, "rule A: when amount == 1000 then review\n", path,
	                   sizeof(path)),
	             0);
	input(&in, "192.0.2.2", fgw_now_ms());
	CHECK_EQ_INT(risk_decide(&rk, &in, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REVIEW);
	CHECK_EQ_INT(
	    write_file(
	        path,
	        "rule B: when amount == 1000 then decline X\nrule C: when amont > 1 then allow\n"),
	    0);
	CHECK_EQ_INT(risk_reload(&rk, &err, &n), FGW_ERR_INVALID);
	CHECK_EQ_INT(err.line, 2);
	CHECK_EQ_INT(err.col, 14);
	CHECK_EQ_INT(risk_decide(&rk, &in, &d), 0);
	CHECK_EQ_INT(d.action, RULES_REVIEW); /* the old set runs on */
	CHECK_EQ_INT(write_file(path, "rule B: when amount == 1000 then decline X\n"), 0);
	CHECK_EQ_INT(risk_reload(&rk, &err, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(risk_decide(&rk, &in, &d), 0);
	CHECK_EQ_INT(d.action, RULES_DECLINE);
	CHECK_STR(d.code, "X");
end:
	teardown(&rk, path);
	TT_END;
}

static void
row_for(struct store_txn_row *row, const char *status, const char *decision, int64_t at)
{
	memset(row, 0, sizeof(*row));
	fgw_strlcpy(row->id, "txn_x", sizeof(row->id));
	row->amount = 1000;
	fgw_strlcpy(row->currency, "USD", sizeof(row->currency));
	fgw_strlcpy(row->status, status, sizeof(row->status));
	fgw_strlcpy(row->fingerprint, "fp1", sizeof(row->fingerprint));
	fgw_strlcpy(row->bin, "424242", sizeof(row->bin));
	fgw_strlcpy(row->customer_email, "a@example.com", sizeof(row->customer_email));
	fgw_strlcpy(row->customer_ip, "192.0.2.3", sizeof(row->customer_ip));
	fgw_strlcpy(row->rule_decision, decision, sizeof(row->rule_decision));
	row->created_at = at;
}

static int
test_replay_and_declines(void)
{
	struct risk rk;
	struct store_txn_row row;
	struct rules_input in;
	struct rules_decision d;
	char path[256] = "";
	int64_t now = fgw_now_ms();
	TT_BEGIN;
	memset(&rk, 0, sizeof(rk));
	CHECK_EQ_INT(
	    setup(&rk,
	          "rule D: when declines(card, 24h) >= 2 then decline TOO_MANY_DECLINES\n"
	          "rule I: when count(ip, 1h) > 4 then decline VELOCITY_LIMIT\n",
	          path, sizeof(path)),
	    0);
	/* Two rows from before a restart, one declined by the processor. */
	row_for(&row, "succeeded", "allow", now - 60000);
	CHECK_EQ_INT(risk_replay_row(&rk, &row), 0);
	row_for(&row, "declined", "allow", now - 50000);
	CHECK_EQ_INT(risk_replay_row(&rk, &row), 0);
	/* A live attempt declined later by the processor (listener). */
	input(&in, "192.0.2.3", now - 40000);
	CHECK_EQ_INT(risk_decide(&rk, &in, &d), 0);
	CHECK_EQ_INT(d.action, RULES_ALLOW);
	row_for(&row, "declined", "allow", now - 40000);
	risk_on_txn_event(&rk, NULL, &row);
	/* A rule decline is not counted again by the listener. */
	row_for(&row, "declined", "decline", now - 40000);
	risk_on_txn_event(&rk, NULL, &row);
	input(&in, "192.0.2.3", now);
	CHECK_EQ_INT(risk_decide(&rk, &in, &d), 0);
	CHECK_EQ_INT(d.action, RULES_DECLINE);
	CHECK_STR(d.rule_id, "D");
	CHECK_STR(d.fired, "D"); /* 4 attempts on the IP: I does not fire */
end:
	teardown(&rk, path);
	TT_END;
}

static int
test_init_refuses_bad_file(void)
{
	struct risk rk;
	struct fgw_why err;
	char path[256] = "";
	TT_BEGIN;
	memset(&rk, 0, sizeof(rk));
	CHECK(setup(&rk, "rule: when then\n", path, sizeof(path)) != 0);
	CHECK_EQ_INT(rk.up, 0);
	CHECK(risk_init(&rk, "/nonexistent/rules.conf", "production", &err) != 0);
	CHECK(strstr(err.msg, "cannot read") != NULL);
end:
	teardown(&rk, path);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "decide_atomic", test_decide_atomic },
	{ "reload_whole_or_nothing", test_reload_whole_or_nothing },
	{ "replay_and_declines", test_replay_and_declines },
	{ "init_refuses_bad_file", test_init_refuses_bad_file },
	{ NULL, NULL },
};
TT_MAIN(cases)
