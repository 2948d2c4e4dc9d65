/*
 * store/db.h — private to store/: one connection and statement API over
 * the two backends, SQLite (embedded, one process) and PostgreSQL (many
 * instances on one database). Every store function is written once
 * against it; only the code that opens a connection, migrates a schema or
 * copies a SQLite file for a backup knows which backend it runs on.
 *
 * SQL is written in the dialect both understand (docs/postgresql.md,
 * "One dialect"): parameters are ?1, ?2, ... (a bare ? counts on from the
 * previous one); the PostgreSQL side rewrites them to $1, $2, ... once per
 * statement. Where the two differ (MAX(a, b) of two values, INSERT OR
 * IGNORE, booleans), the statement uses the common form (CASE, ON CONFLICT
 * DO NOTHING, comparisons read as 0/1 by db_col_int).
 *
 * A connection is used by one thread at a time. Statements are cached per
 * connection, keyed by the ADDRESS of their SQL text: db_prepare takes a
 * string literal only; SQL built at run time goes through db_prepare_once.
 */
#ifndef FGW_STORE_DB_H
#define FGW_STORE_DB_H

#include <stddef.h>
#include <stdint.h>

typedef struct sqlite3 sqlite3;
typedef struct pg_conn PGconn;

struct db;
struct db_stmt;

enum db_kind { DB_SQLITE = 1, DB_PG = 2 };

/* What db_step returns besides a negative FGW_ERR_* code. */
#define DB_ROW 1  /* a row is ready: read it with db_col_* */
#define DB_DONE 0 /* the statement ran to its end (no more rows) */

/* What the last failed call on a connection was, for the writer's health
 * report and the few callers that act on the kind of failure. */
enum db_fail {
	DB_FAIL_NONE = 0,
	DB_FAIL_DUPLICATE,  /* a unique or primary key (db_step: FGW_ERR_EXISTS) */
	DB_FAIL_CONSTRAINT, /* CHECK, NOT NULL, foreign key, refusing trigger
	                      (db_step: FGW_ERR_INVALID) */
	DB_FAIL_BUSY,       /* locked by another connection, serialization or
	                      deadlock: worth retrying (db_step: FGW_ERR_CONFLICT) */
	DB_FAIL_STORAGE,    /* the storage failed: disk full, I/O, corrupt,
	                      read-only, connection lost (db_step: FGW_ERR_DB) */
	DB_FAIL_OTHER,      /* anything else (db_step: FGW_ERR_DB) */
};

/* Wraps an open SQLite handle (db_close closes it). cached: keep
 * statements prepared (the writer and the readers); 0 for short-lived
 * connections of tools. 0 or FGW_ERR_NOMEM (h is then closed too). */
int db_wrap_sqlite(sqlite3 *h, int cached, struct db **out);
/* Wraps a connection from pg_connect (db_close PQfinishes it). */
int db_wrap_pg(PGconn *c, struct db **out);
/* Finalizes every cached statement and closes. NULL is fine. */
void db_close(struct db *db);

enum db_kind db_kind(const struct db *db);
/* The backend handle, for backend-specific code (schema, backup, pragmas):
 * NULL when db is not of that kind. */
sqlite3 *db_sqlite(struct db *db);
PGconn *db_pg(struct db *db);

/* Whether a read on db could see an older snapshot than the newest
 * commit: a SQLite statement left mid-step keeps its read transaction; on
 * PostgreSQL, an open transaction block. */
int db_snapshot_open(struct db *db);
/* Runs sql (no parameters; rows are discarded). 0 or a db_step code. */
int db_exec(struct db *db, const char *sql);
/* Whether a transaction is open on db (BEGIN without COMMIT/ROLLBACK; a
 * failed COMMIT or a lost connection ends it). */
int db_in_txn(struct db *db);

/* *s for the literal sql on db, prepared once per connection. Cached
 * statements come back reset and unbound; a statement still in use (not
 * released) is refused with FGW_ERR_INTERNAL. 0, FGW_ERR_NOMEM or
 * FGW_ERR_DB (logged). */
int db_prepare(struct db *db, const char *sql, struct db_stmt **s);
/* The same for SQL that is not a literal: never cached, db_release frees. */
int db_prepare_once(struct db *db, const char *sql, struct db_stmt **s);
/* Gives back what db_prepare returned (NULL is fine): reset and unbound
 * when cached, freed otherwise. */
void db_release(struct db_stmt *s);
/* Back to before the first db_step, bindings kept / bindings cleared. */
void db_reset(struct db_stmt *s);
void db_clear_bindings(struct db_stmt *s);
/* The connection a statement belongs to. */
struct db *db_handle(struct db_stmt *s);

/* Parameter i (from 1). Values are copied. A NULL v binds SQL NULL.
 * 0, FGW_ERR_INVALID (i out of range) or FGW_ERR_NOMEM. */
int db_bind_text(struct db_stmt *s, int i, const char *v);
int db_bind_textn(struct db_stmt *s, int i, const char *v, size_t len);
/* v, or NULL when v is NULL or "" (optional columns stay NULL). */
int db_bind_text_or_null(struct db_stmt *s, int i, const char *v);
int db_bind_int64(struct db_stmt *s, int i, int64_t v);
int db_bind_int(struct db_stmt *s, int i, int v);
int db_bind_null(struct db_stmt *s, int i);

/* Runs the statement (first call) or moves to its next row: DB_ROW,
 * DB_DONE, or FGW_ERR_EXISTS / FGW_ERR_INVALID / FGW_ERR_CONFLICT /
 * FGW_ERR_DB as enum db_fail says (db_last_fail tells which). On
 * PostgreSQL a failed statement inside a transaction spoils the rest of
 * it until ROLLBACK TO a savepoint: a job that expects a clash asks with
 * ON CONFLICT instead of catching the error. */
int db_step(struct db_stmt *s);
/* Runs s, a statement without parameters or rows (SAVEPOINT, RELEASE),
 * perhaps later: on PostgreSQL it is sent with the next statement run on
 * db, in one round trip (libpq's pipeline mode), and if it fails then,
 * that statement fails too and the whole transaction is rolled back
 * (db_in_txn is 0 after). SQLite runs it now. DB_DONE or a db_step code. */
int db_step_later(struct db_stmt *s);
/* db_step for a statement that reads one row: 0 with the row ready,
 * FGW_ERR_NOT_FOUND when there is none, FGW_ERR_DB when the step failed. */
int db_step_row(struct db_stmt *s);

/* Columns of the current row, i from 0. Text is NULL for SQL NULL and
 * stays valid until the next db_step/db_reset/db_release. Integers of a
 * NULL read 0; a boolean (PostgreSQL's t/f) reads 1/0. */
const char *db_col_text(struct db_stmt *s, int i);
size_t db_col_bytes(struct db_stmt *s, int i);
int64_t db_col_int64(struct db_stmt *s, int i);
int db_col_int(struct db_stmt *s, int i);
double db_col_double(struct db_stmt *s, int i);
int db_col_is_null(struct db_stmt *s, int i);
/* Whether column i holds an integer (not NULL, not text or a real). */
int db_col_is_integer(struct db_stmt *s, int i);
int db_col_count(struct db_stmt *s);
const char *db_col_name(struct db_stmt *s, int i);

/* Rows the last INSERT/UPDATE/DELETE stepped on db changed. */
int64_t db_changes(struct db *db);
/* The last failure on db and its message (never NULL; "" when none). */
enum db_fail db_last_fail(struct db *db);
const char *db_errmsg(struct db *db);

/* Helpers on top. */
/* Copies text column i into dst[cap]; NULL reads as "". 0, or
 * FGW_ERR_TOO_LARGE when it did not fit (dst holds a truncated copy, or
 * nothing with cap 0), or FGW_ERR_NOMEM (dst holds ""). */
int db_col_copy(struct db_stmt *s, int i, char *dst, size_t cap);
/* The same without truncating: FGW_ERR_TOO_LARGE leaves dst unset (a
 * value of cap bytes or more never stands for a shorter one). */
int db_col_copy_exact(struct db_stmt *s, int i, char *dst, size_t cap);
#define DB_COL_COPY(s, i, f) db_col_copy_exact((s), (i), (f), sizeof(f))
/* Text column i into malloc'ed *out (NULL stays NULL). 0 or FGW_ERR_NOMEM. */
int db_col_dup(struct db_stmt *s, int i, char **out);
/* Binds p, or NULL when p is NULL ("" stays ""). */
int db_bind_opt(struct db_stmt *s, int i, const char *p);
/* One value: the first column of the first row of the literal sql with
 * ?1 = a. FGW_ERR_NOT_FOUND when there is no row. */
int db_text_of(struct db *db, const char *sql, const char *a, char *out, size_t cap);
int db_int64_of(struct db *db, const char *sql, const char *a, int64_t *v);

#endif
