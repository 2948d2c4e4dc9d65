/*
 * store/claim.h — private to store/ (and its tests): claiming due rows
 * for one worker of one instance.
 *
 * Every background queue (webhook and mail outboxes, the reconciler's
 * transactions, pending refunds, captures and cancels) runs on every
 * instance sharing the database. A worker never works from a plain read
 * of what is due: two instances would read the same rows and both do
 * them. It CLAIMS them instead, in one statement on the writer: the due
 * rows' next-attempt time moves forward to a lease's end and the
 * statement returns them. Until the lease ends the rows are not due for
 * anyone else; the worker records each row's outcome (which sets its
 * real next time, or ends it) well before. A worker that dies mid-item
 * records nothing: its rows become due again when the lease ends and
 * another instance (or this one, restarted) claims them.
 *
 * PostgreSQL: the rows are picked by a subquery with FOR UPDATE SKIP
 * LOCKED, so two claimers running at once skip each other's rows instead
 * of waiting, and under READ COMMITTED a row claimed and committed by one
 * is re-checked (no longer due) before the other could take it. SQLite:
 * the single writer makes the same UPDATE exclusive (the lock clause is
 * left out: SQLite has none).
 *
 * The lease end doubles as the claim's token: the record of an attempt may
 * require next_attempt_at to still equal it, so a worker whose lease ran
 * out (and whose row another instance claimed since) records nothing.
 */
#ifndef FGW_STORE_CLAIM_H
#define FGW_STORE_CLAIM_H

#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "store/store.h"

/* A claim statement in each dialect: UPDATE table T, setting SET, of the
 * rows whose key column KEY the query PICK (SELECT KEY FROM T WHERE due
 * ORDER BY ... LIMIT ?3) picks and that still meet OUTER, returning RET.
 * On PostgreSQL the pick locks its rows (FOR UPDATE SKIP LOCKED) in a
 * materialized CTE: run once, not again per row of the UPDATE's scan (as
 * a sub-select in IN may be, where it skipped every row in the test). */
#define CLAIM_SQL_LITE(T, KEY, SET, OUTER, PICK, RET)                    \
	"UPDATE " T " SET " SET " WHERE " OUTER " AND " KEY " IN (" PICK ")" \
	" RETURNING " RET
#define CLAIM_SQL_PG(T, KEY, SET, OUTER, PICK, RET)                                    \
	"WITH due AS MATERIALIZED (" PICK " FOR UPDATE SKIP LOCKED) UPDATE " T " SET " SET \
	" WHERE " OUTER " AND " KEY " IN (SELECT " KEY " FROM due) RETURNING " RET

/* What a claim statement binds: ?1 now, ?2 before (a grace bound; not
 * every queue uses it), ?3 max, ?4 lease_until; the outboxes' also ?5
 * owner. */
struct claim_args {
	int64_t now;
	int64_t before;
	int64_t lease_until;
	int max;
	int kind;          /* the queue's own sub-kind (pending operations) */
	const char *owner; /* outboxes: the claimer's identity, or NULL */
};

/* The backend's variant of a claim statement: sql_lite on SQLite, sql_pg
 * (with FOR UPDATE SKIP LOCKED) on PostgreSQL. Both literals. */
const char *claim_sql(struct db *db, const char *sql_lite, const char *sql_pg);

/* Runs the claim statement sql (?1..?4 as struct claim_args) on the
 * writer's db and calls row(s, out, i) for each row it returns; *n the
 * count (at most a->max). */
int claim_rows(struct db *db, const char *sql, const struct claim_args *a,
               void (*row)(struct db_stmt *s, void *out, int i), void *out, int *n);

/* A claim as a store job. fn claims into rows (an array of a->max rows of
 * row_size) on the writer; clear (may be NULL) frees what one row owns.
 * The rows reach out[] and *n just before done(arg, rc) runs, only when
 * the claim committed (rc == 0; *n is 0 otherwise). out must stay valid
 * until done runs; if done never runs (the waker freed first), the rows
 * are freed by the job. */
typedef int (*claim_fn)(struct db *db, const struct claim_args *a, void *rows, int *n);
int claim_submit(struct store *st, struct store_waker *w, claim_fn fn,
                 const struct claim_args *a, size_t row_size, void (*clear)(void *row),
                 void *out, int *n, store_done_fn done, void *arg);

/* Each queue's claim as a claim_fn, on a writer's db (the store jobs
 * below them submit these; tests run them on two connections). */
int store_outbox_claim_run(struct db *db, const struct claim_args *a, void *rows,
                           int *n); /* struct store_outbox_row */
int store_mail_claim_run(struct db *db, const struct claim_args *a, void *rows,
                         int *n); /* struct store_mail_row */
/* struct store_unresolved: a->before is the posting grace bound */
int store_unresolved_claim_run(struct db *db, const struct claim_args *a, void *rows,
                               int *n);
int store_awaiting_action_claim_run(struct db *db, const struct claim_args *a, void *rows,
                                    int *n);
/* struct store_pendingop_due: a->kind the enum store_op_kind */
int store_pendingop_claim_run(struct db *db, const struct claim_args *a, void *rows,
                              int *n);

#endif
