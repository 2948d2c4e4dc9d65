/*
 * store/sqlutil.h — small SQLite helpers shared by the files of store/
 * (private to the room), and the per-connection statement cache.
 */
#ifndef FGW_STORE_SQLUTIL_H
#define FGW_STORE_SQLUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* Copies text column i into dst[cap]; NULL reads as "". Returns 0, or
 * FGW_ERR_TOO_LARGE when the value did not fit (dst holds a truncated
 * copy). */
int sql_col_text(sqlite3_stmt *s, int i, char *dst, size_t cap);
/* Binds v as text, or NULL when v is NULL or "" (optional columns stay
 * NULL). 0 or FGW_ERR_DB. */
int sql_bind_text_or_null(sqlite3_stmt *s, int i, const char *v);
/* One value: the first column of the first row of sql with ?1 = a (text
 * into out, or an integer). FGW_ERR_NOT_FOUND when there is no row. */
int sql_text_of(sqlite3 *db, const char *sql, const char *a, char *out, size_t cap);
int sql_int64_of(sqlite3 *db, const char *sql, const char *a, int64_t *v);

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
int sql_read_cols(sqlite3_stmt *s, int first, const struct sql_col *cols, size_t n,
                  void *row);

/* Statement cache. A connection with a cache keeps every statement
 * sql_prepare made for it, prepared once (SQLITE_PREPARE_PERSISTENT) and
 * found again by the address of its SQL text. sql_cache_attach right after
 * opening (0, or FGW_ERR_NOMEM; a connection past the table's size simply
 * runs uncached); sql_cache_detach before sqlite3_close: it finalizes them.
 * One thread uses a connection at a time, as SQLite's NOMUTEX mode wants. */
int sql_cache_attach(sqlite3 *db);
void sql_cache_detach(sqlite3 *db);
/* *s for sql on db. sql must be static text (a literal): its address is
 * the key. Cached statements come back reset and unbound; a statement
 * still in use (not released) is refused with FGW_ERR_INTERNAL. On a
 * connection without a cache *s is new. 0, or FGW_ERR_DB (logged). */
int sql_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **s);
/* Gives back what sql_prepare returned (NULL is fine): reset and
 * unbound when cached (which also ends a reader's read transaction),
 * finalized otherwise. */
void sql_release(sqlite3_stmt *s);

#endif
