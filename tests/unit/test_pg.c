/*
 * tests/unit/test_pg.c — store/pg.c against a real PostgreSQL server.
 *
 * Needs a server: tests/integration/test_pg.py starts one (pg.Postgres)
 * and runs this binary with FGW_TEST_PG_DSN (the flairgw role on its own
 * database) and FGW_TEST_PG_NOFSYNC_DSN (a server with fsync off); without
 * them every case that needs a server fails. Built as
 * $(BUILD)/pg-tests/test_pg, out of tests/run.sh's way.
 *
 *   test_pg [CASE]                  the cases below
 *   test_pg --migrate-sqlite FILE   FILE migrated by store/schema.c
 *   test_pg --migrate-pg            FGW_TEST_PG_DSN migrated by store/pg.c
 * (the last two for test_pg_schema.py's catalog comparison).
 */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/util.h"
#include "store/pg.h"
#include "store/schema.h"
#include "store/schema_pg.h"
#include "tests/unit/tt.h"

static const char *
env_dsn(const char *name)
{
	const char *v = getenv(name);
	if (v == NULL || *v == '\0')
		fprintf(stderr, "  %s is not set (run through tests/integration/test_pg.py)\n",
		        name);
	return v != NULL && *v != '\0' ? v : NULL;
}

static PGconn *
connect_dsn(const char *dsn)
{
	struct pg_opts o = { .dsn = dsn };
	PGconn *c = NULL;
	return pg_connect(&o, &c) == 0 ? c : NULL;
}

/* The first column of the first row of sql, as an integer; -1 on error. */
static long long
scalar(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	long long v = -1;
	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
	    !PQgetisnull(res, 0, 0))
		v = atoll(PQgetvalue(res, 0, 0));
	else if (res != NULL && PQresultStatus(res) != PGRES_TUPLES_OK)
		fprintf(stderr, "  %s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
	return v;
}

/* Whether sql succeeds; on failure its SQLSTATE is copied to state. */
static int
exec_ok(PGconn *c, const char *sql, char state[6])
{
	PGresult *res = PQexec(c, sql);
	ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
	if (!ok && state != NULL) {
		const char *s = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		snprintf(state, 6, "%s", s != NULL ? s : "?????");
	}
	PQclear(res);
	return ok;
}

/* An empty public schema: the database as a new installation finds it. */
static int
reset_schema(PGconn *c)
{
	return exec_ok(c, "DROP SCHEMA public CASCADE; CREATE SCHEMA public", NULL) ? 0 : -1;
}

static int
test_dsn_tls_rule(void)
{
	TT_BEGIN;
	/* Production: a server elsewhere only with verify-full. */
	CHECK_EQ_INT(pg_dsn_check("host=db.example.com dbname=f", true), FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("host=db.example.com sslmode=require", true), FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("host=db.example.com sslmode=verify-ca", true),
	             FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("host=db.example.com sslmode=verify-full", true), 0);
	CHECK_EQ_INT(pg_dsn_check("postgresql://u@db.example.com/f", true), FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("postgresql://u@db.example.com/f?sslmode=verify-full",
	                          true),
	             0);
	CHECK_EQ_INT(pg_dsn_check("host=10.1.2.3", true), FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("host=128.0.0.1", true), FGW_ERR_AUTH);
	/* One remote host in a list is enough to need TLS. */
	CHECK_EQ_INT(pg_dsn_check("host=127.0.0.1,db.example.com", true), FGW_ERR_AUTH);
	/* hostaddr is where libpq connects: a local name does not hide it. */
	CHECK_EQ_INT(pg_dsn_check("host=localhost hostaddr=10.1.2.3", true), FGW_ERR_AUTH);
	/* Loopback and sockets need no TLS. */
	CHECK_EQ_INT(pg_dsn_check("host=127.0.0.1 port=5432", true), 0);
	CHECK_EQ_INT(pg_dsn_check("host=127.8.9.10", true), 0);
	CHECK_EQ_INT(pg_dsn_check("host=localhost", true), 0);
	CHECK_EQ_INT(pg_dsn_check("host=::1", true), 0);
	CHECK_EQ_INT(pg_dsn_check("host=/run/postgresql", true), 0);
	CHECK_EQ_INT(pg_dsn_check("postgresql://u@127.0.0.1:5433/f", true), 0);
	CHECK_EQ_INT(pg_dsn_check("postgresql://u@[::1]:5433/f", true), 0);
	/* Development: allowed, with a warning. */
	CHECK_EQ_INT(pg_dsn_check("host=db.example.com", false), 0);
	/* Not a DSN at all. */
	CHECK_EQ_INT(pg_dsn_check("host='unterminated", true), FGW_ERR_INVALID);
	CHECK_EQ_INT(pg_dsn_check("nosuchkeyword=1", false), FGW_ERR_INVALID);
	CHECK_EQ_INT(pg_dsn_check(NULL, false), FGW_ERR_INVALID);
	/* Without a host in the DSN, libpq's environment decides. */
	CHECK(setenv("PGHOST", "db.example.com", 1) == 0);
	CHECK_EQ_INT(pg_dsn_check("dbname=f", true), FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("host=127.0.0.1 dbname=f", true), 0);
	CHECK(setenv("PGSSLMODE", "verify-full", 1) == 0);
	CHECK_EQ_INT(pg_dsn_check("dbname=f", true), 0);
	CHECK_EQ_INT(pg_dsn_check("dbname=f sslmode=prefer", true), FGW_ERR_AUTH);
	CHECK(unsetenv("PGSSLMODE") == 0);
	CHECK(setenv("PGHOSTADDR", "127.0.0.1", 1) == 0);
	CHECK_EQ_INT(pg_dsn_check("dbname=f", true), 0);
	CHECK(unsetenv("PGHOSTADDR") == 0 && unsetenv("PGHOST") == 0);
	/* A service file may point anywhere: the DSN must say where, or
	 * verify-full. */
	CHECK_EQ_INT(pg_dsn_check("service=prod", true), FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("service=prod host=127.0.0.1", true), 0);
	CHECK_EQ_INT(pg_dsn_check("service=prod sslmode=verify-full", true), 0);
	CHECK(setenv("PGSERVICE", "prod", 1) == 0);
	CHECK_EQ_INT(pg_dsn_check("dbname=f", true), FGW_ERR_AUTH);
	CHECK_EQ_INT(pg_dsn_check("dbname=f", false), 0);
	CHECK(setenv("PGHOST", "127.0.0.1", 1) == 0);
	CHECK_EQ_INT(pg_dsn_check("dbname=f", true), FGW_ERR_AUTH);
	CHECK(setenv("PGSSLMODE", "verify-full", 1) == 0);
	CHECK_EQ_INT(pg_dsn_check("dbname=f", true), FGW_ERR_AUTH);
end:
	unsetenv("PGSERVICE");
	unsetenv("PGHOST");
	unsetenv("PGHOSTADDR");
	unsetenv("PGSSLMODE");
	TT_END;
}

static int
test_connect_session(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = NULL;
	char state[6];
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK((c = connect_dsn(dsn)) != NULL);
	CHECK(PQstatus(c) == CONNECTION_OK);
	/* The session is READ COMMITTED even when the role's default is
	 * another level. */
	CHECK(exec_ok(c,
	              "ALTER ROLE CURRENT_USER SET default_transaction_isolation = "
	              "'serializable'",
	              state));
	PQfinish(c);
	CHECK((c = connect_dsn(dsn)) != NULL);
	CHECK(exec_ok(c, "BEGIN", state));
	CHECK_EQ_INT(scalar(c, "SELECT (current_setting('transaction_isolation') = "
	                       "'read committed')::int"),
	             1);
	CHECK(exec_ok(c, "COMMIT", state));
	CHECK_EQ_INT(scalar(c, "SELECT (current_setting('client_encoding') = 'UTF8')::int"),
	             1);
	CHECK_EQ_INT(scalar(c,
	                    "SELECT (current_setting('application_name') = 'flairgw')::int"),
	             1);
end:
	if (c != NULL)
		(void)exec_ok(c, "ALTER ROLE CURRENT_USER RESET default_transaction_isolation",
		              NULL);
	PQfinish(c);
	TT_END;
}

/* Exactly one of dsn and dsn_file; bad credentials are a failure to
 * connect, not a crash or a half-open connection. */
static int
test_connect_refusals(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	char bad[1024];
	struct pg_opts none = { 0 },
	               both = { .dsn = "host=127.0.0.1", .dsn_file = "/nonexistent" };
	struct pg_opts wrong = { .dsn = bad };
	PGconn *c = NULL;
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK_EQ_INT(pg_connect(&none, &c), FGW_ERR_INVALID);
	CHECK(c == NULL);
	CHECK_EQ_INT(pg_connect(&both, &c), FGW_ERR_INVALID);
	CHECK(c == NULL);
	CHECK(snprintf(bad, sizeof(bad), "%s password=wrong", dsn) < (int)sizeof(bad));
	CHECK_EQ_INT(pg_connect(&wrong, &c), FGW_ERR_UNAVAILABLE);
	CHECK(c == NULL);
end:
	PQfinish(c);
	TT_END;
}

/* The session's synchronous_commit, from the DSN's options here (the
 * same check sees a server, database or role setting). */
static int
test_refuses_synchronous_commit_off(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	char buf[1024];
	struct pg_opts o = { .dsn = buf };
	PGconn *c = NULL;
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK(snprintf(buf, sizeof(buf), "%s options='-c synchronous_commit=off'", dsn) <
	      (int)sizeof(buf));
	CHECK_EQ_INT(pg_connect(&o, &c), FGW_ERR_STATE);
	CHECK(c == NULL);
	CHECK(snprintf(buf, sizeof(buf), "%s options='-c synchronous_commit=local'", dsn) <
	      (int)sizeof(buf));
	CHECK_EQ_INT(pg_connect(&o, &c), FGW_ERR_STATE);
	CHECK(snprintf(buf, sizeof(buf), "%s options='-c synchronous_commit=remote_apply'",
	               dsn) < (int)sizeof(buf));
	CHECK_EQ_INT(pg_connect(&o, &c), 0);
end:
	PQfinish(c);
	TT_END;
}

static int
test_refuses_fsync_off(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_NOFSYNC_DSN");
	struct pg_opts o = { .dsn = dsn };
	PGconn *c = NULL;
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK_EQ_INT(pg_connect(&o, &c), FGW_ERR_STATE);
	CHECK(c == NULL);
end:
	PQfinish(c);
	TT_END;
}

static int
write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fputs(text, f);
	fputs("\n", f); /* as an editor leaves it */
	if (fclose(f) != 0)
		return -1;
	return chmod(path, mode);
}

static int
test_connect_dsn_file(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	const char *tmp = getenv("TMPDIR");
	char dir[512], path[600];
	struct pg_opts o = { .dsn_file = path };
	PGconn *c = NULL;
	TT_BEGIN;
	dir[0] = '\0';
	path[0] = '\0';
	CHECK(dsn != NULL);
	CHECK(snprintf(dir, sizeof(dir), "%s/fgw-pgdsn-XXXXXX", tmp ? tmp : "/tmp") <
	      (int)sizeof(dir));
	CHECK(mkdtemp(dir) != NULL);
	CHECK(snprintf(path, sizeof(path), "%s/dsn", dir) < (int)sizeof(path));
	CHECK_EQ_INT(pg_connect(&o, &c), FGW_ERR_NOT_FOUND);
	/* Readable by others: refused before anything is read. */
	CHECK(write_file(path, dsn, 0644) == 0);
	CHECK_EQ_INT(pg_connect(&o, &c), FGW_ERR_INVALID);
	CHECK(c == NULL);
	CHECK(chmod(path, 0640) == 0);
	CHECK_EQ_INT(pg_connect(&o, &c), FGW_ERR_INVALID);
	CHECK(chmod(path, 0600) == 0);
	CHECK_EQ_INT(pg_connect(&o, &c), 0);
	CHECK(c != NULL && PQstatus(c) == CONNECTION_OK);
	CHECK_EQ_INT(scalar(c, "SELECT 41 + 1"), 42);
	PQfinish(c);
	c = NULL;
	/* A file with a remote host and no verify-full, in production. */
	CHECK(write_file(path, "host=db.example.com dbname=flairgw", 0600) == 0);
	o.production = true;
	CHECK_EQ_INT(pg_connect(&o, &c), FGW_ERR_AUTH);
	CHECK(c == NULL);
end:
	PQfinish(c);
	if (path[0] != '\0')
		unlink(path);
	if (dir[0] != '\0')
		rmdir(dir);
	TT_END;
}

/* How many steps a new database runs: one schema_version row each. */
static long long
pg_steps(void)
{
	size_t n = 0;

	(void)schema_pg_migrations(&n);
	return (long long)n;
}

static int
test_migrate_fresh_and_again(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = NULL;
	int v = -1;
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK((c = connect_dsn(dsn)) != NULL);
	CHECK(reset_schema(c) == 0);
	CHECK_EQ_INT(pg_schema_version(c, &v), 0);
	CHECK_EQ_INT(v, 0);
	CHECK_EQ_INT(pg_migrate(c), 0);
	CHECK_EQ_INT(pg_schema_version(c, &v), 0);
	CHECK_EQ_INT(v, STORE_SCHEMA_VERSION);
	/* Again: nothing to do, nothing changes. */
	CHECK_EQ_INT(pg_migrate(c), 0);
	CHECK_EQ_INT(pg_schema_version(c, &v), 0);
	CHECK_EQ_INT(v, STORE_SCHEMA_VERSION);
	CHECK_EQ_INT(scalar(c, "SELECT count(*) FROM schema_version"), pg_steps());
	CHECK(PQtransactionStatus(c) == PQTRANS_IDLE);
end:
	PQfinish(c);
	TT_END;
}

/* A database a newer build migrated is left alone. */
static int
test_migrate_refuses_newer(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = NULL;
	char sql[128];
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK((c = connect_dsn(dsn)) != NULL);
	CHECK(reset_schema(c) == 0);
	CHECK_EQ_INT(pg_migrate(c), 0);
	snprintf(sql, sizeof(sql), "INSERT INTO schema_version VALUES (%d, 0)",
	         STORE_SCHEMA_VERSION + 1);
	CHECK(exec_ok(c, sql, NULL));
	CHECK_EQ_INT(pg_migrate(c), FGW_ERR_STATE);
	CHECK(PQtransactionStatus(c) == PQTRANS_IDLE);
	CHECK_EQ_INT(scalar(c, "SELECT max(version) FROM schema_version"),
	             STORE_SCHEMA_VERSION + 1);
end:
	PQfinish(c);
	TT_END;
}

struct migrator {
	const char *dsn;
	pthread_barrier_t *start;
	int rc;
};

static void *
migrate_thread(void *arg)
{
	struct migrator *m = arg;
	PGconn *c = connect_dsn(m->dsn);
	m->rc = FGW_ERR_UNAVAILABLE;
	/* Both connected before either begins: the two migrations overlap. */
	pthread_barrier_wait(m->start);
	if (c != NULL)
		m->rc = pg_migrate(c);
	PQfinish(c);
	return NULL;
}

/* Two instances starting at once on a new database: both succeed, the
 * schema is migrated once. Without the advisory lock they collide on the
 * catalog (duplicate tables or types) and one fails. Several rounds, as
 * the overlap is up to the scheduler. */
static int
test_two_concurrent_migrators(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = NULL;
	pthread_barrier_t barrier;
	pthread_t t[2];
	struct migrator m[2];
	int round, i, v, have_barrier = 0;
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK((c = connect_dsn(dsn)) != NULL);
	for (round = 0; round < 5; round++) {
		CHECK(reset_schema(c) == 0);
		CHECK(pthread_barrier_init(&barrier, NULL, 2) == 0);
		have_barrier = 1;
		for (i = 0; i < 2; i++) {
			m[i] = (struct migrator){ .dsn = dsn, .start = &barrier, .rc = 1 };
			CHECK(pthread_create(&t[i], NULL, migrate_thread, &m[i]) == 0);
		}
		for (i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&barrier);
		have_barrier = 0;
		CHECK_EQ_INT(m[0].rc, 0);
		CHECK_EQ_INT(m[1].rc, 0);
		v = -1;
		CHECK_EQ_INT(pg_schema_version(c, &v), 0);
		CHECK_EQ_INT(v, STORE_SCHEMA_VERSION);
		CHECK_EQ_INT(scalar(c, "SELECT count(*) FROM schema_version"), pg_steps());
	}
end:
	if (have_barrier)
		pthread_barrier_destroy(&barrier);
	PQfinish(c);
	TT_END;
}

/* The plpgsql triggers do what SQLite's do: the audit tables are
 * append-only in order (and refuse TRUNCATE), and every announced state
 * of a transaction leaves a txn_moves row in the same commit. */
static int
test_triggers(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = NULL;
	char state[6];
	const char *ins =
	    "INSERT INTO audit_events (seq, ts, actor, source, event_type, resource,"
	    " outcome, prev_hash, hash) VALUES (%d, 1, 'a', 's', 'e', 'r', 'o', 'p', 'h')";
	char sql[512];
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK((c = connect_dsn(dsn)) != NULL);
	CHECK(reset_schema(c) == 0);
	CHECK_EQ_INT(pg_migrate(c), 0);
	snprintf(sql, sizeof(sql), ins, 1);
	CHECK(exec_ok(c, sql, state));
	snprintf(sql, sizeof(sql), ins, 3);
	CHECK(!exec_ok(c, sql, state));
	CHECK_STR(state, "23001");
	snprintf(sql, sizeof(sql), ins, 1);
	CHECK(!exec_ok(c, sql, state));
	CHECK(!exec_ok(c, "UPDATE audit_events SET outcome = 'x'", state));
	CHECK_STR(state, "23001");
	CHECK(!exec_ok(c, "DELETE FROM audit_events", state));
	CHECK_STR(state, "23001");
	CHECK(!exec_ok(c, "TRUNCATE audit_events", state));
	CHECK_STR(state, "23001");
	snprintf(sql, sizeof(sql), ins, 2);
	CHECK(exec_ok(c, sql, state));
	CHECK_EQ_INT(scalar(c, "SELECT count(*) FROM audit_events"), 2);

	CHECK(
	    exec_ok(c, "INSERT INTO audit_checkpoints VALUES (2, 1, 'h', 'k', 's')", state));
	CHECK(
	    !exec_ok(c, "INSERT INTO audit_checkpoints VALUES (1, 1, 'h', 'k', 's')", state));
	CHECK_STR(state, "23001");
	CHECK(!exec_ok(c, "DELETE FROM audit_checkpoints", state));
	CHECK(!exec_ok(c, "TRUNCATE audit_checkpoints", state));

	CHECK(
	    exec_ok(c,
	            "INSERT INTO transactions (id, client_id, amount, currency, status,"
	            " created_at, updated_at) VALUES ('t1', 'c', 100, 'USD', 'posting', 1, 1),"
	            " ('t2', 'c', 100, 'USD', 'declined', 1, 1)",
	            state));
	CHECK_EQ_INT(scalar(c, "SELECT count(*) FROM txn_moves WHERE txn_id = 't1'"), 0);
	CHECK_EQ_INT(scalar(c, "SELECT count(*) FROM txn_moves WHERE txn_id = 't2'"
	                       " AND status = 'declined' AND at = 1"),
	             1);
	CHECK(exec_ok(c,
	              "UPDATE transactions SET status = 'succeeded', updated_at = 7"
	              " WHERE id = 't1'",
	              state));
	CHECK(exec_ok(c, "UPDATE transactions SET updated_at = 8 WHERE id = 't1'", state));
	CHECK(exec_ok(c, "UPDATE transactions SET status = 'succeeded' WHERE id = 't1'",
	              state));
	CHECK_EQ_INT(scalar(c, "SELECT count(*) FROM txn_moves WHERE txn_id = 't1'"), 1);
	CHECK_EQ_INT(scalar(c, "SELECT at FROM txn_moves WHERE txn_id = 't1'"
	                       " AND status = 'succeeded'"),
	             7);
	/* The CHECKs came along: capacity is never oversold by an UPDATE. */
	CHECK(exec_ok(c,
	              "INSERT INTO experiences (id, price, currency) VALUES ('e', 1, 'USD');"
	              "INSERT INTO time_slots (id, experience_id, starts_at, capacity)"
	              " VALUES ('s', 'e', 1, 2)",
	              state));
	CHECK(!exec_ok(c, "UPDATE time_slots SET taken = 3 WHERE id = 's'", state));
	CHECK_STR(state, "23514");
end:
	PQfinish(c);
	TT_END;
}

/* The views read with the same names and render times as SQLite does. */
static int
test_views(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = NULL;
	PGresult *res = NULL;
	char state[6];
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK((c = connect_dsn(dsn)) != NULL);
	CHECK(reset_schema(c) == 0);
	CHECK_EQ_INT(pg_migrate(c), 0);
	CHECK(
	    exec_ok(c,
	            "INSERT INTO audit_events (seq, ts, actor, source, event_type, resource,"
	            " outcome, details_json, prev_hash, hash) VALUES (1, 1733356800123, 'a',"
	            " 's', 'backup.created', 'f.db', 'ok',"
	            " '{\"bytes\":4096,\"blake2b\":\"ab\",\"auditSeq\":1,\"transactions\":3}',"
	            " 'p', 'h')",
	            state));
	res = PQexec(c, "SELECT time_utc, file, bytes, blake2b, audit_seq, transactions"
	                " FROM v_backups");
	CHECK(res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1);
	CHECK_STR(PQgetvalue(res, 0, 0), "2024-12-05T00:00:00.123Z");
	CHECK_STR(PQgetvalue(res, 0, 1), "f.db");
	CHECK_STR(PQgetvalue(res, 0, 2), "4096");
	CHECK_STR(PQgetvalue(res, 0, 3), "ab");
	CHECK_STR(PQgetvalue(res, 0, 4), "1");
	CHECK_STR(PQgetvalue(res, 0, 5), "3");
	PQclear(res);
	res = NULL;
	CHECK(exec_ok(c,
	              "INSERT INTO transactions (id, client_id, amount, currency, status,"
	              " created_at, updated_at) VALUES ('t', 'c', 250, 'EUR', 'succeeded',"
	              " 1733356799999, 1733356800000)",
	              state));
	res = PQexec(c, "SELECT created_utc, updated_utc FROM v_transactions;");
	CHECK(res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1);
	CHECK_STR(PQgetvalue(res, 0, 0), "2024-12-04T23:59:59.999Z");
	CHECK_STR(PQgetvalue(res, 0, 1), "2024-12-05T00:00:00.000Z");
	PQclear(res);
	res = PQexec(c, "SELECT day, txn_count, total_amount FROM v_daily_totals");
	CHECK(res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1);
	CHECK_STR(PQgetvalue(res, 0, 0), "2024-12-04");
	CHECK_STR(PQgetvalue(res, 0, 1), "1");
	CHECK_STR(PQgetvalue(res, 0, 2), "250");
end:
	PQclear(res);
	PQfinish(c);
	TT_END;
}

/* The statements docs/postgresql.md designs the cross-instance guarantees
 * on, run on this schema through pg_connect's sessions (READ COMMITTED):
 * a guarded UPDATE never oversells a slot however many sessions race, the
 * idempotency primary key lets one claim win, and FOR UPDATE SKIP LOCKED
 * hands two claimers disjoint rows. Under SERIALIZABLE sessions the race
 * would end in serialization failures instead of clean refusals. */
#define RACERS 30
#define PLACES 12

struct racer {
	const char *dsn;
	pthread_barrier_t *start;
	int won;   /* 1: got a place / the claim */
	int error; /* the statement failed */
};

static void *
hold_thread(void *arg)
{
	struct racer *h = arg;
	PGconn *c = connect_dsn(h->dsn);
	PGresult *res;

	pthread_barrier_wait(h->start);
	if (c == NULL) {
		h->error = 1;
		return NULL;
	}
	res = PQexec(c, "UPDATE time_slots SET taken = taken + 1 WHERE id = 'race'"
	                " AND status = 'open' AND taken + 1 <= capacity");
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		h->error = 1;
	else
		h->won = strcmp(PQcmdTuples(res), "1") == 0;
	PQclear(res);
	res = PQexec(c, "INSERT INTO idempotency (client_id, key, request_hash, status_code,"
	                " created_at, expires_at) VALUES ('website', 'k1', 'h', 0, 1, 2)"
	                " ON CONFLICT (client_id, key) DO NOTHING RETURNING key");
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
		h->error = 1;
	else if (PQntuples(res) == 1)
		h->won += 100;
	PQclear(res);
	PQfinish(c);
	return NULL;
}

static int
test_design_races(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = NULL, *a = NULL, *b = NULL;
	PGresult *ra = NULL, *rb = NULL;
	pthread_barrier_t barrier;
	pthread_t t[RACERS];
	struct racer h[RACERS];
	int i, j, places = 0, claims = 0, have_barrier = 0, started = 0;
	char state[6];
	TT_BEGIN;
	CHECK(dsn != NULL);
	CHECK((c = connect_dsn(dsn)) != NULL);
	CHECK(reset_schema(c) == 0);
	CHECK_EQ_INT(pg_migrate(c), 0);
	CHECK(exec_ok(c,
	              "INSERT INTO experiences (id, price, currency) VALUES ('e', 1, 'USD');"
	              "INSERT INTO time_slots (id, experience_id, starts_at, capacity)"
	              " VALUES ('race', 'e', 1, 12)",
	              state));
	CHECK(pthread_barrier_init(&barrier, NULL, RACERS) == 0);
	have_barrier = 1;
	for (i = 0; i < RACERS; i++) {
		h[i] = (struct racer){ .dsn = dsn, .start = &barrier };
		CHECK(pthread_create(&t[i], NULL, hold_thread, &h[i]) == 0);
		started++;
	}
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	started = 0;
	for (i = 0; i < RACERS; i++) {
		CHECK_EQ_INT(h[i].error, 0);
		places += h[i].won % 100;
		claims += h[i].won / 100;
	}
	CHECK_EQ_INT(places, PLACES);
	CHECK_EQ_INT(scalar(c, "SELECT taken FROM time_slots WHERE id = 'race'"), PLACES);
	CHECK_EQ_INT(claims, 1);

	/* Two claimers of due outbox rows: disjoint, and together all. */
	CHECK(exec_ok(c,
	              "INSERT INTO webhook_outbox (id, endpoint_url, event_id, event_type,"
	              " payload, status, next_attempt_at, created_at, updated_at)"
	              " SELECT 'o' || g, 'https://x', 'e' || g, 't', '{}', 'pending', g, 1, 1"
	              " FROM generate_series(1, 10) g",
	              state));
	CHECK((a = connect_dsn(dsn)) != NULL && (b = connect_dsn(dsn)) != NULL);
	CHECK(exec_ok(a, "BEGIN", state) && exec_ok(b, "BEGIN", state));
	ra = PQexec(a, "SELECT id FROM webhook_outbox WHERE status = 'pending' AND"
	               " next_attempt_at <= 100 ORDER BY next_attempt_at LIMIT 6"
	               " FOR UPDATE SKIP LOCKED");
	rb = PQexec(b, "SELECT id FROM webhook_outbox WHERE status = 'pending' AND"
	               " next_attempt_at <= 100 ORDER BY next_attempt_at LIMIT 6"
	               " FOR UPDATE SKIP LOCKED");
	CHECK(PQresultStatus(ra) == PGRES_TUPLES_OK && PQresultStatus(rb) == PGRES_TUPLES_OK);
	CHECK_EQ_INT(PQntuples(ra), 6);
	CHECK_EQ_INT(PQntuples(rb), 4);
	for (i = 0; i < PQntuples(ra); i++)
		for (j = 0; j < PQntuples(rb); j++)
			CHECK(strcmp(PQgetvalue(ra, i, 0), PQgetvalue(rb, j, 0)) != 0);
	CHECK(exec_ok(a, "COMMIT", state) && exec_ok(b, "COMMIT", state));
end:
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	if (have_barrier)
		pthread_barrier_destroy(&barrier);
	PQclear(ra);
	PQclear(rb);
	PQfinish(a);
	PQfinish(b);
	PQfinish(c);
	TT_END;
}

/* The migration list ends at the version store/schema.c has: a SQLite
 * migration without its PostgreSQL step fails here. */
static int
test_versions_match(void)
{
	size_t n = 0, i;
	const struct pg_migration *m = schema_pg_migrations(&n);
	TT_BEGIN;
	CHECK(n > 0);
	for (i = 1; i < n; i++)
		CHECK(m[i].version > m[i - 1].version);
	CHECK_EQ_INT(m[n - 1].version, STORE_SCHEMA_VERSION);
end:
	TT_END;
}

static int
migrate_sqlite(const char *path)
{
	sqlite3 *db = NULL;
	int r = 1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	        SQLITE_OK ||
	    schema_migrate(db) != 0) {
		fprintf(stderr, "migrating %s failed\n", path);
		goto out;
	}
	r = 0;
out:
	sqlite3_close(db);
	return r;
}

static int
migrate_pg(void)
{
	const char *dsn = env_dsn("FGW_TEST_PG_DSN");
	PGconn *c = dsn != NULL ? connect_dsn(dsn) : NULL;
	int r = c != NULL && pg_migrate(c) == 0 ? 0 : 1;
	PQfinish(c);
	return r;
}

static const struct tt_case cases[] = {
	{ "dsn_tls_rule", test_dsn_tls_rule },
	{ "versions_match", test_versions_match },
	{ "connect_session", test_connect_session },
	{ "connect_refusals", test_connect_refusals },
	{ "refuses_synchronous_commit_off", test_refuses_synchronous_commit_off },
	{ "refuses_fsync_off", test_refuses_fsync_off },
	{ "connect_dsn_file", test_connect_dsn_file },
	{ "migrate_fresh_and_again", test_migrate_fresh_and_again },
	{ "migrate_refuses_newer", test_migrate_refuses_newer },
	{ "two_concurrent_migrators", test_two_concurrent_migrators },
	{ "triggers", test_triggers },
	{ "views", test_views },
	{ "design_races", test_design_races },
	{ NULL, NULL },
};

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--migrate-sqlite") == 0)
		return migrate_sqlite(argv[2]);
	if (argc == 2 && strcmp(argv[1], "--migrate-pg") == 0)
		return migrate_pg();
	return tt_run(cases, argc, argv);
}
