/*
 * tests/unit/test_races.c — checks that must hold across instances made
 * at the same moment: a refund's refundable sum, one capture or cancel
 * per transaction, a customer's saved-method limit and single default.
 *
 * Every case runs on SQLite (a migrated file under TMPDIR) as NAME_sqlite
 * and, when FLAIRGW_TEST_PG_DSN names a database, on PostgreSQL as
 * NAME_pg (tests/integration/test_pg_races.py starts a server and runs
 * this binary with it). On PostgreSQL two stores opened on the one
 * database are two instances, each with its writer thread; a third
 * session holds a table lock that lets reads through and stops writes
 * until both writers wait on a lock, so that, unless a writer takes a
 * lock of its own before it reads, both have read before either writes.
 * On SQLite one store runs both jobs (its single writer serializes them):
 * the same outcome, as before.
 */
#include <libpq-fe.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "store/db.h"
#include "store/methods.h"
#include "store/pendingops.h"
#include "store/pg.h"
#include "store/procevents.h"
#include "store/store.h"
#include "tests/unit/tt.h"

#define PG_DSN_ENV "FLAIRGW_TEST_PG_DSN"

static char lite_path[512];

/* Two instances and a session behind their backs (fixtures, the lock,
 * the counts). On SQLite both instances are the one store. */
struct two {
	struct store *st[2];
	struct db *raw;
	int pg;
};

static int
mac_fn(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	(void)ctx;
	return crypto_generichash(mac, 32, msg, len, NULL, 0) == 0 ? 0 : FGW_ERR_CRYPTO;
}

static void
drop_sqlite_file(void)
{
	static const char *const ext[] = { "", "-wal", "-shm", "-journal" };
	char p[600];

	if (lite_path[0] == '\0')
		return;
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", lite_path, ext[i]);
		unlink(p);
	}
	lite_path[0] = '\0';
}

static void
two_close(struct two *t)
{
	if (t->st[1] != t->st[0])
		store_close(t->st[1]);
	store_close(t->st[0]);
	db_close(t->raw);
	memset(t, 0, sizeof(*t));
	drop_sqlite_file();
}

static int
two_open(struct two *t, int pg)
{
	struct store_opts o = { .sync_full = 0, .batch_max = 4, .audit_mac = mac_fn };
	const char *tmp = getenv("TMPDIR");
	struct pg_opts po = { .dsn = getenv(PG_DSN_ENV) };
	PGconn *c = NULL;
	sqlite3 *h = NULL;
	int fd;

	memset(t, 0, sizeof(*t));
	t->pg = pg;
	if (pg) {
		o.backend = STORE_POSTGRESQL;
		o.dsn = po.dsn;
		if (store_open(&o, &t->st[0]) != 0 || store_open(&o, &t->st[1]) != 0 ||
		    pg_connect(&po, &c) != 0 || db_wrap_pg(c, &t->raw) != 0)
			goto fail;
		/* A wait that never ends fails the case instead of hanging it. */
		if (db_exec(t->raw, "SET statement_timeout = 10000") != 0)
			goto fail;
		return 0;
	}
	snprintf(lite_path, sizeof(lite_path), "%s/fgw-test-races-XXXXXX",
	         tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if ((fd = mkstemp(lite_path)) < 0) {
		lite_path[0] = '\0';
		goto fail;
	}
	close(fd);
	o.path = lite_path;
	if (store_open(&o, &t->st[0]) != 0)
		goto fail;
	t->st[1] = t->st[0];
	if (sqlite3_open_v2(lite_path, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(h, 5000) != SQLITE_OK) {
		sqlite3_close(h);
		goto fail;
	}
	if (db_wrap_sqlite(h, 1, &t->raw) != 0)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "  cannot open the %s stores\n", pg ? "PostgreSQL" : "SQLite");
	two_close(t);
	return 1;
}

/* Runs sql on the raw session with ?1 = a, ?2 = b, ?3 = n. */
static int
exec3(struct db *db, const char *sql, const char *a, const char *b, int64_t n)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare_once(db, sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, a);
	db_bind_text(s, 2, b);
	db_bind_int64(s, 3, n);
	r = db_step(s);
	if (r != DB_DONE)
		fprintf(stderr, "  %s: %s\n", sql, db_errmsg(db));
	db_release(s);
	return r == DB_DONE ? 0 : FGW_ERR_DB;
}

/* The one number sql (?1 = a) reads; -1 on an error. */
static int64_t
count_of(struct db *db, const char *sql, const char *a)
{
	int64_t v;

	if (db_int64_of(db, sql, a, &v) != 0) {
		fprintf(stderr, "  %s: %s\n", sql, db_errmsg(db));
		return -1;
	}
	return v;
}

/* Sessions of this database other than raw waiting on a lock. */
static int64_t
lock_waiters(struct db *raw)
{
	return count_of(raw,
	                "SELECT count(*) FROM pg_stat_activity WHERE datname ="
	                " current_database() AND wait_event_type = 'Lock'"
	                " AND pid <> pg_backend_pid() AND ?1 <> ''",
	                "-");
}

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

/* A submitted job's rc (its done runs on the writer: no waker), or
 * FGW_ERR_TIMEOUT after 20 s. */
static int
wait_job(int submitted, struct wait *w)
{
	struct timespec ts = { 0, 1000000 };

	if (submitted != 0)
		return submitted;
	for (int i = 0; i < 20000 && !atomic_load(&w->done); i++)
		nanosleep(&ts, NULL);
	if (!atomic_load(&w->done))
		return FGW_ERR_TIMEOUT;
	return w->rc;
}

/* Submits job `which` (0 or 1) of a race to st. */
typedef int (*race_submit_fn)(struct store *st, int which, void *ctx, struct wait *w);

/* Runs job 0 on the first instance and job 1 on the second at once
 * (above) and puts their results in rc[]. lock_sql is the table lock the
 * raw session holds on PostgreSQL until both writers wait. */
static int
race(struct two *t, const char *lock_sql, race_submit_fn submit, void *ctx, int rc[2])
{
	struct timespec ts = { 0, 5000000 };
	struct wait w[2] = { 0 };
	int sub[2], locked = 0, r = 1;
	int64_t n = 0;

	if (t->pg) {
		if (db_exec(t->raw, "BEGIN") != 0 || db_exec(t->raw, lock_sql) != 0) {
			fprintf(stderr, "  %s: %s\n", lock_sql, db_errmsg(t->raw));
			goto out;
		}
		locked = 1;
	}
	sub[0] = submit(t->st[0], 0, ctx, &w[0]);
	sub[1] = submit(t->st[1], 1, ctx, &w[1]);
	if (t->pg) {
		for (int i = 0; i < 2000 && (n = lock_waiters(t->raw)) >= 0 && n < 2; i++)
			nanosleep(&ts, NULL);
		locked = 0;
		if (db_exec(t->raw, "COMMIT") != 0 || n != 2) {
			fprintf(stderr, "  %lld writers waited on a lock, not 2\n", (long long)n);
			(void)wait_job(sub[0], &w[0]);
			(void)wait_job(sub[1], &w[1]);
			goto out;
		}
	}
	rc[0] = wait_job(sub[0], &w[0]);
	rc[1] = wait_job(sub[1], &w[1]);
	r = 0;
out:
	if (locked)
		db_exec(t->raw, "ROLLBACK");
	return r;
}

/* Exactly one of rc[] is 0 and the other is want. */
static int
one_won(const int rc[2], int want)
{
	if ((rc[0] == 0 && rc[1] == want) || (rc[1] == 0 && rc[0] == want))
		return 1;
	fprintf(stderr, "  results %s and %s, expected one success and %s\n",
	        fgw_strerror(rc[0]), fgw_strerror(rc[1]), fgw_strerror(want));
	return 0;
}

/* Rows of an earlier run on the same PostgreSQL database go first. */
static int
forget(struct db *raw, const char *txn_or_customer)
{
	static const char *const sql[] = {
		"DELETE FROM refunds WHERE txn_id = ?1",
		"DELETE FROM txn_operations WHERE txn_id = ?1",
		"DELETE FROM transactions WHERE id = ?1",
		"DELETE FROM processor_methods WHERE customer_id = ?1",
	};
	int r = 0;

	for (size_t i = 0; r == 0 && i < sizeof(sql) / sizeof(sql[0]); i++)
		r = exec3(raw, sql[i], txn_or_customer, "", 0);
	return r;
}

static int
add_txn(struct db *raw, const char *id, const char *status)
{
	int r;

	if ((r = forget(raw, id)) != 0)
		return r;
	return exec3(raw,
	             "INSERT INTO transactions (id, client_id, amount, currency, status,"
	             " processor, created_at, updated_at) VALUES (?1, 'c1', ?3, 'EUR', ?2,"
	             " 'sandbox', 1, 1)",
	             id, status, 1000);
}

/* ---- pending operations (store/pendingops.c begin) ------------------------ */

static int
submit_op(struct store *st, int which, void *ctx, struct wait *w)
{
	struct store_pendingop *ops = ctx;
	return store_pendingop_begin(st, NULL, &ops[which], &ops[2 + which],
	                             &(struct store_commit){ .done = on_done, .arg = w });
}

/* Two refunds of 600 with different keys of a 1000 payment, one per
 * instance: together they are more than was captured, so one is
 * refused, wherever each runs. */
static int
refunds(int pg)
{
	struct store_pendingop ops[4];
	struct two t;
	int rc[2];

	TT_BEGIN;
	CHECK_EQ_INT(two_open(&t, pg), 0);
	CHECK_EQ_INT(add_txn(t.raw, "txn_race_rf", "succeeded"), 0);
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 2; i++) {
		ops[i].kind = STORE_OP_REFUND;
		snprintf(ops[i].id, sizeof(ops[i].id), "rf_race_%d", i);
		strcpy(ops[i].txn_id, "txn_race_rf");
		ops[i].amount = 600;
		ops[i].txn_amount = 1000;
		snprintf(ops[i].idempotency_key, sizeof(ops[i].idempotency_key), "key_race_%d",
		         i);
	}
	CHECK_EQ_INT(race(&t, "LOCK TABLE refunds IN SHARE MODE", submit_op, ops, rc), 0);
	CHECK(one_won(rc, FGW_ERR_TOO_LARGE));
	CHECK_EQ_INT(
	    count_of(t.raw, "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1",
	             "txn_race_rf"),
	    600);
end:
	two_close(&t);
	TT_END;
}

static int
submit_finish(struct store *st, int which, void *ctx, struct wait *w)
{
	struct store_pendingop *ops = ctx;
	return store_pendingop_finish(st, NULL, &ops[which], 1, &ops[2 + which],
	                              &(struct store_commit){ .done = on_done, .arg = w });
}

/* Two refunds of one payment that together refund all of it, their
 * processor answers recorded on two instances at once: both recorded,
 * and the payment ends refunded (each deciding from the sum it could see
 * left it partially refunded, or failed the second: a refund that
 * happened answered as an error). */
static int
refunds_finish(int pg)
{
	struct store_pendingop ops[4];
	struct two t;
	char st[24] = "";
	int rc[2];

	TT_BEGIN;
	CHECK_EQ_INT(two_open(&t, pg), 0);
	CHECK_EQ_INT(add_txn(t.raw, "txn_race_rff", "succeeded"), 0);
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 2; i++) {
		ops[i].kind = STORE_OP_REFUND;
		snprintf(ops[i].id, sizeof(ops[i].id), "rf_race_f_%d", i);
		strcpy(ops[i].txn_id, "txn_race_rff");
		ops[i].amount = i == 0 ? 600 : 400;
		ops[i].txn_amount = 1000;
		snprintf(ops[i].idempotency_key, sizeof(ops[i].idempotency_key), "key_race_f_%d",
		         i);
		CHECK_EQ_INT(exec3(t.raw,
		                   "INSERT INTO refunds (id, txn_id, amount, idempotency_key,"
		                   " created_at, status, updated_at) VALUES (?1, 'txn_race_rff',"
		                   " ?3, ?2, 1, 'pending', 1)",
		                   ops[i].id, ops[i].idempotency_key, ops[i].amount),
		             0);
	}
	CHECK_EQ_INT(race(&t, "LOCK TABLE transactions IN SHARE MODE", submit_finish, ops,
	                  rc),
	             0);
	CHECK_EQ_INT(rc[0], 0);
	CHECK_EQ_INT(rc[1], 0);
	CHECK_EQ_INT(db_text_of(t.raw, "SELECT status FROM transactions WHERE id = ?1",
	                        "txn_race_rff", st, sizeof(st)),
	             0);
	CHECK_STR(st, "refunded");
end:
	two_close(&t);
	TT_END;
}

static int
submit_event(struct store *st, int which, void *ctx, struct wait *w)
{
	struct store_refund_event *ev = ctx;
	return store_refund_event(st, NULL, &ev[which], &ev[2 + which],
	                          &(struct store_commit){ .done = on_done, .arg = w });
}

/* A payment refunded 100 through the gateway, then the processor's
 * charge.refunded twice (400, then 700 refunded in all), each delivered
 * to another instance at the same moment: 700 is refunded in all, not
 * the 100 plus both differences from the 100 each saw (1000, more than
 * the processor refunded). */
static int
refund_events(int pg)
{
	struct store_refund_event ev[4];
	struct two t;
	int rc[2];

	TT_BEGIN;
	CHECK_EQ_INT(two_open(&t, pg), 0);
	CHECK_EQ_INT(add_txn(t.raw, "txn_race_ev", "partially_refunded"), 0);
	CHECK_EQ_INT(
	    exec3(t.raw,
	          "INSERT INTO refunds (id, txn_id, amount, idempotency_key, created_at,"
	          " status, updated_at, processor_ref) VALUES ('rf_race_ev', ?1, 100,"
	          " ?2, 1, 'succeeded', 1, 're_race_ev')",
	          "txn_race_ev", "key_race_ev", 0),
	    0);
	memset(ev, 0, sizeof(ev));
	for (int i = 0; i < 2; i++) {
		strcpy(ev[i].txn_id, "txn_race_ev");
		snprintf(ev[i].event_id, sizeof(ev[i].event_id), "evt_race_%d", i);
		ev[i].refunded_total = i == 0 ? 400 : 700;
	}
	CHECK_EQ_INT(race(&t, "LOCK TABLE refunds IN SHARE MODE", submit_event, ev, rc), 0);
	/* The second in line may find nothing left to record. */
	CHECK(rc[0] == 0 || rc[0] == FGW_ERR_STATE);
	CHECK(rc[1] == 0 || rc[1] == FGW_ERR_STATE);
	CHECK_EQ_INT(
	    count_of(t.raw, "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1",
	             "txn_race_ev"),
	    700);
end:
	two_close(&t);
	TT_END;
}

/* A capture on one instance and a cancel on the other of one authorized
 * payment: one of them runs, the other is refused as an operation on a
 * payment that has one under way (409), not a database error (500). */
static int
capture_cancel(int pg)
{
	struct store_pendingop ops[4];
	struct two t;
	int rc[2];

	TT_BEGIN;
	CHECK_EQ_INT(two_open(&t, pg), 0);
	CHECK_EQ_INT(add_txn(t.raw, "txn_race_op", "authorized"), 0);
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 2; i++) {
		ops[i].kind = i == 0 ? STORE_OP_CAPTURE : STORE_OP_CANCEL;
		strcpy(ops[i].txn_id, "txn_race_op");
		snprintf(ops[i].idempotency_key, sizeof(ops[i].idempotency_key), "key_race_op_%d",
		         i);
	}
	CHECK_EQ_INT(race(&t, "LOCK TABLE txn_operations IN SHARE MODE", submit_op, ops, rc),
	             0);
	CHECK(one_won(rc, FGW_ERR_STATE));
	CHECK_EQ_INT(count_of(t.raw, "SELECT count(*) FROM txn_operations WHERE txn_id = ?1",
	                      "txn_race_op"),
	             1);
end:
	two_close(&t);
	TT_END;
}

/* ---- saved methods (store/methods.c) -------------------------------------- */

static int
submit_method(struct store *st, int which, void *ctx, struct wait *w)
{
	struct store_method *m = ctx;
	return store_method_save(st, NULL, &m[which], NULL, NULL, on_done, w);
}

static void
method_of(struct store_method *m, const char *customer, int i)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "pm_race_%s_%d", customer, i);
	snprintf(m->customer_id, sizeof(m->customer_id), "%s", customer);
	strcpy(m->processor, "sandbox");
	strcpy(m->processor_customer, "cus_sandbox");
	snprintf(m->processor_method, sizeof(m->processor_method), "card_%s_%d", customer, i);
	strcpy(m->brand, "visa");
	strcpy(m->last4, "4242");
	m->exp_month = 12;
	m->exp_year = 2030;
}

static const char methods_lock[] = "LOCK TABLE processor_methods IN SHARE MODE";

/* A customer's first two methods saved on two instances at once: both
 * saved, one of them the default. */
static int
methods_default(int pg)
{
	struct store_method m[2];
	struct two t;
	int rc[2];

	TT_BEGIN;
	CHECK_EQ_INT(two_open(&t, pg), 0);
	CHECK_EQ_INT(forget(t.raw, "cus_race_d"), 0);
	method_of(&m[0], "cus_race_d", 0);
	method_of(&m[1], "cus_race_d", 1);
	CHECK_EQ_INT(race(&t, methods_lock, submit_method, m, rc), 0);
	CHECK_EQ_INT(rc[0], 0);
	CHECK_EQ_INT(rc[1], 0);
	CHECK_EQ_INT(m[0].is_default + m[1].is_default, 1);
	CHECK_EQ_INT(count_of(t.raw,
	                      "SELECT count(*) FROM processor_methods WHERE customer_id = ?1"
	                      " AND is_default = 1",
	                      "cus_race_d"),
	             1);
end:
	two_close(&t);
	TT_END;
}

/* One place left under the per-customer limit and two saves on two
 * instances at once: one is saved, the other refused. */
static int
methods_limit(int pg)
{
	struct store_method m[2];
	struct two t;
	char id[40];
	int rc[2];

	TT_BEGIN;
	CHECK_EQ_INT(two_open(&t, pg), 0);
	CHECK_EQ_INT(forget(t.raw, "cus_race_l"), 0);
	for (int i = 0; i < STORE_METHODS_MAX - 1; i++) {
		snprintf(id, sizeof(id), "pm_race_l_old_%d", i);
		CHECK_EQ_INT(exec3(t.raw,
		                   "INSERT INTO processor_methods (id, customer_id, is_default,"
		                   " created_at, processor, processor_customer, processor_method,"
		                   " brand, last4, exp_month, exp_year) VALUES (?1, ?2, ?3, 1,"
		                   " 'sandbox', 'cus_sandbox', ?1, 'visa', '4242', 12, 2030)",
		                   id, "cus_race_l", i == 0),
		             0);
	}
	method_of(&m[0], "cus_race_l", 0);
	method_of(&m[1], "cus_race_l", 1);
	CHECK_EQ_INT(race(&t, methods_lock, submit_method, m, rc), 0);
	CHECK(one_won(rc, FGW_ERR_TOO_LARGE));
	CHECK_EQ_INT(count_of(t.raw,
	                      "SELECT count(*) FROM processor_methods WHERE customer_id = ?1",
	                      "cus_race_l"),
	             STORE_METHODS_MAX);
end:
	two_close(&t);
	TT_END;
}

#define BOTH(name)                        \
	static int test_##name##_sqlite(void) \
	{                                     \
		return name(0);                   \
	}                                     \
	static int test_##name##_pg(void)     \
	{                                     \
		return name(1);                   \
	}

BOTH(refunds)
BOTH(refunds_finish)
BOTH(refund_events)
BOTH(capture_cancel)
BOTH(methods_default)
BOTH(methods_limit)

#define CASE(name)                             \
	{ #name "_sqlite", test_##name##_sqlite }, \
	{                                          \
#name "_pg", test_##name##_pg          \
	}

static const struct tt_case all[] = {
	/* clang-format off */
	CASE(refunds),
	CASE(refunds_finish),
	CASE(refund_events),
	CASE(capture_cancel),
	CASE(methods_default),
	CASE(methods_limit),
	{ NULL, NULL },
	/* clang-format on */
};

int
main(int argc, char **argv)
{
	struct tt_case cases[sizeof(all) / sizeof(all[0])];
	const char *dsn = getenv(PG_DSN_ENV);
	int pg = dsn != NULL && *dsn != '\0';
	size_t i, n = 0;

	for (i = 0; all[i].name != NULL; i++) {
		size_t len = strlen(all[i].name);
		if (!pg && len > 3 && strcmp(all[i].name + len - 3, "_pg") == 0)
			continue;
		cases[n++] = all[i];
	}
	cases[n] = (struct tt_case){ NULL, NULL };
	return tt_run(cases, argc, argv);
}
