/*
 * store/reader.c — a reader: a connection of its own (SQLite read-only,
 * or a PostgreSQL session) with the statements every reader keeps
 * prepared, and the reads of the core tables (a transaction, an
 * idempotent answer, a vault entry, the audit chain's check).
 *
 * A reactor does not call these on its own thread any more: it reads
 * through store_read (store/store.c), which runs them on a read thread on
 * PostgreSQL. flairctl and the background threads (mail, backups) keep
 * their own readers and call them directly.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/audit.h"
#include "store/db.h"
#include "store/store.h"
#include "store/store_int.h"
#include "store/txns.h"

enum rstmt { R_TXN_GET, R_IDEM_GET, R_VAULT_GET, R_COUNT };

static const char *const reader_sql[R_COUNT] = {
	[R_IDEM_GET] = "SELECT client_id, key, request_hash, status_code, body, txn_id, "
	               "created_at, expires_at FROM idempotency "
	               "WHERE client_id = ?1 AND key = ?2 AND expires_at >= ?3",
	[R_VAULT_GET] = "SELECT token, key_id, blob, fingerprint, brand, bin, last4, "
	                "exp_month, exp_year, customer_id, saved, expires_at "
	                "FROM vault_entries WHERE token = ?1",
};

struct store_reader {
	struct db *db;
	struct db_stmt *stmt[R_COUNT];
	store_mac_fn mac;
	void *mac_ctx;
	int busy_ms;
};

struct db *
store_reader_db(struct store_reader *r)
{
	return r->db;
}

int
store_reader_open_file(const char *path, store_mac_fn mac, void *mac_ctx, int busy_ms,
                       struct store_reader **out)
{
	struct db *db = NULL;
	int rv;

	if (path == NULL || out == NULL)
		return FGW_ERR_INVALID;
	if ((rv = store_db_open_sqlite(path, SQLITE_OPEN_READONLY,
	                               busy_ms > 0 ? busy_ms : 5000, &db)) != 0)
		return rv;
	return store_reader_on(db, mac, mac_ctx, busy_ms, out);
}

int
store_reader_open_tool(const struct store_opts *o, struct store_reader **out)
{
	struct db *db = NULL;
	int r;

	if (o == NULL || out == NULL)
		return FGW_ERR_INVALID;
	if (o->backend == STORE_SQLITE)
		return store_reader_open_file(o->path, o->audit_mac, o->audit_mac_ctx,
		                              o->busy_timeout_ms, out);
	if ((o->dsn == NULL) == (o->dsn_file == NULL))
		return FGW_ERR_INVALID;
	if ((r = store_db_open_pg(o->dsn, o->dsn_file, o->production, &db)) != 0)
		return r;
	/* The server refuses every write on this session from here on. */
	if ((r = db_exec(db, "SET default_transaction_read_only = on")) != 0) {
		db_close(db);
		return r;
	}
	return store_reader_on(db, o->audit_mac, o->audit_mac_ctx, o->busy_timeout_ms, out);
}

/* A reader on db (which it owns from here on, also on failure). */
int
store_reader_on(struct db *db, store_mac_fn mac, void *mac_ctx, int busy_ms,
                struct store_reader **out)
{
	struct store_reader *r = NULL;
	char txn_get[1024];
	int rv;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		db_close(db);
		rv = FGW_ERR_NOMEM;
		goto out;
	}
	r->db = db;
	r->mac = mac;
	r->mac_ctx = mac_ctx;
	r->busy_ms = busy_ms > 0 ? busy_ms : 5000;
	if ((rv = txn_sql(1, txn_get, sizeof(txn_get))) != 0)
		goto out;
	for (int i = 0; i < R_COUNT; i++) {
		const char *sql = i == R_TXN_GET ? txn_get : reader_sql[i];
		if ((rv = db_prepare_once(r->db, sql, &r->stmt[i])) != 0)
			goto out;
	}
	*out = r;
	r = NULL; /* owned by the caller now */
	rv = 0;
out:
	store_reader_close(r);
	return rv;
}

void
store_reader_close(struct store_reader *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < R_COUNT; i++)
		db_release(r->stmt[i]);
	db_close(r->db);
	free(r);
}

/* Steps a read statement to its first row. 0 on a row, FGW_ERR_NOT_FOUND
 * when there is none, FGW_ERR_DB otherwise. */
static int
read_one(struct db_stmt *s)
{
	int rc = db_step(s);
	if (rc == DB_ROW)
		return 0;
	if (rc == DB_DONE)
		return FGW_ERR_NOT_FOUND;
	log_error("read failed: %s", db_errmsg(db_handle(s)));
	return FGW_ERR_DB;
}

int
store_txn_get(struct store_reader *r, const char *client_id, const char *id,
              struct store_txn_row *out)
{
	struct db_stmt *s = NULL;
	int rv;

	if (r == NULL || id == NULL || out == NULL) {
		rv = FGW_ERR_INVALID;
		goto out;
	}
	s = r->stmt[R_TXN_GET];
	if (db_bind_opt(s, 1, id) || db_bind_opt(s, 2, client_id)) {
		rv = FGW_ERR_DB;
		goto out;
	}
	if ((rv = read_one(s)) != 0 || (rv = txn_read_row(s, out)) != 0)
		goto out;
	rv = 0;
out:
	if (s != NULL) {
		db_reset(s); /* ends the read transaction */
		db_clear_bindings(s);
	}
	return rv;
}

int
store_idem_get(struct store_reader *r, const char *client_id, const char *key,
               struct store_idem *out)
{
	struct db_stmt *s = NULL;
	int rv;

	if (r == NULL || client_id == NULL || key == NULL || out == NULL) {
		rv = FGW_ERR_INVALID;
		goto out;
	}
	memset(out, 0, sizeof(*out));
	s = r->stmt[R_IDEM_GET];
	if (db_bind_opt(s, 1, client_id) || db_bind_opt(s, 2, key) ||
	    db_bind_int64(s, 3, fgw_now_ms())) {
		rv = FGW_ERR_DB;
		goto out;
	}
	if ((rv = read_one(s)) != 0 || (rv = DB_COL_COPY(s, 0, out->client_id)) != 0 ||
	    (rv = DB_COL_COPY(s, 1, out->key)) != 0 ||
	    (rv = DB_COL_COPY(s, 2, out->request_hash)) != 0 ||
	    (rv = db_col_dup(s, 4, &out->body)) != 0 ||
	    (rv = DB_COL_COPY(s, 5, out->txn_id)) != 0)
		goto out;
	out->status_code = db_col_int(s, 3);
	out->created_at = db_col_int64(s, 6);
	out->expires_at = db_col_int64(s, 7);
	rv = 0;
out:
	if (s != NULL) {
		db_reset(s);
		db_clear_bindings(s);
	}
	if (rv != 0 && out != NULL)
		store_idem_clear(out);
	return rv;
}

int
store_vault_get(struct store_reader *r, const char *token, struct store_vault_entry *out,
                char **blob)
{
	struct db_stmt *s = NULL;
	char *b = NULL;
	int rv;

	if (r == NULL || token == NULL || out == NULL || blob == NULL) {
		rv = FGW_ERR_INVALID;
		goto out;
	}
	memset(out, 0, sizeof(*out));
	*blob = NULL;
	s = r->stmt[R_VAULT_GET];
	if (db_bind_opt(s, 1, token)) {
		rv = FGW_ERR_DB;
		goto out;
	}
	if ((rv = read_one(s)) != 0 || (rv = DB_COL_COPY(s, 0, out->token)) != 0 ||
	    (rv = DB_COL_COPY(s, 1, out->key_id)) != 0 || (rv = db_col_dup(s, 2, &b)) != 0 ||
	    (rv = DB_COL_COPY(s, 3, out->fingerprint)) != 0 ||
	    (rv = DB_COL_COPY(s, 4, out->brand)) != 0 ||
	    (rv = DB_COL_COPY(s, 5, out->bin)) != 0 ||
	    (rv = DB_COL_COPY(s, 6, out->last4)) != 0 ||
	    (rv = DB_COL_COPY(s, 9, out->customer_id)) != 0)
		goto out;
	if (b == NULL) {
		rv = FGW_ERR_DB; /* NOT NULL column read as NULL */
		goto out;
	}
	out->exp_month = db_col_int(s, 7);
	out->exp_year = db_col_int(s, 8);
	out->saved = db_col_int(s, 10);
	out->expires_at = db_col_int64(s, 11);
	out->blob = b;
	*blob = b;
	b = NULL; /* owned by the caller now */
	rv = 0;
out:
	if (s != NULL) {
		db_reset(s);
		db_clear_bindings(s);
	}
	free(b);
	return rv;
}

int
store_audit_verify(struct store_reader *r, int64_t *first_bad_seq)
{
	if (r == NULL)
		return FGW_ERR_INVALID;
	return audit_verify(r->db, r->mac, r->mac_ctx, first_bad_seq);
}

store_mac_fn
store_reader_mac(struct store_reader *r, void **mac_ctx)
{
	*mac_ctx = r->mac_ctx;
	return r->mac;
}
