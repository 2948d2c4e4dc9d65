/*
 * tests/unit/test_resv.c — store/reservations.c: capacity decided in jobs,
 * the hold/convert/confirm rules, expiry, refunds releasing places once,
 * catalogue loading. Jobs run with a NULL waker and are waited for
 * (resv_wait), so every case is sequential and bounded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "core/err.h"
#include "core/util.h"
#include "store/reservations.h"
#include "store/store.h"
#include "store/store_int.h"
#include "tt.h"

#define DAY 86400000LL

static int
mac(void *ctx, const void *msg, size_t len, unsigned char out[32])
{
	(void)ctx;
	return crypto_generichash(out, 32, msg, len, NULL, 0) == 0 ? 0 : FGW_ERR_CRYPTO;
}

struct fix {
	char dir[64];
	char path[96];
	struct store *st;
	struct store_reader *rd;
	int64_t now;
};

static const char catalogue[] =
    "{\"experiences\":[{\"id\":\"e1\",\"name\":\"Tour\",\"price\":1000,\"currency\":\"USD\","
    "\"groupMinGuests\":4,\"groupDiscountPercent\":10}],"
    "\"timeSlots\":[{\"id\":\"s1\",\"experienceId\":\"e1\",\"startsAt\":4102444800000,"
    "\"capacity\":5},{\"id\":\"s2\",\"experienceId\":\"e1\",\"startsAt\":4102444800000,"
    "\"capacity\":5,\"status\":\"closed\"}]}";

static int
fix_setup(struct fix *f)
{
	struct store_opts o;
	struct fgw_why why = { 0 };
	memset(f, 0, sizeof(*f));
	if (fgw_strlcpy(f->dir, "/tmp/fgw-resv-XXXXXX", sizeof(f->dir)) != 0 ||
	    mkdtemp(f->dir) == NULL)
		return -1;
	if (snprintf(f->path, sizeof(f->path), "%s/gw.db", f->dir) >= (int)sizeof(f->path))
		return -1;
	memset(&o, 0, sizeof(o));
	o.path = f->path;
	o.batch_max = 8;
	o.audit_mac = mac;
	if (store_open(&o, &f->st) != 0 || store_reader_open(f->st, &f->rd) != 0)
		return -1;
	f->now = fgw_now_ms();
	return resv_load_catalogue(f->st, catalogue, strlen(catalogue), &why);
}

static void
fix_teardown(struct fix *f)
{
	static const char *const sfx[] = { "", "-wal", "-shm" };
	char p[128];
	if (f->rd != NULL)
		store_reader_close(f->rd);
	if (f->st != NULL)
		store_close(f->st);
	if (f->dir[0] == '\0')
		return;
	for (int i = 0; i < 3; i++)
		if (snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]) < (int)sizeof(p))
			(void)unlink(p);
	(void)rmdir(f->dir);
}

/* Holds `guests` on slot with the idempotent answer idem (NULL: none);
 * returns the job rc, *e the business outcome. */
static int
hold_idem(struct fix *f, const char *id, const char *slot, int guests, int64_t expires,
          const struct store_idem *idem, enum resv_err *e)
{
	struct resv_row r;
	struct resv_wait *w = NULL;
	int rc;
	memset(&r, 0, sizeof(r));
	fgw_strlcpy(r.id, id, sizeof(r.id));
	fgw_strlcpy(r.client_id, "web", sizeof(r.client_id));
	fgw_strlcpy(r.customer_id, "cust", sizeof(r.customer_id));
	fgw_strlcpy(r.experience_id, "e1", sizeof(r.experience_id));
	fgw_strlcpy(r.time_slot_id, slot, sizeof(r.time_slot_id));
	fgw_strlcpy(r.currency, "USD", sizeof(r.currency));
	r.guests = guests;
	r.total_price = r.original_price = 1000LL * guests;
	r.hold_expires_at = expires;
	r.created_at = f->now;
	if (resv_wait_new(&w) != 0)
		return FGW_ERR_NOMEM;
	rc = resv_hold(f->st, NULL, &r, idem, NULL, e, resv_wait_done, w);
	if (rc != 0) {
		resv_wait_done(w, rc);
		(void)resv_wait_end(w);
		return rc;
	}
	return resv_wait_end(w);
}

static int
hold(struct fix *f, const char *id, const char *slot, int guests, int64_t expires,
     enum resv_err *e)
{
	return hold_idem(f, id, slot, guests, expires, NULL, e);
}

/* Runs sql on the database file through a connection of its own: what
 * another gateway instance sharing the database commits. */
static int
other_instance(struct fix *f, const char *sql)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, 5000);
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	}
	sqlite3_close(db);
	return rc;
}

/* The first hit of a one-value query on the database file, or -1. */
static long long
count_of(struct fix *f, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	long long v = -1;
	if (sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

static int
convert(struct fix *f, const char *id, const char *txn, int64_t now, enum resv_err *e)
{
	struct resv_row out;
	struct resv_wait *w = NULL;
	int rc;
	if (resv_wait_new(&w) != 0)
		return FGW_ERR_NOMEM;
	rc = resv_convert_begin(f->st, NULL, id, "cust", txn, 0, now, &out, e, resv_wait_done,
	                        w);
	if (rc != 0) {
		resv_wait_done(w, rc);
		(void)resv_wait_end(w);
		return rc;
	}
	return resv_wait_end(w);
}

static int
moved(struct fix *f, const char *id, const char *txn, const char *status)
{
	struct resv_wait *w = NULL;
	int rc;
	if (resv_wait_new(&w) != 0)
		return FGW_ERR_NOMEM;
	rc = resv_payment_moved(f->st, NULL, id, txn, status, "ch_1", "ABCDEFGHJKLM", NULL,
	                        resv_wait_done, w);
	if (rc != 0) {
		resv_wait_done(w, rc);
		(void)resv_wait_end(w);
		return rc;
	}
	return resv_wait_end(w);
}

static int
resv_slot_set_capacity_sync(struct fix *f, const char *slot, int capacity)
{
	struct resv_wait *w = NULL;
	int rc;
	if (resv_wait_new(&w) != 0)
		return FGW_ERR_NOMEM;
	rc = resv_slot_set_capacity(f->st, NULL, slot, capacity, resv_wait_done, w);
	if (rc != 0) {
		resv_wait_done(w, rc);
		(void)resv_wait_end(w);
		return rc;
	}
	return resv_wait_end(w);
}

static int
taken(struct fix *f, const char *slot)
{
	struct resv_slot s;
	struct resv_experience e;
	return resv_slot_get(f->rd, slot, &s, &e) == 0 ? s.taken : -1;
}

static const char *
status_of(struct fix *f, const char *id, char *pay, size_t cap)
{
	static struct resv_row r;
	if (resv_get(f->rd, NULL, id, &r) != 0)
		return "";
	if (pay != NULL)
		fgw_strlcpy(pay, r.payment_status, cap);
	return r.status;
}

static int
test_capacity(void)
{
	struct fix f;
	enum resv_err e = RESV_OK;
	int64_t later = fgw_now_ms() + 60000;
	TT_BEGIN;
	CHECK(fix_setup(&f) == 0);
	CHECK(hold(&f, "r1", "s1", 3, later, &e) == 0 && e == RESV_OK);
	CHECK(hold(&f, "r2", "s1", 3, later, &e) == FGW_ERR_STATE);
	CHECK(e == RESV_NOT_ENOUGH_CAPACITY);
	CHECK(hold(&f, "r3", "s1", 2, later, &e) == 0 && e == RESV_OK);
	CHECK(hold(&f, "r4", "s1", 1, later, &e) == FGW_ERR_STATE);
	CHECK(e == RESV_SLOT_NOT_AVAILABLE);
	CHECK(hold(&f, "r5", "s2", 1, later, &e) == FGW_ERR_STATE);
	CHECK(e == RESV_SLOT_NOT_AVAILABLE);
	CHECK(hold(&f, "r6", "nope", 1, later, &e) == FGW_ERR_STATE);
	CHECK(e == RESV_SLOT_NOT_FOUND);
	CHECK(taken(&f, "s1") == 5);
	CHECK(status_of(&f, "r2", NULL, 0)[0] == '\0'); /* refused: nothing written */
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_convert_rules_and_retry(void)
{
	struct fix f;
	enum resv_err e = RESV_OK;
	char pay[24];
	int64_t later = fgw_now_ms() + 60000;
	TT_BEGIN;
	CHECK(fix_setup(&f) == 0);
	CHECK(hold(&f, "r1", "s1", 2, later, &e) == 0);
	CHECK(convert(&f, "r1", "txn_a", f.now, &e) == 0);
	CHECK(strcmp(status_of(&f, "r1", pay, sizeof(pay)), "pending") == 0);
	CHECK(strcmp(pay, "processing") == 0);
	/* a second attempt while one is in flight: no double charge */
	CHECK(convert(&f, "r1", "txn_b", f.now, &e) == FGW_ERR_STATE &&
	      e == RESV_INVALID_STATUS);
	CHECK(moved(&f, "r1", "txn_a", "declined") == 0);
	CHECK(strcmp(status_of(&f, "r1", pay, sizeof(pay)), "pending") == 0);
	CHECK(strcmp(pay, "failed") == 0);
	/* retry on the same hold works while its timer runs */
	CHECK(convert(&f, "r1", "txn_c", f.now, &e) == 0);
	/* the old attempt's late news changes nothing */
	CHECK(moved(&f, "r1", "txn_a", "succeeded") == 0);
	CHECK(strcmp(status_of(&f, "r1", pay, sizeof(pay)), "pending") == 0);
	CHECK(strcmp(pay, "processing") == 0);
	CHECK(moved(&f, "r1", "txn_c", "succeeded") == 0);
	CHECK(strcmp(status_of(&f, "r1", pay, sizeof(pay)), "pending") == 0);
	CHECK(strcmp(pay, "paid") == 0);
	CHECK(convert(&f, "r1", "txn_d", f.now, &e) == FGW_ERR_STATE &&
	      e == RESV_INVALID_STATUS);
	CHECK(convert(&f, "zz", "txn_e", f.now, &e) == FGW_ERR_STATE && e == RESV_NOT_FOUND);
end:
	fix_teardown(&f);
	TT_END;
}

/* The listener's cheap test: only a hold's current attempt is linked, and
 * a reader with an older snapshot open answers "unknown". */
static int
test_links_txn(void)
{
	struct fix f;
	enum resv_err e = RESV_OK;
	struct db_stmt *open_read = NULL;
	int64_t later = fgw_now_ms() + 60000;
	TT_BEGIN;
	CHECK(fix_setup(&f) == 0);
	CHECK(hold(&f, "r1", "s1", 2, later, &e) == 0);
	CHECK_EQ_INT(resv_links_txn(f.rd, "r1", "txn_a"), 0); /* not converted yet */
	CHECK(convert(&f, "r1", "txn_a", f.now, &e) == 0);
	CHECK_EQ_INT(resv_links_txn(f.rd, "r1", "txn_a"), 1);
	CHECK_EQ_INT(resv_links_txn(f.rd, "r1", "txn_b"), 0);
	CHECK_EQ_INT(resv_links_txn(f.rd, "res_website_own", "txn_a"), 0);
	CHECK(moved(&f, "r1", "txn_a", "declined") == 0);
	CHECK(convert(&f, "r1", "txn_c", f.now, &e) == 0);
	CHECK_EQ_INT(resv_links_txn(f.rd, "r1", "txn_a"), 0); /* superseded */
	CHECK_EQ_INT(resv_links_txn(f.rd, "r1", "txn_c"), 1);
	CHECK_EQ_INT(db_prepare(store_reader_db(f.rd), "SELECT id FROM time_slots",
	                        &open_read),
	             0);
	CHECK_EQ_INT(db_step(open_read), DB_ROW);
	CHECK_EQ_INT(resv_links_txn(f.rd, "r1", "txn_c"), FGW_ERR_STATE);
	db_release(open_read);
	open_read = NULL;
	CHECK_EQ_INT(resv_links_txn(f.rd, "r1", "txn_c"), 1);
end:
	db_release(open_read);
	fix_teardown(&f);
	TT_END;
}

static int
test_expiry_and_refund_release_once(void)
{
	struct fix f;
	enum resv_err e = RESV_OK;
	struct resv_wait *w = NULL;
	char pay[24];
	int64_t soon = fgw_now_ms() + 1000;
	TT_BEGIN;
	CHECK(fix_setup(&f) == 0);
	CHECK(hold(&f, "r1", "s1", 2, soon, &e) == 0);
	CHECK(hold(&f, "r2", "s1", 2, soon, &e) == 0);
	CHECK(convert(&f, "r2", "txn_2", f.now, &e) == 0);
	CHECK(moved(&f, "r2", "txn_2", "requires_action") == 0);
	CHECK(taken(&f, "s1") == 4);
	CHECK(convert(&f, "r1", "txn_1", soon + 1, &e) == FGW_ERR_STATE &&
	      e == RESV_HOLD_EXPIRED);
	CHECK(resv_wait_new(&w) == 0);
	CHECK(resv_sweep(f.st, NULL, soon + 1, resv_wait_done, w) == 0);
	CHECK(resv_wait_end(w) == 0);
	/* r1 expired and gave its places back; r2 waits for 3-D Secure */
	CHECK(strcmp(status_of(&f, "r1", NULL, 0), "expired") == 0);
	CHECK(strcmp(status_of(&f, "r2", NULL, 0), "pending") == 0);
	CHECK(taken(&f, "s1") == 2);
	/* completes later: confirmed on its own with a reference */
	CHECK(moved(&f, "r2", "txn_2", "succeeded") == 0);
	CHECK(strcmp(status_of(&f, "r2", pay, sizeof(pay)), "confirmed") == 0);
	CHECK(moved(&f, "r2", "txn_2", "refunded") == 0);
	CHECK(moved(&f, "r2", "txn_2", "refunded") == 0);
	CHECK(strcmp(status_of(&f, "r2", pay, sizeof(pay)), "refunded") == 0);
	CHECK(taken(&f, "s1") == 0);
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_confirm_and_capacity_changes(void)
{
	struct fix f;
	enum resv_err e = RESV_OK;
	struct resv_row out;
	struct resv_wait *w = NULL;
	int64_t later = fgw_now_ms() + 60000;
	TT_BEGIN;
	CHECK(fix_setup(&f) == 0);
	CHECK(hold(&f, "r1", "s1", 4, later, &e) == 0);
	CHECK(resv_wait_new(&w) == 0);
	CHECK(resv_confirm(f.st, NULL, "r1", "cust", "", "ABCDEFGHJKLM", &out, &e,
	                   resv_wait_done, w) == 0);
	CHECK(resv_wait_end(w) == FGW_ERR_STATE && e == RESV_INVALID_STATUS);
	CHECK(convert(&f, "r1", "txn_1", f.now, &e) == 0);
	CHECK(moved(&f, "r1", "txn_1", "succeeded") == 0);
	CHECK(resv_wait_new(&w) == 0);
	CHECK(resv_confirm(f.st, NULL, "r1", "cust", "ch_other", "ABCDEFGHJKLM", &out, &e,
	                   resv_wait_done, w) == 0);
	CHECK(resv_wait_end(w) == FGW_ERR_STATE && e == RESV_INTENT_MISMATCH);
	CHECK(resv_wait_new(&w) == 0);
	CHECK(resv_confirm(f.st, NULL, "r1", "cust", "ch_1", "ABCDEFGHJKLM", &out, &e,
	                   resv_wait_done, w) == 0);
	CHECK(resv_wait_end(w) == 0);
	CHECK(strcmp(out.status, "confirmed") == 0 &&
	      strcmp(out.reference, "ABCDEFGHJKLM") == 0);
	/* capacity never below places taken */
	CHECK(resv_wait_new(&w) == 0);
	CHECK(resv_slot_set_capacity(f.st, NULL, "s1", 3, resv_wait_done, w) == 0);
	CHECK(resv_wait_end(w) == FGW_ERR_STATE);
	CHECK(resv_wait_new(&w) == 0);
	CHECK(resv_slot_set_capacity(f.st, NULL, "s1", 8, resv_wait_done, w) == 0);
	CHECK(resv_wait_end(w) == 0);
	CHECK(hold(&f, "r2", "s1", 4, later, &e) == 0);
end:
	fix_teardown(&f);
	TT_END;
}

static int
test_catalogue_refuses_bad_input(void)
{
	struct fix f;
	struct fgw_why why = { 0 };
	static const char *const bad[] = {
		"[]",
		"{\"experiences\":[{\"id\":\"e2\",\"currency\":\"USD\",\"price\":-1}]}",
		"{\"experiences\":[{\"id\":\"e2\",\"currency\":\"USD\",\"price\":1,"
		"\"groupDiscountPercent\":60,\"earlyBirdPercent\":60}]}",
		"{\"timeSlots\":[{\"id\":\"s9\",\"experienceId\":\"e1\",\"startsAt\":1,"
		"\"capacity\":1,\"status\":\"maybe\"}]}",
		NULL,
	};
	TT_BEGIN;
	CHECK(fix_setup(&f) == 0);
	for (int i = 0; bad[i]; i++)
		CHECK(resv_load_catalogue(f.st, bad[i], strlen(bad[i]), &why) == FGW_ERR_INVALID);
end:
	fix_teardown(&f);
	TT_END;
}

static void
fill_key(struct store_idem *i, const char *key, const char *hash, int64_t expires_at)
{
	memset(i, 0, sizeof(*i));
	fgw_strlcpy(i->client_id, "scope_web_cust", sizeof(i->client_id));
	fgw_strlcpy(i->key, key, sizeof(i->key));
	fgw_strlcpy(i->request_hash, hash, sizeof(i->request_hash));
	i->status_code = 200;
	i->body = "{\"id\":\"r\"}";
	i->expires_at = expires_at;
}

/* A hold's key is claimed in its own job, and the database decides: a key
 * another instance holds (its claim committed first, in progress or
 * answered) makes the hold change nothing and fail FGW_ERR_CONFLICT —
 * even when the winner's hold has since filled the slot — instead of
 * taking the places a second time and overwriting the winner's answer. An
 * expired key is taken over in the same job. */
static int
test_hold_key_taken_by_another_instance(void)
{
	struct fix f;
	enum resv_err e = RESV_OK;
	struct store_idem idem, got;
	int64_t later = fgw_now_ms() + 60000;
	char sql[512];
	TT_BEGIN;
	memset(&got, 0, sizeof(got));
	CHECK(fix_setup(&f) == 0);
	/* In progress on the other instance. */
	snprintf(sql, sizeof(sql),
	         "INSERT INTO idempotency (client_id, key, request_hash, status_code, body,"
	         " txn_id, created_at, expires_at) VALUES ('scope_web_cust', 'k-busy',"
	         " 'h-same', 0, NULL, NULL, %lld, %lld)",
	         (long long)f.now, (long long)later);
	CHECK_EQ_INT(other_instance(&f, sql), SQLITE_OK);
	fill_key(&idem, "k-busy", "h-same", later);
	CHECK_EQ_INT(hold_idem(&f, "r1", "s1", 2, later, &idem, &e), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(taken(&f, "s1"), 0);
	CHECK(status_of(&f, "r1", NULL, 0)[0] == '\0');
	CHECK_EQ_INT(count_of(&f, "SELECT status_code FROM idempotency WHERE key = 'k-busy'"),
	             0);
	/* The other instance's hold of the whole slot committed with its
	 * answer: the repeat is a conflict (answered from the stored row),
	 * not "not enough capacity". */
	CHECK(hold(&f, "r-other", "s1", 5, later, &e) == 0);
	snprintf(sql, sizeof(sql),
	         "INSERT INTO idempotency (client_id, key, request_hash, status_code, body,"
	         " txn_id, created_at, expires_at) VALUES ('scope_web_cust', 'k-done',"
	         " 'h-same', 200, '{\"id\":\"r-other\"}', NULL, %lld, %lld)",
	         (long long)f.now, (long long)later);
	CHECK_EQ_INT(other_instance(&f, sql), SQLITE_OK);
	fill_key(&idem, "k-done", "h-same", later);
	CHECK_EQ_INT(hold_idem(&f, "r2", "s1", 5, later, &idem, &e), FGW_ERR_CONFLICT);
	CHECK_EQ_INT(taken(&f, "s1"), 5);
	CHECK_EQ_INT(store_idem_get(f.rd, "scope_web_cust", "k-done", &got), 0);
	CHECK_STR(got.body, "{\"id\":\"r-other\"}");
	store_idem_clear(&got);
	/* An expired key is free again: replaced in the hold's job. */
	snprintf(sql, sizeof(sql),
	         "INSERT INTO idempotency (client_id, key, request_hash, status_code, body,"
	         " txn_id, created_at, expires_at) VALUES ('scope_web_cust', 'k-old',"
	         " 'h-old', 200, '{}', NULL, %lld, %lld)",
	         (long long)(f.now - 2000), (long long)(f.now - 1000));
	CHECK_EQ_INT(other_instance(&f, sql), SQLITE_OK);
	fill_key(&idem, "k-old", "h-new", later);
	CHECK_EQ_INT(hold_idem(&f, "r3", "s2", 1, later, &idem, &e), FGW_ERR_STATE);
	CHECK(e == RESV_SLOT_NOT_AVAILABLE); /* s2 is closed: nothing kept */
	/* ... and its replacement rolled back with it. */
	CHECK_EQ_INT(count_of(&f, "SELECT count(*) FROM idempotency WHERE key = 'k-old'"
	                          " AND request_hash = 'h-old'"),
	             1);
	CHECK_EQ_INT(resv_slot_set_capacity_sync(&f, "s1", 6), 0);
	CHECK_EQ_INT(hold_idem(&f, "r3", "s1", 1, later, &idem, &e), 0);
	CHECK_EQ_INT(taken(&f, "s1"), 6);
	CHECK_EQ_INT(store_idem_get(f.rd, "scope_web_cust", "k-old", &got), 0);
	CHECK_STR(got.request_hash, "h-new");
	CHECK_EQ_INT(got.status_code, 200);
end:
	store_idem_clear(&got);
	fix_teardown(&f);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "capacity", test_capacity },
	{ "convert_rules_and_retry", test_convert_rules_and_retry },
	{ "links_txn", test_links_txn },
	{ "expiry_and_refund_release_once", test_expiry_and_refund_release_once },
	{ "confirm_and_capacity_changes", test_confirm_and_capacity_changes },
	{ "catalogue_refuses_bad_input", test_catalogue_refuses_bad_input },
	{ "hold_key_taken_by_another_instance", test_hold_key_taken_by_another_instance },
	{ NULL, NULL },
};

TT_MAIN(cases)
