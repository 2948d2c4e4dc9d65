/*
 * store/refunds.h — refunds written ahead (migration 8): a refund is
 * committed `pending` with its processor idempotency key before the
 * processor is asked, and moved forward once to `succeeded` or `failed`.
 * Pending refunds count against what is left to refund, so concurrent
 * partial refunds never pass the captured amount. Pending rows left by a
 * crash are listed for the reconciler, which re-sends them with the same
 * key (the processor dedupes) or flags them for manual review.
 */
#ifndef FGW_STORE_REFUNDS_H
#define FGW_STORE_REFUNDS_H

#include <stdint.h>

#include "store/store.h"

struct store_refund {
	char id[40];                /* "rf_..." */
	char txn_id[40];
	int64_t amount;
	char idempotency_key[256];  /* the processor key of this refund */
	int64_t txn_amount;         /* what was captured: the cap */
	/* Set by store_refund_begin when a refund with the same
	 * (txn_id, idempotency_key) exists: its id, amount and status. */
	int adopted;
	char status[16];            /* pending, succeeded, failed */
	/* Set by store_refund_finish (succeeded): the transaction's state
	 * from the committed sum, and that sum. */
	char new_status[24];
	int64_t refunded;
	/* For store_refund_finish: the processor's id for the refund, kept
	 * (once) so its later events find it; "" when none. */
	char processor_ref[96];
};

/* The write-ahead step. In one job: the transaction must be succeeded or
 * partially_refunded (FGW_ERR_STATE); a refund with the same (txn_id,
 * idempotency_key) is adopted as it is (out->adopted, id, amount,
 * status); else the refunds not failed plus this one must stay within
 * txn_amount (FGW_ERR_TOO_LARGE) and the refund is inserted `pending`.
 * *out is written before done runs. The audit events commit with it. */
int store_refund_begin(struct store *st, struct store_waker *w,
                       const struct store_refund *rf, struct store_refund *out,
                       const struct store_audit *audit, size_t n_audit,
                       store_done_fn done, void *arg);

/* The outcome, forward-only: `pending` to `succeeded` (then the
 * transaction moves to refunded when the succeeded refunds add up to
 * txn_amount, else partially_refunded; out->new_status, out->refunded)
 * or to `failed`. A refund already in the target state is FGW_OK (a
 * client's retry and the reconciler may both finish it); in the other
 * final state, FGW_ERR_STATE. The idempotent answer and audit events
 * commit with it; out may be NULL. */
int store_refund_finish(struct store *st, struct store_waker *w,
                        const struct store_refund *rf, int succeeded,
                        struct store_refund *out, const struct store_idem *idem,
                        const struct store_audit *audit, size_t n_audit,
                        store_done_fn done, void *arg);

/* Builds a refund's idempotent answer from what its commit decided
 * (rf->new_status, rf->refunded): runs on the store's writer thread,
 * inside that commit, before done; *body malloc'ed. */
typedef int (*store_refund_answer_fn)(void *arg, const struct store_refund *rf,
                                      char **body);

/* store_refund_finish to `succeeded` whose idempotent answer is built by
 * answer(answer_arg, ...) in the same commit (it replaces idem's body), so
 * the answer carries the committed total, not one computed before; the
 * first audit event's outcome becomes the committed state (new_status). */
int store_refund_finish_answered(struct store *st, struct store_waker *w,
                                 const struct store_refund *rf, struct store_refund *out,
                                 const struct store_idem *idem,
                                 store_refund_answer_fn answer, void *answer_arg,
                                 const struct store_audit *audit, size_t n_audit,
                                 store_done_fn done, void *arg);

struct store_refund_due {
	char id[40];
	char txn_id[40];
	int64_t amount;
	char idempotency_key[256];
	int attempts;
	int64_t created_at;          /* ms: when it was first written ahead */
};

/* Up to max pending refunds not updated since before (ms), not flagged
 * for manual review, whose next attempt is due (<= now). */
int store_refund_pending_list(struct store_reader *r, int64_t now, int64_t before,
                              struct store_refund_due *out, int max, int *n);

/* One more unresolved attempt of a pending refund: attempts, next time,
 * and (give_up) the manual-review flag; FGW_ERR_STATE once it is final. */
int store_refund_defer(struct store *st, struct store_waker *w, const char *id,
                       const char *txn_id, int attempts, int64_t next_at, int give_up,
                       const struct store_audit *audit, size_t n_audit,
                       store_done_fn done, void *arg);

/* Sum of the succeeded refunds of a transaction (0 when none). */
int store_refund_sum(struct store_reader *r, const char *txn_id, int64_t *sum);

#endif
