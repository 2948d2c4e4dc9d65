/*
 * pipeline/events.h — tells interested features that a transaction's state
 * moved: at the end of its own pipeline (record stage), or later through a
 * webhook, the reconciler, a capture or a refund.
 *
 * Listeners subscribe at start-up (before reactors run) and are called on
 * the reactor thread that committed the move, after the commit, with the
 * row as it now stands. A listener must not block; to write it submits its
 * own store jobs, on env's store and waker, synchronously: they commit
 * together with the deletion of the move's txn_moves row (store job
 * group), and a move no listener heard of because the process ended is
 * published again after a restart (pipeline/reconcile.c). A listener
 * hears a move once, from whichever publish deletes its txn_moves row
 * (store_txn_moves_take); in-memory effects of a listener (counters) may
 * run on a publish whose jobs are then dropped. Reservations, outbound webhooks and notifications hang
 * off this without the pipeline knowing about them.
 */
#ifndef FGW_PIPELINE_EVENTS_H
#define FGW_PIPELINE_EVENTS_H

#include "store/store.h"

struct pipeline_env;

#define TXN_EVENTS_MAX_LISTENERS 8

/* env: the reactor's environment (base, store, waker...) the move was
 * committed on; row: the transaction after the move. */
typedef void (*txn_event_fn)(void *ctx, const struct pipeline_env *env,
                             const struct store_txn_row *row);

/* Adds a listener. FGW_ERR_TOO_LARGE when the table is full. Start-up only:
 * not thread-safe against txn_events_publish. */
int txn_events_subscribe(txn_event_fn fn, void *ctx);
/* Removes every listener (shutdown, tests). */
void txn_events_reset(void);
/* Calls every listener in subscription order, for a move of the state
 * (a txn_moves row): the listeners' jobs commit only if this publish
 * deletes the row, so a move that two publishes announce at once (a live
 * one and another instance's replay) is announced once. */
void txn_events_publish(const struct pipeline_env *env, const struct store_txn_row *row);
/* The same for news that may be no move of the state (a partial refund
 * after another leaves it partially_refunded): the listeners' jobs commit
 * whether or not there is a row to delete. */
void txn_events_publish_news(const struct pipeline_env *env,
                             const struct store_txn_row *row);

#endif
