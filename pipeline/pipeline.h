/*
 * pipeline/pipeline.h — the transaction object, the stage interface and
 * the runner.
 *
 * A transaction runs through two ordered lists of stages: the request
 * pipeline (default token, decrypt, rule, encrypt, post) and the response
 * pipeline (default decrypt, record, post). Orders come from configuration
 * and are resolved once into a struct pipeline (pipeline_build).
 *
 * Stage return protocol — what the runner does with each:
 *   STAGE_NEXT     run the next stage (after the last request stage, the
 *                  first response stage; after the last response stage,
 *                  the transaction is finished and on_done is called).
 *   STAGE_SUSPEND  the stage started asynchronous work (store commit,
 *                  processor call) and will call pipeline_resume() exactly
 *                  once; the runner returns to the event loop.
 *   STAGE_STOP     the request phase ended with a decision (validation
 *                  error, rule decline): skip the remaining request stages
 *                  and run the response pipeline, whose stages see that no
 *                  processor reply exists.
 *   STAGE_ERROR    internal failure: t->outcome holds INTERNAL_ERROR or a
 *                  more precise code; continue like STAGE_STOP so a row
 *                  written ahead is still finished.
 * pipeline_resume() never re-enters the runner from inside a library
 * callback: it schedules a deferred event on the reactor's base.
 *
 * Sensitive values (PAN, CVC) live only in struct secbuf (guarded memory)
 * attached to the transaction's card, never in a JSON document that is
 * logged or recorded; the encrypt stage wipes them once the processor
 * payload is sealed, and txn_free wipes whatever is left on every path.
 */
#ifndef FGW_PIPELINE_PIPELINE_H
#define FGW_PIPELINE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/txnstate.h"
#include "processors/adapter.h"
#include "pipeline/proc_call.h"
#include "processors/instance.h"
#include "store/store.h"

struct cJSON;
struct event;
struct event_base;
struct httpc;
struct httpc_req;
struct keyring;
struct proc_routes;
struct risk;
struct secbuf;
struct txn;
struct method_read;

#define PIPELINE_MAX_STAGES 8

/* STAGE_AGAIN: only through pipeline_resume — run the same stage once more
 * (a stage that waited for a store job before it can go on). */
enum stage_rc { STAGE_NEXT = 0, STAGE_SUSPEND, STAGE_STOP, STAGE_ERROR, STAGE_AGAIN };
enum stage_phase { PHASE_REQUEST = 0, PHASE_RESPONSE = 1 };

struct stage_type {
	const char *name;
	enum stage_phase phase;
	enum stage_rc (*run)(struct txn *t);
};

struct pipeline {
	const struct stage_type *stages[2][PIPELINE_MAX_STAGES];
	int n[2];
};

/* Resolves comma-separated stage names ("token,decrypt,rule,encrypt,post")
 * for each phase. On error fills why. */
int pipeline_build(const char *request_order, const char *response_order,
                   struct pipeline *out, struct fgw_why *why);

/* ---- the parsed request ---------------------------------------------- */

struct txn_card {
	struct secbuf *pan; /* digits only */
	struct secbuf *cvc; /* may be NULL */
	int exp_month;
	int exp_year;
	char holder[128];
};

struct txn_request {
	char reservation_id[128];
	int64_t amount;
	char currency[4];
	int has_card;         /* card present (plain) */
	int has_encrypted;    /* encryptedCard present */
	struct txn_card card; /* filled by parse (plain) or decrypt (sealed) */
	char enc_key_id[64];
	char *enc_data; /* base64 sealed box (not sensitive) */
	char email[256];
	char customer_name[128];
	char ip[64];
	char country[3];
	char description[256];
	char *metadata_json; /* compact JSON object text or NULL */
	/* Pay with a stored card instead of card/encryptedCard: a saved
	 * method "pm_…" or a vault token "tok_…" of customer_id. */
	char payment_method_id[64];
	int save_method;       /* savePaymentMethod: keep the card for
	                            customer_id once the payment succeeds */
	char customer_id[192]; /* who.subject (X-Customer-Id or JWT sub);
	                            set by the route, "" when none */
	int capture;           /* 1: purchase; 0: authorize only */
	/* returnUrl: where the customer comes back after 3-D Secure, malloc'ed
	 * (at most 2,048 characters; NULL when none); its origin is checked by
	 * the route (return_url_origins). A pointer: rarely sent, and a 2 KiB
	 * array was most of every payment's request. */
	char *return_url;
	/* stripePaymentMethod: a PaymentMethod the customer's browser created
	 * at Stripe (Stripe.js), "pm_…"; "" when none. No card reaches us. */
	char processor_method[64];
	/* A saved method the processor holds (paymentMethodId of such a
	 * method, filled by the method stage): the processor instance that
	 * holds it and its customer there; "" each otherwise. */
	char method_processor[32];
	char processor_customer[96];
	/* 1: no card at all; the processor's payment is created unconfirmed
	 * and the customer's browser confirms it there (Stripe.js). Set by
	 * the reservation convert, never parsed from a body. */
	int client_confirms;
};

/* Parses and validates the shape of a POST /v1/transactions body. Card
 * fields go straight into guarded memory; the parse tree is wiped. Returns
 * 0, or FGW_ERR_INVALID with why filled: where the field (a JSON path),
 * msg what is wrong with it, never echoing card data. */
int txn_request_parse(const char *body, size_t len, struct txn_request **out,
                      struct fgw_why *why);
/* The same over a body the caller parsed (fgw_json_parse) and keeps: card
 * number and CVC are wiped in the tree; the caller wipes and frees it. */
int txn_request_parse_tree(const struct cJSON *root, struct txn_request **out,
                           struct fgw_why *why);
/* The same for a payment the customer's browser confirms at the processor
 * (Stripe.js): no card, encryptedCard, paymentMethodId, stripePaymentMethod
 * or savePaymentMethod; sets client_confirms. */
int txn_request_parse_client_confirms(const char *body, size_t len,
                                      struct txn_request **out, struct fgw_why *why);
void txn_request_free(struct txn_request *r);
/* 1 when rq has no returnUrl or its origin (scheme://host[:port], case
 * insensitive) is one of origins (comma- or space-separated). */
int txn_return_url_allowed(const struct txn_request *rq, const char *origins);
/* Parses a POST /v1/payments/methods body ({"paymentMethodId": "tok_…"} |
 * {"card": {…}} | {"encryptedCard": {…}} | {"stripePaymentMethod": "pm_…"},
 * optional "nickname") into the
 * card fields of a txn_request; nickname gets the nickname or "". */
int txn_method_body_parse(const char *body, size_t len, struct txn_request **out,
                          char *nickname, size_t nickcap, struct fgw_why *why);
/* How fresh an encryptedCard must be. Its sealed JSON carries "iat", the
 * unix time in seconds when it was sealed, so a captured blob is worth
 * something only until max_age_ms has passed. */
struct sealed_card_policy {
	int64_t max_age_ms;  /* older blobs are refused */
	int64_t max_skew_ms; /* iat further in the future is refused */
	int require_iat;     /* 0: blobs without iat pass (migration only) */
};

/* Opens (encryptedCard) and validates (Luhn, expiry) the request's card and
 * encrypts it for the vault under a new token: ve display fields,
 * fingerprint and key id filled, *blob malloc'ed (ve->blob points at it).
 * The CVC is dropped. FGW_ERR_INVALID with err filled for bad cards. */
int txn_card_to_vault(struct keyring *kr, const struct sealed_card_policy *pol,
                      struct txn_request *rq, struct store_vault_entry *ve, char **blob,
                      struct fgw_why *why);
/* Parses card JSON {"number","expMonth","expYear","cvc","holderName"}
 * (from a plain body field or an opened sealed box) into card. */
int txn_card_parse_json(const char *json, size_t len, struct txn_card *card,
                        struct fgw_why *why);

/* Parses an opened encryptedCard: the card JSON of txn_card_parse_json
 * plus "iat", checked against pol at now_ms. FGW_ERR_TIMEOUT (why filled)
 * when iat is missing (and required), too old or too far ahead;
 * FGW_ERR_INVALID for a bad card or an iat that is not an integer. */
int txn_card_parse_sealed(const char *json, size_t len,
                          const struct sealed_card_policy *pol, int64_t now_ms,
                          struct txn_card *card, struct fgw_why *why);
void txn_card_clear(struct txn_card *card);

/* ---- the environment a reactor gives its transactions ---------------- */

struct pipeline_limits {
	int64_t max_amount;               /* minor units */
	const char *currencies;           /* comma-separated ISO 4217 codes */
	struct sealed_card_policy sealed; /* encryptedCard freshness */
};

struct pipeline_env {
	struct event_base *base;
	struct store *store;
	struct store_waker *waker;
	struct keyring *kr;
	const struct pipeline *pl;
	/* The processor instances in failover order (shared by every
	 * reactor; only their breakers change), and this reactor's HTTP
	 * client for each. The first takes what no route sends elsewhere. */
	struct proc_instance *procs;
	int n_procs;
	struct httpc *const *proc_httpc;
	const struct proc_routes *routes; /* NULL: always the first */
	struct pipeline_limits limits;
	int64_t idem_ttl_ms;          /* how long idempotent answers are kept */
	int64_t vault_onetime_ttl_ms; /* lifetime of unsaved vault entries */
	struct risk *risk;            /* rules and velocity; NULL: no rules_file */
	struct store_reader *reader;  /* the reactor's read connection (added
	                                for the reconciler) */
};

/* The HTTP client that talks to processor instance p (its own TLS
 * settings, timeouts and connection limit). */
struct httpc *pipeline_httpc_for(const struct pipeline_env *env,
                                 const struct proc_config *p);

/* The processor instance called `name` (as recorded in a row; "" is the
 * first), or NULL. */
struct proc_instance *pipeline_proc_find(const struct pipeline_env *env,
                                         const char *name);
/* The same as a configuration and its type: 0, or -1 when there is none. */
int pipeline_proc_by_name(const struct pipeline_env *env, const char *name,
                          const struct proc_config **cfg, const struct proc_type **type);

/* ---- the transaction -------------------------------------------------- */

struct txn_outcome {
	enum txn_state state; /* as recorded; TXN_STATE_NONE with rejected 0:
	                         no outcome yet */
	int rejected;         /* refused before anything was recorded: a
	                         state of no transaction (txn_reject) */
	char error_code[40];  /* "" on success */
	char error_message[160];
	int http_status; /* answer to the website */
	int record;      /* 1: this outcome is recorded */
};

struct txn {
	char id[40];
	char request_id[129]; /* the website request's X-Request-Id: on
	                                its log lines and its error answer */
	char client_id[64];
	char source[64];    /* remote address */
	char idem_key[256]; /* client's Idempotency-Key or "" */
	char request_hash[65];
	int idem_lost; /* the store refused the claim of idem_key: another
	                  request (on any instance) holds it; nothing was
	                  written, the answer is the key's (txn_idem_lost) */
	struct txn_request *req;
	const struct pipeline_env *env;

	/* token */
	char token[40];
	char fingerprint[65];
	char brand[16];
	char bin[7];
	char last4[5];
	char *vault_blob;
	char vault_key_id[32];
	int vaulted;
	int vault_reused;         /* card read from an existing vault entry
	                                (paymentMethodId): nothing to insert */
	int method_saved;         /* that entry is a saved method already */
	char saved_method_id[40]; /* "pm_…" when this payment saves the card */
	int save_checked;         /* record: the save was tried (or not needed) */
	/* paymentMethodId: the stored card as read off the reactor
	 * (stage_method.c); NULL until the read starts. */
	struct method_read *method_read;

	/* rule */
	char decision[16]; /* allow, review, require_3ds, decline */
	char rules_fired[256];
	char rule_code[40]; /* a rule's decline code, "" otherwise */
	int require_3ds;    /* a rule asked for 3-D Secure */

	/* encrypt */
	char *sealed_card_b64; /* sealed, or boxed when card_boxed */
	int card_boxed;        /* an x25519-box to the processor: its
	                                reply must be boxed too */

	/* post: the processor instance chosen for this transaction (by the
	 * encrypt stage, through the breakers), NULL until then: txn_proc() */
	struct proc_instance *inst;
	int breaker_probe;
	char proc_idem_key[96];
	char reply_key_id[64];      /* gateway key the reply is sealed to */
	unsigned char reply_pk[32]; /* and its public key (set with the id) */
	struct proc_call call;      /* the processor call in flight */
	int row_created;
	int reply_err;             /* why the processor call got no answer */
	enum proc_sent reply_sent; /* what became of it (proc_call.h) */
	long reply_status;
	char *reply_body;
	size_t reply_len;
	long reply_ms;
	struct proc_result result;
	int have_result;

	/* outcome and answer */
	struct txn_outcome out;
	char *answer; /* JSON body for the website */
	int64_t created_at;
	int64_t started_mono;

	/* runner */
	int phase;
	int stage;
	enum stage_rc resume_rc;
	struct event *resume_ev;
	int running;
	void (*on_done)(struct txn *t, void *arg);
	void *done_arg;
};

/* Creates a transaction for a parsed request (ownership of req moves to
 * the transaction). */
int txn_new(const struct pipeline_env *env, struct txn_request *req,
            const char *client_id, const char *source, const char *idem_key,
            const char *request_hash, struct txn **out);
/* Wipes and frees; must not be called while a stage is suspended (but
 * for a forced stop, after store_read_cancel). */
void txn_free(struct txn *t);
/* Frees what stage_method.c read for t (txn_free calls it). */
void txn_method_read_free(struct method_read *mr);

/* Runs the pipeline from the start; on_done(t, arg) is called once, when
 * t->answer and t->out are final (after the outcome is committed). */
void pipeline_start(struct txn *t, void (*on_done)(struct txn *, void *), void *arg);
/* Called by a suspended stage's completion, exactly once. */
void pipeline_resume(struct txn *t, enum stage_rc rc);

/* The transaction's processor (the first until one is chosen). */
const struct proc_config *txn_proc(const struct txn *t);
const struct proc_type *txn_proc_type(const struct txn *t);
struct proc_instance *txn_instance(const struct txn *t);

/* Sets the outcome fields (helper for stages). */
void txn_set_outcome(struct txn *t, enum txn_state state, const char *code,
                     const char *message, int http_status, int record);
/* The request is refused before anything is recorded (no state): code
 * and message are answered with http_status. */
void txn_reject(struct txn *t, const char *code, const char *message, int http_status);
/* The outcome as the answer, logs and metrics name it: the state's name,
 * "rejected", or "" when there is none yet. */
const char *txn_outcome_name(const struct txn_outcome *o);

/* The write that claimed t's Idempotency-Key failed with
 * FGW_ERR_CONFLICT: another request committed the key first (on this
 * instance or another sharing the database), and this one changed
 * nothing. Marks it (idem_lost) with a 409 outcome that is not recorded;
 * the route answers what a repeat of the key answers. */
void txn_idem_lost(struct txn *t);

/* JSON of a recorded transaction for GET /v1/transactions/{id} and for
 * answers; *out is malloc'ed. */
int txn_row_to_json(const struct store_txn_row *row, const char *proc_name, char **out);

#endif
