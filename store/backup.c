/*
 * store/backup.c — consistent snapshots (SQLite online backup API) and the
 * JSON export of the audit trail and transactions that goes with them.
 *
 * Runs on the backup thread or in flairctl, never on a reactor: a
 * snapshot reads the whole database. The copy is taken in steps so the
 * writer is held up only for one step at a time; SQLite restarts the copy
 * if the source changes through another connection, so what lands in dst
 * is one committed state.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "store/auditor.h"
#include "store/db.h"
#include "store/pg.h"
#include "store/store_int.h"

#define SNAPSHOT_PAGES 256
#define SNAPSHOT_MAX_STEPS 1000000

int
store_backup_snapshot(const char *src, const char *dst, int busy_ms)
{
	sqlite3 *from = NULL, *to = NULL;
	sqlite3_backup *b = NULL;
	int r, rc = SQLITE_OK;
	long steps = 0;

	if (src == NULL || dst == NULL)
		return FGW_ERR_INVALID;
	if (sqlite3_open_v2(src, &from, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
	    sqlite3_open_v2(dst, &to,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                        SQLITE_OPEN_EXCLUSIVE,
	                    NULL) != SQLITE_OK) {
		log_error("snapshot: cannot open %s or %s", src, dst);
		r = FGW_ERR_IO;
		goto out;
	}
	sqlite3_busy_timeout(from, busy_ms > 0 ? busy_ms : 5000);
	if ((b = sqlite3_backup_init(to, "main", from, "main")) == NULL) {
		log_error("snapshot: %s", sqlite3_errmsg(to));
		r = FGW_ERR_DB;
		goto out;
	}
	while (steps++ < SNAPSHOT_MAX_STEPS) {
		rc = sqlite3_backup_step(b, SNAPSHOT_PAGES);
		if (rc == SQLITE_DONE)
			break;
		if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
			sqlite3_sleep(5); /* backup thread only */
			continue;
		}
		if (rc != SQLITE_OK)
			break;
	}
	if (rc != SQLITE_DONE) {
		log_error("snapshot of %s failed: %s", src, sqlite3_errstr(rc));
		r = FGW_ERR_DB;
		goto out;
	}
	r = 0;
out:
	if (b != NULL && sqlite3_backup_finish(b) != SQLITE_OK && r == 0)
		r = FGW_ERR_DB;
	sqlite3_close(from);
	if (to != NULL && sqlite3_close(to) != SQLITE_OK && r == 0)
		r = FGW_ERR_DB;
	return r;
}

/* Writes every row of sql as one JSON object (column name -> value),
 * comma-separated, into out. */
static int
export_rows(void *arg, const char *sql, FILE *out, int64_t *count)
{
	sqlite3 *db = arg;
	sqlite3_stmt *s = NULL;
	cJSON *o = NULL;
	char *text = NULL;
	int r, rc, n;

	*count = 0;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
		r = FGW_ERR_DB;
		goto out;
	}
	n = sqlite3_column_count(s);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((o = cJSON_CreateObject()) == NULL) {
			r = FGW_ERR_NOMEM;
			goto out;
		}
		for (int i = 0; i < n; i++) {
			const char *name = sqlite3_column_name(s, i);
			cJSON *v;
			switch (sqlite3_column_type(s, i)) {
			case SQLITE_NULL:
				v = cJSON_CreateNull();
				break;
			case SQLITE_INTEGER:
				/* int64 exactly: doubles lose ms timestamps' precision
				 * only above 2^53, far beyond any value here. */
				v = cJSON_CreateNumber((double)sqlite3_column_int64(s, i));
				break;
			default:
				v = cJSON_CreateString((const char *)sqlite3_column_text(s, i));
				break;
			}
			if (v == NULL || !cJSON_AddItemToObject(o, name, v)) {
				cJSON_Delete(v);
				r = FGW_ERR_NOMEM;
				goto out;
			}
		}
		if ((text = cJSON_PrintUnformatted(o)) == NULL) {
			r = FGW_ERR_NOMEM;
			goto out;
		}
		if (fprintf(out, "%s%s", *count ? ",\n" : "\n", text) < 0) {
			r = FGW_ERR_IO;
			goto out;
		}
		free(text);
		text = NULL;
		cJSON_Delete(o);
		o = NULL;
		(*count)++;
	}
	r = rc == SQLITE_DONE ? 0 : FGW_ERR_DB;
out:
	free(text);
	cJSON_Delete(o);
	sqlite3_finalize(s);
	return r;
}

/* The export's columns, as the file export and the PostgreSQL one both
 * list them (a document compares across backends). */
#define EXPORT_EV_COLS                                                                \
	"seq, ts, actor, source, event_type, resource, outcome, details_json, prev_hash," \
	" hash"
#define EXPORT_EV_FROM " FROM audit_events ORDER BY seq"
#define EXPORT_TXN_COLS                                                                 \
	"id, client_id, reservation_id, amount, currency, status, error_code,"              \
	" error_message, processor, processor_ref, brand, bin, last4, exp_month, exp_year," \
	" customer_email, customer_name, customer_country, customer_ip, rule_decision,"     \
	" rules_fired, description, created_at, updated_at"
#define EXPORT_TXN_FROM " FROM transactions ORDER BY created_at, id"

/* Writes the export document around two row lists, written by rows(db,
 * sql, out, count): the audit events (ev_sql) then the transactions
 * (txn_sql); what they count goes to st. */
static int
write_export(int (*rows)(void *db, const char *sql, FILE *out, int64_t *count), void *db,
             const char *ev_sql, const char *txn_sql, FILE *out,
             struct store_backup_stats *st)
{
	int64_t n = 0;
	int r;

	if (fputs("{\"format\":\"flairgw-export-v1\",\"audit_events\":[", out) < 0)
		return FGW_ERR_IO;
	if ((r = rows(db, ev_sql, out, &n)) != 0)
		return r;
	st->audit_seq = n;
	if (fputs("],\"transactions\":[", out) < 0)
		return FGW_ERR_IO;
	if ((r = rows(db, txn_sql, out, &st->transactions)) != 0)
		return r;
	if (fputs("]}\n", out) < 0 || fflush(out) != 0)
		return FGW_ERR_IO;
	return 0;
}

int
store_backup_export_json(const char *path, FILE *out, struct store_backup_stats *st)
{
	/* The vault is not exported (ciphertext belongs in the snapshot only),
	 * nor are idempotent answers. */
	static const char ev_sql[] = "SELECT " EXPORT_EV_COLS EXPORT_EV_FROM;
	static const char txn_sql[] = "SELECT " EXPORT_TXN_COLS EXPORT_TXN_FROM;
	sqlite3 *db = NULL;
	int r;

	memset(st, 0, sizeof(*st));
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		r = FGW_ERR_IO;
		goto out;
	}
	r = write_export(export_rows, db, ev_sql, txn_sql, out, st);
out:
	sqlite3_close(db);
	return r;
}

/* Every row of sql (one text column: the row as a JSON object, which
 * PostgreSQL's row_to_json types as the columns are: numbers, strings,
 * null) comma-separated into out. */
static int
export_json_rows(void *arg, const char *sql, FILE *out, int64_t *count)
{
	struct db *db = arg;
	struct db_stmt *s = NULL;
	int r, rc;

	*count = 0;
	if ((r = db_prepare_once(db, sql, &s)) != 0)
		return r;
	while ((rc = db_step(s)) == DB_ROW) {
		const char *row = db_col_text(s, 0);
		if (row == NULL || fprintf(out, "%s%s", *count ? ",\n" : "\n", row) < 0) {
			r = row == NULL ? FGW_ERR_DB : FGW_ERR_IO;
			goto out;
		}
		(*count)++;
	}
	r = rc == DB_DONE ? 0 : FGW_ERR_DB;
out:
	db_release(s);
	return r;
}

int
store_backup_export_store(struct store_reader *rd, FILE *out,
                          struct store_backup_stats *st)
{
	static const char ev_sql[] =
	    "SELECT row_to_json(e)::text FROM (SELECT " EXPORT_EV_COLS EXPORT_EV_FROM ") e";
	static const char txn_sql[] =
	    "SELECT row_to_json(t)::text FROM (SELECT " EXPORT_TXN_COLS EXPORT_TXN_FROM ") t";
	struct db *db = rd != NULL ? store_reader_db(rd) : NULL;
	int r;

	memset(st, 0, sizeof(*st));
	if (db == NULL || db_kind(db) != DB_PG)
		return FGW_ERR_INVALID; /* a SQLite store: the file snapshot */
	/* One snapshot for both lists: the audit head and the transactions
	 * it speaks of agree. */
	if ((r = db_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")) != 0)
		return r;
	r = write_export(export_json_rows, db, ev_sql, txn_sql, out, st);
	if (db_in_txn(db))
		(void)db_exec(db, r == 0 ? "COMMIT" : "ROLLBACK");
	return r;
}

int
store_backup_lead(struct store_reader *rd, int *lead)
{
	struct db *db = rd != NULL ? store_reader_db(rd) : NULL;
	struct db_stmt *s = NULL;
	int r;

	*lead = 0;
	if (db == NULL)
		return FGW_ERR_INVALID;
	if (db_kind(db) != DB_PG) {
		*lead = 1; /* one process on its file */
		return 0;
	}
	if ((r = db_prepare(db, "SELECT pg_try_advisory_lock(CAST(?1 AS BIGINT))", &s)) != 0)
		return r;
	if ((r = db_bind_int64(s, 1, PG_LOCK_BACKUP)) == 0) {
		r = db_step(s) == DB_ROW ? 0 : FGW_ERR_DB;
		if (r == 0)
			*lead = db_col_int(s, 0);
	}
	db_release(s);
	return r;
}

int
store_backup_last_ms(struct store_reader *rd, int64_t *ms)
{
	struct db *db = rd != NULL ? store_reader_db(rd) : NULL;
	int r;

	*ms = 0;
	if (db == NULL)
		return FGW_ERR_INVALID;
	r = db_int64_of(db,
	                "SELECT ts FROM audit_events WHERE event_type = ?1"
	                " ORDER BY ts DESC LIMIT 1",
	                "backup.created", ms);
	return r == FGW_ERR_NOT_FOUND ? 0 : r;
}
