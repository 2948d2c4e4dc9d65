/*
 * tests/unit/test_db.c — store/db.h, one test body over both backends.
 *
 * Every case runs on SQLite (a new file under TMPDIR, always) as NAME_sqlite
 * and, when FLAIRGW_TEST_PG_DSN names a database, on PostgreSQL as NAME_pg
 * (tests/integration/test_db_pg.py starts a server and runs this binary
 * with it). Where the backends differ on purpose (PostgreSQL's t/f
 * booleans, a failed statement spoiling its transaction) the case says so
 * and checks each one's behaviour.
 */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "store/db.h"
#include "store/pg.h"
#include "tests/unit/tt.h"

#define PG_DSN_ENV "FLAIRGW_TEST_PG_DSN"

/* A value that must never reach an error message (a stand-in for a card
 * fingerprint or a key). */
#define SECRET_VALUE "4111111111111111"

static char lite_path[512];

static void
drop_sqlite_file(void)
{
	char p[600];

	if (lite_path[0] == '\0')
		return;
	unlink(lite_path);
	snprintf(p, sizeof(p), "%s-wal", lite_path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", lite_path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-journal", lite_path);
	unlink(p);
	lite_path[0] = '\0';
}

static struct db *
open_sqlite(void)
{
	const char *tmp = getenv("TMPDIR");
	sqlite3 *h = NULL;
	struct db *db = NULL;
	int fd;

	snprintf(lite_path, sizeof(lite_path), "%s/fgw-test-db-XXXXXX",
	         tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if ((fd = mkstemp(lite_path)) < 0) {
		lite_path[0] = '\0';
		return NULL;
	}
	close(fd);
	if (sqlite3_open_v2(lite_path, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		sqlite3_close(h);
		return NULL;
	}
	if (db_wrap_sqlite(h, 1, &db) != 0)
		return NULL;
	return db;
}

static PGconn *
connect_pg(void)
{
	struct pg_opts o = { .dsn = getenv(PG_DSN_ENV) };
	PGconn *c = NULL;

	return pg_connect(&o, &c) == 0 ? c : NULL;
}

static struct db *
open_pg(void)
{
	PGconn *c = connect_pg();
	struct db *db = NULL;

	if (c == NULL || db_wrap_pg(c, &db) != 0)
		return NULL;
	return db;
}

/* The scratch tables, in the DDL both backends take. */
static int
make_tables(struct db *db)
{
	static const char *const ddl[] = {
		"DROP TABLE IF EXISTS t_db",
		"DROP TABLE IF EXISTS t_quote",
		"CREATE TABLE t_db (id bigint PRIMARY KEY NOT NULL, name text UNIQUE,"
		" n bigint, flag smallint NOT NULL DEFAULT 0 CHECK (flag IN (0, 1)))",
		"CREATE TABLE t_quote (\"c?1\" text, \"it\"\"s\" text)",
	};
	size_t i;

	for (i = 0; i < sizeof(ddl) / sizeof(ddl[0]); i++)
		if (db_exec(db, ddl[i]) != 0) {
			fprintf(stderr, "  %s: %s\n", ddl[i], db_errmsg(db));
			return -1;
		}
	return 0;
}

static int
run_on(int pg, int (*body)(struct db *))
{
	struct db *db = pg ? open_pg() : open_sqlite();
	int r;

	if (db == NULL) {
		fprintf(stderr, "  cannot open the %s database\n", pg ? "PostgreSQL" : "SQLite");
		drop_sqlite_file();
		return 1;
	}
	r = make_tables(db) == 0 ? body(db) : 1;
	db_close(db);
	drop_sqlite_file();
	return r;
}

static int
is_pg(struct db *db)
{
	return db_kind(db) == DB_PG;
}

/* Inserts (id, name, n) through a cached statement. */
static int
insert_row(struct db *db, int64_t id, const char *name, int64_t n)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db, "INSERT INTO t_db (id, name, n) VALUES (?1, ?2, ?3)", &s)) !=
	    0)
		return r;
	if ((r = db_bind_int64(s, 1, id)) == 0 && (r = db_bind_text(s, 2, name)) == 0 &&
	    (r = db_bind_int64(s, 3, n)) == 0)
		r = db_step(s);
	db_release(s);
	return r;
}

static int64_t
count_rows(struct db *db)
{
	int64_t v = -1;

	if (db_int64_of(db, "SELECT COUNT(*) FROM t_db WHERE COALESCE(name, '') <> ?1",
	                "#none#", &v) != 0)
		return -1;
	return v;
}

/* ?N outside quotes, identifiers and comments; repeated, out of order,
 * bare, numbers of more than one digit, gaps. */
static int
c_rewrite(struct db *db)
{
	struct db_stmt *s = NULL;
	char v[16];
	int i;

	TT_BEGIN;
	/* Out of order and repeated: ?2 twice, ?1 once. */
	CHECK_EQ_INT(db_prepare(db, "SELECT ?2, ?1, ?2", &s), 0);
	CHECK_EQ_INT(db_bind_text(s, 1, "a"), 0);
	CHECK_EQ_INT(db_bind_text(s, 2, "b"), 0);
	CHECK_EQ_INT(db_bind_text(s, 3, "c"), FGW_ERR_INVALID);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_STR(db_col_text(s, 0), "b");
	CHECK_STR(db_col_text(s, 1), "a");
	CHECK_STR(db_col_text(s, 2), "b");
	CHECK_EQ_INT(db_step(s), DB_DONE);
	db_release(s);
	s = NULL;

	/* A ? in a string, a doubled quote, an identifier, and comments of
	 * both kinds is no parameter: the statement has ?1 only. */
	CHECK_EQ_INT(db_prepare(db,
	                        "SELECT 'it''s ?2' AS a, ?1 AS \"b?3\" -- ?4 ?\n"
	                        "  , /* ?5 ' ? */ 'x?' || ?1 AS c",
	                        &s),
	             0);
	CHECK_EQ_INT(db_bind_text(s, 1, "p"), 0);
	CHECK_EQ_INT(db_bind_text(s, 2, "q"), FGW_ERR_INVALID);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_count(s), 3);
	CHECK_STR(db_col_text(s, 0), "it's ?2");
	CHECK_STR(db_col_text(s, 1), "p");
	CHECK_STR(db_col_name(s, 1), "b?3");
	CHECK_STR(db_col_text(s, 2), "x?p");
	db_release(s);
	s = NULL;

	/* Quoted column names with ? and "" in them. */
	CHECK_EQ_INT(db_prepare(db,
	                        "INSERT INTO t_quote (\"c?1\", \"it\"\"s\") VALUES (?, ?)",
	                        &s),
	             0);
	CHECK_EQ_INT(db_bind_text(s, 1, "one"), 0);
	CHECK_EQ_INT(db_bind_text(s, 2, "two"), 0);
	CHECK_EQ_INT(db_bind_text(s, 3, "three"), FGW_ERR_INVALID);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(db_prepare(db, "SELECT \"it\"\"s\" FROM t_quote WHERE \"c?1\" = ?", &s),
	             0);
	CHECK_EQ_INT(db_bind_text(s, 1, "one"), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_STR(db_col_text(s, 0), "two");
	db_release(s);
	s = NULL;

	/* ?12 is twelve, not ?1 then 2: the bare ? after it is 13. */
	CHECK_EQ_INT(db_prepare(db, "SELECT ?12, ?, ?2", &s), 0);
	for (i = 1; i <= 13; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		CHECK_EQ_INT(db_bind_text(s, i, v), 0);
	}
	CHECK_EQ_INT(db_bind_text(s, 14, "v14"), FGW_ERR_INVALID);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_STR(db_col_text(s, 0), "v12");
	CHECK_STR(db_col_text(s, 1), "v13");
	CHECK_STR(db_col_text(s, 2), "v2");
	db_release(s);
	s = NULL;

	/* Bare ? count on from the highest so far; gaps are allowed. */
	CHECK_EQ_INT(db_prepare(db, "SELECT ?, ?, ?5, ?", &s), 0);
	for (i = 1; i <= 6; i++) {
		snprintf(v, sizeof(v), "w%d", i);
		CHECK_EQ_INT(db_bind_text(s, i, v), 0);
	}
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_STR(db_col_text(s, 0), "w1");
	CHECK_STR(db_col_text(s, 1), "w2");
	CHECK_STR(db_col_text(s, 2), "w5");
	CHECK_STR(db_col_text(s, 3), "w6");
	db_release(s);
	s = NULL;

	/* ?0 is no parameter number. */
	CHECK(db_prepare(db, "SELECT ?0", &s) != 0);
	CHECK(s == NULL);
end:
	db_release(s);
	TT_END;
}

static int
c_nulls(struct db *db)
{
	struct db_stmt *s = NULL;

	TT_BEGIN;
	CHECK_EQ_INT(db_prepare(db, "INSERT INTO t_db (id, name, n) VALUES (?1, ?2, ?3)", &s),
	             0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 1), 0);
	CHECK_EQ_INT(db_bind_null(s, 2), 0);
	CHECK_EQ_INT(db_bind_text(s, 3, NULL), 0);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(db_prepare(db, "INSERT INTO t_db (id, name, n) VALUES (?1, ?2, ?3)", &s),
	             0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 2), 0);
	CHECK_EQ_INT(db_bind_text_or_null(s, 2, ""), 0);
	CHECK_EQ_INT(db_bind_int(s, 3, 7), 0);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	db_release(s);
	s = NULL;

	CHECK_EQ_INT(db_prepare(db, "SELECT name, n, id FROM t_db ORDER BY id", &s), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK(db_col_text(s, 0) == NULL);
	CHECK_EQ_INT(db_col_is_null(s, 0), 1);
	CHECK_EQ_INT(db_col_bytes(s, 0), 0);
	CHECK_EQ_INT(db_col_is_null(s, 1), 1);
	CHECK_EQ_INT(db_col_int64(s, 1), 0);
	CHECK_EQ_INT(db_col_is_null(s, 2), 0);
	CHECK_EQ_INT(db_col_int64(s, 2), 1);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_is_null(s, 0), 1);
	CHECK_EQ_INT(db_col_int(s, 1), 7);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	db_release(s);
	s = NULL;

	/* A NULL parameter compares as NULL: no row. */
	CHECK_EQ_INT(db_prepare(db, "SELECT id FROM t_db WHERE n = ?1", &s), 0);
	CHECK_EQ_INT(db_bind_null(s, 1), 0);
	CHECK_EQ_INT(db_step(s), DB_DONE);
end:
	db_release(s);
	TT_END;
}

static int
c_int64_extremes(struct db *db)
{
	static const int64_t vals[] = { INT64_MIN, INT64_MIN + 1,   -1,       0,
		                            1,         INT32_MAX + 1LL, INT64_MAX };
	struct db_stmt *s = NULL;
	size_t i;
	char name[16];

	TT_BEGIN;
	for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		snprintf(name, sizeof(name), "x%zu", i);
		CHECK_EQ_INT(insert_row(db, (int64_t)i, name, vals[i]), DB_DONE);
	}
	CHECK_EQ_INT(db_prepare(db, "SELECT n, id FROM t_db ORDER BY n", &s), 0);
	for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		CHECK_EQ_INT(db_step(s), DB_ROW);
		CHECK(db_col_int64(s, 0) == vals[i]);
		CHECK_EQ_INT(db_col_int64(s, 1), (int64_t)i);
	}
	CHECK_EQ_INT(db_step(s), DB_DONE);
	db_release(s);
	s = NULL;
	/* And as parameters compared with the column. */
	CHECK_EQ_INT(db_prepare(db, "SELECT id FROM t_db WHERE n = ?1 OR n = ?2 ORDER BY id",
	                        &s),
	             0);
	CHECK_EQ_INT(db_bind_int64(s, 1, INT64_MIN), 0);
	CHECK_EQ_INT(db_bind_int64(s, 2, INT64_MAX), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_int64(s, 0), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_int64(s, 0), 6);
	CHECK_EQ_INT(db_step(s), DB_DONE);
end:
	db_release(s);
	TT_END;
}

/* Comparisons read as 1/0 on both; PostgreSQL's raw text is t/f. */
static int
c_booleans(struct db *db)
{
	struct db_stmt *s = NULL;

	TT_BEGIN;
	CHECK_EQ_INT(insert_row(db, 1, "a", 5), DB_DONE);
	CHECK_EQ_INT(db_prepare(db, "SELECT n > ?1, n = ?1, n < ?1 FROM t_db WHERE id = 1",
	                        &s),
	             0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 5), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_int(s, 0), 0);
	CHECK_EQ_INT(db_col_int(s, 1), 1);
	CHECK_EQ_INT(db_col_int64(s, 1), 1);
	CHECK_EQ_INT(db_col_int(s, 2), 0);
	if (is_pg(db)) {
		CHECK_STR(db_col_text(s, 0), "f");
		CHECK_STR(db_col_text(s, 1), "t");
	} else {
		CHECK_STR(db_col_text(s, 0), "0");
		CHECK_STR(db_col_text(s, 1), "1");
	}
end:
	db_release(s);
	TT_END;
}

/* db_step_row: 0 with the row ready, FGW_ERR_NOT_FOUND for none, and
 * FGW_ERR_DB for a failed step (a duplicate here), on both backends. */
static int
c_step_row(struct db *db)
{
	struct db_stmt *s = NULL;

	TT_BEGIN;
	CHECK_EQ_INT(insert_row(db, 1, "a", 7), DB_DONE);
	CHECK_EQ_INT(db_prepare(db, "SELECT n FROM t_db WHERE id = ?1", &s), 0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 1), 0);
	CHECK_EQ_INT(db_step_row(s), 0);
	CHECK_EQ_INT(db_col_int64(s, 0), 7);
	db_reset(s);
	CHECK_EQ_INT(db_bind_int64(s, 1, 2), 0);
	CHECK_EQ_INT(db_step_row(s), FGW_ERR_NOT_FOUND);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(db_prepare(db, "INSERT INTO t_db (id, name, n) VALUES (1, 'b', 1)", &s),
	             0);
	CHECK_EQ_INT(db_step_row(s), FGW_ERR_DB);
end:
	db_release(s);
	TT_END;
}

/* A duplicate is FGW_ERR_EXISTS; the message names the constraint, never
 * the value. */
static int
c_duplicate(struct db *db)
{
	TT_BEGIN;
	CHECK_EQ_INT(insert_row(db, 1, SECRET_VALUE, 1), DB_DONE);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_NONE);
	CHECK_EQ_INT(insert_row(db, 2, SECRET_VALUE, 2), FGW_ERR_EXISTS);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_DUPLICATE);
	CHECK(db_errmsg(db)[0] != '\0');
	CHECK(strstr(db_errmsg(db), SECRET_VALUE) == NULL);
	/* The primary key too. */
	CHECK_EQ_INT(insert_row(db, 1, "other", 3), FGW_ERR_EXISTS);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_DUPLICATE);
	CHECK_EQ_INT(count_rows(db), 1);
end:
	TT_END;
}

/* CHECK and NOT NULL are FGW_ERR_INVALID. */
static int
c_constraint(struct db *db)
{
	struct db_stmt *s = NULL;

	TT_BEGIN;
	CHECK_EQ_INT(db_prepare(db, "INSERT INTO t_db (id, name, flag) VALUES (?1, ?2, ?3)",
	                        &s),
	             0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 1), 0);
	CHECK_EQ_INT(db_bind_text(s, 2, SECRET_VALUE), 0);
	CHECK_EQ_INT(db_bind_int(s, 3, 2), 0);
	CHECK_EQ_INT(db_step(s), FGW_ERR_INVALID);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_CONSTRAINT);
	CHECK(strstr(db_errmsg(db), SECRET_VALUE) == NULL);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(db_prepare(db, "INSERT INTO t_db (id, name, flag) VALUES (?1, ?2, ?3)",
	                        &s),
	             0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 1), 0);
	CHECK_EQ_INT(db_bind_text(s, 2, SECRET_VALUE), 0);
	CHECK_EQ_INT(db_bind_null(s, 3), 0);
	CHECK_EQ_INT(db_step(s), FGW_ERR_INVALID);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_CONSTRAINT);
	CHECK(strstr(db_errmsg(db), SECRET_VALUE) == NULL);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(count_rows(db), 0);

	/* PostgreSQL quotes a value it cannot take in the primary message
	 * itself (SQLite stores it with its type affinity). */
	if (is_pg(db)) {
		CHECK_EQ_INT(db_prepare(db, "INSERT INTO t_db (id, n) VALUES (?1, ?2)", &s), 0);
		CHECK_EQ_INT(db_bind_int64(s, 1, 1), 0);
		CHECK_EQ_INT(db_bind_text(s, 2, "x" SECRET_VALUE), 0);
		CHECK_EQ_INT(db_step(s), FGW_ERR_DB);
		CHECK_EQ_INT(db_last_fail(db), DB_FAIL_OTHER);
		CHECK(strstr(db_errmsg(db), SECRET_VALUE) == NULL);
		CHECK(strstr(db_errmsg(db), "22P02") != NULL);
	}
end:
	db_release(s);
	TT_END;
}

/* BEGIN; a statement fails after a SAVEPOINT; ROLLBACK TO recovers the
 * transaction, and what came before the savepoint commits. */
static int
c_savepoint(struct db *db)
{
	TT_BEGIN;
	CHECK_EQ_INT(db_in_txn(db), 0);
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(db_in_txn(db), 1);
	CHECK_EQ_INT(insert_row(db, 1, "a", 1), DB_DONE);
	CHECK_EQ_INT(db_exec(db, "SAVEPOINT job"), 0);
	CHECK_EQ_INT(insert_row(db, 2, "a", 2), FGW_ERR_EXISTS);
	CHECK_EQ_INT(db_in_txn(db), 1);
	if (is_pg(db)) {
		/* The failure spoils the transaction until ROLLBACK TO. */
		CHECK_EQ_INT(insert_row(db, 3, "c", 3), FGW_ERR_DB);
		CHECK(strstr(db_errmsg(db), "25P02") != NULL);
	}
	CHECK_EQ_INT(db_exec(db, "ROLLBACK TO job"), 0);
	CHECK_EQ_INT(db_exec(db, "RELEASE job"), 0);
	CHECK_EQ_INT(insert_row(db, 4, "d", 4), DB_DONE);
	CHECK_EQ_INT(db_exec(db, "COMMIT"), 0);
	CHECK_EQ_INT(db_in_txn(db), 0);
	CHECK_EQ_INT(count_rows(db), 2);
end:
	TT_END;
}

/* db_step_later on the literal sql (no parameters). */
static int
step_later(struct db *db, const char *sql)
{
	struct db_stmt *s = NULL;
	int r;

	if ((r = db_prepare(db, sql, &s)) != 0)
		return r;
	r = db_step_later(s);
	db_release(s);
	return r;
}

/* SAVEPOINT and RELEASE through db_step_later, as the writer runs them: on
 * PostgreSQL they wait and go with the next statement; a failure of one
 * of them then fails that statement and rolls the whole transaction back
 * (SQLite reports it at once). */
static int
c_step_later(struct db *db)
{
	struct db_stmt *s = NULL;
	int i;

	TT_BEGIN;
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(step_later(db, "SAVEPOINT job"), DB_DONE);
	CHECK_EQ_INT(insert_row(db, 1, "a", 1), DB_DONE);
	CHECK_EQ_INT(step_later(db, "RELEASE job"), DB_DONE);
	/* A job refused: its savepoint is there to roll back to. */
	CHECK_EQ_INT(step_later(db, "SAVEPOINT job"), DB_DONE);
	CHECK_EQ_INT(insert_row(db, 2, "a", 2), FGW_ERR_EXISTS);
	CHECK_EQ_INT(db_exec(db, "ROLLBACK TO job"), 0);
	CHECK_EQ_INT(db_exec(db, "RELEASE job"), 0);
	/* A job that ran no statement at all, then more kept back than
	 * wait at once: all of them go, in order. */
	for (i = 0; i < 20; i++) {
		CHECK_EQ_INT(step_later(db, "SAVEPOINT job"), DB_DONE);
		CHECK_EQ_INT(step_later(db, "RELEASE job"), DB_DONE);
	}
	CHECK_EQ_INT(step_later(db, "SAVEPOINT job"), DB_DONE);
	CHECK_EQ_INT(insert_row(db, 3, "c", 3), DB_DONE);
	CHECK_EQ_INT(step_later(db, "RELEASE job"), DB_DONE);
	CHECK_EQ_INT(db_exec(db, "COMMIT"), 0);
	CHECK_EQ_INT(db_in_txn(db), 0);
	CHECK_EQ_INT(count_rows(db), 2);

	/* A statement not cached (the writer's are prepared once each),
	 * freed while kept back: it is sent first. */
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(db_prepare_once(db, "SAVEPOINT once", &s), 0);
	CHECK_EQ_INT(db_step_later(s), DB_DONE);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(insert_row(db, 3, "c", 3), FGW_ERR_EXISTS);
	CHECK_EQ_INT(db_exec(db, "ROLLBACK TO once"), 0);
	CHECK_EQ_INT(db_prepare_once(db, "SAVEPOINT twice", &s), 0);
	CHECK_EQ_INT(db_step_later(s), DB_DONE);
	db_reset(s);
	CHECK_EQ_INT(insert_row(db, 8, "h", 8), DB_DONE);
	CHECK_EQ_INT(db_step_later(s), DB_DONE);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(db_exec(db, "ROLLBACK TO twice"), 0);
	CHECK_EQ_INT(db_exec(db, "COMMIT"), 0);
	CHECK_EQ_INT(count_rows(db), 3);

	/* A kept statement that fails: nothing of the transaction stays. */
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(insert_row(db, 4, "d", 4), DB_DONE);
	if (is_pg(db)) {
		CHECK_EQ_INT(step_later(db, "RELEASE nosuch"), DB_DONE);
		CHECK_EQ_INT(insert_row(db, 5, "e", 5), FGW_ERR_DB);
		CHECK(strstr(db_errmsg(db), "3B001") != NULL);
		CHECK_EQ_INT(db_in_txn(db), 0);
	} else {
		CHECK_EQ_INT(step_later(db, "RELEASE nosuch"), FGW_ERR_DB);
		CHECK_EQ_INT(db_exec(db, "ROLLBACK"), 0);
	}
	CHECK_EQ_INT(count_rows(db), 3);

	/* The same before db_exec, and before a prepared COMMIT. */
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(insert_row(db, 6, "f", 6), DB_DONE);
	if (is_pg(db)) {
		CHECK_EQ_INT(step_later(db, "RELEASE nosuch"), DB_DONE);
		CHECK_EQ_INT(db_exec(db, "COMMIT"), FGW_ERR_DB);
		CHECK_EQ_INT(db_in_txn(db), 0);
		CHECK_EQ_INT(count_rows(db), 3);
		CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
		CHECK_EQ_INT(insert_row(db, 7, "g", 7), DB_DONE);
		CHECK_EQ_INT(step_later(db, "RELEASE nosuch"), DB_DONE);
		CHECK_EQ_INT(step_later(db, "COMMIT"), DB_DONE);
		CHECK_EQ_INT(db_exec(db, "SELECT 1"), FGW_ERR_DB);
		CHECK_EQ_INT(db_in_txn(db), 0);
	} else
		CHECK_EQ_INT(db_exec(db, "ROLLBACK"), 0);
	CHECK_EQ_INT(count_rows(db), 3);
end:
	db_release(s);
	if (db_in_txn(db))
		db_exec(db, "ROLLBACK");
	TT_END;
}

/* A COMMIT that cannot commit is an error, never a silent success: on
 * PostgreSQL a transaction with a failed statement (and no ROLLBACK TO)
 * ends in a rollback when COMMITted. On SQLite the failed statement alone
 * is undone and the rest commits. */
static int
c_commit_after_failure(struct db *db)
{
	struct db_stmt *s = NULL;

	TT_BEGIN;
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(insert_row(db, 1, "a", 1), DB_DONE);
	CHECK_EQ_INT(insert_row(db, 2, "a", 2), FGW_ERR_EXISTS);
	if (is_pg(db)) {
		CHECK_EQ_INT(db_exec(db, "COMMIT"), FGW_ERR_DB);
		CHECK_EQ_INT(db_in_txn(db), 0);
		CHECK_EQ_INT(count_rows(db), 0);
	} else {
		CHECK_EQ_INT(db_exec(db, "COMMIT"), 0);
		CHECK_EQ_INT(db_in_txn(db), 0);
		CHECK_EQ_INT(count_rows(db), 1);
	}
	/* The same through a prepared COMMIT, as the writer runs its own. */
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(insert_row(db, 3, "c", 3), DB_DONE);
	CHECK_EQ_INT(insert_row(db, 4, "c", 4), FGW_ERR_EXISTS);
	CHECK_EQ_INT(db_prepare(db, "COMMIT", &s), 0);
	CHECK_EQ_INT(db_step(s), is_pg(db) ? FGW_ERR_DB : DB_DONE);
	CHECK_EQ_INT(db_in_txn(db), 0);
	CHECK_EQ_INT(count_rows(db), is_pg(db) ? 0 : 2);
end:
	db_release(s);
	if (db_in_txn(db))
		db_exec(db, "ROLLBACK");
	TT_END;
}

static int
c_changes(struct db *db)
{
	struct db_stmt *s = NULL;
	int i;

	TT_BEGIN;
	for (i = 1; i <= 3; i++)
		CHECK_EQ_INT(insert_row(db, i,
		                        i == 1   ? "a"
		                        : i == 2 ? "b"
		                                 : "c",
		                        i * 10),
		             DB_DONE);
	CHECK_EQ_INT(db_changes(db), 1);
	CHECK_EQ_INT(db_prepare(db, "UPDATE t_db SET flag = 1 WHERE n > ?1", &s), 0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 15), 0);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	CHECK_EQ_INT(db_changes(db), 2);
	db_release(s);
	s = NULL;
	/* A SELECT leaves the count of the last change. */
	CHECK_EQ_INT(count_rows(db), 3);
	CHECK_EQ_INT(db_changes(db), 2);
	CHECK_EQ_INT(db_prepare(db, "DELETE FROM t_db WHERE n > ?1", &s), 0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 1000), 0);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	CHECK_EQ_INT(db_changes(db), 0);
	db_release(s);
	s = NULL;
	/* ON CONFLICT DO NOTHING changes nothing; RETURNING gives the row. */
	CHECK_EQ_INT(db_prepare(db,
	                        "INSERT INTO t_db (id, name, n) VALUES (?1, ?2, ?3) "
	                        "ON CONFLICT (id) DO NOTHING RETURNING id",
	                        &s),
	             0);
	CHECK_EQ_INT(db_bind_int64(s, 1, 1), 0);
	CHECK_EQ_INT(db_bind_text(s, 2, "dup"), 0);
	CHECK_EQ_INT(db_bind_int64(s, 3, 0), 0);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	CHECK_EQ_INT(db_changes(db), 0);
	db_reset(s);
	CHECK_EQ_INT(db_bind_int64(s, 1, 9), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_int64(s, 0), 9);
	CHECK_EQ_INT(db_step(s), DB_DONE);
	CHECK_EQ_INT(db_changes(db), 1);
	db_release(s);
	s = NULL;
	CHECK_EQ_INT(db_exec(db, "DELETE FROM t_db WHERE flag = 1"), 0);
	CHECK_EQ_INT(db_changes(db), 2);
end:
	db_release(s);
	TT_END;
}

/* The columns of a statement are known before its first step (a caller
 * finds the last one's index before reading rows), and after a reset. */
static int
c_columns_before_step(struct db *db)
{
	struct db_stmt *s = NULL;

	TT_BEGIN;
	CHECK_EQ_INT(insert_row(db, 1, "a", 10), DB_DONE);
	CHECK_EQ_INT(db_prepare(db, "SELECT id, name, n AS amount FROM t_db WHERE n >= ?1",
	                        &s),
	             0);
	CHECK_EQ_INT(db_col_count(s), 3);
	CHECK_STR(db_col_name(s, 2), "amount");
	CHECK_EQ_INT(db_bind_int64(s, 1, 5), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_count(s), 3);
	CHECK_EQ_INT(db_col_int64(s, db_col_count(s) - 1), 10);
	db_reset(s);
	CHECK_EQ_INT(db_col_count(s), 3);
	db_release(s);
	s = NULL;
	/* One that returns no rows has no columns. */
	CHECK_EQ_INT(db_prepare(db, "DELETE FROM t_db WHERE id = ?1", &s), 0);
	CHECK_EQ_INT(db_col_count(s), 0);
end:
	db_release(s);
	TT_END;
}

/* The server's prepared statements of this session (PostgreSQL). */
static int64_t
server_statements(struct db *db)
{
	int64_t v = -1;

	if (db_int64_of(db, "SELECT COUNT(*) FROM pg_prepared_statements WHERE name <> ?1",
	                "", &v) != 0)
		return -1;
	return v;
}

/* One literal, one prepared statement per connection, reused call after
 * call with fresh bindings; db_prepare_once's go away with db_release. */
static int
c_cached(struct db *db)
{
	static const char sql[] = "SELECT ?1 || '-' || ?2";
	struct db_stmt *s = NULL, *first = NULL, *again = NULL;
	int64_t before = 0;
	char v[32];
	int i;

	TT_BEGIN;
	CHECK_EQ_INT(db_prepare(db, sql, &s), 0);
	first = s;
	/* In use: a second db_prepare of the same literal is refused. */
	CHECK_EQ_INT(db_prepare(db, sql, &again), FGW_ERR_INTERNAL);
	db_release(s);
	s = NULL;
	if (is_pg(db))
		CHECK((before = server_statements(db)) > 0);
	for (i = 0; i < 5; i++) {
		CHECK_EQ_INT(db_prepare(db, sql, &s), 0);
		CHECK(s == first);
		CHECK(db_handle(s) == db);
		snprintf(v, sizeof(v), "%d", i);
		CHECK_EQ_INT(db_bind_text(s, 1, v), 0);
		/* Unbound on release: ?2 of the last call is not kept. */
		if (i % 2 == 0)
			CHECK_EQ_INT(db_bind_text(s, 2, "even"), 0);
		CHECK_EQ_INT(db_step(s), DB_ROW);
		if (i % 2 == 0) {
			snprintf(v, sizeof(v), "%d-even", i);
			CHECK_STR(db_col_text(s, 0), v);
		} else
			CHECK_EQ_INT(db_col_is_null(s, 0), 1);
		db_release(s);
		s = NULL;
	}
	if (is_pg(db)) {
		CHECK_EQ_INT(server_statements(db), before);
		CHECK_EQ_INT(db_prepare_once(db, "SELECT 1 + ?1", &s), 0);
		CHECK_EQ_INT(server_statements(db), before + 1);
		CHECK_EQ_INT(db_bind_int(s, 1, 41), 0);
		CHECK_EQ_INT(db_step(s), DB_ROW);
		CHECK_EQ_INT(db_col_int(s, 0), 42);
		db_release(s);
		s = NULL;
		CHECK_EQ_INT(server_statements(db), before);
	}
	/* db_reset keeps the bindings, db_clear_bindings drops them. */
	CHECK_EQ_INT(db_prepare(db, sql, &s), 0);
	CHECK_EQ_INT(db_bind_text(s, 1, "k"), 0);
	CHECK_EQ_INT(db_bind_text(s, 2, "v"), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	db_reset(s);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_STR(db_col_text(s, 0), "k-v");
	db_reset(s);
	db_clear_bindings(s);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	CHECK_EQ_INT(db_col_is_null(s, 0), 1);
end:
	db_release(s);
	TT_END;
}

/* Ends db's server process and waits until it is gone. */
static int
kill_backend(PGconn *killer, struct db *db)
{
	char sql[96];
	PGresult *res;
	int ok;

	snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d, 10000)",
	         PQbackendPID(db_pg(db)));
	res = PQexec(killer, sql);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
	     strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return ok;
}

/* A ROLLBACK that makes the connection again: tried for up to 5 s, since
 * a connection tries at most once a second. */
static int
rollback_reconnects(struct db *db)
{
	for (int i = 0; i < 50; i++) {
		if (db_exec(db, "ROLLBACK") == 0)
			return 1;
		usleep(100 * 1000);
	}
	return 0;
}

/* PostgreSQL only: a connection that goes away is a storage failure; it
 * is made again for the next statement when no transaction went with it
 * (a reader's), or for the next BEGIN or ROLLBACK when one did (the
 * writer's): never for a statement of the lost transaction, and never for
 * its COMMIT, which must not pass for a commit. The cached statements
 * work on the new connection. */
static int
c_connection_lost(struct db *db)
{
	PGconn *killer = NULL;

	TT_BEGIN;
	if (!is_pg(db)) {
		/* SQLite has no connection to lose; its storage failures come
		 * from the file and are covered by test_store. */
		CHECK_EQ_INT(db_kind(db), DB_SQLITE);
		goto end;
	}
	CHECK((killer = connect_pg()) != NULL);
	/* Lost with a transaction open. */
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(insert_row(db, 1, "a", 1), DB_DONE);
	CHECK(kill_backend(killer, db));
	CHECK_EQ_INT(insert_row(db, 2, "b", 2), FGW_ERR_DB);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_STORAGE);
	CHECK_EQ_INT(db_in_txn(db), 0);
	CHECK_EQ_INT(db_exec(db, "SELECT 1"), FGW_ERR_DB);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_STORAGE);
	CHECK_EQ_INT(insert_row(db, 3, "c", 3), FGW_ERR_DB);
	CHECK_EQ_INT(db_exec(db, "COMMIT"), FGW_ERR_DB);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_STORAGE);
	/* The writer's ROLLBACK (or next BEGIN) goes on afresh. */
	CHECK(rollback_reconnects(db));
	CHECK_EQ_INT(insert_row(db, 4, "d", 4), DB_DONE);
	CHECK_EQ_INT(count_rows(db), 1);

	/* Lost while idle (a server restart, a failover): a query that
	 * changes nothing is sent again on a new connection, as is a BEGIN;
	 * an INSERT is not (it may have committed before its answer was
	 * lost) but the next statement after it runs. */
	CHECK(kill_backend(killer, db));
	CHECK_EQ_INT(count_rows(db), 1);
	CHECK(kill_backend(killer, db));
	CHECK_EQ_INT(db_exec(db, "BEGIN"), 0);
	CHECK_EQ_INT(insert_row(db, 5, "e", 5), DB_DONE);
	CHECK_EQ_INT(db_exec(db, "COMMIT"), 0);
	CHECK(kill_backend(killer, db));
	CHECK_EQ_INT(insert_row(db, 6, "f", 6), FGW_ERR_DB);
	CHECK_EQ_INT(db_last_fail(db), DB_FAIL_STORAGE);
	CHECK_EQ_INT(insert_row(db, 7, "g", 7), DB_DONE);
	CHECK_EQ_INT(count_rows(db), 3);
end:
	PQfinish(killer);
	TT_END;
}

/* db_col_copy truncates what does not fit, db_col_copy_exact refuses it
 * and leaves dst as it was; both read NULL as "" and a number as its
 * text. */
static int
c_col_copy(struct db *db)
{
	struct db_stmt *s = NULL;
	char d[4];

	TT_BEGIN;
	CHECK_EQ_INT(db_prepare(db, "SELECT NULL, 'abc', 'abcd', 42, ''", &s), 0);
	CHECK_EQ_INT(db_step(s), DB_ROW);
	/* NULL */
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy(s, 0, d, sizeof(d)), 0);
	CHECK_STR(d, "");
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy_exact(s, 0, d, sizeof(d)), 0);
	CHECK_STR(d, "");
	/* cap - 1 bytes: fits in both */
	CHECK_EQ_INT(db_col_copy(s, 1, d, sizeof(d)), 0);
	CHECK_STR(d, "abc");
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(DB_COL_COPY(s, 1, d), 0);
	CHECK_STR(d, "abc");
	/* cap bytes: truncated, or refused with dst untouched */
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy(s, 2, d, sizeof(d)), FGW_ERR_TOO_LARGE);
	CHECK_STR(d, "abc");
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy_exact(s, 2, d, sizeof(d)), FGW_ERR_TOO_LARGE);
	CHECK_STR(d, "zzz");
	/* a number column as its text */
	CHECK_EQ_INT(db_col_copy(s, 3, d, sizeof(d)), 0);
	CHECK_STR(d, "42");
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy_exact(s, 3, d, sizeof(d)), 0);
	CHECK_STR(d, "42");
	/* an empty text, and a cap of one byte */
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy_exact(s, 4, d, 1), 0);
	CHECK_STR(d, "");
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy(s, 1, d, 1), FGW_ERR_TOO_LARGE);
	CHECK_STR(d, "");
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy_exact(s, 1, d, 1), FGW_ERR_TOO_LARGE);
	CHECK_STR(d, "zzz");
	/* no room at all: nothing written */
	memcpy(d, "zzz", 4);
	CHECK_EQ_INT(db_col_copy(s, 0, d, 0), FGW_ERR_TOO_LARGE);
	CHECK_EQ_INT(db_col_copy_exact(s, 0, d, 0), FGW_ERR_TOO_LARGE);
	CHECK_STR(d, "zzz");
	CHECK_EQ_INT(db_step(s), DB_DONE);
end:
	db_release(s);
	TT_END;
}

#define BOTH(name)                        \
	static int test_##name##_sqlite(void) \
	{                                     \
		return run_on(0, c_##name);       \
	}                                     \
	static int test_##name##_pg(void)     \
	{                                     \
		return run_on(1, c_##name);       \
	}

BOTH(rewrite)
BOTH(nulls)
BOTH(int64_extremes)
BOTH(booleans)
BOTH(step_row)
BOTH(duplicate)
BOTH(constraint)
BOTH(savepoint)
BOTH(step_later)
BOTH(commit_after_failure)
BOTH(changes)
BOTH(cached)
BOTH(columns_before_step)
BOTH(connection_lost)
BOTH(col_copy)

#define CASE(name)                             \
	{ #name "_sqlite", test_##name##_sqlite }, \
	{                                          \
#name "_pg", test_##name##_pg          \
	}

static const struct tt_case all[] = {
	CASE(rewrite),         CASE(nulls),      CASE(int64_extremes),
	CASE(booleans),        CASE(step_row),   CASE(duplicate),
	CASE(constraint),      CASE(savepoint),  CASE(commit_after_failure),
	CASE(changes),         CASE(cached),     CASE(columns_before_step),
	CASE(connection_lost), CASE(step_later), CASE(col_copy),
	{ NULL, NULL },
};

int
main(int argc, char **argv)
{
	struct tt_case cases[sizeof(all) / sizeof(all[0])];
	const char *dsn = getenv(PG_DSN_ENV);
	int pg = dsn != NULL && *dsn != '\0';
	size_t i, n = 0;

	/* The PostgreSQL cases only with a server to run them on. */
	for (i = 0; all[i].name != NULL; i++) {
		size_t len = strlen(all[i].name);
		if (!pg && len > 3 && strcmp(all[i].name + len - 3, "_pg") == 0)
			continue;
		cases[n++] = all[i];
	}
	cases[n] = (struct tt_case){ NULL, NULL };
	return tt_run(cases, argc, argv);
}
