/*
 * store/auditor.h — what auditors and the backup job need from the store:
 * signed checkpoints of the audit chain head, a full verification (chain
 * plus checkpoints), filtered queries over the audit trail, daily report
 * figures, and consistent snapshots with a JSON export.
 *
 * Checkpoints: a store job reads the chain head (seq, hash) under the
 * writer's lock, signs the canonical form
 *
 *   "flairgw-audit-checkpoint-v1\n" seq "\n" ts "\n" head_hash
 *
 * with the key ring's Ed25519 audit key and appends it to
 * audit_checkpoints. The MAC chain catches an edited, deleted or reordered
 * row; a checkpoint also catches rows cut off the tail (its seq no longer
 * exists) and a chain rebuilt with a stolen MAC key but not re-signed.
 *
 * Every function returns 0 or a negative FGW_ERR_* code.
 */
#ifndef FGW_STORE_AUDITOR_H
#define FGW_STORE_AUDITOR_H

#include <stdint.h>
#include <stdio.h>

#include "store/store.h"

/* Ed25519 signer (the gateway passes keyring_audit_sign_fn). */
typedef int (*store_sign_fn)(void *ctx, const void *msg, size_t len,
                             unsigned char sig[64]);

/* Appends a checkpoint of the current head, unless the head is already
 * checkpointed or the chain is empty (then nothing is written). pk is the
 * signer's public key (recorded with the signature); sign_ctx must
 * outlive the job. done(arg, rc) as for every store job. */
int store_audit_checkpoint(struct store *st, struct store_waker *w, store_sign_fn sign,
                           void *sign_ctx, const unsigned char pk[32], store_done_fn done,
                           void *arg);

struct store_verify_result {
	int64_t events;          /* rows read */
	int64_t checkpoints;     /* checkpoints read */
	int64_t last_checkpoint; /* seq of the newest checkpoint, 0 if none */
	int64_t first_bad_seq;   /* 0 when intact */
	char reason[160];        /* why it is broken, "" when intact */
};

/* Verifies the chain from seq 1 and every checkpoint: its signature under
 * pk (the key ring's public key, not the one stored in the row), and that
 * the event at its seq exists with the signed hash. FGW_ERR_CRYPTO when
 * broken (res says where and why), FGW_ERR_DB on read errors. */
int store_audit_verify_full(struct store_reader *r, const unsigned char pk[32],
                            struct store_verify_result *res);

/* Filters for store_audit_query; NULL / has_* = 0 means "any". */
struct store_audit_filter {
	int64_t since_ms, until_ms; /* ts >= since, ts < until (0: open) */
	const char *txn;            /* resource = txn id */
	const char *reservation;    /* the transaction's reservation_id */
	const char *customer;       /* customer e-mail, actor or client id */
	const char *outcome;
	const char *type; /* exact type, or "txn" for txn.* */
	int has_min, has_max;
	int64_t min_amount, max_amount; /* the transaction's amount */
};

/* One row of the audit trail with what its transaction adds. */
struct store_audit_view {
	int64_t seq, ts;
	const char *actor, *source, *event_type, *resource, *outcome, *details;
	const char *reservation, *customer, *currency; /* "" without a txn */
	int has_amount;
	int64_t amount;
};

/* Calls row(arg, v) for each matching row in seq order; a non-zero return
 * from row stops the walk and is returned. */
int store_audit_query(struct store_reader *r, const struct store_audit_filter *f,
                      int (*row)(void *arg, const struct store_audit_view *v), void *arg);

/* Daily figures over transactions created on one UTC day. */
#define STORE_REPORT_MAX 32
struct store_report {
	char day[11];
	int64_t total;                             /* transactions */
	int64_t succeeded, declined, failed, open; /* open: not final yet */
	int64_t three_ds;                          /* went through requires_action */
	int64_t final_count;   /* with a final outcome (for the average) */
	double avg_outcome_ms; /* created -> final outcome */
	struct {
		char status[24];
		char currency[4];
		int64_t count;
		int64_t sum;
	} by[STORE_REPORT_MAX]; /* counts and sums by status and currency */
	int n_by;
	/* Outbound webhooks for events of that day (0 without the table). */
	int64_t wh_delivered, wh_failed, wh_pending;
};

/* day is "YYYY-MM-DD" (UTC). */
int store_report_day(struct store_reader *r, const char *day, struct store_report *out);

/* ---- backups ----------------------------------------------------------- */

/* Copies the database at src into a new file dst with SQLite's online
 * backup API (a consistent snapshot; the daemon keeps writing). */
int store_backup_snapshot(const char *src, const char *dst, int busy_ms);

/* What a snapshot holds, for the backup's audit event. */
struct store_backup_stats {
	int64_t transactions;
	int64_t audit_seq; /* head of the chain in the snapshot */
};

/* Writes {"audit_events":[...],"transactions":[...]} of the database file
 * db (a snapshot) to out, and fills st. No PAN: transactions hold only
 * BIN/last four; vault ciphertext is not exported. */
int store_backup_export_json(const char *db, FILE *out, struct store_backup_stats *st);

struct store_reader;
/* The same export from a running store through the reader r (its own
 * connection), in one read-only snapshot (PostgreSQL: a REPEATABLE READ
 * transaction; SQLite: one read transaction): what a backup of a
 * PostgreSQL store holds (the database itself is the operator's, with
 * pg_dump or base backups; docs/postgresql.md). */
int store_backup_export_store(struct store_reader *r, FILE *out,
                              struct store_backup_stats *st);

/* Whether this instance makes the backups (*lead 1) or another instance
 * on the same database does (0). SQLite: always this one. PostgreSQL:
 * pg_try_advisory_lock(PG_LOCK_BACKUP) on r's session, held until that
 * connection ends (the instance stops or dies), so one instance at a time
 * leads and another takes over when it is gone. Ask again each time: a
 * follower becomes the leader once the lock is free. */
int store_backup_lead(struct store_reader *r, int *lead);

/* The time (ms) of the newest backup.created audit event, whichever
 * instance made it; 0 when none. */
int store_backup_last_ms(struct store_reader *r, int64_t *ms);

#endif
