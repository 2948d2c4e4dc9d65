/*
 * store/store_int.h — for files inside store/ only: how a feature adds its
 * own tables and queries without editing store.c.
 *
 * A feature (reservations, saved methods, webhooks outbox, ...) gets its
 * own store/NAME.c with a public store/NAME.h of typed functions. Writes go
 * through store_submit_custom: `run` executes on the writer thread, on the
 * writer connection, inside the job's savepoint of a group-commit batch
 * (return 0, or a negative FGW_ERR_* code to roll the job back alone). The
 * optional idempotent answer and audit events commit with it. `ctx` is the
 * job's private data: `run` may write results into it; `done(arg, rc)`
 * runs on the submitting reactor after the COMMIT (pass ctx as arg to read
 * results there); ctx_free(ctx) runs after done (also when submission
 * fails). Reads use the per-thread reader connection.
 *
 * Tables: append a migration to the list in store/schema.c (never edit a
 * released one), its PostgreSQL step under the same number to
 * store/schema_pg.c, and bump STORE_SCHEMA_VERSION; document it in
 * docs/schema.md.
 *
 * Statements: db_prepare(db, "literal SQL", &s) ... db_release(s)
 * (store/db.h, one API over SQLite and PostgreSQL; SQL in the dialect
 * both accept, parameters ?1..?N): the writer's and every reader's connection keep
 * their statements prepared, found again by the literal's address, so a
 * job parses its SQL once per connection, not once per call. Release
 * before returning, on every path; bind every value (no SQL built from
 * input).
 */
#ifndef FGW_STORE_STORE_INT_H
#define FGW_STORE_STORE_INT_H


#include "store/db.h"
#include "store/store.h"

typedef int (*store_job_fn)(struct db *db, void *ctx);

int store_submit_custom(struct store *st, struct store_waker *w, store_job_fn run,
                        void *ctx, void (*ctx_free)(void *ctx),
                        const struct store_commit *c);

/* For a job whose idempotent answer and audit outcome depend on what run
 * decided: after run succeeds, answer(ctx, &body, &outcome) runs in the
 * same savepoint and sets *body (it replaces the idempotent answer's
 * body) and *outcome (it replaces the first audit event's outcome), each
 * malloc'ed or left NULL to keep what was submitted; or it returns a
 * negative code that rolls the job back. */
typedef int (*store_answer_fn)(void *ctx, char **body, char **outcome);

int store_submit_custom_answer(struct store *st, struct store_waker *w, store_job_fn run,
                               store_answer_fn answer, void *ctx,
                               void (*ctx_free)(void *ctx), const struct store_commit *c);

/* Connections (store/store.c): SQLite with flags (plus NOMUTEX) and a
 * busy timeout; PostgreSQL from a DSN or a DSN file (store/pg.h's rules). */
int store_db_open_sqlite(const char *path, int flags, int busy_ms, struct db **out);
int store_db_open_pg(const char *dsn, const char *dsn_file, bool production,
                     struct db **out);
/* A reader on db (which it owns from here on, also on failure):
 * store/reader.c. */
int store_reader_on(struct db *db, store_mac_fn mac, void *mac_ctx, int busy_ms,
                    struct store_reader **out);

/* Rows due for the reconciler: runs sql (?1 now, ?2 not updated since,
 * ?3 max) on the reader and calls row(s, out, i) for each; *n the count
 * (store/reconcile.c). */
int store_due_rows(struct store_reader *rd, const char *sql, int64_t now, int64_t before,
                   int max, void (*row)(struct db_stmt *s, void *out, int i), void *out,
                   int *n);

/* Backoff of a pending row: runs the UPDATE sql with ?1 k1, ?2 k2 (the
 * row's key), ?3 attempts, ?4 next_at, ?5 give_up; FGW_ERR_STATE when it
 * changed no row (finished meanwhile). */
int store_defer_row(struct db *db, const char *sql, const char *k1, const char *k2,
                    int attempts, int64_t next_at, int give_up);

/* The reader's read-only connection (same thread as the reader). */
struct db *store_reader_db(struct store_reader *r);
/* The audit MAC the reader verifies with (and its ctx). */
store_mac_fn store_reader_mac(struct store_reader *r, void **mac_ctx);

#endif
