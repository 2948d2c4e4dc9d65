/*
 * gateway/routes_txn.c — POST /v1/transactions and GET
 * /v1/transactions/{id}: the website's payment API.
 *
 * A POST is authenticated, passed through the idempotency front door,
 * parsed (card fields into guarded memory), and handed to the pipeline;
 * the answer goes out from the relay stage once the outcome is committed.
 */
#define LOG_MODULE "http"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/http.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "gateway/admit.h"
#include "gateway/http.h"
#include "gateway/idem.h"
#include "gateway/reqctx.h"
#include "store/store.h"

/* One website request waiting for its transaction. */
struct req_ctx {
	struct gw_req g; /* first: the request, its key, the reactor */
	struct txn *t;
};

static void
req_free(struct gw_req *g, int abandoned)
{
	struct req_ctx *ctx = (struct req_ctx *)g;
	/* Abandoned (a forced stop): the row stays posting/processing for
	 * the reconciler; the memory goes. Otherwise the runner owns t. */
	if (abandoned) {
		log_txn_warn(ctx->t->id, "abandoned at shutdown; left for reconciliation");
		txn_free(ctx->t);
	}
	admit_release(g->rx);
	free(ctx);
}

static void
on_txn_done(struct txn *t, void *arg)
{
	struct req_ctx *ctx = arg;
	struct reactor *rx = ctx->g.rx;

	metrics_txn_done(&rx->gw->metrics, t->out.state, t->out.rejected,
	                 fgw_mono_ms() - t->started_mono);
	if (ctx->g.req == NULL)
		log_txn_info(t->id, "client went away before the answer");
	if (t->idem_lost) {
		gw_req_repeat(&ctx->g, t->request_hash);
		return;
	}
	gw_req_finish(
	    &ctx->g, t->out.http_status,
	    t->answer
	        ? t->answer
	        : "{\"error\":\"INTERNAL_ERROR\",\"message\":\"An unexpected error occurred\"}");
}

static void
h_txn_create(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct auth_ctx who;
	struct txn_request *rq = NULL;
	struct fgw_why perr;
	struct req_ctx *ctx = NULL;
	struct txn *t = NULL;
	cJSON *root = NULL;
	const char *body, *key;
	char hash[65], msg[sizeof(perr.where) + sizeof(perr.msg) + 2];
	size_t len;
	int r;

	if (http_authenticate(rx, req, path, AUTH_API_KEY, &who) != 0 ||
	    http_json_body(rx, req, &body, &len) != 0 ||
	    http_idempotency_key(rx, req, &key) != 0)
		return;
	/* Over the limit, wait here: a request these refuse is answered at
	 * once, never queued behind payments (they run again when it is
	 * admitted, and have no effect but their answer). */
	if (admit_wait(rx, req, path, h_txn_create))
		return;
	/* One parse serves the card-text check and the request's fields. */
	root = fgw_json_parse_strict(body, len);
	if (http_refuse_card_text_tree(rx, req, &who, root) != 0)
		goto out;
	/* The customer is part of "the same request": a saved method id
	 * replayed for another customer must not return the first's answer. */
	if (who.subject[0] != '\0') {
		char scoped[200];
		int n = snprintf(scoped, sizeof(scoped), "%s\ncustomer=%s", path, who.subject);
		if (n < 0 || (size_t)n >= sizeof(scoped)) {
			http_send_error(rx, req, 400, "VALIDATION_ERROR",
			                "X-Customer-Id is too long");
			goto out;
		}
		r = http_request_hash(rx, "POST", scoped, body, len, hash);
	} else {
		r = http_request_hash(rx, "POST", path, body, len, hash);
	}
	if (r != 0) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	if (key != NULL && http_idempotency_front(rx, req, who.client_id, key, hash) != 0)
		goto out;

	/* Not JSON: the body's own parse says where and why. */
	r = root != NULL ? txn_request_parse_tree(root, &rq, &perr)
	                 : txn_request_parse(body, len, &rq, &perr);
	http_json_wipe_delete(root);
	root = NULL;
	if (r != 0) {
		if (r == FGW_ERR_INVALID) {
			snprintf(msg, sizeof(msg), "%s %s", perr.where, perr.msg);
			http_send_error_param(rx, req, 400, "VALIDATION_ERROR", msg, perr.where);
		} else {
			http_send_error(rx, req, 500, "INTERNAL_ERROR",
			                "An unexpected error occurred");
		}
		goto fail;
	}
	if (!txn_return_url_allowed(rq, rx->gw->cfg.return_url_origins)) {
		http_send_error_param(
		    rx, req, 400, "VALIDATION_ERROR",
		    "returnUrl must point to an origin listed in return_url_origins",
		    "returnUrl");
		goto fail;
	}
	fgw_strlcpy(rq->customer_id, who.subject, sizeof(rq->customer_id));
	if ((rq->payment_method_id[0] || rq->save_method) && rq->customer_id[0] == '\0') {
		http_send_error_param(
		    rx, req, 400, "CUSTOMER_REQUIRED",
		    "X-Customer-Id is required with paymentMethodId or savePaymentMethod",
		    "X-Customer-Id");
		goto fail;
	}
	if ((ctx = calloc(1, sizeof(*ctx))) == NULL ||
	    (r = txn_new(&rx->env, rq, who.client_id, who.source, key, hash, &t)) != 0) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto fail;
	}
	rq = NULL; /* owned by t now */
	fgw_strlcpy(t->request_id, log_request_get(), sizeof(t->request_id));
	ctx->t = t;
	gw_req_start(&ctx->g, rx, req, "transaction", req_free);
	admit_take(rx);
	if (key != NULL)
		gw_req_claim(&ctx->g, who.client_id, key);
	atomic_fetch_add(&rx->gw->metrics.txn_started, 1);
	pipeline_start(t, on_txn_done, ctx); /* t owned by the runner now */
	return;
fail:
	txn_request_free(rq);
	free(ctx);
	if (key != NULL)
		idem_end(rx->gw->idem, who.client_id, key);
	return;
out:
	http_json_wipe_delete(root);
}

/* GET /v1/transactions/{id}: the row is read through store_read (off the
 * reactor on PostgreSQL) and answered when it arrives. */
struct txn_get {
	struct gw_req g; /* first: gw_req_finish frees the whole */
	char client_id[64];
	char id[40];
	struct store_txn_row row;
};

static void
txn_get_free(struct gw_req *g, int abandoned)
{
	struct txn_get *c = (struct txn_get *)g;

	(void)abandoned;
	store_txn_row_clear(&c->row);
	free(c);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields. */
static int
txn_get_read(struct store_reader *rd, void *arg)
{
	struct txn_get *c = arg;

	return store_txn_get(rd, c->client_id, c->id, &c->row);
}

static void
txn_get_done(void *arg, int r)
{
	struct txn_get *c = arg;
	char *json = NULL;

	if (r == FGW_ERR_NOT_FOUND)
		gw_req_error(&c->g, 404, "NOT_FOUND", "Transaction not found");
	else if (r != 0 || txn_row_to_json(&c->row, NULL, &json) != 0)
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
	else
		gw_req_finish(&c->g, 200, json);
	free(json);
}

static void
h_txn_get(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct auth_ctx who;
	struct txn_get *c = NULL;
	char id[40];

	if (http_authenticate(rx, req, path, AUTH_API_KEY, &who) != 0)
		return;
	if (http_path_segment("/v1/transactions/*", path, 0, id, sizeof(id)) != 0 ||
	    strncmp(id, "txn_", 4) != 0 ||
	    strspn(id + 4,
	           "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") !=
	        strlen(id) - 4) {
		http_send_error(rx, req, 404, "NOT_FOUND", "Transaction not found");
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	fgw_strlcpy(c->client_id, who.client_id, sizeof(c->client_id));
	fgw_strlcpy(c->id, id, sizeof(c->id));
	gw_req_start(&c->g, rx, req, "transaction read", txn_get_free);
	if (store_read(rx->gw->store, rx->waker, rx->reader, txn_get_read, c, txn_get_done) != 0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

const struct route txn_routes[] = {
	{ "/v1/transactions", EVHTTP_REQ_POST, h_txn_create },
	{ "/v1/transactions/*", EVHTTP_REQ_GET, h_txn_get },
	{ NULL, 0, NULL },
};
