/*
 * pipeline/stage_rule.c — request stage "rule": validation (Luhn, expiry,
 * currency) and the gateway's amount limit, then the rules engine
 * (pipeline/risk.h, docs/rules.md) when a rules_file is configured.
 * A decline is recorded, a validation error is not; every attempt that
 * passes validation counts for velocity.
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
#include "pipeline/risk.h"
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

/* What the rules see of this transaction. No PAN: the BIN only, all 6
 * digits in bin (7 bytes) even when the stored one is shorter (a 13..15
 * digit card keeps 6 digits hidden at rest, card_bin_last4). */
static void
rule_input(const struct txn *t, struct rules_input *in, char *bin)
{
	const struct txn_request *rq = t->req;
	const struct secbuf *pan = rq->card.pan;
	memset(in, 0, sizeof(*in));
	fgw_strlcpy(bin, t->bin, 7);
	if (pan != NULL && pan->len >= 13) {
		memcpy(bin, pan->data, 6);
		bin[6] = '\0';
	}
	in->amount = rq->amount;
	in->currency = rq->currency;
	in->brand = t->brand;
	in->bin = bin;
	in->customer_country = rq->country;
	in->ip = rq->ip;
	in->email = rq->email;
	in->processor = txn_proc(t)->name;
	in->fingerprint = t->fingerprint;
	in->customer_id = NULL; /* not carried by a transaction yet */
	in->threeds = "none";   /* decided before the processor is asked */
	in->mode = t->env->risk->mode;
	/* Paid with a customer's saved method (paymentMethodId pm_…). */
	in->card_saved = t->method_saved;
	/* The row's created_at: replay and processor declines find the
	 * same attempt by it. */
	in->now_ms = t->created_at;
	in->txn_id = t->id;
}

static enum stage_rc
rule_decline(struct txn *t, const char *code, const char *rule_id)
{
	char msg[160];
	fgw_strlcpy(t->decision, "decline", sizeof(t->decision));
	fgw_strlcpy(t->rule_code, code, sizeof(t->rule_code));
	if (snprintf(msg, sizeof(msg), "%s (%s, rule %s)",
	             stage_code_lookup("RULE_DECLINED")->message, code,
	             rule_id) >= (int)sizeof(msg))
		fgw_strlcpy(msg, stage_code_lookup("RULE_DECLINED")->message, sizeof(msg));
	txn_set_outcome(t, TXN_DECLINED, "RULE_DECLINED", msg, 400, 1);
	return STAGE_STOP;
}

static enum stage_rc
rules_run(struct txn *t)
{
	struct rules_input in;
	struct rules_decision d;
	char bin[7];
	int r;

	rule_input(t, &in, bin);
	if ((r = risk_decide(t->env->risk, &in, &d)) != 0) {
		log_txn_error(t->id, "rules evaluation failed: %s", fgw_strerror(r));
		txn_set_outcome(t, TXN_FAILED, "INTERNAL_ERROR", "An unexpected error occurred",
		                500, 0);
		return STAGE_ERROR;
	}
	fgw_strlcpy(t->rules_fired, d.fired, sizeof(t->rules_fired));
	fgw_strlcpy(t->decision, rules_action_name(d.action), sizeof(t->decision));
	switch (d.action) {
	case RULES_DECLINE:
		log_txn_info(t->id, "declined by rule %s (%s)", d.rule_id, d.code);
		return rule_decline(t, d.code, d.rule_id);
	case RULES_REQUIRE_3DS:
		t->require_3ds = 1;
		break;
	case RULES_REVIEW:
	case RULES_ALLOW:
	default:
		break;
	}
	return STAGE_NEXT;
}

static enum stage_rc
rule_run(struct txn *t)
{
	const struct txn_request *rq = t->req;
	const struct secbuf *pan = rq->card.pan;

	/* A card the processor holds was checked there (Stripe validates a
	 * PaymentMethod when it is created); amount, currency and the rules
	 * still apply, without the card fields. */
	if (pan == NULL && rq->processor_method[0] == '\0' && !rq->client_confirms)
		return stage_invalid(t, "card is required");
	if (pan != NULL && !card_pan_ok((const char *)pan->data, pan->len))
		return stage_invalid(t, "card.number is not a valid card number");
	if (pan != NULL &&
	    !card_expiry_ok(rq->card.exp_month, rq->card.exp_year, fgw_now_ms()))
		return stage_invalid(t, "card has expired");
	if (!currency_allowed(t->env->limits.currencies, rq->currency))
		return stage_invalid(t, "currency is not supported");
	if (t->env->limits.max_amount > 0 && rq->amount > t->env->limits.max_amount) {
		if (t->env->risk != NULL) {
			struct rules_input in;
			char bin[7];
			rule_input(t, &in, bin);
			(void)risk_record(t->env->risk, &in, 1);
		}
		fgw_strlcpy(t->decision, "decline", sizeof(t->decision));
		fgw_strlcpy(t->rules_fired, "limit.max_amount", sizeof(t->rules_fired));
		txn_set_outcome(t, TXN_DECLINED, "RULE_DECLINED",
		                stage_code_lookup("RULE_DECLINED")->message, 400, 1);
		return STAGE_STOP;
	}
	if (t->env->risk != NULL)
		return rules_run(t);
	fgw_strlcpy(t->decision, "allow", sizeof(t->decision));
	return STAGE_NEXT;
}

const struct stage_type stage_rule = { "rule", PHASE_REQUEST, rule_run };
