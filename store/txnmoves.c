/*
 * store/txnmoves.c — unannounced transaction states (store/txnmoves.h).
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "store/db.h"
#include "store/sqlutil.h"
#include "store/store_int.h"
#include "store/txnmoves.h"

struct done_job {
	char txn_id[40];
	char status[24];
	int take; /* no row deleted is a failure */
};

static int
done_run(struct db *db, void *ctx)
{
	struct done_job *j = ctx;
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db, "DELETE FROM txn_moves WHERE txn_id = ?1 AND status = ?2",
	                    &s)) != 0)
		return r;
	db_bind_text(s, 1, j->txn_id);
	db_bind_text(s, 2, j->status);
	/* On PostgreSQL a second DELETE of the row waits for the first one's
	 * COMMIT and then, READ COMMITTED re-checking its WHERE, finds
	 * nothing: one of two publishers of a move takes it. */
	if ((r = db_step(s)) != DB_DONE)
		r = r < 0 ? r : FGW_ERR_DB;
	else if (j->take && db_changes(db) == 0)
		r = FGW_ERR_NOT_FOUND;
	else
		r = FGW_OK;
	db_release(s);
	return r;
}

static int
submit(struct store *st, struct store_waker *w, const char *txn_id, const char *status,
       int take, store_done_fn done, void *arg)
{
	struct done_job *j;

	if (txn_id == NULL || status == NULL || txn_id[0] == '\0')
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	if (fgw_strlcpy(j->txn_id, txn_id, sizeof(j->txn_id)) != 0 ||
	    fgw_strlcpy(j->status, status, sizeof(j->status)) != 0) {
		free(j);
		return FGW_ERR_INVALID;
	}
	j->take = take;
	return store_submit_custom(st, w, done_run, j, free,
	                           &(struct store_commit){
	                               .done = done, .arg = arg, .guard = take });
}

int
store_txn_moves_done(struct store *st, struct store_waker *w, const char *txn_id,
                     const char *status, store_done_fn done, void *arg)
{
	return submit(st, w, txn_id, status, 0, done, arg);
}

int
store_txn_moves_take(struct store *st, struct store_waker *w, const char *txn_id,
                     const char *status, store_done_fn done, void *arg)
{
	return submit(st, w, txn_id, status, 1, done, arg);
}

int
store_txn_moves_due(struct store_reader *rd, int64_t before, struct store_txn_move *out,
                    int max, int *n)
{
	struct db *db = store_reader_db(rd);
	struct db_stmt *s = NULL;
	int rc, r;

	*n = 0;
	if ((r = db_prepare(db,
	                    "SELECT seq, txn_id, status, at FROM txn_moves WHERE at < ?1"
	                    " ORDER BY seq LIMIT ?2",
	                    &s)) != 0)
		return r;
	db_bind_int64(s, 1, before);
	db_bind_int(s, 2, max);
	while ((rc = db_step(s)) == DB_ROW) {
		struct store_txn_move *m = &out[*n];
		memset(m, 0, sizeof(*m));
		m->seq = db_col_int64(s, 0);
		db_col_copy(s, 1, m->txn_id, sizeof(m->txn_id));
		db_col_copy(s, 2, m->status, sizeof(m->status));
		m->at = db_col_int64(s, 3);
		(*n)++;
	}
	r = rc == DB_DONE ? FGW_OK : FGW_ERR_DB;
	db_release(s);
	return r;
}
