/*
 * pipeline/settle.h — txn_settle(), the one way a recorded transaction
 * changes state: the pipeline's record stage, the reconciler, processor
 * webhooks and the reservation's payment-status check all call it.
 *
 * In one place it
 *  - checks the move against the transition table (core/txnstate.h):
 *    forward only, so a late webhook and a synchronous reply cannot undo
 *    each other; the store's writer checks again against the committed
 *    state, so a race between two callers is refused there;
 *  - writes the move durably with its audit event (resource: the
 *    transaction, outcome: the new state) and, when given, the idempotent
 *    answer and the purge of the one-time card, in one commit;
 *  - publishes the transaction as it now stands to the state-change
 *    listeners (pipeline/events.h) after the commit and before done runs
 *    (a row the caller did not give is read back through store_read, so
 *    the reactor never waits for the database).
 *
 * Refunds, captures and cancels move the state inside their own
 * write-ahead operation's job (store/pendingops.h, checked against the
 * same table): their outcome goes through txn_settle_op, which commits it
 * and publishes the move the same way.
 */
#ifndef FGW_PIPELINE_SETTLE_H
#define FGW_PIPELINE_SETTLE_H

#include "core/txnstate.h"
#include "store/pendingops.h"
#include "store/store.h"

struct pipeline_env;

struct txn_settlement {
	const char *txn_id;
	/* The state the caller read; TXN_STATE_NONE when it did not read
	 * one (the writer's check still applies). */
	enum txn_state from;
	enum txn_state to;
	const char *error_code; /* NULL or "": cleared */
	const char *error_message;
	const char *processor_ref;    /* NULL or "": kept as stored */
	const char *next_action_json; /* NULL: cleared */
	/* Who decided, for the audit event. */
	const char *actor;             /* client id, processor, "system" */
	const char *source;            /* remote address or "local" */
	const char *event_type;        /* "txn.outcome", "txn.webhook", ... */
	const char *details_json;      /* masked details or NULL */
	const struct store_idem *idem; /* the idempotent answer, or NULL */
	const char *purge_token;       /* one-time vault entry to drop, or NULL */
	/* The row as the caller holds it, to publish with the move applied
	 * without reading it back; NULL: read back after the commit. */
	const struct store_txn_row *row;
};

/* rc 0: committed, published, and row is the transaction as it now
 * stands; FGW_ERR_STATE: the move is not allowed from the committed
 * state (another path settled it first): nothing written or published,
 * row NULL; another negative code: not committed, row NULL. */
typedef void (*txn_settle_fn)(void *arg, int rc, const struct store_txn_row *row);

/* env is a reactor's (its waker set). 0 when queued (done runs later, on
 * env's reactor, exactly once);
 * FGW_ERR_STATE when s->from is known and the move (to a state the
 * table may not even know) is not allowed (done
 * is not called, nothing is written); FGW_ERR_INVALID, FGW_ERR_NOMEM or
 * the store's refusal otherwise (done is not called). done may be NULL. */
int txn_settle(const struct pipeline_env *env, const struct txn_settlement *s,
               txn_settle_fn done, void *arg);

/* The outcome of a refund, capture or cancel written ahead. */
struct txn_op_settlement {
	const struct store_pendingop *op;
	int succeeded;               /* 1: done at the processor; 0: refused */
	struct store_pendingop *out; /* the operation as committed, or NULL */
	/* A refund's idempotent answer built inside its commit (idem must be
	 * given), or NULL. */
	store_pendingop_answer_fn answer;
	void *answer_arg;
	const struct store_idem *idem;
	const struct store_audit *audit;
	size_t n_audit;
};

/* Commits the operation's outcome (store_pendingop_finish: a success
 * moves the transaction with it, forward only), then publishes the
 * transaction as it now stands when it moved, before done runs; done's
 * row is that row, or NULL when nothing moved (a refusal) or rc != 0.
 * Return and done as txn_settle. */
int txn_settle_op(const struct pipeline_env *env, const struct txn_op_settlement *s,
                  txn_settle_fn done, void *arg);

/* For a move committed by a job of its own (a processor's refund event):
 * publishes the row as it now stands, read back through store_read (off
 * the reactor on PostgreSQL), on env's reactor once the read is done. */
void txn_settle_publish(const struct pipeline_env *env, const char *txn_id);

#endif
