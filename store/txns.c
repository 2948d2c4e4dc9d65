/*
 * store/txns.c — the transactions table, described once (store/txns.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "store/db.h"
#include "store/txns.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* One table drives the INSERT, the SELECT, binding and reading, so the
 * column list cannot drift between them. Empty optional text is NULL. */
enum col_kind { COL_TEXT, COL_TEXT_REQ, COL_INT, COL_I64, COL_JSON };

struct txn_col {
	const char *name;
	enum col_kind kind;
	size_t off;
	size_t cap;
};

#define TXN_COL(kind, f)                             \
	{                                                \
#f, kind, offsetof(struct store_txn_row, f), \
		    sizeof(((struct store_txn_row *)0)->f)   \
	}

static const struct txn_col txn_cols[] = {
	TXN_COL(COL_TEXT_REQ, id),
	TXN_COL(COL_TEXT_REQ, client_id),
	TXN_COL(COL_TEXT, reservation_id),
	TXN_COL(COL_I64, amount),
	TXN_COL(COL_TEXT_REQ, currency),
	TXN_COL(COL_TEXT_REQ, status),
	TXN_COL(COL_TEXT, error_code),
	TXN_COL(COL_TEXT, error_message),
	TXN_COL(COL_TEXT, processor),
	TXN_COL(COL_TEXT, processor_ref),
	TXN_COL(COL_TEXT, processor_idem_key),
	TXN_COL(COL_TEXT, token),
	TXN_COL(COL_TEXT, fingerprint),
	TXN_COL(COL_TEXT, brand),
	TXN_COL(COL_TEXT, bin),
	TXN_COL(COL_TEXT, last4),
	TXN_COL(COL_INT, exp_month),
	TXN_COL(COL_INT, exp_year),
	TXN_COL(COL_TEXT, customer_email),
	TXN_COL(COL_TEXT, customer_name),
	TXN_COL(COL_TEXT, customer_country),
	TXN_COL(COL_TEXT, customer_ip),
	TXN_COL(COL_TEXT, rule_decision),
	TXN_COL(COL_TEXT, rules_fired),
	TXN_COL(COL_TEXT, idempotency_key),
	TXN_COL(COL_TEXT, description),
	TXN_COL(COL_JSON, metadata_json),
	TXN_COL(COL_JSON, next_action_json),
	TXN_COL(COL_I64, created_at),
	TXN_COL(COL_I64, updated_at),
};

static int sql_add(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
sql_add(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*pos >= cap)
		return FGW_ERR_TOO_LARGE;
	va_start(ap, fmt);
	n = vsnprintf(buf + *pos, cap - *pos, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap - *pos)
		return FGW_ERR_TOO_LARGE;
	*pos += (size_t)n;
	return 0;
}

/* The INSERT (select = 0) or the scoped SELECT by id (select = 1). */
int
txn_sql(int select, char *buf, size_t cap)
{
	size_t pos = 0;
	int r;

	if ((r = sql_add(buf, cap, &pos, "%s",
	                 select ? "SELECT " : "INSERT INTO transactions (")) != 0)
		return r;
	for (size_t i = 0; i < ARRAY_LEN(txn_cols); i++) {
		if ((r = sql_add(buf, cap, &pos, "%s%s", i ? ", " : "", txn_cols[i].name)) != 0)
			return r;
	}
	if (select)
		return sql_add(buf, cap, &pos,
		               " FROM transactions WHERE id = ?1 "
		               "AND (CAST(?2 AS TEXT) IS NULL OR client_id = ?2)");
	if ((r = sql_add(buf, cap, &pos, ") VALUES (")) != 0)
		return r;
	for (size_t i = 0; i < ARRAY_LEN(txn_cols); i++) {
		if ((r = sql_add(buf, cap, &pos, "%s?%zu", i ? ", " : "", i + 1)) != 0)
			return r;
	}
	return sql_add(buf, cap, &pos, ")");
}

/* Binds a fixed buffer without reading past it; "" binds NULL if nullable.
 * The buffer must stay put until the statement is reset. */
int
txn_bind_buf(struct db_stmt *s, int i, const char *buf, size_t cap, int nullable)
{
	size_t n = strnlen(buf, cap);
	if (n == 0 && nullable)
		return db_bind_null(s, i);
	return db_bind_textn(s, i, buf, (size_t)((int)n));
}

int
txn_bind_row(struct db_stmt *s, const struct store_txn_row *row)
{
	for (size_t i = 0; i < ARRAY_LEN(txn_cols); i++) {
		const struct txn_col *c = &txn_cols[i];
		const char *field = (const char *)row + c->off;
		int idx = (int)i + 1, rc;
		int iv;
		int64_t lv;
		const char *p;

		switch (c->kind) {
		case COL_TEXT:
		case COL_TEXT_REQ:
			rc = txn_bind_buf(s, idx, field, c->cap, c->kind == COL_TEXT);
			break;
		case COL_INT:
			memcpy(&iv, field, sizeof(iv));
			rc = db_bind_int(s, idx, iv);
			break;
		case COL_I64:
			memcpy(&lv, field, sizeof(lv));
			rc = db_bind_int64(s, idx, lv);
			break;
		case COL_JSON:
			memcpy(&p, field, sizeof(p));
			rc = db_bind_opt(s, idx, p);
			break;
		default:
			rc = FGW_ERR_INTERNAL;
			break;
		}
		if (rc != FGW_OK)
			return rc;
	}
	return FGW_OK;
}

int
txn_read_row(struct db_stmt *s, struct store_txn_row *row)
{
	int r = 0;

	memset(row, 0, sizeof(*row));
	for (size_t i = 0; i < ARRAY_LEN(txn_cols) && r == 0; i++) {
		const struct txn_col *c = &txn_cols[i];
		char *field = (char *)row + c->off;
		int idx = (int)i;
		int iv;
		int64_t lv;
		char *p = NULL;

		switch (c->kind) {
		case COL_TEXT:
		case COL_TEXT_REQ:
			r = db_col_copy_exact(s, idx, field, c->cap);
			break;
		case COL_INT:
			iv = db_col_int(s, idx);
			memcpy(field, &iv, sizeof(iv));
			break;
		case COL_I64:
			lv = db_col_int64(s, idx);
			memcpy(field, &lv, sizeof(lv));
			break;
		case COL_JSON:
			r = db_col_dup(s, idx, &p);
			memcpy(field, &p, sizeof(p));
			break;
		default:
			r = FGW_ERR_INTERNAL;
			break;
		}
	}
	if (r != 0)
		store_txn_row_clear(row);
	return r;
}

void
store_txn_row_clear(struct store_txn_row *row)
{
	if (row == NULL)
		return;
	free(row->metadata_json);
	free(row->next_action_json);
	row->metadata_json = NULL;
	row->next_action_json = NULL;
}

void
store_idem_clear(struct store_idem *idem)
{
	if (idem == NULL)
		return;
	free(idem->body);
	idem->body = NULL;
}
