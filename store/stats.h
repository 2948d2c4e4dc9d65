/*
 * store/stats.h — the work waiting in the database, for /metrics: what
 * the reconciler, the webhook outbox and manual review still have to do.
 */
#ifndef FGW_STORE_STATS_H
#define FGW_STORE_STATS_H

#include <stdint.h>

struct store_reader;

struct store_backlogs {
	int64_t unresolved_txns;  /* posting/processing, the reconciler's */
	int64_t manual_review;    /* transactions the reconciler gave up on */
	int64_t pending_ops;      /* refunds, captures, cancels not yet answered */
	int64_t webhooks_pending; /* outbound deliveries not yet delivered */
};

/* Counts from r's read-only connection; each count uses an index, so the
 * cost follows the backlog, not the table. 0 or FGW_ERR_DB. */
int store_backlogs(struct store_reader *r, struct store_backlogs *out);

#endif
