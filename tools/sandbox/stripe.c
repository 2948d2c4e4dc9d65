/*
 * tools/sandbox/stripe.c — the Stripe-compatible mode of flair-sandbox
 * (`flair-sandbox --stripe`, docs/sandbox.md): enough of Stripe's wire
 * format for flairgw's stripe adapter to be tested end to end with no
 * Stripe account.
 *
 * Routes: POST /v1/payment_intents, GET /v1/payment_intents/{id},
 * POST /v1/customers, POST /v1/payment_methods/{id}/attach,
 * POST /v1/payment_intents/{id}/capture and /cancel, POST /v1/refunds,
 * GET /v1/stripe/ledger (tests), POST /stripe/3ds/{id}/complete.
 *
 * Every POST is checked the way Stripe checks it before anything changes:
 * Bearer secret (401 authentication_error), a well-formed
 * application/x-www-form-urlencoded body (400), known parameters only
 * (400 parameter_unknown), then the Idempotency-Key: a repeated key with
 * the same parameters replays the first answer byte for byte; with other
 * parameters it is 400 idempotency_error. Answers are PaymentIntent,
 * Refund and error objects with Stripe's field names.
 *
 * The decoded form holds the card number: its values are wiped before
 * they are freed, and only the last four digits are kept.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#define LOG_MODULE "sandbox"
#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "tools/sandbox/sandbox.h"
#include "tools/sandbox/stripe_contract.h"

#define STR_MAX_FIELDS 64
#define STR_MAX_OBJECTS 200000L
#define STR_ID_LEN 32

struct spi {
	char id[STR_ID_LEN]; /* pi_... */
	char secret[64];     /* client_secret */
	char status[32];
	char capture_method[16];
	char currency[4];
	char pm[STR_ID_LEN];       /* pm_... */
	char customer[STR_ID_LEN]; /* cus_..., "" when none */
	char charge[STR_ID_LEN];   /* ch_... once confirmed */
	char last4[5];
	char txn_ref[80];    /* metadata[flair_txn_id] */
	char confirm_by[16]; /* metadata[flair_confirm] */
	char description[200];
	char err_code[32]; /* last_payment_error */
	char err_decline[32];
	char return_url[300];
	int64_t amount, received, refunded, created;
	struct spi *next;
};

struct sidem {
	char *key;
	unsigned char hash[32]; /* method, path and body */
	int code;
	char *body;
	long count;              /* requests seen with this key */
	char object[STR_ID_LEN]; /* the object it created, "" if none */
	struct sidem *next;
};

/* A PaymentMethod: what the card will do when a PaymentIntent confirms
 * it. Only the last four digits are kept. */
struct spm {
	char id[STR_ID_LEN]; /* pm_... */
	char last4[5];
	int card; /* index in cards[], -1: any other card */
	int exp_month, exp_year;
	char customer[STR_ID_LEN]; /* cus_... once attached, else "" */
	int detached;              /* detached from its Customer: unusable */
	const char *brand;         /* Stripe's card.brand */
	struct spm *next;
};

/* A Customer: only its id is kept. */
struct scus {
	char id[STR_ID_LEN];
	struct scus *next;
};

struct stripe {
	struct stripe_contract *contract; /* what Stripe's API description allows */
	struct spm *methods;
	struct scus *customers;
	long n_customers;
	struct spi *intents;
	struct sidem *keys;
	long n_objects;
	long accepted, rejected; /* POSTs answered 2xx/402 vs 400/401 */
};

struct form {
	size_t n;
	char *k[STR_MAX_FIELDS];
	char *v[STR_MAX_FIELDS];
};

/* The test cards (docs/sandbox.md) and the pm_card_* tokens for them. */
static const struct {
	const char *number;
	const char *token;
	const char *outcome; /* succeeded | decline | requires_action */
	const char *code, *decline_code;
} cards[] = {
	{ "4242424242424242", "pm_card_visa", "succeeded", "", "" },
	{ "4000000000000002", "pm_card_chargeDeclined", "decline", "card_declined",
	  "generic_decline" },
	{ "4000000000009995", "pm_card_chargeDeclinedInsufficientFunds", "decline",
	  "card_declined", "insufficient_funds" },
	{ "4000002500003155", "pm_card_authenticationRequired", "requires_action", "", "" },
};

/* ---- form decoding ------------------------------------------------------ */

static void
form_clear(struct form *f)
{
	for (size_t i = 0; i < f->n; i++) {
		fgw_freezero(f->k[i], strlen(f->k[i]));
		fgw_freezero(f->v[i], strlen(f->v[i]));
	}
	f->n = 0;
}

/* Decodes s[0..n) ('+' is a space, %XX a byte); NULL if malformed. Only
 * the characters a form encoder may leave unescaped are accepted raw. */
static char *
pct_decode(const char *s, size_t n)
{
	char *o = malloc(n + 1);
	size_t j = 0;

	if (o == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= n)
				goto bad;
			hi = fgw_hexval((unsigned char)s[i + 1]);
			lo = fgw_hexval((unsigned char)s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				goto bad;
			o[j++] = (char)(hi * 16 + lo);
			i += 2;
		} else if (c == '+') {
			o[j++] = ' ';
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
		           c == '~' || c == '*') {
			o[j++] = (char)c;
		} else {
			goto bad;
		}
	}
	o[j] = '\0';
	return o;
bad:
	fgw_freezero(o, n + 1);
	return NULL;
}

/* 0, or FGW_ERR_INVALID for a body that is not a well-formed form. */
static int
form_parse(const char *body, size_t len, struct form *f)
{
	size_t i = 0;

	f->n = 0;
	while (i < len) {
		size_t end = i, eq;
		while (end < len && body[end] != '&')
			end++;
		for (eq = i; eq < end && body[eq] != '='; eq++)
			;
		if (eq == end || eq == i || f->n >= STR_MAX_FIELDS)
			goto bad;
		if ((f->k[f->n] = pct_decode(body + i, eq - i)) == NULL)
			goto bad;
		if ((f->v[f->n] = pct_decode(body + eq + 1, end - eq - 1)) == NULL) {
			free(f->k[f->n]);
			goto bad;
		}
		for (size_t x = 0; x < f->n; x++)
			if (strcmp(f->k[x], f->k[f->n]) == 0) {
				f->n++;
				goto bad; /* a parameter given twice */
			}
		f->n++;
		i = end + 1;
		if (end + 1 == len)
			goto bad; /* trailing '&' */
	}
	return FGW_OK;
bad:
	form_clear(f);
	return FGW_ERR_INVALID;
}

static const char *
fget(const struct form *f, const char *k)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->k[i], k) == 0)
			return f->v[i];
	return NULL;
}

static int
int_param(const char *s, int64_t min, int64_t max, int64_t *out)
{
	return s != NULL && fgw_parse_i64(s, min, max, out) == FGW_OK;
}

/* ---- objects and answers ------------------------------------------------- */

static cJSON *
intent_json(const struct spi *p)
{
	cJSON *o = cJSON_CreateObject(), *md, *na, *rtu, *le;
	char cs[128];

	if (o == NULL)
		return NULL;
	snprintf(cs, sizeof(cs), "%s_secret_%s", p->id, p->secret);
	cJSON_AddStringToObject(o, "id", p->id);
	cJSON_AddStringToObject(o, "object", "payment_intent");
	cJSON_AddNumberToObject(o, "amount", (double)p->amount);
	cJSON_AddNumberToObject(o, "amount_capturable",
	                        strcmp(p->status, "requires_capture") == 0 ? (double)p->amount
	                                                                   : 0.0);
	cJSON_AddNumberToObject(o, "amount_received", (double)p->received);
	cJSON_AddStringToObject(o, "capture_method", p->capture_method);
	cJSON_AddStringToObject(o, "client_secret", cs);
	cJSON_AddStringToObject(o, "confirmation_method", "automatic");
	cJSON_AddNumberToObject(o, "created", (double)p->created);
	cJSON_AddStringToObject(o, "currency", p->currency);
	if (p->description[0])
		cJSON_AddStringToObject(o, "description", p->description);
	else
		cJSON_AddNullToObject(o, "description");
	if (p->charge[0])
		cJSON_AddStringToObject(o, "latest_charge", p->charge);
	else
		cJSON_AddNullToObject(o, "latest_charge");
	cJSON_AddBoolToObject(o, "livemode", 0);
	md = cJSON_AddObjectToObject(o, "metadata");
	if (md != NULL && p->txn_ref[0])
		cJSON_AddStringToObject(md, "flair_txn_id", p->txn_ref);
	if (md != NULL && p->confirm_by[0])
		cJSON_AddStringToObject(md, "flair_confirm", p->confirm_by);
	if (p->err_code[0] &&
	    (le = cJSON_AddObjectToObject(o, "last_payment_error")) != NULL) {
		cJSON_AddStringToObject(le, "type", "card_error");
		cJSON_AddStringToObject(le, "code", p->err_code);
		if (p->err_decline[0])
			cJSON_AddStringToObject(le, "decline_code", p->err_decline);
		cJSON_AddStringToObject(le, "message", "Your card was declined.");
	} else {
		cJSON_AddNullToObject(o, "last_payment_error");
	}
	if (strcmp(p->status, "requires_action") == 0 &&
	    (na = cJSON_AddObjectToObject(o, "next_action")) != NULL) {
		cJSON_AddStringToObject(na, "type", "redirect_to_url");
		if ((rtu = cJSON_AddObjectToObject(na, "redirect_to_url")) != NULL) {
			char url[400];
			snprintf(url, sizeof(url), "%s/stripe/3ds/%s", "", p->id);
			cJSON_AddStringToObject(rtu, "url", url);
			if (p->return_url[0])
				cJSON_AddStringToObject(rtu, "return_url", p->return_url);
			else
				cJSON_AddNullToObject(rtu, "return_url");
		}
	} else {
		cJSON_AddNullToObject(o, "next_action");
	}
	if (p->customer[0])
		cJSON_AddStringToObject(o, "customer", p->customer);
	else
		cJSON_AddNullToObject(o, "customer");
	if (p->pm[0])
		cJSON_AddStringToObject(o, "payment_method", p->pm);
	else
		cJSON_AddNullToObject(o, "payment_method");
	cJSON_AddStringToObject(o, "status", p->status);
	return o;
}

/* The 3-D Secure URL needs the public base, which intent_json does not
 * know: it is prefixed here. */
static char *
print_intent(const struct sbx *s, const struct spi *p)
{
	cJSON *o = intent_json(p), *na, *rtu, *url;
	char *text = NULL, full[512];

	if (o == NULL)
		return NULL;
	if ((na = cJSON_GetObjectItemCaseSensitive(o, "next_action")) != NULL &&
	    (rtu = cJSON_GetObjectItemCaseSensitive(na, "redirect_to_url")) != NULL &&
	    (url = cJSON_GetObjectItemCaseSensitive(rtu, "url")) != NULL &&
	    cJSON_IsString(url)) {
		int n = snprintf(full, sizeof(full), "%s%s", s->public_base, url->valuestring);
		if (n > 0 && (size_t)n < sizeof(full))
			cJSON_SetValuestring(url, full);
	}
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

static char *
error_json(const struct sbx *s, const char *type, const char *code, const char *decline,
           const char *param, const char *message, const struct spi *pi)
{
	cJSON *o = cJSON_CreateObject(), *e;
	char *text = NULL, *pit;

	if (o == NULL || (e = cJSON_AddObjectToObject(o, "error")) == NULL)
		goto out;
	cJSON_AddStringToObject(e, "type", type);
	if (code != NULL)
		cJSON_AddStringToObject(e, "code", code);
	if (decline != NULL && decline[0])
		cJSON_AddStringToObject(e, "decline_code", decline);
	if (param != NULL)
		cJSON_AddStringToObject(e, "param", param);
	cJSON_AddStringToObject(e, "message", message);
	if (pi != NULL && (pit = print_intent(s, pi)) != NULL) {
		cJSON_AddItemToObject(e, "payment_intent", cJSON_Parse(pit));
		free(pit);
	}
	text = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return text;
}

static void
reply(struct sbx *s, struct evhttp_request *req, int code, char *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Request-Id", "req_sandbox");
	evhttp_add_header(h, "Stripe-Version", "2024-06-20");
	if (code == 400 || code == 401 || code == 404)
		s->stripe->rejected++;
	else
		s->stripe->accepted++;
	/* After the configured latency, like /v1/charges. */
	sbx_finish(s, req, ACT_ANSWER, code, body);
}

/* Whether this create faults (/v1/admin/faults, docs/sandbox.md). */
static int
fault_roll(const struct sbx *s)
{
	if (s->faults.mode == FAIL_NONE || !(s->faults.fail_rate > 0.0))
		return 0;
	return s->faults.fail_rate >= 1.0 ||
	       randombytes_uniform(1000000) < (uint32_t)(s->faults.fail_rate * 1e6);
}

static void
reply_error(struct sbx *s, struct evhttp_request *req, int code, const char *type,
            const char *ecode, const char *param, const char *message)
{
	reply(s, req, code, error_json(s, type, ecode, NULL, param, message, NULL));
}

static struct spi *
intent_find(const struct stripe *st, const char *id)
{
	for (struct spi *p = st->intents; p != NULL; p = p->next)
		if (strcmp(p->id, id) == 0)
			return p;
	return NULL;
}

/* ---- idempotency -------------------------------------------------------- */

static struct sidem *
idem_find(struct stripe *st, const char *key)
{
	for (struct sidem *k = st->keys; k != NULL; k = k->next)
		if (strcmp(k->key, key) == 0)
			return k;
	return NULL;
}

/* Records the answer for key (best effort: without memory it is not
 * remembered, and a repeat is treated as new, as after Stripe's 24 h). */
static void
idem_store(struct stripe *st, const char *key, const unsigned char hash[32], int code,
           const char *body, const char *object)
{
	struct sidem *k = calloc(1, sizeof(*k));

	if (k == NULL || (k->key = strdup(key)) == NULL || (k->body = strdup(body)) == NULL) {
		if (k != NULL)
			free(k->key);
		free(k);
		return;
	}
	memcpy(k->hash, hash, 32);
	k->code = code;
	k->count = 1;
	fgw_strlcpy(k->object, object != NULL ? object : "", sizeof(k->object));
	k->next = st->keys;
	st->keys = k;
}

/* ---- operations ---------------------------------------------------------- */

/* Whether the ledger holds all the objects it may: then *body is
 * Stripe's api_error for a 503. */
static int
ledger_full(const struct sbx *s, char **body)
{
	if (s->stripe->n_objects < STR_MAX_OBJECTS)
		return 0;
	*body = error_json(s, "api_error", NULL, NULL, NULL, "The sandbox ledger is full.",
	                   NULL);
	return 1;
}

/* A zeroed PaymentMethod with a fresh pm_ id, not yet in the ledger. */
static struct spm *
method_new(void)
{
	struct spm *m;

	if ((m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	if (fgw_random_id("pm_", m->id, sizeof(m->id)) != FGW_OK) {
		free(m);
		return NULL;
	}
	return m;
}

static struct spm *
method_find(const struct stripe *st, const char *id)
{
	for (struct spm *m = st->methods; m != NULL; m = m->next)
		if (strcmp(m->id, id) == 0)
			return m;
	return NULL;
}

static void
card_apply(struct spi *p, int i, const char **outcome)
{
	*outcome = cards[i].outcome;
	fgw_strlcpy(p->err_code, cards[i].code, sizeof(p->err_code));
	fgw_strlcpy(p->err_decline, cards[i].decline_code, sizeof(p->err_decline));
}

static struct scus *
customer_find(const struct stripe *st, const char *id)
{
	for (struct scus *c = st->customers; c != NULL; c = c->next)
		if (strcmp(c->id, id) == 0)
			return c;
	return NULL;
}

/* Decides what the PaymentMethod does on confirmation; 0, or a 400
 * reason in *param and *why. */
static int
card_outcome(const struct stripe *st, const struct form *f, struct spi *p,
             const char **outcome, const char **param, const char **why)
{
	const char *pm = fget(f, "payment_method"), *cus = fget(f, "customer");
	const struct spm *m;

	*outcome = "succeeded";
	if (cus != NULL && customer_find(st, cus) == NULL) {
		*param = "customer";
		*why = "No such customer.";
		return FGW_ERR_INVALID;
	}
	if (cus != NULL)
		fgw_strlcpy(p->customer, cus, sizeof(p->customer));
	if (pm == NULL) {
		*param = "payment_method";
		*why = "You must provide a payment_method to confirm a PaymentIntent.";
		return FGW_ERR_INVALID;
	}
	for (size_t i = 0; i < sizeof(cards) / sizeof(cards[0]); i++)
		if (strcmp(cards[i].token, pm) == 0) {
			card_apply(p, (int)i, outcome);
			fgw_strlcpy(p->last4, cards[i].number + 12, sizeof(p->last4));
			fgw_strlcpy(p->pm, pm, sizeof(p->pm));
			return FGW_OK;
		}
	if ((m = method_find(st, pm)) == NULL) {
		*param = "payment_method";
		*why = "No such PaymentMethod.";
		return FGW_ERR_INVALID;
	}
	if (m->detached) {
		*param = "payment_method";
		*why =
		    "The PaymentMethod was detached from its Customer and cannot be used again.";
		return FGW_ERR_INVALID;
	}
	/* An attached PaymentMethod is charged only for its own Customer. */
	if (m->customer[0] != '\0' && (cus == NULL || strcmp(cus, m->customer) != 0)) {
		*param = "payment_method";
		*why = "The provided PaymentMethod belongs to a different Customer.";
		return FGW_ERR_INVALID;
	}
	if (m->card >= 0)
		card_apply(p, m->card, outcome);
	fgw_strlcpy(p->last4, m->last4, sizeof(p->last4));
	fgw_strlcpy(p->pm, m->id, sizeof(p->pm));
	return FGW_OK;
}

/* Stripe's card.brand by the first digit, enough for the test cards. */
static const char *
brand_of(const char *number)
{
	return number[0] == '4'   ? "visa"
	       : number[0] == '5' ? "mastercard"
	       : number[0] == '3' ? "amex"
	                          : "unknown";
}

static char *
method_json(const struct spm *m)
{
	cJSON *o, *card;
	char *text;

	if ((o = cJSON_CreateObject()) == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "id", m->id);
	cJSON_AddStringToObject(o, "object", "payment_method");
	cJSON_AddStringToObject(o, "type", "card");
	if ((card = cJSON_AddObjectToObject(o, "card")) != NULL) {
		cJSON_AddStringToObject(card, "brand", m->brand != NULL ? m->brand : "unknown");
		cJSON_AddStringToObject(card, "last4", m->last4);
		cJSON_AddNumberToObject(card, "exp_month", m->exp_month);
		cJSON_AddNumberToObject(card, "exp_year", m->exp_year);
	}
	if (m->customer[0])
		cJSON_AddStringToObject(o, "customer", m->customer);
	else
		cJSON_AddNullToObject(o, "customer");
	cJSON_AddNumberToObject(o, "created", (double)time(NULL));
	cJSON_AddBoolToObject(o, "livemode", 0);
	text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

/* POST /v1/payment_methods with type=card: the card is checked the way
 * Stripe checks it when the PaymentMethod is created (number, expiry);
 * what the issuer says comes on confirmation. */
static int
method_create(struct sbx *s, const struct form *f, char **body, char *object)
{
	struct stripe *st = s->stripe;
	const char *type = fget(f, "type"), *num = fget(f, "card[number]");
	struct spm *m;
	int64_t mo, yr;
	size_t n;

	if (type == NULL || strcmp(type, "card") != 0 || num == NULL) {
		*body = error_json(s, "invalid_request_error", "parameter_missing", NULL, "card",
		                   "Only card PaymentMethods with card details.", NULL);
		return 400;
	}
	n = strlen(num);
	if (n < 12 || n > 19 || strspn(num, "0123456789") != n || !card_luhn_ok(num, n)) {
		*body = error_json(s, "card_error", "incorrect_number", NULL, "number",
		                   "Your card number is incorrect.", NULL);
		return 402;
	}
	if (!int_param(fget(f, "card[exp_month]"), 1, 12, &mo) ||
	    !int_param(fget(f, "card[exp_year]"), 0, 9999, &yr) ||
	    !card_expiry_ok((int)mo, (int)yr, fgw_now_ms())) {
		*body = error_json(s, "card_error", "invalid_expiry_year", NULL, "exp_year",
		                   "Your card's expiration year is invalid.", NULL);
		return 402;
	}
	if (ledger_full(s, body))
		return 503;
	if ((m = method_new()) == NULL)
		return 500;
	fgw_strlcpy(m->last4, num + n - 4, sizeof(m->last4));
	m->brand = brand_of(num);
	m->card = -1;
	for (size_t i = 0; i < sizeof(cards) / sizeof(cards[0]); i++)
		if (strcmp(cards[i].number, num) == 0)
			m->card = (int)i;
	m->exp_month = (int)mo;
	m->exp_year = (int)yr;
	m->next = st->methods;
	st->methods = m;
	st->n_objects++;
	fgw_strlcpy(object, m->id, STR_ID_LEN);
	*body = method_json(m);
	return 200;
}

/* POST /v1/customers: a Customer with nothing but its id (the metadata
 * the contract allows is not kept). */
static int
customer_create(struct sbx *s, char **body, char *object)
{
	struct stripe *st = s->stripe;
	struct scus *c;
	char text[128];

	if (ledger_full(s, body))
		return 503;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return 500;
	if (fgw_random_id("cus_", c->id, sizeof(c->id)) != FGW_OK) {
		free(c);
		return 500;
	}
	c->next = st->customers;
	st->customers = c;
	st->n_objects++;
	st->n_customers++;
	fgw_strlcpy(object, c->id, STR_ID_LEN);
	snprintf(text, sizeof(text),
	         "{\"id\":\"%s\",\"object\":\"customer\",\"livemode\":false}", c->id);
	*body = strdup(text);
	return 200;
}

/* POST /v1/payment_methods/{id}/attach. As in Stripe's test mode, a
 * pm_card_* test token attaches a new PaymentMethod made from it; a
 * PaymentMethod already attached to another Customer is refused. */
static int
method_attach(struct sbx *s, const char *path, const struct form *f, char **body,
              char *object)
{
	struct stripe *st = s->stripe;
	const char *cus = fget(f, "customer");
	char id[STR_ID_LEN] = "";
	size_t n = strcspn(path + 20, "/");
	struct spm *m = NULL;
	int test = -1;

	if (n < sizeof(id)) {
		memcpy(id, path + 20, n);
		id[n] = '\0';
		m = method_find(st, id);
	}

	for (size_t i = 0; m == NULL && i < sizeof(cards) / sizeof(cards[0]); i++)
		if (strcmp(cards[i].token, id) == 0)
			test = (int)i;
	if (m == NULL && test < 0) {
		*body = error_json(s, "invalid_request_error", "resource_missing", NULL,
		                   "payment_method", "No such PaymentMethod.", NULL);
		return 404;
	}
	if (cus == NULL || customer_find(st, cus) == NULL) {
		*body = error_json(s, "invalid_request_error", "resource_missing", NULL,
		                   "customer", "No such customer.", NULL);
		return 400;
	}
	if (m != NULL && m->detached) {
		*body = error_json(s, "invalid_request_error", NULL, NULL, "payment_method",
		                   "The PaymentMethod was detached and cannot be used again.",
		                   NULL);
		return 400;
	}
	if (m != NULL && m->customer[0] != '\0' && strcmp(m->customer, cus) != 0) {
		*body = error_json(s, "invalid_request_error", NULL, NULL, NULL,
		                   "The payment method you provided has already been attached "
		                   "to a customer.",
		                   NULL);
		return 400;
	}
	if (m == NULL) {
		if (ledger_full(s, body))
			return 503;
		if ((m = method_new()) == NULL)
			return 500;
		m->card = test;
		m->brand = brand_of(cards[test].number);
		fgw_strlcpy(m->last4, cards[test].number + 12, sizeof(m->last4));
		m->exp_month = 12;
		m->exp_year = 2034;
		m->next = st->methods;
		st->methods = m;
		st->n_objects++;
	}
	fgw_strlcpy(m->customer, cus, sizeof(m->customer));
	fgw_strlcpy(object, m->id, STR_ID_LEN);
	*body = method_json(m);
	return 200;
}

/* POST /v1/payment_methods/{id}/detach: the PaymentMethod is no longer
 * its Customer's (and, as at Stripe, cannot be used again). Unknown: 404
 * resource_missing; attached to no Customer: 400
 * payment_method_unexpected_state. */
static int
method_detach(struct sbx *s, const char *path, char **body, char *object)
{
	char id[STR_ID_LEN] = "";
	size_t n = strcspn(path + 20, "/");
	struct spm *m = NULL;

	if (n < sizeof(id)) {
		memcpy(id, path + 20, n);
		id[n] = '\0';
		m = method_find(s->stripe, id);
	}
	if (m == NULL) {
		*body = error_json(s, "invalid_request_error", "resource_missing", NULL,
		                   "payment_method", "No such PaymentMethod.", NULL);
		return 404;
	}
	if (m->customer[0] == '\0') {
		*body = error_json(s, "invalid_request_error", "payment_method_unexpected_state",
		                   NULL, NULL,
		                   "The payment method you provided is not attached to a "
		                   "customer so detachment is impossible.",
		                   NULL);
		return 400;
	}
	m->customer[0] = '\0';
	m->detached = 1;
	fgw_strlcpy(object, m->id, STR_ID_LEN);
	*body = method_json(m);
	return 200;
}

/* POST /v1/payment_intents. Returns the HTTP code and body in *body. */
static int
intent_create(struct sbx *s, const struct form *f, char **body, char *object)
{
	struct stripe *st = s->stripe;
	struct spi *p = NULL;
	const char *cur = fget(f, "currency"), *cm = fget(f, "capture_method");
	const char *confirm = fget(f, "confirm"), *outcome = NULL;
	const char *param = NULL, *why = NULL, *v;
	int64_t amount;
	int code;

	if (!int_param(fget(f, "amount"), 1, 99999999, &amount)) {
		*body = error_json(s, "invalid_request_error",
		                   fget(f, "amount") ? "parameter_invalid_integer"
		                                     : "parameter_missing",
		                   NULL, "amount", "Invalid or missing amount.", NULL);
		return 400;
	}
	if (cur == NULL || strlen(cur) != 3 ||
	    strspn(cur, "abcdefghijklmnopqrstuvwxyz") != 3) {
		*body = error_json(s, "invalid_request_error", "parameter_invalid_string", NULL,
		                   "currency",
		                   "Currency must be a three-letter ISO code in lowercase.",
		                   NULL);
		return 400;
	}
	if ((cm != NULL && strcmp(cm, "automatic") != 0 && strcmp(cm, "manual") != 0 &&
	     strcmp(cm, "automatic_async") != 0) ||
	    (confirm != NULL && strcmp(confirm, "true") != 0 &&
	     strcmp(confirm, "false") != 0)) {
		*body = error_json(s, "invalid_request_error", "parameter_invalid_string", NULL,
		                   cm != NULL ? "capture_method" : "confirm", "Invalid value.",
		                   NULL);
		return 400;
	}
	if (ledger_full(s, body))
		return 503;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return 500;
	/* Unconfirmed and without a payment method: the customer's browser
	 * gives one when it confirms (Stripe.js). */
	if (!(confirm == NULL || strcmp(confirm, "false") == 0) ||
	    fget(f, "payment_method") != NULL)
		code = card_outcome(st, f, p, &outcome, &param, &why);
	else
		code = FGW_OK;
	if (code != FGW_OK) {
		free(p);
		if (code != FGW_ERR_INVALID)
			return 500;
		*body = error_json(s, "invalid_request_error", "parameter_invalid", NULL, param,
		                   why, NULL);
		return 400;
	}
	if (fgw_random_id("pi_", p->id, sizeof(p->id)) != FGW_OK ||
	    fgw_random_id("", p->secret, sizeof(p->secret)) != FGW_OK) {
		free(p);
		return 500;
	}
	p->amount = amount;
	p->created = (int64_t)time(NULL);
	memcpy(p->currency, cur, 4);
	fgw_strlcpy(p->capture_method, cm != NULL ? cm : "automatic",
	            sizeof(p->capture_method));
	if ((v = fget(f, "metadata[flair_txn_id]")) != NULL)
		fgw_strlcpy(p->txn_ref, v, sizeof(p->txn_ref));
	if ((v = fget(f, "metadata[flair_confirm]")) != NULL)
		fgw_strlcpy(p->confirm_by, v, sizeof(p->confirm_by));
	if ((v = fget(f, "description")) != NULL)
		fgw_strlcpy(p->description, v, sizeof(p->description));
	if ((v = fget(f, "return_url")) != NULL)
		fgw_strlcpy(p->return_url, v, sizeof(p->return_url));
	p->next = st->intents;
	st->intents = p;
	st->n_objects++;
	fgw_strlcpy(object, p->id, STR_ID_LEN);

	code = 200;
	if ((confirm == NULL || strcmp(confirm, "false") == 0) && p->pm[0] == '\0') {
		fgw_strlcpy(p->status, "requires_payment_method", sizeof(p->status));
		p->err_code[0] = p->err_decline[0] = '\0';
	} else if (confirm == NULL || strcmp(confirm, "false") == 0) {
		fgw_strlcpy(p->status, "requires_confirmation", sizeof(p->status));
		p->err_code[0] = p->err_decline[0] = '\0';
	} else if (strcmp(outcome, "decline") == 0) {
		/* Stripe answers a declined confirmation with 402 and the
		 * intent back in requires_payment_method. */
		fgw_strlcpy(p->status, "requires_payment_method", sizeof(p->status));
		if (fgw_random_id("ch_", p->charge, sizeof(p->charge)) != FGW_OK)
			return 500;
		*body = error_json(s, "card_error", p->err_code, p->err_decline, NULL,
		                   strcmp(p->err_decline, "insufficient_funds") == 0
		                       ? "Your card has insufficient funds."
		                       : "Your card was declined.",
		                   p);
		return 402;
	} else {
		int force_3ds =
		    (v = fget(f, "payment_method_options[card][request_three_d_secure]")) !=
		        NULL &&
		    strcmp(v, "any") == 0;
		p->err_code[0] = p->err_decline[0] = '\0';
		if (strcmp(outcome, "requires_action") == 0 || force_3ds)
			fgw_strlcpy(p->status, "requires_action", sizeof(p->status));
		else if (strcmp(p->capture_method, "manual") == 0)
			fgw_strlcpy(p->status, "requires_capture", sizeof(p->status));
		else {
			fgw_strlcpy(p->status, "succeeded", sizeof(p->status));
			p->received = amount;
		}
		if (strcmp(p->status, "requires_action") != 0 &&
		    fgw_random_id("ch_", p->charge, sizeof(p->charge)) != FGW_OK)
			return 500;
	}
	*body = print_intent(s, p);
	return code;
}

static void intent_event(struct sbx *s, const struct spi *p, const char *type);

/* POST /v1/payment_intents/{id}/confirm, as Stripe.js sends it for an
 * intent made unconfirmed (or the server with its secret key): the card
 * is charged as on a confirming create, and Stripe's event for the
 * outcome goes to --webhook-url. A failed attempt leaves the intent in
 * requires_payment_method, open for another card. */
static int
intent_confirm(struct sbx *s, struct spi *p, const struct form *f, char **body)
{
	const char *outcome = NULL, *param = NULL, *why = NULL, *v;

	if (strcmp(p->status, "requires_payment_method") != 0 &&
	    strcmp(p->status, "requires_confirmation") != 0) {
		*body = error_json(
		    s, "invalid_request_error", "payment_intent_unexpected_state", NULL, NULL,
		    "This PaymentIntent's status does not allow it to be confirmed.", p);
		return 400;
	}
	if (fget(f, "payment_method") == NULL) {
		*body = error_json(
		    s, "invalid_request_error", "parameter_missing", NULL, "payment_method",
		    "You must provide a payment_method to confirm a PaymentIntent.", NULL);
		return 400;
	}
	if (card_outcome(s->stripe, f, p, &outcome, &param, &why) != FGW_OK) {
		*body = error_json(s, "invalid_request_error", "parameter_invalid", NULL, param,
		                   why, NULL);
		return 400;
	}
	if ((v = fget(f, "return_url")) != NULL)
		fgw_strlcpy(p->return_url, v, sizeof(p->return_url));
	if (strcmp(outcome, "decline") == 0) {
		fgw_strlcpy(p->status, "requires_payment_method", sizeof(p->status));
		if (fgw_random_id("ch_", p->charge, sizeof(p->charge)) != FGW_OK)
			return 500;
		intent_event(s, p, "payment_intent.payment_failed");
		*body = error_json(s, "card_error", p->err_code, p->err_decline, NULL,
		                   strcmp(p->err_decline, "insufficient_funds") == 0
		                       ? "Your card has insufficient funds."
		                       : "Your card was declined.",
		                   p);
		return 402;
	}
	p->err_code[0] = p->err_decline[0] = '\0';
	if (strcmp(outcome, "requires_action") == 0) {
		fgw_strlcpy(p->status, "requires_action", sizeof(p->status));
		intent_event(s, p, "payment_intent.requires_action");
	} else {
		if (fgw_random_id("ch_", p->charge, sizeof(p->charge)) != FGW_OK)
			return 500;
		if (strcmp(p->capture_method, "manual") == 0) {
			fgw_strlcpy(p->status, "requires_capture", sizeof(p->status));
			intent_event(s, p, "payment_intent.amount_capturable_updated");
		} else {
			fgw_strlcpy(p->status, "succeeded", sizeof(p->status));
			p->received = p->amount;
			intent_event(s, p, "payment_intent.succeeded");
		}
	}
	*body = print_intent(s, p);
	return 200;
}

/* POST /v1/payment_intents/{id} (secret key only): amount and currency
 * change while the intent is not paid yet, as at Stripe. */
static int
intent_update(struct sbx *s, struct spi *p, const struct form *f, char **body)
{
	const char *cur = fget(f, "currency");
	int64_t amount = p->amount;

	if (strcmp(p->status, "requires_payment_method") != 0 &&
	    strcmp(p->status, "requires_confirmation") != 0 &&
	    strcmp(p->status, "requires_action") != 0) {
		*body = error_json(s, "invalid_request_error", "payment_intent_unexpected_state",
		                   NULL, NULL,
		                   "This PaymentIntent's amount cannot be changed now.", p);
		return 400;
	}
	if ((fget(f, "amount") != NULL &&
	     !int_param(fget(f, "amount"), 1, 99999999, &amount)) ||
	    (cur != NULL &&
	     (strlen(cur) != 3 || strspn(cur, "abcdefghijklmnopqrstuvwxyz") != 3))) {
		*body = error_json(s, "invalid_request_error", "parameter_invalid", NULL,
		                   cur != NULL ? "currency" : "amount", "Invalid value.", NULL);
		return 400;
	}
	p->amount = amount;
	if (cur != NULL)
		memcpy(p->currency, cur, 4);
	*body = print_intent(s, p);
	return 200;
}

static int
intent_capture(struct sbx *s, struct spi *p, const struct form *f, char **body)
{
	int64_t amt = p->amount;

	if (fget(f, "amount_to_capture") != NULL &&
	    !int_param(fget(f, "amount_to_capture"), 1, p->amount, &amt)) {
		*body = error_json(s, "invalid_request_error", "parameter_invalid_integer", NULL,
		                   "amount_to_capture", "Invalid amount_to_capture.", NULL);
		return 400;
	}
	if (strcmp(p->status, "requires_capture") != 0) {
		*body = error_json(s, "invalid_request_error", "payment_intent_unexpected_state",
		                   NULL, NULL,
		                   "This PaymentIntent could not be captured because it "
		                   "does not have a status of requires_capture.",
		                   p);
		return 400;
	}
	fgw_strlcpy(p->status, "succeeded", sizeof(p->status));
	p->received = amt;
	*body = print_intent(s, p);
	return 200;
}

static int
intent_cancel(struct sbx *s, struct spi *p, const struct form *f, char **body)
{
	(void)f;
	if (strcmp(p->status, "succeeded") == 0 || strcmp(p->status, "canceled") == 0 ||
	    strcmp(p->status, "processing") == 0) {
		*body = error_json(s, "invalid_request_error", "payment_intent_unexpected_state",
		                   NULL, NULL,
		                   "You cannot cancel this PaymentIntent because it has "
		                   "a status of succeeded or canceled.",
		                   p);
		return 400;
	}
	fgw_strlcpy(p->status, "canceled", sizeof(p->status));
	*body = print_intent(s, p);
	return 200;
}

static int
refund_create(struct sbx *s, const struct form *f, char **body, char *object)
{
	const char *pid = fget(f, "payment_intent");
	struct spi *p;
	int64_t amt;
	cJSON *o;
	char id[STR_ID_LEN];

	if (pid == NULL || (p = intent_find(s->stripe, pid)) == NULL) {
		*body = error_json(s, "invalid_request_error", "resource_missing", NULL,
		                   "payment_intent", "No such payment_intent.", NULL);
		return pid == NULL ? 400 : 404;
	}
	amt = p->received - p->refunded;
	if (strcmp(p->status, "succeeded") != 0 || amt <= 0) {
		*body = error_json(s, "invalid_request_error",
		                   amt <= 0 && p->received > 0
		                       ? "charge_already_refunded"
		                       : "payment_intent_unexpected_state",
		                   NULL, NULL, "This PaymentIntent has nothing to refund.", NULL);
		return 400;
	}
	if (fget(f, "amount") != NULL && !int_param(fget(f, "amount"), 1, amt, &amt)) {
		*body = error_json(s, "invalid_request_error", "amount_too_large", NULL, "amount",
		                   "Refund amount is greater than unrefunded amount.", NULL);
		return 400;
	}
	if (fgw_random_id("re_", id, sizeof(id)) != FGW_OK)
		return 500;
	p->refunded += amt;
	fgw_strlcpy(object, id, STR_ID_LEN);
	if ((o = cJSON_CreateObject()) == NULL)
		return 500;
	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "object", "refund");
	cJSON_AddNumberToObject(o, "amount", (double)amt);
	cJSON_AddStringToObject(o, "charge", p->charge);
	cJSON_AddNumberToObject(o, "created", (double)time(NULL));
	cJSON_AddStringToObject(o, "currency", p->currency);
	cJSON_AddStringToObject(o, "payment_intent", p->id);
	cJSON_AddStringToObject(o, "status", "succeeded");
	*body = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return 200;
}

/* ---- the POST front: auth, form, idempotency ----------------------------- */

/* Stripe's API description (the fixture) refuses the request: answered
 * 400 as Stripe does, before idempotency (Stripe keeps no answer for a
 * request that failed validation). */
static int
contract_refuses(struct sbx *s, struct evhttp_request *req, const char *method,
                 const char *path, const struct form *f)
{
	const char *code = NULL, *param = NULL;
	char msg[300];
	int r;

	r = stripe_contract_check(s->stripe->contract, method, path, f->n, f->k, f->v, &code,
	                          &param);
	if (r == FGW_OK)
		return 0;
	if (r == FGW_ERR_NOT_FOUND) {
		reply_error(s, req, 404, "invalid_request_error", NULL, NULL,
		            "Unrecognized request URL.");
		return 1;
	}
	snprintf(msg, sizeof(msg), "Refused by Stripe's API description (%s): %s %s.",
	         stripe_contract_version(s->stripe->contract), code, param);
	reply_error(s, req, 400, "invalid_request_error", code, param, msg);
	return 1;
}

static int
version_ok(const char *v)
{
	/* "2024-06-20" or "2024-09-30.acacia" */
	size_t n = v != NULL ? strlen(v) : 0;
	if (n < 10 || n > 40)
		return 0;
	for (size_t i = 0; i < 10; i++)
		if (i == 4 || i == 7 ? v[i] != '-' : (v[i] < '0' || v[i] > '9'))
			return 0;
	return n == 10 || v[10] == '.';
}

/* Takes the form's "key" out (Stripe.js sends its publishable key as a
 * form field; it is a credential, not a parameter of the operation) and
 * answers whether the caller may confirm p: the secret key, or the
 * publishable key (form or Bearer) with p's client secret. 0 when it may,
 * else the HTTP code already answered. */
static int
confirm_auth(struct sbx *s, struct evhttp_request *req, struct spi *p, struct form *f)
{
	const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                      "Authorization");
	const char *cs = fget(f, "client_secret"), *key = NULL;
	char want[128];
	size_t i;
	int pk, had_key;

	for (i = 0; i < f->n; i++)
		if (strcmp(f->k[i], "key") == 0)
			break;
	if (i < f->n) {
		key = f->v[i];
		free(f->k[i]);
		f->k[i] = f->k[f->n - 1];
		f->v[i] = f->v[f->n - 1];
		f->n--;
	}
	pk = (key != NULL && strcmp(key, s->publishable_key) == 0) ||
	     (auth != NULL && strncmp(auth, "Bearer ", 7) == 0 &&
	      strcmp(auth + 7, s->publishable_key) == 0);
	had_key = key != NULL;
	free((char *)key);
	if (!pk) {
		/* The server's own confirm needs no client secret. */
		if (!had_key && sbx_auth_ok(s, req))
			return 0;
		reply_error(s, req, 401, "authentication_error", NULL, NULL,
		            "Invalid API Key provided.");
		return 401;
	}
	snprintf(want, sizeof(want), "%s_secret_%s", p->id, p->secret);
	if (cs == NULL || strlen(cs) != strlen(want) ||
	    sodium_memcmp(cs, want, strlen(want)) != 0) {
		sodium_memzero(want, sizeof(want));
		reply_error(
		    s, req, 400, "invalid_request_error", "payment_intent_invalid_parameter",
		    "client_secret",
		    "The client_secret provided does not match the client_secret associated "
		    "with the PaymentIntent.");
		return 400;
	}
	sodium_memzero(want, sizeof(want));
	return 0;
}

static void
post(struct sbx *s, struct evhttp_request *req, const char *path, struct spi *p,
     const char *op)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *ct = evhttp_find_header(in, "Content-Type");
	const char *key = evhttp_find_header(in, "Idempotency-Key");
	const char *ver = evhttp_find_header(in, "Stripe-Version");
	struct form f = { 0 };
	struct sidem *k;
	crypto_hash_sha256_state hs;
	unsigned char hash[32];
	char *raw = NULL, *body = NULL, object[STR_ID_LEN] = "";
	size_t len = 0;
	int code, fault;

	/* Stripe.js confirms with the publishable key (checked below). */
	if (strcmp(op, "confirm") != 0 && !sbx_auth_ok(s, req)) {
		reply_error(s, req, 401, "authentication_error", NULL, NULL,
		            "Invalid API Key provided.");
		return;
	}
	if (ver != NULL && !version_ok(ver)) {
		reply_error(s, req, 400, "invalid_request_error", "invalid_stripe_version", NULL,
		            "Invalid Stripe API version.");
		return;
	}
	raw = sbx_body(req, &len);
	if (len > 0 &&
	    (ct == NULL || strncmp(ct, "application/x-www-form-urlencoded", 33) != 0)) {
		reply_error(s, req, 400, "invalid_request_error", NULL, NULL,
		            "Request bodies must be application/x-www-form-urlencoded.");
		goto out;
	}
	if (form_parse(raw != NULL ? raw : "", len, &f) != FGW_OK) {
		reply_error(s, req, 400, "invalid_request_error", NULL, NULL,
		            "The request body is not valid form encoding.");
		goto out;
	}
	if (strcmp(op, "confirm") == 0 && confirm_auth(s, req, p, &f) != 0)
		goto out;
	if (contract_refuses(s, req, "POST", path, &f))
		goto out;
	if (key != NULL && (strlen(key) == 0 || strlen(key) > 255)) {
		reply_error(s, req, 400, "invalid_request_error", NULL, NULL,
		            "Idempotency-Key must be 1..255 characters.");
		goto out;
	}
	crypto_hash_sha256_init(&hs);
	crypto_hash_sha256_update(&hs, (const unsigned char *)path, strlen(path) + 1);
	crypto_hash_sha256_update(&hs, (const unsigned char *)(raw ? raw : ""), len);
	crypto_hash_sha256_final(&hs, hash);
	if (key != NULL && (k = idem_find(s->stripe, key)) != NULL) {
		k->count++;
		if (sodium_memcmp(k->hash, hash, 32) != 0) {
			reply_error(s, req, 400, "idempotency_error", NULL, NULL,
			            "Keys for idempotent requests can only be used with "
			            "the same parameters they were first used with.");
			goto out;
		}
		evhttp_add_header(evhttp_request_get_output_headers(req), "Idempotent-Replayed",
		                  "true");
		reply(s, req, k->code, strdup(k->body));
		goto out;
	}
	fault = (strcmp(op, "create") == 0 || strcmp(op, "customer") == 0 ||
	         strcmp(op, "attach") == 0 || strcmp(op, "detach") == 0) &&
	        fault_roll(s);
	if (fault && s->faults.mode == FAIL_500) {
		/* Not processed, not remembered: a retry runs. */
		reply_error(s, req, 500, "api_error", NULL, NULL,
		            "An error occurred with our connection to Stripe.");
		goto out;
	}
	if (fault && s->faults.mode != FAIL_AFTER) {
		sbx_finish(s, req, s->faults.mode == FAIL_DROP ? ACT_DROP : ACT_HANG, 0, NULL);
		goto out;
	}
	if (strcmp(op, "create") == 0)
		code = intent_create(s, &f, &body, object);
	else if (strcmp(op, "payment_method") == 0)
		code = method_create(s, &f, &body, object);
	else if (strcmp(op, "customer") == 0)
		code = customer_create(s, &body, object);
	else if (strcmp(op, "attach") == 0)
		code = method_attach(s, path, &f, &body, object);
	else if (strcmp(op, "detach") == 0)
		code = method_detach(s, path, &body, object);
	else if (strcmp(op, "capture") == 0)
		code = intent_capture(s, p, &f, &body);
	else if (strcmp(op, "cancel") == 0)
		code = intent_cancel(s, p, &f, &body);
	else if (strcmp(op, "confirm") == 0)
		code = intent_confirm(s, p, &f, &body);
	else if (strcmp(op, "update") == 0)
		code = intent_update(s, p, &f, &body);
	else
		code = refund_create(s, &f, &body, object);
	if (body == NULL) {
		reply_error(s, req, 500, "api_error", NULL, NULL, "Out of memory.");
		goto out;
	}
	/* Stripe keeps the answer of a key once the request got past
	 * validation, 4xx included; a 500 is not kept so a retry runs. */
	if (key != NULL && code < 500)
		idem_store(s->stripe, key, hash, code, body,
		           object[0] ? object : (p ? p->id : ""));
	if (!s->quiet)
		log_info("stripe %s %s -> %d%s", op,
		         object[0] ? object : (p != NULL ? p->id : "-"), code,
		         fault ? " (answer dropped)" : "");
	if (fault) {
		/* FAIL_AFTER: created and remembered, then the answer is lost.
		 * It never comes (the client times out): a connection closed at
		 * once would let the client resend on a fresh one and get the
		 * replay, and the lost answer would go unseen. */
		free(body);
		sbx_finish(s, req, ACT_HANG, 0, NULL);
		goto out;
	}
	reply(s, req, code, body);
out:
	form_clear(&f);
	fgw_freezero(raw, len);
}

/* ---- GET views, 3-D Secure, router --------------------------------------- */

static void
ledger(struct sbx *s, struct evhttp_request *req)
{
	cJSON *o = cJSON_CreateObject(), *by, *e;
	struct stripe *st = s->stripe;

	if (o == NULL || (by = cJSON_AddObjectToObject(o, "byKey")) == NULL)
		goto fail;
	cJSON_AddNumberToObject(o, "objects", (double)st->n_objects);
	cJSON_AddNumberToObject(o, "accepted", (double)st->accepted);
	cJSON_AddNumberToObject(o, "rejected", (double)st->rejected);
	cJSON_AddNumberToObject(o, "customers", (double)st->n_customers);
	if ((e = cJSON_AddObjectToObject(o, "attached")) == NULL)
		goto fail;
	for (struct spm *m = st->methods; m != NULL; m = m->next)
		if (m->customer[0])
			cJSON_AddStringToObject(e, m->id, m->customer);
	for (struct sidem *k = st->keys; k != NULL; k = k->next) {
		struct spi *p = intent_find(st, k->object);
		if ((e = cJSON_AddObjectToObject(by, k->key)) == NULL)
			goto fail;
		cJSON_AddStringToObject(e, "id", k->object);
		cJSON_AddNumberToObject(e, "count", (double)k->count);
		cJSON_AddNumberToObject(e, "code", (double)k->code);
		if (p != NULL) {
			cJSON_AddStringToObject(e, "status", p->status);
			cJSON_AddNumberToObject(e, "amount", (double)p->amount);
			cJSON_AddNumberToObject(e, "amountReceived", (double)p->received);
			cJSON_AddNumberToObject(e, "amountRefunded", (double)p->refunded);
			cJSON_AddStringToObject(e, "flairTxnId", p->txn_ref);
			cJSON_AddStringToObject(e, "last4", p->last4);
		}
	}
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (text == NULL)
		goto fail2;
	sbx_send(req, 200, NULL, text, strlen(text));
	free(text);
	return;
fail:
	cJSON_Delete(o);
fail2:
	sbx_send_error(req, 500, "internal", "out of memory");
}

/* Stripe's event for an intent: {"id","object":"event","type",
 * "created","data":{"object":<the PaymentIntent>}}. obj: struct ev_src. */
struct ev_src {
	const struct sbx *s;
	const struct spi *p;
	const char *type;
};

static int
intent_event_body(const void *obj, const char *evt_id, long long t, char **out)
{
	const struct ev_src *e = obj;
	cJSON *o = cJSON_CreateObject(), *data;
	char *pi = print_intent(e->s, e->p);
	int r = FGW_ERR_NOMEM;

	*out = NULL;
	if (o == NULL || pi == NULL || !cJSON_AddStringToObject(o, "id", evt_id) ||
	    !cJSON_AddStringToObject(o, "object", "event") ||
	    !cJSON_AddStringToObject(o, "type", e->type) ||
	    !cJSON_AddNumberToObject(o, "created", (double)t) ||
	    !cJSON_AddBoolToObject(o, "livemode", 0) ||
	    (data = cJSON_AddObjectToObject(o, "data")) == NULL ||
	    !cJSON_AddItemToObject(data, "object", cJSON_Parse(pi)) ||
	    (*out = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	r = FGW_OK;
out:
	free(pi);
	cJSON_Delete(o);
	return r;
}

/* Stripe's event about p, signed and sent to --webhook-url (if any). */
static void
intent_event(struct sbx *s, const struct spi *p, const char *type)
{
	struct ev_src e = { s, p, type };
	sbx_webhook_queue(s, "Stripe-Signature", p->id, intent_event_body, &e);
}

/* The customer passed the challenge: requires_action -> succeeded (or
 * requires_capture for manual capture), and with --webhook-url Stripe's
 * payment_intent.succeeded (amount_capturable_updated) event is sent,
 * signed with Stripe-Signature. */
static void
threeds_complete(struct sbx *s, struct evhttp_request *req, struct spi *p)
{
	if (strcmp(p->status, "requires_action") == 0) {
		if (strcmp(p->capture_method, "manual") == 0) {
			fgw_strlcpy(p->status, "requires_capture", sizeof(p->status));
		} else {
			fgw_strlcpy(p->status, "succeeded", sizeof(p->status));
			p->received = p->amount;
		}
		if (fgw_random_id("ch_", p->charge, sizeof(p->charge)) != FGW_OK) {
			sbx_send_error(req, 500, "internal", "no randomness");
			return;
		}
		struct ev_src e = { s, p,
			                strcmp(p->status, "succeeded") == 0
			                    ? "payment_intent.succeeded"
			                    : "payment_intent.amount_capturable_updated" };
		sbx_webhook_queue(s, "Stripe-Signature", p->id, intent_event_body, &e);
	} else if (strcmp(p->status, "succeeded") != 0 &&
	           strcmp(p->status, "requires_capture") != 0) {
		sbx_send_error(req, 409, "invalid_state", "not awaiting 3-D Secure");
		return;
	}
	char *text = print_intent(s, p);
	sbx_send(req, text != NULL ? 200 : 500, NULL, text, text ? strlen(text) : 0);
	free(text);
}

/* GET /v1/payment_intents/search?query=metadata['flair_txn_id']:'<id>' —
 * the one search query the adapter uses (an intent whose create answer
 * was lost). Other queries are 400, as an unsupported query is at Stripe. */
static void
search(struct sbx *s, struct evhttp_request *req)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *qs = uri != NULL ? evhttp_uri_get_query(uri) : NULL, *q;
	static const char prefix[] = "metadata['flair_txn_id']:'";
	struct form f = { 0 };
	cJSON *o = NULL, *data;
	char want[80];
	size_t n;

	if (!sbx_auth_ok(s, req)) {
		reply_error(s, req, 401, "authentication_error", NULL, NULL,
		            "Invalid API Key provided.");
		return;
	}
	if (qs != NULL && form_parse(qs, strlen(qs), &f) == FGW_OK &&
	    contract_refuses(s, req, "GET", "/v1/payment_intents/search", &f)) {
		form_clear(&f);
		return;
	}
	if (qs == NULL || f.n == 0 || (q = fget(&f, "query")) == NULL ||
	    strncmp(q, prefix, sizeof(prefix) - 1) != 0 ||
	    (n = strlen(q + sizeof(prefix) - 1)) < 2 || n > sizeof(want) ||
	    q[sizeof(prefix) - 1 + n - 1] != '\'') {
		form_clear(&f);
		reply_error(s, req, 400, "invalid_request_error", NULL, "query",
		            "Unsupported search query.");
		return;
	}
	memcpy(want, q + sizeof(prefix) - 1, n - 1);
	want[n - 1] = '\0';
	form_clear(&f);
	if ((o = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(o, "object", "search_result") ||
	    (data = cJSON_AddArrayToObject(o, "data")) == NULL) {
		cJSON_Delete(o);
		reply(s, req, 500, NULL);
		return;
	}
	for (struct spi *p = s->stripe->intents; p != NULL; p = p->next) {
		char *text;
		if (strcmp(p->txn_ref, want) != 0 || (text = print_intent(s, p)) == NULL)
			continue;
		cJSON_AddItemToArray(data, cJSON_Parse(text));
		free(text);
	}
	cJSON_AddBoolToObject(o, "has_more", 0);
	cJSON_AddStringToObject(o, "url", "/v1/payment_intents/search");
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	reply(s, req, text != NULL ? 200 : 500, text);
}

int
sbx_stripe_route(struct sbx *s, struct evhttp_request *req, const char *path)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int get = cmd == EVHTTP_REQ_GET, is_post = cmd == EVHTTP_REQ_POST;
	char id[STR_ID_LEN];
	const char *rest = NULL, *slash;
	struct spi *p;
	size_t n;

	if (strcmp(path, "/v1/payment_intents") == 0 && is_post) {
		post(s, req, path, NULL, "create");
		return 1;
	}
	if (strcmp(path, "/v1/payment_methods") == 0 && is_post) {
		post(s, req, path, NULL, "payment_method");
		return 1;
	}
	if (strcmp(path, "/v1/customers") == 0 && is_post) {
		post(s, req, path, NULL, "customer");
		return 1;
	}
	/* /v1/payment_methods/{id}/attach (the contract checks the id). */
	if (strncmp(path, "/v1/payment_methods/", 20) == 0 && is_post &&
	    (slash = strchr(path + 20, '/')) != NULL && strcmp(slash, "/attach") == 0) {
		post(s, req, path, NULL, "attach");
		return 1;
	}
	if (strncmp(path, "/v1/payment_methods/", 20) == 0 && is_post &&
	    (slash = strchr(path + 20, '/')) != NULL && strcmp(slash, "/detach") == 0) {
		post(s, req, path, NULL, "detach");
		return 1;
	}
	if (strcmp(path, "/v1/refunds") == 0 && is_post) {
		post(s, req, path, NULL, "refund");
		return 1;
	}
	if (strcmp(path, "/v1/payment_intents/search") == 0 && get) {
		search(s, req);
		return 1;
	}
	if (strcmp(path, "/v1/stripe/ledger") == 0 && get) {
		ledger(s, req);
		return 1;
	}
	if (strncmp(path, "/v1/payment_intents/", 20) == 0)
		rest = path + 20;
	else if (strncmp(path, "/stripe/3ds/", 12) == 0)
		rest = path + 12;
	if (rest == NULL)
		return 0;
	slash = strchr(rest, '/');
	n = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
	if (n >= sizeof(id))
		n = 0;
	memcpy(id, rest, n);
	id[n] = '\0';
	if (!sbx_auth_ok(s, req) && rest == path + 20 &&
	    !(slash != NULL && strcmp(slash, "/confirm") == 0 && is_post)) {
		reply_error(s, req, 401, "authentication_error", NULL, NULL,
		            "Invalid API Key provided.");
		return 1;
	}
	if ((p = n > 0 ? intent_find(s->stripe, id) : NULL) == NULL) {
		reply_error(s, req, 404, "invalid_request_error", "resource_missing", "intent",
		            "No such payment_intent.");
		return 1;
	}
	if (rest == path + 12) {
		if (slash != NULL && strcmp(slash, "/complete") == 0 && is_post)
			threeds_complete(s, req, p);
		else
			sbx_send_error(req, 404, "not_found", "no such page");
		return 1;
	}
	if (slash == NULL && get) {
		const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
		const char *qs = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
		struct form f = { 0 };
		char *text;
		if (qs != NULL && form_parse(qs, strlen(qs), &f) != FGW_OK) {
			reply_error(s, req, 400, "invalid_request_error", NULL, NULL,
			            "The query string is not valid form encoding.");
			return 1;
		}
		if (contract_refuses(s, req, "GET", path, &f)) {
			form_clear(&f);
			return 1;
		}
		form_clear(&f);
		text = print_intent(s, p);
		reply(s, req, text != NULL ? 200 : 500, text);
	} else if (slash == NULL && is_post) {
		post(s, req, path, p, "update");
	} else if (slash != NULL && strcmp(slash, "/capture") == 0 && is_post) {
		post(s, req, path, p, "capture");
	} else if (slash != NULL && strcmp(slash, "/cancel") == 0 && is_post) {
		post(s, req, path, p, "cancel");
	} else if (slash != NULL && strcmp(slash, "/confirm") == 0 && is_post) {
		post(s, req, path, p, "confirm");
	} else {
		reply_error(s, req, 404, "invalid_request_error", NULL, NULL,
		            "Unrecognized request URL.");
	}
	return 1;
}

int
sbx_stripe_new(const char *fixture, struct stripe **out)
{
	struct stripe *st;
	int r;

	if ((st = calloc(1, sizeof(*st))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = stripe_contract_load(fixture, &st->contract)) != FGW_OK) {
		log_error("Stripe API description %s: %s", fixture, fgw_strerror(r));
		free(st);
		return r;
	}
	*out = st;
	return FGW_OK;
}

void
sbx_stripe_free(struct stripe *st)
{
	if (st == NULL)
		return;
	stripe_contract_free(st->contract);
	while (st->methods != NULL) {
		struct spm *m = st->methods;
		st->methods = m->next;
		free(m);
	}
	while (st->customers != NULL) {
		struct scus *c = st->customers;
		st->customers = c->next;
		free(c);
	}
	while (st->intents != NULL) {
		struct spi *p = st->intents;
		st->intents = p->next;
		free(p);
	}
	while (st->keys != NULL) {
		struct sidem *k = st->keys;
		st->keys = k->next;
		free(k->key);
		free(k->body);
		free(k);
	}
	free(st);
}
