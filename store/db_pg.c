/*
 * store/db_pg.c — the PostgreSQL half of the db API (store/db_int.h) on
 * libpq's synchronous calls: writer threads and readers each own their
 * connection, so a blocking round trip never runs on a reactor.
 *
 * A statement is rewritten from the common dialect (?N, bare ?) to
 * PostgreSQL's $N once, prepared on the server under a name of its own
 * (fgw1, fgw2, ...), and executed with its values sent as text; the whole
 * result comes back in one PGresult that db_step walks row by row.
 * Statements of db_step_later (the writer's SAVEPOINT and RELEASE) wait
 * and go with the next statement in one pipeline: one round trip, where
 * each would cost its own.
 *
 * Failures are told apart by SQLSTATE. The message kept is the server's
 * primary message only: its DETAIL lines can quote the values of a row (a
 * card fingerprint, a key), and a data exception (class 22) quotes the
 * value it could not take even in the primary message, so for those only
 * the SQLSTATE is kept.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db_int.h"
#include "store/pg.h"

/* PostgreSQL's text type (pg_type.oid), given to a parameter number the
 * statement never uses: SQLite allows such gaps, and PostgreSQL cannot
 * infer a type for a parameter it does not see. */
#define DBPG_TEXTOID 25
/* SQLite's limit on ?N (SQLITE_MAX_VARIABLE_NUMBER's default), below
 * PostgreSQL's 65535: a statement must run on both. */
#define DBPG_MAX_PARAM 32766
/* While the server is away, a connection tries again at most this often:
 * a reader runs on a reactor, and each attempt can wait connect_timeout. */
#define DBPG_RECONNECT_MS 1000

struct sqlbuf {
	char *p;
	size_t len, cap;
};

static int
buf_put(struct sqlbuf *b, const char *s, size_t n)
{
	char *np;
	size_t ncap;

	if (b->len + n + 1 > b->cap) {
		ncap = b->cap != 0 ? b->cap : 256;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if ((np = realloc(b->p, ncap)) == NULL)
			return FGW_ERR_NOMEM;
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/* A character that continues an identifier or keyword in PostgreSQL's
 * lexer (letters, digits, _, $ and every non-ASCII byte). */
static int
ident_char(char c)
{
	unsigned char u = (unsigned char)c;

	return isalnum(u) || u == '_' || u == '$' || u >= 0x80;
}

/* The end of the quoted text starting at sql[i] (' or "), the closing
 * quote included; a doubled quote stays inside. escapes: an E'...'
 * string, where a backslash escapes the next character. An unterminated
 * quote runs to the end (the server refuses it). */
static size_t
quoted_end(const char *sql, size_t i, int escapes)
{
	char q = sql[i];
	size_t j = i + 1;

	while (sql[j] != '\0') {
		if (escapes && sql[j] == '\\' && sql[j + 1] != '\0') {
			j += 2;
			continue;
		}
		if (sql[j] == q) {
			if (sql[j + 1] == q) {
				j += 2;
				continue;
			}
			return j + 1;
		}
		j++;
	}
	return j;
}

/* The end of a block comment starting at sql[i] ("/ *"): PostgreSQL's
 * nest. */
static size_t
comment_end(const char *sql, size_t i)
{
	size_t j = i + 2;
	int depth = 1;

	while (sql[j] != '\0' && depth > 0) {
		if (sql[j] == '/' && sql[j + 1] == '*') {
			depth++;
			j += 2;
		} else if (sql[j] == '*' && sql[j + 1] == '/') {
			depth--;
			j += 2;
		} else
			j++;
	}
	return j;
}

/* The end of a dollar-quoted string ($tag$...$tag$) starting at sql[i],
 * or i when sql[i] does not open one. */
static size_t
dollar_end(const char *sql, size_t i)
{
	size_t j = i + 1, taglen;
	const char *close;

	if (i > 0 && ident_char(sql[i - 1]))
		return i;
	if (isdigit((unsigned char)sql[j]))
		return i; /* $1: a parameter, not a quote */
	while (sql[j] != '\0' && sql[j] != '$' && ident_char(sql[j]))
		j++;
	if (sql[j] != '$')
		return i;
	taglen = j + 1 - i;
	for (close = sql + j + 1; (close = strchr(close, '$')) != NULL; close++)
		if (strncmp(close, sql + i, taglen) == 0)
			return (size_t)(close - sql) + taglen;
	return strlen(sql);
}

/*
 * sql with every ?N and bare ? outside quotes and comments as $N: a bare
 * ? is one more than the highest number so far, as SQLite numbers it.
 * *nparams = the highest N; used[N-1] says which numbers appear (the
 * caller frees *out and *used).
 */
static int
rewrite(const char *sql, char **out, int *nparams, unsigned char **used)
{
	struct sqlbuf b = { NULL, 0, 0 };
	unsigned char *seen = NULL, *ns;
	size_t i = 0, j, nseen = 0;
	char num[16];
	long n;
	int max = 0, len, r;

	*out = NULL;
	*used = NULL;
	*nparams = 0;
	while (sql[i] != '\0') {
		char c = sql[i];

		j = i + 1;
		if (c == '\'') {
			int e = i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
			        (i < 2 || !ident_char(sql[i - 2]));
			j = quoted_end(sql, i, e);
		} else if (c == '"')
			j = quoted_end(sql, i, 0);
		else if (c == '-' && sql[i + 1] == '-') {
			j = i + 2;
			while (sql[j] != '\0' && sql[j] != '\n')
				j++;
		} else if (c == '/' && sql[i + 1] == '*')
			j = comment_end(sql, i);
		else if (c == '$') {
			if ((j = dollar_end(sql, i)) == i)
				j = i + 1;
		} else if (c == '?') {
			if (isdigit((unsigned char)sql[j])) {
				n = 0;
				while (isdigit((unsigned char)sql[j])) {
					if (n <= DBPG_MAX_PARAM)
						n = n * 10 + (sql[j] - '0');
					j++;
				}
			} else
				n = max + 1;
			if (n < 1 || n > DBPG_MAX_PARAM) {
				r = FGW_ERR_INVALID;
				goto out;
			}
			if ((size_t)n > nseen) {
				if ((ns = realloc(seen, (size_t)n)) == NULL) {
					r = FGW_ERR_NOMEM;
					goto out;
				}
				memset(ns + nseen, 0, (size_t)n - nseen);
				seen = ns;
				nseen = (size_t)n;
			}
			seen[n - 1] = 1;
			if (n > max)
				max = (int)n;
			len = snprintf(num, sizeof(num), "$%ld", n);
			if (len < 0 || (size_t)len >= sizeof(num)) {
				r = FGW_ERR_INTERNAL;
				goto out;
			}
			if ((r = buf_put(&b, num, (size_t)len)) != 0)
				goto out;
			i = j;
			continue;
		}
		if ((r = buf_put(&b, sql + i, j - i)) != 0)
			goto out;
		i = j;
	}
	if (b.p == NULL && (r = buf_put(&b, "", 0)) != 0)
		goto out;
	*out = b.p;
	b.p = NULL;
	*used = seen;
	seen = NULL;
	*nparams = max;
	r = 0;
out:
	free(b.p);
	free(seen);
	return r;
}

/* The first line of a libpq message (no trailing newline, no DETAIL). */
static void
first_line(const char *m, char *dst, size_t cap)
{
	size_t n = strcspn(m, "\n");

	if (n >= cap)
		n = cap - 1;
	memcpy(dst, m, n);
	dst[n] = '\0';
}

/* Records the failure res (or the connection's, when res is NULL) on db
 * and returns the db_step code for it. */
static int
fail_from(struct db *db, const PGresult *res)
{
	const char *state = NULL, *primary = NULL;
	char line[200], msg[sizeof(db->errmsg)];
	enum db_fail kind;

	if (PQstatus(db->pg) == CONNECTION_BAD) {
		first_line(PQerrorMessage(db->pg), line, sizeof(line));
		snprintf(msg, sizeof(msg), "the connection to PostgreSQL is lost: %s", line);
		return db_fail_set(db, DB_FAIL_STORAGE, msg);
	}
	if (res != NULL) {
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	}
	if (state == NULL || strlen(state) != 5) {
		/* Not the server's: libpq's own (out of memory, cannot send). */
		first_line(res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(db->pg), line,
		           sizeof(line));
		snprintf(msg, sizeof(msg), "postgresql: %s", line);
		return db_fail_set(db, DB_FAIL_OTHER, msg);
	}
	if (strcmp(state, "23505") == 0)
		kind = DB_FAIL_DUPLICATE;
	else if (strncmp(state, "23", 2) == 0 || strcmp(state, "P0001") == 0)
		kind = DB_FAIL_CONSTRAINT;
	else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	         strcmp(state, "55P03") == 0)
		kind = DB_FAIL_BUSY;
	else if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
	         strncmp(state, "58", 2) == 0 || strcmp(state, "XX001") == 0)
		kind = DB_FAIL_STORAGE;
	else
		kind = DB_FAIL_OTHER;
	if (strncmp(state, "22", 2) == 0 || primary == NULL)
		snprintf(msg, sizeof(msg), "postgresql: %s (SQLSTATE %s)",
		         strncmp(state, "22", 2) == 0 ? "a value was refused" : "error", state);
	else {
		first_line(primary, line, sizeof(line));
		snprintf(msg, sizeof(msg), "postgresql: %s (SQLSTATE %s)", line, state);
	}
	return db_fail_set(db, kind, msg);
}

/* The count of an INSERT/UPDATE/DELETE/MERGE into db->changes; other
 * commands leave it, as sqlite3_changes does. */
static void
note_changes(struct db *db, const PGresult *res)
{
	const char *tag = PQcmdStatus((PGresult *)res), *n;
	int64_t v = 0;

	if (tag == NULL ||
	    (strncmp(tag, "INSERT ", 7) != 0 && strncmp(tag, "UPDATE ", 7) != 0 &&
	     strncmp(tag, "DELETE ", 7) != 0 && strncmp(tag, "MERGE ", 6) != 0))
		return;
	n = PQcmdTuples((PGresult *)res);
	if (n == NULL || *n == '\0' || fgw_parse_i64(n, 0, INT64_MAX, &v) != 0)
		v = 0;
	db->changes = v;
}

/* The first word of sql, upper-cased into w[cap]; returns what follows
 * it. */
static const char *
first_word(const char *sql, char *w, size_t cap)
{
	size_t n = 0;

	sql += strspn(sql, " \t\r\n");
	while (n + 1 < cap && isalpha((unsigned char)sql[n])) {
		w[n] = (char)toupper((unsigned char)sql[n]);
		n++;
	}
	w[n] = '\0';
	return sql + n;
}

/* Whether sql starts a transaction, or ends one as a whole (ROLLBACK, not
 * ROLLBACK TO): the only statements that may run on a connection made
 * again after one was lost with a transaction open. COMMIT is not one: on
 * a new connection it would "succeed" with nothing to commit. */
static int
starts_afresh(const char *sql)
{
	char w[16];
	const char *rest;

	if (sql == NULL)
		return 0;
	rest = first_word(sql, w, sizeof(w));
	if (strcmp(w, "BEGIN") == 0 || strcmp(w, "START") == 0)
		return 1;
	if (strcmp(w, "ROLLBACK") != 0 && strcmp(w, "ABORT") != 0)
		return 0;
	first_word(rest, w, sizeof(w));
	return strcmp(w, "TO") != 0;
}

/* Whether a statement that found its connection gone may be sent once
 * more on a new one: it ran outside any transaction and changes nothing
 * (BEGIN, START, SELECT, SHOW), so whether the server saw it before the
 * connection went does not matter. Anything else is reported: an INSERT
 * in autocommit may have committed before the answer was lost. A
 * connection ended while idle (a server restart, a failover) is found so
 * only when the next statement is sent: this lets the readers' queries
 * and the writer's BEGIN go on without a failure. */
static int
resendable(const char *sql)
{
	char w[16];

	first_word(sql, w, sizeof(w));
	return strcmp(w, "BEGIN") == 0 || strcmp(w, "START") == 0 ||
	       strcmp(w, "SELECT") == 0 || strcmp(w, "SHOW") == 0;
}

/* A connection for the next statement (sql, or NULL when preparing):
 * when it was lost, made again with PQreset and set up as pg_connect
 * does, unless a transaction was open on it (its statements are gone:
 * only a new BEGIN or a ROLLBACK may go on). The statements prepared
 * before are prepared again on their next use (db->gen). */
static int
ensure_connected(struct db *db, const char *sql)
{
	int64_t now;

	if (PQstatus(db->pg) == CONNECTION_OK)
		return 0;
	/* Kept statements belonged to the transaction the connection took
	 * along. */
	db->n_later = 0;
	if (db->txn_open && !starts_afresh(sql))
		return db_fail_set(
		    db, DB_FAIL_STORAGE,
		    "the connection to PostgreSQL was lost with a transaction open");
	now = fgw_mono_ms();
	if (db->reconnect_at != 0 && now - db->reconnect_at < DBPG_RECONNECT_MS)
		return db_fail_set(db, DB_FAIL_STORAGE, "the connection to PostgreSQL is lost");
	db->reconnect_at = now;
	PQreset(db->pg);
	if (PQstatus(db->pg) != CONNECTION_OK || pg_session_setup(db->pg) != 0)
		return db_fail_set(
		    db, DB_FAIL_STORAGE,
		    "the connection to PostgreSQL is lost and cannot be made again");
	db->gen++;
	db->txn_open = 0;
	db->reconnect_at = 0; /* the limit is on attempts that fail in a row */
	log_info("connected to PostgreSQL again");
	return 0;
}

/* Prepares s->pgsql on the server under a new name. */
static int
server_prepare(struct db_stmt *s)
{
	struct db *db = s->db;
	char name[sizeof(s->name)];
	PGresult *res = NULL;
	int len, r;

	len = snprintf(name, sizeof(name), "fgw%u", ++db->next_name);
	if (len < 0 || (size_t)len >= sizeof(name))
		return FGW_ERR_INTERNAL;
	res = PQprepare(db->pg, name, s->pgsql, s->nparams, s->types);
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
		size_t used;

		r = fail_from(db, res);
		/* Which statement: its text holds no values (they are bound),
		 * and a refused statement is a bug to be found. */
		used = strlen(db->errmsg);
		snprintf(db->errmsg + used, sizeof(db->errmsg) - used, " in: %.*s",
		         (int)(sizeof(db->errmsg) - used), s->pgsql);
		goto out;
	}
	memcpy(s->name, name, sizeof(name));
	s->gen = db->gen;
	PQclear(s->desc); /* described on the connection before, if at all */
	s->desc = NULL;
	r = 0;
out:
	PQclear(res);
	return r;
}
/* Frees what the statement's preparation made (the parameter arrays
 * and the rewritten SQL); the values must have been wiped already. */
static void
free_params(struct db_stmt *s)
{
	free(s->params);
	free(s->lens);
	free(s->types);
	free(s->pgsql);
	s->params = NULL;
	s->lens = NULL;
	s->types = NULL;
	s->pgsql = NULL;
	s->nparams = 0;
}


static int run_pipeline(struct db *db, struct db_stmt *s, PGresult **out);

int
dbpg_prepare(struct db_stmt *s, const char *sql)
{
	struct db *db = s->db;
	unsigned char *used = NULL;
	int n = 0, i, r;

	s->name[0] = '\0';
	s->nparams = 0;
	if ((r = rewrite(sql, &s->pgsql, &n, &used)) != 0) {
		if (r == FGW_ERR_INVALID)
			r = db_fail_set(db, DB_FAIL_OTHER,
			                "postgresql: a parameter number out of range (?1 to ?32766)");
		goto out;
	}
	if (n > 0) {
		if ((s->types = calloc((size_t)n, sizeof(*s->types))) == NULL ||
		    (s->params = calloc((size_t)n, sizeof(*s->params))) == NULL ||
		    (s->lens = calloc((size_t)n, sizeof(*s->lens))) == NULL) {
			r = FGW_ERR_NOMEM;
			goto out;
		}
		for (i = 0; i < n; i++)
			s->types[i] = used[i] ? 0 : DBPG_TEXTOID;
	}
	s->nparams = n;
	if ((r = ensure_connected(db, NULL)) != 0 || (r = server_prepare(s)) != 0)
		goto out;
	r = 0;
out:
	if (r != 0)
		free_params(s);
	free(used);
	return r;
}

void
dbpg_reset(struct db_stmt *s)
{
	PQclear(s->res);
	s->res = NULL;
	s->row = s->nrows = 0;
}

void
dbpg_clear_bindings(struct db_stmt *s)
{
	int i;

	for (i = 0; i < s->nparams; i++) {
		/* Values can be tokens or fingerprints: wiped, not just freed. */
		if (s->params[i] != NULL)
			fgw_freezero(s->params[i], (size_t)s->lens[i] + 1);
		s->params[i] = NULL;
		s->lens[i] = 0;
	}
}

void
dbpg_stmt_free(struct db_stmt *s)
{
	char sql[48];
	PGresult *res;
	int len;

	if (s == NULL)
		return;
	/* Kept back and not sent yet: it goes now, before its name does. */
	for (int i = 0; s->db != NULL && i < s->db->n_later; i++)
		if (s->db->later[i] == s) {
			(void)run_pipeline(s->db, NULL, &res);
			break;
		}
	dbpg_reset(s);
	PQclear(s->desc);
	s->desc = NULL;
	if (s->params != NULL)
		dbpg_clear_bindings(s);
	free_params(s);
	/* A cached statement is freed with its connection, which takes the
	 * server side along; one freed before that would stay on the server
	 * for the session's life. In a failed transaction the server refuses
	 * DEALLOCATE: the name is never reused, the statement stays. */
	if (s->name[0] != '\0' && !s->cached && s->db != NULL && s->db->pg != NULL &&
	    s->gen == s->db->gen && PQstatus(s->db->pg) == CONNECTION_OK &&
	    PQtransactionStatus(s->db->pg) != PQTRANS_INERROR) {
		len = snprintf(sql, sizeof(sql), "DEALLOCATE %s", s->name);
		if (len > 0 && (size_t)len < sizeof(sql)) {
			res = PQexec(s->db->pg, sql);
			PQclear(res);
		}
	}
	s->name[0] = '\0';
}

int
dbpg_bind(struct db_stmt *s, int i, const char *v, size_t len)
{
	char *copy = NULL;

	if (i < 1 || i > s->nparams || len > INT32_MAX)
		return FGW_ERR_INVALID;
	/* Values go as text, which ends at a NUL: PostgreSQL's text cannot
	 * hold one, and a value cut short must not be stored. */
	if (v != NULL && memchr(v, '\0', len) != NULL)
		return FGW_ERR_INVALID;
	if (v != NULL) {
		if ((copy = malloc(len + 1)) == NULL)
			return FGW_ERR_NOMEM;
		memcpy(copy, v, len);
		copy[len] = '\0';
	}
	if (s->params[i - 1] != NULL)
		fgw_freezero(s->params[i - 1], (size_t)s->lens[i - 1] + 1);
	s->params[i - 1] = copy;
	s->lens[i - 1] = (int)len;
	return 0;
}

/* Whether sql is a COMMIT (or its synonym END). */
static int
is_commit(const char *sql)
{
	char w[16];

	first_word(sql, w, sizeof(w));
	return strcmp(w, "COMMIT") == 0 || strcmp(w, "END") == 0;
}

#define COMMITTED_NOTHING \
	"postgresql: COMMIT rolled back: a statement of the transaction had failed"

/* PostgreSQL answers COMMIT of a transaction that a failed statement
 * spoiled with success and the tag ROLLBACK: nothing was committed, and
 * the caller (the writer, before it answers) must not take it for a
 * commit. */
static int
committed_nothing(const char *sql, PGresult *res)
{
	return is_commit(sql) && strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
}

/* Whether the call just made left a transaction open; a lost connection
 * keeps what was known before it. */
static void
note_txn(struct db *db)
{
	if (PQstatus(db->pg) == CONNECTION_OK)
		db->txn_open = PQtransactionStatus(db->pg) != PQTRANS_IDLE;
}

/* One result of the pipeline, then the NULL that ends it; NULL when the
 * connection failed instead. */
static PGresult *
pipeline_result(struct db *db)
{
	PGresult *res = PQgetResult(db->pg), *extra;

	if (res == NULL)
		return NULL;
	while ((extra = PQgetResult(db->pg)) != NULL) /* none: not single-row mode */
		PQclear(extra);
	return res;
}

/* Sends the statements kept back by db_step_later and then s (none when
 * s is NULL) in one pipeline and one Sync, and reads their answers: s's
 * result goes to *out. When a kept statement failed, the transaction is
 * rolled back whole (its caller would take a failed SAVEPOINT or RELEASE
 * for a job's own failure) and its failure is returned. */
static int
run_pipeline(struct db *db, struct db_stmt *s, PGresult **out)
{
	PGresult *res, *bad = NULL;
	int i, n = db->n_later, r = 0;

	*out = NULL;
	db->n_later = 0;
	if (PQenterPipelineMode(db->pg) != 1)
		goto lost;
	for (i = 0; i < n; i++)
		if (PQsendQueryPrepared(db->pg, db->later[i]->name, 0, NULL, NULL, NULL, 0) != 1)
			goto lost;
	if (s != NULL &&
	    PQsendQueryPrepared(db->pg, s->name, s->nparams, (const char *const *)s->params,
	                        s->lens, NULL, 0) != 1)
		goto lost;
	if (PQpipelineSync(db->pg) != 1)
		goto lost;
	for (i = 0; i < n + (s != NULL); i++) {
		if ((res = pipeline_result(db)) == NULL)
			goto lost;
		if (i == n)
			*out = res;
		else if (bad == NULL && PQresultStatus(res) != PGRES_COMMAND_OK)
			bad = res;
		else
			PQclear(res);
	}
	res = PQgetResult(db->pg);
	if (res == NULL || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
		PQclear(res);
		goto lost;
	}
	PQclear(res);
	if (PQexitPipelineMode(db->pg) != 1)
		goto lost;
	note_txn(db);
	if (bad != NULL) {
		r = fail_from(db, bad);
		res = PQexec(db->pg, "ROLLBACK");
		PQclear(res);
		note_txn(db);
		PQclear(*out);
		*out = NULL;
	}
	PQclear(bad);
	return r;
lost:
	/* The connection failed under the pipeline (PQreset ends pipeline
	 * mode with it), or libpq refused a step of it: which of the kept
	 * statements ran is unknown, so the transaction ends here too. */
	r = fail_from(db, bad);
	PQclear(bad);
	PQclear(*out);
	*out = NULL;
	if (PQstatus(db->pg) == CONNECTION_OK) {
		if (PQpipelineStatus(db->pg) != PQ_PIPELINE_OFF &&
		    PQexitPipelineMode(db->pg) != 1) {
			while ((res = PQgetResult(db->pg)) != NULL &&
			       PQresultStatus(res) != PGRES_PIPELINE_SYNC)
				PQclear(res);
			PQclear(res);
			(void)PQexitPipelineMode(db->pg);
		}
		res = PQexec(db->pg, "ROLLBACK");
		PQclear(res);
	}
	note_txn(db);
	return r != 0 ? r : db_fail_set(db, DB_FAIL_STORAGE, "postgresql: pipeline failed");
}

int
dbpg_step_later(struct db_stmt *s)
{
	struct db *db = s->db;
	PGresult *res = NULL;
	int r;

	if (s->pgsql == NULL)
		return db_fail_set(db, DB_FAIL_OTHER, "postgresql: statement not prepared");
	if (s->nparams != 0)
		return db_fail_set(db, DB_FAIL_OTHER,
		                   "postgresql: a statement kept back has no parameters");
	if ((r = ensure_connected(db, s->pgsql)) != 0 ||
	    (s->gen != db->gen && (r = server_prepare(s)) != 0))
		return r;
	if (db->n_later == DB_LATER_MAX && (r = run_pipeline(db, NULL, &res)) != 0)
		return r;
	db->later[db->n_later++] = s;
	return DB_DONE;
}

int
dbpg_step(struct db_stmt *s)
{
	struct db *db = s->db;
	ExecStatusType status;
	PGresult *res;
	int attempt, r;

	if (s->res != NULL) {
		if (s->row + 1 < s->nrows) {
			s->row++;
			return DB_ROW;
		}
		s->row = s->nrows;
		return DB_DONE;
	}
	if (s->pgsql == NULL)
		return db_fail_set(db, DB_FAIL_OTHER, "postgresql: statement not prepared");
	for (attempt = 0;; attempt++) {
		int was_open = db->txn_open;

		if ((r = ensure_connected(db, s->pgsql)) != 0 ||
		    (s->gen != db->gen && (r = server_prepare(s)) != 0))
			return r;
		if (db->n_later > 0) {
			/* Inside a transaction: no second attempt. */
			if ((r = run_pipeline(db, s, &res)) != 0)
				return r;
			attempt = 1;
		} else
			res = PQexecPrepared(db->pg, s->name, s->nparams,
			                     (const char *const *)s->params, s->lens, NULL, 0);
		note_txn(db);
		status = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
		if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK ||
		    status == PGRES_EMPTY_QUERY)
			break;
		if (attempt == 0 && !was_open && PQstatus(db->pg) == CONNECTION_BAD &&
		    resendable(s->pgsql)) {
			PQclear(res);
			continue;
		}
		r = fail_from(db, res);
		PQclear(res);
		return r;
	}
	if (committed_nothing(s->pgsql, res)) {
		PQclear(res);
		return db_fail_set(db, DB_FAIL_OTHER, COMMITTED_NOTHING);
	}
	note_changes(db, res);
	s->res = res;
	s->row = 0;
	s->nrows = PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) : 0;
	return s->nrows > 0 ? DB_ROW : DB_DONE;
}

/* Whether column i of the current row can be read. */
static int
have_cell(const struct db_stmt *s, int i)
{
	return s->res != NULL && s->row < s->nrows && i >= 0 && i < PQnfields(s->res);
}

const char *
dbpg_col_text(struct db_stmt *s, int i)
{
	if (!have_cell(s, i) || PQgetisnull(s->res, s->row, i))
		return NULL;
	return PQgetvalue(s->res, s->row, i);
}

size_t
dbpg_col_bytes(struct db_stmt *s, int i)
{
	if (!have_cell(s, i) || PQgetisnull(s->res, s->row, i))
		return 0;
	return (size_t)PQgetlength(s->res, s->row, i);
}

/* What says the statement's columns: the result of its step, or before
 * one, its description from the server (asked once: SQLite answers this
 * before a step too, and callers find a column's index by it). */
static const PGresult *
columns_of(struct db_stmt *s)
{
	PGresult *d;

	if (s->res != NULL)
		return s->res;
	if (s->desc != NULL || s->name[0] == '\0' || s->gen != s->db->gen)
		return s->desc;
	d = PQdescribePrepared(s->db->pg, s->name);
	if (d == NULL || PQresultStatus(d) != PGRES_COMMAND_OK) {
		PQclear(d);
		return NULL;
	}
	s->desc = d;
	return d;
}

int
dbpg_col_count(struct db_stmt *s)
{
	const PGresult *c = columns_of(s);

	return c != NULL ? PQnfields(c) : 0;
}

const char *
dbpg_col_name(struct db_stmt *s, int i)
{
	const PGresult *c = columns_of(s);

	if (c == NULL || i < 0 || i >= PQnfields(c))
		return NULL;
	return PQfname(c, i);
}

int
dbpg_exec(struct db *db, const char *sql)
{
	PGresult *res;
	int was_open = db->txn_open, r;

	if ((r = ensure_connected(db, sql)) != 0)
		return r;
	/* sql may hold several statements, which a pipeline cannot take:
	 * the kept ones go first, on their own. */
	if (db->n_later > 0) {
		if ((r = run_pipeline(db, NULL, &res)) != 0)
			return r;
		was_open = 1;
	}
	res = PQexec(db->pg, sql);
	note_txn(db);
	if ((res == NULL || PQresultStatus(res) == PGRES_FATAL_ERROR) && !was_open &&
	    PQstatus(db->pg) == CONNECTION_BAD && resendable(sql)) {
		PQclear(res);
		if ((r = ensure_connected(db, sql)) != 0)
			return r;
		res = PQexec(db->pg, sql);
		note_txn(db);
	}

	switch (res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR) {
	case PGRES_TUPLES_OK:
	case PGRES_COMMAND_OK:
	case PGRES_EMPTY_QUERY:
		if (committed_nothing(sql, res)) {
			r = db_fail_set(db, DB_FAIL_OTHER, COMMITTED_NOTHING);
			break;
		}
		note_changes(db, res);
		r = 0;
		break;
	default:
		r = fail_from(db, res);
		break;
	}
	PQclear(res);
	return r;
}

int
dbpg_in_txn(struct db *db)
{
	switch (PQtransactionStatus(db->pg)) {
	case PQTRANS_INTRANS:
	case PQTRANS_INERROR:
	case PQTRANS_ACTIVE:
		return 1;
	default:
		return 0; /* idle, or the connection is lost (which ends it) */
	}
}
