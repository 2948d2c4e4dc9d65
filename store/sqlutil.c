/*
 * store/sqlutil.c — SQLite helpers shared by the store's files, and the
 * per-connection statement cache.
 *
 * The cache: custom store jobs and reader functions name their SQL as
 * literals and used to prepare it on every call (6% of the writer's CPU).
 * Each connection that opts in has a small array of (SQL address,
 * statement); a linear scan of a few dozen pointers costs far less than
 * one parse. Connections find their cache through a fixed table that is
 * written under a mutex (attach, detach: open and close only) and read
 * without one: a connection's slot only changes while its owner attaches
 * or detaches it, when no other thread uses that connection.
 */
#define LOG_MODULE "store"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/sqlutil.h"

int
sql_col_text(sqlite3_stmt *s, int i, char *dst, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return fgw_strlcpy(dst, t != NULL ? (const char *)t : "", cap) == 0
	           ? FGW_OK
	           : FGW_ERR_TOO_LARGE;
}

int
sql_read_cols(sqlite3_stmt *s, int first, const struct sql_col *cols, size_t n, void *row)
{
	unsigned char *base = row;
	int r = FGW_OK;

	for (size_t i = 0; i < n; i++) {
		int col = first + (int)i;
		switch (cols[i].kind) {
		case SQL_TEXT:
			if (sql_col_text(s, col, (char *)(base + cols[i].off), cols[i].cap) != 0)
				r = FGW_ERR_TOO_LARGE;
			break;
		case SQL_INT:
			if (cols[i].cap != sizeof(int))
				return FGW_ERR_INTERNAL; /* a table naming the wrong kind */
			*(int *)(void *)(base + cols[i].off) = sqlite3_column_int(s, col);
			break;
		case SQL_I64:
			if (cols[i].cap != sizeof(int64_t))
				return FGW_ERR_INTERNAL;
			*(int64_t *)(void *)(base + cols[i].off) = sqlite3_column_int64(s, col);
			break;
		}
	}
	return r;
}

/* Prepares sql, binds ?1 = a and steps once: SQLITE_ROW, DONE or an error
 * code; the caller reads the row and releases *s. */
static int
step_one(sqlite3 *db, const char *sql, const char *a, sqlite3_stmt **s)
{
	int r;
	if ((r = sql_prepare(db, sql, s)) != 0)
		return r;
	sqlite3_bind_text(*s, 1, a, -1, SQLITE_STATIC);
	r = sqlite3_step(*s);
	return r == SQLITE_ROW ? FGW_OK : r == SQLITE_DONE ? FGW_ERR_NOT_FOUND : FGW_ERR_DB;
}

int
sql_text_of(sqlite3 *db, const char *sql, const char *a, char *out, size_t cap)
{
	sqlite3_stmt *s = NULL;
	int r = step_one(db, sql, a, &s);
	if (r == FGW_OK)
		r = sql_col_text(s, 0, out, cap);
	sql_release(s);
	return r;
}

int
sql_int64_of(sqlite3 *db, const char *sql, const char *a, int64_t *v)
{
	sqlite3_stmt *s = NULL;
	int r = step_one(db, sql, a, &s);
	*v = r == FGW_OK ? sqlite3_column_int64(s, 0) : 0;
	sql_release(s);
	return r;
}

int
sql_bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
	int rc = (v == NULL || v[0] == '\0')
	             ? sqlite3_bind_null(s, i)
	             : sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
	return rc == SQLITE_OK ? FGW_OK : FGW_ERR_DB;
}

/* ---- statement cache ----------------------------------------------------- */

/* The writer, one reader per reactor, a few for tools and start-up. */
#define SQL_CACHE_SLOTS 128

struct sql_entry {
	const char *sql;
	sqlite3_stmt *s;
};

struct sql_cache {
	struct sql_entry *e;
	size_t n, cap;
};

static struct {
	_Atomic(sqlite3 *) db;
	_Atomic(struct sql_cache *) cache;
} slots[SQL_CACHE_SLOTS];
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;

static struct sql_cache *
cache_of(sqlite3 *db)
{
	if (db == NULL)
		return NULL;
	for (size_t i = 0; i < SQL_CACHE_SLOTS; i++) {
		if (atomic_load_explicit(&slots[i].db, memory_order_acquire) == db)
			return atomic_load_explicit(&slots[i].cache, memory_order_relaxed);
	}
	return NULL;
}

int
sql_cache_attach(sqlite3 *db)
{
	struct sql_cache *c;

	if (db == NULL)
		return FGW_ERR_INVALID;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return FGW_ERR_NOMEM;
	pthread_mutex_lock(&slots_mu);
	for (size_t i = 0; i < SQL_CACHE_SLOTS; i++) {
		if (atomic_load_explicit(&slots[i].db, memory_order_relaxed) == NULL) {
			atomic_store_explicit(&slots[i].cache, c, memory_order_relaxed);
			/* Release: whoever sees db here sees its cache. */
			atomic_store_explicit(&slots[i].db, db, memory_order_release);
			c = NULL; /* owned by the slot now */
			break;
		}
	}
	pthread_mutex_unlock(&slots_mu);
	if (c != NULL)
		log_warn("statement cache table full: a connection runs uncached");
	free(c);
	return FGW_OK;
}

void
sql_cache_detach(sqlite3 *db)
{
	struct sql_cache *c = NULL;

	if (db == NULL)
		return;
	pthread_mutex_lock(&slots_mu);
	for (size_t i = 0; i < SQL_CACHE_SLOTS; i++) {
		if (atomic_load_explicit(&slots[i].db, memory_order_relaxed) == db) {
			c = atomic_load_explicit(&slots[i].cache, memory_order_relaxed);
			atomic_store_explicit(&slots[i].cache, NULL, memory_order_relaxed);
			atomic_store_explicit(&slots[i].db, NULL, memory_order_release);
			break;
		}
	}
	pthread_mutex_unlock(&slots_mu);
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		sqlite3_finalize(c->e[i].s);
	free(c->e);
	free(c);
}

int
sql_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **s)
{
	struct sql_cache *c = cache_of(db);
	sqlite3_stmt *fresh = NULL;

	*s = NULL;
	if (c != NULL) {
		for (size_t i = 0; i < c->n; i++) {
			if (c->e[i].sql != sql)
				continue;
			if (sqlite3_stmt_busy(c->e[i].s)) {
				/* Nested use of one statement, or a missing
				 * sql_release: a bug, never silently shared. */
				log_error("statement still in use: %.60s", sql);
				return FGW_ERR_INTERNAL;
			}
			*s = c->e[i].s;
			return FGW_OK;
		}
	}
	if (sqlite3_prepare_v3(db, sql, -1, c != NULL ? SQLITE_PREPARE_PERSISTENT : 0, &fresh,
	                       NULL) != SQLITE_OK) {
		log_error("prepare: %s", sqlite3_errmsg(db));
		sqlite3_finalize(fresh);
		return FGW_ERR_DB;
	}
	if (c != NULL && c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 16;
		struct sql_entry *e = realloc(c->e, cap * sizeof(*e));
		if (e == NULL) {
			sqlite3_finalize(fresh);
			return FGW_ERR_NOMEM;
		}
		c->e = e;
		c->cap = cap;
	}
	if (c != NULL)
		c->e[c->n++] = (struct sql_entry){ sql, fresh };
	*s = fresh;
	return FGW_OK;
}

void
sql_release(sqlite3_stmt *s)
{
	if (s == NULL)
		return;
	if (cache_of(sqlite3_db_handle(s)) == NULL) {
		sqlite3_finalize(s);
		return;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}
