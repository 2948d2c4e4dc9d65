/*
 * gateway/resv.h — the reservations feature's hooks into the daemon
 * (routes are in resv_routes, declared in http.h).
 */
#ifndef FGW_GATEWAY_RESV_H
#define FGW_GATEWAY_RESV_H

#include <stddef.h>

#include "gateway/gateway.h"

/* Start-up, before the reactors run: subscribes to transaction events and
 * loads slots_file (blocking is fine here). With check, only checks
 * slots_file: no subscription, no store needed. */
int resv_setup(struct gateway *gw, int check, char *err, size_t errlen);
/* On each reactor: the hold-expiry / idempotency-pruning timer. */
int resv_reactor_start(struct reactor *rx);
void resv_reactor_stop(struct reactor *rx);

#endif
