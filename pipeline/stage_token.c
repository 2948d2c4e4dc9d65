/*
 * pipeline/stage_token.c — request stage "token": issues a random vault
 * token and vaults the card (fingerprint, display fields, ciphertext in
 * memory) once its PAN is known.
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
token_run(struct txn *t)
{
	int r;
	/* A card the processor holds (stripePaymentMethod): nothing to vault. */
	if (t->req->processor_method[0] != '\0' || t->req->client_confirms)
		return STAGE_NEXT;
	if (t->token[0] == '\0' && (r = vault_new_token(t->token, sizeof(t->token))) != 0)
		return STAGE_ERROR;
	if ((r = stage_vault_card(t)) != 0) {
		log_txn_error(t->id, "vaulting failed: %s", fgw_strerror(r));
		return STAGE_ERROR;
	}
	return STAGE_NEXT;
}

const struct stage_type stage_token = { "token", PHASE_REQUEST, token_run };
