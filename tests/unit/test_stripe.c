/*
 * tests/unit/test_stripe.c — the stripe adapter type without a network:
 * the form body it builds (percent-encoding, fields, guarded memory), the
 * headers, refusal of bad input, and its mapping tables for PaymentIntent
 * statuses, Stripe error objects and the later operations.
 */
#include <string.h>

#include "core/err.h"
#include "crypto/secmem.h"
#include "processors/adapter.h"
#include "tests/unit/tt.h"

static void
cfg_init(struct proc_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->name, sizeof(cfg->name), "stripe");
	snprintf(cfg->base_url, sizeof(cfg->base_url), "http://127.0.0.1:9/");
	snprintf(cfg->secret, sizeof(cfg->secret), "sk_test_abc");
	snprintf(cfg->api_version, sizeof(cfg->api_version), "2024-06-20");
}

static int
header_is(const struct proc_http *h, const char *line)
{
	for (size_t i = 0; h->headers[i] != NULL; i++)
		if (strcmp(h->headers[i], line) == 0)
			return 1;
	return 0;
}

static int
test_build_form(void)
{
	struct proc_config cfg;
	struct proc_request req;
	struct proc_clear_card card;
	struct proc_http h;
	struct secbuf *pan = NULL, *cvc = NULL;
	const char *b;
	TT_BEGIN;

	memset(&h, 0, sizeof(h));
	cfg_init(&cfg);
	CHECK(secbuf_from(&pan, "4242424242424242", 16) == 0);
	CHECK(secbuf_from(&cvc, "123", 3) == 0);
	card = (struct proc_clear_card){ pan, cvc, 12, 2030, "Zoë O'Brien & co" };
	memset(&req, 0, sizeof(req));
	req.operation = "purchase";
	req.txn_id = "txn_1";
	req.idempotency_key = "txn_1";
	req.amount = 15000;
	req.currency = "EUR";
	req.description = "Room 4, 2 nights";
	req.clear_card = &card;
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	CHECK_STR(h.method, "POST");
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/payment_intents");
	CHECK(header_is(&h, "Authorization: Bearer sk_test_abc"));
	CHECK(header_is(&h, "Idempotency-Key: txn_1"));
	CHECK(header_is(&h, "Stripe-Version: 2024-06-20"));
	CHECK(header_is(&h, "Content-Type: application/x-www-form-urlencoded"));
	/* The card is only in the guarded body. */
	CHECK(h.body == NULL && h.secure_body != NULL);
	b = (const char *)h.secure_body->data;
	CHECK(strncmp(b, "amount=15000&currency=eur&confirm=true&capture_method=automatic&", 64) == 0);
	CHECK(strstr(b, "&payment_method_data%5Bcard%5D%5Bnumber%5D=4242424242424242&") != NULL);
	CHECK(strstr(b, "&payment_method_data%5Bcard%5D%5Bcvc%5D=123&") != NULL);
	CHECK(strstr(b, "%5Bname%5D=Zo%C3%AB%20O%27Brien%20%26%20co&") != NULL);
	CHECK(strstr(b, "&metadata%5Bflair_txn_id%5D=txn_1&") != NULL);
	CHECK(strstr(b, "&description=Room%204%2C%202%20nights") != NULL);
	CHECK(strstr(b, "three_d_secure") == NULL);
	CHECK_EQ_INT(strlen(b), h.secure_body->len);
	proc_http_clear(&h);

	req.require_3ds = 1;
	req.operation = "authorize";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	b = (const char *)h.secure_body->data;
	CHECK(strstr(b, "capture_method=manual") != NULL);
	CHECK(strstr(b, "request_three_d_secure%5D=any") != NULL);
	proc_http_clear(&h);

	/* Refused before anything is built. */
	req.currency = "eur";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req.currency = "EUR";
	req.idempotency_key = "two words";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req.idempotency_key = "txn_1";
	req.clear_card = NULL;
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req.clear_card = &card;
	cfg.secret[0] = '\0';
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	CHECK(h.url == NULL && h.secure_body == NULL);
end:
	proc_http_clear(&h);
	secbuf_free(pan);
	secbuf_free(cvc);
	TT_END;
}

static int
parse(long status, const char *body, struct proc_result *r)
{
	proc_result_clear(r);
	return proc_type_stripe.parse_reply(NULL, status, body, strlen(body), r);
}

static int
test_parse_reply_tables(void)
{
	struct proc_result r;
	TT_BEGIN;

	memset(&r, 0, sizeof(r));
	CHECK_EQ_INT(parse(200, "{\"id\":\"pi_1\",\"object\":\"payment_intent\",\"status\":\"succeeded\"}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_SUCCEEDED);
	CHECK_STR(r.reference, "pi_1");
	CHECK_EQ_INT(parse(200, "{\"id\":\"pi_2\",\"object\":\"payment_intent\",\"status\":\"requires_action\","
	                        "\"next_action\":{\"type\":\"redirect_to_url\",\"redirect_to_url\":"
	                        "{\"url\":\"https://hooks.example/3ds\",\"return_url\":null}}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_REQUIRES_ACTION);
	CHECK_STR(r.next_action_json, "{\"type\":\"redirect_to_url\",\"url\":\"https://hooks.example/3ds\"}");
	/* use_stripe_sdk cannot be relayed as a redirect: ask again later. */
	CHECK_EQ_INT(parse(200, "{\"id\":\"pi_3\",\"object\":\"payment_intent\",\"status\":\"requires_action\","
	                        "\"next_action\":{\"type\":\"use_stripe_sdk\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(parse(200, "{\"id\":\"pi_4\",\"object\":\"payment_intent\",\"status\":\"processing\"}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(parse(200, "{\"id\":\"pi_5\",\"object\":\"payment_intent\",\"status\":\"requires_payment_method\","
	                        "\"last_payment_error\":{\"type\":\"card_error\",\"code\":\"card_declined\","
	                        "\"decline_code\":\"insufficient_funds\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_DECLINED);
	CHECK_STR(r.code, "PAYMENT_INSUFFICIENT_FUNDS");
	CHECK_EQ_INT(parse(200, "{\"id\":\"ch_1\",\"object\":\"charge\",\"status\":\"succeeded\"}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(parse(200, "not json", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);

	CHECK_EQ_INT(parse(402, "{\"error\":{\"type\":\"card_error\",\"code\":\"card_declined\","
	                        "\"decline_code\":\"generic_decline\",\"message\":\"<b>x</b>\","
	                        "\"payment_intent\":{\"id\":\"pi_6\"}}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_DECLINED);
	CHECK_STR(r.code, "PAYMENT_CARD_DECLINED");
	CHECK_STR(r.reference, "pi_6");
	CHECK(strstr(r.message, "<b>") == NULL);
	CHECK_EQ_INT(parse(402, "{\"error\":{\"type\":\"card_error\",\"code\":\"expired_card\"}}", &r), 0);
	CHECK_STR(r.message, "The card has expired.");
	CHECK_EQ_INT(parse(402, "{\"error\":{\"type\":\"card_error\",\"code\":\"processing_error\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
	CHECK_EQ_INT(parse(400, "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"parameter_unknown\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
	CHECK_EQ_INT(parse(400, "{\"error\":{\"type\":\"idempotency_error\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(parse(401, "{\"error\":{\"type\":\"authentication_error\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
	CHECK_EQ_INT(parse(429, "{\"error\":{\"type\":\"rate_limit_error\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
	CHECK_EQ_INT(parse(409, "{\"error\":{\"type\":\"invalid_request_error\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(parse(500, "{\"error\":{\"type\":\"api_error\"}}", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(parse(403, "<html>", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
end:
	proc_result_clear(&r);
	TT_END;
}

static int
test_operations(void)
{
	struct proc_config cfg;
	struct proc_op_request op = { "txn_1", "txn_1.refund.1", "pi_9", 500 };
	struct proc_http h;
	struct proc_result r;
	const char *sr;
	TT_BEGIN;

	memset(&h, 0, sizeof(h));
	memset(&r, 0, sizeof(r));
	cfg_init(&cfg);
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_REFUND, &op, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/refunds");
	CHECK_STR(h.body, "payment_intent=pi_9&amount=500");
	CHECK(header_is(&h, "Idempotency-Key: txn_1.refund.1"));
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_CAPTURE, &op, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/payment_intents/pi_9/capture");
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_CANCEL, &op, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/payment_intents/pi_9/cancel");
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_STATUS, &op, &h), 0);
	CHECK_STR(h.method, "GET");
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/payment_intents/pi_9");
	proc_http_clear(&h);
	op.reference = "";
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_STATUS, &op, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/payment_intents/search?"
	                 "query=metadata%5B%27flair_txn_id%27%5D%3A%27txn_1%27");
	proc_http_clear(&h);
	op.reference = "pi_9/../x";
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_CAPTURE, &op, &h), FGW_ERR_INVALID);

	sr = "{\"object\":\"search_result\",\"data\":[]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_NOT_FOUND);
	sr = "{\"object\":\"search_result\",\"data\":[{\"id\":\"pi_9\",\"object\":\"payment_intent\","
	     "\"status\":\"requires_capture\"}]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_AUTHORIZED);
	CHECK_STR(r.reference, "pi_9");
	sr = "{\"id\":\"pi_9\",\"object\":\"payment_intent\",\"status\":\"canceled\"}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_CANCEL, 200, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_CANCELED);
	sr = "{\"id\":\"re_1\",\"object\":\"refund\",\"amount\":500,\"status\":\"succeeded\","
	     "\"payment_intent\":\"pi_9\"}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_REFUND, 200, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_SUCCEEDED);
	sr = "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"charge_already_refunded\"}}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_REFUND, 400, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 503, "", 0, &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
end:
	proc_http_clear(&h);
	proc_result_clear(&r);
	TT_END;
}

/* A search by metadata['flair_txn_id'] answers with intents; a hit is
 * this transaction's only when its own metadata says so — otherwise the
 * search found nothing of ours (a lagging index, another account's
 * object, a forged answer). */
static int
test_search_hit_is_checked(void)
{
	struct proc_config cfg;
	struct proc_result r;
	const char *sr;
	TT_BEGIN;

	memset(&r, 0, sizeof(r));
	cfg_init(&cfg);
	sr = "{\"object\":\"search_result\",\"data\":[{\"id\":\"pi_9\",\"object\":\"payment_intent\","
	     "\"status\":\"succeeded\",\"metadata\":{\"flair_txn_id\":\"txn_other\"}}]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r), 0);
	CHECK_STR(r.txn_ref, "txn_other");
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 0);
	proc_result_clear(&r);
	/* No metadata at all: not ours either. */
	sr = "{\"object\":\"search_result\",\"data\":[{\"id\":\"pi_9\",\"object\":\"payment_intent\","
	     "\"status\":\"succeeded\"}]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 0);
	proc_result_clear(&r);
	/* Ours. */
	sr = "{\"object\":\"search_result\",\"data\":[{\"id\":\"pi_9\",\"object\":\"payment_intent\","
	     "\"status\":\"succeeded\",\"metadata\":{\"flair_txn_id\":\"txn_1\"}}]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_SUCCEEDED);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 1);
	proc_result_clear(&r);
	/* Retrieved by the id Stripe gave us: metadata, when there, must
	 * agree too. */
	sr = "{\"id\":\"pi_9\",\"object\":\"payment_intent\",\"status\":\"succeeded\","
	     "\"metadata\":{\"flair_txn_id\":\"txn_2\"}}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r), 0);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 0);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_2"), 1);
end:
	proc_result_clear(&r);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "build_form", test_build_form },
	{ "parse_reply_tables", test_parse_reply_tables },
	{ "operations", test_operations },
	{ "search_hit_is_checked", test_search_hit_is_checked },
	{ NULL, NULL },
};
TT_MAIN(cases)
