/*
 * pipeline/stage_post.c — request stage "post": commits the transaction
 * (state posting) with its vault entry, then calls the processor through
 * proc_call() and resumes on its reply.
 */
#define LOG_MODULE "pipeline"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "pipeline/pipeline.h"
#include "pipeline/proc_call.h"
#include "pipeline/stages.h"

static void
post_replied(void *arg, const struct proc_reply *reply)
{
	struct txn *t = arg;
	t->reply_err = reply->err;
	t->reply_sent = reply->sent;
	t->reply_status = reply->status;
	t->reply_ms = reply->elapsed_ms;
	if (reply->sent == PROC_SENT && reply->body != NULL) {
		t->reply_body = malloc(reply->body_len + 1);
		if (t->reply_body != NULL) {
			memcpy(t->reply_body, reply->body, reply->body_len);
			t->reply_body[reply->body_len] = '\0';
			t->reply_len = reply->body_len;
		}
	}
	pipeline_resume(t, STAGE_NEXT);
}

/* The request fields every call of one attempt shares. *pk_b64 is owned
 * by the caller. */
static int
fill_request(struct txn *t, struct proc_request *preq, char **pk_b64)
{
	int r;

	*pk_b64 = NULL;
	/* A boxed card already named its reply key (encrypt stage). */
	if ((t->reply_key_id[0] == '\0' &&
	     (r = keyring_box_current(t->env->kr, t->reply_key_id, sizeof(t->reply_key_id),
	                              t->reply_pk)) != 0) ||
	    (r = fgw_b64_encode(t->reply_pk, sizeof(t->reply_pk), pk_b64)) != 0)
		return r;
	memset(preq, 0, sizeof(*preq));
	preq->operation = t->req->capture ? "purchase" : "authorize";
	preq->txn_id = t->id;
	preq->idempotency_key = t->proc_idem_key;
	preq->amount = t->req->amount;
	preq->currency = t->req->currency;
	preq->sealed_card_b64 = t->sealed_card_b64;
	preq->card_boxed = t->card_boxed;
	preq->sealed_key_id = txn_proc(t)->pubkey.key_id;
	preq->reply_key_id = t->reply_key_id;
	preq->reply_public_b64 = *pk_b64;
	preq->description = t->req->description;
	preq->customer_email = t->req->email;
	preq->require_3ds = t->require_3ds;
	preq->return_url = t->req->return_url;
	return FGW_OK;
}

/* One call of this attempt, to the transaction's processor. */
static int
start_call(struct txn *t, enum proc_call_op op, const struct proc_request *preq,
           proc_call_done_fn done)
{
	struct proc_call *call = &t->call;
	int r;

	memset(call, 0, sizeof(*call));
	call->op = op;
	call->inst = txn_instance(t);
	call->charge = preq;
	call->res = &t->result;
	call->request_id = t->request_id;
	call->done = done;
	call->arg = t;
	r = proc_call_start(t->env, call);
	call->charge = NULL; /* built: preq is the caller's stack */
	return r;
}

/* The charge itself; payment_method: the processor's id for the card from
 * the type's first call, or NULL. */
static int
send_charge(struct txn *t, const char *payment_method)
{
	struct proc_request preq;
	struct proc_clear_card clear;
	struct txn_card *c = &t->req->card;
	char *pk_b64 = NULL;
	int r;

	if ((r = fill_request(t, &preq, &pk_b64)) != 0)
		goto out;
	preq.payment_method = payment_method;
	if (t->req->processor_customer[0] != '\0')
		preq.customer = t->req->processor_customer;
	preq.client_confirms = t->req->client_confirms;
	if (txn_proc_type(t)->needs_clear_card && c->pan != NULL) {
		clear = (struct proc_clear_card){ c->pan, c->cvc, c->exp_month, c->exp_year,
			                              c->holder };
		preq.clear_card = &clear;
	}
	r = start_call(t, PROC_CALL_CHARGE, &preq, post_replied);
out:
	free(pk_b64);
	return r;
}

/* The answer to the type's first call (build_card). It charged nothing:
 * anything but the card's id ends the attempt here, as declined or as
 * certainly not charged. */
static void
card_replied(void *arg, const struct proc_reply *reply)
{
	struct txn *t = arg;
	struct proc_result *res = &t->result;
	char pm[sizeof(res->reference)];
	int r;

	if (!reply->parsed) {
		proc_result_clear(res);
		res->outcome = PROC_FAILED;
	}
	if (res->outcome == PROC_SUCCEEDED) {
		fgw_strlcpy(pm, res->reference, sizeof(pm));
		proc_result_clear(res);
		if ((r = send_charge(t, pm)) == 0)
			return; /* post_replied resumes the pipeline */
		log_txn_error(t->id, "processor request not sent: %s", fgw_strerror(r));
		t->reply_err = r;
		t->reply_sent = PROC_NOT_SENT;
		pipeline_resume(t, STAGE_NEXT);
		return;
	}
	if (res->outcome != PROC_DECLINED) {
		proc_result_clear(res);
		res->outcome = PROC_FAILED;
		fgw_strlcpy(res->code, "PAYMENT_PROCESSING_FAILED", sizeof(res->code));
		fgw_strlcpy(res->message, "The payment processor did not take the card.",
		            sizeof(res->message));
	}
	log_txn_warn(t->id, "processor refused the card (%s), not charged",
	             reply->err != 0 ? fgw_strerror(reply->err) : res->code);
	t->have_result = 1;
	/* The reply stage sees a result already: the breaker learns of a
	 * processor that fails the first call here (5xx, transport). */
	t->reply_err = reply->err;
	t->reply_status = reply->status;
	t->reply_ms = reply->elapsed_ms;
	stage_breaker_feedback(t);
	pipeline_resume(t, STAGE_NEXT);
}

static int
send_to_processor(struct txn *t)
{
	const struct proc_type *pt = txn_proc_type(t);
	struct proc_request preq;
	struct proc_clear_card clear;
	struct txn_card *c = &t->req->card;
	char *pk_b64 = NULL;
	int r;

	if (t->req->client_confirms) {
		/* No card: the customer's browser confirms at the processor. */
		r = send_charge(t, NULL);
	} else if (t->req->processor_method[0] != '\0') {
		/* The processor already holds the card (Stripe.js). */
		r = send_charge(t, t->req->processor_method);
	} else if (pt->needs_clear_card && pt->build_card != NULL && pt->parse_card != NULL) {
		/* Two calls: the card goes to the processor alone, the
		 * charge names the processor's id for it. */
		if ((r = fill_request(t, &preq, &pk_b64)) != 0)
			goto out;
		clear = (struct proc_clear_card){ c->pan, c->cvc, c->exp_month, c->exp_year,
			                              c->holder };
		preq.clear_card = &clear;
		r = start_call(t, PROC_CALL_CARD, &preq, card_replied);
	} else {
		r = send_charge(t, NULL);
	}
out:
	/* The card went out in the first request (or never will): the clear
	 * card is no longer needed anywhere. */
	secbuf_free(c->pan);
	secbuf_free(c->cvc);
	c->pan = NULL;
	c->cvc = NULL;
	free(pk_b64);
	return r;
}

static void
post_committed_run(void *arg, int rc)
{
	struct txn *t = arg;
	int r;
	if (rc == FGW_ERR_CONFLICT && t->idem_key[0]) {
		/* Another request committed the key first (on any instance):
		 * this one wrote nothing and never reaches the processor. */
		log_txn_info(t->id, "Idempotency-Key held by another request: not run");
		txn_idem_lost(t);
		pipeline_resume(t, STAGE_ERROR);
		return;
	}
	if (rc != 0) {
		log_txn_error(t->id, "write-ahead commit failed: %s", fgw_strerror(rc));
		txn_set_outcome(t, TXN_FAILED, "INTERNAL_ERROR", "An unexpected error occurred",
		                500, 0);
		pipeline_resume(t, STAGE_ERROR);
		return;
	}
	t->row_created = 1;
	if ((r = send_to_processor(t)) != 0) {
		/* Nothing left the gateway: certainly not charged. */
		log_txn_error(t->id, "processor request not sent: %s", fgw_strerror(r));
		t->reply_err = r;
		t->reply_sent = PROC_NOT_SENT;
	}
	if (r != 0)
		pipeline_resume(t, STAGE_NEXT);
}

static void
post_committed(void *arg, int rc)
{
	char prev[LOG_REQUEST_ID_MAX];
	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(((struct txn *)arg)->request_id);
	post_committed_run(arg, rc);
	log_request_set(prev);
}

static enum stage_rc
post_run(struct txn *t)
{
	struct store_txn_row row;
	struct store_vault_entry ve;
	struct store_audit audit;
	struct store_idem claim;
	char *details;
	int r;

	/* One attempt per transaction: the processor sees the same key on
	 * every retry of it. */
	fgw_strlcpy(t->proc_idem_key, t->id, sizeof(t->proc_idem_key));
	stage_fill_row(t, TXN_POSTING, &row);
	memset(&ve, 0, sizeof(ve));
	fgw_strlcpy(ve.token, t->token, sizeof(ve.token));
	fgw_strlcpy(ve.key_id, t->vault_key_id, sizeof(ve.key_id));
	ve.blob = t->vault_blob;
	fgw_strlcpy(ve.fingerprint, t->fingerprint, sizeof(ve.fingerprint));
	fgw_strlcpy(ve.brand, t->brand, sizeof(ve.brand));
	fgw_strlcpy(ve.bin, t->bin, sizeof(ve.bin));
	fgw_strlcpy(ve.last4, t->last4, sizeof(ve.last4));
	ve.exp_month = t->req->card.exp_month;
	ve.exp_year = t->req->card.exp_year;
	/* The owner is recorded so the customer (and nobody else) can save
	 * or reuse this one-time card until it expires. */
	fgw_strlcpy(ve.customer_id, t->req->customer_id, sizeof(ve.customer_id));
	if (t->env->vault_onetime_ttl_ms > 0)
		ve.expires_at = fgw_now_ms() + t->env->vault_onetime_ttl_ms;
	details = stage_audit_details(t);
	audit = (struct store_audit){
		t->client_id, t->source, "txn.created", t->id, txn_state_name(TXN_POSTING),
		details
	};
	/* The client's key is claimed durably with the write-ahead (status 0:
	 * in progress), so a retry after a crash cannot start a second
	 * charge; the record stage (or the reconciler) replaces it with the
	 * answer. */
	memset(&claim, 0, sizeof(claim));
	if (t->idem_key[0]) {
		fgw_strlcpy(claim.client_id, t->client_id, sizeof(claim.client_id));
		fgw_strlcpy(claim.key, t->idem_key, sizeof(claim.key));
		fgw_strlcpy(claim.request_hash, t->request_hash, sizeof(claim.request_hash));
		claim.status_code = 0;
		fgw_strlcpy(claim.txn_id, t->id, sizeof(claim.txn_id));
		claim.created_at = fgw_now_ms();
		claim.expires_at = claim.created_at + t->env->idem_ttl_ms;
	}
	r = store_txn_create(t->env->store, t->env->waker, &row,
	                     t->vault_reused || !t->vaulted ? NULL : &ve,
	                     &(struct store_commit){ .idem = t->idem_key[0] ? &claim : NULL,
	                                             .audit = &audit,
	                                             .n_audit = 1,
	                                             .done = post_committed,
	                                             .arg = t });
	free(details);
	if (r != 0) {
		log_txn_error(t->id, "store refused the write-ahead: %s", fgw_strerror(r));
		txn_set_outcome(t, TXN_FAILED,
		                r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		                "The gateway could not accept the payment",
		                r == FGW_ERR_SHUTDOWN ? 503 : 500, 0);
		return STAGE_ERROR;
	}
	return STAGE_SUSPEND;
}

const struct stage_type stage_post = { "post", PHASE_REQUEST, post_run };
