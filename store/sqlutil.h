/*
 * store/sqlutil.h — small SQLite helpers shared by the files of store/
 * (private to the room).
 */
#ifndef FGW_STORE_SQLUTIL_H
#define FGW_STORE_SQLUTIL_H

#include <stddef.h>

#include <sqlite3.h>

/* Copies text column i into dst[cap]; NULL reads as "". Returns 0, or
 * FGW_ERR_TOO_LARGE when the value did not fit (dst holds a truncated
 * copy). */
int sql_col_text(sqlite3_stmt *s, int i, char *dst, size_t cap);
/* Binds v as text, or NULL when v is NULL or "" (optional columns stay
 * NULL). 0 or FGW_ERR_DB. */
int sql_bind_text_or_null(sqlite3_stmt *s, int i, const char *v);

#endif
