/*
 * store/procevents.c — refunds and disputes from processor events
 * (store/procevents.h). Tables: refunds (migration 4, 8),
 * transaction_disputes (migration 13).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "store/db.h"
#include "store/procevents.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

struct ev_job {
	struct store_refund_event ev;
	struct store_refund_event *out;
	/* disputes */
	char processor[32];
	char reason[48];
	int64_t amount;
	store_done_fn done;
	void *arg;
};

static void
ev_done(void *arg, int rc)
{
	struct ev_job *j = arg;
	if (j->out != NULL)
		*j->out = j->ev;
	if (j->done != NULL)
		j->done(j->arg, rc);
}

/* Submits job j (owned from here on), which hears the commit before the
 * caller does so that *out is written first. */
static int
submit(struct store *st, struct store_waker *w, store_job_fn run, struct ev_job *j,
       const struct store_commit *c)
{
	struct store_commit mine = *c;

	j->done = c->done;
	j->arg = c->arg;
	mine.done = ev_done;
	mine.arg = j;
	return store_submit_custom(st, w, run, j, free, &mine);
}

/* Runs one statement with up to three text and two integer bindings
 * (?1..?3 text, ?4..?5 integers); FGW_OK when it changed exactly one row. */
static int
exec_one(struct db *db, const char *sql, const char *a, const char *b, const char *c,
         int64_t x, int64_t y)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db, sql, &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, a);
	db_bind_text_or_null(s, 2, b);
	db_bind_text_or_null(s, 3, c);
	db_bind_int64(s, 4, x);
	db_bind_int64(s, 5, y);
	r = db_step(s) == DB_DONE && db_changes(db) == 1 ? FGW_OK : FGW_ERR_DB;
	db_release(s);
	return r;
}

/* A refund made outside the gateway, already done at the processor. */
static int
insert_external(struct db *db, const char *txn_id, int64_t amount, const char *key)
{
	static const char sql[] =
	    "INSERT INTO refunds (id, txn_id, idempotency_key, amount, created_at, status,"
	    " updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'succeeded', ?5)";
	struct db_stmt *s = NULL;
	char id[40];
	int r;

	if ((r = fgw_random_id("rf_", id, sizeof(id))) != 0 ||
	    (r = db_prepare(db, sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, id);
	db_bind_text(s, 2, txn_id);
	db_bind_text(s, 3, key);
	db_bind_int64(s, 4, amount);
	db_bind_int64(s, 5, fgw_now_ms());
	r = db_step(s) == DB_DONE ? FGW_OK : FGW_ERR_DB;
	db_release(s);
	return r;
}

/* The refunds not failed (pending ones count: the processor may have
 * made them), or only the succeeded ones. */
static int
refund_sum(struct db *db, const char *txn_id, int succeeded_only, int64_t *sum)
{
	static const char held[] =
	    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1 AND status <> 'failed'";
	static const char done[] =
	    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1 AND status = 'succeeded'";
	return db_int64_of(db, succeeded_only ? done : held, txn_id, sum);
}

/* One refund's outcome as the processor reports it; *changed set when a
 * row moved. */
static int
refund_outcome(struct db *db, const struct store_refund_event *ev, int *changed)
{
	static const char by_ref[] =
	    "SELECT id, status FROM refunds WHERE txn_id = ?1 AND processor_ref = ?2";
	static const char set_sql[] =
	    "UPDATE refunds SET status = ?2, updated_at = ?4 WHERE id = ?1 AND status <> ?2";
	/* A refund recorded from a charge's total carries no processor id:
	 * the newest such row gives the failed amount back. */
	static const char ext_sql[] =
	    "SELECT id, amount FROM refunds WHERE txn_id = ?1 AND status = 'succeeded'"
	    " AND processor_ref IS NULL AND idempotency_key LIKE 'event:%'"
	    " ORDER BY created_at DESC LIMIT 1";
	static const char pending_sql[] =
	    "SELECT COUNT(*) FROM refunds WHERE txn_id = ?1 AND status = 'pending'";
	static const char shrink_sql[] =
	    "UPDATE refunds SET amount = amount - ?4, updated_at = ?5 WHERE id = ?1 AND amount > ?4";
	static const char fail_ext_sql[] =
	    "UPDATE refunds SET status = 'failed', processor_ref = ?2, updated_at = ?4"
	    " WHERE id = ?1 AND status = 'succeeded'";
	struct db_stmt *s = NULL;
	char id[40] = "", st[16] = "";
	int64_t amount = 0;
	int rc, r;

	if ((r = db_prepare(db, by_ref, &s)) != 0)
		return r;
	db_bind_text(s, 1, ev->txn_id);
	db_bind_text(s, 2, ev->refund_ref);
	if ((rc = db_step(s)) == DB_ROW) {
		db_col_copy(s, 0, id, sizeof(id));
		db_col_copy(s, 1, st, sizeof(st));
	}
	db_release(s);
	s = NULL;
	if (rc != DB_ROW && rc != DB_DONE)
		return FGW_ERR_DB;
	if (id[0] != '\0') {
		/* Known: a pending refund ends either way; a succeeded one can
		 * still fail (Stripe: the card's account closed). */
		if (ev->refund_failed && strcmp(st, "failed") != 0) {
			if ((r = exec_one(db, set_sql, id, "failed", NULL, fgw_now_ms(), 0)) != 0)
				return r;
			*changed = 1;
		} else if (!ev->refund_failed && strcmp(st, "pending") == 0) {
			if ((r = exec_one(db, set_sql, id, "succeeded", NULL, fgw_now_ms(), 0)) != 0)
				return r;
			*changed = 1;
		}
		return FGW_OK;
	}
	/* Unknown and succeeded: the charge's refunded total (charge.refunded)
	 * records it; counting it here as well would count it twice. */
	if (!ev->refund_failed)
		return FGW_OK;
	/* A refund of ours still waiting for its answer may be this one
	 * (its id is kept only with its outcome): that answer, or the
	 * reconciler, settles it; a Dashboard refund must not pay for it. */
	if ((r = db_int64_of(db, pending_sql, ev->txn_id, &amount)) != 0)
		return r;
	if (amount > 0)
		return FGW_OK;
	if ((r = db_prepare(db, ext_sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, ev->txn_id);
	id[0] = '\0';
	if ((rc = db_step(s)) == DB_ROW) {
		db_col_copy(s, 0, id, sizeof(id));
		amount = db_col_int64(s, 1);
	}
	db_release(s);
	if (rc != DB_ROW && rc != DB_DONE)
		return FGW_ERR_DB;
	if (id[0] == '\0')
		return FGW_OK; /* never counted: nothing to give back */
	if (amount > ev->refund_amount)
		r = exec_one(db, shrink_sql, id, NULL, NULL, ev->refund_amount, fgw_now_ms());
	else
		r = exec_one(db, fail_ext_sql, id, ev->refund_ref, NULL, fgw_now_ms(), 0);
	if (r == FGW_OK)
		*changed = 1;
	return r;
}

static int
refund_event_run(struct db *db, void *ctx)
{
	static const char txn_sql[] = "SELECT status, amount FROM transactions WHERE id = ?1";
	/* On PostgreSQL the payment's row is locked until the batch
	 * commits: two events of one charge on two instances (or an event
	 * and a refund's begin or answer, store/pendingops.c) then bring the
	 * refunds in line one after the other, each statement after the lock
	 * reading what the other committed (READ COMMITTED), instead of
	 * both recording the difference from the sum neither had changed
	 * yet. SQLite's one writer serializes the jobs already. */
	static const char txn_lock_pg_sql[] =
	    "SELECT status, amount FROM transactions WHERE id = ?1 FOR NO KEY UPDATE";
	static const char upd_sql[] =
	    "UPDATE transactions SET status = ?2, updated_at = ?4 WHERE id = ?1 AND status = ?3";
	struct ev_job *j = ctx;
	struct store_refund_event *ev = &j->ev;
	struct db_stmt *s = NULL;
	char cur[24] = "", key[160];
	int64_t amount = 0, held, done;
	int changed = 0, r;

	if ((r = db_prepare(db, db_kind(db) == DB_PG ? txn_lock_pg_sql : txn_sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, ev->txn_id);
	if ((r = db_step_row(s)) == 0) {
		db_col_copy(s, 0, cur, sizeof(cur));
		amount = db_col_int64(s, 1);
	}
	db_release(s);
	if (r != 0)
		return r;
	fgw_strlcpy(ev->new_status, cur, sizeof(ev->new_status));
	if (txn_state_of(cur) != TXN_SUCCEEDED &&
	    txn_state_of(cur) != TXN_PARTIALLY_REFUNDED && txn_state_of(cur) != TXN_REFUNDED)
		return FGW_ERR_STATE; /* nothing captured, nothing to refund */
	if (ev->refunded_total >= 0) {
		if ((r = refund_sum(db, ev->txn_id, 0, &held)) != 0)
			return r;
		/* Never more than the payment: the rest is not ours. */
		int64_t total = ev->refunded_total < amount ? ev->refunded_total : amount;
		if (total > held) {
			snprintf(key, sizeof(key), "event:%s", ev->event_id);
			if ((r = insert_external(db, ev->txn_id, total - held, key)) != 0)
				return r;
			changed = 1;
		}
	}
	if (ev->refund_ref[0] != '\0' && (r = refund_outcome(db, ev, &changed)) != 0)
		return r;
	if ((r = refund_sum(db, ev->txn_id, 1, &done)) != 0)
		return r;
	/* Forward only: a refund that failed after the payment was fully
	 * refunded gives its amount back in the sums, not the state. */
	if (done > 0) {
		enum txn_state from = txn_state_of(cur);
		enum txn_state to_st = done >= amount ? TXN_REFUNDED : TXN_PARTIALLY_REFUNDED;
		const char *to = txn_state_name(to_st);
		if (to_st != from && txn_state_may_move(from, to_st)) {
			if ((r = exec_one(db, upd_sql, ev->txn_id, to, cur, fgw_now_ms(), 0)) != 0)
				return r;
			fgw_strlcpy(ev->new_status, to, sizeof(ev->new_status));
			changed = 1;
		}
	}
	return changed ? FGW_OK : FGW_ERR_STATE;
}

int
store_refund_event(struct store *st, struct store_waker *w,
                   const struct store_refund_event *ev, struct store_refund_event *out,
                   const struct store_commit *c)
{
	struct ev_job *j;

	if (st == NULL || c == NULL || ev == NULL || ev->txn_id[0] == '\0' ||
	    ev->event_id[0] == '\0' || (ev->refunded_total < 0 && ev->refund_ref[0] == '\0'))
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	j->ev = *ev;
	j->out = out;
	return submit(st, w, refund_event_run, j, c);
}

static int
dispute_run(struct db *db, void *ctx)
{
	/* A dispute recorded before is a clash the statement asks about (ON
	 * CONFLICT), not an error caught: on PostgreSQL an error would spoil
	 * the rest of the batch's transaction. The amount is cast so that
	 * PostgreSQL does not take ?4 for a 32-bit integer from the -1. */
	static const char sql[] =
	    "INSERT INTO transaction_disputes (id, txn_id, processor, amount, reason,"
	    " event_id, created_at) VALUES (?1, ?2, ?3, NULLIF(CAST(?4 AS BIGINT), -1),"
	    " NULLIF(?5, ''), ?6, ?7) ON CONFLICT (id) DO NOTHING";
	struct ev_job *j = ctx;
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db, sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, j->ev.refund_ref);
	db_bind_text(s, 2, j->ev.txn_id);
	db_bind_text(s, 3, j->processor);
	db_bind_int64(s, 4, j->amount);
	db_bind_text(s, 5, j->reason);
	db_bind_text(s, 6, j->ev.event_id);
	db_bind_int64(s, 7, fgw_now_ms());
	r = db_step(s) != DB_DONE ? FGW_ERR_DB
	    : db_changes(db) == 1 ? FGW_OK
	                          : FGW_ERR_EXISTS;
	db_release(s);
	return r;
}

int
store_dispute_record(struct store *st, struct store_waker *w, const char *txn_id,
                     const char *processor, const char *dispute_id, int64_t amount,
                     const char *reason, const char *event_id,
                     const struct store_commit *c)
{
	struct ev_job *j;

	if (st == NULL || c == NULL || txn_id == NULL || processor == NULL ||
	    dispute_id == NULL || event_id == NULL || dispute_id[0] == '\0' ||
	    txn_id[0] == '\0')
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	fgw_strlcpy(j->ev.txn_id, txn_id, sizeof(j->ev.txn_id));
	fgw_strlcpy(j->ev.refund_ref, dispute_id, sizeof(j->ev.refund_ref));
	fgw_strlcpy(j->ev.event_id, event_id, sizeof(j->ev.event_id));
	fgw_strlcpy(j->processor, processor, sizeof(j->processor));
	fgw_strlcpy(j->reason, reason != NULL ? reason : "", sizeof(j->reason));
	j->amount = amount;
	return submit(st, w, dispute_run, j, c);
}

int
store_dispute_count(struct store_reader *rd, const char *txn_id, int64_t *n)
{
	static const char sql[] =
	    "SELECT COUNT(*) FROM transaction_disputes WHERE txn_id = ?1";
	if (rd == NULL || txn_id == NULL)
		return FGW_ERR_INVALID;
	return db_int64_of(store_reader_db(rd), sql, txn_id, n);
}
