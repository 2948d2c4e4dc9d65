/*
 * store/db.c — the db API (store/db.h): the SQLite half, the statement
 * cache both backends share, and the dispatch to the PostgreSQL half
 * (store/db_pg.c).
 *
 * The cache: store jobs and reader functions name their SQL as literals
 * and used to prepare it on every call (6% of the writer's CPU). Each
 * connection keeps an array of (SQL address, statement); a linear scan of
 * a few dozen pointers costs far less than one parse, and on PostgreSQL
 * it saves a round trip per statement.
 */
#define LOG_MODULE "store"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db_int.h"

int
db_fail_set(struct db *db, enum db_fail kind, const char *msg)
{
	db->fail = kind;
	snprintf(db->errmsg, sizeof(db->errmsg), "%s", msg != NULL ? msg : "");
	switch (kind) {
	case DB_FAIL_NONE:
		return FGW_OK;
	case DB_FAIL_DUPLICATE:
		return FGW_ERR_EXISTS;
	case DB_FAIL_CONSTRAINT:
		return FGW_ERR_INVALID;
	case DB_FAIL_BUSY:
		return FGW_ERR_CONFLICT;
	case DB_FAIL_STORAGE:
	case DB_FAIL_OTHER:
		break;
	}
	return FGW_ERR_DB;
}

/* ---- SQLite ------------------------------------------------------------ */

static int
lite_fail(struct db *db, int rc)
{
	enum db_fail kind;

	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
		kind = rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE
		           ? DB_FAIL_DUPLICATE
		           : DB_FAIL_CONSTRAINT;
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		kind = DB_FAIL_BUSY;
		break;
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_NOMEM:
	case SQLITE_READONLY:
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		kind = DB_FAIL_STORAGE;
		break;
	default:
		kind = DB_FAIL_OTHER;
		break;
	}
	return db_fail_set(db, kind, sqlite3_errmsg(db->lite));
}

int
db_wrap_sqlite(sqlite3 *h, int cached, struct db **out)
{
	struct db *db;

	*out = NULL;
	if ((db = calloc(1, sizeof(*db))) == NULL) {
		sqlite3_close(h);
		return FGW_ERR_NOMEM;
	}
	db->kind = DB_SQLITE;
	db->lite = h;
	db->cached = cached;
	/* Constraint failures tell a duplicate key from a CHECK. */
	sqlite3_extended_result_codes(h, 1);
	*out = db;
	return FGW_OK;
}

int
db_wrap_pg(PGconn *c, struct db **out)
{
	struct db *db;

	*out = NULL;
	if ((db = calloc(1, sizeof(*db))) == NULL) {
		PQfinish(c);
		return FGW_ERR_NOMEM;
	}
	db->kind = DB_PG;
	db->pg = c;
	db->cached = 1; /* a prepared statement saves a round trip */
	*out = db;
	return FGW_OK;
}

static void
stmt_free(struct db_stmt *s)
{
	if (s == NULL)
		return;
	if (s->db->kind == DB_SQLITE)
		sqlite3_finalize(s->lite);
	else
		dbpg_stmt_free(s);
	free(s);
}

void
db_close(struct db *db)
{
	if (db == NULL)
		return;
	for (size_t i = 0; i < db->n_cache; i++)
		stmt_free(db->cache[i].s);
	free(db->cache);
	if (db->kind == DB_SQLITE)
		sqlite3_close(db->lite);
	else
		PQfinish(db->pg);
	free(db);
}

enum db_kind
db_kind(const struct db *db)
{
	return db->kind;
}

sqlite3 *
db_sqlite(struct db *db)
{
	return db != NULL && db->kind == DB_SQLITE ? db->lite : NULL;
}

PGconn *
db_pg(struct db *db)
{
	return db != NULL && db->kind == DB_PG ? db->pg : NULL;
}

int
db_exec(struct db *db, const char *sql)
{
	char *msg = NULL;
	int rc;

	if (db->kind == DB_PG)
		return dbpg_exec(db, sql);
	rc = sqlite3_exec(db->lite, sql, NULL, NULL, &msg);
	sqlite3_free(msg);
	return rc == SQLITE_OK ? FGW_OK : lite_fail(db, sqlite3_extended_errcode(db->lite));
}

int
db_in_txn(struct db *db)
{
	if (db->kind == DB_PG)
		return dbpg_in_txn(db);
	return !sqlite3_get_autocommit(db->lite);
}

int
db_snapshot_open(struct db *db)
{
	if (db->kind == DB_PG)
		return dbpg_in_txn(db);
	for (sqlite3_stmt *s = sqlite3_next_stmt(db->lite, NULL); s != NULL;
	     s = sqlite3_next_stmt(db->lite, s)) {
		if (sqlite3_stmt_busy(s))
			return 1;
	}
	return 0;
}

static int
stmt_new(struct db *db, const char *sql, int cached, struct db_stmt **out)
{
	struct db_stmt *s;
	int r;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return FGW_ERR_NOMEM;
	s->db = db;
	s->cached = cached;
	if (db->kind == DB_PG) {
		if ((r = dbpg_prepare(s, sql)) != 0) {
			dbpg_stmt_free(s);
			free(s);
			log_error("prepare: %s", db->errmsg);
			return r;
		}
	} else if (sqlite3_prepare_v3(db->lite, sql, -1,
	                              cached ? SQLITE_PREPARE_PERSISTENT : 0, &s->lite,
	                              NULL) != SQLITE_OK) {
		r = lite_fail(db, sqlite3_extended_errcode(db->lite));
		log_error("prepare: %s", db->errmsg);
		sqlite3_finalize(s->lite);
		free(s);
		return r == FGW_OK ? FGW_ERR_DB : r;
	}
	*out = s;
	return FGW_OK;
}

int
db_prepare(struct db *db, const char *sql, struct db_stmt **out)
{
	struct db_stmt *s;
	int r;

	*out = NULL;
	if (!db->cached)
		return stmt_new(db, sql, 0, out);
	for (size_t i = 0; i < db->n_cache; i++) {
		if (db->cache[i].sql != sql)
			continue;
		if (db->cache[i].s->busy) {
			/* Nested use of one statement, or a missing
			 * db_release: a bug, never silently shared. */
			log_error("statement still in use: %.60s", sql);
			return FGW_ERR_INTERNAL;
		}
		db->cache[i].s->busy = 1;
		*out = db->cache[i].s;
		return FGW_OK;
	}
	if (db->n_cache == db->cap_cache) {
		size_t cap = db->cap_cache ? 2 * db->cap_cache : 32;
		struct db_cache_entry *e = realloc(db->cache, cap * sizeof(*e));
		if (e == NULL)
			return FGW_ERR_NOMEM;
		db->cache = e;
		db->cap_cache = cap;
	}
	if ((r = stmt_new(db, sql, 1, &s)) != 0)
		return r;
	db->cache[db->n_cache++] = (struct db_cache_entry){ sql, s };
	s->busy = 1;
	*out = s;
	return FGW_OK;
}

int
db_prepare_once(struct db *db, const char *sql, struct db_stmt **out)
{
	return stmt_new(db, sql, 0, out);
}

void
db_reset(struct db_stmt *s)
{
	if (s->db->kind == DB_PG)
		dbpg_reset(s);
	else
		sqlite3_reset(s->lite);
}

void
db_clear_bindings(struct db_stmt *s)
{
	if (s->db->kind == DB_PG)
		dbpg_clear_bindings(s);
	else
		sqlite3_clear_bindings(s->lite);
}

void
db_release(struct db_stmt *s)
{
	if (s == NULL)
		return;
	if (!s->cached) {
		stmt_free(s);
		return;
	}
	db_reset(s);
	db_clear_bindings(s);
	s->busy = 0;
}

struct db *
db_handle(struct db_stmt *s)
{
	return s->db;
}

int
db_bind_textn(struct db_stmt *s, int i, const char *v, size_t len)
{
	int rc;

	if (s->db->kind == DB_PG)
		return dbpg_bind(s, i, v, len);
	if (v == NULL)
		rc = sqlite3_bind_null(s->lite, i);
	else if (len > INT32_MAX)
		return FGW_ERR_TOO_LARGE;
	else
		rc = sqlite3_bind_text(s->lite, i, v, (int)len, SQLITE_TRANSIENT);
	return rc == SQLITE_OK      ? FGW_OK
	       : rc == SQLITE_RANGE ? FGW_ERR_INVALID
	                            : FGW_ERR_NOMEM;
}

int
db_bind_text(struct db_stmt *s, int i, const char *v)
{
	return db_bind_textn(s, i, v, v != NULL ? strlen(v) : 0);
}

int
db_bind_text_or_null(struct db_stmt *s, int i, const char *v)
{
	return db_bind_text(s, i, v != NULL && v[0] != '\0' ? v : NULL);
}

int
db_bind_int64(struct db_stmt *s, int i, int64_t v)
{
	char buf[24];
	int rc, n;

	if (s->db->kind == DB_SQLITE) {
		rc = sqlite3_bind_int64(s->lite, i, v);
		return rc == SQLITE_OK      ? FGW_OK
		       : rc == SQLITE_RANGE ? FGW_ERR_INVALID
		                            : FGW_ERR_NOMEM;
	}
	n = snprintf(buf, sizeof(buf), "%" PRId64, v);
	return dbpg_bind(s, i, buf, (size_t)n);
}

int
db_bind_int(struct db_stmt *s, int i, int v)
{
	return db_bind_int64(s, i, v);
}

int
db_bind_null(struct db_stmt *s, int i)
{
	return db_bind_textn(s, i, NULL, 0);
}

int
db_step(struct db_stmt *s)
{
	int rc;

	s->busy = 1;
	if (s->db->kind == DB_PG)
		return dbpg_step(s);
	rc = sqlite3_step(s->lite);
	if (rc == SQLITE_ROW)
		return DB_ROW;
	if (rc == SQLITE_DONE)
		return DB_DONE;
	/* The extended code: sqlite3_step's own is the primary one only
	 * for statements prepared without _v2/_v3. */
	rc = lite_fail(s->db, sqlite3_extended_errcode(s->db->lite));
	return rc == FGW_OK ? FGW_ERR_DB : rc;
}

int
db_step_later(struct db_stmt *s)
{
	if (s->db->kind == DB_PG) {
		s->busy = 1;
		return dbpg_step_later(s);
	}
	return db_step(s);
}

int
db_step_row(struct db_stmt *s)
{
	int rc = db_step(s);
	return rc == DB_ROW ? 0 : rc == DB_DONE ? FGW_ERR_NOT_FOUND : FGW_ERR_DB;
}

const char *
db_col_text(struct db_stmt *s, int i)
{
	if (s->db->kind == DB_PG)
		return dbpg_col_text(s, i);
	return (const char *)sqlite3_column_text(s->lite, i);
}

size_t
db_col_bytes(struct db_stmt *s, int i)
{
	if (s->db->kind == DB_PG)
		return dbpg_col_bytes(s, i);
	(void)sqlite3_column_text(s->lite, i); /* bytes of the text form */
	return (size_t)sqlite3_column_bytes(s->lite, i);
}

int64_t
db_col_int64(struct db_stmt *s, int i)
{
	const char *t;

	if (s->db->kind == DB_SQLITE)
		return sqlite3_column_int64(s->lite, i);
	if ((t = dbpg_col_text(s, i)) == NULL)
		return 0;
	if (t[0] == 't' && t[1] == '\0')
		return 1;
	if (t[0] == 'f' && t[1] == '\0')
		return 0;
	return strtoll(t, NULL, 10);
}

int
db_col_int(struct db_stmt *s, int i)
{
	if (s->db->kind == DB_SQLITE)
		return sqlite3_column_int(s->lite, i);
	return (int)db_col_int64(s, i);
}

double
db_col_double(struct db_stmt *s, int i)
{
	const char *t;

	if (s->db->kind == DB_SQLITE)
		return sqlite3_column_double(s->lite, i);
	t = dbpg_col_text(s, i);
	return t != NULL ? strtod(t, NULL) : 0.0;
}

int
db_col_is_null(struct db_stmt *s, int i)
{
	if (s->db->kind == DB_PG)
		return dbpg_col_text(s, i) == NULL;
	return sqlite3_column_type(s->lite, i) == SQLITE_NULL;
}

int
db_col_is_integer(struct db_stmt *s, int i)
{
	const char *t;
	char *end;

	if (s->db->kind == DB_SQLITE)
		return sqlite3_column_type(s->lite, i) == SQLITE_INTEGER;
	if ((t = dbpg_col_text(s, i)) == NULL || *t == '\0')
		return 0;
	(void)strtoll(t, &end, 10);
	return *end == '\0';
}

int
db_col_count(struct db_stmt *s)
{
	if (s->db->kind == DB_PG)
		return dbpg_col_count(s);
	return sqlite3_column_count(s->lite);
}

const char *
db_col_name(struct db_stmt *s, int i)
{
	if (s->db->kind == DB_PG)
		return dbpg_col_name(s, i);
	return sqlite3_column_name(s->lite, i);
}

int64_t
db_changes(struct db *db)
{
	if (db->kind == DB_PG)
		return db->changes;
	return sqlite3_changes64(db->lite);
}

enum db_fail
db_last_fail(struct db *db)
{
	return db->fail;
}

const char *
db_errmsg(struct db *db)
{
	if (db->kind == DB_SQLITE && db->fail == DB_FAIL_NONE)
		return sqlite3_errmsg(db->lite);
	return db->errmsg;
}

/* ---- helpers ----------------------------------------------------------- */

/* Both copies of text column i into dst[cap]: NULL reads as "". A value
 * of cap bytes or more is FGW_ERR_TOO_LARGE, with its first cap - 1 bytes
 * in dst when truncate is set, else dst left as it was. No room at all
 * (cap 0) writes nothing. */
static int
col_copy(struct db_stmt *s, int i, char *dst, size_t cap, int truncate)
{
	const char *t;
	size_t n;
	int r = 0;

	if (cap == 0)
		return FGW_ERR_TOO_LARGE;
	if (db_col_is_null(s, i)) {
		dst[0] = '\0';
		return 0;
	}
	if ((t = db_col_text(s, i)) == NULL) {
		dst[0] = '\0'; /* callers that ignore the result see "" */
		return FGW_ERR_NOMEM;
	}
	if ((n = db_col_bytes(s, i)) >= cap) {
		if (!truncate)
			return FGW_ERR_TOO_LARGE;
		n = cap - 1;
		r = FGW_ERR_TOO_LARGE;
	}
	memcpy(dst, t, n);
	dst[n] = '\0';
	return r;
}

int
db_col_copy(struct db_stmt *s, int i, char *dst, size_t cap)
{
	return col_copy(s, i, dst, cap, 1);
}

/* Prepares the literal sql, binds ?1 = a and steps once: FGW_OK with a
 * row, FGW_ERR_NOT_FOUND, or the step's error; the caller reads the row
 * and releases *s. */
static int
step_one(struct db *db, const char *sql, const char *a, struct db_stmt **s)
{
	int r;
	if ((r = db_prepare(db, sql, s)) != 0)
		return r;
	if ((r = db_bind_text(*s, 1, a)) != 0)
		return r;
	r = db_step(*s);
	return r == DB_ROW ? FGW_OK : r == DB_DONE ? FGW_ERR_NOT_FOUND : r;
}

int
db_text_of(struct db *db, const char *sql, const char *a, char *out, size_t cap)
{
	struct db_stmt *s = NULL;
	int r = step_one(db, sql, a, &s);
	if (r == FGW_OK)
		r = db_col_copy(s, 0, out, cap);
	db_release(s);
	return r;
}

int
db_int64_of(struct db *db, const char *sql, const char *a, int64_t *v)
{
	struct db_stmt *s = NULL;
	int r = step_one(db, sql, a, &s);
	*v = r == FGW_OK ? db_col_int64(s, 0) : 0;
	db_release(s);
	return r;
}

int
db_col_copy_exact(struct db_stmt *s, int i, char *dst, size_t cap)
{
	return col_copy(s, i, dst, cap, 0);
}

int
db_col_dup(struct db_stmt *s, int i, char **out)
{
	const char *t;
	size_t n;

	*out = NULL;
	if (db_col_is_null(s, i))
		return 0;
	if ((t = db_col_text(s, i)) == NULL)
		return FGW_ERR_NOMEM;
	n = db_col_bytes(s, i);
	if ((*out = malloc(n + 1)) == NULL)
		return FGW_ERR_NOMEM;
	memcpy(*out, t, n);
	(*out)[n] = '\0';
	return 0;
}

int
db_bind_opt(struct db_stmt *s, int i, const char *p)
{
	if (p == NULL)
		return db_bind_null(s, i);
	return db_bind_text(s, i, p);
}
