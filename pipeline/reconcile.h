/*
 * pipeline/reconcile.h — the reconciler: resolves transactions whose
 * outcome is unknown (state processing, or posting left by a crash) by
 * asking the processor for the charge with the same idempotency key.
 *
 * Payments waiting for 3-D Secure (requires_action) are polled too and,
 * past action_expiry_ms, cancelled at the processor and failed.
 *
 * It runs on one reactor (its env: base, httpc, store waker, reader) as a
 * timer, on every instance sharing the database: each scan CLAIMS its due
 * rows (store/claim.h), leasing them to this instance, so two instances
 * never work on the same row at once, and the rows of an instance that
 * died are claimed by another once the lease ends. Nothing blocks: the status request goes through httpc and the
 * outcome through txn_settle (pipeline/settle.h). Each row gets
 * exponential backoff (reconcile_attempts, reconcile_next_at) and, after
 * max_attempts, the manual_review flag. Refunds, captures and cancels
 * left `pending` by a crash (store/pendingops.h) are finished the same way: re-sent with the same processor key (the
 * processor dedupes), with the same backoff and manual review. See
 * docs/operations.md.
 */
#ifndef FGW_PIPELINE_RECONCILE_H
#define FGW_PIPELINE_RECONCILE_H

#include <stdint.h>

#include "processors/adapter.h"

struct pipeline_env;
struct reconciler;

/* What an operation's parsed answer (parse_op) means for its record. */
enum op_verdict {
	OP_DONE,    /* the processor did it */
	OP_REFUSED, /* it certainly did not (a mapped refusal) */
	OP_UNKNOWN  /* no definite answer: ask again with the same key */
};
enum op_verdict proc_op_verdict(enum proc_op op, const struct proc_result *res);

struct reconciler_opts {
	int64_t interval_ms;         /* between scans; also the first backoff step */
	int64_t grace_ms;            /* a posting row this old, or a "not found"
	                            this long after the last attempt, is safe
	                            to decide (must exceed the processor
	                            timeout) */
	int64_t not_found_settle_ms; /* >= 0: overrides the adapter type's
	                            not_found_settle_ms (tests); -1: the type's */
	int max_attempts;            /* then manual review */
	int64_t backoff_max_ms;      /* cap of the per-row backoff */
	int concurrency;             /* rows out at the processor at once; 0: 16 */
	int64_t action_expiry_ms;    /* a payment still waiting for 3-D Secure this
	                            long after it began is cancelled at the
	                            processor and failed; 0: one hour */
	int64_t call_ms;             /* the longest a processor call takes (its
	                            timeout); 0: 15 s. A scan claims its rows for
	                            4 x this + 10 s, and starts a row only while
	                            2 x this + 5 s of that lease is left (a row
	                            may take two calls). */
};

/* Starts the timer; the first scan runs at once (start-up recovery). env
 * must outlive the reconciler and env->reader must be set. */
int reconciler_start(const struct pipeline_env *env, const struct reconciler_opts *opts,
                     struct reconciler **out);
/* Frees it. Call after the env's httpc and store waker are freed (they
 * drop outstanding work without callbacks) and before its event_base. */
void reconciler_free(struct reconciler *rc);

#endif
