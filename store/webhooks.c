/*
 * store/webhooks.c — SQL for the webhook tables (schema v2): inbound event
 * deduplication, the outbound outbox and its attempts.
 *
 * Writes run as custom store jobs on the writer thread; every job copies
 * what it needs at submission, so callers' buffers may go right away.
 * Reads step a cached statement (db_prepare / db_release) on the
 * caller's reader connection.
 */
#define LOG_MODULE "store"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"
#include "store/outbox.h"
#include "store/sqlutil.h"
#include "store/store_int.h"
#include "store/webhooks.h"

/* ---- inbound ----------------------------------------------------------- */

int
store_webhook_seen(struct store_reader *r, const char *processor, const char *event_id,
                   char result[24])
{
	struct db_stmt *s = NULL;
	int rc;
	if ((rc = db_prepare(
	         store_reader_db(r),
	         "SELECT result FROM webhook_inbound WHERE processor = ? AND event_id = ?",
	         &s)) != 0)
		goto out;
	if (db_bind_text_or_null(s, 1, processor) != 0 ||
	    db_bind_text_or_null(s, 2, event_id) != 0) {
		rc = FGW_ERR_DB;
		goto out;
	}
	if ((rc = db_step_row(s)) == 0)
		db_col_copy(s, 0, result, 24);
out:
	db_release(s);
	return rc;
}

int
store_txn_id_by_ref(struct store_reader *r, const char *ref, char *id, size_t idlen)
{
	struct db_stmt *s = NULL;
	int rc;
	if (ref == NULL || ref[0] == '\0')
		return FGW_ERR_NOT_FOUND;
	if ((rc = db_prepare(store_reader_db(r),
	                     "SELECT id FROM transactions WHERE processor_ref = ?"
	                     " ORDER BY created_at DESC LIMIT 1",
	                     &s)) != 0)
		goto out;
	if (db_bind_text_or_null(s, 1, ref) != 0) {
		rc = FGW_ERR_DB;
		goto out;
	}
	if ((rc = db_step_row(s)) == 0)
		db_col_copy(s, 0, id, idlen);
out:
	db_release(s);
	return rc;
}

struct inbound_job {
	char processor[32];
	char event_id[128];
	char event_type[64];
	char txn_id[40];
	char result[24];
};

static int
run_inbound(struct db *db, void *arg)
{
	struct inbound_job *j = arg;
	struct db_stmt *s = NULL;
	int rc;
	/* A concurrent duplicate (the same event at two reactors or two
	 * instances) is asked about, not caught: on PostgreSQL a failed
	 * statement spoils the batch's transaction until its savepoint. */
	if ((rc = db_prepare(db,
	                     "INSERT INTO webhook_inbound (processor, event_id, event_type,"
	                     " txn_id, result, received_at) VALUES (?, ?, ?, ?, ?, ?)"
	                     " ON CONFLICT (processor, event_id) DO NOTHING",
	                     &s)) != 0)
		goto out;
	if (db_bind_text_or_null(s, 1, j->processor) ||
	    db_bind_text_or_null(s, 2, j->event_id) ||
	    db_bind_text_or_null(s, 3, j->event_type) ||
	    db_bind_text_or_null(s, 4, j->txn_id) || db_bind_text_or_null(s, 5, j->result) ||
	    db_bind_int64(s, 6, fgw_now_ms()) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	rc = db_step(s);
	if (rc == DB_DONE)
		rc = db_changes(db) == 1 ? 0 : FGW_ERR_EXISTS;
	else
		rc = FGW_ERR_DB;
out:
	db_release(s);
	return rc;
}

int
store_webhook_record(struct store *st, struct store_waker *w, const char *processor,
                     const char *event_id, const char *event_type, const char *txn_id,
                     const char *result, const struct store_audit *audit, size_t n_audit,
                     store_done_fn done, void *arg)
{
	struct inbound_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return FGW_ERR_NOMEM;
	if (processor == NULL || event_id == NULL || event_type == NULL || result == NULL ||
	    fgw_strlcpy(j->processor, processor, sizeof(j->processor)) != 0 ||
	    fgw_strlcpy(j->event_id, event_id, sizeof(j->event_id)) != 0 ||
	    fgw_strlcpy(j->event_type, event_type, sizeof(j->event_type)) != 0 ||
	    fgw_strlcpy(j->txn_id, txn_id ? txn_id : "", sizeof(j->txn_id)) != 0 ||
	    fgw_strlcpy(j->result, result, sizeof(j->result)) != 0) {
		free(j);
		return FGW_ERR_INVALID;
	}
	return store_submit_custom(st, w, run_inbound, j, free,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = n_audit,
	                                                   .done = done,
	                                                   .arg = arg });
}

/* ---- outbox ------------------------------------------------------------ */

void
store_outbox_row_clear(struct store_outbox_row *row)
{
	if (row == NULL)
		return;
	free(row->payload);
	row->payload = NULL;
}

struct enqueue_job {
	struct store_outbox_row *rows;
	size_t n;
};

static void
free_enqueue(void *arg)
{
	struct enqueue_job *j = arg;
	if (j == NULL)
		return;
	for (size_t i = 0; i < j->n; i++)
		store_outbox_row_clear(&j->rows[i]);
	free(j->rows);
	free(j);
}

static int
run_enqueue(struct db *db, void *arg)
{
	struct enqueue_job *j = arg;
	struct db_stmt *s = NULL;
	int64_t now = fgw_now_ms();
	int rc;
	if ((rc = db_prepare(
	         db,
	         "INSERT INTO webhook_outbox (id, endpoint_url, event_id, event_type,"
	         " txn_id, payload, status, attempts, next_attempt_at, created_at,"
	         " updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
	         &s)) != 0)
		goto out;
	for (size_t i = 0; i < j->n; i++) {
		const struct store_outbox_row *o = &j->rows[i];
		db_reset(s);
		if (db_bind_text_or_null(s, 1, o->id) ||
		    db_bind_text_or_null(s, 2, o->endpoint_url) ||
		    db_bind_text_or_null(s, 3, o->event_id) ||
		    db_bind_text_or_null(s, 4, o->event_type) ||
		    db_bind_text_or_null(s, 5, o->txn_id) ||
		    db_bind_text_or_null(s, 6, o->payload) ||
		    db_bind_int64(s, 7, o->next_attempt_at ? o->next_attempt_at : now) !=
		        FGW_OK ||
		    db_bind_int64(s, 8, now) != FGW_OK || db_bind_int64(s, 9, now) != FGW_OK ||
		    db_step(s) != DB_DONE) {
			log_error("webhooks: outbox insert: %s", db_errmsg(db));
			rc = FGW_ERR_DB;
			goto out;
		}
	}
	rc = 0;
out:
	db_release(s);
	return rc;
}

int
store_outbox_enqueue(struct store *st, struct store_waker *w,
                     const struct store_outbox_row *rows, size_t n,
                     const struct store_audit *audit, size_t n_audit, store_done_fn done,
                     void *arg)
{
	struct enqueue_job *j = NULL;
	if (rows == NULL || n == 0)
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL ||
	    (j->rows = calloc(n, sizeof(*rows))) == NULL) {
		free(j);
		return FGW_ERR_NOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		j->rows[i] = rows[i];
		j->rows[i].payload = NULL;
		j->n = i + 1;
		if (rows[i].payload == NULL ||
		    (j->rows[i].payload = strdup(rows[i].payload)) == NULL) {
			free_enqueue(j);
			return rows[i].payload == NULL ? FGW_ERR_INVALID : FGW_ERR_NOMEM;
		}
	}
	return store_submit_custom(st, w, run_enqueue, j, free_enqueue,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = n_audit,
	                                                   .done = done,
	                                                   .arg = arg });
}

/* clang-format off */
#define OUTBOX_COLUMNS(F, N)                                                   \
	F(SQL_TEXT, id) N(SQL_TEXT, endpoint_url) N(SQL_TEXT, event_id)            \
	N(SQL_TEXT, event_type) N(SQL_TEXT, txn_id) N(SQL_TEXT, status)            \
	N(SQL_INT, attempts) N(SQL_I64, next_attempt_at)                           \
	N(SQL_INT, last_http_status) N(SQL_TEXT, last_error)                       \
	N(SQL_I64, created_at) N(SQL_I64, updated_at)
/* clang-format on */
#define OUTBOX_COLS SQL_COL_NAMES(OUTBOX_COLUMNS)

#define SQL_COL_ROW struct store_outbox_row
static const struct sql_col outbox_cols[] = { SQL_COL_TABLE(OUTBOX_COLUMNS) };
#undef SQL_COL_ROW

static void
clear_row(void *row)
{
	store_outbox_row_clear(row);
}

static const struct outbox_kind webhook_kind = {
	.name = "webhooks",
	.done = "delivered",
	OUTBOX_ROW(struct store_outbox_row, outbox_cols, payload),
	.claim_run = store_outbox_claim_run,
	.clear_row = clear_row,
	.has_code = 1,
	OUTBOX_SQL("webhook_outbox", OUTBOX_COLS, "payload", ", last_http_status = ?7"),
};

/* The outbox row moves as outbox_mark does; webhooks also keep every
 * attempt in webhook_attempts. */
static int
run_attempt(struct db *db, void *arg)
{
	struct store_outbox_attempt *a = arg;
	struct db_stmt *s = NULL;
	int attempt = 0, rc;

	if ((rc = outbox_claim(db, &webhook_kind, a->outbox_id, a->lease_until, &attempt)) !=
	    0)
		goto out;
	if ((rc = db_prepare(
	         db,
	         "INSERT INTO webhook_attempts (outbox_id, attempt, at, http_status,"
	         " error, elapsed_ms, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
	         &s)) != 0)
		goto out;
	if (db_bind_text_or_null(s, 1, a->outbox_id) ||
	    db_bind_int(s, 2, attempt) != FGW_OK || db_bind_int64(s, 3, a->at) != FGW_OK ||
	    (a->http_status ? db_bind_int(s, 4, a->http_status) : db_bind_null(s, 4)) !=
	        FGW_OK ||
	    db_bind_text_or_null(s, 5, a->error) ||
	    db_bind_int64(s, 6, a->elapsed_ms) != FGW_OK ||
	    db_bind_text_or_null(s, 7, a->outcome) || db_step(s) != DB_DONE) {
		rc = FGW_ERR_DB;
		goto out;
	}
	rc = outbox_mark(db, &webhook_kind, a->outbox_id, attempt, a->outcome,
	                 a->next_attempt_at, a->http_status, a->error);
out:
	db_release(s);
	return rc;
}

int
store_outbox_attempt(struct store *st, struct store_waker *w,
                     const struct store_outbox_attempt *a,
                     const struct store_audit *audit, size_t n_audit, store_done_fn done,
                     void *arg)
{
	struct store_outbox_attempt *j;
	if (a == NULL || a->outbox_id[0] == '\0' ||
	    !outbox_outcome_ok(&webhook_kind, a->outcome))
		return FGW_ERR_INVALID;
	if ((j = malloc(sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	*j = *a;
	return store_submit_custom(st, w, run_attempt, j, free,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = n_audit,
	                                                   .done = done,
	                                                   .arg = arg });
}

int
store_outbox_retry(struct store *st, struct store_waker *w, const char *outbox_id,
                   int64_t now_ms, const struct store_audit *audit, size_t n_audit,
                   store_done_fn done, void *arg)
{
	return outbox_retry(st, w, &webhook_kind, outbox_id, now_ms, audit, n_audit, done,
	                    arg);
}

int
store_outbox_due(struct store_reader *r, int64_t now_ms, struct store_outbox_row *out,
                 int max, int *n)
{
	return outbox_due(r, &webhook_kind, now_ms, out, max, n);
}

int
store_outbox_claim_run(struct db *db, const struct claim_args *a, void *rows, int *n)
{
	return outbox_claim_due(db, &webhook_kind, a, rows, n);
}

int
store_outbox_claim(struct store *st, struct store_waker *w, int64_t now_ms,
                   int64_t lease_until, struct store_outbox_row *out, int max, int *n,
                   store_done_fn done, void *arg)
{
	return outbox_claim_submit(st, w, &webhook_kind, now_ms, lease_until, out, max, n,
	                           done, arg);
}

struct list_ctx {
	void (*fn)(void *arg, const struct store_outbox_row *row);
	void (*attempt_fn)(void *arg, int attempt, int64_t at, int http_status,
	                   const char *error, long elapsed_ms, const char *outcome);
	void *arg;
	struct db_stmt *a; /* the attempts of one row */
};

static int
list_one(void *arg, const void *r)
{
	struct list_ctx *c = arg;
	const struct store_outbox_row *row = r;
	c->fn(c->arg, row);
	if (c->attempt_fn == NULL)
		return 0;
	db_reset(c->a);
	if (db_bind_text_or_null(c->a, 1, row->id) != 0)
		return FGW_ERR_DB;
	while (db_step(c->a) == DB_ROW) {
		const char *err = db_col_text(c->a, 3);
		const char *oc = db_col_text(c->a, 5);
		c->attempt_fn(c->arg, db_col_int(c->a, 0), db_col_int64(c->a, 1),
		              db_col_int(c->a, 2), err ? (const char *)err : "",
		              (long)db_col_int64(c->a, 4), oc ? (const char *)oc : "");
	}
	return 0;
}

int
store_outbox_list(struct store_reader *r, int limit,
                  void (*fn)(void *arg, const struct store_outbox_row *row),
                  void (*attempt_fn)(void *arg, int attempt, int64_t at, int http_status,
                                     const char *error, long elapsed_ms,
                                     const char *outcome),
                  void *arg)
{
	struct list_ctx c = { fn, attempt_fn, arg, NULL };
	int rc;
	if ((rc = db_prepare(store_reader_db(r),
	                     "SELECT attempt, at, http_status, error,"
	                     " elapsed_ms, outcome FROM webhook_attempts WHERE outbox_id = ?"
	                     " ORDER BY seq",
	                     &c.a)) != 0)
		return rc;
	rc = outbox_list(r, &webhook_kind, limit, list_one, &c);
	db_release(c.a);
	return rc;
}
