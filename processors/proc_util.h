/*
 * processors/proc_util.h — helpers shared by the adapter types: building
 * strings, checking what goes into a URL or a header, and parsing a body
 * strictly.
 */
#ifndef FGW_PROCESSORS_PROC_UTIL_H
#define FGW_PROCESSORS_PROC_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "processors/adapter.h"

/* *out = malloc'ed printf result; FGW_ERR_NOMEM / FGW_ERR_INTERNAL. */
int proc_fmt_alloc(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Printable ASCII without spaces, 1..max: safe inside a header line. */
int proc_token_ok(const char *s, size_t max);
/* http:// or https://, 1..max, no spaces or controls. */
int proc_url_ok(const char *s, size_t max);
/* The length of a base URL without its trailing slashes, so that a path
 * starting with '/' can follow it. */
size_t proc_base_len(const char *url);
/* A plain identifier [A-Za-z0-9_-], shorter than cap. */
int proc_id_ok(const char *s, size_t cap);
/* A charge's operation: 1 for "purchase" (or none), which captures at
 * once; 0 for "authorize"; -1 for anything else. */
int proc_captures(const char *operation);
/* The headers every JSON processor call carries: Accept, the
 * Idempotency-Key key and, when cfg has a secret, its Bearer token. *h is
 * the next free slot of out->headers and moves past what was added. */
int proc_common_headers(const struct proc_config *cfg, const char *key,
                        struct proc_http *out, int *h);
/* Sets a result's outcome, our error code and a safe message. */
void proc_set_result(struct proc_result *out, enum proc_outcome o, const char *code,
                     const char *message);
/* A processor's next action (3-D Secure) -> the one shape flairgw relays
 * and stores, {"type":"redirect_to_url","url":"..."}: accepts the flat
 * form {type, url} and Stripe's {type, redirect_to_url: {url}}; the url
 * must pass proc_url_ok (2048) and hold no '"', '<' or '>'. *out is
 * malloc'ed. FGW_ERR_INVALID for anything else, FGW_ERR_NOMEM. */
int proc_next_action(const cJSON *na, char **out);
/* The string member name of obj, or NULL (also when obj is no object). */
const char *proc_json_str(const cJSON *obj, const char *name);

/* ---- webhook events (map_event) ---- */
/* A whole, non-negative amount member of obj, or -1. */
int64_t proc_json_amount(const cJSON *obj, const char *name);
/* What a success event's object says about the capture: 1 when it
 * affirms it (captured true, or money received) and nothing denies it
 * (captured false, nothing received, a status other than succeeded);
 * else 0. A succeeded payment is more than an authorized one, so an
 * event that does not prove the capture moves a payment only to
 * authorized. */
int proc_capture_proven(const cJSON *obj);
/* Empties ev: IGNORE, amounts -1. */
void proc_event_init(struct proc_event *ev);
/* Where the object names a transaction: metadata.flair_txn_id (and with
 * own_refs the flair-sandbox fields reference, client_reference_id) as
 * our id; id and payment_intent as the processor's. */
void proc_event_refs(const cJSON *obj, struct proc_event *ev, int own_refs);

#endif
