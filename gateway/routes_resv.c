/*
 * gateway/routes_resv.c — the two-phase booking API (docs/reservations.md):
 * hold -> convert (payment through the pipeline) -> confirm, payment-status
 * polling, the customer's list, and the development test clock.
 *
 * Every route is scoped to the customer: the JWT subject, or X-Customer-Id
 * from an API-key client. Idempotency keys are scoped per client and
 * customer. Capacity is decided inside store jobs (store/reservations.h).
 *
 * Layout: request contexts and answers; hold; convert; confirm;
 * payment-status (with the asynchronous processor check); list; admin
 * clock; events, timer and start-up.
 */
#define LOG_MODULE "resv"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "gateway/browser.h"
#include "gateway/http.h"
#include "gateway/idem.h"
#include "gateway/mail.h"
#include "gateway/reqctx.h"
#include "gateway/resv.h"
#include "pipeline/events.h"
#include "pipeline/settle.h"
#include "processors/httpc.h"
#include "store/reservations.h"
#include "store/webhooks.h"

#define ERR_INTERNAL "An unexpected error occurred"
/* Unambiguous: no 0/O, no 1/I. */
static const char ref_alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/* ---- request contexts --------------------------------------------------- */

struct rctx {
	struct gw_req g; /* first: the request, its key (scope:
	                                  client + customer), the reactor */
	struct auth_ctx who;
	char hash[65];
	char path[128];
	struct resv_row row;
	enum resv_err err;
	struct txn *t;       /* convert: before pipeline_start */
	struct txn *running; /* convert: in the pipeline (not ours) */
	char *answer;        /* JSON to send */
	int status;
	struct proc_call call;   /* payment-status: processor check ... */
	struct proc_result pres; /* ... and its answer */
	struct store_txn_row txn;
	int stripe_js; /* convert: confirmWith stripe_js */
	/* What a store_read brings back (written by its fn, on a read
	 * thread on PostgreSQL, read by its done on the reactor). */
	struct resv_slot sl;        /* hold: the slot ... */
	struct resv_experience exp; /* ... and its experience */
	struct resv_secret sec;     /* browser confirm: the waiting payment */
	struct resv_row srow;       /* payment-status: the answer's row ... */
	struct store_txn_row stxn;  /* ... and payment */
	int rd_more;                /* a second read's own result */
	/* What the handler leaves for the continuation after its read. */
	char hold_id[40];
	char pid[40];
	char given[128]; /* browser confirm: the client secret sent, wiped */
	cJSON *pay;      /* convert: the payment source (card data), wiped */
	int save;
	void (*resume)(void *arg, int rc);   /* the read's continuation */
	/* The body's tree until the key is the request's, or why it is not
	 * a JSON object (root NULL), and what goes on with it. */
	cJSON *root;
	char perr[96];
	void (*cont)(struct rctx *c, cJSON *root);
	char request_id[LOG_REQUEST_ID_MAX]; /* for the lines it logs */
};

/* abandoned: a forced stop; the payment in the pipeline stays posting
 * for the reconciler, and its memory is ours to free. */
static void
rctx_free(struct gw_req *g, int abandoned)
{
	struct rctx *c = (struct rctx *)g;
	if (abandoned && c->running != NULL)
		txn_free(c->running);
	if (c->t != NULL)
		txn_free(c->t);
	proc_call_cancel(&c->call);
	proc_result_clear(&c->pres);
	store_txn_row_clear(&c->txn);
	store_txn_row_clear(&c->stxn);
	http_json_wipe_delete(c->pay);
	http_json_wipe_delete(c->root);
	sodium_memzero(c->given, sizeof(c->given));
	free(c->answer);
	free(c);
}

static struct rctx *
rctx_new(struct reactor *rx, struct evhttp_request *req, const struct auth_ctx *who)
{
	struct rctx *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	gw_req_start(&c->g, rx, req, "reservation", rctx_free);
	c->who = *who;
	fgw_strlcpy(c->request_id, log_request_get(), sizeof(c->request_id));
	return c;
}

/* A read's done: its continuation runs with the request's id on the
 * lines it logs (and on the payment it may start). */
static void
rctx_resumed(void *arg, int rc)
{
	struct rctx *c = arg;
	char prev[LOG_REQUEST_ID_MAX];

	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(c->request_id);
	c->resume(c, rc); /* c may be gone after */
	log_request_set(prev);
}

/* Runs fn through store_read (off the reactor on PostgreSQL) and
 * continues in resume(c, fn's result) on the reactor; a store that no
 * longer takes reads (shutdown) answers 503, which releases the
 * request's key. */
static void
rctx_read(struct rctx *c, store_read_fn fn, void (*resume)(void *arg, int rc))
{
	struct reactor *rx = c->g.rx;

	c->resume = resume;
	if (store_read(rx->gw->store, rx->waker, rx->reader, fn, c, rctx_resumed) != 0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

/* The answer to each refusal of a reservation job (store/reservations.h). */
static const struct {
	int status;
	const char *code, *message;
} resv_answers[] = {
	[RESV_SLOT_NOT_FOUND] = { 404, "TIME_SLOT_NOT_FOUND",
	                          "The selected time slot does not exist" },
	[RESV_SLOT_NOT_AVAILABLE] = { 400, "TIME_SLOT_NOT_AVAILABLE",
	                              "This time slot is no longer available" },
	[RESV_NOT_ENOUGH_CAPACITY] = { 400, "NOT_ENOUGH_CAPACITY",
	                               "Not enough spots left for this group size" },
	[RESV_NOT_FOUND] = { 404, "RESERVATION_NOT_FOUND", "Reservation not found" },
	[RESV_HOLD_EXPIRED] = { 400, "HOLD_EXPIRED",
	                        "The hold on this reservation has expired" },
	[RESV_INVALID_STATUS] = { 400, "INVALID_HOLD_STATUS",
	                          "The hold was already converted, confirmed or cancelled" },
	[RESV_NOT_PAID] = { 400, "INVALID_HOLD_STATUS",
	                    "The payment for this reservation has not succeeded" },
	[RESV_INTENT_MISMATCH] = { 400, "VALIDATION_ERROR",
	                           "paymentIntentId does not belong to this reservation" },
};

static void
resv_err_answer(struct rctx *c, enum resv_err e)
{
	if ((size_t)e < sizeof(resv_answers) / sizeof(resv_answers[0]) &&
	    resv_answers[e].code != NULL)
		gw_req_error(&c->g, resv_answers[e].status, resv_answers[e].code,
		             resv_answers[e].message);
	else
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
}

/* Sends the answer the request made (c->answer, taken from it and freed):
 * c may be gone once the answer is sent. */
static void
finish_answer(struct rctx *c, int status)
{
	char *a = c->answer;
	c->answer = NULL;
	gw_req_finish(&c->g, status, a);
	free(a);
}

/* Answers a reservation job that did not commit (rc != 0): when the job
 * claimed the request's key (keyed) and another request owned it, that
 * request's answer; the job's refusal (c->err); else 500, logged as what
 * failed when what is not NULL. 0 when rc is 0 (nothing answered), 1
 * when answered. */
static int
resv_job_failed(struct rctx *c, int rc, int keyed, const char *what)
{
	if (rc == 0)
		return 0;
	if (keyed && rc == FGW_ERR_CONFLICT)
		gw_req_repeat(&c->g, c->hash); /* the key's owner took it first */
	else if (rc == FGW_ERR_STATE && c->err != RESV_OK)
		resv_err_answer(c, c->err);
	else {
		if (what != NULL)
			log_error("%s %s not committed: %s", what, c->row.id, fgw_strerror(rc));
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
	}
	return 1;
}

/* Authenticates (JWT or API key) and requires a customer. */
static int
customer_auth(struct reactor *rx, struct evhttp_request *req, const char *path,
              struct auth_ctx *who)
{
	if (http_authenticate(rx, req, path, AUTH_API_KEY | AUTH_JWT, who) != 0)
		return FGW_ERR_AUTH;
	if (who->subject[0] == '\0') {
		http_send_error_param(rx, req, 400, "CUSTOMER_REQUIRED",
		                      "X-Customer-Id is required for an API-key client",
		                      "X-Customer-Id");
		return FGW_ERR_INVALID;
	}
	return 0;
}

/* Idempotency scope: per client and customer, fixed length. */
static void
idem_scope(const struct auth_ctx *who, char out[64])
{
	unsigned char h[16];
	char hex[33];
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const unsigned char *)who->client_id,
	                          strlen(who->client_id) + 1);
	crypto_generichash_update(&st, (const unsigned char *)who->subject,
	                          strlen(who->subject));
	crypto_generichash_final(&st, h, sizeof(h));
	fgw_hex(h, sizeof(h), hex);
	snprintf(out, 64, "cust_%s", hex);
}

/* The rest of a reservation POST, once its key is its own: the body's
 * tree (the continuation owns it). */
typedef void (*resv_cont_fn)(struct rctx *c, cJSON *root);

/* Goes on with the request whose key is its own (or that has none): the
 * body's parse failure, remembered, is answered only now, so that a
 * stored key answers first. */
static void
front_cont(struct gw_req *g)
{
	struct rctx *c = (struct rctx *)g;
	cJSON *root = c->root;
	char prev[LOG_REQUEST_ID_MAX];

	c->root = NULL;
	if (root == NULL) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR", c->perr);
		return;
	}
	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(c->request_id);
	c->cont(c, root); /* c may be gone after */
	log_request_set(prev);
}

/* What every reservation POST starts with: the customer, the body and
 * its key (required or optional), a request context with the body parsed
 * into it, and the idempotency front door, whose read of the key's stored
 * row goes through store_read. cont(c, root) goes on with a JSON object
 * once the key is the request's; every other end answers here or later. */
static void
begin_post_as(struct reactor *rx, struct evhttp_request *req, const char *path,
              int key_required, int jwt_only, resv_cont_fn cont)
{
	struct auth_ctx who;
	struct rctx *c;
	struct fgw_json_error jerr;
	const char *body, *key;
	char scope[64], hash[65];
	size_t len;

	if (jwt_only ? http_authenticate(rx, req, path, AUTH_JWT, &who) != 0
	             : customer_auth(rx, req, path, &who) != 0)
		return;
	if (http_keyed_body(rx, req, &who, &body, &len, &key) != 0)
		return;
	if (key == NULL && key_required) {
		http_send_error(rx, req, 400, "VALIDATION_ERROR",
		                "X-Idempotency-Key is required");
		return;
	}
	idem_scope(&who, scope);
	if (http_request_hash(rx, "POST", path, body, len, hash) != 0 ||
	    (c = rctx_new(rx, req, &who)) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	fgw_strlcpy(c->g.scope, scope, sizeof(c->g.scope));
	fgw_strlcpy(c->hash, hash, sizeof(c->hash));
	fgw_strlcpy(c->path, path, sizeof(c->path));
	c->cont = cont;
	/* Parsed now: the body is evhttp's, gone with a client that leaves
	 * while the key is read. */
	c->root = fgw_json_parse(body, len, &jerr);
	if (!cJSON_IsObject(c->root)) {
		fgw_strlcpy(c->perr, "body must be a JSON object", sizeof(c->perr));
		if (c->root == NULL)
			fgw_json_error_str(&jerr, c->perr, sizeof(c->perr));
		cJSON_Delete(c->root);
		c->root = NULL;
	}
	if (key != NULL)
		http_idem_front(&c->g, scope, key, hash, front_cont);
	else
		front_cont(&c->g);
}

static void
begin_post(struct reactor *rx, struct evhttp_request *req, const char *path,
           int key_required, resv_cont_fn cont)
{
	begin_post_as(rx, req, path, key_required, 0, cont);
}

static void
fill_idem(const struct rctx *c, int status, const char *body, struct store_idem *idem)
{
	memset(idem, 0, sizeof(*idem));
	fgw_strlcpy(idem->client_id, c->g.scope, sizeof(idem->client_id));
	fgw_strlcpy(idem->key, c->g.key, sizeof(idem->key));
	fgw_strlcpy(idem->request_hash, c->hash, sizeof(idem->request_hash));
	idem->status_code = status;
	idem->body = (char *)body;
	idem->created_at = fgw_now_ms();
	idem->expires_at = idem->created_at + c->g.rx->env.idem_ttl_ms;
}

/* Strict body helpers: unknown members are refused (like the core). */
static int
only_members(const cJSON *o, const char *const *names, struct fgw_why *why)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, o) {
		int ok = 0;
		for (size_t i = 0; names[i]; i++)
			if (it->string != NULL && strcmp(it->string, names[i]) == 0)
				ok = 1;
		if (!ok) {
			/* never echo a member name: it could be anything */
			fgw_why_set(why, "body", 0, 0, "body has an unknown field");
			return FGW_ERR_INVALID;
		}
	}
	return 0;
}

static int
get_string(const cJSON *o, const char *name, char *out, size_t cap, int required,
           struct fgw_why *why)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (v == NULL || cJSON_IsNull(v)) {
		out[0] = '\0';
		if (!required)
			return 0;
		fgw_why_set(why, name, 0, 0, "%s is required", name);
		return FGW_ERR_INVALID;
	}
	if (!cJSON_IsString(v) || v->valuestring[0] == '\0' ||
	    strlen(v->valuestring) >= cap) {
		fgw_why_set(why, name, 0, 0, "%s must be a string of 1 to %zu characters", name,
		            cap - 1);
		return FGW_ERR_INVALID;
	}
	for (const char *p = v->valuestring; *p; p++)
		if ((unsigned char)*p < 0x20) {
			fgw_why_set(why, name, 0, 0, "%s has control characters", name);
			return FGW_ERR_INVALID;
		}
	fgw_strlcpy(out, v->valuestring, cap);
	return 0;
}

static int
id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n < 64 &&
	       strspn(id,
	              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
	           n;
}

static void
new_reference(char out[16])
{
	for (int i = 0; i < 12; i++)
		out[i] = ref_alphabet[randombytes_uniform(sizeof(ref_alphabet) - 1)];
	out[12] = '\0';
}

static void
add_iso(cJSON *o, const char *name, int64_t ms)
{
	char iso[32];
	if (ms > 0 && fgw_iso8601(ms, iso, sizeof(iso)) == 0)
		cJSON_AddStringToObject(o, name, iso);
	else
		cJSON_AddNullToObject(o, name);
}

static void
add_str_or_null(cJSON *o, const char *name, const char *v)
{
	if (v != NULL && v[0])
		cJSON_AddStringToObject(o, name, v);
	else
		cJSON_AddNullToObject(o, name);
}

/* ---- POST /v1/reservations/hold ---------------------------------------- */

static void
hold_done(void *arg, int rc)
{
	struct rctx *c = arg;
	if (resv_job_failed(c, rc, 1, "hold"))
		return;
	finish_answer(c, 200);
}

static cJSON *
discount_obj(int64_t amount, const char *type)
{
	cJSON *d;
	if (amount <= 0)
		return cJSON_CreateNull();
	if ((d = cJSON_CreateObject()) != NULL) {
		cJSON_AddNumberToObject(d, "amount", (double)amount);
		cJSON_AddStringToObject(d, "type", type);
	}
	return d;
}

static char *
hold_answer(const struct resv_row *r, int group_min, int hold_minutes)
{
	cJSON *o = cJSON_CreateObject(), *res, *ad;
	char type[32], *s = NULL;
	if (o == NULL)
		return NULL;
	snprintf(type, sizeof(type), "group_%d_plus", group_min);
	if ((res = cJSON_AddObjectToObject(o, "reservation")) == NULL ||
	    (ad = cJSON_AddObjectToObject(o, "appliedDiscounts")) == NULL)
		goto out;
	cJSON_AddStringToObject(res, "id", r->id);
	cJSON_AddStringToObject(res, "status", "held");
	add_iso(res, "holdExpiresAt", r->hold_expires_at);
	cJSON_AddNumberToObject(res, "totalPrice", (double)r->total_price);
	cJSON_AddNumberToObject(res, "originalPrice", (double)r->original_price);
	cJSON_AddNumberToObject(res, "discountApplied",
	                        (double)(r->group_discount + r->early_discount));
	cJSON_AddItemToObject(ad, "groupDiscount", discount_obj(r->group_discount, type));
	cJSON_AddItemToObject(ad, "earlyBirdDiscount",
	                      discount_obj(r->early_discount, "early_bird"));
	cJSON_AddNumberToObject(ad, "totalDiscount",
	                        (double)(r->group_discount + r->early_discount));
	cJSON_AddNumberToObject(o, "holdDurationMinutes", hold_minutes);
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

/* Prices a hold: group and early-bird discounts, each a percentage of the
 * original price (their sum is at most 100 %, checked when loaded). */
static void
price_hold(const struct resv_experience *e, const struct resv_slot *sl, int64_t now,
           struct resv_row *r)
{
	r->original_price = e->price * r->guests;
	r->group_discount = 0;
	r->early_discount = 0;
	if (e->group_min > 0 && r->guests >= e->group_min)
		r->group_discount = r->original_price * e->group_pct / 100;
	if (e->early_pct > 0 && sl->starts_at - now >= (int64_t)e->early_days * 86400000LL)
		r->early_discount = r->original_price * e->early_pct / 100;
	r->total_price = r->original_price - r->group_discount - r->early_discount;
	fgw_strlcpy(r->currency, e->currency, sizeof(r->currency));
}

int
resv_hold_body_parse(const cJSON *root, struct resv_row *row, struct fgw_why *why)
{
	static const char *const fields[] = { "experienceId",    "timeSlotId",
		                                  "numberOfGuests",  "guestName",
		                                  "guestEmail",      "guestPhone",
		                                  "specialRequests", NULL };
	const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "numberOfGuests");
	const char *at;
	int64_t guests;

	fgw_why_set(why, NULL, 0, 0, "%s", "");
	if (only_members(root, fields, why) != 0 ||
	    get_string(root, "experienceId", row->experience_id, sizeof(row->experience_id),
	               1, why) != 0 ||
	    get_string(root, "timeSlotId", row->time_slot_id, sizeof(row->time_slot_id), 1,
	               why) != 0 ||
	    get_string(root, "guestName", row->guest_name, sizeof(row->guest_name), 1, why) !=
	        0 ||
	    get_string(root, "guestEmail", row->guest_email, sizeof(row->guest_email), 1,
	               why) != 0 ||
	    get_string(root, "guestPhone", row->guest_phone, sizeof(row->guest_phone), 0,
	               why) != 0 ||
	    get_string(root, "specialRequests", row->special_requests,
	               sizeof(row->special_requests), 0, why) != 0)
		return FGW_ERR_INVALID;
	if (fgw_json_int(g, 1, 1000, &guests) != 0) {
		fgw_why_set(why, NULL, 0, 0, "%s",
		            "numberOfGuests must be an integer from 1 to 1000");
		return FGW_ERR_INVALID;
	}
	row->guests = (int)guests;
	at = strchr(row->guest_email, '@');
	if (at == NULL || at == row->guest_email || strchr(at, '.') == NULL ||
	    strpbrk(row->guest_email, " \t<>\"") != NULL) {
		fgw_why_set(why, NULL, 0, 0, "%s", "guestEmail is not an e-mail address");
		return FGW_ERR_INVALID;
	}
	if (row->guest_phone[0] &&
	    strspn(row->guest_phone, "+0123456789 -()") != strlen(row->guest_phone)) {
		fgw_why_set(why, NULL, 0, 0, "%s", "guestPhone is not a phone number");
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields. */
static int
hold_read(struct store_reader *rd, void *arg)
{
	struct rctx *c = arg;
	return resv_slot_get(rd, c->row.time_slot_id, &c->sl, &c->exp);
}

/* The slot as read (r): prices the hold and queues its job. */
static void
hold_read_done(void *arg, int r)
{
	struct rctx *c = arg;
	struct reactor *rx = c->g.rx;
	struct store_idem idem;
	struct store_audit audit;
	char details[160];
	int64_t now;

	if (r == FGW_ERR_NOT_FOUND ||
	    (r == 0 && strcmp(c->sl.experience_id, c->row.experience_id) != 0)) {
		resv_err_answer(c, RESV_SLOT_NOT_FOUND);
		return;
	}
	now = fgw_now_ms();
	if (r == 0 && c->sl.starts_at <= now) {
		resv_err_answer(c, RESV_SLOT_NOT_AVAILABLE);
		return;
	}
	if (r != 0 || fgw_random_id("res_", c->row.id, sizeof(c->row.id)) != 0) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	fgw_strlcpy(c->row.client_id, c->who.client_id, sizeof(c->row.client_id));
	fgw_strlcpy(c->row.customer_id, c->who.subject, sizeof(c->row.customer_id));
	c->row.created_at = now;
	c->row.hold_expires_at = now + rx->gw->cfg.hold_minutes * 60000;
	price_hold(&c->exp, &c->sl, now, &c->row);
	if ((c->answer = hold_answer(&c->row, c->exp.group_min,
	                             (int)rx->gw->cfg.hold_minutes)) == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	fill_idem(c, 200, c->answer, &idem);
	snprintf(details, sizeof(details), "{\"timeSlotId\":\"%s\",\"guests\":%d}",
	         c->row.time_slot_id, c->row.guests);
	audit = (struct store_audit){ c->who.subject, c->who.source, "reservation.hold",
		                          c->row.id,      "success",     details };
	if (resv_hold(rx->gw->store, rx->waker, &c->row, &idem, &audit, &c->err, hold_done,
	              c) != 0)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
}

static void
hold_cont(struct rctx *c, cJSON *root)
{
	struct fgw_why bw = { 0 };

	if (resv_hold_body_parse(root, &c->row, &bw) != 0) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR", bw.msg);
		goto out;
	}
	if (!id_ok(c->row.time_slot_id) || !id_ok(c->row.experience_id)) {
		resv_err_answer(c, RESV_SLOT_NOT_FOUND);
		goto out;
	}
	rctx_read(c, hold_read, hold_read_done);
out:
	cJSON_Delete(root);
}

static void
h_hold(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	begin_post(rx, req, path, 1, hold_cont);
}

/* ---- POST /v1/reservations/hold/convert ---------------------------------- */

/* paymentClientSecret: "<paymentIntentId>_secret_<32 hex>", a keyed MAC of
 * the transaction id under the gateway's fingerprint key with its own
 * domain prefix: it proves the secret came from us for this payment and
 * reveals nothing about any key. */
static int
client_secret(struct reactor *rx, const char *intent, const char *txn_id, char *out,
              size_t cap)
{
	unsigned char mac[32];
	char msg[96], hex[65];
	int n = snprintf(msg, sizeof(msg), "payment-client-secret:%s", txn_id);
	if (n < 0 || (size_t)n >= sizeof(msg) ||
	    keyring_fingerprint_mac(rx->gw->kr, msg, (size_t)n, mac) != 0)
		return FGW_ERR_INTERNAL;
	fgw_hex(mac, 16, hex);
	n = snprintf(out, cap, "%s_secret_%s", intent, hex);
	sodium_memzero(mac, sizeof(mac));
	return n < 0 || (size_t)n >= cap ? FGW_ERR_TOO_LARGE : 0;
}

static void
convert_stored(void *arg, int rc)
{
	struct rctx *c = arg;
	if (rc != 0)
		log_warn("reservation %s: payment answer not stored: %s", c->row.id,
		         fgw_strerror(rc));
	finish_answer(c, c->status);
}

/* The transaction's status as the reservation hears it. */
static const char *
pay_status_of(const struct txn *t)
{
	enum txn_state s = t->out.state;
	if (s == TXN_SUCCEEDED || s == TXN_REQUIRES_ACTION || s == TXN_PROCESSING ||
	    s == TXN_DECLINED)
		return txn_state_name(s);
	return txn_state_name(TXN_FAILED);
}

/* Sends an answer that may hold a client secret, then wipes it. */
static void
finish_secret(struct rctx *c, int status, char *a)
{
	gw_req_finish(&c->g, status, a);
	fgw_freezero(a, strlen(a));
}

static void
stripe_js_stored(void *arg, int rc)
{
	struct rctx *c = arg;
	char *a = c->answer;
	if (rc != 0)
		log_warn("reservation %s: payment move not stored: %s", c->row.id,
		         fgw_strerror(rc));
	c->answer = NULL;
	if (a == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	finish_secret(c, c->status, a);
}

/* The answer to confirmWith stripe_js for a payment made at Stripe (st
 * requires_action or processing): the PaymentIntent waits for Stripe.js,
 * which confirms it with secret; without the secret, try again. */
static char *
stripe_js_answer(struct rctx *c, const char *intent, enum txn_state st,
                 const char *secret, int *status)
{
	cJSON *o = cJSON_CreateObject(), *res, *na;
	char *a = NULL;

	if (o == NULL)
		return NULL;
	if (st == TXN_REQUIRES_ACTION && secret[0] != '\0' &&
	    (res = cJSON_AddObjectToObject(o, "reservation")) != NULL &&
	    (na = cJSON_AddObjectToObject(o, "nextAction")) != NULL) {
		cJSON_AddStringToObject(res, "id", c->row.id);
		cJSON_AddStringToObject(res, "status", "pending");
		cJSON_AddStringToObject(res, "paymentIntentId", intent);
		cJSON_AddStringToObject(o, "confirmWith", "stripe_js");
		cJSON_AddStringToObject(o, "stripeClientSecret", secret);
		cJSON_AddTrueToObject(o, "requiresAction");
		cJSON_AddStringToObject(na, "type", "use_stripe_sdk");
		*status = 200;
	} else {
		/* Made at Stripe but its answer (or its secret) was lost: the
		 * reconciler finds it, and the same request then answers it. */
		cJSON_AddStringToObject(o, "error", "PROCESSOR_UNAVAILABLE");
		cJSON_AddStringToObject(o, "message",
		                        "The payment is being set up at the processor; "
		                        "send the same request again shortly");
		*status = 503;
	}
	a = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return a;
}

static void
on_pay_done(struct txn *t, void *arg)
{
	struct rctx *c = arg;
	struct store_idem idem;
	const char *intent = t->result.reference[0] ? t->result.reference : t->id;
	enum txn_state st = t->out.state;
	char secret[160], ref[16];
	cJSON *o = NULL, *res;

	c->t = NULL; /* the runner frees it after this returns */
	c->running = NULL;
	if (c->stripe_js && (st == TXN_REQUIRES_ACTION || st == TXN_PROCESSING)) {
		/* Stripe's client secret is in this answer and nowhere else:
		 * not in the row, the log, the audit or under the key. */
		c->answer = stripe_js_answer(c, t->result.reference, st, t->result.client_secret,
		                             &c->status);
		explicit_bzero(t->result.client_secret, sizeof(t->result.client_secret));
		new_reference(ref);
		if (c->answer == NULL ||
		    resv_payment_moved(c->g.rx->gw->store, c->g.rx->waker, c->row.id, t->id,
		                       pay_status_of(t), intent, ref, NULL, stripe_js_stored,
		                       c) != 0)
			stripe_js_stored(c, FGW_ERR_INTERNAL);
		return;
	}
	if (st == TXN_SUCCEEDED || st == TXN_REQUIRES_ACTION || st == TXN_PROCESSING) {
		if (client_secret(c->g.rx, intent, t->id, secret, sizeof(secret)) != 0 ||
		    (o = cJSON_CreateObject()) == NULL ||
		    (res = cJSON_AddObjectToObject(o, "reservation")) == NULL) {
			c->status = 500;
		} else {
			cJSON_AddStringToObject(res, "id", c->row.id);
			cJSON_AddStringToObject(res, "status", "pending");
			cJSON_AddStringToObject(res, "paymentIntentId", intent);
			cJSON_AddStringToObject(o, "paymentClientSecret", secret);
			cJSON_AddBoolToObject(o, "requiresAction", st == TXN_REQUIRES_ACTION);
			/* The customer's browser follows it to 3-D Secure. */
			if (st == TXN_REQUIRES_ACTION && t->result.next_action_json != NULL) {
				cJSON *na = cJSON_Parse(t->result.next_action_json);
				if (na != NULL)
					cJSON_AddItemToObject(o, "nextAction", na);
			}
			c->answer = cJSON_PrintUnformatted(o);
			c->status = 200;
		}
	} else {
		const char *code = t->out.error_code;
		const char *msg = t->out.error_message[0] ? t->out.error_message : ERR_INTERNAL;
		c->status = t->out.http_status >= 400 ? t->out.http_status : 400;
		if (st == TXN_DECLINED && strcmp(code, "RULE_DECLINED") != 0 &&
		    strcmp(code, "PAYMENT_INSUFFICIENT_FUNDS") != 0) {
			/* One code per meaning: insufficient funds answers as on
			 * POST /v1/transactions. */
			code = "PAYMENT_CARD_DECLINED";
			c->status = 400;
		} else if (st == TXN_FAILED && strcmp(code, "INTERNAL_ERROR") != 0) {
			code = "PAYMENT_PROCESSING_FAILED";
			if (c->status < 500)
				c->status = 502;
		} else if (code[0] == '\0') {
			code = "PAYMENT_PROCESSING_FAILED";
		}
		if ((o = cJSON_CreateObject()) != NULL) {
			cJSON_AddStringToObject(o, "error", code);
			cJSON_AddStringToObject(o, "message", msg);
			c->answer = cJSON_PrintUnformatted(o);
		}
	}
	cJSON_Delete(o);
	if (c->answer == NULL) {
		c->status = 500;
		c->answer = strdup(
		    "{\"error\":\"INTERNAL_ERROR\",\"message\":\"An unexpected error occurred\"}");
	}
	new_reference(ref);
	/* The reservation follows the payment; the answer is stored with it
	 * (not a 500: that one may be retried with the same key). */
	fill_idem(c, c->status, c->answer, &idem);
	if (c->answer == NULL ||
	    resv_payment_moved(c->g.rx->gw->store, c->g.rx->waker, c->row.id, t->id,
	                       pay_status_of(t), intent, ref, c->status < 500 ? &idem : NULL,
	                       convert_stored, c) != 0)
		convert_stored(c, FGW_ERR_INTERNAL);
}

static void
convert_begun(void *arg, int rc)
{
	struct rctx *c = arg;
	struct txn *t = c->t;
	if (resv_job_failed(c, rc, 0, NULL))
		return;
	c->t = NULL; /* owned by the runner now */
	c->running = t;
	atomic_fetch_add(&c->g.rx->gw->metrics.txn_started, 1);
	pipeline_start(t, on_pay_done, c);
}

/* A number under v that was not written as an integer token, or NULL.
 * build_request prints the request and parses it again, and printing
 * writes 12.0 as 12: the token form must be checked before that. The
 * depth is bounded by the parser's. */
static const cJSON *
non_integer_number(const cJSON *v)
{
	const cJSON *c, *bad;
	int64_t x;
	if (cJSON_IsNumber(v))
		return fgw_json_int(v, INT64_MIN, INT64_MAX, &x) == 0 ? NULL : v;
	for (c = v->child; c != NULL; c = c->next)
		if ((bad = non_integer_number(c)) != NULL)
			return bad;
	return NULL;
}

/* The payment request the pipeline parses: the customer's payment fields
 * as sent (card / encryptedCard / paymentMethodId) plus what the hold
 * fixes (amount, currency, guest). The text is wiped after parsing.
 * savePaymentMethod is kept on the reservation (save_method); the caller
 * sets the request's customer and save flag. */
static int
build_request(const cJSON *root, const struct resv_row *r, int client_confirms,
              struct txn_request **rq, struct fgw_why *perr)
{
	static const char *const pay_fields[] = { "card", "encryptedCard", "paymentMethodId",
		                                      "stripePaymentMethod", "returnUrl" };
	cJSON *o = cJSON_CreateObject(), *cust;
	char *text = NULL, desc[96];
	int rc = FGW_ERR_NOMEM;

	if (o == NULL)
		goto out;
	cJSON_AddStringToObject(o, "reservationId", r->id);
	cJSON_AddNumberToObject(o, "amount", (double)r->total_price);
	cJSON_AddStringToObject(o, "currency", r->currency);
	for (size_t i = 0; i < sizeof(pay_fields) / sizeof(pay_fields[0]); i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, pay_fields[i]), *bad;
		if (v != NULL && (bad = non_integer_number(v)) != NULL) {
			/* a member name is echoed only when it is a plain word:
			 * a client could send card data as a name */
			const char *name = bad->string != NULL ? bad->string : "";
			size_t n = strlen(name);
			int plain = n > 0 && n <= 40 &&
			            strspn(name,
			                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") ==
			                n;
			snprintf(perr->where, sizeof(perr->where), "%s%s%s", pay_fields[i],
			         bad != v ? "." : "",
			         bad == v ? ""
			         : plain  ? name
			                  : "(unnamed)");
			snprintf(perr->msg, sizeof(perr->msg),
			         "must be an integer (no fraction or exponent)");
			rc = FGW_ERR_INVALID;
			goto out;
		}
		if (v != NULL)
			cJSON_AddItemToObject(o, pay_fields[i], cJSON_Duplicate(v, 1));
	}
	if ((cust = cJSON_AddObjectToObject(o, "customer")) != NULL) {
		cJSON_AddStringToObject(cust, "email", r->guest_email);
		cJSON_AddStringToObject(cust, "name", r->guest_name);
	}
	snprintf(desc, sizeof(desc), "Reservation %s", r->id);
	cJSON_AddStringToObject(o, "description", desc);
	if ((text = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	rc = client_confirms ? txn_request_parse_client_confirms(text, strlen(text), rq, perr)
	                     : txn_request_parse(text, strlen(text), rq, perr);
out:
	if (text != NULL) {
		sodium_memzero(text, strlen(text));
		cJSON_free(text);
	}
	cJSON_Delete(o);
	return rc;
}

/* Starts the payment of the hold c->hold_id, read into c->row, with the
 * payment source in root (card, encryptedCard, paymentMethodId or
 * stripePaymentMethod, and returnUrl): from a convert, or from the
 * browser's confirm. Answers through c. */
static void
convert_start(struct rctx *c, const cJSON *root, int save, int browser)
{
	struct reactor *rx = c->g.rx;
	/* confirmWith stripe_js: no payment source, the request says so. */
	int client_confirms = c->stripe_js;
	const struct auth_ctx *who = &c->who;
	struct txn_request *rq = NULL;
	struct fgw_why perr;
	char msg[sizeof(perr.where) + sizeof(perr.msg) + 2];
	int r;

	r = build_request(root, &c->row, client_confirms, &rq, &perr);
	if (r == FGW_ERR_INVALID && strcmp(perr.where, "paymentMethodId") == 0) {
		/* Without a saved method under this id (or without the saved
		 * methods feature) there is nothing to pay with. */
		gw_req_error(&c->g, 404, "PAYMENT_METHOD_NOT_FOUND",
		             "Saved payment method not found");
		goto out;
	}
	if (r != 0) {
		if (r == FGW_ERR_INVALID) {
			snprintf(msg, sizeof(msg), "%s %s", perr.where, perr.msg);
			gw_req_error(&c->g, 400, "VALIDATION_ERROR", msg);
		} else {
			gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		}
		goto out;
	}
	/* From a browser, the page's own (CORS) origins are where 3-D Secure
	 * may bring the customer back too. */
	if (!txn_return_url_allowed(rq, rx->gw->cfg.return_url_origins) &&
	    !(browser && browser_return_url_allowed(&rx->gw->cfg,
	                                            rq->return_url ? rq->return_url : ""))) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR",
		             "returnUrl must point to an origin listed in return_url_origins");
		goto out;
	}
	if (rq->processor_method[0] != '\0' && save) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR",
		             "savePaymentMethod cannot be used with stripePaymentMethod");
		goto out;
	}
	/* The saved-methods feature: a paymentMethodId is looked up for this
	 * customer, and savePaymentMethod saves the card for them. */
	fgw_strlcpy(rq->customer_id, who->subject, sizeof(rq->customer_id));
	rq->save_method = save;
	/* No Idempotency-Key on the transaction itself: the reservation's
	 * answer is the one stored under the customer's key. */
	if ((r = txn_new(&rx->env, rq, who->client_id, who->source, NULL, c->hash, &c->t)) !=
	    0) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		goto out;
	}
	fgw_strlcpy(c->t->request_id, log_request_get(), sizeof(c->t->request_id));
	rq = NULL; /* owned by c->t now */
	if ((r = resv_convert_begin(rx->gw->store, rx->waker, c->hold_id, who->subject,
	                            c->t->id, save, fgw_now_ms(), &c->row, &c->err,
	                            convert_begun, c)) != 0)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
out:
	txn_request_free(rq);
}

/* ---- convert without a card: the browser pays -------------------------------- */

/* The keyed MAC under which a browser payment's client secret is kept:
 * bound to the payment and the customer, so neither a database reader
 * nor another customer can use it. */
static int
secret_mac(struct reactor *rx, const char *payment_id, const char *customer,
           const char *secret, char out[65])
{
	unsigned char mac[32];
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "browser-client-secret:%s|%s|%s", payment_id,
	                 customer, secret);
	int r = FGW_ERR_INTERNAL;
	if (n > 0 && (size_t)n < sizeof(msg) &&
	    keyring_fingerprint_mac(rx->gw->kr, msg, (size_t)n, mac) == 0) {
		fgw_hex(mac, sizeof(mac), out);
		r = 0;
	}
	sodium_memzero(msg, sizeof(msg));
	sodium_memzero(mac, sizeof(mac));
	return r;
}

static void
await_card_done(void *arg, int rc)
{
	struct rctx *c = arg;
	char *a = c->answer;
	if (rc == 0 && a == NULL)
		rc = FGW_ERR_INTERNAL; /* committed, but no answer was made */
	if (resv_job_failed(c, rc, 0, NULL))
		return;
	c->answer = NULL;
	finish_secret(c, 200, a);
}

/* Convert with only holdId: the payment waits for the browser, which
 * confirms it with the card sealed to the gateway's key. The answer holds
 * the only copy of the secret; it is not stored under the idempotency key
 * (a repeat issues a new secret, and the older one stops working). */
static void
convert_await_card(struct reactor *rx, struct rctx *c, const char *hold_id, int save)
{
	unsigned char raw[24];
	char pid[40], secret[128], hex[49], mac[65];
	cJSON *o = NULL, *res;

	fgw_random_id("pay_", pid, sizeof(pid));
	randombytes_buf(raw, sizeof(raw));
	fgw_hex(raw, sizeof(raw), hex);
	sodium_memzero(raw, sizeof(raw));
	snprintf(secret, sizeof(secret), "%s_secret_%s", pid, hex);
	if (secret_mac(rx, pid, c->who.subject, secret, mac) != 0 ||
	    (o = cJSON_CreateObject()) == NULL ||
	    (res = cJSON_AddObjectToObject(o, "reservation")) == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		goto out;
	}
	cJSON_AddStringToObject(res, "id", hold_id);
	cJSON_AddStringToObject(res, "status", "pending");
	cJSON_AddStringToObject(res, "paymentIntentId", pid);
	cJSON_AddStringToObject(o, "paymentClientSecret", secret);
	cJSON_AddBoolToObject(o, "requiresAction", 0);
	c->answer = cJSON_PrintUnformatted(o);
	if (c->answer == NULL ||
	    resv_await_card(rx->gw->store, rx->waker, hold_id, c->who.subject, pid, mac, save,
	                    fgw_now_ms(), NULL, &c->row, &c->err, await_card_done, c) != 0)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
out:
	sodium_memzero(secret, sizeof(secret));
	sodium_memzero(hex, sizeof(hex));
	cJSON_Delete(o);
}

/* ---- convert with confirmWith stripe_js ------------------------------------- */

/* Stripe's answer to the status asked on a repeat: the client secret comes
 * from Stripe again, since flairgw never kept it. */
static void
stripe_js_refetched(void *arg, const struct proc_reply *reply)
{
	struct rctx *c = arg;
	struct proc_result res = c->pres; /* ours now */

	memset(&c->pres, 0, sizeof(c->pres));
	if (!reply->parsed || !proc_result_is_for(&res, c->txn.id) ||
	    strcmp(res.reference, c->txn.processor_ref) != 0 ||
	    proc_result_other_sum(&res, c->txn.amount, c->txn.currency))
		res.outcome = PROC_UNKNOWN;
	if (res.outcome != PROC_REQUIRES_ACTION && res.outcome != PROC_UNKNOWN) {
		/* Paid, declined or cancelled meanwhile: the webhook or the
		 * reconciler records it; there is nothing left to confirm. */
		proc_result_clear(&res);
		resv_err_answer(c, RESV_INVALID_STATUS);
		return;
	}
	c->answer = stripe_js_answer(c, c->txn.processor_ref,
	                             res.outcome == PROC_REQUIRES_ACTION ? TXN_REQUIRES_ACTION
	                                                                 : TXN_PROCESSING,
	                             res.client_secret, &c->status);
	proc_result_clear(&res);
	stripe_js_stored(c, 0);
}

/* A repeat of confirmWith stripe_js for a hold whose Stripe.js payment
 * waits: the same PaymentIntent, its client secret asked of Stripe again
 * (GET /v1/payment_intents/{id} with the secret key). Any other payment
 * in flight is INVALID_HOLD_STATUS, as for any convert. */
static void
stripe_js_again(struct rctx *c)
{
	struct reactor *rx = c->g.rx;
	struct proc_op_request oreq;
	struct proc_instance *pi;
	cJSON *na = NULL;
	const cJSON *type;
	int waiting, r = FGW_ERR_INVALID;

	if (c->rd_more != 0) { /* the payment's read (convert_read) */
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	if (txn_state_of(c->txn.status) == TXN_PROCESSING ||
	    txn_state_of(c->txn.status) == TXN_POSTING) {
		/* Its create answer was lost: the reconciler finds it first. */
		c->answer = stripe_js_answer(c, "", TXN_PROCESSING, "", &c->status);
		stripe_js_stored(c, 0);
		return;
	}
	if (c->txn.next_action_json != NULL)
		na = cJSON_Parse(c->txn.next_action_json);
	type = cJSON_GetObjectItemCaseSensitive(na, "type");
	waiting = txn_state_of(c->txn.status) == TXN_REQUIRES_ACTION &&
	          cJSON_IsString(type) && strcmp(type->valuestring, "use_stripe_sdk") == 0 &&
	          c->txn.processor_ref[0] != '\0';
	cJSON_Delete(na);
	if (!waiting) {
		resv_err_answer(c, RESV_INVALID_STATUS);
		return;
	}
	memset(&oreq, 0, sizeof(oreq));
	oreq.txn_id = c->txn.id;
	oreq.idempotency_key = c->txn.processor_idem_key[0] ? c->txn.processor_idem_key
	                                                    : c->txn.id;
	oreq.reference = c->txn.processor_ref;
	if ((pi = pipeline_proc_find(&rx->env, c->txn.processor)) != NULL &&
	    pi->type->client_confirms) {
		c->call = (struct proc_call){ .op = PROC_CALL_STATUS,
			                          .inst = pi,
			                          .opreq = &oreq,
			                          .res = &c->pres,
			                          .done = stripe_js_refetched,
			                          .arg = c };
		r = proc_call_start(&rx->env, &c->call);
		c->call.opreq = NULL; /* built */
	}
	if (r != 0) {
		c->answer = stripe_js_answer(c, "", TXN_PROCESSING, "", &c->status);
		stripe_js_stored(c, 0);
	}
}

/* A payment that waits for Stripe.js: a repeat of confirmWith stripe_js
 * asks Stripe for its secret again (stripe_js_again). */
static int
stripe_js_waits(const struct resv_row *r)
{
	return strcmp(r->status, "pending") == 0 && r->txn_id[0] != '\0' &&
	       (txn_state_of(r->payment_status) == TXN_REQUIRES_ACTION ||
	        txn_state_of(r->payment_status) == TXN_PROCESSING);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields.
 * The customer's hold, and for confirmWith stripe_js the payment that
 * waits for Stripe.js, in one hop. */
static int
convert_read(struct store_reader *rd, void *arg)
{
	struct rctx *c = arg;
	int r = resv_get(rd, c->who.subject, c->hold_id, &c->row);

	if (r == 0 && c->stripe_js && stripe_js_waits(&c->row))
		c->rd_more = store_txn_get(rd, NULL, c->row.txn_id, &c->txn);
	return r;
}

/* The hold as read (r): pays it with the payment source kept in c->pay. */
static void
convert_read_done(void *arg, int r)
{
	struct rctx *c = arg;

	if (r != 0) {
		resv_err_answer(c, r == FGW_ERR_NOT_FOUND ? RESV_NOT_FOUND : RESV_OK);
		return;
	}
	if (c->stripe_js && stripe_js_waits(&c->row)) {
		stripe_js_again(c);
		return;
	}
	convert_start(c, c->pay, c->save, 0);
}

/* Convert with confirmWith stripe_js: the PaymentIntent is made at the
 * Stripe processor unconfirmed, and its client secret goes to the
 * customer's browser for Stripe.js; the card goes from the browser to
 * Stripe and nowhere else. Nothing is stored under the idempotency key
 * (the answer holds the secret): a repeat, with the key or without,
 * answers the same PaymentIntent's secret, asked of Stripe again. The
 * request has no payment source (c->pay an empty object). */

int
resv_convert_body_parse(const cJSON *root, char *hold_id, size_t idcap, int *ways,
                        struct fgw_why *why)
{
	static const char *const fields[] = { "holdId",
		                                  "card",
		                                  "encryptedCard",
		                                  "paymentMethodId",
		                                  "savePaymentMethod",
		                                  "stripePaymentMethod",
		                                  "returnUrl",
		                                  "confirmWith",
		                                  NULL };
	const cJSON *cw = cJSON_GetObjectItemCaseSensitive(root, "confirmWith");
	const cJSON *save = cJSON_GetObjectItemCaseSensitive(root, "savePaymentMethod");
	int n = (cJSON_GetObjectItemCaseSensitive(root, "card") != NULL) +
	        (cJSON_GetObjectItemCaseSensitive(root, "encryptedCard") != NULL) +
	        (cJSON_GetObjectItemCaseSensitive(root, "paymentMethodId") != NULL) +
	        (cJSON_GetObjectItemCaseSensitive(root, "stripePaymentMethod") != NULL);

	fgw_why_set(why, NULL, 0, 0, "%s", "");
	if (only_members(root, fields, why) != 0 ||
	    get_string(root, "holdId", hold_id, idcap, 1, why) != 0)
		return FGW_ERR_INVALID;
	if (save != NULL && !cJSON_IsBool(save)) {
		fgw_why_set(why, NULL, 0, 0, "%s", "savePaymentMethod must be true or false");
		return FGW_ERR_INVALID;
	}
	if (n > 1) {
		fgw_why_set(why, NULL, 0, 0, "%s",
		            "at most one of card, encryptedCard, paymentMethodId or "
		            "stripePaymentMethod is allowed");
		return FGW_ERR_INVALID;
	}
	if (cw != NULL &&
	    (!cJSON_IsString(cw) || strcmp(cw->valuestring, "stripe_js") != 0)) {
		fgw_why_set(why, NULL, 0, 0, "%s", "confirmWith must be \"stripe_js\"");
		return FGW_ERR_INVALID;
	}
	if (cw != NULL && (n != 0 || cJSON_IsTrue(save))) {
		/* Stripe.js takes the card in the browser; flairgw gets none. */
		fgw_why_set(why, NULL, 0, 0, "%s",
		            "confirmWith goes without card, encryptedCard, paymentMethodId, "
		            "stripePaymentMethod and savePaymentMethod");
		return FGW_ERR_INVALID;
	}
	if (n == 0 && cJSON_GetObjectItemCaseSensitive(root, "returnUrl") != NULL) {
		fgw_why_set(why, NULL, 0, 0, "%s",
		            "returnUrl goes with the payment source (or the browser's confirm)");
		return FGW_ERR_INVALID;
	}
	*ways = n;
	return FGW_OK;
}

static void
convert_cont(struct rctx *c, cJSON *root)
{
	struct reactor *rx = c->g.rx;
	const cJSON *save;
	struct fgw_why bw = { 0 };
	char hold_id[40];
	int n;

	save = cJSON_GetObjectItemCaseSensitive(root, "savePaymentMethod");
	if (resv_convert_body_parse(root, hold_id, sizeof(hold_id), &n, &bw) != 0) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR", bw.msg);
		goto out;
	}
	if (n == 0 && cJSON_GetObjectItemCaseSensitive(root, "confirmWith") != NULL) {
		c->stripe_js = 1;
		save = NULL; /* refused with confirmWith; root goes */
		cJSON_Delete(root);
		if ((root = cJSON_CreateObject()) == NULL) {
			gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
			goto out;
		}
	} else if (n == 0) {
		if (c->g.key[0]) {
			/* Nothing is stored under the key (see above): let a
			 * repeat run again once this one is done. */
			idem_end(rx->gw->idem, c->g.scope, c->g.key);
			c->g.key[0] = '\0';
		}
		convert_await_card(rx, c, hold_id, cJSON_IsTrue(save));
		goto out;
	}
	if (!id_ok(hold_id)) {
		resv_err_answer(c, RESV_NOT_FOUND);
		goto out;
	}
	/* The payment source waits in c (wiped with it) for the hold. */
	fgw_strlcpy(c->hold_id, hold_id, sizeof(c->hold_id));
	c->save = cJSON_IsTrue(save);
	c->pay = root;
	root = NULL;
	rctx_read(c, convert_read, convert_read_done);
out:
	http_json_wipe_delete(root);
}

static void
h_convert(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	begin_post(rx, req, path, 1, convert_cont);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields.
 * The waiting payment c->pid, and when it is this customer's, its
 * reservation (in c->rd_more), in one hop; the secret is checked after. */
static int
browser_confirm_read(struct store_reader *rd, void *arg)
{
	struct rctx *c = arg;
	int r = resv_secret_get(rd, c->pid, &c->sec);

	c->rd_more = FGW_ERR_NOT_FOUND;
	if (r == 0 && strcmp(c->sec.customer_id, c->who.subject) == 0)
		c->rd_more = resv_get(rd, c->who.subject, c->sec.reservation_id, &c->row);
	return r;
}

static void
browser_confirm_read_done(void *arg, int r)
{
	struct rctx *c = arg;
	char mac[65];

	/* One answer for an unknown payment, another customer's, and a
	 * wrong secret: none tells which. */
	if (r != 0 || strcmp(c->sec.customer_id, c->who.subject) != 0 ||
	    secret_mac(c->g.rx, c->pid, c->who.subject, c->given, mac) != 0 ||
	    sodium_memcmp(mac, c->sec.secret_mac, 64) != 0) {
		sodium_memzero(c->given, sizeof(c->given));
		gw_req_error(&c->g, 404, "PAYMENT_NOT_FOUND",
		             "No payment waits under this id and client secret");
		return;
	}
	sodium_memzero(c->given, sizeof(c->given));
	if (c->rd_more != 0) {
		resv_err_answer(c, RESV_NOT_FOUND);
		return;
	}
	fgw_strlcpy(c->hold_id, c->sec.reservation_id, sizeof(c->hold_id));
	convert_start(c, c->pay, c->row.save_method, 1);
}

/* POST /v1/payments/{paymentId}/confirm: the customer's browser pays a
 * payment a convert left waiting, with the card sealed to the gateway's
 * key (or a saved method). Needs the customer's JWT and the payment's
 * client secret; the card never passes through the website. */
static void
browser_confirm_cont(struct rctx *c, cJSON *root)
{
	static const char *const fields[] = { "clientSecret", "encryptedCard",
		                                  "paymentMethodId", "returnUrl", NULL };
	const cJSON *v;
	struct fgw_why bw = { 0 };
	int n, r;

	if (cJSON_GetObjectItemCaseSensitive(root, "card") != NULL) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR",
		             "card must be sealed to the gateway's key: send encryptedCard");
		goto out;
	}
	n = (cJSON_GetObjectItemCaseSensitive(root, "encryptedCard") != NULL) +
	    (cJSON_GetObjectItemCaseSensitive(root, "paymentMethodId") != NULL);
	if (only_members(root, fields, &bw) != 0 ||
	    get_string(root, "clientSecret", c->given, sizeof(c->given), 1, &bw) != 0) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR", bw.msg);
		goto out;
	}
	if (n != 1) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR",
		             "exactly one of encryptedCard or paymentMethodId is required");
		goto out;
	}
	r = http_path_segment("/v1/payments/*/confirm", c->path, 0, c->pid, sizeof(c->pid));
	if (r != 0 || strncmp(c->pid, "pay_", 4) != 0 || !id_ok(c->pid)) {
		gw_req_error(&c->g, 404, "PAYMENT_NOT_FOUND",
		             "No payment waits under this id and client secret");
		goto out;
	}
	/* The payment source as a convert would carry it, kept in c (and
	 * wiped with it) while the payment is read. */
	if ((c->pay = cJSON_CreateObject()) == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		goto out;
	}
	if ((v = cJSON_GetObjectItemCaseSensitive(root, "encryptedCard")) != NULL)
		cJSON_AddItemToObject(c->pay, "encryptedCard", cJSON_Duplicate(v, 1));
	if ((v = cJSON_GetObjectItemCaseSensitive(root, "paymentMethodId")) != NULL)
		cJSON_AddItemToObject(c->pay, "paymentMethodId", cJSON_Duplicate(v, 1));
	if ((v = cJSON_GetObjectItemCaseSensitive(root, "returnUrl")) != NULL)
		cJSON_AddItemToObject(c->pay, "returnUrl", cJSON_Duplicate(v, 1));
	rctx_read(c, browser_confirm_read, browser_confirm_read_done);
out:
	cJSON_Delete(root);
}

static void
h_browser_confirm(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	begin_post_as(rx, req, path, 0, 1, browser_confirm_cont);
}

/* ---- POST /v1/reservations/hold/cancel ------------------------------------- */

static void
cancel_done(void *arg, int rc)
{
	struct rctx *c = arg;
	if (resv_job_failed(c, rc, 1, "hold cancel"))
		return;
	finish_answer(c, 200);
}

static void
cancel_cont(struct rctx *c, cJSON *root)
{
	static const char *const fields[] = { "holdId", NULL };
	struct reactor *rx = c->g.rx;
	struct store_idem idem;
	cJSON *o = NULL, *res;
	struct fgw_why bw = { 0 };
	char hold_id[40];

	if (only_members(root, fields, &bw) != 0 ||
	    get_string(root, "holdId", hold_id, sizeof(hold_id), 1, &bw) != 0) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR", bw.msg);
		goto out;
	}
	if (!id_ok(hold_id)) {
		resv_err_answer(c, RESV_NOT_FOUND);
		goto out;
	}
	if ((o = cJSON_CreateObject()) == NULL ||
	    (res = cJSON_AddObjectToObject(o, "reservation")) == NULL ||
	    !cJSON_AddStringToObject(res, "id", hold_id) ||
	    !cJSON_AddStringToObject(res, "status", "cancelled") ||
	    !cJSON_AddTrueToObject(o, "success") ||
	    (c->answer = cJSON_PrintUnformatted(o)) == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		goto out;
	}
	fill_idem(c, 200, c->answer, &idem);
	if (resv_cancel(rx->gw->store, rx->waker, hold_id, c->who.subject, fgw_now_ms(),
	                c->g.key[0] ? &idem : NULL, &c->row, &c->err, cancel_done, c) != 0)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
out:
	cJSON_Delete(o);
	cJSON_Delete(root);
}

/* The customer lets a hold go: its places come back at once. A repeat
 * with the same key replays the answer; a new cancel of a cancelled hold
 * is INVALID_HOLD_STATUS. */
static void
h_cancel(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	begin_post(rx, req, path, 0, cancel_cont);
}

/* ---- POST /v1/reservations/confirm ---------------------------------------- */

static char *
confirm_answer(const struct resv_row *r)
{
	cJSON *o = cJSON_CreateObject(), *res, *pay;
	char *s = NULL;
	if (o == NULL || (res = cJSON_AddObjectToObject(o, "reservation")) == NULL ||
	    (pay = cJSON_AddObjectToObject(o, "payment")) == NULL)
		goto out;
	cJSON_AddStringToObject(res, "id", r->id);
	cJSON_AddStringToObject(res, "status", r->status);
	cJSON_AddStringToObject(res, "paymentStatus", r->payment_status);
	cJSON_AddStringToObject(res, "reservationReference", r->reference);
	cJSON_AddStringToObject(pay, "paymentId", r->txn_id);
	cJSON_AddStringToObject(pay, "status", "captured");
	add_str_or_null(pay, "chargeId", r->payment_intent_id);
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

static void
confirm_stored(void *arg, int rc)
{
	struct rctx *c = arg;
	if (rc == FGW_ERR_CONFLICT) {
		/* Confirmed (confirming again changes nothing), but the key
		 * is another request's: its answer is the key's. */
		gw_req_repeat(&c->g, c->hash);
		return;
	}
	finish_answer(c, 200);
}

static void
confirm_done(void *arg, int rc)
{
	struct rctx *c = arg;
	struct store_idem idem;
	if (resv_job_failed(c, rc, 0, NULL))
		return;
	if ((c->answer = confirm_answer(&c->row)) == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	mail_booking_confirmed(&c->g.rx->env, c->row.id);
	if (c->g.key[0] == '\0') {
		confirm_stored(c, 0);
		return;
	}
	fill_idem(c, 200, c->answer, &idem);
	if (resv_idem_put(c->g.rx->gw->store, c->g.rx->waker, &idem, confirm_stored, c) != 0)
		confirm_stored(c, FGW_ERR_INTERNAL);
}

static void
confirm_cont(struct rctx *c, cJSON *root)
{
	static const char *const fields[] = { "reservationId", "paymentIntentId", NULL };
	struct reactor *rx = c->g.rx;
	struct fgw_why bw = { 0 };
	char id[40], intent[96], ref[16];

	if (only_members(root, fields, &bw) != 0 ||
	    get_string(root, "reservationId", id, sizeof(id), 1, &bw) != 0 ||
	    get_string(root, "paymentIntentId", intent, sizeof(intent), 0, &bw) != 0) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR",
		             bw.msg[0] ? bw.msg : "body must be a JSON object");
		goto out;
	}
	if (!id_ok(id)) {
		resv_err_answer(c, RESV_NOT_FOUND);
		goto out;
	}
	new_reference(ref);
	if (resv_confirm(rx->gw->store, rx->waker, id, c->who.subject, intent, ref, &c->row,
	                 &c->err, confirm_done, c) != 0)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
out:
	cJSON_Delete(root);
}

static void
h_confirm(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	begin_post(rx, req, path, 0, confirm_cont);
}

/* ---- GET /v1/reservations/{id}/payment-status ------------------------------ */

static const char *
stripe_status(const char *txn_status)
{
	enum txn_state s = txn_state_of(txn_status);
	if (s == TXN_SUCCEEDED || s == TXN_REQUIRES_ACTION || s == TXN_PROCESSING ||
	    s == TXN_REFUNDED)
		return txn_state_name(s);
	if (s == TXN_POSTING)
		return txn_state_name(TXN_PROCESSING);
	return "requires_payment_method";
}

/* The answer from the reservation r and its payment t as read (rc: the
 * reads' result). */
static void
status_reply(struct rctx *c, int rc, const struct resv_row *r,
             const struct store_txn_row *t)
{
	cJSON *o = cJSON_CreateObject(), *d, *na = NULL, *type;
	char *s = NULL;
	int ra;

	if (rc != 0 || o == NULL || !cJSON_AddTrueToObject(o, "success") ||
	    (d = cJSON_AddObjectToObject(o, "data")) == NULL) {
		cJSON_Delete(o);
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	ra = txn_state_of(t->status) == TXN_REQUIRES_ACTION;
	cJSON_AddStringToObject(d, "reservationStatus", r->status);
	add_str_or_null(d, "paymentIntentId", r->payment_intent_id);
	cJSON_AddStringToObject(d, "stripeStatus", stripe_status(t->status));
	cJSON_AddBoolToObject(d, "requiresAction", ra);
	if (ra && t->next_action_json != NULL)
		na = cJSON_Parse(t->next_action_json);
	type = na ? cJSON_GetObjectItemCaseSensitive(na, "type") : NULL;
	add_str_or_null(d, "actionType",
	                cJSON_IsString(type) ? type->valuestring
	                                     : (ra ? "redirect_to_url" : NULL));
	/* The customer's browser needs where to go, not just that it must. */
	if (na != NULL)
		cJSON_AddItemToObject(d, "nextAction", na);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (s != NULL)
		gw_req_finish(&c->g, 200, s);
	else
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
	cJSON_free(s);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields.
 * The reservation and its payment as they are after a processor check. */
static int
status_read(struct store_reader *rd, void *arg)
{
	struct rctx *c = arg;
	int r = resv_get(rd, c->who.subject, c->row.id, &c->srow);

	if (r == 0 && c->srow.txn_id[0])
		r = store_txn_get(rd, NULL, c->srow.txn_id, &c->stxn);
	return r;
}

static void
status_read_done(void *arg, int rc)
{
	struct rctx *c = arg;
	status_reply(c, rc, &c->srow, &c->stxn);
}

/* Answers with the reservation as it stands now, read again. */
static void
status_answer(struct rctx *c)
{
	rctx_read(c, status_read, status_read_done);
}

static void
status_moved(void *arg, int rc)
{
	struct rctx *c = arg;
	if (rc != 0)
		log_warn("reservation %s: move after processor check: %s", c->row.id,
		         fgw_strerror(rc));
	status_answer(c);
}

static void
status_txn_finished(void *arg, int rc, const struct store_txn_row *row)
{
	struct rctx *c = arg;
	char ref[16];
	if (rc != 0 || row == NULL) {
		/* Another path (webhook, reconciler) moved it first: fine. */
		status_answer(c);
		return;
	}
	new_reference(ref);
	/* The listener queued the same move; this one is only waited for, so
	 * the answer reflects it. */
	if (resv_payment_moved(c->g.rx->gw->store, c->g.rx->waker, c->row.id, row->id,
	                       row->status, row->processor_ref, ref, NULL, status_moved,
	                       c) != 0)
		status_answer(c);
}

/* The processor's word on a charge still waiting (3-D Secure): asked
 * asynchronously; a final state is committed forward-only like any other
 * move and published, so the reservation and other features hear it. */
static void
status_checked(void *arg, const struct proc_reply *reply)
{
	struct rctx *c = arg;
	const struct pipeline_env *env = &c->g.rx->env;
	struct proc_result res = c->pres; /* ours now */
	struct txn_settlement set;
	enum txn_state to = TXN_STATE_NONE;
	int r;

	memset(&c->pres, 0, sizeof(c->pres));
	if (reply->parsed && proc_result_is_for(&res, c->txn.id) &&
	    !proc_result_other_sum(&res, c->txn.amount, c->txn.currency)) {
		if (res.outcome == PROC_SUCCEEDED)
			to = TXN_SUCCEEDED;
		else if (res.outcome == PROC_AUTHORIZED)
			to = TXN_AUTHORIZED;
		else if (res.outcome == PROC_DECLINED)
			to = TXN_DECLINED;
	}
	if (to == TXN_STATE_NONE || to == txn_state_of(c->txn.status)) {
		proc_result_clear(&res);
		status_answer(c);
		return;
	}
	set = (struct txn_settlement){
		.txn_id = c->txn.id,
		.from = txn_state_of(c->txn.status),
		.to = to,
		.error_code = res.outcome == PROC_DECLINED ? "PAYMENT_CARD_DECLINED" : NULL,
		.error_message = res.outcome == PROC_DECLINED ? res.message : NULL,
		.actor = "system",
		.source = "local",
		.event_type = "txn.outcome",
		.details_json = "{\"via\":\"payment-status poll\"}",
		.row = &c->txn,
	};
	r = txn_settle(env, &set, status_txn_finished, c);
	proc_result_clear(&res);
	if (r != 0)
		status_answer(c);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields.
 * The reservation and its payment (c->rd_more), in one hop. */
static int
status_first_read(struct store_reader *rd, void *arg)
{
	struct rctx *c = arg;
	int r = resv_get(rd, c->who.subject, c->hold_id, &c->row);

	c->rd_more = 0;
	if (r == 0 && c->row.txn_id[0] != '\0')
		c->rd_more = store_txn_get(rd, NULL, c->row.txn_id, &c->txn);
	return r;
}

/* Asks the processor about a payment still waiting for 3-D Secure, or
 * answers from what was read. */
static void
status_first_done(void *arg, int r)
{
	struct rctx *c = arg;
	struct reactor *rx = c->g.rx;
	struct proc_op_request oreq;

	if (r != 0) {
		resv_err_answer(c, r == FGW_ERR_NOT_FOUND ? RESV_NOT_FOUND : RESV_OK);
		return;
	}
	if (c->row.txn_id[0] == '\0' || c->rd_more != 0 ||
	    txn_state_of(c->txn.status) != TXN_REQUIRES_ACTION ||
	    c->txn.processor_ref[0] == '\0' ||
	    strspn(c->txn.processor_ref,
	           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
	        strlen(c->txn.processor_ref)) {
		/* Nothing to ask: what was just read is the answer. */
		status_reply(c, c->rd_more, &c->row, &c->txn);
		return;
	}
	/* Asked like the reconciler asks: the processor the row went to, in
	 * that processor's own status operation (never a charge). */
	memset(&oreq, 0, sizeof(oreq));
	oreq.txn_id = c->txn.id;
	oreq.idempotency_key = c->txn.processor_idem_key[0] ? c->txn.processor_idem_key
	                                                    : c->txn.id;
	oreq.reference = c->txn.processor_ref;
	c->call = (struct proc_call){ .op = PROC_CALL_STATUS,
		                          .opreq = &oreq,
		                          .res = &c->pres,
		                          .done = status_checked,
		                          .arg = c };
	c->call.inst = pipeline_proc_find(&rx->env, c->txn.processor);
	r = proc_call_start(&rx->env, &c->call);
	c->call.opreq = NULL; /* built */
	if (r != 0)
		status_answer(c);
}

static void
h_payment_status(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct auth_ctx who;
	struct rctx *c;
	char id[40];

	if (customer_auth(rx, req, path, &who) != 0)
		return;
	if (http_path_segment("/v1/reservations/*/payment-status", path, 0, id, sizeof(id)) !=
	        0 ||
	    !id_ok(id)) {
		http_send_error(rx, req, 404, "RESERVATION_NOT_FOUND", "Reservation not found");
		return;
	}
	if ((c = rctx_new(rx, req, &who)) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		return;
	}
	fgw_strlcpy(c->hold_id, id, sizeof(c->hold_id));
	rctx_read(c, status_first_read, status_first_done);
}

/* ---- GET /v1/reservations ----------------------------------------------------- */

static int
query_int(struct evkeyvalq *q, const char *name, int64_t lo, int64_t hi, int64_t def,
          int64_t *out)
{
	const char *v = evhttp_find_header(q, name);
	if (v == NULL) {
		*out = def;
		return 0;
	}
	return fgw_parse_i64(v, lo, hi, out);
}

/* GET /v1/reservations: the page and each row's slot are read in one
 * store_read (off the reactor on PostgreSQL) and answered when they come. */
struct list_ctx {
	struct gw_req g; /* first: gw_req_finish frees the whole */
	char customer[192];
	char status[16]; /* "": all */
	int64_t limit, offset;
	struct resv_row *rows; /* n of them */
	int n;
	int64_t total;
	/* Each row's slot and experience; slot_ok[i] when they were read. */
	struct resv_slot *sl;
	struct resv_experience *exp;
	int *slot_ok;
};

static void
list_free(struct gw_req *g, int abandoned)
{
	struct list_ctx *c = (struct list_ctx *)g;

	(void)abandoned;
	free(c->rows);
	free(c->sl);
	free(c->exp);
	free(c->slot_ok);
	free(c);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields. */
static int
list_read(struct store_reader *rd, void *arg)
{
	struct list_ctx *c = arg;
	size_t n;
	int r;

	if ((r = resv_list(rd, c->customer, c->status[0] ? c->status : NULL, (int)c->limit,
	                   (int)c->offset, &c->rows, &c->n, &c->total)) != 0)
		return r;
	n = c->n > 0 ? (size_t)c->n : 1;
	if ((c->sl = calloc(n, sizeof(*c->sl))) == NULL ||
	    (c->exp = calloc(n, sizeof(*c->exp))) == NULL ||
	    (c->slot_ok = calloc(n, sizeof(*c->slot_ok))) == NULL)
		return FGW_ERR_NOMEM;
	for (int i = 0; i < c->n; i++)
		c->slot_ok[i] = resv_slot_get(rd, c->rows[i].time_slot_id, &c->sl[i],
		                              &c->exp[i]) == 0;
	return 0;
}

static void
list_read_done(void *arg, int rc)
{
	struct list_ctx *c = arg;
	cJSON *o = NULL, *arr, *pg;
	char *s = NULL;

	if (rc != 0 || (o = cJSON_CreateObject()) == NULL ||
	    (arr = cJSON_AddArrayToObject(o, "reservations")) == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		goto out;
	}
	for (int i = 0; i < c->n; i++) {
		const struct resv_row *r = &c->rows[i];
		const struct resv_slot *sl = &c->sl[i];
		const struct resv_experience *e = &c->exp[i];
		cJSON *it = cJSON_CreateObject(), *x;
		if (it == NULL)
			continue;
		cJSON_AddItemToArray(arr, it);
		cJSON_AddStringToObject(it, "id", r->id);
		cJSON_AddStringToObject(it, "experienceId", r->experience_id);
		cJSON_AddStringToObject(it, "timeSlotId", r->time_slot_id);
		cJSON_AddStringToObject(it, "status", r->status);
		cJSON_AddStringToObject(it, "paymentStatus", r->payment_status);
		cJSON_AddNumberToObject(it, "numberOfGuests", r->guests);
		cJSON_AddNumberToObject(it, "totalPrice", (double)r->total_price);
		cJSON_AddStringToObject(it, "currency", r->currency);
		add_str_or_null(it, "reservationReference", r->reference);
		add_iso(it, "holdExpiresAt", r->hold_expires_at);
		add_iso(it, "createdAt", r->created_at);
		if (c->slot_ok[i]) {
			if ((x = cJSON_AddObjectToObject(it, "experience")) != NULL) {
				cJSON_AddStringToObject(x, "id", e->id);
				cJSON_AddStringToObject(x, "name", e->name);
				cJSON_AddNumberToObject(x, "price", (double)e->price);
				cJSON_AddStringToObject(x, "currency", e->currency);
			}
			if ((x = cJSON_AddObjectToObject(it, "timeSlot")) != NULL) {
				cJSON_AddStringToObject(x, "id", sl->id);
				add_iso(x, "startsAt", sl->starts_at);
				cJSON_AddNumberToObject(x, "capacity", sl->capacity);
				cJSON_AddNumberToObject(x, "available", sl->capacity - sl->taken);
			}
		}
	}
	if ((pg = cJSON_AddObjectToObject(o, "pagination")) != NULL) {
		cJSON_AddNumberToObject(pg, "total", (double)c->total);
		cJSON_AddNumberToObject(pg, "limit", (double)c->limit);
		cJSON_AddNumberToObject(pg, "offset", (double)c->offset);
		cJSON_AddBoolToObject(pg, "hasMore", c->offset + c->n < c->total);
	}
	if ((s = cJSON_PrintUnformatted(o)) == NULL)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", ERR_INTERNAL);
	else
		gw_req_finish(&c->g, 200, s);
out:
	cJSON_free(s);
	cJSON_Delete(o);
}

static void
h_list(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	static const char *const statuses[] = { "held",    "pending",  "confirmed",
		                                    "expired", "refunded", "cancelled",
		                                    NULL };
	struct auth_ctx who;
	struct evkeyvalq q;
	struct list_ctx *c = NULL;
	const char *query, *status;
	int64_t limit, offset;
	int ok = 0;

	if (customer_auth(rx, req, path, &who) != 0)
		return;
	query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	/* an absent query parses as an empty one */
	if (evhttp_parse_query_str(query ? query : "", &q) != 0) {
		http_send_error(rx, req, 400, "VALIDATION_ERROR", "malformed query string");
		return;
	}
	status = evhttp_find_header(&q, "status");
	if (status != NULL) {
		for (int i = 0; statuses[i]; i++)
			if (strcmp(status, statuses[i]) == 0)
				ok = 1;
		if (!ok) {
			http_send_error(
			    rx, req, 400, "VALIDATION_ERROR",
			    "status must be held, pending, confirmed, expired, refunded or "
			    "cancelled");
			goto out;
		}
	}
	if (query_int(&q, "limit", 1, 100, 10, &limit) != 0 ||
	    query_int(&q, "offset", 0, 1000000, 0, &offset) != 0) {
		http_send_error(rx, req, 400, "VALIDATION_ERROR",
		                "limit must be 1 to 100 and offset 0 to 1000000");
		goto out;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", ERR_INTERNAL);
		goto out;
	}
	fgw_strlcpy(c->customer, who.subject, sizeof(c->customer));
	if (status != NULL)
		fgw_strlcpy(c->status, status, sizeof(c->status));
	c->limit = limit;
	c->offset = offset;
	gw_req_start(&c->g, rx, req, "reservation list", list_free);
	if (store_read(rx->gw->store, rx->waker, rx->reader, list_read, c, list_read_done) !=
	    0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
out:
	evhttp_clear_headers(&q);
}

/* ---- POST /v1/admin/clock (development only) ---------------------------------- */

static void
h_admin_clock(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct auth_ctx who;
	struct store_audit audit;
	cJSON *root = NULL;
	const cJSON *v;
	const char *body;
	char out[160], details[80], iso[32];
	size_t len;
	int64_t off;

	/* Moving the clock expires holds and keys of every client: the
	 * operator's, never a website's. */
	if (http_authenticate_admin(rx, req, path, &who) != 0)
		return;
	if (http_json_body(rx, req, &body, &len) != 0)
		return;
	root = fgw_json_parse_strict(body, len);
	v = cJSON_GetObjectItemCaseSensitive(root, "offsetMs");
	if (!cJSON_IsObject(root) || cJSON_GetArraySize(root) != 1 ||
	    fgw_json_int(v, -31536000000LL, 31536000000LL, &off) != 0) {
		http_send_error(rx, req, 400, "VALIDATION_ERROR",
		                "body must be {\"offsetMs\": integer within one year}");
		goto out;
	}
	fgw_clock_set_offset_ms(off);
	snprintf(details, sizeof(details), "{\"offsetMs\":%lld}", (long long)off);
	audit = (struct store_audit){ who.client_id, who.source, "clock.set",
		                          "clock",       "success",  details };
	(void)store_audit_append(rx->gw->store, rx->waker,
	                         &(struct store_commit){ .audit = &audit, .n_audit = 1 });
	log_warn("test clock offset set to %lld ms by %s", (long long)off, who.client_id);
	if (fgw_iso8601(fgw_now_ms(), iso, sizeof(iso)) != 0)
		iso[0] = '\0';
	snprintf(out, sizeof(out), "{\"offsetMs\":%lld,\"now\":\"%s\"}", (long long)off, iso);
	http_send_json(rx, req, 200, out);
out:
	cJSON_Delete(root);
}

const struct route resv_routes[] = {
	{ "/v1/reservations/hold", EVHTTP_REQ_POST, h_hold },
	{ "/v1/reservations/hold/convert", EVHTTP_REQ_POST, h_convert },
	{ "/v1/reservations/hold/cancel", EVHTTP_REQ_POST, h_cancel },
	{ "/v1/payments/*/confirm", EVHTTP_REQ_POST, h_browser_confirm },
	{ "/v1/reservations/confirm", EVHTTP_REQ_POST, h_confirm },
	{ "/v1/reservations/*/payment-status", EVHTTP_REQ_GET, h_payment_status },
	{ "/v1/reservations", EVHTTP_REQ_GET, h_list },
	{ "/v1/admin/clock", EVHTTP_REQ_POST, h_admin_clock },
	{ NULL, 0, NULL },
};

/* ---- events, timer, start-up ------------------------------------------------- */

/* A reservation confirmed by its payment's news (3-D Secure, webhook)
 * hears about it once that move is committed. */
struct moved_mail {
	const struct pipeline_env *env;
	char id[128];
};

static void
moved_done(void *arg, int rc)
{
	struct moved_mail *mm = arg;
	if (rc == 0)
		mail_booking_confirmed(mm->env, mm->id);
	free(mm);
}

/* A payment of a reservation moved (its own pipeline, a webhook, the
 * reconciler, a refund): the reservation follows. */
static void
on_txn_event(void *ctx, const struct pipeline_env *env, const struct store_txn_row *row)
{
	struct gateway *gw = ctx;
	struct moved_mail *mm = NULL;
	char ref[16];
	if (strncmp(row->reservation_id, "res_", 4) != 0)
		return;
	/* Most res_ ids are the website's own, with no hold behind them: on
	 * SQLite a read of the local file, in place on this reactor (where
	 * store_read would run it too), saves the writer a job that would
	 * change nothing. No move is lost: a convert commits the link
	 * (reservations.txn_id) before it starts the payment, so every state
	 * commit of that payment, and this event after it, comes later; each
	 * read starts a fresh snapshot (reader statements are reset after
	 * use). A link only ever moves on to a new attempt, whose old
	 * payment's news the job ignores too. A failed read queues the job.
	 * On PostgreSQL that read would be a round trip on the reactor, and
	 * it cannot wait for a store_read: the job must be queued now, in the
	 * event's store group (pipeline/events.h). So there the job is always
	 * queued and decides in the writer's transaction (it changes nothing
	 * for a payment no hold links). */
	if (strcmp(gw->cfg.store_backend, "postgresql") != 0 && env->reader != NULL &&
	    resv_links_txn(env->reader, row->reservation_id, row->id) == 0) {
		atomic_fetch_add(&gw->metrics.resv_moves[1], 1);
		return;
	}
	atomic_fetch_add(&gw->metrics.resv_moves[0], 1);
	new_reference(ref);
	if (gw->mail != NULL && txn_state_of(row->status) == TXN_SUCCEEDED &&
	    (mm = calloc(1, sizeof(*mm))) != NULL) {
		mm->env = env;
		fgw_strlcpy(mm->id, row->reservation_id, sizeof(mm->id));
	}
	if (resv_payment_moved(env->store, env->waker, row->reservation_id, row->id,
	                       row->status, row->processor_ref, ref, NULL,
	                       mm != NULL ? moved_done : NULL, mm) != 0) {
		log_warn("reservation %s: could not queue the payment move", row->reservation_id);
		free(mm);
	}
}

static void
sweep_done(void *arg, int rc)
{
	struct reactor *rx = arg;
	if (rc != 0)
		log_warn("hold sweep failed: %s", fgw_strerror(rc));
	rx->resv_sweeping = 0;
}

/* ---- reservation events to the website's webhook endpoints --------------------- */

struct publish {
	struct reactor *rx;
	int64_t ids[RESV_EVENTS_MAX];
	size_t n;
};

static void
published_done(void *arg, int rc)
{
	struct publish *p = arg;
	if (rc != 0)
		log_warn("reservation events not marked published: %s", fgw_strerror(rc));
	p->rx->resv_publishing = 0;
	free(p);
}

static void
publish_enqueued(void *arg, int rc)
{
	struct publish *p = arg;
	/* Not queued: left unpublished for the next tick. */
	if (rc != 0 || resv_events_published(p->rx->gw->store, p->rx->waker, p->ids, p->n,
	                                     published_done, p) != 0) {
		if (rc != 0)
			log_warn("reservation events not queued: %s", fgw_strerror(rc));
		p->rx->resv_publishing = 0;
		free(p);
	}
}

/* The event's body, in the shape of the transaction events
 * (docs/webhooks.md); the reservation without the guest's contact data. */
static char *
resv_event_payload(const char *event_id, const struct resv_event *e)
{
	cJSON *o = cJSON_CreateObject(), *data, *r;
	char *s = NULL;
	if (o == NULL || (data = cJSON_AddObjectToObject(o, "data")) == NULL ||
	    (r = cJSON_AddObjectToObject(data, "object")) == NULL)
		goto out;
	cJSON_AddStringToObject(o, "id", event_id);
	cJSON_AddStringToObject(o, "type", e->type);
	cJSON_AddNumberToObject(o, "created", (double)(e->created_at / 1000));
	cJSON_AddStringToObject(o, "clientId", e->row.client_id);
	cJSON_AddStringToObject(r, "id", e->row.id);
	cJSON_AddStringToObject(r, "status", e->row.status);
	cJSON_AddStringToObject(r, "paymentStatus", e->row.payment_status);
	add_str_or_null(r, "reservationReference", e->row.reference);
	cJSON_AddStringToObject(r, "experienceId", e->row.experience_id);
	cJSON_AddStringToObject(r, "timeSlotId", e->row.time_slot_id);
	cJSON_AddNumberToObject(r, "numberOfGuests", e->row.guests);
	cJSON_AddNumberToObject(r, "totalPrice", (double)e->row.total_price);
	cJSON_AddStringToObject(r, "currency", e->row.currency);
	add_str_or_null(r, "paymentIntentId", e->row.payment_intent_id);
	add_str_or_null(r, "transactionId", e->row.txn_id);
	add_iso(r, "holdExpiresAt", e->row.hold_expires_at);
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

/* Queues one outbox row per event (ev, n of them, as read) and endpoint
 * of the reservation's client. The event id comes from the event's row,
 * so a repeat after a crash between the two commits carries the same id
 * (receivers drop duplicates by id). rx->resv_publishing stays set while
 * the jobs run. */
static void
publish_events(struct reactor *rx, const struct resv_event *ev, size_t n)
{
	const struct fgw_config *cfg = &rx->gw->cfg;
	struct store_outbox_row *rows = NULL;
	char *payloads[RESV_EVENTS_MAX];
	struct publish *p = NULL;
	size_t k = 0;

	memset(payloads, 0, sizeof(payloads));
	rx->resv_publishing = 0;
	if (n == 0 || (p = calloc(1, sizeof(*p))) == NULL ||
	    (rows = calloc(n * (size_t)(cfg->n_webhook_endpoints + 1), sizeof(*rows))) ==
	        NULL)
		goto out;
	p->rx = rx;
	for (size_t i = 0; i < n; i++) {
		char evt[40];
		p->ids[p->n++] = ev[i].id;
		snprintf(evt, sizeof(evt), "evt_resv_%lld", (long long)ev[i].id);
		for (int e = 0; e < cfg->n_webhook_endpoints; e++) {
			const struct config_webhook_endpoint *ep = &cfg->webhook_endpoints[e];
			if (ep->client_id[0] != '\0' &&
			    strcmp(ep->client_id, ev[i].row.client_id) != 0)
				continue;
			if (payloads[i] == NULL &&
			    (payloads[i] = resv_event_payload(evt, &ev[i])) == NULL)
				goto out;
			fgw_random_id("whd_", rows[k].id, sizeof(rows[k].id));
			fgw_strlcpy(rows[k].endpoint_url, ep->url, sizeof(rows[k].endpoint_url));
			fgw_strlcpy(rows[k].event_id, evt, sizeof(rows[k].event_id));
			fgw_strlcpy(rows[k].event_type, ev[i].type, sizeof(rows[k].event_type));
			fgw_strlcpy(rows[k].txn_id, ev[i].row.txn_id, sizeof(rows[k].txn_id));
			rows[k].payload = payloads[i];
			k++;
		}
	}
	/* The booking confirmation hangs off the reservation.confirmed event
	 * its confirm committed: queued (once per reservation, by its dedupe
	 * key) before the event is marked published, whose job commits no
	 * earlier, so a crash between the confirm's commit and the mail's
	 * loses neither. */
	for (size_t i = 0; i < n; i++)
		if (strcmp(ev[i].type, "reservation.confirmed") == 0)
			mail_booking_confirmed(&rx->env, ev[i].row.id);
	rx->resv_publishing = 1;
	if (k == 0) {
		/* No endpoint hears these: nothing to deliver. */
		if (resv_events_published(rx->gw->store, rx->waker, p->ids, p->n, published_done,
		                          p) == 0)
			p = NULL;
		else
			rx->resv_publishing = 0;
	} else if (store_outbox_enqueue(rx->gw->store, rx->waker, rows, k, NULL, 0,
	                                publish_enqueued, p) == 0) {
		p = NULL;
	} else {
		rx->resv_publishing = 0;
	}
out:
	for (size_t i = 0; i < RESV_EVENTS_MAX; i++)
		free(payloads[i]);
	free(rows);
	free(p);
}

/* The events scan: reads the unpublished reservation events through
 * store_read (off the reactor on PostgreSQL). A request context with no
 * HTTP request, so that a drain waits for it and a forced stop frees it. */
struct events_scan {
	struct gw_req g; /* first */
	struct resv_event ev[RESV_EVENTS_MAX];
	size_t n;
};

static void
events_scan_free(struct gw_req *g, int abandoned)
{
	(void)abandoned;
	free(g);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only sc's fields. */
static int
events_scan_read(struct store_reader *rd, void *arg)
{
	struct events_scan *sc = arg;
	return resv_events_pending(rd, sc->ev, RESV_EVENTS_MAX, &sc->n);
}

static void
events_scan_done(void *arg, int rc)
{
	struct events_scan *sc = arg;
	struct reactor *rx = sc->g.rx;

	/* Failed, or stopping (no job then, whose done the stop might
	 * drop): the events are left for the next tick or start. */
	if (rc != 0 || rx->draining)
		sc->n = 0;
	publish_events(rx, sc->ev, sc->n);
	gw_req_drop(&sc->g);
}

/* One scan at a time (rx->resv_publishing, set until its jobs are done). */
static void
events_scan_start(struct reactor *rx)
{
	struct events_scan *sc = calloc(1, sizeof(*sc));

	if (sc == NULL)
		return;
	gw_req_start(&sc->g, rx, NULL, "reservation events scan", events_scan_free);
	rx->resv_publishing = 1;
	if (store_read(rx->gw->store, rx->waker, rx->reader, events_scan_read, sc,
	               events_scan_done) != 0) {
		rx->resv_publishing = 0;
		gw_req_drop(&sc->g);
	}
}

static void
sweep_tick(evutil_socket_t fd, short what, void *arg)
{
	struct reactor *rx = arg;
	(void)fd;
	(void)what;
	if (rx->draining)
		return;
	if (!rx->resv_publishing)
		events_scan_start(rx);
	if (rx->resv_sweeping)
		return;
	if (resv_sweep(rx->gw->store, rx->waker, fgw_now_ms(), sweep_done, rx) == 0)
		rx->resv_sweeping = 1;
}

int
resv_reactor_start(struct reactor *rx)
{
	struct timeval tv;
	long long ms = rx->gw->cfg.hold_sweep_ms;
	/* One reactor sweeps: the job is global and the writer serializes it. */
	if (rx->idx != 0)
		return 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	if ((rx->resv_timer = event_new(rx->base, -1, EV_PERSIST, sweep_tick, rx)) == NULL ||
	    event_add(rx->resv_timer, &tv) != 0)
		return FGW_ERR_NOMEM;
	return 0;
}

void
resv_reactor_stop(struct reactor *rx)
{
	/* Requests in flight were freed before (gw_req_abandon_all). */
	if (rx->resv_timer != NULL)
		event_free(rx->resv_timer);
	rx->resv_timer = NULL;
}

int
resv_setup(struct gateway *gw, int check, struct fgw_why *why)
{
	char *text = NULL;
	struct fgw_why cat_why = { 0 };
	size_t len = 0;
	int r;

	if (!check && (r = txn_events_subscribe(on_txn_event, gw)) != 0) {
		fgw_why_set(why, "reservations", 0, 0, "cannot subscribe to transaction events");
		return r;
	}
	if (gw->cfg.slots_file[0] == '\0')
		return 0;
	if ((r = fgw_read_file(gw->cfg.slots_file, 4 << 20, &text, &len)) != 0) {
		fgw_why_set(why, NULL, 0, 0, "slots_file %s: %s", gw->cfg.slots_file,
		            fgw_strerror(r));
		return r;
	}
	if ((r = resv_load_catalogue(check ? NULL : gw->store, text, len, &cat_why)) != 0)
		fgw_why_set(why, NULL, 0, 0, "slots_file %s: %s", gw->cfg.slots_file,
		            cat_why.msg);
	free(text);
	return r;
}
