/*
 * pipeline/stages.c — the eight stage types of the Flair model.
 *
 * Request:  token    card -> random vault token, keyed fingerprint, the
 *                    card encrypted in memory under the active data key
 *           decrypt  opens encryptedCard (sealed to the gateway's key), then
 *                    vaults it as token would have
 *           rule     validation (Luhn, expiry, currency) and limits
 *           encrypt  seals the processor-bound card fields to the
 *                    processor's key, then wipes PAN and CVC
 *           post     commits the transaction (state posting) and its vault
 *                    entry, then calls the processor asynchronously
 * Response: decrypt  opens the processor's sealed reply and maps it
 *           record   commits the outcome, the idempotent answer and the
 *                    audit event in one store job
 *           post     relays the committed answer to the website
 *
 * Nothing after token holds the PAN outside guarded memory, and nothing
 * after encrypt holds it at all.
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
#include "pipeline/stages.h"
#include "processors/httpc.h"

/* ---- outcomes ---------------------------------------------------------- */

static enum stage_rc
invalid(struct txn *t, const char *message)
{
	txn_set_outcome(t, "rejected", "VALIDATION_ERROR", message, 400, 0);
	return STAGE_STOP;
}

struct code_message {
	const char *code;
	const char *message;
	int http_status;
};

static const struct code_message decline_messages[] = {
	{ "PAYMENT_CARD_DECLINED", "Your card was declined", 400 },
	{ "PAYMENT_INSUFFICIENT_FUNDS", "Your card has insufficient funds", 400 },
	{ "RULE_DECLINED", "The payment was declined by a risk rule", 400 },
	{ "PAYMENT_PROCESSING_FAILED", "The payment processor could not process the payment", 502 },
	{ NULL, NULL, 0 },
};

static const struct code_message *
code_lookup(const char *code)
{
	for (const struct code_message *m = decline_messages; m->code; m++)
		if (strcmp(m->code, code) == 0)
			return m;
	return &decline_messages[0];
}

/* ---- audit and rows ---------------------------------------------------- */

static char *
audit_details(const struct txn *t)
{
	cJSON *o = cJSON_CreateObject();
	char *s;
	if (o == NULL)
		return NULL;
	cJSON_AddNumberToObject(o, "amount", (double)t->req->amount);
	cJSON_AddStringToObject(o, "currency", t->req->currency);
	if (t->brand[0])
		cJSON_AddStringToObject(o, "brand", t->brand);
	if (t->last4[0])
		cJSON_AddStringToObject(o, "last4", t->last4);
	cJSON_AddStringToObject(o, "decision", t->decision);
	if (t->rules_fired[0])
		cJSON_AddStringToObject(o, "rulesFired", t->rules_fired);
	if (t->out.status[0])
		cJSON_AddStringToObject(o, "status", t->out.status);
	if (t->out.error_code[0])
		cJSON_AddStringToObject(o, "code", t->out.error_code);
	if (t->result.reference[0])
		cJSON_AddStringToObject(o, "processorRef", t->result.reference);
	if (t->req->reservation_id[0])
		cJSON_AddStringToObject(o, "reservationId", t->req->reservation_id);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

static void
fill_row(const struct txn *t, const char *status, struct store_txn_row *row)
{
	const struct txn_request *rq = t->req;
	memset(row, 0, sizeof(*row));
	fgw_strlcpy(row->id, t->id, sizeof(row->id));
	fgw_strlcpy(row->client_id, t->client_id, sizeof(row->client_id));
	fgw_strlcpy(row->reservation_id, rq->reservation_id, sizeof(row->reservation_id));
	row->amount = rq->amount;
	fgw_strlcpy(row->currency, rq->currency, sizeof(row->currency));
	fgw_strlcpy(row->status, status, sizeof(row->status));
	fgw_strlcpy(row->error_code, t->out.error_code, sizeof(row->error_code));
	fgw_strlcpy(row->error_message, t->out.error_message, sizeof(row->error_message));
	fgw_strlcpy(row->processor, t->env->proc->name, sizeof(row->processor));
	fgw_strlcpy(row->processor_idem_key, t->proc_idem_key, sizeof(row->processor_idem_key));
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

/* ---- token ------------------------------------------------------------- */

/* Vaults the card once its PAN is known (by token for plain cards, by
 * decrypt for sealed ones): display fields, fingerprint, ciphertext. */
static int
vault_card(struct txn *t)
{
	const struct secbuf *pan = t->req->card.pan;
	int r;
	if (t->vaulted || pan == NULL)
		return FGW_OK;
	if (t->token[0] == '\0' &&
	    (r = vault_new_token(t->token, sizeof(t->token))) != 0)
		return r;
	card_bin_last4((const char *)pan->data, pan->len, t->bin, t->last4);
	fgw_strlcpy(t->brand, card_brand_name(card_brand_of((const char *)pan->data, pan->len)),
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

static enum stage_rc
token_run(struct txn *t)
{
	int r;
	if (t->token[0] == '\0' &&
	    (r = vault_new_token(t->token, sizeof(t->token))) != 0)
		return STAGE_ERROR;
	if ((r = vault_card(t)) != 0) {
		log_txn_error(t->id, "vaulting failed: %s", fgw_strerror(r));
		return STAGE_ERROR;
	}
	return STAGE_NEXT;
}

/* ---- decrypt (request) ------------------------------------------------- */

static enum stage_rc
decrypt_run(struct txn *t)
{
	struct txn_request *rq = t->req;
	struct secbuf *plain = NULL;
	struct txn_parse_error perr;
	int r;

	if (!rq->has_encrypted || rq->card.pan != NULL)
		return STAGE_NEXT;
	r = sealed_open_b64(t->env->kr, rq->enc_key_id, rq->enc_data,
	                    strlen(rq->enc_data), &plain);
	if (r == FGW_ERR_NOT_FOUND)
		return invalid(t, "encryptedCard.keyId is not a current gateway key");
	if (r != 0)
		return invalid(t, "encryptedCard.data does not open with that key");
	memset(&perr, 0, sizeof(perr));
	r = txn_card_parse_json((const char *)plain->data, plain->len, &rq->card, &perr);
	secbuf_free(plain);
	if (r != 0) {
		char msg[240];
		snprintf(msg, sizeof(msg), "%s %s", perr.field, perr.message);
		return r == FGW_ERR_INVALID ? invalid(t, msg) : STAGE_ERROR;
	}
	if ((r = vault_card(t)) != 0) {
		log_txn_error(t->id, "vaulting failed: %s", fgw_strerror(r));
		return STAGE_ERROR;
	}
	return STAGE_NEXT;
}

/* ---- rule -------------------------------------------------------------- */

static int
currency_allowed(const char *list, const char *cur)
{
	size_t n = strlen(cur);
	for (const char *p = list; p && *p;) {
		while (*p == ',' || *p == ' ')
			p++;
		if (strncmp(p, cur, n) == 0 && (p[n] == ',' || p[n] == ' ' || p[n] == '\0'))
			return 1;
		p = strchr(p, ',');
	}
	return 0;
}

static enum stage_rc
rule_run(struct txn *t)
{
	const struct txn_request *rq = t->req;
	const struct secbuf *pan = rq->card.pan;

	if (pan == NULL)
		return invalid(t, "card is required");
	if (!card_luhn_ok((const char *)pan->data, pan->len))
		return invalid(t, "card.number is not a valid card number");
	if (!card_expiry_ok(rq->card.exp_month, rq->card.exp_year, fgw_now_ms()))
		return invalid(t, "card has expired");
	if (!currency_allowed(t->env->limits.currencies, rq->currency))
		return invalid(t, "currency is not supported");
	if (t->env->limits.max_amount > 0 && rq->amount > t->env->limits.max_amount) {
		fgw_strlcpy(t->decision, "decline", sizeof(t->decision));
		fgw_strlcpy(t->rules_fired, "limit.max_amount", sizeof(t->rules_fired));
		txn_set_outcome(t, "declined", "RULE_DECLINED",
		                code_lookup("RULE_DECLINED")->message, 400, 1);
		return STAGE_STOP;
	}
	fgw_strlcpy(t->decision, "allow", sizeof(t->decision));
	return STAGE_NEXT;
}

/* ---- encrypt ----------------------------------------------------------- */

/* Appends s JSON-escaped (holder names are printable; quotes and
 * backslashes are escaped). Returns the new length or 0 on overflow. */
static size_t
put_escaped(unsigned char *dst, size_t o, size_t cap, const char *s)
{
	for (; *s; s++) {
		if (o + 3 >= cap)
			return 0;
		if (*s == '"' || *s == '\\')
			dst[o++] = '\\';
		dst[o++] = (unsigned char)*s;
	}
	return o;
}

static enum stage_rc
encrypt_run(struct txn *t)
{
	struct txn_card *c = &t->req->card;
	const struct proc_config *pc = t->env->proc;
	struct secbuf *buf = NULL;
	size_t cap, o;
	int n, r = FGW_ERR_INTERNAL;

	if (!pc->has_pubkey) {
		log_txn_error(t->id, "processor %s has no public key configured", pc->name);
		return STAGE_ERROR;
	}
	if (c->pan == NULL)
		return invalid(t, "card is required");
	cap = c->pan->len + (c->cvc ? c->cvc->len : 0) + 2 * strlen(c->holder) + 128;
	if ((r = secbuf_alloc(&buf, cap)) != 0)
		return STAGE_ERROR;
	/* Built by hand in guarded memory: the PAN never enters a heap
	 * JSON tree on its way to the processor. */
	n = snprintf((char *)buf->data, cap, "{\"number\":\"%s\",\"expMonth\":%d,\"expYear\":%d",
	             (const char *)c->pan->data, c->exp_month, c->exp_year);
	if (n < 0 || (size_t)n >= cap)
		goto out;
	o = (size_t)n;
	if (c->cvc != NULL) {
		n = snprintf((char *)buf->data + o, cap - o, ",\"cvc\":\"%s\"",
		             (const char *)c->cvc->data);
		if (n < 0 || (size_t)n >= cap - o)
			goto out;
		o += (size_t)n;
	}
	if (c->holder[0]) {
		n = snprintf((char *)buf->data + o, cap - o, ",\"holderName\":\"");
		if (n < 0 || (size_t)n >= cap - o)
			goto out;
		if ((o = put_escaped(buf->data, o + (size_t)n, cap, c->holder)) == 0)
			goto out;
		buf->data[o++] = '"';
	}
	if (o + 2 > cap)
		goto out;
	buf->data[o++] = '}';
	buf->data[o] = '\0';
	r = sealed_seal_b64(pc->pubkey.pk, buf->data, o, &t->sealed_card_b64);
out:
	secbuf_free(buf);
	/* The processor payload is sealed: the clear PAN and CVC are no
	 * longer needed anywhere. */
	secbuf_free(c->pan);
	secbuf_free(c->cvc);
	c->pan = NULL;
	c->cvc = NULL;
	if (r != 0) {
		log_txn_error(t->id, "sealing for processor failed: %s", fgw_strerror(r));
		return STAGE_ERROR;
	}
	return STAGE_NEXT;
}

/* ---- post (request) ---------------------------------------------------- */

static void
post_replied(void *arg, const struct httpc_response *resp)
{
	struct txn *t = arg;
	t->http = NULL;
	t->reply_err = resp->err;
	t->reply_maybe_sent = resp->maybe_sent;
	t->reply_status = resp->status;
	t->reply_ms = resp->elapsed_ms;
	if (resp->err == 0 && resp->body != NULL) {
		t->reply_body = malloc(resp->body_len + 1);
		if (t->reply_body != NULL) {
			memcpy(t->reply_body, resp->body, resp->body_len);
			t->reply_body[resp->body_len] = '\0';
			t->reply_len = resp->body_len;
		}
	}
	pipeline_resume(t, STAGE_NEXT);
}

static int
send_to_processor(struct txn *t)
{
	struct proc_request preq;
	struct proc_http http;
	unsigned char pk[32];
	char *pk_b64 = NULL;
	int r;

	memset(&http, 0, sizeof(http));
	if ((r = keyring_box_current(t->env->kr, t->reply_key_id, sizeof(t->reply_key_id), pk)) != 0 ||
	    (r = fgw_b64_encode(pk, sizeof(pk), &pk_b64)) != 0)
		return r;
	memset(&preq, 0, sizeof(preq));
	preq.operation = "purchase";
	preq.txn_id = t->id;
	preq.idempotency_key = t->proc_idem_key;
	preq.amount = t->req->amount;
	preq.currency = t->req->currency;
	preq.sealed_card_b64 = t->sealed_card_b64;
	preq.sealed_key_id = t->env->proc->pubkey.key_id;
	preq.reply_key_id = t->reply_key_id;
	preq.reply_public_b64 = pk_b64;
	preq.description = t->req->description;
	preq.customer_email = t->req->email;
	if ((r = t->env->proc_type->build(t->env->proc, &preq, &http)) == 0)
		r = httpc_request(t->env->httpc, http.method, http.url,
		                  (const char *const *)http.headers, http.body,
		                  http.body_len, t->env->proc->timeout_ms,
		                  post_replied, t, &t->http);
	proc_http_clear(&http);
	free(pk_b64);
	return r;
}

static void
post_committed(void *arg, int rc)
{
	struct txn *t = arg;
	int r;
	if (rc != 0) {
		log_txn_error(t->id, "write-ahead commit failed: %s", fgw_strerror(rc));
		txn_set_outcome(t, "failed", "INTERNAL_ERROR",
		                "An unexpected error occurred", 500, 0);
		pipeline_resume(t, STAGE_ERROR);
		return;
	}
	t->row_created = 1;
	if ((r = send_to_processor(t)) != 0) {
		/* Nothing left the gateway: certainly not charged. */
		log_txn_error(t->id, "processor request not sent: %s", fgw_strerror(r));
		t->reply_err = r;
		t->reply_maybe_sent = 0;
	}
	if (r != 0)
		pipeline_resume(t, STAGE_NEXT);
}

static enum stage_rc
post_run(struct txn *t)
{
	struct store_txn_row row;
	struct store_vault_entry ve;
	struct store_audit audit;
	char *details;
	int r;

	/* One attempt per transaction: the processor sees the same key on
	 * every retry of it. */
	fgw_strlcpy(t->proc_idem_key, t->id, sizeof(t->proc_idem_key));
	fill_row(t, "posting", &row);
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
	details = audit_details(t);
	audit = (struct store_audit){ t->client_id, t->source, "txn.created",
		                          t->id, "posting", details };
	r = store_txn_create(t->env->store, t->env->waker, &row, &ve, NULL,
	                     &audit, 1, post_committed, t);
	free(details);
	if (r != 0) {
		log_txn_error(t->id, "store refused the write-ahead: %s", fgw_strerror(r));
		txn_set_outcome(t, "failed", r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
		                "The gateway could not accept the payment", r == FGW_ERR_SHUTDOWN ? 503 : 500, 0);
		return STAGE_ERROR;
	}
	return STAGE_SUSPEND;
}

/* ---- decrypt (response) ------------------------------------------------ */

static int
open_reply(struct txn *t, struct secbuf **plain)
{
	cJSON *o = cJSON_ParseWithLength(t->reply_body, t->reply_len);
	const cJSON *s = o ? cJSON_GetObjectItemCaseSensitive(o, "sealed") : NULL;
	int r = FGW_ERR_INVALID;
	if (s != NULL && cJSON_IsString(s))
		r = sealed_open_b64(t->env->kr, t->reply_key_id, s->valuestring,
		                    strlen(s->valuestring), plain);
	cJSON_Delete(o);
	return r;
}

static enum stage_rc
reply_decrypt_run(struct txn *t)
{
	const struct proc_type *pt = t->env->proc_type;
	struct secbuf *plain = NULL;
	int r;

	if (!t->row_created || t->have_result)
		return STAGE_NEXT;
	t->have_result = 1;
	memset(&t->result, 0, sizeof(t->result));
	if (t->reply_err != 0 || t->reply_body == NULL) {
		t->result.outcome = t->reply_maybe_sent ? PROC_UNKNOWN : PROC_FAILED;
		fgw_strlcpy(t->result.code, "PAYMENT_PROCESSING_FAILED", sizeof(t->result.code));
		log_txn_warn(t->id, "processor call failed (%s), outcome %s",
		             fgw_strerror(t->reply_err),
		             t->reply_maybe_sent ? "unknown" : "not charged");
		return STAGE_NEXT;
	}
	if (pt->seals_reply && t->reply_status == 200) {
		if ((r = open_reply(t, &plain)) != 0) {
			/* We sent it and cannot read the answer: unknown. */
			log_txn_error(t->id, "processor reply does not open: %s", fgw_strerror(r));
			t->result.outcome = PROC_UNKNOWN;
			fgw_strlcpy(t->result.code, "PAYMENT_PROCESSING_FAILED", sizeof(t->result.code));
			return STAGE_NEXT;
		}
		r = pt->parse_reply(t->env->proc, t->reply_status, (const char *)plain->data,
		                    plain->len, &t->result);
		secbuf_free(plain);
	} else {
		r = pt->parse_reply(t->env->proc, t->reply_status, t->reply_body,
		                    t->reply_len, &t->result);
	}
	if (r != 0) {
		t->result.outcome = PROC_UNKNOWN;
		fgw_strlcpy(t->result.code, "PAYMENT_PROCESSING_FAILED", sizeof(t->result.code));
	}
	return STAGE_NEXT;
}

/* ---- record ------------------------------------------------------------ */

static void
outcome_from_result(struct txn *t)
{
	const struct proc_result *res = &t->result;
	const struct code_message *m;
	switch (res->outcome) {
	case PROC_SUCCEEDED:
		txn_set_outcome(t, "succeeded", "", "", 200, 1);
		break;
	case PROC_REQUIRES_ACTION:
		txn_set_outcome(t, "requires_action", "", "", 200, 1);
		break;
	case PROC_DECLINED:
		m = code_lookup(res->code[0] ? res->code : "PAYMENT_CARD_DECLINED");
		txn_set_outcome(t, "declined", m->code, m->message, m->http_status, 1);
		break;
	case PROC_UNKNOWN:
		txn_set_outcome(t, "processing", "", "", 200, 1);
		break;
	case PROC_FAILED:
	default:
		m = code_lookup("PAYMENT_PROCESSING_FAILED");
		txn_set_outcome(t, "failed", m->code, m->message, m->http_status, 1);
		break;
	}
}

/* The website's answer, built before the record commit so the idempotent
 * copy and the live answer are the same bytes. */
static int
build_answer(struct txn *t)
{
	cJSON *o = cJSON_CreateObject(), *pm, *pr, *na;
	int ok_status = t->out.http_status >= 200 && t->out.http_status < 300;
	if (o == NULL)
		return FGW_ERR_NOMEM;
	if (ok_status) {
		cJSON_AddStringToObject(o, "transactionId", t->id);
		cJSON_AddStringToObject(o, "status", t->out.status);
		cJSON_AddNumberToObject(o, "amount", (double)t->req->amount);
		cJSON_AddStringToObject(o, "currency", t->req->currency);
		if ((pm = cJSON_AddObjectToObject(o, "paymentMethod")) != NULL) {
			cJSON_AddStringToObject(pm, "token", t->token);
			cJSON_AddStringToObject(pm, "brand", t->brand);
			cJSON_AddStringToObject(pm, "last4", t->last4);
			cJSON_AddNumberToObject(pm, "expMonth", t->req->card.exp_month);
			cJSON_AddNumberToObject(pm, "expYear", t->req->card.exp_year);
		}
		if ((pr = cJSON_AddObjectToObject(o, "processor")) != NULL) {
			cJSON_AddStringToObject(pr, "name", t->env->proc->name);
			if (t->result.reference[0])
				cJSON_AddStringToObject(pr, "reference", t->result.reference);
		}
		if (t->result.next_action_json != NULL &&
		    (na = cJSON_Parse(t->result.next_action_json)) != NULL)
			cJSON_AddItemToObject(o, "nextAction", na);
	} else {
		cJSON_AddStringToObject(o, "error", t->out.error_code);
		cJSON_AddStringToObject(o, "message", t->out.error_message);
		if (t->row_created || t->out.record)
			cJSON_AddStringToObject(o, "transactionId", t->id);
	}
	free(t->answer);
	t->answer = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return t->answer ? FGW_OK : FGW_ERR_NOMEM;
}

static void
record_committed(void *arg, int rc)
{
	struct txn *t = arg;
	if (rc == FGW_ERR_STATE) {
		/* A webhook or the reconciler finished it first; states only
		 * move forward, so theirs stands and ours was not applied. */
		log_txn_warn(t->id, "outcome %s not applied: state already final", t->out.status);
	} else if (rc != 0) {
		log_txn_error(t->id, "outcome commit failed: %s", fgw_strerror(rc));
		txn_set_outcome(t, t->out.status, "INTERNAL_ERROR",
		                "The outcome could not be recorded; it will be reconciled", 500, 0);
		build_answer(t);
	}
	pipeline_resume(t, STAGE_NEXT);
}

static enum stage_rc
record_run(struct txn *t)
{
	struct store_idem idem;
	struct store_audit audit;
	char *details = NULL;
	int r;

	if (t->row_created && t->have_result)
		outcome_from_result(t);
	if (build_answer(t) != 0)
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
	details = audit_details(t);
	audit = (struct store_audit){ t->client_id, t->source,
		                          t->row_created ? "txn.outcome" : "txn.decided",
		                          t->id, t->out.status, details };
	if (t->row_created) {
		struct store_txn_update upd;
		memset(&upd, 0, sizeof(upd));
		fgw_strlcpy(upd.id, t->id, sizeof(upd.id));
		fgw_strlcpy(upd.status, t->out.status, sizeof(upd.status));
		fgw_strlcpy(upd.error_code, t->out.error_code, sizeof(upd.error_code));
		fgw_strlcpy(upd.error_message, t->out.error_message, sizeof(upd.error_message));
		fgw_strlcpy(upd.processor_ref, t->result.reference, sizeof(upd.processor_ref));
		upd.next_action_json = t->result.next_action_json;
		r = store_txn_finish(t->env->store, t->env->waker, &upd,
		                     t->idem_key[0] ? &idem : NULL, &audit, 1, NULL,
		                     record_committed, t);
	} else {
		/* Decided before the processor (a rule decline): recorded and
		 * audited, but the card is not kept. */
		struct store_txn_row row;
		fill_row(t, t->out.status, &row);
		row.token[0] = '\0';
		r = store_txn_create(t->env->store, t->env->waker, &row, NULL,
		                     t->idem_key[0] ? &idem : NULL, &audit, 1,
		                     record_committed, t);
	}
	free(details);
	if (r != 0) {
		log_txn_error(t->id, "store refused the outcome: %s", fgw_strerror(r));
		txn_set_outcome(t, t->out.status, "INTERNAL_ERROR",
		                "The outcome could not be recorded; it will be reconciled", 500, 0);
		build_answer(t);
		return STAGE_NEXT;
	}
	return STAGE_SUSPEND;
}

/* ---- post (relay) ------------------------------------------------------ */

static enum stage_rc
relay_run(struct txn *t)
{
	if (t->answer == NULL && build_answer(t) != 0) {
		txn_set_outcome(t, "failed", "INTERNAL_ERROR", "An unexpected error occurred", 500, 0);
		t->answer = NULL;
	}
	log_txn_info(t->id, "%s %s %s amount=%lld %s %ldms", t->client_id,
	             t->out.status, t->out.error_code[0] ? t->out.error_code : "-",
	             (long long)t->req->amount, t->req->currency,
	             (long)(fgw_mono_ms() - t->started_mono));
	t->on_done(t, t->done_arg);
	return STAGE_NEXT;
}

const struct stage_type stage_token = { "token", PHASE_REQUEST, token_run };
const struct stage_type stage_decrypt = { "decrypt", PHASE_REQUEST, decrypt_run };
const struct stage_type stage_rule = { "rule", PHASE_REQUEST, rule_run };
const struct stage_type stage_encrypt = { "encrypt", PHASE_REQUEST, encrypt_run };
const struct stage_type stage_post = { "post", PHASE_REQUEST, post_run };
const struct stage_type stage_reply_decrypt = { "decrypt", PHASE_RESPONSE, reply_decrypt_run };
const struct stage_type stage_record = { "record", PHASE_RESPONSE, record_run };
const struct stage_type stage_relay = { "post", PHASE_RESPONSE, relay_run };

const struct stage_type *const stage_types[] = {
	&stage_token, &stage_decrypt, &stage_rule, &stage_encrypt, &stage_post,
	&stage_reply_decrypt, &stage_record, &stage_relay, NULL,
};
