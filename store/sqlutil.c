/* store/sqlutil.c — SQLite helpers shared by the store's files. */
#include "core/err.h"
#include "core/util.h"
#include "store/sqlutil.h"

int
sql_col_text(sqlite3_stmt *s, int i, char *dst, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return fgw_strlcpy(dst, t != NULL ? (const char *)t : "", cap) == 0 ? FGW_OK
	                                                                   : FGW_ERR_TOO_LARGE;
}

int
sql_bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
	int rc = (v == NULL || v[0] == '\0') ? sqlite3_bind_null(s, i)
	                                     : sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
	return rc == SQLITE_OK ? FGW_OK : FGW_ERR_DB;
}
