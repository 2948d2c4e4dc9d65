/*
 * store/reservations.c — SQL for experiences, time slots and reservations.
 *
 * Layout: small statement helpers; the write jobs (each a `run` executed on
 * the writer thread inside its own savepoint, see store_int.h); the
 * catalogue loader; the reads. Capacity checks live only inside jobs, where
 * the writer thread serializes them (see reservations.h).
 *
 * Several instances may share one PostgreSQL database, each with its own
 * writer, under READ COMMITTED: what a job read may have changed by the
 * time it writes. So every change that depends on what was read says so
 * in its own WHERE (taken + n <= capacity; the status it moves from;
 * released = 0), which PostgreSQL re-checks on the newest row version
 * after waiting for a concurrent writer; zero rows changed means another
 * job got there first, and the job decides again or refuses. On SQLite
 * (one writer) the guards always hold.
 */
#define LOG_MODULE "store"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "store/db.h"
#include "store/reservations.h"
#include "store/sqlutil.h"
#include "store/store_int.h"

/* ---- statement helpers ------------------------------------------------ */

/* Runs a statement that returns no rows; 0 or FGW_ERR_DB. */
static int
step_done(struct db_stmt *s)
{
	int rc = db_step(s);
	db_release(s);
	return rc == DB_DONE ? 0 : FGW_ERR_DB;
}

/* The columns of struct resv_row, once (store/sqlutil.h). */
/* clang-format off */
#define RESV_COLUMNS(F, N)                                                     \
	F(SQL_TEXT, id) N(SQL_TEXT, client_id) N(SQL_TEXT, customer_id)            \
	N(SQL_TEXT, experience_id) N(SQL_TEXT, time_slot_id) N(SQL_INT, guests)    \
	N(SQL_TEXT, guest_name) N(SQL_TEXT, guest_email) N(SQL_TEXT, guest_phone)  \
	N(SQL_TEXT, special_requests) N(SQL_TEXT, status)                         \
	N(SQL_TEXT, payment_status) N(SQL_I64, total_price)                        \
	N(SQL_I64, original_price) N(SQL_I64, group_discount)                      \
	N(SQL_I64, early_discount) N(SQL_TEXT, currency)                           \
	N(SQL_I64, hold_expires_at) N(SQL_TEXT, txn_id)                            \
	N(SQL_TEXT, payment_intent_id) N(SQL_TEXT, reference)                      \
	N(SQL_INT, save_method) N(SQL_I64, created_at) N(SQL_I64, updated_at)
/* clang-format on */

#define RESV_COLS SQL_COL_NAMES(RESV_COLUMNS)
/* The same list for a join, each column named as r.COLUMN. */
#define RESV_COL_R1_(kind, f) "r." #f
#define RESV_COL_RN_(kind, f) ", r." #f
#define RESV_COLS_R RESV_COLUMNS(RESV_COL_R1_, RESV_COL_RN_)

#define SQL_COL_ROW struct resv_row
static const struct sql_col resv_cols[] = { SQL_COL_TABLE(RESV_COLUMNS) };
#undef SQL_COL_ROW

static void
read_row_at(struct db_stmt *s, int o, struct resv_row *r)
{
	memset(r, 0, sizeof(*r));
	sql_read_cols(s, o, resv_cols, sizeof(resv_cols) / sizeof(resv_cols[0]), r);
}

static void
read_row(struct db_stmt *s, struct resv_row *r)
{
	read_row_at(s, 0, r);
}

/* Reservation by id (and customer when not NULL). */
static int
load_row(struct db *db, const char *customer, const char *id, struct resv_row *out)
{
	struct db_stmt *s = NULL;
	int r;
	/* ?2 IS NULL alone gives PostgreSQL no type for ?2 (it refuses to
	 * prepare it): the CAST does, on both backends. */
	if ((r = db_prepare(db,
	                    "SELECT " RESV_COLS " FROM reservations WHERE id = ?1"
	                    " AND (CAST(?2 AS TEXT) IS NULL OR customer_id = ?2)",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, id);
	if (customer != NULL)
		db_bind_text(s, 2, customer);
	else
		db_bind_null(s, 2);
	if ((r = db_step_row(s)) == 0)
		read_row(s, out);
	db_release(s);
	return r;
}

/* Gives a reservation's places back to its slot, once: the flag flips
 * first, and only the job that flipped it (one, however many instances
 * expire or refund the reservation at once) gives the places back. */
static int
release_places(struct db *db, const char *id)
{
	struct db_stmt *s = NULL;
	char slot[64];
	int r, rc, guests;
	if ((r = db_prepare(
	         db, "UPDATE reservations SET released = 1 WHERE id = ?1 AND released = 0",
	         &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, id);
	if ((r = step_done(s)) != 0 || db_changes(db) != 1)
		return r;
	if ((r = db_prepare(db, "SELECT time_slot_id, guests FROM reservations WHERE id = ?1",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, id);
	if ((rc = db_step(s)) != DB_ROW) {
		db_release(s);
		return FGW_ERR_DB;
	}
	r = db_col_copy(s, 0, slot, sizeof(slot));
	guests = db_col_int(s, 1);
	db_release(s);
	if (r != 0)
		return FGW_ERR_DB;
	/* Never below zero (MAX(a, b) of two values is SQLite's alone). */
	if ((r = db_prepare(db,
	                    "UPDATE time_slots SET taken = CASE WHEN taken > ?2"
	                    " THEN taken - ?2 ELSE 0 END WHERE id = ?1",
	                    &s)) != 0)
		return r;
	db_bind_text(s, 1, slot);
	db_bind_int(s, 2, guests);
	return step_done(s);
}

/* A move the website hears about, in the same commit as the move. */
static int
add_event(struct db *db, const char *id, const char *type, int64_t now)
{
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(db,
	                    "INSERT INTO reservation_events (reservation_id, event_type,"
	                    " created_at) VALUES (?1, ?2, ?3)",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, id);
	db_bind_text_or_null(s, 2, type);
	db_bind_int64(s, 3, now);
	return step_done(s);
}

/* Forgets every browser client secret of a reservation. */
static int
drop_secrets(struct db *db, const char *id)
{
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(db,
	                    "DELETE FROM reservation_client_secrets WHERE reservation_id = ?1",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, id);
	return step_done(s);
}

/* A hold that ended unpaid (expired or cancelled, just moved so by this
 * job) gives its places back, forgets its browser secrets and tells the
 * website with event. */
static int
hold_ended(struct db *db, const char *id, const char *event, int64_t now)
{
	int r;
	if ((r = release_places(db, id)) != 0 || (r = drop_secrets(db, id)) != 0)
		return r;
	return add_event(db, id, event, now);
}

/* ---- jobs --------------------------------------------------------------- */

/* One job context for every kind; fields used depend on the job. */
struct job {
	struct resv_row row; /* input (hold) or output */
	struct resv_experience exp;
	struct resv_slot slot;
	char id[64];
	char customer[128];
	char txn_id[40];
	char txn_status[24];
	char intent_id[96];
	char reference[16];
	char payment_id[40];
	char secret_mac[65];
	int64_t event_ids[RESV_EVENTS_MAX];
	size_t n_events;
	int capacity;
	int save_method;
	int64_t now;
	struct resv_row *out; /* caller's, written on the writer thread
	                                 before done runs */
	enum resv_err *err;
};

static int
job_fail(struct job *j, enum resv_err e)
{
	if (j->err != NULL)
		*j->err = e;
	return FGW_ERR_STATE;
}

static int
run_experience_put(struct db *db, void *ctx)
{
	struct job *j = ctx;
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(
	         db,
	         "INSERT INTO experiences (id, name, price, currency, group_min,"
	         " group_pct, early_days, early_pct) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"
	         " ON CONFLICT(id) DO UPDATE SET name = ?2, price = ?3, currency = ?4,"
	         " group_min = ?5, group_pct = ?6, early_days = ?7, early_pct = ?8",
	         &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, j->exp.id);
	db_bind_text(s, 2, j->exp.name);
	db_bind_int64(s, 3, j->exp.price);
	db_bind_text_or_null(s, 4, j->exp.currency);
	db_bind_int(s, 5, j->exp.group_min);
	db_bind_int(s, 6, j->exp.group_pct);
	db_bind_int(s, 7, j->exp.early_days);
	db_bind_int(s, 8, j->exp.early_pct);
	return step_done(s);
}

static int
run_slot_put(struct db *db, void *ctx)
{
	struct job *j = ctx;
	struct db_stmt *s = NULL;
	int r;
	/* capacity below what is taken would oversell: keep at least taken.
	 * (MAX(a, b) of two values is SQLite's alone; an unqualified column
	 * in DO UPDATE is ambiguous to PostgreSQL, which also has excluded's.) */
	if ((r = db_prepare(
	         db,
	         "INSERT INTO time_slots (id, experience_id, starts_at, capacity,"
	         " taken, status) VALUES (?1, ?2, ?3, ?4, 0, ?5)"
	         " ON CONFLICT(id) DO UPDATE SET experience_id = ?2, starts_at = ?3,"
	         " capacity = CASE WHEN ?4 > time_slots.taken THEN ?4"
	         " ELSE time_slots.taken END,"
	         " status = ?5",
	         &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, j->slot.id);
	db_bind_text_or_null(s, 2, j->slot.experience_id);
	db_bind_int64(s, 3, j->slot.starts_at);
	db_bind_int(s, 4, j->slot.capacity);
	db_bind_text(s, 5, j->slot.status[0] ? j->slot.status : "open");
	return step_done(s);
}

static int
run_slot_capacity(struct db *db, void *ctx)
{
	struct job *j = ctx;
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(
	         db, "UPDATE time_slots SET capacity = ?2 WHERE id = ?1 AND taken <= ?2",
	         &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, j->id);
	db_bind_int(s, 2, j->capacity);
	if ((r = step_done(s)) != 0)
		return r;
	return db_changes(db) == 1 ? 0 : FGW_ERR_STATE;
}

static int
run_hold(struct db *db, void *ctx)
{
	struct job *j = ctx;
	const struct resv_row *v = &j->row;
	struct db_stmt *s = NULL;
	int r, rc, capacity, taken;
	char status[12];

	/* One guarded UPDATE takes the places: two holds on two instances
	 * cannot both pass a check made before either wrote. */
	if (v->guests <= 0)
		return job_fail(j, RESV_NOT_ENOUGH_CAPACITY);
	if ((r = db_prepare(db,
	                    "UPDATE time_slots SET taken = taken + ?3 WHERE id = ?1"
	                    " AND experience_id = ?2 AND status = 'open'"
	                    " AND taken + ?3 <= capacity",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, v->time_slot_id);
	db_bind_text_or_null(s, 2, v->experience_id);
	db_bind_int(s, 3, v->guests);
	if ((r = step_done(s)) != 0)
		return r;
	if (db_changes(db) != 1) {
		/* Refused: why, as the slot is now. */
		if ((r = db_prepare(db,
		                    "SELECT capacity, taken, status FROM time_slots WHERE id = ?1"
		                    " AND experience_id = ?2",
		                    &s)) != 0)
			return r;
		db_bind_text_or_null(s, 1, v->time_slot_id);
		db_bind_text_or_null(s, 2, v->experience_id);
		rc = db_step(s);
		if (rc != DB_ROW) {
			db_release(s);
			return rc == DB_DONE ? job_fail(j, RESV_SLOT_NOT_FOUND) : FGW_ERR_DB;
		}
		capacity = db_col_int(s, 0);
		taken = db_col_int(s, 1);
		db_col_copy(s, 2, status, sizeof(status));
		db_release(s);
		if (strcmp(status, "open") != 0 || taken >= capacity)
			return job_fail(j, RESV_SLOT_NOT_AVAILABLE);
		return job_fail(j, RESV_NOT_ENOUGH_CAPACITY);
	}
	if ((r = db_prepare(
	         db,
	         "INSERT INTO reservations (id, client_id, customer_id, experience_id,"
	         " time_slot_id, guests, guest_name, guest_email, guest_phone,"
	         " special_requests, status, payment_status, total_price,"
	         " original_price, group_discount, early_discount, currency,"
	         " hold_expires_at, released, save_method, created_at, updated_at)"
	         " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,'held','unpaid',?11,?12,"
	         "?13,?14,?15,?16,0,0,?17,?17)",
	         &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, v->id);
	db_bind_text_or_null(s, 2, v->client_id);
	db_bind_text_or_null(s, 3, v->customer_id);
	db_bind_text_or_null(s, 4, v->experience_id);
	db_bind_text_or_null(s, 5, v->time_slot_id);
	db_bind_int(s, 6, v->guests);
	db_bind_text_or_null(s, 7, v->guest_name);
	db_bind_text_or_null(s, 8, v->guest_email);
	db_bind_text_or_null(s, 9, v->guest_phone);
	db_bind_text_or_null(s, 10, v->special_requests);
	db_bind_int64(s, 11, v->total_price);
	db_bind_int64(s, 12, v->original_price);
	db_bind_int64(s, 13, v->group_discount);
	db_bind_int64(s, 14, v->early_discount);
	db_bind_text_or_null(s, 15, v->currency);
	db_bind_int64(s, 16, v->hold_expires_at);
	db_bind_int64(s, 17, v->created_at);
	return step_done(s);
}

/* A hold has run out when its time is over and no payment succeeded or is
 * still being decided (those keep the places until they settle). */
static int
hold_ran_out(const struct resv_row *r, int64_t now)
{
	if (strcmp(r->status, "expired") == 0)
		return 1;
	if (strcmp(r->status, "held") != 0 && strcmp(r->status, "pending") != 0)
		return 0;
	return (strcmp(r->payment_status, "unpaid") == 0 ||
	        strcmp(r->payment_status, "failed") == 0) &&
	       now >= r->hold_expires_at;
}

/* A payment may start: on a hold, after a failed attempt, or when a
 * convert without a card left one waiting for the browser (unpaid). Never
 * while one is being decided or after one succeeded: no double charge. */
static int
payable(const struct resv_row *r)
{
	return strcmp(r->status, "held") == 0 || (strcmp(r->status, "pending") == 0 &&
	                                          (strcmp(r->payment_status, "failed") == 0 ||
	                                           strcmp(r->payment_status, "unpaid") == 0));
}

/* The job's reservation (the customer's) into j->out: 0, a job_fail
 * answer, or a database error. */
static int
load_own(struct db *db, struct job *j)
{
	int r = load_row(db, j->customer, j->id, j->out);
	return r == FGW_ERR_NOT_FOUND ? job_fail(j, RESV_NOT_FOUND) : r;
}

/* The job's reservation into j->out, if the customer's hold may still be
 * paid for: 0, a job_fail answer, or a database error. */
static int
load_payable(struct db *db, struct job *j)
{
	int r;
	if ((r = load_own(db, j)) != 0)
		return r;
	if (hold_ran_out(j->out, j->now))
		return job_fail(j, RESV_HOLD_EXPIRED);
	if (!payable(j->out))
		return job_fail(j, RESV_INVALID_STATUS);
	return FGW_OK;
}

/* A payable reservation (load_payable) becomes pending with payment
 * status pay, paid by txn_id ("": no attempt is current yet); j->out
 * follows. */
static int
mark_pending(struct db *db, struct job *j, const char *pay, const char *txn_id)
{
	struct db_stmt *s = NULL;
	int r;

	/* From the state load_payable saw, or not at all: a payment started
	 * (or the hold expired or was cancelled) meanwhile on another
	 * instance must not be followed by a second one. */
	if ((r = db_prepare(db,
	                    "UPDATE reservations SET status = 'pending', payment_status ="
	                    " ?2, txn_id = ?3, payment_intent_id = NULL, save_method = ?4,"
	                    " updated_at = ?5 WHERE id = ?1 AND status = ?6"
	                    " AND payment_status = ?7",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, j->id);
	db_bind_text_or_null(s, 2, pay);
	db_bind_text_or_null(s, 3, txn_id);
	db_bind_int(s, 4, j->save_method);
	db_bind_int64(s, 5, j->now);
	db_bind_text(s, 6, j->out->status);
	db_bind_text(s, 7, j->out->payment_status);
	if ((r = step_done(s)) != 0)
		return r;
	if (db_changes(db) != 1)
		return job_fail(j, RESV_INVALID_STATUS);
	fgw_strlcpy(j->out->status, "pending", sizeof(j->out->status));
	fgw_strlcpy(j->out->payment_status, pay, sizeof(j->out->payment_status));
	fgw_strlcpy(j->out->txn_id, txn_id, sizeof(j->out->txn_id));
	j->out->payment_intent_id[0] = '\0';
	return 0;
}

static int
run_convert_begin(struct db *db, void *ctx)
{
	struct job *j = ctx;
	int r;

	if ((r = load_payable(db, j)) != 0)
		return r;
	return mark_pending(db, j, "processing", j->txn_id);
}

/* What a move found: the status and payment status it moves from. */
struct from {
	const char *status;
	const char *pay;
};

/* Moves reservation id from `from` (as read in this job) to status (pay,
 * intent: NULL keeps them; reference: kept when set). 0 when moved,
 * FGW_ERR_CONFLICT when it is no longer in `from` (another instance moved
 * it since the read), or a database error. */
static int
set_state(struct db *db, const char *id, struct from from, const char *status,
          const char *pay, const char *intent, const char *reference, int64_t now)
{
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(
	         db,
	         "UPDATE reservations SET status = ?2, payment_status = COALESCE(?3, payment_status),"
	         " payment_intent_id = COALESCE(?4, payment_intent_id),"
	         " reference = COALESCE(reference, ?5), updated_at = ?6"
	         " WHERE id = ?1 AND status = ?7 AND payment_status = ?8",
	         &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, id);
	db_bind_text_or_null(s, 2, status);
	db_bind_text_or_null(s, 3, pay);
	db_bind_text_or_null(s, 4, intent);
	db_bind_text_or_null(s, 5, reference);
	db_bind_int64(s, 6, now);
	db_bind_text(s, 7, from.status);
	db_bind_text(s, 8, from.pay);
	if ((r = step_done(s)) != 0)
		return r;
	return db_changes(db) == 1 ? 0 : FGW_ERR_CONFLICT;
}

/* How many times a job reads and decides again after another instance
 * moved the reservation under it (each time a newer state: few). */
#define RESV_RACE_TRIES 4

/* One reading and move of run_payment_moved: FGW_ERR_CONFLICT when the
 * reservation moved since it was read. */
static int
payment_moved_once(struct db *db, struct job *j)
{
	struct resv_row cur;
	const char *st = j->txn_status, *status, *pay;
	const char *ref = NULL;
	enum txn_state txn_st;
	int r;

	if ((r = load_row(db, NULL, j->id, &cur)) != 0)
		return r == FGW_ERR_NOT_FOUND ? 0 : r;
	/* An older attempt's late news does not touch the current one. */
	if (strcmp(cur.txn_id, j->txn_id) != 0)
		return 0;
	status = cur.status;
	txn_st = txn_state_of(st);
	if (txn_st == TXN_REFUNDED) {
		if ((r = release_places(db, cur.id)) != 0)
			return r;
		return set_state(db, cur.id, (struct from){ cur.status, cur.payment_status },
		                 "refunded", "refunded", NULL, NULL, j->now);
	}
	if (strcmp(cur.status, "pending") != 0)
		return 0; /* confirmed, expired, refunded: nothing to move */
	if (txn_st == TXN_SUCCEEDED) {
		pay = "paid";
		/* Settled later than the convert answer (3-D Secure, webhook):
		 * the booking completes by itself, as the document says. */
		if (strcmp(cur.payment_status, "processing") != 0) {
			status = "confirmed";
			ref = j->reference;
		}
	} else if (txn_st == TXN_REQUIRES_ACTION) {
		pay = "requires_action";
	} else if (txn_st == TXN_DECLINED || txn_st == TXN_FAILED) {
		pay = "failed";
	} else if (txn_st == TXN_PROCESSING || txn_st == TXN_POSTING) {
		pay = "processing";
	} else {
		return 0;
	}
	/* A paid reservation never goes back to unpaid. */
	if (strcmp(cur.payment_status, "paid") == 0)
		return 0;
	if ((r = set_state(db, cur.id, (struct from){ cur.status, cur.payment_status },
	                   status, pay, j->intent_id[0] ? j->intent_id : NULL, ref,
	                   j->now)) != 0)
		return r;
	return ref != NULL ? add_event(db, cur.id, "reservation.confirmed", j->now) : 0;
}

/* Runs once(db, j) again while another instance moved the reservation
 * under it, RESV_RACE_TRIES times at most. */
static int
race_tries(struct db *db, struct job *j, int (*once)(struct db *db, struct job *j))
{
	int r = FGW_ERR_CONFLICT;
	for (int i = 0; i < RESV_RACE_TRIES && r == FGW_ERR_CONFLICT; i++)
		r = once(db, j);
	return r;
}

static int
run_payment_moved(struct db *db, void *ctx)
{
	return race_tries(db, ctx, payment_moved_once);
}

static int
confirm_once(struct db *db, struct job *j)
{
	int r;

	if ((r = load_own(db, j)) != 0)
		return r;
	if (j->intent_id[0] && strcmp(j->intent_id, j->out->payment_intent_id) != 0)
		return job_fail(j, RESV_INTENT_MISMATCH);
	if (strcmp(j->out->status, "confirmed") == 0)
		return 0; /* already: same answer again */
	if (strcmp(j->out->status, "pending") != 0)
		return job_fail(j, strcmp(j->out->status, "expired") == 0 ? RESV_HOLD_EXPIRED
		                                                          : RESV_INVALID_STATUS);
	if (strcmp(j->out->payment_status, "paid") != 0)
		return job_fail(j, RESV_NOT_PAID);
	if ((r = set_state(db, j->id, (struct from){ "pending", "paid" }, "confirmed", "paid",
	                   NULL, j->reference, j->now)) != 0 ||
	    (r = add_event(db, j->id, "reservation.confirmed", j->now)) != 0)
		return r;
	fgw_strlcpy(j->out->status, "confirmed", sizeof(j->out->status));
	fgw_strlcpy(j->out->reference, j->reference, sizeof(j->out->reference));
	return 0;
}

static int
run_confirm(struct db *db, void *ctx)
{
	return race_tries(db, ctx, confirm_once);
}

/* Holds expired per sweep job (the next tick takes the rest). */
#define RESV_SWEEP_MAX 500
#define RESV_SWEEP_MAX_S "500"

static int
run_sweep(struct db *db, void *ctx)
{
	struct job *j = ctx;
	struct db_stmt *s = NULL;
	int r, rc = DB_DONE;
	char ids[RESV_SWEEP_MAX][sizeof(((struct resv_row *)0)->id)];
	size_t n = 0;

	/* Few rows per tick; each is expired and its places given back. The
	 * ids are read whole first (a PostgreSQL statement is not left
	 * mid-step under writes), in one order on every instance. */
	if ((r = db_prepare(db,
	                    "SELECT id FROM reservations WHERE status IN ('held', 'pending')"
	                    " AND payment_status IN ('unpaid', 'failed')"
	                    " AND hold_expires_at <= ?1 ORDER BY id LIMIT " RESV_SWEEP_MAX_S,
	                    &s)) != 0)
		return r;
	db_bind_int64(s, 1, j->now);
	while (n < RESV_SWEEP_MAX && (rc = db_step(s)) == DB_ROW)
		if (db_col_copy(s, 0, ids[n], sizeof(ids[n])) == 0)
			n++;
	db_release(s);
	if (rc != DB_ROW && rc != DB_DONE)
		return FGW_ERR_DB;
	for (size_t i = 0; i < n; i++) {
		/* Expired here only if still due as read: another instance's
		 * sweep (or a payment that started) got it first otherwise, and
		 * its places are not given back twice. */
		if ((r = db_prepare(db,
		                    "UPDATE reservations SET status = 'expired', updated_at = ?2"
		                    " WHERE id = ?1 AND status IN ('held', 'pending')"
		                    " AND payment_status IN ('unpaid', 'failed')"
		                    " AND hold_expires_at <= ?2",
		                    &s)) != 0)
			return r;
		db_bind_text(s, 1, ids[i]);
		db_bind_int64(s, 2, j->now);
		if ((r = step_done(s)) != 0)
			return r;
		if (db_changes(db) != 1)
			continue;
		if ((r = hold_ended(db, ids[i], "reservation.expired", j->now)) != 0)
			return r;
	}
	if ((r = db_prepare(db, "DELETE FROM idempotency WHERE expires_at <= ?1", &s)) != 0)
		return r;
	db_bind_int64(s, 1, j->now);
	return step_done(s);
}

static int
run_await_card(struct db *db, void *ctx)
{
	struct job *j = ctx;
	struct db_stmt *s = NULL;
	int r;

	if ((r = load_payable(db, j)) != 0)
		return r;
	/* No attempt is current until the browser confirms: late news of
	 * an older one must not move this reservation. */
	if ((r = mark_pending(db, j, "unpaid", "")) != 0 ||
	    (r = drop_secrets(db, j->id)) != 0)
		return r;
	if ((r = db_prepare(db,
	                    "INSERT INTO reservation_client_secrets (payment_id,"
	                    " reservation_id, customer_id, secret_mac, created_at)"
	                    " VALUES (?1, ?2, ?3, ?4, ?5)",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, j->payment_id);
	db_bind_text_or_null(s, 2, j->id);
	db_bind_text_or_null(s, 3, j->customer);
	db_bind_text_or_null(s, 4, j->secret_mac);
	db_bind_int64(s, 5, j->now);
	return step_done(s);
}

static int
run_cancel(struct db *db, void *ctx)
{
	struct job *j = ctx;
	int r;

	/* What may be paid for may be dropped; a payment being decided or
	 * done is not the customer's to drop: it settles (or is refunded)
	 * first. */
	if ((r = load_payable(db, j)) != 0)
		return r;
	/* Moved first: a payment that began meanwhile on another instance
	 * keeps the hold, and the places come back only with the move. */
	r = set_state(db, j->id, (struct from){ j->out->status, j->out->payment_status },
	              "cancelled", NULL, NULL, NULL, j->now);
	if (r == FGW_ERR_CONFLICT)
		return job_fail(j, RESV_INVALID_STATUS);
	if (r != 0 || (r = hold_ended(db, j->id, "reservation.cancelled", j->now)) != 0)
		return r;
	fgw_strlcpy(j->out->status, "cancelled", sizeof(j->out->status));
	return 0;
}

static int
run_events_published(struct db *db, void *ctx)
{
	struct job *j = ctx;
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(db, "UPDATE reservation_events SET published = 1 WHERE id = ?1",
	                    &s)) != 0)
		return r;
	for (size_t i = 0; i < j->n_events; i++) {
		db_reset(s);
		db_bind_int64(s, 1, j->event_ids[i]);
		if (db_step(s) != DB_DONE) {
			db_release(s);
			return FGW_ERR_DB;
		}
	}
	db_release(s);
	return 0;
}

static int
run_noop(struct db *db, void *ctx)
{
	(void)db;
	(void)ctx;
	return 0;
}

/* idem: the answer committed with the job (NULL: none); claimed by the
 * job when the job is the request's whole effect (store_commit). */
static int
submit_idem(struct store *st, struct store_waker *w, store_job_fn run, struct job *j,
            const struct store_idem *idem, int claim, const struct store_audit *audit,
            store_done_fn done, void *arg)
{
	return store_submit_custom(st, w, run, j, free,
	                           &(struct store_commit){ .idem = idem,
	                                                   .idem_claim = claim,
	                                                   .audit = audit,
	                                                   .n_audit = audit ? 1 : 0,
	                                                   .done = done,
	                                                   .arg = arg });
}

static int
submit(struct store *st, struct store_waker *w, store_job_fn run, struct job *j,
       const struct store_idem *idem, const struct store_audit *audit, store_done_fn done,
       void *arg)
{
	return submit_idem(st, w, run, j, idem, 0, audit, done, arg);
}

static struct job *
job_alloc(void)
{
	return calloc(1, sizeof(struct job));
}

/* A job on reservation id, for customer (NULL: whoever holds it), at now;
 * its result goes to out and err (each may be NULL). */
static struct job *
job_on(const char *id, const char *customer, int64_t now, struct resv_row *out,
       enum resv_err *err)
{
	struct job *j = job_alloc();
	if (j == NULL)
		return NULL;
	fgw_strlcpy(j->id, id, sizeof(j->id));
	if (customer != NULL)
		fgw_strlcpy(j->customer, customer, sizeof(j->customer));
	j->now = now;
	j->out = out;
	j->err = err;
	if (err != NULL)
		*err = RESV_OK;
	return j;
}

int
resv_experience_put(struct store *st, struct store_waker *w,
                    const struct resv_experience *e, store_done_fn done, void *arg)
{
	struct job *j = job_alloc();
	if (j == NULL)
		return FGW_ERR_NOMEM;
	j->exp = *e;
	return submit(st, w, run_experience_put, j, NULL, NULL, done, arg);
}

int
resv_slot_put(struct store *st, struct store_waker *w, const struct resv_slot *sl,
              store_done_fn done, void *arg)
{
	struct job *j = job_alloc();
	if (j == NULL)
		return FGW_ERR_NOMEM;
	j->slot = *sl;
	return submit(st, w, run_slot_put, j, NULL, NULL, done, arg);
}

int
resv_slot_set_capacity(struct store *st, struct store_waker *w, const char *slot_id,
                       int capacity, store_done_fn done, void *arg)
{
	struct job *j = job_alloc();
	if (j == NULL)
		return FGW_ERR_NOMEM;
	fgw_strlcpy(j->id, slot_id, sizeof(j->id));
	j->capacity = capacity;
	return submit(st, w, run_slot_capacity, j, NULL, NULL, done, arg);
}

int
resv_hold(struct store *st, struct store_waker *w, const struct resv_row *row,
          const struct store_idem *idem, const struct store_audit *audit,
          enum resv_err *err, store_done_fn done, void *arg)
{
	struct job *j = job_alloc();
	if (j == NULL)
		return FGW_ERR_NOMEM;
	j->row = *row;
	j->err = err;
	*err = RESV_OK;
	return submit_idem(st, w, run_hold, j, idem, 1, audit, done, arg);
}

int
resv_convert_begin(struct store *st, struct store_waker *w, const char *id,
                   const char *customer, const char *txn_id, int save_method, int64_t now,
                   struct resv_row *out, enum resv_err *err, store_done_fn done,
                   void *arg)
{
	struct job *j = job_on(id, customer, now, out, err);
	if (j == NULL)
		return FGW_ERR_NOMEM;
	fgw_strlcpy(j->txn_id, txn_id, sizeof(j->txn_id));
	j->save_method = save_method;
	return submit(st, w, run_convert_begin, j, NULL, NULL, done, arg);
}

int
resv_payment_moved(struct store *st, struct store_waker *w, const char *reservation_id,
                   const char *txn_id, const char *txn_status, const char *intent_id,
                   const char *reference, const struct store_idem *idem,
                   store_done_fn done, void *arg)
{
	struct job *j = job_on(reservation_id, NULL, fgw_now_ms(), NULL, NULL);
	if (j == NULL)
		return FGW_ERR_NOMEM;
	fgw_strlcpy(j->txn_id, txn_id, sizeof(j->txn_id));
	fgw_strlcpy(j->txn_status, txn_status, sizeof(j->txn_status));
	fgw_strlcpy(j->intent_id, intent_id ? intent_id : "", sizeof(j->intent_id));
	fgw_strlcpy(j->reference, reference ? reference : "", sizeof(j->reference));
	return submit(st, w, run_payment_moved, j, idem, NULL, done, arg);
}

int
resv_confirm(struct store *st, struct store_waker *w, const char *id,
             const char *customer, const char *intent_id, const char *reference,
             struct resv_row *out, enum resv_err *err, store_done_fn done, void *arg)
{
	struct job *j = job_on(id, customer, fgw_now_ms(), out, err);
	if (j == NULL)
		return FGW_ERR_NOMEM;
	fgw_strlcpy(j->intent_id, intent_id ? intent_id : "", sizeof(j->intent_id));
	fgw_strlcpy(j->reference, reference, sizeof(j->reference));
	return submit(st, w, run_confirm, j, NULL, NULL, done, arg);
}

int
resv_await_card(struct store *st, struct store_waker *w, const char *id,
                const char *customer, const char *payment_id, const char *secret_mac,
                int save_method, int64_t now, const struct store_idem *idem,
                struct resv_row *out, enum resv_err *err, store_done_fn done, void *arg)
{
	struct job *j = job_on(id, customer, now, out, err);
	if (j == NULL)
		return FGW_ERR_NOMEM;
	fgw_strlcpy(j->payment_id, payment_id, sizeof(j->payment_id));
	fgw_strlcpy(j->secret_mac, secret_mac, sizeof(j->secret_mac));
	j->save_method = save_method;
	return submit(st, w, run_await_card, j, idem, NULL, done, arg);
}

int
resv_cancel(struct store *st, struct store_waker *w, const char *id, const char *customer,
            int64_t now, const struct store_idem *idem, struct resv_row *out,
            enum resv_err *err, store_done_fn done, void *arg)
{
	struct job *j = job_on(id, customer, now, out, err);
	if (j == NULL)
		return FGW_ERR_NOMEM;
	return submit_idem(st, w, run_cancel, j, idem, 1, NULL, done, arg);
}

int
resv_events_published(struct store *st, struct store_waker *w, const int64_t *ids,
                      size_t n, store_done_fn done, void *arg)
{
	struct job *j;
	if (n == 0 || n > RESV_EVENTS_MAX)
		return FGW_ERR_INVALID;
	if ((j = job_alloc()) == NULL)
		return FGW_ERR_NOMEM;
	memcpy(j->event_ids, ids, n * sizeof(*ids));
	j->n_events = n;
	return submit(st, w, run_events_published, j, NULL, NULL, done, arg);
}

int
resv_sweep(struct store *st, struct store_waker *w, int64_t now, store_done_fn done,
           void *arg)
{
	struct job *j = job_alloc();
	if (j == NULL)
		return FGW_ERR_NOMEM;
	j->now = now;
	return submit(st, w, run_sweep, j, NULL, NULL, done, arg);
}

int
resv_idem_put(struct store *st, struct store_waker *w, const struct store_idem *idem,
              store_done_fn done, void *arg)
{
	struct job *j = job_alloc();
	if (j == NULL)
		return FGW_ERR_NOMEM;
	return submit_idem(st, w, run_noop, j, idem, 1, NULL, done, arg);
}

/* ---- waiting (tools and start-up only) ---------------------------------- */

struct resv_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int rc;
};

int
resv_wait_new(struct resv_wait **out)
{
	struct resv_wait *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return FGW_ERR_NOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	*out = w;
	return 0;
}

void
resv_wait_done(void *arg, int rc)
{
	struct resv_wait *w = arg;
	pthread_mutex_lock(&w->mu);
	w->done = 1;
	w->rc = rc;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

int
resv_wait_end(struct resv_wait *w)
{
	int rc;
	pthread_mutex_lock(&w->mu);
	while (!w->done)
		pthread_cond_wait(&w->cv, &w->mu);
	rc = w->rc;
	pthread_mutex_unlock(&w->mu);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
	return rc;
}

/* ---- catalogue file ------------------------------------------------------ */

static int
json_int(const cJSON *o, const char *name, int64_t lo, int64_t hi, int64_t def,
         int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (v == NULL) {
		*out = def;
		return 0;
	}
	return fgw_json_int(v, lo, hi, out);
}

static int
json_str(const cJSON *o, const char *name, char *out, size_t cap, int required)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (v == NULL && !required) {
		out[0] = '\0';
		return 0;
	}
	if (!cJSON_IsString(v) || v->valuestring[0] == '\0' || strlen(v->valuestring) >= cap)
		return FGW_ERR_INVALID;
	fgw_strlcpy(out, v->valuestring, cap);
	return 0;
}

static int
wait_job(struct store *st, int is_slot, const void *item)
{
	struct resv_wait *w = NULL;
	int r;
	if ((r = resv_wait_new(&w)) != 0)
		return r;
	r = is_slot ? resv_slot_put(st, NULL, item, resv_wait_done, w)
	            : resv_experience_put(st, NULL, item, resv_wait_done, w);
	if (r != 0) {
		resv_wait_done(w, r);
		(void)resv_wait_end(w);
		return r;
	}
	return resv_wait_end(w);
}

int
resv_load_catalogue(struct store *st, const char *json, size_t len, struct fgw_why *why)
{
	struct fgw_json_error jerr;
	char msg[256];
	cJSON *root = fgw_json_parse(json, len, &jerr);
	const cJSON *arr, *it;
	int r = FGW_ERR_INVALID, i = 0;
	int64_t v[6];

	if (root == NULL) {
		fgw_json_error_str(&jerr, msg, sizeof(msg));
		fgw_why_set(why, NULL, 0, 0, "%s", msg);
		goto out;
	}
	if (!cJSON_IsObject(root)) {
		fgw_why_set(why, NULL, 0, 0, "not a JSON object");
		goto out;
	}
	arr = cJSON_GetObjectItemCaseSensitive(root, "experiences");
	cJSON_ArrayForEach(it, arr) {
		struct resv_experience e;
		memset(&e, 0, sizeof(e));
		if (json_str(it, "id", e.id, sizeof(e.id), 1) != 0 ||
		    json_str(it, "name", e.name, sizeof(e.name), 0) != 0 ||
		    json_str(it, "currency", e.currency, sizeof(e.currency), 1) != 0 ||
		    json_int(it, "price", 0, 100000000000LL, 0, &v[0]) != 0 ||
		    json_int(it, "groupMinGuests", 0, 10000, 0, &v[1]) != 0 ||
		    json_int(it, "groupDiscountPercent", 0, 100, 0, &v[2]) != 0 ||
		    json_int(it, "earlyBirdDays", 0, 3650, 0, &v[3]) != 0 ||
		    json_int(it, "earlyBirdPercent", 0, 100, 0, &v[4]) != 0 ||
		    v[2] + v[4] > 100) {
			fgw_why_set(why, NULL, 0, 0, "experiences[%d]: bad or missing field", i);
			goto out;
		}
		e.price = v[0];
		e.group_min = (int)v[1];
		e.group_pct = (int)v[2];
		e.early_days = (int)v[3];
		e.early_pct = (int)v[4];
		if (st != NULL && (r = wait_job(st, 0, &e)) != 0) {
			fgw_why_set(why, NULL, 0, 0, "experiences[%d]: %s", i, fgw_strerror(r));
			goto out;
		}
		r = FGW_ERR_INVALID;
		i++;
	}
	i = 0;
	arr = cJSON_GetObjectItemCaseSensitive(root, "timeSlots");
	cJSON_ArrayForEach(it, arr) {
		struct resv_slot sl;
		memset(&sl, 0, sizeof(sl));
		if (json_str(it, "id", sl.id, sizeof(sl.id), 1) != 0 ||
		    json_str(it, "experienceId", sl.experience_id, sizeof(sl.experience_id), 1) !=
		        0 ||
		    json_str(it, "status", sl.status, sizeof(sl.status), 0) != 0 ||
		    json_int(it, "startsAt", 0, 32503680000000LL, 0, &v[0]) != 0 ||
		    json_int(it, "capacity", 0, 1000000, 0, &v[1]) != 0 ||
		    (sl.status[0] && strcmp(sl.status, "open") != 0 &&
		     strcmp(sl.status, "closed") != 0)) {
			fgw_why_set(why, NULL, 0, 0, "timeSlots[%d]: bad or missing field", i);
			goto out;
		}
		sl.starts_at = v[0];
		sl.capacity = (int)v[1];
		if (st != NULL && (r = wait_job(st, 1, &sl)) != 0) {
			fgw_why_set(why, NULL, 0, 0, "timeSlots[%d]: %s (unknown experienceId?)", i,
			            fgw_strerror(r));
			goto out;
		}
		r = FGW_ERR_INVALID;
		i++;
	}
	r = 0;
out:
	cJSON_Delete(root);
	return r;
}

/* ---- reads ---------------------------------------------------------------- */

int
resv_slot_get(struct store_reader *rd, const char *slot_id, struct resv_slot *sl,
              struct resv_experience *e)
{
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(
	         store_reader_db(rd),
	         "SELECT s.id, s.experience_id, s.starts_at, s.capacity, s.taken, s.status,"
	         " e.name, e.price, e.currency, e.group_min, e.group_pct, e.early_days,"
	         " e.early_pct FROM time_slots s JOIN experiences e ON e.id = s.experience_id"
	         " WHERE s.id = ?1",
	         &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, slot_id);
	if ((r = db_step_row(s)) != 0) {
		db_release(s);
		return r;
	}
	memset(sl, 0, sizeof(*sl));
	memset(e, 0, sizeof(*e));
	db_col_copy(s, 0, sl->id, sizeof(sl->id));
	db_col_copy(s, 1, sl->experience_id, sizeof(sl->experience_id));
	sl->starts_at = db_col_int64(s, 2);
	sl->capacity = db_col_int(s, 3);
	sl->taken = db_col_int(s, 4);
	db_col_copy(s, 5, sl->status, sizeof(sl->status));
	db_col_copy(s, 1, e->id, sizeof(e->id));
	db_col_copy(s, 6, e->name, sizeof(e->name));
	e->price = db_col_int64(s, 7);
	db_col_copy(s, 8, e->currency, sizeof(e->currency));
	e->group_min = db_col_int(s, 9);
	e->group_pct = db_col_int(s, 10);
	e->early_days = db_col_int(s, 11);
	e->early_pct = db_col_int(s, 12);
	db_release(s);
	return 0;
}

int
resv_get(struct store_reader *rd, const char *customer, const char *id,
         struct resv_row *out)
{
	return load_row(store_reader_db(rd), customer, id, out);
}

int
resv_secret_get(struct store_reader *rd, const char *payment_id, struct resv_secret *out)
{
	struct db_stmt *s = NULL;
	int r;
	if ((r = db_prepare(store_reader_db(rd),
	                    "SELECT reservation_id, customer_id, secret_mac"
	                    " FROM reservation_client_secrets WHERE payment_id = ?1",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, payment_id);
	if ((r = db_step_row(s)) == 0) {
		memset(out, 0, sizeof(*out));
		db_col_copy(s, 0, out->reservation_id, sizeof(out->reservation_id));
		db_col_copy(s, 1, out->customer_id, sizeof(out->customer_id));
		db_col_copy(s, 2, out->secret_mac, sizeof(out->secret_mac));
	}
	db_release(s);
	return r;
}

int
resv_events_pending(struct store_reader *rd, struct resv_event *ev, size_t cap, size_t *n)
{
	struct db_stmt *s = NULL;
	int r, rc = DB_DONE;
	*n = 0;
	if ((r = db_prepare(store_reader_db(rd),
	                    "SELECT e.id, e.event_type, e.created_at, " RESV_COLS_R
	                    " FROM reservation_events e JOIN reservations r"
	                    " ON r.id = e.reservation_id WHERE e.published = 0"
	                    " ORDER BY e.id LIMIT ?1",
	                    &s)) != 0)
		return r;
	db_bind_int64(s, 1, (int64_t)cap);
	while (*n < cap && (rc = db_step(s)) == DB_ROW) {
		struct resv_event *e = &ev[*n];
		memset(e, 0, sizeof(*e));
		e->id = db_col_int64(s, 0);
		db_col_copy(s, 1, e->type, sizeof(e->type));
		e->created_at = db_col_int64(s, 2);
		read_row_at(s, 3, &e->row);
		(*n)++;
	}
	db_release(s);
	return *n == cap || rc == DB_DONE ? 0 : FGW_ERR_DB;
}

int
resv_links_txn(struct store_reader *rd, const char *id, const char *txn_id)
{
	struct db *db = store_reader_db(rd);
	struct db_stmt *s = NULL;
	int r, rc;
	/* The answer must come from a fresh snapshot. A statement left
	 * mid-step on this connection would keep an older one open: then
	 * say "unknown" and let the caller queue the job. */
	if (db_snapshot_open(db))
		return FGW_ERR_STATE;
	if ((r = db_prepare(db, "SELECT 1 FROM reservations WHERE id = ?1 AND txn_id = ?2",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, id);
	db_bind_text_or_null(s, 2, txn_id);
	rc = db_step(s);
	r = rc == DB_ROW ? 1 : rc == DB_DONE ? 0 : FGW_ERR_DB;
	db_release(s);
	return r;
}

int
resv_list(struct store_reader *rd, const char *customer, const char *status, int limit,
          int offset, struct resv_row **rows, int *n, int64_t *total)
{
	struct db *db = store_reader_db(rd);
	struct db_stmt *s = NULL;
	struct resv_row *out = NULL;
	int r, rc, k = 0;

	*rows = NULL;
	*n = 0;
	if ((r = db_prepare(db,
	                    "SELECT COUNT(*) FROM reservations WHERE customer_id = ?1"
	                    " AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)",
	                    &s)) != 0)
		return r;
	db_bind_text_or_null(s, 1, customer);
	db_bind_text_or_null(s, 2, status);
	if (db_step(s) != DB_ROW) {
		db_release(s);
		return FGW_ERR_DB;
	}
	*total = db_col_int64(s, 0);
	db_release(s);
	if ((out = calloc((size_t)(limit > 0 ? limit : 1), sizeof(*out))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = db_prepare(db,
	                    "SELECT " RESV_COLS " FROM reservations WHERE customer_id = ?1"
	                    " AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)"
	                    " ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4",
	                    &s)) != 0)
		goto out;
	db_bind_text_or_null(s, 1, customer);
	db_bind_text_or_null(s, 2, status);
	db_bind_int(s, 3, limit);
	db_bind_int(s, 4, offset);
	while (k < limit && (rc = db_step(s)) == DB_ROW)
		read_row(s, &out[k++]);
	db_release(s);
	*rows = out;
	*n = k;
	out = NULL;
	r = 0;
out:
	free(out);
	return r;
}

int
resv_slots_each(struct store_reader *rd,
                void (*fn)(void *arg, const struct resv_slot *s,
                           const struct resv_experience *e),
                void *arg)
{
	struct db_stmt *s = NULL;
	struct resv_slot sl;
	struct resv_experience e;
	char id[64];
	int r, rc;
	if ((r = db_prepare(store_reader_db(rd),
	                    "SELECT id FROM time_slots ORDER BY starts_at, id", &s)) != 0)
		return r;
	while ((rc = db_step(s)) == DB_ROW) {
		db_col_copy(s, 0, id, sizeof(id));
		if (resv_slot_get(rd, id, &sl, &e) == 0)
			fn(arg, &sl, &e);
	}
	db_release(s);
	return rc == DB_DONE ? 0 : FGW_ERR_DB;
}
