/*
 * store/pg.h — private to store/: connections to PostgreSQL (the store
 * backend for running many instances on one database) and its schema
 * migrations. docs/postgresql.md describes the design.
 *
 * A connection from pg_connect is ready for the store: the server was
 * checked to make commits durable (fsync on, synchronous_commit on or
 * remote_apply), the session runs READ COMMITTED (set explicitly, so a
 * server default of another level changes nothing) with UTF8 text, and
 * libpq's notices go to the log. The guarantees that need more than READ
 * COMMITTED take row locks, FOR UPDATE SKIP LOCKED claims or advisory
 * locks in the statements themselves (docs/postgresql.md lists them).
 *
 * The DSN is never logged: it may carry the password.
 */
#ifndef FGW_STORE_PG_H
#define FGW_STORE_PG_H

#include <stdbool.h>
#include <libpq-fe.h>

/* Advisory lock keys (pg_advisory_xact_lock), one per thing serialised
 * across instances; "fgw" in the high bytes keeps them apart from
 * another application's keys on a shared server. */
#define PG_LOCK_MIGRATE 0x6667770000000001LL
/* The audit chain: held by each writer batch that appends events. */
#define PG_LOCK_AUDIT 0x6667770000000002LL
/* The backup schedule: held (pg_try_advisory_lock, a session lock) by the
 * one instance that makes the backups, until its connection ends. */
#define PG_LOCK_BACKUP 0x6667770000000003LL
/* Writes of the key ring (store/keyring.c). */
#define PG_LOCK_KEYRING 0x6667770000000010LL
/* A customer's saved methods (store/methods.c): the two-key form,
 * pg_advisory_xact_lock(PG_LOCK_METHODS, hashtext(customer)), a key space
 * apart from the one-key locks above ("fgw\1"). Two customers that hash
 * alike only wait for each other. */
#define PG_LOCK_METHODS 1718056705
/* An instance's identity (store_opts.instance_id): the two-key form,
 * pg_try_advisory_lock(PG_LOCK_INSTANCE, hashtext(id)), a session lock
 * held by the live instance that has it ("fgw\2"). */
#define PG_LOCK_INSTANCE 1718056706

struct pg_opts {
	const char *dsn;      /* libpq key=value or postgresql:// URI, or NULL */
	const char *dsn_file; /* a file holding the DSN (mode 0600), or NULL */
	bool production;      /* refuse a DSN that could send data unverified */
};

/* Whether dsn may be used: 0, FGW_ERR_INVALID when it does not parse,
 * or (production only) FGW_ERR_AUTH when a host it names is not loopback
 * and sslmode is not verify-full. Loopback: localhost, 127.0.0.0/8, ::1,
 * and unix socket paths. Without a host in the DSN, PGHOSTADDR or PGHOST
 * decides (and PGSSLMODE without sslmode), as they would for libpq; with
 * a service (pg_service.conf, which libpq prefers to PGHOST) the DSN must
 * name the host or say verify-full. */
int pg_dsn_check(const char *dsn, bool production);

/* Connects (exactly one of dsn, dsn_file), checks the DSN (pg_dsn_check)
 * and the server, and sets up the session as described above. On success
 * *out is the connection (PQfinish it). FGW_ERR_INVALID (no or two DSNs,
 * a DSN file readable by others or not a regular file, a DSN that does
 * not parse), FGW_ERR_NOT_FOUND (no DSN file), FGW_ERR_AUTH (TLS rule),
 * FGW_ERR_UNAVAILABLE (connection failed), FGW_ERR_STATE (the server does
 * not make commits durable), FGW_ERR_DB. */
int pg_connect(const struct pg_opts *o, PGconn **out);

/* What pg_connect sets up on a new session (notices to the log, the
 * durability checks, READ COMMITTED), for a connection made again with
 * PQreset. 0, FGW_ERR_STATE, FGW_ERR_DB. */
int pg_session_setup(PGconn *c);

/* Applies the missing migrations of store/schema_pg.c in one transaction
 * under pg_advisory_xact_lock(PG_LOCK_MIGRATE): instances starting at once
 * migrate once, the others wait and find the work done. 0,
 * FGW_ERR_STATE when the database is newer than this build, FGW_ERR_DB. */
int pg_migrate(PGconn *c);

/* The database's schema version (0 before the first migration). 0 or
 * FGW_ERR_DB. */
int pg_schema_version(PGconn *c, int *version);

#endif
