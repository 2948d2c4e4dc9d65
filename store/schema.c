/*
 * store/schema.c — the SQL schema as an ordered list of migrations.
 *
 * migrations[i] moves PRAGMA user_version from i to i + 1. A migration is
 * only ever appended, never edited once released: a database created by an
 * older build reaches the current schema by running the newer steps. Each
 * step runs in its own BEGIN IMMEDIATE .. COMMIT together with the
 * user_version bump, so a crash leaves the database at a whole version.
 *
 * Conventions: times are INTEGER milliseconds since the epoch (UTC); empty
 * optional text is stored as NULL; views for auditors start with v_ and
 * render times as ISO 8601.
 */
#include <stdio.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "store/schema.h"
#include "store/store.h"

/* SQL is laid out as SQL: clang-format 14 breaks string concatenations
 * around ISO_MS() into unreadable columns. */
/* clang-format off */

/* ISO 8601 with milliseconds from an INTEGER ms column. */
#define ISO_MS(col)                                                          \
	"(strftime('%Y-%m-%dT%H:%M:%S', " col " / 1000, 'unixepoch') || "        \
	"printf('.%03dZ', " col " % 1000))"

static const char schema_v1[] =
    /* One row per payment attempt; status moves forward only. */
    "CREATE TABLE transactions ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " client_id TEXT NOT NULL,"
    " reservation_id TEXT,"
    " amount INTEGER NOT NULL CHECK (amount >= 0),"
    " currency TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " error_code TEXT,"
    " error_message TEXT,"
    " processor TEXT,"
    " processor_ref TEXT,"
    " processor_idem_key TEXT,"
    " token TEXT,"
    " fingerprint TEXT,"
    " brand TEXT,"
    " bin TEXT,"
    " last4 TEXT,"
    " exp_month INTEGER,"
    " exp_year INTEGER,"
    " customer_email TEXT,"
    " customer_name TEXT,"
    " customer_country TEXT,"
    " customer_ip TEXT,"
    " rule_decision TEXT,"
    " rules_fired TEXT,"
    " idempotency_key TEXT,"
    " description TEXT,"
    " metadata_json TEXT,"
    " next_action_json TEXT,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX transactions_client_created"
    " ON transactions(client_id, created_at);"
    /* Reconciliation: open states, oldest update first. */
    "CREATE INDEX transactions_status_updated"
    " ON transactions(status, updated_at);"
    "CREATE INDEX transactions_fingerprint_created"
    " ON transactions(fingerprint, created_at);"
    "CREATE INDEX transactions_reservation"
    " ON transactions(reservation_id);"
    "CREATE INDEX transactions_email_created"
    " ON transactions(customer_email, created_at);"
    "CREATE INDEX transactions_ip_created"
    " ON transactions(customer_ip, created_at);"

    /* Encrypted cards. blob is vault_encrypt() output; no PAN, no CVC. */
    "CREATE TABLE vault_entries ("
    " token TEXT PRIMARY KEY NOT NULL,"
    " key_id TEXT NOT NULL,"
    " blob TEXT NOT NULL,"
    " fingerprint TEXT,"
    " brand TEXT,"
    " bin TEXT,"
    " last4 TEXT,"
    " exp_month INTEGER,"
    " exp_year INTEGER,"
    " customer_id TEXT,"
    " saved INTEGER NOT NULL DEFAULT 0 CHECK (saved IN (0, 1)),"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX vault_entries_key_id ON vault_entries(key_id);"
    "CREATE INDEX vault_entries_customer ON vault_entries(customer_id);"

    /* Stored answers for Idempotency-Key requests. */
    "CREATE TABLE idempotency ("
    " client_id TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " request_hash TEXT NOT NULL,"
    " status_code INTEGER NOT NULL,"
    " body TEXT,"
    " txn_id TEXT,"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " PRIMARY KEY (client_id, key)"
    ");"
    "CREATE INDEX idempotency_expires ON idempotency(expires_at);"

    /* Append-only, hash-chained audit log (store/audit.h). */
    "CREATE TABLE audit_events ("
    " seq INTEGER PRIMARY KEY,"
    " ts INTEGER NOT NULL,"
    " actor TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " event_type TEXT NOT NULL,"
    " resource TEXT NOT NULL,"
    " outcome TEXT NOT NULL,"
    " details_json TEXT,"
    " prev_hash TEXT NOT NULL,"
    " hash TEXT NOT NULL"
    ");"
    "CREATE INDEX audit_events_resource ON audit_events(resource, seq);"
    "CREATE INDEX audit_events_ts ON audit_events(ts);"
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;"
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;"
    /* INSERT OR REPLACE would delete without firing the delete trigger:
     * only the next seq may be inserted. */
    "CREATE TRIGGER audit_events_next_seq BEFORE INSERT ON audit_events"
    " WHEN NEW.seq IS NULL OR NEW.seq <>"
    "  (SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_events)"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;"

    /* Read-only views for auditors. */
    "CREATE VIEW v_audit AS SELECT"
    " seq, " ISO_MS("ts") " AS time_utc, ts, actor, source, event_type,"
    " resource, outcome, details_json, prev_hash, hash"
    " FROM audit_events;"
    "CREATE VIEW v_transactions AS SELECT"
    " id, client_id, reservation_id, amount, currency, status, error_code,"
    " error_message, processor, processor_ref, brand, bin, last4,"
    " exp_month, exp_year, customer_email, customer_name, customer_country,"
    " customer_ip, rule_decision, rules_fired, description,"
    " " ISO_MS("created_at") " AS created_utc,"
    " " ISO_MS("updated_at") " AS updated_utc,"
    " created_at, updated_at"
    " FROM transactions;"
    "CREATE VIEW v_daily_totals AS SELECT"
    " strftime('%Y-%m-%d', created_at / 1000, 'unixepoch') AS day,"
    " status, currency, COUNT(*) AS txn_count, SUM(amount) AS total_amount"
    " FROM transactions GROUP BY day, status, currency;";

/* Reservations (store/reservations.c): experiences with prices and
 * discounts, time slots with capacity and the places taken, and the
 * reservations themselves (a hold is a reservation in state held). */
static const char schema_v2[] =
    "CREATE TABLE experiences ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL DEFAULT '',"
    " price INTEGER NOT NULL CHECK (price >= 0),"
    " currency TEXT NOT NULL,"
    " group_min INTEGER NOT NULL DEFAULT 0,"
    " group_pct INTEGER NOT NULL DEFAULT 0,"
    " early_days INTEGER NOT NULL DEFAULT 0,"
    " early_pct INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE time_slots ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " experience_id TEXT NOT NULL REFERENCES experiences(id),"
    " starts_at INTEGER NOT NULL,"
    " capacity INTEGER NOT NULL CHECK (capacity >= 0),"
    " taken INTEGER NOT NULL DEFAULT 0 CHECK (taken >= 0 AND taken <= capacity),"
    " status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed'))"
    ");"
    "CREATE TABLE reservations ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " client_id TEXT NOT NULL,"
    " customer_id TEXT NOT NULL,"
    " experience_id TEXT NOT NULL,"
    " time_slot_id TEXT NOT NULL REFERENCES time_slots(id),"
    " guests INTEGER NOT NULL CHECK (guests > 0),"
    " guest_name TEXT,"
    " guest_email TEXT,"
    " guest_phone TEXT,"
    " special_requests TEXT,"
    " status TEXT NOT NULL,"
    " payment_status TEXT NOT NULL,"
    " total_price INTEGER NOT NULL,"
    " original_price INTEGER NOT NULL,"
    " group_discount INTEGER NOT NULL DEFAULT 0,"
    " early_discount INTEGER NOT NULL DEFAULT 0,"
    " currency TEXT NOT NULL,"
    " hold_expires_at INTEGER NOT NULL,"
    " txn_id TEXT,"
    " payment_intent_id TEXT,"
    " reference TEXT UNIQUE,"
    " released INTEGER NOT NULL DEFAULT 0,"
    " save_method INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX reservations_customer ON reservations(customer_id, created_at);"
    "CREATE INDEX reservations_expiry ON reservations(status, hold_expires_at);"
    "CREATE VIEW v_reservations AS SELECT"
    " id, customer_id, experience_id, time_slot_id, guests, status,"
    " payment_status, total_price, currency, reference, txn_id,"
    " " ISO_MS("hold_expires_at") " AS hold_expires_utc,"
    " " ISO_MS("created_at") " AS created_utc"
    " FROM reservations;";

/* v3: webhooks. Inbound processor events deduplicated by (processor, event
 * id); the outbound outbox to the website's endpoints, one row per event
 * and endpoint, and every delivery attempt. Webhooks find transactions by
 * the processor's reference. */
static const char schema_v3[] =
    "CREATE TABLE webhook_inbound ("
    " processor TEXT NOT NULL,"
    " event_id TEXT NOT NULL,"
    " event_type TEXT NOT NULL,"
    " txn_id TEXT,"
    " result TEXT NOT NULL,"
    " received_at INTEGER NOT NULL,"
    " PRIMARY KEY (processor, event_id)"
    ");"
    "CREATE TABLE webhook_outbox ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " endpoint_url TEXT NOT NULL,"
    " event_id TEXT NOT NULL,"
    " event_type TEXT NOT NULL,"
    " txn_id TEXT,"
    " payload TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('pending','delivered','failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at INTEGER NOT NULL,"
    " last_http_status INTEGER,"
    " last_error TEXT,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX webhook_outbox_due ON webhook_outbox(status, next_attempt_at);"
    "CREATE TABLE webhook_attempts ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " outbox_id TEXT NOT NULL REFERENCES webhook_outbox(id),"
    " attempt INTEGER NOT NULL,"
    " at INTEGER NOT NULL,"
    " http_status INTEGER,"
    " error TEXT,"
    " elapsed_ms INTEGER,"
    " outcome TEXT NOT NULL"
    ");"
    "CREATE INDEX webhook_attempts_outbox ON webhook_attempts(outbox_id, seq);"
    "CREATE INDEX transactions_processor_ref ON transactions(processor_ref);"
    "CREATE VIEW v_webhook_attempts AS SELECT"
    " a.seq, a.outbox_id, o.event_id, o.event_type, o.txn_id, o.endpoint_url,"
    " a.attempt, " ISO_MS("a.at") " AS time_utc, a.http_status, a.error,"
    " a.elapsed_ms, a.outcome"
    " FROM webhook_attempts a JOIN webhook_outbox o ON o.id = a.outbox_id;";

/* v4: reconciliation bookkeeping on each transaction (attempts,
 * when to ask next, and the manual-review flag once it gives up), and the
 * refunds of a transaction (their sum never exceeds what was captured). */
static const char schema_v4_reconcile[] =
    "ALTER TABLE transactions ADD COLUMN reconcile_attempts INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE transactions ADD COLUMN reconcile_next_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE transactions ADD COLUMN manual_review INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX transactions_unresolved ON transactions (reconcile_next_at)"
    " WHERE status IN ('posting', 'processing') AND manual_review = 0;"
    "CREATE TABLE refunds ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " txn_id TEXT NOT NULL REFERENCES transactions (id),"
    " amount INTEGER NOT NULL CHECK (amount > 0),"
    " idempotency_key TEXT NOT NULL,"
    " processor_ref TEXT,"
    " created_at INTEGER NOT NULL,"
    " UNIQUE (txn_id, idempotency_key)"
    ");";

/* v5: saved payment methods. Each points at a vault entry (saved = 1,
 * customer_id = owner); display fields come from that entry. One-time
 * entries are found by the sweep through (saved, expires_at). */
static const char schema_v5[] =
    "CREATE TABLE payment_methods ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " customer_id TEXT NOT NULL,"
    " token TEXT NOT NULL REFERENCES vault_entries(token),"
    " nickname TEXT,"
    " is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),"
    " created_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX payment_methods_customer"
    " ON payment_methods(customer_id, created_at);"
    "CREATE UNIQUE INDEX payment_methods_token ON payment_methods(token);"
    "CREATE INDEX vault_entries_onetime ON vault_entries(saved, expires_at);";

/* v6: signed checkpoints of the audit chain head, and a view of
 * the backups recorded in the audit trail. */
static const char schema_v6[] =
    "CREATE TABLE audit_checkpoints ("
    " seq INTEGER PRIMARY KEY,"      /* audit_events.seq of the signed head */
    " ts INTEGER NOT NULL,"
    " head_hash TEXT NOT NULL,"      /* audit_events.hash at seq */
    " public_key TEXT NOT NULL,"     /* hex Ed25519 key that signed */
    " signature TEXT NOT NULL"       /* hex Ed25519 over the canonical form */
    ");"
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;"
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;"
    "CREATE TRIGGER audit_checkpoints_forward BEFORE INSERT ON audit_checkpoints"
    " WHEN NEW.seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints)"
    " BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;"
    "CREATE VIEW v_audit_checkpoints AS SELECT"
    " seq, " ISO_MS("ts") " AS time_utc, ts, head_hash, public_key, signature"
    " FROM audit_checkpoints;"
    "CREATE VIEW v_backups AS SELECT"
    " seq, " ISO_MS("ts") " AS time_utc, actor, event_type, outcome,"
    " resource AS file,"
    " json_extract(details_json, '$.bytes') AS bytes,"
    " json_extract(details_json, '$.blake2b') AS blake2b,"
    " json_extract(details_json, '$.auditSeq') AS audit_seq,"
    " json_extract(details_json, '$.transactions') AS transactions"
    " FROM audit_events WHERE event_type LIKE 'backup.%';";

/* v7: every index costs a b-tree page per insert or move in the
 * writer's commit, so only the ones a query reads stay. Velocity counts in
 * memory (rules/), reconciliation reads transactions_unresolved, and no
 * query filters transactions by client, card, e-mail, IP or reservation,
 * nor vault entries by customer. Start-up replay (store/txn_recent.c) and
 * the auditor's reports read transactions by created_at. */
static const char schema_v7[] =
    "DROP INDEX IF EXISTS transactions_client_created;"
    "DROP INDEX IF EXISTS transactions_status_updated;"
    "DROP INDEX IF EXISTS transactions_fingerprint_created;"
    "DROP INDEX IF EXISTS transactions_reservation;"
    "DROP INDEX IF EXISTS transactions_email_created;"
    "DROP INDEX IF EXISTS transactions_ip_created;"
    "DROP INDEX IF EXISTS vault_entries_customer;"
    "CREATE INDEX transactions_created ON transactions(created_at);";

/* v8: refunds, captures and cancels are written ahead. The refund row, or
 * the capture/cancel row of txn_operations, is committed `pending` with
 * its processor key before the processor is asked, then moves once to
 * `succeeded` or `failed`; rows a crash left pending are re-sent by the
 * reconciler with the same key (its bookkeeping as for transactions).
 * Refunds recorded before v8 were all made: `succeeded`. */
static const char schema_v8[] =
    "ALTER TABLE refunds ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded'"
    " CHECK (status IN ('pending', 'succeeded', 'failed'));"
    "ALTER TABLE refunds ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE refunds ADD COLUMN reconcile_attempts INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE refunds ADD COLUMN reconcile_next_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE refunds ADD COLUMN manual_review INTEGER NOT NULL DEFAULT 0;"
    "UPDATE refunds SET updated_at = created_at;"
    "CREATE INDEX refunds_pending ON refunds (reconcile_next_at)"
    " WHERE status = 'pending' AND manual_review = 0;"
    "CREATE TABLE txn_operations ("
    " txn_id TEXT NOT NULL REFERENCES transactions (id),"
    " op TEXT NOT NULL CHECK (op IN ('capture', 'cancel')),"
    " idempotency_key TEXT NOT NULL,"
    " request_key TEXT,"   /* the client's key, hashed; NULL without one */
    " status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " reconcile_attempts INTEGER NOT NULL DEFAULT 0,"
    " reconcile_next_at INTEGER NOT NULL DEFAULT 0,"
    " manual_review INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (txn_id, op)"
    ");"
    "CREATE INDEX txn_operations_pending ON txn_operations (reconcile_next_at)"
    " WHERE status = 'pending' AND manual_review = 0;";

/* v9 (txn_operations attempts): a capture or cancel the processor refused
 * no longer blocks a later one. Each request after a refusal is a new
 * attempt, numbered per (txn_id, op), with its own processor key; at most
 * one attempt of either operation is pending or succeeded at a time
 * (txn_operations_live). SQLite cannot change a primary key in place, so
 * the table is copied; v8's rows are attempt 1. */
static const char schema_v9_txnop_attempts[] =
    "CREATE TABLE txn_operations_v9 ("
    " txn_id TEXT NOT NULL REFERENCES transactions (id),"
    " op TEXT NOT NULL CHECK (op IN ('capture', 'cancel')),"
    " attempt INTEGER NOT NULL CHECK (attempt >= 1),"
    " idempotency_key TEXT NOT NULL,"
    " request_key TEXT,"
    " status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " reconcile_attempts INTEGER NOT NULL DEFAULT 0,"
    " reconcile_next_at INTEGER NOT NULL DEFAULT 0,"
    " manual_review INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (txn_id, op, attempt)"
    ");"
    "INSERT INTO txn_operations_v9 (txn_id, op, attempt, idempotency_key, request_key,"
    " status, created_at, updated_at, reconcile_attempts, reconcile_next_at, manual_review)"
    " SELECT txn_id, op, 1, idempotency_key, request_key, status, created_at, updated_at,"
    " reconcile_attempts, reconcile_next_at, manual_review FROM txn_operations;"
    "DROP TABLE txn_operations;"
    "ALTER TABLE txn_operations_v9 RENAME TO txn_operations;"
    "CREATE INDEX txn_operations_pending ON txn_operations (reconcile_next_at)"
    " WHERE status = 'pending' AND manual_review = 0;"
    "CREATE UNIQUE INDEX txn_operations_live ON txn_operations (txn_id)"
    " WHERE status <> 'failed';";

/* v10: request hashes are keyed (gateway http_request_hash). The hashes
 * stored before were a plain BLAKE2b of a body that may have carried a
 * card, beside its BIN, last four, expiry and amount: computable back to
 * the hidden digits and the CVC. They are overwritten with a marker (see
 * STORE_IDEM_HASH_REMOVED: the key is refused, never replayed unchecked),
 * with secure_delete so the freed cell space is zeroed too; schema_migrate
 * then truncates the WAL. Stored BINs of short card numbers are cut so
 * that 6 digits stay hidden. */
static const char schema_v10_idem_keyed[] =
    "PRAGMA secure_delete = ON;"
    "UPDATE idempotency SET request_hash = '" STORE_IDEM_HASH_REMOVED "';"
    /* BINs were 6 digits at every length: a 15-digit Amex or a 14-digit
     * Diners showed 10 of its digits. The length is not stored, so each
     * brand's shortest number decides (core/card.c card_bin_last4). */
    "UPDATE transactions SET bin = substr(bin, 1, 5) WHERE brand = 'Amex';"
    "UPDATE transactions SET bin = substr(bin, 1, 4) WHERE brand = 'Diners';"
    "UPDATE vault_entries SET bin = substr(bin, 1, 5) WHERE brand = 'Amex';"
    "UPDATE vault_entries SET bin = substr(bin, 1, 4) WHERE brand = 'Diners';";

/* v11 customer namespaces: API-key customers ("CLIENT/ID", ID without '/')
 * and JWT subjects (the bare sub) were stored alike, so a JWT whose sub
 * was "website/cus_42" owned the website's customer cus_42. Now they are
 * "key:CLIENT/ID" and "jwt:NAMESPACE/SUB" (gateway/auth.c). A stored value
 * with a '/' had the API-key form, the only one the gateway documented
 * with '/', and becomes key:; the rest were JWT subjects of the one
 * configured issuer, under the default jwt_namespace "idp". */
static const char schema_v11_customer_namespaces[] =
    "UPDATE vault_entries SET customer_id = CASE WHEN instr(customer_id, '/') > 0"
    " THEN 'key:' || customer_id ELSE 'jwt:idp/' || customer_id END"
    " WHERE customer_id IS NOT NULL AND customer_id <> '';"
    "UPDATE payment_methods SET customer_id = CASE WHEN instr(customer_id, '/') > 0"
    " THEN 'key:' || customer_id ELSE 'jwt:idp/' || customer_id END"
    " WHERE customer_id <> '';"
    "UPDATE reservations SET customer_id = CASE WHEN instr(customer_id, '/') > 0"
    " THEN 'key:' || customer_id ELSE 'jwt:idp/' || customer_id END"
    " WHERE customer_id <> '';";

/* v12: nothing waits forever. A payment waiting for 3-D Secure
 * (requires_action) is polled by the reconciler and expired after a
 * window: transactions_awaiting_action finds the due ones. A row flagged
 * for manual review is still asked about now and then, so
 * transactions_unresolved no longer leaves flagged rows out. */
static const char schema_v12_awaiting_action[] =
    "CREATE INDEX IF NOT EXISTS transactions_awaiting_action ON transactions (reconcile_next_at)"
    " WHERE status = 'requires_action';"
    "DROP INDEX IF EXISTS transactions_unresolved;"
    "CREATE INDEX transactions_unresolved ON transactions (reconcile_next_at)"
    " WHERE status IN ('posting', 'processing');";

/* v13: what a processor's events say beyond a state move. A dispute
 * flags its transaction (one row per processor dispute id). Refunds the
 * gateway did not start (the processor's dashboard) are rows of refunds
 * like its own, found again by the processor's refund id. Re-runnable. */
static const char schema_v13_disputes[] =
    "CREATE TABLE IF NOT EXISTS transaction_disputes ("
    " id TEXT PRIMARY KEY NOT NULL,"        /* the processor's dispute id */
    " txn_id TEXT NOT NULL REFERENCES transactions (id),"
    " processor TEXT NOT NULL,"
    " amount INTEGER,"
    " reason TEXT,"
    " event_id TEXT NOT NULL,"
    " created_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS transaction_disputes_txn ON transaction_disputes (txn_id);"
    "CREATE INDEX IF NOT EXISTS refunds_processor_ref ON refunds (processor_ref)"
    " WHERE processor_ref IS NOT NULL;";

/* v14: the customer's browser. A convert without a card leaves a
 * payment waiting for the browser's confirm: its client secret is kept
 * only as a keyed MAC (reservation_client_secrets). Reservation moves the
 * website hears about (confirmed, cancelled, expired) are written in the
 * same commit as the move (reservation_events) and published to the
 * webhook outbox from there. Both are new tables: re-running is harmless. */
static const char schema_v14_browser_payments[] =
    "CREATE TABLE IF NOT EXISTS reservation_client_secrets ("
    " payment_id TEXT PRIMARY KEY NOT NULL,"
    " reservation_id TEXT NOT NULL,"
    " customer_id TEXT NOT NULL,"
    " secret_mac TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS reservation_client_secrets_resv"
    " ON reservation_client_secrets (reservation_id);"
    "CREATE TABLE IF NOT EXISTS reservation_events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " reservation_id TEXT NOT NULL,"
    " event_type TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " published INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS reservation_events_unpublished"
    " ON reservation_events (id) WHERE published = 0;";

/* v15: the e-mail outbox. A notification is rendered into its complete
 * RFC 5322 message when it is queued, so what is delivered (and retried)
 * is exactly what was committed; audience tells customer mail (counted in
 * the backlog metric) from operators' alerts; dedupe_key makes "one
 * receipt per payment" hold however often its event is heard. IF NOT
 * EXISTS everywhere:
 * re-running the step is harmless. */
static const char schema_v15_mail_outbox[] =
    "CREATE TABLE IF NOT EXISTS mail_outbox ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " kind TEXT NOT NULL,"
    " audience TEXT NOT NULL CHECK (audience IN ('customer','admin')),"
    " client_id TEXT,"
    " txn_id TEXT,"
    " mail_from TEXT NOT NULL,"
    " rcpt_to TEXT NOT NULL,"
    " subject TEXT NOT NULL,"
    " message TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('pending','sent','failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at INTEGER NOT NULL,"
    " last_error TEXT,"
    " dedupe_key TEXT,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS mail_outbox_due ON mail_outbox (status, next_attempt_at);"
    "CREATE UNIQUE INDEX IF NOT EXISTS mail_outbox_once ON mail_outbox (dedupe_key)"
    " WHERE dedupe_key IS NOT NULL;"
    /* The mail sender's look for holds that ended (store_mail_holds_ended). */
    "CREATE INDEX IF NOT EXISTS reservations_ended ON reservations (updated_at)"
    " WHERE status IN ('expired', 'cancelled');";

/* v16: every state a transaction takes leaves a row in txn_moves, written
 * by the database itself in the same commit as the state, whichever job
 * wrote it. The listeners' side effects (outbound webhooks, e-mails,
 * reservations) are derived from it after the commit and the row deleted
 * (pipeline/events.c); a row still there after a crash is replayed
 * (pipeline/reconcile.c), so no side effect is lost between two commits.
 * 'posting' is the claim before the processor call, never announced. */
static const char schema_v16_txn_moves[] =
    "CREATE TABLE IF NOT EXISTS txn_moves ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " txn_id TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " at INTEGER NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS txn_moves_txn ON txn_moves (txn_id, status);"
    "CREATE TRIGGER IF NOT EXISTS txn_moves_insert AFTER INSERT ON transactions"
    " WHEN NEW.status <> 'posting' BEGIN"
    " INSERT INTO txn_moves (txn_id, status, at) VALUES (NEW.id, NEW.status, NEW.updated_at);"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS txn_moves_update AFTER UPDATE OF status ON transactions"
    " WHEN OLD.status IS NOT NEW.status BEGIN"
    " INSERT INTO txn_moves (txn_id, status, at) VALUES (NEW.id, NEW.status, NEW.updated_at);"
    " END;";

/* v17: saved cards a processor holds (a Stripe.js PaymentMethod attached
 * to the processor's Customer). They have no vault entry, so they are not
 * payment_methods rows (whose token must name one): processor_methods has
 * the same shape with the processor's ids and display fields instead, and
 * the store reads both as one list (one default per customer across the
 * two). processor_customers maps a flairgw customer to its Customer at
 * each processor instance. IF NOT EXISTS everywhere: re-running the step
 * is harmless. */
static const char schema_v17_processor_methods[] =
    "CREATE TABLE IF NOT EXISTS processor_methods ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " customer_id TEXT NOT NULL,"
    " nickname TEXT,"
    " is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),"
    " created_at INTEGER NOT NULL,"
    " processor TEXT NOT NULL,"
    " processor_customer TEXT NOT NULL,"
    " processor_method TEXT NOT NULL,"
    " brand TEXT NOT NULL,"
    " last4 TEXT NOT NULL,"
    " exp_month INTEGER NOT NULL,"
    " exp_year INTEGER NOT NULL,"
    " UNIQUE (customer_id, processor, processor_method)"
    ");"
    "CREATE INDEX IF NOT EXISTS processor_methods_customer"
    " ON processor_methods(customer_id, created_at);"
    "CREATE TABLE IF NOT EXISTS processor_customers ("
    " processor TEXT NOT NULL,"
    " customer_id TEXT NOT NULL,"
    " processor_customer TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (processor, customer_id)"
    ");";

/* v18: the key ring in the database, for the PostgreSQL backend (many
 * instances, one ring; crypto/keys.h, docs/keys.md). One row per
 * generation of the ring: the whole document as crypto/ writes it
 * (wrapped keys, public keys, the integrity MAC under a subkey of the
 * KEK, which never comes here); the newest row is the ring. Rows are
 * never updated, so no data key that encrypted anything is lost. The
 * SQLite store keeps keys_dir/keyring.json and leaves this table empty;
 * it exists on both so one schema describes both backends. */
static const char schema_v18_key_ring[] =
    "CREATE TABLE IF NOT EXISTS key_ring ("
    " generation INTEGER PRIMARY KEY NOT NULL CHECK (generation > 0),"
    " ring_json TEXT NOT NULL,"
    " created_at INTEGER NOT NULL"
    ");";

/* v19: who claimed an outbox row (store/claim.h): the claiming
 * instance's identity, kept across its restarts (store_opts.instance_id),
 * or NULL (none, or not claimed: an attempt or a retry clears it). With
 * it an instance starting again makes its own claims of a run that ended
 * due at once instead of after their leases; a lease end alone reads
 * like a retry's backoff. Its columns are in added_columns (SQLite has
 * no ADD COLUMN IF NOT EXISTS). */
static const char schema_v19_outbox_claimed_by[] = "";

/* Columns a step adds, each only while its table lacks it, so that
 * running the step again is harmless as for the steps made of CREATE
 * ... IF NOT EXISTS. */
static const struct {
	int version;
	const char *table, *column, *decl;
} added_columns[] = {
	{ 19, "webhook_outbox", "claimed_by", "TEXT" },
	{ 19, "mail_outbox", "claimed_by", "TEXT" },
};

static const char *const migrations[] = {
	schema_v1,
	schema_v2,
	schema_v3,
	schema_v4_reconcile,
	schema_v5,
	schema_v6,
	schema_v7,
	schema_v8,
	schema_v9_txnop_attempts,
	schema_v10_idem_keyed,
	schema_v11_customer_namespaces,
	schema_v12_awaiting_action,
	schema_v13_disputes,
	schema_v14_browser_payments,
	schema_v15_mail_outbox,
	schema_v16_txn_moves,
	schema_v17_processor_methods,
	schema_v18_key_ring,
	schema_v19_outbox_claimed_by,
};

#define N_MIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

_Static_assert(N_MIGRATIONS == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION must count the migrations");

int
schema_version(sqlite3 *db, int *version)
{
	sqlite3_stmt *s = NULL;
	int r;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) !=
	        SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_ROW) {
		log_error("reading user_version failed: %s", sqlite3_errmsg(db));
		r = FGW_ERR_DB;
		goto out;
	}
	*version = sqlite3_column_int(s, 0);
	r = 0;
out:
	sqlite3_finalize(s);
	return r;
}

static int
exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		log_error("schema: %s", msg != NULL ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return FGW_ERR_DB;
	}
	return 0;
}

static void
rollback(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

/* Adds the columns of step `version` its tables lack (added_columns). */
static int
add_columns(sqlite3 *db, int version)
{
	sqlite3_stmt *s = NULL;
	char sql[160];
	int n, rc, r = 0;

	for (size_t i = 0; r == 0 && i < sizeof(added_columns) / sizeof(added_columns[0]); i++) {
		if (added_columns[i].version != version)
			continue;
		if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2",
		                       -1, &s, NULL) != SQLITE_OK ||
		    sqlite3_bind_text(s, 1, added_columns[i].table, -1, SQLITE_STATIC) !=
		        SQLITE_OK ||
		    sqlite3_bind_text(s, 2, added_columns[i].column, -1, SQLITE_STATIC) !=
		        SQLITE_OK) {
			log_error("schema: %s", sqlite3_errmsg(db));
			r = FGW_ERR_DB;
			break;
		}
		rc = sqlite3_step(s);
		sqlite3_finalize(s);
		s = NULL;
		if (rc == SQLITE_ROW)
			continue;
		if (rc != SQLITE_DONE) {
			log_error("schema: %s", sqlite3_errmsg(db));
			r = FGW_ERR_DB;
			break;
		}
		n = snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN %s %s",
		             added_columns[i].table, added_columns[i].column,
		             added_columns[i].decl);
		r = n < 0 || (size_t)n >= sizeof(sql) ? FGW_ERR_INTERNAL : exec_sql(db, sql);
	}
	sqlite3_finalize(s);
	return r;
}

/* One step under the write lock. The version is read again inside the
 * transaction, so two processes opening a new file at once do not both
 * run the same step. *version is the version after the step. */
static int
migrate_step(sqlite3 *db, int *version)
{
	char bump[48];
	int n, r, v = 0, stepped = 0;

	if ((r = exec_sql(db, "BEGIN IMMEDIATE")) != 0)
		goto out;
	if ((r = schema_version(db, &v)) != 0)
		goto out;
	if (v > STORE_SCHEMA_VERSION || v < 0) {
		log_error("database schema version %d is not one this build knows "
		          "(up to %d)", v, STORE_SCHEMA_VERSION);
		r = FGW_ERR_STATE;
		goto out;
	}
	if (v < STORE_SCHEMA_VERSION) {
		n = snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", v + 1);
		if (n < 0 || (size_t)n >= sizeof(bump)) {
			r = FGW_ERR_INTERNAL;
			goto out;
		}
		if ((r = exec_sql(db, migrations[v])) != 0 || (r = add_columns(db, v + 1)) != 0 ||
		    (r = exec_sql(db, bump)) != 0)
			goto out;
		v++;
		stepped = 1;
	}
	if ((r = exec_sql(db, "COMMIT")) != 0)
		goto out;
	if (stepped)
		log_info("schema migrated to version %d", v);
	*version = v;
	r = 0;
out:
	if (r != 0)
		rollback(db);
	return r;
}

int
schema_migrate(sqlite3 *db)
{
	int version = 0, start = -1, r;

	if ((r = schema_version(db, &start)) != 0)
		goto out;
	do {
		if ((r = migrate_step(db, &version)) != 0)
			goto out;
	} while (version < STORE_SCHEMA_VERSION);
	/* A migration may have rewritten what must not stay on disk (v10: the
	 * unkeyed request hashes): copy the WAL into the file and empty it,
	 * so no old frame outlives the step. A new file too, so its header
	 * carries the version (flairgw --check reads only the header). Busy
	 * (another connection reading) only delays this to the next
	 * checkpoint. */
	if (start >= 0 && start < STORE_SCHEMA_VERSION &&
	    sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) !=
	        SQLITE_OK)
		log_warn("checkpoint after migration: %s", sqlite3_errmsg(db));
	r = 0;
out:
	return r;
}
/* clang-format on */
