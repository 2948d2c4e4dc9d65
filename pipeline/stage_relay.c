/*
 * pipeline/stage_relay.c — response stage "post" (the relay): hands the
 * committed answer to the website. Also the table of all stage types.
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
relay_run(struct txn *t)
{
	if (t->answer == NULL && stage_build_answer(t) != 0) {
		txn_set_outcome(t, TXN_FAILED, "INTERNAL_ERROR", "An unexpected error occurred",
		                500, 0);
		t->answer = NULL;
	}
	log_txn_info(t->id, "%s %s %s amount=%lld %s %ldms", t->client_id,
	             txn_outcome_name(&t->out),
	             t->out.error_code[0] ? t->out.error_code : "-",
	             (long long)t->req->amount, t->req->currency,
	             (long)(fgw_mono_ms() - t->started_mono));
	t->on_done(t, t->done_arg);
	return STAGE_NEXT;
}


const struct stage_type stage_relay = { "post", PHASE_RESPONSE, relay_run };

const struct stage_type *const stage_types[] = {
	&stage_token,         &stage_decrypt, &stage_rule,  &stage_encrypt, &stage_post,
	&stage_reply_decrypt, &stage_record,  &stage_relay, NULL,
};
