/*
 * gateway/resv.h — the reservations feature's hooks into the daemon
 * (routes are in resv_routes, declared in http.h).
 */
#ifndef FGW_GATEWAY_RESV_H
#define FGW_GATEWAY_RESV_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "gateway/gateway.h"

struct resv_row;

/* Start-up, before the reactors run: subscribes to transaction events and
 * loads slots_file (blocking is fine here). With check, only checks
 * slots_file: no subscription, no store needed. */
int resv_setup(struct gateway *gw, int check, struct fgw_why *why);
/* On each reactor: the hold-expiry / idempotency-pruning timer. */
int resv_reactor_start(struct reactor *rx);
void resv_reactor_stop(struct reactor *rx);

/* POST /v1/reservations/hold: checks the body object (members, strings,
 * numberOfGuests, e-mail and phone shapes) into row's experience, slot,
 * guest and guests fields. 0, or FGW_ERR_INVALID with the client's
 * message in why->msg. */
int resv_hold_body_parse(const cJSON *root, struct resv_row *row, struct fgw_why *why);
/* POST /v1/reservations/hold/convert: members, holdId into hold_id,
 * savePaymentMethod a boolean, at most one payment source (whose fields
 * txn_request_parse checks) counted in *ways: 0 is seed 003's convert
 * without a card (then no returnUrl either). 0, or FGW_ERR_INVALID with
 * why. */
int resv_convert_body_parse(const cJSON *root, char *hold_id, size_t idcap, int *ways,
                            struct fgw_why *why);

#endif
