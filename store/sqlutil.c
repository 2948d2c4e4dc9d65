/*
 * store/sqlutil.c — reading a row through its column table.
 */
#define LOG_MODULE "store"

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/sqlutil.h"

int
sql_read_cols(struct db_stmt *s, int first, const struct sql_col *cols, size_t n,
              void *row)
{
	unsigned char *base = row;
	int r = FGW_OK;

	for (size_t i = 0; i < n; i++) {
		int col = first + (int)i;
		switch (cols[i].kind) {
		case SQL_TEXT:
			if (db_col_copy(s, col, (char *)(base + cols[i].off), cols[i].cap) != 0)
				r = FGW_ERR_TOO_LARGE;
			break;
		case SQL_INT:
			if (cols[i].cap != sizeof(int))
				return FGW_ERR_INTERNAL; /* a table naming the wrong kind */
			*(int *)(void *)(base + cols[i].off) = db_col_int(s, col);
			break;
		case SQL_I64:
			if (cols[i].cap != sizeof(int64_t))
				return FGW_ERR_INTERNAL;
			*(int64_t *)(void *)(base + cols[i].off) = db_col_int64(s, col);
			break;
		}
	}
	return r;
}
