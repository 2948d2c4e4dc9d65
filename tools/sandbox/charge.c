/*
 * tools/sandbox/charge.c — POST /v1/charges and the GET views of charges.
 *
 * A charge request is checked completely (auth, Idempotency-Key, JSON
 * shape, reply key, then the sealed or boxed card is opened and read)
 * before the
 * fault roll and the ledger see it, so a bad request is always a plain
 * 400/401 and never changes the ledger. The opened card lives in guarded
 * memory; its number is read into a stack buffer, used for the outcome and
 * last four, and wiped; the parsed card JSON is wiped before it is freed.
 * Only the last four digits are ever logged. A card that came boxed
 * (crypto/box.h, with the shared key of our key and replyKey) is answered
 * boxed with the same key; a sealed one, sealed to replyKey.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#define LOG_MODULE "sandbox"
#include "core/card.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/box.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "processors/proc_util.h"
#include "tools/sandbox/sandbox.h"

#define MAX_AMOUNT 9007199254740991LL /* 2^53 - 1 */

/* The test cards and what they do (docs/sandbox.md). */
static const struct {
	const char *number;
	const char *status;
	const char *decline_code;
} test_cards[] = {
	{ "4242424242424242", "succeeded", "" },
	{ "4000000000000002", "declined", "card_declined" },
	{ "4000000000009995", "declined", "insufficient_funds" },
	{ "4000002500003155", "requires_action", "" },
};

/* What we keep of a valid request until the ledger decides. */
struct charge_req {
	const char *idem_key;
	const char *reference;
	const char *currency;
	const char *return_url;
	int64_t amount;
	int capture;
	int require_3ds; /* the gateway asks for 3-D Secure ("threeDS") */
	unsigned char reply_pk[32];
	int boxed; /* the card came {"boxed"}: so goes the answer */
	/* outcome from the card */
	char status[20];
	char decline_code[24];
	char last4[5];
};

static int
url_ok(const char *s)
{
	size_t n;
	if (s == NULL || (n = strlen(s)) == 0 || n > 2048)
		return 0;
	if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

static const char *
get_str(const cJSON *o, const char *name)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* A JSON integer token within [min, max]: 1 when read. */
static int
get_int(const cJSON *o, const char *name, int64_t min, int64_t max, int64_t *out)
{
	return fgw_json_int(cJSON_GetObjectItemCaseSensitive(o, name), min, max, out) == 0;
}

/* Wipes every string value of a parsed tree (depth is bounded by cJSON's
 * nesting limit). */
static void
json_wipe(cJSON *o)
{
	for (; o != NULL; o = o->next) {
		if (o->valuestring != NULL)
			sodium_memzero(o->valuestring, strlen(o->valuestring));
		json_wipe(o->child);
	}
}

static void
json_wipe_delete(cJSON *o)
{
	json_wipe(o);
	cJSON_Delete(o);
}

/* Opens the sealed or boxed card and decides the outcome. 0, or an error
 * text for a 400 in *why. */
static int
read_card(struct sbx *s, const char *enc, struct charge_req *cr, const char **why)
{
	struct secbuf *plain = NULL;
	cJSON *card = NULL;
	const char *num, *cvc, *holder;
	char pan[20];
	size_t n = 0;
	int64_t month = 0, year = 0;
	int r = FGW_ERR_INVALID;

	memset(pan, 0, sizeof(pan));
	if (cr->boxed
	        ? box_open_with(&s->kp, cr->reply_pk, enc, strlen(enc), &plain) != FGW_OK
	        : sealed_open_with(&s->kp, enc, strlen(enc), &plain) != FGW_OK) {
		*why = cr->boxed ? "card.boxed does not open with the sandbox key and "
		                   "replyKey"
		                 : "card.sealed does not open with the sandbox key";
		goto out;
	}
	*why = "the card is not valid card JSON";
	card = fgw_json_parse_strict((const char *)plain->data, plain->len);
	if (!cJSON_IsObject(card))
		goto out;
	num = get_str(card, "number");
	if (num == NULL || (n = strlen(num)) == 0 || n >= sizeof(pan) ||
	    strspn(num, "0123456789") != n)
		goto out;
	if (!get_int(card, "expMonth", 1, 12, &month) ||
	    !get_int(card, "expYear", 2000, 2100, &year))
		goto out;
	cvc = get_str(card, "cvc");
	if (cJSON_GetObjectItemCaseSensitive(card, "cvc") != NULL &&
	    (cvc == NULL || strlen(cvc) < 3 || strlen(cvc) > 4 ||
	     strspn(cvc, "0123456789") != strlen(cvc)))
		goto out;
	holder = get_str(card, "holderName");
	if (cJSON_GetObjectItemCaseSensitive(card, "holderName") != NULL &&
	    (holder == NULL || strlen(holder) > 128))
		goto out;
	memcpy(pan, num, n);
	*why = NULL;

	memset(cr->last4, 0, sizeof(cr->last4));
	memcpy(cr->last4, pan + (n >= 4 ? n - 4 : 0), n >= 4 ? 4 : n);
	cr->decline_code[0] = '\0';
	if (!card_luhn_ok(pan, n)) {
		fgw_strlcpy(cr->status, "declined", sizeof(cr->status));
		fgw_strlcpy(cr->decline_code, "incorrect_number", sizeof(cr->decline_code));
	} else if (!card_expiry_ok((int)month, (int)year, fgw_now_ms())) {
		fgw_strlcpy(cr->status, "declined", sizeof(cr->status));
		fgw_strlcpy(cr->decline_code, "expired_card", sizeof(cr->decline_code));
	} else {
		fgw_strlcpy(cr->status, "succeeded", sizeof(cr->status));
		for (size_t i = 0; i < sizeof(test_cards) / sizeof(test_cards[0]); i++) {
			if (strlen(test_cards[i].number) == n &&
			    sodium_memcmp(test_cards[i].number, pan, n) == 0) {
				fgw_strlcpy(cr->status, test_cards[i].status, sizeof(cr->status));
				fgw_strlcpy(cr->decline_code, test_cards[i].decline_code,
				            sizeof(cr->decline_code));
				break;
			}
		}
	}
	r = FGW_OK;
out:
	sodium_memzero(pan, sizeof(pan));
	json_wipe_delete(card);
	secbuf_free(plain);
	return r;
}

int
sbx_auth_ok(const struct sbx *s, struct evhttp_request *req)
{
	const char *h;
	size_t want;

	if (s->secret == NULL)
		return 1;
	h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
		return 0;
	h += 7;
	want = strlen(s->secret);
	return strlen(h) == want && sodium_memcmp(h, s->secret, want) == 0;
}

/* Validates the JSON body; 0, or a reason for a 400 in *why. The strings
 * in cr point into root. */
static int
parse_request(struct sbx *s, cJSON *root, struct charge_req *cr, const char **why)
{
	const cJSON *card, *reply, *cust, *cap, *tds;
	const char *currency, *sealed, *boxed, *key_id, *pk_b64, *desc, *email;
	unsigned char *pk = NULL;
	size_t pklen = 0;

	*why = "the body is not a JSON object";
	if (!cJSON_IsObject(root))
		return FGW_ERR_INVALID;
	*why = "reference must be a string of 1..64 printable characters";
	cr->reference = get_str(root, "reference");
	if (!proc_token_ok(cr->reference, 64))
		return FGW_ERR_INVALID;
	*why = "amount must be a positive whole number (minor units)";
	if (!get_int(root, "amount", 1, MAX_AMOUNT, &cr->amount))
		return FGW_ERR_INVALID;
	*why = "currency must be three upper-case letters";
	currency = get_str(root, "currency");
	if (currency == NULL || strlen(currency) != 3 ||
	    strspn(currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3)
		return FGW_ERR_INVALID;
	cr->currency = currency;
	*why = "capture must be a boolean";
	cap = cJSON_GetObjectItemCaseSensitive(root, "capture");
	if (cap != NULL && !cJSON_IsBool(cap))
		return FGW_ERR_INVALID;
	cr->capture = cap == NULL || cJSON_IsTrue(cap);
	*why = "description must be a string of at most 1000 characters";
	desc = get_str(root, "description");
	if (cJSON_GetObjectItemCaseSensitive(root, "description") != NULL &&
	    (desc == NULL || strlen(desc) > 1000))
		return FGW_ERR_INVALID;
	*why = "customer must be an object with a string email";
	cust = cJSON_GetObjectItemCaseSensitive(root, "customer");
	if (cust != NULL) {
		email = get_str(cust, "email");
		if (!cJSON_IsObject(cust) ||
		    (cJSON_GetObjectItemCaseSensitive(cust, "email") != NULL &&
		     (email == NULL || strlen(email) > 254)))
			return FGW_ERR_INVALID;
	}
	*why = "returnUrl must be an http(s) URL";
	cr->return_url = get_str(root, "returnUrl");
	if (cJSON_GetObjectItemCaseSensitive(root, "returnUrl") != NULL &&
	    !url_ok(cr->return_url))
		return FGW_ERR_INVALID;
	*why = "threeDS must be \"required\" when present";
	tds = cJSON_GetObjectItemCaseSensitive(root, "threeDS");
	if (tds != NULL &&
	    (!cJSON_IsString(tds) || strcmp(tds->valuestring, "required") != 0))
		return FGW_ERR_INVALID;
	cr->require_3ds = tds != NULL;
	*why = "replyKey must be {keyId, publicKey: base64 of 32 bytes}";
	reply = cJSON_GetObjectItemCaseSensitive(root, "replyKey");
	key_id = get_str(reply, "keyId");
	pk_b64 = get_str(reply, "publicKey");
	if (!cJSON_IsObject(reply) || !proc_token_ok(key_id, 63) || pk_b64 == NULL ||
	    fgw_b64_decode(pk_b64, strlen(pk_b64), &pk, &pklen) != FGW_OK)
		return FGW_ERR_INVALID;
	if (pklen != sizeof(cr->reply_pk)) {
		free(pk);
		return FGW_ERR_INVALID;
	}
	memcpy(cr->reply_pk, pk, sizeof(cr->reply_pk));
	free(pk);
	*why = "card must be {keyId, sealed} or {keyId, boxed}";
	card = cJSON_GetObjectItemCaseSensitive(root, "card");
	key_id = get_str(card, "keyId");
	sealed = get_str(card, "sealed");
	boxed = get_str(card, "boxed");
	if (!cJSON_IsObject(card) || key_id == NULL || (sealed == NULL) == (boxed == NULL))
		return FGW_ERR_INVALID;
	cr->boxed = boxed != NULL;
	/* A key that cannot be sealed to (a low-order point) is refused now,
	 * before anything is charged. (A boxed card does not open with one:
	 * the shared key cannot be made.) */
	*why = "replyKey must be {keyId, publicKey: base64 of 32 bytes}";
	unsigned char probe[crypto_box_SEALBYTES];
	if (!cr->boxed &&
	    crypto_box_seal(probe, (const unsigned char *)"", 0, cr->reply_pk) != 0)
		return FGW_ERR_INVALID;
	*why = "unknown card.keyId";
	if (strcmp(key_id, s->kp.key_id) != 0)
		return FGW_ERR_INVALID;
	return read_card(s, cr->boxed ? boxed : sealed, cr, why);
}

/* The 200 answer: the result JSON sealed to the reply key, or boxed. */
static int
sealed_answer(struct sbx *s, const struct sbx_charge *c, const struct charge_req *cr,
              char **out)
{
	char *result = NULL, *b64 = NULL;
	cJSON *o = NULL;
	int r;

	*out = NULL;
	if ((r = charge_result_json(s, c, &result)) != FGW_OK ||
	    (r = cr->boxed
	             ? box_seal_with(&s->kp, cr->reply_pk, result, strlen(result), &b64)
	             : sealed_seal_b64(cr->reply_pk, result, strlen(result), &b64)) != FGW_OK)
		goto out;
	r = FGW_ERR_NOMEM;
	if ((o = cJSON_CreateObject()) == NULL ||
	    !cJSON_AddStringToObject(o, cr->boxed ? "boxed" : "sealed", b64) ||
	    (*out = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(o);
	free(result);
	free(b64);
	return r;
}

static char *
error_body(const char *code, const char *message)
{
	cJSON *o = cJSON_CreateObject(), *e;
	char *text = NULL;

	if (o != NULL && (e = cJSON_AddObjectToObject(o, "error")) != NULL &&
	    cJSON_AddStringToObject(e, "code", code) &&
	    cJSON_AddStringToObject(e, "message", message))
		text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return text;
}

static void
finish_error(struct sbx *s, struct evhttp_request *req, int code, const char *err_code,
             const char *message)
{
	sbx_finish(s, req, ACT_ANSWER, code, error_body(err_code, message));
}

static int
new_charge(const struct charge_req *cr, struct sbx_charge **out)
{
	struct sbx_charge *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (c == NULL)
		return FGW_ERR_NOMEM;
	if (fgw_random_id("ch_", c->id, sizeof(c->id)) != FGW_OK ||
	    (c->idem_key = strdup(cr->idem_key)) == NULL ||
	    (c->reference = strdup(cr->reference)) == NULL ||
	    (cr->return_url != NULL && (c->return_url = strdup(cr->return_url)) == NULL)) {
		sbx_charge_free(c);
		return FGW_ERR_NOMEM;
	}
	fgw_strlcpy(c->status, cr->status, sizeof(c->status));
	/* A card that would pass goes through the challenge instead. */
	if (cr->require_3ds && strcmp(c->status, "succeeded") == 0)
		fgw_strlcpy(c->status, "requires_action", sizeof(c->status));
	fgw_strlcpy(c->decline_code, cr->decline_code, sizeof(c->decline_code));
	fgw_strlcpy(c->currency, cr->currency, sizeof(c->currency));
	fgw_strlcpy(c->last4, cr->last4, sizeof(c->last4));
	c->capture = cr->capture;
	c->amount = cr->amount;
	c->created = fgw_now_ms() / 1000;
	c->count = 0;
	*out = c;
	return FGW_OK;
}

static int
fault_roll(const struct sbx *s)
{
	if (s->faults.mode == FAIL_NONE || s->faults.fail_rate <= 0.0)
		return 0;
	if (s->faults.fail_rate >= 1.0)
		return 1;
	return randombytes_uniform(1000000) < (uint32_t)(s->faults.fail_rate * 1000000.0);
}

void
sbx_charges_post(struct sbx *s, struct evhttp_request *req)
{
	struct charge_req cr;
	struct sbx_charge *c = NULL, *fresh = NULL;
	cJSON *root = NULL;
	char *body = NULL, *answer = NULL;
	const char *why = NULL;
	size_t len = 0;
	int r, replay = 0, fault;

	memset(&cr, 0, sizeof(cr));
	if (!sbx_auth_ok(s, req)) {
		finish_error(s, req, 401, "unauthorized",
		             "missing or wrong Authorization: Bearer secret");
		goto out;
	}
	cr.idem_key = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                 "Idempotency-Key");
	if (!proc_token_ok(cr.idem_key, 255)) {
		finish_error(s, req, 400, "invalid_request",
		             "Idempotency-Key header (1..255 printable characters) "
		             "is required");
		goto out;
	}
	body = sbx_body(req, &len);
	root = body != NULL ? fgw_json_parse_strict(body, len) : NULL;
	if (root == NULL) {
		finish_error(s, req, 400, "invalid_request", "the body is not JSON");
		goto out;
	}
	if (parse_request(s, root, &cr, &why) != FGW_OK) {
		finish_error(s, req, 400, "invalid_request",
		             why != NULL ? why : "invalid request");
		goto out;
	}

	fault = fault_roll(s);
	if (fault && s->faults.mode != FAIL_AFTER) {
		if (!s->quiet)
			log_info("charge key=%s card=****%s: fault %s, not charged", cr.idem_key,
			         cr.last4,
			         s->faults.mode == FAIL_500    ? "500"
			         : s->faults.mode == FAIL_DROP ? "drop"
			                                       : "hang");
		if (s->faults.mode == FAIL_500)
			finish_error(s, req, 500, "processor_error",
			             "simulated processor error; nothing was charged");
		else
			sbx_finish(s, req, s->faults.mode == FAIL_DROP ? ACT_DROP : ACT_HANG, 0,
			           NULL);
		goto out;
	}

	c = ledger_by_key(s->ledger, cr.idem_key);
	replay = c != NULL;
	if (c == NULL) {
		if ((r = new_charge(&cr, &fresh)) != FGW_OK ||
		    (r = ledger_add(s->ledger, fresh)) != FGW_OK) {
			sbx_charge_free(fresh);
			if (r == FGW_ERR_TOO_LARGE)
				finish_error(s, req, 503, "ledger_full",
				             "the sandbox ledger is full; restart it");
			else
				finish_error(s, req, 500, "internal", "out of memory");
			goto out;
		}
		c = fresh;
		fresh = NULL; /* owned by the ledger now */
	}
	c->count++;
	if (ledger_journal(s->ledger, c) != FGW_OK)
		log_warn("charge key=%s: ledger file not written", cr.idem_key);
	if (replay && !s->quiet)
		log_info("charge key=%s replay #%ld -> %s %s", cr.idem_key, c->count, c->id,
		         c->status);
	else if (!s->quiet)
		log_info("charge key=%s ref=%s amount=%lld %s card=****%s -> %s %s%s%s",
		         cr.idem_key, c->reference, (long long)c->amount, c->currency, cr.last4,
		         c->id, c->status, c->decline_code[0] ? " " : "", c->decline_code);

	if (fault) {
		/* FAIL_AFTER: charged (above), then the answer is lost. */
		if (!s->quiet)
			log_info("charge key=%s: fault after, charged, dropping", cr.idem_key);
		sbx_finish(s, req, ACT_DROP, 0, NULL);
		goto out;
	}
	if ((r = sealed_answer(s, c, &cr, &answer)) != FGW_OK) {
		/* Charged but no answer can be made: say nothing rather than
		 * something false; the client reconciles. */
		log_error("charge key=%s: answer not sealed: %s", cr.idem_key, fgw_strerror(r));
		sbx_finish(s, req, ACT_DROP, 0, NULL);
		goto out;
	}
	sbx_finish(s, req, ACT_ANSWER, 200, answer);
	answer = NULL;
out:
	sodium_memzero(&cr, sizeof(cr));
	cJSON_Delete(root);
	free(body);
	free(answer);
}

void
sbx_send_charge(const struct sbx *s, struct evhttp_request *req,
                const struct sbx_charge *c)
{
	char *text = NULL;

	if (charge_result_json(s, c, &text) != FGW_OK) {
		sbx_send_error(req, 500, "internal", "out of memory");
		return;
	}
	sbx_send(req, 200, NULL, text, strlen(text));
	free(text);
}

/* Plain result JSON of one charge (no card data in it). */
void
sbx_charges_get(struct sbx *s, struct evhttp_request *req, const char *id)
{
	struct sbx_charge *c = NULL;
	struct evkeyvalq q;
	const char *query, *key;

	if (!sbx_auth_ok(s, req)) {
		sbx_send_error(req, 401, "unauthorized",
		               "missing or wrong Authorization: Bearer secret");
		return;
	}
	if (id != NULL) {
		c = ledger_by_id(s->ledger, id);
	} else {
		query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
		if (query == NULL || evhttp_parse_query_str(query, &q) != 0) {
			sbx_send_error(req, 400, "invalid_request",
			               "use /v1/charges/<id> or ?idempotencyKey=<key>");
			return;
		}
		key = evhttp_find_header(&q, "idempotencyKey");
		if (key == NULL) {
			evhttp_clear_headers(&q);
			sbx_send_error(req, 400, "invalid_request",
			               "use /v1/charges/<id> or ?idempotencyKey=<key>");
			return;
		}
		c = ledger_by_key(s->ledger, key);
		evhttp_clear_headers(&q);
	}
	if (c == NULL) {
		sbx_send_error(req, 404, "not_found", "no such charge");
		return;
	}
	sbx_send_charge(s, req, c);
}
