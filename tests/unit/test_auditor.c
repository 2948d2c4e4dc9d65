/*
 * tests/unit/test_auditor.c — store/auditor.c, store/backup.c,
 * gateway/backup.c and the key ring's backup stream: checkpoints and full
 * verification, query filters, report input checks, retention, encrypted
 * backups (round trip, an edited byte, a cut file, a wrong key ring).
 *
 * Each case builds its own files under a fresh /tmp directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "gateway/backup.h"
#include "gateway/config.h"
#include "store/auditor.h"
#include "store/store.h"
#include "tt.h"

static const unsigned char mac_key[32] = "flairgw-auditor-unit-test-key!!";
static unsigned char sign_pk[32], sign_sk[64];

static int
t_mac(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	(void)ctx;
	return crypto_generichash(mac, 32, msg, len, mac_key, sizeof(mac_key)) == 0
	           ? 0
	           : FGW_ERR_CRYPTO;
}

static int
t_sign(void *ctx, const void *msg, size_t len, unsigned char sig[64])
{
	(void)ctx;
	return crypto_sign_detached(sig, NULL, msg, len, sign_sk) == 0 ? 0 : FGW_ERR_CRYPTO;
}

struct fx {
	char dir[64];
	char db[128];
};

static int
fx_setup(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	if (fgw_strlcpy(f->dir, "/tmp/fgw-auditor-XXXXXX", sizeof(f->dir)) != 0 ||
	    mkdtemp(f->dir) == NULL)
		return -1;
	if (snprintf(f->db, sizeof(f->db), "%s/gw.db", f->dir) >= (int)sizeof(f->db))
		return -1;
	crypto_sign_keypair(sign_pk, sign_sk);
	return 0;
}

static void
fx_teardown(struct fx *f)
{
	char cmd[160];
	if (f->dir[0] && snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir) < (int)sizeof(cmd))
		(void)system(cmd);
}

/* Appends n events (types txn.a, txn.b, auth.x in turn), then a
 * checkpoint if cp, and closes the store (which commits everything). */
static int
fill(const char *db, int n, int cp)
{
	struct store_opts o = {
		.path = db, .sync_full = 0, .batch_max = 16, .audit_mac = t_mac
	};
	struct store *st = NULL;
	static const char *const types[] = { "txn.a", "txn.b", "txnx.c" };
	char res[32];
	int r;
	if ((r = store_open(&o, &st)) != 0)
		return r;
	for (int i = 0; i < n && r == 0; i++) {
		struct store_audit a = { "system", "local", types[i % 3], res, "success", "{}" };
		snprintf(res, sizeof(res), "res_%d", i);
		r = store_audit_append(st, NULL,
		                       &(struct store_commit){ .audit = &a, .n_audit = 1 });
	}
	if (r == 0 && cp)
		r = store_audit_checkpoint(st, NULL, t_sign, NULL, sign_pk, NULL, NULL);
	store_close(st);
	return r;
}

static int
verify(const char *db, const unsigned char *pk, struct store_verify_result *res)
{
	struct store_reader *rd = NULL;
	int r = store_reader_open_file(db, t_mac, NULL, 0, &rd);
	if (r == 0)
		r = store_audit_verify_full(rd, pk, res);
	store_reader_close(rd);
	return r;
}

static int
sql(const char *db, const char *text)
{
	sqlite3 *h = NULL;
	int rc = sqlite3_open(db, &h);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(h, text, NULL, NULL, NULL);
	sqlite3_close(h);
	return rc;
}

static int
test_checkpoint_verify(void)
{
	struct store_verify_result res;
	struct fx f;
	unsigned char other_pk[32], other_sk[64];
	TT_BEGIN;
	CHECK(fx_setup(&f) == 0);
	CHECK_EQ_INT(fill(f.db, 5, 1), 0);
	CHECK_EQ_INT(verify(f.db, sign_pk, &res), 0);
	CHECK_EQ_INT((int)res.events, 5);
	CHECK_EQ_INT((int)res.checkpoints, 1);
	CHECK_EQ_INT((int)res.last_checkpoint, 5);
	/* The head is signed already: a second checkpoint adds nothing. */
	CHECK_EQ_INT(fill(f.db, 0, 1), 0);
	CHECK_EQ_INT(verify(f.db, sign_pk, &res), 0);
	CHECK_EQ_INT((int)res.checkpoints, 1);
	/* Another key's view: every checkpoint is forged. */
	crypto_sign_keypair(other_pk, other_sk);
	CHECK_EQ_INT(verify(f.db, other_pk, &res), FGW_ERR_CRYPTO);
	CHECK(strstr(res.reason, "bad signature") != NULL);
	/* Triggers refuse edits; without them, a cut tail is caught. */
	CHECK(sql(f.db, "DELETE FROM audit_events WHERE seq = 5") != SQLITE_OK);
	CHECK(sql(f.db, "UPDATE audit_checkpoints SET ts = 0") != SQLITE_OK);
	CHECK_EQ_INT(sql(f.db, "DROP TRIGGER audit_events_no_delete;"
	                       "DELETE FROM audit_events WHERE seq >= 4"),
	             SQLITE_OK);
	CHECK_EQ_INT(verify(f.db, sign_pk, &res), FGW_ERR_CRYPTO);
	CHECK_EQ_INT((int)res.first_bad_seq, 4);
	CHECK(strstr(res.reason, "events missing") != NULL);
	/* A file from before checkpoints existed still verifies its chain. */
	CHECK_EQ_INT(sql(f.db, "DROP TABLE audit_checkpoints"), SQLITE_OK);
	CHECK_EQ_INT(verify(f.db, sign_pk, &res), 0);
	CHECK_EQ_INT((int)res.checkpoints, 0);
end:
	fx_teardown(&f);
	TT_END;
}

static int
count_row(void *arg, const struct store_audit_view *v)
{
	(void)v;
	(*(int *)arg)++;
	return 0;
}

static int
test_query_type_prefix(void)
{
	struct store_audit_filter fl;
	struct store_reader *rd = NULL;
	struct fx f;
	int n = 0;
	TT_BEGIN;
	CHECK(fx_setup(&f) == 0);
	CHECK_EQ_INT(fill(f.db, 6, 0), 0);
	CHECK_EQ_INT(store_reader_open_file(f.db, t_mac, NULL, 0, &rd), 0);
	memset(&fl, 0, sizeof(fl));
	fl.type = "txn"; /* txn.a and txn.b, not txnx.c */
	CHECK_EQ_INT(store_audit_query(rd, &fl, count_row, &n), 0);
	CHECK_EQ_INT(n, 4);
	n = 0;
	fl.type = "txnx.c";
	fl.txn = "res_2";
	CHECK_EQ_INT(store_audit_query(rd, &fl, count_row, &n), 0);
	CHECK_EQ_INT(n, 1);
	n = 0;
	fl.has_min = 1; /* no transaction row: amount filters exclude it */
	CHECK_EQ_INT(store_audit_query(rd, &fl, count_row, &n), 0);
	CHECK_EQ_INT(n, 0);
end:
	store_reader_close(rd);
	fx_teardown(&f);
	TT_END;
}

static int
test_report_bad_day(void)
{
	struct store_report rep;
	struct store_reader *rd = NULL;
	struct fx f;
	TT_BEGIN;
	CHECK(fx_setup(&f) == 0);
	CHECK_EQ_INT(fill(f.db, 1, 0), 0);
	CHECK_EQ_INT(store_reader_open_file(f.db, t_mac, NULL, 0, &rd), 0);
	CHECK_EQ_INT(store_report_day(rd, "2026-02-30x", &rep), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_report_day(rd, "20260101", &rep), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_report_day(rd, "2026-01-01", &rep), 0);
	CHECK_EQ_INT((int)rep.total, 0);
	store_reader_close(rd);
	rd = NULL;
	/* Webhook delivery counts the day's outbox rows by status. 1767225600000
	 * is 2026-01-01T00:00:00Z. */
	CHECK_EQ_INT(sql(f.db,
	                 "INSERT INTO webhook_outbox(id, endpoint_url, event_id, event_type,"
	                 " payload, status, next_attempt_at, created_at, updated_at) VALUES"
	                 " ('a','u','e1','t','{}','delivered',0,1767225600000,0),"
	                 " ('b','u','e2','t','{}','delivered',0,1767225600001,0),"
	                 " ('c','u','e3','t','{}','failed',0,1767225600002,0),"
	                 " ('d','u','e4','t','{}','pending',0,1767225600003,0),"
	                 " ('e','u','e5','t','{}','failed',0,1767225599999,0)"),
	             SQLITE_OK);
	CHECK_EQ_INT(store_reader_open_file(f.db, t_mac, NULL, 0, &rd), 0);
	CHECK_EQ_INT(store_report_day(rd, "2026-01-01", &rep), 0);
	CHECK_EQ_INT((int)rep.wh_delivered, 2);
	CHECK_EQ_INT((int)rep.wh_failed, 1);
	CHECK_EQ_INT((int)rep.wh_pending, 1);
end:
	store_reader_close(rd);
	fx_teardown(&f);
	TT_END;
}

static int
touch(const char *dir, const char *name)
{
	char p[256];
	FILE *fp;
	if (snprintf(p, sizeof(p), "%s/%s", dir, name) >= (int)sizeof(p) ||
	    (fp = fopen(p, "w")) == NULL)
		return -1;
	fclose(fp);
	return 0;
}

static int
test_retention(void)
{
	static const char *const names[] = {
		"flairgw-20260101T010000.000Z.fgwbk", /* old: goes */
		"flairgw-20260108T010000.000Z.fgwbk", /* day 8, older: goes */
		"flairgw-20260108T230000.000Z.fgwbk", /* day 8 newest: stays */
		"flairgw-20260109T010000.000Z.fgwbk", /* day 9 older: goes */
		"flairgw-20260109T120000.000Z.fgwbk", /* last 2: stays */
		"flairgw-20260110T010000.000Z.fgwbk", /* last 2: stays */
	};
	static const int stays[] = { 0, 0, 1, 0, 1, 1 };
	char p[256], **left = NULL;
	struct fx f;
	int removed = 0, n = 0;
	TT_BEGIN;
	CHECK(fx_setup(&f) == 0);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		CHECK(touch(f.dir, names[i]) == 0);
	CHECK(touch(f.dir, "not-a-backup.txt") == 0);
	/* now = 2026-01-10 12:00 UTC; keep 3 days: the 8th, 9th and 10th. */
	CHECK_EQ_INT(backup_prune(f.dir, 2, 3, 1768046400000LL, &removed), 0);
	CHECK_EQ_INT(removed, 3);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", f.dir, names[i]);
		CHECK_EQ_INT(access(p, F_OK) == 0, stays[i]);
	}
	CHECK_EQ_INT(backup_list(f.dir, &left, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK_STR(left[0], names[2]);
end:
	backup_names_free(left, n);
	fx_teardown(&f);
	TT_END;
}

static int
open_ring(const char *dir, const char *sub, struct keyring **kr)
{
	struct keyring_opts o;
	char kd[160], kek[160];
	struct fgw_why why;
	snprintf(kd, sizeof(kd), "%s/%s", dir, sub);
	snprintf(kek, sizeof(kek), "%s/%s.kek", dir, sub);
	memset(&o, 0, sizeof(o));
	o.dir = kd;
	o.kek_file = kek;
	o.create = 1;
	return keyring_open(&o, kr, &why);
}

static int
test_backup_round_trip(void)
{
	struct fgw_config cfg;
	struct backup_info bi;
	struct keyring *kr = NULL, *other = NULL;
	struct store_verify_result res;
	char out[200], cut[200], sum[65];
	unsigned char *data = NULL;
	size_t len = 0;
	struct fx f;
	TT_BEGIN;
	CHECK(fx_setup(&f) == 0);
	CHECK_EQ_INT(fill(f.db, 7, 1), 0);
	CHECK_EQ_INT(open_ring(f.dir, "a", &kr), 0);
	CHECK_EQ_INT(open_ring(f.dir, "b", &other), 0);
	config_defaults(&cfg);
	CHECK_EQ_INT(config_set(&cfg, "database", f.db, "t", NULL), 0);
	snprintf(out, sizeof(out), "%s/bk", f.dir);
	CHECK_EQ_INT(config_set(&cfg, "backup_dir", out, "t", NULL), 0);
	CHECK_EQ_INT(backup_make(&cfg, kr, &bi), 0);
	CHECK_EQ_INT((int)bi.audit_seq, 7);
	CHECK_EQ_INT(backup_checksum(bi.path, sum), 0);
	CHECK_STR(sum, bi.blake2b);
	snprintf(out, sizeof(out), "%s/restored.db", f.dir);
	CHECK_EQ_INT(backup_open(kr, bi.path, out, NULL), 0);
	CHECK_EQ_INT(verify(out, sign_pk, &res), 0);
	CHECK_EQ_INT((int)res.checkpoints, 1);
	/* A new file only. */
	CHECK_EQ_INT(backup_open(kr, bi.path, out, NULL), FGW_ERR_EXISTS);
	unlink(out);
	/* Another key ring cannot open it. */
	CHECK_EQ_INT(backup_open(other, bi.path, out, NULL), FGW_ERR_CRYPTO);
	CHECK(access(out, F_OK) != 0);
	/* An edited byte, and a file cut short, are refused. */
	CHECK_EQ_INT(fgw_read_file(bi.path, 1 << 26, (char **)&data, &len), 0);
	CHECK(len > 200);
	data[len / 2] ^= 1;
	snprintf(cut, sizeof(cut), "%s/edited.fgwbk", f.dir);
	CHECK_EQ_INT(fgw_write_file_atomic(cut, data, len, 0600), 0);
	CHECK_EQ_INT(backup_open(kr, cut, out, NULL), FGW_ERR_CRYPTO);
	data[len / 2] ^= 1;
	CHECK_EQ_INT(fgw_write_file_atomic(cut, data, len - 17, 0600), 0);
	CHECK_EQ_INT(backup_open(kr, cut, out, NULL), FGW_ERR_CRYPTO);
	CHECK(access(out, F_OK) != 0);
end:
	free(data);
	keyring_free(kr);
	keyring_free(other);
	fx_teardown(&f);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "checkpoint_verify", test_checkpoint_verify },
	{ "query_type_prefix", test_query_type_prefix },
	{ "report_bad_day", test_report_bad_day },
	{ "retention", test_retention },
	{ "backup_round_trip", test_backup_round_trip },
	{ NULL, NULL },
};

int
main(int argc, char **argv)
{
	if (sodium_init() < 0)
		return 1;
	return tt_run(cases, argc, argv);
}
