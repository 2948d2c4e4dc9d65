/*
 * tools/sandbox/threeds.c — the 3-D Secure challenge and its webhook.
 *
 * GET /3ds/<id> serves a two-button page; POST /3ds/<id>/complete moves a
 * requires_action charge to succeeded, POST /3ds/<id>/fail to declined
 * (authentication_failed: the gateway learns it by asking for the charge),
 * and, on success, when a webhook is configured,
 * queues a signed payment_intent.succeeded event. Delivery goes through
 * the sandbox's own async client (httpc) on the same loop: up to three
 * attempts, 1 s then 2 s apart, on a transport error or a non-2xx answer.
 *
 * Signature: Flair-Sandbox-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
 * "<t>.<body>" keyed with the webhook secret>.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#define LOG_MODULE "sandbox"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "processors/httpc.h"
#include "tools/sandbox/sandbox.h"

#define WEBHOOK_ATTEMPTS 3
#define WEBHOOK_TIMEOUT_MS 5000L

struct sbx_webhook {
	struct sbx *s;
	char *body;
	char sig_header[160];
	char event_id[32];
	int attempt;
	struct event *timer;
	struct httpc_req *req;
	LIST_ENTRY(sbx_webhook) link;
};

void
sbx_3ds_page(struct sbx *s, struct evhttp_request *req, const char *id)
{
	struct sbx_charge *c = ledger_by_id(s->ledger, id);
	char page[1600];
	int n;

	if (c == NULL) {
		sbx_send_error(req, 404, "not_found", "no such charge");
		return;
	}
	/* id is "ch_" + base62 and currency three letters: nothing to
	 * escape. The reference is the merchant's and is not shown. */
	n = snprintf(
	    page, sizeof(page),
	    "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
	    "<title>3-D Secure test page</title></head>\n<body>\n"
	    "<h1>3-D Secure test page</h1>\n"
	    "<p>flair-sandbox asks you to authenticate charge %s of %lld"
	    " (minor units) %s. Status: %s.</p>\n"
	    "<form method=\"post\" action=\"/3ds/%s/complete\">\n"
	    "<button type=\"submit\" id=\"complete\">Complete authentication</button>\n"
	    "</form>\n"
	    "<form method=\"post\" action=\"/3ds/%s/fail\">\n"
	    "<button type=\"submit\" id=\"fail\">Fail authentication</button>\n"
	    "</form>\n</body></html>\n",
	    c->id, (long long)c->amount, c->currency, c->status, c->id, c->id);
	if (n < 0 || (size_t)n >= sizeof(page)) {
		sbx_send_error(req, 500, "internal", "page too long");
		return;
	}
	sbx_send(req, 200, "text/html; charset=utf-8", page, (size_t)n);
}

/* ---- webhook delivery ----------------------------------------------------- */

static void
webhook_free(struct sbx_webhook *w)
{
	LIST_REMOVE(w, link);
	if (w->req != NULL)
		httpc_cancel(w->req);
	if (w->timer != NULL)
		event_free(w->timer);
	free(w->body);
	free(w);
}

void
sbx_webhooks_free(struct sbx *s)
{
	while (!LIST_EMPTY(&s->webhooks))
		webhook_free(LIST_FIRST(&s->webhooks));
}

static void webhook_send(struct sbx_webhook *w);

static void
webhook_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	webhook_send(arg);
}

static void
webhook_done(void *arg, const struct httpc_response *resp)
{
	struct sbx_webhook *w = arg;

	w->req = NULL;
	if (resp->err == 0 && resp->status >= 200 && resp->status <= 299) {
		log_info("webhook %s delivered (HTTP %ld, attempt %d)", w->event_id, resp->status,
		         w->attempt);
		webhook_free(w);
		return;
	}
	log_warn("webhook %s attempt %d failed: %s HTTP %ld", w->event_id, w->attempt,
	         resp->err ? fgw_strerror(resp->err) : "status", resp->status);
	if (w->attempt >= WEBHOOK_ATTEMPTS) {
		log_warn("webhook %s given up", w->event_id);
		webhook_free(w);
		return;
	}
	struct timeval tv = { w->attempt, 0 }; /* 1 s, then 2 s */
	if (evtimer_add(w->timer, &tv) != 0)
		webhook_free(w);
}

static void
webhook_send(struct sbx_webhook *w)
{
	const char *headers[] = { "Content-Type: application/json", w->sig_header, NULL };
	int r;

	w->attempt++;
	r = httpc_request(w->s->httpc, "POST", w->s->webhook_url, headers, w->body,
	                  strlen(w->body), WEBHOOK_TIMEOUT_MS, webhook_done, w, &w->req);
	if (r != FGW_OK) {
		log_warn("webhook %s not sent: %s", w->event_id, fgw_strerror(r));
		webhook_free(w);
	}
}

/* Hex HMAC-SHA256(secret, "<t>.<body>"). */
static void
sign(const char *secret, long long t, const char *body, char hex[65])
{
	crypto_auth_hmacsha256_state st;
	unsigned char mac[crypto_auth_hmacsha256_BYTES];
	char ts[24];
	int n = snprintf(ts, sizeof(ts), "%lld.", t);

	crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, (size_t)n);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, strlen(body));
	crypto_auth_hmacsha256_final(&st, mac);
	fgw_hex(mac, sizeof(mac), hex);
	sodium_memzero(&st, sizeof(st));
}

static int
event_body(const struct sbx_charge *c, const char *evt_id, long long t, char **out)
{
	cJSON *o = NULL, *data, *obj;
	int r = FGW_ERR_NOMEM;

	*out = NULL;
	if ((o = cJSON_CreateObject()) == NULL || !cJSON_AddStringToObject(o, "id", evt_id) ||
	    !cJSON_AddStringToObject(o, "type", "payment_intent.succeeded") ||
	    !cJSON_AddNumberToObject(o, "created", (double)t) ||
	    (data = cJSON_AddObjectToObject(o, "data")) == NULL ||
	    (obj = cJSON_AddObjectToObject(data, "object")) == NULL ||
	    !cJSON_AddStringToObject(obj, "id", c->id) ||
	    !cJSON_AddStringToObject(obj, "reference", c->reference) ||
	    !cJSON_AddStringToObject(obj, "status", c->status) ||
	    /* As the charge answer says it: an authorization is not captured. */
	    !cJSON_AddBoolToObject(obj, "captured",
	                           c->capture && strcmp(c->status, "succeeded") == 0) ||
	    !cJSON_AddNumberToObject(obj, "amount", (double)c->amount) ||
	    !cJSON_AddStringToObject(obj, "currency", c->currency) ||
	    (*out = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(o);
	return r;
}

/* Signs and sends one event (with retries). make_body builds the event
 * JSON for the given event id and time; header names the signature
 * header ("Flair-Sandbox-Signature", or "Stripe-Signature" in --stripe
 * mode: the same t=,v1= scheme). */
void
sbx_webhook_queue(struct sbx *s, const char *header, const char *what,
                  int (*make_body)(const void *obj, const char *evt_id, long long t,
                                   char **out),
                  const void *obj)
{
	struct sbx_webhook *w;
	long long t = (long long)(fgw_now_ms() / 1000);
	char hex[65];
	int n;

	if (s->httpc == NULL || s->webhook_url == NULL)
		return;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		goto nomem;
	w->s = s;
	LIST_INSERT_HEAD(&s->webhooks, w, link);
	if (fgw_random_id("evt_", w->event_id, sizeof(w->event_id)) != FGW_OK ||
	    make_body(obj, w->event_id, t, &w->body) != FGW_OK ||
	    (w->timer = evtimer_new(s->base, webhook_retry_cb, w)) == NULL) {
		webhook_free(w);
		goto nomem;
	}
	sign(s->webhook_secret, t, w->body, hex);
	n = snprintf(w->sig_header, sizeof(w->sig_header), "%s: t=%lld,v1=%s", header, t,
	             hex);
	if (n < 0 || (size_t)n >= sizeof(w->sig_header)) {
		webhook_free(w);
		goto nomem;
	}
	webhook_send(w);
	return;
nomem:
	log_error("webhook for %s not queued: out of memory", what);
}

static int
charge_event_body(const void *obj, const char *evt_id, long long t, char **out)
{
	return event_body(obj, evt_id, t, out);
}

/* ---- completion ------------------------------------------------------------ */

static int
is_form_post(struct evhttp_request *req)
{
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                    "Content-Type");
	return ct != NULL && strncmp(ct, "application/x-www-form-urlencoded", 33) == 0;
}

/* Where a browser goes after the challenge, or the charge as JSON. */
static void
after_challenge(struct sbx *s, struct evhttp_request *req, const struct sbx_charge *c)
{
	if (is_form_post(req)) {
		if (c->return_url != NULL) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Location",
			                  c->return_url);
			sbx_send(req, 303, "text/plain", "See Other\n", 10);
		} else {
			static const char done[] =
			    "<!doctype html>\n<html><body><p>Authentication finished."
			    "</p></body></html>\n";
			sbx_send(req, 200, "text/html; charset=utf-8", done, sizeof(done) - 1);
		}
		return;
	}
	sbx_send_charge(s, req, c);
}

/* The card holder failed the challenge: the charge is declined. */
void
sbx_3ds_fail(struct sbx *s, struct evhttp_request *req, const char *id)
{
	struct sbx_charge *c = ledger_by_id(s->ledger, id);

	if (c == NULL) {
		sbx_send_error(req, 404, "not_found", "no such charge");
		return;
	}
	if (strcmp(c->status, "requires_action") == 0) {
		fgw_strlcpy(c->status, "declined", sizeof(c->status));
		fgw_strlcpy(c->decline_code, "authentication_failed", sizeof(c->decline_code));
		if (ledger_journal(s->ledger, c) != FGW_OK)
			log_warn("%s: ledger file not written", c->id);
		log_info("3-D Secure failed for %s (key %s)", c->id, c->idem_key);
	} else if (strcmp(c->status, "declined") != 0) {
		sbx_send_error(req, 409, "invalid_state",
		               "the charge does not await authentication");
		return;
	}
	after_challenge(s, req, c);
}

void
sbx_3ds_complete(struct sbx *s, struct evhttp_request *req, const char *id)
{
	struct sbx_charge *c = ledger_by_id(s->ledger, id);

	if (c == NULL) {
		sbx_send_error(req, 404, "not_found", "no such charge");
		return;
	}
	if (strcmp(c->status, "requires_action") == 0) {
		fgw_strlcpy(c->status, "succeeded", sizeof(c->status));
		if (ledger_journal(s->ledger, c) != FGW_OK)
			log_warn("%s: ledger file not written", c->id);
		log_info("3-D Secure completed for %s (key %s)", c->id, c->idem_key);
		sbx_webhook_queue(s, "Flair-Sandbox-Signature", c->id, charge_event_body, c);
	} else if (strcmp(c->status, "succeeded") != 0) {
		sbx_send_error(req, 409, "invalid_state",
		               "the charge does not await authentication");
		return;
	}
	/* A browser (form post) goes back to the merchant; anything else gets
	 * the charge as JSON. */
	after_challenge(s, req, c);
}
