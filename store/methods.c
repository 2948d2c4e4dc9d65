/*
 * store/methods.c — saved payment methods (payment_methods table) and the
 * vault maintenance queries: per-key counts, the one-time sweep, rewrap
 * batches.
 *
 * Reads run on the caller's reader connection; writes are custom jobs on
 * the writer thread. Statements come from the connection's cache
 * (db_prepare) and go back to it before returning (db_release).
 */
#define LOG_MODULE "store"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"
#include "store/methods.h"
#include "store/pg.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

static int
text_bind(struct db_stmt *s, int i, const char *p)
{
	return db_bind_text(s, i, p) == FGW_OK ? 0 : FGW_ERR_DB;
}

/* ---- reads ------------------------------------------------------------- */

/* Every saved method of both kinds: vaulted cards (display fields from
 * the vault entry) and cards a processor holds (processor_methods). */
#define ALL_METHODS                                                            \
	"(SELECT p.id, p.customer_id, p.token, p.nickname, p.is_default, "         \
	"p.created_at, v.brand, v.last4, v.exp_month, v.exp_year, "                \
	"NULL AS processor, NULL AS processor_customer, NULL AS processor_method " \
	"FROM payment_methods p JOIN vault_entries v ON v.token = p.token "        \
	"UNION ALL SELECT id, customer_id, NULL, nickname, is_default, "           \
	"created_at, brand, last4, exp_month, exp_year, processor, "               \
	"processor_customer, processor_method FROM processor_methods) "

/* The columns of struct store_method, once (store/sqlutil.h). */
/* clang-format off */
#define METHOD_COLUMNS(F, N)                                                  \
	F(SQL_TEXT, id) N(SQL_TEXT, customer_id) N(SQL_TEXT, token)              \
	N(SQL_TEXT, nickname) N(SQL_INT, is_default) N(SQL_I64, created_at)      \
	N(SQL_TEXT, brand) N(SQL_TEXT, last4) N(SQL_INT, exp_month)              \
	N(SQL_INT, exp_year) N(SQL_TEXT, processor)                              \
	N(SQL_TEXT, processor_customer) N(SQL_TEXT, processor_method)
/* clang-format on */

#define METHOD_SELECT "SELECT " SQL_COL_NAMES(METHOD_COLUMNS) " FROM " ALL_METHODS "m "

#define SQL_COL_ROW struct store_method
static const struct sql_col method_cols[] = { SQL_COL_TABLE(METHOD_COLUMNS) };
#undef SQL_COL_ROW

static int
read_method(struct db_stmt *s, struct store_method *m)
{
	memset(m, 0, sizeof(*m));
	return sql_read_cols(s, 0, method_cols, sizeof(method_cols) / sizeof(method_cols[0]),
	                     m);
}

int
store_methods_list(struct store_reader *rd, const char *customer,
                   struct store_method *out, size_t cap, size_t *n)
{
	struct db_stmt *s = NULL;
	int r, rc;

	*n = 0;
	if ((r = db_prepare(store_reader_db(rd),
	                    METHOD_SELECT
	                    "WHERE m.customer_id = ?1 "
	                    "ORDER BY m.is_default DESC, m.created_at DESC, m.id",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, customer)) != 0)
		goto out;
	while (*n < cap && (rc = db_step(s)) == DB_ROW) {
		if ((r = read_method(s, &out[*n])) != 0)
			goto out;
		(*n)++;
	}
	r = FGW_OK;
out:
	db_release(s);
	return r;
}

int
store_method_get(struct store_reader *rd, const char *customer, const char *id,
                 struct store_method *out)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(store_reader_db(rd),
	                    METHOD_SELECT "WHERE m.customer_id = ?1 AND m.id = ?2", &s)) !=
	        0 ||
	    (r = text_bind(s, 1, customer)) != 0 || (r = text_bind(s, 2, id)) != 0)
		goto out;
	if ((r = db_step_row(s)) == 0)
		r = read_method(s, out);
out:
	db_release(s);
	return r;
}

int
store_proc_customer_get(struct store_reader *rd, const char *processor,
                        const char *customer, char *out, size_t cap)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(store_reader_db(rd),
	                    "SELECT processor_customer FROM "
	                    "processor_customers WHERE processor = ?1 AND customer_id = ?2",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, processor)) != 0 || (r = text_bind(s, 2, customer)) != 0)
		goto out;
	if ((r = db_step_row(s)) == 0)
		r = db_col_copy(s, 0, out, cap);
out:
	db_release(s);
	return r;
}

int
store_vault_key_counts(struct store_reader *rd,
                       void (*fn)(void *arg, const char *key_id, int64_t count),
                       void *arg)
{
	struct db_stmt *s = NULL;
	int r, rc;

	if ((r = db_prepare(store_reader_db(rd),
	                    "SELECT key_id, COUNT(*) FROM vault_entries "
	                    "GROUP BY key_id ORDER BY key_id",
	                    &s)) != 0)
		goto out;
	while ((rc = db_step(s)) == DB_ROW)
		fn(arg, db_col_text(s, 0), db_col_int64(s, 1));
	r = rc == DB_DONE ? FGW_OK : FGW_ERR_DB;
out:
	db_release(s);
	return r;
}

void
store_rewrap_items_clear(struct store_rewrap_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(items[i].blob);
		free(items[i].new_blob);
		memset(&items[i], 0, sizeof(items[i]));
	}
}

int
store_vault_batch_other_keys(struct store_reader *rd, const char *active_key_id,
                             const char *after, struct store_rewrap_item *out, size_t cap,
                             size_t *n)
{
	struct db_stmt *s = NULL;
	int r, rc = DB_DONE;

	*n = 0;
	if ((r = db_prepare(store_reader_db(rd),
	                    "SELECT token, key_id, blob FROM vault_entries "
	                    "WHERE key_id <> ?1 AND token > ?3 ORDER BY token LIMIT ?2",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, active_key_id)) != 0 || (r = text_bind(s, 3, after)) != 0 ||
	    db_bind_int64(s, 2, (int64_t)cap) != FGW_OK)
		goto out;
	while (*n < cap && (rc = db_step(s)) == DB_ROW) {
		struct store_rewrap_item *it = &out[*n];
		const char *b = db_col_text(s, 2);
		memset(it, 0, sizeof(*it));
		if ((r = db_col_copy(s, 0, it->token, sizeof(it->token))) != 0 ||
		    (r = db_col_copy(s, 1, it->key_id, sizeof(it->key_id))) != 0)
			goto out;
		if (b == NULL || (it->blob = strdup((const char *)b)) == NULL) {
			r = b == NULL ? FGW_ERR_DB : FGW_ERR_NOMEM;
			goto out;
		}
		(*n)++;
	}
	r = (rc == DB_DONE || rc == DB_ROW) ? FGW_OK : FGW_ERR_DB;
out:
	if (r != 0) {
		store_rewrap_items_clear(out, *n);
		*n = 0;
	}
	db_release(s);
	return r;
}

/* ---- writes ------------------------------------------------------------ */

/* Runs one statement with the binds already made; FGW_OK when done. */
static int
step_done(struct db_stmt *s)
{
	int rc = db_step(s);
	if (rc == DB_DONE)
		return FGW_OK;
	if (rc == FGW_ERR_EXISTS || rc == FGW_ERR_INVALID)
		return FGW_ERR_EXISTS;
	return FGW_ERR_DB;
}

#define STR_(x) #x
#define STR(x) STR_(x)

/* Every write of a customer's methods first takes the customer's lock
 * (PostgreSQL: a transaction advisory lock, held to the batch's COMMIT):
 * the per-customer limit and the one default are decided from counts and
 * flags read before the write, which two instances would otherwise both
 * read before either writes. Each statement after the lock reads what the
 * other committed (READ COMMITTED). SQLite's one writer serializes the
 * jobs already. */
static int
lock_customer(struct db *db, const char *customer)
{
	struct db_stmt *s = NULL;
	int r;

	if (db_kind(db) != DB_PG)
		return FGW_OK;
	if ((r = db_prepare(
	         db, "SELECT pg_advisory_xact_lock(" STR(PG_LOCK_METHODS) ", hashtext(?1))",
	         &s)) != 0 ||
	    (r = text_bind(s, 1, customer)) != 0)
		goto out;
	r = db_step(s) == DB_ROW ? FGW_OK : FGW_ERR_DB;
out:
	db_release(s);
	return r;
}

struct save_job {
	struct store_method *m; /* caller's; filled */
	struct store_vault_entry ve;
	char *blob;
	int has_vault;
};

static void
save_job_free(void *p)
{
	struct save_job *j = p;
	if (j == NULL)
		return;
	free(j->blob);
	free(j);
}

/* The row of the customer's processor card m (processor, method) into m:
 * 0, FGW_ERR_NOT_FOUND or a database error. */
static int
find_processor_method(struct db *db, struct store_method *m)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db,
	                    METHOD_SELECT "WHERE m.customer_id = ?1 AND m.processor = ?2 "
	                                  "AND m.processor_method = ?3",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, m->customer_id)) != 0 ||
	    (r = text_bind(s, 2, m->processor)) != 0 ||
	    (r = text_bind(s, 3, m->processor_method)) != 0)
		goto out;
	if ((r = db_step_row(s)) == 0)
		r = read_method(s, m);
out:
	db_release(s);
	return r;
}

/* A processor's card: the row already there for the same card of the
 * customer (a retry) is the answer; otherwise a new row. */
static int
save_processor_method(struct db *db, struct store_method *m, int64_t have, int64_t now)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = find_processor_method(db, m)) != FGW_ERR_NOT_FOUND)
		goto out;
	if (have >= STORE_METHODS_MAX) {
		r = FGW_ERR_TOO_LARGE;
		goto out;
	}
	m->token[0] = '\0';
	m->is_default = have == 0;
	m->created_at = now;
	if ((r = db_prepare(
	         db,
	         "INSERT INTO processor_methods (id, customer_id, nickname, "
	         "is_default, created_at, processor, processor_customer, processor_method, "
	         "brand, last4, exp_month, exp_year) VALUES (?1, ?2, NULLIF(?3, ''), "
	         "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
	         "ON CONFLICT (customer_id, processor, processor_method) DO NOTHING",
	         &s)) != 0 ||
	    (r = text_bind(s, 1, m->id)) != 0 || (r = text_bind(s, 2, m->customer_id)) != 0 ||
	    (r = text_bind(s, 3, m->nickname)) != 0 ||
	    db_bind_int(s, 4, m->is_default) != FGW_OK ||
	    db_bind_int64(s, 5, now) != FGW_OK || (r = text_bind(s, 6, m->processor)) != 0 ||
	    (r = text_bind(s, 7, m->processor_customer)) != 0 ||
	    (r = text_bind(s, 8, m->processor_method)) != 0 ||
	    (r = text_bind(s, 9, m->brand)) != 0 || (r = text_bind(s, 10, m->last4)) != 0 ||
	    db_bind_int(s, 11, m->exp_month) != FGW_OK ||
	    db_bind_int(s, 12, m->exp_year) != FGW_OK) {
		r = r ? r : FGW_ERR_DB;
		goto out;
	}
	if ((r = step_done(s)) != 0 || db_changes(db) == 1)
		goto out;
	/* Another instance saved the same card since the look above: its
	 * row is the answer, as for a retry (a failed INSERT would end a
	 * PostgreSQL transaction, so the clash is asked, not caught). */
	r = find_processor_method(db, m);
	if (r == FGW_ERR_NOT_FOUND)
		r = FGW_ERR_DB;
out:
	db_release(s);
	return r;
}

static int
run_save(struct db *db, void *ctx)
{
	struct save_job *j = ctx;
	struct store_method *m = j->m;
	const struct store_vault_entry *v = &j->ve;
	struct db_stmt *s = NULL;
	int64_t now = fgw_now_ms(), have = 0;
	int r;

	if ((r = lock_customer(db, m->customer_id)) != 0)
		goto out;
	if ((r = db_int64_of(db,
	                     "SELECT (SELECT COUNT(*) FROM payment_methods WHERE "
	                     "customer_id = ?1) + (SELECT COUNT(*) FROM processor_methods "
	                     "WHERE customer_id = ?1)",
	                     m->customer_id, &have)) != 0)
		goto out;
	if (m->processor_method[0] != '\0') {
		r = save_processor_method(db, m, have, now);
		goto out;
	}
	if (have >= STORE_METHODS_MAX) {
		r = FGW_ERR_TOO_LARGE;
		goto out;
	}
	if (j->has_vault) {
		if ((r = db_prepare(
		         db,
		         "INSERT INTO vault_entries (token, key_id, blob, fingerprint, "
		         "brand, bin, last4, exp_month, exp_year, customer_id, saved, "
		         "created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
		         "?9, ?10, 1, ?11, 0)",
		         &s)) != 0 ||
		    (r = text_bind(s, 1, v->token)) != 0 ||
		    (r = text_bind(s, 2, v->key_id)) != 0 ||
		    (r = text_bind(s, 3, j->blob)) != 0 ||
		    (r = text_bind(s, 4, v->fingerprint)) != 0 ||
		    (r = text_bind(s, 5, v->brand)) != 0 || (r = text_bind(s, 6, v->bin)) != 0 ||
		    (r = text_bind(s, 7, v->last4)) != 0 ||
		    db_bind_int(s, 8, v->exp_month) != FGW_OK ||
		    db_bind_int(s, 9, v->exp_year) != FGW_OK ||
		    (r = text_bind(s, 10, m->customer_id)) != 0 ||
		    db_bind_int64(s, 11, now) != FGW_OK) {
			r = r ? r : FGW_ERR_DB;
			goto out;
		}
		if ((r = step_done(s)) != 0)
			goto out;
	} else {
		/* Only this customer's own entry, and a one-time one only
		 * while it has not expired. */
		if ((r = db_prepare(db,
		                    "UPDATE vault_entries SET saved = 1, expires_at = 0 "
		                    "WHERE token = ?1 AND customer_id = ?2 "
		                    "AND (saved = 1 OR expires_at = 0 OR expires_at > ?3)",
		                    &s)) != 0 ||
		    (r = text_bind(s, 1, m->token)) != 0 ||
		    (r = text_bind(s, 2, m->customer_id)) != 0 ||
		    db_bind_int64(s, 3, now) != FGW_OK) {
			r = r ? r : FGW_ERR_DB;
			goto out;
		}
		if ((r = step_done(s)) != 0)
			goto out;
		if (db_changes(db) == 0) {
			r = FGW_ERR_NOT_FOUND;
			goto out;
		}
		db_release(s);
		s = NULL;
		if ((r = db_prepare(db, "SELECT 1 FROM payment_methods WHERE token = ?1", &s)) !=
		        0 ||
		    (r = text_bind(s, 1, m->token)) != 0)
			goto out;
		if (db_step(s) == DB_ROW) {
			r = FGW_ERR_EXISTS;
			goto out;
		}
	}
	db_release(s);
	s = NULL;
	m->is_default = have == 0;
	m->created_at = now;
	if ((r = db_prepare(
	         db,
	         "INSERT INTO payment_methods (id, customer_id, token, nickname, "
	         "is_default, created_at) VALUES (?1, ?2, ?3, NULLIF(?4, ''), ?5, ?6) "
	         "ON CONFLICT (token) DO NOTHING",
	         &s)) != 0 ||
	    (r = text_bind(s, 1, m->id)) != 0 || (r = text_bind(s, 2, m->customer_id)) != 0 ||
	    (r = text_bind(s, 3, m->token)) != 0 || (r = text_bind(s, 4, m->nickname)) != 0 ||
	    db_bind_int(s, 5, m->is_default) != FGW_OK ||
	    db_bind_int64(s, 6, now) != FGW_OK) {
		r = r ? r : FGW_ERR_DB;
		goto out;
	}
	if ((r = step_done(s)) != 0)
		goto out;
	if (db_changes(db) != 1) {
		r = FGW_ERR_EXISTS; /* saved since the look above (another instance) */
		goto out;
	}
	db_release(s);
	s = NULL;
	if ((r = db_prepare(db,
	                    "SELECT brand, last4, exp_month, exp_year FROM vault_entries "
	                    "WHERE token = ?1",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, m->token)) != 0)
		goto out;
	if (db_step(s) != DB_ROW) {
		r = FGW_ERR_DB;
		goto out;
	}
	if ((r = db_col_copy(s, 0, m->brand, sizeof(m->brand))) != 0 ||
	    (r = db_col_copy(s, 1, m->last4, sizeof(m->last4))) != 0)
		goto out;
	m->exp_month = db_col_int(s, 2);
	m->exp_year = db_col_int(s, 3);
	r = FGW_OK;
out:
	db_release(s);
	return r;
}

int
store_method_save(struct store *st, struct store_waker *w, struct store_method *m,
                  const struct store_vault_entry *vault, const struct store_audit *audit,
                  store_done_fn done, void *arg)
{
	struct save_job *j;
	if (m == NULL || m->id[0] == '\0' || m->customer_id[0] == '\0' ||
	    (m->processor_method[0] != '\0' && (vault != NULL || m->processor[0] == '\0' ||
	                                        m->processor_customer[0] == '\0')) ||
	    (vault == NULL && m->token[0] == '\0' && m->processor_method[0] == '\0') ||
	    (vault != NULL && vault->blob == NULL))
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	j->m = m;
	if (vault != NULL) {
		j->ve = *vault;
		j->has_vault = 1;
		if ((j->blob = strdup(vault->blob)) == NULL) {
			save_job_free(j);
			return FGW_ERR_NOMEM;
		}
		j->ve.blob = j->blob;
		fgw_strlcpy(m->token, vault->token, sizeof(m->token));
	}
	return store_submit_custom(st, w, run_save, j, save_job_free,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = audit ? 1 : 0,
	                                                   .done = done,
	                                                   .arg = arg });
}

struct pcus_job {
	char processor[32];
	char customer[192];
	char processor_customer[96];
	char *have;
	size_t cap;
};

static int
run_pcus_put(struct db *db, void *ctx)
{
	struct pcus_job *j = ctx;
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db,
	                    "INSERT INTO processor_customers (processor, customer_id, "
	                    "processor_customer, created_at) VALUES (?1, ?2, ?3, ?4) "
	                    "ON CONFLICT (processor, customer_id) DO NOTHING",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, j->processor)) != 0 ||
	    (r = text_bind(s, 2, j->customer)) != 0 ||
	    (r = text_bind(s, 3, j->processor_customer)) != 0 ||
	    db_bind_int64(s, 4, fgw_now_ms()) != FGW_OK || (r = step_done(s)) != 0) {
		r = r ? r : FGW_ERR_DB;
		goto out;
	}
	db_release(s);
	s = NULL;
	if ((r = db_prepare(db,
	                    "SELECT processor_customer FROM processor_customers "
	                    "WHERE processor = ?1 AND customer_id = ?2",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, j->processor)) != 0 ||
	    (r = text_bind(s, 2, j->customer)) != 0)
		goto out;
	r = db_step(s) == DB_ROW ? db_col_copy(s, 0, j->have, j->cap) : FGW_ERR_DB;
out:
	db_release(s);
	return r;
}

int
store_proc_customer_put(struct store *st, struct store_waker *w, const char *processor,
                        const char *customer, const char *processor_customer, char *have,
                        size_t cap, store_done_fn done, void *arg)
{
	struct pcus_job *j;

	if (processor == NULL || customer == NULL || processor_customer == NULL ||
	    have == NULL || processor[0] == '\0' || customer[0] == '\0' ||
	    processor_customer[0] == '\0')
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	if (fgw_strlcpy(j->processor, processor, sizeof(j->processor)) != 0 ||
	    fgw_strlcpy(j->customer, customer, sizeof(j->customer)) != 0 ||
	    fgw_strlcpy(j->processor_customer, processor_customer,
	                sizeof(j->processor_customer)) != 0) {
		free(j);
		return FGW_ERR_INVALID;
	}
	j->have = have;
	j->cap = cap;
	return store_submit_custom(st, w, run_pcus_put, j, free,
	                           &(struct store_commit){ .done = done, .arg = arg });
}

struct id_job {
	char customer[128];
	char id[40];
};

/* The newest method of the customer becomes the default when none is. */
static int
ensure_default(struct db *db, const char *customer)
{
	static const char *const sql[] = {
		/* A subquery in FROM has a name: PostgreSQL (before 16)
		 * requires one. */
		"UPDATE payment_methods SET is_default = 1 WHERE id = "
		"(SELECT id FROM " ALL_METHODS "a WHERE customer_id = ?1 "
		" ORDER BY created_at DESC, id LIMIT 1) "
		"AND NOT EXISTS (SELECT 1 FROM " ALL_METHODS
		"a WHERE customer_id = ?1 AND is_default = 1)",
		"UPDATE processor_methods SET is_default = 1 WHERE id = "
		"(SELECT id FROM " ALL_METHODS "a WHERE customer_id = ?1 "
		" ORDER BY created_at DESC, id LIMIT 1) "
		"AND NOT EXISTS (SELECT 1 FROM " ALL_METHODS
		"a WHERE customer_id = ?1 AND is_default = 1)",
	};
	struct db_stmt *s = NULL;
	int r = FGW_OK;

	/* The newest method of either kind; one of the two statements
	 * finds it in its table. */
	for (size_t i = 0; r == FGW_OK && i < 2; i++) {
		if ((r = db_prepare(db, sql[i], &s)) == 0 && (r = text_bind(s, 1, customer)) == 0)
			r = step_done(s);
		db_release(s);
		s = NULL;
	}
	return r;
}

static int
run_delete(struct db *db, void *ctx)
{
	struct id_job *j = ctx;
	struct db_stmt *s = NULL;
	char token[40];
	int r;

	if ((r = lock_customer(db, j->customer)) != 0)
		goto out;
	if ((r = db_prepare(db,
	                    "DELETE FROM payment_methods WHERE id = ?1 AND customer_id = ?2 "
	                    "RETURNING token",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, j->id)) != 0 || (r = text_bind(s, 2, j->customer)) != 0)
		goto out;
	if (db_step(s) != DB_ROW) {
		/* Not a vaulted card: a processor's card, or no such method. */
		db_release(s);
		s = NULL;
		if ((r = db_prepare(db,
		                    "DELETE FROM processor_methods WHERE id = ?1 AND "
		                    "customer_id = ?2",
		                    &s)) != 0 ||
		    (r = text_bind(s, 1, j->id)) != 0 ||
		    (r = text_bind(s, 2, j->customer)) != 0 || (r = step_done(s)) != 0)
			goto out;
		if (db_changes(db) == 0) {
			r = FGW_ERR_NOT_FOUND;
			goto out;
		}
		r = ensure_default(db, j->customer);
		goto out;
	}
	if ((r = db_col_copy(s, 0, token, sizeof(token))) != 0 ||
	    (r = db_step(s) == DB_DONE ? 0 : FGW_ERR_DB) != 0)
		goto out;
	db_release(s);
	s = NULL;
	/* The card is no longer needed: its ciphertext goes too. */
	if ((r = db_prepare(db,
	                    "DELETE FROM vault_entries WHERE token = ?1 AND NOT EXISTS "
	                    "(SELECT 1 FROM payment_methods WHERE token = ?1)",
	                    &s)) != 0 ||
	    (r = text_bind(s, 1, token)) != 0 || (r = step_done(s)) != 0)
		goto out;
	r = ensure_default(db, j->customer);
out:
	db_release(s);
	return r;
}

static int
run_set_default(struct db *db, void *ctx)
{
	static const char *const sql[] = {
		/* A comparison is a boolean on PostgreSQL, not a 0/1 flag. */
		"UPDATE payment_methods SET is_default = CASE WHEN id = ?1 THEN 1 ELSE 0 END"
		" WHERE customer_id = ?2 AND EXISTS (SELECT 1 FROM " ALL_METHODS
		"a WHERE id = ?1 AND customer_id = ?2)",
		"UPDATE processor_methods SET is_default = CASE WHEN id = ?1 THEN 1 ELSE 0 END"
		" WHERE customer_id = ?2 AND EXISTS (SELECT 1 FROM " ALL_METHODS
		"a WHERE id = ?1 AND customer_id = ?2)",
	};
	struct id_job *j = ctx;
	struct db_stmt *s = NULL;
	int changed = 0, r;

	if ((r = lock_customer(db, j->customer)) != 0)
		goto out;
	/* One default across both kinds of method. */
	for (size_t i = 0; i < 2; i++) {
		if ((r = db_prepare(db, sql[i], &s)) != 0 || (r = text_bind(s, 1, j->id)) != 0 ||
		    (r = text_bind(s, 2, j->customer)) != 0 || (r = step_done(s)) != 0)
			goto out;
		changed += db_changes(db);
		db_release(s);
		s = NULL;
	}
	r = changed > 0 ? FGW_OK : FGW_ERR_NOT_FOUND;
out:
	db_release(s);
	return r;
}

static int
submit_id_job(struct store *st, struct store_waker *w, store_job_fn run,
              const char *customer, const char *id, const struct store_audit *audit,
              store_done_fn done, void *arg)
{
	struct id_job *j;
	if (customer == NULL || id == NULL || customer[0] == '\0' || id[0] == '\0')
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	if (fgw_strlcpy(j->customer, customer, sizeof(j->customer)) != 0 ||
	    fgw_strlcpy(j->id, id, sizeof(j->id)) != 0) {
		free(j);
		return FGW_ERR_INVALID;
	}
	return store_submit_custom(st, w, run, j, free,
	                           &(struct store_commit){ .audit = audit,
	                                                   .n_audit = audit ? 1 : 0,
	                                                   .done = done,
	                                                   .arg = arg });
}

int
store_method_delete(struct store *st, struct store_waker *w, const char *customer,
                    const char *id, const struct store_audit *audit, store_done_fn done,
                    void *arg)
{
	return submit_id_job(st, w, run_delete, customer, id, audit, done, arg);
}

int
store_method_set_default(struct store *st, struct store_waker *w, const char *customer,
                         const char *id, const struct store_audit *audit,
                         store_done_fn done, void *arg)
{
	return submit_id_job(st, w, run_set_default, customer, id, audit, done, arg);
}

struct sweep_job {
	int64_t now;
	int64_t *purged;
};

static int
run_sweep(struct db *db, void *ctx)
{
	struct sweep_job *j = ctx;
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(db,
	                    "DELETE FROM vault_entries WHERE saved = 0 AND expires_at > 0 "
	                    "AND expires_at <= ?1",
	                    &s)) == 0 &&
	    (r = db_bind_int64(s, 1, j->now) == FGW_OK ? 0 : FGW_ERR_DB) == 0 &&
	    (r = step_done(s)) == 0 && j->purged != NULL)
		*j->purged = db_changes(db);
	db_release(s);
	return r;
}

int
store_vault_sweep(struct store *st, struct store_waker *w, int64_t now, int64_t *purged,
                  store_done_fn done, void *arg)
{
	struct sweep_job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return FGW_ERR_NOMEM;
	j->now = now;
	j->purged = purged;
	return store_submit_custom(st, w, run_sweep, j, free,
	                           &(struct store_commit){ .done = done, .arg = arg });
}

struct rewrap_job {
	struct store_rewrap_item *items;
	size_t n;
	int64_t *updated;
};

static void
rewrap_job_free(void *p)
{
	struct rewrap_job *j = p;
	if (j == NULL)
		return;
	store_rewrap_items_clear(j->items, j->n);
	free(j->items);
	free(j);
}

static int
run_rewrap(struct db *db, void *ctx)
{
	struct rewrap_job *j = ctx;
	struct db_stmt *s = NULL;
	int64_t done = 0;
	int r;

	if ((r = db_prepare(db,
	                    "UPDATE vault_entries SET blob = ?1, key_id = ?2 "
	                    "WHERE token = ?3 AND key_id = ?4",
	                    &s)) != 0)
		goto out;
	for (size_t i = 0; i < j->n; i++) {
		const struct store_rewrap_item *it = &j->items[i];
		if (it->new_blob == NULL)
			continue;
		if ((r = text_bind(s, 1, it->new_blob)) != 0 ||
		    (r = text_bind(s, 2, it->new_key_id)) != 0 ||
		    (r = text_bind(s, 3, it->token)) != 0 ||
		    (r = text_bind(s, 4, it->key_id)) != 0 || (r = step_done(s)) != 0)
			goto out;
		done += db_changes(db);
		db_reset(s);
		db_clear_bindings(s);
	}
	if (j->updated != NULL)
		*j->updated = done;
	r = FGW_OK;
out:
	db_release(s);
	return r;
}

int
store_vault_rewrap_commit(struct store *st, struct store_waker *w,
                          const struct store_rewrap_item *items, size_t n,
                          int64_t *updated, store_done_fn done, void *arg)
{
	struct rewrap_job *j = calloc(1, sizeof(*j));
	int r = FGW_ERR_NOMEM;
	if (j == NULL)
		return FGW_ERR_NOMEM;
	j->updated = updated;
	if (n > 0 && (j->items = calloc(n, sizeof(*j->items))) == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		struct store_rewrap_item *c = &j->items[i];
		*c = items[i];
		c->blob = NULL;
		c->new_blob = NULL;
		j->n = i + 1;
		if (items[i].new_blob != NULL &&
		    (c->new_blob = strdup(items[i].new_blob)) == NULL)
			goto fail;
	}
	return store_submit_custom(st, w, run_rewrap, j, rewrap_job_free,
	                           &(struct store_commit){ .done = done, .arg = arg });
fail:
	rewrap_job_free(j);
	return r;
}
