/*
 * store/txnops.c — captures and cancels written ahead (store/txnops.h).
 * Table: txn_operations (migration 8, attempts migration 9).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "store/sqlutil.h"
#include "store/store_int.h"
#include "store/txnops.h"

struct op_job {
	struct store_txnop op;
	struct store_txnop *out;
	int succeeded;              /* finish: the target; defer: give up */
	int attempts;               /* defer */
	int64_t next_at;            /* defer */
	store_done_fn done;
	void *arg;
};

static void
op_job_done(void *arg, int rc)
{
	struct op_job *j = arg;
	if (j->out != NULL)
		*j->out = j->op;
	if (j->done != NULL)
		j->done(j->arg, rc);
}

static int
op_submit(struct store *st, struct store_waker *w, store_job_fn run,
          const struct op_job *tmpl, const struct store_idem *idem,
          const struct store_audit *audit, size_t n_audit)
{
	struct op_job *j;

	if (st == NULL || tmpl->op.txn_id[0] == '\0' ||
	    (strcmp(tmpl->op.op, "capture") != 0 && strcmp(tmpl->op.op, "cancel") != 0))
		return FGW_ERR_INVALID;
	if ((j = malloc(sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	*j = *tmpl;
	return store_submit_custom(st, w, run, j, free, idem, audit, n_audit, op_job_done, j);
}

static int
begin_run(sqlite3 *db, void *ctx)
{
	static const char cur_sql[] = "SELECT status FROM transactions WHERE id = ?1";
	static const char ops_sql[] =
	    "SELECT op, status, request_key, attempt, idempotency_key FROM txn_operations"
	    " WHERE txn_id = ?1 ORDER BY attempt";
	static const char ins_sql[] =
	    "INSERT INTO txn_operations (txn_id, op, attempt, idempotency_key, request_key,"
	    " status, created_at, updated_at) VALUES (?1, ?2, ?6, ?3, ?5, 'pending', ?4, ?4)";
	struct op_job *j = ctx;
	struct store_txnop *op = &j->op;
	sqlite3_stmt *s = NULL;
	char cur[24], o[8], st[16], rk[32], key[sizeof(op->idempotency_key)];
	int64_t attempt = 0;
	int rc, r, n;

	if ((r = sql_text_of(db, cur_sql, op->txn_id, cur, sizeof(cur))) != 0)
		goto out;
	if ((r = sql_prepare(db, ops_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, op->txn_id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		sql_col_text(s, 0, o, sizeof(o));
		sql_col_text(s, 1, st, sizeof(st));
		if (sqlite3_column_type(s, 2) == SQLITE_NULL)
			rk[0] = '\0';
		else
			sql_col_text(s, 2, rk, sizeof(rk));
		if (strcmp(o, op->op) == 0 && sqlite3_column_int64(s, 3) > attempt)
			attempt = sqlite3_column_int64(s, 3);
		/* Only the client's retry (same key) of the same operation goes
		 * on from it: a new request is refused below like any other
		 * operation on a transaction no longer authorized. */
		if (strcmp(o, op->op) == 0 && op->request_key[0] != '\0' &&
		    strcmp(rk, op->request_key) == 0) {
			/* The same operation again (a retry): go on from it,
			 * with the processor key that attempt was sent with. */
			op->adopted = 1;
			fgw_strlcpy(op->status, st, sizeof(op->status));
			sql_col_text(s, 4, op->idempotency_key, sizeof(op->idempotency_key));
			goto out;
		}
		if (strcmp(st, "failed") != 0) {
			r = FGW_ERR_STATE; /* the other one is under way or done */
			goto out;
		}
	}
	if (rc != SQLITE_DONE) {
		r = FGW_ERR_DB;
		goto out;
	}
	sql_release(s);
	s = NULL;
	if (txn_state_of(cur) != TXN_AUTHORIZED) {
		r = FGW_ERR_STATE;
		goto out;
	}
	/* After refused attempts, a new one: the processor may have kept
	 * the refusal under the old key, so this one gets a key of its own. */
	attempt++;
	if (attempt > 1) {
		n = snprintf(key, sizeof(key), "%s-%lld", op->idempotency_key, (long long)attempt);
		if (n < 0 || (size_t)n >= sizeof(key)) {
			r = FGW_ERR_TOO_LARGE;
			goto out;
		}
		fgw_strlcpy(op->idempotency_key, key, sizeof(op->idempotency_key));
	}
	if ((r = sql_prepare(db, ins_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, op->txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, op->op, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, op->idempotency_key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, fgw_now_ms());
	if (op->request_key[0] != '\0')
		sqlite3_bind_text(s, 5, op->request_key, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 5);
	sqlite3_bind_int64(s, 6, attempt);
	r = sqlite3_step(s) == SQLITE_DONE ? FGW_OK : FGW_ERR_DB;
	if (r == FGW_OK)
		fgw_strlcpy(op->status, "pending", sizeof(op->status));
out:
	sql_release(s);
	return r;
}

int
store_txnop_begin(struct store *st, struct store_waker *w, const struct store_txnop *op,
                  struct store_txnop *out, const struct store_audit *audit, size_t n_audit,
                  store_done_fn done, void *arg)
{
	struct op_job t = { .out = out, .done = done, .arg = arg };

	if (op == NULL || op->idempotency_key[0] == '\0')
		return FGW_ERR_INVALID;
	t.op = *op;
	return op_submit(st, w, begin_run, &t, NULL, audit, n_audit);
}

static int
finish_run(sqlite3 *db, void *ctx)
{
	/* The attempt sent with this processor key (the latest one when the
	 * caller has no key). */
	static const char st_sql[] =
	    "SELECT status, attempt FROM txn_operations WHERE txn_id = ?1 AND op = ?2"
	    " AND (?3 = '' OR idempotency_key = ?3) ORDER BY attempt DESC LIMIT 1";
	static const char set_sql[] =
	    "UPDATE txn_operations SET status = ?3, updated_at = ?4"
	    " WHERE txn_id = ?1 AND op = ?2 AND attempt = ?5 AND status = 'pending'";
	static const char upd_sql[] =
	    "UPDATE transactions SET status = ?2, updated_at = ?3"
	    " WHERE id = ?1 AND status = 'authorized'";
	static const char cur_sql[] = "SELECT status FROM transactions WHERE id = ?1";
	struct op_job *j = ctx;
	const char *target = j->succeeded ? "succeeded" : "failed";
	enum txn_state txn_to = strcmp(j->op.op, "capture") == 0 ? TXN_SUCCEEDED : TXN_CANCELED;
	sqlite3_stmt *s = NULL;
	char now_st[16], cur[24];
	int64_t now = fgw_now_ms(), attempt;
	int rc, r;

	if ((r = sql_prepare(db, st_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, j->op.txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, j->op.op, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, j->op.idempotency_key, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(s)) != SQLITE_ROW) {
		r = rc == SQLITE_DONE ? FGW_ERR_NOT_FOUND : FGW_ERR_DB;
		goto out;
	}
	sql_col_text(s, 0, now_st, sizeof(now_st));
	attempt = sqlite3_column_int64(s, 1);
	sql_release(s);
	s = NULL;
	if (strcmp(now_st, "pending") != 0) {
		/* Finished already (a retry and the reconciler raced). */
		r = strcmp(now_st, target) == 0 ? FGW_OK : FGW_ERR_STATE;
		goto out;
	}
	if ((r = sql_prepare(db, set_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, j->op.txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, j->op.op, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, target, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, now);
	sqlite3_bind_int64(s, 5, attempt);
	r = sqlite3_step(s) == SQLITE_DONE && sqlite3_changes(db) == 1 ? FGW_OK : FGW_ERR_DB;
	sql_release(s);
	s = NULL;
	if (r != FGW_OK || !j->succeeded)
		goto out;
	if ((r = sql_prepare(db, upd_sql, &s)) != 0)
		goto out;
	sqlite3_bind_text(s, 1, j->op.txn_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, txn_state_name(txn_to), -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	if ((rc = sqlite3_step(s)) != SQLITE_DONE) {
		r = FGW_ERR_DB;
		goto out;
	}
	if (sqlite3_changes(db) == 1)
		goto out;
	sql_release(s);
	s = NULL;
	/* A processor event (a webhook proving the capture) may have moved
	 * it there first: the operation stands. Anything else is a conflict. */
	if ((r = sql_text_of(db, cur_sql, j->op.txn_id, cur, sizeof(cur))) == 0 &&
	    txn_state_of(cur) != txn_to)
		r = FGW_ERR_STATE;
out:
	sql_release(s);
	return r;
}

int
store_txnop_finish(struct store *st, struct store_waker *w, const struct store_txnop *op,
                   int succeeded, const struct store_idem *idem,
                   const struct store_audit *audit, size_t n_audit, store_done_fn done,
                   void *arg)
{
	struct op_job t = { .succeeded = succeeded, .done = done, .arg = arg };

	if (op == NULL)
		return FGW_ERR_INVALID;
	t.op = *op;
	return op_submit(st, w, finish_run, &t, idem, audit, n_audit);
}

static void
due_row(sqlite3_stmt *s, void *out, int i)
{
	struct store_txnop_due *d = (struct store_txnop_due *)out + i;
	sql_col_text(s, 0, d->txn_id, sizeof(d->txn_id));
	sql_col_text(s, 1, d->op, sizeof(d->op));
	sql_col_text(s, 2, d->idempotency_key, sizeof(d->idempotency_key));
	d->attempts = sqlite3_column_int(s, 3);
}

int
store_txnop_pending_list(struct store_reader *rd, int64_t now, int64_t before,
                         struct store_txnop_due *out, int max, int *n)
{
	static const char sql[] =
	    "SELECT txn_id, op, idempotency_key, reconcile_attempts FROM txn_operations"
	    " WHERE status = 'pending' AND manual_review = 0 AND reconcile_next_at <= ?1"
	    " AND updated_at < ?2 ORDER BY reconcile_next_at, created_at LIMIT ?3";
	return store_due_rows(rd, sql, now, before, max, due_row, out, n);
}

static int
defer_run(sqlite3 *db, void *ctx)
{
	static const char sql[] =
	    "UPDATE txn_operations SET reconcile_attempts = ?3, reconcile_next_at = ?4,"
	    " manual_review = ?5 WHERE txn_id = ?1 AND op = ?2 AND status = 'pending'";
	const struct op_job *j = ctx;
	return store_defer_row(db, sql, j->op.txn_id, j->op.op, j->attempts, j->next_at,
	                       j->succeeded);
}

int
store_txnop_defer(struct store *st, struct store_waker *w, const char *txn_id,
                  const char *op, int attempts, int64_t next_at, int give_up,
                  const struct store_audit *audit, size_t n_audit, store_done_fn done,
                  void *arg)
{
	struct op_job t = { .succeeded = give_up ? 1 : 0, .attempts = attempts,
		                .next_at = next_at, .done = done, .arg = arg };

	if (txn_id == NULL || op == NULL || strlen(txn_id) >= sizeof(t.op.txn_id) ||
	    strlen(op) >= sizeof(t.op.op) || attempts < 0)
		return FGW_ERR_INVALID;
	fgw_strlcpy(t.op.txn_id, txn_id, sizeof(t.op.txn_id));
	fgw_strlcpy(t.op.op, op, sizeof(t.op.op));
	return op_submit(st, w, defer_run, &t, NULL, audit, n_audit);
}
