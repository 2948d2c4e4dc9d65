/*
 * pipeline/proc_call.h — the one way to perform a processor operation:
 * build the request through the instance's type, send it through the
 * reactor's HTTP client for that instance, classify what became of it
 * (sent / not sent / unknown) and parse the answer through the type.
 *
 * What happens after (state changes, answers, audit) is the caller's.
 * The call lives inside the caller's own context (struct proc_call is
 * embedded, nothing is allocated), so a context freed on a forced stop
 * takes its call with it: proc_call_cancel first.
 */
#ifndef FGW_PIPELINE_PROC_CALL_H
#define FGW_PIPELINE_PROC_CALL_H

#include <stddef.h>

#include "processors/adapter.h"
#include "processors/instance.h"

struct httpc_req;
struct pipeline_env;

enum proc_call_op {
	PROC_CALL_CHARGE = 0, /* the payment (build); its answer may be sealed to
	                           the gateway, so the response pipeline parses it */
	PROC_CALL_CARD,       /* the card alone, before the charge (build_card) */
	PROC_CALL_STATUS,     /* build_op/parse_op with the matching proc_op */
	PROC_CALL_CAPTURE,
	PROC_CALL_CANCEL,
	PROC_CALL_REFUND,
	PROC_CALL_CUSTOMER, /* a processor customer (build_customer) */
	PROC_CALL_ATTACH,   /* a processor-held card to a customer (build_attach) */
	PROC_CALL_DETACH    /* that card from its customer (build_detach) */
};

/* What became of the request. Only a request that provably never left
 * (it could not be built or handed over, or the connection was never
 * written to: httpc's maybe_sent 0) is NOT_SENT; an answer is SENT;
 * anything else (timeout, reset, an answer cut short) is UNKNOWN and
 * belongs to the reconciler. */
enum proc_sent { PROC_NOT_SENT = 0, PROC_SENT, PROC_SENT_UNKNOWN };

struct proc_reply {
	enum proc_sent sent;
	int err;     /* 0 when answered, else why not (FGW_ERR_*) */
	long status; /* HTTP status, 0 when not answered */
	long elapsed_ms;
	const char *body; /* the raw answer (CHARGE); valid in done only */
	size_t body_len;
	int parsed; /* 1: the type read the answer into *res */
};

struct proc_call;
typedef void (*proc_call_done_fn)(void *arg, const struct proc_reply *reply);

struct proc_call {
	/* Set by the caller before proc_call_start. */
	enum proc_call_op op;
	struct proc_instance *inst;
	const struct proc_request *charge;   /* CHARGE, CARD */
	const struct proc_op_request *opreq; /* STATUS .. REFUND */
	const char *key;                     /* CUSTOMER, ATTACH, DETACH: idempotency key */
	const char *customer_ref;            /* CUSTOMER: our reference for them */
	const char *method;                  /* ATTACH, DETACH: the processor's card id */
	const char *customer;                /* ATTACH: the processor's customer */
	struct proc_result *res;             /* out: the type's reading */
	struct proc_saved_card *card;        /* out, ATTACH: the attached card */
	const char *request_id;              /* the callback's log lines name it;
	                                           NULL: left as it is */
	proc_call_done_fn done;
	void *arg;
	/* The call's own. */
	struct httpc_req *http;
};

/* Builds and sends. 0: done(arg, reply) runs exactly once, later, from
 * the event loop; an error: nothing left (not sent) and done never runs. */
int proc_call_start(const struct pipeline_env *env, struct proc_call *call);
/* Drops a call in flight: done will not run. Harmless when none is. */
void proc_call_cancel(struct proc_call *call);

#endif
