/*
 * store/txnops.h — captures and cancels written ahead (migration 8): the
 * operation is committed `pending` in txn_operations, with its processor
 * idempotency key, before the processor is asked, and moved once to
 * `succeeded` (the transaction moves with it, authorized -> succeeded or
 * canceled) or `failed`. One capture or cancel per transaction: a pending
 * or succeeded one keeps the other out. A refused (failed) one does not:
 * the next request is a new attempt (migration 9) with a processor key of
 * its own. Pending rows left by a crash are listed for the reconciler,
 * which re-sends them with the same key.
 */
#ifndef FGW_STORE_TXNOPS_H
#define FGW_STORE_TXNOPS_H

#include <stdint.h>

#include "store/store.h"

struct store_txnop {
	char txn_id[40];
	char op[8];                 /* capture or cancel */
	char idempotency_key[96];   /* the processor key of the operation */
	char request_key[32];       /* the client's Idempotency-Key, hashed with
	                               its client id; "" without one */
	char status[16];            /* set by begin: pending, succeeded, failed */
	int adopted;                /* begin found this operation already */
};

/* The write-ahead step. In one job: the same operation already recorded
 * under the same request_key (a client's retry) is adopted (out->adopted,
 * status, and the idempotency_key it was sent with); otherwise the
 * transaction must be authorized and have no capture/cancel pending or
 * done (FGW_ERR_STATE), and the operation is inserted pending as the next
 * attempt: after N refused attempts of this operation, idempotency_key
 * gets "-<N+1>" appended (out->idempotency_key is the key to send). *out
 * is written before done runs. */
int store_txnop_begin(struct store *st, struct store_waker *w,
                      const struct store_txnop *op, struct store_txnop *out,
                      const struct store_audit *audit, size_t n_audit,
                      store_done_fn done, void *arg);

/* The outcome of the attempt sent with op->idempotency_key (the latest
 * when ""), forward-only: pending to succeeded (and the transaction from
 * authorized to succeeded for a capture, canceled for a cancel; already
 * there, moved by a processor event, is fine) or to failed. Already in
 * the target state: FGW_OK; in the other: FGW_ERR_STATE.
 * The idempotent answer and audit events commit with it. */
int store_txnop_finish(struct store *st, struct store_waker *w,
                       const struct store_txnop *op, int succeeded,
                       const struct store_idem *idem,
                       const struct store_audit *audit, size_t n_audit,
                       store_done_fn done, void *arg);

struct store_txnop_due {
	char txn_id[40];
	char op[8];
	char idempotency_key[96];
	int attempts;
};

/* Up to max pending operations not updated since before (ms), not flagged
 * for manual review, whose next attempt is due (<= now). */
int store_txnop_pending_list(struct store_reader *r, int64_t now, int64_t before,
                             struct store_txnop_due *out, int max, int *n);

/* One more unresolved attempt (attempts, next time, give_up: manual
 * review) of a pending operation; FGW_ERR_STATE once it is final. */
int store_txnop_defer(struct store *st, struct store_waker *w, const char *txn_id,
                      const char *op, int attempts, int64_t next_at, int give_up,
                      const struct store_audit *audit, size_t n_audit,
                      store_done_fn done, void *arg);

#endif
