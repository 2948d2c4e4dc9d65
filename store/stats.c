/*
 * store/stats.c — backlog counts for /metrics. Each query is written so
 * that SQLite answers it from a (partial) index: transactions_unresolved,
 * transactions_status_updated, refunds_pending, txn_operations_pending and
 * webhook_outbox_due.
 */
#include <stddef.h>


#include "core/err.h"
#include "store/db.h"
#include "store/sqlutil.h"
#include "store/stats.h"
#include "store/store_int.h"

static const char *const backlog_sql[] = {
	"SELECT count(*) FROM transactions"
	" WHERE status IN ('posting', 'processing') AND manual_review = 0",
	"SELECT count(*) FROM transactions"
	" WHERE status IN ('posting', 'processing') AND manual_review = 1",
	"SELECT (SELECT count(*) FROM refunds WHERE status = 'pending' AND manual_review = 0)"
	" + (SELECT count(*) FROM txn_operations WHERE status = 'pending' AND manual_review = 0)",
	"SELECT count(*) FROM webhook_outbox WHERE status = 'pending'",
};

int
store_backlogs(struct store_reader *r, struct store_backlogs *out)
{
	int64_t *v[] = { &out->unresolved_txns, &out->manual_review, &out->pending_ops,
		             &out->webhooks_pending };
	struct db *db = store_reader_db(r);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct db_stmt *s = NULL;
		int rc;
		*v[i] = 0;
		if (db_prepare(db, backlog_sql[i], &s) != 0)
			return FGW_ERR_DB;
		rc = db_step(s);
		if (rc == DB_ROW)
			*v[i] = db_col_int64(s, 0);
		db_release(s);
		if (rc != DB_ROW)
			return FGW_ERR_DB;
	}
	return FGW_OK;
}
