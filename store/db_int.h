/*
 * store/db_int.h — inside the db API (store/db.c, store/db_pg.c) only:
 * the connection and statement structures and the PostgreSQL half that
 * store/db.c dispatches to. Everything else in store/ uses store/db.h.
 */
#ifndef FGW_STORE_DB_INT_H
#define FGW_STORE_DB_INT_H

#include <libpq-fe.h>
#include <sqlite3.h>

#include "store/db.h"

/* Statements db_step_later keeps back at most; one more sends them. */
#define DB_LATER_MAX 8

struct db_cache_entry {
	const char *sql; /* the literal's address: the key */
	struct db_stmt *s;
};

struct db {
	enum db_kind kind;
	sqlite3 *lite;
	PGconn *pg;
	int cached; /* keep statements prepared (db_prepare) */
	struct db_cache_entry *cache;
	size_t n_cache, cap_cache;
	enum db_fail fail; /* of the last failed call */
	char errmsg[256];
	int64_t changes;    /* PostgreSQL: rows of the last command */
	unsigned next_name; /* PostgreSQL: prepared statements fgw1, fgw2... */
	/* PostgreSQL: a lost connection is made again (PQreset) when the
	 * next call needs it and no transaction was lost with it; the
	 * statements prepared before are prepared again on first use. */
	unsigned gen;         /* connections made so far, minus one */
	int txn_open;         /* the last call left a transaction open */
	int64_t reconnect_at; /* fgw_mono_ms() of the last failed attempt; 0: none */
	/* PostgreSQL: statements of db_step_later not sent yet, in order. */
	struct db_stmt *later[DB_LATER_MAX];
	int n_later;
};

struct db_stmt {
	struct db *db;
	int cached;
	int busy; /* stepped since the last reset */
	/* SQLite */
	sqlite3_stmt *lite;
	/* PostgreSQL */
	char name[16];  /* the server-side prepared statement */
	char *pgsql;    /* the rewritten SQL, to prepare again after a reconnect */
	Oid *types;     /* its parameter types (0: inferred), nparams of them */
	unsigned gen;   /* db->gen it was prepared on */
	int nparams;    /* how many $N the rewritten SQL has */
	char **params;  /* nparams values: malloc'ed text, or NULL for NULL */
	int *lens;      /* their lengths */
	PGresult *res;  /* the result of the step that ran it */
	PGresult *desc; /* its columns before a step (PQdescribePrepared), or NULL */
	int row, nrows; /* the current row of res */
};

/* Records a failure on db (kind, message) and returns the db_step code
 * for it. */
int db_fail_set(struct db *db, enum db_fail kind, const char *msg);

/* ---- the PostgreSQL half (store/db_pg.c) ---- */
/* Rewrites ?N (and bare ?) in sql to $N outside quotes and comments,
 * prepares it on s->db (PQprepare under s->name) and sets s->nparams.
 * 0, FGW_ERR_NOMEM, FGW_ERR_DB (db_fail_set). */
int dbpg_prepare(struct db_stmt *s, const char *sql);
/* Frees the statement's client side (the server side goes with the
 * connection; a statement freed early is DEALLOCATEd). */
void dbpg_stmt_free(struct db_stmt *s);
void dbpg_reset(struct db_stmt *s);          /* drops the result */
void dbpg_clear_bindings(struct db_stmt *s); /* frees the values */
/* Parameter i (from 1) = a copy of v[0..len), or NULL when v is NULL. */
int dbpg_bind(struct db_stmt *s, int i, const char *v, size_t len);
/* First call: PQexecPrepared with the bound values (text format); then
 * the next row. DB_ROW, DB_DONE, or db_fail_set's code by SQLSTATE
 * (23505 duplicate; 23xxx constraint, P0001/restrict 23001 too; 40001,
 * 40P01, 55P03 busy; 08xxx, 53xxx, 58xxx, XX001 storage; else other).
 * Sets s->db->changes from PQcmdTuples. */
int dbpg_step(struct db_stmt *s);
/* Keeps s (no parameters) back to go with the next statement on its
 * connection (db_step_later). DB_DONE or db_fail_set's code. */
int dbpg_step_later(struct db_stmt *s);
const char *dbpg_col_text(struct db_stmt *s, int i); /* NULL for NULL */
size_t dbpg_col_bytes(struct db_stmt *s, int i);
int dbpg_col_count(struct db_stmt *s);
const char *dbpg_col_name(struct db_stmt *s, int i);
int dbpg_exec(struct db *db, const char *sql);
int dbpg_in_txn(struct db *db); /* PQtransactionStatus */

#endif
