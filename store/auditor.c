/*
 * store/auditor.c — checkpoints, full verification, audit queries and the
 * daily report (see store/auditor.h).
 *
 * Layout: checkpoint canonical form and job, verification, query, report.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"
#include "store/audit.h"
#include "store/auditor.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

#define CP_PREFIX "flairgw-audit-checkpoint-v1\n"

static int
cp_message(int64_t seq, int64_t ts, const char *hash, char *buf, size_t cap, size_t *len)
{
	int n = snprintf(buf, cap, CP_PREFIX "%" PRId64 "\n%" PRId64 "\n%s", seq, ts, hash);
	if (n < 0 || (size_t)n >= cap)
		return FGW_ERR_TOO_LARGE;
	*len = (size_t)n;
	return 0;
}

/* ---- checkpoint job (writer thread) ------------------------------------ */

struct cp_job {
	store_sign_fn sign;
	void *sign_ctx;
	unsigned char pk[32];
};

static int
cp_run(struct db *db, void *ctx)
{
	static const char head_sql[] =
	    "SELECT seq, hash, (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints)"
	    " FROM audit_events ORDER BY seq DESC LIMIT 1";
	static const char ins_sql[] =
	    "INSERT INTO audit_checkpoints(seq, ts, head_hash, public_key, signature)"
	    " VALUES (?1, ?2, ?3, ?4, ?5)";
	struct cp_job *j = ctx;
	struct db_stmt *s = NULL;
	unsigned char sig[64];
	char msg[256], hash[AUDIT_HASH_HEX], pkhex[65], sighex[129];
	int64_t seq, ts = fgw_now_ms();
	size_t len;
	int r, rc;

	if (db_prepare_once(db, head_sql, &s) != FGW_OK) {
		r = FGW_ERR_DB;
		goto out;
	}
	rc = db_step(s);
	if (rc == DB_DONE) {
		r = 0; /* empty chain: nothing to sign */
		goto out;
	}
	if (rc != DB_ROW || db_col_text(s, 1) == NULL ||
	    fgw_strlcpy(hash, db_col_text(s, 1), sizeof(hash)) != 0) {
		r = FGW_ERR_DB;
		goto out;
	}
	seq = db_col_int64(s, 0);
	if (db_col_int64(s, 2) >= seq) {
		r = 0; /* this head is signed already */
		goto out;
	}
	db_release(s);
	s = NULL;
	if ((r = cp_message(seq, ts, hash, msg, sizeof(msg), &len)) != 0 ||
	    (r = j->sign(j->sign_ctx, msg, len, sig)) != 0)
		goto out;
	fgw_hex(j->pk, 32, pkhex);
	fgw_hex(sig, 64, sighex);
	if (db_prepare_once(db, ins_sql, &s) != FGW_OK ||
	    db_bind_int64(s, 1, seq) != FGW_OK || db_bind_int64(s, 2, ts) != FGW_OK ||
	    db_bind_text(s, 3, hash) != FGW_OK || db_bind_text(s, 4, pkhex) != FGW_OK ||
	    db_bind_text(s, 5, sighex) != FGW_OK || db_step(s) != DB_DONE) {
		log_error("checkpoint insert failed: %s", db_errmsg(db));
		r = FGW_ERR_DB;
		goto out;
	}
	r = 0;
out:
	db_release(s);
	return r;
}

int
store_audit_checkpoint(struct store *st, struct store_waker *w, store_sign_fn sign,
                       void *sign_ctx, const unsigned char pk[32], store_done_fn done,
                       void *arg)
{
	struct cp_job *j;
	if (st == NULL || sign == NULL || pk == NULL)
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	j->sign = sign;
	j->sign_ctx = sign_ctx;
	memcpy(j->pk, pk, 32);
	return store_submit_custom(st, w, cp_run, j, free,
	                           &(struct store_commit){ .done = done, .arg = arg });
}

/* ---- verification ------------------------------------------------------ */

/* BEGIN for reads that must see one snapshot. A SQLite read transaction
 * is one; PostgreSQL sessions run READ COMMITTED (store/pg.h), where
 * every statement takes a new snapshot, so an instance committing
 * between two of them (a new checkpoint past the events already read)
 * would show a broken trail that is not: ask for REPEATABLE READ. */
static const char *
read_snapshot(struct db *db)
{
	return db_kind(db) == DB_PG ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	                            : "BEGIN";
}

static void
set_bad(struct store_verify_result *res, int64_t seq, const char *fmt, int64_t v)
{
	if (res->first_bad_seq != 0)
		return;
	res->first_bad_seq = seq;
	snprintf(res->reason, sizeof(res->reason), fmt, v);
}

/* Checks one checkpoint row: signature under pk, then that the event at
 * its seq still holds the signed hash. 1: good, 0: broken (res set). */
static int
check_checkpoint(struct db_stmt *s, struct db_stmt *ev, const unsigned char pk[32],
                 int64_t max_seq, struct store_verify_result *res)
{
	unsigned char sig[64];
	char msg[256];
	const char *hash = db_col_text(s, 2);
	const char *sighex = db_col_text(s, 3);
	int64_t seq = db_col_int64(s, 0), ts = db_col_int64(s, 1);
	size_t len, siglen = 0;
	int rc, ok = 0;

	if (hash == NULL || sighex == NULL || strlen(hash) != AUDIT_HASH_HEX - 1 ||
	    sodium_hex2bin(sig, sizeof(sig), sighex, strlen(sighex), NULL, &siglen, NULL) !=
	        0 ||
	    siglen != sizeof(sig) || cp_message(seq, ts, hash, msg, sizeof(msg), &len) != 0 ||
	    crypto_sign_verify_detached(sig, (const unsigned char *)msg, len, pk) != 0) {
		set_bad(res, seq, "checkpoint at seq %" PRId64 " has a bad signature", seq);
		return 0;
	}
	if (seq > max_seq) {
		/* Rows were cut off the tail: the first missing one is broken. */
		set_bad(res, max_seq + 1,
		        "events missing: a checkpoint signed seq %" PRId64
		        " but the trail ends before it",
		        seq);
		return 0;
	}
	db_reset(ev);
	if (db_bind_int64(ev, 1, seq) != FGW_OK)
		return 0;
	rc = db_step(ev);
	if (rc == DB_ROW && db_col_text(ev, 0) != NULL &&
	    sodium_memcmp(db_col_text(ev, 0), hash, AUDIT_HASH_HEX - 1) == 0)
		ok = 1;
	db_reset(ev);
	if (!ok)
		set_bad(res, seq, "event %" PRId64 " does not match its signed checkpoint", seq);
	return ok;
}

int
store_audit_verify_full(struct store_reader *r, const unsigned char pk[32],
                        struct store_verify_result *res)
{
	struct db *db;
	struct db_stmt *s = NULL, *ev = NULL;
	store_mac_fn mac;
	void *mac_ctx = NULL;
	int64_t bad = 0, max_seq = 0;
	int rv, rc;

	if (r == NULL || pk == NULL || res == NULL)
		return FGW_ERR_INVALID;
	memset(res, 0, sizeof(*res));
	db = store_reader_db(r);
	mac = store_reader_mac(r, &mac_ctx);
	if (mac == NULL)
		return FGW_ERR_INVALID;
	/* One read transaction, so chain and checkpoints are one snapshot. */
	if (db_exec(db, read_snapshot(db)) != FGW_OK)
		return FGW_ERR_DB;
	rv = audit_verify(db, mac, mac_ctx, &bad);
	if (rv == FGW_ERR_CRYPTO)
		set_bad(res, bad,
		        "event %" PRId64 " breaks the hash chain (edited, missing or reordered)",
		        bad);
	else if (rv != 0)
		goto out;
	if (db_prepare_once(db, "SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM audit_events",
	                    &s) != FGW_OK ||
	    db_step(s) != DB_ROW) {
		rv = FGW_ERR_DB;
		goto out;
	}
	max_seq = db_col_int64(s, 0);
	res->events = db_col_int64(s, 1);
	db_release(s);
	s = NULL;
	/* A SQLite database (or backup) from before schema 6 has no
	 * checkpoints; a PostgreSQL one always has the table. */
	rc = DB_ROW;
	if (db_kind(db) == DB_SQLITE) {
		if (db_prepare_once(db,
		                    "SELECT 1 FROM sqlite_master WHERE type = 'table'"
		                    " AND name = 'audit_checkpoints'",
		                    &s) != FGW_OK) {
			rv = FGW_ERR_DB;
			goto out;
		}
		rc = db_step(s);
		db_release(s);
		s = NULL;
	}
	if (rc == DB_DONE) {
		rv = res->first_bad_seq != 0 ? FGW_ERR_CRYPTO : 0;
		goto out;
	}
	if (db_prepare_once(db,
	                    "SELECT seq, ts, head_hash, signature FROM audit_checkpoints"
	                    " ORDER BY seq",
	                    &s) != FGW_OK ||
	    db_prepare_once(db, "SELECT hash FROM audit_events WHERE seq = ?1", &ev) !=
	        FGW_OK) {
		rv = FGW_ERR_DB;
		goto out;
	}
	while ((rc = db_step(s)) == DB_ROW) {
		res->checkpoints++;
		res->last_checkpoint = db_col_int64(s, 0);
		(void)check_checkpoint(s, ev, pk, max_seq, res);
	}
	if (rc != DB_DONE) {
		rv = FGW_ERR_DB;
		goto out;
	}
	rv = res->first_bad_seq != 0 ? FGW_ERR_CRYPTO : 0;
out:
	db_release(s);
	db_release(ev);
	(void)db_exec(db, "COMMIT");
	return rv;
}

/* ---- query ------------------------------------------------------------- */

static int
days_in_month(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : days[m - 1];
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (y >= 1970): whole years, then whole months of year y. */
static int64_t
days_from_epoch(int y, int m, int d)
{
	int64_t n = 0;
	for (int yy = 1970; yy < y; yy++)
		n += (yy % 4 == 0 && yy % 100 != 0) || yy % 400 == 0 ? 366 : 365;
	for (int mm = 1; mm < m; mm++)
		n += days_in_month(y, mm);
	return n + d - 1;
}

static const char *
txt(struct db_stmt *s, int i)
{
	const char *t = db_col_text(s, i);
	return t != NULL ? (const char *)t : "";
}

int
store_audit_query(struct store_reader *r, const struct store_audit_filter *f,
                  int (*row)(void *arg, const struct store_audit_view *v), void *arg)
{
	static const char sql[] =
	    "SELECT a.seq, a.ts, a.actor, a.source, a.event_type, a.resource, a.outcome,"
	    " a.details_json, t.reservation_id, t.customer_email, t.currency, t.amount"
	    " FROM audit_events a LEFT JOIN transactions t ON t.id = a.resource"
	    /* The casts give PostgreSQL the type of a parameter it first
	     * meets in IS NULL (it does not infer one there); SQLite reads
	     * them as no-ops. */
	    " WHERE (CAST(?1 AS BIGINT) IS NULL OR a.ts >= ?1)"
	    " AND (CAST(?2 AS BIGINT) IS NULL OR a.ts < ?2)"
	    " AND (CAST(?3 AS TEXT) IS NULL OR a.resource = ?3)"
	    " AND (CAST(?4 AS TEXT) IS NULL OR t.reservation_id = ?4)"
	    " AND (CAST(?5 AS TEXT) IS NULL OR t.customer_email = ?5 OR a.actor = ?5"
	    "      OR t.client_id = ?5)"
	    " AND (CAST(?6 AS TEXT) IS NULL OR a.outcome = ?6)"
	    " AND (CAST(?7 AS TEXT) IS NULL OR a.event_type = ?7"
	    "      OR substr(a.event_type, 1, length(?7) + 1) = ?7 || '.')"
	    " AND (CAST(?8 AS BIGINT) IS NULL OR t.amount >= ?8)"
	    " AND (CAST(?9 AS BIGINT) IS NULL OR t.amount <= ?9)"
	    " ORDER BY a.seq";
	struct db *db;
	struct db_stmt *s = NULL;
	struct store_audit_view v;
	int rv, rc;

	if (r == NULL || f == NULL || row == NULL)
		return FGW_ERR_INVALID;
	db = store_reader_db(r);
	if (db_prepare_once(db, sql, &s) != FGW_OK) {
		log_error("audit query: %s", db_errmsg(db));
		rv = FGW_ERR_DB;
		goto out;
	}
	if ((f->since_ms ? db_bind_int64(s, 1, f->since_ms) : db_bind_null(s, 1)) ||
	    (f->until_ms ? db_bind_int64(s, 2, f->until_ms) : db_bind_null(s, 2)) ||
	    db_bind_text_or_null(s, 3, f->txn) ||
	    db_bind_text_or_null(s, 4, f->reservation) ||
	    db_bind_text_or_null(s, 5, f->customer) ||
	    db_bind_text_or_null(s, 6, f->outcome) || db_bind_text_or_null(s, 7, f->type) ||
	    (f->has_min ? db_bind_int64(s, 8, f->min_amount) : db_bind_null(s, 8)) ||
	    (f->has_max ? db_bind_int64(s, 9, f->max_amount) : db_bind_null(s, 9))) {
		rv = FGW_ERR_DB;
		goto out;
	}
	while ((rc = db_step(s)) == DB_ROW) {
		v.seq = db_col_int64(s, 0);
		v.ts = db_col_int64(s, 1);
		v.actor = txt(s, 2);
		v.source = txt(s, 3);
		v.event_type = txt(s, 4);
		v.resource = txt(s, 5);
		v.outcome = txt(s, 6);
		v.details = txt(s, 7);
		v.reservation = txt(s, 8);
		v.customer = txt(s, 9);
		v.currency = txt(s, 10);
		v.has_amount = !db_col_is_null(s, 11);
		v.amount = db_col_int64(s, 11);
		if ((rv = row(arg, &v)) != 0)
			goto out;
	}
	rv = rc == DB_DONE ? 0 : FGW_ERR_DB;
out:
	db_release(s);
	return rv;
}

/* ---- report ------------------------------------------------------------ */

/* Webhook delivery (the dashboard's "Webhook Delivery"): outbox rows
 * created that day by status. A database without webhooks has none. */
static int
report_webhooks(struct db *db, int64_t from, int64_t to, struct store_report *out)
{
	static const char sql[] =
	    "SELECT SUM(CASE WHEN status = 'delivered' THEN 1 ELSE 0 END),"
	    " SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),"
	    " SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END)"
	    " FROM webhook_outbox WHERE created_at >= ?1 AND created_at < ?2";
	struct db_stmt *s = NULL;
	int r, rc = DB_ROW;
	/* A SQLite file (or backup) older than the webhooks has no outbox; a
	 * PostgreSQL database always has the table. */
	if (db_kind(db) == DB_SQLITE) {
		if (db_prepare_once(db,
		                    "SELECT 1 FROM sqlite_master WHERE type = 'table'"
		                    " AND name = 'webhook_outbox'",
		                    &s) != FGW_OK) {
			r = FGW_ERR_DB;
			goto out;
		}
		rc = db_step(s);
		db_release(s);
		s = NULL;
	}
	if (rc != DB_ROW) {
		r = rc == DB_DONE ? 0 : FGW_ERR_DB;
		goto out;
	}
	if (db_prepare_once(db, sql, &s) != FGW_OK || db_bind_int64(s, 1, from) != FGW_OK ||
	    db_bind_int64(s, 2, to) != FGW_OK || db_step(s) != DB_ROW) {
		r = FGW_ERR_DB;
		goto out;
	}
	out->wh_delivered = db_col_int64(s, 0);
	out->wh_failed = db_col_int64(s, 1);
	out->wh_pending = db_col_int64(s, 2);
	r = 0;
out:
	db_release(s);
	return r;
}

int
store_report_day(struct store_reader *r, const char *day, struct store_report *out)
{
	/* 3-D Secure: the transaction is waiting on it now, or its trail shows
	 * a requires_action outcome before the final one. */
	static const char sum_sql[] =
	    "SELECT COUNT(*),"
	    " SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END),"
	    " SUM(CASE WHEN status = 'declined' THEN 1 ELSE 0 END),"
	    " SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),"
	    " SUM(CASE WHEN status NOT IN ('succeeded', 'declined', 'failed') THEN 1 ELSE 0 END),"
	    " SUM(CASE WHEN status = 'requires_action' OR EXISTS (SELECT 1 FROM audit_events a"
	    "   WHERE a.resource = t.id AND a.outcome = 'requires_action') THEN 1 ELSE 0 END),"
	    " SUM(CASE WHEN status IN ('succeeded', 'declined', 'failed') THEN 1 ELSE 0 END),"
	    /* PostgreSQL's AVG of a bigint is numeric, SQLite's a real: both
	     * read as a double, the same value. */
	    " AVG(CASE WHEN status IN ('succeeded', 'declined', 'failed')"
	    "   THEN updated_at - created_at END)"
	    " FROM transactions t WHERE created_at >= ?1 AND created_at < ?2";
	static const char by_sql[] =
	    "SELECT status, currency, COUNT(*), SUM(amount) FROM transactions"
	    " WHERE created_at >= ?1 AND created_at < ?2"
	    " GROUP BY status, currency ORDER BY status, currency";
	struct db *db;
	struct db_stmt *s = NULL;
	int64_t from, to;
	int rv, rc, y, m, d;
	char extra;

	if (r == NULL || day == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (strlen(day) != 10 || sscanf(day, "%4d-%2d-%2d%c", &y, &m, &d, &extra) != 3 ||
	    m < 1 || m > 12 || d < 1 || d > 31 || y < 1970 || y > 9999)
		return FGW_ERR_INVALID;
	if ((rv = fgw_strlcpy(out->day, day, sizeof(out->day))) != 0)
		return FGW_ERR_INVALID;
	db = store_reader_db(r);
	if (d > days_in_month(y, m))
		return FGW_ERR_INVALID;
	from = days_from_epoch(y, m, d) * 86400000LL;
	to = from + 86400000LL;
	if (db_exec(db, read_snapshot(db)) != FGW_OK) {
		rv = FGW_ERR_DB;
		goto out;
	}
	if (db_prepare_once(db, sum_sql, &s) != FGW_OK ||
	    db_bind_int64(s, 1, from) != FGW_OK || db_bind_int64(s, 2, to) != FGW_OK ||
	    db_step(s) != DB_ROW) {
		log_error("report: %s", db_errmsg(db));
		rv = FGW_ERR_DB;
		goto out;
	}
	out->total = db_col_int64(s, 0);
	out->succeeded = db_col_int64(s, 1);
	out->declined = db_col_int64(s, 2);
	out->failed = db_col_int64(s, 3);
	out->open = db_col_int64(s, 4);
	out->three_ds = db_col_int64(s, 5);
	out->final_count = db_col_int64(s, 6);
	out->avg_outcome_ms = db_col_double(s, 7);
	db_release(s);
	s = NULL;
	if (db_prepare_once(db, by_sql, &s) != FGW_OK ||
	    db_bind_int64(s, 1, from) != FGW_OK || db_bind_int64(s, 2, to) != FGW_OK) {
		rv = FGW_ERR_DB;
		goto out;
	}
	while ((rc = db_step(s)) == DB_ROW && out->n_by < STORE_REPORT_MAX) {
		fgw_strlcpy(out->by[out->n_by].status, txt(s, 0), sizeof(out->by[0].status));
		fgw_strlcpy(out->by[out->n_by].currency, txt(s, 1), sizeof(out->by[0].currency));
		out->by[out->n_by].count = db_col_int64(s, 2);
		out->by[out->n_by].sum = db_col_int64(s, 3);
		out->n_by++;
	}
	if (rc != DB_ROW && rc != DB_DONE) {
		rv = FGW_ERR_DB;
		goto out;
	}
	db_release(s);
	s = NULL;
	if ((rv = report_webhooks(db, from, to, out)) != 0)
		goto out;
	rv = 0;
out:
	db_release(s);
	if (db_in_txn(db))
		(void)db_exec(db, "COMMIT");
	return rv;
}
