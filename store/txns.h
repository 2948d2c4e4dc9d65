/*
 * store/txns.h — private to store/: the transactions table, described
 * once (store/txns.c). One column table drives the writer's INSERT, the
 * readers' SELECT, binding and reading a struct store_txn_row, so the
 * column list cannot drift between them; store/store.c is the writer and
 * the readers that use it.
 */
#ifndef FGW_STORE_TXNS_H
#define FGW_STORE_TXNS_H

#include <stddef.h>

#include "store/db.h"
#include "store/store.h"

/* The INSERT (select 0: "INSERT INTO transactions (...) VALUES (?1...)")
 * or the SELECT by id and client (select 1) of every column into buf. 0
 * or FGW_ERR_TOO_LARGE. */
int txn_sql(int select, char *buf, size_t cap);
/* Binds every column of row to the INSERT's parameters. 0 or FGW_ERR_*. */
int txn_bind_row(struct db_stmt *s, const struct store_txn_row *row);
/* Reads every column (the SELECT's order) into row; on failure row is
 * cleared. 0 or FGW_ERR_*. */
int txn_read_row(struct db_stmt *s, struct store_txn_row *row);
/* Binds a fixed buffer without reading past it; "" binds NULL if
 * nullable. */
int txn_bind_buf(struct db_stmt *s, int i, const char *buf, size_t cap, int nullable);
#define BIND_BUF(s, i, f, nullable) txn_bind_buf((s), (i), (f), sizeof(f), (nullable))

#endif
