/*
 * pipeline/stage_record.c — response stage "record": commits the outcome,
 * the idempotent answer and the audit event in one store job.
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
#include "core/txnstate.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "pipeline/pipeline.h"
#include "pipeline/events.h"
#include "pipeline/settle.h"
#include "pipeline/stages.h"
#include "processors/httpc.h"
#include "store/methods.h"

static void
outcome_from_result(struct txn *t)
{
	const struct proc_result *res = &t->result;
	const struct code_message *m;
	switch (res->outcome) {
	case PROC_SUCCEEDED:
		txn_set_outcome(t, TXN_SUCCEEDED, "", "", 200, 1);
		break;
	case PROC_AUTHORIZED:
		txn_set_outcome(t, TXN_AUTHORIZED, "", "", 200, 1);
		break;
	case PROC_REQUIRES_ACTION:
		txn_set_outcome(t, TXN_REQUIRES_ACTION, "", "", 200, 1);
		break;
	case PROC_DECLINED:
		m = stage_code_lookup(res->code[0] ? res->code : "PAYMENT_CARD_DECLINED");
		txn_set_outcome(t, TXN_DECLINED, m->code, m->message, m->http_status, 1);
		break;
	case PROC_UNKNOWN:
		txn_set_outcome(t, TXN_PROCESSING, "", "", 200, 1);
		break;
	case PROC_FAILED:
	default:
		m = stage_code_lookup("PAYMENT_PROCESSING_FAILED");
		txn_set_outcome(t, TXN_FAILED, m->code, m->message, m->http_status, 1);
		break;
	}
}

static void
record_done(struct txn *t, int rc)
{
	if (rc == FGW_ERR_STATE) {
		/* A webhook or the reconciler finished it first; states only
		 * move forward, so theirs stands and ours was not applied. */
		log_txn_warn(t->id, "outcome %s not applied: state already final",
		             txn_state_name(t->out.state));
	} else if (rc == FGW_ERR_CONFLICT && !t->row_created && t->idem_key[0]) {
		/* A decision recorded with the key's claim: another request
		 * committed the key first, this one recorded nothing. */
		log_txn_info(t->id, "Idempotency-Key held by another request: not recorded");
		txn_idem_lost(t);
	} else if (rc != 0) {
		log_txn_error(t->id, "outcome commit failed: %s", fgw_strerror(rc));
		txn_set_outcome(t, t->out.state, "INTERNAL_ERROR",
		                "The outcome could not be recorded; it will be reconciled", 500,
		                0);
		stage_build_answer(t);
	}
	pipeline_resume(t, STAGE_NEXT);
}

/* The outcome of a transaction written ahead: txn_settle published it. */
static void
record_settled(void *arg, int rc, const struct store_txn_row *row)
{
	(void)row;
	record_done(arg, rc);
}

/* A transaction decided before the processor, recorded in its final
 * state at once: no move, but the listeners hear of it the same way. */
static void
record_created(void *arg, int rc)
{
	struct txn *t = arg;
	if (rc == 0) {
		struct store_txn_row row;
		stage_fill_row(t, t->out.state, &row);
		row.token[0] = '\0';
		fgw_strlcpy(row.processor_ref, t->result.reference, sizeof(row.processor_ref));
		row.next_action_json = t->result.next_action_json;
		txn_events_publish(t->env, &row);
	}
	record_done(t, rc);
}

/* savePaymentMethod: the card becomes a saved method of the customer once
 * the payment succeeded (or was authorized: the issuer accepted the card).
 * The save commits before the outcome, and the answer is built only after
 * it: the answer (and its idempotent replay) names the method only when it
 * exists. A failure to save (e.g. the customer's limit) does not change
 * the payment. */
struct save_ctx {
	struct store_method m;
	struct txn *t;
};

static void
save_method_done(void *arg, int rc)
{
	struct save_ctx *c = arg;
	struct txn *t = c->t;
	if (rc != 0) {
		log_txn_warn(t->id, "saving payment method %s failed: %s", c->m.id,
		             fgw_strerror(rc));
		t->saved_method_id[0] = '\0';
	}
	free(c);
	pipeline_resume(t, STAGE_AGAIN);
}

/* Returns 1 when a save was queued (save_method_done resumes the stage). */
static int
save_method(struct txn *t)
{
	struct save_ctx *c;
	int r;
	if (!t->req->save_method || t->method_saved || t->req->customer_id[0] == '\0' ||
	    (t->out.state != TXN_SUCCEEDED && t->out.state != TXN_AUTHORIZED) ||
	    !t->row_created)
		return 0;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		log_txn_warn(t->id, "saving payment method: out of memory");
		return 0;
	}
	c->t = t;
	fgw_random_id("pm_", c->m.id, sizeof(c->m.id));
	fgw_strlcpy(c->m.customer_id, t->req->customer_id, sizeof(c->m.customer_id));
	fgw_strlcpy(c->m.token, t->token, sizeof(c->m.token));
	fgw_strlcpy(t->saved_method_id, c->m.id, sizeof(t->saved_method_id));
	if ((r = store_method_save(t->env->store, t->env->waker, &c->m, NULL, NULL,
	                           save_method_done, c)) != 0) {
		log_txn_warn(t->id, "saving payment method refused: %s", fgw_strerror(r));
		t->saved_method_id[0] = '\0';
		free(c);
		return 0;
	}
	return 1;
}

/* A one-time card is not needed after a final failure. A succeeded one
 * lives until its TTL so the customer may still save it; the sweep
 * removes it then. Saved entries are never purged (saved = 1). */
static const char *
purge_token_for(const struct txn *t)
{
	if (t->vault_reused || !t->row_created || t->token[0] == '\0')
		return NULL;
	if (t->out.state == TXN_DECLINED || t->out.state == TXN_FAILED)
		return t->token;
	return NULL;
}

static enum stage_rc
record_run(struct txn *t)
{
	struct store_idem idem;
	struct store_audit audit;
	char *details = NULL;
	int r;

	if (!t->save_checked) { /* first entry; the second follows the save */
		t->save_checked = 1;
		if (t->row_created && t->have_result)
			outcome_from_result(t);
		if (t->out.record && save_method(t))
			return STAGE_SUSPEND;
	}
	if (stage_build_answer(t) != 0)
		return STAGE_ERROR;
	if (!t->out.record)
		return STAGE_NEXT;

	memset(&idem, 0, sizeof(idem));
	if (t->idem_key[0]) {
		fgw_strlcpy(idem.client_id, t->client_id, sizeof(idem.client_id));
		fgw_strlcpy(idem.key, t->idem_key, sizeof(idem.key));
		fgw_strlcpy(idem.request_hash, t->request_hash, sizeof(idem.request_hash));
		idem.status_code = t->out.http_status;
		idem.body = t->answer;
		fgw_strlcpy(idem.txn_id, t->id, sizeof(idem.txn_id));
		idem.created_at = fgw_now_ms();
		idem.expires_at = idem.created_at + t->env->idem_ttl_ms;
	}
	details = stage_audit_details(t);
	if (t->row_created) {
		/* Written ahead in posting by this pipeline: the outcome is
		 * its move forward. */
		struct txn_settlement set;
		struct store_txn_row row;
		stage_fill_row(t, t->out.state, &row);
		fgw_strlcpy(row.status, txn_state_name(TXN_POSTING), sizeof(row.status));
		set = (struct txn_settlement){
			.txn_id = t->id,
			.from = TXN_POSTING,
			.to = t->out.state,
			.error_code = t->out.error_code,
			.error_message = t->out.error_message,
			.processor_ref = t->result.reference,
			.next_action_json = t->result.next_action_json,
			.actor = t->client_id,
			.source = t->source,
			.event_type = "txn.outcome",
			.details_json = details,
			.idem = t->idem_key[0] ? &idem : NULL,
			.purge_token = purge_token_for(t),
			.row = &row,
		};
		r = txn_settle(t->env, &set, record_settled, t);
	} else {
		/* Decided before the processor (a rule decline): recorded and
		 * audited, but the card is not kept. */
		struct store_txn_row row;
		stage_fill_row(t, t->out.state, &row);
		row.token[0] = '\0';
		audit = (struct store_audit){
			t->client_id, t->source, "txn.decided", t->id, txn_state_name(t->out.state),
			details
		};
		r = store_txn_create(t->env->store, t->env->waker, &row, NULL,
		                     &(struct store_commit){ .idem = t->idem_key[0] ? &idem
		                                                                    : NULL,
		                                             .audit = &audit,
		                                             .n_audit = 1,
		                                             .done = record_created,
		                                             .arg = t });
	}
	free(details);
	if (r != 0) {
		log_txn_error(t->id, "store refused the outcome: %s", fgw_strerror(r));
		txn_set_outcome(t, t->out.state, "INTERNAL_ERROR",
		                "The outcome could not be recorded; it will be reconciled", 500,
		                0);
		stage_build_answer(t);
		return STAGE_NEXT;
	}
	return STAGE_SUSPEND;
}

const struct stage_type stage_record = { "record", PHASE_RESPONSE, record_run };
