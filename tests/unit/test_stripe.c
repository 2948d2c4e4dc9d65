/*
 * tests/unit/test_stripe.c — the stripe adapter type without a network:
 * the form body it builds (percent-encoding, fields, guarded memory), the
 * headers, refusal of bad input, and its mapping tables for PaymentIntent
 * statuses, Stripe error objects and the later operations.
 */
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/secmem.h"
#include "processors/adapter.h"
#include "tests/unit/tt.h"
/* The contract checker flair-sandbox --stripe uses, on the same fixture. */
#include "tools/sandbox/stripe_contract.c"

#define FIXTURE "tests/fixtures/stripe-openapi-subset.json"
#define BASE "http://127.0.0.1:9"

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
	/* First call: the PaymentMethod, the only request with card data. */
	CHECK_EQ_INT(proc_type_stripe.build_card(&cfg, &req, &h), 0);
	CHECK_STR(h.method, "POST");
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/payment_methods");
	CHECK(header_is(&h, "Authorization: Bearer sk_test_abc"));
	CHECK(header_is(&h, "Idempotency-Key: txn_1-pm"));
	CHECK(header_is(&h, "Stripe-Version: 2024-06-20"));
	CHECK(header_is(&h, "Content-Type: application/x-www-form-urlencoded"));
	/* The card is only in the guarded body. */
	CHECK(h.body == NULL && h.secure_body != NULL);
	b = (const char *)h.secure_body->data;
	CHECK_STR(b, "type=card&card%5Bnumber%5D=4242424242424242&card%5Bexp_month%5D=12&"
	             "card%5Bexp_year%5D=2030&card%5Bcvc%5D=123&"
	             "billing_details%5Bname%5D=Zo%C3%AB%20O%27Brien%20%26%20co&"
	             "metadata%5Bflair_txn_id%5D=txn_1");
	CHECK_EQ_INT(strlen(b), h.secure_body->len);
	proc_http_clear(&h);

	/* Second call: the PaymentIntent for it, no card data. */
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req.payment_method = "pm_1Abc";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:9/v1/payment_intents");
	CHECK(header_is(&h, "Idempotency-Key: txn_1-pi"));
	CHECK(h.secure_body == NULL && h.body != NULL);
	CHECK_STR(h.body,
	          "amount=15000&currency=eur&confirm=true&capture_method=automatic&"
	          "payment_method=pm_1Abc&payment_method_types%5B0%5D=card&"
	          "metadata%5Bflair_txn_id%5D=txn_1&description=Room%204%2C%202%20nights");
	CHECK(strstr(h.body, "4242") == NULL);
	proc_http_clear(&h);

	req.require_3ds = 1;
	req.operation = "authorize";
	req.return_url = "https://shop.example/back?x=1";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	b = h.body;
	CHECK(strstr(b, "capture_method=manual") != NULL);
	CHECK(strstr(b, "request_three_d_secure%5D=any") != NULL);
	CHECK(strstr(b, "&return_url=https%3A%2F%2Fshop.example%2Fback%3Fx%3D1") != NULL);
	proc_http_clear(&h);

	/* Refused before anything is built. */
	req.payment_method = "pm_1/../x";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req.payment_method = "pm_1Abc";
	req.currency = "eur";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	CHECK_EQ_INT(proc_type_stripe.build_card(&cfg, &req, &h), FGW_ERR_INVALID);
	req.currency = "EUR";
	req.idempotency_key = "two words";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	CHECK_EQ_INT(proc_type_stripe.build_card(&cfg, &req, &h), FGW_ERR_INVALID);
	req.idempotency_key = "txn_1";
	req.clear_card = NULL;
	CHECK_EQ_INT(proc_type_stripe.build_card(&cfg, &req, &h), FGW_ERR_INVALID);
	req.clear_card = &card;
	cfg.secret[0] = '\0';
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	CHECK_EQ_INT(proc_type_stripe.build_card(&cfg, &req, &h), FGW_ERR_INVALID);
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
	CHECK_EQ_INT(
	    parse(200,
	          "{\"id\":\"pi_1\",\"object\":\"payment_intent\",\"status\":\"succeeded\"}",
	          &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_SUCCEEDED);
	CHECK_STR(r.reference, "pi_1");
	CHECK_EQ_INT(
	    parse(
	        200,
	        "{\"id\":\"pi_2\",\"object\":\"payment_intent\",\"status\":\"requires_action\","
	        "\"next_action\":{\"type\":\"redirect_to_url\",\"redirect_to_url\":"
	        "{\"url\":\"https://hooks.example/3ds\",\"return_url\":null}}}",
	        &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_REQUIRES_ACTION);
	CHECK_STR(r.next_action_json,
	          "{\"type\":\"redirect_to_url\",\"url\":\"https://hooks.example/3ds\"}");
	/* use_stripe_sdk cannot be relayed as a redirect: ask again later. */
	CHECK_EQ_INT(
	    parse(
	        200,
	        "{\"id\":\"pi_3\",\"object\":\"payment_intent\",\"status\":\"requires_action\","
	        "\"next_action\":{\"type\":\"use_stripe_sdk\"}}",
	        &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(
	    parse(200,
	          "{\"id\":\"pi_4\",\"object\":\"payment_intent\",\"status\":\"processing\"}",
	          &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(
	    parse(
	        200,
	        "{\"id\":\"pi_5\",\"object\":\"payment_intent\",\"status\":\"requires_payment_method\","
	        "\"last_payment_error\":{\"type\":\"card_error\",\"code\":\"card_declined\","
	        "\"decline_code\":\"insufficient_funds\"}}",
	        &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_DECLINED);
	CHECK_STR(r.code, "PAYMENT_INSUFFICIENT_FUNDS");
	/* Made unconfirmed (confirmWith stripe_js): waiting for Stripe.js,
	 * with the client secret kept for the browser only when it is this
	 * intent's. */
	CHECK_EQ_INT(
	    parse(200,
	          "{\"id\":\"pi_7\",\"object\":\"payment_intent\",\"status\":"
	          "\"requires_payment_method\",\"last_payment_error\":null,\"amount\":1500,"
	          "\"currency\":\"eur\",\"client_secret\":\"pi_7_secret_Ab9\","
	          "\"metadata\":{\"flair_confirm\":\"stripe_js\"}}",
	          &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_REQUIRES_ACTION);
	CHECK_STR(r.client_secret, "pi_7_secret_Ab9");
	CHECK_STR(r.next_action_json, "{\"type\":\"use_stripe_sdk\"}");
	CHECK_EQ_INT((int)r.amount, 1500);
	CHECK_STR(r.currency, "EUR");
	CHECK_EQ_INT(parse(200,
	                   "{\"id\":\"pi_7\",\"object\":\"payment_intent\",\"status\":"
	                   "\"requires_payment_method\",\"client_secret\":\"pi_8_secret_Ab9\","
	                   "\"metadata\":{\"flair_confirm\":\"stripe_js\"}}",
	                   &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_REQUIRES_ACTION);
	CHECK_STR(r.client_secret, "");
	/* After a failed attempt it still waits for another card. */
	CHECK_EQ_INT(
	    parse(
	        200,
	        "{\"id\":\"pi_7\",\"object\":\"payment_intent\",\"status\":"
	        "\"requires_payment_method\",\"last_payment_error\":{\"type\":\"card_error\"},"
	        "\"metadata\":{\"flair_confirm\":\"stripe_js\"}}",
	        &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_REQUIRES_ACTION);
	/* One flairgw confirmed itself is declined, with or without an error. */
	CHECK_EQ_INT(parse(200,
	                   "{\"id\":\"pi_7\",\"object\":\"payment_intent\",\"status\":"
	                   "\"requires_payment_method\",\"last_payment_error\":null}",
	                   &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_DECLINED);
	CHECK_EQ_INT(
	    parse(200,
	          "{\"id\":\"pi_7\",\"object\":\"payment_intent\",\"status\":"
	          "\"requires_payment_method\",\"client_secret\":\"pi_7_secret_\\\"x\"}",
	          &r),
	    0);
	CHECK_STR(r.client_secret, "");
	/* A payment flairgw confirmed itself: its secret is never kept. */
	CHECK_EQ_INT(parse(200,
	                   "{\"id\":\"pi_7\",\"object\":\"payment_intent\",\"status\":"
	                   "\"succeeded\",\"client_secret\":\"pi_7_secret_Ab9\"}",
	                   &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_SUCCEEDED);
	CHECK_STR(r.client_secret, "");
	CHECK_EQ_INT(parse(200,
	                   "{\"id\":\"ch_1\",\"object\":\"charge\",\"status\":\"succeeded\"}",
	                   &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(parse(200, "not json", &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);

	CHECK_EQ_INT(parse(402,
	                   "{\"error\":{\"type\":\"card_error\",\"code\":\"card_declined\","
	                   "\"decline_code\":\"generic_decline\",\"message\":\"<b>x</b>\","
	                   "\"payment_intent\":{\"id\":\"pi_6\"}}}",
	                   &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_DECLINED);
	CHECK_STR(r.code, "PAYMENT_CARD_DECLINED");
	CHECK_STR(r.reference, "pi_6");
	CHECK(strstr(r.message, "<b>") == NULL);
	CHECK_EQ_INT(parse(402,
	                   "{\"error\":{\"type\":\"card_error\",\"code\":\"expired_card\"}}",
	                   &r),
	             0);
	CHECK_STR(r.message, "The card has expired.");
	CHECK_EQ_INT(
	    parse(402, "{\"error\":{\"type\":\"card_error\",\"code\":\"processing_error\"}}",
	          &r),
	    0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
	CHECK_EQ_INT(
	    parse(
	        400,
	        "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"parameter_unknown\"}}",
	        &r),
	    0);
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
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_CAPTURE, &op, &h),
	             FGW_ERR_INVALID);

	sr = "{\"object\":\"search_result\",\"data\":[]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_NOT_FOUND);
	sr = "{\"object\":\"search_result\",\"data\":[{\"id\":\"pi_9\",\"object\":\"payment_intent\","
	     "\"status\":\"requires_capture\"}]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_AUTHORIZED);
	CHECK_STR(r.reference, "pi_9");
	sr = "{\"id\":\"pi_9\",\"object\":\"payment_intent\",\"status\":\"canceled\"}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_CANCEL, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_CANCELED);
	sr = "{\"id\":\"re_1\",\"object\":\"refund\",\"amount\":500,\"status\":\"succeeded\","
	     "\"payment_intent\":\"pi_9\"}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_REFUND, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_SUCCEEDED);
	/* a refund amount that is no whole number is not a reply we understand */
	sr = "{\"id\":\"re_1\",\"object\":\"refund\",\"amount\":500.0,\"status\":\"succeeded\","
	     "\"payment_intent\":\"pi_9\"}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_REFUND, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	sr = "{\"id\":\"re_1\",\"object\":\"refund\",\"amount\":500,\"amount\":1,"
	     "\"status\":\"succeeded\",\"payment_intent\":\"pi_9\"}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_REFUND, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	sr =
	    "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"charge_already_refunded\"}}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_REFUND, 400, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_FAILED);
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 503, "", 0, &r), 0);
	CHECK_EQ_INT(r.outcome, PROC_UNKNOWN);
	/* A Stripe.js payment's status: still waiting for the browser, or in
	 * a challenge Stripe.js runs; both wait (and expire) like 3-D Secure. */
	sr = "{\"id\":\"pi_9\",\"object\":\"payment_intent\",\"status\":\"requires_payment_method\","
	     "\"client_secret\":\"pi_9_secret_z\",\"metadata\":{\"flair_txn_id\":\"txn_1\","
	     "\"flair_confirm\":\"stripe_js\"}}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_REQUIRES_ACTION);
	CHECK_STR(r.client_secret, "pi_9_secret_z");
	CHECK_STR(r.txn_ref, "txn_1");
	proc_result_clear(&r);
	sr = "{\"id\":\"pi_9\",\"object\":\"payment_intent\",\"status\":\"requires_action\","
	     "\"next_action\":{\"type\":\"use_stripe_sdk\"}}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_REQUIRES_ACTION);
	CHECK_STR(r.next_action_json, "{\"type\":\"use_stripe_sdk\"}");
end:
	proc_http_clear(&h);
	proc_result_clear(&r);
	TT_END;
}

/* The PaymentMethod's answer: only a pm_ object goes on to the charge;
 * everything else is final and never "unknown" (nothing was charged). */
static int
test_parse_card(void)
{
	static const struct {
		long status;
		const char *body;
		enum proc_outcome outcome;
		const char *code, *ref;
	} t[] = {
		{ 200, "{\"id\":\"pm_1Q\",\"object\":\"payment_method\",\"type\":\"card\"}",
		  PROC_SUCCEEDED, "", "pm_1Q" },
		{ 200, "{\"id\":\"pi_1\",\"object\":\"payment_intent\"}", PROC_FAILED,
		  "PAYMENT_PROCESSING_FAILED", "" },
		{ 200, "{\"id\":\"pm_../x\",\"object\":\"payment_method\"}", PROC_FAILED,
		  "PAYMENT_PROCESSING_FAILED", "" },
		{ 200, "not json", PROC_FAILED, "PAYMENT_PROCESSING_FAILED", "" },
		{ 402, "{\"error\":{\"type\":\"card_error\",\"code\":\"incorrect_number\"}}",
		  PROC_DECLINED, "PAYMENT_CARD_DECLINED", "" },
		{ 402, "{\"error\":{\"type\":\"card_error\",\"code\":\"invalid_expiry_year\"}}",
		  PROC_DECLINED, "PAYMENT_CARD_DECLINED", "" },
		{ 400,
		  "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"parameter_unknown\"}}",
		  PROC_FAILED, "PAYMENT_PROCESSING_FAILED", "" },
		{ 400, "{\"error\":{\"type\":\"idempotency_error\"}}", PROC_FAILED,
		  "PAYMENT_PROCESSING_FAILED", "" },
		{ 402, "{\"error\":{\"type\":\"card_error\",\"code\":\"processing_error\"}}",
		  PROC_FAILED, "PAYMENT_PROCESSING_FAILED", "" },
		{ 500, "{\"error\":{\"type\":\"api_error\"}}", PROC_FAILED,
		  "PAYMENT_PROCESSING_FAILED", "" },
		{ 409, "", PROC_FAILED, "PAYMENT_PROCESSING_FAILED", "" },
	};
	struct proc_result r;
	TT_BEGIN;

	memset(&r, 0, sizeof(r));
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		proc_result_clear(&r);
		CHECK_EQ_INT(proc_type_stripe.parse_card(NULL, t[i].status, t[i].body,
		                                         strlen(t[i].body), &r),
		             0);
		if (r.outcome != t[i].outcome)
			fprintf(stderr, "  case %zu\n", i);
		CHECK_EQ_INT(r.outcome, t[i].outcome);
		CHECK_STR(r.code, t[i].code);
		CHECK_STR(r.reference, t[i].ref);
	}
	CHECK_EQ_INT(proc_type_stripe.parse_card(NULL, 402, t[5].body, strlen(t[5].body), &r),
	             0);
	CHECK_STR(r.message, "The card's expiry date is invalid.");
end:
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
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_STR(r.txn_ref, "txn_other");
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 0);
	proc_result_clear(&r);
	/* No metadata at all: not ours either. */
	sr = "{\"object\":\"search_result\",\"data\":[{\"id\":\"pi_9\",\"object\":\"payment_intent\","
	     "\"status\":\"succeeded\"}]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 0);
	proc_result_clear(&r);
	/* Ours. */
	sr = "{\"object\":\"search_result\",\"data\":[{\"id\":\"pi_9\",\"object\":\"payment_intent\","
	     "\"status\":\"succeeded\",\"metadata\":{\"flair_txn_id\":\"txn_1\"}}]}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(r.outcome, PROC_SUCCEEDED);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 1);
	proc_result_clear(&r);
	/* Retrieved by the id Stripe gave us: metadata, when there, must
	 * agree too. */
	sr = "{\"id\":\"pi_9\",\"object\":\"payment_intent\",\"status\":\"succeeded\","
	     "\"metadata\":{\"flair_txn_id\":\"txn_2\"}}";
	CHECK_EQ_INT(proc_type_stripe.parse_op(&cfg, PROC_OP_STATUS, 200, sr, strlen(sr), &r),
	             0);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_1"), 0);
	CHECK_EQ_INT(proc_result_is_for(&r, "txn_2"), 1);
end:
	proc_result_clear(&r);
	TT_END;
}

/* ---- contract: every request against Stripe's published description -- */

struct kv {
	size_t n;
	char *k[32], *v[32];
};

static void
kv_clear(struct kv *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->k[i]);
		fgw_freezero(f->v[i], strlen(f->v[i]));
	}
	f->n = 0;
}

static char *
pct_dup(const char *s, size_t n)
{
	char *o = malloc(n + 1);
	size_t j = 0;
	unsigned int c;

	if (o == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n + 1 && sscanf(s + i + 1, "%2x", &c) == 1) {
			o[j++] = (char)c;
			i += 2;
		} else {
			o[j++] = s[i] == '+' ? ' ' : s[i];
		}
	}
	o[j] = '\0';
	return o;
}

static int
kv_parse(const char *s, size_t len, struct kv *f)
{
	size_t i = 0;

	f->n = 0;
	while (i < len) {
		size_t end = i, eq;
		while (end < len && s[end] != '&')
			end++;
		for (eq = i; eq < end && s[eq] != '='; eq++)
			;
		if (eq == end || f->n == 32)
			return -1;
		f->k[f->n] = pct_dup(s + i, eq - i);
		f->v[f->n] = pct_dup(s + eq + 1, end - eq - 1);
		f->n++;
		i = end + 1;
	}
	return 0;
}

static int
has_header(const struct proc_http *h, const char *line)
{
	for (size_t i = 0; i < sizeof(h->headers) / sizeof(h->headers[0]) && h->headers[i];
	     i++)
		if (strcmp(h->headers[i], line) == 0)
			return 1;
	return 0;
}

/* 0 when Stripe's description allows the request the adapter built. */
static int
contract_ok(const struct stripe_contract *c, const struct proc_http *h, const char *what)
{
	const char *path = h->url + strlen(BASE), *q = strchr(path, '?');
	const char *code = NULL, *param = NULL;
	char p[256];
	struct kv f = { 0 };
	int r;

	snprintf(p, sizeof(p), "%.*s", q != NULL ? (int)(q - path) : (int)strlen(path), path);
	if (q != NULL)
		r = kv_parse(q + 1, strlen(q + 1), &f);
	else if (h->secure_body != NULL)
		r = kv_parse((const char *)h->secure_body->data, h->secure_body->len, &f);
	else
		r = kv_parse(h->body != NULL ? h->body : "", h->body_len, &f);
	if (r == 0)
		r = stripe_contract_check(c, h->method, p, f.n, f.k, f.v, &code, &param);
	if (r != 0)
		fprintf(stderr, "  %s: %s %s refused by %s: %s %s\n", what, h->method, p,
		        stripe_contract_version(c), code ? code : "?", param ? param : "");
	kv_clear(&f);
	return r;
}

static int
test_contract_adapter_requests(void)
{
	struct stripe_contract *c = NULL;
	struct proc_config cfg;
	struct proc_request req;
	struct proc_clear_card card;
	struct proc_op_request op = { "txn_1", "txn_1.refund.1", "pi_9", 500 };
	struct proc_http h;
	struct secbuf *pan = NULL, *cvc = NULL;
	TT_BEGIN;

	memset(&h, 0, sizeof(h));
	CHECK_EQ_INT(stripe_contract_load(FIXTURE, &c), 0);
	cfg_init(&cfg);
	CHECK(secbuf_from(&pan, "4242424242424242", 16) == 0);
	CHECK(secbuf_from(&cvc, "123", 3) == 0);
	card = (struct proc_clear_card){ pan, cvc, 12, 2030, "Zoë" };
	memset(&req, 0, sizeof(req));
	req.operation = "purchase";
	req.txn_id = "txn_1";
	req.idempotency_key = "txn_1";
	req.amount = 15000;
	req.currency = "EUR";
	req.description = "Room 4";
	req.customer_email = "a@example.com";
	req.clear_card = &card;

	/* PaymentMethod create, with and without the optional fields. */
	CHECK_EQ_INT(proc_type_stripe.build_card(&cfg, &req, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "payment method"), 0);
	proc_http_clear(&h);
	card.cvc = NULL;
	card.holder = "";
	CHECK_EQ_INT(proc_type_stripe.build_card(&cfg, &req, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "payment method, no cvc"), 0);
	proc_http_clear(&h);

	/* Purchase, authorize-only, 3-D Secure with a return URL. */
	req.payment_method = "pm_1Abc";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "purchase"), 0);
	proc_http_clear(&h);
	req.operation = "authorize";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "authorize"), 0);
	proc_http_clear(&h);
	req.require_3ds = 1;
	req.return_url = "https://shop.example/back";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "3-D Secure"), 0);
	proc_http_clear(&h);
	/* A saved card: the Customer, the attachment, the charge naming both. */
	req.customer = "cus_Q1x";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	CHECK(strstr(h.body, "&customer=cus_Q1x&") != NULL);
	CHECK_EQ_INT(contract_ok(c, &h, "saved card"), 0);
	proc_http_clear(&h);
	req.customer = "cus_Q1x&amount=1";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req.customer = NULL;
	/* confirmWith stripe_js: made unconfirmed, no payment method, no
	 * return_url (Stripe takes it only with confirm=true). */
	req.payment_method = NULL;
	req.client_confirms = 1;
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), 0);
	CHECK(strstr(h.body, "confirm=false&") != NULL);
	CHECK(strstr(h.body, "payment_method=") == NULL);
	CHECK(strstr(h.body, "return_url") == NULL);
	CHECK(strstr(h.body, "metadata%5Bflair_txn_id%5D=txn_1") != NULL);
	CHECK(strstr(h.body, "metadata%5Bflair_confirm%5D=stripe_js") != NULL);
	CHECK(has_header(&h, "Idempotency-Key: txn_1-pi"));
	CHECK_EQ_INT(contract_ok(c, &h, "unconfirmed for Stripe.js"), 0);
	proc_http_clear(&h);
	/* Never both: a card to confirm with and a browser to confirm. */
	req.payment_method = "pm_1Abc";
	CHECK_EQ_INT(proc_type_stripe.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req.client_confirms = 0;
	CHECK_EQ_INT(proc_type_stripe.build_customer(&cfg, "cus-0a1b", "0a1b2c", &h), 0);
	CHECK_STR(h.url, BASE "/v1/customers");
	CHECK(has_header(&h, "Idempotency-Key: cus-0a1b"));
	CHECK_EQ_INT(contract_ok(c, &h, "customer"), 0);
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_attach(&cfg, "att-9", "pm_1Abc", "cus_Q1x", &h),
	             0);
	CHECK_STR(h.url, BASE "/v1/payment_methods/pm_1Abc/attach");
	CHECK(has_header(&h, "Idempotency-Key: att-9"));
	CHECK_EQ_INT(contract_ok(c, &h, "attach"), 0);
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_attach(&cfg, "att-9", "pm_1/../x", "cus_Q1x", &h),
	             FGW_ERR_INVALID);
	/* Deleting a saved card: the detach, an empty form. */
	CHECK_EQ_INT(proc_type_stripe.build_detach(&cfg, "det-9", "pm_1Abc", &h), 0);
	CHECK_STR(h.url, BASE "/v1/payment_methods/pm_1Abc/detach");
	CHECK(has_header(&h, "Idempotency-Key: det-9"));
	CHECK_EQ_INT(contract_ok(c, &h, "detach"), 0);
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_detach(&cfg, "det-9", "pm_1?x=1", &h),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(proc_type_stripe.build_attach(&cfg, "att-9", "pm_1", "acct_1", &h),
	             FGW_ERR_INVALID);

	/* Capture, cancel, partial refund, retrieve, search. */
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_CAPTURE, &op, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "capture"), 0);
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_CANCEL, &op, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "cancel"), 0);
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_REFUND, &op, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "refund"), 0);
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_STATUS, &op, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "retrieve"), 0);
	proc_http_clear(&h);
	op.reference = "";
	CHECK_EQ_INT(proc_type_stripe.build_op(&cfg, PROC_OP_STATUS, &op, &h), 0);
	CHECK_EQ_INT(contract_ok(c, &h, "search"), 0);
end:
	proc_http_clear(&h);
	secbuf_free(pan);
	secbuf_free(cvc);
	stripe_contract_free(c);
	TT_END;
}

/* The answers of customer create and attach. */
static int
test_parse_save(void)
{
	struct proc_config cfg;
	struct proc_result res;
	struct proc_saved_card card;
	const char *pm =
	    "{\"id\":\"pm_9Z\",\"object\":\"payment_method\",\"customer\":\"cus_1\","
	    "\"card\":{\"brand\":\"visa\",\"last4\":\"4242\",\"exp_month\":12,"
	    "\"exp_year\":2031}}";
	const char *other =
	    "{\"id\":\"pm_9Z\",\"object\":\"payment_method\",\"customer\":\"cus_2\","
	    "\"card\":{\"brand\":\"visa\",\"last4\":\"4242\",\"exp_month\":12,"
	    "\"exp_year\":2031}}";
	const char *cus = "{\"id\":\"cus_Ab1\",\"object\":\"customer\"}";
	const char *taken =
	    "{\"error\":{\"type\":\"invalid_request_error\",\"message\":\"x\"}}";
	const char *missing = "{\"error\":{\"type\":\"invalid_request_error\","
	                      "\"code\":\"resource_missing\"}}";
	TT_BEGIN;

	cfg_init(&cfg);
	CHECK_EQ_INT(proc_type_stripe.parse_customer(&cfg, 200, cus, strlen(cus), &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_SUCCEEDED);
	CHECK_STR(res.reference, "cus_Ab1");
	CHECK_EQ_INT(proc_type_stripe.parse_customer(&cfg, 200, "{\"id\":\"pi_1\"}", 13,
	                                             &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(proc_type_stripe.parse_customer(&cfg, 500, "", 0, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(proc_type_stripe.parse_customer(&cfg, 400, taken, strlen(taken), &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_FAILED);

	CHECK_EQ_INT(proc_type_stripe.parse_attach(&cfg, 200, pm, strlen(pm), "cus_1", &card,
	                                           &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_SUCCEEDED);
	CHECK_STR(card.id, "pm_9Z");
	CHECK_STR(card.brand, "Visa");
	CHECK_STR(card.last4, "4242");
	CHECK_EQ_INT(card.exp_month, 12);
	CHECK_EQ_INT(card.exp_year, 2031);
	/* Attached, but to someone else: not ours to save. */
	CHECK_EQ_INT(proc_type_stripe.parse_attach(&cfg, 200, other, strlen(other), "cus_1",
	                                           &card, &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_FAILED);
	CHECK_EQ_INT(proc_type_stripe.parse_attach(&cfg, 400, taken, strlen(taken), "cus_1",
	                                           &card, &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_FAILED);
	CHECK_STR(res.code, "PAYMENT_METHOD_REFUSED");
	CHECK_EQ_INT(proc_type_stripe.parse_attach(&cfg, 404, missing, strlen(missing),
	                                           "cus_1", &card, &res),
	             0);
	CHECK_STR(res.code, "PAYMENT_METHOD_NOT_FOUND");
	CHECK_EQ_INT(proc_type_stripe.parse_attach(&cfg, 502, "", 0, "cus_1", &card, &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
end:
	TT_END;
}

/* The checker refuses what Stripe's description refuses (so a passing
 * adapter means something). */
static int
test_contract_refusals(void)
{
	static const struct {
		const char *method, *path, *form, *code, *param;
	} t[] = {
		{ "POST", "/v1/payment_intents", "amount=100&currency=usd&confirm=true", NULL,
		  NULL },
		{ "POST", "/v1/payment_intents",
		  "amount=100&currency=usd&payment_method_types[0]=card&"
		  "metadata[anything]=x",
		  NULL, NULL },
		/* What the adapter used to send. */
		{ "POST", "/v1/payment_intents",
		  "amount=100&currency=usd&payment_method_data[type]=card",
		  "parameter_invalid_string", "payment_method_data[type]" },
		{ "POST", "/v1/payment_intents",
		  "amount=100&currency=usd&payment_method_data[card][number]=4242",
		  "parameter_unknown", "payment_method_data[card][number]" },
		{ "POST", "/v1/payment_intents", "amount=100&currency=usd&colour=red",
		  "parameter_unknown", "colour" },
		{ "POST", "/v1/payment_intents", "amount=1.5&currency=usd",
		  "parameter_invalid_integer", "amount" },
		{ "POST", "/v1/payment_intents", "amount=100&currency=usd&confirm=yes",
		  "parameter_invalid_boolean", "confirm" },
		{ "POST", "/v1/payment_intents", "amount=100&currency=usd&capture_method=later",
		  "parameter_invalid_string", "capture_method" },
		{ "POST", "/v1/payment_intents", "amount=100", "parameter_missing", "currency" },
		{ "POST", "/v1/payment_methods",
		  "type=card&card[number]=4242424242424242&card[exp_month]=1",
		  "parameter_missing", "card[exp_year]" },
		{ "POST", "/v1/payment_methods", "type=cash", "parameter_invalid_string",
		  "type" },
		{ "POST", "/v1/payment_intents/pi_1/capture", "amount_to_capture=5",
		  "parameter_unknown", "amount_to_capture" },
		{ "POST", "/v1/payment_intents/pi_1/cancel", "", NULL, NULL },
		{ "GET", "/v1/payment_intents/search", "", "parameter_missing", "query" },
		{ "GET", "/v1/payment_intents/search", "query=x", NULL, NULL },
		{ "POST", "/v1/refunds", "payment_intent=pi_1&amount=-",
		  "parameter_invalid_integer", "amount" },
		/* Saving a Stripe.js PaymentMethod: a Customer, then the attachment. */
		{ "POST", "/v1/customers", "metadata[flair_customer]=c1", NULL, NULL },
		{ "POST", "/v1/customers", "email=a@example.com", "parameter_unknown", "email" },
		{ "POST", "/v1/payment_methods/pm_1/attach", "customer=cus_1", NULL, NULL },
		{ "POST", "/v1/payment_methods/pm_1/attach", "", "parameter_missing",
		  "customer" },
		{ "POST", "/v1/payment_intents", "amount=100&currency=usd&customer=cus_1", NULL,
		  NULL },
		/* What Stripe.js sends to confirm an intent made for it (its
		 * publishable key is the sandbox's credential, not a parameter). */
		{ "POST", "/v1/payment_intents/pi_1/confirm",
		  "client_secret=pi_1_secret_x&payment_method=pm_card_visa&use_stripe_sdk=true",
		  NULL, NULL },
		{ "POST", "/v1/payment_intents/pi_1/confirm",
		  "client_secret=pi_1_secret_x&use_stripe_sdk=maybe", "parameter_invalid_boolean",
		  "use_stripe_sdk" },
		{ "POST", "/v1/payment_intents/pi_1/confirm",
		  "client_secret=pi_1_secret_x&amount=1", "parameter_unknown", "amount" },
		{ "POST", "/v1/payment_methods/pm_1/detach", "", NULL, NULL },
		{ "POST", "/v1/payment_methods/pm_1/detach", "customer=cus_1",
		  "parameter_unknown", "customer" },
	};
	struct stripe_contract *c = NULL;
	struct kv f = { 0 };
	const char *code, *param;
	TT_BEGIN;

	CHECK_EQ_INT(stripe_contract_load(FIXTURE, &c), 0);
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int r;
		CHECK_EQ_INT(kv_parse(t[i].form, strlen(t[i].form), &f), 0);
		r = stripe_contract_check(c, t[i].method, t[i].path, f.n, f.k, f.v, &code,
		                          &param);
		if (t[i].code == NULL) {
			if (r != 0)
				fprintf(stderr, "  case %zu: %s %s\n", i, code, param);
			CHECK_EQ_INT(r, 0);
		} else {
			CHECK_EQ_INT(r, FGW_ERR_INVALID);
			CHECK_STR(code, t[i].code);
			CHECK_STR(param, t[i].param);
		}
		kv_clear(&f);
	}
	CHECK_EQ_INT(stripe_contract_check(c, "DELETE", "/v1/refunds", 0, NULL, NULL, &code,
	                                   &param),
	             FGW_ERR_NOT_FOUND);
end:
	kv_clear(&f);
	stripe_contract_free(c);
	TT_END;
}

/* Each fixture event (Stripe's own shapes) as stripe_map_event reads it:
 * the kind and the move its payload proves, and where it finds the
 * transaction. Bodies that contradict their type prove nothing. */
static int
test_map_events(void)
{
	static const struct {
		const char *file;
		enum proc_event_kind kind;
		const char *target, *fallback, *code;
		long long amount, refunded_total;
	} t[] = {
		{ "payment_intent.succeeded", PROC_EVENT_MOVE, "succeeded", "", "", 15000, -1 },
		{ "payment_intent.amount_capturable_updated", PROC_EVENT_MOVE, "authorized", "",
		  "", 15000, -1 },
		{ "payment_intent.payment_failed", PROC_EVENT_MOVE, "declined", "",
		  "PAYMENT_INSUFFICIENT_FUNDS", 15000, -1 },
		{ "payment_intent.canceled", PROC_EVENT_MOVE, "canceled", "failed",
		  "PAYMENT_PROCESSING_FAILED", 15000, -1 },
		{ "payment_intent.requires_action", PROC_EVENT_MOVE, "requires_action", "", "",
		  15000, -1 },
		{ "charge.succeeded.captured", PROC_EVENT_MOVE, "succeeded", "", "", 15000, -1 },
		{ "charge.succeeded.uncaptured", PROC_EVENT_MOVE, "authorized", "", "", 15000,
		  -1 },
		{ "charge.refunded.partial", PROC_EVENT_REFUNDED, "", "", "", 15000, 5000 },
		{ "charge.refunded.full", PROC_EVENT_REFUNDED, "", "", "", 15000, 15000 },
		{ "refund.updated.failed", PROC_EVENT_REFUND, "", "", "", 5000, -1 },
		{ "refund.updated.succeeded", PROC_EVENT_REFUND, "", "", "", 5000, -1 },
		{ "charge.dispute.created", PROC_EVENT_DISPUTE, "", "", "", 15000, -1 },
		{ "unknown.plan.created", PROC_EVENT_IGNORE, "", "", "", -1, -1 },
	};
	struct proc_event pe;
	cJSON *ev = NULL;
	char path[160], *text = NULL;
	size_t len;
	TT_BEGIN;

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		snprintf(path, sizeof(path), "tests/fixtures/stripe-events/%s.json", t[i].file);
		CHECK_EQ_INT(fgw_read_file(path, 1 << 20, &text, &len), 0);
		CHECK((ev = cJSON_ParseWithLength(text, len)) != NULL);
		CHECK_EQ_INT(proc_type_stripe.map_event(ev, &pe), 0);
		if ((int)pe.kind != (int)t[i].kind)
			fprintf(stderr, "  %s: kind %d\n", t[i].file, (int)pe.kind);
		CHECK_EQ_INT((int)pe.kind, (int)t[i].kind);
		if (pe.kind == PROC_EVENT_MOVE) {
			CHECK_STR(txn_state_name(pe.target), t[i].target);
			CHECK_STR(txn_state_name(pe.fallback), t[i].fallback);
			CHECK_STR(pe.code, t[i].code);
		}
		if (pe.kind == PROC_EVENT_REFUND || pe.kind == PROC_EVENT_DISPUTE) {
			CHECK_EQ_INT((int)pe.object_amount, (int)t[i].amount);
			CHECK(strncmp(pe.object_ref, pe.kind == PROC_EVENT_REFUND ? "re_" : "dp_",
			              3) == 0);
		} else if (pe.kind != PROC_EVENT_IGNORE) {
			CHECK_EQ_INT((int)pe.amount, (int)t[i].amount);
		}
		CHECK_EQ_INT((int)pe.refunded_total, (int)t[i].refunded_total);
		if (pe.kind != PROC_EVENT_IGNORE) {
			/* PaymentIntents name our transaction; the others their intent. */
			if (strncmp(t[i].file, "payment_intent.", 15) == 0)
				CHECK(pe.txn_ids[0] != NULL && strcmp(pe.txn_ids[0], "txn_FLAIRGW") == 0);
			CHECK(pe.processor_refs[0] != NULL);
			CHECK(strcmp(pe.processor_refs[0], "pi_FLAIRGW") == 0 ||
			      (pe.processor_refs[1] != NULL &&
			       strcmp(pe.processor_refs[1], "pi_FLAIRGW") == 0));
		}
		cJSON_Delete(ev);
		ev = NULL;
		free(text);
		text = NULL;
	}
	/* A status that contradicts the type proves nothing. */
	CHECK((ev = cJSON_Parse(
	           "{\"id\":\"evt_1\",\"type\":\"payment_intent.canceled\","
	           "\"data\":{\"object\":{\"id\":\"pi_1\",\"status\":\"succeeded\"}}}")) !=
	      NULL);
	CHECK_EQ_INT(proc_type_stripe.map_event(ev, &pe), 0);
	CHECK_EQ_INT((int)pe.kind, (int)PROC_EVENT_IGNORE);
	cJSON_Delete(ev);
	ev = NULL;
	/* Refunded more than the charge: not believed. */
	CHECK((ev = cJSON_Parse("{\"id\":\"evt_1\",\"type\":\"charge.refunded\","
	                        "\"data\":{\"object\":{\"id\":\"ch_1\",\"amount\":100,"
	                        "\"amount_refunded\":101}}}")) != NULL);
	CHECK_EQ_INT(proc_type_stripe.map_event(ev, &pe), 0);
	CHECK_EQ_INT((int)pe.kind, (int)PROC_EVENT_IGNORE);
	cJSON_Delete(ev);
	ev = NULL;
	/* A failed attempt at an intent Stripe.js confirms: the customer may
	 * try another card with it, so it declines nothing. */
	CHECK(
	    (ev = cJSON_Parse(
	         "{\"id\":\"evt_1\",\"type\":\"payment_intent.payment_failed\","
	         "\"data\":{\"object\":{\"id\":\"pi_1\",\"status\":\"requires_payment_method\","
	         "\"metadata\":{\"flair_txn_id\":\"txn_1\",\"flair_confirm\":\"stripe_js\"},"
	         "\"last_payment_error\":{\"type\":\"card_error\"}}}}")) != NULL);
	CHECK_EQ_INT(proc_type_stripe.map_event(ev, &pe), 0);
	CHECK_EQ_INT((int)pe.kind, (int)PROC_EVENT_IGNORE);
	cJSON_Delete(ev);
	ev = NULL;
	/* The currency comes with the amount, to be compared with ours. */
	CHECK((ev = cJSON_Parse(
	           "{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\","
	           "\"data\":{\"object\":{\"id\":\"pi_1\",\"status\":\"succeeded\","
	           "\"amount\":100,\"amount_received\":100,\"currency\":\"eur\"}}}")) !=
	      NULL);
	CHECK_EQ_INT(proc_type_stripe.map_event(ev, &pe), 0);
	CHECK_STR(txn_state_name(pe.target), "succeeded");
	CHECK_EQ_INT((int)pe.amount, 100);
	CHECK_STR(pe.currency, "EUR");
end:
	cJSON_Delete(ev);
	free(text);
	TT_END;
}

/* The detach answer: detached, gone already (not attached, unknown),
 * refused, or lost. */
static int
test_parse_detach(void)
{
	static const struct {
		long status;
		const char *body;
		enum proc_outcome outcome;
		const char *code;
	} t[] = {
		{ 200, "{\"id\":\"pm_1\",\"object\":\"payment_method\",\"customer\":null}",
		  PROC_SUCCEEDED, "" },
		{ 200, "{\"id\":\"pm_1\",\"object\":\"payment_method\",\"customer\":\"cus_1\"}",
		  PROC_FAILED, "PAYMENT_METHOD_REFUSED" },
		{ 400,
		  "{\"error\":{\"type\":\"invalid_request_error\","
		  "\"code\":\"payment_method_unexpected_state\"}}",
		  PROC_FAILED, "PAYMENT_METHOD_NOT_FOUND" },
		{ 404,
		  "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"resource_missing\"}}",
		  PROC_FAILED, "PAYMENT_METHOD_NOT_FOUND" },
		{ 401, "{\"error\":{\"type\":\"authentication_error\"}}", PROC_FAILED,
		  "PAYMENT_METHOD_REFUSED" },
		{ 400, "{\"error\":{\"type\":\"idempotency_error\"}}", PROC_UNKNOWN, NULL },
		{ 500, "{\"error\":{\"type\":\"api_error\"}}", PROC_UNKNOWN, NULL },
		{ 200, "", PROC_FAILED, "PAYMENT_METHOD_REFUSED" },
	};
	struct proc_result r;
	TT_BEGIN;

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		CHECK_EQ_INT(proc_type_stripe.parse_detach(NULL, t[i].status, t[i].body,
		                                           strlen(t[i].body), &r),
		             0);
		if ((int)r.outcome != (int)t[i].outcome)
			fprintf(stderr, "  case %zu: outcome %d\n", i, (int)r.outcome);
		CHECK_EQ_INT((int)r.outcome, (int)t[i].outcome);
		if (t[i].code != NULL)
			CHECK_STR(r.code, t[i].code);
	}
end:
	TT_END;
}

static const struct tt_case cases[] = {
	{ "parse_detach", test_parse_detach },
	{ "build_form", test_build_form },
	{ "parse_reply_tables", test_parse_reply_tables },
	{ "operations", test_operations },
	{ "parse_card", test_parse_card },
	{ "contract_adapter_requests", test_contract_adapter_requests },
	{ "contract_refusals", test_contract_refusals },
	{ "parse_save", test_parse_save },
	{ "search_hit_is_checked", test_search_hit_is_checked },
	{ "map_events", test_map_events },
	{ NULL, NULL },
};
TT_MAIN(cases)
