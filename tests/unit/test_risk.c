/*
 * tests/unit/test_risk.c — the gateway's rules glue (pipeline/risk.c):
 * deciding is atomic across threads (a count limit lets exactly N
 * through), reload swaps whole files only, recorded rows replay into the
 * same velocity keys as live decisions, and processor declines reach
 * declines() while rule declines are not counted twice, and attempts
 * other instances recorded in a shared store are added once each
 * (pipeline/velsync.c).
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "pipeline/risk.h"
#include "pipeline/velsync.h"
#include "rules/velocity.h"
#include "store/store.h"
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

/* ---- velocity across instances (pipeline/velsync.c) ------------------- */

static int
test_mac(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	static const unsigned char key[32] = "flairgw-risk-unit-test-mac-key!";
	(void)ctx;
	return crypto_generichash(mac, 32, msg, len, key, sizeof(key)) == 0
	           ? 0
	           : FGW_ERR_INTERNAL;
}

struct job {
	sem_t sem;
	int rc;
};

static void
job_done(void *arg, int rc)
{
	struct job *j = arg;
	j->rc = rc;
	sem_post(&j->sem);
}

/* Waits (bounded) for a job submitted with done = job_done. */
static int
job_wait(struct job *j, int submitted)
{
	struct timespec ts;
	int r;
	if (submitted != 0) {
		sem_destroy(&j->sem);
		return submitted;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	while ((r = sem_timedwait(&j->sem, &ts)) != 0 && errno == EINTR)
		;
	sem_destroy(&j->sem);
	return r != 0 ? FGW_ERR_TIMEOUT : j->rc;
}

/* A row as another instance (or this one, after deciding) writes it. */
static int
txn_write(struct store *st, const char *id, const char *email, int64_t at)
{
	struct store_txn_row row;
	struct job j;
	memset(&row, 0, sizeof(row));
	fgw_strlcpy(row.id, id, sizeof(row.id));
	fgw_strlcpy(row.client_id, "client_a", sizeof(row.client_id));
	row.amount = 1000;
	fgw_strlcpy(row.currency, "USD", sizeof(row.currency));
	fgw_strlcpy(row.status, "posting", sizeof(row.status));
	fgw_strlcpy(row.processor, "sandbox", sizeof(row.processor));
	fgw_strlcpy(row.customer_email, email, sizeof(row.customer_email));
	fgw_strlcpy(row.customer_ip, "198.51.100.9", sizeof(row.customer_ip));
	fgw_strlcpy(row.rule_decision, "allow", sizeof(row.rule_decision));
	row.created_at = row.updated_at = at;
	sem_init(&j.sem, 0, 0);
	return job_wait(&j, store_txn_create(st, NULL, &row, NULL,
	                                     &(struct store_commit){ .done = job_done,
	                                                             .arg = &j }));
}

static int
txn_decline(struct store *st, const char *id)
{
	struct store_txn_update u;
	struct job j;
	memset(&u, 0, sizeof(u));
	fgw_strlcpy(u.id, id, sizeof(u.id));
	fgw_strlcpy(u.status, "declined", sizeof(u.status));
	fgw_strlcpy(u.error_code, "CARD_DECLINED", sizeof(u.error_code));
	sem_init(&j.sem, 0, 0);
	return job_wait(&j, store_txn_finish(st, NULL, &u, NULL,
	                                     &(struct store_commit){ .done = job_done,
	                                                             .arg = &j }));
}

static int64_t
email_count(struct risk *rk, int64_t now, int64_t *declines)
{
	struct velocity_stats vs = { 0 };
	(void)velocity_query(rk->velocity, VELOCITY_EMAIL, "shared@example.com", now, 3600000,
	                     &vs);
	*declines = vs.declines;
	return vs.count;
}

/* Two instances on one store: this one decides its own attempt and reads
 * the other's rows at each refresh, counting each attempt once, a later
 * decline of the other's once, a row that committed late (within the
 * lag) too, and forgetting ids no refresh reads again. */
static int
test_shared_counts(void)
{
	struct risk rk;
	struct store *st = NULL;
	struct store_reader *rd = NULL;
	struct velsync *vs = NULL;
	struct rules_input in;
	struct rules_decision d;
	struct store_opts so;
	char path[256] = "", db[300];
	int64_t now = fgw_now_ms(), added = -1, declines = -1, dn = 0;
	TT_BEGIN;
	memset(&rk, 0, sizeof(rk));
	log_setup(LOG_LVL_ERROR, 0, 2);
	CHECK_EQ_INT(setup(&rk, "rule V: when count(email, 1h) > 100 then decline V\n", path,
	                   sizeof(path)),
	             0);
	snprintf(db, sizeof(db), "%.*s/store.db", (int)(strrchr(path, '/') - path), path);
	memset(&so, 0, sizeof(so));
	so.path = db;
	so.sync_full = 1;
	so.batch_max = 16;
	so.audit_mac = test_mac;
	CHECK_EQ_INT(store_open(&so, &st), 0);
	CHECK_EQ_INT(store_reader_open(st, &rd), 0);
	CHECK_EQ_INT(velsync_new(&rk, 5000, &vs), 0);
	rk.sync = vs;
	/* Start: the replay of the window (one row from before it). */
	CHECK_EQ_INT(txn_write(st, "txn_before", "shared@example.com", now - 20000), 0);
	CHECK_EQ_INT(velsync_refresh(vs, rd, now - 10000, &added, &declines), 0);
	CHECK_EQ_INT(added, 1);
	CHECK_EQ_INT(email_count(&rk, now, &dn), 1);
	/* This instance decides and writes its attempt... */
	input(&in, "198.51.100.9", now - 9000);
	in.email = "shared@example.com";
	in.txn_id = "txn_own";
	CHECK_EQ_INT(risk_decide(&rk, &in, &d), 0);
	CHECK_EQ_INT(txn_write(st, "txn_own", "shared@example.com", now - 9000), 0);
	/* ...the other instance two. */
	CHECK_EQ_INT(txn_write(st, "txn_other1", "shared@example.com", now - 8000), 0);
	CHECK_EQ_INT(txn_write(st, "txn_other2", "shared@example.com", now - 7000), 0);
	CHECK_EQ_INT(email_count(&rk, now, &dn), 2);
	CHECK_EQ_INT(velsync_refresh(vs, rd, now - 6000, &added, &declines), 0);
	CHECK_EQ_INT(added, 2);
	CHECK_EQ_INT(email_count(&rk, now, &dn), 4);
	/* Read again: nothing counted twice. */
	CHECK_EQ_INT(velsync_refresh(vs, rd, now - 5000, &added, &declines), 0);
	CHECK_EQ_INT(added, 0);
	CHECK_EQ_INT(email_count(&rk, now, &dn), 4);
	CHECK_EQ_INT(dn, 0);
	/* The other instance's processor declines one; ours is declined too,
	 * which this instance's own listener counts (not the refresh). */
	CHECK_EQ_INT(txn_decline(st, "txn_other2"), 0);
	CHECK_EQ_INT(txn_decline(st, "txn_own"), 0);
	CHECK_EQ_INT(velsync_refresh(vs, rd, now - 4000, &added, &declines), 0);
	CHECK_EQ_INT(added, 0);
	CHECK_EQ_INT(declines, 1);
	CHECK_EQ_INT(email_count(&rk, now, &dn), 4);
	CHECK_EQ_INT(dn, 1);
	CHECK_EQ_INT(velsync_refresh(vs, rd, now - 3000, &added, &declines), 0);
	CHECK_EQ_INT(declines, 0);
	/* A row stamped before the last refresh but committed after it. */
	CHECK_EQ_INT(txn_write(st, "txn_late", "shared@example.com", now - 3500), 0);
	CHECK_EQ_INT(velsync_refresh(vs, rd, now - 2000, &added, &declines), 0);
	CHECK_EQ_INT(added, 1);
	CHECK_EQ_INT(email_count(&rk, now, &dn), 5);
	/* An hour on, no id is held any more. */
	CHECK(velsync_held(vs) > 0);
	CHECK_EQ_INT(velsync_refresh(vs, rd, now + 3600000, &added, &declines), 0);
	CHECK_EQ_INT(velsync_held(vs), 0);
end:
	rk.sync = NULL;
	velsync_free(vs);
	store_reader_close(rd);
	store_close(st);
	if (db[0] != '\0') {
		char p2[320];
		unlink(db);
		snprintf(p2, sizeof(p2), "%s-wal", db);
		unlink(p2);
		snprintf(p2, sizeof(p2), "%s-shm", db);
		unlink(p2);
	}
	teardown(&rk, path);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "decide_atomic", test_decide_atomic },
	{ "reload_whole_or_nothing", test_reload_whole_or_nothing },
	{ "replay_and_declines", test_replay_and_declines },
	{ "init_refuses_bad_file", test_init_refuses_bad_file },
	{ "shared_counts", test_shared_counts },
	{ NULL, NULL },
};
TT_MAIN(cases)
