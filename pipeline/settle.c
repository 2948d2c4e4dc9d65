/*
 * pipeline/settle.c — txn_settle(): forward-only check, durable write with
 * its audit event, and publication to the listeners, for every state
 * change of a recorded transaction.
 */
#define LOG_MODULE "pipeline"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "pipeline/events.h"
#include "pipeline/pipeline.h"
#include "pipeline/settle.h"

struct settle_job {
	const struct pipeline_env *env;
	txn_settle_fn done;
	void *arg;
	struct store_txn_update upd;
	char *next_action_json; /* upd's, owned */
	int have_row;
	struct store_txn_row row; /* owned copies of its pointers */
};

static void
job_free(struct settle_job *j)
{
	if (j == NULL)
		return;
	free(j->next_action_json);
	store_txn_row_clear(&j->row);
	free(j);
}

static int
dup_or_null(const char *s, char **out)
{
	*out = NULL;
	if (s != NULL && (*out = strdup(s)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

/* The caller's row with the committed move applied, as a read would give
 * it. */
static void
apply_move(struct settle_job *j)
{
	struct store_txn_row *row = &j->row;

	fgw_strlcpy(row->status, j->upd.status, sizeof(row->status));
	fgw_strlcpy(row->error_code, j->upd.error_code, sizeof(row->error_code));
	fgw_strlcpy(row->error_message, j->upd.error_message, sizeof(row->error_message));
	if (j->upd.processor_ref[0] != '\0')
		fgw_strlcpy(row->processor_ref, j->upd.processor_ref, sizeof(row->processor_ref));
	free(row->next_action_json);
	row->next_action_json = j->next_action_json;
	j->next_action_json = NULL;
	row->updated_at = fgw_now_ms();
}

/* Publishes (when there is a row), runs done, frees j. */
static void
settle_end(struct settle_job *j, int rc, const struct store_txn_row *published)
{
	if (published != NULL)
		txn_events_publish(j->env, published);
	if (j->done != NULL)
		j->done(j->arg, rc, rc == 0 ? published : NULL);
	job_free(j);
}

/* On a read thread (PostgreSQL) or in place (SQLite): only j's fields. */
static int
settle_read(struct store_reader *rd, void *arg)
{
	struct settle_job *j = arg;

	return store_txn_get(rd, NULL, j->upd.id, &j->row);
}

static void
settle_read_done(void *arg, int rc)
{
	struct settle_job *j = arg;

	if (rc != 0)
		log_txn_error(j->upd.id,
		              "state %s committed but not read back: "
		              "the reconciler announces it",
		              j->upd.status);
	settle_end(j, 0, rc == 0 ? &j->row : NULL);
}

static void
settled(void *arg, int rc)
{
	struct settle_job *j = arg;

	if (rc == 0 && j->have_row) {
		apply_move(j);
		settle_end(j, 0, &j->row);
		return;
	}
	if (rc == 0) {
		/* Committed: the row as it now stands is read back off the
		 * reactor, then published, then done runs. */
		if (j->env->reader != NULL &&
		    store_read(j->env->store, j->env->waker, j->env->reader, settle_read, j,
		               settle_read_done) == 0)
			return;
		settle_read_done(j, FGW_ERR_SHUTDOWN);
		return;
	}
	settle_end(j, rc, NULL);
}

int
txn_settle(const struct pipeline_env *env, const struct txn_settlement *s,
           txn_settle_fn done, void *arg)
{
	struct settle_job *j = NULL;
	struct store_audit audit;
	int r;

	/* The listeners run where done does: on a reactor, never on the
	 * store's writer thread (a NULL waker). */
	if (env == NULL || env->store == NULL || env->waker == NULL || s == NULL ||
	    s->txn_id == NULL || s->actor == NULL || s->source == NULL ||
	    s->event_type == NULL)
		return FGW_ERR_INVALID;
	/* Forward only: what the caller saw already rules the move out (a
	 * name the table does not know is no move either). */
	if (s->from != TXN_STATE_NONE && !txn_state_may_move(s->from, s->to))
		return FGW_ERR_STATE;
	if (!txn_state_known(s->to))
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	j->env = env;
	j->done = done;
	j->arg = arg;
	if (fgw_strlcpy(j->upd.id, s->txn_id, sizeof(j->upd.id)) != 0) {
		r = FGW_ERR_INVALID;
		goto fail;
	}
	fgw_strlcpy(j->upd.status, txn_state_name(s->to), sizeof(j->upd.status));
	if (s->error_code != NULL)
		fgw_strlcpy(j->upd.error_code, s->error_code, sizeof(j->upd.error_code));
	if (s->error_message != NULL)
		fgw_strlcpy(j->upd.error_message, s->error_message, sizeof(j->upd.error_message));
	if (s->processor_ref != NULL)
		fgw_strlcpy(j->upd.processor_ref, s->processor_ref, sizeof(j->upd.processor_ref));
	if ((r = dup_or_null(s->next_action_json, &j->next_action_json)) != 0)
		goto fail;
	j->upd.next_action_json = j->next_action_json;
	if (s->row != NULL) {
		j->row = *s->row;
		j->row.metadata_json = NULL;
		j->row.next_action_json = NULL;
		if ((r = dup_or_null(s->row->metadata_json, &j->row.metadata_json)) != 0 ||
		    (r = dup_or_null(s->row->next_action_json, &j->row.next_action_json)) != 0)
			goto fail;
		j->have_row = 1;
	}
	/* Every move is audited the same way: who, the transaction, the
	 * state it took. */
	audit = (struct store_audit){
		s->actor,       s->source, s->event_type, s->txn_id, txn_state_name(s->to),
		s->details_json
	};
	if ((r = store_txn_finish(env->store, env->waker, &j->upd, s->purge_token,
	                          &(struct store_commit){ .idem = s->idem,
	                                                  .audit = &audit,
	                                                  .n_audit = 1,
	                                                  .done = settled,
	                                                  .arg = j })) != 0)
		goto fail;
	return FGW_OK;
fail:
	job_free(j);
	return r;
}

struct op_job {
	const struct pipeline_env *env;
	txn_settle_fn done;
	void *arg;
	int succeeded;
	struct store_pendingop op; /* as committed */
	struct store_pendingop *out;
	struct store_txn_row row; /* read back after the commit */
};

/* On a read thread (PostgreSQL) or in place (SQLite): only j's fields. */
static int
op_read(struct store_reader *rd, void *arg)
{
	struct op_job *j = arg;

	return store_txn_get(rd, NULL, j->op.txn_id, &j->row);
}

static void
op_read_done(void *arg, int rc)
{
	struct op_job *j = arg;

	if (rc == 0)
		/* A refund after a partial one leaves the state as it was: no
		 * move, but its listeners (refund.succeeded) still hear it. */
		(j->op.kind == STORE_OP_REFUND ? txn_events_publish_news
		                               : txn_events_publish)(j->env, &j->row);
	else
		log_txn_error(j->op.txn_id,
		              "moved but not read back: the reconciler announces it");
	if (j->done != NULL)
		j->done(j->arg, 0, rc == 0 ? &j->row : NULL);
	store_txn_row_clear(&j->row);
	free(j);
}

static void
op_settled(void *arg, int rc)
{
	struct op_job *j = arg;

	if (j->out != NULL)
		*j->out = j->op;
	/* A refusal leaves the transaction as it was; a refund that
	 * succeeded always names the state its commit decided. The row as
	 * it now stands is read back off the reactor, then published. */
	if (rc == 0 && j->succeeded &&
	    (j->op.kind != STORE_OP_REFUND || j->op.new_status[0] != '\0')) {
		if (j->env->reader == NULL ||
		    store_read(j->env->store, j->env->waker, j->env->reader, op_read, j,
		               op_read_done) != 0)
			op_read_done(j, FGW_ERR_SHUTDOWN);
		return;
	}
	if (j->done != NULL)
		j->done(j->arg, rc, NULL);
	free(j);
}

int
txn_settle_op(const struct pipeline_env *env, const struct txn_op_settlement *s,
              txn_settle_fn done, void *arg)
{
	struct store_commit c;
	struct op_job *j;
	int r;

	if (env == NULL || env->store == NULL || env->waker == NULL || s == NULL ||
	    s->op == NULL || (s->answer != NULL && !s->succeeded))
		return FGW_ERR_INVALID;
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return FGW_ERR_NOMEM;
	j->env = env;
	j->done = done;
	j->arg = arg;
	j->succeeded = s->succeeded;
	j->out = s->out;
	j->op = *s->op;
	c = (struct store_commit){ .idem = s->idem,
		                       .audit = s->audit,
		                       .n_audit = s->n_audit,
		                       .done = op_settled,
		                       .arg = j };
	if (s->answer != NULL)
		r = store_pendingop_finish_answered(env->store, env->waker, s->op, &j->op,
		                                    s->answer, s->answer_arg, &c);
	else
		r = store_pendingop_finish(env->store, env->waker, s->op, s->succeeded, &j->op,
		                           &c);
	if (r != 0)
		free(j);
	return r;
}

/* txn_settle_publish's read. */
struct publish_job {
	const struct pipeline_env *env;
	char txn_id[40];
	struct store_txn_row row;
};

/* On a read thread (PostgreSQL) or in place (SQLite): only j's fields. */
static int
publish_read(struct store_reader *rd, void *arg)
{
	struct publish_job *j = arg;

	return store_txn_get(rd, NULL, j->txn_id, &j->row);
}

static void
publish_read_done(void *arg, int rc)
{
	struct publish_job *j = arg;

	if (rc == 0)
		txn_events_publish_news(j->env, &j->row); /* a refund: maybe no move */
	else
		log_txn_error(j->txn_id, "moved but not read back: the reconciler announces it");
	store_txn_row_clear(&j->row);
	free(j);
}

void
txn_settle_publish(const struct pipeline_env *env, const char *txn_id)
{
	struct publish_job *j = NULL;

	if (env == NULL || txn_id == NULL)
		return;
	if (env->reader == NULL || env->store == NULL || env->waker == NULL ||
	    (j = calloc(1, sizeof(*j))) == NULL ||
	    fgw_strlcpy(j->txn_id, txn_id, sizeof(j->txn_id)) != 0) {
		log_txn_error(txn_id, "moved but not read back: the reconciler announces it");
		free(j);
		return;
	}
	j->env = env;
	if (store_read(env->store, env->waker, env->reader, publish_read, j,
	               publish_read_done) != 0)
		publish_read_done(j, FGW_ERR_SHUTDOWN);
}
