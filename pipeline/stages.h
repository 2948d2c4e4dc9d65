/*
 * pipeline/stages.h — the stage types (private to the pipeline room).
 * Request phase: token, decrypt, rule, encrypt, post.
 * Response phase: decrypt (reply), record, post (relay).
 */
#ifndef FGW_PIPELINE_STAGES_H
#define FGW_PIPELINE_STAGES_H

#include "pipeline/pipeline.h"

extern const struct stage_type stage_token;
extern const struct stage_type stage_decrypt;
extern const struct stage_type stage_rule;
extern const struct stage_type stage_encrypt;
extern const struct stage_type stage_post;
extern const struct stage_type stage_reply_decrypt;
extern const struct stage_type stage_record;
extern const struct stage_type stage_relay;

/* Shared by the stages (stage_util.c). */
struct code_message {
	const char *code;
	const char *message;
	int http_status;
};
/* A validation error: not recorded, 400 VALIDATION_ERROR. */
enum stage_rc stage_invalid(struct txn *t, const char *message);
/* The message and HTTP status for one of our error codes. */
const struct code_message *stage_code_lookup(const char *code);
/* Masked JSON details for an audit event (malloc'ed). */
char *stage_audit_details(const struct txn *t);
/* The transaction row as recorded with the given status. */
void stage_fill_row(const struct txn *t, enum txn_state state, struct store_txn_row *row);
/* Vaults the card once its PAN is known (idempotent). */
int stage_vault_card(struct txn *t);
/* paymentMethodId: the customer's stored card decrypted into the
 * request's card (stage_method.c). STAGE_SUSPEND while it is read through
 * store_read (the calling stage then runs again: STAGE_AGAIN). STAGE_STOP
 * with 404 PAYMENT_METHOD_NOT_FOUND when it is not the customer's. */
enum stage_rc stage_load_method(struct txn *t);
/* Builds t->answer from t->out (and the result). */
int stage_build_answer(struct txn *t);
/* The fields of a POST /v1/transactions answer (shared by the live answer
 * and the one the reconciler stores). */
struct stage_answer {
	const char *id, *status, *currency, *token, *brand, *last4;
	int64_t amount;
	int exp_month, exp_year;
	const char *proc_name, *reference, *next_action_json;
	int http_status;
	const char *error_code, *error_message;
	int with_txn_id;
	const char *method_id;  /* saved method paid with or saved, or NULL */
	const char *request_id; /* errors: the request's id, or NULL */
};
/* *out is malloc'ed JSON text. */
int stage_answer_json(const struct stage_answer *a, char **out);

/* Routing and failover: chooses t->inst through the breakers; reports
 * the chosen processor's health after its answer. */
void stage_choose_proc(struct txn *t);
void stage_breaker_feedback(const struct txn *t);

/* NULL-terminated table of all stage types, looked up by (phase, name). */
extern const struct stage_type *const stage_types[];

#endif
