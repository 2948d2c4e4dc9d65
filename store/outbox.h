/*
 * store/outbox.h — the parts every outbox table shares (private to store/):
 * rows claimed when due, one attempt recorded at a time, an operator's
 * retry, the operator's list. The e-mail outbox (store/mail.c) and the
 * webhook outbox (store/webhooks.c) are two kinds of it; each keeps only
 * what is its own (its columns, its enqueue, webhooks' attempt table).
 *
 * Every outbox table has id, status ('pending', the kind's done status,
 * 'failed'), attempts, next_attempt_at, last_error, created_at and
 * updated_at. The SQL of a kind is written once here, by macro, so that
 * each kind's statements are literals (db_prepare caches by address).
 */
#ifndef FGW_STORE_OUTBOX_H
#define FGW_STORE_OUTBOX_H

#include <stddef.h>
#include <stdint.h>


#include "store/claim.h"
#include "store/db.h"
#include "store/sqlutil.h"
#include "store/store.h"

struct outbox_kind {
	const char *name; /* for log lines: "mail", "webhooks" */
	const char *done; /* the status of a delivered row */
	size_t row_size;  /* of the kind's row struct */
	/* The kind's columns (store/sqlutil.h), as the COLS of its SQL list
	 * them; the payload is not among them. */
	const struct sql_col *cols;
	size_t n_cols;
	size_t payload_off;             /* of the row's owned char * payload */
	claim_fn claim_run;             /* outbox_claim_due for this kind */
	void (*clear_row)(void *row);   /* the kind's _row_clear */
	int has_code;                   /* a last_http_status column (?7 of sql_mark) */
	const char *sql_due;            /* OUTBOX_SQL_DUE */
	const char *sql_list;           /* OUTBOX_SQL_LIST */
	const char *sql_claim;          /* OUTBOX_SQL_CLAIM */
	const char *sql_claim_due_lite; /* OUTBOX_SQL_CLAIM_DUE, SQLite */
	const char *sql_claim_due_pg;   /* OUTBOX_SQL_CLAIM_DUE, PostgreSQL */
	const char *sql_mark;           /* OUTBOX_SQL_MARK */
	const char *sql_retry;          /* OUTBOX_SQL_RETRY */
};

/* COLS are the kind's columns as its cols table lists them; due adds the
 * payload column PAY after them. */
#define OUTBOX_SQL_DUE(T, COLS, PAY)                               \
	"SELECT " COLS ", " PAY " FROM " T " WHERE status = 'pending'" \
	" AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?"
#define OUTBOX_SQL_LIST(T, COLS) \
	"SELECT " COLS " FROM " T " ORDER BY created_at DESC, id LIMIT ?"
/* ?2: the claim's lease end (the row's next_attempt_at while claimed),
 * or 0 for an attempt recorded without a claim. */
#define OUTBOX_SQL_CLAIM(T)                                           \
	"SELECT attempts FROM " T " WHERE id = ?1 AND status = 'pending'" \
	" AND (next_attempt_at = ?2 OR ?2 = 0)"
/* The claim (store/claim.h): ?1 now, ?3 max, ?4 the lease's end, ?5 the
 * claimer (claimed_by: the instance's identity, or NULL); the rows come
 * back with the lease end as their next_attempt_at. DIALECT:
 * CLAIM_SQL_LITE or CLAIM_SQL_PG. */
#define OUTBOX_SQL_CLAIM_DUE(DIALECT, T, COLS, PAY)                                   \
	DIALECT(T, "id", "next_attempt_at = ?4, claimed_by = ?5", "status = 'pending'",   \
	        "SELECT id FROM " T " WHERE status = 'pending' AND next_attempt_at <= ?1" \
	        " ORDER BY next_attempt_at LIMIT ?3",                                     \
	        COLS ", " PAY)
/* EXTRA: "" or ", last_http_status = ?7". */
#define OUTBOX_SQL_MARK(T, EXTRA)                                        \
	"UPDATE " T " SET attempts = ?1, status = ?2, next_attempt_at = ?3," \
	" last_error = ?4, updated_at = ?5, claimed_by = NULL" EXTRA " WHERE id = ?6"
#define OUTBOX_SQL_RETRY(T)                                     \
	"UPDATE " T " SET status = 'pending', next_attempt_at = ?," \
	" updated_at = ?, claimed_by = NULL WHERE id = ?"
/* row_size, cols and payload_off of the kind whose rows are ROW. */
#define OUTBOX_ROW(ROW, COLS_TABLE, PAYLOAD)                \
	.row_size = sizeof(ROW), .cols = COLS_TABLE,            \
	.n_cols = sizeof(COLS_TABLE) / sizeof((COLS_TABLE)[0]), \
	.payload_off = offsetof(ROW, PAYLOAD)
/* Every sql_* of the kind whose table is T (the designated initializers). */
#define OUTBOX_SQL(T, COLS, PAY, MARK_EXTRA)                                       \
	.sql_due = OUTBOX_SQL_DUE(T, COLS, PAY), .sql_list = OUTBOX_SQL_LIST(T, COLS), \
	.sql_claim = OUTBOX_SQL_CLAIM(T),                                              \
	.sql_claim_due_lite = OUTBOX_SQL_CLAIM_DUE(CLAIM_SQL_LITE, T, COLS, PAY),      \
	.sql_claim_due_pg = OUTBOX_SQL_CLAIM_DUE(CLAIM_SQL_PG, T, COLS, PAY),          \
	.sql_mark = OUTBOX_SQL_MARK(T, MARK_EXTRA), .sql_retry = OUTBOX_SQL_RETRY(T)

/* 1 when outcome is one an attempt may record: the kind's done status,
 * "retry" (pending again) or "failed". */
int outbox_outcome_ok(const struct outbox_kind *k, const char *outcome);

/* Frees a row's payload (NULL-safe). */
void outbox_row_clear(const struct outbox_kind *k, void *row);

/* Up to max pending rows due at now_ms, oldest due first, with their
 * payloads, into out (an array of max rows of k->row_size); *n receives
 * how many (each must be cleared). */
int outbox_due(struct store_reader *r, const struct outbox_kind *k, int64_t now_ms,
               void *out, int max, int *n);
/* Calls fn for each row, newest first, at most limit, without payloads;
 * fn may return non-zero to stop with that code. */
int outbox_list(struct store_reader *r, const struct outbox_kind *k, int limit,
                int (*fn)(void *arg, const void *row), void *arg);

/* On the writer thread: claims up to a->max due rows until a->lease_until
 * (store/claim.h), with their payloads, into out (an array of a->max rows
 * of k->row_size); *n how many. */
int outbox_claim_due(struct db *db, const struct outbox_kind *k,
                     const struct claim_args *a, void *out, int *n);

/* On the writer, before the store takes jobs: the rows owner claimed in
 * an earlier run (still pending under that claim) become due at now_ms
 * and unclaimed, in both outboxes; *n how many. Only for an owner no
 * live process shares (store_opts.instance_id). */
int outbox_release_own(struct db *db, const char *owner, int64_t now_ms, int64_t *n);

/* The claim job over claim_run (store/claim.h): up to max rows due at
 * now_ms, leased until lease_until, reach out[] and *n right before
 * done(arg, rc). FGW_ERR_INVALID when the lease ends by now_ms. */
int outbox_claim_submit(struct store *st, struct store_waker *w,
                        const struct outbox_kind *k, int64_t now_ms, int64_t lease_until,
                        void *out, int max, int *n, store_done_fn done, void *arg);

/* On the writer thread. The number the next attempt of row id gets
 * (attempts + 1) into *attempt; FGW_ERR_STATE when the row is not pending
 * (an operator's retry or a duplicate tick moved it meanwhile) or, with
 * lease_until not 0, no longer claimed until then (the lease ran out and
 * another worker claimed it). */
int outbox_claim(struct db *db, const struct outbox_kind *k, const char *id,
                 int64_t lease_until, int *attempt);
/* On the writer thread: records attempt number attempt with its outcome
 * ("retry" leaves the row pending until next_at), the error (NULL or ""
 * stores NULL) and, with has_code, the answer's code (0 stores NULL). */
int outbox_mark(struct db *db, const struct outbox_kind *k, const char *id, int attempt,
                const char *outcome, int64_t next_at, int code, const char *error);

/* Makes a row (any status) pending and due at now_ms, with the audit
 * events; the job fails with FGW_ERR_NOT_FOUND when there is no such id. */
int outbox_retry(struct store *st, struct store_waker *w, const struct outbox_kind *k,
                 const char *id, int64_t now_ms, const struct store_audit *audit,
                 size_t n_audit, store_done_fn done, void *arg);

#endif
