/*
 * processors/stripe.c — the adapter type "stripe": Stripe's PaymentIntents
 * API in its real wire format (docs/adapters.md, docs/sandbox.md for the
 * Stripe-compatible test server).
 *
 * A raw card takes two calls, each with its own Idempotency-Key derived
 * from the attempt's key: build_card() creates a PaymentMethod
 * (POST /v1/payment_methods, type=card and card[...], key "<key>-pm"),
 * the only request that carries PAN and CVC, built in guarded memory
 * (proc_http.secure_body); build() then creates and confirms a
 * PaymentIntent for that pm_... (POST /v1/payment_intents, key
 * "<key>-pi"). A PaymentMethod charges nothing, so a lost answer to the
 * first call is a certain "not charged"; the second is the charge, and a
 * lost answer to it is reconciled by searching metadata[flair_txn_id].
 * Every request is application/x-www-form-urlencoded with Authorization:
 * Bearer <secret> and Stripe-Version: <pinned>; the parameters are the
 * ones Stripe's OpenAPI description defines
 * (tests/fixtures/stripe-openapi-subset.json, checked in tests).
 *
 * A Stripe.js PaymentMethod saved for later is attached to a Stripe
 * Customer (POST /v1/customers, then POST /v1/payment_methods/{pm}/attach,
 * build_customer and build_attach); its charges name that customer.
 *
 * parse_reply() maps a PaymentIntent (2xx) through status_table and a
 * Stripe error object ({"error":{type, code, decline_code, ...}}) through
 * error_table to our outcome and error code. Messages are our fixed
 * strings; Stripe's text is never passed on.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "crypto/mac.h"
#include "core/json.h"
#include "core/util.h"
#include "crypto/secmem.h"
#include "processors/adapter.h"
#include "processors/proc_util.h"

#define STRIPE_MAX_AMOUNT 99999999LL /* Stripe's limit for amount */
#define STRIPE_DEFAULT_VERSION "2024-06-20"

#define C_DECLINED "PAYMENT_CARD_DECLINED"
#define C_FUNDS "PAYMENT_INSUFFICIENT_FUNDS"
#define C_FAILED "PAYMENT_PROCESSING_FAILED"

/* Stripe error object -> ours. First matching row wins; NULL matches
 * anything. */
static const struct {
	const char *type, *code, *decline_code;
	enum proc_outcome outcome;
	const char *our_code, *message;
} error_table[] = {
	{ "card_error", NULL, "insufficient_funds", PROC_DECLINED, C_FUNDS,
	  "The card has insufficient funds." },
	{ "card_error", "expired_card", NULL, PROC_DECLINED, C_DECLINED,
	  "The card has expired." },
	{ "card_error", "incorrect_number", NULL, PROC_DECLINED, C_DECLINED,
	  "The card number is incorrect." },
	{ "card_error", "invalid_number", NULL, PROC_DECLINED, C_DECLINED,
	  "The card number is incorrect." },
	{ "card_error", "incorrect_cvc", NULL, PROC_DECLINED, C_DECLINED,
	  "The card's security code is incorrect." },
	/* Refusals of the PaymentMethod itself (POST /v1/payment_methods). */
	{ "card_error", "invalid_expiry_month", NULL, PROC_DECLINED, C_DECLINED,
	  "The card's expiry date is invalid." },
	{ "card_error", "invalid_expiry_year", NULL, PROC_DECLINED, C_DECLINED,
	  "The card's expiry date is invalid." },
	{ "card_error", "invalid_cvc", NULL, PROC_DECLINED, C_DECLINED,
	  "The card's security code is invalid." },
	{ "card_error", "processing_error", NULL, PROC_FAILED, C_FAILED,
	  "The processor could not process the card." },
	{ "card_error", NULL, NULL, PROC_DECLINED, C_DECLINED, "The card was declined." },
	/* The key was used with other parameters: the first request's
	 * effect exists and is not ours to guess. */
	{ "idempotency_error", NULL, NULL, PROC_UNKNOWN, C_FAILED,
	  "The payment outcome is not known yet." },
	{ "invalid_request_error", NULL, NULL, PROC_FAILED, C_FAILED,
	  "The payment processor rejected the request." },
	{ "authentication_error", NULL, NULL, PROC_FAILED, C_FAILED,
	  "The payment processor refused the gateway's credentials." },
	{ "permission_error", NULL, NULL, PROC_FAILED, C_FAILED,
	  "The payment processor refused the gateway's credentials." },
	{ "rate_limit_error", NULL, NULL, PROC_FAILED, C_FAILED,
	  "The payment processor is busy." },
	{ NULL, NULL, NULL, PROC_UNKNOWN, C_FAILED, "The payment outcome is not known yet." },
};

/* PaymentIntent status -> ours, for a create+confirm answer. */
static const struct {
	const char *status;
	enum proc_outcome outcome;
	const char *our_code, *message;
} status_table[] = {
	{ "succeeded", PROC_SUCCEEDED, "", "The payment succeeded." },
	{ "requires_action", PROC_REQUIRES_ACTION, "",
	  "The payment requires customer authentication." },
	/* Declined on confirmation: last_payment_error says why (error_table). */
	{ "requires_payment_method", PROC_DECLINED, C_DECLINED, "The card was declined." },
	{ "canceled", PROC_FAILED, C_FAILED, "The payment was canceled." },
	{ "requires_confirmation", PROC_FAILED, C_FAILED, "The payment was not confirmed." },
	/* capture_method=manual (an authorize-only transaction). */
	{ "requires_capture", PROC_AUTHORIZED, "", "The payment was authorized." },
	/* processing and anything new. */
	{ NULL, PROC_UNKNOWN, C_FAILED, "The payment outcome is not known yet." },
};

/* ---- form body in guarded memory ----------------------------------------- */

/* Two passes over the same calls: with buf NULL only len is counted, then
 * the bytes are written into a guarded buffer of exactly that size. */
struct form {
	unsigned char *buf;
	size_t len, cap;
};

static void
form_raw(struct form *f, const char *s, size_t n)
{
	if (f->buf != NULL && f->len + n <= f->cap)
		memcpy(f->buf + f->len, s, n);
	f->len += n;
}

/* application/x-www-form-urlencoded: unreserved bytes as they are, the
 * rest as %XX (brackets in keys too, as Stripe's libraries send them). */
static void
form_enc(struct form *f, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			form_raw(f, s, 1);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };
			form_raw(f, e, 3);
		}
	}
}

static void
form_put(struct form *f, const char *key, const char *value)
{
	if (value == NULL)
		return;
	if (f->len > 0)
		form_raw(f, "&", 1);
	form_enc(f, key);
	form_raw(f, "=", 1);
	form_enc(f, value);
}

static void
form_put_int(struct form *f, const char *key, long long v)
{
	char num[24];
	if (snprintf(num, sizeof(num), "%lld", v) < (int)sizeof(num))
		form_put(f, key, num);
}

/* The PaymentIntent that charges a PaymentMethod Stripe already holds:
 * no card data, so it is an ordinary body. */
static void
intent_form(struct form *f, const struct proc_request *req, int capture)
{
	char cur[4];

	for (int i = 0; i < 3; i++)
		cur[i] = (char)(req->currency[i] - 'A' + 'a');
	cur[3] = '\0';
	form_put_int(f, "amount", (long long)req->amount);
	form_put(f, "currency", cur);
	/* Unconfirmed, the customer's browser confirms it with Stripe.js
	 * and the client secret; Stripe takes return_url only with
	 * confirm=true (Stripe.js passes its own). */
	form_put(f, "confirm", req->client_confirms ? "false" : "true");
	form_put(f, "capture_method", capture ? "automatic" : "manual");
	form_put(f, "payment_method", req->payment_method);
	/* A saved card: Stripe charges an attached PaymentMethod only for
	 * the Customer that owns it. */
	form_put(f, "customer", req->customer);
	/* Without it an account with automatic payment methods would also
	 * offer redirect-based methods and ask for a return_url. */
	form_put(f, "payment_method_types[0]", "card");
	form_put(f, "metadata[flair_txn_id]", req->txn_id);
	/* Says, in the intent itself, that the customer confirms it: a
	 * failed attempt leaves it open for another card (Stripe.js), so it
	 * is no decline of the payment (map_intent, stripe_map_event). The
	 * publishable key cannot change metadata. */
	if (req->client_confirms)
		form_put(f, "metadata[flair_confirm]", "stripe_js");
	form_put(f, "description", req->description);
	form_put(f, "receipt_email", req->customer_email);
	if (!req->client_confirms)
		form_put(f, "return_url", req->return_url);
	if (req->require_3ds)
		form_put(f, "payment_method_options[card][request_three_d_secure]", "any");
}

/* POST /v1/payment_methods: the only place raw card fields go to Stripe
 * (a PaymentIntent's payment_method_data has no type "card"). */
static void
card_form(struct form *f, const struct proc_request *req)
{
	const struct proc_clear_card *c = req->clear_card;

	form_put(f, "type", "card");
	form_put(f, "card[number]", (const char *)c->pan->data);
	form_put_int(f, "card[exp_month]", c->exp_month);
	form_put_int(f, "card[exp_year]", c->exp_year);
	if (c->cvc != NULL)
		form_put(f, "card[cvc]", (const char *)c->cvc->data);
	if (c->holder != NULL && c->holder[0] != '\0')
		form_put(f, "billing_details[name]", c->holder);
	form_put(f, "metadata[flair_txn_id]", req->txn_id);
}

/* ---- build ---------------------------------------------------------------- */

static int
add_header(struct proc_http *out, size_t *h, const char *name, const char *value)
{
	size_t n = strlen(name) + strlen(value) + 3;
	char *line;

	if (*h + 1 >= sizeof(out->headers) / sizeof(out->headers[0]))
		return FGW_ERR_INTERNAL;
	if ((line = malloc(n)) == NULL)
		return FGW_ERR_NOMEM;
	if (snprintf(line, n, "%s: %s", name, value) != (int)n - 1) {
		free(line);
		return FGW_ERR_INTERNAL;
	}
	out->headers[(*h)++] = line;
	return FGW_OK;
}

/* A Stripe object id we send or keep: prefix + [A-Za-z0-9_]. */
static int
stripe_id_ok(const char *s, const char *prefix, size_t cap)
{
	size_t n = s != NULL ? strlen(s) : 0, p = strlen(prefix);

	if (n <= p || n >= cap || strncmp(s, prefix, p) != 0)
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                 "0123456789_") == n;
}

/* POST base/v1/<what> with the headers every Stripe write carries; the
 * Idempotency-Key is the attempt's key plus a suffix per call, so the
 * PaymentMethod and the PaymentIntent of one attempt each replay on a
 * retry and never collide with each other. */
static int
post_start(const struct proc_config *cfg, const char *what, const char *key,
           const char *suffix, struct proc_http *out)
{
	const char *version = cfg->api_version[0] ? cfg->api_version : STRIPE_DEFAULT_VERSION;
	char bearer[300], idem[300];
	size_t blen, h = 0;
	int r = FGW_ERR_INVALID;

	if (!proc_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !proc_token_ok(cfg->secret, 255) || !proc_token_ok(version, 39) ||
	    !proc_token_ok(key, 255 - strlen(suffix)))
		return FGW_ERR_INVALID;
	blen = proc_base_len(cfg->base_url);
	memcpy(out->method, "POST", 5);
	if (snprintf(bearer, sizeof(bearer), "Bearer %s", cfg->secret) >=
	        (int)sizeof(bearer) ||
	    snprintf(idem, sizeof(idem), "%s%s", key, suffix) >= (int)sizeof(idem))
		goto out;
	r = FGW_ERR_NOMEM;
	if ((out->url = malloc(blen + strlen(what) + 5)) == NULL)
		goto out;
	snprintf(out->url, blen + strlen(what) + 5, "%.*s/v1/%s", (int)blen, cfg->base_url,
	         what);
	if ((r = add_header(out, &h, "Content-Type", "application/x-www-form-urlencoded")) !=
	        0 ||
	    (r = add_header(out, &h, "Accept", "application/json")) != 0 ||
	    (r = add_header(out, &h, "Authorization", bearer)) != 0 ||
	    (r = add_header(out, &h, "Idempotency-Key", idem)) != 0 ||
	    (r = add_header(out, &h, "Stripe-Version", version)) != 0)
		goto out;
	r = FGW_OK;
out:
	explicit_bzero(bearer, sizeof(bearer));
	return r;
}

static int
request_ok(const struct proc_request *req)
{
	return proc_token_ok(req->txn_id, 64) && req->currency != NULL &&
	       strlen(req->currency) == 3 &&
	       strspn(req->currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 3 && req->amount > 0 &&
	       req->amount <= STRIPE_MAX_AMOUNT &&
	       (req->return_url == NULL || proc_url_ok(req->return_url, 2048));
}

/* First call of a raw card payment: the PaymentMethod, built in guarded
 * memory because it carries PAN and CVC. */
static int
stripe_build_card(const struct proc_config *cfg, const struct proc_request *req,
                  struct proc_http *out)
{
	struct form f = { NULL, 0, 0 };
	const struct proc_clear_card *c;
	int r;

	if (cfg == NULL || req == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	c = req->clear_card;
	if (!request_ok(req) || c == NULL || c->pan == NULL || c->exp_month < 1 ||
	    c->exp_month > 12 || c->exp_year < 1000 || c->exp_year > 9999)
		return FGW_ERR_INVALID;
	if ((r = post_start(cfg, "payment_methods", req->idempotency_key, "-pm", out)) != 0)
		goto out;
	card_form(&f, req);
	if ((r = secbuf_alloc(&out->secure_body, f.len)) != 0)
		goto out;
	f.cap = f.len;
	f.len = 0;
	f.buf = out->secure_body->data;
	card_form(&f, req);
	r = f.len == f.cap ? FGW_OK : FGW_ERR_INTERNAL;
out:
	if (r != FGW_OK)
		proc_http_clear(out);
	return r;
}

/* A small form body (no card data) into out->body. */
static int
plain_body(struct proc_http *out, void (*fill)(struct form *, const void *),
           const void *arg)
{
	struct form f = { NULL, 0, 0 };

	fill(&f, arg);
	if ((out->body = malloc(f.len + 1)) == NULL)
		return FGW_ERR_NOMEM;
	f.cap = f.len;
	f.len = 0;
	f.buf = (unsigned char *)out->body;
	fill(&f, arg);
	out->body[f.len] = '\0';
	out->body_len = f.len;
	return f.len == f.cap ? FGW_OK : FGW_ERR_INTERNAL;
}

static void
empty_form(struct form *f, const void *arg)
{
	(void)f;
	(void)arg;
}

/* A POST of a small form (no card data) to /v1/what, as post_start
 * says; out is cleared when it fails. */
static int
post_form(const struct proc_config *cfg, const char *what, const char *key,
          const char *suffix, void (*fill)(struct form *, const void *), const void *arg,
          struct proc_http *out)
{
	int r;

	if ((r = post_start(cfg, what, key, suffix, out)) == 0)
		r = plain_body(out, fill, arg);
	if (r != FGW_OK)
		proc_http_clear(out);
	return r;
}

struct intent_arg {
	const struct proc_request *req;
	int capture;
};

static void
intent_fill(struct form *f, const void *arg)
{
	const struct intent_arg *a = arg;

	intent_form(f, a->req, a->capture);
}

/* The PaymentIntent, created and confirmed in one call, for the
 * PaymentMethod req->payment_method (from build_card's answer, or from
 * Stripe.js in the customer's browser). */
static int
stripe_build(const struct proc_config *cfg, const struct proc_request *req,
             struct proc_http *out)
{
	struct intent_arg ia;
	int capture;

	if (cfg == NULL || req == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if ((capture = proc_captures(req->operation)) < 0)
		return FGW_ERR_INVALID;
	/* Confirmed here with the card Stripe holds, or left for Stripe.js
	 * to confirm with a card flairgw never sees: never both. */
	if (!request_ok(req) ||
	    (req->client_confirms ? req->payment_method != NULL || req->customer != NULL
	                          : !stripe_id_ok(req->payment_method, "pm_", 256)) ||
	    (req->customer != NULL && !stripe_id_ok(req->customer, "cus_", 256)))
		return FGW_ERR_INVALID;
	ia.req = req;
	ia.capture = capture;
	return post_form(cfg, "payment_intents", req->idempotency_key, "-pi", intent_fill,
	                 &ia, out);
}

/* ---- parse_reply ------------------------------------------------------------ */

static int
same(const char *want, const char *have)
{
	return want == NULL || (have != NULL && strcmp(want, have) == 0);
}

static void
map_error(const cJSON *err, struct proc_result *out)
{
	const char *type = proc_json_str(err, "type"), *code = proc_json_str(err, "code");
	const char *dc = proc_json_str(err, "decline_code");
	size_t i = 0;

	while (error_table[i].type != NULL &&
	       !(same(error_table[i].type, type) && same(error_table[i].code, code) &&
	         same(error_table[i].decline_code, dc)))
		i++;
	proc_set_result(out, error_table[i].outcome, error_table[i].our_code,
	                error_table[i].message);
}

/* "pi_" + [A-Za-z0-9_]: the only thing we keep of Stripe's text. */
static int
intent_id_ok(const char *s, size_t cap)
{
	return stripe_id_ok(s, "pi_", cap);
}

/* The intent's client_secret, "<id>_secret_<token>", into out; anything
 * else is not kept. */
static void
intent_secret(const cJSON *pi, const char *id, struct proc_result *out)
{
	const char *cs = proc_json_str(pi, "client_secret");
	size_t n = strlen(id);

	if (cs != NULL && strlen(cs) < sizeof(out->client_secret) &&
	    strncmp(cs, id, n) == 0 && strncmp(cs + n, "_secret_", 8) == 0 &&
	    cs[n + 8] != '\0' &&
	    strspn(cs, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") ==
	        strlen(cs))
		fgw_strlcpy(out->client_secret, cs, sizeof(out->client_secret));
}

/* The intent's amount and currency, to be compared with ours. */
static void
intent_amount(const cJSON *pi, struct proc_result *out)
{
	const char *cur = proc_json_str(pi, "currency");
	int64_t a = proc_json_amount(pi, "amount");

	out->amount = a > 0 ? a : 0;
	if (cur != NULL && strlen(cur) == 3 && strspn(cur, "abcdefghijklmnopqrstuvwxyz") == 3)
		for (int i = 0; i < 4; i++)
			out->currency[i] = (char)(cur[i] ? cur[i] - 'a' + 'A' : '\0');
}

/* 1 when flairgw made the intent for the customer's browser to confirm
 * (metadata[flair_confirm], set at create; the publishable key cannot
 * change metadata). */
static int
browser_confirms(const cJSON *pi)
{
	return same("stripe_js",
	            proc_json_str(cJSON_GetObjectItemCaseSensitive(pi, "metadata"),
	                          "flair_confirm"));
}

/* What the customer's browser does next with a payment it confirms
 * itself: Stripe.js, as Stripe names it. */
static int
stripe_js_action(struct proc_result *out)
{
	free(out->next_action_json);
	out->next_action_json = strdup("{\"type\":\"use_stripe_sdk\"}");
	return out->next_action_json != NULL ? FGW_OK : FGW_ERR_NOMEM;
}

static void
map_intent(const cJSON *pi, struct proc_result *out)
{
	const char *status = proc_json_str(pi, "status"), *obj = proc_json_str(pi, "object");
	const char *id = proc_json_str(pi, "id");
	const cJSON *lpe = cJSON_GetObjectItemCaseSensitive(pi, "last_payment_error");
	size_t i = 0;

	if (obj == NULL || strcmp(obj, "payment_intent") != 0 ||
	    !intent_id_ok(id, sizeof(out->reference)) || status == NULL) {
		proc_set_result(out, PROC_UNKNOWN, C_FAILED,
		                "The payment outcome is not known yet.");
		return;
	}
	fgw_strlcpy(out->reference, id, sizeof(out->reference));
	intent_amount(pi, out);
	/* Only an intent made for the browser has its secret kept at all
	 * (in memory, until the result is cleared). */
	if (browser_confirms(pi))
		intent_secret(pi, id, out);
	if (strcmp(status, "requires_payment_method") == 0 && browser_confirms(pi)) {
		/* Made unconfirmed for Stripe.js: not tried yet, or a failed
		 * attempt (last_payment_error) after which the customer may try
		 * another card with the same client secret. Waiting either way;
		 * it ends when paid, or cancelled once the wait expires. */
		if (stripe_js_action(out) == FGW_OK)
			proc_set_result(out, PROC_REQUIRES_ACTION, "",
			                "The payment waits for the customer to confirm it.");
		else
			proc_set_result(out, PROC_UNKNOWN, C_FAILED,
			                "The payment outcome is not known yet.");
		return;
	}
	while (status_table[i].status != NULL && strcmp(status_table[i].status, status) != 0)
		i++;
	proc_set_result(out, status_table[i].outcome, status_table[i].our_code,
	                status_table[i].message);
	if (status_table[i].outcome == PROC_DECLINED) {
		if (cJSON_IsObject(lpe))
			map_error(lpe, out);
		if (out->outcome != PROC_DECLINED)
			proc_set_result(out, PROC_DECLINED, C_DECLINED, "The card was declined.");
	} else if (status_table[i].outcome == PROC_REQUIRES_ACTION &&
	           proc_next_action(cJSON_GetObjectItemCaseSensitive(pi, "next_action"),
	                            &out->next_action_json) != FGW_OK) {
		/* We cannot send the customer anywhere: ask again later. */
		proc_set_result(out, PROC_UNKNOWN, C_FAILED,
		                "The payment outcome is not known yet.");
	}
}

static int
stripe_parse_reply(const struct proc_config *cfg, long http_status, const char *body,
                   size_t len, struct proc_result *out)
{
	cJSON *root;
	const cJSON *err;

	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	root = fgw_json_parse_strict(body, len);
	if (http_status >= 200 && http_status <= 299) {
		map_intent(root, out);
	} else if (http_status >= 500 || http_status == 409 || http_status < 200 ||
	           (http_status >= 300 && http_status <= 399)) {
		/* Stripe: a 5xx may have been processed; 409: the same key is
		 * still in flight. Either way, reconcile with the same key. */
		proc_set_result(out, PROC_UNKNOWN, C_FAILED,
		                "The payment outcome is not known yet.");
	} else if ((err = cJSON_GetObjectItemCaseSensitive(root, "error")) != NULL &&
	           cJSON_IsObject(err)) {
		const cJSON *pi = cJSON_GetObjectItemCaseSensitive(err, "payment_intent");
		map_error(err, out);
		if (intent_id_ok(proc_json_str(pi, "id"), sizeof(out->reference)))
			fgw_strlcpy(out->reference, proc_json_str(pi, "id"), sizeof(out->reference));
		/* A 4xx is never a charge: keep only outcomes that say so. */
		if (out->outcome == PROC_UNKNOWN && http_status != 400)
			proc_set_result(out, PROC_FAILED, C_FAILED,
			                "The payment processor rejected the request.");
	} else {
		/* A 4xx without Stripe's error object: refused, not charged. */
		proc_set_result(out, PROC_FAILED, C_FAILED,
		                "The payment processor rejected the request.");
	}
	cJSON_Delete(root);
	return FGW_OK;
}

/* A 2xx answer that is the Stripe object named object, with an id of
 * Stripe's form for prefix: that id into ref. */
static int
created(long http_status, const cJSON *root, const char *object, const char *prefix,
        char *ref, size_t refcap)
{
	if (http_status < 200 || http_status > 299 ||
	    !same(object, proc_json_str(root, "object")) ||
	    !stripe_id_ok(proc_json_str(root, "id"), prefix, refcap))
		return 0;
	fgw_strlcpy(ref, proc_json_str(root, "id"), refcap);
	return 1;
}

/* The PaymentMethod's answer. Only its id is kept. Nothing is charged
 * by this call, so every answer that is not a PaymentMethod is final
 * without a reconciler: declined when Stripe says the card is bad,
 * failed otherwise (a lost answer included). */
static int
stripe_parse_card(const struct proc_config *cfg, long http_status, const char *body,
                  size_t len, struct proc_result *out)
{
	cJSON *root;
	const cJSON *err;

	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	root = fgw_json_parse_strict(body, len);
	if (created(http_status, root, "payment_method", "pm_", out->reference,
	            sizeof(out->reference))) {
		proc_set_result(out, PROC_SUCCEEDED, "", "The card was registered.");
	} else if (http_status >= 400 && http_status <= 499 &&
	           (err = cJSON_GetObjectItemCaseSensitive(root, "error")) != NULL &&
	           cJSON_IsObject(err)) {
		map_error(err, out);
		if (out->outcome != PROC_DECLINED)
			proc_set_result(out, PROC_FAILED, C_FAILED,
			                "The payment processor did not take the card.");
	} else {
		proc_set_result(out, PROC_FAILED, C_FAILED,
		                "The payment processor did not take the card.");
	}
	cJSON_Delete(root);
	return FGW_OK;
}

/* ---- saving a Stripe.js PaymentMethod ------------------------------------- */

static void
customer_form(struct form *f, const void *ref)
{
	form_put(f, "metadata[flair_customer]", ref);
}

static void
attach_form(struct form *f, const void *customer)
{
	form_put(f, "customer", customer);
}

/* POST /v1/customers: the Customer that will own the saved cards of one
 * flairgw customer. customer_ref is what metadata[flair_customer] says
 * (the caller's keyed hash of its customer id, never the id itself). */
static int
stripe_build_customer(const struct proc_config *cfg, const char *idempotency_key,
                      const char *customer_ref, struct proc_http *out)
{
	if (cfg == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (!proc_token_ok(customer_ref, 64))
		return FGW_ERR_INVALID;
	return post_form(cfg, "customers", idempotency_key, "", customer_form, customer_ref,
	                 out);
}

/* POST /v1/payment_methods/{method}/attach with customer=... */
static int
stripe_build_attach(const struct proc_config *cfg, const char *idempotency_key,
                    const char *method, const char *customer, struct proc_http *out)
{
	char what[160];

	if (cfg == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (!stripe_id_ok(method, "pm_", 96) || !stripe_id_ok(customer, "cus_", 96))
		return FGW_ERR_INVALID;
	snprintf(what, sizeof(what), "payment_methods/%s/attach", method);
	return post_form(cfg, what, idempotency_key, "", attach_form, customer, out);
}

/* An answer that is not the object asked for: a 4xx with Stripe's error
 * object is a refusal (nothing was made); anything else may have been
 * done, and the same key replays it. */
static void
save_refusal(long http_status, const cJSON *root, struct proc_result *out)
{
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
	const char *code = proc_json_str(err, "code");

	if (http_status >= 400 && http_status <= 499 && http_status != 409 &&
	    cJSON_IsObject(err) && !same("idempotency_error", proc_json_str(err, "type")))
		proc_set_result(out, PROC_FAILED,
		                same("resource_missing", code) ? "PAYMENT_METHOD_NOT_FOUND"
		                                               : "PAYMENT_METHOD_REFUSED",
		                same("resource_missing", code)
		                    ? "The processor has no such payment method."
		                    : "The processor refused to save the payment method.");
	else
		proc_set_result(out, PROC_UNKNOWN, C_FAILED,
		                "The processor's answer was lost; try again.");
}

static int
stripe_parse_customer(const struct proc_config *cfg, long http_status, const char *body,
                      size_t len, struct proc_result *out)
{
	cJSON *root;

	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	root = fgw_json_parse_strict(body, len);
	if (created(http_status, root, "customer", "cus_", out->reference,
	            sizeof(out->reference))) {
		proc_set_result(out, PROC_SUCCEEDED, "", "The customer exists.");
	} else {
		save_refusal(http_status, root, out);
	}
	cJSON_Delete(root);
	return FGW_OK;
}

/* The attach answer is the PaymentMethod, now owned by customer: its id
 * (Stripe may answer another id than the one asked for, as its test
 * tokens do) and the card's display fields. An answer naming another
 * customer is not the attachment we asked for. */
static int
stripe_parse_attach(const struct proc_config *cfg, long http_status, const char *body,
                    size_t len, const char *customer, struct proc_saved_card *card,
                    struct proc_result *out)
{
	static const struct {
		const char *stripe, *ours;
	} brands[] = {
		{ "visa", "Visa" },         { "mastercard", "Mastercard" }, { "amex", "Amex" },
		{ "discover", "Discover" }, { "diners", "Diners" },         { "jcb", "JCB" },
		{ "unionpay", "UnionPay" },
	};
	const cJSON *c;
	const char *brand, *last4;
	cJSON *root;
	int64_t mo, yr;

	(void)cfg;
	if (out == NULL || card == NULL || customer == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	memset(card, 0, sizeof(*card));
	root = fgw_json_parse_strict(body, len);
	c = cJSON_GetObjectItemCaseSensitive(root, "card");
	last4 = proc_json_str(c, "last4");
	if (http_status >= 200 && http_status <= 299 &&
	    same("payment_method", proc_json_str(root, "object")) &&
	    stripe_id_ok(proc_json_str(root, "id"), "pm_", sizeof(card->id)) &&
	    same(customer, proc_json_str(root, "customer")) && cJSON_IsObject(c) &&
	    last4 != NULL && strlen(last4) == 4 && strspn(last4, "0123456789") == 4 &&
	    fgw_json_int(cJSON_GetObjectItemCaseSensitive(c, "exp_month"), 1, 12, &mo) == 0 &&
	    fgw_json_int(cJSON_GetObjectItemCaseSensitive(c, "exp_year"), 1000, 9999, &yr) ==
	        0) {
		fgw_strlcpy(card->id, proc_json_str(root, "id"), sizeof(card->id));
		memcpy(card->last4, last4, 5);
		card->exp_month = (int)mo;
		card->exp_year = (int)yr;
		brand = proc_json_str(c, "brand");
		for (size_t i = 0; brand != NULL && i < sizeof(brands) / sizeof(brands[0]); i++)
			if (strcmp(brand, brands[i].stripe) == 0)
				fgw_strlcpy(card->brand, brands[i].ours, sizeof(card->brand));
		if (card->brand[0] == '\0')
			fgw_strlcpy(card->brand, "Unknown", sizeof(card->brand));
		proc_set_result(out, PROC_SUCCEEDED, "", "The card was saved.");
	} else if (http_status >= 200 && http_status <= 299) {
		proc_set_result(out, PROC_FAILED, "PAYMENT_METHOD_REFUSED",
		                "The processor refused to save the payment method.");
	} else {
		save_refusal(http_status, root, out);
	}
	cJSON_Delete(root);
	return FGW_OK;
}

/* POST /v1/payment_methods/{method}/detach (an empty form): the card a
 * deleted saved method named is no longer the Customer's. */
static int
stripe_build_detach(const struct proc_config *cfg, const char *idempotency_key,
                    const char *method, struct proc_http *out)
{
	char what[160];

	if (cfg == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (!stripe_id_ok(method, "pm_", 96))
		return FGW_ERR_INVALID;
	snprintf(what, sizeof(what), "payment_methods/%s/detach", method);
	return post_form(cfg, what, idempotency_key, "", empty_form, NULL, out);
}

/* The detach answer: the PaymentMethod with no customer. Stripe refuses a
 * PaymentMethod it does not have (resource_missing) or one attached to no
 * Customer (an earlier detach whose key Stripe has forgotten): either way
 * nothing of it is left to charge. */
static int
stripe_parse_detach(const struct proc_config *cfg, long http_status, const char *body,
                    size_t len, struct proc_result *out)
{
	const cJSON *err, *cus;
	const char *code;
	cJSON *root;

	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	root = fgw_json_parse_strict(body, len);
	err = cJSON_GetObjectItemCaseSensitive(root, "error");
	code = proc_json_str(err, "code");
	cus = cJSON_GetObjectItemCaseSensitive(root, "customer");
	if ((cus == NULL || cJSON_IsNull(cus)) &&
	    created(http_status, root, "payment_method", "pm_", out->reference,
	            sizeof(out->reference))) {
		proc_set_result(out, PROC_SUCCEEDED, "", "The card was detached.");
	} else if ((http_status == 400 || http_status == 404) && cJSON_IsObject(err) &&
	           same("invalid_request_error", proc_json_str(err, "type")) &&
	           (same("resource_missing", code) ||
	            same("payment_method_unexpected_state", code))) {
		proc_set_result(out, PROC_FAILED, "PAYMENT_METHOD_NOT_FOUND",
		                "The processor holds no such card for a customer.");
	} else if (http_status >= 200 && http_status <= 299) {
		proc_set_result(out, PROC_FAILED, "PAYMENT_METHOD_REFUSED",
		                "The processor did not detach the card.");
	} else {
		save_refusal(http_status, root, out);
		if (out->outcome == PROC_FAILED)
			proc_set_result(out, PROC_FAILED, "PAYMENT_METHOD_REFUSED",
			                "The processor did not detach the card.");
	}
	cJSON_Delete(root);
	return FGW_OK;
}

/* ---- operations after the first charge ------------------------------------ */

/* A path segment we put in a URL: a Stripe id, nothing else. */
static int
path_id_ok(const char *s)
{
	return intent_id_ok(s, 96);
}

/* STATUS without a reference (the charge's answer was lost) searches by
 * the metadata every create carries: metadata['flair_txn_id']:'txn_...'. */
static int
status_url(const char *base, size_t blen, const struct proc_op_request *req, char **url)
{
	struct form q = { NULL, 0, 0 };
	char query[160];
	int n;

	if (req->reference != NULL && req->reference[0] != '\0') {
		if (!path_id_ok(req->reference))
			return FGW_ERR_INVALID;
		n = snprintf(NULL, 0, "%.*s/v1/payment_intents/%s", (int)blen, base,
		             req->reference);
		if (n < 0 || (*url = malloc((size_t)n + 1)) == NULL)
			return FGW_ERR_NOMEM;
		snprintf(*url, (size_t)n + 1, "%.*s/v1/payment_intents/%s", (int)blen, base,
		         req->reference);
		return FGW_OK;
	}
	if (!proc_token_ok(req->txn_id, 64) || strpbrk(req->txn_id, "'\\") != NULL)
		return FGW_ERR_INVALID;
	n = snprintf(query, sizeof(query), "metadata['flair_txn_id']:'%s'", req->txn_id);
	if (n < 0 || (size_t)n >= sizeof(query))
		return FGW_ERR_INVALID;
	form_put(&q, "query", query); /* count */
	n = (int)(blen + sizeof("/v1/payment_intents/search?") + q.len);
	if ((*url = malloc((size_t)n)) == NULL)
		return FGW_ERR_NOMEM;
	snprintf(*url, (size_t)n, "%.*s/v1/payment_intents/search?", (int)blen, base);
	q.buf = (unsigned char *)*url + strlen(*url);
	q.cap = q.len;
	q.len = 0;
	form_put(&q, "query", query);
	q.buf[q.len] = '\0';
	return FGW_OK;
}

static int
stripe_build_op(const struct proc_config *cfg, enum proc_op op,
                const struct proc_op_request *req, struct proc_http *out)
{
	static const char *const suffix[] = { "", "/capture", "/cancel", "" };
	const char *version;
	struct form f = { NULL, 0, 0 };
	size_t blen, h = 0;
	char bearer[300];
	int r = FGW_ERR_INVALID, n;

	if (cfg == NULL || req == NULL || out == NULL || (int)op < 0 || op > PROC_OP_REFUND)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	version = cfg->api_version[0] ? cfg->api_version : STRIPE_DEFAULT_VERSION;
	if (!proc_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !proc_token_ok(cfg->secret, 255) || !proc_token_ok(version, 39) ||
	    (op != PROC_OP_STATUS &&
	     (!proc_token_ok(req->idempotency_key, 255) || !path_id_ok(req->reference))) ||
	    (op == PROC_OP_REFUND && (req->amount <= 0 || req->amount > STRIPE_MAX_AMOUNT)))
		return FGW_ERR_INVALID;
	blen = proc_base_len(cfg->base_url);
	if (snprintf(bearer, sizeof(bearer), "Bearer %s", cfg->secret) >= (int)sizeof(bearer))
		goto out;
	if (op == PROC_OP_STATUS) {
		memcpy(out->method, "GET", 4);
		if ((r = status_url(cfg->base_url, blen, req, &out->url)) != 0)
			goto out;
	} else {
		memcpy(out->method, "POST", 5);
		n = snprintf(NULL, 0, "%.*s/v1/%s%s%s", (int)blen, cfg->base_url,
		             op == PROC_OP_REFUND ? "refunds" : "payment_intents/",
		             op == PROC_OP_REFUND ? "" : req->reference, suffix[op]);
		r = FGW_ERR_NOMEM;
		if (n < 0 || (out->url = malloc((size_t)n + 1)) == NULL)
			goto out;
		snprintf(out->url, (size_t)n + 1, "%.*s/v1/%s%s%s", (int)blen, cfg->base_url,
		         op == PROC_OP_REFUND ? "refunds" : "payment_intents/",
		         op == PROC_OP_REFUND ? "" : req->reference, suffix[op]);
	}
	if ((r = add_header(out, &h, "Accept", "application/json")) != 0 ||
	    (r = add_header(out, &h, "Authorization", bearer)) != 0 ||
	    (r = add_header(out, &h, "Stripe-Version", version)) != 0)
		goto out;
	if (op != PROC_OP_STATUS &&
	    ((r = add_header(out, &h, "Content-Type", "application/x-www-form-urlencoded")) !=
	         0 ||
	     (r = add_header(out, &h, "Idempotency-Key", req->idempotency_key)) != 0))
		goto out;
	if (op == PROC_OP_REFUND) {
		for (int pass = 0; pass < 2; pass++) {
			f.len = 0;
			form_put(&f, "payment_intent", req->reference);
			form_put_int(&f, "amount", (long long)req->amount);
			if (pass == 0) {
				r = FGW_ERR_NOMEM;
				if ((out->body = malloc(f.len + 1)) == NULL)
					goto out;
				f.buf = (unsigned char *)out->body;
				f.cap = f.len;
			}
		}
		out->body[f.len] = '\0';
		out->body_len = f.len;
	} else if (op != PROC_OP_STATUS) {
		/* An empty form: Stripe wants the POST, not parameters. */
		r = FGW_ERR_NOMEM;
		if ((out->body = strdup("")) == NULL)
			goto out;
	}
	r = FGW_OK;
out:
	explicit_bzero(bearer, sizeof(bearer));
	if (r != FGW_OK)
		proc_http_clear(out);
	return r;
}

/* Which transaction an intent says it belongs to: its
 * metadata['flair_txn_id'], which every create carries. A search hit
 * without it (or with one too long to be ours) is not ours: "?" matches
 * no transaction. An intent retrieved by the id Stripe gave us names
 * none when it has no such metadata. */
static void
intent_txn_ref(const cJSON *pi, int from_search, struct proc_result *out)
{
	const char *t = proc_json_str(cJSON_GetObjectItemCaseSensitive(pi, "metadata"),
	                              "flair_txn_id");

	if (t != NULL && fgw_strlcpy(out->txn_ref, t, sizeof(out->txn_ref)) == FGW_OK)
		return;
	fgw_strlcpy(out->txn_ref, t != NULL || from_search ? "?" : "", sizeof(out->txn_ref));
}

/* The state of a PaymentIntent as a STATUS answer. */
static void
map_intent_status(const cJSON *pi, int from_search, struct proc_result *out)
{
	const char *status = proc_json_str(pi, "status");

	map_intent(pi, out);
	intent_txn_ref(pi, from_search, out);
	if (status == NULL || out->reference[0] == '\0')
		return;
	if (strcmp(status, "canceled") == 0)
		proc_set_result(out, PROC_CANCELED, "", "The authorization was released.");
	else if (strcmp(status, "requires_action") == 0 && out->outcome == PROC_UNKNOWN &&
	         stripe_js_action(out) == FGW_OK)
		/* A challenge Stripe.js runs in the customer's browser (no URL
		 * for us): still waiting for the customer, and cancelled like
		 * any other once the wait has expired. */
		proc_set_result(out, PROC_REQUIRES_ACTION, "",
		                "The payment requires customer authentication.");
	else if (strcmp(status, "requires_confirmation") == 0)
		/* Created, never confirmed: no charge will come of it. */
		proc_set_result(out, PROC_FAILED, C_FAILED, "The payment was not confirmed.");
}

static int
stripe_parse_op(const struct proc_config *cfg, enum proc_op op, long http_status,
                const char *body, size_t len, struct proc_result *out)
{
	cJSON *root;
	const cJSON *err, *data;
	const char *obj, *st;

	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	root = fgw_json_parse_strict(body, len);
	obj = proc_json_str(root, "object");
	if (http_status >= 500 || http_status == 409 || http_status < 200 ||
	    (http_status >= 300 && http_status <= 399) ||
	    (http_status == 404 && op == PROC_OP_STATUS)) {
		/* A 404 for an id we were given is not "never charged": the
		 * reference came from Stripe. Ask again later. */
		proc_set_result(out, PROC_UNKNOWN, C_FAILED,
		                "The payment outcome is not known yet.");
	} else if (http_status >= 400) {
		if ((err = cJSON_GetObjectItemCaseSensitive(root, "error")) != NULL)
			map_error(err, out);
		if (out->outcome != PROC_DECLINED || op != PROC_OP_STATUS)
			proc_set_result(out, PROC_FAILED, out->code[0] ? out->code : C_FAILED,
			                out->message[0]
			                    ? out->message
			                    : "The payment processor refused the operation.");
	} else if (op == PROC_OP_STATUS && obj != NULL && strcmp(obj, "search_result") == 0) {
		data = cJSON_GetObjectItemCaseSensitive(root, "data");
		if (cJSON_IsArray(data) && cJSON_GetArraySize(data) == 0)
			proc_set_result(out, PROC_NOT_FOUND, C_FAILED,
			                "The processor has no such payment.");
		else if (cJSON_IsArray(data) && cJSON_GetArraySize(data) == 1)
			map_intent_status(cJSON_GetArrayItem(data, 0), 1, out);
		else
			proc_set_result(out, PROC_UNKNOWN, C_FAILED,
			                "The payment outcome is not known yet.");
	} else if (op == PROC_OP_REFUND) {
		const cJSON *amt = cJSON_GetObjectItemCaseSensitive(root, "amount");
		int64_t whole;
		st = proc_json_str(root, "status");
		if (obj == NULL || strcmp(obj, "refund") != 0 || st == NULL ||
		    fgw_json_int(amt, 1, STRIPE_MAX_AMOUNT, &whole) != 0)
			proc_set_result(out, PROC_UNKNOWN, C_FAILED,
			                "The refund outcome is not known yet.");
		else if (strcmp(st, "succeeded") == 0)
			proc_set_result(out, PROC_SUCCEEDED, "", "The refund succeeded.");
		else if (strcmp(st, "failed") == 0 || strcmp(st, "canceled") == 0)
			proc_set_result(out, PROC_FAILED, C_FAILED, "The refund failed.");
		else
			proc_set_result(out, PROC_UNKNOWN, C_FAILED,
			                "The refund outcome is not known yet.");
		if (intent_id_ok(proc_json_str(root, "payment_intent"), sizeof(out->reference)))
			fgw_strlcpy(out->reference, proc_json_str(root, "payment_intent"),
			            sizeof(out->reference));
		/* Its refund.updated events name it by this id. */
		if (proc_id_ok(proc_json_str(root, "id"), sizeof(out->op_ref)) &&
		    strncmp(proc_json_str(root, "id"), "re_", 3) == 0)
			fgw_strlcpy(out->op_ref, proc_json_str(root, "id"), sizeof(out->op_ref));
	} else {
		map_intent_status(root, 0, out);
	}
	cJSON_Delete(root);
	return FGW_OK;
}

/* ---- webhook events --------------------------------------------------- */

/* The decline an event's error object gives (a PaymentIntent's
 * last_payment_error, or a Charge's failure_code), through error_table. */
static void
event_decline(const char *type, const char *code, const char *decline_code,
              struct proc_event *out)
{
	size_t i = 0;

	while (error_table[i].type != NULL &&
	       !(same(error_table[i].type, type) && same(error_table[i].code, code) &&
	         same(error_table[i].decline_code, decline_code)))
		i++;
	/* A payment_failed event is a decline whatever the error says: a
	 * processing error on a PaymentIntent that Stripe gave up on did
	 * not charge either. */
	fgw_strlcpy(out->code,
	            error_table[i].type != NULL && error_table[i].outcome == PROC_DECLINED
	                ? error_table[i].our_code
	                : C_DECLINED,
	            sizeof(out->code));
	fgw_strlcpy(out->message,
	            error_table[i].type != NULL && error_table[i].outcome == PROC_DECLINED
	                ? error_table[i].message
	                : "The card was declined.",
	            sizeof(out->message));
}

/* 1 when the object has no status or the one the event type implies. */
static int
status_is(const cJSON *obj, const char *want)
{
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(obj, "status");
	return st == NULL || (cJSON_IsString(st) && strcmp(st->valuestring, want) == 0);
}

/* Stripe's events (API reference, "Types of events"), each mapped no
 * further than its object proves. The transaction is named by the
 * PaymentIntent's metadata[flair_txn_id] (set on every intent flairgw
 * creates) or found by the intent id (the object's id, or for a Charge,
 * Refund or Dispute its payment_intent). */
static int
stripe_map_event(const cJSON *event, struct proc_event *out)
{
	const char *type = proc_json_str(event, "type");
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(event, "data"), "object");
	const char *t;

	proc_event_init(out);
	if (type == NULL || !cJSON_IsObject(obj))
		return FGW_ERR_INVALID;
	proc_event_refs(obj, out, 0);
	out->amount = proc_json_amount(obj, "amount");
	t = proc_json_str(obj, "currency");
	if (t != NULL && strlen(t) == 3 && strspn(t, "abcdefghijklmnopqrstuvwxyz") == 3)
		for (int i = 0; i < 4; i++)
			out->currency[i] = (char)(t[i] ? t[i] - 'a' + 'A' : '\0');
	out->kind = PROC_EVENT_MOVE;
	if (strcmp(type, "payment_intent.succeeded") == 0 ||
	    strcmp(type, "charge.succeeded") == 0) {
		/* With capture_method=manual Stripe's charge.succeeded says
		 * captured: false: the money is held, not taken. */
		out->target = proc_capture_proven(obj) ? TXN_SUCCEEDED : TXN_AUTHORIZED;
	} else if (strcmp(type, "charge.captured") == 0) {
		if (proc_capture_proven(obj))
			out->target = TXN_SUCCEEDED;
	} else if (strcmp(type, "payment_intent.amount_capturable_updated") == 0) {
		if (proc_json_amount(obj, "amount_capturable") > 0 &&
		    status_is(obj, "requires_capture"))
			out->target = TXN_AUTHORIZED;
	} else if (strcmp(type, "payment_intent.payment_failed") == 0) {
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(obj, "last_payment_error");
		/* Stripe leaves a failed intent in requires_payment_method. One
		 * that Stripe.js confirms stays open for another card: one
		 * failed attempt is not the payment's end (map_intent). */
		if (status_is(obj, "requires_payment_method") && !browser_confirms(obj)) {
			out->target = TXN_DECLINED;
			event_decline(proc_json_str(e, "type"), proc_json_str(e, "code"),
			              proc_json_str(e, "decline_code"), out);
		}
	} else if (strcmp(type, "charge.failed") == 0) {
		if (status_is(obj, "failed")) {
			out->target = TXN_DECLINED;
			event_decline("card_error", proc_json_str(obj, "failure_code"),
			              proc_json_str(cJSON_GetObjectItemCaseSensitive(obj, "outcome"),
			                            "reason"),
			              out);
		}
	} else if (strcmp(type, "payment_intent.requires_action") == 0) {
		if (status_is(obj, "requires_action")) {
			out->target = TXN_REQUIRES_ACTION;
			out->next_action = cJSON_GetObjectItemCaseSensitive(obj, "next_action");
		}
	} else if (strcmp(type, "payment_intent.canceled") == 0) {
		/* An authorization released; an intent canceled before it was
		 * authorized charged nothing: failed. */
		if (status_is(obj, "canceled")) {
			out->target = TXN_CANCELED;
			out->fallback = TXN_FAILED;
			fgw_strlcpy(out->code, C_FAILED, sizeof(out->code));
			fgw_strlcpy(out->message, "The payment was canceled.", sizeof(out->message));
		}
	} else if (strcmp(type, "charge.refunded") == 0) {
		/* amount_refunded is the Charge's running total of refunds,
		 * made by flairgw or not (the Dashboard, the API). */
		out->kind = PROC_EVENT_REFUNDED;
		out->refunded_total = proc_json_amount(obj, "amount_refunded");
		if (out->refunded_total <= 0 ||
		    (out->amount >= 0 && out->refunded_total > out->amount))
			out->kind = PROC_EVENT_IGNORE;
	} else if (strcmp(type, "refund.updated") == 0 ||
	           strcmp(type, "refund.created") == 0 ||
	           strcmp(type, "charge.refund.updated") == 0) {
		out->kind = PROC_EVENT_REFUND;
		t = proc_json_str(obj, "status");
		out->object_amount = proc_json_amount(obj, "amount");
		if (!proc_id_ok(proc_json_str(obj, "id"), sizeof(out->object_ref)) || t == NULL ||
		    out->object_amount <= 0) {
			out->kind = PROC_EVENT_IGNORE;
		} else {
			fgw_strlcpy(out->object_ref, proc_json_str(obj, "id"),
			            sizeof(out->object_ref));
			/* requires_action and pending are not an outcome yet. */
			fgw_strlcpy(out->refund_status,
			            strcmp(t, "succeeded") == 0 ? "succeeded"
			            : strcmp(t, "failed") == 0 || strcmp(t, "canceled") == 0
			                ? "failed"
			                : "pending",
			            sizeof(out->refund_status));
		}
	} else if (strcmp(type, "charge.dispute.created") == 0) {
		out->kind = PROC_EVENT_DISPUTE;
		out->object_amount = proc_json_amount(obj, "amount");
		if (!proc_id_ok(proc_json_str(obj, "id"), sizeof(out->object_ref))) {
			out->kind = PROC_EVENT_IGNORE;
		} else {
			fgw_strlcpy(out->object_ref, proc_json_str(obj, "id"),
			            sizeof(out->object_ref));
			t = proc_json_str(obj, "reason");
			fgw_strlcpy(out->reason,
			            t != NULL && proc_id_ok(t, sizeof(out->reason)) ? t : "",
			            sizeof(out->reason));
		}
	} else {
		out->kind = PROC_EVENT_IGNORE;
	}
	if (out->kind == PROC_EVENT_MOVE && out->target == TXN_STATE_NONE)
		out->kind = PROC_EVENT_IGNORE;
	return FGW_OK;
}

const struct proc_type proc_type_stripe = {
	.name = "stripe",
	.seals_reply = 0,
	.build = stripe_build,
	.parse_reply = stripe_parse_reply,
	.build_card = stripe_build_card,
	.parse_card = stripe_parse_card,
	.build_op = stripe_build_op,
	.parse_op = stripe_parse_op,
	.needs_clear_card = 1,
	.takes_processor_method = 1,
	.client_confirms = 1,
	.build_customer = stripe_build_customer,
	.parse_customer = stripe_parse_customer,
	.build_attach = stripe_build_attach,
	.parse_attach = stripe_parse_attach,
	.build_detach = stripe_build_detach,
	.parse_detach = stripe_parse_detach,
	/* The metadata search can lag (Stripe documents it as not for
	 * read-after-write): an empty result is trusted after an hour. */
	.not_found_settle_ms = 3600000,
	.op_key_ttl_ms = 24LL * 3600000,
	.map_event = stripe_map_event,
	.webhook_header = MAC_HEADER_STRIPE,
};
