/*
 * gateway/routes_webhooks.c — POST /v1/webhooks/{processor}: a processor
 * tells us a payment's fate later (3-D Secure completed, a late failure,
 * a refund).
 *
 * Order of checks, each refusal audited (webhook.refused): known processor
 * (404), body size (413), signature header present (400) and valid over
 * the RAW body (400 malformed, 401 wrong MAC or timestamp outside the
 * tolerance), event JSON shape (400). Then the event id is deduplicated
 * (a repeat is a 200 no-op, audited webhook.duplicate) and the event read
 * by the adapter type the inbound_webhook scheme names (map_event: only
 * processors/ knows a processor's event names); the transaction is found
 * (by our reference, else the processor's) and moved forward with
 * txn_settle — a move the state table refuses (late, duplicated or
 * backward event) changes nothing — or its refunds or a dispute recorded
 * (store/procevents.h). Every accepted event is recorded in
 * webhook_inbound with its result and audited; the processor gets 200 once
 * that is committed, so it retries until we hold the event durably.
 */
#define LOG_MODULE "http"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "crypto/mac.h"
#include "gateway/http.h"
#include "gateway/reqctx.h"
#include "gateway/refusals.h"
#include "gateway/webhooks.h"
#include "pipeline/settle.h"
#include "processors/adapter.h"
#include "processors/proc_util.h"
#include "store/procevents.h"
#include "store/webhooks.h"

/* One inbound event on its way through the store. */
struct wh_ctx {
	struct gw_req g;                     /* first: the request and its reactor */
	char request_id[LOG_REQUEST_ID_MAX]; /* on the lines logged after the read */
	char processor[32];
	char source[64];
	char event_id[128];
	char event_type[64];
	char txn_id[40];
	enum txn_state target;             /* state the event asks for; NONE: none */
	char result[24];                   /* applied, no_move, unmatched, ignored */
	enum txn_state old_state;          /* the transaction's, before the event */
	struct store_refund_event refunds; /* what a refund event committed */
	/* The event as its adapter reads it (pe points into ev). */
	cJSON *ev;
	struct proc_event pe;
	int ignored; /* nothing to apply: acknowledged as "ignored" */
	/* What wh_read found, off the reactor: whether the event id was seen
	 * (seen_rc 0, its result in seen), the transaction it names (find_rc)
	 * and its row (row_rc). */
	int seen_rc, find_rc, row_rc;
	char seen[24];
	struct store_txn_row row;
};

static void
wh_free(struct gw_req *g, int abandoned)
{
	struct wh_ctx *ctx = (struct wh_ctx *)g;
	/* Abandoned: not acknowledged, so the processor sends it again. */
	(void)abandoned;
	store_txn_row_clear(&ctx->row);
	cJSON_Delete(ctx->ev);
	free(ctx);
}

static void
audit_only(struct reactor *rx, const char *processor, const char *source,
           const char *type, const char *outcome, const char *resource,
           const char *reason, const char *event_id)
{
	struct store_audit a;
	cJSON *o = cJSON_CreateObject();
	char *s = NULL;
	if (o != NULL) {
		cJSON_AddStringToObject(o, "processor", processor);
		if (reason != NULL)
			cJSON_AddStringToObject(o, "reason", reason);
		if (event_id != NULL)
			cJSON_AddStringToObject(o, "eventId", event_id);
		s = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
	}
	/* Whole JSON or none: a truncated copy would not parse. */
	a = (struct store_audit){ processor, source, type, resource, outcome, s };
	if (store_audit_append(rx->gw->store, rx->waker,
	                       &(struct store_commit){ .audit = &a, .n_audit = 1 }) != 0)
		log_error("webhook audit not queued (%s)", type);
	free(s);
}

static void
refuse(struct reactor *rx, struct evhttp_request *req, const char *processor,
       const char *source, int status, const char *code, const char *message)
{
	log_info("webhook for %s from %s refused: %s", processor, source, code);
	atomic_fetch_add(&rx->gw->metrics.webhooks_in[1], 1);
	if (refusals_admit(rx->gw->refusals, "webhook.refused", source, fgw_mono_ms()))
		audit_only(rx, processor, source, "webhook.refused", "failure", "", code, NULL);
	http_send_error(rx, req, status, code, message);
}

static void
on_recorded(void *arg, int rc)
{
	struct wh_ctx *ctx = arg;
	char body[200];
	if (rc != 0 && rc != FGW_ERR_EXISTS) {
		log_error("webhook %s not recorded: %s", ctx->event_id, fgw_strerror(rc));
		/* Not held durably: a 500 makes the processor send it again. */
		gw_req_error(&ctx->g, 500, "INTERNAL_ERROR", "The event could not be recorded");
		return;
	}
	atomic_fetch_add(&ctx->g.rx->gw->metrics.webhooks_in[rc == FGW_ERR_EXISTS ? 2 : 0],
	                 1);
	snprintf(body, sizeof(body), "{\"received\":true,\"result\":\"%s\"%s}", ctx->result,
	         rc == FGW_ERR_EXISTS ? ",\"duplicate\":true" : "");
	gw_req_finish(&ctx->g, 200, body);
}

static void
record(struct wh_ctx *ctx)
{
	struct store_audit a;
	cJSON *o = cJSON_CreateObject();
	char *s = NULL;
	int r;
	if (o != NULL) {
		cJSON_AddStringToObject(o, "processor", ctx->processor);
		cJSON_AddStringToObject(o, "eventId", ctx->event_id);
		cJSON_AddStringToObject(o, "eventType", ctx->event_type);
		cJSON_AddStringToObject(o, "result", ctx->result);
		if (ctx->target != TXN_STATE_NONE)
			cJSON_AddStringToObject(o, "target", txn_state_name(ctx->target));
		s = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
	}
	a = (struct store_audit){ ctx->processor, ctx->source, "webhook.accepted",
		                      ctx->txn_id,    ctx->result, s };
	r = store_webhook_record(ctx->g.rx->gw->store, ctx->g.rx->waker, ctx->processor,
	                         ctx->event_id, ctx->event_type, ctx->txn_id, ctx->result, &a,
	                         1, on_recorded, ctx);
	free(s); /* copied by the submission */
	if (r != 0)
		on_recorded(ctx, r);
}

static void
on_moved(void *arg, int rc, const struct store_txn_row *row)
{
	struct wh_ctx *ctx = arg;
	(void)row; /* published by txn_settle */
	if (rc == FGW_ERR_STATE) {
		/* Forward only: a late or backward event, or one that raced
		 * with the pipeline or another event: theirs stands. */
		fgw_strlcpy(ctx->result, "no_move", sizeof(ctx->result));
	} else if (rc != 0) {
		log_error("webhook %s: move of %s failed: %s", ctx->event_id, ctx->txn_id,
		          fgw_strerror(rc));
		gw_req_error(&ctx->g, 500, "INTERNAL_ERROR", "The event could not be applied");
		return;
	} else {
		fgw_strlcpy(ctx->result, "applied", sizeof(ctx->result));
	}
	record(ctx);
}

/* Our transaction: the one the event names by our id, else the one whose
 * processor reference the event gives. On a read thread (wh_read). */
static int
find_txn(struct store_reader *rd, const struct proc_event *pe, char *id, size_t cap)
{
	for (int i = 0; i < PROC_EVENT_REFS; i++) {
		struct store_txn_row row;
		const char *c = pe->txn_ids[i];
		if (c == NULL || strncmp(c, "txn_", 4) != 0 || strlen(c) >= cap)
			continue;
		memset(&row, 0, sizeof(row));
		if (store_txn_get(rd, NULL, c, &row) == 0) {
			store_txn_row_clear(&row);
			fgw_strlcpy(id, c, cap);
			return FGW_OK;
		}
	}
	for (int i = 0; i < PROC_EVENT_REFS; i++)
		if (pe->processor_refs[i] != NULL &&
		    store_txn_id_by_ref(rd, pe->processor_refs[i], id, cap) == 0)
			return FGW_OK;
	return FGW_ERR_NOT_FOUND;
}

/* The transaction as it now stands goes to the other features after a
 * move committed. */
static void
publish(struct wh_ctx *ctx)
{
	txn_settle_publish(&ctx->g.rx->env, ctx->txn_id);
}

/* A dispute committed: the row as it now stands is read (off the
 * reactor), the website hears of it, then the event is recorded. */
static int
disputed_read(struct store_reader *rd, void *arg)
{
	struct wh_ctx *ctx = arg;

	store_txn_row_clear(&ctx->row);
	memset(&ctx->row, 0, sizeof(ctx->row));
	return store_txn_get(rd, NULL, ctx->txn_id, &ctx->row);
}

static void
disputed_read_done(void *arg, int rc)
{
	struct wh_ctx *ctx = arg;

	if (rc == 0)
		webhooks_notify(ctx->g.rx->gw->wh, &ctx->g.rx->env, &ctx->row, "disputed");
	record(ctx);
}

static void
on_refunds(void *arg, int rc)
{
	struct wh_ctx *ctx = arg;

	if (rc == FGW_ERR_STATE) {
		/* Nothing captured, or the refunds already say so. */
		fgw_strlcpy(ctx->result, "no_move", sizeof(ctx->result));
	} else if (rc != 0) {
		log_error("webhook %s: refunds of %s not recorded: %s", ctx->event_id,
		          ctx->txn_id, fgw_strerror(rc));
		gw_req_error(&ctx->g, 500, "INTERNAL_ERROR", "The event could not be applied");
		return;
	} else {
		fgw_strlcpy(ctx->result, "applied", sizeof(ctx->result));
		ctx->target = txn_state_of(ctx->refunds.new_status);
		if (ctx->target != ctx->old_state)
			publish(ctx);
	}
	record(ctx);
}

static void
on_disputed(void *arg, int rc)
{
	struct wh_ctx *ctx = arg;

	if (rc == FGW_ERR_EXISTS) {
		fgw_strlcpy(ctx->result, "no_move", sizeof(ctx->result));
	} else if (rc != 0) {
		log_error("webhook %s: dispute of %s not recorded: %s", ctx->event_id,
		          ctx->txn_id, fgw_strerror(rc));
		gw_req_error(&ctx->g, 500, "INTERNAL_ERROR", "The event could not be applied");
		return;
	} else {
		struct reactor *rx = ctx->g.rx;
		fgw_strlcpy(ctx->result, "applied", sizeof(ctx->result));
		if (store_read(rx->gw->store, rx->waker, rx->reader, disputed_read, ctx,
		               disputed_read_done) == 0)
			return;
	}
	record(ctx);
}

/* The audit details of an event that is applied: who sent which event,
 * and what it asks; cJSON escapes what the processor wrote. */
static char *
event_details(const struct wh_ctx *ctx, const struct proc_event *pe)
{
	cJSON *d = cJSON_CreateObject();
	char *s = NULL;

	if (d == NULL)
		return NULL;
	cJSON_AddStringToObject(d, "processor", ctx->processor);
	cJSON_AddStringToObject(d, "eventId", ctx->event_id);
	cJSON_AddStringToObject(d, "eventType", ctx->event_type);
	if (pe->kind == PROC_EVENT_MOVE)
		cJSON_AddStringToObject(d, "to", txn_state_name(ctx->target));
	if (pe->refunded_total >= 0 && pe->kind == PROC_EVENT_REFUNDED)
		cJSON_AddNumberToObject(d, "refundedTotal", (double)pe->refunded_total);
	if (pe->kind == PROC_EVENT_REFUND || pe->kind == PROC_EVENT_DISPUTE) {
		cJSON_AddStringToObject(d, pe->kind == PROC_EVENT_REFUND ? "refund" : "dispute",
		                        pe->object_ref);
		if (pe->object_amount >= 0)
			cJSON_AddNumberToObject(d, "amount", (double)pe->object_amount);
	}
	if (pe->kind == PROC_EVENT_REFUND)
		cJSON_AddStringToObject(d, "refundStatus", pe->refund_status);
	if (pe->kind == PROC_EVENT_DISPUTE && pe->reason[0] != '\0')
		cJSON_AddStringToObject(d, "reason", pe->reason);
	s = cJSON_PrintUnformatted(d);
	cJSON_Delete(d);
	return s;
}

static int
visible_ascii(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return 0;
	return 1;
}

/* Refunds and disputes: store jobs of their own. */
static void
apply_other(struct wh_ctx *ctx, const struct proc_event *pe)
{
	struct reactor *rx = ctx->g.rx;
	struct store_refund_event rf;
	struct store_audit a;
	char *details = event_details(ctx, pe);
	int r;

	if (pe->kind == PROC_EVENT_DISPUTE) {
		a = (struct store_audit){ ctx->processor, ctx->source, "txn.disputed",
			                      ctx->txn_id,    "disputed",  details };
		r = store_dispute_record(rx->gw->store, rx->waker, ctx->txn_id, ctx->processor,
		                         pe->object_ref, pe->object_amount, pe->reason,
		                         ctx->event_id,
		                         &(struct store_commit){ .audit = &a,
		                                                 .n_audit = 1,
		                                                 .done = on_disputed,
		                                                 .arg = ctx });
		free(details);
		if (r != 0)
			on_disputed(ctx, r);
		return;
	}
	memset(&rf, 0, sizeof(rf));
	fgw_strlcpy(rf.txn_id, ctx->txn_id, sizeof(rf.txn_id));
	fgw_strlcpy(rf.event_id, ctx->event_id, sizeof(rf.event_id));
	rf.refunded_total = pe->kind == PROC_EVENT_REFUNDED ? pe->refunded_total : -1;
	if (pe->kind == PROC_EVENT_REFUND) {
		fgw_strlcpy(rf.refund_ref, pe->object_ref, sizeof(rf.refund_ref));
		rf.refund_amount = pe->object_amount;
		rf.refund_failed = strcmp(pe->refund_status, "failed") == 0;
	}
	a = (struct store_audit){ ctx->processor,
		                      ctx->source,
		                      "txn.webhook",
		                      ctx->txn_id,
		                      pe->kind == PROC_EVENT_REFUND
		                          ? pe->refund_status
		                          : txn_state_name(TXN_REFUNDED),
		                      details };
	r = store_refund_event(rx->gw->store, rx->waker, &rf, &ctx->refunds,
	                       &(struct store_commit){ .audit = &a,
	                                               .n_audit = 1,
	                                               .done = on_refunds,
	                                               .arg = ctx });
	free(details);
	if (r != 0)
		on_refunds(ctx, r);
}

/* 1 when row is a payment waiting for the customer's browser to confirm
 * it at the processor (its next action says so: confirmWith stripe_js). */
static int
waits_for_browser(const struct store_txn_row *row)
{
	cJSON *na;
	const cJSON *type;
	int r;

	if (txn_state_of(row->status) != TXN_REQUIRES_ACTION || row->next_action_json == NULL)
		return 0;
	na = cJSON_Parse(row->next_action_json);
	type = cJSON_GetObjectItemCaseSensitive(na, "type");
	r = cJSON_IsString(type) && strcmp(type->valuestring, "use_stripe_sdk") == 0;
	cJSON_Delete(na);
	return r;
}

/* Reads the event as the processor's adapter does (pt, from the
 * inbound_webhook scheme) into ctx, before anything is read. */
static void
map(struct wh_ctx *ctx, const struct proc_type *pt)
{
	struct proc_event *pe = &ctx->pe;

	proc_event_init(pe);
	/* Unknown to the adapter, or not an outcome yet: acknowledged. */
	ctx->ignored = pt == NULL || pt->map_event == NULL ||
	               pt->map_event(ctx->ev, pe) != 0 || pe->kind == PROC_EVENT_IGNORE ||
	               (pe->kind == PROC_EVENT_REFUND &&
	                strcmp(pe->refund_status, "pending") == 0);
	if (!ctx->ignored && pe->kind == PROC_EVENT_MOVE)
		ctx->target = pe->target;
}

/* On a read thread (PostgreSQL) or in place (SQLite), only ctx's fields:
 * the event id's dedupe, then the transaction the event names and its
 * row, in one hop. */
static int
wh_read(struct store_reader *rd, void *arg)
{
	struct wh_ctx *ctx = arg;

	ctx->find_rc = ctx->row_rc = FGW_ERR_NOT_FOUND;
	ctx->seen_rc = store_webhook_seen(rd, ctx->processor, ctx->event_id, ctx->seen);
	if (ctx->seen_rc != FGW_ERR_NOT_FOUND || ctx->ignored)
		return 0;
	ctx->find_rc = find_txn(rd, &ctx->pe, ctx->txn_id, sizeof(ctx->txn_id));
	if (ctx->find_rc == 0)
		ctx->row_rc = store_txn_get(rd, NULL, ctx->txn_id, &ctx->row);
	return 0;
}

/* Applies a verified, mapped event with what wh_read found: ctx is owned
 * by the store callbacks after. */
static void
apply(struct wh_ctx *ctx)
{
	struct reactor *rx = ctx->g.rx;
	struct store_txn_row row = ctx->row; /* shallow: ctx keeps it */
	struct txn_settlement set;
	const struct proc_event pe = ctx->pe;
	enum txn_state from, to;
	char *details = NULL, *next_action = NULL;
	int r = ctx->row_rc;

	if (ctx->ignored) {
		fgw_strlcpy(ctx->result, "ignored", sizeof(ctx->result));
		record(ctx);
		return;
	}
	if (ctx->find_rc != 0) {
		fgw_strlcpy(ctx->result, "unmatched", sizeof(ctx->result));
		record(ctx);
		return;
	}
	if (r == 0 && strcmp(row.processor, ctx->processor) != 0) {
		/* Signed by one processor's secret, about another processor's
		 * transaction: it cannot speak for that payment. */
		fgw_strlcpy(ctx->result, "unmatched", sizeof(ctx->result));
		record(ctx);
		return;
	}
	if (r == 0 && txn_state_of(row.status) == TXN_POSTING) {
		/* Our own processor call has not been recorded yet: moving now
		 * would make the pipeline's commit (and its idempotent answer)
		 * fail. Not recorded, so the processor's retry applies it. */
		atomic_fetch_add(&rx->gw->metrics.webhooks_in[3], 1);
		if (refusals_admit(rx->gw->refusals, "webhook.deferred", ctx->source,
		                   fgw_mono_ms()))
			audit_only(rx, ctx->processor, ctx->source, "webhook.deferred", "deferred",
			           ctx->txn_id, "TRANSACTION_IN_FLIGHT", ctx->event_id);
		gw_req_error(&ctx->g, 409, "TRANSACTION_IN_FLIGHT",
		             "The transaction is still being posted; send the event again later");
		return;
	}
	if (r == 0)
		ctx->old_state = txn_state_of(row.status);
	if (pe.kind != PROC_EVENT_MOVE) {
		apply_other(ctx, &pe);
		return;
	}
	if (r == 0 && (ctx->target == TXN_SUCCEEDED || ctx->target == TXN_AUTHORIZED) &&
	    ((pe.amount >= 0 && pe.amount != row.amount) ||
	     (pe.currency[0] != '\0' && strcmp(pe.currency, row.currency) != 0))) {
		/* Another sum than the one recorded (the payment was changed at
		 * the processor after flairgw made it): not this payment's
		 * outcome. Recorded "mismatch" for an operator; nothing moves. */
		log_error("webhook %s: %s for %lld %s, but %s is %lld %s: not applied",
		          ctx->event_id, txn_state_name(ctx->target), (long long)pe.amount,
		          pe.currency[0] ? pe.currency : "-", ctx->txn_id, (long long)row.amount,
		          row.currency);
		fgw_strlcpy(ctx->result, "mismatch", sizeof(ctx->result));
		record(ctx);
		return;
	}
	if (r == 0 && ctx->target == TXN_DECLINED && waits_for_browser(&row)) {
		/* The customer confirms this payment at the processor and may
		 * try another card there: a failed attempt is not its end. */
		fgw_strlcpy(ctx->result, "no_move", sizeof(ctx->result));
		record(ctx);
		return;
	}
	if (r == 0 && ctx->target == TXN_REFUNDED && pe.refunded_total >= 0 &&
	    pe.refunded_total < row.amount) {
		/* Less than this payment's amount: not all of it. */
		fgw_strlcpy(ctx->result, "no_move", sizeof(ctx->result));
		record(ctx);
		return;
	}
	from = r == 0 ? txn_state_of(row.status) : TXN_STATE_NONE;
	to = ctx->target;
	/* An event the adapter reads two ways (a capture it cannot prove)
	 * takes its fallback when only that one is a move forward. */
	if (from != TXN_STATE_NONE && !txn_state_may_move(from, to) &&
	    pe.fallback != TXN_STATE_NONE && txn_state_may_move(from, pe.fallback)) {
		ctx->target = pe.fallback;
		to = ctx->target;
	}
	/* Only the shape every adapter relays, with a checked URL: the
	 * website sends its customer there. Anything else is not stored. */
	if (to == TXN_REQUIRES_ACTION && proc_next_action(pe.next_action, &next_action) != 0)
		log_warn(
		    "webhook %s: next_action dropped (not a redirect_to_url with a valid URL)",
		    ctx->event_id);
	details = event_details(ctx, &pe);
	set = (struct txn_settlement){
		.txn_id = ctx->txn_id,
		.from = from,
		.to = to,
		.error_code = to == TXN_DECLINED || to == TXN_FAILED ? pe.code : NULL,
		.error_message = to == TXN_DECLINED || to == TXN_FAILED ? pe.message : NULL,
		.next_action_json = next_action,
		.actor = ctx->processor,
		.source = ctx->source,
		.event_type = "txn.webhook",
		.details_json = details,
	};
	/* FGW_ERR_STATE: a late or backward event changes nothing. */
	r = txn_settle(&rx->env, &set, on_moved, ctx);
	free(details);
	free(next_action);
	if (r != 0)
		on_moved(ctx, r, NULL);
}

/* What wh_read found: a repeat of an event id is a 200 no-op, anything
 * else is applied (ctx owned by the store callbacks after). */
static void
wh_read_run(struct wh_ctx *ctx, int rc)
{
	struct reactor *rx = ctx->g.rx;
	char answer[120];

	if (rc == FGW_ERR_SHUTDOWN) { /* the store closed before the read */
		gw_req_error(&ctx->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
		return;
	}
	if (ctx->seen_rc == 0) {
		atomic_fetch_add(&rx->gw->metrics.webhooks_in[2], 1);
		/* A captured signed event can be replayed until its timestamp
		 * goes stale: bounded like a refusal. */
		if (refusals_admit(rx->gw->refusals, "webhook.duplicate", ctx->source,
		                   fgw_mono_ms()))
			audit_only(rx, ctx->processor, ctx->source, "webhook.duplicate", "duplicate",
			           "", NULL, ctx->event_id);
		snprintf(answer, sizeof(answer),
		         "{\"received\":true,\"result\":\"%s\",\"duplicate\":true}", ctx->seen);
		gw_req_finish(&ctx->g, 200, answer);
		return;
	}
	if (rc != 0 || ctx->seen_rc != FGW_ERR_NOT_FOUND) {
		gw_req_error(&ctx->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	apply(ctx);
}

/* The lines logged name the request, as they did before the read. */
static void
wh_read_done(void *arg, int rc)
{
	struct wh_ctx *ctx = arg;
	char prev[LOG_REQUEST_ID_MAX];

	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(ctx->request_id);
	wh_read_run(ctx, rc);
	log_request_set(prev);
}

static void
h_webhook(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	const char *secrets[WEBHOOKS_MAX_SECRETS], *header_name, *scheme, *sig;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct wh_ctx *ctx = NULL;
	cJSON *ev = NULL;
	struct fgw_json_error jerr;
	const cJSON *id, *type, *data, *obj;
	char processor[32], source[64], *body;
	size_t n_secrets = 0, len;
	int r;

	http_peer_address(req, source, sizeof(source));
	if (http_path_segment("/v1/webhooks/*", path, 0, processor, sizeof(processor)) != 0 ||
	    webhooks_inbound(rx->gw->wh, processor, secrets, &n_secrets, &header_name,
	                     &scheme) != 0) {
		atomic_fetch_add(&rx->gw->metrics.webhooks_in[1], 1);
		if (refusals_admit(rx->gw->refusals, "webhook.refused", source, fgw_mono_ms()))
			audit_only(rx, "unknown", source, "webhook.refused", "failure", "",
			           "NOT_FOUND", NULL);
		http_send_error(rx, req, 404, "NOT_FOUND",
		                "No webhooks are configured for this processor");
		return;
	}
	len = evbuffer_get_length(in);
	if ((long long)len > rx->gw->cfg.max_body_bytes) {
		refuse(rx, req, processor, source, 413, "PAYLOAD_TOO_LARGE",
		       "The request body is too large");
		return;
	}
	if (len == 0) {
		refuse(rx, req, processor, source, 400, "VALIDATION_ERROR", "body is required");
		return;
	}
	if ((body = (char *)evbuffer_pullup(in, -1)) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	sig = evhttp_find_header(evhttp_request_get_input_headers(req), header_name);
	if (sig == NULL) {
		char msg[96];
		snprintf(msg, sizeof(msg), "The %s header is required", header_name);
		refuse(rx, req, processor, source, 400, "SIGNATURE_MISSING", msg);
		return;
	}
	/* Over the raw bytes as received: nothing is parsed before this. */
	r = mac_verify_stripe_signature(sig, body, len, secrets, n_secrets,
	                                fgw_now_ms() / 1000, rx->gw->cfg.webhook_tolerance_s,
	                                NULL, NULL);
	if (r == FGW_ERR_INVALID) {
		refuse(rx, req, processor, source, 400, "SIGNATURE_INVALID",
		       "The signature header is malformed");
		return;
	}
	if (r == FGW_ERR_TIMEOUT) {
		refuse(rx, req, processor, source, 401, "SIGNATURE_EXPIRED",
		       "The signature timestamp is outside the tolerance");
		return;
	}
	if (r != 0) {
		refuse(rx, req, processor, source, 401, "SIGNATURE_MISMATCH",
		       "No signature matches a configured secret for this body");
		return;
	}

	/* What is kept of an event (its id, type, a next action, the audit
	 * trail) must not carry a card number, whoever sent it. */
	{
		struct fgw_why why;
		if (http_card_text_check(body, len, &why) != 0) {
			refuse(rx, req, processor, source, 400, "VALIDATION_ERROR", why.msg);
			return;
		}
	}
	if ((ev = fgw_json_parse(body, len, &jerr)) == NULL) {
		char msg[96];
		fgw_json_error_str(&jerr, msg, sizeof(msg));
		refuse(rx, req, processor, source, 400, "INVALID_EVENT", msg);
		goto out;
	}
	id = cJSON_GetObjectItemCaseSensitive(ev, "id");
	type = cJSON_GetObjectItemCaseSensitive(ev, "type");
	data = cJSON_GetObjectItemCaseSensitive(ev, "data");
	obj = cJSON_GetObjectItemCaseSensitive(data, "object");
	if (!cJSON_IsString(id) || !visible_ascii(id->valuestring, 127) ||
	    !cJSON_IsString(type) || !visible_ascii(type->valuestring, 63) ||
	    !cJSON_IsObject(obj)) {
		refuse(rx, req, processor, source, 400, "INVALID_EVENT",
		       "The event needs a string id, a string type and a data.object");
		goto out;
	}
	if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	/* Counted like a transaction so shutdown waits for its commit. */
	gw_req_start(&ctx->g, rx, req, "webhook", wh_free);
	fgw_strlcpy(ctx->request_id, log_request_get(), sizeof(ctx->request_id));
	fgw_strlcpy(ctx->processor, processor, sizeof(ctx->processor));
	fgw_strlcpy(ctx->source, source, sizeof(ctx->source));
	fgw_strlcpy(ctx->event_id, id->valuestring, sizeof(ctx->event_id));
	fgw_strlcpy(ctx->event_type, type->valuestring, sizeof(ctx->event_type));
	ctx->ev = ev; /* the mapped event points into it */
	ev = NULL;
	map(ctx, proc_type_find(scheme));
	if (store_read(rx->gw->store, rx->waker, rx->reader, wh_read, ctx, wh_read_done) != 0)
		gw_req_error(&ctx->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
out:
	cJSON_Delete(ev);
}

const struct route webhook_routes[] = {
	{ "/v1/webhooks/*", EVHTTP_REQ_POST, h_webhook },
	{ NULL, 0, NULL },
};
