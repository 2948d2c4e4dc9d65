/*
 * pipeline/risk.h — the gateway's rules engine instance: the current rule
 * set (swapped atomically on reload), the velocity store shared by every
 * reactor thread, and the glue from transactions and recorded rows to
 * rules_input.
 *
 * Deciding is evaluate-then-record under one mutex, so two reactors
 * deciding for the same IP at the same moment cannot both see "5
 * attempts" and both pass: count(ip, 1m) > 5 lets exactly five through.
 * The critical section is CPU only (a few microseconds, no I/O).
 */
#ifndef FGW_PIPELINE_RISK_H
#define FGW_PIPELINE_RISK_H

#include <pthread.h>
#include <stdint.h>

#include "rules/rules.h"
#include "store/store.h"

struct pipeline_env;

struct risk {
	struct rules_slot *slot; /* the current set; never empty once up */
	struct velocity *velocity;
	pthread_mutex_t decide_mu;
	char mode[16]; /* the `mode` attribute */
	char rules_file[512];
	int up;
	/* Set when the store is shared by several instances (NULL: one
	 * instance); the gateway owns it. Own attempts are noted in it. */
	struct velsync *sync;
};

/* Loads rules_file and creates the velocity store. 0, or the loader's
 * code with *err filled (file:line:col). */
int risk_init(struct risk *rk, const char *rules_file, const char *mode,
              struct fgw_why *err);
void risk_free(struct risk *rk);
/* Compiles rules_file again; swaps it in only when it loads whole. On
 * error the old set keeps running and *err says why. *nrules (may be
 * NULL) is the new set's size. */
int risk_reload(struct risk *rk, struct fgw_why *err, size_t *nrules);

/* Decides for in and records the attempt (declined when the decision is
 * a decline), atomically with respect to other deciders. */
int risk_decide(struct risk *rk, const struct rules_input *in,
                struct rules_decision *out);
/* Records an attempt decided without the rules (a gateway limit). */
int risk_record(struct risk *rk, const struct rules_input *in, int declined);

/* The rules' view of a recorded row (strings point into row). */
void risk_input_from_row(const struct store_txn_row *row, const char *mode,
                         struct rules_input *in);
/* Replays one recorded row into the velocity store (start-up). */
int risk_replay_row(struct risk *rk, const struct store_txn_row *row);
/* txn_events listener (ctx: struct risk): a transaction the processor
 * declined (now, or later through a webhook or the reconciler) counts as
 * a decline for declines(). Rule declines were recorded when decided. */
void risk_on_txn_event(void *ctx, const struct pipeline_env *env,
                       const struct store_txn_row *row);

#endif
