/*
 * store/txn_recent.c — one read-only scan of the transactions created
 * since a time, for rebuilding velocity counters at start-up. Uses the
 * caller's reader connection; the statement is prepared and finalized
 * here since it runs once per start.
 */
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "store/db.h"
#include "store/sqlutil.h"
#include "store/store_int.h"
#include "store/txn_recent.h"

/* What velocity counters need of a transaction (store/sqlutil.h). */
/* clang-format off */
#define RECENT_COLUMNS(F, N)                                                   \
	F(SQL_TEXT, id) N(SQL_I64, amount) N(SQL_TEXT, currency) N(SQL_TEXT, status) \
	N(SQL_TEXT, processor) N(SQL_TEXT, fingerprint) N(SQL_TEXT, brand)         \
	N(SQL_TEXT, bin) N(SQL_TEXT, customer_email) N(SQL_TEXT, customer_country) \
	N(SQL_TEXT, customer_ip) N(SQL_TEXT, rule_decision) N(SQL_I64, created_at)
/* clang-format on */

#define SQL_COL_ROW struct store_txn_row
static const struct sql_col recent_cols[] = { SQL_COL_TABLE(RECENT_COLUMNS) };
#undef SQL_COL_ROW

int
store_txn_recent(struct store_reader *r, int64_t since_ms, int64_t max_rows,
                 store_txn_recent_fn fn, void *ctx, int64_t *n)
{
	static const char sql[] = "SELECT " SQL_COL_NAMES(
	    RECENT_COLUMNS) " FROM transactions WHERE created_at >= ?1"
	                    " ORDER BY created_at, id";
	struct store_txn_row row;
	struct db_stmt *s = NULL;
	struct db *db;
	int64_t count = 0;
	int rc, step;

	if (n != NULL)
		*n = 0;
	if (r == NULL || fn == NULL || (db = store_reader_db(r)) == NULL)
		return FGW_ERR_INVALID;
	if (db_prepare_once(db, sql, &s) != FGW_OK ||
	    db_bind_int64(s, 1, since_ms) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	rc = FGW_OK;
	while ((step = db_step(s)) == DB_ROW) {
		if (max_rows > 0 && count >= max_rows)
			break;
		memset(&row, 0, sizeof(row));
		sql_read_cols(s, 0, recent_cols, sizeof(recent_cols) / sizeof(recent_cols[0]),
		              &row);
		count++;
		if ((rc = fn(ctx, &row)) != 0)
			goto out;
	}
	if (step != DB_ROW && step != DB_DONE)
		rc = FGW_ERR_DB;
out:
	db_release(s);
	if (n != NULL)
		*n = count;
	return rc;
}
