/*
 * store/schema_pg.h — private to store/: the PostgreSQL schema and its
 * migrations (store/schema_pg.c), applied by store/pg.c.
 */
#ifndef FGW_STORE_SCHEMA_PG_H
#define FGW_STORE_SCHEMA_PG_H

#include <stddef.h>

/* One step: the SQL that moves a database to version (the same number as
 * store/schema.h's STORE_SCHEMA_VERSION for the same tables). */
struct pg_migration {
	int version;
	const char *sql;
};

/* The steps in ascending version order; *n is their count. */
const struct pg_migration *schema_pg_migrations(size_t *n);

#endif
