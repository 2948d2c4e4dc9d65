/*
 * store/reconcile.c — queries and jobs of the reconciler and of refunds
 * (store/reconcile.h). Tables: transactions (reconcile_* columns and
 * manual_review, migration 2) and refunds.
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "store/reconcile.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

int
store_unresolved_list(struct store_reader *rd, int64_t now, int64_t posting_before,
                      struct store_unresolved *out, int max, int *n)
{
	static const char sql[] =
	    "SELECT id, status, reconcile_attempts FROM transactions"
	    " WHERE status IN ('posting', 'processing') AND manual_review = 0"
	    " AND reconcile_next_at <= ?1"
	    " AND (status = 'processing' OR updated_at < ?2)"
	    " ORDER BY reconcile_next_at, created_at LIMIT ?3";
	sqlite3_stmt *s = NULL;
	int rc, r;

	*n = 0;
	if (rd == NULL || out == NULL || max <= 0)
		return FGW_ERR_INVALID;
	if ((r = sql_prepare(store_reader_db(rd), sql, &s)) != 0)
		goto out;
	sqlite3_bind_int64(s, 1, now);
	sqlite3_bind_int64(s, 2, posting_before);
	sqlite3_bind_int(s, 3, max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && *n < max) {
		struct store_unresolved *u = &out[*n];
		sql_col_text(s, 0, u->id, sizeof(u->id));
		sql_col_text(s, 1, u->status, sizeof(u->status));
		u->attempts = sqlite3_column_int(s, 2);
		(*n)++;
	}
	r = rc == SQLITE_ROW || rc == SQLITE_DONE ? FGW_OK : FGW_ERR_DB;
out:
	sql_release(s);
	return r;
}

int
store_manual_review_get(struct store_reader *rd, const char *id, int *flag)
{
	static const char sql[] = "SELECT manual_review FROM transactions WHERE id = ?1";
	sqlite3_stmt *s = NULL;
	int rc, r;

	if ((r = sql_prepare(store_reader_db(rd), sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*flag = sqlite3_column_int(s, 0);
		r = FGW_OK;
	} else {
		r = rc == SQLITE_DONE ? FGW_ERR_NOT_FOUND : FGW_ERR_DB;
	}
out:
	sql_release(s);
	return r;
}

int
store_refund_sum(struct store_reader *rd, const char *txn_id, int64_t *sum)
{
	static const char sql[] =
	    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1";
	sqlite3_stmt *s = NULL;
	int r;

	*sum = 0;
	if ((r = sql_prepare(store_reader_db(rd), sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, txn_id, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(s) != SQLITE_ROW) {
		r = FGW_ERR_DB;
		goto out;
	}
	*sum = sqlite3_column_int64(s, 0);
out:
	sql_release(s);
	return r;
}

/* ---- write jobs (writer thread) ---------------------------------------- */

struct defer_job {
	char id[40];
	int attempts;
	int64_t next_at;
	int give_up;
};

static int
defer_run(sqlite3 *db, void *ctx)
{
	static const char sql[] =
	    "UPDATE transactions SET reconcile_attempts = ?2,"
	    " reconcile_next_at = ?3, manual_review = ?4"
	    " WHERE id = ?1 AND status IN ('posting', 'processing')";
	const struct defer_job *j = ctx;
	sqlite3_stmt *s = NULL;
	int r;

	if ((r = sql_prepare(db, sql, &s)) != 0)
		return r;
	sqlite3_bind_text(s, 1, j->id, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, j->attempts);
	sqlite3_bind_int64(s, 3, j->next_at);
	sqlite3_bind_int(s, 4, j->give_up ? 1 : 0);
	r = sqlite3_step(s) == SQLITE_DONE ? FGW_OK : FGW_ERR_DB;
	if (r == FGW_OK && sqlite3_changes(db) != 1)
		r = FGW_ERR_STATE; /* resolved meanwhile (webhook, live answer) */
	sql_release(s);
	return r;
}

int
store_reconcile_defer(struct store *st, struct store_waker *w, const char *id,
                      int attempts, int64_t next_at, int give_up,
                      const struct store_audit *audit, size_t n_audit,
                      store_done_fn done, void *arg)
{
	struct defer_job *j;

	if (st == NULL || id == NULL || id[0] == '\0' || attempts < 0)
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	if (strlen(id) >= sizeof(j->id)) {
		free(j);
		return FGW_ERR_INVALID;
	}
	fgw_strlcpy(j->id, id, sizeof(j->id));
	j->attempts = attempts;
	j->next_at = next_at;
	j->give_up = give_up;
	return store_submit_custom(st, w, defer_run, j, free, NULL, audit, n_audit,
	                           done, arg);
}

static int
refund_run(sqlite3 *db, void *ctx)
{
	static const char sum_sql[] =
	    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1";
	static const char ins_sql[] =
	    "INSERT INTO refunds (id, txn_id, amount, idempotency_key,"
	    " processor_ref, created_at) VALUES (?1, ?2, ?3, ?4, NULLIF(?5, ''), ?6)";
	static const char upd_sql[] =
	    "UPDATE transactions SET status = ?2, updated_at = ?3"
	    " WHERE id = ?1 AND status = ?4";
	static const char cur_sql[] = "SELECT status FROM transactions WHERE id = ?1";
	struct store_refund *rf = ctx; /* the job's own copy */
	sqlite3_stmt *s = NULL;
	char cur[24];
	int64_t sum, now = fgw_now_ms();
	int rc, r;

	if ((r = sql_prepare(db, cur_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, rf->txn_id, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(s)) != SQLITE_ROW) {
		r = rc == SQLITE_DONE ? FGW_ERR_NOT_FOUND : FGW_ERR_DB;
		goto out;
	}
	sql_col_text(s, 0, cur, sizeof(cur));
	sql_release(s);
	s = NULL;
	if ((r = sql_prepare(db, sum_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, rf->txn_id, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_ROW) {
		r = FGW_ERR_DB;
		goto out;
	}
	sum = sqlite3_column_int64(s, 0);
	sql_release(s);
	s = NULL;
	if (rf->amount <= 0 || sum + rf->amount > rf->txn_amount) {
		r = FGW_ERR_TOO_LARGE;
		goto out;
	}
	/* Decided here, from the committed sum: two concurrent partial
	 * refunds that together refund everything leave it refunded. */
	fgw_strlcpy(rf->new_status, sum + rf->amount == rf->txn_amount ? "refunded"
	                                                                : "partially_refunded",
	            sizeof(rf->new_status));
	if (!store_status_may_move(cur, rf->new_status)) {
		r = FGW_ERR_STATE;
		goto out;
	}
	if ((r = sql_prepare(db, ins_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, rf->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, rf->txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, rf->amount);
	sqlite3_bind_text(s, 4, rf->idempotency_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, rf->processor_ref, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, now);
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE) {
		r = (rc & 0xff) == SQLITE_CONSTRAINT ? FGW_ERR_EXISTS : FGW_ERR_DB;
		goto out;
	}
	sql_release(s);
	s = NULL;
	if ((r = sql_prepare(db, upd_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, rf->txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, rf->new_status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	sqlite3_bind_text(s, 4, cur, -1, SQLITE_STATIC);
	r = sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(db) == 1 ? FGW_OK
	                                                                : FGW_ERR_STATE;
out:
	sql_release(s);
	return r;
}

int
store_refund_record(struct store *st, struct store_waker *w,
                    const struct store_refund *rf, const struct store_idem *idem,
                    const struct store_audit *audit, size_t n_audit,
                    store_done_fn done, void *arg)
{
	struct store_refund *copy;

	if (st == NULL || rf == NULL || rf->id[0] == '\0' || rf->txn_id[0] == '\0' ||
	    rf->idempotency_key[0] == '\0' || !store_status_known(rf->new_status))
		return FGW_ERR_INVALID;
	if ((copy = malloc(sizeof(*copy))) == NULL)
		return FGW_ERR_NOMEM;
	*copy = *rf;
	return store_submit_custom(st, w, refund_run, copy, free, idem, audit,
	                           n_audit, done, arg);
}
