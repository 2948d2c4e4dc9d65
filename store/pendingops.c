/*
 * store/pendingops.c — refunds, captures and cancels written ahead
 * (store/pendingops.h). Tables: refunds (migration 4, status and
 * reconcile columns migration 8) and txn_operations (migration 8,
 * attempts migration 9).
 *
 * One job shape and one finish/defer/list for every kind; the SQL that
 * differs per table is in `kinds`, and only the write-ahead step (who may
 * start, what a retry adopts) is written per table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "store/claim.h"
#include "store/db.h"
#include "store/pendingops.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

/* Per kind: the SQL of its table. Each statement binds ?1 and ?2 to the
 * operation's key: a refund's id and transaction, or a capture/cancel's
 * transaction and operation name. */
struct kind_sql {
	const char *name;
	/* The operation's status (and attempt): ?3 the processor key, ""
	 * for the latest attempt. */
	const char *status;
	/* pending to ?3 at ?4 (?5 the attempt). */
	const char *set;
	const char *due;   /* store_due_rows: ?1 now, ?2 before, ?3 max */
	const char *defer; /* store_defer_row */
	/* The claim (store/claim.h) of what due lists, ?4 the lease's end,
	 * on SQLite and on PostgreSQL. */
	const char *claim_lite, *claim_pg;
};

/* The claims: a capture or cancel is one pending row per transaction
 * (the txn_operations_live index), so its transaction names it. */
#define REFUND_CLAIM(DIALECT)                                                       \
	DIALECT("refunds", "id", "reconcile_next_at = ?4", "status = 'pending'",        \
	        "SELECT id FROM refunds WHERE status = 'pending' AND manual_review = 0" \
	        " AND reconcile_next_at <= ?1 AND updated_at < ?2"                      \
	        " ORDER BY reconcile_next_at, created_at LIMIT ?3",                     \
	        "id, txn_id, amount, idempotency_key, reconcile_attempts, created_at")
#define TXNOP_CLAIM(DIALECT, OP)                                    \
	DIALECT("txn_operations", "txn_id", "reconcile_next_at = ?4",   \
	        "op = '" OP "' AND status = 'pending'",                 \
	        "SELECT txn_id FROM txn_operations WHERE op = '" OP "'" \
	        " AND status = 'pending' AND manual_review = 0"         \
	        " AND reconcile_next_at <= ?1 AND updated_at < ?2"      \
	        " ORDER BY reconcile_next_at, created_at LIMIT ?3",     \
	        "'', txn_id, 0, idempotency_key, reconcile_attempts, created_at")

static const struct kind_sql kinds[] = {
	[STORE_OP_REFUND] = {
		"refund",
		"SELECT status, 0 FROM refunds WHERE id = ?1 AND txn_id = ?2",
		"UPDATE refunds SET status = ?3, updated_at = ?4"
		" WHERE id = ?1 AND txn_id = ?2 AND status = 'pending'",
		"SELECT id, txn_id, amount, idempotency_key, reconcile_attempts, created_at"
		" FROM refunds WHERE status = 'pending' AND manual_review = 0"
		" AND reconcile_next_at <= ?1 AND updated_at < ?2"
		" ORDER BY reconcile_next_at, created_at LIMIT ?3",
		"UPDATE refunds SET reconcile_attempts = ?3, reconcile_next_at = ?4,"
		" manual_review = ?5 WHERE id = ?1 AND txn_id = ?2 AND status = 'pending'",
		REFUND_CLAIM(CLAIM_SQL_LITE),
		REFUND_CLAIM(CLAIM_SQL_PG),
	},
	[STORE_OP_CAPTURE] = {
		"capture",
		"SELECT status, attempt FROM txn_operations WHERE txn_id = ?1 AND op = ?2"
		" AND (?3 = '' OR idempotency_key = ?3) ORDER BY attempt DESC LIMIT 1",
		"UPDATE txn_operations SET status = ?3, updated_at = ?4"
		" WHERE txn_id = ?1 AND op = ?2 AND attempt = ?5 AND status = 'pending'",
		"SELECT '', txn_id, 0, idempotency_key, reconcile_attempts, created_at"
		" FROM txn_operations WHERE op = 'capture' AND status = 'pending'"
		" AND manual_review = 0 AND reconcile_next_at <= ?1 AND updated_at < ?2"
		" ORDER BY reconcile_next_at, created_at LIMIT ?3",
		"UPDATE txn_operations SET reconcile_attempts = ?3, reconcile_next_at = ?4,"
		" manual_review = ?5 WHERE txn_id = ?1 AND op = ?2 AND status = 'pending'",
		TXNOP_CLAIM(CLAIM_SQL_LITE, "capture"),
		TXNOP_CLAIM(CLAIM_SQL_PG, "capture"),
	},
	[STORE_OP_CANCEL] = {
		"cancel",
		"SELECT status, attempt FROM txn_operations WHERE txn_id = ?1 AND op = ?2"
		" AND (?3 = '' OR idempotency_key = ?3) ORDER BY attempt DESC LIMIT 1",
		"UPDATE txn_operations SET status = ?3, updated_at = ?4"
		" WHERE txn_id = ?1 AND op = ?2 AND attempt = ?5 AND status = 'pending'",
		"SELECT '', txn_id, 0, idempotency_key, reconcile_attempts, created_at"
		" FROM txn_operations WHERE op = 'cancel' AND status = 'pending'"
		" AND manual_review = 0 AND reconcile_next_at <= ?1 AND updated_at < ?2"
		" ORDER BY reconcile_next_at, created_at LIMIT ?3",
		"UPDATE txn_operations SET reconcile_attempts = ?3, reconcile_next_at = ?4,"
		" manual_review = ?5 WHERE txn_id = ?1 AND op = ?2 AND status = 'pending'",
		TXNOP_CLAIM(CLAIM_SQL_LITE, "cancel"),
		TXNOP_CLAIM(CLAIM_SQL_PG, "cancel"),
	},
};

static const char txn_status_sql[] = "SELECT status FROM transactions WHERE id = ?1";
/* The begin and finish jobs' first look at the transaction. On
 * PostgreSQL it locks the row until the batch commits: two instances
 * beginning an operation on one payment (two refunds with different keys,
 * a capture and a cancel), or recording two refunds' answers, then decide
 * one after the other, and each statement after the lock reads what the
 * other committed (READ COMMITTED): the refundable sum, the one
 * operation, the state the refunded sum leaves. NO KEY: rows that only
 * reference the payment are not held up. SQLite's one writer serializes
 * the jobs already. */
static const char txn_lock_pg_sql[] =
    "SELECT status FROM transactions WHERE id = ?1 FOR NO KEY UPDATE";

/* The transaction's status, read with the lock above. */
static int
lock_txn_status(struct db *db, const char *txn_id, char *out, size_t cap)
{
	return db_text_of(db, db_kind(db) == DB_PG ? txn_lock_pg_sql : txn_status_sql, txn_id,
	                  out, cap);
}
static const char succeeded_sum_sql[] =
    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1"
    " AND status = 'succeeded'";

/* The status column's text as the enum; STORE_OP_NONE for anything else. */
static enum store_op_status
op_status_of(const char *name)
{
	if (strcmp(name, "pending") == 0)
		return STORE_OP_PENDING;
	if (strcmp(name, "succeeded") == 0)
		return STORE_OP_SUCCEEDED;
	if (strcmp(name, "failed") == 0)
		return STORE_OP_FAILED;
	return STORE_OP_NONE;
}

static int
kind_ok(enum store_op_kind kind)
{
	return kind == STORE_OP_REFUND || kind == STORE_OP_CAPTURE || kind == STORE_OP_CANCEL;
}

const char *
store_op_name(enum store_op_kind kind)
{
	return kind_ok(kind) ? kinds[kind].name : "";
}

/* The operation's key in its table: ?1 and ?2 of every kinds[] statement. */
static const char *
key1(const struct store_pendingop *op)
{
	return op->kind == STORE_OP_REFUND ? op->id : op->txn_id;
}

static const char *
key2(const struct store_pendingop *op)
{
	return op->kind == STORE_OP_REFUND ? op->txn_id : kinds[op->kind].name;
}

/* The job's copy and where the reactor wants the result. */
struct op_job {
	struct store_pendingop op;
	struct store_pendingop *out;
	int succeeded;                    /* finish: the target; defer: give up */
	int attempts;                     /* defer */
	int64_t next_at;                  /* defer */
	store_pendingop_answer_fn answer; /* finish: or NULL */
	void *answer_arg;
	store_done_fn done; /* the caller's */
	void *arg;
};

static void
job_done(void *arg, int rc)
{
	struct op_job *j = arg;
	if (j->out != NULL)
		*j->out = j->op;
	if (j->done != NULL)
		j->done(j->arg, rc);
}

/* The answer, and the audit event's outcome (the transaction's state),
 * from what finish_run committed (j->op is up to date). */
static int
job_answer(void *ctx, char **body, char **outcome)
{
	struct op_job *j = ctx;
	int r;

	if ((r = j->answer(j->answer_arg, &j->op, body)) != 0)
		return r;
	if (j->op.new_status[0] != '\0' && (*outcome = strdup(j->op.new_status)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

/* Submits a copy of tmpl as the job. */
static int
submit(struct store *st, struct store_waker *w, store_job_fn run, struct op_job *tmpl,
       const struct store_commit *c)
{
	struct store_commit mine;
	struct op_job *j;

	if (st == NULL || c == NULL || !kind_ok(tmpl->op.kind) ||
	    tmpl->op.txn_id[0] == '\0' ||
	    (tmpl->op.kind == STORE_OP_REFUND && tmpl->op.id[0] == '\0'))
		return FGW_ERR_INVALID;
	if ((j = malloc(sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	*j = *tmpl;
	j->done = c->done;
	j->arg = c->arg;
	/* The job hears the commit first: it hands back *out. */
	mine = *c;
	mine.done = job_done;
	mine.arg = j;
	return store_submit_custom_answer(st, w, run,
	                                  tmpl->answer != NULL ? job_answer : NULL, j, free,
	                                  &mine);
}

/* ---- the write-ahead step, per table --------------------------------------- */

static int
begin_refund(struct db *db, struct store_pendingop *rf)
{
	static const char same_sql[] =
	    "SELECT id, amount, status FROM refunds WHERE txn_id = ?1 AND idempotency_key = ?2";
	static const char held_sql[] =
	    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE txn_id = ?1"
	    " AND status <> 'failed'";
	/* A clash (a refund id or the same key raced in) is asked about, not
	 * caught: on PostgreSQL an error spoils the batch until its savepoint. */
	static const char ins_sql[] =
	    "INSERT INTO refunds (id, txn_id, amount, idempotency_key, created_at,"
	    " status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)"
	    " ON CONFLICT DO NOTHING";
	struct db_stmt *s = NULL;
	enum txn_state cur;
	char cur_name[24], st[16];
	int64_t held;
	int rc, r;

	if ((r = lock_txn_status(db, rf->txn_id, cur_name, sizeof(cur_name))) != 0)
		goto out;
	cur = txn_state_of(cur_name);
	if (cur != TXN_SUCCEEDED && cur != TXN_PARTIALLY_REFUNDED && cur != TXN_REFUNDED) {
		r = FGW_ERR_STATE;
		goto out;
	}
	if ((r = db_prepare(db, same_sql, &s)) != 0)
		goto out;
	db_bind_text(s, 1, rf->txn_id);
	db_bind_text(s, 2, rf->idempotency_key);
	if ((rc = db_step(s)) == DB_ROW) {
		/* The same refund again (a retry): finish that one. */
		rf->adopted = 1;
		db_col_copy(s, 0, rf->id, sizeof(rf->id));
		rf->amount = db_col_int64(s, 1);
		db_col_copy(s, 2, st, sizeof(st));
		rf->status = op_status_of(st);
		goto out;
	}
	if (rc != DB_DONE) {
		r = FGW_ERR_DB;
		goto out;
	}
	db_release(s);
	s = NULL;
	if (cur == TXN_REFUNDED) {
		r = FGW_ERR_STATE; /* final, unless this is a retry (above) */
		goto out;
	}
	if ((r = db_int64_of(db, held_sql, rf->txn_id, &held)) != 0)
		goto out;
	/* Pending refunds count: the processor may have made them. */
	if (rf->amount <= 0 || held + rf->amount > rf->txn_amount) {
		r = FGW_ERR_TOO_LARGE;
		goto out;
	}
	if ((r = db_prepare(db, ins_sql, &s)) != 0)
		goto out;
	db_bind_text(s, 1, rf->id);
	db_bind_text(s, 2, rf->txn_id);
	db_bind_int64(s, 3, rf->amount);
	db_bind_text(s, 4, rf->idempotency_key);
	db_bind_int64(s, 5, fgw_now_ms());
	rc = db_step(s);
	/* Zero rows: another request (on another instance) began the same
	 * refund since the look; it runs it, this one answers as a repeat. */
	r = rc == DB_DONE           ? (db_changes(db) == 1 ? FGW_OK : FGW_ERR_CONFLICT)
	    : rc == FGW_ERR_INVALID ? FGW_ERR_EXISTS
	                            : FGW_ERR_DB;
	if (r == FGW_OK)
		rf->status = STORE_OP_PENDING;
out:
	db_release(s);
	return r;
}

static int
begin_txnop(struct db *db, struct store_pendingop *op)
{
	static const char ops_sql[] =
	    "SELECT op, status, request_key, attempt, idempotency_key FROM txn_operations"
	    " WHERE txn_id = ?1 ORDER BY attempt";
	static const char ins_sql[] =
	    "INSERT INTO txn_operations (txn_id, op, attempt, idempotency_key, request_key,"
	    " status, created_at, updated_at) VALUES (?1, ?2, ?6, ?3, ?5, 'pending', ?4, ?4)";
	const char *name = kinds[op->kind].name;
	struct db_stmt *s = NULL;
	char cur[24], o[8], st[16], rk[32], key[sizeof(op->idempotency_key)];
	int64_t attempt = 0;
	int rc, r, n;

	if ((r = lock_txn_status(db, op->txn_id, cur, sizeof(cur))) != 0)
		goto out;
	if ((r = db_prepare(db, ops_sql, &s)) != 0)
		goto out;
	db_bind_text(s, 1, op->txn_id);
	while ((rc = db_step(s)) == DB_ROW) {
		db_col_copy(s, 0, o, sizeof(o));
		db_col_copy(s, 1, st, sizeof(st));
		if (db_col_is_null(s, 2))
			rk[0] = '\0';
		else
			db_col_copy(s, 2, rk, sizeof(rk));
		if (strcmp(o, name) == 0 && db_col_int64(s, 3) > attempt)
			attempt = db_col_int64(s, 3);
		/* Only the client's retry (same key) of the same operation goes
		 * on from it: a new request is refused below like any other
		 * operation on a transaction no longer authorized. */
		if (strcmp(o, name) == 0 && op->request_key[0] != '\0' &&
		    strcmp(rk, op->request_key) == 0) {
			/* The same operation again (a retry): go on from it,
			 * with the processor key that attempt was sent with. */
			op->adopted = 1;
			op->status = op_status_of(st);
			db_col_copy(s, 4, op->idempotency_key, sizeof(op->idempotency_key));
			goto out;
		}
		if (op_status_of(st) != STORE_OP_FAILED) {
			r = FGW_ERR_STATE; /* the other one is under way or done */
			goto out;
		}
	}
	if (rc != DB_DONE) {
		r = FGW_ERR_DB;
		goto out;
	}
	db_release(s);
	s = NULL;
	if (txn_state_of(cur) != TXN_AUTHORIZED) {
		r = FGW_ERR_STATE;
		goto out;
	}
	/* After refused attempts, a new one: the processor may have kept
	 * the refusal under the old key, so this one gets a key of its own. */
	attempt++;
	if (attempt > 1) {
		n = snprintf(key, sizeof(key), "%s-%lld", op->idempotency_key,
		             (long long)attempt);
		if (n < 0 || (size_t)n >= sizeof(key)) {
			r = FGW_ERR_TOO_LARGE;
			goto out;
		}
		fgw_strlcpy(op->idempotency_key, key, sizeof(op->idempotency_key));
	}
	if ((r = db_prepare(db, ins_sql, &s)) != 0)
		goto out;
	db_bind_text(s, 1, op->txn_id);
	db_bind_text(s, 2, name);
	db_bind_text(s, 3, op->idempotency_key);
	db_bind_int64(s, 4, fgw_now_ms());
	if (op->request_key[0] != '\0')
		db_bind_text(s, 5, op->request_key);
	else
		db_bind_null(s, 5);
	db_bind_int64(s, 6, attempt);
	r = db_step(s) == DB_DONE ? FGW_OK : FGW_ERR_DB;
	if (r == FGW_OK)
		op->status = STORE_OP_PENDING;
out:
	db_release(s);
	return r;
}

static int
begin_run(struct db *db, void *ctx)
{
	struct op_job *j = ctx;
	return j->op.kind == STORE_OP_REFUND ? begin_refund(db, &j->op)
	                                     : begin_txnop(db, &j->op);
}

int
store_pendingop_begin(struct store *st, struct store_waker *w,
                      const struct store_pendingop *op, struct store_pendingop *out,
                      const struct store_commit *c)
{
	struct op_job t = { .out = out };

	if (op == NULL || op->idempotency_key[0] == '\0')
		return FGW_ERR_INVALID;
	t.op = *op;
	return submit(st, w, begin_run, &t, c);
}

/* ---- the outcome ----------------------------------------------------------- */

/* Moves the transaction to `to` when the transition table allows it from
 * its committed state; already there is fine (a processor event may have
 * moved it first). */
static int
move_txn(struct db *db, const char *txn_id, enum txn_state to, int64_t now)
{
	static const char upd_sql[] =
	    "UPDATE transactions SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = ?4";
	struct db_stmt *s = NULL;
	char cur[24];
	int r;

	if ((r = db_text_of(db, txn_status_sql, txn_id, cur, sizeof(cur))) != 0)
		return r;
	if (txn_state_of(cur) == to)
		return FGW_OK;
	if (!txn_state_may_move(txn_state_of(cur), to))
		return FGW_ERR_STATE;
	if ((r = db_prepare(db, upd_sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, txn_id);
	db_bind_text(s, 2, txn_state_name(to));
	db_bind_int64(s, 3, now);
	db_bind_text(s, 4, cur);
	r = db_step(s) == DB_DONE && db_changes(db) == 1 ? FGW_OK : FGW_ERR_STATE;
	db_release(s);
	return r;
}

/* The state a succeeded operation leaves its transaction in. A refund's
 * is decided here, from the committed sum: two concurrent partial refunds
 * that together refund everything leave it refunded. */
static int
txn_target(struct db *db, struct store_pendingop *op, enum txn_state *to)
{
	char cur[24];
	int r;

	if (op->kind == STORE_OP_CAPTURE) {
		*to = TXN_SUCCEEDED;
		return FGW_OK;
	}
	if (op->kind == STORE_OP_CANCEL) {
		*to = TXN_CANCELED;
		return FGW_OK;
	}
	if ((r = db_text_of(db, txn_status_sql, op->txn_id, cur, sizeof(cur))) != 0 ||
	    (r = db_int64_of(db, succeeded_sum_sql, op->txn_id, &op->refunded)) != 0)
		return r;
	*to = op->refunded >= op->txn_amount ? TXN_REFUNDED : TXN_PARTIALLY_REFUNDED;
	if (txn_state_of(cur) == TXN_REFUNDED)
		*to = TXN_REFUNDED; /* a webhook said all */
	fgw_strlcpy(op->new_status, txn_state_name(*to), sizeof(op->new_status));
	return FGW_OK;
}

static int
finish_run(struct db *db, void *ctx)
{
	static const char ref_sql[] =
	    "UPDATE refunds SET processor_ref = ?2 WHERE id = ?1 AND processor_ref IS NULL";
	struct op_job *j = ctx;
	struct store_pendingop *op = &j->op;
	const struct kind_sql *k = &kinds[op->kind];
	enum store_op_status target = j->succeeded ? STORE_OP_SUCCEEDED : STORE_OP_FAILED;
	enum txn_state to;
	struct db_stmt *s = NULL;
	char now_st[16], cur[24];
	int64_t now = fgw_now_ms(), attempt;
	int rc, r;

	if ((r = lock_txn_status(db, op->txn_id, cur, sizeof(cur))) != 0 ||
	    (r = db_prepare(db, k->status, &s)) != 0)
		goto out;
	db_bind_text(s, 1, key1(op));
	db_bind_text(s, 2, key2(op));
	db_bind_text(s, 3, op->idempotency_key);
	if ((rc = db_step(s)) != DB_ROW) {
		r = rc == DB_DONE ? FGW_ERR_NOT_FOUND : FGW_ERR_DB;
		goto out;
	}
	db_col_copy(s, 0, now_st, sizeof(now_st));
	attempt = db_col_int64(s, 1);
	db_release(s);
	s = NULL;
	if (op->kind == STORE_OP_REFUND && op->processor_ref[0] != '\0') {
		if ((r = db_prepare(db, ref_sql, &s)) != 0)
			goto out;
		db_bind_text(s, 1, op->id);
		db_bind_text(s, 2, op->processor_ref);
		r = db_step(s) == DB_DONE ? FGW_OK : FGW_ERR_DB;
		db_release(s);
		s = NULL;
		if (r != FGW_OK)
			goto out;
	}
	if (op_status_of(now_st) != STORE_OP_PENDING) {
		/* Finished already (a retry and the reconciler raced). A
		 * refund's transaction state is decided again from the sum: a
		 * concurrent partial refund may have finished since. */
		r = op_status_of(now_st) == target ? FGW_OK : FGW_ERR_STATE;
		if (r == FGW_OK && j->succeeded && op->kind == STORE_OP_REFUND)
			goto move;
		goto out;
	}
	if ((r = db_prepare(db, k->set, &s)) != 0)
		goto out;
	db_bind_text(s, 1, key1(op));
	db_bind_text(s, 2, key2(op));
	db_bind_text(s, 3, j->succeeded ? "succeeded" : "failed");
	db_bind_int64(s, 4, now);
	db_bind_int64(s, 5, attempt);
	r = db_step(s) == DB_DONE && db_changes(db) == 1 ? FGW_OK : FGW_ERR_DB;
	db_release(s);
	s = NULL;
	if (r != FGW_OK || !j->succeeded)
		goto out;
move:
	if ((r = txn_target(db, op, &to)) == 0)
		r = move_txn(db, op->txn_id, to, now);
out:
	db_release(s);
	return r;
}

int
store_pendingop_finish(struct store *st, struct store_waker *w,
                       const struct store_pendingop *op, int succeeded,
                       struct store_pendingop *out, const struct store_commit *c)
{
	struct op_job t = { .out = out, .succeeded = succeeded };

	if (op == NULL || (succeeded && op->kind == STORE_OP_REFUND && op->txn_amount <= 0))
		return FGW_ERR_INVALID;
	t.op = *op;
	return submit(st, w, finish_run, &t, c);
}

int
store_pendingop_finish_answered(struct store *st, struct store_waker *w,
                                const struct store_pendingop *op,
                                struct store_pendingop *out,
                                store_pendingop_answer_fn answer, void *answer_arg,
                                const struct store_commit *c)
{
	struct op_job t = {
		.out = out, .succeeded = 1, .answer = answer, .answer_arg = answer_arg
	};

	if (op == NULL || (op->kind == STORE_OP_REFUND && op->txn_amount <= 0) ||
	    answer == NULL || c == NULL || c->idem == NULL)
		return FGW_ERR_INVALID;
	t.op = *op;
	return submit(st, w, finish_run, &t, c);
}

/* ---- the reconciler's side ------------------------------------------------- */

static void
due_row(struct db_stmt *s, void *out, int i)
{
	struct store_pendingop_due *d = (struct store_pendingop_due *)out + i;
	db_col_copy(s, 0, d->id, sizeof(d->id));
	db_col_copy(s, 1, d->txn_id, sizeof(d->txn_id));
	d->amount = db_col_int64(s, 2);
	db_col_copy(s, 3, d->idempotency_key, sizeof(d->idempotency_key));
	d->attempts = db_col_int(s, 4);
	d->created_at = db_col_int64(s, 5);
}

int
store_pendingop_due_list(struct store_reader *rd, enum store_op_kind kind, int64_t now,
                         int64_t before, struct store_pendingop_due *out, int max, int *n)
{
	int r;

	if (!kind_ok(kind) || out == NULL || n == NULL)
		return FGW_ERR_INVALID;
	if ((r = store_due_rows(rd, kinds[kind].due, now, before, max, due_row, out, n)) != 0)
		return r;
	for (int i = 0; i < *n; i++)
		out[i].kind = kind;
	return FGW_OK;
}

int
store_pendingop_claim_run(struct db *db, const struct claim_args *a, void *rows, int *n)
{
	struct store_pendingop_due *out = rows;
	const struct kind_sql *k;
	int r;

	*n = 0;
	if (!kind_ok((enum store_op_kind)a->kind))
		return FGW_ERR_INVALID;
	k = &kinds[a->kind];
	if ((r = claim_rows(db, claim_sql(db, k->claim_lite, k->claim_pg), a, due_row, rows,
	                    n)) != 0)
		return r;
	for (int i = 0; i < *n; i++)
		out[i].kind = (enum store_op_kind)a->kind;
	return FGW_OK;
}

int
store_pendingop_claim(struct store *st, struct store_waker *w, enum store_op_kind kind,
                      int64_t now, int64_t before, int64_t lease_until,
                      struct store_pendingop_due *out, int max, int *n,
                      store_done_fn done, void *arg)
{
	const struct claim_args a = { .now = now,
		                          .before = before,
		                          .lease_until = lease_until,
		                          .max = max,
		                          .kind = (int)kind };

	if (!kind_ok(kind) || lease_until <= now)
		return FGW_ERR_INVALID;
	return claim_submit(st, w, store_pendingop_claim_run, &a, sizeof(*out), NULL, out, n,
	                    done, arg);
}

static int
defer_run(struct db *db, void *ctx)
{
	const struct op_job *j = ctx;
	return store_defer_row(db, kinds[j->op.kind].defer, key1(&j->op), key2(&j->op),
	                       j->attempts, j->next_at, j->succeeded);
}

int
store_pendingop_defer(struct store *st, struct store_waker *w,
                      const struct store_pendingop *op, int attempts, int64_t next_at,
                      int give_up, const struct store_commit *c)
{
	struct op_job t = { .succeeded = give_up ? 1 : 0,
		                .attempts = attempts,
		                .next_at = next_at };

	if (op == NULL || attempts < 0)
		return FGW_ERR_INVALID;
	t.op = *op;
	return submit(st, w, defer_run, &t, c);
}

int
store_pendingop_refunded(struct store_reader *rd, const char *txn_id, int64_t *sum)
{
	if (rd == NULL || txn_id == NULL)
		return FGW_ERR_INVALID;
	return db_int64_of(store_reader_db(rd), succeeded_sum_sql, txn_id, sum);
}
