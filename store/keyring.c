/*
 * store/keyring.c — the key_ring table (store/keyring.h): the ring
 * document per generation, read and appended for crypto/keys.c through
 * the callbacks of struct keyring_source.
 *
 * A connection that failed (the server restarted, the network dropped)
 * is closed and opened again on the next call, so the instances' poll
 * recovers by itself; the DSN is kept for that (wiped on close) and never
 * logged.
 */
#define LOG_MODULE "store"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"
#include "store/keyring.h"
#include "store/pg.h"
#include "store/schema.h"

/* The largest ring document accepted (crypto/keys_int.h writes at most
 * RING_MAX_BYTES; a row larger than this is not a ring). */
#define RING_TEXT_MAX (1024 * 1024)

struct store_ring {
	pthread_mutex_t mu;
	struct db *db; /* NULL after a failure: reopened on the next call */
	char *dsn;     /* PostgreSQL: a copy (wiped on close), or NULL */
	char *dsn_file;
	bool production;
	bool read_only;
	char *path; /* SQLite */
};

static void
ring_db_drop(struct store_ring *r)
{
	db_close(r->db);
	r->db = NULL;
}

/* The connection, opened (again) when there is none. Called with mu. */
static int
ring_db(struct store_ring *r, struct db **out)
{
	PGconn *c = NULL;
	sqlite3 *h = NULL;
	int rc;

	*out = NULL;
	if (r->db != NULL) {
		*out = r->db;
		return FGW_OK;
	}
	if (r->path != NULL) {
		if (sqlite3_open_v2(r->path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
		                    NULL) != SQLITE_OK) {
			log_error("key ring: opening the database failed: %s",
			          h != NULL ? sqlite3_errmsg(h) : "out of memory");
			sqlite3_close(h);
			return FGW_ERR_DB;
		}
		sqlite3_busy_timeout(h, 5000);
		if ((rc = schema_migrate(h)) != FGW_OK) {
			sqlite3_close(h);
			return rc;
		}
		if ((rc = db_wrap_sqlite(h, 1, &r->db)) != FGW_OK)
			return rc;
	} else {
		struct pg_opts po = { .dsn = r->dsn,
			                  .dsn_file = r->dsn_file,
			                  .production = r->production };
		if ((rc = pg_connect(&po, &c)) != FGW_OK)
			return rc;
		/* The table must exist before the first instance reads its ring,
		 * which is before its store is opened. */
		if (!r->read_only && (rc = pg_migrate(c)) != FGW_OK) {
			PQfinish(c);
			return rc;
		}
		if ((rc = db_wrap_pg(c, &r->db)) != FGW_OK)
			return rc;
	}
	*out = r->db;
	return FGW_OK;
}

/* After a failed statement: a connection that broke is dropped so the
 * next call opens a new one. */
static void
ring_failed(struct store_ring *r, const char *what)
{
	if (r->db == NULL)
		return;
	log_error("key ring: %s: %s", what, db_errmsg(r->db));
	if (db_in_txn(r->db))
		(void)db_exec(r->db, "ROLLBACK");
	if (db_last_fail(r->db) == DB_FAIL_STORAGE)
		ring_db_drop(r);
}

static int
ring_new(struct store_ring **out, struct store_ring **rp)
{
	struct store_ring *r;

	*out = NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return FGW_ERR_NOMEM;
	if (pthread_mutex_init(&r->mu, NULL) != 0) {
		free(r);
		return FGW_ERR_NOMEM;
	}
	*rp = r;
	return FGW_OK;
}

/* The end of both opens: connects r, then hands it to *out; r is closed
 * when the connection fails. */
static int
ring_opened(struct store_ring *r, struct store_ring **out)
{
	struct db *db;
	int rc;

	if ((rc = ring_db(r, &db)) != FGW_OK) {
		store_ring_close(r);
		return rc;
	}
	*out = r;
	return FGW_OK;
}

int
store_ring_open(const struct store_ring_opts *o, struct store_ring **out)
{
	struct store_ring *r = NULL;
	int rc;

	if (o == NULL || (o->dsn == NULL) == (o->dsn_file == NULL))
		return FGW_ERR_INVALID;
	if ((rc = ring_new(out, &r)) != FGW_OK)
		return rc;
	r->production = o->production;
	r->read_only = o->read_only;
	if ((o->dsn != NULL && (r->dsn = strdup(o->dsn)) == NULL) ||
	    (o->dsn_file != NULL && (r->dsn_file = strdup(o->dsn_file)) == NULL)) {
		rc = FGW_ERR_NOMEM;
		goto out;
	}
	rc = ring_opened(r, out);
	r = NULL; /* ring_opened's now */
out:
	store_ring_close(r);
	return rc;
}

int
store_ring_open_sqlite(const char *path, struct store_ring **out)
{
	struct store_ring *r = NULL;
	int rc;

	if (path == NULL)
		return FGW_ERR_INVALID;
	if ((rc = ring_new(out, &r)) != FGW_OK)
		return rc;
	if ((r->path = strdup(path)) == NULL) {
		rc = FGW_ERR_NOMEM;
		goto out;
	}
	rc = ring_opened(r, out);
	r = NULL; /* ring_opened's now */
out:
	store_ring_close(r);
	return rc;
}

void
store_ring_close(struct store_ring *r)
{
	if (r == NULL)
		return;
	ring_db_drop(r);
	if (r->dsn != NULL)
		fgw_freezero(r->dsn, strlen(r->dsn));
	free(r->dsn_file);
	free(r->path);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* Whether the key_ring table is missing (a database before v18 that
 * --check looks at without migrating it). */
static int
read_only_missing(struct db *db)
{
	struct db_stmt *s = NULL;
	int missing = 0;

	if (db_prepare(db, "SELECT to_regclass('key_ring') IS NULL", &s) == FGW_OK &&
	    db_step(s) == DB_ROW)
		missing = db_col_int(s, 0);
	db_release(s);
	return missing;
}

/* The newest generation on db (0: none). */
static int
newest(const struct store_ring *r, struct db *db, uint64_t *gen)
{
	struct db_stmt *s = NULL;
	int64_t v = 0;
	int rc;

	*gen = 0;
	if (r->read_only && db_kind(db) == DB_PG && read_only_missing(db))
		return FGW_OK;
	if ((rc = db_prepare(db, "SELECT COALESCE(MAX(generation), 0) FROM key_ring", &s)) !=
	    FGW_OK)
		return rc;
	if (db_step(s) == DB_ROW) {
		v = db_col_int64(s, 0);
		*gen = v > 0 ? (uint64_t)v : 0;
	} else
		rc = FGW_ERR_DB;
	db_release(s);
	return rc;
}

int
store_ring_generation(void *ctx, uint64_t *generation)
{
	struct store_ring *r = ctx;
	struct db *db;
	int rc;

	*generation = 0;
	pthread_mutex_lock(&r->mu);
	if ((rc = ring_db(r, &db)) == FGW_OK && (rc = newest(r, db, generation)) != FGW_OK) {
		ring_failed(r, "reading the ring's generation");
		rc = FGW_ERR_DB;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int
store_ring_load(void *ctx, char **text, size_t *len, uint64_t *generation)
{
	static const char sql[] = "SELECT generation, ring_json FROM key_ring"
	                          " ORDER BY generation DESC LIMIT 1";
	struct store_ring *r = ctx;
	struct db_stmt *s = NULL;
	struct db *db;
	const char *t;
	size_t n;
	int rc, step;

	*text = NULL;
	*len = 0;
	*generation = 0;
	pthread_mutex_lock(&r->mu);
	if ((rc = ring_db(r, &db)) != FGW_OK)
		goto out;
	if ((rc = db_prepare(db, sql, &s)) != FGW_OK)
		goto fail;
	if ((step = db_step(s)) == DB_DONE) {
		rc = FGW_ERR_NOT_FOUND;
		goto out;
	}
	if (step != DB_ROW)
		goto fail;
	t = db_col_text(s, 1);
	n = db_col_bytes(s, 1);
	if (db_col_int64(s, 0) <= 0 || t == NULL || n > RING_TEXT_MAX) {
		log_error("key ring: the newest key_ring row is not a ring");
		rc = FGW_ERR_INVALID;
		goto out;
	}
	if ((*text = malloc(n + 1)) == NULL) {
		rc = FGW_ERR_NOMEM;
		goto out;
	}
	memcpy(*text, t, n);
	(*text)[n] = '\0';
	*len = n;
	*generation = (uint64_t)db_col_int64(s, 0);
	rc = FGW_OK;
	goto out;
fail:
	ring_failed(r, "reading the ring");
	rc = FGW_ERR_DB;
out:
	db_release(s);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int
store_ring_save(void *ctx, uint64_t prev, uint64_t generation, const char *text,
                size_t len)
{
	static const char insert[] = "INSERT INTO key_ring (generation, ring_json, created_at)"
	                             " VALUES (?1, ?2, ?3)";
	struct store_ring *r = ctx;
	struct db_stmt *s = NULL;
	struct db *db;
	uint64_t have = 0;
	int rc;

	if (text == NULL || len > RING_TEXT_MAX || generation <= prev ||
	    generation > (uint64_t)INT64_MAX)
		return FGW_ERR_INVALID;
	if (r->read_only)
		return FGW_ERR_STATE;
	pthread_mutex_lock(&r->mu);
	if ((rc = ring_db(r, &db)) != FGW_OK)
		goto out;
	/* One writer of the ring at a time across instances: the lock is
	 * held to COMMIT, and under READ COMMITTED the generation read after
	 * waiting for it sees the other writer's row. (SQLite: BEGIN
	 * IMMEDIATE is the lock.) The primary key would refuse a second row
	 * of one generation anyway; the lock makes the loser's answer a
	 * clean conflict instead of a failed INSERT. */
	if ((rc = db_exec(db, db_kind(db) == DB_PG ? "BEGIN" : "BEGIN IMMEDIATE")) != FGW_OK)
		goto fail;
	if (db_kind(db) == DB_PG) {
		if (db_prepare(db, "SELECT pg_advisory_xact_lock(?1)", &s) != FGW_OK ||
		    db_bind_int64(s, 1, PG_LOCK_KEYRING) != FGW_OK || db_step(s) != DB_ROW)
			goto fail;
		db_release(s);
		s = NULL;
	}
	if ((rc = newest(r, db, &have)) != FGW_OK)
		goto fail;
	if (have != prev) {
		(void)db_exec(db, "ROLLBACK");
		rc = FGW_ERR_CONFLICT;
		goto out;
	}
	if ((rc = db_prepare(db, insert, &s)) != FGW_OK ||
	    (rc = db_bind_int64(s, 1, (int64_t)generation)) != FGW_OK ||
	    (rc = db_bind_textn(s, 2, text, len)) != FGW_OK ||
	    (rc = db_bind_int64(s, 3, fgw_now_ms())) != FGW_OK || db_step(s) != DB_DONE)
		goto fail;
	db_release(s);
	s = NULL;
	if ((rc = db_exec(db, "COMMIT")) != FGW_OK)
		goto fail;
	rc = FGW_OK;
	goto out;
fail:
	db_release(s);
	s = NULL;
	ring_failed(r, "writing the ring");
	rc = FGW_ERR_DB;
out:
	db_release(s);
	pthread_mutex_unlock(&r->mu);
	return rc;
}
