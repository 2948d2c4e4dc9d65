/*
 * store/mail.c — SQL for the e-mail outbox (schema v13).
 *
 * Writes run as custom store jobs on the writer thread; every job copies
 * what it needs at submission. Reads step a cached statement on the
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
#include "store/mail.h"
#include "store/outbox.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

void
store_mail_row_clear(struct store_mail_row *row)
{
	if (row == NULL)
		return;
	free(row->message);
	row->message = NULL;
}

static void
free_row(void *arg)
{
	struct store_mail_row *row = arg;
	store_mail_row_clear(row);
	free(row);
}

static int
run_enqueue(struct db *db, void *arg)
{
	struct store_mail_row *o = arg;
	struct db_stmt *s = NULL;
	int64_t now = fgw_now_ms();
	int rc;
	if ((rc = db_prepare(
	         db,
	         "INSERT INTO mail_outbox (id, kind, audience, client_id, txn_id,"
	         " mail_from, rcpt_to, subject, message, status, attempts, next_attempt_at,"
	         " created_at, updated_at, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
	         " 'pending', 0, ?, ?, ?, ?) ON CONFLICT (dedupe_key)"
	         " WHERE dedupe_key IS NOT NULL DO NOTHING",
	         &s)) != 0)
		goto out;
	if (db_bind_text_or_null(s, 1, o->id) || db_bind_text_or_null(s, 2, o->kind) ||
	    db_bind_text_or_null(s, 3, o->audience) ||
	    db_bind_text_or_null(s, 4, o->client_id) ||
	    db_bind_text_or_null(s, 5, o->txn_id) ||
	    db_bind_text_or_null(s, 6, o->mail_from) ||
	    db_bind_text_or_null(s, 7, o->rcpt_to) ||
	    /* A template may render an empty subject: "" is a subject. */
	    db_bind_text(s, 8, o->subject) != FGW_OK ||
	    db_bind_text_or_null(s, 9, o->message) || db_bind_int64(s, 10, now) != FGW_OK ||
	    db_bind_int64(s, 11, now) != FGW_OK || db_bind_int64(s, 12, now) != FGW_OK ||
	    db_bind_text_or_null(s, 13, o->dedupe_key[0] ? o->dedupe_key : NULL) ||
	    db_step(s) != DB_DONE) {
		log_error("mail: outbox insert: %s", db_errmsg(db));
		rc = FGW_ERR_DB;
		goto out;
	}
	/* Queued before: the job (and its audit event) rolls back. */
	rc = db_changes(db) == 1 ? 0 : FGW_ERR_EXISTS;
out:
	db_release(s);
	return rc;
}

int
store_mail_enqueue(struct store *st, struct store_waker *w,
                   const struct store_mail_row *row, const struct store_audit *audit,
                   size_t n_audit, store_done_fn done, void *arg)
{
	struct store_mail_row *j;
	if (row == NULL || row->message == NULL || row->id[0] == '\0' ||
	    (strcmp(row->audience, "customer") != 0 && strcmp(row->audience, "admin") != 0))
		return FGW_ERR_INVALID;
	if ((j = malloc(sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	*j = *row;
	if ((j->message = strdup(row->message)) == NULL) {
		free(j);
		return FGW_ERR_NOMEM;
	}
	return store_submit_custom(st, w, run_enqueue, j, free_row,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = n_audit,
	                                                   .done = done,
	                                                   .arg = arg });
}

/* clang-format off */
#define MAIL_COLUMNS(F, N)                                                     \
	F(SQL_TEXT, id) N(SQL_TEXT, kind) N(SQL_TEXT, audience)                    \
	N(SQL_TEXT, client_id) N(SQL_TEXT, txn_id) N(SQL_TEXT, mail_from)          \
	N(SQL_TEXT, rcpt_to) N(SQL_TEXT, subject) N(SQL_TEXT, status)              \
	N(SQL_INT, attempts) N(SQL_I64, next_attempt_at) N(SQL_TEXT, last_error)   \
	N(SQL_I64, created_at) N(SQL_I64, updated_at)
/* clang-format on */
#define MAIL_COLS SQL_COL_NAMES(MAIL_COLUMNS)

#define SQL_COL_ROW struct store_mail_row
static const struct sql_col mail_cols[] = { SQL_COL_TABLE(MAIL_COLUMNS) };
#undef SQL_COL_ROW

static void
clear_row(void *row)
{
	store_mail_row_clear(row);
}

static const struct outbox_kind mail_kind = {
	.name = "mail",
	.done = "sent",
	OUTBOX_ROW(struct store_mail_row, mail_cols, message),
	.claim_run = store_mail_claim_run,
	.clear_row = clear_row,
	.has_code = 0,
	OUTBOX_SQL("mail_outbox", MAIL_COLS, "message", ""),
};

struct attempt_job {
	char id[40];
	char outcome[12];
	int64_t next_at;
	int64_t lease_until;
	char error[160];
};

static int
run_attempt(struct db *db, void *arg)
{
	struct attempt_job *j = arg;
	int attempt, rc;
	if ((rc = outbox_claim(db, &mail_kind, j->id, j->lease_until, &attempt)) != 0)
		return rc;
	return outbox_mark(db, &mail_kind, j->id, attempt, j->outcome, j->next_at, 0,
	                   j->error);
}

int
store_mail_attempt(struct store *st, struct store_waker *w, const char *id,
                   const char *outcome, int64_t next_at, const char *error,
                   const struct store_audit *audit, size_t n_audit, store_done_fn done,
                   void *arg)
{
	return store_mail_attempt_claimed(st, w, id, 0, outcome, next_at, error, audit,
	                                  n_audit, done, arg);
}

int
store_mail_attempt_claimed(struct store *st, struct store_waker *w, const char *id,
                           int64_t lease_until, const char *outcome, int64_t next_at,
                           const char *error, const struct store_audit *audit,
                           size_t n_audit, store_done_fn done, void *arg)
{
	struct attempt_job *j;
	if (id == NULL || !outbox_outcome_ok(&mail_kind, outcome))
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	if (fgw_strlcpy(j->id, id, sizeof(j->id)) != 0) {
		free(j);
		return FGW_ERR_INVALID;
	}
	fgw_strlcpy(j->outcome, outcome, sizeof(j->outcome));
	/* A long server answer is cut, not refused. */
	(void)fgw_strlcpy(j->error, error ? error : "", sizeof(j->error));
	j->next_at = next_at;
	j->lease_until = lease_until;
	return store_submit_custom(st, w, run_attempt, j, free,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = n_audit,
	                                                   .done = done,
	                                                   .arg = arg });
}

int
store_mail_retry(struct store *st, struct store_waker *w, const char *id, int64_t now_ms,
                 const struct store_audit *audit, size_t n_audit, store_done_fn done,
                 void *arg)
{
	return outbox_retry(st, w, &mail_kind, id, now_ms, audit, n_audit, done, arg);
}

int
store_mail_due(struct store_reader *r, int64_t now_ms, struct store_mail_row *out,
               int max, int *n)
{
	return outbox_due(r, &mail_kind, now_ms, out, max, n);
}

int
store_mail_claim_run(struct db *db, const struct claim_args *a, void *rows, int *n)
{
	return outbox_claim_due(db, &mail_kind, a, rows, n);
}

int
store_mail_claim(struct store *st, struct store_waker *w, int64_t now_ms,
                 int64_t lease_until, struct store_mail_row *out, int max, int *n,
                 store_done_fn done, void *arg)
{
	return outbox_claim_submit(st, w, &mail_kind, now_ms, lease_until, out, max, n, done,
	                           arg);
}

struct list_ctx {
	void (*fn)(void *arg, const struct store_mail_row *row);
	void *arg;
};

static int
list_one(void *arg, const void *row)
{
	struct list_ctx *c = arg;
	c->fn(c->arg, row);
	return 0;
}

int
store_mail_list(struct store_reader *r, int limit,
                void (*fn)(void *arg, const struct store_mail_row *row), void *arg)
{
	struct list_ctx c = { fn, arg };
	return outbox_list(r, &mail_kind, limit, list_one, &c);
}

int
store_mail_backlog(struct store_reader *r, int64_t *pending, int64_t *failed)
{
	struct db_stmt *s = NULL;
	int rc;
	*pending = *failed = 0;
	if ((rc = db_prepare(
	         store_reader_db(r),
	         "SELECT status, count(*) FROM mail_outbox WHERE audience = 'customer'"
	         " AND status IN ('pending', 'failed') GROUP BY status",
	         &s)) != 0)
		goto out;
	while ((rc = db_step(s)) == DB_ROW) {
		const char *st = db_col_text(s, 0);
		if (st != NULL && strcmp((const char *)st, "pending") == 0)
			*pending = db_col_int64(s, 1);
		else
			*failed = db_col_int64(s, 1);
	}
	rc = rc == DB_DONE ? 0 : FGW_ERR_DB;
out:
	db_release(s);
	return rc;
}

int
store_mail_holds_ended(struct store_reader *r, int64_t since_ms,
                       void (*fn)(void *arg, const char *id, const char *status,
                                  int64_t updated_at),
                       void *arg)
{
	struct db_stmt *s = NULL;
	char id[40], status[16];
	int rc;
	if ((rc = db_prepare(
	         store_reader_db(r),
	         "SELECT id, status, updated_at FROM reservations r"
	         " WHERE status IN ('expired', 'cancelled') AND updated_at >= ?"
	         " AND guest_email IS NOT NULL AND guest_email <> '' AND NOT EXISTS (SELECT 1 FROM mail_outbox m"
	         " WHERE m.dedupe_key = 'hold_' || r.status || ':' || r.id)"
	         " ORDER BY updated_at LIMIT 100",
	         &s)) != 0)
		goto out;
	if (db_bind_int64(s, 1, since_ms) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	while ((rc = db_step(s)) == DB_ROW) {
		db_col_copy(s, 0, id, sizeof(id));
		db_col_copy(s, 1, status, sizeof(status));
		fn(arg, id, status, db_col_int64(s, 2));
	}
	rc = rc == DB_DONE ? 0 : FGW_ERR_DB;
out:
	db_release(s);
	return rc;
}

int
store_mail_stuck_txns(struct store_reader *r, int64_t before_ms, int64_t *count,
                      char oldest[40])
{
	struct db_stmt *s = NULL;
	int rc;
	*count = 0;
	oldest[0] = '\0';
	if ((rc = db_prepare(
	         store_reader_db(r),
	         "SELECT count(*), (SELECT id FROM transactions WHERE status IN"
	         " ('posting', 'processing') AND created_at < ?1 ORDER BY created_at LIMIT 1)"
	         " FROM transactions WHERE status IN ('posting', 'processing')"
	         " AND created_at < ?1",
	         &s)) != 0)
		goto out;
	if (db_bind_int64(s, 1, before_ms) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	if ((rc = db_step(s)) != DB_ROW) {
		rc = FGW_ERR_DB;
		goto out;
	}
	*count = db_col_int64(s, 0);
	db_col_copy(s, 1, oldest, 40);
	rc = 0;
out:
	db_release(s);
	return rc;
}
