/*
 * store/store.h — the only room that speaks SQL.
 *
 * One SQLite database in WAL mode. A single writer thread owns the write
 * connection; reactors submit write jobs (store_txn_create, store_txn_finish,
 * ...) which the writer commits in batches (group commit: one BEGIN..COMMIT
 * for up to batch_max queued jobs, synchronous=FULL by default). After each
 * COMMIT the writer hands every finished job back to the reactor that
 * submitted it through that reactor's store_waker (event_active on the
 * reactor's event_base); the done callback then runs ON THE REACTOR THREAD
 * with rc = 0 (committed) or a negative FGW_ERR_* code (not committed).
 * If one job in a batch fails, that job's statements are rolled back to a
 * savepoint and the rest of the batch still commits.
 *
 * Reads use a per-thread read-only connection (struct store_reader), which
 * WAL lets run concurrently with the writer.
 *
 * Every job may carry audit events; the writer appends them to the
 * hash-chained audit table in commit order (see store/audit.c), so the
 * chain order is the commit order.
 *
 * Transaction states move forward only (core/txnstate.h); an
 * update that would move a state backwards, or touch a final state, is not
 * applied and its job completes with FGW_ERR_STATE.
 *
 * All strings passed to submit functions are copied before they return.
 *
 * Write jobs end with one struct store_commit (the idempotent answer, the
 * audit events and done/arg that commit and report with the job).
 * Submit functions return 0 when the job is queued, and then done(arg, rc)
 * runs exactly once later (unless the waker is freed first, see below);
 * or they return a negative code (FGW_ERR_INVALID, FGW_ERR_NOMEM,
 * FGW_ERR_SHUTDOWN) and done is never called. done may be NULL when the
 * caller does not need to know. A NULL waker is allowed: done then runs on
 * the writer thread right after the COMMIT — for tools and tests only; it
 * must not block for long, and must not call store_close.
 */
#ifndef FGW_STORE_STORE_H
#define FGW_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct store;
struct store_waker;
struct store_reader;
struct db;

/* Keyed MAC for the audit chain (the gateway passes keyring_audit_mac,
 * so key material stays in crypto/). Returns 0 or FGW_ERR_*. */
typedef int (*store_mac_fn)(void *ctx, const void *msg, size_t len,
                            unsigned char mac[32]);

/* Where the store lives (docs/postgresql.md). */
enum store_backend {
	STORE_SQLITE = 0, /* one file, one process: path */
	STORE_POSTGRESQL, /* one database, any number of instances: dsn or dsn_file */
};

struct store_opts {
	enum store_backend backend;
	const char *path; /* SQLite: database file, created if missing */
	/* PostgreSQL: exactly one of a libpq connection string and a file
	 * (mode 0600) holding one; never logged. production: a server not on
	 * this host needs sslmode=verify-full (store/pg.h). */
	const char *dsn;
	const char *dsn_file;
	bool production;
	int sync_full;          /* 1: synchronous=FULL, 0: NORMAL */
	int batch_max;          /* max jobs per COMMIT (>= 1) */
	store_mac_fn audit_mac; /* required */
	void *audit_mac_ctx;    /* must outlive the store */
	int busy_timeout_ms;    /* wait for another process's lock;
	                          0: 5000. A batch whose BEGIN cannot get the
	                          lock in time fails whole with FGW_ERR_DB. */
	long long max_pages;    /* PRAGMA max_page_count after migrations; 0:
	                          SQLite's default. A value below the size at
	                          open caps the file at that size. */
	/* Called on the writer thread, on the writer connection, right after
	 * each batch's COMMIT (NULL: none). For fault tests: a hook may read
	 * what was just committed and end the process there, the way a crash
	 * between two commits would. Must not write. */
	void (*after_commit)(struct db *db, void *ctx);
	void *after_commit_ctx;
	/* PostgreSQL: threads running store_read, each with a connection of
	 * its own (0: STORE_READ_THREADS). SQLite reads run in place. */
	int read_threads;
	/* The instance's identity, kept across its restarts (NULL: none).
	 * The outbox rows it claims are marked with it, and at open the
	 * rows it claimed in a run that ended are due again at once instead
	 * of when their leases end. The caller makes sure that no other
	 * live process uses it on SQLite (the gateway: its data_dir lock);
	 * on PostgreSQL the store proves it with a lock of its own, and
	 * without that lock claims carry no identity. */
	const char *instance_id;
};

#define STORE_READ_THREADS 4
#define STORE_READ_THREADS_MAX 64

/* For an after_commit hook of a fault test: 1 when a transaction (or,
 * with reservation set, a reservation) is in status on db, else 0. */
int store_status_present(struct db *db, int reservation, const char *status);

/* Opens/creates the database, applies migrations, starts the writer. */
int store_open(const struct store_opts *opts, struct store **out);
/* The schema version of the database file at path (*version) and the
 * newest this build migrates to (*latest), read without changing anything
 * on disk (safe while the daemon runs). 0; FGW_ERR_STATE when the file is
 * newer than this build; FGW_ERR_NOT_FOUND when there is no file;
 * FGW_ERR_DB when it is not a database. */
int store_file_schema(const char *path, int *version, int *latest);
/* The same for a PostgreSQL store (o->dsn or o->dsn_file): connects,
 * reads the version and disconnects, changing nothing. 0; FGW_ERR_STATE
 * when the database is newer than this build; pg_connect's codes when it
 * cannot connect (the reason is logged). */
int store_pg_schema(const struct store_opts *o, int *version, int *latest);
/* Commits everything queued, stops and joins the writer, closes. Jobs
 * submitted after this began fail with FGW_ERR_SHUTDOWN. Every queued job
 * is committed (or fails) and handed to its waker before this returns.
 * Wakers and readers may be freed before or after store_close, in either
 * order (a waker does not point at the store; a reader has its own
 * connection). Not to be called from a done callback. */
void store_close(struct store *st);

/* One per reactor thread; base must have been created after
 * evthread_use_pthreads(). Free it on its own thread after the last job
 * it carries has completed. If it is freed earlier (or its base loop has
 * stopped), jobs that complete for it afterwards, or that completed but
 * whose callback never ran, are dropped WITHOUT calling done. A done
 * callback may free its own waker. */
int store_waker_new(struct store *st, struct event_base *base, struct store_waker **out);
void store_waker_free(struct store_waker *w);
/* Jobs submitted on w by this thread between begin and end commit in one
 * batch (each still in its own savepoint): a side effect queued by one job
 * and the mark that it was queued, written by another, cannot be split by
 * a crash. Groups do not nest; end queues them (or, when the store is
 * closing, runs their done with FGW_ERR_SHUTDOWN at once). */
void store_group_begin(struct store_waker *w);
void store_group_end(struct store *st, struct store_waker *w);

typedef void (*store_done_fn)(void *arg, int rc);

struct store_audit;
struct store_idem;

/* What commits with a write job besides its own change, and who hears of
 * it: the idempotent answer (NULL: none), the audit events (n_audit may
 * be 0) and done(arg, rc) (done may be NULL). Every write job takes one;
 * everything it points to is copied before the submit function returns,
 * so a compound literal at the call is fine. */
struct store_commit {
	const struct store_idem *idem;
	const struct store_audit *audit;
	size_t n_audit;
	store_done_fn done;
	void *arg;
	/* For store_submit_custom: 1 when the job's own change is the whole
	 * effect of a request under idem's key (a hold, a cancel): the key is
	 * claimed before that change, and when another request holds it (on
	 * any instance) nothing commits and the job fails FGW_ERR_CONFLICT.
	 * 0: the job records what happened already (a processor's answer);
	 * it commits, and idem is stored only while the key is free, expired
	 * or this request's own claim (same txn_id, in progress). */
	int idem_claim;
	/* 1: the job guards the jobs submitted after it in its group
	 * (store_group_begin): when it fails, they are not run and fail
	 * FGW_ERR_EXISTS. Submit it first, so that nothing of the group runs
	 * before it decides. */
	int guard;
};

/* ---- reads for a reactor ----------------------------------------------- */

/* A read that never blocks the reactor on the database: fn(rd, arg) runs
 * with a reader, then done(arg, rc) runs on w's reactor with fn's return,
 * never before store_read has returned.
 *
 * On SQLite fn runs at once, on the caller's thread, with `here` (the
 * reactor's own reader: a read of a local file, no round trip). On
 * PostgreSQL it runs on one of the store's read threads, each with a
 * connection of its own, while the reactor serves other requests.
 *
 * So fn may run on another thread: it touches only what arg owns (the
 * reactor leaves arg alone until done) and nothing of the reactor's (no
 * evhttp, no event_*, no reactor state). Returns 0 when done will run
 * (unless w is freed or the read cancelled first); otherwise neither fn
 * nor done runs, and arg is still the caller's. */
typedef int (*store_read_fn)(struct store_reader *rd, void *arg);
int store_read(struct store *st, struct store_waker *w, struct store_reader *here,
               store_read_fn fn, void *arg, store_done_fn done);
/* Before freeing what w's reads point to without waiting for their done
 * (a forced stop): drops w's reads not yet started (their done never
 * runs) and waits for the ones running. On w's own thread. */
void store_read_cancel(struct store *st, struct store_waker *w);

/* ---- records ---------------------------------------------------------- */

/* A masked audit event. details_json never holds a PAN or CVC. */
struct store_audit {
	const char *actor;        /* client id, JWT subject, "operator:NAME", "system" */
	const char *source;       /* remote address, or "local" */
	const char *event_type;   /* e.g. "txn.created", "txn.decided", "txn.outcome" */
	const char *resource;     /* e.g. "txn_…" */
	const char *outcome;      /* "success", "failure", "declined", ... */
	const char *details_json; /* masked details, a JSON object, or NULL */
};

/* A transaction as recorded. Fixed buffers keep copies cheap and bounded. */
struct store_txn_row {
	char id[40];
	char client_id[64];
	char reservation_id[128];
	int64_t amount;
	char currency[4];
	char status[24];     /* a state's name (core/txnstate.h); compare
	                             with txn_state_of(), never by name */
	char error_code[40]; /* our error code when not succeeded */
	char error_message[160];
	char processor[32];
	char processor_ref[96];
	char processor_idem_key[96]; /* stable key sent on every retry */
	char token[40];
	char fingerprint[65];
	char brand[16];
	char bin[7];
	char last4[5];
	int exp_month;
	int exp_year;
	char customer_email[256];
	char customer_name[128];
	char customer_country[3];
	char customer_ip[64];
	char rule_decision[16];    /* allow, review, decline */
	char rules_fired[256];     /* comma-separated rule ids */
	char idempotency_key[256]; /* the client's key, "" when none */
	char description[256];
	char *metadata_json;    /* JSON object text or NULL (owned: see _clear) */
	char *next_action_json; /* JSON object text or NULL (owned) */
	int64_t created_at;     /* ms since epoch */
	int64_t updated_at;
};
/* Frees the owned pointers of a row filled by a read. */
void store_txn_row_clear(struct store_txn_row *row);

/* A vault entry: ciphertext only, plus what may be displayed. */
struct store_vault_entry {
	char token[40];
	char key_id[32];
	const char *blob; /* vault_encrypt() output */
	char fingerprint[65];
	char brand[16];
	char bin[7];
	char last4[5];
	int exp_month;
	int exp_year;
	char customer_id[192]; /* owner for saved methods, "" for one-time */
	int saved;             /* 0: one-time (purged after use), 1: saved */
	int64_t expires_at;    /* ms since epoch, 0 = never */
};

/* request_hash of an answer stored before the hash was keyed: the
 * migration that wiped the old, computable hashes wrote this instead. */
#define STORE_IDEM_HASH_REMOVED "removed-unkeyed-hash"

/* A stored idempotent answer. */
struct store_idem {
	char client_id[64];
	char key[256];
	char request_hash[65]; /* hex keyed MAC of method+path+body
	                             (http_request_hash), or
	                             STORE_IDEM_HASH_REMOVED */
	int status_code;
	char *body; /* response body (owned; see _clear) */
	char txn_id[40];
	int64_t created_at;
	int64_t expires_at;
};
void store_idem_clear(struct store_idem *idem);

/* The change a processor answer (or a webhook, or the reconciler) makes. */
struct store_txn_update {
	char id[40];
	char status[24];
	char error_code[40];
	char error_message[160];
	char processor_ref[96];
	const char *next_action_json; /* or NULL */
};

/* ---- write jobs (any thread; done runs on the waker's reactor) -------- */

/* Inserts the transaction row (any status), and in the same commit the
 * vault entry (if not NULL), the idempotent answer (if not NULL) and the
 * audit events (n_audit may be 0). FGW_ERR_EXISTS if the id (or the vault
 * token) exists; FGW_ERR_CONFLICT if an unexpired idempotent answer for
 * (idem->client_id, idem->key) exists (an expired one is replaced).
 * created_at/updated_at of 0 mean "now"; so does idem->created_at. */
int store_txn_create(struct store *st, struct store_waker *w,
                     const struct store_txn_row *row,
                     const struct store_vault_entry *vault, const struct store_commit *c);

/* Moves a transaction forward (FGW_ERR_STATE if the move is not allowed,
 * FGW_ERR_NOT_FOUND if no such id), and in the same commit stores the
 * idempotent answer and audit events. When purge_token is set, the one-time
 * vault entry of that token (saved = 0) is deleted in the same commit.
 * The update sets status, error_code, error_message and next_action_json
 * as given ("" / NULL clear them), keeps processor_ref when upd's is "",
 * and sets updated_at. The idempotent answer replaces a stored one for the
 * same (client_id, key), keeping its created_at. */
int store_txn_finish(struct store *st, struct store_waker *w,
                     const struct store_txn_update *upd, const char *purge_token,
                     const struct store_commit *c);

/* Appends audit events alone (e.g. failed authentication); c->idem is
 * not used. */
int store_audit_append(struct store *st, struct store_waker *w,
                       const struct store_commit *c);

/* ---- reads (a reader belongs to one thread) --------------------------- */

int store_reader_open(struct store *st, struct store_reader **out);
void store_reader_close(struct store_reader *r);
/* A reader on a database file with no store and no
 * writer thread: SQLITE_OPEN_READONLY, never migrates, never writes — for
 * flairctl's auditor commands while the daemon runs, and for restored
 * backups. mac/mac_ctx are the audit MAC (may be NULL if the caller never
 * verifies); busy_ms <= 0 means 5000. */
int store_reader_open_file(const char *path, store_mac_fn mac, void *mac_ctx, int busy_ms,
                           struct store_reader **out);
/* A reader with no store, for tools (flairctl), on either backend: the
 * SQLite file opened read-only (store_reader_open_file), or a PostgreSQL
 * connection of its own whose transactions are all READ ONLY, so
 * auditor commands cannot change the database. Uses o's backend, path,
 * dsn, dsn_file, production, audit_mac and busy_timeout_ms. */
int store_reader_open_tool(const struct store_opts *o, struct store_reader **out);

/* Transaction by id, scoped to client_id (NULL: any client).
 * FGW_ERR_NOT_FOUND if missing or another client's. NULL text reads as "".
 * On success call store_txn_row_clear(out) when done with it. */
int store_txn_get(struct store_reader *r, const char *client_id, const char *id,
                  struct store_txn_row *out);
/* Stored idempotent answer for (client_id, key) that has not expired.
 * FGW_ERR_NOT_FOUND when none. */
int store_idem_get(struct store_reader *r, const char *client_id, const char *key,
                   struct store_idem *out);
/* Vault entry by token (blob copied into *blob, malloc'ed; out->blob
 * points at it). Expired entries are returned too: check expires_at. */
int store_vault_get(struct store_reader *r, const char *token,
                    struct store_vault_entry *out, char **blob);

/* Recomputes the audit hash chain from seq 1 with the MAC of the store the
 * reader came from (its ctx must still be alive). Returns 0 when intact;
 * FGW_ERR_CRYPTO with *first_bad_seq set to the first seq at which the
 * chain breaks (an edited row, a missing seq, reordered rows); FGW_ERR_DB.
 * Removing rows at the end leaves an intact shorter chain: compare the
 * head (max seq, hash) with a copy kept elsewhere to detect that. */
int store_audit_verify(struct store_reader *r, int64_t *first_bad_seq);

/* ---- statistics (for /metrics and the benchmark) ---------------------- */
/* Upper bounds (µs) of the commit latency buckets; one more, +Inf, follows. */
#define STORE_COMMIT_BUCKETS 11
extern const uint64_t store_commit_le_us[STORE_COMMIT_BUCKETS - 1];
struct store_stats {
	uint64_t commits;      /* COMMITs done by the writer */
	uint64_t jobs;         /* jobs committed */
	uint64_t failed_jobs;  /* jobs rolled back */
	uint64_t queue_depth;  /* jobs waiting now */
	uint64_t audit_events; /* audit rows appended */
	/* time the COMMIT itself took (the WAL append and its fsync) */
	uint64_t commit_us_sum;
	uint64_t commit_bucket[STORE_COMMIT_BUCKETS]; /* per bucket, not cumulative */
};
void store_get_stats(struct store *st, struct store_stats *out);

/* Whether the writer can commit: what a load balancer's health check
 * needs. failed_at: fgw_mono_ms() when a batch last failed to commit or a
 * job failed for the storage itself (disk full, I/O error), 0 once a
 * later batch committed cleanly; oldest_wait_ms: how long the oldest job
 * not yet committed has been waiting (queued or in the batch being run),
 * 0 when there is none. */
struct store_health {
	int64_t failed_at;
	int last_rc; /* its enum db_fail (store/db.h) */
	int64_t oldest_wait_ms;
};
void store_get_health(struct store *st, struct store_health *out);

#endif
