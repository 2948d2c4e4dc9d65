/*
 * pipeline/risk.c — the rules engine as the gateway runs it: one set in a
 * reload slot, one velocity store, and the mapping from recorded rows to
 * rules_input for start-up replay and for processor declines.
 */
#define LOG_MODULE "rules"

#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "pipeline/events.h"
#include "pipeline/risk.h"
#include "pipeline/velsync.h"

int
risk_init(struct risk *rk, const char *rules_file, const char *mode, struct fgw_why *err)
{
	struct rules *r = NULL;
	int rc;

	memset(rk, 0, sizeof(*rk));
	fgw_strlcpy(rk->mode, mode, sizeof(rk->mode));
	fgw_strlcpy(rk->rules_file, rules_file, sizeof(rk->rules_file));
	if (pthread_mutex_init(&rk->decide_mu, NULL) != 0)
		return FGW_ERR_NOMEM;
	if ((rc = rules_load_file(rules_file, NULL, &r, err)) != 0)
		goto out;
	if ((rc = velocity_new(NULL, &rk->velocity)) != 0)
		goto out;
	velocity_ensure_retention(rk->velocity, rules_max_window_ms(r));
	if ((rc = rules_slot_new(r, &rk->slot)) != 0)
		goto out;
	r = NULL; /* owned by the slot */
	rk->up = 1;
	rc = FGW_OK;
out:
	rules_unref(r);
	if (rc != FGW_OK) {
		velocity_free(rk->velocity);
		rk->velocity = NULL;
		pthread_mutex_destroy(&rk->decide_mu);
	}
	return rc;
}

void
risk_free(struct risk *rk)
{
	if (rk == NULL || !rk->up)
		return;
	rules_slot_free(rk->slot);
	velocity_free(rk->velocity);
	pthread_mutex_destroy(&rk->decide_mu);
	rk->up = 0;
}

int
risk_reload(struct risk *rk, struct fgw_why *err, size_t *nrules)
{
	struct rules *r = NULL;
	int rc;

	if ((rc = rules_load_file(rk->rules_file, NULL, &r, err)) != 0)
		return rc;
	/* Retention first: a longer window must not lose what is held. */
	velocity_ensure_retention(rk->velocity, rules_max_window_ms(r));
	if (nrules != NULL)
		*nrules = rules_count(r);
	rules_slot_set(rk->slot, r); /* the slot owns r; in-flight
	                                deciders finish on the old set */
	return FGW_OK;
}

int
risk_decide(struct risk *rk, const struct rules_input *in, struct rules_decision *out)
{
	struct rules *r = rules_slot_get(rk->slot);
	int rc;

	pthread_mutex_lock(&rk->decide_mu);
	rc = rules_eval(r, in, rk->velocity, out);
	if (rc == FGW_OK) {
		/* Noted even when one dimension fails to record: the others did,
		 * and the row must not be counted again from the table. */
		rc = rules_record(in, rk->velocity, out->action == RULES_DECLINE);
		velsync_own(rk->sync, in->txn_id, in->now_ms);
	}
	pthread_mutex_unlock(&rk->decide_mu);
	rules_unref(r);
	return rc;
}

int
risk_record(struct risk *rk, const struct rules_input *in, int declined)
{
	int rc = rules_record(in, rk->velocity, declined);

	velsync_own(rk->sync, in->txn_id, in->now_ms);
	return rc;
}

void
risk_input_from_row(const struct store_txn_row *row, const char *mode,
                    struct rules_input *in)
{
	memset(in, 0, sizeof(*in));
	in->amount = row->amount;
	in->currency = row->currency;
	in->brand = row->brand;
	in->bin = row->bin;
	in->customer_country = row->customer_country;
	in->ip = row->customer_ip;
	in->email = row->customer_email;
	in->processor = row->processor;
	in->fingerprint = row->fingerprint;
	/* No customer id is recorded with a transaction yet: the customer
	 * dimension is the e-mail, the same at decision time and here. */
	in->customer_id = NULL;
	in->threeds = "none";
	in->mode = mode;
	in->card_saved = 0;
	in->now_ms = row->created_at;
}

int
risk_replay_row(struct risk *rk, const struct store_txn_row *row)
{
	struct rules_input in;
	risk_input_from_row(row, rk->mode, &in);
	if (in.amount < 0 || in.now_ms <= 0)
		return FGW_ERR_INVALID;
	return rules_record(&in, rk->velocity, txn_state_of(row->status) == TXN_DECLINED);
}

void
risk_on_txn_event(void *ctx, const struct pipeline_env *env,
                  const struct store_txn_row *row)
{
	struct risk *rk = ctx;
	struct rules_input in;
	int rc;

	(void)env;
	if (rk == NULL || !rk->up || txn_state_of(row->status) != TXN_DECLINED ||
	    strcmp(row->rule_decision, "decline") == 0 || row->created_at <= 0)
		return;
	risk_input_from_row(row, rk->mode, &in);
	if ((rc = rules_record_decline(&in, rk->velocity)) != 0)
		log_txn_warn(row->id, "decline not counted for velocity: %s", fgw_strerror(rc));
}
