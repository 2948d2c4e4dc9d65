/*
 * store/txn_recent.h — the recent transactions, oldest first, for the
 * gateway's velocity counters to be rebuilt at start-up (so limits such
 * as "5 attempts per IP per minute" survive a restart).
 */
#ifndef FGW_STORE_TXN_RECENT_H
#define FGW_STORE_TXN_RECENT_H

#include <stdint.h>

#include "store/store.h"

/* Called per row; a non-zero return stops the scan and is returned. */
typedef int (*store_txn_recent_fn)(void *ctx, const struct store_txn_row *row);

/* Calls fn for every transaction created at or after since_ms, oldest
 * first, with id, amount, currency, status, processor, fingerprint,
 * brand, bin, customer e-mail, country and IP, rule_decision and
 * created_at filled (other fields zero). At most max_rows rows (0: no
 * limit); *n (may be NULL) is how many were passed. 0 or FGW_ERR_*. */
int store_txn_recent(struct store_reader *r, int64_t since_ms, int64_t max_rows,
                     store_txn_recent_fn fn, void *ctx, int64_t *n);

#endif
