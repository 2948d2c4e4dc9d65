/*
 * store/reconcile.h — what the reconciler and the refund route need from
 * the store beyond store_txn_finish: the transactions whose outcome is
 * unknown and their backoff bookkeeping.
 */
#ifndef FGW_STORE_RECONCILE_H
#define FGW_STORE_RECONCILE_H

#include <stdint.h>

#include "store/store.h"

struct store_unresolved {
	char id[40];
	char status[24];    /* posting, processing or requires_action */
	int attempts;       /* reconcile attempts so far */
	int64_t created_at; /* ms */
	int manual_review;  /* flagged already: asked only at the
	                               longest backoff */
};

/* Up to max rows in `processing`, or in `posting` and not updated since
 * posting_before (ms), whose next attempt is due (reconcile_next_at <=
 * now), flagged for manual review or not. *n is set to the count. */
int store_unresolved_list(struct store_reader *r, int64_t now, int64_t posting_before,
                          struct store_unresolved *out, int max, int *n);

/* Up to max rows in `requires_action` (waiting for 3-D Secure) whose next
 * poll is due (reconcile_next_at <= now), oldest due first. */
int store_awaiting_action_list(struct store_reader *r, int64_t now,
                               struct store_unresolved *out, int max, int *n);

/* Claims, for the caller's reconciler until lease_until (ms;
 * store/claim.h), the rows store_unresolved_list (action 0, with
 * posting_before) or store_awaiting_action_list (action 1) would list:
 * their reconcile_next_at moves to lease_until, so no reconciler of
 * this or another instance lists them before then; the caller's outcome
 * (txn_settle) or store_reconcile_defer sets it for real. The rows reach
 * out[] and *n right before done(arg, rc), only when the claim committed;
 * out must stay valid until done runs. */
int store_unresolved_claim(struct store *st, struct store_waker *w, int action,
                           int64_t now, int64_t posting_before, int64_t lease_until,
                           struct store_unresolved *out, int max, int *n,
                           store_done_fn done, void *arg);

/* Records one more unresolved attempt: attempts, when to ask next, and
 * (give_up) the manual-review flag. Applied only while the row is still
 * posting/processing/requires_action. The audit events commit with it. */
int store_reconcile_defer(struct store *st, struct store_waker *w, const char *id,
                          int attempts, int64_t next_at, int give_up,
                          const struct store_commit *c);

/* Whether a row is flagged for manual review (FGW_ERR_NOT_FOUND if none). */
int store_manual_review_get(struct store_reader *r, const char *id, int *flag);

#include "store/pendingops.h" /* the operations the reconciler finishes */

#endif
