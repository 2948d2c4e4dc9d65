/*
 * store/schema.h — private to store/: the schema and its migrations.
 *
 * The schema version lives in PRAGMA user_version. Each migration moves the
 * database from version N-1 to N inside one transaction; store_open applies
 * the missing ones in order on the write connection. docs/schema.md
 * describes every table, column and view.
 */
#ifndef FGW_STORE_SCHEMA_H
#define FGW_STORE_SCHEMA_H

#include <sqlite3.h>

/* The version a database has after schema_migrate(). */
#define STORE_SCHEMA_VERSION 19

/* Applies the missing migrations. Returns 0, FGW_ERR_STATE when the
 * database is newer than this build, or FGW_ERR_DB. */
int schema_migrate(sqlite3 *db);

/* Reads PRAGMA user_version into *version. 0 or FGW_ERR_DB. */
int schema_version(sqlite3 *db, int *version);

#endif
