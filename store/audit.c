/*
 * store/audit.c — the append-only, hash-chained audit table.
 *
 * The writer thread appends rows with consecutive seq numbers in commit
 * order; each row carries the previous row's hash and its own keyed MAC
 * over the canonical form described in store/audit.h. Verification walks
 * the table from seq 1 and stops at the first row where the chain breaks.
 *
 * Layout: canonical form and hash, then the writer side (init, append),
 * then verification.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "store/db.h"
#include "store/audit.h"

static const char audit_zero_hash[AUDIT_HASH_HEX] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static const char *
nz(const char *s)
{
	return s != NULL ? s : "";
}

int
audit_canonical(const char *prev_hex, int64_t seq, int64_t ts,
                const struct store_audit *ev, char **out, size_t *outlen)
{
	char seqbuf[24], tsbuf[24];
	const char *parts[9];
	size_t lens[9], total = 0, pos = 0;
	char *buf = NULL;
	int n, r;

	n = snprintf(seqbuf, sizeof(seqbuf), "%" PRId64, seq);
	if (n < 0 || (size_t)n >= sizeof(seqbuf)) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	n = snprintf(tsbuf, sizeof(tsbuf), "%" PRId64, ts);
	if (n < 0 || (size_t)n >= sizeof(tsbuf)) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	parts[0] = nz(prev_hex);
	parts[1] = seqbuf;
	parts[2] = tsbuf;
	parts[3] = nz(ev->actor);
	parts[4] = nz(ev->source);
	parts[5] = nz(ev->event_type);
	parts[6] = nz(ev->resource);
	parts[7] = nz(ev->outcome);
	parts[8] = nz(ev->details_json);
	for (size_t i = 0; i < 9; i++) {
		lens[i] = strlen(parts[i]);
		if (lens[i] > SIZE_MAX / 2 - total - 16) {
			r = FGW_ERR_TOO_LARGE;
			goto out;
		}
		total += lens[i] + 1; /* the separator, or the final NUL */
	}
	if ((buf = malloc(total)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < 9; i++) {
		memcpy(buf + pos, parts[i], lens[i]);
		pos += lens[i];
		buf[pos++] = i < 8 ? '\n' : '\0';
	}
	*out = buf;
	*outlen = total - 1;
	buf = NULL; /* owned by the caller now */
	r = 0;
out:
	free(buf);
	return r;
}

int
audit_hash(store_mac_fn mac, void *mac_ctx, const char *prev_hex, int64_t seq, int64_t ts,
           const struct store_audit *ev, char out[AUDIT_HASH_HEX])
{
	unsigned char tag[32];
	char *msg = NULL;
	size_t len = 0;
	int r;

	if ((r = audit_canonical(prev_hex, seq, ts, ev, &msg, &len)) != 0)
		goto out;
	if ((r = mac(mac_ctx, msg, len, tag)) != 0)
		goto out;
	fgw_hex(tag, sizeof(tag), out);
	r = 0;
out:
	sodium_memzero(tag, sizeof(tag));
	free(msg);
	return r;
}

char *
audit_dup_line(const char *s)
{
	char *d = strdup(nz(s));
	if (d == NULL)
		return NULL;
	for (char *p = d; *p != '\0'; p++) {
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	}
	return d;
}

/* ---- writer ------------------------------------------------------------ */

int
audit_writer_init(struct audit_writer *aw, struct db *db, store_mac_fn mac, void *mac_ctx)
{
	static const char ins_sql[] =
	    "INSERT INTO audit_events(seq, ts, actor, source, event_type, "
	    "resource, outcome, details_json, prev_hash, hash) "
	    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
	static const char head_sql[] =
	    "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
	int r;

	memset(aw, 0, sizeof(*aw));
	aw->mac = mac;
	aw->mac_ctx = mac_ctx;
	if (db_prepare_once(db, ins_sql, &aw->ins) != FGW_OK ||
	    db_prepare_once(db, head_sql, &aw->head_stmt) != FGW_OK) {
		log_error("audit: prepare failed: %s", db_errmsg(db));
		r = FGW_ERR_DB;
		goto out;
	}
	r = audit_writer_load_head(aw);
out:
	if (r != 0)
		audit_writer_fini(aw);
	return r;
}

int
audit_writer_load_head(struct audit_writer *aw)
{
	struct db_stmt *s = aw->head_stmt;
	struct audit_chain head;
	int r, rc;

	head.seq = 0;
	memcpy(head.hash, audit_zero_hash, sizeof(head.hash));
	rc = db_step(s);
	if (rc == DB_ROW) {
		const char *h = db_col_text(s, 1);
		head.seq = db_col_int64(s, 0);
		if (h == NULL ||
		    fgw_strlcpy(head.hash, (const char *)h, sizeof(head.hash)) != 0 ||
		    strlen(head.hash) != AUDIT_HASH_HEX - 1) {
			log_error("audit: head row %" PRId64 " has a malformed hash", head.seq);
			r = FGW_ERR_DB;
			goto out;
		}
	} else if (rc != DB_DONE) {
		log_error("audit: loading head failed: %s", db_errmsg(db_handle(s)));
		r = FGW_ERR_DB;
		goto out;
	}
	aw->head = head;
	r = 0;
out:
	db_reset(s);
	return r;
}

void
audit_writer_fini(struct audit_writer *aw)
{
	db_release(aw->ins);
	db_release(aw->head_stmt);
	aw->ins = NULL;
	aw->head_stmt = NULL;
}

static int
bind_text(struct db_stmt *s, int idx, const char *v)
{
	return db_bind_text(s, idx, nz(v));
}

int
audit_writer_append(struct audit_writer *aw, const struct store_audit *ev, int64_t ts)
{
	char hash[AUDIT_HASH_HEX];
	int64_t seq = aw->head.seq + 1;
	struct db_stmt *s = aw->ins;
	int r;

	if ((r = audit_hash(aw->mac, aw->mac_ctx, aw->head.hash, seq, ts, ev, hash)) != 0)
		goto out;
	if (db_bind_int64(s, 1, seq) != FGW_OK || db_bind_int64(s, 2, ts) != FGW_OK ||
	    bind_text(s, 3, ev->actor) != FGW_OK || bind_text(s, 4, ev->source) != FGW_OK ||
	    bind_text(s, 5, ev->event_type) != FGW_OK ||
	    bind_text(s, 6, ev->resource) != FGW_OK ||
	    bind_text(s, 7, ev->outcome) != FGW_OK ||
	    (ev->details_json != NULL ? bind_text(s, 8, ev->details_json)
	                              : db_bind_null(s, 8)) != FGW_OK ||
	    bind_text(s, 9, aw->head.hash) != FGW_OK || bind_text(s, 10, hash) != FGW_OK) {
		r = FGW_ERR_DB;
		goto out;
	}
	if (db_step(s) != DB_DONE) {
		log_error("audit: append seq %" PRId64 " failed: %s", seq,
		          db_errmsg(db_handle(s)));
		r = FGW_ERR_DB;
		goto out;
	}
	aw->head.seq = seq;
	memcpy(aw->head.hash, hash, sizeof(hash));
	r = 0;
out:
	db_reset(s);
	db_clear_bindings(s);
	return r;
}

/* ---- verification ------------------------------------------------------ */

/* Text of column i as a C string, or NULL when the stored value holds a NUL
 * byte (which a C string would silently cut off). SQL NULL reads as "". */
static const char *
col_text(struct db_stmt *s, int i)
{
	const char *t;
	if (db_col_is_null(s, i))
		return "";
	t = db_col_text(s, i);
	if (t == NULL)
		return NULL;
	if ((size_t)db_col_bytes(s, i) != strlen((const char *)t))
		return NULL;
	return (const char *)t;
}

static int
is_one_line(const char *s)
{
	return s != NULL && strpbrk(s, "\r\n") == NULL;
}

static int
hex_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL || strlen(a) != AUDIT_HASH_HEX - 1 ||
	    strlen(b) != AUDIT_HASH_HEX - 1)
		return 0;
	return sodium_memcmp(a, b, AUDIT_HASH_HEX - 1) == 0;
}

/* Checks the row under s against the expected seq and previous hash;
 * on success copies the row's hash into prev. 1: intact, 0: broken. */
static int
verify_row(struct db_stmt *s, store_mac_fn mac, void *mac_ctx, int64_t expect,
           char prev[AUDIT_HASH_HEX], int *err)
{
	struct store_audit ev;
	char want[AUDIT_HASH_HEX];
	const char *stored_prev, *stored_hash;
	int64_t ts;

	*err = 0;
	if (!db_col_is_integer(s, 0) || db_col_int64(s, 0) != expect ||
	    !db_col_is_integer(s, 1))
		return 0;
	ts = db_col_int64(s, 1);
	ev.actor = col_text(s, 2);
	ev.source = col_text(s, 3);
	ev.event_type = col_text(s, 4);
	ev.resource = col_text(s, 5);
	ev.outcome = col_text(s, 6);
	ev.details_json = col_text(s, 7);
	stored_prev = col_text(s, 8);
	stored_hash = col_text(s, 9);
	if (!is_one_line(ev.actor) || !is_one_line(ev.source) ||
	    !is_one_line(ev.event_type) || !is_one_line(ev.resource) ||
	    !is_one_line(ev.outcome) || ev.details_json == NULL)
		return 0;
	if (!hex_equal(stored_prev, prev))
		return 0;
	if ((*err = audit_hash(mac, mac_ctx, prev, expect, ts, &ev, want)) != 0)
		return 0;
	if (!hex_equal(stored_hash, want))
		return 0;
	memcpy(prev, want, AUDIT_HASH_HEX);
	return 1;
}

int
audit_verify(struct db *db, store_mac_fn mac, void *mac_ctx, int64_t *first_bad_seq)
{
	static const char sql[] =
	    "SELECT seq, ts, actor, source, event_type, resource, outcome, "
	    "details_json, prev_hash, hash FROM audit_events ORDER BY seq";
	char prev[AUDIT_HASH_HEX];
	struct db_stmt *s = NULL;
	int64_t expect = 1;
	int r, rc, err;

	if (first_bad_seq != NULL)
		*first_bad_seq = 0;
	memcpy(prev, audit_zero_hash, sizeof(prev));
	if (db_prepare_once(db, sql, &s) != FGW_OK) {
		log_error("audit verify: prepare failed: %s", db_errmsg(db));
		r = FGW_ERR_DB;
		goto out;
	}
	while ((rc = db_step(s)) == DB_ROW) {
		if (!verify_row(s, mac, mac_ctx, expect, prev, &err)) {
			if (err != 0) {
				r = err;
				goto out;
			}
			if (first_bad_seq != NULL)
				*first_bad_seq = expect;
			log_warn("audit chain broken at seq %" PRId64, expect);
			r = FGW_ERR_CRYPTO;
			goto out;
		}
		expect++;
	}
	if (rc != DB_DONE) {
		log_error("audit verify: read failed: %s", db_errmsg(db));
		r = FGW_ERR_DB;
		goto out;
	}
	r = 0;
out:
	db_release(s);
	sodium_memzero(prev, sizeof(prev));
	return r;
}
