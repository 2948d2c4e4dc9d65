/*
 * pipeline/proc_call.c — build, send, classify and parse one processor
 * operation (pipeline/proc_call.h).
 */
#define LOG_MODULE "pipeline"

#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/secmem.h"
#include "pipeline/pipeline.h"
#include "pipeline/proc_call.h"
#include "processors/httpc.h"

static const enum proc_op op_of[] = {
	[PROC_CALL_STATUS] = PROC_OP_STATUS,
	[PROC_CALL_CAPTURE] = PROC_OP_CAPTURE,
	[PROC_CALL_CANCEL] = PROC_OP_CANCEL,
	[PROC_CALL_REFUND] = PROC_OP_REFUND,
};

static int
is_op(enum proc_call_op op)
{
	return op >= PROC_CALL_STATUS && op <= PROC_CALL_REFUND;
}

/* The request, through the type; FGW_ERR_INVALID for an operation the
 * type does not have. */
static int
build(const struct proc_call *call, struct proc_http *http)
{
	const struct proc_type *pt = call->inst->type;
	const struct proc_config *cfg = &call->inst->cfg;

	switch (call->op) {
	case PROC_CALL_CHARGE:
		return call->charge != NULL ? pt->build(cfg, call->charge, http)
		                            : FGW_ERR_INVALID;
	case PROC_CALL_CARD:
		return pt->build_card != NULL && pt->parse_card != NULL && call->charge != NULL
		           ? pt->build_card(cfg, call->charge, http)
		           : FGW_ERR_INVALID;
	case PROC_CALL_STATUS:
	case PROC_CALL_CAPTURE:
	case PROC_CALL_CANCEL:
	case PROC_CALL_REFUND:
		return pt->build_op != NULL && pt->parse_op != NULL && call->opreq != NULL
		           ? pt->build_op(cfg, op_of[call->op], call->opreq, http)
		           : FGW_ERR_INVALID;
	case PROC_CALL_CUSTOMER:
		return pt->build_customer != NULL && pt->parse_customer != NULL
		           ? pt->build_customer(cfg, call->key, call->customer_ref, http)
		           : FGW_ERR_INVALID;
	case PROC_CALL_ATTACH:
		return pt->build_attach != NULL && pt->parse_attach != NULL && call->card != NULL
		           ? pt->build_attach(cfg, call->key, call->method, call->customer, http)
		           : FGW_ERR_INVALID;
	case PROC_CALL_DETACH:
		return pt->build_detach != NULL && pt->parse_detach != NULL
		           ? pt->build_detach(cfg, call->key, call->method, http)
		           : FGW_ERR_INVALID;
	}
	return FGW_ERR_INVALID;
}

/* The answer, through the type; 0 when it could read it. */
static int
parse(const struct proc_call *call, long status, const char *body, size_t len)
{
	const struct proc_type *pt = call->inst->type;
	const struct proc_config *cfg = &call->inst->cfg;

	switch (call->op) {
	case PROC_CALL_CHARGE:
		return FGW_ERR_INVALID; /* the response pipeline's */
	case PROC_CALL_CARD:
		return pt->parse_card(cfg, status, body, len, call->res);
	case PROC_CALL_STATUS:
	case PROC_CALL_CAPTURE:
	case PROC_CALL_CANCEL:
	case PROC_CALL_REFUND:
		return pt->parse_op(cfg, op_of[call->op], status, body, len, call->res);
	case PROC_CALL_CUSTOMER:
		return pt->parse_customer(cfg, status, body, len, call->res);
	case PROC_CALL_ATTACH:
		return pt->parse_attach(cfg, status, body, len, call->customer, call->card,
		                        call->res);
	case PROC_CALL_DETACH:
		return pt->parse_detach(cfg, status, body, len, call->res);
	}
	return FGW_ERR_INVALID;
}

static void
replied(void *arg, const struct httpc_response *resp)
{
	struct proc_call *call = arg;
	struct proc_reply reply;
	char prev[LOG_REQUEST_ID_MAX];
	int named = call->request_id != NULL;

	call->http = NULL;
	memset(&reply, 0, sizeof(reply));
	reply.err = resp->err;
	reply.status = resp->status;
	reply.elapsed_ms = resp->elapsed_ms;
	reply.body = resp->body;
	reply.body_len = resp->body_len;
	if (resp->err == 0)
		reply.sent = PROC_SENT;
	else
		reply.sent = resp->maybe_sent ? PROC_SENT_UNKNOWN : PROC_NOT_SENT;
	if (named) {
		fgw_strlcpy(prev, log_request_get(), sizeof(prev));
		log_request_set(call->request_id);
	}
	if (call->op != PROC_CALL_CHARGE) {
		proc_result_clear(call->res);
		if (reply.sent == PROC_SENT)
			reply.parsed = parse(call, resp->status, resp->body != NULL ? resp->body : "",
			                     resp->body != NULL ? resp->body_len : 0) == 0;
		if (!reply.parsed) {
			/* No answer, or whatever the parser left of one: unknown. */
			proc_result_clear(call->res);
			call->res->outcome = PROC_UNKNOWN;
		}
	}
	/* done may free the context the call lives in. */
	call->done(call->arg, &reply);
	if (named)
		log_request_set(prev);
}

int
proc_call_start(const struct pipeline_env *env, struct proc_call *call)
{
	struct proc_http http;
	struct proc_instance *pi = call->inst;
	int r;

	call->http = NULL;
	if (pi == NULL || pi->type == NULL || call->done == NULL ||
	    (call->op != PROC_CALL_CHARGE && call->res == NULL) ||
	    (is_op(call->op) && call->opreq == NULL))
		return FGW_ERR_INVALID;
	memset(&http, 0, sizeof(http));
	if ((r = build(call, &http)) == 0)
		r = httpc_request(pipeline_httpc_for(env, &pi->cfg), http.method, http.url,
		                  (const char *const *)http.headers,
		                  http.secure_body != NULL ? (const char *)http.secure_body->data
		                                           : http.body,
		                  http.secure_body != NULL ? http.secure_body->len
		                                           : http.body_len,
		                  pi->cfg.timeout_ms, replied, call, &call->http);
	/* The body may have held card data: wiped here, the client has its copy. */
	proc_http_clear(&http);
	return r;
}

void
proc_call_cancel(struct proc_call *call)
{
	if (call == NULL || call->http == NULL)
		return;
	httpc_cancel(call->http);
	call->http = NULL;
}
