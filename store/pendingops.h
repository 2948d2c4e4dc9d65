/*
 * store/pendingops.h — refunds, captures and cancels written ahead
 * (migration 8, attempts migration 9). An operation on a recorded
 * transaction is committed `pending`, with the processor idempotency key
 * it is sent with, before the processor is asked, and moved forward once
 * to `succeeded` (the transaction moves with it, checked against the
 * transition table, core/txnstate.h) or `failed`. Pending rows left by a
 * crash are listed for the reconciler, which re-sends them with the same
 * key (the processor dedupes) or flags them for manual review.
 *
 * One lifecycle, the kind as a parameter; what differs per kind:
 *  - refund (table refunds, keyed by its id): starts from a succeeded or
 *    partially refunded transaction; pending refunds count against what is
 *    left to refund, so concurrent partial refunds never pass the captured
 *    amount; a success moves the transaction to refunded when the
 *    succeeded refunds add up to the captured amount, else to
 *    partially_refunded (decided from the committed sum);
 *  - capture and cancel (table txn_operations, keyed by transaction,
 *    operation and attempt): start from an authorized transaction, one of
 *    them per transaction (a pending or succeeded one keeps the other
 *    out); a refused (failed) one does not: the next request is a new
 *    attempt with a processor key of its own; a success moves the
 *    transaction to succeeded (capture) or canceled (cancel).
 */
#ifndef FGW_STORE_PENDINGOPS_H
#define FGW_STORE_PENDINGOPS_H

#include <stdint.h>

#include "store/store.h"

enum store_op_kind { STORE_OP_REFUND, STORE_OP_CAPTURE, STORE_OP_CANCEL };

/* An operation's own state (the tables' status column: pending,
 * succeeded, failed); STORE_OP_NONE before begin. */
enum store_op_status {
	STORE_OP_NONE,
	STORE_OP_PENDING,
	STORE_OP_SUCCEEDED,
	STORE_OP_FAILED
};

/* "refund", "capture", "cancel" (the txn_operations op column). */
const char *store_op_name(enum store_op_kind kind);

struct store_pendingop {
	enum store_op_kind kind;
	char id[40]; /* refund: "rf_..."; capture, cancel: "" */
	char txn_id[40];
	int64_t amount;            /* refund: its amount */
	int64_t txn_amount;        /* refund: what was captured, the cap */
	char idempotency_key[256]; /* the processor key of this operation;
	                               for finish of a capture/cancel, "" means
	                               its latest attempt */
	char request_key[32];      /* capture, cancel: the client's
	                               Idempotency-Key hashed with its client
	                               id; "" without one */
	/* Set by begin: an operation found already (adopted) and its
	 * status. */
	int adopted;
	enum store_op_status status;
	/* Set by finish of a refund that succeeded: the transaction's state
	 * from the committed sum, and that sum. */
	char new_status[24];
	int64_t refunded;
	/* For finish of a refund: the processor's id for it, kept (once) so
	 * its later events find it; "" when none. */
	char processor_ref[96];
};

/* The write-ahead step, in one job with the audit events; *out is written
 * before done runs.
 * refund: the transaction must be succeeded or partially_refunded
 * (FGW_ERR_STATE); a refund with the same (txn_id, idempotency_key) is
 * adopted as it is (out->adopted, id, amount, status), even on a refunded
 * transaction; else the refunds not failed plus this one must stay within
 * txn_amount (FGW_ERR_TOO_LARGE) and it is inserted pending; the same
 * refund inserted since the look by another request (on another instance)
 * is FGW_ERR_CONFLICT: that request runs it, this one answers as a repeat.
 * capture, cancel: the same operation already recorded under the same
 * request_key (a client's retry) is adopted (out->adopted, status, and
 * the idempotency_key it was sent with); otherwise the transaction must be
 * authorized and have no capture/cancel pending or done (FGW_ERR_STATE),
 * and the operation is inserted pending as the next attempt: after N
 * refused attempts, idempotency_key gets "-<N+1>" appended
 * (out->idempotency_key is the key to send). */
int store_pendingop_begin(struct store *st, struct store_waker *w,
                          const struct store_pendingop *op, struct store_pendingop *out,
                          const struct store_commit *c);

/* The outcome, forward-only: pending to succeeded (and the transaction
 * with it, see above; already there, moved by a processor event, is
 * fine) or to failed. An operation already in the target state is FGW_OK
 * (a client's retry and the reconciler may both finish it); in the other
 * final state, FGW_ERR_STATE. The idempotent answer and audit events
 * commit with it; out may be NULL. */
int store_pendingop_finish(struct store *st, struct store_waker *w,
                           const struct store_pendingop *op, int succeeded,
                           struct store_pendingop *out, const struct store_commit *c);

/* Builds an operation's idempotent answer from what its commit decided
 * (op->new_status, op->refunded): runs on the store's writer thread,
 * inside that commit, before done; *body malloc'ed. */
typedef int (*store_pendingop_answer_fn)(void *arg, const struct store_pendingop *op,
                                         char **body);

/* store_pendingop_finish to succeeded whose idempotent answer is built by
 * answer(answer_arg, ...) in the same commit (it replaces c->idem's body,
 * which must be given), so
 * the answer carries the committed total, not one computed before; the
 * first audit event's outcome becomes the committed state (new_status). */
int store_pendingop_finish_answered(struct store *st, struct store_waker *w,
                                    const struct store_pendingop *op,
                                    struct store_pendingop *out,
                                    store_pendingop_answer_fn answer, void *answer_arg,
                                    const struct store_commit *c);

struct store_pendingop_due {
	enum store_op_kind kind;
	char id[40]; /* refund */
	char txn_id[40];
	int64_t amount; /* refund */
	char idempotency_key[256];
	int attempts;
	int64_t created_at; /* ms: when it was first written ahead */
};

/* Up to max pending operations of this kind not updated since before
 * (ms), not flagged for manual review, whose next attempt is due
 * (<= now); *n the count. */
int store_pendingop_due_list(struct store_reader *r, enum store_op_kind kind, int64_t now,
                             int64_t before, struct store_pendingop_due *out, int max,
                             int *n);

/* Claims, for the caller's reconciler until lease_until (ms;
 * store/claim.h), what store_pendingop_due_list would list: the rows'
 * reconcile_next_at moves to lease_until, so no reconciler of this or
 * another instance lists them before then. The rows reach out[] and *n
 * right before done(arg, rc), only when the claim committed; out must
 * stay valid until done runs. */
int store_pendingop_claim(struct store *st, struct store_waker *w,
                          enum store_op_kind kind, int64_t now, int64_t before,
                          int64_t lease_until, struct store_pendingop_due *out, int max,
                          int *n, store_done_fn done, void *arg);

/* One more unresolved attempt of a pending operation (op: kind, txn_id,
 * and a refund's id): attempts, next time, and (give_up) the
 * manual-review flag; FGW_ERR_STATE once it is final. */
int store_pendingop_defer(struct store *st, struct store_waker *w,
                          const struct store_pendingop *op, int attempts, int64_t next_at,
                          int give_up, const struct store_commit *c);

/* Sum of the succeeded refunds of a transaction (0 when none). */
int store_pendingop_refunded(struct store_reader *r, const char *txn_id, int64_t *sum);

#endif
