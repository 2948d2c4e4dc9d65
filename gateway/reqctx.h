/*
 * gateway/reqctx.h — the one context of an HTTP request answered later
 * (after a store job or a processor call).
 *
 * Each route family embeds struct gw_req as the FIRST member of its own
 * context and keeps only its own fields there. The common part holds the
 * request and its connection's close callback, the idempotency claim,
 * the reactor's in-flight count and the link in the reactor's list, so a
 * forced stop (gw_req_abandon_all) frees every request in flight, of
 * every kind, through its kind's free hook.
 */
#ifndef FGW_GATEWAY_REQCTX_H
#define FGW_GATEWAY_REQCTX_H

struct reactor;
struct evhttp_request;
struct evhttp_connection;
struct gw_req;
struct idem_look;

/* Frees the kind's own fields and the context itself (free(r) for a
 * context that embeds r first). abandoned: 1 at a forced stop, when work
 * handed elsewhere (a transaction in the pipeline) will never come back. */
typedef void (*gw_req_free_fn)(struct gw_req *r, int abandoned);

struct gw_req {
	struct gw_req *prev, *next; /* the reactor's requests in flight */
	struct reactor *rx;
	struct evhttp_request *req; /* NULL once answered or the client has gone */
	struct evhttp_connection *evcon;
	gw_req_free_fn free_fn;
	const char *kind;       /* names it in the forced-stop log line */
	char scope[64];         /* idempotency claim: its scope (client) ... */
	char key[256];          /* ... and key; "" when none is held */
	struct idem_look *look; /* the key's stored row being read, or NULL */
};

/* Starts r (zeroed, inside its kind's context): links it to the reactor,
 * counts it in flight and watches for the client going away. */
void gw_req_start(struct gw_req *r, struct reactor *rx, struct evhttp_request *req,
                  const char *kind, gw_req_free_fn free_fn);
/* Records an idempotency claim already made (idem_begin): finishing
 * releases it. */
void gw_req_claim(struct gw_req *r, const char *scope, const char *key);
/* Answers (if the client is still there) without ending the request. */
void gw_req_answer(struct gw_req *r, int status, const char *body);
/* The one finish: answers (if the client is still there), releases the
 * claim, unlinks, uncounts and frees through the kind's hook. */
void gw_req_finish(struct gw_req *r, int status, const char *body);
/* Ends without an answer from here (one went out another way, or none
 * can): releases, unlinks, uncounts and frees. */
void gw_req_drop(struct gw_req *r);
/* The one error path: gw_req_finish with {"error": code, "message": ...}. */
void gw_req_error(struct gw_req *r, int status, const char *code, const char *message);
/* The same naming the field it is about ("param"). */
void gw_req_error_param(struct gw_req *r, int status, const char *code,
                        const char *message, const char *param);
/* The store refused r's claim of its key (FGW_ERR_CONFLICT: another
 * request committed it first, see http_idem_repeat): answers as a repeat
 * of the key with request hash hash, releases and frees — after a read of
 * the key's row off the reactor, so r may outlive this call: its kind
 * must not free or reuse what r owns meanwhile. */
void gw_req_repeat(struct gw_req *r, const char *hash);
/* Forced stop: frees every request still in flight on rx, unanswered. */
void gw_req_abandon_all(struct reactor *rx);

#endif
