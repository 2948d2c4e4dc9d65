/*
 * store/mail.h — the e-mail outbox: one row per message, rendered in full
 * when it is queued, then delivered by the gateway's mail sender with
 * backoff until it is sent or given up.
 *
 * Write functions submit store jobs (see store.h for the done protocol);
 * read functions use the caller's reader on the caller's thread.
 */
#ifndef FGW_STORE_MAIL_H
#define FGW_STORE_MAIL_H

#include <stdint.h>

#include "store/store.h"

struct store_mail_row {
	char id[40];       /* "mail_..." */
	char kind[32];     /* receipt, refund, admin_manual_review... */
	char audience[12]; /* customer | admin */
	char client_id[64];
	char txn_id[40];
	char mail_from[256];
	char rcpt_to[256];
	char subject[256]; /* as the template rendered it, unencoded */
	char *message;     /* the RFC 5322 message, CRLF (owned: _clear) */
	char status[12];   /* pending, sent, failed */
	int attempts;
	int64_t next_attempt_at; /* ms */
	char last_error[160];
	char dedupe_key[96]; /* "" or e.g. "receipt:txn_..": queued once */
	int64_t created_at;
	int64_t updated_at;
};
void store_mail_row_clear(struct store_mail_row *row);

/* Inserts row as pending, due now (message copied), with the audit events
 * in one commit. The job fails with FGW_ERR_EXISTS (nothing written) when
 * a row with the same non-empty dedupe_key is there already. */
int store_mail_enqueue(struct store *st, struct store_waker *w,
                       const struct store_mail_row *row, const struct store_audit *audit,
                       size_t n_audit, store_done_fn done, void *arg);
/* Records one delivery attempt: attempts + 1, outcome "sent", "retry"
 * (pending again at next_at) or "failed", and the error. The job fails
 * with FGW_ERR_STATE when the row is no longer pending. */
int store_mail_attempt(struct store *st, struct store_waker *w, const char *id,
                       const char *outcome, int64_t next_at, const char *error,
                       const struct store_audit *audit, size_t n_audit,
                       store_done_fn done, void *arg);
/* The same for a row delivered under a claim (store_mail_claim): recorded
 * only while the row is still claimed until lease_until, else
 * FGW_ERR_STATE (the lease ran out and another worker took the row). */
int store_mail_attempt_claimed(struct store *st, struct store_waker *w, const char *id,
                               int64_t lease_until, const char *outcome, int64_t next_at,
                               const char *error, const struct store_audit *audit,
                               size_t n_audit, store_done_fn done, void *arg);
/* Makes a row (any status) pending and due at now_ms; the job fails with
 * FGW_ERR_NOT_FOUND when there is no such id. */
int store_mail_retry(struct store *st, struct store_waker *w, const char *id,
                     int64_t now_ms, const struct store_audit *audit, size_t n_audit,
                     store_done_fn done, void *arg);

/* Claims up to max pending rows due at now_ms, with their messages, for
 * delivery by the caller until lease_until (ms; store/claim.h): no other
 * sender, here or on another instance, gets them before that. The rows
 * (lease_until as their next_attempt_at) reach out[] and *n only once the
 * claim committed, right before done(arg, rc); each must be cleared. */
int store_mail_claim(struct store *st, struct store_waker *w, int64_t now_ms,
                     int64_t lease_until, struct store_mail_row *out, int max, int *n,
                     store_done_fn done, void *arg);
/* Up to max pending rows due at now_ms, oldest due first, with their
 * messages; *n receives how many (each must be cleared). A read: for
 * operators and tests; the sender claims (store_mail_claim). */
int store_mail_due(struct store_reader *r, int64_t now_ms, struct store_mail_row *out,
                   int max, int *n);
/* Calls fn for each row, newest first, at most limit, without messages. */
int store_mail_list(struct store_reader *r, int limit,
                    void (*fn)(void *arg, const struct store_mail_row *row), void *arg);
/* Calls fn for reservations with a guest address (at most 100, oldest
 * first) that ended without a booking (status expired or cancelled) at or
 * after since_ms and have no mail with dedupe_key "hold_STATUS:ID" yet. */
int store_mail_holds_ended(struct store_reader *r, int64_t since_ms,
                           void (*fn)(void *arg, const char *id, const char *status,
                                      int64_t updated_at),
                           void *arg);
/* Payments whose outcome is still unknown (posting, processing) although
 * created before before_ms: how many, and the oldest one's id. */
int store_mail_stuck_txns(struct store_reader *r, int64_t before_ms, int64_t *count,
                          char oldest[40]);
/* Customer mails not yet sent (pending) and given up (failed). */
int store_mail_backlog(struct store_reader *r, int64_t *pending, int64_t *failed);

#endif
