/*
 * store/refunds.c — refunds written ahead (store/refunds.h). Table:
 * refunds (migration 4, status and reconcile columns migration 8).
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "store/refunds.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

/* The job's copy and where the reactor wants the result. */
struct refund_job {
	struct store_refund rf;
	struct store_refund *out;
	int succeeded;              /* finish: the target; defer: give up */
	int attempts;               /* defer */
	int64_t next_at;            /* defer */
	store_refund_answer_fn answer; /* finish: or NULL */
	void *answer_arg;
	store_done_fn done;
	void *arg;
};

static void
job_done(void *arg, int rc)
{
	struct refund_job *j = arg;
	if (j->out != NULL)
		*j->out = j->rf;
	if (j->done != NULL)
		j->done(j->arg, rc);
}

/* The answer, and the audit event's outcome (the transaction's state),
 * from what finish_run committed (j->rf is up to date). */
static int
job_answer(void *ctx, char **body, char **outcome)
{
	struct refund_job *j = ctx;
	int r;

	if ((r = j->answer(j->answer_arg, &j->rf, body)) != 0)
		return r;
	if (j->rf.new_status[0] != '\0' && (*outcome = strdup(j->rf.new_status)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

/* Submits a copy of tmpl (with done and arg set) as the job. */
static int
submit(struct store *st, struct store_waker *w, store_job_fn run,
       const struct refund_job *tmpl, const struct store_idem *idem,
       const struct store_audit *audit, size_t n_audit)
{
	struct refund_job *j;

	if (st == NULL || tmpl->rf.id[0] == '\0')
		return FGW_ERR_INVALID;
	if ((j = malloc(sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	*j = *tmpl;
	return store_submit_custom_answer(st, w, run, tmpl->answer != NULL ? job_answer : NULL,
	                                  j, free, idem, audit, n_audit, job_done, j);
}

static const char succeeded_sum_sql[] =
    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1"
    " AND status = 'succeeded'";

static int
begin_run(sqlite3 *db, void *ctx)
{
	static const char cur_sql[] = "SELECT status FROM transactions WHERE id = ?1";
	static const char same_sql[] =
	    "SELECT id, amount, status FROM refunds WHERE txn_id = ?1 AND idempotency_key = ?2";
	static const char held_sql[] =
	    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1"
	    " AND status <> 'failed'";
	static const char ins_sql[] =
	    "INSERT INTO refunds (id, txn_id, amount, idempotency_key, created_at,"
	    " status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)";
	struct refund_job *j = ctx;
	struct store_refund *rf = &j->rf;
	sqlite3_stmt *s = NULL;
	enum txn_state cur_st;
	char cur[24];
	int64_t held;
	int rc, r;

	if ((r = sql_text_of(db, cur_sql, rf->txn_id, cur, sizeof(cur))) != 0)
		goto out;
	cur_st = txn_state_of(cur);
	if (cur_st != TXN_SUCCEEDED && cur_st != TXN_PARTIALLY_REFUNDED &&
	    cur_st != TXN_REFUNDED) {
		r = FGW_ERR_STATE;
		goto out;
	}
	if ((r = sql_prepare(db, same_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, rf->txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, rf->idempotency_key, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		/* The same refund again (a retry): finish that one. */
		rf->adopted = 1;
		sql_col_text(s, 0, rf->id, sizeof(rf->id));
		rf->amount = sqlite3_column_int64(s, 1);
		sql_col_text(s, 2, rf->status, sizeof(rf->status));
		goto out;
	}
	if (rc != SQLITE_DONE) {
		r = FGW_ERR_DB;
		goto out;
	}
	sql_release(s);
	s = NULL;
	if (strcmp(cur, "refunded") == 0) {
		r = FGW_ERR_STATE; /* final, unless this is a retry (above) */
		goto out;
	}
	if ((r = sql_int64_of(db, held_sql, rf->txn_id, &held)) != 0)
		goto out;
	/* Pending refunds count: the processor may have made them. */
	if (rf->amount <= 0 || held + rf->amount > rf->txn_amount) {
		r = FGW_ERR_TOO_LARGE;
		goto out;
	}
	if ((r = sql_prepare(db, ins_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, rf->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, rf->txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, rf->amount);
	sqlite3_bind_text(s, 4, rf->idempotency_key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, fgw_now_ms());
	rc = sqlite3_step(s);
	r = rc == SQLITE_DONE ? FGW_OK
	    : (rc & 0xff) == SQLITE_CONSTRAINT ? FGW_ERR_EXISTS : FGW_ERR_DB;
	if (r == FGW_OK)
		fgw_strlcpy(rf->status, "pending", sizeof(rf->status));
out:
	sql_release(s);
	return r;
}

int
store_refund_begin(struct store *st, struct store_waker *w, const struct store_refund *rf,
                   struct store_refund *out, const struct store_audit *audit,
                   size_t n_audit, store_done_fn done, void *arg)
{
	struct refund_job t = { .out = out, .done = done, .arg = arg };

	if (rf == NULL || rf->idempotency_key[0] == '\0' || rf->txn_id[0] == '\0')
		return FGW_ERR_INVALID;
	t.rf = *rf;
	return submit(st, w, begin_run, &t, NULL, audit, n_audit);
}

static int
finish_run(sqlite3 *db, void *ctx)
{
	static const char st_sql[] = "SELECT status FROM refunds WHERE id = ?1";
	static const char ref_sql[] =
	    "UPDATE refunds SET processor_ref = ?2 WHERE id = ?1 AND processor_ref IS NULL";
	static const char set_sql[] =
	    "UPDATE refunds SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'pending'";
	static const char cur_sql[] = "SELECT status FROM transactions WHERE id = ?1";
	static const char upd_sql[] =
	    "UPDATE transactions SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = ?4";
	struct refund_job *j = ctx;
	struct store_refund *rf = &j->rf;
	const char *target = j->succeeded ? "succeeded" : "failed";
	sqlite3_stmt *s = NULL;
	char now_st[16], cur[24];
	int64_t now = fgw_now_ms();
	int r;

	if ((r = sql_text_of(db, st_sql, rf->id, now_st, sizeof(now_st))) != 0)
		goto out;
	if (rf->processor_ref[0] != '\0') {
		if ((r = sql_prepare(db, ref_sql, &s)) != 0)
			goto out;
		sqlite3_bind_text(s, 1, rf->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, rf->processor_ref, -1, SQLITE_STATIC);
		r = sqlite3_step(s) == SQLITE_DONE ? FGW_OK : FGW_ERR_DB;
		sql_release(s);
		s = NULL;
		if (r != FGW_OK)
			goto out;
	}
	if (strcmp(now_st, "pending") != 0) {
		/* Finished already (a retry and the reconciler raced). */
		r = strcmp(now_st, target) == 0 ? FGW_OK : FGW_ERR_STATE;
		if (r == FGW_OK && j->succeeded)
			goto txn_state;
		goto out;
	}
	if ((r = sql_prepare(db, set_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, rf->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, target, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	r = sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(db) == 1 ? FGW_OK : FGW_ERR_DB;
	sql_release(s);
	s = NULL;
	if (r != FGW_OK || !j->succeeded)
		goto out;
txn_state:
	if ((r = sql_text_of(db, cur_sql, rf->txn_id, cur, sizeof(cur))) != 0 ||
	    (r = sql_int64_of(db, succeeded_sum_sql, rf->txn_id, &rf->refunded)) != 0)
		goto out;
	/* Decided here, from the committed sum: two concurrent partial
	 * refunds that together refund everything leave it refunded. */
	fgw_strlcpy(rf->new_status,
	            txn_state_name(rf->refunded >= rf->txn_amount ? TXN_REFUNDED
	                                                          : TXN_PARTIALLY_REFUNDED),
	            sizeof(rf->new_status));
	if (txn_state_of(cur) == TXN_REFUNDED)
		fgw_strlcpy(rf->new_status, cur, sizeof(rf->new_status)); /* a webhook said all */
	if (txn_state_of(cur) == txn_state_of(rf->new_status))
		goto out;
	if (!txn_state_may_move(txn_state_of(cur), txn_state_of(rf->new_status))) {
		r = FGW_ERR_STATE;
		goto out;
	}
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
store_refund_finish(struct store *st, struct store_waker *w, const struct store_refund *rf,
                    int succeeded, struct store_refund *out, const struct store_idem *idem,
                    const struct store_audit *audit, size_t n_audit, store_done_fn done,
                    void *arg)
{
	struct refund_job t = { .out = out, .succeeded = succeeded, .done = done, .arg = arg };

	if (rf == NULL || rf->txn_id[0] == '\0' || (succeeded && rf->txn_amount <= 0))
		return FGW_ERR_INVALID;
	t.rf = *rf;
	return submit(st, w, finish_run, &t, idem, audit, n_audit);
}

int
store_refund_finish_answered(struct store *st, struct store_waker *w,
                             const struct store_refund *rf, struct store_refund *out,
                             const struct store_idem *idem, store_refund_answer_fn answer,
                             void *answer_arg, const struct store_audit *audit,
                             size_t n_audit, store_done_fn done, void *arg)
{
	struct refund_job t = { .out = out, .succeeded = 1, .answer = answer,
		                    .answer_arg = answer_arg, .done = done, .arg = arg };

	if (rf == NULL || rf->txn_id[0] == '\0' || rf->txn_amount <= 0 || answer == NULL ||
	    idem == NULL)
		return FGW_ERR_INVALID;
	t.rf = *rf;
	return submit(st, w, finish_run, &t, idem, audit, n_audit);
}

static void
due_row(sqlite3_stmt *s, void *out, int i)
{
	struct store_refund_due *d = (struct store_refund_due *)out + i;
	sql_col_text(s, 0, d->id, sizeof(d->id));
	sql_col_text(s, 1, d->txn_id, sizeof(d->txn_id));
	d->amount = sqlite3_column_int64(s, 2);
	sql_col_text(s, 3, d->idempotency_key, sizeof(d->idempotency_key));
	d->attempts = sqlite3_column_int(s, 4);
	d->created_at = sqlite3_column_int64(s, 5);
}

int
store_refund_pending_list(struct store_reader *rd, int64_t now, int64_t before,
                          struct store_refund_due *out, int max, int *n)
{
	static const char sql[] =
	    "SELECT id, txn_id, amount, idempotency_key, reconcile_attempts, created_at FROM refunds"
	    " WHERE status = 'pending' AND manual_review = 0 AND reconcile_next_at <= ?1"
	    " AND updated_at < ?2 ORDER BY reconcile_next_at, created_at LIMIT ?3";
	return store_due_rows(rd, sql, now, before, max, due_row, out, n);
}

static int
defer_run(sqlite3 *db, void *ctx)
{
	static const char sql[] =
	    "UPDATE refunds SET reconcile_attempts = ?3, reconcile_next_at = ?4,"
	    " manual_review = ?5 WHERE id = ?1 AND txn_id = ?2 AND status = 'pending'";
	const struct refund_job *j = ctx;
	return store_defer_row(db, sql, j->rf.id, j->rf.txn_id, j->attempts, j->next_at,
	                       j->succeeded);
}

int
store_refund_defer(struct store *st, struct store_waker *w, const char *id,
                   const char *txn_id, int attempts, int64_t next_at, int give_up,
                   const struct store_audit *audit, size_t n_audit, store_done_fn done,
                   void *arg)
{
	struct refund_job t = { .succeeded = give_up ? 1 : 0, .attempts = attempts,
		                    .next_at = next_at, .done = done, .arg = arg };

	if (id == NULL || txn_id == NULL || strlen(id) >= sizeof(t.rf.id) ||
	    strlen(txn_id) >= sizeof(t.rf.txn_id) || attempts < 0)
		return FGW_ERR_INVALID;
	fgw_strlcpy(t.rf.id, id, sizeof(t.rf.id));
	fgw_strlcpy(t.rf.txn_id, txn_id, sizeof(t.rf.txn_id));
	return submit(st, w, defer_run, &t, NULL, audit, n_audit);
}

int
store_refund_sum(struct store_reader *rd, const char *txn_id, int64_t *sum)
{
	if (rd == NULL || txn_id == NULL)
		return FGW_ERR_INVALID;
	return sql_int64_of(store_reader_db(rd), succeeded_sum_sql, txn_id, sum);
}
