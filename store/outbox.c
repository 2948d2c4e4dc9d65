/*
 * store/outbox.c — what the e-mail and webhook outboxes share: due rows,
 * the operator's list, one attempt's claim and record, the retry job.
 */
#define LOG_MODULE "store"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"
#include "store/outbox.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

int
outbox_outcome_ok(const struct outbox_kind *k, const char *outcome)
{
	return outcome != NULL &&
	       (strcmp(outcome, k->done) == 0 || strcmp(outcome, "retry") == 0 ||
	        strcmp(outcome, "failed") == 0);
}

static char **
row_payload(const struct outbox_kind *k, void *row)
{
	return (char **)(void *)((char *)row + k->payload_off);
}

void
outbox_row_clear(const struct outbox_kind *k, void *row)
{
	char **p;
	if (row == NULL)
		return;
	p = row_payload(k, row);
	free(*p);
	*p = NULL;
}

/* Fills row from the kind's columns; a text longer than its field is cut,
 * as the operator's list and the senders always took it. */
static int
read_row(const struct outbox_kind *k, struct db_stmt *s, void *row)
{
	memset(row, 0, k->row_size);
	return sql_read_cols(s, 0, k->cols, k->n_cols, row) == FGW_ERR_INTERNAL
	           ? FGW_ERR_INTERNAL
	           : 0;
}

/* A due row: the columns, then its payload, which comes last (counted on
 * a row: PostgreSQL knows the columns only once the statement ran). */
static int
read_due_row(const struct outbox_kind *k, struct db_stmt *s, void *row)
{
	const char *p = db_col_text(s, db_col_count(s) - 1);
	int rc;
	if ((rc = read_row(k, s, row)) != 0)
		return rc;
	if ((*row_payload(k, row) = strdup(p ? p : "")) == NULL)
		return FGW_ERR_NOMEM;
	return 0;
}

/* Steps s for up to max due rows into rows[], counted in *n; 0, or the
 * step's or the read's error with no row kept. */
static int
read_due_rows(const struct outbox_kind *k, struct db_stmt *s, char *rows, int max, int *n)
{
	int rc;
	*n = 0;
	while ((rc = db_step(s)) == DB_ROW && *n < max) {
		if ((rc = read_due_row(k, s, rows + (size_t)*n * k->row_size)) != 0)
			break;
		(*n)++;
	}
	if (rc == DB_ROW || rc == DB_DONE)
		return 0;
	for (int i = 0; i < *n; i++)
		outbox_row_clear(k, rows + (size_t)i * k->row_size);
	*n = 0;
	return rc;
}

int
outbox_due(struct store_reader *r, const struct outbox_kind *k, int64_t now_ms, void *out,
           int max, int *n)
{
	struct db_stmt *s = NULL;
	int rc;
	*n = 0;
	if ((rc = db_prepare(store_reader_db(r), k->sql_due, &s)) != 0)
		goto out;
	if (db_bind_int64(s, 1, now_ms) != FGW_OK || db_bind_int(s, 2, max) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	if ((rc = read_due_rows(k, s, out, max, n)) != 0 && rc != FGW_ERR_NOMEM)
		rc = FGW_ERR_DB;
out:
	db_release(s);
	return rc;
}

int
outbox_list(struct store_reader *r, const struct outbox_kind *k, int limit,
            int (*fn)(void *arg, const void *row), void *arg)
{
	struct db_stmt *s = NULL;
	void *row = NULL;
	int rc;
	if ((row = malloc(k->row_size)) == NULL)
		return FGW_ERR_NOMEM;
	if ((rc = db_prepare(store_reader_db(r), k->sql_list, &s)) != 0)
		goto out;
	if (db_bind_int(s, 1, limit) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	while ((rc = db_step(s)) == DB_ROW) {
		if ((rc = read_row(k, s, row)) != 0 || (rc = fn(arg, row)) != 0)
			goto out;
	}
	rc = rc == DB_DONE ? 0 : FGW_ERR_DB;
out:
	db_release(s);
	free(row);
	return rc;
}

int
outbox_claim_due(struct db *db, const struct outbox_kind *k, const struct claim_args *a,
                 void *out, int *n)
{
	struct db_stmt *s = NULL;
	int rc;

	*n = 0;
	if (a->max <= 0)
		return FGW_ERR_INVALID;
	if ((rc = db_prepare(db, claim_sql(db, k->sql_claim_due_lite, k->sql_claim_due_pg),
	                     &s)) != 0)
		goto out;
	if (db_bind_int64(s, 1, a->now) != FGW_OK ||
	    db_bind_int64(s, 2, a->before) != FGW_OK || db_bind_int(s, 3, a->max) != FGW_OK ||
	    db_bind_int64(s, 4, a->lease_until) != FGW_OK ||
	    db_bind_text_or_null(s, 5, a->owner) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	if ((rc = read_due_rows(k, s, out, a->max, n)) != 0 && rc != FGW_ERR_NOMEM)
		log_error("%s: claiming due rows: %s", k->name, db_errmsg(db));
out:
	db_release(s);
	return rc;
}

int
outbox_release_own(struct db *db, const char *owner, int64_t now_ms, int64_t *n)
{
	static const char *const sql[] = {
		"UPDATE webhook_outbox SET next_attempt_at = ?2, claimed_by = NULL"
		" WHERE status = 'pending' AND claimed_by = ?1",
		"UPDATE mail_outbox SET next_attempt_at = ?2, claimed_by = NULL"
		" WHERE status = 'pending' AND claimed_by = ?1",
	};
	struct db_stmt *s = NULL;
	int rc = 0;

	*n = 0;
	for (size_t i = 0; rc == 0 && i < sizeof(sql) / sizeof(sql[0]); i++) {
		if ((rc = db_prepare_once(db, sql[i], &s)) != 0)
			break;
		if (db_bind_text(s, 1, owner) != FGW_OK ||
		    db_bind_int64(s, 2, now_ms) != FGW_OK || db_step(s) != DB_DONE)
			rc = FGW_ERR_DB;
		else
			*n += db_changes(db);
		db_release(s);
		s = NULL;
	}
	if (rc != 0)
		log_error("releasing the outbox claims of an earlier run: %s", db_errmsg(db));
	return rc;
}

int
outbox_claim_submit(struct store *st, struct store_waker *w, const struct outbox_kind *k,
                    int64_t now_ms, int64_t lease_until, void *out, int max, int *n,
                    store_done_fn done, void *arg)
{
	const struct claim_args a = {
		.now = now_ms, .lease_until = lease_until, .max = max, .owner = store_claimer(st)
	};

	if (lease_until <= now_ms)
		return FGW_ERR_INVALID;
	return claim_submit(st, w, k->claim_run, &a, k->row_size, k->clear_row, out, n, done,
	                    arg);
}

int
outbox_claim(struct db *db, const struct outbox_kind *k, const char *id,
             int64_t lease_until, int *attempt)
{
	struct db_stmt *s = NULL;
	int rc;
	if ((rc = db_prepare(db, k->sql_claim, &s)) != 0)
		goto out;
	if (db_bind_text_or_null(s, 1, id) != 0 ||
	    db_bind_int64(s, 2, lease_until) != FGW_OK) {
		rc = FGW_ERR_DB;
		goto out;
	}
	if ((rc = db_step(s)) != DB_ROW) {
		rc = rc == DB_DONE ? FGW_ERR_STATE : FGW_ERR_DB;
		goto out;
	}
	*attempt = db_col_int(s, 0) + 1;
	rc = 0;
out:
	db_release(s);
	return rc;
}

int
outbox_mark(struct db *db, const struct outbox_kind *k, const char *id, int attempt,
            const char *outcome, int64_t next_at, int code, const char *error)
{
	struct db_stmt *s = NULL;
	int rc;
	if ((rc = db_prepare(db, k->sql_mark, &s)) != 0)
		goto out;
	if (db_bind_int(s, 1, attempt) != FGW_OK ||
	    db_bind_text_or_null(s, 2, strcmp(outcome, "retry") == 0 ? "pending" : outcome) ||
	    db_bind_int64(s, 3, next_at) != FGW_OK || db_bind_text_or_null(s, 4, error) ||
	    db_bind_int64(s, 5, fgw_now_ms()) != FGW_OK || db_bind_text_or_null(s, 6, id) ||
	    (k->has_code &&
	     (code ? db_bind_int(s, 7, code) : db_bind_null(s, 7)) != FGW_OK) ||
	    db_step(s) != DB_DONE) {
		log_error("%s: outbox update: %s", k->name, db_errmsg(db));
		rc = FGW_ERR_DB;
		goto out;
	}
	rc = db_changes(db) == 1 ? 0 : FGW_ERR_STATE;
out:
	db_release(s);
	return rc;
}

struct retry_job {
	const struct outbox_kind *k;
	char id[40];
	int64_t now;
};

static int
run_retry(struct db *db, void *arg)
{
	struct retry_job *j = arg;
	struct db_stmt *s = NULL;
	int rc;
	if ((rc = db_prepare(db, j->k->sql_retry, &s)) != 0)
		goto out;
	if (db_bind_int64(s, 1, j->now) != FGW_OK || db_bind_int64(s, 2, j->now) != FGW_OK ||
	    db_bind_text_or_null(s, 3, j->id) || db_step(s) != DB_DONE) {
		rc = FGW_ERR_DB;
		goto out;
	}
	rc = db_changes(db) == 1 ? 0 : FGW_ERR_NOT_FOUND;
out:
	db_release(s);
	return rc;
}

int
outbox_retry(struct store *st, struct store_waker *w, const struct outbox_kind *k,
             const char *id, int64_t now_ms, const struct store_audit *audit,
             size_t n_audit, store_done_fn done, void *arg)
{
	struct retry_job *j;
	if (id == NULL || id[0] == '\0')
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	if (fgw_strlcpy(j->id, id, sizeof(j->id)) != 0) {
		free(j);
		return FGW_ERR_INVALID;
	}
	j->k = k;
	j->now = now_ms;
	return store_submit_custom(st, w, run_retry, j, free,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = n_audit,
	                                                   .done = done,
	                                                   .arg = arg });
}
