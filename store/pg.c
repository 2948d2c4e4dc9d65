/*
 * store/pg.c — PostgreSQL connections and migrations (store/pg.h).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <libpq-fe.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/pg.h"
#include "store/schema_pg.h"

#define PG_DSN_MAX 4096

/* One entry of a host list: loopback or a unix socket. */
static bool
host_is_local(const char *h, size_t len)
{
	char buf[256];
	struct in_addr a4;
	struct in6_addr a6;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, h, len);
	buf[len] = '\0';
	/* libpq takes a value starting with '/' (or '@', Linux's abstract
	 * namespace) as a socket directory. */
	if (buf[0] == '/' || buf[0] == '@')
		return true;
	if (strcasecmp(buf, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, buf, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, buf, &a6) == 1) {
		if (IN6_IS_ADDR_LOOPBACK(&a6))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
	}
	return false;
}

/* Every entry of a comma-separated host list is local. An empty list is
 * libpq's default, the local socket. */
static bool
hosts_are_local(const char *list)
{
	const char *p = list, *comma;

	if (list == NULL || *list == '\0')
		return true;
	for (;;) {
		comma = strchr(p, ',');
		if (!host_is_local(p, comma != NULL ? (size_t)(comma - p) : strlen(p)))
			return false;
		if (comma == NULL)
			return true;
		p = comma + 1;
	}
}

int
pg_dsn_check(const char *dsn, bool production)
{
	PQconninfoOption *opts = NULL, *o;
	char *err = NULL;
	const char *host = NULL, *hostaddr = NULL, *sslmode = NULL, *service = NULL, *where;
	int r;

	if (dsn == NULL || (opts = PQconninfoParse(dsn, &err)) == NULL) {
		/* libpq's message may quote the DSN: not logged. */
		log_error("store_dsn does not parse as a PostgreSQL connection string");
		r = FGW_ERR_INVALID;
		goto out;
	}
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0)
			hostaddr = o->val;
		else if (strcmp(o->keyword, "sslmode") == 0)
			sslmode = o->val;
		else if (strcmp(o->keyword, "service") == 0)
			service = o->val;
	}
	if (service == NULL)
		service = getenv("PGSERVICE");
	/* What libpq will use: hostaddr is where it connects when given
	 * (host then only names the server for the certificate). */
	where = hostaddr != NULL ? hostaddr : host;
	if (where == NULL)
		where = getenv("PGHOSTADDR");
	if (where == NULL || *where == '\0')
		where = getenv("PGHOST");
	/* The service file's sslmode, too, comes before PGSSLMODE. */
	if (sslmode == NULL && (service == NULL || *service == '\0'))
		sslmode = getenv("PGSSLMODE");
	if (sslmode != NULL && strcmp(sslmode, "verify-full") == 0) {
		r = 0;
		goto out;
	}
	/* A service (pg_service.conf) may name any host, and libpq takes it
	 * over PGHOST: then only a host in the DSN itself says where the
	 * connection goes. */
	if (hosts_are_local(where) &&
	    (service == NULL || *service == '\0' || hostaddr != NULL || host != NULL)) {
		r = 0;
		goto out;
	}
	if (production) {
		log_error(
		    "store_dsn names a database server that is not on this host without "
		    "sslmode=verify-full: in production the connection must be TLS with the "
		    "server's certificate and name verified");
		r = FGW_ERR_AUTH;
		goto out;
	}
	log_warn("store_dsn: the database server is not on this host and sslmode is not "
	         "verify-full (allowed in development only)");
	r = 0;
out:
	PQfreemem(err);
	PQconninfoFree(opts);
	return r;
}

static void
notice_to_log(void *arg, const char *message)
{
	size_t len = strlen(message);

	(void)arg;
	while (len > 0 && message[len - 1] == '\n')
		len--;
	log_debug("postgresql: %.*s", (int)len, message);
}

/* Runs sql (no parameters) and checks its result status. */
static int
exec_status(PGconn *c, const char *sql, ExecStatusType want, PGresult **res)
{
	PGresult *pr = PQexec(c, sql);
	int r;

	if (pr == NULL || PQresultStatus(pr) != want) {
		log_error("postgresql: %s",
		          pr != NULL ? PQresultErrorMessage(pr) : PQerrorMessage(c));
		r = FGW_ERR_DB;
		goto out;
	}
	if (res != NULL) {
		*res = pr;
		pr = NULL;
	}
	r = 0;
out:
	PQclear(pr);
	return r;
}

/* The one-row, one-column text of a SHOW; copied into buf. */
static int
show(PGconn *c, const char *name, char *buf, size_t cap)
{
	char sql[96];
	PGresult *res = NULL;
	int n, r;

	n = snprintf(sql, sizeof(sql), "SHOW %s", name);
	if (n < 0 || (size_t)n >= sizeof(sql)) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if ((r = exec_status(c, sql, PGRES_TUPLES_OK, &res)) != 0)
		goto out;
	if (PQntuples(res) != 1 || PQnfields(res) != 1) {
		r = FGW_ERR_DB;
		goto out;
	}
	r = fgw_strlcpy(buf, PQgetvalue(res, 0, 0), cap) == 0 ? 0 : FGW_ERR_DB;
out:
	PQclear(res);
	return r;
}

/* A commit the server acknowledged must survive its crash: fsync on, and
 * synchronous_commit on (or remote_apply, which also waits for the
 * standby to apply it). Read after connecting, so a setting from the
 * server, the database, the role or the DSN's options all count. */
static int
check_durable(PGconn *c)
{
	char v[64];
	int r;

	if ((r = show(c, "fsync", v, sizeof(v))) != 0)
		goto out;
	if (strcmp(v, "on") != 0) {
		log_error(
		    "the PostgreSQL server runs with fsync = %s: committed payments could be "
		    "lost in a crash; refusing to use it",
		    v);
		r = FGW_ERR_STATE;
		goto out;
	}
	if ((r = show(c, "synchronous_commit", v, sizeof(v))) != 0)
		goto out;
	if (strcmp(v, "on") != 0 && strcmp(v, "remote_apply") != 0) {
		log_error(
		    "the PostgreSQL session has synchronous_commit = %s: a payment could be "
		    "answered before its commit is durable; set it to on (server, database, "
		    "role and store_dsn options)",
		    v);
		r = FGW_ERR_STATE;
		goto out;
	}
	r = 0;
out:
	return r;
}

/* Reads the DSN file: a regular file only its owner can read, as every
 * secret file of flairgw. */
static int
read_dsn_file(const char *path, char **out)
{
	struct stat sb;
	size_t len = 0;
	int r;

	if (stat(path, &sb) != 0) {
		log_error("store_dsn_file %s: not found", path);
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0) {
		log_error("store_dsn_file %s must be a regular file of mode 0600 (it is %04o): "
		          "chmod 600 it",
		          path, (unsigned)(sb.st_mode & 07777));
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = fgw_read_secret_file(path, PG_DSN_MAX, out, &len)) != 0) {
		log_error("store_dsn_file %s: cannot read it", path);
		goto out;
	}
	r = 0;
out:
	return r;
}

int
pg_session_setup(PGconn *c)
{
	char level[64];
	int r;

	PQsetNoticeProcessor(c, notice_to_log, NULL);
	if ((r = check_durable(c)) != 0)
		return r;
	/* Explicit, so the server's default_transaction_isolation does not
	 * change what the store's statements rely on. */
	if ((r = exec_status(c,
	                     "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL "
	                     "READ COMMITTED",
	                     PGRES_COMMAND_OK, NULL)) != 0 ||
	    (r = show(c, "transaction_isolation", level, sizeof(level))) != 0)
		return r;
	if (strcmp(level, "read committed") != 0) {
		log_error("PostgreSQL session isolation is %s, not read committed", level);
		return FGW_ERR_STATE;
	}
	return 0;
}

int
pg_connect(const struct pg_opts *o, PGconn **out)
{
	static const char *const keys[] = { "dbname", "fallback_application_name",
		                                "client_encoding", NULL };
	const char *values[4];
	char *owned = NULL;
	const char *dsn;
	PGconn *c = NULL;
	int r;

	*out = NULL;
	if ((o->dsn == NULL) == (o->dsn_file == NULL)) {
		log_error("give exactly one of store_dsn and store_dsn_file");
		r = FGW_ERR_INVALID;
		goto out;
	}
	if (o->dsn_file != NULL) {
		if ((r = read_dsn_file(o->dsn_file, &owned)) != 0)
			goto out;
		dsn = owned;
	} else
		dsn = o->dsn;
	if ((r = pg_dsn_check(dsn, o->production)) != 0)
		goto out;
	/* The DSN goes in as dbname with expand_dbname: its keywords count,
	 * and the ones after it (the encoding the store writes) override. */
	values[0] = dsn;
	values[1] = "flairgw";
	values[2] = "UTF8";
	values[3] = NULL;
	c = PQconnectdbParams(keys, values, 1);
	if (c == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		log_error("cannot connect to PostgreSQL: %s", PQerrorMessage(c));
		r = FGW_ERR_UNAVAILABLE;
		goto out;
	}
	if ((r = pg_session_setup(c)) != 0)
		goto out;
	log_info("connected to PostgreSQL %d (TLS %s)", PQserverVersion(c),
	         PQsslInUse(c) ? "on" : "off");
	*out = c;
	c = NULL;
	r = 0;
out:
	PQfinish(c);
	if (owned != NULL)
		fgw_freezero(owned, strlen(owned) + 1);
	return r;
}

static int
read_version(PGconn *c, int *version)
{
	PGresult *res = NULL;
	int r;

	/* Before the first migration there is no table to read. */
	if ((r = exec_status(c, "SELECT to_regclass('schema_version') IS NOT NULL",
	                     PGRES_TUPLES_OK, &res)) != 0)
		goto out;
	if (PQntuples(res) != 1) {
		r = FGW_ERR_DB;
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
		*version = 0;
		r = 0;
		goto out;
	}
	PQclear(res);
	res = NULL;
	if ((r = exec_status(c, "SELECT COALESCE(MAX(version), 0) FROM schema_version",
	                     PGRES_TUPLES_OK, &res)) != 0)
		goto out;
	if (PQntuples(res) != 1) {
		r = FGW_ERR_DB;
		goto out;
	}
	*version = atoi(PQgetvalue(res, 0, 0));
	r = 0;
out:
	PQclear(res);
	return r;
}

int
pg_schema_version(PGconn *c, int *version)
{
	return read_version(c, version);
}

int
pg_migrate(PGconn *c)
{
	const struct pg_migration *steps;
	char sql[160];
	size_t n, i;
	int v = 0, start = 0, last, len, r;
	struct timespec now;

	steps = schema_pg_migrations(&n);
	last = n > 0 ? steps[n - 1].version : 0;
	if ((r = exec_status(c, "BEGIN", PGRES_COMMAND_OK, NULL)) != 0)
		goto out;
	/* Held until COMMIT or ROLLBACK; a second instance waits here and then
	 * reads the version the first one committed. */
	len = snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%lld)",
	               PG_LOCK_MIGRATE);
	if (len < 0 || (size_t)len >= sizeof(sql)) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if ((r = exec_status(c, sql, PGRES_TUPLES_OK, NULL)) != 0 ||
	    (r = exec_status(c,
	                     "CREATE TABLE IF NOT EXISTS schema_version ("
	                     " version integer PRIMARY KEY NOT NULL,"
	                     " applied_at bigint NOT NULL)",
	                     PGRES_COMMAND_OK, NULL)) != 0 ||
	    (r = read_version(c, &v)) != 0)
		goto out;
	start = v;
	if (v > last) {
		log_error("database schema version %d is not one this build knows (up to %d)", v,
		          last);
		r = FGW_ERR_STATE;
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	for (i = 0; i < n; i++) {
		if (steps[i].version <= v)
			continue;
		if ((r = exec_status(c, steps[i].sql, PGRES_COMMAND_OK, NULL)) != 0) {
			log_error("PostgreSQL migration to version %d failed", steps[i].version);
			goto out;
		}
		len = snprintf(
		    sql, sizeof(sql),
		    "INSERT INTO schema_version (version, applied_at) VALUES (%d, %lld)",
		    steps[i].version, (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
		if (len < 0 || (size_t)len >= sizeof(sql)) {
			r = FGW_ERR_INTERNAL;
			goto out;
		}
		if ((r = exec_status(c, sql, PGRES_COMMAND_OK, NULL)) != 0)
			goto out;
		v = steps[i].version;
	}
	if ((r = exec_status(c, "COMMIT", PGRES_COMMAND_OK, NULL)) != 0)
		goto out;
	if (v != start)
		log_info("PostgreSQL schema migrated from version %d to %d", start, v);
	r = 0;
out:
	if (r != 0 && PQtransactionStatus(c) != PQTRANS_IDLE) {
		PGresult *rb = PQexec(c, "ROLLBACK");
		PQclear(rb);
	}
	return r;
}
