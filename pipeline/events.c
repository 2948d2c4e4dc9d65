/*
 * pipeline/events.c — a fixed table of state-change listeners, filled at
 * start-up and read without locks afterwards. Each state a transaction
 * takes is also a txn_moves row committed with it (store/txnmoves.h);
 * publishing deletes it once the listeners have queued their jobs.
 */
#include <stddef.h>

#include "core/err.h"
#include "core/log.h"
#include "pipeline/events.h"
#include "pipeline/pipeline.h"
#include "store/txnmoves.h"

static struct {
	txn_event_fn fn;
	void *ctx;
} listeners[TXN_EVENTS_MAX_LISTENERS];
static int n_listeners;

int
txn_events_subscribe(txn_event_fn fn, void *ctx)
{
	if (fn == NULL)
		return FGW_ERR_INVALID;
	if (n_listeners == TXN_EVENTS_MAX_LISTENERS)
		return FGW_ERR_TOO_LARGE;
	listeners[n_listeners].fn = fn;
	listeners[n_listeners].ctx = ctx;
	n_listeners++;
	return FGW_OK;
}

void
txn_events_reset(void)
{
	n_listeners = 0;
}

static void
publish(const struct pipeline_env *env, const struct store_txn_row *row, int guard)
{
	int grouped = env != NULL && env->store != NULL && env->waker != NULL, r;

	/* The listeners' jobs (outbox rows, mails, the reservation's move)
	 * and the deletion of the state's txn_moves row commit together: a
	 * crash leaves either all of them undone, and the row replayed
	 * (pipeline/reconcile.c), or all done. The deletion comes first and
	 * guards the rest: when another publish of the same move (a replay
	 * on another instance, say) deleted the row first, this one's
	 * listener jobs are not run, so their effects are queued once. */
	if (grouped)
		store_group_begin(env->waker);
	if (env != NULL && env->store != NULL &&
	    (r = (guard ? store_txn_moves_take : store_txn_moves_done)(env->store, env->waker,
	                                                               row->id, row->status,
	                                                               NULL, NULL)) != 0)
		log_error("txn %s: state %s not marked announced: %s", row->id, row->status,
		          fgw_strerror(r));
	for (int i = 0; i < n_listeners; i++)
		listeners[i].fn(listeners[i].ctx, env, row);
	if (grouped)
		store_group_end(env->store, env->waker);
}

void
txn_events_publish(const struct pipeline_env *env, const struct store_txn_row *row)
{
	publish(env, row, 1);
}

void
txn_events_publish_news(const struct pipeline_env *env, const struct store_txn_row *row)
{
	publish(env, row, 0);
}
