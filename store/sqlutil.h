/*
 * store/sqlutil.h — column tables: a row struct's columns
 * listed once (private to store/).
 */
#ifndef FGW_STORE_SQLUTIL_H
#define FGW_STORE_SQLUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

/* Column tables. A row struct's columns are listed once, as an X-macro
 * whose first entry uses F and every next one N:
 *     #define FOO_COLUMNS(F, N) F(SQL_TEXT, id) N(SQL_I64, amount) ...
 * (each name both the column and the struct field). The SELECT list
 * (SQL_COL_NAMES) and the table sql_read_cols reads with
 * (SQL_COL_TABLE) both come from it, so the order of the columns and the
 * numbers they are read at cannot drift apart. */
enum sql_col_kind { SQL_TEXT, SQL_INT, SQL_I64 };

struct sql_col {
	const char *name;
	enum sql_col_kind kind;
	size_t off;
	size_t cap;
};

#define SQL_COL_NAME1_(kind, f) #f
#define SQL_COL_NAMEN_(kind, f) ", " #f
/* "id, amount, ..." as a string literal. */
#define SQL_COL_NAMES(LIST) LIST(SQL_COL_NAME1_, SQL_COL_NAMEN_)
#define SQL_COL_ENTRY_(kind, f) \
	{ #f, kind, offsetof(SQL_COL_ROW, f), sizeof(((SQL_COL_ROW *)0)->f) },
/* The entries of a struct sql_col array for LIST; define SQL_COL_ROW as
 * the row type around it. */
#define SQL_COL_TABLE(LIST) LIST(SQL_COL_ENTRY_, SQL_COL_ENTRY_)

/* Reads the n columns of cols from s, result column first on, into the
 * struct at row (text NULL reads as ""). 0; FGW_ERR_TOO_LARGE when a
 * text did not fit (the others are still read); FGW_ERR_INTERNAL when an
 * integer column's field is not of its kind's size. */
int sql_read_cols(struct db_stmt *s, int first, const struct sql_col *cols, size_t n,
                  void *row);

#endif
