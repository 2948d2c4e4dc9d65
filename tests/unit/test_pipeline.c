/*
 * tests/unit/test_pipeline.c — the request parser (every field's good and
 * bad shapes), card data going to guarded memory, stage-order rules,
 * the choice of processor among several (routes, then the next breaker),
 * and txn_settle on a real store: forward only, audited, published once.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <sodium.h>
#include <sqlite3.h>

#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "crypto/secmem.h"
#include "pipeline/events.h"
#include "pipeline/pipeline.h"
#include "pipeline/settle.h"
#include "pipeline/stages.h"
#include "processors/route.h"
#include "store/store.h"
#include "tt.h"

static const char *good =
    "{\"reservationId\":\"res_123\",\"amount\":15000,\"currency\":\"USD\","
    "\"card\":{\"number\":\"4242424242424242\",\"expMonth\":12,\"expYear\":2030,"
    "\"cvc\":\"123\",\"holderName\":\"John \\\"JD\\\" Doe\"},"
    "\"customer\":{\"email\":\"john@example.com\",\"name\":\"John Doe\","
    "\"ip\":\"203.0.113.9\",\"country\":\"US\"},"
    "\"description\":\"2 guests\",\"metadata\":{\"k\":\"v\"}}";

static int
parse(const char *body, struct txn_request **rq, struct fgw_why *err)
{
	return txn_request_parse(body, strlen(body), rq, err);
}

static int
test_parse_good(void)
{
	struct txn_request *rq = NULL;
	struct fgw_why err;
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
	struct fgw_why err;
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
	static const struct {
		const char *body, *field;
	} cases[] = {
		{ "", "body" },
		{ "not json", "body" },
		{ "[1,2]", "body" },
		{ "{\"amount\":1,\"currency\":\"USD\",\"card\":{}}", "reservationId" },
		{ "{\"reservationId\":\"r\",\"amount\":\"15000\",\"currency\":\"USD\"}",
		  "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":0,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":-5,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":1.5,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":1e300,\"currency\":\"USD\"}", "amount" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"usd\",\"card\":{}}",
		  "currency" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USDX\"}", "currency" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\"}", "card" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"encryptedCard\":{}}",
		  "card" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":4242424242424242,\"expMonth\":1,\"expYear\":2030}}",
		  "card.number" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242 4242 4242 4242\",\"expMonth\":1,\"expYear\":2030}}",
		  "card.number" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":13,\"expYear\":2030}}",
		  "card.expMonth" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1}}",
		  "card.expYear" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030,\"cvc\":\"12\"}}",
		  "card.cvc" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030,\"pin\":\"1\"}}",
		  "card.pin" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"customer\":{\"ip\":\"999.1.1.1\"}}",
		  "customer.ip" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"customer\":{\"email\":\"nope\"}}",
		  "customer.email" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"customer\":{\"country\":\"usa\"}}",
		  "customer.country" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"metadata\":[1]}",
		  "metadata" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"card\":{\"number\":\"4242424242424242\",\"expMonth\":1,\"expYear\":2030},\"surprise\":1}",
		  "surprise" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"encryptedCard\":{\"keyId\":\"gk\"}}",
		  "encryptedCard.data" },
		{ "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"USD\",\"encryptedCard\":\"x\"}",
		  "encryptedCard" },
		{ "{\"reservationId\":\"r\\u0001\",\"amount\":1,\"currency\":\"USD\"}",
		  "reservationId" },
		{ "{\"reservationId\":\"r\"} trailing", "body" },
		{ "{\"reservationId\":\"r\xff\"}", "body" },
		{ "{\"reservationId\":\"r\xc0\xaf\"}", "body" },
		{ "{\"reservationId\":\"r\xed\xa0\x80\"}", "body" },
		{ "{\"reservationId\":\"r\x01\"}", "body" },
		{ "{\"reservationId\":\"\xe2\x82\"}", "body" },
	};
	struct txn_request *rq = NULL;
	struct fgw_why err;
	TT_BEGIN;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rq = NULL;
		int r = parse(cases[i].body, &rq, &err);
		if (r != FGW_ERR_INVALID || strcmp(err.where, cases[i].field) != 0) {
			fprintf(stderr, "  case %zu: r=%d field=%s message=%s (expected %s)\n", i, r,
			        err.where, err.msg, cases[i].field);
			txn_request_free(rq);
			rq = NULL;
		}
		CHECK_EQ_INT(r, FGW_ERR_INVALID);
		CHECK_STR(err.where, cases[i].field);
		CHECK(strstr(err.msg, "4242") == NULL);
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
	struct fgw_why err;
	/* 2-, 3- and 4-byte sequences and escaped text are all fine. */
	const char *b =
	    "{\"reservationId\":\"r\",\"amount\":1,\"currency\":\"EUR\","
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
	struct fgw_why err;
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
	struct fgw_why err;
	const char *c =
	    "{\"number\":\"378282246310005\",\"expMonth\":3,\"expYear\":2031,\"cvc\":\"7391\"}";
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
	struct fgw_why err;
	const int64_t now = 1800000000000LL;
	char c[200];
	TT_BEGIN;
	memset(&card, 0, sizeof(card));
	memset(&err, 0, sizeof(err));
#define CARD(iat)                                               \
	snprintf(c, sizeof(c),                                      \
	         "{\"number\":\"4242424242424242\",\"expMonth\":3," \
	         "\"expYear\":2031%s}",                             \
	         iat)
	CARD(",\"iat\":1800000000");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), 0);
	CHECK(card.pan != NULL && card.pan->len == 16);
	txn_card_clear(&card);
	CARD(",\"iat\":1799999099"); /* 901 s old */
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err),
	             FGW_ERR_TIMEOUT);
	CHECK(card.pan == NULL);
	CARD(",\"iat\":1799999100"); /* exactly max age */
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err), 0);
	txn_card_clear(&card);
	CARD(",\"iat\":1800000061");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err),
	             FGW_ERR_TIMEOUT);
	CARD(",\"iat\":\"1800000000\"");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err),
	             FGW_ERR_INVALID);
	CARD(",\"iat\":1800000000.5");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err),
	             FGW_ERR_INVALID);
	CARD("");
	CHECK_EQ_INT(txn_card_parse_sealed(c, strlen(c), &pol, now, &card, &err),
	             FGW_ERR_TIMEOUT);
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
	struct fgw_why why = { 0 };
	const char *err = why.msg;
	TT_BEGIN;
	CHECK_EQ_INT(pipeline_build("token,decrypt,rule,encrypt,post", "decrypt,record,post",
	                            &pl, &why),
	             0);
	CHECK_EQ_INT(pl.n[PHASE_REQUEST], 5);
	CHECK_EQ_INT(pl.n[PHASE_RESPONSE], 3);
	CHECK_STR(pl.stages[PHASE_REQUEST][0]->name, "token");
	CHECK_STR(pl.stages[PHASE_RESPONSE][2]->name, "post");
	CHECK(pl.stages[PHASE_REQUEST][4] != pl.stages[PHASE_RESPONSE][2]);
	/* decrypt before token is allowed: the card is vaulted when opened. */
	CHECK_EQ_INT(pipeline_build("decrypt, token, rule, encrypt, post",
	                            "decrypt,record,post", &pl, &why),
	             0);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post,decrypt", "record,post", &pl,
	                            &why),
	             FGW_ERR_INVALID);
	CHECK(strstr(err, "post must be the last") != NULL);
	CHECK_EQ_INT(pipeline_build("token,decrypt,encrypt,post", "record,post", &pl, &why),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,post,encrypt", "record,post", &pl, &why),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,tokenize,encrypt,post", "record,post", &pl,
	                            &why),
	             FGW_ERR_INVALID);
	CHECK(strstr(err, "unknown request stage 'tokenize'") != NULL);
	CHECK_EQ_INT(pipeline_build("token,rule,rule,encrypt,post", "record,post", &pl, &why),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post", "post,record", &pl, &why),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post", "decrypt,post", &pl, &why),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(pipeline_build("token,rule,encrypt,post", "record,post", &pl, &why), 0);
end:
	TT_END;
}

/* The processor of a new transaction: the route's, else the first; an
 * open breaker passes it to the next in the configured order (after the
 * last, the first); when every breaker is open, the last one tried. */
static struct txn choose_t;

static const char *
choose(struct pipeline_env *env, struct txn_request *rq, const char *currency)
{
	memset(&choose_t, 0, sizeof(choose_t));
	choose_t.env = env;
	choose_t.req = rq;
	fgw_strlcpy(rq->currency, currency, sizeof(rq->currency));
	stage_choose_proc(&choose_t);
	return choose_t.inst->cfg.name;
}

static int
test_choose_proc(void)
{
	static const char *const names[] = { "a", "b", "c" };
	struct proc_instance pi[3];
	struct pipeline_env env;
	struct proc_routes rs;
	struct txn_request rq;
	struct fgw_why why;
	TT_BEGIN;
	CHECK(sodium_init() >= 0);
	memset(pi, 0, sizeof(pi));
	for (int i = 0; i < 3; i++) {
		fgw_strlcpy(pi[i].cfg.name, names[i], sizeof(pi[i].cfg.name));
		pi[i].type = &proc_type_sandbox;
		breaker_init(&pi[i].breaker, 1, 600000);
	}
	memset(&rs, 0, sizeof(rs));
	CHECK_EQ_INT(proc_route_parse("b currency=EUR", &rs.r[rs.n++], &why), 0);
	memset(&env, 0, sizeof(env));
	env.procs = pi;
	env.n_procs = 3;
	env.routes = &rs;
	memset(&rq, 0, sizeof(rq));
	rq.amount = 100;
	CHECK_STR(choose(&env, &rq, "USD"), "a");
	CHECK_STR(choose(&env, &rq, "EUR"), "b");
	breaker_record(&pi[0].breaker, 0, 0, fgw_now_ms()); /* a opens */
	CHECK_STR(choose(&env, &rq, "USD"), "b");
	CHECK_STR(choose(&env, &rq, "EUR"), "b");
	breaker_record(&pi[1].breaker, 0, 0, fgw_now_ms()); /* b opens */
	CHECK_STR(choose(&env, &rq, "USD"), "c");
	CHECK_STR(choose(&env, &rq, "EUR"), "c");
	breaker_record(&pi[2].breaker, 0, 0, fgw_now_ms()); /* c opens */
	CHECK_STR(choose(&env, &rq, "USD"), "c");           /* a, b, c tried */
	CHECK_STR(choose(&env, &rq, "EUR"), "a");           /* b, c, a tried */
	/* One processor: no breaker is asked. */
	env.n_procs = 1;
	CHECK_STR(choose(&env, &rq, "EUR"), "a");
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
	struct fgw_why err;
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

/* ---- txn_settle ---------------------------------------------------------- */

struct settle_fix {
	char dir[64];
	char path[96];
	struct pipeline_env env;
	struct event *keepalive;
	int published;        /* listener calls */
	char last_status[24]; /* the state the listener heard last */
	int done_calls;
	int done_rc;
	char done_status[24];
};

static int
settle_mac(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	static const unsigned char key[32] = "flairgw-settle-unit-test-key";
	(void)ctx;
	return crypto_generichash(mac, 32, msg, len, key, sizeof(key)) == 0 ? 0
	                                                                    : FGW_ERR_CRYPTO;
}

static void
settle_keepalive(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void
settle_heard(void *ctx, const struct pipeline_env *env, const struct store_txn_row *row)
{
	struct settle_fix *f = ctx;
	(void)env;
	f->published++;
	fgw_strlcpy(f->last_status, row->status, sizeof(f->last_status));
}

static void
settle_done(void *arg, int rc, const struct store_txn_row *row)
{
	struct settle_fix *f = arg;
	f->done_calls++;
	f->done_rc = rc;
	fgw_strlcpy(f->done_status, row != NULL ? row->status : "", sizeof(f->done_status));
}

static void
settle_created(void *arg, int rc)
{
	struct settle_fix *f = arg;
	f->done_calls++;
	f->done_rc = rc;
}

/* Runs the reactor until done_calls reaches want (at most ~10 s). */
static int
settle_wait(struct settle_fix *f, int want)
{
	for (int i = 0; i < 2000 && f->done_calls < want; i++)
		event_base_loop(f->env.base, EVLOOP_ONCE);
	return f->done_calls >= want ? 0 : -1;
}

static int
settle_setup(struct settle_fix *f)
{
	struct timeval tv = { 0, 5000 };
	struct store_opts o = { 0 };

	memset(f, 0, sizeof(*f));
	log_setup(LOG_LVL_ERROR, 0, 2);
	if (fgw_strlcpy(f->dir, "/tmp/fgw-settle-XXXXXX", sizeof(f->dir)) != 0 ||
	    mkdtemp(f->dir) == NULL ||
	    snprintf(f->path, sizeof(f->path), "%s/gw.db", f->dir) >= (int)sizeof(f->path))
		return -1;
	o.path = f->path;
	o.sync_full = 1;
	o.batch_max = 8;
	o.audit_mac = settle_mac;
	if (evthread_use_pthreads() != 0 || store_open(&o, &f->env.store) != 0 ||
	    store_reader_open(f->env.store, &f->env.reader) != 0 ||
	    (f->env.base = event_base_new()) == NULL)
		return -1;
	f->keepalive = event_new(f->env.base, -1, EV_PERSIST, settle_keepalive, NULL);
	if (f->keepalive == NULL || event_add(f->keepalive, &tv) != 0)
		return -1;
	txn_events_reset();
	if (txn_events_subscribe(settle_heard, f) != 0)
		return -1;
	return store_waker_new(f->env.store, f->env.base, &f->env.waker);
}

static void
settle_teardown(struct settle_fix *f)
{
	char p[128];
	txn_events_reset();
	store_reader_close(f->env.reader);
	store_waker_free(f->env.waker);
	store_close(f->env.store);
	if (f->keepalive != NULL)
		event_free(f->keepalive);
	if (f->env.base != NULL)
		event_base_free(f->env.base);
	if (f->path[0] != '\0') {
		static const char *const sfx[] = { "", "-wal", "-shm" };
		for (size_t i = 0; i < 3; i++)
			if (snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]) < (int)sizeof(p))
				unlink(p);
	}
	if (f->dir[0] != '\0')
		rmdir(f->dir);
}

static int64_t
settle_count(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	int64_t n = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

/* A settled payment does not move back: not when the caller knows its
 * state (refused before anything is written), not when it did not read it
 * (a webhook whose read failed), and not when it read it before the
 * payment settled (a reconciler or a poll that raced with the pipeline):
 * the writer refuses those against the committed state. Whatever the
 * caller — record stage, reconciler, webhook, payment-status poll — the
 * move goes through txn_settle, so this is each of theirs. */
static int
test_settle_forward_only(void)
{
	static const enum txn_state late[] = {
		TXN_POSTING,  TXN_PROCESSING, TXN_REQUIRES_ACTION, TXN_AUTHORIZED,
		TXN_DECLINED, TXN_FAILED,     TXN_SUCCEEDED,       TXN_CANCELED,
	};
	static const enum txn_state seen[] = { TXN_SUCCEEDED, TXN_STATE_NONE, TXN_PROCESSING,
		                                   TXN_POSTING };
	struct settle_fix f;
	struct store_txn_row row;
	struct store_audit created = { "client_a",    "local",   "txn.created",
		                           "txn_settle1", "posting", NULL };
	struct txn_settlement set;
	int want = 0;
	TT_BEGIN;
	CHECK(settle_setup(&f) == 0);
	memset(&row, 0, sizeof(row));
	fgw_strlcpy(row.id, "txn_settle1", sizeof(row.id));
	fgw_strlcpy(row.client_id, "client_a", sizeof(row.client_id));
	row.amount = 1500;
	fgw_strlcpy(row.currency, "EUR", sizeof(row.currency));
	fgw_strlcpy(row.status, "posting", sizeof(row.status));
	fgw_strlcpy(row.processor, "sandbox", sizeof(row.processor));
	CHECK_EQ_INT(store_txn_create(f.env.store, f.env.waker, &row, NULL,
	                              &(struct store_commit){ .audit = &created,
	                                                      .n_audit = 1,
	                                                      .done = settle_created,
	                                                      .arg = &f }),
	             0);
	CHECK(settle_wait(&f, ++want) == 0);
	CHECK_EQ_INT(f.done_rc, 0);

	/* The move forward: committed, audited, published once. */
	set = (struct txn_settlement){ .txn_id = row.id,
		                           .from = TXN_POSTING,
		                           .to = TXN_SUCCEEDED,
		                           .processor_ref = "ch_1",
		                           .actor = "client_a",
		                           .source = "local",
		                           .event_type = "txn.outcome",
		                           .row = &row };
	CHECK_EQ_INT(txn_settle(&f.env, &set, settle_done, &f), 0);
	CHECK(settle_wait(&f, ++want) == 0);
	CHECK_EQ_INT(f.done_rc, 0);
	CHECK_STR(f.done_status, "succeeded");
	CHECK_EQ_INT(f.published, 1);
	CHECK_STR(f.last_status, "succeeded");
	CHECK_EQ_INT(settle_count(f.path,
	                          "SELECT COUNT(*) FROM audit_events WHERE "
	                          "resource = 'txn_settle1' AND event_type = 'txn.outcome'"
	                          " AND outcome = 'succeeded'"),
	             1);

	/* Every late event, as each kind of caller would send it. */
	for (size_t i = 0; i < sizeof(late) / sizeof(late[0]); i++) {
		for (size_t k = 0; k < sizeof(seen) / sizeof(seen[0]); k++) {
			int r;
			set = (struct txn_settlement){ .txn_id = row.id,
				                           .from = seen[k],
				                           .to = late[i],
				                           .error_code = "LATE",
				                           .actor = "sandbox",
				                           .source = "local",
				                           .event_type = "txn.webhook" };
			f.done_rc = 1;
			r = txn_settle(&f.env, &set, settle_done, &f);
			if (seen[k] == TXN_SUCCEEDED) {
				/* Known: refused before anything is queued. */
				CHECK_EQ_INT(r, FGW_ERR_STATE);
				continue;
			}
			if (!txn_state_may_move(seen[k], late[i]) && seen[k] != TXN_STATE_NONE) {
				CHECK_EQ_INT(r, FGW_ERR_STATE);
				continue;
			}
			CHECK_EQ_INT(r, 0);
			CHECK(settle_wait(&f, ++want) == 0);
			if (f.done_rc != FGW_ERR_STATE)
				fprintf(stderr, "  %s (caller saw %s): rc %d\n", txn_state_name(late[i]),
				        txn_state_name(seen[k]), f.done_rc);
			CHECK_EQ_INT(f.done_rc, FGW_ERR_STATE);
			CHECK_STR(f.done_status, "");
		}
	}
	/* Nothing moved, nothing was published or audited for them. */
	CHECK_EQ_INT(f.published, 1);
	CHECK_EQ_INT(settle_count(f.path, "SELECT COUNT(*) FROM transactions WHERE "
	                                  "id = 'txn_settle1' AND status = 'succeeded' AND "
	                                  "error_code IS NULL AND processor_ref = 'ch_1'"),
	             1);
	CHECK_EQ_INT(settle_count(f.path, "SELECT COUNT(*) FROM audit_events WHERE "
	                                  "event_type = 'txn.webhook'"),
	             0);

	/* Forward still works after the refusals: a refund of it. */
	set = (struct txn_settlement){ .txn_id = row.id,
		                           .from = TXN_SUCCEEDED,
		                           .to = TXN_REFUNDED,
		                           .actor = "sandbox",
		                           .source = "local",
		                           .event_type = "txn.webhook" };
	CHECK_EQ_INT(txn_settle(&f.env, &set, settle_done, &f), 0);
	CHECK(settle_wait(&f, ++want) == 0);
	CHECK_EQ_INT(f.done_rc, 0);
	/* Read back (no row given): the row as stored, processor_ref kept. */
	CHECK_STR(f.done_status, "refunded");
	CHECK_EQ_INT(f.published, 2);
	CHECK_STR(f.last_status, "refunded");
	/* A name the table does not know is no move either. */
	set.from = TXN_REFUNDED;
	set.to = TXN_STATE_NONE;
	CHECK_EQ_INT(txn_settle(&f.env, &set, settle_done, &f), FGW_ERR_STATE);
	set.from = TXN_STATE_NONE;
	CHECK_EQ_INT(txn_settle(&f.env, &set, settle_done, &f), FGW_ERR_INVALID);
end:
	settle_teardown(&f);
	TT_END;
}

/* A capture's success moves and publishes the transaction once, through
 * txn_settle_op; a refused cancel records the refusal and moves and
 * publishes nothing. */
static int
test_settle_op(void)
{
	struct settle_fix f;
	struct store_txn_row row;
	struct store_pendingop op, out;
	struct txn_op_settlement set;
	int want = 0;
	TT_BEGIN;
	CHECK(settle_setup(&f) == 0);
	for (int i = 0; i < 2; i++) {
		memset(&row, 0, sizeof(row));
		fgw_strlcpy(row.id, i == 0 ? "txn_auth1" : "txn_auth2", sizeof(row.id));
		fgw_strlcpy(row.client_id, "client_a", sizeof(row.client_id));
		row.amount = 1500;
		fgw_strlcpy(row.currency, "EUR", sizeof(row.currency));
		fgw_strlcpy(row.status, "authorized", sizeof(row.status));
		CHECK_EQ_INT(store_txn_create(f.env.store, f.env.waker, &row, NULL,
		                              &(struct store_commit){ .done = settle_created,
		                                                      .arg = &f }),
		             0);
		CHECK(settle_wait(&f, ++want) == 0);
		CHECK_EQ_INT(f.done_rc, 0);
	}
	/* The capture, written ahead, then done at the processor. */
	memset(&op, 0, sizeof(op));
	op.kind = STORE_OP_CAPTURE;
	fgw_strlcpy(op.txn_id, "txn_auth1", sizeof(op.txn_id));
	fgw_strlcpy(op.idempotency_key, "pk1", sizeof(op.idempotency_key));
	CHECK_EQ_INT(store_pendingop_begin(f.env.store, f.env.waker, &op, &op,
	                                   &(struct store_commit){ .done = settle_created,
	                                                           .arg = &f }),
	             0);
	CHECK(settle_wait(&f, ++want) == 0);
	CHECK_EQ_INT(f.done_rc, 0);
	CHECK(op.status == STORE_OP_PENDING);
	set = (struct txn_op_settlement){ .op = &op, .succeeded = 1, .out = &out };
	memset(&out, 0, sizeof(out));
	CHECK_EQ_INT(txn_settle_op(&f.env, &set, settle_done, &f), 0);
	CHECK(settle_wait(&f, ++want) == 0);
	CHECK_EQ_INT(f.done_rc, 0);
	CHECK_STR(f.done_status, "succeeded");
	CHECK_EQ_INT(f.published, 1);
	CHECK_STR(f.last_status, "succeeded");
	CHECK_STR(out.txn_id, "txn_auth1");
	/* Settled: a late refusal of the same attempt changes nothing. */
	set.succeeded = 0;
	CHECK_EQ_INT(txn_settle_op(&f.env, &set, settle_done, &f), 0);
	CHECK(settle_wait(&f, ++want) == 0);
	CHECK_EQ_INT(f.done_rc, FGW_ERR_STATE);
	CHECK_EQ_INT(f.published, 1);
	/* A cancel the processor refused: recorded, nothing moves. */
	memset(&op, 0, sizeof(op));
	op.kind = STORE_OP_CANCEL;
	fgw_strlcpy(op.txn_id, "txn_auth2", sizeof(op.txn_id));
	fgw_strlcpy(op.idempotency_key, "pk2", sizeof(op.idempotency_key));
	CHECK_EQ_INT(store_pendingop_begin(f.env.store, f.env.waker, &op, &op,
	                                   &(struct store_commit){ .done = settle_created,
	                                                           .arg = &f }),
	             0);
	CHECK(settle_wait(&f, ++want) == 0);
	set = (struct txn_op_settlement){ .op = &op, .succeeded = 0 };
	CHECK_EQ_INT(txn_settle_op(&f.env, &set, settle_done, &f), 0);
	CHECK(settle_wait(&f, ++want) == 0);
	CHECK_EQ_INT(f.done_rc, 0);
	CHECK_STR(f.done_status, "");
	CHECK_EQ_INT(f.published, 1);
	CHECK_EQ_INT(settle_count(f.path, "SELECT COUNT(*) FROM transactions WHERE "
	                                  "id = 'txn_auth2' AND status = 'authorized'"),
	             1);
end:
	settle_teardown(&f);
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
	{ "choose_proc", test_choose_proc },
	{ "settle_forward_only", test_settle_forward_only },
	{ "settle_op", test_settle_op },
	{ NULL, NULL },
};
TT_MAIN(cases)
