/*
 * tools/sandbox/ops.c — operations on an existing charge: capture and
 * cancel of an authorization (a charge made with "capture": false), and
 * refunds of a captured charge, never more than was captured. Answers are
 * the charge's plain result JSON (docs/sandbox.md). Operations are not
 * faulted: the fault modes exercise the first charge, where a lost answer
 * can double a charge. Latency applies: the ledger changes at once and the
 * answer waits, so a gateway can be killed after the refund was made.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/http.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "tools/sandbox/sandbox.h"

static void
send_charge(struct sbx *s, struct evhttp_request *req, const struct sbx_charge *c)
{
	char *text = NULL;
	if (charge_result_json(s, c, &text) != FGW_OK) {
		sbx_send_error(req, 500, "internal", "out of memory");
		return;
	}
	sbx_finish(s, req, ACT_ANSWER, 200, text); /* frees text */
}

static int
is_authorization(const struct sbx_charge *c)
{
	return strcmp(c->status, "succeeded") == 0 && !c->capture && !c->canceled;
}

/* Reads {"amount": N} (1..2^53-1) from the body; 0 when absent/bad. */
static int64_t
body_amount(struct evhttp_request *req)
{
	size_t len = 0;
	char *body = sbx_body(req, &len);
	cJSON *root = body != NULL ? fgw_json_parse_strict(body, len) : NULL;
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "amount");
	int64_t v = 0;
	if (fgw_json_int(a, 1, 9007199254740991LL, &v) != 0)
		v = 0;
	cJSON_Delete(root);
	free(body);
	return v;
}

static void
refund(struct sbx *s, struct evhttp_request *req, struct sbx_charge *c)
{
	const char *key = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                     "Idempotency-Key");
	struct sbx_refund *f;
	int64_t amount;

	if (key == NULL || key[0] == '\0' || strlen(key) > 255) {
		sbx_send_error(req, 400, "invalid_request", "Idempotency-Key header is required");
		return;
	}
	for (f = c->refunds; f != NULL; f = f->next) {
		if (strcmp(f->idem_key, key) == 0) {
			/* A repeat: refunded once already. */
			send_charge(s, req, c);
			return;
		}
	}
	if ((amount = body_amount(req)) <= 0) {
		sbx_send_error(req, 400, "invalid_request", "expected {\"amount\": 1..2^53-1}");
		return;
	}
	if (strcmp(c->status, "succeeded") != 0 || !c->capture || c->canceled) {
		sbx_send_error(req, 409, "invalid_state",
		               "only a captured charge can be refunded");
		return;
	}
	if (amount > c->amount - c->refunded) {
		sbx_send_error(req, 400, "refund_exceeds_captured",
		               "the refund is more than what is left to refund");
		return;
	}
	if ((f = calloc(1, sizeof(*f))) == NULL || (f->idem_key = strdup(key)) == NULL) {
		free(f);
		sbx_send_error(req, 500, "internal", "out of memory");
		return;
	}
	f->amount = amount;
	f->next = c->refunds;
	c->refunds = f;
	c->refunded += amount;
	if (ledger_journal(s->ledger, c) != FGW_OK)
		log_warn("refund %s: ledger file not written", c->id);
	if (!s->quiet)
		log_info("refund %s key=%s amount=%lld (refunded %lld of %lld)", c->id, key,
		         (long long)amount, (long long)c->refunded, (long long)c->amount);
	send_charge(s, req, c);
}

void
sbx_charge_op(struct sbx *s, struct evhttp_request *req, const char *id, const char *op)
{
	struct sbx_charge *c;

	if (!sbx_auth_ok(s, req)) {
		sbx_send_error(req, 401, "unauthorized",
		               "missing or wrong Authorization: Bearer secret");
		return;
	}
	if ((c = ledger_by_id(s->ledger, id)) == NULL) {
		sbx_send_error(req, 404, "not_found", "no such charge");
		return;
	}
	if (strcmp(op, "refunds") == 0) {
		refund(s, req, c);
		return;
	}
	if (strcmp(op, "capture") == 0) {
		/* Capturing a captured charge again is a no-op, so a retry
		 * after a lost answer is safe. */
		if (!is_authorization(c) &&
		    !(strcmp(c->status, "succeeded") == 0 && c->capture && !c->canceled)) {
			sbx_send_error(req, 409, "invalid_state",
			               "only an authorization can be captured");
			return;
		}
		c->capture = 1;
	} else if (strcmp(op, "cancel") == 0) {
		/* A charge still waiting for its 3-D Secure challenge can be
		 * abandoned too (the gateway expires it). */
		if (!is_authorization(c) && !c->canceled &&
		    strcmp(c->status, "requires_action") != 0) {
			sbx_send_error(req, 409, "invalid_state",
			               "only an authorization or a charge awaiting "
			               "authentication can be canceled");
			return;
		}
		c->canceled = 1;
	} else {
		sbx_send_error(req, 404, "not_found", "no such operation");
		return;
	}
	if (ledger_journal(s->ledger, c) != FGW_OK)
		log_warn("%s %s: ledger file not written", op, c->id);
	if (!s->quiet)
		log_info("%s %s -> %s", op, c->id, c->canceled ? "canceled" : "captured");
	send_charge(s, req, c);
}
