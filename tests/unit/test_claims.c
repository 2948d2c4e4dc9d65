/*
 * tests/unit/test_claims.c — claiming due rows (store/claim.h): every
 * background queue (webhook and mail outboxes, the reconciler's
 * transactions and pending refunds, captures and cancels) hands each due
 * row to one worker, across instances, and a lease that ran out hands it
 * to another.
 *
 * Every case runs on SQLite (a migrated file under TMPDIR) as NAME_sqlite
 * and, when FLAIRGW_TEST_PG_DSN names a database, on PostgreSQL as
 * NAME_pg (tests/integration/test_claims_pg.py starts a server and runs
 * this binary with it). Two connections to the one database stand for
 * two instances; on PostgreSQL the first also holds its claim open while
 * the second claims, as two instances claiming at the same moment do.
 */
#include <libpq-fe.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "core/err.h"
#include "core/util.h"
#include "pipeline/events.h"
#include "pipeline/pipeline.h"
#include "store/claim.h"
#include "store/db.h"
#include "store/mail.h"
#include "store/pendingops.h"
#include "store/pg.h"
#include "store/reconcile.h"
#include "store/schema.h"
#include "store/txnmoves.h"
#include "store/webhooks.h"
#include "tests/unit/tt.h"

#define PG_DSN_ENV "FLAIRGW_TEST_PG_DSN"
#define PG_SCHEMA "fgw_claims_test"
#define T0 1700000000000LL /* "now" of every case, ms */
#define LEASE 60000LL
#define N_ROWS 10

static char lite_path[512];
static int verbose;

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

static struct db *
open_sqlite(int first)
{
	const char *tmp = getenv("TMPDIR");
	sqlite3 *h = NULL;
	struct db *db = NULL;
	int fd;

	if (first) {
		snprintf(lite_path, sizeof(lite_path), "%s/fgw-test-claims-XXXXXX",
		         tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
		if ((fd = mkstemp(lite_path)) < 0) {
			lite_path[0] = '\0';
			return NULL;
		}
		close(fd);
	}
	if (sqlite3_open_v2(lite_path, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(h, 5000) != SQLITE_OK || (first && schema_migrate(h) != 0)) {
		sqlite3_close(h);
		return NULL;
	}
	if (db_wrap_sqlite(h, 1, &db) != 0)
		return NULL;
	return db;
}

/* A session in a schema of its own, migrated afresh by the first one. */
static struct db *
open_pg(int first)
{
	struct pg_opts o = { .dsn = getenv(PG_DSN_ENV) };
	PGconn *c = NULL;
	struct db *db = NULL;

	if (pg_connect(&o, &c) != 0)
		return NULL;
	if (db_wrap_pg(c, &db) != 0)
		return NULL;
	if ((first && (db_exec(db, "DROP SCHEMA IF EXISTS " PG_SCHEMA " CASCADE") != 0 ||
	               db_exec(db, "CREATE SCHEMA " PG_SCHEMA) != 0)) ||
	    db_exec(db, "SET search_path TO " PG_SCHEMA) != 0 ||
	    (first && pg_migrate(c) != 0) ||
	    /* A claim that waited for the other's locks would hang the case:
	     * it fails instead. */
	    db_exec(db, "SET statement_timeout = 5000") != 0) {
		fprintf(stderr, "  %s\n", db_errmsg(db));
		db_close(db);
		return NULL;
	}
	return db;
}

static int
is_pg(struct db *db)
{
	return db_kind(db) == DB_PG;
}

/* Runs sql with ?1 = a, ?2 = b, ?3 = n. */
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

/* Claims with fn on db at now (max rows of size each into rows), and
 * copies their ids (at id_off in a row) into ids. */
static void (*row_clear)(void *row); /* what a claimed row owns */

static int
claim(struct db *db, claim_fn fn, int kind, int64_t now, int max, void *rows, size_t size,
      size_t id_off, char ids[][40], int *n)
{
	const struct claim_args a = { .now = now,
		                          .before = now - 1000,
		                          .lease_until = now + LEASE,
		                          .max = max,
		                          .kind = kind };
	int r;

	memset(rows, 0, (size_t)max * size);
	if ((r = fn(db, &a, rows, n)) != 0) {
		fprintf(stderr, "  claim: %s (%s)\n", fgw_strerror(r), db_errmsg(db));
		return r;
	}
	for (int i = 0; i < *n; i++) {
		memcpy(ids[i], (char *)rows + (size_t)i * size + id_off, 40);
		if (verbose)
			fprintf(stderr, "  claimed at %lld: %s\n", (long long)(now - T0), ids[i]);
		if (row_clear != NULL)
			row_clear((char *)rows + (size_t)i * size);
	}
	return 0;
}

static int
disjoint(char a[][40], int na, char b[][40], int nb)
{
	for (int i = 0; i < na; i++)
		for (int j = 0; j < nb; j++)
			if (strcmp(a[i], b[j]) == 0) {
				fprintf(stderr, "  %s claimed twice\n", a[i]);
				return 0;
			}
	return 1;
}

/* One queue's claims: rows due are 10, besides rows not due; the first
 * instance claims 6 (on PostgreSQL, still uncommitted while the second
 * claims), the second everything it can: the other 4, none twice. Until
 * the lease ends nobody gets them; after, they are claimed again. */
static int
check_queue(struct db *a, struct db *b, claim_fn fn, int kind, size_t size, size_t id_off,
            size_t next_off, void (*clear)(void *row))
{
	char ids_a[N_ROWS][40], ids_b[N_ROWS][40], ids_c[N_ROWS][40];
	void *rows = calloc(N_ROWS, size);
	int na = 0, nb = 0, nc = 0;
	int64_t next;

	TT_BEGIN;
	row_clear = clear;
	CHECK(rows != NULL);
	if (is_pg(a))
		CHECK_EQ_INT(db_exec(a, "BEGIN"), 0);
	CHECK_EQ_INT(claim(a, fn, kind, T0, 6, rows, size, id_off, ids_a, &na), 0);
	CHECK_EQ_INT(na, 6);
	if (next_off != 0) {
		memcpy(&next, (char *)rows + next_off, sizeof(next));
		CHECK_EQ_INT(next, T0 + LEASE); /* the lease end is the token */
	}
	CHECK_EQ_INT(claim(b, fn, kind, T0, N_ROWS, rows, size, id_off, ids_b, &nb), 0);
	if (is_pg(a))
		CHECK_EQ_INT(db_exec(a, "COMMIT"), 0);
	CHECK_EQ_INT(nb, N_ROWS - 6);
	CHECK(disjoint(ids_a, na, ids_b, nb));
	/* Committed now: still nothing for anyone while the leases run. */
	CHECK_EQ_INT(claim(b, fn, kind, T0 + LEASE - 1, N_ROWS, rows, size, id_off, ids_c,
	                   &nc),
	             0);
	CHECK_EQ_INT(nc, 0);
	CHECK_EQ_INT(claim(a, fn, kind, T0 + 1, N_ROWS, rows, size, id_off, ids_c, &nc), 0);
	CHECK_EQ_INT(nc, 0);
	/* The claimers died: once the lease is over, every row is due again
	 * and one claim takes them all. */
	CHECK_EQ_INT(claim(b, fn, kind, T0 + LEASE, N_ROWS, rows, size, id_off, ids_c, &nc),
	             0);
	CHECK_EQ_INT(nc, N_ROWS);
end:
	if (is_pg(a) && db_in_txn(a))
		db_exec(a, "ROLLBACK");
	row_clear = NULL;
	free(rows);
	TT_END;
}

static int
add_txn(struct db *db, const char *id, const char *status, int64_t updated_at)
{
	return exec3(db,
	             "INSERT INTO transactions (id, client_id, amount, currency, status,"
	             " processor, created_at, updated_at) VALUES (?1, 'c1', 1000, 'EUR', ?2,"
	             " 'sandbox', ?3, ?3)",
	             id, status, updated_at);
}

static void
clear_webhook(void *row)
{
	store_outbox_row_clear(row);
}

static int
c_webhooks(struct db *a, struct db *b)
{
	struct store_outbox_row rows[N_ROWS];
	char id[40];
	int n = 0, r;

	TT_BEGIN;
	for (int i = 0; i < N_ROWS + 2; i++) {
		snprintf(id, sizeof(id), "whd_%02d", i);
		/* Row 10 is not due yet; row 11 was delivered. */
		CHECK_EQ_INT(exec3(a,
		                   "INSERT INTO webhook_outbox (id, endpoint_url, event_id,"
		                   " event_type, payload, status, attempts, next_attempt_at,"
		                   " created_at, updated_at) VALUES (?1, 'http://127.0.0.1:1/',"
		                   " 'evt_1', 'transaction.succeeded', '{\"n\":1}', ?2, 0, ?3, 1,"
		                   " 1)",
		                   id, i == 11 ? "delivered" : "pending",
		                   i == 10 ? T0 + 10 * LEASE : T0),
		             0);
	}
	CHECK_EQ_INT(check_queue(a, b, store_outbox_claim_run, 0,
	                         sizeof(struct store_outbox_row),
	                         offsetof(struct store_outbox_row, id),
	                         offsetof(struct store_outbox_row, next_attempt_at),
	                         clear_webhook),
	             0);
	/* The payload comes with the claim (the last column, read per row). */
	r = store_outbox_claim_run(a,
	                           &(struct claim_args){ .now = T0 + 3 * LEASE,
	                                                 .lease_until = T0 + 4 * LEASE,
	                                                 .max = 1 },
	                           rows, &n);
	CHECK_EQ_INT(r, 0);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(rows[0].payload, "{\"n\":1}");
	clear_webhook(&rows[0]);
end:
	TT_END;
}

static void
clear_mail(void *row)
{
	store_mail_row_clear(row);
}

static int
c_mail(struct db *a, struct db *b)
{
	char id[40];

	TT_BEGIN;
	for (int i = 0; i < N_ROWS + 2; i++) {
		snprintf(id, sizeof(id), "mail_%02d", i);
		CHECK_EQ_INT(
		    exec3(a,
		          "INSERT INTO mail_outbox (id, kind, audience, mail_from,"
		          " rcpt_to, subject, message, status, attempts, next_attempt_at,"
		          " created_at, updated_at) VALUES (?1, 'receipt', 'customer',"
		          " 'a@example.com', 'b@example.com', 's', 'm', ?2, 0, ?3, 1, 1)",
		          id, i == 11 ? "sent" : "pending", i == 10 ? T0 + 10 * LEASE : T0),
		    0);
	}
	CHECK_EQ_INT(check_queue(a, b, store_mail_claim_run, 0, sizeof(struct store_mail_row),
	                         offsetof(struct store_mail_row, id),
	                         offsetof(struct store_mail_row, next_attempt_at),
	                         clear_mail),
	             0);
end:
	TT_END;
}

/* Payments whose outcome is unknown: processing, and posting past the
 * grace period (a posting row updated within it is the live path's). */
static int
c_unresolved(struct db *a, struct db *b)
{
	char id[40];

	TT_BEGIN;
	for (int i = 0; i < N_ROWS; i++) {
		snprintf(id, sizeof(id), "txn_%02d", i);
		CHECK_EQ_INT(add_txn(a, id, i % 2 ? "processing" : "posting", T0 - 5000), 0);
	}
	CHECK_EQ_INT(add_txn(a, "txn_live", "posting", T0 + 10 * LEASE), 0); /* live */
	CHECK_EQ_INT(add_txn(a, "txn_done", "succeeded", 1), 0);             /* settled */
	CHECK_EQ_INT(add_txn(a, "txn_3ds", "requires_action", 1), 0);
	CHECK_EQ_INT(check_queue(a, b, store_unresolved_claim_run, 0,
	                         sizeof(struct store_unresolved),
	                         offsetof(struct store_unresolved, id), 0, NULL),
	             0);
end:
	TT_END;
}

static int
c_awaiting_action(struct db *a, struct db *b)
{
	char id[40];

	TT_BEGIN;
	for (int i = 0; i < N_ROWS; i++) {
		snprintf(id, sizeof(id), "txn_%02d", i);
		CHECK_EQ_INT(add_txn(a, id, "requires_action", T0), 0);
	}
	CHECK_EQ_INT(add_txn(a, "txn_p", "processing", 1), 0);
	CHECK_EQ_INT(check_queue(a, b, store_awaiting_action_claim_run, 0,
	                         sizeof(struct store_unresolved),
	                         offsetof(struct store_unresolved, id), 0, NULL),
	             0);
end:
	TT_END;
}

static int
c_refunds(struct db *a, struct db *b)
{
	char id[40];

	TT_BEGIN;
	CHECK_EQ_INT(add_txn(a, "txn_r", "succeeded", 1), 0);
	for (int i = 0; i < N_ROWS + 1; i++) {
		snprintf(id, sizeof(id), "rf_%02d", i);
		CHECK_EQ_INT(exec3(a,
		                   "INSERT INTO refunds (id, txn_id, amount, idempotency_key,"
		                   " created_at, status, updated_at) VALUES (?1, 'txn_r', 10,"
		                   " ?1, 1, ?2, ?3)",
		                   id, i == N_ROWS ? "succeeded" : "pending", 1),
		             0);
	}
	CHECK_EQ_INT(check_queue(a, b, store_pendingop_claim_run, STORE_OP_REFUND,
	                         sizeof(struct store_pendingop_due),
	                         offsetof(struct store_pendingop_due, id), 0, NULL),
	             0);
end:
	TT_END;
}

static int
c_captures(struct db *a, struct db *b)
{
	char id[40];

	TT_BEGIN;
	for (int i = 0; i < N_ROWS + 1; i++) {
		snprintf(id, sizeof(id), "txn_%02d", i);
		CHECK_EQ_INT(add_txn(a, id, "authorized", 1), 0);
		/* The eleventh is a cancel: not the captures' queue. */
		CHECK_EQ_INT(exec3(a,
		                   "INSERT INTO txn_operations (txn_id, op, attempt,"
		                   " idempotency_key, status, created_at, updated_at)"
		                   " VALUES (?1, ?2, 1, ?1, 'pending', ?3, ?3)",
		                   id, i == N_ROWS ? "cancel" : "capture", 1),
		             0);
	}
	CHECK_EQ_INT(check_queue(a, b, store_pendingop_claim_run, STORE_OP_CAPTURE,
	                         sizeof(struct store_pendingop_due),
	                         offsetof(struct store_pendingop_due, txn_id), 0, NULL),
	             0);
end:
	TT_END;
}

/* ---- the lease as the claim's token, through the store's jobs ------------ */

static int
mac_fn(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	(void)ctx;
	return crypto_generichash(mac, 32, msg, len, NULL, 0) == 0 ? 0 : FGW_ERR_CRYPTO;
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
 * FGW_ERR_TIMEOUT after 10 s. */
static int
wait_job(int submitted, struct wait *w)
{
	struct timespec ts = { 0, 1000000 };

	if (submitted != 0)
		return submitted;
	for (int i = 0; i < 10000 && !atomic_load(&w->done); i++)
		nanosleep(&ts, NULL);
	if (!atomic_load(&w->done))
		return FGW_ERR_TIMEOUT;
	atomic_store(&w->done, 0);
	return w->rc;
}

/* A sender whose lease ran out, and whose row another sender claimed
 * since, records nothing: the row is the other's now. */
/* Empties the outbox tables of the PostgreSQL store's database (its
 * public schema, migrated by store_open): rows of an earlier run would be
 * claimed too. */
static int
pg_clean_outboxes(void)
{
	struct pg_opts po = { .dsn = getenv(PG_DSN_ENV) };
	PGconn *c = NULL;
	struct db *db = NULL;
	int r;

	if (pg_connect(&po, &c) != 0 || db_wrap_pg(c, &db) != 0)
		return FGW_ERR_DB;
	r = db_exec(db, "DELETE FROM webhook_attempts");
	if (r == 0)
		r = db_exec(db, "DELETE FROM webhook_outbox");
	if (r == 0)
		r = db_exec(db, "DELETE FROM mail_outbox");
	db_close(db);
	return r;
}

static int
store_lease_is_the_token(int pg)
{
	struct store_opts o = { .sync_full = 0, .batch_max = 4, .audit_mac = mac_fn };
	struct store *st = NULL;
	struct store_outbox_row row, got[2];
	struct store_outbox_attempt at;
	struct store_mail_row mail, mgot[2];
	struct wait w = { 0 };
	int n = 0, fd;

	TT_BEGIN;
	memset(got, 0, sizeof(got));
	memset(mgot, 0, sizeof(mgot));
	if (pg) {
		o.backend = STORE_POSTGRESQL;
		o.dsn = getenv(PG_DSN_ENV);
	} else {
		snprintf(lite_path, sizeof(lite_path), "%s/fgw-test-claims-XXXXXX",
		         getenv("TMPDIR") != NULL && *getenv("TMPDIR") != '\0' ? getenv("TMPDIR")
		                                                               : "/tmp");
		CHECK((fd = mkstemp(lite_path)) >= 0);
		close(fd);
		o.path = lite_path;
	}
	CHECK_EQ_INT(store_open(&o, &st), 0);
	if (pg)
		CHECK_EQ_INT(pg_clean_outboxes(), 0);
	memset(&row, 0, sizeof(row));
	strcpy(row.id, "whd_token");
	strcpy(row.endpoint_url, "http://127.0.0.1:1/");
	strcpy(row.event_id, "evt_token");
	strcpy(row.event_type, "transaction.succeeded");
	row.payload = "{}";
	row.next_attempt_at = T0;
	CHECK_EQ_INT(wait_job(store_outbox_enqueue(st, NULL, &row, 1, NULL, 0, on_done, &w),
	                      &w),
	             0);
	/* The first sender claims it, stalls past its lease; the second
	 * claims it then. */
	CHECK_EQ_INT(wait_job(store_outbox_claim(st, NULL, T0, T0 + LEASE, got, 2, &n,
	                                         on_done, &w),
	                      &w),
	             0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(got[0].next_attempt_at, T0 + LEASE);
	store_outbox_row_clear(&got[0]);
	CHECK_EQ_INT(wait_job(store_outbox_claim(st, NULL, T0 + LEASE, T0 + 2 * LEASE, got, 2,
	                                         &n, on_done, &w),
	                      &w),
	             0);
	CHECK_EQ_INT(n, 1);
	store_outbox_row_clear(&got[0]);
	memset(&at, 0, sizeof(at));
	strcpy(at.outbox_id, "whd_token");
	strcpy(at.outcome, "delivered");
	at.at = T0;
	at.http_status = 200;
	at.lease_until = T0 + LEASE; /* the first one's answer, late */
	CHECK_EQ_INT(wait_job(store_outbox_attempt(st, NULL, &at, NULL, 0, on_done, &w), &w),
	             FGW_ERR_STATE);
	at.lease_until = T0 + 2 * LEASE; /* the second one's */
	CHECK_EQ_INT(wait_job(store_outbox_attempt(st, NULL, &at, NULL, 0, on_done, &w), &w),
	             0);

	/* The same for mail. */
	memset(&mail, 0, sizeof(mail));
	strcpy(mail.id, "mail_token");
	strcpy(mail.kind, "receipt");
	strcpy(mail.audience, "customer");
	strcpy(mail.mail_from, "a@example.com");
	strcpy(mail.rcpt_to, "b@example.com");
	mail.message = "m";
	CHECK_EQ_INT(wait_job(store_mail_enqueue(st, NULL, &mail, NULL, 0, on_done, &w), &w),
	             0);
	/* Queued due now (the real clock): claimed a while after. */
	CHECK_EQ_INT(wait_job(store_mail_claim(st, NULL, T0 * 2, T0 * 2 + LEASE, mgot, 2, &n,
	                                       on_done, &w),
	                      &w),
	             0);
	CHECK_EQ_INT(n, 1);
	store_mail_row_clear(&mgot[0]);
	CHECK_EQ_INT(wait_job(store_mail_claim(st, NULL, T0 * 2 + LEASE, T0 * 2 + 2 * LEASE,
	                                       mgot, 2, &n, on_done, &w),
	                      &w),
	             0);
	CHECK_EQ_INT(n, 1);
	store_mail_row_clear(&mgot[0]);
	CHECK_EQ_INT(wait_job(store_mail_attempt_claimed(st, NULL, "mail_token",
	                                                 T0 * 2 + LEASE, "sent", 0, NULL,
	                                                 NULL, 0, on_done, &w),
	                      &w),
	             FGW_ERR_STATE);
	CHECK_EQ_INT(wait_job(store_mail_attempt_claimed(st, NULL, "mail_token",
	                                                 T0 * 2 + 2 * LEASE, "sent", 0, NULL,
	                                                 NULL, 0, on_done, &w),
	                      &w),
	             0);
end:
	store_close(st);
	drop_sqlite_file();
	TT_END;
}

static int
test_store_lease_is_the_token_sqlite(void)
{
	return store_lease_is_the_token(0);
}

static int
test_store_lease_is_the_token_pg(void)
{
	return store_lease_is_the_token(1);
}

/* ---- each move announced once, across instances ------------------------ */

/* A listener like the webhook one: each time it hears a move it queues an
 * outbox row of a new id, so a move announced twice leaves two rows. */
struct heard {
	int queued;    /* listener jobs submitted */
	int completed; /* their done ran */
	int ok;        /* ... and committed */
	int skipped;   /* ... not run: another publish took the move */
	int n;         /* ids handed out */
};

static void
heard_done(void *arg, int rc)
{
	struct heard *h = arg;

	h->completed++;
	if (rc == 0)
		h->ok++;
	else if (rc == FGW_ERR_EXISTS)
		h->skipped++;
	else
		fprintf(stderr, "  listener job: %s\n", fgw_strerror(rc));
}

static void
outbox_listener(void *ctx, const struct pipeline_env *env,
                const struct store_txn_row *row)
{
	struct heard *h = ctx;
	struct store_outbox_row o;

	memset(&o, 0, sizeof(o));
	snprintf(o.id, sizeof(o.id), "whd_%.20s_%d", row->id, h->n++);
	strcpy(o.endpoint_url, "http://127.0.0.1:1/");
	snprintf(o.event_id, sizeof(o.event_id), "evt_%d", h->n);
	snprintf(o.event_type, sizeof(o.event_type), "transaction.%s", row->status);
	fgw_strlcpy(o.txn_id, row->id, sizeof(o.txn_id));
	o.payload = "{}";
	o.next_attempt_at = T0;
	if (store_outbox_enqueue(env->store, env->waker, &o, 1, NULL, 0, heard_done, h) == 0)
		h->queued++;
}

/* A connection to the stores' own database (PostgreSQL: the public
 * schema store_open migrated). */
static struct db *
open_raw(int pg)
{
	struct pg_opts po = { .dsn = getenv(PG_DSN_ENV) };
	PGconn *c = NULL;
	sqlite3 *h = NULL;
	struct db *db = NULL;

	if (pg)
		return pg_connect(&po, &c) == 0 && db_wrap_pg(c, &db) == 0 ? db : NULL;
	if (sqlite3_open_v2(lite_path, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(h, 5000) != SQLITE_OK || db_wrap_sqlite(h, 1, &db) != 0) {
		sqlite3_close(h);
		return NULL;
	}
	return db;
}

static int
exec1(struct db *db, const char *sql, const char *a)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare_once(db, sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, a);
	r = db_step(s) == DB_DONE ? 0 : FGW_ERR_DB;
	db_release(s);
	return r;
}

static int64_t
count_of(struct db *db, const char *sql, const char *a)
{
	int64_t v = -1;

	return db_int64_of(db, sql, a, &v) == 0 ? v : -1;
}

/* Two instances (two stores on one database, each with its reactor's
 * loop) announce the same move at once, as a live publish and another
 * instance's replay of it do: a third session holds the move's row (or,
 * on SQLite, the write lock) so that both groups are queued before
 * either commits. The listener's row is queued once, the other group's
 * listener job is not run, and the move's row is gone. */
static int
move_announced_once(int pg)
{
	struct store_opts o = { .sync_full = 0, .batch_max = 4, .audit_mac = mac_fn };
	struct store *st[2] = { NULL, NULL };
	struct event_base *base[2] = { NULL, NULL };
	struct store_waker *w[2] = { NULL, NULL };
	struct pipeline_env env[2];
	struct heard h = { 0 };
	struct store_txn_row row;
	struct db *raw = NULL, *locker = NULL;
	struct timespec ts = { 0, 1000000 };
	const char *id = pg ? "txn_move_pg" : "txn_move_lite";
	int fd;

	TT_BEGIN;
	memset(env, 0, sizeof(env));
	if (pg) {
		o.backend = STORE_POSTGRESQL;
		o.dsn = getenv(PG_DSN_ENV);
	} else {
		snprintf(lite_path, sizeof(lite_path), "%s/fgw-test-claims-XXXXXX",
		         getenv("TMPDIR") != NULL && *getenv("TMPDIR") != '\0' ? getenv("TMPDIR")
		                                                               : "/tmp");
		CHECK((fd = mkstemp(lite_path)) >= 0);
		close(fd);
		o.path = lite_path;
	}
	CHECK_EQ_INT(evthread_use_pthreads(), 0);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ_INT(store_open(&o, &st[i]), 0);
		CHECK((base[i] = event_base_new()) != NULL);
		CHECK_EQ_INT(store_waker_new(st[i], base[i], &w[i]), 0);
		env[i].base = base[i];
		env[i].store = st[i];
		env[i].waker = w[i];
	}
	CHECK((raw = open_raw(pg)) != NULL);
	CHECK((locker = open_raw(pg)) != NULL);
	CHECK_EQ_INT(exec1(raw, "DELETE FROM webhook_outbox WHERE txn_id = ?1", id), 0);
	CHECK_EQ_INT(exec1(raw, "DELETE FROM transactions WHERE id = ?1", id), 0);
	CHECK_EQ_INT(exec1(raw, "DELETE FROM txn_moves WHERE txn_id = ?1", id), 0);
	/* The move: the database writes its row with the state. */
	CHECK_EQ_INT(add_txn(raw, id, "succeeded", T0), 0);
	CHECK_EQ_INT(count_of(raw, "SELECT count(*) FROM txn_moves WHERE txn_id = ?1", id),
	             1);

	txn_events_reset();
	CHECK_EQ_INT(txn_events_subscribe(outbox_listener, &h), 0);
	memset(&row, 0, sizeof(row));
	fgw_strlcpy(row.id, id, sizeof(row.id));
	strcpy(row.client_id, "c1");
	strcpy(row.status, "succeeded");
	if (pg) {
		CHECK_EQ_INT(db_exec(locker, "BEGIN"), 0);
		CHECK_EQ_INT(db_exec(locker,
		                     "SELECT 1 FROM txn_moves WHERE txn_id = 'txn_move_pg'"
		                     " FOR UPDATE"),
		             0);
	} else
		CHECK_EQ_INT(db_exec(locker, "BEGIN IMMEDIATE"), 0);
	txn_events_publish(&env[0], &row);
	txn_events_publish(&env[1], &row);
	CHECK_EQ_INT(h.queued, 2);
	/* Both groups wait behind the third session; then it lets go. */
	for (int i = 0; i < 300; i++) {
		for (int k = 0; k < 2; k++)
			event_base_loop(base[k], EVLOOP_NONBLOCK);
		nanosleep(&ts, NULL);
	}
	CHECK_EQ_INT(h.completed, 0);
	CHECK_EQ_INT(db_exec(locker, "COMMIT"), 0);
	for (int i = 0; i < 10000 && h.completed < 2; i++) {
		for (int k = 0; k < 2; k++)
			event_base_loop(base[k], EVLOOP_NONBLOCK);
		nanosleep(&ts, NULL);
	}
	CHECK_EQ_INT(h.completed, 2);
	CHECK_EQ_INT(h.ok, 1);
	CHECK_EQ_INT(h.skipped, 1);
	CHECK_EQ_INT(count_of(raw, "SELECT count(*) FROM webhook_outbox WHERE txn_id = ?1",
	                      id),
	             1);
	CHECK_EQ_INT(count_of(raw, "SELECT count(*) FROM txn_moves WHERE txn_id = ?1", id),
	             0);
	/* News that is no move (a second partial refund) still reaches the
	 * listeners: there is no row to take. */
	h.completed = h.ok = h.skipped = 0;
	txn_events_publish_news(&env[0], &row);
	for (int i = 0; i < 10000 && h.completed < 1; i++) {
		event_base_loop(base[0], EVLOOP_NONBLOCK);
		nanosleep(&ts, NULL);
	}
	CHECK_EQ_INT(h.ok, 1);
	CHECK_EQ_INT(count_of(raw, "SELECT count(*) FROM webhook_outbox WHERE txn_id = ?1",
	                      id),
	             2);
end:
	txn_events_reset();
	if (locker != NULL && db_in_txn(locker))
		db_exec(locker, "ROLLBACK");
	db_close(locker);
	db_close(raw);
	for (int i = 0; i < 2; i++) {
		store_close(st[i]);
		store_waker_free(w[i]);
		if (base[i] != NULL)
			event_base_free(base[i]);
	}
	drop_sqlite_file();
	TT_END;
}

/* One done per job, its rc kept. */
struct rcs {
	int n;
	int rc[8];
};

static void
rc_done(void *arg, int rc)
{
	struct rcs *k = arg;

	if (k->n < 8)
		k->rc[k->n] = rc;
	k->n++;
}

static int
queue_outbox(struct store *st, struct store_waker *w, const char *id, struct rcs *k)
{
	struct store_outbox_row o;

	memset(&o, 0, sizeof(o));
	fgw_strlcpy(o.id, id, sizeof(o.id));
	strcpy(o.endpoint_url, "http://127.0.0.1:1/");
	fgw_strlcpy(o.event_id, id, sizeof(o.event_id));
	strcpy(o.event_type, "transaction.succeeded");
	strcpy(o.txn_id, "txn_guard");
	o.payload = "{}";
	o.next_attempt_at = T0;
	return store_outbox_enqueue(st, w, &o, 1, NULL, 0, rc_done, k);
}

/* A guard that fails skips the rest of its own group only: two groups
 * and a lone job committed in one batch (queued while the writer waits
 * behind another session), the first group's guard finding no move. */
static int
guard_skips_only_its_group(int pg)
{
	struct store_opts o = { .sync_full = 0, .batch_max = 8, .audit_mac = mac_fn };
	struct store *st = NULL;
	struct event_base *base = NULL;
	struct store_waker *w = NULL;
	struct db *raw = NULL, *locker = NULL;
	struct rcs first = { 0 }, k1 = { 0 }, k2 = { 0 }, lone = { 0 };
	struct timespec ts = { 0, 1000000 };
	int fd;

	TT_BEGIN;
	if (pg) {
		o.backend = STORE_POSTGRESQL;
		o.dsn = getenv(PG_DSN_ENV);
	} else {
		snprintf(lite_path, sizeof(lite_path), "%s/fgw-test-claims-XXXXXX",
		         getenv("TMPDIR") != NULL && *getenv("TMPDIR") != '\0' ? getenv("TMPDIR")
		                                                               : "/tmp");
		CHECK((fd = mkstemp(lite_path)) >= 0);
		close(fd);
		o.path = lite_path;
	}
	CHECK_EQ_INT(evthread_use_pthreads(), 0);
	CHECK_EQ_INT(store_open(&o, &st), 0);
	CHECK((base = event_base_new()) != NULL);
	CHECK_EQ_INT(store_waker_new(st, base, &w), 0);
	CHECK((raw = open_raw(pg)) != NULL);
	CHECK((locker = open_raw(pg)) != NULL);
	CHECK_EQ_INT(exec1(raw, "DELETE FROM webhook_outbox WHERE txn_id = ?1", "txn_guard"),
	             0);
	CHECK_EQ_INT(exec1(raw, "DELETE FROM transactions WHERE id LIKE ?1", "txn_guard%"),
	             0);
	CHECK_EQ_INT(exec1(raw, "DELETE FROM txn_moves WHERE txn_id LIKE ?1", "txn_guard%"),
	             0);
	CHECK_EQ_INT(add_txn(raw, "txn_guard0", "succeeded", T0), 0);
	CHECK_EQ_INT(add_txn(raw, "txn_guard2", "succeeded", T0), 0);
	/* The writer's first job waits behind the locker; the rest queue up
	 * meanwhile and commit in the next batch. */
	if (pg) {
		CHECK_EQ_INT(db_exec(locker, "BEGIN"), 0);
		CHECK_EQ_INT(db_exec(locker, "SELECT 1 FROM txn_moves WHERE txn_id = 'txn_guard0'"
		                             " FOR UPDATE"),
		             0);
	} else {
		CHECK_EQ_INT(db_exec(locker, "BEGIN IMMEDIATE"), 0);
	}
	CHECK_EQ_INT(store_txn_moves_done(st, w, "txn_guard0", "succeeded", rc_done, &first),
	             0);
	for (int i = 0; i < 200; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		nanosleep(&ts, NULL);
	}
	store_group_begin(w);
	CHECK_EQ_INT(store_txn_moves_take(st, w, "txn_guard1", "succeeded", rc_done, &k1), 0);
	CHECK_EQ_INT(queue_outbox(st, w, "whd_guard_1", &k1), 0);
	store_group_end(st, w);
	store_group_begin(w);
	CHECK_EQ_INT(store_txn_moves_take(st, w, "txn_guard2", "succeeded", rc_done, &k2), 0);
	CHECK_EQ_INT(queue_outbox(st, w, "whd_guard_2", &k2), 0);
	store_group_end(st, w);
	CHECK_EQ_INT(queue_outbox(st, w, "whd_guard_lone", &lone), 0);
	CHECK_EQ_INT(first.n, 0);
	CHECK_EQ_INT(db_exec(locker, "COMMIT"), 0);
	for (int i = 0; i < 10000 && (first.n + k1.n + k2.n + lone.n) < 6; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		nanosleep(&ts, NULL);
	}
	CHECK_EQ_INT(first.n, 1);
	CHECK_EQ_INT(first.rc[0], 0);
	CHECK_EQ_INT(k1.n, 2);
	CHECK_EQ_INT(k1.rc[0], FGW_ERR_NOT_FOUND); /* no such move */
	CHECK_EQ_INT(k1.rc[1], FGW_ERR_EXISTS);    /* not run */
	CHECK_EQ_INT(k2.n, 2);
	CHECK_EQ_INT(k2.rc[0], 0);
	CHECK_EQ_INT(k2.rc[1], 0);
	CHECK_EQ_INT(lone.n, 1);
	CHECK_EQ_INT(lone.rc[0], 0);
	CHECK_EQ_INT(count_of(raw, "SELECT count(*) FROM webhook_outbox WHERE txn_id = ?1",
	                      "txn_guard"),
	             2);
	CHECK_EQ_INT(count_of(raw, "SELECT count(*) FROM webhook_outbox WHERE id = ?1",
	                      "whd_guard_1"),
	             0);
	CHECK_EQ_INT(count_of(raw, "SELECT count(*) FROM txn_moves WHERE txn_id LIKE ?1",
	                      "txn_guard%"),
	             0);
end:
	if (locker != NULL && db_in_txn(locker))
		db_exec(locker, "ROLLBACK");
	db_close(locker);
	db_close(raw);
	store_close(st);
	store_waker_free(w);
	if (base != NULL)
		event_base_free(base);
	drop_sqlite_file();
	TT_END;
}

static int
test_guard_skips_only_its_group_sqlite(void)
{
	return guard_skips_only_its_group(0);
}

static int
test_guard_skips_only_its_group_pg(void)
{
	return guard_skips_only_its_group(1);
}

static int
test_move_announced_once_sqlite(void)
{
	return move_announced_once(0);
}

static int
test_move_announced_once_pg(void)
{
	return move_announced_once(1);
}

/* A store on this case's database (lite_path or the DSN), as instance id
 * (NULL: none); NULL when it does not open. */
static struct store *
open_instance(int pg, const char *id)
{
	struct store_opts o = {
		.sync_full = 0, .batch_max = 4, .audit_mac = mac_fn, .instance_id = id
	};
	struct store *st = NULL;

	if (pg) {
		o.backend = STORE_POSTGRESQL;
		o.dsn = getenv(PG_DSN_ENV);
	} else {
		o.path = lite_path;
	}
	return store_open(&o, &st) == 0 ? st : NULL;
}

/* Claims the due webhook and mail rows with st at the real clock's now:
 * how many of each, and the first webhook's id into first. */
static int
claim_both(struct store *st, int *nw, int *nm, char first[40])
{
	struct store_outbox_row got[4];
	struct store_mail_row mgot[4];
	struct wait w = { 0 };
	int64_t now = fgw_now_ms();
	int r;

	*nw = *nm = 0;
	first[0] = '\0';
	if ((r = wait_job(store_outbox_claim(st, NULL, now, now + LEASE, got, 4, nw, on_done,
	                                     &w),
	                  &w)) != 0)
		return r;
	if (*nw > 0)
		memcpy(first, got[0].id, 40);
	for (int i = 0; i < *nw; i++)
		store_outbox_row_clear(&got[i]);
	if ((r = wait_job(store_mail_claim(st, NULL, now, now + LEASE, mgot, 4, nm, on_done,
	                                   &w),
	                  &w)) != 0)
		return r;
	for (int i = 0; i < *nm; i++)
		store_mail_row_clear(&mgot[i]);
	return 0;
}

/* An instance that stopped with rows claimed (a crash: nothing recorded)
 * finds them due at once when it starts again with its identity, not
 * when their leases end; another instance does not; a row given a backoff
 * stays due when the backoff says. On PostgreSQL a second live process
 * with the same identity (a copied data_dir) releases nothing. */
static int
own_claims_released_at_open(int pg)
{
	struct store *a = NULL, *b = NULL;
	struct store_outbox_row row;
	struct store_outbox_attempt at;
	struct store_mail_row mail;
	struct wait w = { 0 };
	char first[40];
	int nw = 0, nm = 0, fd;

	TT_BEGIN;
	if (!pg) {
		snprintf(lite_path, sizeof(lite_path), "%s/fgw-test-claims-XXXXXX",
		         getenv("TMPDIR") != NULL && *getenv("TMPDIR") != '\0' ? getenv("TMPDIR")
		                                                               : "/tmp");
		CHECK((fd = mkstemp(lite_path)) >= 0);
		close(fd);
	}
	CHECK((a = open_instance(pg, "inst_a")) != NULL);
	if (pg)
		CHECK_EQ_INT(pg_clean_outboxes(), 0);
	memset(&row, 0, sizeof(row));
	strcpy(row.endpoint_url, "http://127.0.0.1:1/");
	strcpy(row.event_type, "transaction.succeeded");
	row.payload = "{}";
	row.next_attempt_at = fgw_now_ms();
	strcpy(row.id, "whd_backoff");
	strcpy(row.event_id, "evt_backoff");
	CHECK_EQ_INT(wait_job(store_outbox_enqueue(a, NULL, &row, 1, NULL, 0, on_done, &w),
	                      &w),
	             0);
	/* Claimed, tried, given a backoff: due when the backoff ends. */
	CHECK_EQ_INT(claim_both(a, &nw, &nm, first), 0);
	CHECK_EQ_INT(nw, 1);
	memset(&at, 0, sizeof(at));
	strcpy(at.outbox_id, "whd_backoff");
	strcpy(at.outcome, "retry");
	strcpy(at.error, "connection refused");
	at.at = fgw_now_ms();
	at.next_attempt_at = at.at + 10 * LEASE;
	CHECK_EQ_INT(wait_job(store_outbox_attempt(a, NULL, &at, NULL, 0, on_done, &w), &w),
	             0);
	/* Claimed and in flight when the instance stops. */
	strcpy(row.id, "whd_own");
	strcpy(row.event_id, "evt_own");
	CHECK_EQ_INT(wait_job(store_outbox_enqueue(a, NULL, &row, 1, NULL, 0, on_done, &w),
	                      &w),
	             0);
	memset(&mail, 0, sizeof(mail));
	strcpy(mail.id, "mail_own");
	strcpy(mail.kind, "receipt");
	strcpy(mail.audience, "customer");
	strcpy(mail.mail_from, "a@example.com");
	strcpy(mail.rcpt_to, "b@example.com");
	mail.message = "m";
	CHECK_EQ_INT(wait_job(store_mail_enqueue(a, NULL, &mail, NULL, 0, on_done, &w), &w),
	             0);
	CHECK_EQ_INT(claim_both(a, &nw, &nm, first), 0);
	CHECK_EQ_INT(nw, 1);
	CHECK_EQ_INT(nm, 1);
	store_close(a);
	a = NULL;
	/* Another instance: they are not its claims. */
	CHECK((b = open_instance(pg, "inst_b")) != NULL);
	CHECK_EQ_INT(claim_both(b, &nw, &nm, first), 0);
	CHECK_EQ_INT(nw + nm, 0);
	store_close(b);
	b = NULL;
	/* The same instance again: its own claims are due at once. */
	CHECK((a = open_instance(pg, "inst_a")) != NULL);
	CHECK_EQ_INT(claim_both(a, &nw, &nm, first), 0);
	CHECK_EQ_INT(nw, 1);
	CHECK_STR(first, "whd_own");
	CHECK_EQ_INT(nm, 1);
	if (pg) {
		/* Claimed again by the live instance; a twin with its id
		 * cannot take the identity and releases nothing. */
		CHECK((b = open_instance(pg, "inst_a")) != NULL);
		CHECK_EQ_INT(claim_both(b, &nw, &nm, first), 0);
		CHECK_EQ_INT(nw + nm, 0);
	}
end:
	store_close(b);
	store_close(a);
	drop_sqlite_file();
	TT_END;
}

static int
test_own_claims_released_at_open_sqlite(void)
{
	return own_claims_released_at_open(0);
}

static int
test_own_claims_released_at_open_pg(void)
{
	return own_claims_released_at_open(1);
}

static int
run_on(int pg, int (*body)(struct db *, struct db *))
{
	struct db *a = pg ? open_pg(1) : open_sqlite(1);
	struct db *b = a == NULL ? NULL : pg ? open_pg(0) : open_sqlite(0);
	int r;

	if (a == NULL || b == NULL) {
		fprintf(stderr, "  cannot open the %s database\n", pg ? "PostgreSQL" : "SQLite");
		r = 1;
	} else {
		r = body(a, b);
	}
	db_close(b);
	db_close(a);
	drop_sqlite_file();
	return r;
}

#define BOTH(name)                        \
	static int test_##name##_sqlite(void) \
	{                                     \
		return run_on(0, c_##name);       \
	}                                     \
	static int test_##name##_pg(void)     \
	{                                     \
		return run_on(1, c_##name);       \
	}

BOTH(webhooks)
BOTH(mail)
BOTH(unresolved)
BOTH(awaiting_action)
BOTH(refunds)
BOTH(captures)

#define CASE(name)                             \
	{ #name "_sqlite", test_##name##_sqlite }, \
	{                                          \
#name "_pg", test_##name##_pg          \
	}

static const struct tt_case all[] = {
	CASE(webhooks),
	CASE(mail),
	CASE(unresolved),
	CASE(awaiting_action),
	CASE(refunds),
	CASE(captures),
	{ "store_lease_is_the_token_sqlite", test_store_lease_is_the_token_sqlite },
	{ "store_lease_is_the_token_pg", test_store_lease_is_the_token_pg },
	{ "move_announced_once_sqlite", test_move_announced_once_sqlite },
	{ "move_announced_once_pg", test_move_announced_once_pg },
	{ "guard_skips_only_its_group_sqlite", test_guard_skips_only_its_group_sqlite },
	{ "guard_skips_only_its_group_pg", test_guard_skips_only_its_group_pg },
	{ "own_claims_released_at_open_sqlite", test_own_claims_released_at_open_sqlite },
	{ "own_claims_released_at_open_pg", test_own_claims_released_at_open_pg },
	{ NULL, NULL },
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
	verbose = getenv("FLAIRGW_TEST_VERBOSE") != NULL;
	return tt_run(cases, argc, argv);
}
