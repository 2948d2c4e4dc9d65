/*
 * pipeline/stage_reply.c — response stage "decrypt": opens the processor's
 * sealed or boxed reply and maps it (or the transport failure) to a
 * result. A request that went out boxed takes only a boxed reply: a
 * sealed one (anyone can seal to our public key) is one that does not
 * open.
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
#include "crypto/box.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "pipeline/pipeline.h"
#include "pipeline/stages.h"
#include "processors/httpc.h"

static int
open_reply(struct txn *t, struct secbuf **plain)
{
	cJSON *o = fgw_json_parse_strict(t->reply_body, t->reply_len);
	const char *name = t->card_boxed ? "boxed" : "sealed";
	const cJSON *s = o ? cJSON_GetObjectItemCaseSensitive(o, name) : NULL;
	int r = FGW_ERR_INVALID;
	if (s != NULL && cJSON_IsString(s) && t->card_boxed)
		r = box_open_b64(t->env->kr, t->reply_key_id, txn_proc(t)->pubkey.pk,
		                 s->valuestring, strlen(s->valuestring), plain);
	else if (s != NULL && cJSON_IsString(s))
		r = sealed_open_b64(t->env->kr, t->reply_key_id, s->valuestring,
		                    strlen(s->valuestring), plain);
	cJSON_Delete(o);
	return r;
}

static enum stage_rc
reply_decrypt_map(struct txn *t)
{
	const struct proc_type *pt = txn_proc_type(t);
	struct secbuf *plain = NULL;
	int r;

	if (!t->row_created || t->have_result)
		return STAGE_NEXT;
	t->have_result = 1;
	memset(&t->result, 0, sizeof(t->result));
	if (t->reply_err != 0 || t->reply_body == NULL) {
		t->result.outcome = t->reply_sent != PROC_NOT_SENT ? PROC_UNKNOWN : PROC_FAILED;
		fgw_strlcpy(t->result.code, "PAYMENT_PROCESSING_FAILED", sizeof(t->result.code));
		log_txn_warn(t->id, "processor call failed (%s), outcome %s",
		             fgw_strerror(t->reply_err),
		             t->reply_sent != PROC_NOT_SENT ? "unknown" : "not charged");
		return STAGE_NEXT;
	}
	if ((pt->seals_reply || txn_proc(t)->seals_reply) && t->reply_status == 200) {
		if ((r = open_reply(t, &plain)) != 0) {
			/* We sent it and cannot read the answer: unknown. */
			log_txn_error(t->id, "processor reply does not open: %s", fgw_strerror(r));
			t->result.outcome = PROC_UNKNOWN;
			fgw_strlcpy(t->result.code, "PAYMENT_PROCESSING_FAILED",
			            sizeof(t->result.code));
			return STAGE_NEXT;
		}
		r = pt->parse_reply(txn_proc(t), t->reply_status, (const char *)plain->data,
		                    plain->len, &t->result);
		secbuf_free(plain);
		/* An answer the processor really wrote, but for another
		 * transaction (a replayed reply), says nothing about this one. */
		if (r == 0 && t->result.txn_ref[0] != '\0' &&
		    strcmp(t->result.txn_ref, t->id) != 0) {
			log_txn_error(t->id, "processor reply is for another transaction");
			proc_result_clear(&t->result);
			r = FGW_ERR_CRYPTO;
		}
	} else {
		r = pt->parse_reply(txn_proc(t), t->reply_status, t->reply_body, t->reply_len,
		                    &t->result);
	}
	if (r != 0) {
		t->result.outcome = PROC_UNKNOWN;
		fgw_strlcpy(t->result.code, "PAYMENT_PROCESSING_FAILED", sizeof(t->result.code));
	}
	return STAGE_NEXT;
}

static enum stage_rc
reply_decrypt_run(struct txn *t)
{
	int fresh = t->row_created && !t->have_result;
	enum stage_rc rc = reply_decrypt_map(t);
	if (fresh)
		stage_breaker_feedback(t);
	return rc;
}

const struct stage_type stage_reply_decrypt = { "decrypt", PHASE_RESPONSE,
	                                            reply_decrypt_run };
