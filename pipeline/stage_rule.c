/*
 * pipeline/stage_rule.c — request stage "rule": validation (Luhn, expiry,
 * currency) and limits; a decline is recorded, a validation error is not.
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
		return stage_invalid(t, "card is required");
	if (!card_luhn_ok((const char *)pan->data, pan->len))
		return stage_invalid(t, "card.number is not a valid card number");
	if (!card_expiry_ok(rq->card.exp_month, rq->card.exp_year, fgw_now_ms()))
		return stage_invalid(t, "card has expired");
	if (!currency_allowed(t->env->limits.currencies, rq->currency))
		return stage_invalid(t, "currency is not supported");
	if (t->env->limits.max_amount > 0 && rq->amount > t->env->limits.max_amount) {
		fgw_strlcpy(t->decision, "decline", sizeof(t->decision));
		fgw_strlcpy(t->rules_fired, "limit.max_amount", sizeof(t->rules_fired));
		txn_set_outcome(t, "declined", "RULE_DECLINED",
		                stage_code_lookup("RULE_DECLINED")->message, 400, 1);
		return STAGE_STOP;
	}
	fgw_strlcpy(t->decision, "allow", sizeof(t->decision));
	return STAGE_NEXT;
}

const struct stage_type stage_rule = { "rule", PHASE_REQUEST, rule_run };
