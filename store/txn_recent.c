/*
 * store/txn_recent.c — one read-only scan of the transactions created
 * since a time, for rebuilding velocity counters at start-up. Uses the
 * caller's reader connection; the statement is prepared and finalized
 * here since it runs once per start.
 */
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "store/sqlutil.h"
#include "store/store_int.h"
#include "store/txn_recent.h"

int
store_txn_recent(struct store_reader *r, int64_t since_ms, int64_t max_rows,
                 store_txn_recent_fn fn, void *ctx, int64_t *n)
{
	static const char sql[] =
	    "SELECT id, amount, currency, status, processor, fingerprint, brand, bin,"
	    " customer_email, customer_country, customer_ip, rule_decision, created_at"
	    " FROM transactions WHERE created_at >= ?1 ORDER BY created_at, id";
	struct store_txn_row row;
	sqlite3_stmt *s = NULL;
	sqlite3 *db;
	int64_t count = 0;
	int rc, step;

	if (n != NULL)
		*n = 0;
	if (r == NULL || fn == NULL || (db = store_reader_db(r)) == NULL)
		return FGW_ERR_INVALID;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 1, since_ms) != SQLITE_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	rc = FGW_OK;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if (max_rows > 0 && count >= max_rows)
			break;
		memset(&row, 0, sizeof(row));
		sql_col_text(s, 0, row.id, sizeof(row.id));
		row.amount = sqlite3_column_int64(s, 1);
		sql_col_text(s, 2, row.currency, sizeof(row.currency));
		sql_col_text(s, 3, row.status, sizeof(row.status));
		sql_col_text(s, 4, row.processor, sizeof(row.processor));
		sql_col_text(s, 5, row.fingerprint, sizeof(row.fingerprint));
		sql_col_text(s, 6, row.brand, sizeof(row.brand));
		sql_col_text(s, 7, row.bin, sizeof(row.bin));
		sql_col_text(s, 8, row.customer_email, sizeof(row.customer_email));
		sql_col_text(s, 9, row.customer_country, sizeof(row.customer_country));
		sql_col_text(s, 10, row.customer_ip, sizeof(row.customer_ip));
		sql_col_text(s, 11, row.rule_decision, sizeof(row.rule_decision));
		row.created_at = sqlite3_column_int64(s, 12);
		count++;
		if ((rc = fn(ctx, &row)) != 0)
			goto out;
	}
	if (step != SQLITE_ROW && step != SQLITE_DONE)
		rc = FGW_ERR_DB;
out:
	sqlite3_finalize(s);
	if (n != NULL)
		*n = count;
	return rc;
}
