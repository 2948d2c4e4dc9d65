/*
 * store/webhooks.h — the webhook tables: inbound processor events
 * (deduplicated by processor and event id), the outbound outbox to the
 * website's endpoints and its delivery attempts.
 *
 * Write functions submit store jobs (see store.h for the done protocol);
 * read functions use the caller's reader on the caller's thread.
 */
#ifndef FGW_STORE_WEBHOOKS_H
#define FGW_STORE_WEBHOOKS_H

#include <stdint.h>
#include <stdio.h>

#include "store/store.h"

/* ---- inbound ----------------------------------------------------------- */

/* The result recorded for (processor, event_id) into result[24]; 0, or
 * FGW_ERR_NOT_FOUND when the event was never recorded. */
int store_webhook_seen(struct store_reader *r, const char *processor,
                       const char *event_id, char result[24]);
/* Records an inbound event with the audit events in one commit; the job
 * fails with FGW_ERR_EXISTS when (processor, event_id) is already there
 * (a concurrent duplicate). txn_id may be "". */
int store_webhook_record(struct store *st, struct store_waker *w, const char *processor,
                         const char *event_id, const char *event_type, const char *txn_id,
                         const char *result, const struct store_audit *audit,
                         size_t n_audit, store_done_fn done, void *arg);
/* The transaction whose processor_ref is ref (most recent); 0 or
 * FGW_ERR_NOT_FOUND. */
int store_txn_id_by_ref(struct store_reader *r, const char *ref, char *id, size_t idlen);

/* ---- outbox ------------------------------------------------------------ */

struct store_outbox_row {
	char id[40]; /* "whd_..." one per event and endpoint */
	char endpoint_url[512];
	char event_id[40]; /* "evt_..." shared by the event's rows */
	char event_type[48];
	char txn_id[40];
	char *payload;   /* the exact body sent (owned: _clear) */
	char status[16]; /* pending, delivered, failed */
	int attempts;
	int64_t next_attempt_at; /* ms */
	int last_http_status;
	char last_error[96];
	int64_t created_at;
	int64_t updated_at;
};
void store_outbox_row_clear(struct store_outbox_row *row);

/* Inserts n pending rows (payload is copied) and the audit events in one
 * commit. */
int store_outbox_enqueue(struct store *st, struct store_waker *w,
                         const struct store_outbox_row *rows, size_t n,
                         const struct store_audit *audit, size_t n_audit,
                         store_done_fn done, void *arg);

/* One delivery attempt's result and what it does to its outbox row. */
struct store_outbox_attempt {
	char outbox_id[40];
	int64_t at;      /* ms, when the attempt started */
	int http_status; /* 0 when no HTTP answer */
	char error[96];  /* "" when an HTTP answer arrived */
	long elapsed_ms;
	char outcome[16];        /* delivered, retry, failed */
	int64_t next_attempt_at; /* for retry */
	/* The lease end of the claim the row was delivered under (its
	 * next_attempt_at as store_outbox_claim returned it): the attempt
	 * is recorded only while the row is still claimed so (else
	 * FGW_ERR_STATE: the lease ran out and another worker took it).
	 * 0: a row not claimed (recorded while pending). */
	int64_t lease_until;
};
/* Appends the attempt and moves the row (attempts + 1, status, next time,
 * last status/error) with the audit events, in one commit. The job fails
 * with FGW_ERR_STATE when the row is no longer pending. */
int store_outbox_attempt(struct store *st, struct store_waker *w,
                         const struct store_outbox_attempt *a,
                         const struct store_audit *audit, size_t n_audit,
                         store_done_fn done, void *arg);
/* Makes a row (any status) pending and due at now_ms, with the audit
 * events; FGW_ERR_NOT_FOUND when no such id. */
int store_outbox_retry(struct store *st, struct store_waker *w, const char *outbox_id,
                       int64_t now_ms, const struct store_audit *audit, size_t n_audit,
                       store_done_fn done, void *arg);

/* Claims up to max pending rows due at now_ms for delivery by the caller
 * until lease_until (ms; store/claim.h): no other worker, on this
 * instance or another sharing the database, gets them before that. The
 * rows (with lease_until as their next_attempt_at) reach out[] and *n
 * only once the claim committed, right before done(arg, rc); each must be
 * cleared. out must stay valid until done runs. */
int store_outbox_claim(struct store *st, struct store_waker *w, int64_t now_ms,
                       int64_t lease_until, struct store_outbox_row *out, int max, int *n,
                       store_done_fn done, void *arg);

/* Up to max pending rows due at now_ms, oldest due first, into out[];
 * *n receives how many (each must be cleared). A read: for operators and
 * tests; a sender claims (store_outbox_claim). */
int store_outbox_due(struct store_reader *r, int64_t now_ms, struct store_outbox_row *out,
                     int max, int *n);
/* Calls fn for each outbox row (newest first, at most limit), without
 * payloads, then for each of its attempts through attempt_fn (may be
 * NULL). For operators (flairctl). */
int store_outbox_list(struct store_reader *r, int limit,
                      void (*fn)(void *arg, const struct store_outbox_row *row),
                      void (*attempt_fn)(void *arg, int attempt, int64_t at,
                                         int http_status, const char *error,
                                         long elapsed_ms, const char *outcome),
                      void *arg);

#endif
