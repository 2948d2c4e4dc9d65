/*
 * gateway/routes_methods.c — saved payment methods of the authenticated
 * customer: GET/POST /v1/payments/methods, DELETE /v1/payments/methods/{id},
 * PUT /v1/payments/methods/{id}/default.
 *
 * The customer is who.subject (JWT sub, or X-Customer-Id from a website
 * back end with an API key); every query is scoped to it, so another
 * customer's id reads as 404 PAYMENT_METHOD_NOT_FOUND. Answers have the
 * shape {"success": true, "data": ...}. Reads go through store_read (off
 * the reactor on PostgreSQL) and writes are store jobs: the request goes
 * on from their completion on this reactor; a client that has gone by
 * then gets nothing, the change stands.
 *
 * {"stripePaymentMethod": "pm_…"} (a card Stripe.js gave to Stripe) is
 * saved at the gateway's stripe processor by a chain of calls, each with
 * an Idempotency-Key derived from what it makes, never random: the
 * customer's Stripe Customer (found in processor_customers, or created
 * with key "cus-<keyed hash of the processor and customer id>" and then
 * recorded), the attachment (key "att-<keyed hash of card and Customer>"),
 * then the row. A gateway that dies anywhere in the chain leaves what it
 * made at Stripe behind a key a retry uses again: the retry replays the
 * same Customer and attachment, and the row is saved once per card.
 */
#define LOG_MODULE "http"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/http.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/reqctx.h"
#include "processors/httpc.h"
#include "store/methods.h"

/* One write waiting for its commit. */
struct method_op {
	struct gw_req g;        /* first: the request and its reactor */
	struct store_method m;  /* filled by a save job */
	const char *ok_message; /* delete / default answers */
	/* Saving a processor's card (stripePaymentMethod). */
	struct proc_instance *inst;
	struct proc_call call;
	struct proc_result res;      /* the call's answer ... */
	struct proc_saved_card card; /* ... and the attached card */
	char ref[33];                /* keyed hash naming the customer at the processor */
	char cus_have[96];           /* the recorded Customer (store job) */
	char source[64];             /* who.source, for the audit event */
	/* DELETE: the method's id as the path gave it (its row is read into
	 * m off the reactor, then the delete goes on in the read's done). */
	char id[48];
	int read_rc; /* that read's result */
};

static int
customer_of(struct reactor *rx, struct evhttp_request *req, const char *path,
            struct auth_ctx *who)
{
	if (http_authenticate(rx, req, path, AUTH_API_KEY | AUTH_JWT, who) != 0)
		return FGW_ERR_AUTH;
	for (const char *p = who->subject; *p; p++) {
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
			http_send_error(rx, req, 400, "VALIDATION_ERROR",
			                "X-Customer-Id must be printable ASCII without spaces");
			return FGW_ERR_INVALID;
		}
	}
	if (who->subject[0] == '\0') {
		http_send_error_param(
		    rx, req, 400, "CUSTOMER_REQUIRED",
		    "Saved payment methods belong to a customer: send a customer JWT, "
		    "or X-Customer-Id with an API key",
		    "X-Customer-Id");
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

static int
method_id_of(const char *pattern, const char *path, char *id, size_t cap)
{
	if (http_path_segment(pattern, path, 0, id, cap) != 0 || strncmp(id, "pm_", 3) != 0 ||
	    strspn(id + 3,
	           "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") !=
	        strlen(id) - 3)
		return FGW_ERR_NOT_FOUND;
	return FGW_OK;
}

static void
send_not_found(struct reactor *rx, struct evhttp_request *req)
{
	http_send_error(rx, req, 404, "PAYMENT_METHOD_NOT_FOUND", "Payment method not found");
}

static cJSON *
method_json(const struct store_method *m)
{
	cJSON *o = cJSON_CreateObject();
	char buf[32];
	if (o == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "id", m->id);
	cJSON_AddStringToObject(o, "type", "card");
	cJSON_AddStringToObject(o, "last4", m->last4);
	cJSON_AddStringToObject(o, "brand", m->brand);
	/* Strings, as the website's API document shows them. */
	snprintf(buf, sizeof(buf), "%02d", m->exp_month);
	cJSON_AddStringToObject(o, "expMonth", buf);
	snprintf(buf, sizeof(buf), "%04d", m->exp_year);
	cJSON_AddStringToObject(o, "expYear", buf);
	cJSON_AddBoolToObject(o, "isDefault", m->is_default != 0);
	/* A card the processor holds is charged there only. */
	if (m->processor[0])
		cJSON_AddStringToObject(o, "processor", m->processor);
	if (m->nickname[0])
		cJSON_AddStringToObject(o, "nickname", m->nickname);
	else
		cJSON_AddNullToObject(o, "nickname");
	if (fgw_iso8601(m->created_at, buf, sizeof(buf)) == 0)
		cJSON_AddStringToObject(o, "createdAt", buf);
	return o;
}

/* {"success": true, "data": data} or {"success": true, "message": msg}
 * (takes data); NULL when out of memory. */
static char *
success_text(cJSON *data, const char *msg)
{
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;
	if (o != NULL) {
		cJSON_AddBoolToObject(o, "success", 1);
		if (data != NULL)
			cJSON_AddItemToObject(o, "data", data);
		else
			cJSON_AddStringToObject(o, "message", msg);
		data = NULL;
		text = cJSON_PrintUnformatted(o);
	}
	cJSON_Delete(o);
	cJSON_Delete(data);
	return text;
}

/* GET /v1/payments/methods: the rows are read through store_read (off
 * the reactor on PostgreSQL) and answered when they arrive. */
struct methods_list {
	struct gw_req g; /* first: gw_req_finish frees the whole */
	char customer[192];
	size_t n;
	struct store_method ms[STORE_METHODS_MAX];
};

static void
list_free(struct gw_req *g, int abandoned)
{
	(void)abandoned;
	free(g);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields. */
static int
list_read(struct store_reader *rd, void *arg)
{
	struct methods_list *c = arg;

	return store_methods_list(rd, c->customer, c->ms, STORE_METHODS_MAX, &c->n);
}

static void
list_done(void *arg, int r)
{
	struct methods_list *c = arg;
	cJSON *arr = NULL;
	char *text = NULL;

	if (r != 0 || (arr = cJSON_CreateArray()) == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	for (size_t i = 0; i < c->n; i++) {
		cJSON *m = method_json(&c->ms[i]);
		if (m != NULL)
			cJSON_AddItemToArray(arr, m);
	}
	if ((text = success_text(arr, NULL)) != NULL)
		gw_req_finish(&c->g, 200, text);
	else
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
	free(text);
}

static void
h_methods_list(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct methods_list *c = NULL;
	struct auth_ctx who;

	if (customer_of(rx, req, path, &who) != 0)
		return;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	fgw_strlcpy(c->customer, who.subject, sizeof(c->customer));
	gw_req_start(&c->g, rx, req, "payment methods read", list_free);
	if (store_read(rx->gw->store, rx->waker, rx->reader, list_read, c, list_done) != 0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

static void
op_free(struct gw_req *g, int abandoned)
{
	struct method_op *op = (struct method_op *)g;
	(void)abandoned; /* made at the processor is behind its key: a retry replays it */
	proc_call_cancel(&op->call);
	proc_result_clear(&op->res);
	free(op);
}

static struct method_op *
op_new(struct reactor *rx, struct evhttp_request *req)
{
	struct method_op *op = calloc(1, sizeof(*op));
	if (op != NULL)
		gw_req_start(&op->g, rx, req, "payment method", op_free);
	return op;
}

/* Ends the request with a success answer. */
static void
op_success(struct method_op *op, cJSON *data, const char *msg)
{
	char *text = success_text(data, msg);
	if (text != NULL)
		gw_req_finish(&op->g, 200, text);
	else
		gw_req_error(&op->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
	free(text);
}

static void
op_answer_error(struct method_op *op, int rc)
{
	if (rc == FGW_ERR_NOT_FOUND)
		gw_req_error(&op->g, 404, "PAYMENT_METHOD_NOT_FOUND", "Payment method not found");
	else if (rc == FGW_ERR_EXISTS)
		gw_req_error(&op->g, 409, "PAYMENT_METHOD_EXISTS",
		             "That card is already a saved payment method");
	else if (rc == FGW_ERR_TOO_LARGE)
		gw_req_error(&op->g, 409, "PAYMENT_METHOD_LIMIT",
		             "The customer has the maximum number of saved payment methods");
	else
		gw_req_error(&op->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
}

static void
saved_done(void *arg, int rc)
{
	struct method_op *op = arg;
	if (rc != 0)
		op_answer_error(op, rc);
	else
		op_success(op, method_json(&op->m), NULL);
}

static void
changed_done(void *arg, int rc)
{
	struct method_op *op = arg;
	if (rc != 0)
		op_answer_error(op, rc);
	else
		op_success(op, NULL, op->ok_message);
}

/* ---- saving a card the processor holds -------------------------------- */

static void chain_attach(struct method_op *op);

/* 32 hex digits of a keyed hash of parts: stable for the same parts,
 * not computable back to them without the gateway's key. */
static int
keyed_ref(struct keyring *kr, const char *a, const char *b, const char *c, char out[33])
{
	const void *parts[3] = { a, b, c };
	size_t lens[3] = { strlen(a), strlen(b), strlen(c) };
	unsigned char mac[32];
	static const char hex[] = "0123456789abcdef";

	if (keyring_request_mac(kr, parts, lens, 3, mac) != 0)
		return FGW_ERR_CRYPTO;
	for (size_t i = 0; i < 16; i++) {
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	out[32] = '\0';
	return FGW_OK;
}

/* The chain ends with an error answer (if the client is still there). */
static void
chain_fail(struct method_op *op, int status, const char *code, const char *msg)
{
	gw_req_error(&op->g, status, code, msg);
}

static void
chain_lost(struct method_op *op)
{
	/* Whatever was made is behind its key: the same request replays it. */
	chain_fail(op, 503, "PROCESSOR_UNAVAILABLE",
	           "The payment processor did not answer; send the same request again");
}

static int
chain_call(struct method_op *op, enum proc_call_op what, const char *key,
           proc_call_done_fn done)
{
	int r;

	op->call = (struct proc_call){ .op = what,
		                           .inst = op->inst,
		                           .key = key,
		                           .customer_ref = op->ref,
		                           .method = op->m.processor_method,
		                           .customer = op->m.processor_customer,
		                           .res = &op->res,
		                           .card = &op->card,
		                           .done = done,
		                           .arg = op };
	r = proc_call_start(&op->g.rx->env, &op->call);
	op->call.key = NULL; /* built: the caller's stack */
	return r;
}

static void
attach_replied(void *arg, const struct proc_reply *reply)
{
	struct method_op *op = arg;
	struct reactor *rx = op->g.rx;
	struct proc_saved_card card = op->card;
	struct proc_result res = op->res; /* ours now; UNKNOWN when not parsed */
	struct store_audit audit;
	int r;

	(void)reply;
	memset(&op->res, 0, sizeof(op->res));
	if (res.outcome == PROC_FAILED) {
		log_warn("processor %s refused to attach a card (%s)", op->inst->cfg.name,
		         res.code);
		chain_fail(op,
		           res.code[0] && strcmp(res.code, "PAYMENT_METHOD_NOT_FOUND") == 0 ? 404
		                                                                            : 400,
		           res.code[0] ? res.code : "PAYMENT_METHOD_REFUSED", res.message);
		goto out;
	}
	if (res.outcome != PROC_SUCCEEDED) {
		chain_lost(op);
		goto out;
	}
	fgw_strlcpy(op->m.processor_method, card.id, sizeof(op->m.processor_method));
	fgw_strlcpy(op->m.brand, card.brand, sizeof(op->m.brand));
	fgw_strlcpy(op->m.last4, card.last4, sizeof(op->m.last4));
	op->m.exp_month = card.exp_month;
	op->m.exp_year = card.exp_year;
	audit = (struct store_audit){
		op->m.customer_id, op->source, "method.saved",
		op->m.id,          "success",  "{\"from\":\"stripePaymentMethod\"}"
	};
	if ((r = store_method_save(rx->gw->store, rx->waker, &op->m, NULL, &audit, saved_done,
	                           op)) != 0)
		chain_fail(op, r == FGW_ERR_SHUTDOWN ? 503 : 500,
		           r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		           "The payment method could not be saved");
out:
	proc_result_clear(&res);
}

static void
chain_attach(struct method_op *op)
{
	char ref[33], key[40];

	if (keyed_ref(op->g.rx->gw->kr, "attach", op->m.processor_method,
	              op->m.processor_customer, ref) != 0 ||
	    snprintf(key, sizeof(key), "att-%s", ref) >= (int)sizeof(key) ||
	    chain_call(op, PROC_CALL_ATTACH, key, attach_replied) != 0)
		chain_fail(op, 500, "INTERNAL_ERROR", "An unexpected error occurred");
}

static void
customer_stored(void *arg, int rc)
{
	struct method_op *op = arg;

	if (rc != 0) {
		chain_fail(op, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	fgw_strlcpy(op->m.processor_customer, op->cus_have, sizeof(op->m.processor_customer));
	chain_attach(op);
}

static void
customer_replied(void *arg, const struct proc_reply *reply)
{
	struct method_op *op = arg;
	struct proc_result res = op->res; /* ours now; UNKNOWN when not parsed */
	int r;

	(void)reply;
	memset(&op->res, 0, sizeof(op->res));
	if (res.outcome == PROC_FAILED) {
		log_warn("processor %s refused to create a customer (%s)", op->inst->cfg.name,
		         res.code);
		chain_fail(op, 502, "PROCESSOR_ERROR",
		           "The payment processor refused the request; nothing was saved");
	} else if (res.outcome != PROC_SUCCEEDED) {
		chain_lost(op);
	} else if ((r = store_proc_customer_put(op->g.rx->gw->store, op->g.rx->waker,
	                                        op->inst->cfg.name, op->m.customer_id,
	                                        res.reference, op->cus_have,
	                                        sizeof(op->cus_have), customer_stored, op)) !=
	           0) {
		chain_fail(op, 500, "INTERNAL_ERROR", "An unexpected error occurred");
	}
	proc_result_clear(&res);
}

/* The customer's Customer at the processor, if one is recorded: on a read
 * thread (PostgreSQL) or in place (SQLite), only op's fields. */
static int
customer_read(struct store_reader *rd, void *arg)
{
	struct method_op *op = arg;

	return store_proc_customer_get(rd, op->m.processor, op->m.customer_id,
	                               op->m.processor_customer,
	                               sizeof(op->m.processor_customer));
}

/* The chain goes on with the recorded Customer, or makes one. */
static void
customer_read_done(void *arg, int r)
{
	struct method_op *op = arg;
	char key[40];

	if (r == FGW_OK) {
		chain_attach(op);
		return;
	}
	if (r != FGW_ERR_NOT_FOUND ||
	    keyed_ref(op->g.rx->gw->kr, "customer", op->m.processor, op->m.customer_id,
	              op->ref) != 0 ||
	    snprintf(key, sizeof(key), "cus-%s", op->ref) >= (int)sizeof(key) ||
	    chain_call(op, PROC_CALL_CUSTOMER, key, customer_replied) != 0)
		chain_fail(op, 500, "INTERNAL_ERROR", "An unexpected error occurred");
}

/* POST /v1/payments/methods with stripePaymentMethod. */
static void
save_processor_method(struct reactor *rx, struct evhttp_request *req,
                      const struct auth_ctx *who, const char *pm, const char *nickname)
{
	struct method_op *op = NULL;
	struct proc_instance *pi = NULL;

	/* Saved at the first processor (in the configured order) that can
	 * hold a customer's cards. */
	for (int i = 0; i < rx->env.n_procs && pi == NULL; i++) {
		const struct proc_type *pt = rx->env.procs[i].type;
		if (pt->takes_processor_method && pt->build_customer != NULL &&
		    pt->build_attach != NULL)
			pi = &rx->env.procs[i];
	}
	if (pi == NULL) {
		http_send_error(
		    rx, req, 400, "PROCESSOR_NOT_SUPPORTED",
		    "stripePaymentMethod needs a processor whose type keeps customers' "
		    "cards; none is configured");
		return;
	}
	if ((op = op_new(rx, req)) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	op->inst = pi;
	fgw_strlcpy(op->source, who->source, sizeof(op->source));
	fgw_random_id("pm_", op->m.id, sizeof(op->m.id));
	fgw_strlcpy(op->m.customer_id, who->subject, sizeof(op->m.customer_id));
	fgw_strlcpy(op->m.nickname, nickname, sizeof(op->m.nickname));
	fgw_strlcpy(op->m.processor, op->inst->cfg.name, sizeof(op->m.processor));
	fgw_strlcpy(op->m.processor_method, pm, sizeof(op->m.processor_method));
	if (store_read(rx->gw->store, rx->waker, rx->reader, customer_read, op,
	               customer_read_done) != 0)
		chain_fail(op, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

static void
h_methods_add(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct txn_request *rq = NULL;
	struct fgw_why perr;
	struct store_vault_entry ve;
	struct method_op *op = NULL;
	struct store_audit audit;
	struct auth_ctx who;
	char nickname[128], msg[sizeof(perr.where) + sizeof(perr.msg) + 2], details[128],
	    *blob = NULL;
	const char *body;
	size_t len;
	int r;

	if (customer_of(rx, req, path, &who) != 0 ||
	    http_json_body(rx, req, &body, &len) != 0 ||
	    http_refuse_card_text(rx, req, &who, body, len) != 0)
		return;
	r = txn_method_body_parse(body, len, &rq, nickname, sizeof(nickname), &perr);
	if (r == 0 && rq->processor_method[0] != '\0') {
		save_processor_method(rx, req, &who, rq->processor_method, nickname);
		goto out;
	}
	if (r == 0 && rq->payment_method_id[0] == '\0')
		r = txn_card_to_vault(rx->gw->kr, &rx->env.limits.sealed, rq, &ve, &blob, &perr);
	if (r != 0) {
		snprintf(msg, sizeof(msg), "%s %s", perr.where, perr.msg);
		if (r == FGW_ERR_INVALID)
			http_send_error(rx, req, 400, "VALIDATION_ERROR", msg);
		else if (r == FGW_ERR_TIMEOUT)
			http_send_error(rx, req, 400, "ENCRYPTED_CARD_EXPIRED", msg);
		else
			http_send_error(rx, req, 500, "INTERNAL_ERROR",
			                "An unexpected error occurred");
		goto out;
	}
	if ((op = op_new(rx, req)) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	fgw_random_id("pm_", op->m.id, sizeof(op->m.id));
	fgw_strlcpy(op->m.customer_id, who.subject, sizeof(op->m.customer_id));
	fgw_strlcpy(op->m.nickname, nickname, sizeof(op->m.nickname));
	if (rq->payment_method_id[0])
		fgw_strlcpy(op->m.token, rq->payment_method_id, sizeof(op->m.token));
	else
		fgw_strlcpy(ve.customer_id, who.subject, sizeof(ve.customer_id));
	snprintf(details, sizeof(details), "{\"from\":\"%s\"}",
	         rq->payment_method_id[0] ? "token"
	         : rq->has_encrypted      ? "encryptedCard"
	                                  : "card");
	audit = (struct store_audit){ who.subject, who.source, "method.saved",
		                          op->m.id,    "success",  details };
	r = store_method_save(rx->gw->store, rx->waker, &op->m,
	                      rq->payment_method_id[0] ? NULL : &ve, &audit, saved_done, op);
	if (r != 0) {
		gw_req_error(&op->g, r == FGW_ERR_SHUTDOWN ? 503 : 500,
		             r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		             "The payment method could not be saved");
	}
out:
	free(blob);
	txn_request_free(rq);
}

/* ---- deleting a card the processor holds ------------------------------ */

static void
delete_row(struct method_op *op)
{
	struct store_audit audit = { op->m.customer_id, op->source, "method.deleted",
		                         op->m.id,          "success",  NULL };
	int r = store_method_delete(op->g.rx->gw->store, op->g.rx->waker, op->m.customer_id,
	                            op->m.id, &audit, changed_done, op);
	if (r != 0)
		chain_fail(op, r == FGW_ERR_SHUTDOWN ? 503 : 500,
		           r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		           "The payment method could not be changed");
}

static void
detach_replied(void *arg, const struct proc_reply *reply)
{
	struct method_op *op = arg;
	struct proc_result res = op->res; /* ours now; UNKNOWN when not parsed */

	(void)reply;
	memset(&op->res, 0, sizeof(op->res));
	if (res.outcome == PROC_SUCCEEDED ||
	    (res.outcome == PROC_FAILED &&
	     strcmp(res.code, "PAYMENT_METHOD_NOT_FOUND") == 0)) {
		/* Detached now, or attached to no one already. */
		delete_row(op);
	} else if (res.outcome == PROC_FAILED) {
		log_warn("processor %s refused to detach a card (%s)", op->inst->cfg.name,
		         res.code);
		chain_fail(op, 502, "PROCESSOR_ERROR",
		           "The payment processor refused to detach the card; it is still saved");
	} else {
		/* The same key again replays the detach: delete again. */
		chain_fail(op, 503, "PROCESSOR_UNAVAILABLE",
		           "The payment processor did not answer; the card is still saved, "
		           "send the same request again");
	}
	proc_result_clear(&res);
}

/* DELETE of a saved method a processor holds: detached there first, so
 * the card is no longer chargeable for the customer at the processor,
 * then the row goes. A processor no longer configured cannot be asked:
 * the row goes, and the log says so. */
static void
delete_processor_method(struct reactor *rx, struct method_op *op)
{
	char ref[33], key[40];

	if ((op->inst = pipeline_proc_find(&rx->env, op->m.processor)) == NULL ||
	    op->inst->type->build_detach == NULL || op->inst->type->parse_detach == NULL) {
		log_warn(
		    "saved method %s: processor %s is not configured; its card is not detached",
		    op->m.id, op->m.processor);
		delete_row(op);
		return;
	}
	if (keyed_ref(rx->gw->kr, "detach", op->m.processor_method, op->m.processor_customer,
	              ref) != 0 ||
	    snprintf(key, sizeof(key), "det-%s", ref) >= (int)sizeof(key) ||
	    chain_call(op, PROC_CALL_DETACH, key, detach_replied) != 0)
		chain_fail(op, 500, "INTERNAL_ERROR", "An unexpected error occurred");
}

/* The change as a store job: the delete or default of the method, and
 * its audit event. */
static void
submit_job(struct method_op *op, int is_delete)
{
	struct store_audit audit = { op->m.customer_id,
		                         op->source,
		                         is_delete ? "method.deleted" : "method.default",
		                         op->id,
		                         "success",
		                         NULL };
	struct reactor *rx = op->g.rx;
	int r;

	r = is_delete ? store_method_delete(rx->gw->store, rx->waker, op->m.customer_id,
	                                    op->id, &audit, changed_done, op)
	              : store_method_set_default(rx->gw->store, rx->waker, op->m.customer_id,
	                                         op->id, &audit, changed_done, op);
	if (r != 0) {
		gw_req_error(&op->g, r == FGW_ERR_SHUTDOWN ? 503 : 500,
		             r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		             "The payment method could not be changed");
	}
}

/* DELETE: the method's row, to know whether a processor holds its card.
 * On a read thread (PostgreSQL) or in place (SQLite): only op's fields;
 * op->m keeps the customer whatever the read found. */
static int
delete_read(struct store_reader *rd, void *arg)
{
	struct method_op *op = arg;
	struct store_method m;

	memset(&m, 0, sizeof(m));
	if ((op->read_rc = store_method_get(rd, op->m.customer_id, op->id, &m)) == 0) {
		fgw_strlcpy(m.customer_id, op->m.customer_id, sizeof(m.customer_id));
		op->m = m;
	}
	return op->read_rc;
}

static void
delete_read_done(void *arg, int r)
{
	struct method_op *op = arg;

	/* A method not found (or not read) goes to the delete job, which
	 * answers for it as before. */
	if (r == 0 && op->read_rc == 0 && op->m.processor_method[0] != '\0')
		delete_processor_method(op->g.rx, op);
	else
		submit_job(op, 1);
}

static void
submit_change(struct reactor *rx, struct evhttp_request *req, const char *path,
              const char *pattern, int is_delete)
{
	struct method_op *op = NULL;
	struct auth_ctx who;
	char id[48];

	if (customer_of(rx, req, path, &who) != 0)
		return;
	if (method_id_of(pattern, path, id, sizeof(id)) != 0) {
		send_not_found(rx, req);
		return;
	}
	if ((op = op_new(rx, req)) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	op->ok_message = is_delete ? "Payment method removed successfully"
	                           : "Default payment method updated successfully";
	fgw_strlcpy(op->source, who.source, sizeof(op->source));
	fgw_strlcpy(op->m.customer_id, who.subject, sizeof(op->m.customer_id));
	fgw_strlcpy(op->id, id, sizeof(op->id));
	if (!is_delete) {
		submit_job(op, 0);
		return;
	}
	op->read_rc = FGW_ERR_NOT_FOUND;
	if (store_read(rx->gw->store, rx->waker, rx->reader, delete_read, op,
	               delete_read_done) != 0)
		gw_req_error(&op->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

static void
h_methods_delete(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	submit_change(rx, req, path, "/v1/payments/methods/*", 1);
}

static void
h_methods_default(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	submit_change(rx, req, path, "/v1/payments/methods/*/default", 0);
}

const struct route methods_routes[] = {
	{ "/v1/payments/methods", EVHTTP_REQ_GET, h_methods_list },
	{ "/v1/payments/methods", EVHTTP_REQ_POST, h_methods_add },
	{ "/v1/payments/methods/*", EVHTTP_REQ_DELETE, h_methods_delete },
	{ "/v1/payments/methods/*/default", EVHTTP_REQ_PUT, h_methods_default },
	{ NULL, 0, NULL },
};
