/*
 * gateway/routes_txnops.c — POST /v1/transactions/{id}/refund, /capture
 * and /cancel: operations on a recorded transaction.
 *
 * Each is authenticated (API key, scoped to the key's client), passed
 * through the idempotency front door, checked against the row's state,
 * sent to the processor through the adapter's build_op/parse_op, and
 * recorded: the state move (forward-only), the idempotent answer and the
 * audit event in one commit, then published (txn_settle_op).
 *
 * Each is written ahead (store/pendingops.h): its row (a refund, a capture
 * or a cancel) is committed `pending` with its processor key
 * before the processor is asked, so a crash at any point leaves a row the
 * reconciler re-sends with the same key. A definite refusal moves it to
 * `failed`, and so does a request that provably never left (not sent:
 * answered 503 OPERATION_NOT_SENT at once, nothing to re-send); no answer
 * leaves it pending for the reconciler, or for the client's retry, which
 * adopts the row and re-sends it.
 *
 * The processor idempotency key of an operation is stable across the
 * client's retries: derived from the client's Idempotency-Key when there
 * is one (so a retry after an unknown outcome never refunds twice), else a
 * fresh refund id; capture and cancel succeed at most once per
 * transaction, so theirs is derived from the transaction id (with the
 * attempt number after a refused attempt, store/pendingops.h).
 */
#define LOG_MODULE "http"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/http.h>
#include <sodium.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "gateway/http.h"
#include "gateway/reqctx.h"
#include "pipeline/reconcile.h"
#include "pipeline/settle.h"
#include "processors/httpc.h"
#include "store/pendingops.h"
#include "store/store.h"

struct op_ctx {
	struct gw_req g;                     /* first: the request, its key, the reactor */
	char request_id[LOG_REQUEST_ID_MAX]; /* on every line its callbacks log */
	enum proc_op op;
	struct store_txn_row row;
	const struct proc_config *proc; /* the row's processor */
	const struct proc_type *type;
	struct proc_call call;
	struct proc_result res;
	char client[64];
	char source[64];
	char hash[65];
	char id[40]; /* the transaction the path names */
	/* What the front's read found (op_read): the row, refunded so far. */
	int row_rc;
	int parse_rc; /* txnop_body_parse's, with its reason: */
	char parse_msg[sizeof(((struct fgw_why *)0)->msg)];
	char proc_key[96];
	char refund_id[40];
	int64_t amount;             /* refund amount */
	int amount_given;           /* the client named the amount */
	int64_t refunded;           /* succeeded refunds before this one */
	struct store_pendingop pop; /* the refund, capture or cancel row
	                                 (the store jobs' output too) */
	char new_status[24];
	char *answer;
	/* The error answered once a failed operation is recorded (op_fail). */
	int fail_status;
	const char *fail_code, *fail_msg;
};

static const char *const op_names[] = { "status", "capture", "cancel", "refund" };

/* Store and processor callbacks: each names the request on the lines it
 * logs, and restores what the thread worked for before. */
static void committed(void *arg, int rc, const struct store_txn_row *row);
static void refusal_recorded(void *arg, int rc);
static void replied(void *arg, const struct proc_reply *reply);
static void refund_begun(void *arg, int rc);
static void txnop_begun(void *arg, int rc);

static void
op_free(struct gw_req *g, int abandoned)
{
	struct op_ctx *c = (struct op_ctx *)g;
	(void)abandoned; /* the row stays pending for the reconciler */
	proc_call_cancel(&c->call);
	store_txn_row_clear(&c->row);
	proc_result_clear(&c->res);
	free(c->answer);
	free(c);
}

/* The row as GET shows it (with status), plus what a refund needs to
 * say: refunded is the total refunded with this refund committed. */
static int
build_answer(const struct op_ctx *c, const char *status, int64_t refunded, char **out)
{
	struct store_txn_row row = c->row; /* shallow: read only */
	char *json = NULL;
	cJSON *o = NULL, *rf;
	int r;

	*out = NULL;
	fgw_strlcpy(row.status, status, sizeof(row.status));
	if ((r = txn_row_to_json(&row, c->proc->name, &json)) != 0)
		return r;
	r = FGW_ERR_NOMEM;
	if ((o = cJSON_Parse(json)) == NULL)
		goto out;
	if (c->op == PROC_OP_REFUND) {
		if (!cJSON_AddNumberToObject(o, "amountRefunded", (double)refunded) ||
		    (rf = cJSON_AddObjectToObject(o, "refund")) == NULL ||
		    !cJSON_AddStringToObject(rf, "id", c->refund_id) ||
		    !cJSON_AddNumberToObject(rf, "amount", (double)c->amount))
			goto out;
	}
	if ((*out = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(o);
	free(json);
	return r;
}

/* A refund's answer, built inside the commit that decided its total and
 * state (store/pendingops.h): concurrent refunds each answer their own
 * committed total. Runs on the store's writer thread while the reactor
 * waits for committed(), which reads c->answer after it. */
static int
refund_answer(void *arg, const struct store_pendingop *rf, char **body)
{
	struct op_ctx *c = arg;
	int r;

	free(c->answer);
	c->answer = NULL;
	if ((r = build_answer(c, rf->new_status, rf->refunded, &c->answer)) != 0)
		return r;
	if ((*body = strdup(c->answer)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

/* A store job that could not even be queued. */
static void
not_submitted(struct op_ctx *c, int r)
{
	gw_req_error(&c->g, r == FGW_ERR_SHUTDOWN ? 503 : 500,
	             r == FGW_ERR_SHUTDOWN ? "SERVICE_UNAVAILABLE" : "INTERNAL_ERROR",
	             "The operation could not be recorded");
}

/* Answers a store job's failure (1), or 0 when rc is 0. */
static int
store_failed(struct op_ctx *c, int rc, const char *state_msg)
{
	if (rc == 0)
		return 0;
	if (rc == FGW_ERR_CONFLICT && c->g.key[0]) {
		/* The same operation under the same key was begun by another
		 * request first (on another instance): answer as a repeat. */
		gw_req_repeat(&c->g, c->hash);
	} else if (rc == FGW_ERR_STATE) {
		gw_req_error(&c->g, 409, "INVALID_TRANSACTION_STATE", state_msg);
	} else if (rc == FGW_ERR_TOO_LARGE) {
		gw_req_error(&c->g, 400, "REFUND_EXCEEDS_CAPTURED",
		             "The refund is more than what is left to refund");
	} else {
		log_txn_error(c->row.id, "%s not recorded: %s", op_names[c->op],
		              fgw_strerror(rc));
		gw_req_error(
		    &c->g, 500, "INTERNAL_ERROR",
		    "The operation could not be recorded; retry with the same Idempotency-Key");
	}
	return 1;
}

/* The operation and the transaction's move are committed and published
 * (txn_settle_op). */
static void
committed_run(void *arg, int rc)
{
	struct op_ctx *c = arg;
	if (store_failed(c, rc,
	                 "The transaction's state changed; the operation was not recorded"))
		return;
	gw_req_finish(&c->g, 200, c->answer);
}

static void
record(struct op_ctx *c)
{
	struct txn_op_settlement set;
	struct store_idem idem;
	struct store_audit audit;
	char details[200], event[32];
	int r, n;

	fgw_strlcpy(c->row.status, c->new_status, sizeof(c->row.status));
	c->row.updated_at = fgw_now_ms();
	/* A refund's final answer is built in its commit (refund_answer). */
	if (build_answer(c, c->new_status, c->refunded + c->amount, &c->answer) != 0) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	memset(&idem, 0, sizeof(idem));
	if (c->g.key[0]) {
		fgw_strlcpy(idem.client_id, c->client, sizeof(idem.client_id));
		fgw_strlcpy(idem.key, c->g.key, sizeof(idem.key));
		fgw_strlcpy(idem.request_hash, c->hash, sizeof(idem.request_hash));
		idem.status_code = 200;
		idem.body = c->answer;
		fgw_strlcpy(idem.txn_id, c->row.id, sizeof(idem.txn_id));
		idem.created_at = fgw_now_ms();
		idem.expires_at = idem.created_at + c->g.rx->env.idem_ttl_ms;
	}
	n = snprintf(details, sizeof(details), "{\"amount\":%lld,\"processorKey\":\"%s\"}",
	             (long long)(c->op == PROC_OP_REFUND ? c->amount : c->row.amount),
	             c->proc_key);
	if (n < 0 || (size_t)n >= sizeof(details))
		details[0] = '\0';
	snprintf(event, sizeof(event), "txn.%s",
	         c->op == PROC_OP_REFUND    ? "refunded"
	         : c->op == PROC_OP_CAPTURE ? "captured"
	                                    : "canceled");
	audit = (struct store_audit){ c->client, c->source,     event,
		                          c->row.id, c->new_status, details[0] ? details : NULL };
	set = (struct txn_op_settlement){ .op = &c->pop,
		                              .succeeded = 1,
		                              .idem = c->g.key[0] ? &idem : NULL,
		                              .audit = &audit,
		                              .n_audit = 1 };
	if (c->op == PROC_OP_REFUND) {
		fgw_strlcpy(c->pop.processor_ref, c->res.op_ref, sizeof(c->pop.processor_ref));
		set.out = &c->pop;
		if (c->g.key[0]) {
			set.answer = refund_answer;
			set.answer_arg = c;
		}
	}
	r = txn_settle_op(&c->g.rx->env, &set, committed, c);
	if (r != 0)
		not_submitted(c, r);
}

static int
refusal_status(const struct proc_result *res)
{
	return strcmp(res->code, "INVALID_TRANSACTION_STATE") == 0 ? 409 : 400;
}

static void
refusal_recorded_run(void *arg, int rc)
{
	struct op_ctx *c = arg;
	if (rc != 0)
		log_txn_error(c->row.id, "%s failure not recorded: %s", op_names[c->op],
		              fgw_strerror(rc));
	gw_req_error(&c->g, c->fail_status, c->fail_code, c->fail_msg);
}

/* The processor certainly did not do it (it refused, or the request never
 * left): the row moves to failed (a refund's amount is refundable again,
 * an authorization may be captured or canceled anew), with the audit
 * event txn.OP_WHAT, then status, code and message are answered. */
static void
op_fail(struct op_ctx *c, const char *what, int status, const char *code,
        const char *message)
{
	struct store_audit audit = { c->client, c->source, NULL, c->row.id, "failure", NULL };
	struct store *st = c->g.rx->gw->store;
	char details[160], event[40];
	int n, r;

	c->fail_status = status;
	c->fail_code = code;
	c->fail_msg = message;
	snprintf(event, sizeof(event), "txn.%s_%s", op_names[c->op], what);
	audit.event_type = event;
	if (c->op == PROC_OP_REFUND)
		n = snprintf(details, sizeof(details), "{\"refund\":\"%s\",\"code\":\"%s\"}",
		             c->pop.id, code);
	else
		n = snprintf(details, sizeof(details), "{\"code\":\"%s\"}", code);
	if (n > 0 && (size_t)n < sizeof(details))
		audit.details_json = details;
	if (c->op == PROC_OP_REFUND)
		fgw_strlcpy(c->pop.processor_ref, c->res.op_ref, sizeof(c->pop.processor_ref));
	r = store_pendingop_finish(st, c->g.rx->waker, &c->pop, 0, NULL,
	                           &(struct store_commit){ .audit = &audit,
	                                                   .n_audit = 1,
	                                                   .done = refusal_recorded,
	                                                   .arg = c });
	if (r != 0)
		refusal_recorded(c, FGW_ERR_SHUTDOWN);
}

/* The request provably never reached the processor (proc_call.h): safe
 * to fail now, and the client hears that nothing was done. */
static void
op_not_sent(struct op_ctx *c)
{
	static const char *const msgs[] = {
		[PROC_OP_CAPTURE] = "The capture was not made: nothing was sent to the "
		                    "processor; send it again with a new Idempotency-Key",
		[PROC_OP_CANCEL] = "The cancel was not made: nothing was sent to the "
		                   "processor; send it again with a new Idempotency-Key",
		[PROC_OP_REFUND] = "The refund was not made: nothing was sent to the "
		                   "processor; send it again with a new Idempotency-Key",
	};
	op_fail(c, "not_sent", 503, "OPERATION_NOT_SENT", msgs[c->op]);
}

static void
replied(void *arg, const struct proc_reply *reply)
{
	struct op_ctx *c = arg;
	enum op_verdict v;

	/* The processor call, as the pipeline logs a payment's. */
	log_txn_info(c->row.id, "%s: processor answered HTTP %ld in %lld ms", op_names[c->op],
	             (long)reply->status, (long long)reply->elapsed_ms);
	if (reply->sent == PROC_NOT_SENT) {
		log_txn_warn(c->row.id, "%s not sent: %s", op_names[c->op],
		             fgw_strerror(reply->err));
		op_not_sent(c);
		return;
	}
	if (!reply->parsed) {
		log_txn_warn(c->row.id, "%s: no answer from the processor (%s)", op_names[c->op],
		             fgw_strerror(reply->err));
		gw_req_error(&c->g, 502, "PAYMENT_PROCESSING_FAILED",
		             "The processor did not answer; retry with the same Idempotency-Key");
		return;
	}
	if ((v = proc_op_verdict(c->op, &c->res)) == OP_REFUSED) {
		/* The processor refused: its mapped code (state, amount). */
		op_fail(c, "failed", refusal_status(&c->res), c->res.code, c->res.message);
		return;
	}
	if (v != OP_DONE) {
		/* A refund stays pending: the reconciler or a retry ends it. */
		log_txn_warn(c->row.id, "%s: processor outcome %d", op_names[c->op],
		             (int)c->res.outcome);
		gw_req_error(&c->g, 502, "PAYMENT_PROCESSING_FAILED",
		             "The processor did not confirm the operation; retry with the same "
		             "Idempotency-Key");
		return;
	}
	record(c);
}

/* Asks the processor for the operation (resumed in replied). */
static void
send_op(struct op_ctx *c)
{
	static const enum proc_call_op calls[] = { PROC_CALL_STATUS, PROC_CALL_CAPTURE,
		                                       PROC_CALL_CANCEL, PROC_CALL_REFUND };
	struct proc_op_request oreq;
	int r;

	memset(&oreq, 0, sizeof(oreq));
	oreq.txn_id = c->row.id;
	oreq.idempotency_key = c->proc_key;
	oreq.reference = c->row.processor_ref;
	oreq.amount = c->amount;
	memset(&c->call, 0, sizeof(c->call));
	c->call.op = calls[c->op];
	c->call.inst = pipeline_proc_find(&c->g.rx->env, c->row.processor);
	c->call.opreq = &oreq;
	c->call.res = &c->res;
	c->call.request_id = c->request_id;
	c->call.done = replied;
	c->call.arg = c;
	r = proc_call_start(&c->g.rx->env, &c->call);
	c->call.opreq = NULL; /* built */
	if (r != 0) {
		log_txn_error(c->row.id, "%s not sent: %s", op_names[c->op], fgw_strerror(r));
		op_not_sent(c);
	}
}

/* The refund row is committed (or found, for a retry): go on from its state. */
static void
refund_begun_run(void *arg, int rc)
{
	struct op_ctx *c = arg;

	if (store_failed(c, rc, "Only a captured (succeeded) transaction can be refunded"))
		return;
	if (c->pop.adopted) {
		/* A retry of a refund we already hold: the same one or none. */
		if (c->amount_given && c->amount != c->pop.amount) {
			gw_req_error(&c->g, 422, "IDEMPOTENCY_CONFLICT",
			             "Idempotency-Key reused with a different refund amount");
			return;
		}
		c->amount = c->pop.amount;
		fgw_strlcpy(c->refund_id, c->pop.id, sizeof(c->refund_id));
		if (c->pop.status == STORE_OP_SUCCEEDED) {
			c->refunded -= c->amount; /* counted in the sum already */
			fgw_strlcpy(c->new_status, c->row.status, sizeof(c->new_status));
			record(c);
			return;
		}
		if (c->pop.status == STORE_OP_FAILED) {
			gw_req_error(&c->g, 409, "INVALID_TRANSACTION_STATE",
			             "This refund failed (the processor refused it, or it was "
			             "never sent); use a new Idempotency-Key");
			return;
		}
	}
	send_op(c);
}

/* The capture/cancel row is committed (or found, for a retry). */
static void
txnop_begun_run(void *arg, int rc)
{
	struct op_ctx *c = arg;

	if (store_failed(c, rc,
	                 c->op == PROC_OP_CAPTURE
	                     ? "Only an authorized transaction can be captured"
	                     : "Only an authorized transaction can be canceled"))
		return;
	if (c->pop.adopted && c->pop.status == STORE_OP_SUCCEEDED) {
		record(c);
		return;
	}
	if (c->pop.adopted && c->pop.status == STORE_OP_FAILED) {
		gw_req_error(&c->g, 409, "INVALID_TRANSACTION_STATE",
		             "This operation failed before (the processor refused it, or it "
		             "was never sent); use a new Idempotency-Key to try again");
		return;
	}
	/* The key of this attempt: a new one after a refused attempt. */
	fgw_strlcpy(c->proc_key, c->pop.idempotency_key, sizeof(c->proc_key));
	send_op(c);
}

/* A store callback's work, run with the request's id on the lines it
 * logs; the thread's own id is restored after. */
static void
as_request(void (*run)(void *arg, int rc), void *arg, int rc)
{
	char prev[LOG_REQUEST_ID_MAX];
	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(((struct op_ctx *)arg)->request_id);
	run(arg, rc);
	log_request_set(prev);
}

static void
committed(void *arg, int rc, const struct store_txn_row *row)
{
	(void)row;
	as_request(committed_run, arg, rc);
}

static void
refusal_recorded(void *arg, int rc)
{
	as_request(refusal_recorded_run, arg, rc);
}

static void
refund_begun(void *arg, int rc)
{
	as_request(refund_begun_run, arg, rc);
}

static void
txnop_begun(void *arg, int rc)
{
	as_request(txnop_begun_run, arg, rc);
}

/* The client's Idempotency-Key hashed with its client id (24 hex). */
static void
client_key_hash(const struct op_ctx *c, char hex[25])
{
	unsigned char h[12];
	crypto_generichash(h, sizeof(h), (const unsigned char *)c->g.key, strlen(c->g.key),
	                   (const unsigned char *)c->client, strlen(c->client));
	sodium_bin2hex(hex, 25, h, sizeof(h));
}

static void
begin_txnop(struct op_ctx *c)
{
	struct store_audit audit = { c->client, c->source, NULL, c->row.id, "pending", NULL };
	char details[160], event[32];
	int r, n;

	memset(&c->pop, 0, sizeof(c->pop));
	c->pop.kind = c->op == PROC_OP_CAPTURE ? STORE_OP_CAPTURE : STORE_OP_CANCEL;
	fgw_strlcpy(c->pop.txn_id, c->row.id, sizeof(c->pop.txn_id));
	fgw_strlcpy(c->pop.idempotency_key, c->proc_key, sizeof(c->pop.idempotency_key));
	if (c->g.key[0])
		client_key_hash(c, c->pop.request_key);
	snprintf(event, sizeof(event), "txn.%s_pending", op_names[c->op]);
	audit.event_type = event;
	n = snprintf(details, sizeof(details), "{\"amount\":%lld,\"processorKey\":\"%s\"}",
	             (long long)c->row.amount, c->proc_key);
	if (n > 0 && (size_t)n < sizeof(details))
		audit.details_json = details;
	r = store_pendingop_begin(c->g.rx->gw->store, c->g.rx->waker, &c->pop, &c->pop,
	                          &(struct store_commit){ .audit = &audit,
	                                                  .n_audit = 1,
	                                                  .done = txnop_begun,
	                                                  .arg = c });
	if (r != 0)
		not_submitted(c, r);
}

static void
begin_refund(struct op_ctx *c)
{
	struct store_audit audit = { c->client, c->source, "txn.refund_pending",
		                         c->row.id, "pending", NULL };
	char details[200];
	int r, n;

	memset(&c->pop, 0, sizeof(c->pop));
	c->pop.kind = STORE_OP_REFUND;
	fgw_strlcpy(c->pop.id, c->refund_id, sizeof(c->pop.id));
	fgw_strlcpy(c->pop.txn_id, c->row.id, sizeof(c->pop.txn_id));
	c->pop.amount = c->amount;
	fgw_strlcpy(c->pop.idempotency_key, c->proc_key, sizeof(c->pop.idempotency_key));
	c->pop.txn_amount = c->row.amount;
	n = snprintf(details, sizeof(details),
	             "{\"refund\":\"%s\",\"amount\":%lld,\"processorKey\":\"%s\"}",
	             c->refund_id, (long long)c->amount, c->proc_key);
	if (n > 0 && (size_t)n < sizeof(details))
		audit.details_json = details;
	r = store_pendingop_begin(c->g.rx->gw->store, c->g.rx->waker, &c->pop, &c->pop,
	                          &(struct store_commit){ .audit = &audit,
	                                                  .n_audit = 1,
	                                                  .done = refund_begun,
	                                                  .arg = c });
	if (r != 0)
		not_submitted(c, r);
}

int
txnop_body_parse(const char *body, size_t len, enum proc_op op, int64_t *amount,
                 struct fgw_why *why)
{
	struct fgw_json_error jerr;
	char msg[96]; /* the parser's detail, cut as it always was */
	cJSON *o = fgw_json_parse(body, len, &jerr), *it;
	int r = FGW_ERR_INVALID;

	*amount = 0;
	if (o == NULL) {
		fgw_json_error_str(&jerr, msg, sizeof(msg));
		fgw_why_set(why, "body", 0, 0, "%s", msg);
		goto out;
	}
	if (!cJSON_IsObject(o)) {
		fgw_why_set(why, "body", 0, 0, "body must be a JSON object");
		goto out;
	}
	cJSON_ArrayForEach(it, o) {
		if (op != PROC_OP_REFUND || strcmp(it->string, "amount") != 0) {
			fgw_why_set(why, "body", 0, 0, "%s",
			            op == PROC_OP_REFUND ? "only \"amount\" is allowed"
			                                 : "the body must be {}");
			goto out;
		}
	}
	it = cJSON_GetObjectItemCaseSensitive(o, "amount");
	if (it != NULL && fgw_json_int(it, 1, 9007199254740991LL, amount) != 0) {
		fgw_why_set(why, "amount", 0, 0,
		            "amount must be a positive integer of minor units "
		            "(no fraction or exponent)");
		goto out;
	}
	r = FGW_OK;
out:
	cJSON_Delete(o);
	return r;
}

/* Processor key for this operation, stable across the client's retries. */
static int
proc_key_for(struct op_ctx *c)
{
	char hex[25];
	int n;

	if (c->op != PROC_OP_REFUND) {
		n = snprintf(c->proc_key, sizeof(c->proc_key), "%s-%s", c->row.id,
		             op_names[c->op]);
		return n < 0 || (size_t)n >= sizeof(c->proc_key) ? FGW_ERR_TOO_LARGE : FGW_OK;
	}
	if (c->g.key[0] == '\0')
		return fgw_strlcpy(c->proc_key, c->refund_id, sizeof(c->proc_key)), FGW_OK;
	client_key_hash(c, hex);
	n = snprintf(c->proc_key, sizeof(c->proc_key), "%s-rf-%s", c->row.id, hex);
	return n < 0 || (size_t)n >= sizeof(c->proc_key) ? FGW_ERR_TOO_LARGE : FGW_OK;
}

/* On a read thread (PostgreSQL) or in place (SQLite): only c's fields.
 * One hop reads the key's stored answer, the row and what was refunded
 * of it; the row only when the key does not answer. */
static int
op_read(struct store_reader *rd, void *arg)
{
	struct op_ctx *c = arg;
	int r;

	if (c->g.look != NULL && http_idem_read(rd, &c->g))
		return 0;
	if (c->parse_rc != 0)
		return 0; /* refused before the row matters */
	r = store_txn_get(rd, c->client, c->id, &c->row);
	if (r == 0)
		r = store_pendingop_refunded(rd, c->id, &c->refunded);
	c->row_rc = r;
	return 0;
}

/* The key (if any) is this request's, the row read: the checks of the
 * operation against the row's state, then its write-ahead. */
static void
op_read_done(void *arg, int rc)
{
	struct op_ctx *c = arg;
	enum proc_op op = c->op;
	enum txn_state cur, op_end = op == PROC_OP_CAPTURE ? TXN_SUCCEEDED : TXN_CANCELED;
	char prev[LOG_REQUEST_ID_MAX];

	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(c->request_id);
	if (c->g.look != NULL && http_idem_decide(&c->g, rc))
		goto out;
	if (rc == FGW_ERR_SHUTDOWN) { /* the store closed before the read */
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
		goto out;
	}
	if (c->parse_rc != 0) {
		gw_req_error(&c->g, 400, "VALIDATION_ERROR", c->parse_msg);
		goto out;
	}
	if (c->row_rc == FGW_ERR_NOT_FOUND) {
		gw_req_error(&c->g, 404, "NOT_FOUND", "Transaction not found");
		goto out;
	}
	if (rc != 0 || c->row_rc != 0) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	/* Forward-only: each operation has the states it may start from. */
	cur = txn_state_of(c->row.status);
	if (op == PROC_OP_REFUND && cur == TXN_REFUNDED) {
		/* Final, but a retry of a refund it holds still gets its
		 * answer: the write-ahead job decides (refund_begun). */
		c->amount_given = c->amount > 0;
		fgw_strlcpy(c->new_status, txn_state_name(TXN_REFUNDED), sizeof(c->new_status));
	} else if (op == PROC_OP_REFUND) {
		if (cur != TXN_SUCCEEDED && cur != TXN_PARTIALLY_REFUNDED) {
			gw_req_error(&c->g, 409, "INVALID_TRANSACTION_STATE",
			             "Only a captured (succeeded) transaction can be refunded");
			goto out;
		}
		c->amount_given = c->amount > 0;
		if (c->amount == 0)
			c->amount = c->row.amount - c->refunded;
		if (c->amount <= 0 || c->amount > c->row.amount - c->refunded) {
			gw_req_error(&c->g, 400, "REFUND_EXCEEDS_CAPTURED",
			             "The refund is more than what is left to refund");
			goto out;
		}
		fgw_strlcpy(c->new_status,
		            txn_state_name(c->refunded + c->amount == c->row.amount
		                               ? TXN_REFUNDED
		                               : TXN_PARTIALLY_REFUNDED),
		            sizeof(c->new_status));
	} else if (cur != TXN_AUTHORIZED && (c->g.key[0] == '\0' || cur != op_end)) {
		/* Already in the operation's own end state, a keyed request
		 * goes on: if it is the retry of that operation (the reconciler
		 * may have finished it), the write-ahead job adopts it and the
		 * answer follows; any other is refused there (txnop_begun). */
		gw_req_error(&c->g, 409, "INVALID_TRANSACTION_STATE",
		             op == PROC_OP_CAPTURE
		                 ? "Only an authorized transaction can be captured"
		                 : "Only an authorized transaction can be canceled");
		goto out;
	} else {
		fgw_strlcpy(c->new_status, txn_state_name(op_end), sizeof(c->new_status));
	}
	/* The operation goes to the processor that made the charge. */
	if (pipeline_proc_by_name(&c->g.rx->env, c->row.processor, &c->proc, &c->type) != 0) {
		gw_req_error(&c->g, 502, "PAYMENT_PROCESSING_FAILED",
		             "The transaction's processor is not configured");
		goto out;
	}
	if (fgw_random_id("rf_", c->refund_id, sizeof(c->refund_id)) != 0 ||
	    proc_key_for(c) != 0 || c->type->build_op == NULL || c->type->parse_op == NULL) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		goto out;
	}
	if (op == PROC_OP_REFUND)
		begin_refund(c);
	else
		begin_txnop(c);
out:
	log_request_set(prev);
}

static void
h_op(struct reactor *rx, struct evhttp_request *req, const char *path, enum proc_op op)
{
	struct auth_ctx who;
	struct op_ctx *c = NULL;
	const char *body, *key;
	struct fgw_why bw;
	char id[40];
	size_t len;

	if (http_authenticate(rx, req, path, AUTH_API_KEY, &who) != 0 ||
	    http_keyed_body(rx, req, &who, &body, &len, &key) != 0)
		return;
	if (http_path_segment("/v1/transactions/*/*", path, 0, id, sizeof(id)) != 0 ||
	    strncmp(id, "txn_", 4) != 0) {
		http_send_error(rx, req, 404, "NOT_FOUND", "Transaction not found");
		return;
	}
	if (op == PROC_OP_REFUND && key == NULL) {
		/* A retried refund without a key would reach the processor as
		 * a new refund: the key is what makes a retry safe. */
		http_send_error(rx, req, 400, "VALIDATION_ERROR",
		                "Idempotency-Key is required for refunds");
		return;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		http_send_error(rx, req, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	gw_req_start(&c->g, rx, req, "transaction operation", op_free);
	fgw_strlcpy(c->request_id, log_request_get(), sizeof(c->request_id));
	c->op = op;
	fgw_strlcpy(c->client, who.client_id, sizeof(c->client));
	fgw_strlcpy(c->source, who.source, sizeof(c->source));
	fgw_strlcpy(c->id, id, sizeof(c->id));
	if (http_request_hash(rx, "POST", path, body, len, c->hash) != 0) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	/* Parsed now (the body is not needed after), answered after the
	 * front: a key's stored answer goes first, as it always did. */
	if ((c->parse_rc = txnop_body_parse(body, len, op, &c->amount, &bw)) != 0)
		fgw_strlcpy(c->parse_msg, bw.msg, sizeof(c->parse_msg));
	if (key != NULL && http_idem_claim(&c->g, who.client_id, key, c->hash) != 0) {
		gw_req_error(&c->g, 500, "INTERNAL_ERROR", "An unexpected error occurred");
		return;
	}
	if (store_read(rx->gw->store, rx->waker, rx->reader, op_read, c, op_read_done) != 0)
		gw_req_error(&c->g, 503, "SERVICE_UNAVAILABLE", "The service is shutting down");
}

static void
h_refund(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	h_op(rx, req, path, PROC_OP_REFUND);
}

static void
h_capture(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	h_op(rx, req, path, PROC_OP_CAPTURE);
}

static void
h_cancel(struct reactor *rx, struct evhttp_request *req, const char *path)
{
	h_op(rx, req, path, PROC_OP_CANCEL);
}

const struct route txnops_routes[] = {
	{ "/v1/transactions/*/refund", EVHTTP_REQ_POST, h_refund },
	{ "/v1/transactions/*/capture", EVHTTP_REQ_POST, h_capture },
	{ "/v1/transactions/*/cancel", EVHTTP_REQ_POST, h_cancel },
	{ NULL, 0, NULL },
};
