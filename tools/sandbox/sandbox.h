/*
 * tools/sandbox/sandbox.h — internals shared by the files of flair-sandbox,
 * the processor simulator (protocol: docs/sandbox.md).
 *
 *   sandbox.c  options, start-up, the HTTP router, answers, held requests
 *              (latency and faults), admin endpoints, shutdown
 *   ledger.c   the charges: two hash indexes (idempotency key, charge id),
 *              capped, and their JSON forms
 *   charge.c   POST /v1/charges: validation, opening the card, outcome,
 *              sealing the reply; GET /v1/charges views
 *   threeds.c  the 3-D Secure page, its completion and the signed webhook
 *
 * Everything runs on one event_base; nothing blocks.
 */
#ifndef FGW_TOOLS_SANDBOX_H
#define FGW_TOOLS_SANDBOX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "crypto/sealed.h"

struct event;
struct event_base;
struct evhttp;
struct evhttp_request;
struct evhttp_connection;
struct httpc;
struct httpc_req;

#define SBX_MAX_BODY (64 * 1024)
#define SBX_DEFAULT_MAX_CHARGES 1000000L
#define SBX_ID_LEN 28 /* "ch_" + 24 + NUL */

enum sbx_fail_mode { FAIL_NONE = 0, FAIL_500, FAIL_DROP, FAIL_HANG, FAIL_AFTER };

struct sbx_faults {
	long latency_ms;
	double fail_rate; /* 0..1 */
	enum sbx_fail_mode mode;
};

/* One charge object. Strings are owned. */
struct sbx_charge {
	char id[SBX_ID_LEN];
	char *idem_key;
	char *reference;
	char *return_url;      /* NULL when none was given */
	char status[20];       /* succeeded | declined | requires_action */
	char decline_code[24]; /* "" unless declined */
	char currency[4];
	char last4[5];
	int capture;
	int64_t amount;
	int64_t created;  /* unix seconds */
	long count;       /* requests seen with this key */
	int canceled;     /* an authorization released by /cancel */
	int64_t refunded; /* sum of its refunds */
	struct sbx_refund *refunds;
	struct sbx_charge *next_key, *next_id, *next_all;
};

/* One refund of a charge, found again by its idempotency key. */
struct sbx_refund {
	char *idem_key;
	int64_t amount;
	struct sbx_refund *next;
};

struct ledger;

struct sbx_held;
struct sbx_webhook;
struct stripe;

struct sbx {
	struct event_base *base;
	struct evhttp *http;
	struct httpc *httpc; /* for webhooks */
	struct ledger *ledger;
	struct sealed_keypair kp;
	struct sbx_faults faults;
	char public_base[300]; /* "http://host:port", for 3-D Secure URLs */
	char *secret;          /* API secret or NULL */
	char *webhook_url;
	char *webhook_secret;
	const char *publishable_key; /* --stripe: what Stripe.js authenticates with */
	int bench;
	int quiet;
	struct stripe *stripe; /* --stripe: Stripe-compatible routes */
	LIST_HEAD(, sbx_held) held;
	LIST_HEAD(, sbx_webhook) webhooks;
};

/* ---- sandbox.c: answers ------------------------------------------------- */

/* Sends code with a body now (content_type NULL: application/json). */
void sbx_send(struct evhttp_request *req, int code, const char *content_type,
              const char *body, size_t len);
/* {"error":{"code":code,"message":message}} */
void sbx_send_error(struct evhttp_request *req, int code, const char *err_code,
                    const char *message);

/* What a /v1/charges request ends with, after the configured latency. */
enum sbx_action { ACT_ANSWER, ACT_DROP, ACT_HANG };
/* Answers (or drops, or holds) after the current latency. Takes body. */
void sbx_finish(struct sbx *s, struct evhttp_request *req, enum sbx_action act, int code,
                char *body);
/* Copies the request body, NUL-terminated; NULL when empty or no memory. */
char *sbx_body(struct evhttp_request *req, size_t *len);
/* True when the peer of req is a loopback address. */
int sbx_peer_is_loopback(struct evhttp_request *req);

/* ---- ledger.c ----------------------------------------------------------- */

int ledger_new(long max, struct ledger **out);
void ledger_free(struct ledger *l);
struct sbx_charge *ledger_by_key(struct ledger *l, const char *key);
struct sbx_charge *ledger_by_id(struct ledger *l, const char *id);
/* Takes c. FGW_ERR_TOO_LARGE when the ledger is full. */
int ledger_add(struct ledger *l, struct sbx_charge *c);
long ledger_count(const struct ledger *l);
void sbx_charge_free(struct sbx_charge *c);
/* The result JSON of a charge (malloc'ed text). */
int charge_result_json(const struct sbx *s, const struct sbx_charge *c, char **out);
/* Answers 200 with c's result JSON (500 when out of memory). */
void sbx_send_charge(const struct sbx *s, struct evhttp_request *req,
                     const struct sbx_charge *c);
/* --ledger-file: replays the file into l (the last line of a key wins)
 * and appends to it from then on. */
int ledger_open_journal(struct ledger *l, const char *path);
/* Appends c as it is now (nothing without a ledger file). */
int ledger_journal(struct ledger *l, const struct sbx_charge *c);
/* GET /v1/ledger body (malloc'ed text). */
int ledger_json(const struct ledger *l, char **out, size_t *len);

/* ---- charge.c ----------------------------------------------------------- */

void sbx_charges_post(struct sbx *s, struct evhttp_request *req);
/* GET /v1/charges/<id> (id may be NULL) or ?idempotencyKey=. */
void sbx_charges_get(struct sbx *s, struct evhttp_request *req, const char *id);
/* True when the request carries the right bearer secret (or none is set). */
int sbx_auth_ok(const struct sbx *s, struct evhttp_request *req);

/* ---- ops.c: capture, cancel, refunds ------------------------------------ */

/* POST /v1/charges/<id>/capture | cancel | refunds (op is the last part). */
void sbx_charge_op(struct sbx *s, struct evhttp_request *req, const char *id,
                   const char *op);

/* ---- threeds.c ---------------------------------------------------------- */

void sbx_3ds_page(struct sbx *s, struct evhttp_request *req, const char *id);
void sbx_3ds_fail(struct sbx *s, struct evhttp_request *req, const char *id);
void sbx_3ds_complete(struct sbx *s, struct evhttp_request *req, const char *id);
/* Queues a signed event for --webhook-url (nothing without one): body
 * from make_body(obj, event id, unix time), signature header `header`
 * ("t=<unix>,v1=<hex HMAC-SHA256 of t.body>"); what names it in logs. */
void sbx_webhook_queue(struct sbx *s, const char *header, const char *what,
                       int (*make_body)(const void *obj, const char *evt_id, long long t,
                                        char **out),
                       const void *obj);
/* Cancels and frees pending webhook deliveries (shutdown). */
void sbx_webhooks_free(struct sbx *s);

/* ---- stripe.c: the Stripe-compatible mode ------------------------------ */

/* fixture: tests/fixtures/stripe-openapi-subset.json, what the Stripe
 * routes accept (tools/sandbox/stripe_contract.h). */
int sbx_stripe_new(const char *fixture, struct stripe **out);
void sbx_stripe_free(struct stripe *st);
/* Answers req when path is one of the Stripe routes: returns 1, else 0. */
int sbx_stripe_route(struct sbx *s, struct evhttp_request *req, const char *path);

#endif
