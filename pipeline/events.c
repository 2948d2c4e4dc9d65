/*
 * pipeline/events.c — a fixed table of state-change listeners, filled at
 * start-up and read without locks afterwards.
 */
#include <stddef.h>

#include "core/err.h"
#include "pipeline/events.h"

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

void
txn_events_publish(const struct pipeline_env *env, const struct store_txn_row *row)
{
	for (int i = 0; i < n_listeners; i++)
		listeners[i].fn(listeners[i].ctx, env, row);
}
