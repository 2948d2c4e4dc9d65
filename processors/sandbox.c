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
#include "crypto/mac.h"
#include "core/json.h"
#include "core/util.h"
#include "processors/adapter.h"
#include "processors/proc_util.h"

#define SBX_MAX_AMOUNT 9007199254740991LL /* 2^53 - 1: exact in JSON */
#define SBX_MAX_URL 2048

/* declineCode -> our error code. The last row is the default. */
static const struct {
	const char *decline_code;
	const char *code;
	const char *message;
} decline_table[] = {
	{ "card_declined", "PAYMENT_CARD_DECLINED", "The card was declined." },
	{ "incorrect_number", "PAYMENT_CARD_DECLINED", "The card number is incorrect." },
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
#define MSG_AUTHORIZED "The payment was authorized."
#define MSG_CANCELED "The authorization was canceled."
#define MSG_NOT_FOUND "The processor has no charge for this transaction."
#define CODE_FAILED "PAYMENT_PROCESSING_FAILED"

/* ---- build ------------------------------------------------------------- */

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

/* Adds a string member; NULL values are skipped. */
static int
add_str(cJSON *obj, const char *name, const char *value)
{
	if (value == NULL)
		return FGW_OK;
	return cJSON_AddStringToObject(obj, name, value) ? FGW_OK : FGW_ERR_NOMEM;
}

static int
build_body(const struct proc_request *req, const char *card_key_id, int capture,
           char **out)
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
	    (r = add_str(card, req->card_boxed ? "boxed" : "sealed", req->sealed_card_b64)) !=
	        0)
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

/* The rest of a request whose method and URL are set (r 0) or that
 * failed (r): the JSON body (owned; NULL for none) with its content type,
 * and the common headers; out is cleared on failure. */
static int
finish_request(const struct proc_config *cfg, const char *key, char *body,
               struct proc_http *out, int r)
{
	int h = 0;

	if (r == FGW_OK && body != NULL)
		r = proc_fmt_alloc(&out->headers[h++], "Content-Type: application/json");
	if (r == FGW_OK)
		r = proc_common_headers(cfg, key, out, &h);
	if (r == FGW_OK && body != NULL) {
		out->body = body;
		out->body_len = strlen(body);
		body = NULL; /* owned by out now */
	}
	free(body);
	if (r != FGW_OK)
		proc_http_clear(out);
	return r;
}

static int
sbx_build(const struct proc_config *cfg, const struct proc_request *req,
          struct proc_http *out)
{
	const char *key_id;
	char *json = NULL;
	size_t blen;
	int capture, r;

	if (cfg == NULL || req == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	key_id = req->sealed_key_id;
	if (key_id == NULL && cfg->has_pubkey)
		key_id = cfg->pubkey.key_id;
	if ((capture = proc_captures(req->operation)) < 0)
		return FGW_ERR_INVALID;
	if (!proc_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !proc_token_ok(req->idempotency_key, 255) || !proc_token_ok(req->txn_id, 64) ||
	    !currency_ok(req->currency) || req->amount <= 0 || req->amount > SBX_MAX_AMOUNT ||
	    !proc_token_ok(key_id, 63) || req->sealed_card_b64 == NULL ||
	    req->sealed_card_b64[0] == '\0' || !proc_token_ok(req->reply_key_id, 63) ||
	    !proc_token_ok(req->reply_public_b64, 128) ||
	    (req->return_url != NULL && !proc_url_ok(req->return_url, SBX_MAX_URL)))
		return FGW_ERR_INVALID;
	if (cfg->secret[0] != '\0' && !proc_token_ok(cfg->secret, sizeof(cfg->secret) - 1))
		return FGW_ERR_INVALID;

	blen = proc_base_len(cfg->base_url);
	memcpy(out->method, "POST", 5);
	if ((r = proc_fmt_alloc(&out->url, "%.*s/v1/charges", (int)blen, cfg->base_url)) == 0)
		r = build_body(req, key_id, capture, &json);
	return finish_request(cfg, req->idempotency_key, json, out, r);
}

/* ---- parse_reply ------------------------------------------------------- */

static int
parse_ok_body(const char *body, size_t len, struct proc_result *out)
{
	cJSON *root = fgw_json_parse_strict(body, len);
	const char *id, *status;
	const cJSON *amount, *captured, *refunded;
	int64_t whole;
	int r = FGW_OK;

	if (!cJSON_IsObject(root))
		goto unknown;
	id = proc_json_str(root, "id");
	status = proc_json_str(root, "status");
	amount = cJSON_GetObjectItemCaseSensitive(root, "amount");
	if (!proc_id_ok(id, sizeof(out->reference)) || status == NULL ||
	    fgw_json_int(amount, 0, SBX_MAX_AMOUNT, &whole) != 0 ||
	    proc_json_str(root, "currency") == NULL ||
	    proc_json_str(root, "reference") == NULL)
		goto unknown;
	fgw_strlcpy(out->reference, id, sizeof(out->reference));
	/* Too long to be one of ours: it then matches no transaction. */
	if (fgw_strlcpy(out->txn_ref, proc_json_str(root, "reference"),
	                sizeof(out->txn_ref)) != FGW_OK)
		fgw_strlcpy(out->txn_ref, "?", sizeof(out->txn_ref));

	refunded = cJSON_GetObjectItemCaseSensitive(root, "amountRefunded");
	if (refunded != NULL) {
		/* an amount that is not a whole number of minor units is not ours */
		if (fgw_json_int(refunded, 0, SBX_MAX_AMOUNT, &whole) != 0)
			goto unknown;
		out->amount_refunded = whole;
	}
	captured = cJSON_GetObjectItemCaseSensitive(root, "captured");
	if (strcmp(status, "succeeded") == 0 && cJSON_IsFalse(captured)) {
		proc_set_result(out, PROC_AUTHORIZED, "", MSG_AUTHORIZED);
	} else if (strcmp(status, "succeeded") == 0) {
		proc_set_result(out, PROC_SUCCEEDED, "", MSG_SUCCEEDED);
	} else if (strcmp(status, "canceled") == 0) {
		proc_set_result(out, PROC_CANCELED, "", MSG_CANCELED);
	} else if (strcmp(status, "declined") == 0) {
		const char *dc = proc_json_str(root, "declineCode");
		size_t i = 0;
		while (decline_table[i].decline_code != NULL &&
		       (dc == NULL || strcmp(decline_table[i].decline_code, dc) != 0))
			i++;
		proc_set_result(out, PROC_DECLINED, decline_table[i].code,
		                decline_table[i].message);
	} else if (strcmp(status, "requires_action") == 0) {
		r = proc_next_action(cJSON_GetObjectItemCaseSensitive(root, "nextAction"),
		                     &out->next_action_json);
		if (r == FGW_ERR_INVALID) {
			r = FGW_OK;
			goto unknown;
		}
		if (r != FGW_OK)
			goto unknown;
		proc_set_result(out, PROC_REQUIRES_ACTION, "", MSG_ACTION);
	} else {
		goto unknown;
	}
	cJSON_Delete(root);
	return FGW_OK;
unknown:
	cJSON_Delete(root);
	free(out->next_action_json);
	out->next_action_json = NULL;
	proc_set_result(out, PROC_UNKNOWN, CODE_FAILED, MSG_UNKNOWN);
	return r;
}

static int
sbx_parse_reply(const struct proc_config *cfg, long http_status, const char *body,
                size_t len, struct proc_result *out)
{
	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (http_status == 200)
		return parse_ok_body(body, len, out);
	if (http_status >= 400 && http_status <= 499)
		proc_set_result(out, PROC_FAILED, CODE_FAILED, MSG_REJECTED);
	else if (http_status >= 500 && http_status <= 599)
		/* The sandbox documents 5xx as "not charged". */
		proc_set_result(out, PROC_FAILED, CODE_FAILED, MSG_PROC_ERROR);
	else
		proc_set_result(out, PROC_UNKNOWN, CODE_FAILED, MSG_UNKNOWN);
	return FGW_OK;
}

/* ---- operations -------------------------------------------------------- */

/* The sandbox's error codes of operation answers -> ours. The last row is
 * the default for any other 4xx. */
static const struct {
	const char *sbx_code;
	const char *code;
	const char *message;
} op_error_table[] = {
	{ "invalid_state", "INVALID_TRANSACTION_STATE",
	  "The processor refused the operation in the charge's state." },
	{ "refund_exceeds_captured", "REFUND_EXCEEDS_CAPTURED",
	  "The refund is more than what is left to refund." },
	{ "not_found", "PAYMENT_PROCESSING_FAILED",
	  "The processor does not know the charge." },
	{ NULL, "PAYMENT_PROCESSING_FAILED", MSG_REJECTED },
};

static int
sbx_build_op(const struct proc_config *cfg, enum proc_op op,
             const struct proc_op_request *req, struct proc_http *out)
{
	char *body = NULL;
	size_t blen;
	int r;

	if (cfg == NULL || req == NULL || out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (!proc_url_ok(cfg->base_url, sizeof(cfg->base_url) - 1) ||
	    !proc_token_ok(req->idempotency_key, 255) ||
	    (cfg->secret[0] != '\0' && !proc_token_ok(cfg->secret, sizeof(cfg->secret) - 1)))
		return FGW_ERR_INVALID;
	if (op != PROC_OP_STATUS && !proc_id_ok(req->reference, 96))
		return FGW_ERR_INVALID;
	if (op == PROC_OP_REFUND && (req->amount <= 0 || req->amount > SBX_MAX_AMOUNT))
		return FGW_ERR_INVALID;
	blen = proc_base_len(cfg->base_url);
	switch (op) {
	case PROC_OP_STATUS:
		/* By key, not by id: after a lost answer we never learned the
		 * id. Keys with URL-query metacharacters are refused rather than
		 * escaped (ours are transaction ids). */
		if (strpbrk(req->idempotency_key, "&#%+?=") != NULL)
			return FGW_ERR_INVALID;
		memcpy(out->method, "GET", 4);
		r = proc_fmt_alloc(&out->url, "%.*s/v1/charges?idempotencyKey=%s", (int)blen,
		                   cfg->base_url, req->idempotency_key);
		break;
	case PROC_OP_CAPTURE:
	case PROC_OP_CANCEL:
		memcpy(out->method, "POST", 5);
		r = proc_fmt_alloc(&out->url, "%.*s/v1/charges/%s/%s", (int)blen, cfg->base_url,
		                   req->reference, op == PROC_OP_CAPTURE ? "capture" : "cancel");
		if (r == 0)
			r = proc_fmt_alloc(&body, "{}");
		break;
	case PROC_OP_REFUND:
		memcpy(out->method, "POST", 5);
		r = proc_fmt_alloc(&out->url, "%.*s/v1/charges/%s/refunds", (int)blen,
		                   cfg->base_url, req->reference);
		if (r == 0)
			r = proc_fmt_alloc(&body, "{\"amount\":%lld}", (long long)req->amount);
		break;
	default:
		return FGW_ERR_INVALID;
	}
	return finish_request(cfg, req->idempotency_key, body, out, r);
}

static int
sbx_parse_op(const struct proc_config *cfg, enum proc_op op, long http_status,
             const char *body, size_t len, struct proc_result *out)
{
	cJSON *root = NULL;
	const cJSON *err;
	const char *code = NULL;
	size_t i = 0;

	(void)cfg;
	if (out == NULL)
		return FGW_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (http_status == 200)
		return parse_ok_body(body, len, out);
	if (op == PROC_OP_STATUS && http_status == 404) {
		proc_set_result(out, PROC_NOT_FOUND, CODE_FAILED, MSG_NOT_FOUND);
		return FGW_OK;
	}
	if (http_status < 400 || http_status > 499) {
		/* 5xx on an operation: not done; the caller may try again with
		 * the same key. Anything else: unknown. */
		proc_set_result(out,
		                http_status >= 500 && http_status <= 599 ? PROC_FAILED
		                                                         : PROC_UNKNOWN,
		                CODE_FAILED, http_status >= 500 ? MSG_PROC_ERROR : MSG_UNKNOWN);
		return FGW_OK;
	}
	/* Only the error code is read from a 4xx body, and only to pick a
	 * row of the table: its text never goes further. */
	root = fgw_json_parse_strict(body, len);
	err = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (cJSON_IsObject(err))
		code = proc_json_str(err, "code");
	while (op_error_table[i].sbx_code != NULL &&
	       (code == NULL || strcmp(op_error_table[i].sbx_code, code) != 0))
		i++;
	proc_set_result(out, PROC_FAILED, op_error_table[i].code, op_error_table[i].message);
	cJSON_Delete(root);
	return FGW_OK;
}

/* flair-sandbox's webhook events (docs/sandbox.md): it names them as
 * Stripe does and says in the object how far the payment went. Each moves
 * a payment no further than its object proves. */
static int
sbx_map_event(const cJSON *event, struct proc_event *out)
{
	const char *type = proc_json_str(event, "type");
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(event, "data"), "object");

	proc_event_init(out);
	if (type == NULL || !cJSON_IsObject(obj))
		return FGW_ERR_INVALID;
	proc_event_refs(obj, out, 1);
	out->kind = PROC_EVENT_MOVE;
	if (strcmp(type, "payment_intent.succeeded") == 0 ||
	    strcmp(type, "charge.succeeded") == 0) {
		out->target = proc_capture_proven(obj) ? TXN_SUCCEEDED : TXN_AUTHORIZED;
	} else if (strcmp(type, "payment_intent.amount_capturable_updated") == 0) {
		/* Money held for capture: an authorization, never a capture. */
		if (proc_json_amount(obj, "amount_capturable") > 0)
			out->target = TXN_AUTHORIZED;
	} else if (strcmp(type, "charge.captured") == 0) {
		if (proc_capture_proven(obj))
			out->target = TXN_SUCCEEDED;
	} else if (strcmp(type, "payment_intent.payment_failed") == 0 ||
	           strcmp(type, "charge.failed") == 0) {
		out->target = TXN_DECLINED;
		fgw_strlcpy(out->code, "PAYMENT_CARD_DECLINED", sizeof(out->code));
		fgw_strlcpy(out->message, "Your card was declined", sizeof(out->message));
	} else if (strcmp(type, "payment_intent.requires_action") == 0) {
		out->target = TXN_REQUIRES_ACTION;
		out->next_action = cJSON_GetObjectItemCaseSensitive(obj, "next_action");
	} else if (strcmp(type, "charge.refunded") == 0 &&
	           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, "refunded"))) {
		const cJSON *done = cJSON_GetObjectItemCaseSensitive(obj, "amount_refunded");
		const cJSON *amount = cJSON_GetObjectItemCaseSensitive(obj, "amount");
		/* The whole payment, and no amount it carries says otherwise. */
		out->amount = proc_json_amount(obj, "amount");
		out->refunded_total = proc_json_amount(obj, "amount_refunded");
		if ((done == NULL || out->refunded_total >= 0) &&
		    (amount == NULL ||
		     (out->amount >= 0 && (done == NULL || out->refunded_total >= out->amount))))
			out->target = TXN_REFUNDED;
	}
	if (out->target == TXN_STATE_NONE)
		out->kind = PROC_EVENT_IGNORE;
	return FGW_OK;
}

const struct proc_type proc_type_sandbox = {
	.name = "sandbox",
	.seals_reply = 1,
	.speaks_box = 1,
	.build = sbx_build,
	.parse_reply = sbx_parse_reply,
	.build_op = sbx_build_op,
	.parse_op = sbx_parse_op,
	.map_event = sbx_map_event,
	.webhook_header = MAC_HEADER_SANDBOX,
};
