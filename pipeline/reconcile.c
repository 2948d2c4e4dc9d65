/*
 * pipeline/reconcile.c — the reconciler (pipeline/reconcile.h).
 *
 * One scan: claim the due unresolved rows (at most RECON_BATCH of each
 * kind; a claim is a store job that leases them to this instance until
 * lease_ms from now, so no other instance on the database takes them
 * meanwhile, and an instance that dies leaves them due again when the
 * lease ends), and for each ask the processor for the charge made with the row's
 * processor idempotency key — the same key the first attempt used, so
 * asking can never create a second charge. At most `concurrency` rows are
 * out at the processor at once; the others wait in the scan's queue and
 * start as earlier ones finish. A scan that filled a batch is followed at
 * once by the next one (a backlog clears at the processor's pace, not one
 * batch per interval). A definite answer moves the row forward through
 * txn_settle (with the idempotent answer rebuilt from the row so a
 * client's retry gets a replay instead of "in progress"), which publishes
 * it. No answer, or an unclear one, pushes the row's next
 * attempt back (doubling up to backoff_max_ms); after max_attempts the row
 * is flagged for manual review (audited once) and from then on asked only
 * every backoff_max_ms, so it still ends when the processor answers. The next scan starts only
 * when every row of the last one is done.
 *
 * What a scan reads (the unannounced moves and their rows; the claimed
 * rows and their clients' stored answers) it reads through store_read:
 * on PostgreSQL on a store read thread, never on the reactor, which goes
 * on serving requests meanwhile; each read is one fn for all the rows of
 * a batch. Claims and outcomes are store jobs, as ever.
 *
 * The same scan finishes refunds, captures and cancels a crash left
 * pending: the operation is sent again with its own processor key (the
 * processor answers a repeat with what it did, and does it if it never
 * did), and the answer moves the operation's row to succeeded or failed;
 * no answer backs off like a row.
 *
 * Payments waiting for 3-D Secure (requires_action) are polled the same
 * way, never flagged for manual review: a completed challenge moves them
 * on (an authorization becomes capturable); once action_expiry_ms has
 * passed since the payment began, a payment still waiting is cancelled at
 * the processor and recorded failed (PAYMENT_AUTHENTICATION_EXPIRED), and
 * the listeners (reservations) give its places back.
 */
#define LOG_MODULE "reconcile"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "pipeline/events.h"
#include "pipeline/pipeline.h"
#include "pipeline/notify.h"
#include "pipeline/reconcile.h"
#include "pipeline/settle.h"
#include "pipeline/stages.h"
#include "store/pendingops.h"
#include "store/reconcile.h"
#include "store/txnmoves.h"

#define RECON_BATCH 256
#define RECON_DEFAULT_CONCURRENCY 16
#define RECON_DEFAULT_ACTION_EXPIRY_MS 3600000LL
#define RECON_DEFAULT_CALL_MS 15000LL
/* A live publish deletes its move within milliseconds of the commit. */
#define MOVE_LINGER_MS 30000LL

struct reconciler {
	const struct pipeline_env *env;
	struct reconciler_opts o;
	struct event *timer;
	int outstanding;                       /* rows of the current scan not done */
	int active;                            /* of those, started (at the processor or
	                              being recorded): <= o.concurrency */
	int pumping;                           /* pump() is starting items */
	int full;                              /* the scan filled a batch: more are due */
	int progress;                          /* items whose outcome or backoff was
	                              recorded in this scan */
	struct recon_item *items;              /* those rows, freed by reconciler_free if
	                              their callbacks never come */
	struct recon_item *queue, *queue_tail; /* not started yet */
	int64_t started_at;                    /* fgw_now_ms() at reconciler_start */
	int replayed;                          /* the first scan replayed every old move */
	struct replay *replay;                 /* its read out, or NULL */
	struct claim_batch *claims;            /* claim jobs out, and their reads */
	int64_t lease_ms;                      /* what a claim lasts */
	int64_t start_by_ms;                   /* a row starts no later after its claim */
};

/* What one claim of a scan brings: rows of one kind. */
enum claim_what {
	CLAIM_UNKNOWN,
	CLAIM_ACTION,
	CLAIM_REFUND,
	CLAIM_CAPTURE,
	CLAIM_CANCEL
};

/* A client's stored answer for a row's key, as make_answer needs it:
 * read with the row, before the processor is asked (its hash and expiry
 * never change, and a live answer stored since makes the settle fail
 * FGW_ERR_STATE anyway). */
struct stored_key {
	int rc; /* of store_idem_get; FGW_ERR_NOT_FOUND: none */
	char request_hash[65];
	char txn_id[40];
	int64_t expires_at;
};

struct claim_batch {
	struct claim_batch *prev, *next; /* the reconciler's claims */
	struct reconciler *rc;
	enum claim_what what;
	int64_t now, lease_until;
	int n;
	struct store_unresolved *u;     /* CLAIM_UNKNOWN, CLAIM_ACTION */
	struct store_pendingop_due *op; /* the others */
	/* Read off the reactor once claimed (batch_read): each row's
	 * transaction, the read's code, its stored answer. */
	struct store_txn_row *rows;
	int *row_rc;
	struct stored_key *keys;
};

/* The unannounced moves of one scan and their rows, read off the reactor
 * (replay_read). */
struct replay {
	struct reconciler *rc;
	int64_t before;
	int n;
	struct store_txn_move moves[RECON_BATCH];
	struct store_txn_row *rows; /* n of them, allocated by the read */
	int row_rc[RECON_BATCH];
};

struct recon_item {
	struct recon_item *prev, *next;
	struct reconciler *rc;
	const struct proc_config *proc; /* the row's processor */
	const struct proc_type *type;
	struct store_txn_row row;
	struct stored_key key; /* the client's stored answer for row's key */
	struct store_unresolved u;
	struct store_txn_update upd;
	struct proc_call call;
	struct proc_result res;
	enum proc_op op; /* STATUS: the row; REFUND, CAPTURE,
	                                     CANCEL: pop (row: their transaction) */
	struct store_pendingop pop;
	int64_t rf_created_at;
	int give_up_now;          /* to manual review, whatever the count */
	struct recon_item *qnext; /* in rc->queue */
	int started;              /* counted in rc->active */
	int action;               /* a requires_action row (3-D Secure) */
	int expired;              /* its window has run out */
	int64_t lease_until;      /* this instance's claim on the row ends */
};

static void schedule(struct reconciler *rc, int64_t ms);
static void pump(struct reconciler *rc);
static void scan_done(struct reconciler *rc);

static const char *
op_name(enum proc_op op)
{
	return op == PROC_OP_REFUND ? "refund" : op == PROC_OP_CAPTURE ? "capture" : "cancel";
}

static void
item_free(struct recon_item *it)
{
	struct reconciler *rc = it->rc;
	if (it->prev != NULL)
		it->prev->next = it->next;
	else
		rc->items = it->next;
	if (it->next != NULL)
		it->next->prev = it->prev;
	store_txn_row_clear(&it->row);
	proc_result_clear(&it->res);
	free(it);
}

static void
item_done(struct recon_item *it)
{
	struct reconciler *rc = it->rc;
	if (it->started)
		rc->active--;
	item_free(it);
	pump(rc);
	if (--rc->outstanding == 0)
		scan_done(rc);
}

/* A record of this scan was written (or the row had moved on anyway):
 * the rows it listed are no longer due. */
static void
progressed(struct recon_item *it, int rc)
{
	if (rc == 0 || rc == FGW_ERR_STATE)
		it->rc->progress++;
}

static void
deferred(void *arg, int rc)
{
	struct recon_item *it = arg;
	progressed(it, rc);
	if (rc != 0 && rc != FGW_ERR_STATE)
		log_txn_error(it->row.id, "reconcile backoff not recorded: %s", fgw_strerror(rc));
	item_done(it);
}

/* The operators hear once that a row needs a person (the mail is an
 * outbox row of its own: a dead mail server never holds the reconciler). */
static void
notify_manual_review(struct reconciler *rc, const struct recon_item *it, int attempts,
                     const char *why)
{
	char n[16], once[96];
	const char *op = it->op == PROC_OP_STATUS ? "the payment" : op_name(it->op);
	struct notify_var v[] = {
		{ "txn_id", it->row.id },
		{ "operation", op },
		{ "reason", why },
		{ "attempts", n },
		{ "client", it->row.client_id },
	};
	snprintf(n, sizeof(n), "%d", attempts);
	snprintf(once, sizeof(once), "manual_review:%s:%s",
	         it->op == PROC_OP_STATUS ? "payment" : op_name(it->op),
	         it->op == PROC_OP_REFUND ? it->pop.id : it->row.id);
	(void)notify_mail(rc->env->store, rc->env->waker, "admin_manual_review",
	                  it->row.client_id, NULL, it->row.id, once, v,
	                  sizeof(v) / sizeof(v[0]));
}

/* Not resolved this time: back off, or give up to manual review. */
static void
defer(struct recon_item *it, const char *why)
{
	struct reconciler *rc = it->rc;
	int attempts = it->u.attempts + 1;
	/* A payment waiting for 3-D Secure ends by its window, not here. */
	int give_up = !it->action && (attempts >= rc->o.max_attempts || it->give_up_now);
	/* Flagged before: still asked at the longest backoff (so it ends once
	 * the processor answers), flagged and audited once. */
	int flagged = it->op == PROC_OP_STATUS && it->u.manual_review;
	int64_t wait = rc->o.interval_ms;
	int64_t now = fgw_now_ms();
	struct store_audit audit = { "system",   "local",        "txn.manual_review",
		                         it->row.id, it->row.status, NULL };
	char details[64], event[40];
	int r, n;

	if (it->op != PROC_OP_STATUS) {
		/* The transaction is the resource; which refund, in details. */
		n = snprintf(details, sizeof(details), "{\"refund\":\"%s\"}", it->pop.id);
		snprintf(event, sizeof(event), "txn.%s_manual_review", op_name(it->op));
		audit.event_type = event;
		audit.outcome = "pending";
		if (it->op == PROC_OP_REFUND && n > 0 && (size_t)n < sizeof(details))
			audit.details_json = details;
	}
	for (int i = 1; i < attempts && wait < rc->o.backoff_max_ms; i++)
		wait *= 2;
	if (wait > rc->o.backoff_max_ms)
		wait = rc->o.backoff_max_ms;
	/* Asked again no later than when its 3-D Secure window ends. */
	if (it->action && !it->expired && it->u.created_at + rc->o.action_expiry_ms > now &&
	    now + wait > it->u.created_at + rc->o.action_expiry_ms)
		wait = it->u.created_at + rc->o.action_expiry_ms - now;
	if (it->action && !it->expired)
		log_txn_debug(it->row.id, "waiting for 3-D Secure, next poll in %lld ms",
		              (long long)wait);
	else if (give_up && flagged)
		log_txn_warn(it->row.id,
		             "still unresolved (%s), in manual review, next in %lld ms", why,
		             (long long)wait);
	else if (give_up)
		log_txn_error(it->row.id,
		              "unresolved after %d attempts (%s): flagged for manual review",
		              attempts, why);
	if (give_up && !flagged && !(it->action && !it->expired))
		notify_manual_review(rc, it, attempts, why);
	else
		log_txn_warn(it->row.id, "still unresolved (%s), attempt %d, next in %lld ms",
		             why, attempts, (long long)wait);
	if (it->op != PROC_OP_STATUS)
		r = store_pendingop_defer(rc->env->store, rc->env->waker, &it->pop, attempts,
		                          now + wait, give_up,
		                          &(struct store_commit){ .audit = &audit,
		                                                  .n_audit = give_up ? 1 : 0,
		                                                  .done = deferred,
		                                                  .arg = it });
	else
		r = store_reconcile_defer(rc->env->store, rc->env->waker, it->row.id, attempts,
		                          now + wait, give_up || flagged,
		                          &(struct store_commit){
		                              .audit = &audit,
		                              .n_audit = give_up && !flagged ? 1 : 0,
		                              .done = deferred,
		                              .arg = it });
	if (r != 0)
		item_done(it);
}

static void
finished(void *arg, int rc, const struct store_txn_row *row)
{
	struct recon_item *it = arg;
	progressed(it, rc);
	if (rc == 0)
		log_txn_info(it->row.id, "reconciled: %s",
		             row != NULL ? row->status : it->upd.status);
	else if (rc != FGW_ERR_STATE)
		log_txn_error(it->row.id, "reconciled outcome not recorded: %s",
		              fgw_strerror(rc));
	item_done(it);
}

/* The stored answer for the client's key, as the live answer would have
 * been. 0 with idem->key[0] == '\0' when there is nothing to replace. */
static int
make_answer(struct recon_item *it, struct store_idem *idem)
{
	const struct store_txn_row *row = &it->row;
	const struct stored_key *stored = &it->key;
	const struct code_message *m = NULL;
	struct stage_answer a;

	memset(idem, 0, sizeof(*idem));
	if (row->idempotency_key[0] == '\0' || stored->rc == FGW_ERR_NOT_FOUND)
		return FGW_OK;
	if (stored->rc != 0)
		return stored->rc;
	if (strcmp(stored->txn_id, row->id) != 0)
		return FGW_OK;
	if (it->upd.error_code[0])
		m = stage_code_lookup(it->upd.error_code);
	memset(&a, 0, sizeof(a));
	a.id = row->id;
	a.status = it->upd.status;
	a.amount = row->amount;
	a.currency = row->currency;
	a.token = row->token;
	a.brand = row->brand;
	a.last4 = row->last4;
	a.exp_month = row->exp_month;
	a.exp_year = row->exp_year;
	a.proc_name = it->proc->name;
	a.reference = it->upd.processor_ref[0] ? it->upd.processor_ref : row->processor_ref;
	a.next_action_json = it->res.next_action_json;
	a.http_status = m != NULL ? m->http_status : 200;
	a.error_code = m != NULL ? m->code : "";
	a.error_message = m != NULL ? m->message : "";
	a.with_txn_id = 1;
	fgw_strlcpy(idem->client_id, row->client_id, sizeof(idem->client_id));
	fgw_strlcpy(idem->key, row->idempotency_key, sizeof(idem->key));
	fgw_strlcpy(idem->request_hash, stored->request_hash, sizeof(idem->request_hash));
	fgw_strlcpy(idem->txn_id, row->id, sizeof(idem->txn_id));
	idem->status_code = a.http_status;
	idem->created_at = fgw_now_ms();
	idem->expires_at = stored->expires_at;
	return stage_answer_json(&a, &idem->body);
}

static void
resolve(struct recon_item *it, enum txn_state to, const char *code)
{
	const struct pipeline_env *env = it->rc->env;
	const struct code_message *m = code != NULL ? stage_code_lookup(code) : NULL;
	struct txn_settlement set;
	struct store_idem idem;
	char details[160];
	int r, n;

	/* it->upd is what the stored answer is built from (make_answer). */
	memset(&it->upd, 0, sizeof(it->upd));
	fgw_strlcpy(it->upd.id, it->row.id, sizeof(it->upd.id));
	fgw_strlcpy(it->upd.status, txn_state_name(to), sizeof(it->upd.status));
	if (m != NULL) {
		fgw_strlcpy(it->upd.error_code, m->code, sizeof(it->upd.error_code));
		fgw_strlcpy(it->upd.error_message, m->message, sizeof(it->upd.error_message));
	}
	fgw_strlcpy(it->upd.processor_ref, it->res.reference, sizeof(it->upd.processor_ref));
	it->upd.next_action_json = it->res.next_action_json;
	n = snprintf(details, sizeof(details), "{\"from\":\"%s\",\"attempt\":%d}",
	             it->row.status, it->u.attempts + 1);
	if (n < 0 || (size_t)n >= sizeof(details))
		details[0] = '\0';
	if ((r = make_answer(it, &idem)) != 0) {
		store_idem_clear(&idem);
		defer(it, "answer not built");
		return;
	}
	set = (struct txn_settlement){
		.txn_id = it->row.id,
		.from = txn_state_of(it->row.status),
		.to = to,
		.error_code = it->upd.error_code,
		.error_message = it->upd.error_message,
		.processor_ref = it->upd.processor_ref,
		.next_action_json = it->upd.next_action_json,
		.actor = "system",
		.source = "local",
		.event_type = "txn.reconciled",
		.details_json = details[0] ? details : NULL,
		.idem = idem.key[0] ? &idem : NULL,
		.row = &it->row,
	};
	r = txn_settle(env, &set, finished, it);
	store_idem_clear(&idem);
	if (r == FGW_ERR_STATE) {
		/* Settled by another path since it was listed: theirs stands. */
		finished(it, r, NULL);
	} else if (r != 0) {
		log_txn_error(it->row.id, "reconciled outcome refused: %s", fgw_strerror(r));
		item_done(it);
	}
}

static int send_to_processor(struct recon_item *it, enum proc_op op,
                             const struct proc_op_request *oreq, proc_call_done_fn cb);

/* The answer to the cancel of a payment whose 3-D Secure window ran out. */
static void
action_cancel_replied(void *arg, const struct proc_reply *reply)
{
	struct recon_item *it = arg;

	if (reply->err != 0) {
		defer(it, fgw_strerror(reply->err));
		return;
	}
	if (!reply->parsed) {
		defer(it, "cancel answer not understood");
		return;
	}
	if (proc_op_verdict(PROC_OP_CANCEL, &it->res) != OP_DONE) {
		/* Refused (the customer may just have finished the challenge)
		 * or unclear: the next poll tells. */
		defer(it, "cancel of the expired 3-D Secure payment not confirmed");
		return;
	}
	log_txn_info(it->row.id,
	             "3-D Secure not completed in time: cancelled at the processor");
	resolve(it, TXN_FAILED, "PAYMENT_AUTHENTICATION_EXPIRED");
}

/* Cancels, at the processor, a payment still waiting for its challenge
 * after the window: with a key of its own, so a repeat is harmless. */
static void
cancel_action(struct recon_item *it)
{
	struct proc_op_request oreq;
	char key[64], ref[sizeof(it->res.reference)];
	int r;

	fgw_strlcpy(ref, it->res.reference[0] ? it->res.reference : it->row.processor_ref,
	            sizeof(ref));
	if (snprintf(key, sizeof(key), "%s-3ds-expiry", it->row.id) >= (int)sizeof(key) ||
	    ref[0] == '\0') {
		defer(it, "no processor reference to cancel");
		return;
	}
	memset(&oreq, 0, sizeof(oreq));
	oreq.txn_id = it->row.id;
	oreq.idempotency_key = key;
	oreq.reference = ref;
	if ((r = send_to_processor(it, PROC_OP_CANCEL, &oreq, action_cancel_replied)) != 0)
		defer(it, fgw_strerror(r));
}

/* The answers that settle a payment whatever it was waiting for: 1 when
 * the answer was one of them (and the payment is being settled). */
static int
resolve_settled(struct recon_item *it)
{
	switch (it->res.outcome) {
	case PROC_SUCCEEDED:
		resolve(it, TXN_SUCCEEDED, NULL);
		return 1;
	case PROC_AUTHORIZED:
		resolve(it, TXN_AUTHORIZED, NULL);
		return 1;
	case PROC_DECLINED:
		resolve(it, TXN_DECLINED,
		        it->res.code[0] ? it->res.code : "PAYMENT_CARD_DECLINED");
		return 1;
	default:
		return 0;
	}
}

/* A status answer for a payment waiting for 3-D Secure. */
static void
action_replied(struct recon_item *it)
{
	if (resolve_settled(it))
		return;
	switch (it->res.outcome) {
	case PROC_CANCELED:
		/* Cancelled already (an earlier expiry whose record was lost,
		 * or at the processor's side): never charged. */
		resolve(it, TXN_FAILED,
		        it->expired ? "PAYMENT_AUTHENTICATION_EXPIRED"
		                    : "PAYMENT_PROCESSING_FAILED");
		break;
	case PROC_REQUIRES_ACTION:
		if (it->expired)
			cancel_action(it);
		else
			defer(it, "waiting for 3-D Secure");
		break;
	default:
		/* Not found, failed, unknown: the processor handed us this
		 * challenge, so it is not a "never charged". Ask again. */
		defer(it, "processor gave no definite status");
		break;
	}
}

static void
status_replied(void *arg, const struct proc_reply *reply)
{
	struct recon_item *it = arg;
	int64_t age = fgw_now_ms() - it->row.updated_at;

	if (reply->err != 0) {
		defer(it, fgw_strerror(reply->err));
		return;
	}
	if (!reply->parsed) {
		defer(it, "status answer not understood");
		return;
	}
	if (!proc_result_is_for(&it->res, it->row.id)) {
		/* A hit for another transaction (a search by our metadata
		 * can return one): ours was not found. */
		log_txn_warn(it->row.id, "processor's status answer is for another transaction");
		proc_result_clear(&it->res);
		it->res.outcome = PROC_NOT_FOUND;
	}
	if (proc_result_other_sum(&it->res, it->row.amount, it->row.currency)) {
		/* Changed at the processor after we made it: its state is not
		 * this payment's. A person decides: manual review at once, a
		 * payment waiting for 3-D Secure included (its window does not
		 * end it either). */
		log_txn_error(it->row.id, "processor's status is for another amount or currency");
		proc_result_clear(&it->res);
		it->give_up_now = 1;
		it->action = 0;
		defer(it, "the processor names another amount or currency");
		return;
	}
	if (it->action) {
		action_replied(it);
		return;
	}
	if (resolve_settled(it))
		return;
	switch (it->res.outcome) {
	case PROC_REQUIRES_ACTION:
		resolve(it, TXN_REQUIRES_ACTION, NULL);
		break;
	case PROC_NOT_FOUND:
		/* Never charged — but only once no request of the first attempt
		 * can still be on its way: the grace period exceeds the
		 * processor timeout. */
		if (age >= it->rc->o.grace_ms &&
		    age >= (it->rc->o.not_found_settle_ms >= 0 ? it->rc->o.not_found_settle_ms
		                                               : it->type->not_found_settle_ms))
			resolve(it, TXN_FAILED, "PAYMENT_PROCESSING_FAILED");
		else
			defer(it, "not found yet");
		break;
	default:
		defer(it, "processor gave no definite status");
		break;
	}
}

enum op_verdict
proc_op_verdict(enum proc_op op, const struct proc_result *res)
{
	enum proc_outcome want = op == PROC_OP_CANCEL ? PROC_CANCELED : PROC_SUCCEEDED;

	if (res->outcome == want)
		return OP_DONE;
	/* A mapped code is a refusal; PAYMENT_PROCESSING_FAILED (a 5xx, an
	 * answer we do not understand) says nothing certain. */
	if (res->outcome == PROC_FAILED && res->code[0] &&
	    strcmp(res->code, "PAYMENT_PROCESSING_FAILED") != 0)
		return OP_REFUSED;
	return OP_UNKNOWN;
}

/* The operation's outcome is committed, and the transaction's move (a
 * success) published by txn_settle_op. */
static void
op_finished(void *arg, int rc, const struct store_txn_row *row)
{
	struct recon_item *it = arg;
	(void)row;
	progressed(it, rc);
	if (rc == 0) {
		log_txn_info(it->row.id, "%s reconciled", op_name(it->op));
	} else if (rc != FGW_ERR_STATE) {
		log_txn_error(it->row.id, "reconciled %s not recorded: %s", op_name(it->op),
		              fgw_strerror(rc));
	}
	item_done(it);
}

static void
op_replied(void *arg, const struct proc_reply *reply)
{
	struct recon_item *it = arg;
	const struct pipeline_env *env = it->rc->env;
	struct store_audit audit = { "system", "local", NULL, it->row.id, NULL, NULL };
	struct txn_op_settlement set;
	enum op_verdict v;
	char details[160], event[40];
	int n, r;

	if (reply->err != 0) {
		defer(it, fgw_strerror(reply->err));
		return;
	}
	if (!reply->parsed) {
		defer(it, "operation answer not understood");
		return;
	}
	if ((v = proc_op_verdict(it->op, &it->res)) == OP_UNKNOWN) {
		defer(it, "processor gave no definite answer to the operation");
		return;
	}
	snprintf(event, sizeof(event), "txn.%s_reconciled", op_name(it->op));
	audit.event_type = event;
	audit.outcome = v == OP_DONE ? "succeeded" : "failed";
	n = snprintf(details, sizeof(details),
	             "{\"refund\":\"%s\",\"amount\":%lld,\"attempt\":%d}", it->pop.id,
	             (long long)it->pop.amount, it->u.attempts + 1);
	if (n > 0 && (size_t)n < sizeof(details))
		audit.details_json = details;
	if (it->op == PROC_OP_REFUND)
		fgw_strlcpy(it->pop.processor_ref, it->res.op_ref, sizeof(it->pop.processor_ref));
	set = (struct txn_op_settlement){ .op = &it->pop,
		                              .succeeded = v == OP_DONE,
		                              .out = &it->pop,
		                              .audit = &audit,
		                              .n_audit = 1 };
	r = txn_settle_op(env, &set, op_finished, it);
	if (r != 0) {
		log_txn_error(it->row.id, "reconciled %s refused: %s", op_name(it->op),
		              fgw_strerror(r));
		item_done(it);
	}
}

/* Sends op to the processor the row went to, never another one; the
 * answer comes to cb. */
static int
send_to_processor(struct recon_item *it, enum proc_op op,
                  const struct proc_op_request *oreq, proc_call_done_fn cb)
{
	static const enum proc_call_op calls[] = { PROC_CALL_STATUS, PROC_CALL_CAPTURE,
		                                       PROC_CALL_CANCEL, PROC_CALL_REFUND };
	const struct pipeline_env *env = it->rc->env;
	int r;

	if (pipeline_proc_by_name(env, it->row.processor, &it->proc, &it->type) != 0)
		return FGW_ERR_INVALID;
	memset(&it->call, 0, sizeof(it->call));
	it->call.op = calls[op];
	it->call.inst = pipeline_proc_find(env, it->row.processor);
	it->call.opreq = oreq;
	it->call.res = &it->res;
	it->call.done = cb;
	it->call.arg = it;
	r = proc_call_start(env, &it->call);
	it->call.opreq = NULL; /* built */
	return r;
}

/* Sends the pending operation again, with its own processor key. */
static int
resend_op(struct recon_item *it)
{
	struct proc_op_request oreq;

	/* A key the processor may have forgotten would make the re-sent
	 * refund a second one: a person decides (an hour of margin). */
	if (it->op == PROC_OP_REFUND &&
	    pipeline_proc_by_name(it->rc->env, it->row.processor, &it->proc, &it->type) ==
	        0 &&
	    it->type->op_key_ttl_ms > 0 &&
	    fgw_now_ms() - it->rf_created_at > it->type->op_key_ttl_ms - 3600000) {
		it->give_up_now = 1;
		return FGW_ERR_STATE;
	}
	memset(&oreq, 0, sizeof(oreq));
	oreq.txn_id = it->row.id;
	oreq.idempotency_key = it->pop.idempotency_key;
	oreq.reference = it->row.processor_ref;
	oreq.amount = it->op == PROC_OP_REFUND ? it->pop.amount : 0;
	return send_to_processor(it, it->op, &oreq, op_replied);
}

static int
ask(struct recon_item *it)
{
	struct proc_op_request oreq;

	memset(&oreq, 0, sizeof(oreq));
	oreq.txn_id = it->row.id;
	/* The key the first attempt sent: asking never charges. */
	oreq.idempotency_key = it->row.processor_idem_key[0] ? it->row.processor_idem_key
	                                                     : it->row.id;
	oreq.reference = it->row.processor_ref;
	return send_to_processor(it, PROC_OP_STATUS, &oreq, status_replied);
}

/* A new item of the current scan for the i-th row of batch b, whose
 * row (moved into the item) and stored answer were read; NULL when out of
 * memory or the row was not read. It starts when enqueue()d and a place
 * is free (pump). */
static struct recon_item *
item_new(struct claim_batch *b, int i, const char *txn_id)
{
	struct reconciler *rc = b->rc;
	struct recon_item *it;

	if (b->row_rc[i] != 0) {
		log_txn_error(txn_id, "reconcile: row not read: %s", fgw_strerror(b->row_rc[i]));
		return NULL;
	}
	if ((it = calloc(1, sizeof(*it))) == NULL)
		return NULL;
	it->rc = rc;
	it->next = rc->items;
	if (rc->items != NULL)
		rc->items->prev = it;
	rc->items = it;
	rc->outstanding++;
	it->row = b->rows[i];
	memset(&b->rows[i], 0, sizeof(b->rows[i])); /* the item's now */
	it->key = b->keys[i];
	return it;
}

static void
enqueue(struct recon_item *it)
{
	struct reconciler *rc = it->rc;
	if (rc->queue_tail != NULL)
		rc->queue_tail->qnext = it;
	else
		rc->queue = it;
	rc->queue_tail = it;
}

static void
item_start(struct recon_item *it)
{
	int r;

	if (fgw_now_ms() > it->lease_until - it->rc->lease_ms + it->rc->start_by_ms) {
		/* Too little of the claim is left for its calls: another
		 * instance may claim the row before they end. Left as it is:
		 * due again (for anyone) once the lease ends. */
		log_txn_debug(it->row.id, "reconcile: claim too old to start, left for the next");
		item_done(it);
		return;
	}
	if (it->op == PROC_OP_STATUS) {
		if ((r = ask(it)) != 0)
			defer(it, fgw_strerror(r));
	} else if ((r = resend_op(it)) != 0) {
		defer(it, it->give_up_now ? "its processor key may have expired: not re-sent"
		                          : fgw_strerror(r));
	}
}

/* Starts queued items while fewer than o.concurrency are out. An item
 * that ends at once calls item_done -> pump, which then returns (the
 * loop here goes on). */
static void
pump(struct reconciler *rc)
{
	struct recon_item *it;

	if (rc->pumping)
		return;
	rc->pumping = 1;
	while (rc->active < rc->o.concurrency && (it = rc->queue) != NULL) {
		if ((rc->queue = it->qnext) == NULL)
			rc->queue_tail = NULL;
		it->qnext = NULL;
		it->started = 1;
		rc->active++;
		item_start(it);
	}
	rc->pumping = 0;
}

/* The scan's last item is done. A full batch means more rows are due now:
 * the next scan runs at once — unless nothing of this one could be
 * recorded, which would only list the same rows again. */
static void
scan_done(struct reconciler *rc)
{
	schedule(rc, rc->full && rc->progress > 0 ? 0 : rc->o.interval_ms);
}

static void
batch_free(struct claim_batch *b)
{
	struct reconciler *rc = b->rc;

	if (b->prev != NULL)
		b->prev->next = b->next;
	else
		rc->claims = b->next;
	if (b->next != NULL)
		b->next->prev = b->prev;
	for (int i = 0; b->rows != NULL && i < b->n; i++)
		store_txn_row_clear(&b->rows[i]);
	free(b->rows);
	free(b->row_rc);
	free(b->keys);
	free(b->u);
	free(b->op);
	free(b);
}

/* Refunds, captures or cancels (kind) a crash or an unknown answer left
 * pending, claimed. */
static void
items_of_ops(struct claim_batch *b, enum store_op_kind kind)
{
	static const enum proc_op proc_ops[] = {
		[STORE_OP_REFUND] = PROC_OP_REFUND,
		[STORE_OP_CAPTURE] = PROC_OP_CAPTURE,
		[STORE_OP_CANCEL] = PROC_OP_CANCEL,
	};
	const struct store_pendingop_due *due = b->op;

	for (int i = 0; i < b->n; i++) {
		struct recon_item *it = item_new(b, i, due[i].txn_id);
		if (it == NULL)
			continue;
		it->op = proc_ops[kind];
		it->lease_until = b->lease_until;
		it->u.attempts = due[i].attempts;
		it->pop.kind = kind;
		fgw_strlcpy(it->pop.id, due[i].id, sizeof(it->pop.id));
		fgw_strlcpy(it->pop.txn_id, due[i].txn_id, sizeof(it->pop.txn_id));
		fgw_strlcpy(it->pop.idempotency_key, due[i].idempotency_key,
		            sizeof(it->pop.idempotency_key));
		it->pop.amount = due[i].amount;
		it->pop.txn_amount = it->row.amount;
		it->rf_created_at = due[i].created_at;
		enqueue(it);
	}
}

/* Unknown outcomes (action 0) or payments waiting for 3-D Secure (1),
 * claimed. */
static void
items_of_rows(struct claim_batch *b, int action)
{
	struct reconciler *rc = b->rc;
	const struct store_unresolved *due = b->u;

	for (int i = 0; i < b->n; i++) {
		struct recon_item *it = item_new(b, i, due[i].id);
		if (it == NULL)
			continue;
		it->u = due[i];
		it->action = action;
		it->lease_until = b->lease_until;
		it->expired = action && b->now - due[i].created_at >= rc->o.action_expiry_ms;
		enqueue(it);
	}
}

/* The transaction id of a claimed row. */
static const char *
batch_txn_id(const struct claim_batch *b, int i)
{
	return b->what == CLAIM_UNKNOWN || b->what == CLAIM_ACTION ? b->u[i].id
	                                                           : b->op[i].txn_id;
}

/* On a store read thread (PostgreSQL) or in place (SQLite): only b's
 * rows, read into b. Each row's failure is its own. */
static int
batch_read(struct store_reader *rd, void *arg)
{
	struct claim_batch *b = arg;
	struct store_idem idem;

	for (int i = 0; i < b->n; i++) {
		struct store_txn_row *row = &b->rows[i];
		struct stored_key *k = &b->keys[i];

		if ((b->row_rc[i] = store_txn_get(rd, NULL, batch_txn_id(b, i), row)) != 0)
			continue;
		k->rc = FGW_ERR_NOT_FOUND;
		if (row->idempotency_key[0] == '\0')
			continue;
		memset(&idem, 0, sizeof(idem));
		if ((k->rc = store_idem_get(rd, row->client_id, row->idempotency_key, &idem)) ==
		    0) {
			fgw_strlcpy(k->request_hash, idem.request_hash, sizeof(k->request_hash));
			fgw_strlcpy(k->txn_id, idem.txn_id, sizeof(k->txn_id));
			k->expires_at = idem.expires_at;
		}
		store_idem_clear(&idem);
	}
	return FGW_OK;
}

/* The batch's rows are read: its items start. */
static void
batch_read_done(void *arg, int r)
{
	static const enum store_op_kind kinds[] = {
		[CLAIM_REFUND] = STORE_OP_REFUND,
		[CLAIM_CAPTURE] = STORE_OP_CAPTURE,
		[CLAIM_CANCEL] = STORE_OP_CANCEL,
	};
	struct claim_batch *b = arg;
	struct reconciler *rc = b->rc;

	/* Rows not started stay claimed until the lease ends: due again
	 * then, for any instance. */
	if (r != 0)
		log_error("reconcile scan failed: reading claimed rows: %s", fgw_strerror(r));
	else if (b->what == CLAIM_UNKNOWN || b->what == CLAIM_ACTION)
		items_of_rows(b, b->what == CLAIM_ACTION);
	else
		items_of_ops(b, kinds[b->what]);
	batch_free(b);
	pump(rc);
	if (--rc->outstanding == 0)
		scan_done(rc);
}

static void
claimed(void *arg, int r)
{
	struct claim_batch *b = arg;
	struct reconciler *rc = b->rc;
	const struct pipeline_env *env = rc->env;

	if (r != 0) {
		log_error("reconcile scan failed: claiming due rows: %s", fgw_strerror(r));
	} else if (b->n > 0) {
		if (b->n == RECON_BATCH)
			rc->full = 1;
		if ((b->rows = calloc((size_t)b->n, sizeof(*b->rows))) == NULL ||
		    (b->row_rc = calloc((size_t)b->n, sizeof(*b->row_rc))) == NULL ||
		    (b->keys = calloc((size_t)b->n, sizeof(*b->keys))) == NULL)
			r = FGW_ERR_NOMEM;
		else if ((r = store_read(env->store, env->waker, env->reader, batch_read, b,
		                         batch_read_done)) == 0)
			return; /* batch_read_done goes on */
		log_error("reconcile scan failed: claimed rows not read: %s", fgw_strerror(r));
	}
	batch_free(b);
	pump(rc);
	if (--rc->outstanding == 0)
		scan_done(rc);
}

/* Submits the claim of one kind of due rows; the items start as it
 * commits (claimed). */
static void
claim(struct reconciler *rc, int64_t now, enum claim_what what)
{
	static const enum store_op_kind kinds[] = {
		[CLAIM_REFUND] = STORE_OP_REFUND,
		[CLAIM_CAPTURE] = STORE_OP_CAPTURE,
		[CLAIM_CANCEL] = STORE_OP_CANCEL,
	};
	const struct pipeline_env *env = rc->env;
	struct claim_batch *b = calloc(1, sizeof(*b));
	int r = FGW_ERR_NOMEM;

	if (b == NULL)
		goto fail;
	b->rc = rc;
	b->what = what;
	b->now = now;
	b->lease_until = now + rc->lease_ms;
	b->next = rc->claims;
	if (rc->claims != NULL)
		rc->claims->prev = b;
	rc->claims = b;
	rc->outstanding++;
	if (what == CLAIM_UNKNOWN || what == CLAIM_ACTION) {
		if ((b->u = calloc(RECON_BATCH, sizeof(*b->u))) != NULL)
			r = store_unresolved_claim(env->store, env->waker, what == CLAIM_ACTION, now,
			                           now - rc->o.grace_ms, b->lease_until, b->u,
			                           RECON_BATCH, &b->n, claimed, b);
	} else if ((b->op = calloc(RECON_BATCH, sizeof(*b->op))) != NULL) {
		r = store_pendingop_claim(env->store, env->waker, kinds[what], now,
		                          now - rc->o.grace_ms, b->lease_until, b->op,
		                          RECON_BATCH, &b->n, claimed, b);
	}
	if (r == 0)
		return;
	rc->outstanding--;
	batch_free(b);
fail:
	log_error("reconcile scan failed: %s", fgw_strerror(r));
}

/* States committed whose listeners were never told (the process ended
 * between the state's commit and theirs): told now, with the row as it
 * stands but in the state it took then. The first scan takes every row
 * older than this process; later ones only rows a live publish should
 * long have deleted (a publish that failed to queue its jobs). The
 * listeners' jobs and the row's deletion commit together, and only if
 * that deletion finds the row (txn_events_publish), so a replay never
 * repeats what a publish already queued, here or on another instance. */

/* On a store read thread (PostgreSQL) or in place (SQLite): only p. */
static int
replay_read(struct store_reader *rd, void *arg)
{
	struct replay *p = arg;
	int r;

	if ((r = store_txn_moves_due(rd, p->before, p->moves, RECON_BATCH, &p->n)) != 0)
		return r;
	if (p->n > 0 && (p->rows = calloc((size_t)p->n, sizeof(*p->rows))) == NULL)
		return FGW_ERR_NOMEM;
	for (int i = 0; i < p->n; i++)
		p->row_rc[i] = store_txn_get(rd, NULL, p->moves[i].txn_id, &p->rows[i]);
	return FGW_OK;
}

static void
replay_free(struct replay *p)
{
	for (int i = 0; p->rows != NULL && i < p->n; i++)
		store_txn_row_clear(&p->rows[i]);
	free(p->rows);
	free(p);
}

static void
replay_done(void *arg, int r)
{
	struct replay *p = arg;
	struct reconciler *rc = p->rc;

	rc->replay = NULL;
	if (r != 0) {
		log_error("reading unannounced states: %s", fgw_strerror(r));
		goto out;
	}
	rc->replayed = 1;
	for (int i = 0; i < p->n; i++) {
		const struct store_txn_move *m = &p->moves[i];
		struct store_txn_row *row = &p->rows[i];

		if (p->row_rc[i] != 0) {
			log_error("txn %s: state %s not announced: %s", m->txn_id, m->status,
			          fgw_strerror(p->row_rc[i]));
			/* Gone (never, but a row nobody can announce must
			 * not be read again on every scan). */
			if (p->row_rc[i] == FGW_ERR_NOT_FOUND)
				(void)store_txn_moves_done(rc->env->store, rc->env->waker, m->txn_id,
				                           m->status, NULL, NULL);
			continue;
		}
		log_info("txn %s: announcing state %s left unannounced", m->txn_id, m->status);
		fgw_strlcpy(row->status, m->status, sizeof(row->status));
		row->updated_at = m->at;
		txn_events_publish(rc->env, row);
	}
out:
	replay_free(p);
	if (--rc->outstanding == 0)
		scan_done(rc);
}

static void
replay_moves(struct reconciler *rc, int64_t now)
{
	const struct pipeline_env *env = rc->env;
	struct replay *p;
	int r;

	if ((p = calloc(1, sizeof(*p))) == NULL) {
		log_error("reading unannounced states: %s", fgw_strerror(FGW_ERR_NOMEM));
		return;
	}
	p->rc = rc;
	p->before = rc->replayed ? now - MOVE_LINGER_MS : rc->started_at;
	rc->outstanding++;
	rc->replay = p;
	if ((r = store_read(env->store, env->waker, env->reader, replay_read, p,
	                    replay_done)) == 0)
		return;
	log_error("reading unannounced states: %s", fgw_strerror(r));
	rc->replay = NULL;
	rc->outstanding--;
	free(p);
}

static void
scan(evutil_socket_t fd, short what, void *arg)
{
	struct reconciler *rc = arg;
	int64_t now = fgw_now_ms();

	(void)fd;
	(void)what;
	rc->full = 0;
	rc->progress = 0;
	rc->outstanding = 1; /* held while listing, so no item ends the scan */
	replay_moves(rc, now);
	for (enum claim_what w = CLAIM_UNKNOWN; w <= CLAIM_CANCEL; w++)
		claim(rc, now, w);
	pump(rc);
	if (--rc->outstanding == 0)
		scan_done(rc);
}

static void
schedule(struct reconciler *rc, int64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
	event_add(rc->timer, &tv);
}

int
reconciler_start(const struct pipeline_env *env, const struct reconciler_opts *opts,
                 struct reconciler **out)
{
	struct reconciler *rc;

	*out = NULL;
	if (env == NULL || opts == NULL || env->reader == NULL || env->store == NULL ||
	    opts->interval_ms <= 0 || opts->max_attempts <= 0 || opts->concurrency < 0 ||
	    opts->action_expiry_ms < 0)
		return FGW_ERR_INVALID;
	if ((rc = calloc(1, sizeof(*rc))) == NULL)
		return FGW_ERR_NOMEM;
	rc->env = env;
	rc->o = *opts;
	rc->started_at = fgw_now_ms();
	if (rc->o.backoff_max_ms < rc->o.interval_ms)
		rc->o.backoff_max_ms = rc->o.interval_ms;
	if (rc->o.concurrency == 0)
		rc->o.concurrency = RECON_DEFAULT_CONCURRENCY;
	if (rc->o.action_expiry_ms == 0)
		rc->o.action_expiry_ms = RECON_DEFAULT_ACTION_EXPIRY_MS;
	if (rc->o.call_ms <= 0)
		rc->o.call_ms = RECON_DEFAULT_CALL_MS;
	rc->lease_ms = 4 * rc->o.call_ms + 10000;
	rc->start_by_ms = rc->lease_ms - (2 * rc->o.call_ms + 5000);
	if ((rc->timer = evtimer_new(env->base, scan, rc)) == NULL) {
		free(rc);
		return FGW_ERR_NOMEM;
	}
	schedule(rc, 0); /* start-up: every unresolved row left by a crash */
	*out = rc;
	return FGW_OK;
}

void
reconciler_free(struct reconciler *rc)
{
	if (rc == NULL)
		return;
	/* Rows still out wait for callbacks that will never run (the httpc
	 * and waker were freed first); they stay unresolved in the store for
	 * the next start. Queued ones never started. */
	rc->queue = rc->queue_tail = NULL;
	while (rc->items != NULL)
		item_free(rc->items);
	/* Claims whose commit or read never reached us (the reactor
	 * cancelled its reads first: none still runs): their rows are due
	 * again once the lease ends. */
	while (rc->claims != NULL)
		batch_free(rc->claims);
	if (rc->replay != NULL)
		replay_free(rc->replay);
	event_free(rc->timer);
	free(rc);
}
