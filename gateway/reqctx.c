/*
 * gateway/reqctx.c — the one request context (gateway/reqctx.h).
 */
#define LOG_MODULE "http"

#include <stddef.h>

#include <event2/http.h>

#include "core/log.h"
#include "core/util.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/idem.h"
#include "gateway/reqctx.h"

static void
on_close(struct evhttp_connection *evcon, void *arg)
{
	struct gw_req *r = arg;
	(void)evcon;
	/* The work goes on (it may already be at the processor); only the
	 * answer has nobody to go to. */
	r->req = NULL;
}

void
gw_req_start(struct gw_req *r, struct reactor *rx, struct evhttp_request *req,
             const char *kind, gw_req_free_fn free_fn)
{
	r->rx = rx;
	r->req = req;
	r->kind = kind;
	r->free_fn = free_fn;
	r->evcon = req != NULL ? evhttp_request_get_connection(req) : NULL;
	if (r->evcon != NULL)
		evhttp_connection_set_closecb(r->evcon, on_close, r);
	r->prev = NULL;
	r->next = rx->reqs_inflight;
	if (r->next != NULL)
		r->next->prev = r;
	rx->reqs_inflight = r;
	rx->inflight++;
}

void
gw_req_claim(struct gw_req *r, const char *scope, const char *key)
{
	fgw_strlcpy(r->scope, scope, sizeof(r->scope));
	fgw_strlcpy(r->key, key, sizeof(r->key));
}

/* Stops watching the connection: after an answer or before a free, the
 * callback must not reach r. */
static void
detach(struct gw_req *r)
{
	if (r->req != NULL && r->evcon != NULL)
		evhttp_connection_set_closecb(r->evcon, NULL, NULL);
	r->req = NULL;
}

void
gw_req_answer(struct gw_req *r, int status, const char *body)
{
	struct evhttp_request *req = r->req;
	if (req == NULL)
		return;
	/* Detach first: the answer may end the connection. */
	detach(r);
	http_send_json(r->rx, req, status, body);
}

static void
release(struct gw_req *r, int abandoned)
{
	struct reactor *rx = r->rx;
	detach(r);
	if (r->key[0])
		idem_end(rx->gw->idem, r->scope, r->key);
	http_idem_look_free(r->look);
	r->look = NULL;
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		rx->reqs_inflight = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	rx->inflight--;
	r->free_fn(r, abandoned);
}

void
gw_req_finish(struct gw_req *r, int status, const char *body)
{
	gw_req_answer(r, status, body);
	release(r, 0);
}

void
gw_req_drop(struct gw_req *r)
{
	release(r, 0);
}

void
gw_req_error_param(struct gw_req *r, int status, const char *code, const char *message,
                   const char *param)
{
	struct evhttp_request *req = r->req;
	if (req != NULL) {
		detach(r);
		http_send_error_param(r->rx, req, status, code, message, param);
	}
	release(r, 0);
}

void
gw_req_error(struct gw_req *r, int status, const char *code, const char *message)
{
	gw_req_error_param(r, status, code, message, NULL);
}

void
gw_req_repeat(struct gw_req *r, const char *hash)
{
	struct evhttp_request *req = r->req;
	if (req != NULL && r->key[0]) {
		http_idem_repeat(r, hash); /* answers and releases after its read */
		return;
	}
	if (req != NULL) {
		detach(r);
		http_send_error(r->rx, req, 500, "INTERNAL_ERROR",
		                "An unexpected error occurred");
	}
	release(r, 0);
}

void
gw_req_abandon_all(struct reactor *rx)
{
	/* Only after the loop stopped past the shutdown deadline: work at
	 * the processor is left for the reconciler (its rows say so); the
	 * memory goes, as store jobs and processor answers will never come
	 * back to this reactor. */
	while (rx->reqs_inflight != NULL) {
		struct gw_req *r = rx->reqs_inflight;
		log_warn("%s request abandoned at shutdown", r->kind);
		release(r, 1);
	}
}
