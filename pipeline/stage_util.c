/*
 * pipeline/stage_util.c — helpers the stages share: outcomes and their
 * messages, audit details, the recorded row, vaulting a card, the answer.
 */
#define LOG_MODULE "pipeline"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "pipeline/pipeline.h"
#include "pipeline/stages.h"
#include "processors/breaker.h"
#include "processors/route.h"
#include "processors/httpc.h"

enum stage_rc
stage_invalid(struct txn *t, const char *message)
{
	txn_reject(t, "VALIDATION_ERROR", message, 400);
	return STAGE_STOP;
}

static const struct code_message decline_messages[] = {
	{ "PAYMENT_CARD_DECLINED", "Your card was declined", 400 },
	{ "PAYMENT_INSUFFICIENT_FUNDS", "Your card has insufficient funds", 400 },
	{ "RULE_DECLINED", "The payment was declined by a risk rule", 400 },
	{ "PAYMENT_PROCESSING_FAILED", "The payment processor could not process the payment",
	  502 },
	{ "PAYMENT_AUTHENTICATION_EXPIRED",
	  "The card holder did not complete 3-D Secure authentication in time", 400 },
	{ NULL, NULL, 0 },
};

const struct code_message *
stage_code_lookup(const char *code)
{
	for (const struct code_message *m = decline_messages; m->code; m++)
		if (strcmp(m->code, code) == 0)
			return m;
	return &decline_messages[0];
}

char *
stage_audit_details(const struct txn *t)
{
	struct fgw_jw w;

	/* Written directly, not through a cJSON tree: two per payment. */
	fgw_jw_begin(&w);
	fgw_jw_int(&w, "amount", t->req->amount);
	fgw_jw_str(&w, "currency", t->req->currency);
	if (t->brand[0])
		fgw_jw_str(&w, "brand", t->brand);
	if (t->last4[0])
		fgw_jw_str(&w, "last4", t->last4);
	fgw_jw_str(&w, "decision", t->decision);
	if (t->rules_fired[0])
		fgw_jw_str(&w, "rulesFired", t->rules_fired);
	if (t->rule_code[0])
		fgw_jw_str(&w, "ruleCode", t->rule_code);
	if (txn_outcome_name(&t->out)[0])
		fgw_jw_str(&w, "status", txn_outcome_name(&t->out));
	if (t->out.error_code[0])
		fgw_jw_str(&w, "code", t->out.error_code);
	if (t->result.reference[0])
		fgw_jw_str(&w, "processorRef", t->result.reference);
	if (t->req->reservation_id[0])
		fgw_jw_str(&w, "reservationId", t->req->reservation_id);
	return fgw_jw_end(&w);
}

void
stage_fill_row(const struct txn *t, enum txn_state state, struct store_txn_row *row)
{
	const struct txn_request *rq = t->req;
	memset(row, 0, sizeof(*row));
	fgw_strlcpy(row->id, t->id, sizeof(row->id));
	fgw_strlcpy(row->client_id, t->client_id, sizeof(row->client_id));
	fgw_strlcpy(row->reservation_id, rq->reservation_id, sizeof(row->reservation_id));
	row->amount = rq->amount;
	fgw_strlcpy(row->currency, rq->currency, sizeof(row->currency));
	fgw_strlcpy(row->status, txn_state_name(state), sizeof(row->status));
	fgw_strlcpy(row->error_code, t->out.error_code, sizeof(row->error_code));
	fgw_strlcpy(row->error_message, t->out.error_message, sizeof(row->error_message));
	fgw_strlcpy(row->processor, txn_proc(t)->name, sizeof(row->processor));
	fgw_strlcpy(row->processor_idem_key, t->proc_idem_key,
	            sizeof(row->processor_idem_key));
	fgw_strlcpy(row->token, t->token, sizeof(row->token));
	fgw_strlcpy(row->fingerprint, t->fingerprint, sizeof(row->fingerprint));
	fgw_strlcpy(row->brand, t->brand, sizeof(row->brand));
	fgw_strlcpy(row->bin, t->bin, sizeof(row->bin));
	fgw_strlcpy(row->last4, t->last4, sizeof(row->last4));
	row->exp_month = rq->card.exp_month;
	row->exp_year = rq->card.exp_year;
	fgw_strlcpy(row->customer_email, rq->email, sizeof(row->customer_email));
	fgw_strlcpy(row->customer_name, rq->customer_name, sizeof(row->customer_name));
	fgw_strlcpy(row->customer_country, rq->country, sizeof(row->customer_country));
	fgw_strlcpy(row->customer_ip, rq->ip, sizeof(row->customer_ip));
	fgw_strlcpy(row->rule_decision, t->decision, sizeof(row->rule_decision));
	fgw_strlcpy(row->rules_fired, t->rules_fired, sizeof(row->rules_fired));
	fgw_strlcpy(row->idempotency_key, t->idem_key, sizeof(row->idempotency_key));
	fgw_strlcpy(row->description, rq->description, sizeof(row->description));
	row->metadata_json = rq->metadata_json;
	row->created_at = t->created_at;
	row->updated_at = fgw_now_ms();
}

/* Vaults the card once its PAN is known (by token for plain cards, by
 * decrypt for sealed ones): display fields, fingerprint, ciphertext. */
int
stage_vault_card(struct txn *t)
{
	const struct secbuf *pan = t->req->card.pan;
	int r;
	if (t->vaulted || pan == NULL)
		return FGW_OK;
	if (t->token[0] == '\0' && (r = vault_new_token(t->token, sizeof(t->token))) != 0)
		return r;
	card_bin_last4((const char *)pan->data, pan->len, t->bin, t->last4);
	fgw_strlcpy(t->brand,
	            card_brand_name(card_brand_of((const char *)pan->data, pan->len)),
	            sizeof(t->brand));
	if ((r = vault_fingerprint(t->env->kr, (const char *)pan->data, pan->len,
	                           t->fingerprint)) != 0 ||
	    (r = vault_encrypt(t->env->kr, t->token, pan, &t->vault_blob)) != 0 ||
	    (r = vault_blob_key_id(t->vault_blob, t->vault_key_id,
	                           sizeof(t->vault_key_id))) != 0)
		return r;
	t->vaulted = 1;
	return FGW_OK;
}


/* The answer to POST /v1/transactions, from the fields it is made of: one
 * builder for the live answer (stage_build_answer) and for the answer the
 * reconciler stores for a transaction it resolved, so a client's retry
 * gets a replay of the same shape. */
int
stage_answer_json(const struct stage_answer *a, char **out)
{
	struct fgw_jw w;
	cJSON *na;
	char *na_text = NULL;
	int ok_status = a->http_status >= 200 && a->http_status < 300;

	/* Written directly, not through a cJSON tree (one per payment); the
	 * same bytes as cJSON_PrintUnformatted (core/json.h). */
	*out = NULL;
	fgw_jw_begin(&w);
	if (ok_status) {
		fgw_jw_str(&w, "transactionId", a->id);
		fgw_jw_str(&w, "status", a->status);
		fgw_jw_int(&w, "amount", a->amount);
		fgw_jw_str(&w, "currency", a->currency);
		fgw_jw_open(&w, "paymentMethod");
		fgw_jw_str(&w, "token", a->token);
		/* A card the gateway never saw (a processor's own payment
		 * method) has no brand we know. */
		fgw_jw_str(&w, "brand", a->brand[0] ? a->brand : "Unknown");
		fgw_jw_str(&w, "last4", a->last4);
		fgw_jw_int(&w, "expMonth", a->exp_month);
		fgw_jw_int(&w, "expYear", a->exp_year);
		if (a->method_id != NULL && a->method_id[0])
			fgw_jw_str(&w, "paymentMethodId", a->method_id);
		fgw_jw_close(&w);
		fgw_jw_open(&w, "processor");
		fgw_jw_str(&w, "name", a->proc_name);
		if (a->reference != NULL && a->reference[0])
			fgw_jw_str(&w, "reference", a->reference);
		fgw_jw_close(&w);
		/* The processor's next action, normalised (and dropped when it
		 * is not JSON), as the tree used to print it. */
		if (a->next_action_json != NULL &&
		    (na = cJSON_Parse(a->next_action_json)) != NULL) {
			na_text = cJSON_PrintUnformatted(na);
			cJSON_Delete(na);
			if (na_text == NULL) {
				free(fgw_jw_end(&w));
				return FGW_ERR_NOMEM;
			}
			fgw_jw_raw(&w, "nextAction", na_text);
			cJSON_free(na_text);
		}
	} else {
		fgw_jw_str(&w, "error", a->error_code);
		fgw_jw_str(&w, "message", a->error_message);
		if (a->with_txn_id)
			fgw_jw_str(&w, "transactionId", a->id);
		/* In the stored copy too: a replay answers the first request's id. */
		if (a->request_id != NULL && a->request_id[0])
			fgw_jw_str(&w, "requestId", a->request_id);
	}
	*out = fgw_jw_end(&w);
	return *out ? FGW_OK : FGW_ERR_NOMEM;
}

/* The website's answer, built before the record commit so the idempotent
 * copy and the live answer are the same bytes. */
int
stage_build_answer(struct txn *t)
{
	struct stage_answer a = {
		.id = t->id,
		.status = txn_outcome_name(&t->out),
		.amount = t->req->amount,
		.currency = t->req->currency,
		.token = t->token,
		.brand = t->brand,
		.last4 = t->last4,
		.exp_month = t->req->card.exp_month,
		.exp_year = t->req->card.exp_year,
		.proc_name = txn_proc(t)->name,
		.reference = t->result.reference,
		.next_action_json = t->result.next_action_json,
		.http_status = t->out.http_status,
		.error_code = t->out.error_code,
		.error_message = t->out.error_message,
		.with_txn_id = t->row_created || t->out.record,
		.method_id = t->saved_method_id[0] ? t->saved_method_id
		                                   : t->req->payment_method_id,
		.request_id = t->request_id,
	};
	char *json = NULL;
	int r = stage_answer_json(&a, &json);
	if (r == FGW_OK) {
		free(t->answer);
		t->answer = json;
	}
	return r;
}

const struct proc_config *
txn_proc(const struct txn *t)
{
	return t->inst != NULL ? &t->inst->cfg : &t->env->procs[0].cfg;
}

struct proc_instance *
txn_instance(const struct txn *t)
{
	return t->inst != NULL ? t->inst : &t->env->procs[0];
}

const struct proc_type *
txn_proc_type(const struct txn *t)
{
	return t->inst != NULL ? t->inst->type : t->env->procs[0].type;
}

struct httpc *
pipeline_httpc_for(const struct pipeline_env *env, const struct proc_config *p)
{
	for (int i = 0; i < env->n_procs; i++)
		if (&env->procs[i].cfg == p)
			return env->proc_httpc[i];
	return env->proc_httpc[0];
}

struct proc_instance *
pipeline_proc_find(const struct pipeline_env *env, const char *name)
{
	if (name == NULL || name[0] == '\0')
		return &env->procs[0];
	return proc_instance_find(env->procs, env->n_procs, name);
}

int
pipeline_proc_by_name(const struct pipeline_env *env, const char *name,
                      const struct proc_config **cfg, const struct proc_type **type)
{
	struct proc_instance *pi = pipeline_proc_find(env, name);

	if (pi == NULL)
		return -1;
	*cfg = &pi->cfg;
	*type = pi->type;
	return 0;
}

/* Picks the processor of a new transaction: the routing table's choice
 * (the first when there is none or nothing matches), or, when that one's
 * breaker is open, the next in the configured order whose breaker lets it
 * through (the last one tried when none does). Called once, before the
 * card is sealed to the chosen processor's key; never again for this
 * transaction, so an attempt whose outcome is unknown is never moved. */
void
stage_choose_proc(struct txn *t)
{
	const struct pipeline_env *env = t->env;
	const struct proc_route *route;
	struct proc_instance *pi = NULL;
	int n = env->n_procs, first = 0;
	int64_t now;

	if (t->inst != NULL)
		return;
	if (env->routes != NULL && n > 1) {
		route = proc_routes_pick(env->routes, t->req->currency, t->brand, t->req->country,
		                         t->req->amount, randombytes_uniform(1000000));
		if (route != NULL && (pi = pipeline_proc_find(env, route->processor)) != NULL)
			first = (int)(pi - env->procs);
	}
	t->inst = &env->procs[first];
	if (n < 2)
		return;
	now = fgw_now_ms();
	for (int k = 0; k < n; k++) {
		t->inst = &env->procs[(first + k) % n];
		if (breaker_route(&t->inst->breaker, now, &t->breaker_probe))
			return;
	}
}

/* Tells the chosen processor's breaker how it did on this attempt. "Up"
 * is any answer below 500, whatever the card's outcome; timeouts,
 * transport errors, 5xx and unreadable answers count against it. */
void
stage_breaker_feedback(const struct txn *t)
{
	int ok;

	if (t->env->n_procs < 2 || t->inst == NULL)
		return;
	ok = t->reply_err == 0 && t->reply_status > 0 && t->reply_status < 500 &&
	     t->result.outcome != PROC_UNKNOWN;
	breaker_record(&t->inst->breaker, ok, t->breaker_probe, fgw_now_ms());
}
