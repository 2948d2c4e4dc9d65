/*
 * tests/unit/test_store.c — store/: schema, writer thread, group commit,
 * completion delivery, forward-only states, idempotency, vault purge, the
 * audit chain and its tamper detection, shutdown drain and readers.
 *
 * Each case works in its own mkdtemp directory under /tmp. Reactor-side
 * completions are pumped with event_base_loop(EVLOOP_ONCE) and a short
 * keep-alive timer; every wait is bounded by WAIT_MS. A "gate" job whose
 * done callback (NULL waker: writer thread) blocks holds the writer still
 * while a test queues jobs, so batching is deterministic.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <sodium.h>
#include <sqlite3.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/methods.h"
#include "store/schema.h"
#include "store/sqlutil.h"
#include "store/mail.h"
#include "store/store.h"
#include "store/txnmoves.h"
#include "store/reconcile.h"
#include "store/pendingops.h"
#include "store/store_int.h"
#include "tt.h"

#define WAIT_MS 10000

/* ---- fixtures ---------------------------------------------------------- */

static const unsigned char test_mac_key[32] = "flairgw-store-unit-test-mac-key";

/* Fault injection: the MAC fails for any event whose canonical form holds
 * this marker (the MAC is the store's one overridable hook). */
#define MAC_FAULT "mac-fault"

static int
test_mac(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	(void)ctx;
	if (memmem(msg, len, MAC_FAULT, strlen(MAC_FAULT)) != NULL)
		return FGW_ERR_CRYPTO;
	if (crypto_generichash(mac, 32, msg, len, test_mac_key, sizeof(test_mac_key)) != 0)
		return FGW_ERR_CRYPTO;
	return 0;
}

struct fix {
	char dir[64];
	char path[96];
	struct store *st;
	struct store_reader *rd;
	struct event_base *base;
	struct event *keepalive;
	struct store_waker *w;
};

static void
keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static int
fix_open_store(struct fix *f, int batch_max, int busy_ms)
{
	struct store_opts o = {
		.path = f->path,
		.sync_full = 1,
		.batch_max = batch_max,
		.audit_mac = test_mac,
		.audit_mac_ctx = NULL,
		.busy_timeout_ms = busy_ms,
	};
	return store_open(&o, &f->st);
}

/* Closes the reader, the waker and the store (the file stays). */
static void
fix_close_store(struct fix *f)
{
	store_reader_close(f->rd);
	f->rd = NULL;
	store_waker_free(f->w);
	f->w = NULL;
	store_close(f->st);
	f->st = NULL;
}

/* Temp dir, store, reader, base with a 5 ms keep-alive timer, waker. */
static int
fix_setup(struct fix *f, int batch_max)
{
	struct timeval tv = { 0, 5000 };
	int n;

	memset(f, 0, sizeof(*f));
	if (fgw_strlcpy(f->dir, "/tmp/fgw-store-XXXXXX", sizeof(f->dir)) != 0 ||
	    mkdtemp(f->dir) == NULL)
		return -1;
	n = snprintf(f->path, sizeof(f->path), "%s/gw.db", f->dir);
	if (n < 0 || (size_t)n >= sizeof(f->path))
		return -1;
	if (fix_open_store(f, batch_max, 0) != 0)
		return -1;
	if (store_reader_open(f->st, &f->rd) != 0)
		return -1;
	if ((f->base = event_base_new()) == NULL)
		return -1;
	f->keepalive = event_new(f->base, -1, EV_PERSIST, keepalive_cb, NULL);
	if (f->keepalive == NULL || event_add(f->keepalive, &tv) != 0)
		return -1;
	return store_waker_new(f->st, f->base, &f->w);
}

static void
fix_remove_files(struct fix *f)
{
	static const char *const sfx[] = { "", "-wal", "-shm", "-journal" };
	char p[128];
	for (size_t i = 0; i < 4; i++) {
		int n = snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]);
		if (n > 0 && (size_t)n < sizeof(p))
			(void)unlink(p);
	}
	if (f->dir[0] != '\0')
		(void)rmdir(f->dir);
}

static void
fix_teardown(struct fix *f)
{
	fix_close_store(f);
	if (f->keepalive != NULL)
		event_free(f->keepalive);
	if (f->base != NULL)
		event_base_free(f->base);
	f->keepalive = NULL;
	f->base = NULL;
	fix_remove_files(f);
}

/* One job's outcome. */
struct one {
	atomic_int done;
	atomic_int rc;
	pthread_t thread;
};

static void
one_done(void *arg, int rc)
{
	struct one *o = arg;
	o->thread = pthread_self();
	atomic_store(&o->rc, rc);
	atomic_fetch_add(&o->done, 1);
}

/* Many jobs' outcomes. */
struct tally {
	atomic_int n;
	atomic_int ok;
	atomic_int off_thread; /* ran on another thread than expect */
	pthread_t expect;
};

static void
tally_done(void *arg, int rc)
{
	struct tally *t = arg;
	if (!pthread_equal(pthread_self(), t->expect))
		atomic_fetch_add(&t->off_thread, 1);
	if (rc == 0)
		atomic_fetch_add(&t->ok, 1);
	atomic_fetch_add(&t->n, 1);
}

/* Runs the reactor until *counter >= target or WAIT_MS pass. */
static int
pump(struct event_base *base, atomic_int *counter, int target)
{
	int64_t deadline = fgw_mono_ms() + WAIT_MS;
	while (atomic_load(counter) < target) {
		if (fgw_mono_ms() > deadline)
			return -1;
		if (event_base_loop(base, EVLOOP_ONCE) < 0)
			return -1;
	}
	return 0;
}

/* Waits (without a reactor) until *counter >= target or WAIT_MS pass. */
static int
wait_count(atomic_int *counter, int target)
{
	int64_t deadline = fgw_mono_ms() + WAIT_MS;
	while (atomic_load(counter) < target) {
		if (fgw_mono_ms() > deadline)
			return -1;
		usleep(1000);
	}
	return 0;
}

static int
sem_wait_ms(sem_t *s, int ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (sem_timedwait(s, &ts) != 0) {
		if (errno != EINTR)
			return -1;
	}
	return 0;
}

/* A job whose done (on the writer thread) blocks until released. */
struct gate {
	sem_t entered;
	sem_t release;
	atomic_int rc;
	int inited;
};

static void
gate_done(void *arg, int rc)
{
	struct gate *g = arg;
	atomic_store(&g->rc, rc);
	sem_post(&g->entered);
	(void)sem_wait_ms(&g->release, WAIT_MS);
}

static const struct store_audit gate_event = {
	.actor = "system",
	.source = "local",
	.event_type = "test.gate",
	.resource = "gate",
	.outcome = "success",
	.details_json = NULL,
};

/* Queues the gate and waits until the writer is blocked in it. */
static int
gate_close(struct store *st, struct gate *g)
{
	if (!g->inited) {
		if (sem_init(&g->entered, 0, 0) != 0)
			return -1;
		if (sem_init(&g->release, 0, 0) != 0) {
			sem_destroy(&g->entered);
			return -1;
		}
		g->inited = 1;
	}
	atomic_store(&g->rc, 1);
	if (store_audit_append(st, NULL,
	                       &(struct store_commit){ .audit = &gate_event,
	                                               .n_audit = 1,
	                                               .done = gate_done,
	                                               .arg = g }) != 0)
		return -1;
	return sem_wait_ms(&g->entered, WAIT_MS);
}

static void
gate_destroy(struct gate *g)
{
	if (g->inited) {
		sem_destroy(&g->entered);
		sem_destroy(&g->release);
	}
	g->inited = 0;
}

static void
fill_row(struct store_txn_row *row, const char *id, const char *status)
{
	memset(row, 0, sizeof(*row));
	(void)fgw_strlcpy(row->id, id, sizeof(row->id));
	(void)fgw_strlcpy(row->client_id, "client_a", sizeof(row->client_id));
	(void)fgw_strlcpy(row->reservation_id, "RES-42", sizeof(row->reservation_id));
	row->amount = 15000;
	(void)fgw_strlcpy(row->currency, "EUR", sizeof(row->currency));
	(void)fgw_strlcpy(row->status, status, sizeof(row->status));
	(void)fgw_strlcpy(row->processor, "sandbox", sizeof(row->processor));
	(void)fgw_strlcpy(row->processor_idem_key, "pik_1", sizeof(row->processor_idem_key));
	(void)fgw_strlcpy(row->token, "tok_1", sizeof(row->token));
	(void)fgw_strlcpy(row->fingerprint, "fp01", sizeof(row->fingerprint));
	(void)fgw_strlcpy(row->brand, "Visa", sizeof(row->brand));
	(void)fgw_strlcpy(row->bin, "424242", sizeof(row->bin));
	(void)fgw_strlcpy(row->last4, "4242", sizeof(row->last4));
	row->exp_month = 12;
	row->exp_year = 2030;
	(void)fgw_strlcpy(row->customer_email, "ana@example.org",
	                  sizeof(row->customer_email));
	(void)fgw_strlcpy(row->customer_name, "Ana Lima", sizeof(row->customer_name));
	(void)fgw_strlcpy(row->customer_country, "PT", sizeof(row->customer_country));
	(void)fgw_strlcpy(row->customer_ip, "192.0.2.7", sizeof(row->customer_ip));
	(void)fgw_strlcpy(row->rule_decision, "allow", sizeof(row->rule_decision));
	(void)fgw_strlcpy(row->rules_fired, "r1,r7", sizeof(row->rules_fired));
	(void)fgw_strlcpy(row->idempotency_key, "idem-1", sizeof(row->idempotency_key));
	(void)fgw_strlcpy(row->description, "Flight LIS-OPO", sizeof(row->description));
}

static void
fill_update(struct store_txn_update *u, const char *id, const char *status)
{
	memset(u, 0, sizeof(*u));
	(void)fgw_strlcpy(u->id, id, sizeof(u->id));
	(void)fgw_strlcpy(u->status, status, sizeof(u->status));
}

static void
fill_idem(struct store_idem *i, const char *key, int status, const char *body,
          int64_t expires_at)
{
	memset(i, 0, sizeof(*i));
	(void)fgw_strlcpy(i->client_id, "client_a", sizeof(i->client_id));
	(void)fgw_strlcpy(i->key, key, sizeof(i->key));
	(void)fgw_strlcpy(i->request_hash, "ab12", sizeof(i->request_hash));
	i->status_code = status;
	i->body = (char *)body;
	i->created_at = fgw_now_ms();
	i->expires_at = expires_at;
}

static void
fill_vault(struct store_vault_entry *v, const char *token, int saved)
{
	memset(v, 0, sizeof(*v));
	(void)fgw_strlcpy(v->token, token, sizeof(v->token));
	(void)fgw_strlcpy(v->key_id, "kek-2024", sizeof(v->key_id));
	v->blob = "v1.bm9uY2U.Y2lwaGVydGV4dA";
	(void)fgw_strlcpy(v->fingerprint, "fp01", sizeof(v->fingerprint));
	(void)fgw_strlcpy(v->brand, "Visa", sizeof(v->brand));
	(void)fgw_strlcpy(v->bin, "424242", sizeof(v->bin));
	(void)fgw_strlcpy(v->last4, "4242", sizeof(v->last4));
	v->exp_month = 12;
	v->exp_year = 2030;
	if (saved)
		(void)fgw_strlcpy(v->customer_id, "cus_1", sizeof(v->customer_id));
	v->saved = saved;
	v->expires_at = saved ? 0 : 1900000000000LL;
}

/* Submits a create with the fixture's waker and pumps until it is done. */
static int
create_sync(struct fix *f, const struct store_txn_row *row,
            const struct store_vault_entry *v, const struct store_idem *idem,
            const struct store_audit *ev, size_t n_ev)
{
	struct one o = { 0 };
	int r = store_txn_create(
	    f->st, f->w, row, v,
	    &(struct store_commit){
	        .idem = idem, .audit = ev, .n_audit = n_ev, .done = one_done, .arg = &o });
	if (r != 0)
		return r;
	if (pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_TIMEOUT;
	return atomic_load(&o.rc);
}

static int
finish_sync(struct fix *f, const struct store_txn_update *u,
            const struct store_idem *idem, const char *purge)
{
	struct one o = { 0 };
	static const struct store_audit ev = {
		.actor = "client_a",
		.source = "192.0.2.7",
		.event_type = "txn.outcome",
		.resource = "txn",
		.outcome = "success",
		.details_json = "{\"k\":1}",
	};
	int r = store_txn_finish(
	    f->st, f->w, u, purge,
	    &(struct store_commit){
	        .idem = idem, .audit = &ev, .n_audit = 1, .done = one_done, .arg = &o });
	if (r != 0)
		return r;
	if (pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_TIMEOUT;
	return atomic_load(&o.rc);
}

static int
audit_sync(struct fix *f, const struct store_audit *ev, size_t n)
{
	struct one o = { 0 };
	int r = store_audit_append(
	    f->st, f->w,
	    &(struct store_commit){ .audit = ev, .n_audit = n, .done = one_done, .arg = &o });
	if (r != 0)
		return r;
	if (pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_TIMEOUT;
	return atomic_load(&o.rc);
}

/* ---- plain sqlite3 access, as an auditor would ------------------------- */

static int
sql_exec(const char *path, const char *sql, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	char *msg = NULL;
	int rc;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		sqlite3_close(db);
		return -1;
	}
	sqlite3_busy_timeout(db, 5000);
	rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (err != NULL && errlen > 0)
		(void)fgw_strlcpy(err, msg != NULL ? msg : "", errlen);
	sqlite3_free(msg);
	sqlite3_close(db);
	return rc;
}

/* First column of the first row as an integer (-1 on error). */
static long long
sql_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	long long v = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

/* First column of the first row as text into out ("" on error). */
static void
sql_text(const char *path, const char *sql, char *out, size_t outlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;

	out[0] = '\0';
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) != NULL)
		(void)fgw_strlcpy(out, (const char *)sqlite3_column_text(s, 0), outlen);
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* ---- cases ------------------------------------------------------------- */

/* Indexes of schema version 7 (docs/schema.md says which query reads
 * each), and the ones version 7 dropped because none did. */
#define KEPT_INDEXES                                                           \
	"'transactions_created', 'transactions_unresolved', "                      \
	"'transactions_processor_ref', 'vault_entries_key_id', "                   \
	"'vault_entries_onetime', 'idempotency_expires', "                         \
	"'audit_events_resource', 'audit_events_ts', 'payment_methods_customer', " \
	"'transactions_awaiting_action'"
#define DROPPED_INDEXES                                                \
	"'transactions_client_created', 'transactions_status_updated', "   \
	"'transactions_fingerprint_created', 'transactions_reservation', " \
	"'transactions_email_created', 'transactions_ip_created', "        \
	"'vault_entries_customer'"
/* Start-up replay (store/txn_recent.c) and the reconciler's list
 * (store/reconcile.c), as they are written there. */
#define RECENT_SQL \
	"SELECT id FROM transactions WHERE created_at >= 1 ORDER BY created_at, id"
#define UNRESOLVED_SQL                                                          \
	"SELECT id, status, reconcile_attempts, created_at, manual_review"          \
	" FROM transactions WHERE status IN ('posting', 'processing')"              \
	" AND reconcile_next_at <= 1 AND (status = 'processing' OR updated_at < 2)" \
	" ORDER BY reconcile_next_at, created_at LIMIT 3"
/* The reconciler's list of payments waiting for 3-D Secure (v9). */
#define AWAITING_SQL                                                                 \
	"SELECT id, status, reconcile_attempts, created_at, manual_review"               \
	" FROM transactions WHERE status = 'requires_action' AND reconcile_next_at <= 1" \
	" ORDER BY reconcile_next_at LIMIT 3"

/* What migration 8 added, taken away again. */
#define V8_UNDO                                           \
	"DROP INDEX transactions_awaiting_action;"            \
	"DROP INDEX refunds_pending;"                         \
	"ALTER TABLE refunds DROP COLUMN status;"             \
	"ALTER TABLE refunds DROP COLUMN updated_at;"         \
	"ALTER TABLE refunds DROP COLUMN reconcile_attempts;" \
	"ALTER TABLE refunds DROP COLUMN reconcile_next_at;"  \
	"ALTER TABLE refunds DROP COLUMN manual_review;"      \
	"DROP TABLE txn_operations;"

static long long
index_count(const char *path, const char *names)
{
	char sql[768];
	int n = snprintf(sql, sizeof(sql),
	                 "SELECT COUNT(*) FROM sqlite_master WHERE "
	                 "type = 'index' AND name IN (%s)",
	                 names);
	return n < 0 || (size_t)n >= sizeof(sql) ? -1 : sql_int(path, sql);
}

/* Whether SQLite's plan for sql reads the index named idx. */
static int
query_uses(const char *path, const char *sql, const char *idx)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	char q[768];
	int n = snprintf(q, sizeof(q), "EXPLAIN QUERY PLAN %s", sql), found = 0;

	if (n < 0 || (size_t)n >= sizeof(q))
		return 0;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, q, -1, &s, NULL) == SQLITE_OK) {
		while (sqlite3_step(s) == SQLITE_ROW) {
			const unsigned char *d = sqlite3_column_text(s, 3);
			if (d != NULL && strstr((const char *)d, idx) != NULL)
				found = 1;
		}
	}
	sqlite3_finalize(s);
	sqlite3_close(db);
	return found;
}


/* store_file_schema reads the version without creating -wal or -shm, and
 * refuses a file newer than this build (flairgw --check). */
static int
test_file_schema(void)
{
	struct fix f;
	char wal[160], shm[160], odd[160], junk[160];
	int version = -1, latest = -1;
	TT_BEGIN;
	CHECK(fix_setup(&f, 8) == 0);
	fix_close_store(&f);
	snprintf(wal, sizeof(wal), "%s-wal", f.path);
	snprintf(shm, sizeof(shm), "%s-shm", f.path);
	CHECK(access(wal, F_OK) != 0 && access(shm, F_OK) != 0);
	CHECK_EQ_INT(store_file_schema(f.path, &version, &latest), 0);
	CHECK_EQ_INT(version, STORE_SCHEMA_VERSION);
	CHECK_EQ_INT(latest, STORE_SCHEMA_VERSION);
	CHECK(access(wal, F_OK) != 0 && access(shm, F_OK) != 0);
	CHECK_EQ_INT(sql_exec(f.path, "PRAGMA user_version = 99", NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(store_file_schema(f.path, &version, &latest), FGW_ERR_STATE);
	CHECK_EQ_INT(version, 99);
	/* A name SQLite's URI syntax would cut short. */
	snprintf(odd, sizeof(odd), "%s/a?b#c%%d e.db", f.dir);
	CHECK(rename(f.path, odd) == 0);
	CHECK_EQ_INT(store_file_schema(odd, &version, &latest), FGW_ERR_STATE);
	CHECK_EQ_INT(version, 99);
	CHECK(rename(odd, f.path) == 0);
	CHECK_EQ_INT(store_file_schema(odd, &version, &latest), FGW_ERR_NOT_FOUND);
	snprintf(junk, sizeof(junk), "%s/junk.db", f.dir);
	CHECK_EQ_INT(fgw_write_file_atomic(junk, "not a database, not at all, no", 31, 0600),
	             0);
	CHECK_EQ_INT(store_file_schema(junk, &version, &latest), FGW_ERR_DB);
	CHECK(unlink(junk) == 0);
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_schema(void)
{
	struct fix f;
	char mode[16];
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	sql_text(f.path, "PRAGMA journal_mode", mode, sizeof(mode));
	CHECK_STR(mode, "wal");
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM sqlite_master WHERE "
	                             "type = 'table' AND name IN ('transactions', "
	                             "'vault_entries', 'idempotency', 'audit_events')"),
	             4);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM sqlite_master WHERE "
	                             "type = 'view' AND name IN ('v_audit', "
	                             "'v_transactions', 'v_daily_totals')"),
	             3);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM sqlite_master WHERE "
	                             "type = 'trigger' AND tbl_name = 'audit_events'"),
	             3);
	/* The indexes queries read (docs/schema.md), and none other. */
	CHECK_EQ_INT(index_count(f.path, KEPT_INDEXES), 10);
	CHECK_EQ_INT(index_count(f.path, DROPPED_INDEXES), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM sqlite_master WHERE type = "
	                             "'index' AND sql IS NOT NULL AND tbl_name IN "
	                             "('transactions', 'vault_entries')"),
	             6);
	CHECK(query_uses(f.path, AWAITING_SQL, "transactions_awaiting_action"));
	CHECK(query_uses(f.path, RECENT_SQL, "transactions_created"));
	CHECK(query_uses(f.path, UNRESOLVED_SQL, "transactions_unresolved"));
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM pragma_table_info("
	                             "'transactions')"),
	             33); /* 30 + reconcile_attempts, reconcile_next_at, manual_review */
	/* Reopening an up-to-date database changes nothing. */
	fix_close_store(&f);
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	store_close(f.st);
	f.st = NULL;
	/* A database from a newer build is refused. */
	CHECK_EQ_INT(sql_exec(f.path, "PRAGMA user_version = 99", NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), FGW_ERR_STATE);
	CHECK(f.st == NULL);
	/* Bad options. */
	{
		struct store_opts bad = { .path = f.path, .batch_max = 0, .audit_mac = test_mac };
		struct store *st = NULL;
		CHECK_EQ_INT(store_open(&bad, &st), FGW_ERR_INVALID);
		bad.batch_max = 4;
		bad.audit_mac = NULL;
		CHECK_EQ_INT(store_open(&bad, &st), FGW_ERR_INVALID);
		CHECK(st == NULL);
	}
end:
	fix_teardown(&f);
	TT_END;
}

/* A version 6 database (the indexes version 7 drops, without the one it
 * adds) keeps its rows when it is opened by this build. */
static int
test_schema_v7_upgrade(void)
{
	static const char *const v6_indexes[][2] = {
		{ "transactions_client_created", "transactions (client_id, created_at)" },
		{ "transactions_status_updated", "transactions (status, updated_at)" },
		{ "transactions_fingerprint_created", "transactions (fingerprint, created_at)" },
		{ "transactions_reservation", "transactions (reservation_id)" },
		{ "transactions_email_created", "transactions (customer_email, created_at)" },
		{ "transactions_ip_created", "transactions (customer_ip, created_at)" },
		{ "vault_entries_customer", "vault_entries (customer_id)" },
	};
	struct fix f;
	struct store_txn_row row;
	struct store_vault_entry v;
	char id[40], tok[40], email[64];
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	for (int i = 0; i < 20; i++) {
		CHECK_EQ_INT(fgw_random_id("txn_", id, sizeof(id)), 0);
		CHECK_EQ_INT(fgw_random_id("tok_", tok, sizeof(tok)), 0);
		fill_row(&row, id, i % 2 ? "posting" : "succeeded");
		fill_vault(&v, tok, i % 4 == 0);
		CHECK_EQ_INT(create_sync(&f, &row, &v, NULL, NULL, 0), 0);
	}
	fix_close_store(&f);
	/* Back to version 6: the indexes schema.c's v1 created. */
	CHECK_EQ_INT(sql_exec(f.path, "DROP INDEX transactions_created", NULL, 0), SQLITE_OK);
	for (size_t i = 0; i < sizeof(v6_indexes) / sizeof(v6_indexes[0]); i++) {
		char sql[160];
		int n = snprintf(sql, sizeof(sql), "CREATE INDEX %s ON %s", v6_indexes[i][0],
		                 v6_indexes[i][1]);
		CHECK(n > 0 && (size_t)n < sizeof(sql));
		CHECK_EQ_INT(sql_exec(f.path, sql, NULL, 0), SQLITE_OK);
	}
	/* ... and before v8's refund columns. */
	CHECK_EQ_INT(sql_exec(f.path, V8_UNDO, NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(sql_exec(f.path, "PRAGMA user_version = 6", NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(index_count(f.path, DROPPED_INDEXES), 7);
	CHECK(!query_uses(f.path, RECENT_SQL, "transactions_created"));
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	CHECK_EQ_INT(index_count(f.path, DROPPED_INDEXES), 0);
	CHECK_EQ_INT(index_count(f.path, KEPT_INDEXES), 10);
	CHECK(query_uses(f.path, RECENT_SQL, "transactions_created"));
	CHECK(query_uses(f.path, UNRESOLVED_SQL, "transactions_unresolved"));
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM transactions"), 20);
	CHECK_EQ_INT(sql_int(f.path,
	                     "SELECT COUNT(*) FROM transactions WHERE status = 'posting'"),
	             10);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM vault_entries"), 20);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM vault_entries WHERE saved = 1"),
	             5);
	sql_text(f.path, "SELECT customer_email FROM transactions ORDER BY id LIMIT 1", email,
	         sizeof(email));
	CHECK_STR(email, "ana@example.org");
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM pragma_integrity_check"
	                             " WHERE integrity_check = 'ok'"),
	             1);
end:
	fix_teardown(&f);
	TT_END;
}

/* True when the file at path (missing: false) holds needle. */
static int
file_holds(const char *path, const char *needle)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0, k = strlen(needle);
	int found = 0;
	if (fp == NULL)
		return 0;
	for (;;) {
		if (n == cap) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);
			if (nb == NULL)
				break;
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		size_t got = fread(buf + n, 1, cap - n, fp);
		if (got == 0)
			break;
		n += got;
	}
	fclose(fp);
	for (size_t i = 0; i + k <= n && !found; i++)
		found = memcmp(buf + i, needle, k) == 0;
	free(buf);
	return found;
}

/* The migration that keyed request hashes wipes the old unkeyed ones (a
 * BLAKE2b of a body with a card, beside its BIN, last four and expiry, gives
 * the hidden digits back) from the table and from the file's free space
 * and WAL, and marks the rows so their keys are refused, not replayed. */
static int
test_schema_idem_hash_wiped(void)
{
	static const char old_hash[] =
	    "5f1d0c6a0b8e4e2f9a3c7d1e6b2a4c8e0f9d3b7a1c5e2d4f6a8b0c3e5d7f9a1b";
	struct fix f;
	struct store_idem got;
	char sql[1024], wal[128], marker[64];
	int n;
	TT_BEGIN;
	memset(&got, 0, sizeof(got));
	CHECK(fix_setup(&f, 16) == 0);
	fix_close_store(&f);
	n = snprintf(
	    sql, sizeof(sql),
	    "INSERT INTO idempotency (client_id, key, request_hash, status_code, body,"
	    " txn_id, created_at, expires_at) VALUES ('website', 'k-old', '%s', 200,"
	    " '{}', 'txn_old', 1, 9000000000000);"
	    "INSERT INTO transactions (id, client_id, amount, currency, status, brand,"
	    " bin, last4, created_at, updated_at) VALUES"
	    " ('txn_amex', 'w', 1, 'USD', 'succeeded', 'Amex', '378282', '0005', 1, 1),"
	    " ('txn_visa', 'w', 1, 'USD', 'succeeded', 'Visa', '424242', '4242', 1, 1);"
	    "PRAGMA user_version = %d;",
	    old_hash, 9); /* before v10 keyed them */
	CHECK(n > 0 && (size_t)n < sizeof(sql));
	CHECK_EQ_INT(sql_exec(f.path, sql, NULL, 0), SQLITE_OK);
	CHECK(file_holds(f.path, old_hash));
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	sql_text(f.path, "SELECT request_hash FROM idempotency WHERE key = 'k-old'", marker,
	         sizeof(marker));
	CHECK_STR(marker, STORE_IDEM_HASH_REMOVED);
	/* A 15-digit Amex keeps 6 digits hidden: BIN of 5. */
	sql_text(f.path, "SELECT bin FROM transactions WHERE id = 'txn_amex'", marker,
	         sizeof(marker));
	CHECK_STR(marker, "37828");
	sql_text(f.path, "SELECT bin FROM transactions WHERE id = 'txn_visa'", marker,
	         sizeof(marker));
	CHECK_STR(marker, "424242");
	CHECK_EQ_INT(store_reader_open(f.st, &f.rd), 0);
	CHECK_EQ_INT(store_idem_get(f.rd, "website", "k-old", &got), 0);
	CHECK_STR(got.request_hash, STORE_IDEM_HASH_REMOVED);
	CHECK_STR(got.txn_id, "txn_old");
	CHECK_EQ_INT(got.status_code, 200);
	/* Gone from every byte of the live database, WAL included. */
	n = snprintf(wal, sizeof(wal), "%s-wal", f.path);
	CHECK(n > 0 && (size_t)n < sizeof(wal));
	CHECK(!file_holds(f.path, old_hash));
	CHECK(!file_holds(wal, old_hash));
end:
	store_idem_clear(&got);
	fix_teardown(&f);
	TT_END;
}

/* A version 8 database: API-key customers ("CLIENT/ID") and JWT subjects
 * (bare) were stored alike; v11 puts them in namespaces that cannot meet. */
static int
test_schema_v11_customer_namespaces(void)
{
	struct fix f;
	char got[200];
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	fix_close_store(&f);
	CHECK_EQ_INT(sql_exec(f.path,
	                      "INSERT INTO payment_methods (id, customer_id, token, nickname, "
	                      "is_default, created_at) VALUES "
	                      "('pm_a', 'website/cus_42', 'tok_a', NULL, 1, 1),"
	                      "('pm_b', 'sub-7', 'tok_b', NULL, 1, 1);"
	                      "PRAGMA user_version = 8",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	sql_text(f.path, "SELECT customer_id FROM payment_methods WHERE id = 'pm_a'", got,
	         sizeof(got));
	CHECK_STR(got, "key:website/cus_42");
	sql_text(f.path, "SELECT customer_id FROM payment_methods WHERE id = 'pm_b'", got,
	         sizeof(got));
	CHECK_STR(got, "jwt:idp/sub-7");
end:
	fix_teardown(&f);
	TT_END;
}

/* The statement cache: one prepared statement per SQL literal and
 * connection, reset on release, refused while in use, finalized on
 * detach; a connection without a cache prepares and finalizes. */
static int
test_statement_cache(void)
{
	static const char q1[] = "SELECT ?1 + 1";
	static const char q2[] = "SELECT 2";
	sqlite3 *h1 = NULL, *h2 = NULL;
	struct db *db = NULL, *plain = NULL;
	struct db_stmt *a = NULL, *b = NULL, *c = NULL;
	TT_BEGIN;
	CHECK_EQ_INT(sqlite3_open_v2(":memory:", &h1, SQLITE_OPEN_READWRITE, NULL),
	             SQLITE_OK);
	CHECK_EQ_INT(sqlite3_open_v2(":memory:", &h2, SQLITE_OPEN_READWRITE, NULL),
	             SQLITE_OK);
	CHECK_EQ_INT(db_wrap_sqlite(h1, 1, &db), 0);
	CHECK_EQ_INT(db_wrap_sqlite(h2, 0, &plain), 0);
	CHECK_EQ_INT(db_prepare(db, q1, &a), 0);
	CHECK_EQ_INT(db_bind_int(a, 1, 41), 0);
	CHECK_EQ_INT(db_step(a), DB_ROW);
	CHECK_EQ_INT(db_col_int(a, 0), 42);
	/* In use (handed out, not released): refused, not shared. */
	CHECK_EQ_INT(db_prepare(db, q1, &b), FGW_ERR_INTERNAL);
	CHECK(b == NULL);
	CHECK_EQ_INT(db_prepare(db, q2, &c), 0);
	CHECK(c != a);
	db_release(c);
	db_release(a);
	/* Released: the same statement again, reset and unbound. */
	CHECK_EQ_INT(db_prepare(db, q1, &b), 0);
	CHECK(b == a);
	CHECK_EQ_INT(db_step(b), DB_ROW);
	CHECK(db_col_is_null(b, 0)); /* NULL + 1 */
	db_release(b);
	CHECK(sqlite3_next_stmt(h1, NULL) != NULL);
	/* Bad SQL is refused and not cached. */
	CHECK_EQ_INT(db_prepare(db, "SELEKT", &c), FGW_ERR_DB);
	CHECK(c == NULL);
	/* Without a cache: a new statement each time, finalized on release. */
	CHECK_EQ_INT(db_prepare(plain, q1, &a), 0);
	db_release(a);
	CHECK(sqlite3_next_stmt(h2, NULL) == NULL);
	a = NULL;
end:
	db_close(db); /* finalizes the cached statements, closes */
	db_close(plain);
	TT_END;
}

static int
test_roundtrip(void)
{
	struct fix f;
	struct store_txn_row in, out, other;
	char iso[40];
	int64_t before;
	TT_BEGIN;
	memset(&out, 0, sizeof(out));
	memset(&other, 0, sizeof(other));
	CHECK(fix_setup(&f, 16) == 0);
	fill_row(&in, "txn_roundtrip", "requires_action");
	(void)fgw_strlcpy(in.error_code, "card_declined", sizeof(in.error_code));
	(void)fgw_strlcpy(in.error_message, "Declined by issuer", sizeof(in.error_message));
	(void)fgw_strlcpy(in.processor_ref, "pr_77", sizeof(in.processor_ref));
	in.metadata_json = "{\"booking\":\"ABC\"}";
	in.next_action_json = "{\"type\":\"redirect\"}";
	in.created_at = 1700000000123LL;
	in.updated_at = 1700000000456LL;
	CHECK_EQ_INT(create_sync(&f, &in, NULL, NULL, NULL, 0), 0);

	CHECK_EQ_INT(store_txn_get(f.rd, "client_a", "txn_roundtrip", &out), 0);
	CHECK_STR(out.id, in.id);
	CHECK_STR(out.client_id, in.client_id);
	CHECK_STR(out.reservation_id, in.reservation_id);
	CHECK_EQ_INT(out.amount, in.amount);
	CHECK_STR(out.currency, in.currency);
	CHECK_STR(out.status, in.status);
	CHECK_STR(out.error_code, in.error_code);
	CHECK_STR(out.error_message, in.error_message);
	CHECK_STR(out.processor, in.processor);
	CHECK_STR(out.processor_ref, in.processor_ref);
	CHECK_STR(out.processor_idem_key, in.processor_idem_key);
	CHECK_STR(out.token, in.token);
	CHECK_STR(out.fingerprint, in.fingerprint);
	CHECK_STR(out.brand, in.brand);
	CHECK_STR(out.bin, in.bin);
	CHECK_STR(out.last4, in.last4);
	CHECK_EQ_INT(out.exp_month, in.exp_month);
	CHECK_EQ_INT(out.exp_year, in.exp_year);
	CHECK_STR(out.customer_email, in.customer_email);
	CHECK_STR(out.customer_name, in.customer_name);
	CHECK_STR(out.customer_country, in.customer_country);
	CHECK_STR(out.customer_ip, in.customer_ip);
	CHECK_STR(out.rule_decision, in.rule_decision);
	CHECK_STR(out.rules_fired, in.rules_fired);
	CHECK_STR(out.idempotency_key, in.idempotency_key);
	CHECK_STR(out.description, in.description);
	CHECK_STR(out.metadata_json, in.metadata_json);
	CHECK_STR(out.next_action_json, in.next_action_json);
	CHECK_EQ_INT(out.created_at, in.created_at);
	CHECK_EQ_INT(out.updated_at, in.updated_at);
	store_txn_row_clear(&out);
	CHECK(out.metadata_json == NULL && out.next_action_json == NULL);

	/* Client scoping, and NULL meaning any client. */
	CHECK_EQ_INT(store_txn_get(f.rd, "client_b", "txn_roundtrip", &out),
	             FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_roundtrip", &out), 0);
	store_txn_row_clear(&out);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_nope", &out), FGW_ERR_NOT_FOUND);

	/* Empty optional fields come back as "" / NULL; zero times are now. */
	memset(&other, 0, sizeof(other));
	(void)fgw_strlcpy(other.id, "txn_sparse", sizeof(other.id));
	(void)fgw_strlcpy(other.client_id, "client_a", sizeof(other.client_id));
	(void)fgw_strlcpy(other.currency, "USD", sizeof(other.currency));
	(void)fgw_strlcpy(other.status, "posting", sizeof(other.status));
	other.amount = 1;
	before = fgw_now_ms();
	CHECK_EQ_INT(create_sync(&f, &other, NULL, NULL, NULL, 0), 0);
	CHECK_EQ_INT(store_txn_get(f.rd, "client_a", "txn_sparse", &out), 0);
	CHECK_STR(out.token, "");
	CHECK_STR(out.customer_email, "");
	CHECK(out.metadata_json == NULL);
	CHECK(out.created_at >= before && out.created_at <= fgw_now_ms());
	CHECK_EQ_INT(out.updated_at, out.created_at);
	store_txn_row_clear(&out);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM transactions WHERE "
	                             "id = 'txn_sparse' AND token IS NULL"),
	             1);

	/* The auditor views. */
	sql_text(f.path,
	         "SELECT created_utc FROM v_transactions WHERE "
	         "id = 'txn_roundtrip'",
	         iso, sizeof(iso));
	CHECK_STR(iso, "2023-11-14T22:13:20.123Z");
	CHECK_EQ_INT(sql_int(f.path, "SELECT total_amount FROM v_daily_totals "
	                             "WHERE day = '2023-11-14' AND status = "
	                             "'requires_action' AND currency = 'EUR'"),
	             15000);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM pragma_table_info("
	                             "'v_transactions') WHERE name IN ('token', "
	                             "'fingerprint', 'metadata_json')"),
	             0);

	/* Invalid rows are refused before queuing. */
	other.amount = -1;
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &other, NULL, &(struct store_commit){ 0 }),
	             FGW_ERR_INVALID);
	other.amount = 1;
	(void)fgw_strlcpy(other.status, "charged_back", sizeof(other.status));
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &other, NULL, &(struct store_commit){ 0 }),
	             FGW_ERR_INVALID);
	(void)fgw_strlcpy(other.status, "posting", sizeof(other.status));
	other.id[0] = '\0';
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &other, NULL, &(struct store_commit){ 0 }),
	             FGW_ERR_INVALID);
end:
	store_txn_row_clear(&out);
	fix_teardown(&f);
	TT_END;
}

static int
test_reactor_thread(void)
{
	struct fix f;
	struct store_txn_row row;
	struct tally t = { 0 };
	struct one o = { 0 };
	TT_BEGIN;
	CHECK(fix_setup(&f, 8) == 0);
	t.expect = pthread_self();
	for (int i = 0; i < 20; i++) {
		char id[40];
		int n = snprintf(id, sizeof(id), "txn_thread_%d", i);
		CHECK(n > 0 && (size_t)n < sizeof(id));
		fill_row(&row, id, "posting");
		CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
		                              &(struct store_commit){ .done = tally_done,
		                                                      .arg = &t }),
		             0);
	}
	CHECK_EQ_INT(pump(f.base, &t.n, 20), 0);
	CHECK_EQ_INT(atomic_load(&t.ok), 20);
	CHECK_EQ_INT(atomic_load(&t.off_thread), 0);

	/* Without a reactor, done runs on the writer thread instead. */
	CHECK_EQ_INT(store_audit_append(f.st, NULL,
	                                &(struct store_commit){ .audit = &gate_event,
	                                                        .n_audit = 1,
	                                                        .done = one_done,
	                                                        .arg = &o }),
	             0);
	CHECK_EQ_INT(wait_count(&o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), 0);
	CHECK(!pthread_equal(o.thread, pthread_self()));
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_group_commit(void)
{
	struct fix f;
	struct store_txn_row row;
	struct tally t = { 0 };
	struct store_stats s0, s1;
	struct gate g = { .inited = 0 };
	int gated = 0;
	TT_BEGIN;
	CHECK(fix_setup(&f, 64) == 0);
	CHECK(gate_close(f.st, &g) == 0);
	gated = 1;
	store_get_stats(f.st, &s0);
	t.expect = pthread_self();
	for (int i = 0; i < 500; i++) {
		char id[40];
		struct store_audit ev = gate_event;
		int n = snprintf(id, sizeof(id), "txn_gc_%03d", i);
		CHECK(n > 0 && (size_t)n < sizeof(id));
		fill_row(&row, id, "posting");
		ev.event_type = "txn.created";
		ev.resource = id;
		CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
		                              &(struct store_commit){ .audit = &ev,
		                                                      .n_audit = 1,
		                                                      .done = tally_done,
		                                                      .arg = &t }),
		             0);
	}
	store_get_stats(f.st, &s1);
	CHECK_EQ_INT(s1.queue_depth, 500);
	sem_post(&g.release);
	gated = 0;
	CHECK_EQ_INT(pump(f.base, &t.n, 500), 0);
	CHECK_EQ_INT(atomic_load(&t.ok), 500);
	CHECK_EQ_INT(atomic_load(&t.off_thread), 0);
	store_get_stats(f.st, &s1);
	CHECK_EQ_INT(s1.jobs - s0.jobs, 500);
	CHECK_EQ_INT(s1.queue_depth, 0);
	CHECK_EQ_INT(s1.failed_jobs, 0);
	/* 500 jobs at most 64 per COMMIT: 8 commits. */
	CHECK_EQ_INT(s1.commits - s0.commits, 8);
	CHECK(s1.commits < s1.jobs);
	CHECK_EQ_INT(s1.audit_events, 501);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM transactions"), 500);
	/* Chain order is commit order. */
	CHECK_EQ_INT(sql_int(f.path, "SELECT MAX(seq) FROM audit_events"), 501);
	CHECK_EQ_INT(store_audit_verify(f.rd, NULL), 0);
end:
	if (gated)
		sem_post(&g.release);
	fix_teardown(&f);
	gate_destroy(&g);
	TT_END;
}

static int
test_batch_partial_failure(void)
{
	struct fix f;
	struct store_txn_row row;
	struct one a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	struct store_vault_entry v;
	struct store_stats s0, s1;
	struct store_audit ev = gate_event;
	struct gate g = { .inited = 0 };
	int64_t bad = -1;
	int gated = 0;
	TT_BEGIN;
	CHECK(fix_setup(&f, 64) == 0);
	CHECK(gate_close(f.st, &g) == 0);
	gated = 1;
	store_get_stats(f.st, &s0);
	ev.event_type = "txn.created";
	fill_row(&row, "txn_A", "posting");
	fill_vault(&v, "tok_A", 0);
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, &v,
	                              &(struct store_commit){ .audit = &ev,
	                                                      .n_audit = 1,
	                                                      .done = one_done,
	                                                      .arg = &a }),
	             0);
	(void)fgw_strlcpy(row.description, "the duplicate", sizeof(row.description));
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .audit = &ev,
	                                                      .n_audit = 1,
	                                                      .done = one_done,
	                                                      .arg = &b }),
	             0);
	/* D fails after its transaction row was written: the row goes too. */
	fill_row(&row, "txn_D", "posting");
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, &v,
	                              &(struct store_commit){ .audit = &ev,
	                                                      .n_audit = 1,
	                                                      .done = one_done,
	                                                      .arg = &d }),
	             0);
	fill_row(&row, "txn_C", "posting");
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .audit = &ev,
	                                                      .n_audit = 1,
	                                                      .done = one_done,
	                                                      .arg = &c }),
	             0);
	sem_post(&g.release);
	gated = 0;
	CHECK_EQ_INT(pump(f.base, &c.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &b.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &a.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &d.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&a.rc), 0);
	CHECK_EQ_INT(atomic_load(&b.rc), FGW_ERR_EXISTS);
	CHECK_EQ_INT(atomic_load(&c.rc), 0);
	CHECK_EQ_INT(atomic_load(&d.rc), FGW_ERR_EXISTS);
	store_get_stats(f.st, &s1);
	CHECK_EQ_INT(s1.commits - s0.commits, 1); /* one batch */
	CHECK_EQ_INT(s1.jobs - s0.jobs, 2);
	CHECK_EQ_INT(s1.failed_jobs - s0.failed_jobs, 2);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM transactions"), 2);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM transactions WHERE "
	                             "id = 'txn_D'"),
	             0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM vault_entries"), 1);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM transactions WHERE "
	                             "description = 'the duplicate'"),
	             0);
	/* The failed job's audit event was rolled back with it, and the
	 * chain has no hole: gate, A, C. */
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events"), 3);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);
end:
	if (gated)
		sem_post(&g.release);
	fix_teardown(&f);
	gate_destroy(&g);
	TT_END;
}

/* Jobs of a group commit in one batch even when batch_max is 1; every
 * state but the pre-call claim leaves a txn_moves row in its own commit,
 * whichever statement wrote it, and a refused move leaves none. */
static int
test_group_and_moves(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_txn_update u;
	struct one a = { 0 }, b = { 0 }, c = { 0 };
	struct store_stats s0, s1;
	TT_BEGIN;
	CHECK(fix_setup(&f, 1) == 0);
	store_get_stats(f.st, &s0);
	store_group_begin(f.w);
	fill_row(&row, "txn_GA", "declined");
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .done = one_done, .arg = &a }),
	             0);
	fill_row(&row, "txn_GB", "posting");
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .done = one_done, .arg = &b }),
	             0);
	fill_row(&row, "txn_GC", "posting");
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .done = one_done, .arg = &c }),
	             0);
	store_group_end(f.st, f.w);
	CHECK_EQ_INT(pump(f.base, &a.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &b.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &c.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&a.rc), 0);
	CHECK_EQ_INT(atomic_load(&b.rc), 0);
	CHECK_EQ_INT(atomic_load(&c.rc), 0);
	store_get_stats(f.st, &s1);
	CHECK_EQ_INT(s1.commits - s0.commits, 1);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM txn_moves"), 1);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM txn_moves WHERE txn_id = 'txn_GA'"
	                             " AND status = 'declined'"),
	             1);
	fill_update(&u, "txn_GB", "succeeded");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), 0);
	fill_update(&u, "txn_GB", "failed");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), FGW_ERR_STATE);
	CHECK_EQ_INT(sql_int(f.path,
	                     "SELECT COUNT(*) FROM txn_moves WHERE txn_id = 'txn_GB'"),
	             1);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM txn_moves WHERE txn_id = 'txn_GB'"
	                             " AND status = 'succeeded'"),
	             1);
	/* Once announced, the row goes. */
	atomic_store(&a.done, 0);
	CHECK_EQ_INT(store_txn_moves_done(f.st, f.w, "txn_GB", "succeeded", one_done, &a), 0);
	CHECK_EQ_INT(pump(f.base, &a.done, 1), 0);
	CHECK_EQ_INT(sql_int(f.path,
	                     "SELECT COUNT(*) FROM txn_moves WHERE txn_id = 'txn_GB'"),
	             0);
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_forward_only(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_txn_update u;
	char iso[40];
	TT_BEGIN;
	memset(&row, 0, sizeof(row));
	CHECK(fix_setup(&f, 16) == 0);
	fill_row(&row, "txn_fwd", "posting");
	(void)fgw_strlcpy(row.processor_ref, "pr_keep", sizeof(row.processor_ref));
	row.created_at = row.updated_at = 1000;
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);

	fill_update(&u, "txn_fwd", "succeeded");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), 0);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_fwd", &row), 0);
	CHECK_STR(row.status, "succeeded");
	CHECK_STR(row.processor_ref, "pr_keep"); /* "" keeps it */
	CHECK(row.updated_at > 1000);
	store_txn_row_clear(&row);

	/* Back to posting, or anywhere from a final state: refused. */
	fill_update(&u, "txn_fwd", "posting");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), FGW_ERR_STATE);
	fill_update(&u, "txn_fwd", "failed");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), FGW_ERR_STATE);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_fwd", &row), 0);
	CHECK_STR(row.status, "succeeded");
	store_txn_row_clear(&row);

	/* processing -> requires_action -> succeeded, fields as given. */
	fill_row(&row, "txn_proc", "processing");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	fill_update(&u, "txn_proc", "requires_action");
	u.next_action_json = "{\"type\":\"3ds\"}";
	(void)fgw_strlcpy(u.processor_ref, "pr_9", sizeof(u.processor_ref));
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), 0);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_proc", &row), 0);
	CHECK_STR(row.next_action_json, "{\"type\":\"3ds\"}");
	CHECK_STR(row.processor_ref, "pr_9");
	store_txn_row_clear(&row);
	fill_update(&u, "txn_proc", "succeeded");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), 0);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_proc", &row), 0);
	CHECK_STR(row.status, "succeeded");
	CHECK(row.next_action_json == NULL);
	store_txn_row_clear(&row);

	fill_row(&row, "txn_decl", "processing");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	fill_update(&u, "txn_decl", "declined");
	(void)fgw_strlcpy(u.error_code, "card_declined", sizeof(u.error_code));
	(void)fgw_strlcpy(u.error_message, "Do not honour", sizeof(u.error_message));
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), 0);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_decl", &row), 0);
	CHECK_STR(row.status, "declined");
	CHECK_STR(row.error_code, "card_declined");
	CHECK_STR(row.error_message, "Do not honour");
	store_txn_row_clear(&row);

	fill_update(&u, "txn_missing", "succeeded");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), FGW_ERR_NOT_FOUND);
	fill_update(&u, "txn_proc", "charged_back");
	CHECK_EQ_INT(store_txn_finish(f.st, f.w, &u, NULL, &(struct store_commit){ 0 }),
	             FGW_ERR_INVALID);
	/* Refused moves leave no audit event behind. */
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events"), 4);
	sql_text(f.path, "SELECT time_utc FROM v_audit WHERE seq = 1", iso, sizeof(iso));
	CHECK(strlen(iso) == 24 && iso[10] == 'T' && iso[23] == 'Z');
end:
	store_txn_row_clear(&row);
	fix_teardown(&f);
	TT_END;
}

static int
test_idempotency(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_txn_update u;
	struct store_idem in, out;
	int64_t now = fgw_now_ms();
	TT_BEGIN;
	memset(&out, 0, sizeof(out));
	CHECK(fix_setup(&f, 16) == 0);
	fill_row(&row, "txn_idem", "posting");
	fill_idem(&in, "key-1", 202, "{\"status\":\"posting\"}", now + 3600000);
	(void)fgw_strlcpy(in.txn_id, "txn_idem", sizeof(in.txn_id));
	CHECK_EQ_INT(create_sync(&f, &row, NULL, &in, NULL, 0), 0);
	CHECK_EQ_INT(store_idem_get(f.rd, "client_a", "key-1", &out), 0);
	CHECK_STR(out.client_id, "client_a");
	CHECK_STR(out.key, "key-1");
	CHECK_STR(out.request_hash, "ab12");
	CHECK_EQ_INT(out.status_code, 202);
	CHECK_STR(out.body, "{\"status\":\"posting\"}");
	CHECK_STR(out.txn_id, "txn_idem");
	CHECK_EQ_INT(out.created_at, in.created_at);
	CHECK_EQ_INT(out.expires_at, in.expires_at);
	store_idem_clear(&out);
	CHECK_EQ_INT(store_idem_get(f.rd, "client_b", "key-1", &out), FGW_ERR_NOT_FOUND);

	/* The same live key on another transaction: a concurrent repeat. */
	fill_row(&row, "txn_idem2", "posting");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, &in, NULL, 0), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_idem2", &row), FGW_ERR_NOT_FOUND);

	/* finish replaces the stored answer. */
	fill_update(&u, "txn_idem", "succeeded");
	fill_idem(&in, "key-1", 200, "{\"status\":\"succeeded\"}", now + 7200000);
	(void)fgw_strlcpy(in.txn_id, "txn_idem", sizeof(in.txn_id));
	CHECK_EQ_INT(finish_sync(&f, &u, &in, NULL), 0);
	CHECK_EQ_INT(store_idem_get(f.rd, "client_a", "key-1", &out), 0);
	CHECK_EQ_INT(out.status_code, 200);
	CHECK_STR(out.body, "{\"status\":\"succeeded\"}");
	CHECK_EQ_INT(out.expires_at, now + 7200000);
	store_idem_clear(&out);

	/* Expired answers are not returned and do not block the key. */
	fill_row(&row, "txn_old", "posting");
	fill_idem(&in, "key-old", 200, "{}", now - 1000);
	CHECK_EQ_INT(create_sync(&f, &row, NULL, &in, NULL, 0), 0);
	CHECK_EQ_INT(store_idem_get(f.rd, "client_a", "key-old", &out), FGW_ERR_NOT_FOUND);
	fill_row(&row, "txn_new", "posting");
	fill_idem(&in, "key-old", 201, NULL, now + 60000);
	CHECK_EQ_INT(create_sync(&f, &row, NULL, &in, NULL, 0), 0);
	CHECK_EQ_INT(store_idem_get(f.rd, "client_a", "key-old", &out), 0);
	CHECK_EQ_INT(out.status_code, 201);
	CHECK(out.body == NULL);
	store_idem_clear(&out);
end:
	store_idem_clear(&out);
	fix_teardown(&f);
	TT_END;
}

static int
test_vault_purge(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_txn_update u;
	struct store_vault_entry v, got;
	char *blob = NULL;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	fill_row(&row, "txn_once", "posting");
	fill_vault(&v, "tok_once", 0);
	CHECK_EQ_INT(create_sync(&f, &row, &v, NULL, NULL, 0), 0);
	fill_row(&row, "txn_saved", "posting");
	fill_vault(&v, "tok_saved", 1);
	CHECK_EQ_INT(create_sync(&f, &row, &v, NULL, NULL, 0), 0);

	CHECK_EQ_INT(store_vault_get(f.rd, "tok_once", &got, &blob), 0);
	CHECK_STR(got.token, "tok_once");
	CHECK_STR(got.key_id, "kek-2024");
	CHECK_STR(blob, "v1.bm9uY2U.Y2lwaGVydGV4dA");
	CHECK(got.blob == blob);
	CHECK_STR(got.fingerprint, "fp01");
	CHECK_STR(got.brand, "Visa");
	CHECK_STR(got.bin, "424242");
	CHECK_STR(got.last4, "4242");
	CHECK_EQ_INT(got.exp_month, 12);
	CHECK_EQ_INT(got.exp_year, 2030);
	CHECK_STR(got.customer_id, "");
	CHECK_EQ_INT(got.saved, 0);
	CHECK_EQ_INT(got.expires_at, 1900000000000LL);
	free(blob);
	blob = NULL;
	/* A second entry with the same token is refused. */
	fill_row(&row, "txn_dup_tok", "posting");
	CHECK_EQ_INT(create_sync(&f, &row, &v, NULL, NULL, 0), FGW_ERR_EXISTS);

	fill_update(&u, "txn_once", "succeeded");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, "tok_once"), 0);
	CHECK_EQ_INT(store_vault_get(f.rd, "tok_once", &got, &blob), FGW_ERR_NOT_FOUND);
	CHECK(blob == NULL);
	fill_update(&u, "txn_saved", "succeeded");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, "tok_saved"), 0);
	CHECK_EQ_INT(store_vault_get(f.rd, "tok_saved", &got, &blob), 0);
	CHECK_EQ_INT(got.saved, 1);
	CHECK_STR(got.customer_id, "cus_1");
	/* The transaction keeps its token reference. */
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_once", &row), 0);
	CHECK_STR(row.token, "tok_1");
	store_txn_row_clear(&row);
end:
	free(blob);
	fix_teardown(&f);
	TT_END;
}

/* Appends n events that together exercise create, finish and audit. */
static int
make_chain(struct fix *f, int n)
{
	struct store_audit ev = {
		.actor = "client_a",
		.source = "192.0.2.7",
		.event_type = "auth.failed",
		.resource = "res",
		.outcome = "failure",
		.details_json = "{\"reason\":\"bad key\"}",
	};
	for (int i = 0; i < n; i++) {
		int r = audit_sync(f, &ev, 1);
		if (r != 0)
			return r;
	}
	return 0;
}

static int
test_audit_chain(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_txn_update u;
	struct store_audit evs[2] = {
		{ "client_a", "192.0.2.7", "txn.created", "txn_chain", "success",
		  "{\"amount\":15000}" },
		{ "client_a", "192.0.2.7", "txn.decided", "txn_chain", "allow", NULL },
	};
	struct store_audit nl = { "evil\nactor", "local",   "auth.failed",
		                      "x\ry",        "failure", "{\n}" };
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	unsigned char tag[32];
	char hex[65], msg[1024], err[128];
	int64_t bad = -1;
	int n;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0); /* empty is intact */
	fill_row(&row, "txn_chain", "posting");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, evs, 2), 0);
	fill_update(&u, "txn_chain", "succeeded");
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), 0);
	CHECK_EQ_INT(audit_sync(&f, &nl, 1), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events"), 4);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);

	/* Recompute row 1 independently from the documented canonical form. */
	CHECK(sqlite3_open_v2(f.path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
	CHECK(sqlite3_prepare_v2(db,
	                         "SELECT ts, prev_hash, hash FROM "
	                         "audit_events WHERE seq = 1",
	                         -1, &s, NULL) == SQLITE_OK);
	CHECK(sqlite3_step(s) == SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(s, 1),
	          "0000000000000000000000000000000000000000000000000000000000000000");
	n = snprintf(msg, sizeof(msg), "%s\n1\n%lld\n%s\n%s\n%s\n%s\n%s\n%s",
	             (const char *)sqlite3_column_text(s, 1),
	             (long long)sqlite3_column_int64(s, 0), evs[0].actor, evs[0].source,
	             evs[0].event_type, evs[0].resource, evs[0].outcome, evs[0].details_json);
	CHECK(n > 0 && (size_t)n < sizeof(msg));
	CHECK(test_mac(NULL, msg, (size_t)n, tag) == 0);
	fgw_hex(tag, sizeof(tag), hex);
	CHECK_STR((const char *)sqlite3_column_text(s, 2), hex);
	sqlite3_finalize(s);
	s = NULL;
	/* Row 2 links to row 1; NULL details stay NULL. */
	CHECK(sqlite3_prepare_v2(db,
	                         "SELECT (SELECT hash FROM audit_events "
	                         "WHERE seq = 1) = prev_hash, details_json IS "
	                         "NULL FROM audit_events WHERE seq = 2",
	                         -1, &s, NULL) == SQLITE_OK);
	CHECK(sqlite3_step(s) == SQLITE_ROW);
	CHECK_EQ_INT(sqlite3_column_int(s, 0), 1);
	CHECK_EQ_INT(sqlite3_column_int(s, 1), 1);
	sqlite3_finalize(s);
	s = NULL;
	sqlite3_close(db);
	db = NULL;
	/* Line breaks in single-line fields were flattened. */
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events WHERE "
	                             "seq = 4 AND actor = 'evil actor' AND resource = "
	                             "'x y' AND details_json = '{' || char(10) || '}'"),
	             1);

	/* The triggers keep the table append-only. */
	CHECK_EQ_INT(sql_exec(f.path,
	                      "UPDATE audit_events SET outcome = 'x' "
	                      "WHERE seq = 1",
	                      err, sizeof(err)) &
	                 0xff,
	             SQLITE_CONSTRAINT);
	CHECK(strstr(err, "append-only") != NULL);
	CHECK_EQ_INT(sql_exec(f.path, "DELETE FROM audit_events WHERE seq = 2", err,
	                      sizeof(err)) &
	                 0xff,
	             SQLITE_CONSTRAINT);
	CHECK(strstr(err, "append-only") != NULL);
	CHECK_EQ_INT(sql_exec(f.path,
	                      "INSERT OR REPLACE INTO audit_events "
	                      "SELECT * FROM audit_events WHERE seq = 3",
	                      err, sizeof(err)) &
	                 0xff,
	             SQLITE_CONSTRAINT);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events"), 4);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);

	/* The chain continues across a reopen (head loaded from disk). */
	store_waker_free(f.w);
	f.w = NULL;
	store_close(f.st);
	f.st = NULL;
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(store_waker_new(f.st, f.base, &f.w), 0);
	CHECK_EQ_INT(make_chain(&f, 2), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT MAX(seq) FROM audit_events"), 6);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);
end:
	sqlite3_finalize(s);
	sqlite3_close(db);
	fix_teardown(&f);
	TT_END;
}

static const char drop_triggers[] = "DROP TRIGGER audit_events_no_update;"
                                    "DROP TRIGGER audit_events_no_delete;";

static int
test_audit_tamper_edit(void)
{
	struct fix f;
	int64_t bad = -1;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(make_chain(&f, 5), 0);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);
	CHECK_EQ_INT(sql_exec(f.path, drop_triggers, NULL, 0), SQLITE_OK);
	/* One byte of one field of seq 3. */
	CHECK_EQ_INT(sql_exec(f.path,
	                      "UPDATE audit_events SET details_json = "
	                      "replace(details_json, 'bad', 'bAd') WHERE seq = 3",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(bad, 3);
	/* Undo it; then forge a timestamp on seq 5. */
	CHECK_EQ_INT(sql_exec(f.path,
	                      "UPDATE audit_events SET details_json = "
	                      "replace(details_json, 'bAd', 'bad') WHERE seq = 3",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);
	CHECK_EQ_INT(sql_exec(f.path,
	                      "UPDATE audit_events SET ts = ts + 1 "
	                      "WHERE seq = 5",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(bad, 5);
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_audit_tamper_delete(void)
{
	struct fix f;
	int64_t bad = -1;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(make_chain(&f, 5), 0);
	CHECK_EQ_INT(sql_exec(f.path, drop_triggers, NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(sql_exec(f.path, "DELETE FROM audit_events WHERE seq = 3", NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(bad, 3);
	/* Renumbering to close the gap breaks the prev_hash link instead. */
	CHECK_EQ_INT(sql_exec(f.path,
	                      "UPDATE audit_events SET seq = seq - 1 "
	                      "WHERE seq > 3",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(bad, 3);
	/* Deleting the first row. */
	CHECK_EQ_INT(sql_exec(f.path, "DELETE FROM audit_events WHERE seq = 1", NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(bad, 1);
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_audit_tamper_swap(void)
{
	struct fix f;
	struct store_audit ev = {
		.actor = "client_a",
		.source = "local",
		.event_type = "txn.created",
		.resource = NULL,
		.outcome = "success",
		.details_json = NULL,
	};
	static const char *const res[] = { "r1", "r2", "r3", "r4", "r5" };
	int64_t bad = -1;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	for (int i = 0; i < 5; i++) {
		ev.resource = res[i];
		CHECK_EQ_INT(audit_sync(&f, &ev, 1), 0);
	}
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);
	CHECK_EQ_INT(sql_exec(f.path, drop_triggers, NULL, 0), SQLITE_OK);
	/* Swap every column but seq between rows 2 and 4. */
	CHECK_EQ_INT(sql_exec(f.path,
	                      "CREATE TEMP TABLE t AS SELECT * FROM audit_events "
	                      "WHERE seq IN (2, 4);"
	                      "UPDATE audit_events SET (ts, actor, source, "
	                      "event_type, resource, outcome, details_json, "
	                      "prev_hash, hash) = (SELECT ts, actor, source, "
	                      "event_type, resource, outcome, details_json, "
	                      "prev_hash, hash FROM t WHERE t.seq = 6 - "
	                      "audit_events.seq) WHERE seq IN (2, 4);",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events WHERE "
	                             "seq = 2 AND resource = 'r4'"),
	             1);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(bad, 2);
end:
	fix_teardown(&f);
	TT_END;
}

/* Submits audit probes until the store refuses them, then opens the gate:
 * proof that store_close began while jobs were still queued. */
struct prober {
	struct store *st;
	struct gate *g;
	struct tally probes;
	atomic_int submitted;
	atomic_int saw_shutdown;
};

static void *
prober_main(void *arg)
{
	struct prober *p = arg;
	int64_t deadline = fgw_mono_ms() + WAIT_MS;
	while (fgw_mono_ms() < deadline) {
		int r = store_audit_append(p->st, NULL,
		                           &(struct store_commit){ .audit = &gate_event,
		                                                   .n_audit = 1,
		                                                   .done = tally_done,
		                                                   .arg = &p->probes });
		if (r == FGW_ERR_SHUTDOWN) {
			atomic_store(&p->saw_shutdown, 1);
			break;
		}
		if (r == 0)
			atomic_fetch_add(&p->submitted, 1);
		usleep(1000);
	}
	sem_post(&p->g->release);
	return NULL;
}

static int
test_close_drains(void)
{
	struct fix f;
	struct store_txn_row row;
	struct tally t = { 0 };
	struct prober p;
	struct gate g = { .inited = 0 };
	pthread_t th;
	int started = 0, gated = 0;
	TT_BEGIN;
	memset(&p, 0, sizeof(p));
	CHECK(fix_setup(&f, 16) == 0);
	t.expect = pthread_self(); /* not checked: NULL waker */
	CHECK(gate_close(f.st, &g) == 0);
	gated = 1;
	for (int i = 0; i < 100; i++) {
		char id[40];
		int n = snprintf(id, sizeof(id), "txn_drain_%03d", i);
		CHECK(n > 0 && (size_t)n < sizeof(id));
		fill_row(&row, id, "posting");
		CHECK_EQ_INT(store_txn_create(f.st, NULL, &row, NULL,
		                              &(struct store_commit){ .audit = &gate_event,
		                                                      .n_audit = 1,
		                                                      .done = tally_done,
		                                                      .arg = &t }),
		             0);
	}
	p.st = f.st;
	p.g = &g;
	CHECK(pthread_create(&th, NULL, prober_main, &p) == 0);
	started = 1;
	gated = 0; /* the prober opens it */
	store_close(f.st);
	f.st = NULL;
	pthread_join(th, NULL);
	started = 0;
	CHECK_EQ_INT(atomic_load(&p.saw_shutdown), 1);
	CHECK_EQ_INT(atomic_load(&t.n), 100);
	CHECK_EQ_INT(atomic_load(&t.ok), 100);
	CHECK_EQ_INT(atomic_load(&p.probes.n), atomic_load(&p.submitted));
	CHECK_EQ_INT(atomic_load(&p.probes.ok), atomic_load(&p.submitted));
	/* On disk after reopening. */
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM transactions"), 100);
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_drain_099", &row), 0);
	store_txn_row_clear(&row);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events"),
	             1 + 100 + atomic_load(&p.submitted));
	CHECK_EQ_INT(store_audit_verify(f.rd, NULL), 0);
	/* After close, nothing is accepted (checked on a closing store above);
	 * a fresh store accepts again. */
	CHECK_EQ_INT(make_chain(&f, 1), 0);
end:
	if (gated)
		sem_post(&g.release);
	if (started)
		pthread_join(th, NULL);
	fix_teardown(&f);
	gate_destroy(&g);
	TT_END;
}

static int
test_waker_lifetimes(void)
{
	struct fix f;
	struct store_waker *w2 = NULL;
	struct tally t = { 0 };
	struct gate g = { .inited = 0 };
	int gated = 0;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	t.expect = pthread_self();

	/* Completions for a base whose loop no longer runs stay queued and
	 * are dropped, without done, when the waker is freed after close. */
	CHECK_EQ_INT(store_audit_append(f.st, f.w,
	                                &(struct store_commit){ .audit = &gate_event,
	                                                        .n_audit = 1,
	                                                        .done = tally_done,
	                                                        .arg = &t }),
	             0);
	CHECK_EQ_INT(store_audit_append(f.st, f.w,
	                                &(struct store_commit){ .audit = &gate_event,
	                                                        .n_audit = 1,
	                                                        .done = tally_done,
	                                                        .arg = &t }),
	             0);
	store_close(f.st);
	f.st = NULL;
	store_waker_free(f.w);
	f.w = NULL;
	CHECK_EQ_INT(event_base_loop(f.base, EVLOOP_NONBLOCK), 0);
	CHECK_EQ_INT(atomic_load(&t.n), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events"), 2);

	/* A waker freed while its jobs are still queued: they commit, and
	 * done is never called. */
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(store_waker_new(f.st, f.base, &w2), 0);
	CHECK(gate_close(f.st, &g) == 0);
	gated = 1;
	for (int i = 0; i < 10; i++)
		CHECK_EQ_INT(store_audit_append(f.st, w2,
		                                &(struct store_commit){ .audit = &gate_event,
		                                                        .n_audit = 1,
		                                                        .done = tally_done,
		                                                        .arg = &t }),
		             0);
	store_waker_free(w2);
	w2 = NULL;
	sem_post(&g.release);
	gated = 0;
	store_close(f.st);
	f.st = NULL;
	CHECK_EQ_INT(event_base_loop(f.base, EVLOOP_NONBLOCK), 0);
	CHECK_EQ_INT(atomic_load(&t.n), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM audit_events"), 13);

	/* Completions that arrived but never ran are dropped by free, before
	 * close. */
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(store_waker_new(f.st, f.base, &w2), 0);
	{
		struct one o = { 0 };
		CHECK_EQ_INT(store_audit_append(f.st, w2,
		                                &(struct store_commit){ .audit = &gate_event,
		                                                        .n_audit = 1,
		                                                        .done = tally_done,
		                                                        .arg = &t }),
		             0);
		/* A later NULL-waker job completing proves the first one was
		 * delivered to w2's list (jobs complete in order). */
		CHECK_EQ_INT(store_audit_append(f.st, NULL,
		                                &(struct store_commit){ .audit = &gate_event,
		                                                        .n_audit = 1,
		                                                        .done = one_done,
		                                                        .arg = &o }),
		             0);
		CHECK_EQ_INT(wait_count(&o.done, 1), 0);
	}
	store_waker_free(w2);
	w2 = NULL;
	CHECK_EQ_INT(event_base_loop(f.base, EVLOOP_NONBLOCK), 0);
	CHECK_EQ_INT(atomic_load(&t.n), 0);
end:
	if (gated)
		sem_post(&g.release);
	store_waker_free(w2);
	fix_teardown(&f);
	gate_destroy(&g);
	TT_END;
}

/* A done callback that frees the waker it came through. */
struct selffree {
	struct store_waker *w;
	atomic_int n;
};

static void
selffree_done(void *arg, int rc)
{
	struct selffree *s = arg;
	(void)rc;
	if (atomic_fetch_add(&s->n, 1) == 0) {
		store_waker_free(s->w);
		s->w = NULL;
	}
}

static int
test_waker_free_in_done(void)
{
	struct fix f;
	struct selffree sf = { 0 };
	struct one last = { 0 };
	struct gate g = { .inited = 0 };
	int gated = 0;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(store_waker_new(f.st, f.base, &sf.w), 0);
	CHECK(gate_close(f.st, &g) == 0);
	gated = 1;
	for (int i = 0; i < 3; i++)
		CHECK_EQ_INT(store_audit_append(f.st, sf.w,
		                                &(struct store_commit){ .audit = &gate_event,
		                                                        .n_audit = 1,
		                                                        .done = selffree_done,
		                                                        .arg = &sf }),
		             0);
	CHECK_EQ_INT(store_audit_append(f.st, NULL,
	                                &(struct store_commit){ .audit = &gate_event,
	                                                        .n_audit = 1,
	                                                        .done = one_done,
	                                                        .arg = &last }),
	             0);
	sem_post(&g.release);
	gated = 0;
	/* Once the NULL-waker job after them has run, all three sit on the
	 * waker's list: one callback run takes them. The first done frees the
	 * waker; the other two still run from that same callback. */
	CHECK_EQ_INT(wait_count(&last.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &sf.n, 3), 0);
	CHECK(sf.w == NULL);
end:
	if (gated)
		sem_post(&g.release);
	store_waker_free(sf.w);
	fix_teardown(&f);
	gate_destroy(&g);
	TT_END;
}

static int
test_reader_sees_commits(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_reader *r2 = NULL;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(store_reader_open(f.st, &r2), 0);
	CHECK_EQ_INT(store_txn_get(r2, NULL, "txn_late", &row), FGW_ERR_NOT_FOUND);
	fill_row(&row, "txn_late", "posting");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	/* Both readers, one opened before the write, see the commit. */
	CHECK_EQ_INT(store_txn_get(r2, "client_a", "txn_late", &row), 0);
	CHECK_STR(row.status, "posting");
	store_txn_row_clear(&row);
	CHECK_EQ_INT(store_txn_get(f.rd, "client_a", "txn_late", &row), 0);
	store_txn_row_clear(&row);
	/* A reader cannot write. */
	CHECK_EQ_INT(store_txn_get(NULL, NULL, "x", &row), FGW_ERR_INVALID);
end:
	store_reader_close(r2);
	fix_teardown(&f);
	TT_END;
}

/* The e-mail outbox (v13): one mail per dedupe key, attempts move the
 * row, and the step runs again harmlessly over its own tables. */
static int
mail_enqueue_sync(struct fix *f, const char *id, const char *dedupe)
{
	struct one o = { 0 };
	struct store_mail_row row;
	int r;
	memset(&row, 0, sizeof(row));
	fgw_strlcpy(row.id, id, sizeof(row.id));
	fgw_strlcpy(row.kind, "receipt", sizeof(row.kind));
	fgw_strlcpy(row.audience, "customer", sizeof(row.audience));
	fgw_strlcpy(row.mail_from, "shop@example.com", sizeof(row.mail_from));
	fgw_strlcpy(row.rcpt_to, "ann@example.com", sizeof(row.rcpt_to));
	fgw_strlcpy(row.dedupe_key, dedupe, sizeof(row.dedupe_key));
	row.message = "Subject: \r\n\r\nbody\r\n"; /* an empty subject is one */
	if ((r = store_mail_enqueue(f->st, f->w, &row, NULL, 0, one_done, &o)) != 0)
		return r;
	if (pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_TIMEOUT;
	return atomic_load(&o.rc);
}

static int
test_mail_outbox(void)
{
	struct fix f;
	struct store_mail_row due[4];
	struct one o = { 0 };
	int n = 0;
	int64_t pending = 0, failed = 0;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(mail_enqueue_sync(&f, "mail_1", "receipt:txn_1"), 0);
	CHECK_EQ_INT(mail_enqueue_sync(&f, "mail_2", "receipt:txn_1"), FGW_ERR_EXISTS);
	CHECK_EQ_INT(mail_enqueue_sync(&f, "mail_3", ""), 0);
	CHECK_EQ_INT(mail_enqueue_sync(&f, "mail_4", ""), 0); /* no key: no dedupe */
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM mail_outbox"), 3);
	CHECK_EQ_INT(store_mail_backlog(f.rd, &pending, &failed), 0);
	CHECK_EQ_INT(pending, 3);
	CHECK_EQ_INT(store_mail_due(f.rd, fgw_now_ms(), due, 4, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK(strstr(due[0].message, "body") != NULL);
	for (int i = 0; i < n; i++)
		store_mail_row_clear(&due[i]);
	CHECK_EQ_INT(store_mail_attempt(f.st, f.w, "mail_1", "failed", 0, "SMTP 550: no",
	                                NULL, 0, one_done, &o),
	             0);
	CHECK_EQ_INT(pump(f.base, &o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), 0);
	/* No longer pending: a second record is refused. */
	CHECK_EQ_INT(store_mail_attempt(f.st, f.w, "mail_1", "sent", 0, "", NULL, 0, one_done,
	                                &o),
	             0);
	CHECK_EQ_INT(pump(f.base, &o.done, 2), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), FGW_ERR_STATE);
	CHECK_EQ_INT(store_mail_backlog(f.rd, &pending, &failed), 0);
	CHECK_EQ_INT(pending, 2);
	CHECK_EQ_INT(failed, 1);
	/* Back to v12 with v13's tables in place: the step runs again. */
	fix_close_store(&f);
	CHECK_EQ_INT(sql_exec(f.path, "PRAGMA user_version = 12", NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	CHECK_EQ_INT(sql_int(f.path, "SELECT COUNT(*) FROM mail_outbox"), 3);
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_batch_lock_failure(void)
{
	struct fix f;
	struct store_txn_row row;
	struct one a = { 0 }, b = { 0 };
	struct store_stats s0, s1;
	sqlite3 *other = NULL;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	/* Reopen with a short busy timeout. */
	store_waker_free(f.w);
	f.w = NULL;
	store_close(f.st);
	f.st = NULL;
	CHECK_EQ_INT(fix_open_store(&f, 16, 100), 0);
	CHECK_EQ_INT(store_waker_new(f.st, f.base, &f.w), 0);
	store_get_stats(f.st, &s0);
	/* Another process holds the write lock: the batch cannot begin. */
	CHECK(sqlite3_open_v2(f.path, &other, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK);
	CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
	fill_row(&row, "txn_lock_a", "posting");
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .audit = &gate_event,
	                                                      .n_audit = 1,
	                                                      .done = one_done,
	                                                      .arg = &a }),
	             0);
	fill_row(&row, "txn_lock_b", "posting");
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .audit = &gate_event,
	                                                      .n_audit = 1,
	                                                      .done = one_done,
	                                                      .arg = &b }),
	             0);
	CHECK_EQ_INT(pump(f.base, &a.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &b.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&a.rc), FGW_ERR_DB);
	CHECK_EQ_INT(atomic_load(&b.rc), FGW_ERR_DB);
	store_get_stats(f.st, &s1);
	CHECK_EQ_INT(s1.failed_jobs - s0.failed_jobs, 2);
	CHECK_EQ_INT(s1.commits, s0.commits);
	CHECK(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(other);
	other = NULL;
	/* The in-memory chain head was restored: the next append links. */
	fill_row(&row, "txn_lock_a", "posting");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, &gate_event, 1), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT MAX(seq) FROM audit_events"), 1);
	CHECK_EQ_INT(store_audit_verify(f.rd, NULL), 0);
end:
	if (other != NULL) {
		sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(other);
	}
	fix_teardown(&f);
	TT_END;
}

static int
test_invalid_input(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_txn_update u;
	struct store_vault_entry v, got;
	struct store_idem idem, iout;
	struct store_audit ev = gate_event;
	char *blob = NULL;
	char long_token[64];
	struct one o = { 0 };
	TT_BEGIN;
	memset(&iout, 0, sizeof(iout));
	CHECK(fix_setup(&f, 16) == 0);
	fill_row(&row, "txn_inv", "posting");

	/* Refused before queuing: done is never called. */
	CHECK_EQ_INT(store_txn_create(NULL, f.w, &row, NULL,
	                              &(struct store_commit){ .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_txn_create(f.st, f.w, NULL, NULL,
	                              &(struct store_commit){ .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){
	                                  .n_audit = 2, .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	ev.event_type = "";
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){ .audit = &ev,
	                                                      .n_audit = 1,
	                                                      .done = one_done,
	                                                      .arg = &o }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_audit_append(f.st, f.w,
	                                &(struct store_commit){ .audit = &ev,
	                                                        .n_audit = 1,
	                                                        .done = one_done,
	                                                        .arg = &o }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_audit_append(f.st, f.w,
	                                &(struct store_commit){ .done = one_done,
	                                                        .arg = &o }),
	             FGW_ERR_INVALID);
	fill_vault(&v, "tok_inv", 0);
	v.blob = NULL;
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, &v,
	                              &(struct store_commit){ .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	fill_idem(&idem, "", 200, "{}", fgw_now_ms() + 60000);
	CHECK_EQ_INT(store_txn_create(f.st, f.w, &row, NULL,
	                              &(struct store_commit){
	                                  .idem = &idem, .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	fill_update(&u, "txn_inv", "succeeded");
	memset(long_token, 'x', sizeof(long_token) - 1);
	long_token[sizeof(long_token) - 1] = '\0';
	CHECK_EQ_INT(store_txn_finish(f.st, f.w, &u, long_token,
	                              &(struct store_commit){ .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_txn_finish(f.st, f.w, &u, "",
	                              &(struct store_commit){ .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_txn_finish(f.st, f.w, NULL, NULL,
	                              &(struct store_commit){ .done = one_done, .arg = &o }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(store_reader_open(NULL, NULL), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_vault_get(f.rd, NULL, &got, &blob), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_idem_get(f.rd, NULL, "k", &iout), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_audit_verify(NULL, NULL), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_waker_new(f.st, NULL, NULL), FGW_ERR_INVALID);
	CHECK_EQ_INT(atomic_load(&o.done), 0);

	/* idem created_at 0 means now. */
	fill_idem(&idem, "k0", 200, "{}", fgw_now_ms() + 60000);
	idem.created_at = 0;
	CHECK_EQ_INT(create_sync(&f, &row, NULL, &idem, NULL, 0), 0);
	CHECK_EQ_INT(store_idem_get(f.rd, "client_a", "k0", &iout), 0);
	CHECK(iout.created_at > 0);
	store_idem_clear(&iout);

	/* A stored state this build does not know (or an oversized one) is
	 * never moved. */
	CHECK_EQ_INT(sql_exec(f.path,
	                      "UPDATE transactions SET status = "
	                      "'refunded' WHERE id = 'txn_inv'",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), FGW_ERR_STATE);
	CHECK_EQ_INT(sql_exec(f.path,
	                      "UPDATE transactions SET status = "
	                      "'posting-but-much-longer-than-any-state' "
	                      "WHERE id = 'txn_inv'",
	                      NULL, 0),
	             SQLITE_OK);
	CHECK_EQ_INT(finish_sync(&f, &u, NULL, NULL), FGW_ERR_STATE);
	/* A row that does not fit the struct is refused, not truncated. */
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_inv", &row), FGW_ERR_TOO_LARGE);
	CHECK(row.metadata_json == NULL);
end:
	store_idem_clear(&iout);
	free(blob);
	fix_teardown(&f);
	TT_END;
}

static int
test_audit_job_rollback(void)
{
	struct fix f;
	struct store_audit evs[2] = { gate_event, gate_event };
	struct one x = { 0 }, y = { 0 };
	struct gate g = { .inited = 0 };
	int64_t bad = -1;
	int gated = 0;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK(gate_close(f.st, &g) == 0);
	gated = 1;
	/* X appends one event, then its second event fails: X is rolled back
	 * to its savepoint and Y, in the same batch, must chain on from the
	 * gate, not from X's vanished row. */
	evs[1].details_json = "{\"note\":\"" MAC_FAULT "\"}";
	CHECK_EQ_INT(store_audit_append(f.st, f.w,
	                                &(struct store_commit){ .audit = evs,
	                                                        .n_audit = 2,
	                                                        .done = one_done,
	                                                        .arg = &x }),
	             0);
	CHECK_EQ_INT(store_audit_append(f.st, f.w,
	                                &(struct store_commit){ .audit = &gate_event,
	                                                        .n_audit = 1,
	                                                        .done = one_done,
	                                                        .arg = &y }),
	             0);
	sem_post(&g.release);
	gated = 0;
	CHECK_EQ_INT(pump(f.base, &x.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &y.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&x.rc), FGW_ERR_CRYPTO);
	CHECK_EQ_INT(atomic_load(&y.rc), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT MAX(seq) FROM audit_events"), 2);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);
end:
	if (gated)
		sem_post(&g.release);
	fix_teardown(&f);
	gate_destroy(&g);
	TT_END;
}

/* A second store on the same file (flairctl beside the daemon) appends to
 * the chain; the first store's next append must link to it. */
static int
test_audit_two_writers(void)
{
	struct fix f;
	struct store *st2 = NULL;
	struct store_opts o = { .sync_full = 0, .batch_max = 4, .audit_mac = test_mac };
	struct one a = { 0 };
	int64_t bad = -1;
	TT_BEGIN;
	CHECK(fix_setup(&f, 16) == 0);
	CHECK_EQ_INT(make_chain(&f, 2), 0);
	o.path = f.path;
	CHECK_EQ_INT(store_open(&o, &st2), 0);
	CHECK_EQ_INT(store_audit_append(st2, NULL,
	                                &(struct store_commit){ .audit = &gate_event,
	                                                        .n_audit = 1,
	                                                        .done = one_done,
	                                                        .arg = &a }),
	             0);
	CHECK_EQ_INT(wait_count(&a.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&a.rc), 0);
	CHECK_EQ_INT(make_chain(&f, 2), 0);
	CHECK_EQ_INT(sql_int(f.path, "SELECT MAX(seq) FROM audit_events"), 5);
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad), 0);
end:
	store_close(st2);
	fix_teardown(&f);
	TT_END;
}

/* store_submit_custom: a feature's own statements commit with their audit
 * events and idempotent answer, and a failing one rolls back alone. */
struct custom_ctx {
	int fail;
	long long count;
	int freed;
};

static int
custom_run(struct db *db, void *arg)
{
	struct custom_ctx *c = arg;
	struct db_stmt *s = NULL;
	int rc;
	if (c->fail)
		return FGW_ERR_CONFLICT;
	if (db_prepare(db, "SELECT count(*) FROM audit_events", &s) != 0)
		return FGW_ERR_DB;
	rc = db_step(s);
	c->count = rc == DB_ROW ? db_col_int64(s, 0) : -1;
	db_release(s);
	return rc == DB_ROW ? 0 : FGW_ERR_DB;
}

static void
custom_free(void *arg)
{
	struct custom_ctx *c = arg;
	c->freed++;
}

static int
test_custom_job(void)
{
	struct fix f;
	struct one ok1, bad;
	struct custom_ctx good = { 0, -1, 0 }, fails = { 1, -1, 0 };
	struct store_audit ev = { "website", "127.0.0.1", "custom.test",
		                      "res_1",   "success",   "{}" };
	struct store_idem idem;
	struct store_idem got;
	memset(&f, 0, sizeof(f));
	TT_BEGIN;
	memset(&ok1, 0, sizeof(ok1));
	memset(&bad, 0, sizeof(bad));
	memset(&idem, 0, sizeof(idem));
	memset(&got, 0, sizeof(got));
	CHECK_EQ_INT(fix_setup(&f, 64), 0);
	fgw_strlcpy(idem.client_id, "website", sizeof(idem.client_id));
	fgw_strlcpy(idem.key, "k-custom", sizeof(idem.key));
	fgw_strlcpy(idem.request_hash, "ab", sizeof(idem.request_hash));
	idem.status_code = 201;
	idem.body = "{\"ok\":true}";
	idem.expires_at = fgw_now_ms() + 60000;
	CHECK_EQ_INT(store_submit_custom(f.st, f.w, custom_run, &good, custom_free,
	                                 &(struct store_commit){ .idem = &idem,
	                                                         .audit = &ev,
	                                                         .n_audit = 1,
	                                                         .done = one_done,
	                                                         .arg = &ok1 }),
	             0);
	CHECK_EQ_INT(store_submit_custom(f.st, f.w, custom_run, &fails, custom_free,
	                                 &(struct store_commit){ .audit = &ev,
	                                                         .n_audit = 1,
	                                                         .done = one_done,
	                                                         .arg = &bad }),
	             0);
	CHECK_EQ_INT(pump(f.base, &ok1.done, 1), 0);
	CHECK_EQ_INT(pump(f.base, &bad.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&ok1.rc), 0);
	CHECK_EQ_INT(atomic_load(&bad.rc), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(good.count, 0);
	CHECK_EQ_INT(good.freed, 1);
	CHECK_EQ_INT(fails.freed, 1);
	/* One audit event: the failing job's was rolled back with it. */
	CHECK_EQ_INT(store_idem_get(f.rd, "website", "k-custom", &got), 0);
	CHECK_EQ_INT(got.status_code, 201);
	CHECK_STR(got.body, "{\"ok\":true}");
	int64_t bad_seq = 0;
	CHECK_EQ_INT(store_audit_verify(f.rd, &bad_seq), 0);
	struct db_stmt *q = NULL;
	CHECK(db_prepare(store_reader_db(f.rd), "SELECT count(*) FROM audit_events", &q) ==
	      0);
	CHECK(db_step(q) == DB_ROW);
	CHECK_EQ_INT(db_col_int64(q, 0), 1);
	db_release(q);
	/* A refused submission still frees its context. */
	struct custom_ctx lost = { 0, -1, 0 };
	CHECK_EQ_INT(store_submit_custom(f.st, f.w, NULL, &lost, custom_free,
	                                 &(struct store_commit){ 0 }),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(lost.freed, 1);
end:
	store_idem_clear(&got);
	fix_teardown(&f);
	TT_END;
}

/* Runs one write job to completion on the fixture's reactor; its rc. */
static int
run_job(struct fix *f, int submitted, struct one *o)
{
	if (submitted != 0)
		return submitted;
	if (pump(f->base, &o->done, 1) != 0)
		return FGW_ERR_TIMEOUT;
	return atomic_load(&o->rc);
}

static void
method_vault(struct store_vault_entry *v, const char *token, const char *key_id,
             const char *blob, int saved, int64_t expires_at, const char *cust)
{
	memset(v, 0, sizeof(*v));
	fgw_strlcpy(v->token, token, sizeof(v->token));
	fgw_strlcpy(v->key_id, key_id, sizeof(v->key_id));
	v->blob = blob;
	fgw_strlcpy(v->brand, "Visa", sizeof(v->brand));
	fgw_strlcpy(v->last4, "4242", sizeof(v->last4));
	v->exp_month = 7;
	v->exp_year = 2031;
	v->saved = saved;
	v->expires_at = expires_at;
	fgw_strlcpy(v->customer_id, cust, sizeof(v->customer_id));
}

static void
count_cb(void *arg, const char *key_id, int64_t n)
{
	int64_t *counts = arg;
	if (strcmp(key_id, "dk_old") == 0)
		counts[0] = n;
	else if (strcmp(key_id, "dk_new") == 0)
		counts[1] = n;
}

/* Saved methods: scoping by customer, defaults, tokens of one-time cards,
 * deletion with the entry, the sweep, per-key counts and rewrap. */
static int
test_methods(void)
{
	struct fix f;
	struct one o;
	struct store_method a, b, c, got, list[8];
	struct store_vault_entry v;
	struct store_txn_row row;
	struct store_rewrap_item items[4];
	int64_t counts[2] = { 0, 0 }, purged = -1, updated = -1, now = fgw_now_ms();
	size_t n = 0;
	memset(&f, 0, sizeof(f));
	memset(items, 0, sizeof(items));
	TT_BEGIN;
	CHECK_EQ_INT(fix_setup(&f, 64), 0);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	fgw_strlcpy(a.id, "pm_a", sizeof(a.id));
	fgw_strlcpy(a.customer_id, "alice", sizeof(a.customer_id));
	fgw_strlcpy(a.nickname, "Work", sizeof(a.nickname));
	method_vault(&v, "tok_a", "dk_old", "v1:dk_old:AAAA", 1, 0, "alice");
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f, store_method_save(f.st, f.w, &a, &v, NULL, one_done, &o),
	                     &o),
	             0);
	CHECK_EQ_INT(a.is_default, 1);
	CHECK_STR(a.last4, "4242");
	/* A one-time entry of alice (as a payment leaves it) becomes saved;
	 * bob cannot take it, and an expired one cannot be saved. */
	memset(&row, 0, sizeof(row));
	fgw_strlcpy(row.id, "txn_m1", sizeof(row.id));
	fgw_strlcpy(row.client_id, "website", sizeof(row.client_id));
	fgw_strlcpy(row.currency, "USD", sizeof(row.currency));
	fgw_strlcpy(row.status, "succeeded", sizeof(row.status));
	row.amount = 100;
	method_vault(&v, "tok_b", "dk_old", "v1:dk_old:BBBB", 0, now + 60000, "alice");
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f,
	                     store_txn_create(f.st, f.w, &row, &v,
	                                      &(struct store_commit){ .done = one_done,
	                                                              .arg = &o }),
	                     &o),
	             0);
	fgw_strlcpy(b.id, "pm_b", sizeof(b.id));
	fgw_strlcpy(b.customer_id, "bob", sizeof(b.customer_id));
	fgw_strlcpy(b.token, "tok_b", sizeof(b.token));
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f, store_method_save(f.st, f.w, &b, NULL, NULL, one_done, &o),
	                     &o),
	             FGW_ERR_NOT_FOUND);
	fgw_strlcpy(b.customer_id, "alice", sizeof(b.customer_id));
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f, store_method_save(f.st, f.w, &b, NULL, NULL, one_done, &o),
	                     &o),
	             0);
	CHECK_EQ_INT(b.is_default, 0);
	fgw_strlcpy(c.id, "pm_c", sizeof(c.id));
	fgw_strlcpy(c.customer_id, "alice", sizeof(c.customer_id));
	fgw_strlcpy(c.token, "tok_b", sizeof(c.token));
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f, store_method_save(f.st, f.w, &c, NULL, NULL, one_done, &o),
	                     &o),
	             FGW_ERR_EXISTS);
	CHECK_EQ_INT(store_methods_list(f.rd, "alice", list, 8, &n), 0);
	CHECK_EQ_INT((int)n, 2);
	CHECK_STR(list[0].id, "pm_a");
	CHECK_EQ_INT(store_methods_list(f.rd, "bob", list, 8, &n), 0);
	CHECK_EQ_INT((int)n, 0);
	CHECK_EQ_INT(store_method_get(f.rd, "bob", "pm_a", &got), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(store_method_get(f.rd, "alice", "pm_b", &got), 0);
	CHECK_STR(got.token, "tok_b");
	/* Default moves; another customer's id is not found. */
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f,
	                     store_method_set_default(f.st, f.w, "bob", "pm_b", NULL,
	                                              one_done, &o),
	                     &o),
	             FGW_ERR_NOT_FOUND);
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f,
	                     store_method_set_default(f.st, f.w, "alice", "pm_b", NULL,
	                                              one_done, &o),
	                     &o),
	             0);
	CHECK_EQ_INT(store_method_get(f.rd, "alice", "pm_a", &got), 0);
	CHECK_EQ_INT(got.is_default, 0);
	/* Key counts and one rewrap batch (the store does not care what the
	 * blobs hold; only that an entry moved under another key is skipped). */
	CHECK_EQ_INT(store_vault_key_counts(f.rd, count_cb, counts), 0);
	CHECK_EQ_INT((int)counts[0], 2);
	CHECK_EQ_INT(store_vault_batch_other_keys(f.rd, "dk_new", "", items, 4, &n), 0);
	CHECK_EQ_INT((int)n, 2);
	CHECK_STR(items[0].token, "tok_a");
	CHECK((items[0].new_blob = strdup("v1:dk_new:CCCC")) != NULL);
	fgw_strlcpy(items[0].new_key_id, "dk_new", sizeof(items[0].new_key_id));
	fgw_strlcpy(items[1].key_id, "dk_other", sizeof(items[1].key_id));
	CHECK((items[1].new_blob = strdup("v1:dk_new:DDDD")) != NULL);
	fgw_strlcpy(items[1].new_key_id, "dk_new", sizeof(items[1].new_key_id));
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f,
	                     store_vault_rewrap_commit(f.st, f.w, items, n, &updated,
	                                               one_done, &o),
	                     &o),
	             0);
	CHECK_EQ_INT((int)updated, 1);
	store_rewrap_items_clear(items, n);
	CHECK_EQ_INT(store_vault_batch_other_keys(f.rd, "dk_new", "tok_a", items, 4, &n), 0);
	CHECK_EQ_INT((int)n, 1);
	CHECK_STR(items[0].token, "tok_b");
	store_rewrap_items_clear(items, n);
	counts[0] = counts[1] = 0;
	CHECK_EQ_INT(store_vault_key_counts(f.rd, count_cb, counts), 0);
	CHECK_EQ_INT((int)counts[0], 1);
	CHECK_EQ_INT((int)counts[1], 1);
	/* Deleting the default promotes the other and drops the entry. */
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(
	    run_job(&f, store_method_delete(f.st, f.w, "bob", "pm_b", NULL, one_done, &o),
	            &o),
	    FGW_ERR_NOT_FOUND);
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(
	    run_job(&f, store_method_delete(f.st, f.w, "alice", "pm_b", NULL, one_done, &o),
	            &o),
	    0);
	CHECK_EQ_INT(store_method_get(f.rd, "alice", "pm_a", &got), 0);
	CHECK_EQ_INT(got.is_default, 1);
	{
		char *blob = NULL;
		struct store_vault_entry ve;
		CHECK_EQ_INT(store_vault_get(f.rd, "tok_b", &ve, &blob), FGW_ERR_NOT_FOUND);
		free(blob);
	}
	/* The sweep removes expired one-time entries only. */
	fgw_strlcpy(row.id, "txn_m2", sizeof(row.id));
	method_vault(&v, "tok_old", "dk_new", "v1:dk_new:EEEE", 0, now - 1, "");
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f,
	                     store_txn_create(f.st, f.w, &row, &v,
	                                      &(struct store_commit){ .done = one_done,
	                                                              .arg = &o }),
	                     &o),
	             0);
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f, store_vault_sweep(f.st, f.w, now, &purged, one_done, &o),
	                     &o),
	             0);
	CHECK_EQ_INT((int)purged, 1);
	CHECK_EQ_INT(store_methods_list(f.rd, "alice", list, 8, &n), 0);
	CHECK_EQ_INT((int)n, 1);
end:
	store_rewrap_items_clear(items, 4);
	fix_teardown(&f);
	TT_END;
}

static int
begin_sync(struct fix *f, const char *id, const char *key, int64_t amount,
           struct store_pendingop *out)
{
	struct store_pendingop rf;
	struct one o = { 0 };
	memset(&rf, 0, sizeof(rf));
	fgw_strlcpy(rf.id, id, sizeof(rf.id));
	fgw_strlcpy(rf.txn_id, "txn_done", sizeof(rf.txn_id));
	fgw_strlcpy(rf.idempotency_key, key, sizeof(rf.idempotency_key));
	rf.amount = amount;
	rf.txn_amount = 1000;
	if (store_pendingop_begin(f->st, f->w, &rf, out,
	                          &(struct store_commit){ .done = one_done, .arg = &o }) !=
	        0 ||
	    pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_INTERNAL;
	return atomic_load(&o.rc);
}

static int
rf_finish_sync(struct fix *f, const struct store_pendingop *rf, int succeeded,
               struct store_pendingop *out)
{
	struct one o = { 0 };
	if (store_pendingop_finish(f->st, f->w, rf, succeeded, out,
	                           &(struct store_commit){ .done = one_done, .arg = &o }) !=
	        0 ||
	    pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_INTERNAL;
	return atomic_load(&o.rc);
}

/* Refunds written ahead (store/pendingops.h) on txn_done (1000, succeeded):
 * pending ones hold their amount, failed ones give it back, outcomes move
 * forward once, the transaction follows the succeeded sum. */
static int
test_refunds_ahead(struct fix *f)
{
	struct store_pendingop a, b, c;
	struct store_pendingop_due due[4];
	struct store_txn_row row;
	struct one o = { 0 };
	int64_t sum = -1, now = fgw_now_ms();
	int n = -1;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	/* The same refund begun by another instance between the look and the
	 * insert (a trigger inserts it just before ours): the unique key
	 * decides without a failed statement, and this one is the loser
	 * (FGW_ERR_CONFLICT: answer as a repeat), rolled back whole. */
	CHECK_EQ_INT(
	    sql_exec(f->path,
	             "CREATE TRIGGER other_instance BEFORE INSERT ON refunds"
	             " WHEN NEW.id <> 'rf_other' BEGIN INSERT INTO refunds (id, txn_id,"
	             " amount, idempotency_key, created_at, status, updated_at) VALUES"
	             " ('rf_other', NEW.txn_id, NEW.amount, NEW.idempotency_key,"
	             " NEW.created_at, 'pending', NEW.created_at); END",
	             NULL, 0),
	    SQLITE_OK);
	CHECK_EQ_INT(begin_sync(f, "rf_mine", "k-race", 10, &a), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(sql_exec(f->path, "DROP TRIGGER other_instance", NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(sql_int(f->path, "SELECT count(*) FROM refunds"), 0);
	CHECK_EQ_INT(begin_sync(f, "rf_1", "k1", 600, &a), 0);
	CHECK(a.status == STORE_OP_PENDING);
	CHECK(!a.adopted);
	/* The pending 600 counts: 401 more is too much. */
	CHECK_EQ_INT(begin_sync(f, "rf_2", "k2", 401, &b), FGW_ERR_TOO_LARGE);
	CHECK_EQ_INT(begin_sync(f, "rf_2", "k2", 400, &b), 0);
	CHECK_EQ_INT(store_pendingop_refunded(f->rd, "txn_done", &sum), 0);
	CHECK(sum == 0);
	/* The same key again adopts the row, whatever the new id. */
	CHECK_EQ_INT(begin_sync(f, "rf_x", "k1", 5, &c), 0);
	CHECK(c.adopted && c.amount == 600);
	CHECK_STR(c.id, "rf_1");
	CHECK(c.status == STORE_OP_PENDING);
	/* Pending rows are due for the reconciler once old enough. */
	CHECK_EQ_INT(store_pendingop_due_list(f->rd, STORE_OP_REFUND, now + 1, now - 60000,
	                                      due, 4, &n),
	             0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(store_pendingop_due_list(f->rd, STORE_OP_REFUND, now + 60000,
	                                      now + 60000, due, 4, &n),
	             0);
	CHECK_EQ_INT(n, 2);
	CHECK_STR(b.id, "rf_2");
	CHECK_EQ_INT(store_pendingop_defer(f->st, f->w, &b, 1, now + 60000, 1,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o }),
	             0);
	CHECK_EQ_INT(pump(f->base, &o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), 0);
	CHECK_EQ_INT(store_pendingop_due_list(f->rd, STORE_OP_REFUND, now + 120000,
	                                      now + 120000, due, 4, &n),
	             0);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(due[0].id, "rf_1");
	CHECK_STR(due[0].idempotency_key, "k1");
	/* rf_2 fails: its 400 is refundable again. */
	CHECK_EQ_INT(rf_finish_sync(f, &b, 0, NULL), 0);
	CHECK_EQ_INT(rf_finish_sync(f, &b, 1, NULL), FGW_ERR_STATE);
	/* rf_1 succeeds: partially refunded; finishing again is no change. */
	CHECK_EQ_INT(rf_finish_sync(f, &a, 1, &c), 0);
	CHECK_STR(c.new_status, "partially_refunded");
	CHECK(c.refunded == 600);
	CHECK_EQ_INT(rf_finish_sync(f, &a, 1, NULL), 0);
	CHECK_EQ_INT(rf_finish_sync(f, &a, 0, NULL), FGW_ERR_STATE);
	CHECK_EQ_INT(begin_sync(f, "rf_3", "k3", 400, &b), 0);
	CHECK_EQ_INT(rf_finish_sync(f, &b, 1, &c), 0);
	CHECK_STR(c.new_status, "refunded");
	CHECK_EQ_INT(store_pendingop_refunded(f->rd, "txn_done", &sum), 0);
	CHECK(sum == 1000);
	CHECK_EQ_INT(store_txn_get(f->rd, NULL, "txn_done", &row), 0);
	CHECK_STR(row.status, "refunded");
	store_txn_row_clear(&row);
	/* refunded is final for new refunds; a retry still finds its row. */
	CHECK_EQ_INT(begin_sync(f, "rf_4", "k4", 1, &c), FGW_ERR_STATE);
	CHECK_EQ_INT(begin_sync(f, "rf_4", "k3", 0, &c), 0);
	CHECK(c.adopted);
	CHECK(c.status == STORE_OP_SUCCEEDED);
	/* A processing row cannot be refunded. */
	memset(&b, 0, sizeof(b));
	fgw_strlcpy(b.id, "rf_5", sizeof(b.id));
	fgw_strlcpy(b.txn_id, "txn_post", sizeof(b.txn_id));
	fgw_strlcpy(b.idempotency_key, "k5", sizeof(b.idempotency_key));
	b.amount = 1;
	b.txn_amount = 1000;
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(store_pendingop_begin(f->st, f->w, &b, NULL,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o }),
	             0);
	CHECK_EQ_INT(pump(f->base, &o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), FGW_ERR_STATE);
end:
	TT_END;
}

/* The reconciler's queries (store/reconcile.h) and refunds. */
static int
test_reconcile_and_refunds(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_unresolved due[8];
	struct one o = { 0 };
	int64_t now = fgw_now_ms();
	int n = -1, flag = -1;
	memset(&f, 0, sizeof(f));
	TT_BEGIN;
	CHECK_EQ_INT(fix_setup(&f, 64), 0);
	fill_row(&row, "txn_proc", "processing");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	fill_row(&row, "txn_post", "posting");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	fill_row(&row, "txn_done", "succeeded");
	row.amount = 1000;
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	/* A fresh posting row is still in flight: only processing is due. */
	CHECK_EQ_INT(store_unresolved_list(f.rd, now, now - 60000, due, 8, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(due[0].id, "txn_proc");
	CHECK_EQ_INT(store_unresolved_list(f.rd, now, now + 60000, due, 8, &n), 0);
	CHECK_EQ_INT(n, 2);
	/* Backoff hides a row until its time; give-up flags it, and it is
	 * still listed (at its own, later, time) so it can end. */
	CHECK_EQ_INT(store_reconcile_defer(f.st, f.w, "txn_proc", 1, now + 60000, 0,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o }),
	             0);
	CHECK_EQ_INT(pump(f.base, &o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), 0);
	CHECK_EQ_INT(store_unresolved_list(f.rd, now, now - 60000, due, 8, &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(store_unresolved_list(f.rd, now + 60000, now - 60000, due, 8, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(due[0].attempts, 1);
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(store_reconcile_defer(f.st, f.w, "txn_proc", 2, now, 1,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o }),
	             0);
	CHECK_EQ_INT(pump(f.base, &o.done, 1), 0);
	CHECK_EQ_INT(store_manual_review_get(f.rd, "txn_proc", &flag), 0);
	CHECK_EQ_INT(flag, 1);
	CHECK_EQ_INT(store_unresolved_list(f.rd, now + 60000, now - 60000, due, 8, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(due[0].manual_review, 1);
	CHECK_EQ_INT(due[0].attempts, 2);
	/* Deferring a resolved row changes nothing. */
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(store_reconcile_defer(f.st, f.w, "txn_done", 1, now, 0,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o }),
	             0);
	CHECK_EQ_INT(pump(f.base, &o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), FGW_ERR_STATE);

	CHECK_EQ_INT(test_refunds_ahead(&f), 0);
end:
	fix_teardown(&f);
	TT_END;
}

static enum store_op_kind
op_kind(const char *op)
{
	return strcmp(op, "capture") == 0 ? STORE_OP_CAPTURE : STORE_OP_CANCEL;
}

static int
txnop_sync_as(struct fix *f, const char *rk, const char *txn, const char *op, int finish,
              int succeeded, struct store_pendingop *out)
{
	struct store_pendingop t;
	struct one o = { 0 };
	int r;
	memset(&t, 0, sizeof(t));
	fgw_strlcpy(t.txn_id, txn, sizeof(t.txn_id));
	t.kind = op_kind(op);
	fgw_strlcpy(t.idempotency_key, "pk", sizeof(t.idempotency_key));
	fgw_strlcpy(t.request_key, rk, sizeof(t.request_key));
	r = finish ? store_pendingop_finish(f->st, f->w, &t, succeeded, NULL,
	                                    &(struct store_commit){ .done = one_done,
	                                                            .arg = &o })
	           : store_pendingop_begin(f->st, f->w, &t, out,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o });
	if (r != 0 || pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_INTERNAL;
	return atomic_load(&o.rc);
}

/* Finishes the operation whose processor key is pk. */
static int
txnop_sync_key(struct fix *f, const char *rk, const char *pk, const char *op,
               int succeeded)
{
	struct store_pendingop t;
	struct one o = { 0 };
	int r;
	memset(&t, 0, sizeof(t));
	fgw_strlcpy(t.txn_id, "txn_auth", sizeof(t.txn_id));
	t.kind = op_kind(op);
	fgw_strlcpy(t.idempotency_key, pk, sizeof(t.idempotency_key));
	fgw_strlcpy(t.request_key, rk, sizeof(t.request_key));
	r = store_pendingop_finish(f->st, f->w, &t, succeeded, NULL,
	                           &(struct store_commit){ .done = one_done, .arg = &o });
	if (r != 0 || pump(f->base, &o.done, 1) != 0)
		return FGW_ERR_INTERNAL;
	return atomic_load(&o.rc);
}

/* The same client request (one request key) unless said otherwise. */
static int
txnop_sync(struct fix *f, const char *txn, const char *op, int finish, int succeeded,
           struct store_pendingop *out)
{
	return txnop_sync_as(f, "rk", txn, op, finish, succeeded, out);
}

/* Captures and cancels written ahead (store/pendingops.h): one of them per
 * authorization, forward only, the transaction moving with success. */
static int
test_txnops_ahead(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_pendingop t;
	struct store_pendingop_due due[4];
	struct one o = { 0 };
	int64_t now = fgw_now_ms();
	int n = -1;
	memset(&f, 0, sizeof(f));
	TT_BEGIN;
	CHECK_EQ_INT(fix_setup(&f, 64), 0);
	fill_row(&row, "txn_auth", "authorized");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	fill_row(&row, "txn_paid", "succeeded");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	CHECK_EQ_INT(txnop_sync(&f, "txn_paid", "capture", 0, 0, &t), FGW_ERR_STATE);
	memset(&t, 0, sizeof(t));
	CHECK_EQ_INT(txnop_sync(&f, "txn_auth", "capture", 0, 0, &t), 0);
	CHECK(t.status == STORE_OP_PENDING);
	CHECK(!t.adopted);
	/* While the capture is pending, no cancel; the capture is adopted. */
	CHECK_EQ_INT(txnop_sync(&f, "txn_auth", "cancel", 0, 0, &t), FGW_ERR_STATE);
	CHECK_EQ_INT(txnop_sync(&f, "txn_auth", "capture", 0, 0, &t), 0);
	CHECK(t.adopted);
	/* Another client request (or none) is not the retry. */
	CHECK_EQ_INT(txnop_sync_as(&f, "rk2", "txn_auth", "capture", 0, 0, &t),
	             FGW_ERR_STATE);
	CHECK_EQ_INT(txnop_sync_as(&f, "", "txn_auth", "capture", 0, 0, &t), FGW_ERR_STATE);
	CHECK_EQ_INT(store_pendingop_due_list(f.rd, STORE_OP_CAPTURE, now + 60000,
	                                      now + 60000, due, 4, &n),
	             0);
	CHECK_EQ_INT(n, 1);
	CHECK(due[0].kind == STORE_OP_CAPTURE);
	CHECK_STR(due[0].idempotency_key, "pk");
	memset(&t, 0, sizeof(t));
	t.kind = STORE_OP_CAPTURE;
	fgw_strlcpy(t.txn_id, "txn_auth", sizeof(t.txn_id));
	CHECK_EQ_INT(store_pendingop_defer(f.st, f.w, &t, 1, now + 60000, 1,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o }),
	             0);
	CHECK_EQ_INT(pump(f.base, &o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), 0);
	CHECK_EQ_INT(store_pendingop_due_list(f.rd, STORE_OP_CAPTURE, now + 120000,
	                                      now + 120000, due, 4, &n),
	             0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(txnop_sync(&f, "txn_auth", "capture", 1, 1, NULL), 0);
	CHECK_EQ_INT(txnop_sync(&f, "txn_auth", "capture", 1, 1, NULL), 0);
	CHECK_EQ_INT(txnop_sync(&f, "txn_auth", "capture", 1, 0, NULL), FGW_ERR_STATE);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_auth", &row), 0);
	CHECK_STR(row.status, "succeeded");
	store_txn_row_clear(&row);
	CHECK_EQ_INT(txnop_sync(&f, "txn_auth", "cancel", 0, 0, &t), FGW_ERR_STATE);
	memset(&o, 0, sizeof(o));
	memset(&t, 0, sizeof(t));
	t.kind = STORE_OP_CAPTURE;
	fgw_strlcpy(t.txn_id, "txn_auth", sizeof(t.txn_id));
	CHECK_EQ_INT(store_pendingop_defer(f.st, f.w, &t, 2, now, 0,
	                                   &(struct store_commit){ .done = one_done,
	                                                           .arg = &o }),
	             0);
	CHECK_EQ_INT(pump(f.base, &o.done, 1), 0);
	CHECK_EQ_INT(atomic_load(&o.rc), FGW_ERR_STATE);
end:
	fix_teardown(&f);
	TT_END;
}

/* A capture or cancel the processor refused is final for that attempt
 * only: a later request starts a new attempt, with its own processor key,
 * and may still succeed; a retry of the refused request stays refused. */
static int
test_txnops_after_refusal(void)
{
	struct fix f;
	struct store_txn_row row;
	struct store_pendingop t;
	TT_BEGIN;
	memset(&f, 0, sizeof(f));
	CHECK_EQ_INT(fix_setup(&f, 64), 0);
	fill_row(&row, "txn_auth", "authorized");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	for (int i = 0; i < 2; i++) {
		const char *op = i == 0 ? "cancel" : "capture";
		memset(&t, 0, sizeof(t));
		CHECK_EQ_INT(txnop_sync_as(&f, "rk1", "txn_auth", op, 0, 0, &t), 0);
		CHECK(t.status == STORE_OP_PENDING);
		CHECK_EQ_INT(txnop_sync_as(&f, "rk1", "txn_auth", op, 1, 0, NULL), 0);
		/* The refused request again: its refusal. */
		memset(&t, 0, sizeof(t));
		CHECK_EQ_INT(txnop_sync_as(&f, "rk1", "txn_auth", op, 0, 0, &t), 0);
		CHECK(t.adopted);
		CHECK(t.status == STORE_OP_FAILED);
		/* A new request: a new attempt, with a key of its own. */
		memset(&t, 0, sizeof(t));
		CHECK_EQ_INT(txnop_sync_as(&f, "rk2", "txn_auth", op, 0, 0, &t), 0);
		CHECK(!t.adopted);
		CHECK(t.status == STORE_OP_PENDING);
		CHECK_STR(t.idempotency_key, "pk-2");
		/* Its retry adopts it, with that key. */
		memset(&t, 0, sizeof(t));
		CHECK_EQ_INT(txnop_sync_as(&f, "rk2", "txn_auth", op, 0, 0, &t), 0);
		CHECK(t.adopted);
		CHECK_STR(t.idempotency_key, "pk-2");
		/* One under way keeps every other one out. */
		CHECK_EQ_INT(txnop_sync_as(&f, "rk3", "txn_auth", "capture", 0, 0, &t),
		             FGW_ERR_STATE);
		CHECK_EQ_INT(txnop_sync_as(&f, "rk3", "txn_auth", "cancel", 0, 0, &t),
		             FGW_ERR_STATE);
		if (i == 0) {
			/* Refused too: the capture below is the third attempt. */
			CHECK_EQ_INT(txnop_sync_key(&f, "rk2", "pk-2", op, 0), 0);
		}
	}
	CHECK_EQ_INT(txnop_sync_key(&f, "rk2", "pk-2", "capture", 1), 0);
	CHECK_EQ_INT(store_txn_get(f.rd, NULL, "txn_auth", &row), 0);
	CHECK_STR(row.status, "succeeded");
	store_txn_row_clear(&row);
	CHECK_EQ_INT(sql_int(f.path,
	                     "SELECT COUNT(*) FROM txn_operations WHERE status = 'failed'"),
	             3);
	CHECK_EQ_INT(txnop_sync_as(&f, "rk4", "txn_auth", "cancel", 0, 0, &t), FGW_ERR_STATE);
end:
	fix_teardown(&f);
	TT_END;
}

/* Migration 9 keeps v8's capture/cancel rows as their first attempt. */
static int
test_schema_v9_txnop_attempts(void)
{
	static const char v8_table[] =
	    "DROP TABLE txn_operations;"
	    "CREATE TABLE txn_operations ("
	    " txn_id TEXT NOT NULL REFERENCES transactions (id),"
	    " op TEXT NOT NULL CHECK (op IN ('capture', 'cancel')),"
	    " idempotency_key TEXT NOT NULL, request_key TEXT,"
	    " status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),"
	    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
	    " reconcile_attempts INTEGER NOT NULL DEFAULT 0,"
	    " reconcile_next_at INTEGER NOT NULL DEFAULT 0,"
	    " manual_review INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (txn_id, op));"
	    "CREATE INDEX txn_operations_pending ON txn_operations (reconcile_next_at)"
	    " WHERE status = 'pending' AND manual_review = 0;"
	    "INSERT INTO txn_operations (txn_id, op, idempotency_key, request_key, status,"
	    " created_at, updated_at) VALUES ('txn_auth', 'cancel', 'txn_auth-cancel', 'rk',"
	    " 'failed', 1, 2);"
	    "PRAGMA user_version = 8;";
	struct fix f;
	struct store_txn_row row;
	struct store_pendingop t;
	memset(&f, 0, sizeof(f));
	TT_BEGIN;
	CHECK_EQ_INT(fix_setup(&f, 16), 0);
	fill_row(&row, "txn_auth", "authorized");
	CHECK_EQ_INT(create_sync(&f, &row, NULL, NULL, NULL, 0), 0);
	fix_close_store(&f);
	CHECK_EQ_INT(sql_exec(f.path, v8_table, NULL, 0), SQLITE_OK);
	CHECK_EQ_INT(fix_open_store(&f, 16, 0), 0);
	CHECK_EQ_INT(sql_int(f.path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	CHECK_EQ_INT(
	    sql_int(f.path, "SELECT attempt FROM txn_operations WHERE op = 'cancel'"
	                    " AND status = 'failed' AND idempotency_key = 'txn_auth-cancel'"),
	    1);
	CHECK_EQ_INT(index_count(f.path, "'txn_operations_pending', 'txn_operations_live'"),
	             2);
	memset(&t, 0, sizeof(t));
	CHECK_EQ_INT(txnop_sync_as(&f, "rk2", "txn_auth", "cancel", 0, 0, &t), 0);
	CHECK_STR(t.idempotency_key, "pk-2");
end:
	fix_teardown(&f);
	TT_END;
}

/* The same processor card saved by two instances at once: both looked
 * and found none; the one that inserts second finds the first's row and
 * answers with it, as a retry does, instead of failing (a caught
 * duplicate would also end a PostgreSQL transaction). A trigger stands in
 * for the other instance, inserting its row just before ours. */
static int
test_method_saved_by_another_instance(void)
{
	struct fix f;
	struct one o;
	struct store_method m, list[4];
	size_t n = 0;
	memset(&f, 0, sizeof(f));
	TT_BEGIN;
	CHECK_EQ_INT(fix_setup(&f, 8), 0);
	CHECK_EQ_INT(
	    sql_exec(f.path,
	             "CREATE TRIGGER other_instance BEFORE INSERT ON processor_methods"
	             " WHEN NEW.id <> 'pm_other' BEGIN INSERT INTO processor_methods"
	             " (id, customer_id, nickname, is_default, created_at, processor,"
	             " processor_customer, processor_method, brand, last4, exp_month,"
	             " exp_year) VALUES ('pm_other', NEW.customer_id, NULL, 1,"
	             " NEW.created_at, NEW.processor, NEW.processor_customer,"
	             " NEW.processor_method, NEW.brand, NEW.last4, NEW.exp_month,"
	             " NEW.exp_year); END",
	             NULL, 0),
	    SQLITE_OK);
	memset(&m, 0, sizeof(m));
	fgw_strlcpy(m.id, "pm_mine", sizeof(m.id));
	fgw_strlcpy(m.customer_id, "carol", sizeof(m.customer_id));
	fgw_strlcpy(m.processor, "stripe", sizeof(m.processor));
	fgw_strlcpy(m.processor_customer, "cus_1", sizeof(m.processor_customer));
	fgw_strlcpy(m.processor_method, "pm_card_1", sizeof(m.processor_method));
	fgw_strlcpy(m.brand, "visa", sizeof(m.brand));
	fgw_strlcpy(m.last4, "4242", sizeof(m.last4));
	m.exp_month = 12;
	m.exp_year = 2030;
	memset(&o, 0, sizeof(o));
	CHECK_EQ_INT(run_job(&f, store_method_save(f.st, f.w, &m, NULL, NULL, one_done, &o),
	                     &o),
	             0);
	CHECK_STR(m.id, "pm_other");
	CHECK_EQ_INT(store_methods_list(f.rd, "carol", list, 4, &n), 0);
	CHECK_EQ_INT((int)n, 1);
	CHECK_STR(list[0].id, "pm_other");
end:
	fix_teardown(&f);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "methods", test_methods },
	{ "method_saved_by_another_instance", test_method_saved_by_another_instance },
	{ "custom_job", test_custom_job },
	{ "reconcile_and_refunds", test_reconcile_and_refunds },
	{ "txnops_ahead", test_txnops_ahead },
	{ "txnops_after_refusal", test_txnops_after_refusal },
	{ "schema", test_schema },
	{ "file_schema", test_file_schema },
	{ "schema_v7_upgrade", test_schema_v7_upgrade },
	{ "schema_v9_txnop_attempts", test_schema_v9_txnop_attempts },
	{ "schema_idem_hash_wiped", test_schema_idem_hash_wiped },


	{ "schema_v11_customer_namespaces", test_schema_v11_customer_namespaces },
	{ "statement_cache", test_statement_cache },
	{ "roundtrip", test_roundtrip },
	{ "reactor_thread", test_reactor_thread },
	{ "group_commit", test_group_commit },
	{ "batch_partial_failure", test_batch_partial_failure },
	{ "batch_lock_failure", test_batch_lock_failure },
	{ "forward_only", test_forward_only },
	{ "idempotency", test_idempotency },
	{ "vault_purge", test_vault_purge },
	{ "audit_chain", test_audit_chain },
	{ "audit_tamper_edit", test_audit_tamper_edit },
	{ "audit_tamper_delete", test_audit_tamper_delete },
	{ "audit_tamper_swap", test_audit_tamper_swap },
	{ "audit_job_rollback", test_audit_job_rollback },
	{ "audit_two_writers", test_audit_two_writers },
	{ "close_drains", test_close_drains },
	{ "waker_lifetimes", test_waker_lifetimes },
	{ "waker_free_in_done", test_waker_free_in_done },
	{ "reader_sees_commits", test_reader_sees_commits },
	{ "group_and_moves", test_group_and_moves },
	{ "mail_outbox", test_mail_outbox },
	{ "invalid_input", test_invalid_input },
	{ NULL, NULL },
};

int
main(int argc, char **argv)
{
	/* Bases are created by the cases, after this. */
	if (evthread_use_pthreads() != 0) {
		fprintf(stderr, "evthread_use_pthreads failed\n");
		return 2;
	}
	log_setup(LOG_LVL_ERROR, 0, 2);
	return tt_run(cases, argc, argv);
}
