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

/* One website request: parsed, through the idempotency front (a read off
 * the reactor when it has a key), then waiting for its transaction. */
struct req_ctx {
	struct gw_req g; /* first: the request, its key, the reactor */
	struct txn *t;   /* in the pipeline (the runner's) */
	/* Until the pipeline starts: the body's tree while a keyed request
	 * reads its key (a repeat answers without parsing it), then the
	 * parsed request (card fields in guarded memory, the tree wiped) or
	 * why it was not. */
	struct cJSON *root;
	char subject[192];
	struct txn_request *rq;
	int perr;                            /* txn_request_parse's result */
	struct fgw_why why;                  /* its reason when FGW_ERR_INVALID */
	char request_id[LOG_REQUEST_ID_MAX]; /* the client may be gone by then */
	char client_id[64];                  /* who (struct auth_ctx) */
	char source[64];
	char hash[65];
};

static void
req_free(struct gw_req *g, int abandoned)
{
	struct req_ctx *ctx = (struct req_ctx *)g;
	/* Abandoned (a forced stop): the row stays posting/processing for
	 * the reconciler; the memory goes. Otherwise the runner owns t. */
	if (abandoned && ctx->t != NULL) {
		log_txn_warn(ctx->t->id, "abandoned at shutdown; left for reconciliation");
		txn_free(ctx->t);
	}
	http_json_wipe_delete(ctx->root);
	txn_request_free(ctx->rq);
	admit_release(g->rx);
	free(ctx);
}

static void
on_txn_done(struct txn *t, void *arg)
{
	struct req_ctx *ctx = arg;
	struct reactor *rx = ctx->g.rx;

	ctx->t = NULL; /* the runner frees it after this returns */
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

/* Parses the body's tree into guarded memory and wipes it. */
static void
txn_parse(struct req_ctx *ctx)
{
	ctx->perr = txn_request_parse_tree(ctx->root, &ctx->rq, &ctx->why);
	http_json_wipe_delete(ctx->root);
	ctx->root = NULL;
	if (ctx->perr == 0)
		fgw_strlcpy(ctx->rq->customer_id, ctx->subject, sizeof(ctx->rq->customer_id));
}

/* The request is the key's to run (or has none): the checks after the
 * front door, in their order, then the pipeline. */
static void
txn_start(struct gw_req *g)
{
	struct req_ctx *ctx = (struct req_ctx *)g;
	struct reactor *rx = g->rx;
	struct txn_request *rq;
	char msg[sizeof(ctx->why.where) + sizeof(ctx->why.msg) + 2];
	struct txn *t = NULL;
	char prev[LOG_REQUEST_ID_MAX];
	int r;

	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(ctx->request_id);
	if (ctx->root != NULL)
		txn_parse(ctx);
	rq = ctx->rq;
	if (ctx->perr == FGW_ERR_INVALID) {
		snprintf(msg, sizeof(msg), "%s %s", ctx->why.where, ctx->why.msg);
		gw_req_error_param(g, 400, "VALIDATION_ERROR", msg, ctx->why.where);
		goto out;
	}
	if (ctx->perr != 0) {
		gw_req_error(g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	if (!txn_return_url_allowed(rq, rx->gw->cfg.return_url_origins)) {
		gw_req_error_param(
		    g, 400, "VALIDATION_ERROR",
		    "returnUrl must point to an origin listed in return_url_origins",
		    "returnUrl");
		goto out;
	}
	if ((rq->payment_method_id[0] || rq->save_method) && rq->customer_id[0] == '\0') {
		gw_req_error_param(
		    g, 400, "CUSTOMER_REQUIRED",
		    "X-Customer-Id is required with paymentMethodId or savePaymentMethod",
		    "X-Customer-Id");
		goto out;
	}
	if ((r = txn_new(&rx->env, rq, ctx->client_id, ctx->source, g->key[0] ? g->key : NULL,
	                 ctx->hash, &t)) != 0) {
		gw_req_error(g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	ctx->rq = NULL; /* owned by t now */
	fgw_strlcpy(t->request_id, ctx->request_id, sizeof(t->request_id));
	ctx->t = t;
	atomic_fetch_add(&rx->gw->metrics.txn_started, 1);
	pipeline_start(t, on_txn_done, ctx); /* t owned by the runner now */
out:
	log_request_set(prev);
}

static void
h_txn_create(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	struct auth_ctx who;
	struct req_ctx *ctx = NULL;
	cJSON *root = NULL;
	const char *body, *key;
	char hash[65];
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
	if (r != 0 || (ctx = calloc(1, sizeof(*ctx))) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	/* Counted as running from here: a keyed request reading its key
	 * holds its place, so reads in flight cannot start more payments
	 * than the limit. Every end of ctx releases it (req_free). */
	gw_req_start(&ctx->g, rx, req, "transaction", req_free);
	admit_take(rx);
	fgw_strlcpy(ctx->request_id, log_request_get(), sizeof(ctx->request_id));
	fgw_strlcpy(ctx->client_id, who.client_id, sizeof(ctx->client_id));
	fgw_strlcpy(ctx->source, who.source, sizeof(ctx->source));
	memcpy(ctx->hash, hash, sizeof(ctx->hash));
	fgw_strlcpy(ctx->subject, who.subject, sizeof(ctx->subject));
	/* A keyed request parses once the key is its own: a repeat answers
	 * from the stored row without it, and the key's answer goes before
	 * any refusal of the body, as it always did. The tree (the body is
	 * in evhttp's buffer as long anyway) is wiped when parsed or freed.
	 * Not JSON: the body's own parse says where and why, now, while the
	 * body is sure to be there. */
	ctx->root = root;
	root = NULL;
	if (ctx->root == NULL &&
	    (ctx->perr = txn_request_parse(body, len, &ctx->rq, &ctx->why)) == 0)
		fgw_strlcpy(ctx->rq->customer_id, who.subject, sizeof(ctx->rq->customer_id));
	else if (ctx->root != NULL && key == NULL)
		txn_parse(ctx);
	if (key != NULL)
		http_idem_front(&ctx->g, who.client_id, key, hash, txn_start);
	else
		txn_start(&ctx->g);
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
	if (store_read(rx->gw->store, rx->waker, rx->reader, txn_get_read, c, txn_get_done) !=
	    0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

const struct route txn_routes[] = {
	{ "/v1/transactions", EVHTTP_REQ_POST, h_txn_create },
	{ "/v1/transactions/*", EVHTTP_REQ_GET, h_txn_get },
	{ NULL, 0, NULL },
};
