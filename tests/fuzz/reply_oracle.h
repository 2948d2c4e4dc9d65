/*
 * tests/fuzz/reply_oracle.h — the body of the fuzz_reply_* targets: one
 * adapter type's reply parsers (parse_reply for the first charge,
 * parse_op for status, capture, cancel and refund answers).
 *
 * A target defines ADAPTER (the type name) and, optionally,
 * reply_setup(struct proc_config *) for the type's configuration, then
 * includes this file.
 *
 * Input: byte 0 picks the parser (0 parse_reply, 1..4 parse_op with
 * STATUS, CAPTURE, CANCEL, REFUND; for a type that saves processor cards,
 * 0xF0..0xF7 parse_customer and 0xF8..0xFF parse_attach), bytes 1-2 the
 * HTTP status (mostly one
 * a processor sends, sometimes any 100..599), the rest is the body.
 *
 * Oracle (what the pipeline and the reconciler rely on, docs/adapters.md):
 * results are 0 or FGW_ERR_NOMEM; the outcome is one of the enum; only a
 * 2xx answer says a charge was made (SUCCEEDED, AUTHORIZED); NOT_FOUND
 * only answers a status question; a first-charge success carries the
 * processor's reference; a reference is "" or a plain identifier (it goes
 * into operation URLs); next_action_json is present exactly for
 * REQUIRES_ACTION and is the one redirect shape; code and message are
 * NUL-terminated and the message never holds a 12+ digit run.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "processors/adapter.h"
#include "processors/proc_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)           \
	do {                      \
		if (!(cond))          \
			__builtin_trap(); \
	} while (0)

static int
has_pan_run(const char *s)
{
	size_t run = 0;
	for (; *s; s++) {
		run = (*s >= '0' && *s <= '9') ? run + 1 : 0;
		if (run >= 12)
			return 1;
	}
	return 0;
}

static void
check_result(int r, int first_charge, enum proc_op op, long status,
             const struct proc_result *res)
{
	int two = status >= 200 && status <= 299;

	check(r == 0 || r == FGW_ERR_NOMEM);
	if (r != 0)
		return;
	check(res->outcome >= PROC_SUCCEEDED && res->outcome <= PROC_NOT_FOUND);
	if (res->outcome == PROC_SUCCEEDED || res->outcome == PROC_AUTHORIZED)
		check(two);
	if (res->outcome == PROC_NOT_FOUND)
		check(!first_charge && op == PROC_OP_STATUS);
	if (first_charge &&
	    (res->outcome == PROC_SUCCEEDED || res->outcome == PROC_AUTHORIZED))
		check(res->reference[0] != '\0');
	check(memchr(res->code, '\0', sizeof(res->code)) != NULL);
	check(memchr(res->message, '\0', sizeof(res->message)) != NULL);
	check(memchr(res->reference, '\0', sizeof(res->reference)) != NULL);
	check(memchr(res->txn_ref, '\0', sizeof(res->txn_ref)) != NULL);
	check(res->reference[0] == '\0' ||
	      proc_id_ok(res->reference, sizeof(res->reference)));
	check(!has_pan_run(res->message));
	check(res->amount_refunded >= 0);
	if (res->outcome == PROC_REQUIRES_ACTION) {
		cJSON *o = cJSON_Parse(res->next_action_json ? res->next_action_json : "");
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
		const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "url");
		check(o != NULL);
		check(cJSON_IsString(type));
		/* A redirect with a checked URL, or the customer's browser
		 * confirming at the processor (Stripe.js): nothing to follow. */
		if (strcmp(type->valuestring, "use_stripe_sdk") == 0)
			check(url == NULL && two);
		else
			check(strcmp(type->valuestring, "redirect_to_url") == 0 &&
			      cJSON_IsString(url) && proc_url_ok(url->valuestring, 2048));
		cJSON_Delete(o);
	} else {
		check(res->next_action_json == NULL);
	}
	/* A client secret only from a 2xx intent, and only that intent's. */
	check(memchr(res->client_secret, '\0', sizeof(res->client_secret)) != NULL);
	if (res->client_secret[0] != '\0') {
		size_t n = strlen(res->reference);
		check(two && n > 0 && strncmp(res->client_secret, res->reference, n) == 0 &&
		      strncmp(res->client_secret + n, "_secret_", 8) == 0 &&
		      proc_id_ok(res->client_secret, sizeof(res->client_secret)));
	}
	check(res->amount >= 0);
	check(res->currency[0] == '\0' ||
	      (strlen(res->currency) == 3 &&
	       strspn(res->currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 3));
}

/* A saved card's answers: only a 2xx makes or attaches anything, and
 * what is kept is a plain id and well-formed display fields. */
static void
check_save(const struct proc_type *pt, const struct proc_config *cfg, int attach,
           long status, const char *body, size_t len)
{
	struct proc_saved_card card;
	struct proc_result res;
	int r;

	memset(&res, 0, sizeof(res));
	r = attach ? pt->parse_attach(cfg, status, body, len, "cus_fuzz1", &card, &res)
	           : pt->parse_customer(cfg, status, body, len, &res);
	check(r == 0 || r == FGW_ERR_NOMEM);
	if (r == 0) {
		check(res.outcome == PROC_SUCCEEDED || res.outcome == PROC_FAILED ||
		      res.outcome == PROC_UNKNOWN);
		if (res.outcome == PROC_SUCCEEDED)
			check(status >= 200 && status <= 299);
		check(res.next_action_json == NULL);
		check(memchr(res.code, '\0', sizeof(res.code)) != NULL);
		check(!has_pan_run(res.message));
		if (!attach && res.outcome == PROC_SUCCEEDED)
			check(proc_id_ok(res.reference, sizeof(res.reference)));
		if (attach && res.outcome == PROC_SUCCEEDED) {
			check(proc_id_ok(card.id, sizeof(card.id)));
			check(strlen(card.last4) == 4 && strspn(card.last4, "0123456789") == 4);
			check(card.exp_month >= 1 && card.exp_month <= 12);
			check(card.exp_year >= 1000 && card.exp_year <= 9999);
			check(memchr(card.brand, '\0', sizeof(card.brand)) != NULL);
		}
	}
	proc_result_clear(&res);
}

/* A detach's answer: only a 2xx detaches; a refusal says whether the card
 * is gone already (the row may go) or was refused (it stays). */
static void
check_detach(const struct proc_type *pt, const struct proc_config *cfg, long status,
             const char *body, size_t len)
{
	struct proc_result res;
	int r;

	memset(&res, 0, sizeof(res));
	r = pt->parse_detach(cfg, status, body, len, &res);
	check(r == 0);
	check(res.outcome == PROC_SUCCEEDED || res.outcome == PROC_FAILED ||
	      res.outcome == PROC_UNKNOWN);
	if (res.outcome == PROC_SUCCEEDED)
		check(status >= 200 && status <= 299 &&
		      proc_id_ok(res.reference, sizeof(res.reference)));
	if (res.outcome == PROC_FAILED)
		check(strcmp(res.code, "PAYMENT_METHOD_NOT_FOUND") == 0 ||
		      strcmp(res.code, "PAYMENT_METHOD_REFUSED") == 0);
	if (strcmp(res.code, "PAYMENT_METHOD_NOT_FOUND") == 0)
		check(status == 400 || status == 404);
	check(res.next_action_json == NULL && res.client_secret[0] == '\0');
	check(!has_pan_run(res.message));
	proc_result_clear(&res);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long common[] = { 200, 201, 202, 204, 301, 302, 400, 401, 402,
		                           403, 404, 409, 422, 429, 500, 502, 503, 504 };
	static const struct proc_type *pt;
	static struct proc_config cfg;
	struct proc_result res;
	enum proc_op op = PROC_OP_STATUS;
	unsigned sel;
	long status;
	char *body;
	size_t len;
	int r;

	if (pt == NULL) {
		if (sodium_init() < 0 || (pt = proc_type_find(ADAPTER)) == NULL)
			abort();
		memset(&cfg, 0, sizeof(cfg));
		snprintf(cfg.name, sizeof(cfg.name), "%s", ADAPTER);
		snprintf(cfg.type, sizeof(cfg.type), "%s", ADAPTER);
		snprintf(cfg.base_url, sizeof(cfg.base_url), "http://127.0.0.1:9");
		cfg.timeout_ms = 1000;
#ifdef REPLY_SETUP
		reply_setup(&cfg);
#endif
	}
	if (size < 3 || size > 1 << 16)
		return 0;
	sel = ((unsigned)data[1] << 8) | data[2];
	status = (sel & 0x8000) ? 100 + (long)(sel % 500)
	                        : common[sel % (sizeof(common) / sizeof(common[0]))];
	len = size - 3;
	/* exactly the body bytes, so ASan sees a read past them */
	if ((body = malloc(len ? len : 1)) == NULL)
		return 0;
	memcpy(body, data + 3, len);
	memset(&res, 0, sizeof(res));
	if (data[0] >= 0xF0 && pt->parse_customer != NULL && pt->parse_attach != NULL) {
		check_save(pt, &cfg, data[0] >= 0xF8, status, body, len);
	} else if (data[0] >= 0xE8 && pt->parse_detach != NULL) {
		check_detach(pt, &cfg, status, body, len);
	} else if (data[0] % 5 == 0) {
		r = pt->parse_reply(&cfg, status, body, len, &res);
		check_result(r, 1, op, status, &res);
	} else {
		op = (enum proc_op)(data[0] % 5 - 1);
		r = pt->parse_op(&cfg, op, status, body, len, &res);
		check_result(r, 0, op, status, &res);
	}
	proc_result_clear(&res);
	free(body);
	return 0;
}
