/*
 * gateway/routes_methods.c — saved payment methods of the authenticated
 * customer: GET/POST /v1/payments/methods, DELETE /v1/payments/methods/{id},
 * PUT /v1/payments/methods/{id}/default.
 *
 * The customer is who.subject (JWT sub, or X-Customer-Id from a website
 * back end with an API key); every query is scoped to it, so another
 * customer's id reads as 404 PAYMENT_METHOD_NOT_FOUND. Answers have the
 * shape {"success": true, "data": ...}. Writes are store jobs: the answer
 * goes out from their completion on this reactor; a client that has gone
 * by then gets nothing, the change stands.
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
#include "gateway/http.h"
#include "store/methods.h"

/* One write waiting for its commit. */
struct method_op {
	struct reactor *rx;
	struct evhttp_request *req;   /* NULL once the client has gone */
	struct evhttp_connection *evcon;
	struct store_method m;        /* filled by a save job */
	const char *ok_message;       /* delete / default answers */
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
		http_send_error_param(rx, req, 400, "CUSTOMER_REQUIRED",
		                      "Saved payment methods belong to a customer: send a customer JWT, "
		                      "or X-Customer-Id with an API key", "X-Customer-Id");
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

static int
method_id_of(const char *pattern, const char *path, char *id, size_t cap)
{
	if (http_path_segment(pattern, path, 0, id, cap) != 0 || strncmp(id, "pm_", 3) != 0 ||
	    strspn(id + 3, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") !=
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
	if (m->nickname[0])
		cJSON_AddStringToObject(o, "nickname", m->nickname);
	else
		cJSON_AddNullToObject(o, "nickname");
	if (fgw_iso8601(m->created_at, buf, sizeof(buf)) == 0)
		cJSON_AddStringToObject(o, "createdAt", buf);
	return o;
}

/* {"success": true, "data": data} or {"success": true, "message": msg}. */
static void
send_success(struct reactor *rx, struct evhttp_request *req, cJSON *data, const char *msg)
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
	if (text != NULL)
		http_send_json(rx, req, 200, text);
	else
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
	free(text);
	cJSON_Delete(o);
	cJSON_Delete(data);
}

static void
h_methods_list(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct store_method *ms = NULL;
	struct auth_ctx who;
	cJSON *arr = NULL;
	size_t n = 0;

	if (customer_of(rx, req, path, &who) != 0)
		return;
	if ((ms = calloc(STORE_METHODS_MAX, sizeof(*ms))) == NULL ||
	    store_methods_list(rx->reader, who.subject, ms, STORE_METHODS_MAX, &n) != 0 ||
	    (arr = cJSON_CreateArray()) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		cJSON *m = method_json(&ms[i]);
		if (m != NULL)
			cJSON_AddItemToArray(arr, m);
	}
	send_success(rx, req, arr, NULL);
	arr = NULL;
out:
	cJSON_Delete(arr);
	free(ms);
}

static void
op_closed(struct evhttp_connection *evcon, void *arg)
{
	struct method_op *op = arg;
	(void)evcon;
	op->req = NULL;
}

static struct method_op *
op_new(struct reactor *rx, struct evhttp_request *req)
{
	struct method_op *op = calloc(1, sizeof(*op));
	if (op == NULL)
		return NULL;
	op->rx = rx;
	op->req = req;
	op->evcon = evhttp_request_get_connection(req);
	if (op->evcon != NULL)
		evhttp_connection_set_closecb(op->evcon, op_closed, op);
	/* Counted like a transaction so shutdown drains the commit. */
	rx->inflight++;
	return op;
}

static void
op_end(struct method_op *op)
{
	if (op->req != NULL && op->evcon != NULL)
		evhttp_connection_set_closecb(op->evcon, NULL, NULL);
	op->rx->inflight--;
	free(op);
}

static void
op_answer_error(struct method_op *op, int rc)
{
	struct reactor *rx = op->rx;
	if (rc == FGW_ERR_NOT_FOUND)
		send_not_found(rx, op->req);
	else if (rc == FGW_ERR_EXISTS)
		http_send_error(rx, op->req, 409, "PAYMENT_METHOD_EXISTS",
		                "That card is already a saved payment method");
	else if (rc == FGW_ERR_TOO_LARGE)
		http_send_error(rx, op->req, 409, "PAYMENT_METHOD_LIMIT",
		                "The customer has the maximum number of saved payment methods");
	else
		http_send_error(rx, op->req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
}

static void
saved_done(void *arg, int rc)
{
	struct method_op *op = arg;
	if (op->req != NULL) {
		if (rc != 0)
			op_answer_error(op, rc);
		else
			send_success(op->rx, op->req, method_json(&op->m), NULL);
	}
	op_end(op);
}

static void
changed_done(void *arg, int rc)
{
	struct method_op *op = arg;
	if (op->req != NULL) {
		if (rc != 0)
			op_answer_error(op, rc);
		else
			send_success(op->rx, op->req, NULL, op->ok_message);
	}
	op_end(op);
}

static void
h_methods_add(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct txn_request *rq = NULL;
	struct txn_parse_error perr;
	struct store_vault_entry ve;
	struct method_op *op = NULL;
	struct store_audit audit;
	struct auth_ctx who;
	char nickname[128], msg[240], details[128], *blob = NULL;
	const char *body;
	size_t len;
	int r;

	if (customer_of(rx, req, path, &who) != 0 || http_json_body(rx, req, &body, &len) != 0 ||
	    http_refuse_card_text(rx, req, &who, body, len) != 0)
		return;
	r = txn_method_body_parse(body, len, &rq, nickname, sizeof(nickname), &perr);
	if (r == 0 && rq->payment_method_id[0] == '\0')
		r = txn_card_to_vault(rx->gw->kr, &rx->env.limits.sealed, rq, &ve, &blob, &perr);
	if (r != 0) {
		snprintf(msg, sizeof(msg), "%s %s", perr.field, perr.message);
		if (r == FGW_ERR_INVALID)
			http_send_error(rx, req, 400, "VALIDATION_ERROR", msg);
		else if (r == FGW_ERR_TIMEOUT)
			http_send_error(rx, req, 400, "ENCRYPTED_CARD_EXPIRED", msg);
		else
			http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
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
	         rq->payment_method_id[0] ? "token" : rq->has_encrypted ? "encryptedCard" : "card");
	audit = (struct store_audit){ who.subject, who.source, "method.saved", op->m.id,
		                          "success", details };
	r = store_method_save(rx->gw->store, rx->waker, &op->m,
	                      rq->payment_method_id[0] ? NULL : &ve, &audit, saved_done, op);
	if (r != 0) {
		http_send_error(rx, req, r == FGW_ERR_SHUTDOWN ? 503 : 500,
		                r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		                "The payment method could not be saved");
		op_end(op);
	}
out:
	free(blob);
	txn_request_free(rq);
}

static void
submit_change(struct reactor *rx, struct evhttp_request *req, const char *path,
              const char *pattern, int is_delete)
{
	struct method_op *op = NULL;
	struct store_audit audit;
	struct auth_ctx who;
	char id[48];
	int r;

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
	audit = (struct store_audit){ who.subject, who.source,
		                          is_delete ? "method.deleted" : "method.default",
		                          id, "success", NULL };
	r = is_delete ? store_method_delete(rx->gw->store, rx->waker, who.subject, id, &audit,
	                                    changed_done, op)
	              : store_method_set_default(rx->gw->store, rx->waker, who.subject, id,
	                                         &audit, changed_done, op);
	if (r != 0) {
		http_send_error(rx, req, r == FGW_ERR_SHUTDOWN ? 503 : 500,
		                r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		                "The payment method could not be changed");
		op_end(op);
	}
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
