/*
 * store/reservations.h — experiences, time slots and reservations (holds).
 *
 * Capacity is a counter on the time slot (`taken`) that only write jobs
 * change. The single writer thread runs jobs one after another, so the
 * check "capacity - taken >= guests" and the increment happen with no other
 * reactor in between: capacity is never oversold, whatever the number of
 * reactor threads. Every job that gives places back (expiry, refund)
 * marks the reservation `released` in the same statement batch so it is
 * never given back twice.
 *
 * Reservation states: held -> pending -> confirmed; held/pending -> expired
 * (timer) ; pending/confirmed -> refunded. payment_status: unpaid,
 * processing, requires_action, paid, failed, refunded.
 *
 * Write functions follow store.h: 0 when queued and done(arg, rc) runs
 * later on the waker's reactor; the job's result is in the struct the
 * caller passed (it must stay alive until done runs).
 */
#ifndef FGW_STORE_RESERVATIONS_H
#define FGW_STORE_RESERVATIONS_H

#include <stdint.h>

#include "store/store.h"

struct fgw_why;

/* Business outcomes of a job (rc of done is FGW_ERR_STATE for these). */
enum resv_err {
	RESV_OK = 0,
	RESV_SLOT_NOT_FOUND,
	RESV_SLOT_NOT_AVAILABLE,
	RESV_NOT_ENOUGH_CAPACITY,
	RESV_NOT_FOUND,
	RESV_HOLD_EXPIRED,
	RESV_INVALID_STATUS,
	RESV_NOT_PAID,
	RESV_INTENT_MISMATCH,
};

struct resv_experience {
	char id[64];
	char name[128];
	int64_t price; /* per guest, minor units */
	char currency[4];
	int group_min; /* group discount from this many guests, 0: none */
	int group_pct;
	int early_days; /* early-bird: slot at least this many days ahead */
	int early_pct;
};

struct resv_slot {
	char id[64];
	char experience_id[64];
	int64_t starts_at; /* ms since epoch */
	int capacity;
	int taken;
	char status[12]; /* open | closed */
};

struct resv_row {
	char id[40];
	char client_id[64];
	char customer_id[192];
	char experience_id[64];
	char time_slot_id[64];
	int guests;
	char guest_name[128];
	char guest_email[256];
	char guest_phone[40];
	char special_requests[512];
	char status[16];
	char payment_status[20];
	int64_t total_price;
	int64_t original_price;
	int64_t group_discount;
	int64_t early_discount;
	char currency[4];
	int64_t hold_expires_at;
	char txn_id[40];
	char payment_intent_id[96];
	char reference[16];
	int save_method;
	int64_t created_at;
	int64_t updated_at;
};

/* ---- catalogue (flairctl, slots_file) --------------------------------- */
int resv_experience_put(struct store *st, struct store_waker *w,
                        const struct resv_experience *e, store_done_fn done, void *arg);
/* Inserts or updates a slot; an update never sets capacity below taken. */
int resv_slot_put(struct store *st, struct store_waker *w, const struct resv_slot *s,
                  store_done_fn done, void *arg);
/* Sets capacity (>= taken, else the job fails with FGW_ERR_STATE). */
int resv_slot_set_capacity(struct store *st, struct store_waker *w, const char *slot_id,
                           int capacity, store_done_fn done, void *arg);
/* Loads {"experiences":[...],"timeSlots":[...]} (docs/reservations.md)
 * and waits for the commit: for start-up and tools only (blocks). With a
 * NULL st it only checks the document (flairgw --check). */
int resv_load_catalogue(struct store *st, const char *json, size_t len,
                        struct fgw_why *why);
/* Waits for a job submitted with a NULL waker (tools, start-up). */
struct resv_wait;
int resv_wait_new(struct resv_wait **out);
void resv_wait_done(void *arg, int rc); /* pass as done, arg = the wait */
int resv_wait_end(struct resv_wait *w); /* returns the job's rc, frees */

/* ---- the flow --------------------------------------------------------- */

/* Hold: checks slot and capacity, inserts r (status held), stores the
 * idempotent answer (idem) in the same commit. *err tells why it failed.
 * The key of idem is claimed first: when another request holds it (on any
 * instance sharing the database) nothing changes and the job fails
 * FGW_ERR_CONFLICT (answer as a repeat). resv_cancel and resv_idem_put
 * claim theirs the same way. */
int resv_hold(struct store *st, struct store_waker *w, const struct resv_row *r,
              const struct store_idem *idem, const struct store_audit *audit,
              enum resv_err *err, store_done_fn done, void *arg);
/* Convert: the reservation (id, customer) moves to pending with payment
 * processing and txn_id; out gets the row. HOLD_EXPIRED when its hold ran
 * out (now >= hold_expires_at and no payment succeeded), INVALID_STATUS when
 * it is confirmed/refunded or a payment is in flight. */
int resv_convert_begin(struct store *st, struct store_waker *w, const char *id,
                       const char *customer, const char *txn_id, int save_method,
                       int64_t now, struct resv_row *out, enum resv_err *err,
                       store_done_fn done, void *arg);
/* A payment of txn_id moved to txn_status (succeeded, requires_action,
 * processing, declined, failed, refunded). Applies only when txn_id is the
 * reservation's current payment. auto_confirm: confirm with reference when
 * the payment succeeded after an asynchronous step (3-D Secure, webhook).
 * idem may carry the convert answer. */
int resv_payment_moved(struct store *st, struct store_waker *w,
                       const char *reservation_id, const char *txn_id,
                       const char *txn_status, const char *intent_id,
                       const char *reference, const struct store_idem *idem,
                       store_done_fn done, void *arg);
/* Confirm: pending + paid -> confirmed with reference (kept if already
 * confirmed); out gets the row. */
int resv_confirm(struct store *st, struct store_waker *w, const char *id,
                 const char *customer, const char *intent_id, const char *reference,
                 struct resv_row *out, enum resv_err *err, store_done_fn done, void *arg);
/* Expires holds whose time ran out (capacity returns) and prunes expired
 * idempotent answers. */
int resv_sweep(struct store *st, struct store_waker *w, int64_t now, store_done_fn done,
               void *arg);
/* Stores an idempotent answer alone; FGW_ERR_CONFLICT as resv_hold. */
int resv_idem_put(struct store *st, struct store_waker *w, const struct store_idem *idem,
                  store_done_fn done, void *arg);

/* ---- the customer's browser ------------------------------------------- */

/* A convert without a card: the reservation (id, customer) moves to
 * pending with payment unpaid and no current attempt, and waits for the
 * browser's confirm of payment_id, whose client secret is kept only as
 * secret_mac (older secrets of the reservation are dropped). The same
 * refusals as resv_convert_begin; idem stored in the same commit. */
int resv_await_card(struct store *st, struct store_waker *w, const char *id,
                    const char *customer, const char *payment_id, const char *secret_mac,
                    int save_method, int64_t now, const struct store_idem *idem,
                    struct resv_row *out, enum resv_err *err, store_done_fn done,
                    void *arg);
/* The customer cancels a hold: held, or pending with no payment being
 * decided (unpaid, failed), becomes cancelled and its places come back
 * (once). INVALID_STATUS when converted, confirmed, refunded, cancelled
 * or while a payment is in flight; HOLD_EXPIRED when its time ran out. */
int resv_cancel(struct store *st, struct store_waker *w, const char *id,
                const char *customer, int64_t now, const struct store_idem *idem,
                struct resv_row *out, enum resv_err *err, store_done_fn done, void *arg);

struct resv_secret {
	char reservation_id[40];
	char customer_id[192];
	char secret_mac[65];
};
/* The waiting payment payment_id; FGW_ERR_NOT_FOUND. */
int resv_secret_get(struct store_reader *rd, const char *payment_id,
                    struct resv_secret *out);

/* Reservation events (reservation.confirmed, .cancelled, .expired) are
 * written by the jobs that make the move, in the same commit; a publisher
 * reads them, queues them for the webhook endpoints, and marks them. */
#define RESV_EVENTS_MAX 32
struct resv_event {
	int64_t id;
	char type[32];
	int64_t created_at;
	struct resv_row row; /* the reservation as it is now */
};
int resv_events_pending(struct store_reader *rd, struct resv_event *ev, size_t cap,
                        size_t *n);
int resv_events_published(struct store *st, struct store_waker *w, const int64_t *ids,
                          size_t n, store_done_fn done, void *arg);

/* ---- reads ------------------------------------------------------------ */
int resv_slot_get(struct store_reader *rd, const char *slot_id, struct resv_slot *slot,
                  struct resv_experience *exp);
/* Reservation by id for customer (NULL: any). FGW_ERR_NOT_FOUND. */
int resv_get(struct store_reader *rd, const char *customer, const char *id,
             struct resv_row *out);
/* 1 when reservation id's current payment attempt is txn_id (a convert
 * linked it), 0 when not (no such reservation, or another attempt), or a
 * negative FGW_ERR_* code when the read failed or could not be from a
 * fresh snapshot (another statement of rd still mid-step). The cheap test
 * before a resv_payment_moved that would change nothing. */
int resv_links_txn(struct store_reader *rd, const char *id, const char *txn_id);
/* Page of a customer's reservations, newest first; status NULL = all.
 * *rows malloc'ed (n of them), *total the count over all pages. */
int resv_list(struct store_reader *rd, const char *customer, const char *status,
              int limit, int offset, struct resv_row **rows, int *n, int64_t *total);
/* Calls fn for every slot (flairctl slots list). */
int resv_slots_each(struct store_reader *rd,
                    void (*fn)(void *arg, const struct resv_slot *s,
                               const struct resv_experience *e),
                    void *arg);

#endif
