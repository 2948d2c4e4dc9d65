/*
 * store/reconcile.c — queries and jobs of the reconciler
 * (store/reconcile.h). Table: transactions (reconcile_* columns and
 * manual_review, migration 4); refunds, captures and cancels are in
 * store/pendingops.c.
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "store/claim.h"
#include "store/db.h"
#include "store/reconcile.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

int
store_due_rows(struct store_reader *rd, const char *sql, int64_t now, int64_t before,
               int max, void (*row)(struct db_stmt *s, void *out, int i), void *out,
               int *n)
{
	struct db_stmt *s = NULL;
	int rc, r;

	*n = 0;
	if (rd == NULL || out == NULL || max <= 0)
		return FGW_ERR_INVALID;
	if ((r = db_prepare(store_reader_db(rd), sql, &s)) != 0)
		goto out;
	db_bind_int64(s, 1, now);
	db_bind_int64(s, 2, before);
	db_bind_int(s, 3, max);
	while ((rc = db_step(s)) == DB_ROW && *n < max)
		row(s, out, (*n)++);
	r = rc == DB_ROW || rc == DB_DONE ? FGW_OK : FGW_ERR_DB;
out:
	db_release(s);
	return r;
}

int
store_defer_row(struct db *db, const char *sql, const char *k1, const char *k2,
                int attempts, int64_t next_at, int give_up)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db, sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, k1);
	db_bind_text(s, 2, k2);
	db_bind_int(s, 3, attempts);
	db_bind_int64(s, 4, next_at);
	db_bind_int(s, 5, give_up ? 1 : 0);
	r = db_step(s) == DB_DONE ? FGW_OK : FGW_ERR_DB;
	if (r == FGW_OK && db_changes(db) != 1)
		r = FGW_ERR_STATE; /* finished meanwhile */
	db_release(s);
	return r;
}

static void
unresolved_row(struct db_stmt *s, void *out, int i)
{
	struct store_unresolved *u = (struct store_unresolved *)out + i;
	db_col_copy(s, 0, u->id, sizeof(u->id));
	db_col_copy(s, 1, u->status, sizeof(u->status));
	u->attempts = db_col_int(s, 2);
	u->created_at = db_col_int64(s, 3);
	u->manual_review = db_col_int(s, 4);
}

int
store_unresolved_list(struct store_reader *rd, int64_t now, int64_t posting_before,
                      struct store_unresolved *out, int max, int *n)
{
	static const char sql[] =
	    "SELECT id, status, reconcile_attempts, created_at, manual_review"
	    " FROM transactions WHERE status IN ('posting', 'processing')"
	    " AND reconcile_next_at <= ?1"
	    " AND (status = 'processing' OR updated_at < ?2)"
	    " ORDER BY reconcile_next_at, created_at LIMIT ?3";
	return store_due_rows(rd, sql, now, posting_before, max, unresolved_row, out, n);
}

int
store_awaiting_action_list(struct store_reader *rd, int64_t now,
                           struct store_unresolved *out, int max, int *n)
{
	/* ?2 (bound by store_due_rows) is not used: no grace period. */
	static const char sql[] =
	    "SELECT id, status, reconcile_attempts, created_at, manual_review"
	    " FROM transactions WHERE status = 'requires_action' AND reconcile_next_at <= ?1"
	    " ORDER BY reconcile_next_at LIMIT ?3";
	return store_due_rows(rd, sql, now, 0, max, unresolved_row, out, n);
}

/* The claims (store/claim.h): the same rows as the lists above, their
 * reconcile_next_at moved to the lease's end (?4). */
#define CLAIM_RET "id, status, reconcile_attempts, created_at, manual_review"
#define UNRESOLVED_CLAIM(DIALECT)                                                   \
	DIALECT("transactions", "id", "reconcile_next_at = ?4",                         \
	        "status IN ('posting', 'processing')",                                  \
	        "SELECT id FROM transactions WHERE status IN ('posting', 'processing')" \
	        " AND reconcile_next_at <= ?1"                                          \
	        " AND (status = 'processing' OR updated_at < ?2)"                       \
	        " ORDER BY reconcile_next_at, created_at LIMIT ?3",                     \
	        CLAIM_RET)
#define AWAITING_CLAIM(DIALECT)                                                 \
	DIALECT("transactions", "id", "reconcile_next_at = ?4",                     \
	        "status = 'requires_action'",                                       \
	        "SELECT id FROM transactions WHERE status = 'requires_action'"      \
	        " AND reconcile_next_at <= ?1 ORDER BY reconcile_next_at LIMIT ?3", \
	        CLAIM_RET)

int
store_unresolved_claim_run(struct db *db, const struct claim_args *a, void *rows, int *n)
{
	return claim_rows(db,
	                  claim_sql(db, UNRESOLVED_CLAIM(CLAIM_SQL_LITE),
	                            UNRESOLVED_CLAIM(CLAIM_SQL_PG)),
	                  a, unresolved_row, rows, n);
}

int
store_awaiting_action_claim_run(struct db *db, const struct claim_args *a, void *rows,
                                int *n)
{
	return claim_rows(db,
	                  claim_sql(db, AWAITING_CLAIM(CLAIM_SQL_LITE),
	                            AWAITING_CLAIM(CLAIM_SQL_PG)),
	                  a, unresolved_row, rows, n);
}

int
store_unresolved_claim(struct store *st, struct store_waker *w, int action, int64_t now,
                       int64_t posting_before, int64_t lease_until,
                       struct store_unresolved *out, int max, int *n, store_done_fn done,
                       void *arg)
{
	const struct claim_args a = {
		.now = now, .before = posting_before, .lease_until = lease_until, .max = max
	};

	if (lease_until <= now)
		return FGW_ERR_INVALID;
	return claim_submit(st, w,
	                    action ? store_awaiting_action_claim_run
	                           : store_unresolved_claim_run,
	                    &a, sizeof(*out), NULL, out, n, done, arg);
}

int
store_manual_review_get(struct store_reader *rd, const char *id, int *flag)
{
	static const char sql[] = "SELECT manual_review FROM transactions WHERE id = ?1";
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(store_reader_db(rd), sql, &s)) != 0)
		goto out;
	db_bind_text(s, 1, id);
	if ((r = db_step_row(s)) == 0)
		*flag = db_col_int(s, 0);
out:
	db_release(s);
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
defer_run(struct db *db, void *ctx)
{
	static const char sql[] =
	    "UPDATE transactions SET reconcile_attempts = ?2,"
	    " reconcile_next_at = ?3, manual_review = ?4"
	    " WHERE id = ?1 AND status IN ('posting', 'processing', 'requires_action')";
	const struct defer_job *j = ctx;
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db, sql, &s)) != 0)
		return r;
	db_bind_text(s, 1, j->id);
	db_bind_int(s, 2, j->attempts);
	db_bind_int64(s, 3, j->next_at);
	db_bind_int(s, 4, j->give_up ? 1 : 0);
	r = db_step(s) == DB_DONE ? FGW_OK : FGW_ERR_DB;
	if (r == FGW_OK && db_changes(db) != 1)
		r = FGW_ERR_STATE; /* resolved meanwhile (webhook, live answer) */
	db_release(s);
	return r;
}

int
store_reconcile_defer(struct store *st, struct store_waker *w, const char *id,
                      int attempts, int64_t next_at, int give_up,
                      const struct store_commit *c)
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
	return store_submit_custom(st, w, defer_run, j, free, c);
}
