/*
 * processors/adapter.h — the processor adapter interface.
 *
 * An adapter TYPE (static const table, looked up by the name configuration
 * uses) turns a processor-neutral proc_request into that processor's HTTP
 * request, and maps the processor's answer to a proc_result with flairgw's
 * outcome and error codes. An adapter INSTANCE (struct proc) is a type plus
 * its configuration (base URL, credentials, the processor's public key).
 *
 * The pipeline owns the I/O: it asks the adapter to build, sends through
 * httpc, and, on the way back, passes the body to the decrypt stage
 * (which opens a sealed reply when the type says replies are sealed) and
 * then to parse_reply.
 */
#ifndef FGW_PROCESSORS_ADAPTER_H
#define FGW_PROCESSORS_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/txnstate.h"
#include "crypto/sealed.h"

struct secbuf;
struct cJSON;

/* The card in clear, for adapter types that declare needs_clear_card
 * (processors that take raw card fields over TLS, like Stripe). Every
 * pointer is into guarded memory owned by the transaction; the adapter
 * copies the values only into proc_http.secure_body. */
struct proc_clear_card {
	const struct secbuf *pan;
	const struct secbuf *cvc; /* NULL when none was given */
	int exp_month;
	int exp_year;
	const char *holder; /* "" when none */
};

enum proc_outcome {
	PROC_SUCCEEDED = 0,   /* approved and (for purchase) captured */
	PROC_DECLINED,        /* the issuer/processor said no: code set */
	PROC_REQUIRES_ACTION, /* 3-D Secure or similar: next_action set */
	PROC_UNKNOWN,         /* may have been charged: reconcile (processing) */
	PROC_FAILED,          /* certainly not charged (rejected request) */
	/* Added with the operations below; only status and operation
	 * answers produce them. */
	PROC_AUTHORIZED, /* approved, not captured (capture: false) */
	PROC_CANCELED,   /* an authorization that was released */
	PROC_NOT_FOUND   /* status: the processor never saw the key */
};

/* The operations beyond the first charge (see docs/adapters.md). The
 * first charge (authorize or purchase) goes through build/parse_reply
 * because its reply may be sealed; these go through build_op/parse_op. */
enum proc_op {
	PROC_OP_STATUS = 0, /* what became of the charge with this key */
	PROC_OP_CAPTURE,    /* capture an authorization in full */
	PROC_OP_CANCEL,     /* release an authorization */
	PROC_OP_REFUND      /* refund part or all of a captured charge */
};

struct proc_op_request {
	const char *txn_id;
	const char *idempotency_key; /* STATUS: the charge's key; others: the
	                                operation's own key, stable across
	                                retries of that operation */
	const char *reference;       /* processor's charge id ("" for STATUS
	                                when the charge's answer was lost) */
	int64_t amount;              /* REFUND: minor units */
};

/* What the pipeline hands an adapter. Card fields are already sealed to
 * the processor's key by the encrypt stage (sealed_card_b64); adapters
 * that need clear fields get them through card_fields_json (guarded). */
struct proc_request {
	const char *operation; /* "purchase" */
	const char *txn_id;
	const char *idempotency_key; /* stable across retries of one attempt */
	int64_t amount;
	const char *currency;
	const char *sealed_card_b64; /* sealed to the processor's key, or
	                                boxed (card_boxed, speaks_box types) */
	int card_boxed;
	const char *sealed_key_id;    /* the processor key id it was sealed to */
	const char *reply_key_id;     /* gateway box key id for sealed replies */
	const char *reply_public_b64; /* gateway box public key (base64) */
	const char *description;
	const char *customer_email;
	const char *return_url; /* for 3-D Secure redirects, may be NULL */
	int require_3ds;        /* 1: a rule asks for 3-D Secure */
	/* Added for needs_clear_card types; NULL for the others. */
	const struct proc_clear_card *clear_card;
	/* The processor's own id for the card (Stripe "pm_..."): from the
	 * type's build_card call, or given by the website. NULL: none. */
	const char *payment_method;
	/* The processor's customer that payment_method is attached to (a
	 * saved processor method, Stripe "cus_..."); NULL: none. */
	const char *customer;
	/* 1: create the payment unconfirmed, for the customer's browser to
	 * confirm at the processor (Stripe.js); no card, no payment_method.
	 * Only types with client_confirms take it. */
	int client_confirms;
};

/* A card the processor holds, as its attach answer describes it. */
struct proc_saved_card {
	char id[96];    /* the processor's method id (Stripe pm_...) */
	char brand[16]; /* "Visa", "Mastercard", ... or "" */
	char last4[5];
	int exp_month, exp_year;
};

/* An HTTP request an adapter built. All owned; free with proc_http_clear. */
struct proc_http {
	char method[8];
	char *url;
	char *headers[8]; /* "Name: value", NULL-terminated */
	char *body;
	size_t body_len;
	/* Added: a body holding card data is built in guarded memory here
	 * instead of body (then NULL); proc_http_clear wipes it. */
	struct secbuf *secure_body;
};
void proc_http_clear(struct proc_http *h);

struct proc_result {
	enum proc_outcome outcome;
	char code[40];           /* flairgw error code when not succeeded:
	                           PAYMENT_CARD_DECLINED, PAYMENT_INSUFFICIENT_FUNDS,
	                           PAYMENT_PROCESSING_FAILED, ... */
	char message[160];       /* safe to show, never card data */
	char reference[96];      /* processor's id for the charge */
	char *next_action_json;  /* owned, or NULL */
	int64_t amount_refunded; /* status/refund answers: total refunded */
	char txn_ref[72];        /* the transaction id the reply says it answers
	                           ("" when the protocol carries none) */
	char op_ref[96];         /* REFUND: the processor's id for the refund
	                           (Stripe re_...), "" when it gives none */
	/* A payment waiting for the customer's browser (client_confirms):
	 * the processor's client secret, handed to that browser once and
	 * never stored; proc_result_clear wipes it. "" otherwise. */
	char client_secret[160];
	/* What the answer says the payment is for (0 / "": not given), so
	 * the caller can refuse an answer for another amount. */
	int64_t amount;
	char currency[4]; /* upper case */
};
void proc_result_clear(struct proc_result *r);
/* 1 when res may be about transaction txn_id: it names no transaction
 * (txn_ref "") or names that one. An answer about another transaction
 * says nothing about this one (for a status: not found). */
int proc_result_is_for(const struct proc_result *res, const char *txn_id);
/* 1 when res names an amount or currency other than amount/currency (the
 * payment was changed at the processor after we made it): its outcome is
 * not to be taken for this payment. 0 when it agrees or names none. */
int proc_result_other_sum(const struct proc_result *res, int64_t amount,
                          const char *currency);

/* What a processor's webhook event asks of flairgw, decided by the
 * processor's own adapter from the event's type and payload (map_event):
 * only processors/ knows a processor's event names. */
enum proc_event_kind {
	PROC_EVENT_IGNORE = 0, /* nothing to do: acknowledged, recorded "ignored" */
	PROC_EVENT_MOVE,       /* move the transaction to target */
	PROC_EVENT_REFUNDED,   /* the charge says refunded_total in all was refunded */
	PROC_EVENT_REFUND,     /* one refund (refund_ref) ended as refund_status */
	PROC_EVENT_DISPUTE     /* the cardholder disputed the payment */
};

#define PROC_EVENT_REFS 3

struct proc_event {
	enum proc_event_kind kind;
	/* Our transaction id as the event names it ("" each when absent). */
	const char *txn_ids[PROC_EVENT_REFS];
	/* The processor's own ids that may be a transaction's processor_ref
	 * (NULL each when absent). */
	const char *processor_refs[PROC_EVENT_REFS];
	/* MOVE: the state the payload proves; fallback, when one is given, is the
	 * move to make instead when target is no forward move from the
	 * transaction's state (a canceled intent that was never authorized
	 * is failed: nothing was charged). code: error code for a decline. */
	enum txn_state target;
	enum txn_state fallback; /* TXN_STATE_NONE: none */
	char code[40];
	char message[80];
	/* MOVE to requires_action: the object's next action, or NULL. */
	const struct cJSON *next_action;
	/* The amount the object says the payment was (-1: not given); MOVE
	 * to refunded is applied only when refunded_total reaches the
	 * transaction's amount. */
	int64_t amount;
	int64_t refunded_total; /* REFUNDED (and MOVE to refunded); -1: not given */
	char currency[4];       /* the object's currency, upper case; "": not given */
	/* REFUND: the processor's refund id, its amount and its state
	 * (succeeded, failed, pending). DISPUTE: the dispute id, its amount
	 * and the processor's reason. */
	char object_ref[96];
	int64_t object_amount;
	char refund_status[16];
	char reason[48];
};

struct proc_config {
	char name[32]; /* instance name, e.g. "sandbox" */
	char type[32]; /* adapter type name */
	char base_url[256];
	char secret[256];            /* credential (never logged) */
	struct sealed_pubkey pubkey; /* processor's sealing key */
	int has_pubkey;
	long timeout_ms; /* total per request */
	/* Added for the generic type: its parsed mapping (read-only, owned
	 * by the type's loader) and whether 2xx replies are sealed to us. */
	const void *type_data;
	int seals_reply;
	char api_version[40]; /* pinned processor API version (Stripe-Version) */
};

struct proc_type {
	const char *name;
	/* Optional: reads the instance's own description file (the generic
	 * type's mapping; `map_file`) into cfg->type_data at start-up, and
	 * releases it. NULL when the type has none. */
	int (*load)(struct proc_config *cfg, const char *file, struct fgw_why *why);
	void (*unload)(struct proc_config *cfg);
	int seals_reply; /* 1: reply bodies are {"sealed": "..."} to our key */
	/* 1: with a processor key of algorithm x25519-box the card goes out
	 * boxed (crypto/box.h) and the reply must come back {"boxed": "..."}. */
	int speaks_box;
	/* A status answer "no such payment" (PROC_NOT_FOUND) is final only
	 * this long after the attempt: a processor that finds payments
	 * through a search index that lags behind writes (Stripe) must not
	 * have a fresh charge declared never made. 0: the lookup is exact. */
	long long not_found_settle_ms;
	/* How long the processor honours an idempotency key (Stripe: 24 h).
	 * The reconciler never re-sends a pending refund that may be older
	 * than that (a second refund); it goes to manual review instead.
	 * 0: keys are kept for good (the sandbox). */
	long long op_key_ttl_ms;
	/* Optional first call for a clear card (Stripe: create the
	 * PaymentMethod); NULL when build() takes the card itself. Its
	 * answer, through parse_card, is PROC_SUCCEEDED with the card's
	 * processor id in reference (then build() runs with it in
	 * proc_request.payment_method), or a final DECLINED / FAILED: the
	 * first call never charges. 0 or FGW_ERR_*. */
	int (*build_card)(const struct proc_config *cfg, const struct proc_request *req,
	                  struct proc_http *out);
	int (*parse_card)(const struct proc_config *cfg, long http_status, const char *body,
	                  size_t len, struct proc_result *out);
	/* Builds the purchase request. 0 or FGW_ERR_*. */
	int (*build)(const struct proc_config *cfg, const struct proc_request *req,
	             struct proc_http *out);
	/* Maps an HTTP status and (opened) reply body to a result. A body that
	 * does not parse, or a 5xx, is PROC_UNKNOWN or PROC_FAILED as the
	 * protocol allows; never trusted blindly. */
	int (*parse_reply)(const struct proc_config *cfg, long http_status, const char *body,
	                   size_t len, struct proc_result *out);
	/* Builds one of the operations above; FGW_ERR_INVALID when the
	 * processor has no such operation. */
	int (*build_op)(const struct proc_config *cfg, enum proc_op op,
	                const struct proc_op_request *req, struct proc_http *out);
	/* Maps the (plain) answer of an operation. Outcomes: SUCCEEDED
	 * (captured charge / operation done), AUTHORIZED, CANCELED, DECLINED,
	 * REQUIRES_ACTION, NOT_FOUND (status only: never charged), FAILED
	 * (operation refused, code says why), UNKNOWN (ask again later). */
	int (*parse_op)(const struct proc_config *cfg, enum proc_op op, long http_status,
	                const char *body, size_t len, struct proc_result *out);
	/* 1: the processor takes the card's clear fields (over TLS): the
	 * encrypt stage does not seal, it keeps PAN and CVC in guarded memory
	 * until post has built the request (proc_request.clear_card). */
	int needs_clear_card;
	/* 1: a transaction may name a card the processor already holds for
	 * the customer (proc_request.payment_method, e.g. a Stripe
	 * PaymentMethod made by Stripe.js) instead of giving one. */
	int takes_processor_method;
	/* 1: build() takes proc_request.client_confirms (Stripe.js confirms
	 * the payment in the customer's browser with the client secret). */
	int client_confirms;
	/* Saving such a card for later payments (NULL when the type cannot):
	 * the processor's customer that will own it, then the attachment.
	 * Each call carries the idempotency key given, so a retry replays.
	 * parse: PROC_SUCCEEDED with the customer id in reference (or the
	 * card in *card); PROC_FAILED when the processor refused (code,
	 * message); PROC_UNKNOWN when the answer was lost or unreadable. */
	int (*build_customer)(const struct proc_config *cfg, const char *idempotency_key,
	                      const char *customer_ref, struct proc_http *out);
	int (*parse_customer)(const struct proc_config *cfg, long http_status,
	                      const char *body, size_t len, struct proc_result *out);
	int (*build_attach)(const struct proc_config *cfg, const char *idempotency_key,
	                    const char *method, const char *customer, struct proc_http *out);
	int (*parse_attach)(const struct proc_config *cfg, long http_status, const char *body,
	                    size_t len, const char *customer, struct proc_saved_card *card,
	                    struct proc_result *out);
	/* Deleting such a card: the processor forgets it for its customer
	 * (NULL when the type keeps nothing). parse: PROC_SUCCEEDED when
	 * detached; PROC_FAILED with PAYMENT_METHOD_NOT_FOUND when the
	 * processor has it attached to no one (gone already), another code
	 * when it refused; PROC_UNKNOWN when the answer was lost. */
	int (*build_detach)(const struct proc_config *cfg, const char *idempotency_key,
	                    const char *method, struct proc_http *out);
	int (*parse_detach)(const struct proc_config *cfg, long http_status, const char *body,
	                    size_t len, struct proc_result *out);
	/* Maps a verified webhook event (the whole JSON body, with a string
	 * id and type and an object data.object) to what it asks; pointers
	 * in out point into event. 0, or FGW_ERR_INVALID when the payload
	 * contradicts itself. NULL: the type sends no webhooks. */
	int (*map_event)(const struct cJSON *event, struct proc_event *out);
	/* The header its webhooks carry their signature in (t=...,v1=...,
	 * HMAC-SHA256 over "t.body"); NULL with map_event. */
	const char *webhook_header;
};

/* Looks an adapter type up by name; NULL if unknown. */
const struct proc_type *proc_type_find(const char *name);
/* The same, for a type that sends signed webhooks (webhook_header and
 * map_event set); NULL otherwise. */
const struct proc_type *proc_type_webhooks(const char *name);
/* Those types' names, "a or b", for messages. */
void proc_type_webhook_names(char *buf, size_t cap);

extern const struct proc_type proc_type_sandbox;
extern const struct proc_type proc_type_generic;
extern const struct proc_type proc_type_stripe;

#endif
