/*
 * processors/sandbox.c — the adapter type for flair-sandbox (docs/sandbox.md).
 *
 * build() turns a proc_request into POST {base_url}/v1/charges with a JSON
 * body (card sealed to the sandbox key, reply key for the sealed answer).
 * parse_reply() maps the answer: HTTP 200 carries the result JSON (already
 * opened by the pipeline), anything else the sandbox's plain error body.
 * The body of a non-200 answer is never read: the status alone decides,
 * and every message we return is one of the fixed strings below, so
 * nothing the processor wrote reaches a log or a client.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/util.h"
#include "processors/adapter.h"

#define SBX_MAX_AMOUNT 9007199254740991LL /* 2^53 - 1: exact in JSON */
#define SBX_MAX_URL 2048

/* declineCode -> our error code. The last row is the default. */
static const struct {
	const char *decline_code;
	const char *code;
	const char *message;
} decline_table[] = {
	{ "card_declined", "PAYMENT_CARD_DECLINED", "The card was declined." },
	{ "incorrect_number", "PAYMENT_CARD_DECLINED",
	  "The card number is incorrect." },
	{ "expired_card", "PAYMENT_CARD_DECLINED", "The card has expired." },
	{ "insufficient_funds", "PAYMENT_INSUFFICIENT_FUNDS",
	  "The card has insufficient funds." },
	{ NULL, "PAYMENT_CARD_DECLINED", "The card was declined." },
};

#define MSG_SUCCEEDED "The payment succeeded."
#define MSG_ACTION "The payment requires customer authentication."
#define MSG_REJECTED "The payment processor rejected the request."
#define MSG_PROC_ERROR "The payment processor reported an error."
#define MSG_UNKNOWN "The payment outcome is not known yet."
#define CODE_FAILED "PAYMENT_PROCESSING_FAILED"

/* ---- build ------------------------------------------------------------- */

static int
fmt_alloc(char **out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
fmt_alloc(char **out, const char *fmt, ...)
{
	va_list ap;
	int n;

	*out = NULL;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return FGW_ERR_INTERNAL;
	if ((*out = malloc((size_t)n + 1)) == NULL)
		return FGW_ERR_NOMEM;
	va_start(ap, fmt);
	vsnprintf(*out, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return FGW_OK;
}

/* Printable ASCII without spaces, 1..max: safe inside a header line. */
static int
token_ok(const char *s, size_t max)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return 0;
	return 1;
}

static int
currency_ok(const char *s)
{
	if (s == NULL || strlen(s) != 3)
		return 0;
	for (int i = 0; i < 3; i++)
		if (s[i] < 'A' || s[i] > 'Z')
			return 0;
	return 1;
}

static int
http_url_ok(const char *s, size_t max)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n > max)
		return 0;
	if (strncasecmp(s, "http://", 7) != 0 && strncasecmp(s, "https://", 8) != 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* Adds a string member; NULL values are skipped. */
static int
add_str(cJSON *obj, const char *name, const char *value)
{
	if (value == NULL)
		return FGW_OK;
	return cJSON_AddStringToObject(obj, name, value) ? FGW_OK : FGW_ERR_NOMEM;
}

static int
build_body(const struct proc_request *req, const char *card_key_id,
           int capture, char **out)
{
	cJSON *root = NULL, *card, *reply, *cust;
	int r = FGW_ERR_NOMEM;

	*out = NULL;
	if ((root = cJSON_CreateObject()) == NULL)
		goto out;
	if ((r = add_str(root, "reference", req->txn_id)) != 0)
		goto out;
	r = FGW_ERR_NOMEM;
	if (!cJSON_AddNumberToObject(root, "amount", (double)req->amount) ||
	    (r = add_str(root, "currency", req->currency)) != 0)
		goto out;
	r = FGW_ERR_NOMEM;
	if (!cJSON_AddBoolToObject(root, "capture", capture) ||
	    (card = cJSON_AddObjectToObject(root, "card")) == NULL ||
	    (r = add_str(card, "keyId", card_key_id)) != 0 ||
	    (r = add_str(card, "sealed", req->sealed_card_b64)) != 0)
		goto out;
	r = FGW_ERR_NOMEM;
	if ((reply = cJSON_AddObjectToObject(root, "replyKey")) == NULL ||
	    (r = add_str(reply, "keyId", req->reply_key_id)) != 0 ||
	    (r = add_str(reply, "publicKey", req->reply_public_b64)) != 0 ||
	    (r = add_str(root, "description", req->description)) != 0)
		goto out;
	if (req->customer_email != NULL) {
		r = FGW_ERR_NOMEM;
		if ((cust = cJSON_AddObjectToObject(root, "customer")) == NULL ||
		    (r = add_str(cust, "email", req->customer_email)) != 0)
			goto out;
	}
	if ((r = add_str(root, "returnUrl", req->return_url)) != 0 ||
	    (req->require_3ds && (r = add_str(root, "threeDS", "required")) != 0))
		goto out;
	r = FGW_ERR_NOMEM;
	if ((*out = cJSON_PrintUnformatted(root)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(root);
	return r;
}

static int
sbx_build(const struct proc_config *cfg, const struct proc_request *req,
          struct proc_http *out)
{
	const char *key_id;
	char *json = NULL;
	size_t blen;
	int capture, r, h = 0;

	if (cfg == NULL || req == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	key_id = req->sealed_key_id;
	if (key_id == NULL && cfg->has_pubkey)
		key_id = cfg->pubkey.key_id;
	if (req->operation == NULL || strcmp(req->operation, "purchase") == 0)
		capture = 1;
	else if (strcmp(req->operation, "authorize") == 0)
		capture = 0;
	else
		return FGW_ERR_INVALID;
	if (!http_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !token_ok(req->idempotency_key, 255) ||
	    !token_ok(req->txn_id, 64) || !currency_ok(req->currency) ||
	    req->amount <= 0 || req->amount > SBX_MAX_AMOUNT ||
	    !token_ok(key_id, 63) || req->sealed_card_b64 == NULL ||
	    req->sealed_card_b64[0] == '\0' || !token_ok(req->reply_key_id, 63) ||
	    !token_ok(req->reply_public_b64, 128) ||
	    (req->return_url != NULL && !http_url_ok(req->return_url, SBX_MAX_URL)))
		return FGW_ERR_INVALID;
	if (cfg->secret[0] != '\0' && !token_ok(cfg->secret, sizeof(cfg->secret) - 1))
		return FGW_ERR_INVALID;

	blen = strlen(cfg->base_url);
	while (blen > 0 && cfg->base_url[blen - 1] == '/')
		blen--;
	memcpy(out->method, "POST", 5);
	if ((r = fmt_alloc(&out->url, "%.*s/v1/charges", (int)blen,
	                   cfg->base_url)) != 0 ||
	    (r = fmt_alloc(&out->headers[h++], "Content-Type: application/json")) !=
	        0 ||
	    (r = fmt_alloc(&out->headers[h++], "Accept: application/json")) != 0 ||
	    (r = fmt_alloc(&out->headers[h++], "Idempotency-Key: %s",
	                   req->idempotency_key)) != 0)
		goto out;
	if (cfg->secret[0] != '\0' &&
	    (r = fmt_alloc(&out->headers[h++], "Authorization: Bearer %s",
	                   cfg->secret)) != 0)
		goto out;
	if ((r = build_body(req, key_id, capture, &json)) != 0)
		goto out;
	out->body = json;
	out->body_len = strlen(json);
	json = NULL; /* owned by out now */
	r = FGW_OK;
out:
	free(json);
	if (r != FGW_OK)
		proc_http_clear(out);
	return r;
}

/* ---- parse_reply ------------------------------------------------------- */

static void
set_result(struct proc_result *out, enum proc_outcome o, const char *code,
           const char *message)
{
	out->outcome = o;
	fgw_strlcpy(out->code, code, sizeof(out->code));
	fgw_strlcpy(out->message, message, sizeof(out->message));
}

/* Charge ids become our stored reference: a plain identifier or nothing. */
static int
charge_id_ok(const char *s, size_t cap)
{
	size_t n;

	if (s == NULL || (n = strlen(s)) == 0 || n >= cap)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

static const char *
str_member(const cJSON *obj, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* Parses the whole of body[0..len) as one JSON value, nothing after it. */
static cJSON *
parse_exact(const char *body, size_t len)
{
	const char *end = NULL;
	cJSON *v;

	if (body == NULL || len == 0)
		return NULL;
	v = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (v == NULL)
		return NULL;
	while (end != NULL && end < body + len &&
	       (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
		end++;
	if (end == NULL || end != body + len) {
		cJSON_Delete(v);
		return NULL;
	}
	return v;
}

/* nextAction -> our own copy holding only the fields we understand. */
static int
next_action_copy(const cJSON *na, char **out)
{
	const char *type = str_member(na, "type");
	const char *url = str_member(na, "url");
	cJSON *copy = NULL;
	char *text = NULL;
	int r = FGW_ERR_INVALID;

	*out = NULL;
	if (!cJSON_IsObject(na) || type == NULL ||
	    strcmp(type, "redirect_to_url") != 0 || !http_url_ok(url, SBX_MAX_URL))
		return FGW_ERR_INVALID;
	r = FGW_ERR_NOMEM;
	if ((copy = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(copy, "type", type) ||
	    !cJSON_AddStringToObject(copy, "url", url) ||
	    (text = cJSON_PrintUnformatted(copy)) == NULL)
		goto out;
	/* cJSON's allocator may be hooked; proc_result_clear uses free(). */
	if ((*out = strdup(text)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_free(text);
	cJSON_Delete(copy);
	return r;
}

static int
parse_ok_body(const char *body, size_t len, struct proc_result *out)
{
	cJSON *root = parse_exact(body, len);
	const char *id, *status;
	const cJSON *amount;
	int r = FGW_OK;

	if (!cJSON_IsObject(root))
		goto unknown;
	id = str_member(root, "id");
	status = str_member(root, "status");
	amount = cJSON_GetObjectItemCaseSensitive(root, "amount");
	if (!charge_id_ok(id, sizeof(out->reference)) || status == NULL ||
	    !cJSON_IsNumber(amount) || str_member(root, "currency") == NULL ||
	    str_member(root, "reference") == NULL)
		goto unknown;
	fgw_strlcpy(out->reference, id, sizeof(out->reference));

	if (strcmp(status, "succeeded") == 0) {
		set_result(out, PROC_SUCCEEDED, "", MSG_SUCCEEDED);
	} else if (strcmp(status, "declined") == 0) {
		const char *dc = str_member(root, "declineCode");
		size_t i = 0;
		while (decline_table[i].decline_code != NULL &&
		       (dc == NULL || strcmp(decline_table[i].decline_code, dc) != 0))
			i++;
		set_result(out, PROC_DECLINED, decline_table[i].code,
		           decline_table[i].message);
	} else if (strcmp(status, "requires_action") == 0) {
		r = next_action_copy(cJSON_GetObjectItemCaseSensitive(root,
		                                                      "nextAction"),
		                     &out->next_action_json);
		if (r == FGW_ERR_INVALID) {
			r = FGW_OK;
			goto unknown;
		}
		if (r != FGW_OK)
			goto unknown;
		set_result(out, PROC_REQUIRES_ACTION, "", MSG_ACTION);
	} else {
		goto unknown;
	}
	cJSON_Delete(root);
	return FGW_OK;
unknown:
	cJSON_Delete(root);
	free(out->next_action_json);
	out->next_action_json = NULL;
	set_result(out, PROC_UNKNOWN, CODE_FAILED, MSG_UNKNOWN);
	return r;
}

static int
sbx_parse_reply(const struct proc_config *cfg, long http_status,
                const char *body, size_t len, struct proc_result *out)
{
	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (http_status == 200)
		return parse_ok_body(body, len, out);
	if (http_status >= 400 && http_status <= 499)
		set_result(out, PROC_FAILED, CODE_FAILED, MSG_REJECTED);
	else if (http_status >= 500 && http_status <= 599)
		/* The sandbox documents 5xx as "not charged". */
		set_result(out, PROC_FAILED, CODE_FAILED, MSG_PROC_ERROR);
	else
		set_result(out, PROC_UNKNOWN, CODE_FAILED, MSG_UNKNOWN);
	return FGW_OK;
}

const struct proc_type proc_type_sandbox = {
	.name = "sandbox",
	.seals_reply = 1,
	.build = sbx_build,
	.parse_reply = sbx_parse_reply,
};
