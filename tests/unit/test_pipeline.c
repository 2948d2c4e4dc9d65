/*
 * tests/unit/test_pipeline.c — the request parser (every field's good and
 * bad shapes), card data going to guarded memory, and stage-order rules.
 */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "crypto/secmem.h"
#include "pipeline/pipeline.h"
#include "tt.h"

static const char *good =
    "{\"reservationId\":\"res_123\",\"amount\":15000,\"currency\":\"USD\","
    "\"card\":{\"number\":\"4242424242424242\",\"expMonth\":12,\"expYear\":2030,"
    "\"cvc\":\"123\",\"holderName\":\"John \\\"JD\\\" Doe\"},"
    "\"customer\":{\"email\":\"john@example.com\",\"name\":\"John Doe\","
    "\"ip\":\"203.0.113.9\",\"country\":\"US\"},"
    "\"description\":\"2 guests\",\"metadata\":{\"k\":\"v\"}}";

static int
parse(const char *body, struct txn_request **rq, struct txn_parse_error *err)
{
	return txn_request_parse(body, strlen(body), rq, err);
}

static int
test_parse_good(void)
{
	struct txn_request *rq = NULL;
	struct txn_parse_error err;
	TT_BEGIN;
	CHECK_EQ_INT(parse(good, &rq, &err), 0);
	CHECK_STR(rq->reservation_id, "res_123");
	CHECK_EQ_INT(rq->amount, 15000);
	CHECK_STR(rq->currency, "USD");
	CHECK(rq->has_card && !rq->has_encrypted);
	CHECK(rq->card.pan != NULL && rq->card.pan->len == 16);
	CHECK(memcmp(rq->card.pan->data, "4242424242424242", 16) == 0);
	CHECK(rq->card.cvc != NULL && rq->card.cvc->len == 3);
	CHECK_EQ_INT(rq->card.exp_month, 12);
	CHECK_EQ_INT(rq->card.exp_year, 2030);
	CHECK_STR(rq->card.holder, "John \"JD\" Doe");
	CHECK_STR(rq->email, "john@example.com");
	CHECK_STR(rq->ip, "203.0.113.9");
	CHECK_STR(rq->country, "US");
	CHECK_STR(rq->metadata_json, "{\"k\":\"v\"}");
end:
	txn_request_free(rq);
	TT_END;
}

static int
test_parse_sealed(void)
{
	struct txn_request *rq = NULL;
	struct txn_parse_error err;
	const char *b = "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"EUR\","
	                "\"encryptedCard\":{\"keyId\":\"gk_1\",\"data\":\"QUJD\"}}";
	TT_BEGIN;
	CHECK_EQ_INT(parse(b, &rq, &err), 0);
	CHECK(rq->has_encrypted && !rq->has_card);
	CHECK_STR(rq->enc_key_id, "gk_1");
	CHECK_STR(rq->enc_data, "QUJD");
	CHECK(rq->card.pan == NULL);
end:
	txn_request_free(rq);
	TT_END;
}

/* Each bad body must fail with FGW_ERR_INVALID naming the field, and the
 * message must never contain the card number. */
static int
test_parse_bad(void)
{
	static const struct { const char *body, *field; } cases[] = {
		{ "", "body" },
		{ "not json", "body" },
		{ "[1,2]", "body" },
		{ "{\"amount\":1,\"currency\":\"USD\",\"card\":{}}", "reservationId" },
		{ "{\"reservationId\":\"r\",\"amount\":\"15000\",\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":0,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":-5,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":1.5,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":1e300,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"usd\",\"card\":{}}", "currency" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USDX\"}", "currency" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\"}", "card" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"encryptedCard\":{}}", "card" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":4242424242424242,\"expMonth\":1,\"expYear\":2030}}", "card.number" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242 4242 4242 4242\",\"expMonth\":1,\"expYear\":2030}}", "card.number" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":13,\"expYear\":2030}}", "card.expMonth" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1}}", "card.expYear" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030,\"cvc\":\"12\"}}", "card.cvc" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030,\"pin\":\"1\"}}", "card.pin" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"customer\":{\"ip\":\"999.1.1.1\"}}", "customer.ip" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"customer\":{\"email\":\"nope\"}}", "customer.email" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"customer\":{\"country\":\"usa\"}}", "customer.country" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"metadata\":[1]}", "metadata" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"surprise\":1}", "surprise" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"encryptedCard\":{\"keyId\":\"gk\"}}", "encryptedCard.data" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"encryptedCard\":\"x\"}", "encryptedCard" },
		{ "{\"reservationId\":\"r\\u0001\",\"amount\":1,\"currency\":\"USD\"}", "reservationId" },
		{ "{\"reservationId\":\"r\"} trailing", "body" },
		{ "{\"reservationId\":\"r\xff\"}", "body" },
		{ "{\"reservationId\":\"r\xc0\xaf\"}", "body" },
		{ "{\"reservationId\":\"r\xed\xa0\x80\"}", "body" },
		{ "{\"reservationId\":\"r\x01\"}", "body" },
		{ "{\"reservationId\":\"\xe2\x82\"}", "body" },
	};
	struct txn_request *rq = NULL;
	struct txn_parse_error err;
	TT_BEGIN;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rq = NULL;
		int r = parse(cases[i].body, &rq, &err);
		if (r != FGW_ERR_INVALID || strcmp(err.field, cases[i].field) != 0) {
			fprintf(stderr, "  case %zu: r=%d field=%s message=%s (expected %s)\n", i, r,
			        err.field, err.message, cases[i].field);
			txn_request_free(rq);
			rq = NULL;
		}
		CHECK_EQ_INT(r, FGW_ERR_INVALID);
		CHECK_STR(err.field, cases[i].field);
		CHECK(strstr(err.message, "4242") == NULL);
		CHECK(rq == NULL);
	}
end:
	txn_request_free(rq);
	TT_END;
}

static int
test_utf8_accepted(void)
{
	struct txn_request *rq = NULL;
	struct txn_parse_error err;
	/* 2-, 3- and 4-byte sequences and escaped text are all fine. */
	const char *b = "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"EUR\","
	                "\"description\":\"Caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\x89 \\u00e9\",\r\n"
	                "\"encryptedCard\":{\"keyId\":\"gk_1\",\"data\":\"QUJD\"}}\n ";
	TT_BEGIN;
	CHECK_EQ_INT(parse(b, &rq, &err), 0);
	CHECK(strncmp(rq->description, "Caf\xc3\xa9", 5) == 0);
end:
	txn_request_free(rq);
	TT_END;
}

static int
test_nesting_and_size(void)
{
	struct txn_request *rq = NULL;
	struct txn_parse_error err;
	char *deep = malloc(20010);
	TT_BEGIN;
	CHECK(deep != NULL);
	for (int i = 0; i < 10000; i++)
		deep[i] = '[';
	for (int i = 0; i < 10000; i++)
		deep[10000 + i] = ']';
	deep[20000] = '\0';
	CHECK_EQ_INT(parse(deep, &rq, &err), FGW_ERR_INVALID);
	/* Not NUL-terminated input: the parser reads only len bytes. */
	CHECK_EQ_INT(txn_request_parse(good, 10, &rq, &err), FGW_ERR_INVALID);
end:
	free(deep);
	txn_request_free(rq);
	TT_END;
}

static int
test_card_json(void)
{
	struct txn_card card;
	struct txn_parse_error err;
	const char *c = "{\"number\":\"378282246310005\",\"expMonth\":3,\"expYear\":2031,\"cvc\":\"7391\"}";
	TT_BEGIN;
	memset(&card, 0, sizeof(card));
	memset(&err, 0, sizeof(err));
	CHECK_EQ_INT(txn_card_parse_json(c, strlen(c), &card, &err), 0);
	CHECK(card.pan->len == 15);
	CHECK(card.cvc->len == 4);
	txn_card_clear(&card);
	CHECK(card.pan == NULL);
	CHECK_EQ_INT(txn_card_parse_json("{}", 2, &card, &err), FGW_ERR_INVALID);
	CHECK_EQ_INT(txn_card_parse_json("{x", 2, &card, &err), FGW_ERR_INVALID);
end:
	txn_card_clear(&card);
	TT_END;
}

/* encryptedCard freshness: iat within max age and skew, required unless
 * the migration switch is off, an integer; the card is dropped on refusal. */
static int
test_card_sealed_iat(void)
{
	struct sealed_card_policy pol = { 900000, 60000, 1 };
	struct txn_card card;
	struct txn_parse_error err;
	const int64_t now = 1800000000000LL;
	char c[200];
	TT_BEGIN;
	memset(&card, 0, sizeof(card));
	memset(&err, 0, sizeof(err));
#define CARD(iat) snprintf(c, sizeof(c), "{\"number\":\"4242424242424242\",\"expMonth\":3," \
	                    "\"expYear\":2031%s}", iat)
	CARD(",\"iat\":1800000000");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), 0);
	CHECK(card.pan != NULL && card.pan->len == 16);
	txn_card_clear(&card);
	CARD(",\"iat\":1799999099"); /* 901 s old */
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), FGW_ERR_TIMEOUT);
	CHECK(card.pan == NULL);
	CARD(",\"iat\":1799999100"); /* exactly max age */
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), 0);
	txn_card_clear(&card);
	CARD(",\"iat\":1800000061");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), FGW_ERR_TIMEOUT);
	CARD(",\"iat\":\"1800000000\"");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), FGW_ERR_INVALID);
	CARD(",\"iat\":1800000000.5");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), FGW_ERR_INVALID);
	CARD("");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), FGW_ERR_TIMEOUT);
	CHECK(card.pan == NULL);
	pol.require_iat = 0;
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), 0);
	txn_card_clear(&card);
	CARD(",\"iat\":1,\"iat\":1800000000"); /* repeated member */
	CHECK(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err) != 0);
	CHECK(card.pan == NULL);
#undef CARD
end:
	txn_card_clear(&card);
	TT_END;
}

static int
test_stage_orders(void)
{
	struct pipeline pl;
	char err[128];
	TT_BEGIN;
	CHECK_EQ_INT(pipeline_build("token,decrypt,rule,encrypt,post", "decrypt,record,post",
	                            &pl, err, sizeof(err)), 0);
	CHECK_EQ_INT(pl.n[PHASE_REQUEST], 5);
	CHECK_EQ_INT(pl.n[PHASE_RESPONSE], 3);
	CHECK_STR(pl.stages[PHASE_REQUEST][0]->name, "token");
	CHECK_STR(pl.stages[PHASE_RESPONSE][2]->name, "post");
	CHECK(pl.stages[PHASE_REQUEST][4] != pl.stages[PHASE_RESPONSE][2]);
	/* decrypt before token is allowed: the card is vaulted when opened. */
	CHECK_EQ_INT(pipeline_build("decrypt, token, rule, encrypt, post", "decrypt,record,post",
	                            &pl, err, sizeof(err)), 0);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post,decrypt", "record,post", &pl, err,
	                            sizeof(err)), FGW_ERR_INVALID);
	CHECK(strstr(err, "post must be the last") != NULL);
	CHECK_EQ_INT(pipeline_build("token,decrypt,encrypt,post", "record,post", &pl, err,
	                            sizeof(err)), FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,post,encrypt", "record,post", &pl, err,
	                            sizeof(err)), FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,tokenize,encrypt,post", "record,post", &pl, err,
	                            sizeof(err)), FGW_ERR_INVALID);
	CHECK(strstr(err, "unknown request stage 'tokenize'") != NULL);
	CHECK_EQ_INT(pipeline_build("token,rule,rule,encrypt,post", "record,post", &pl, err,
	                            sizeof(err)), FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post", "post,record", &pl, err,
	                            sizeof(err)), FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post", "decrypt,post", &pl, err,
	                            sizeof(err)), FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post", "record,post", &pl, err,
	                            sizeof(err)), 0);
end:
	TT_END;
}

/* A payment the customer's browser confirms at the processor: no payment
 * source at all, and one given is refused, not ignored. */
static int
test_parse_client_confirms(void)
{
	static const char none[] = "{\"amount\":1500,\"currency\":\"EUR\","
	                           "\"reservationId\":\"res_1\"}";
	static const char *const bad[] = {
		"{\"amount\":1500,\"currency\":\"EUR\",\"card\":{\"number\":\"4242424242424242\","
		"\"expMonth\":12,\"expYear\":2030}}",
		"{\"amount\":1500,\"currency\":\"EUR\",\"stripePaymentMethod\":\"pm_1\"}",
		"{\"amount\":1500,\"currency\":\"EUR\",\"paymentMethodId\":\"pm_1\"}",
		"{\"amount\":1500,\"currency\":\"EUR\",\"savePaymentMethod\":true}",
	};
	struct txn_request *rq = NULL;
	struct txn_parse_error err;
	TT_BEGIN;

	CHECK_EQ_INT(txn_request_parse_client_confirms(none, strlen(none), &rq, &err), 0);
	CHECK_EQ_INT(rq->client_confirms, 1);
	CHECK(rq->card.pan == NULL && !rq->has_card && !rq->has_encrypted);
	txn_request_free(rq);
	rq = NULL;
	/* The ordinary parse still wants exactly one source. */
	CHECK_EQ_INT(txn_request_parse(none, strlen(none), &rq, &err), FGW_ERR_INVALID);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_EQ_INT(txn_request_parse_client_confirms(bad[i], strlen(bad[i]), &rq, &err),
		             FGW_ERR_INVALID);
		CHECK(rq == NULL);
	}
end:
	txn_request_free(rq);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "parse_client_confirms", test_parse_client_confirms },
	{ "parse_good", test_parse_good },
	{ "parse_sealed", test_parse_sealed },
	{ "parse_bad", test_parse_bad },
	{ "utf8_accepted", test_utf8_accepted },
	{ "nesting_and_size", test_nesting_and_size },
	{ "card_json", test_card_json },
	{ "card_sealed_iat", test_card_sealed_iat },
	{ "stage_orders", test_stage_orders },
	{ NULL, NULL },
};
TT_MAIN(cases)
