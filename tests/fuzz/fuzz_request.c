/*
 * tests/fuzz/fuzz_request.c — libFuzzer target for the request body
 * parsers of the payment routes.
 *
 * The first input byte picks the parser, the rest is the body:
 *   0  txn_request_parse      POST /v1/transactions (and, rebuilt by the
 *                             route, POST /v1/reservations/hold/convert)
 *   1  txn_method_body_parse  POST /v1/payments/methods
 *   2  txn_card_parse_json    the card JSON inside an opened encryptedCard
 *   3  txnop_body_parse       POST /v1/transactions/{id}/refund, capture
 *                             and cancel (next byte: which operation)
 *   4  resv_hold_body_parse   POST /v1/reservations/hold
 *   5  resv_convert_body_parse  POST /v1/reservations/hold/convert (the
 *                             payment fields then go through mode 0)
 *
 * Oracle: any bytes give 0 or FGW_ERR_INVALID; a parsed request holds
 * exactly what the stages rely on (one way to pay, a well-formed card when
 * a card was given, amount and currency in range); a refusal names a field
 * and a reason and never echoes anything that could be a card number.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "crypto/secmem.h"
#include "core/json.h"
#include "gateway/http.h"
#include "gateway/resv.h"
#include "store/reservations.h"
#include "pipeline/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)           \
	do {                      \
		if (!(cond))          \
			__builtin_trap(); \
	} while (0)

/* 1 when s holds a run of 12 or more digits (something that could be a
 * PAN). */
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

static int
all_digits(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

static void
check_card(const struct txn_card *c)
{
	check(c->pan != NULL && c->pan->len >= 12 && c->pan->len <= 19 &&
	      all_digits(c->pan->data, c->pan->len) && c->pan->data[c->pan->len] == '\0');
	check(c->cvc == NULL || ((c->cvc->len == 3 || c->cvc->len == 4) &&
	                         all_digits(c->cvc->data, c->cvc->len)));
	check(c->exp_month >= 1 && c->exp_month <= 12);
	check(c->exp_year >= 2000 && c->exp_year <= 2100);
	check(memchr(c->holder, '\0', sizeof(c->holder)) != NULL);
}

static void
check_refusal(const struct fgw_why *err)
{
	check(memchr(err->where, '\0', sizeof(err->where)) != NULL);
	check(memchr(err->msg, '\0', sizeof(err->msg)) != NULL);
	check(err->where[0] != '\0' && err->msg[0] != '\0');
	check(!has_pan_run(err->where) && !has_pan_run(err->msg));
}

/* What every parsed request (transaction or saved method) must hold:
 * exactly one way to pay, each fully formed. */
static void
check_payment(const struct txn_request *rq, int method_body)
{
	int ways = rq->has_card + rq->has_encrypted + (rq->payment_method_id[0] != '\0') +
	           (rq->processor_method[0] != '\0');

	check(ways == 1);
	if (rq->has_card)
		check_card(&rq->card);
	else
		check(rq->card.pan == NULL && rq->card.cvc == NULL);
	if (rq->has_encrypted)
		check(rq->enc_key_id[0] != '\0' && rq->enc_data != NULL &&
		      rq->enc_data[0] != '\0' && strlen(rq->enc_data) <= 8192);
	else
		check(rq->enc_data == NULL);
	if (rq->payment_method_id[0] != '\0') {
		check(strncmp(rq->payment_method_id, "tok_", 4) == 0 ||
		      (!method_body && strncmp(rq->payment_method_id, "pm_", 3) == 0));
	}
}

static void
fuzz_txn(const char *body, size_t len)
{
	struct txn_request *rq = NULL;
	struct fgw_why err;
	int r = txn_request_parse(body, len, &rq, &err);

	if (r != FGW_OK) {
		check(r == FGW_ERR_INVALID || r == FGW_ERR_NOMEM);
		check(rq == NULL);
		if (r == FGW_ERR_INVALID)
			check_refusal(&err);
		return;
	}
	check(rq != NULL);
	check(rq->amount >= 1 && rq->amount <= 100000000000000LL);
	check(strlen(rq->currency) == 3);
	for (int i = 0; i < 3; i++)
		check(rq->currency[i] >= 'A' && rq->currency[i] <= 'Z');
	check(rq->reservation_id[0] != '\0');
	check(rq->capture == 0 || rq->capture == 1);
	check(rq->save_method == 0 || rq->save_method == 1);
	check(rq->metadata_json == NULL || rq->metadata_json[0] == '{');
	check_payment(rq, 0);
	txn_request_free(rq);
}

static void
fuzz_method(const char *body, size_t len)
{
	struct txn_request *rq = NULL;
	struct fgw_why err;
	char nick[64];
	int r = txn_method_body_parse(body, len, &rq, nick, sizeof(nick), &err);

	check(memchr(nick, '\0', sizeof(nick)) != NULL);
	if (r != FGW_OK) {
		check(r == FGW_ERR_INVALID || r == FGW_ERR_NOMEM);
		check(rq == NULL);
		if (r == FGW_ERR_INVALID)
			check_refusal(&err);
		return;
	}
	check(rq != NULL);
	check_payment(rq, 1);
	txn_request_free(rq);
}

static void
fuzz_card(const char *body, size_t len)
{
	struct txn_card card;
	struct fgw_why err;
	int r;

	memset(&card, 0, sizeof(card));
	memset(&err, 0, sizeof(err));
	r = txn_card_parse_json(body, len, &card, &err);
	if (r != FGW_OK) {
		check(r == FGW_ERR_INVALID || r == FGW_ERR_NOMEM);
		check(card.pan == NULL && card.cvc == NULL);
		if (r == FGW_ERR_INVALID)
			check_refusal(&err);
		return;
	}
	check_card(&card);
	txn_card_clear(&card);
}

static void
fuzz_op(unsigned char which, const char *body, size_t len)
{
	static const enum proc_op ops[] = { PROC_OP_REFUND, PROC_OP_CAPTURE, PROC_OP_CANCEL };
	enum proc_op op = ops[which % 3];
	struct fgw_why why = { 0 };
	int64_t amount = -1;
	int r = txnop_body_parse(body, len, op, &amount, &why);

	if (r != FGW_OK) {
		check(r == FGW_ERR_INVALID);
		check(why.msg[0] != '\0' && !has_pan_run(why.msg) && !has_pan_run(why.where));
		return;
	}
	/* 0: the whole remaining amount (refund) or no amount (the others). */
	if (op == PROC_OP_REFUND)
		check(amount >= 0 && amount <= 9007199254740991LL);
	else
		check(amount == 0);
}

/* No control characters: these strings go into logs, audit details and
 * answers. */
static void
check_text(const char *s, size_t cap)
{
	check(memchr(s, '\0', cap) != NULL);
	for (; *s; s++)
		check((unsigned char)*s >= 0x20);
}

static void
fuzz_hold(const char *body, size_t len)
{
	cJSON *root = fgw_json_parse_strict(body, len);
	struct resv_row row;
	struct fgw_why why = { 0 };
	const char *at;

	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return;
	}
	memset(&row, 0, sizeof(row));
	if (resv_hold_body_parse(root, &row, &why) != 0) {
		check(why.msg[0] != '\0' && memchr(why.msg, '\0', sizeof(why.msg)) != NULL &&
		      !has_pan_run(why.msg));
		cJSON_Delete(root);
		return;
	}
	check(row.guests >= 1 && row.guests <= 1000);
	check(row.experience_id[0] && row.time_slot_id[0] && row.guest_name[0] &&
	      row.guest_email[0]);
	check_text(row.experience_id, sizeof(row.experience_id));
	check_text(row.time_slot_id, sizeof(row.time_slot_id));
	check_text(row.guest_name, sizeof(row.guest_name));
	check_text(row.guest_email, sizeof(row.guest_email));
	check_text(row.guest_phone, sizeof(row.guest_phone));
	check_text(row.special_requests, sizeof(row.special_requests));
	at = strchr(row.guest_email, '@');
	check(at != NULL && at != row.guest_email && strchr(at, '.') != NULL);
	check(strspn(row.guest_phone, "+0123456789 -()") == strlen(row.guest_phone));
	cJSON_Delete(root);
}

static void
fuzz_convert(const char *body, size_t len)
{
	cJSON *root = fgw_json_parse_strict(body, len);
	const cJSON *save;
	struct fgw_why why = { 0 };
	char hold_id[40];
	int ways, parsed = -1;

	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return;
	}
	if (resv_convert_body_parse(root, hold_id, sizeof(hold_id), &parsed, &why) != 0) {
		check(why.msg[0] != '\0' && memchr(why.msg, '\0', sizeof(why.msg)) != NULL &&
		      !has_pan_run(why.msg));
		cJSON_Delete(root);
		return;
	}
	check(hold_id[0] != '\0');
	check_text(hold_id, sizeof(hold_id));
	save = cJSON_GetObjectItemCaseSensitive(root, "savePaymentMethod");
	check(save == NULL || cJSON_IsBool(save));
	ways = (cJSON_GetObjectItemCaseSensitive(root, "card") != NULL) +
	       (cJSON_GetObjectItemCaseSensitive(root, "encryptedCard") != NULL) +
	       (cJSON_GetObjectItemCaseSensitive(root, "paymentMethodId") != NULL) +
	       (cJSON_GetObjectItemCaseSensitive(root, "stripePaymentMethod") != NULL);
	/* One source, or none (the browser confirms with the card later;
	 * then nothing says where to return either). */
	check(ways == parsed && ways <= 1);
	check(ways == 1 || cJSON_GetObjectItemCaseSensitive(root, "returnUrl") == NULL);
	cJSON_Delete(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	const char *body;
	size_t len;
	char *copy;

	if (!ready) {
		if (sodium_init() < 0)
			abort();
		ready = 1;
	}
	if (size < 1 || size > 1 << 16)
		return 0;
	/* A copy of exactly the body bytes, so ASan sees any read past them. */
	len = size - 1;
	if ((copy = malloc(len ? len : 1)) == NULL)
		return 0;
	memcpy(copy, data + 1, len);
	body = copy;
	switch (data[0] % 6) {
	case 0:
		fuzz_txn(body, len);
		break;
	case 1:
		fuzz_method(body, len);
		break;
	case 2:
		fuzz_card(body, len);
		break;
	case 3:
		if (len >= 1)
			fuzz_op((unsigned char)body[0], body + 1, len - 1);
		break;
	case 4:
		fuzz_hold(body, len);
		break;
	default:
		fuzz_convert(body, len);
		break;
	}
	free(copy);
	return 0;
}
