/*
 * pipeline/txn.c — the transaction object: parsing and validating the
 * website's request body, creating and freeing transactions, and the JSON
 * forms of a transaction (the answer, GET /v1/transactions/{id}).
 *
 * Parsing is strict: unknown fields, wrong types, out-of-range numbers and
 * oversized strings are refused with the field named and no value echoed.
 * Card number and CVC are copied straight into guarded memory and wiped
 * from the parse tree.
 */
#define LOG_MODULE "pipeline"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/json.h"
#include "core/util.h"
#include "crypto/secmem.h"
#include "pipeline/pipeline.h"
#include "processors/httpc.h"

#define MAX_AMOUNT_ABS 100000000000000LL /* 10^14 minor units */

static int
perr(struct fgw_why *why, const char *field, const char *msg)
{
	fgw_why_set(why, field, 0, 0, "%s", msg);
	return FGW_ERR_INVALID;
}

/* Copies an optional string field of at most cap-1 bytes. Returns 0 when
 * absent or copied, FGW_ERR_INVALID (why filled) otherwise. */
static int
get_str(const cJSON *obj, const char *name, const char *path, char *dst, size_t cap,
        int required, struct fgw_why *why)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	char msg[96];
	if (it == NULL || cJSON_IsNull(it)) {
		if (required)
			return perr(why, path, "is required");
		return FGW_OK;
	}
	if (!cJSON_IsString(it))
		return perr(why, path, "must be a string");
	if (strlen(it->valuestring) >= cap) {
		snprintf(msg, sizeof(msg), "must be at most %zu characters", cap - 1);
		return perr(why, path, msg);
	}
	for (const char *p = it->valuestring; *p; p++)
		if ((unsigned char)*p < 0x20)
			return perr(why, path, "must not contain control characters");
	if (required && it->valuestring[0] == '\0')
		return perr(why, path, "must not be empty");
	memcpy(dst, it->valuestring, strlen(it->valuestring) + 1);
	return FGW_OK;
}

/* An integer field within [min, max]. */
static int
get_int(const cJSON *obj, const char *name, const char *path, int64_t min, int64_t max,
        int required, int64_t *out, struct fgw_why *why)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	if (it == NULL || cJSON_IsNull(it)) {
		if (required)
			return perr(why, path, "is required");
		return FGW_OK;
	}
	/* 1.0, 1e3 and 0.99999999999999999 are refused, not rounded */
	if (fgw_json_int(it, INT64_MIN, INT64_MAX, out) != 0)
		return perr(why, path, "must be an integer (no fraction or exponent)");
	if (fgw_json_int(it, min, max, out) != 0)
		return perr(why, path, "is not an integer in the allowed range");
	return FGW_OK;
}

/* Refuses members not named in allowed (NULL-terminated). */
static int
only_fields(const cJSON *obj, const char *const *allowed, const char *path,
            struct fgw_why *why)
{
	const cJSON *it;
	char field[64];
	cJSON_ArrayForEach(it, obj) {
		int ok = 0;
		for (const char *const *a = allowed; *a; a++)
			if (it->string && strcmp(it->string, *a) == 0)
				ok = 1;
		if (!ok) {
			/* Echo the name only when it is a plain identifier: a
			 * client could send card data as a member name. */
			const char *name = it->string ? it->string : "";
			size_t n = strlen(name);
			int plain = n > 0 && n <= 40 &&
			            strspn(name,
			                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_") ==
			                n;
			snprintf(field, sizeof(field), "%s%s%s", path, path[0] ? "." : "",
			         plain ? name : "(unnamed)");
			return perr(why, field, "is not a known field");
		}
	}
	return FGW_OK;
}

static void
wipe_string_item(cJSON *obj, const char *name)
{
	cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	if (it != NULL && cJSON_IsString(it) && it->valuestring != NULL)
		sodium_memzero(it->valuestring, strlen(it->valuestring));
}

static int
digits_only(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);
	if (n < min || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

void
txn_card_clear(struct txn_card *card)
{
	secbuf_free(card->pan);
	secbuf_free(card->cvc);
	sodium_memzero(card, sizeof(*card));
}

/* Card object → guarded memory. Wipes the strings in the tree. */
static int
card_from_json(cJSON *c, const char *path, struct txn_card *card, struct fgw_why *why)
{
	static const char *const fields[] = { "number", "expMonth",   "expYear",
		                                  "cvc",    "holderName", NULL };
	char fp[64];
	int64_t v = 0;
	int r;
	const cJSON *num, *cvc;

	if (!cJSON_IsObject(c))
		return perr(why, path, "must be an object");
	if ((r = only_fields(c, fields, path, why)) != 0)
		goto out;
	num = cJSON_GetObjectItemCaseSensitive(c, "number");
	snprintf(fp, sizeof(fp), "%s.number", path);
	if (num == NULL || !cJSON_IsString(num)) {
		r = perr(why, fp, num ? "must be a string of digits" : "is required");
		goto out;
	}
	if (!digits_only(num->valuestring, 13, 19)) {
		r = perr(why, fp, "must be 13 to 19 digits");
		goto out;
	}
	if ((r = secbuf_from(&card->pan, num->valuestring, strlen(num->valuestring))) != 0)
		goto out;
	snprintf(fp, sizeof(fp), "%s.expMonth", path);
	if ((r = get_int(c, "expMonth", fp, 1, 12, 1, &v, why)) != 0)
		goto out;
	card->exp_month = (int)v;
	snprintf(fp, sizeof(fp), "%s.expYear", path);
	if ((r = get_int(c, "expYear", fp, 2000, 2100, 1, &v, why)) != 0)
		goto out;
	card->exp_year = (int)v;
	cvc = cJSON_GetObjectItemCaseSensitive(c, "cvc");
	snprintf(fp, sizeof(fp), "%s.cvc", path);
	if (cvc != NULL && !cJSON_IsNull(cvc)) {
		if (!cJSON_IsString(cvc) || !digits_only(cvc->valuestring, 3, 4)) {
			r = perr(why, fp, "must be a string of 3 or 4 digits");
			goto out;
		}
		if ((r = secbuf_from(&card->cvc, cvc->valuestring, strlen(cvc->valuestring))) !=
		    0)
			goto out;
	}
	snprintf(fp, sizeof(fp), "%s.holderName", path);
	r = get_str(c, "holderName", fp, card->holder, sizeof(card->holder), 0, why);
out:
	wipe_string_item(c, "number");
	wipe_string_item(c, "cvc");
	if (r != 0)
		txn_card_clear(card);
	return r;
}

int
txn_card_parse_json(const char *json, size_t len, struct txn_card *card,
                    struct fgw_why *why)
{
	cJSON *c = fgw_json_parse_strict(json, len);
	int r;
	if (c == NULL)
		return perr(why, "encryptedCard", "does not hold card JSON");
	r = card_from_json(c, "encryptedCard", card, why);
	cJSON_Delete(c);
	return r;
}

int
txn_card_parse_sealed(const char *json, size_t len, const struct sealed_card_policy *pol,
                      int64_t now_ms, struct txn_card *card, struct fgw_why *why)
{
	cJSON *c = fgw_json_parse_strict(json, len), *iat = NULL;
	int64_t at_ms;
	int r;

	if (c == NULL)
		return perr(why, "encryptedCard", "does not hold card JSON");
	if (cJSON_IsObject(c))
		iat = cJSON_DetachItemFromObjectCaseSensitive(c, "iat");
	/* The card first: its parse wipes number and CVC from the tree on
	 * every path, and a refused blob drops the card again below. */
	if ((r = card_from_json(c, "encryptedCard", card, why)) != 0)
		goto out;
	if (iat == NULL) {
		if (pol->require_iat) {
			fgw_why_set(why, "encryptedCard", 0, 0,
			            "carries no creation time (iat): seal it again");
			r = FGW_ERR_TIMEOUT;
		}
		goto out;
	}
	if (fgw_json_int(iat, 0, 253402300799LL, &at_ms) != 0) {
		r = perr(why, "encryptedCard.iat", "must be an integer number of seconds");
		goto out;
	}
	at_ms *= 1000;
	if (now_ms - at_ms > pol->max_age_ms || at_ms - now_ms > pol->max_skew_ms) {
		fgw_why_set(why, "encryptedCard", 0, 0, "%s",
		            now_ms > at_ms ? "is too old: seal it again"
		                           : "was sealed in the future: check the clock");
		r = FGW_ERR_TIMEOUT;
	}
out:
	if (r != 0)
		txn_card_clear(card);
	cJSON_Delete(iat);
	cJSON_Delete(c);
	return r;
}

static int
parse_customer(const cJSON *c, struct txn_request *rq, struct fgw_why *why)
{
	static const char *const fields[] = { "email", "name", "ip", "country", NULL };
	unsigned char addr[16];
	int r;
	if (c == NULL || cJSON_IsNull(c))
		return FGW_OK;
	if (!cJSON_IsObject(c))
		return perr(why, "customer", "must be an object");
	if ((r = only_fields(c, fields, "customer", why)) != 0 ||
	    (r = get_str(c, "email", "customer.email", rq->email, sizeof(rq->email), 0,
	                 why)) != 0 ||
	    (r = get_str(c, "name", "customer.name", rq->customer_name,
	                 sizeof(rq->customer_name), 0, why)) != 0 ||
	    (r = get_str(c, "ip", "customer.ip", rq->ip, sizeof(rq->ip), 0, why)) != 0 ||
	    (r = get_str(c, "country", "customer.country", rq->country, sizeof(rq->country),
	                 0, why)) != 0)
		return r;
	if (rq->email[0] != '\0') {
		const char *at = strchr(rq->email, '@');
		if (at == NULL || at == rq->email || strchr(at + 1, '.') == NULL ||
		    strchr(rq->email, ' ') != NULL)
			return perr(why, "customer.email", "is not an e-mail address");
	}
	if (rq->ip[0] != '\0' && inet_pton(AF_INET, rq->ip, addr) != 1 &&
	    inet_pton(AF_INET6, rq->ip, addr) != 1)
		return perr(why, "customer.ip", "is not an IP address");
	if (rq->country[0] != '\0' &&
	    (strlen(rq->country) != 2 || !isupper((unsigned char)rq->country[0]) ||
	     !isupper((unsigned char)rq->country[1])))
		return perr(why, "customer.country", "must be an ISO 3166 alpha-2 code");
	return FGW_OK;
}

static int
parse_metadata(const cJSON *m, struct txn_request *rq, struct fgw_why *why)
{
	const cJSON *it;
	int n = 0;
	if (m == NULL || cJSON_IsNull(m))
		return FGW_OK;
	if (!cJSON_IsObject(m))
		return perr(why, "metadata", "must be an object");
	cJSON_ArrayForEach(it, m) {
		if (++n > 20)
			return perr(why, "metadata", "must have at most 20 keys");
		if (it->string == NULL || strlen(it->string) > 40)
			return perr(why, "metadata", "keys must be at most 40 characters");
		if (!cJSON_IsString(it) || strlen(it->valuestring) > 500)
			return perr(why, "metadata",
			            "values must be strings of at most 500 characters");
	}
	if ((rq->metadata_json = cJSON_PrintUnformatted(m)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

/* encryptedCard {"keyId","data"}: kept as sent, opened later. */
static int
parse_encrypted(const cJSON *enc, struct txn_request *rq, struct fgw_why *why)
{
	static const char *const efields[] = { "keyId", "data", NULL };
	const cJSON *data;
	int r;
	rq->has_encrypted = 1;
	if (!cJSON_IsObject(enc))
		return perr(why, "encryptedCard", "must be an object");
	if ((r = only_fields(enc, efields, "encryptedCard", why)) != 0 ||
	    (r = get_str(enc, "keyId", "encryptedCard.keyId", rq->enc_key_id,
	                 sizeof(rq->enc_key_id), 1, why)) != 0)
		return r;
	data = cJSON_GetObjectItemCaseSensitive(enc, "data");
	if (data == NULL || !cJSON_IsString(data) || data->valuestring[0] == '\0' ||
	    strlen(data->valuestring) > 8192)
		return perr(why, "encryptedCard.data",
		            "must be a base64 string of at most 8192 characters");
	if ((rq->enc_data = strdup(data->valuestring)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

/* End of a body parse: card strings wiped before the tree is freed, and a
 * request that was not handed out freed. */
static void
parse_done(cJSON *root, cJSON *card, struct txn_request *rq)
{
	if (root != NULL) {
		if (card != NULL && cJSON_IsObject(card)) {
			wipe_string_item(card, "number");
			wipe_string_item(card, "cvc");
		}
		cJSON_Delete(root);
	}
	txn_request_free(rq);
}

/* A returnUrl we pass on: http(s), visible ASCII without quotes or angle
 * brackets, and no run of digits that is a card number (it would be
 * stored and sent). */
static int
return_url_ok(const char *u)
{
	size_t n = strlen(u);

	if (strncasecmp(u, "https://", 8) != 0 && strncasecmp(u, "http://", 7) != 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (u[i] <= 0x20 || u[i] >= 0x7f || strchr("\"'<>\\`", u[i]) != NULL)
			return 0;
	for (size_t i = 0; i < n;) {
		size_t d = strspn(u + i, "0123456789");
		if (d >= 12 && d <= 19 && card_luhn_ok(u + i, d))
			return 0;
		i += d > 0 ? d : 1;
	}
	return 1;
}

int
txn_return_url_allowed(const struct txn_request *rq, const char *origins)
{
	const char *u = rq->return_url, *host, *p = origins;
	size_t olen;

	if (u == NULL || u[0] == '\0')
		return 1;
	if ((host = strstr(u, "://")) == NULL)
		return 0;
	host += 3;
	/* scheme://host[:port], up to the path, query or fragment. */
	olen = (size_t)(host - u) + strcspn(host, "/?#");
	while (*p != '\0') {
		size_t n;
		p += strspn(p, ", \t");
		n = strcspn(p, ", \t");
		if (n > 0 && n == olen && strncasecmp(p, u, n) == 0)
			return 1;
		p += n;
	}
	return 0;
}

/* The body as a JSON object, or a "body" error saying why not. */
static int
parse_object(const char *body, size_t len, cJSON **root, struct fgw_why *why)
{
	struct fgw_json_error jerr;

	if ((*root = fgw_json_parse(body, len, &jerr)) == NULL) {
		char msg[160]; /* as answered before: a parser's detail, cut short */
		fgw_json_error_str(&jerr, msg, sizeof(msg));
		return perr(why, "body", msg);
	}
	if (!cJSON_IsObject(*root))
		return perr(why, "body", "must be a JSON object");
	return FGW_OK;
}

/* The one payment source the body named, once the caller has checked its
 * paymentMethodId: a Stripe PaymentMethod (which leaves flairgw nothing to
 * save), a card or an encrypted card. */
static int
parse_source(cJSON *card, cJSON *enc, struct txn_request *rq, struct fgw_why *why)
{
	if (rq->processor_method[0] != '\0') {
		if (strncmp(rq->processor_method, "pm_", 3) != 0 ||
		    rq->processor_method[3] == '\0' ||
		    strspn(rq->processor_method, "abcdefghijklmnopqrstuvwxyz"
		                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
		        strlen(rq->processor_method))
			return perr(why, "stripePaymentMethod",
			            "must be a Stripe PaymentMethod id (pm_...)");
		/* flairgw never sees the card: there is nothing to save. */
		if (rq->save_method)
			return perr(why, "savePaymentMethod",
			            "cannot be used with stripePaymentMethod");
	} else if (card != NULL) {
		rq->has_card = 1;
		return card_from_json(card, "card", &rq->card, why);
	} else if (enc != NULL) {
		return parse_encrypted(enc, rq, why);
	}
	return FGW_OK;
}

/* The fields of a parsed body (an object) into rq. */
static int
request_fields(const cJSON *root, int client_confirms, struct txn_request *rq,
               struct fgw_why *why)
{
	static const char *const fields[] = { "reservationId",
		                                  "amount",
		                                  "currency",
		                                  "card",
		                                  "encryptedCard",
		                                  "customer",
		                                  "description",
		                                  "metadata",
		                                  "paymentMethodId",
		                                  "savePaymentMethod",
		                                  "capture",
		                                  "returnUrl",
		                                  "stripePaymentMethod",
		                                  NULL };
	cJSON *card = NULL, *enc = NULL, *cap;
	const cJSON *save;
	char url[2049];
	int r;

	url[0] = '\0'; /* get_str leaves it alone when returnUrl is absent */
	card = cJSON_GetObjectItemCaseSensitive(root, "card");
	enc = cJSON_GetObjectItemCaseSensitive(root, "encryptedCard");
	if ((r = only_fields(root, fields, "", why)) != 0 ||
	    (r = get_str(root, "reservationId", "reservationId", rq->reservation_id,
	                 sizeof(rq->reservation_id), 1, why)) != 0 ||
	    (r = get_int(root, "amount", "amount", 1, MAX_AMOUNT_ABS, 1, &rq->amount, why)) !=
	        0 ||
	    (r = get_str(root, "currency", "currency", rq->currency, sizeof(rq->currency), 1,
	                 why)) != 0 ||
	    (r = get_str(root, "description", "description", rq->description,
	                 sizeof(rq->description), 0, why)) != 0 ||
	    (r = parse_customer(cJSON_GetObjectItemCaseSensitive(root, "customer"), rq,
	                        why)) != 0 ||
	    (r = parse_metadata(cJSON_GetObjectItemCaseSensitive(root, "metadata"), rq,
	                        why)) != 0)
		goto out;
	/* "capture": false asks for an authorization only (captured or
	 * canceled later); absent or true is a purchase. */
	rq->capture = 1;
	cap = cJSON_GetObjectItemCaseSensitive(root, "capture");
	if (cap != NULL) {
		if (!cJSON_IsBool(cap)) {
			r = perr(why, "capture", "must be true or false");
			goto out;
		}
		rq->capture = cJSON_IsTrue(cap) ? 1 : 0;
	}
	if (strlen(rq->currency) != 3 || !isupper((unsigned char)rq->currency[0]) ||
	    !isupper((unsigned char)rq->currency[1]) ||
	    !isupper((unsigned char)rq->currency[2])) {
		r = perr(why, "currency", "must be an ISO 4217 code such as USD");
		goto out;
	}
	if ((r = get_str(root, "paymentMethodId", "paymentMethodId", rq->payment_method_id,
	                 sizeof(rq->payment_method_id), 0, why)) != 0 ||
	    (r = get_str(root, "returnUrl", "returnUrl", url, sizeof(url), 0, why)) != 0 ||
	    (r = get_str(root, "stripePaymentMethod", "stripePaymentMethod",
	                 rq->processor_method, sizeof(rq->processor_method), 0, why)) != 0)
		goto out;
	if (url[0] != '\0' && (rq->return_url = strdup(url)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (rq->return_url != NULL && !return_url_ok(rq->return_url)) {
		r = perr(why, "returnUrl",
		         "must be an http(s) URL of visible ASCII without a card number");
		goto out;
	}
	save = cJSON_GetObjectItemCaseSensitive(root, "savePaymentMethod");
	if (save != NULL && !cJSON_IsNull(save) && !cJSON_IsBool(save)) {
		r = perr(why, "savePaymentMethod", "must be true or false");
		goto out;
	}
	rq->save_method = save != NULL && cJSON_IsTrue(save);
	if (client_confirms) {
		/* The customer's browser confirms at the processor: flairgw
		 * gets no payment source at all, and keeps none. */
		rq->client_confirms = 1;
		if ((card != NULL) + (enc != NULL) + (rq->payment_method_id[0] != '\0') +
		            (rq->processor_method[0] != '\0') !=
		        0 ||
		    rq->save_method) {
			r = perr(why, "confirmWith",
			         "takes no card, payment method or savePaymentMethod");
			goto out;
		}
	} else if ((card != NULL) + (enc != NULL) + (rq->payment_method_id[0] != '\0') +
	               (rq->processor_method[0] != '\0') !=
	           1) {
		r = perr(
		    why, "card",
		    "or encryptedCard or paymentMethodId or stripePaymentMethod is required, exactly one");
		goto out;
	}
	if (rq->payment_method_id[0] != '\0' &&
	    ((strncmp(rq->payment_method_id, "pm_", 3) != 0 &&
	      strncmp(rq->payment_method_id, "tok_", 4) != 0) ||
	     strspn(rq->payment_method_id, "abcdefghijklmnopqrstuvwxyz"
	                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
	         strlen(rq->payment_method_id))) {
		r = perr(why, "paymentMethodId",
		         "must be a saved method id (pm_...) or a token (tok_...)");
		goto out;
	}
	r = parse_source(card, enc, rq, why);
out:
	return r;
}

static int
request_parse(const char *body, size_t len, int client_confirms, struct txn_request **out,
              struct fgw_why *why)
{
	cJSON *root = NULL;
	struct txn_request *rq = NULL;
	int r;

	memset(why, 0, sizeof(*why));
	if ((rq = calloc(1, sizeof(*rq))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = parse_object(body, len, &root, why)) != 0 ||
	    (r = request_fields(root, client_confirms, rq, why)) != 0)
		goto out;
	*out = rq;
	rq = NULL;
out:
	parse_done(root, root != NULL ? cJSON_GetObjectItemCaseSensitive(root, "card") : NULL,
	           rq);
	return r;
}

int
txn_request_parse(const char *body, size_t len, struct txn_request **out,
                  struct fgw_why *why)
{
	return request_parse(body, len, 0, out, why);
}

int
txn_request_parse_tree(const cJSON *root, struct txn_request **out, struct fgw_why *why)
{
	struct txn_request *rq = NULL;
	int r;

	memset(why, 0, sizeof(*why));
	if (!cJSON_IsObject(root))
		return perr(why, "body", "must be a JSON object");
	if ((rq = calloc(1, sizeof(*rq))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = request_fields(root, 0, rq, why)) != 0) {
		txn_request_free(rq);
		return r;
	}
	*out = rq;
	return FGW_OK;
}

int
txn_request_parse_client_confirms(const char *body, size_t len, struct txn_request **out,
                                  struct fgw_why *why)
{
	return request_parse(body, len, 1, out, why);
}

int
txn_method_body_parse(const char *body, size_t len, struct txn_request **out,
                      char *nickname, size_t nickcap, struct fgw_why *why)
{
	static const char *const fields[] = { "paymentMethodId",     "card",
		                                  "encryptedCard",       "nickname",
		                                  "stripePaymentMethod", NULL };
	cJSON *root = NULL, *card = NULL, *enc = NULL;
	struct txn_request *rq = NULL;
	int r;

	memset(why, 0, sizeof(*why));
	nickname[0] = '\0';
	if ((rq = calloc(1, sizeof(*rq))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = parse_object(body, len, &root, why)) != 0)
		goto out;
	card = cJSON_GetObjectItemCaseSensitive(root, "card");
	enc = cJSON_GetObjectItemCaseSensitive(root, "encryptedCard");
	if ((r = only_fields(root, fields, "", why)) != 0 ||
	    (r = get_str(root, "nickname", "nickname", nickname, nickcap, 0, why)) != 0 ||
	    (r = get_str(root, "paymentMethodId", "paymentMethodId", rq->payment_method_id,
	                 sizeof(rq->payment_method_id), 0, why)) != 0 ||
	    (r = get_str(root, "stripePaymentMethod", "stripePaymentMethod",
	                 rq->processor_method, sizeof(rq->processor_method), 0, why)) != 0)
		goto out;
	if ((card != NULL) + (enc != NULL) + (rq->payment_method_id[0] != '\0') +
	        (rq->processor_method[0] != '\0') !=
	    1) {
		r = perr(
		    why, "paymentMethodId",
		    "or card or encryptedCard or stripePaymentMethod is required, exactly one");
		goto out;
	}
	if (rq->payment_method_id[0] != '\0' &&
	    (strncmp(rq->payment_method_id, "tok_", 4) != 0 ||
	     strspn(rq->payment_method_id + 4, "abcdefghijklmnopqrstuvwxyz"
	                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") !=
	         strlen(rq->payment_method_id) - 4)) {
		r = perr(why, "paymentMethodId", "must be a card token (tok_...) from a payment");
		goto out;
	}
	if ((r = parse_source(card, enc, rq, why)) != 0)
		goto out;
	*out = rq;
	rq = NULL;
	r = FGW_OK;
out:
	parse_done(root, card, rq);
	return r;
}

void
txn_request_free(struct txn_request *r)
{
	if (r == NULL)
		return;
	txn_card_clear(&r->card);
	free(r->enc_data);
	free(r->metadata_json);
	free(r->return_url);
	fgw_freezero(r, sizeof(*r));
}

int
txn_new(const struct pipeline_env *env, struct txn_request *req, const char *client_id,
        const char *source, const char *idem_key, const char *request_hash,
        struct txn **out)
{
	struct txn *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return FGW_ERR_NOMEM;
	t->env = env;
	t->req = req;
	fgw_random_id("txn_", t->id, sizeof(t->id));
	fgw_strlcpy(t->client_id, client_id ? client_id : "", sizeof(t->client_id));
	fgw_strlcpy(t->source, source ? source : "", sizeof(t->source));
	fgw_strlcpy(t->idem_key, idem_key ? idem_key : "", sizeof(t->idem_key));
	fgw_strlcpy(t->request_hash, request_hash ? request_hash : "",
	            sizeof(t->request_hash));
	t->created_at = fgw_now_ms();
	t->started_mono = fgw_mono_ms();
	fgw_strlcpy(t->decision, "allow", sizeof(t->decision));
	*out = t;
	return FGW_OK;
}

void
txn_free(struct txn *t)
{
	if (t == NULL)
		return;
	proc_call_cancel(&t->call);
	if (t->resume_ev != NULL)
		event_free(t->resume_ev);
	txn_request_free(t->req);
	txn_method_read_free(t->method_read);
	free(t->vault_blob);
	free(t->sealed_card_b64);
	free(t->reply_body);
	free(t->answer);
	proc_result_clear(&t->result);
	fgw_freezero(t, sizeof(*t));
}

void
txn_set_outcome(struct txn *t, enum txn_state state, const char *code,
                const char *message, int http_status, int record)
{
	t->out.state = state;
	t->out.rejected = 0;
	fgw_strlcpy(t->out.error_code, code ? code : "", sizeof(t->out.error_code));
	fgw_strlcpy(t->out.error_message, message ? message : "",
	            sizeof(t->out.error_message));
	t->out.http_status = http_status;
	t->out.record = record;
}

void
txn_reject(struct txn *t, const char *code, const char *message, int http_status)
{
	txn_set_outcome(t, TXN_STATE_NONE, code, message, http_status, 0);
	t->out.rejected = 1;
}

void
txn_idem_lost(struct txn *t)
{
	t->idem_lost = 1;
	txn_reject(t, "IDEMPOTENCY_CONFLICT",
	           "A request with this Idempotency-Key is still in progress", 409);
}

const char *
txn_outcome_name(const struct txn_outcome *o)
{
	return o->rejected ? "rejected" : txn_state_name(o->state);
}

static int
add_raw_json(cJSON *obj, const char *name, const char *json)
{
	cJSON *v;
	if (json == NULL || json[0] == '\0')
		return FGW_OK;
	if ((v = cJSON_Parse(json)) == NULL)
		return FGW_OK; /* recorded text we wrote ourselves; skip if odd */
	cJSON_AddItemToObject(obj, name, v);
	return FGW_OK;
}

int
txn_row_to_json(const struct store_txn_row *row, const char *proc_name, char **out)
{
	cJSON *o = cJSON_CreateObject(), *pm, *pr, *e;
	char ts[32];
	int r = FGW_ERR_NOMEM;
	if (o == NULL)
		return FGW_ERR_NOMEM;
	cJSON_AddStringToObject(o, "transactionId", row->id);
	cJSON_AddStringToObject(o, "status", row->status);
	cJSON_AddNumberToObject(o, "amount", (double)row->amount);
	cJSON_AddStringToObject(o, "currency", row->currency);
	if (row->reservation_id[0])
		cJSON_AddStringToObject(o, "reservationId", row->reservation_id);
	if (row->token[0] && (pm = cJSON_AddObjectToObject(o, "paymentMethod"))) {
		cJSON_AddStringToObject(pm, "token", row->token);
		cJSON_AddStringToObject(pm, "brand", row->brand[0] ? row->brand : "Unknown");
		cJSON_AddStringToObject(pm, "last4", row->last4);
		cJSON_AddNumberToObject(pm, "expMonth", row->exp_month);
		cJSON_AddNumberToObject(pm, "expYear", row->exp_year);
	}
	if ((row->processor[0] || proc_name) &&
	    (pr = cJSON_AddObjectToObject(o, "processor")) != NULL) {
		cJSON_AddStringToObject(pr, "name",
		                        row->processor[0] ? row->processor : proc_name);
		if (row->processor_ref[0])
			cJSON_AddStringToObject(pr, "reference", row->processor_ref);
	}
	add_raw_json(o, "nextAction", row->next_action_json);
	if (row->error_code[0] && (e = cJSON_AddObjectToObject(o, "error"))) {
		cJSON_AddStringToObject(e, "code", row->error_code);
		cJSON_AddStringToObject(e, "message", row->error_message);
	}
	if (row->rule_decision[0])
		cJSON_AddStringToObject(o, "ruleDecision", row->rule_decision);
	add_raw_json(o, "metadata", row->metadata_json);
	if (fgw_iso8601(row->created_at, ts, sizeof(ts)) == 0)
		cJSON_AddStringToObject(o, "createdAt", ts);
	if (fgw_iso8601(row->updated_at, ts, sizeof(ts)) == 0)
		cJSON_AddStringToObject(o, "updatedAt", ts);
	if ((*out = cJSON_PrintUnformatted(o)) != NULL)
		r = FGW_OK;
	cJSON_Delete(o);
	return r;
}
