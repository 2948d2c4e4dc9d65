/*
 * store/procevents.h — what a processor's webhook events record beyond a
 * state move (migration 13): refunds the gateway did not start and the
 * fate of refunds the processor reports, and disputes.
 */
#ifndef FGW_STORE_PROCEVENTS_H
#define FGW_STORE_PROCEVENTS_H

#include <stdint.h>

#include "store/store.h"

struct store_refund_event {
	char txn_id[40];
	char event_id[128];
	/* All the processor says was refunded on the charge (-1: not
	 * given): what our refunds (pending ones included: the processor
	 * may have made them) do not account for is recorded as one refund
	 * made outside the gateway. */
	int64_t refunded_total;
	/* One refund's outcome: the processor's id ("" none), its amount,
	 * failed (1) or succeeded (0). A failed refund gives its amount
	 * back: it stops counting in what was refunded. */
	char refund_ref[96];
	int64_t refund_amount;
	int refund_failed;
	/* Out: the transaction's state after the commit. */
	char new_status[24];
};

/* In one job: the transaction must be succeeded, partially_refunded or
 * refunded (else FGW_ERR_STATE); the refunds are brought in line with ev
 * and the transaction moved forward to partially_refunded or refunded by
 * the succeeded sum. Nothing to change: FGW_ERR_STATE (nothing commits,
 * the audit events neither). *out is written before done runs. */
int store_refund_event(struct store *st, struct store_waker *w,
                       const struct store_refund_event *ev,
                       struct store_refund_event *out, const struct store_commit *c);

/* Flags the transaction as disputed: one row per processor dispute id;
 * FGW_ERR_EXISTS (nothing commits) when that dispute is recorded. */
int store_dispute_record(struct store *st, struct store_waker *w, const char *txn_id,
                         const char *processor, const char *dispute_id, int64_t amount,
                         const char *reason, const char *event_id,
                         const struct store_commit *c);

/* How many disputes a transaction has (0 when none). */
int store_dispute_count(struct store_reader *r, const char *txn_id, int64_t *n);

#endif
