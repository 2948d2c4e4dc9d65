/*
 * store/claim.c — claiming due rows on the writer (store/claim.h).
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "store/claim.h"
#include "store/db.h"
#include "store/store_int.h"

const char *
claim_sql(struct db *db, const char *sql_lite, const char *sql_pg)
{
	return db_kind(db) == DB_PG ? sql_pg : sql_lite;
}

int
claim_rows(struct db *db, const char *sql, const struct claim_args *a,
           void (*row)(struct db_stmt *s, void *out, int i), void *out, int *n)
{
	struct db_stmt *s = NULL;
	int rc, r;

	*n = 0;
	if (out == NULL || a->max <= 0)
		return FGW_ERR_INVALID;
	if ((r = db_prepare(db, sql, &s)) != 0)
		goto out;
	if (db_bind_int64(s, 1, a->now) != FGW_OK ||
	    db_bind_int64(s, 2, a->before) != FGW_OK || db_bind_int(s, 3, a->max) != FGW_OK ||
	    db_bind_int64(s, 4, a->lease_until) != FGW_OK) {
		r = FGW_ERR_DB;
		goto out;
	}
	/* Every returned row is claimed (the UPDATE ran whole on the first
	 * step): all of them are read, the LIMIT keeps them within max. */
	while ((rc = db_step(s)) == DB_ROW && *n < a->max)
		row(s, out, (*n)++);
	r = rc == DB_ROW || rc == DB_DONE ? FGW_OK : rc;
out:
	db_release(s);
	return r;
}

struct claim_job {
	claim_fn fn;
	struct claim_args a;
	size_t row_size;
	void (*clear)(void *row);
	char *rows; /* the job's own until handed over */
	int n;
	void *out;
	int *n_out;
	store_done_fn done;
	void *arg;
};

static void
clear_rows(struct claim_job *j)
{
	if (j->clear != NULL)
		for (int i = 0; i < j->n; i++)
			j->clear(j->rows + (size_t)i * j->row_size);
	j->n = 0;
}

static int
claim_run(struct db *db, void *ctx)
{
	struct claim_job *j = ctx;
	int r;

	clear_rows(j);
	memset(j->rows, 0, (size_t)j->a.max * j->row_size);
	if ((r = j->fn(db, &j->a, j->rows, &j->n)) != 0)
		clear_rows(j); /* rolled back: nothing is claimed */
	return r;
}

static void
claim_done(void *arg, int rc)
{
	struct claim_job *j = arg;

	*j->n_out = 0;
	if (rc == 0) {
		memcpy(j->out, j->rows, (size_t)j->n * j->row_size);
		*j->n_out = j->n;
		j->n = 0; /* the caller's now */
	}
	if (j->done != NULL)
		j->done(j->arg, rc);
}

static void
claim_free(void *ctx)
{
	struct claim_job *j = ctx;

	if (j == NULL)
		return;
	clear_rows(j);
	free(j->rows);
	free(j);
}

int
claim_submit(struct store *st, struct store_waker *w, claim_fn fn,
             const struct claim_args *a, size_t row_size, void (*clear)(void *row),
             void *out, int *n, store_done_fn done, void *arg)
{
	struct claim_job *j;

	if (st == NULL || fn == NULL || a == NULL || a->max <= 0 || out == NULL || n == NULL)
		return FGW_ERR_INVALID;
	*n = 0;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	if ((j->rows = calloc((size_t)a->max, row_size)) == NULL) {
		free(j);
		return FGW_ERR_NOMEM;
	}
	j->fn = fn;
	j->a = *a;
	j->row_size = row_size;
	j->clear = clear;
	j->out = out;
	j->n_out = n;
	j->done = done;
	j->arg = arg;
	return store_submit_custom(st, w, claim_run, j, claim_free,
	                           &(struct store_commit){ .done = claim_done, .arg = j });
}
