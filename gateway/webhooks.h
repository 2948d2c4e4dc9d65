/*
 * gateway/webhooks.h — webhook secrets and the outbound delivery loop
 * (private to the gateway room).
 *
 * Start-up: webhooks_setup reads every inbound and endpoint secret file
 * into guarded memory and subscribes the outbox writer to transaction
 * state changes (pipeline/events.h); webhooks_start, once the reactors
 * run, arms the delivery timer on reactor 0. Inbound verification
 * (routes_webhooks.c) asks webhooks_inbound for a processor's secrets.
 */
#ifndef FGW_GATEWAY_WEBHOOKS_H
#define FGW_GATEWAY_WEBHOOKS_H

#include <stddef.h>

struct check_report;
struct gateway;
struct webhooks;

#define WEBHOOKS_MAX_SECRETS 16

/* Loads the secrets named by the configuration and, with subscribe, hooks
 * the outbox listener to transaction events; *out is NULL-safe for
 * webhooks_free. Each unusable secret file is reported to rep by name;
 * returns 0 or the first error. */
int webhooks_setup(struct gateway *gw, int subscribe, struct check_report *rep,
                   struct webhooks **out);
/* Arms outbound delivery on reactor 0 (after server_start). */
int webhooks_start(struct webhooks *wh);
/* Wipes the secrets and frees (after server_stop). NULL is fine. */
void webhooks_free(struct webhooks *wh);

/* The secrets accepted for processor (up to WEBHOOKS_MAX_SECRETS), the
 * signature header its scheme uses and the scheme (the adapter type whose
 * map_event reads its events); FGW_ERR_NOT_FOUND when no inbound_webhook
 * names it. Pointers live as long as wh. */
int webhooks_inbound(const struct webhooks *wh, const char *processor,
                     const char *secrets[WEBHOOKS_MAX_SECRETS], size_t *n,
                     const char **header, const char **scheme);

/* Tells the website something about a transaction that is not a state
 * move ("disputed": type transaction.disputed), through the outbox. */
struct pipeline_env;
struct store_txn_row;
void webhooks_notify(struct webhooks *wh, const struct pipeline_env *env,
                     const struct store_txn_row *row, const char *what);

#endif
