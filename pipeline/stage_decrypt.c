/*
 * pipeline/stage_decrypt.c — request stage "decrypt": opens an
 * encryptedCard sealed to the gateway's key, then vaults it as token would
 * have; or, for paymentMethodId, decrypts the stored card from the vault
 * (stage_method.c). A plain card passes through.
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

static enum stage_rc
decrypt_run(struct txn *t)
{
	struct txn_request *rq = t->req;
	struct secbuf *plain = NULL;
	struct fgw_why perr;
	enum stage_rc rc;
	int r;

	if (rq->payment_method_id[0] != '\0') {
		if ((rc = stage_load_method(t)) != STAGE_NEXT)
			return rc;
	}
	if (!rq->has_encrypted || rq->card.pan != NULL)
		return STAGE_NEXT;
	r = sealed_open_b64(t->env->kr, rq->enc_key_id, rq->enc_data, strlen(rq->enc_data),
	                    &plain);
	if (r == FGW_ERR_NOT_FOUND)
		return stage_invalid(t, "encryptedCard.keyId is not a current gateway key");
	if (r != 0)
		return stage_invalid(t, "encryptedCard.data does not open with that key");
	memset(&perr, 0, sizeof(perr));
	r = txn_card_parse_sealed((const char *)plain->data, plain->len,
	                          &t->env->limits.sealed, fgw_now_ms(), &rq->card, &perr);
	secbuf_free(plain);
	if (r != 0) {
		char msg[sizeof(perr.where) + sizeof(perr.msg) + 2];
		snprintf(msg, sizeof(msg), "%s %s", perr.where, perr.msg);
		if (r == FGW_ERR_TIMEOUT) {
			txn_reject(t, "ENCRYPTED_CARD_EXPIRED", msg, 400);
			return STAGE_STOP;
		}
		return r == FGW_ERR_INVALID ? stage_invalid(t, msg) : STAGE_ERROR;
	}
	if ((r = stage_vault_card(t)) != 0) {
		log_txn_error(t->id, "vaulting failed: %s", fgw_strerror(r));
		return STAGE_ERROR;
	}
	return STAGE_NEXT;
}

const struct stage_type stage_decrypt = { "decrypt", PHASE_REQUEST, decrypt_run };
