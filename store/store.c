/*
 * store/store.c — the writer thread, its job queue, completion delivery
 * and the per-thread readers.
 *
 * Submit functions copy their arguments into a struct job and append it to
 * a mutex+condvar queue. The writer thread takes up to batch_max jobs,
 * runs them in one BEGIN IMMEDIATE .. COMMIT with a SAVEPOINT around each
 * job (a failing job is rolled back alone), then hands every job back:
 * onto its waker's list with one event_active per waker (the done callback
 * then runs on that waker's reactor), or, for a NULL waker, by calling
 * done right there on the writer thread.
 *
 * Waker lifetime: a waker is reference counted. Its owner holds one
 * reference and every queued job that names it holds one until the writer
 * has handed the job over, so store_waker_free and store_close may come in
 * either order. A freed waker is marked dead: the writer drops jobs for it
 * without calling done, and store_waker_free drops completions that its
 * reactor never ran.
 *
 * Layout: column tables and SQL, jobs, waker, writer (run a job,
 * run a batch, deliver, thread), open/close, submit functions, readers,
 * statistics.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#define LOG_MODULE "store"
#include "core/err.h"
#include "core/log.h"
#include "core/txnstate.h"
#include "core/util.h"
#include "store/db.h"
#include "store/audit.h"
#include "store/pg.h"
#include "store/schema.h"
#include "store/sqlutil.h"
#include "store/store.h"
#include "store/store_int.h"
#include "store/txns.h"

#define STORE_BUSY_TIMEOUT_MS 5000
#define STORE_BATCH_LIMIT 100000
#define STORE_GROUP_MAX 32

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A fixed char array holds a non-empty, NUL-terminated string. */
#define FIELD_SET(f) ((f)[0] != '\0' && memchr((f), '\0', sizeof(f)) != NULL)

/* ---- writer statements ------------------------------------------------- */

enum wstmt {
	W_BEGIN,
	W_COMMIT,
	W_ROLLBACK,
	W_SAVEPOINT,
	W_RELEASE,
	W_ROLLBACK_TO,
	W_TXN_INSERT,
	W_TXN_STATUS,
	W_TXN_UPDATE,
	W_VAULT_INSERT,
	W_VAULT_PURGE,
	W_IDEM_CLAIM,
	W_IDEM_IF_FREE,
	W_IDEM_UPSERT,
	W_COUNT
};

#define IDEM_INSERT_SQL                                                    \
	"INSERT INTO idempotency (client_id, key, request_hash, status_code, " \
	"body, txn_id, created_at, expires_at) "                               \
	"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"

/* W_TXN_INSERT is built from the column table (store/txns.c) at open. */
static const char *const writer_sql[W_COUNT] = {
	[W_BEGIN] = "BEGIN IMMEDIATE",
	[W_COMMIT] = "COMMIT",
	[W_ROLLBACK] = "ROLLBACK",
	[W_SAVEPOINT] = "SAVEPOINT job",
	[W_RELEASE] = "RELEASE job",
	[W_ROLLBACK_TO] = "ROLLBACK TO job",
	[W_TXN_STATUS] = "SELECT status FROM transactions WHERE id = ?1",
	/* status = ?8 re-checks the state read in this same transaction. */
	[W_TXN_UPDATE] = "UPDATE transactions SET status = ?2, error_code = ?3, "
	                 "error_message = ?4, processor_ref = COALESCE(?5, processor_ref), "
	                 "next_action_json = ?6, updated_at = ?7 "
	                 "WHERE id = ?1 AND status = ?8",
	[W_VAULT_INSERT] =
	    "INSERT INTO vault_entries (token, key_id, blob, fingerprint, brand, "
	    "bin, last4, exp_month, exp_year, customer_id, saved, created_at, "
	    "expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
	    "?12, ?13)",
	[W_VAULT_PURGE] = "DELETE FROM vault_entries WHERE token = ?1 AND saved = 0",
	/* The primary key decides who owns a key, in one statement: the
	 * first commit wins, a concurrent claimer (another instance) waits
	 * for it and then changes nothing; an expired row no longer reserves
	 * its key and is replaced in place. No failed statement either, so a
	 * lost claim does not spoil a PostgreSQL transaction. */
	[W_IDEM_CLAIM] = IDEM_INSERT_SQL
	" ON CONFLICT (client_id, key) DO UPDATE SET "
	"request_hash = excluded.request_hash, "
	"status_code = excluded.status_code, body = excluded.body, "
	"txn_id = excluded.txn_id, created_at = excluded.created_at, "
	"expires_at = excluded.expires_at WHERE idempotency.expires_at < ?9",
	/* The same, also over this request's own claim (in progress, the
	 * same transaction); a live row of another request stays. */
	[W_IDEM_IF_FREE] = IDEM_INSERT_SQL
	" ON CONFLICT (client_id, key) DO UPDATE SET "
	"request_hash = excluded.request_hash, "
	"status_code = excluded.status_code, body = excluded.body, "
	"txn_id = excluded.txn_id, created_at = excluded.created_at, "
	"expires_at = excluded.expires_at WHERE idempotency.expires_at < ?9 "
	"OR (idempotency.status_code = 0 AND idempotency.txn_id = excluded.txn_id)",
	[W_IDEM_UPSERT] = IDEM_INSERT_SQL
	" ON CONFLICT (client_id, key) DO UPDATE SET "
	"request_hash = excluded.request_hash, "
	"status_code = excluded.status_code, body = excluded.body, "
	"txn_id = excluded.txn_id, expires_at = excluded.expires_at",
};

/* ---- jobs -------------------------------------------------------------- */

enum job_kind { JOB_CREATE, JOB_FINISH, JOB_AUDIT, JOB_CUSTOM, JOB_READ };

/* An audit event with owned strings. */
struct job_event {
	char *actor;
	char *source;
	char *event_type;
	char *resource;
	char *outcome;
	char *details_json;
};

struct job {
	struct job *next;
	enum job_kind kind;
	struct store_waker *waker; /* holds a reference until handed over */
	store_done_fn done;
	void *arg;
	int rc;

	struct store_txn_row row; /* create; JSON pointers owned */
	int has_vault;
	struct store_vault_entry vault; /* create; blob points at vault_blob */
	char *vault_blob;
	struct store_txn_update upd; /* finish; next_action_json -> upd_next */
	char *upd_next;
	int has_idem;
	int idem_claim;         /* JOB_CUSTOM: store_commit.idem_claim */
	struct store_idem idem; /* body owned */
	int has_purge;
	char purge_token[40];
	struct job_event *events;
	size_t n_events;
	store_job_fn custom_run;       /* JOB_CUSTOM (store_int.h) */
	store_answer_fn custom_answer; /* or NULL */
	void *custom_ctx;
	void (*custom_free)(void *ctx);
	store_read_fn read_fn; /* JOB_READ: runs on a read thread */
	int64_t queued_ms;     /* fgw_mono_ms() at enqueue */
	size_t group_len;      /* first job of a group: its size */
};

static void
job_free(struct job *j)
{
	if (j == NULL)
		return;
	free(j->row.metadata_json);
	free(j->row.next_action_json);
	free(j->vault_blob);
	free(j->upd_next);
	free(j->idem.body);
	for (size_t i = 0; i < j->n_events; i++) {
		struct job_event *e = &j->events[i];
		free(e->actor);
		free(e->source);
		free(e->event_type);
		free(e->resource);
		free(e->outcome);
		free(e->details_json);
	}
	free(j->events);
	if (j->custom_free != NULL)
		j->custom_free(j->custom_ctx);
	free(j);
}

static int
job_new(enum job_kind kind, struct store_waker *w, store_done_fn done, void *arg,
        struct job **out)
{
	struct job *j = calloc(1, sizeof(*j));
	if (j == NULL)
		return FGW_ERR_NOMEM;
	j->kind = kind;
	j->waker = w;
	j->done = done;
	j->arg = arg;
	*out = j;
	return 0;
}

static int
dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return 0;
	if ((*out = strdup(s)) == NULL)
		return FGW_ERR_NOMEM;
	return 0;
}

static int
job_copy_events(struct job *j, const struct store_audit *a, size_t n)
{
	if (n == 0)
		return 0;
	if (a == NULL)
		return FGW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		if (a[i].event_type == NULL || a[i].event_type[0] == '\0')
			return FGW_ERR_INVALID;
	}
	if ((j->events = calloc(n, sizeof(*j->events))) == NULL)
		return FGW_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		struct job_event *e = &j->events[i];
		j->n_events = i + 1; /* job_free frees what was copied so far */
		if ((e->actor = audit_dup_line(a[i].actor)) == NULL ||
		    (e->source = audit_dup_line(a[i].source)) == NULL ||
		    (e->event_type = audit_dup_line(a[i].event_type)) == NULL ||
		    (e->resource = audit_dup_line(a[i].resource)) == NULL ||
		    (e->outcome = audit_dup_line(a[i].outcome)) == NULL ||
		    dup_opt(a[i].details_json, &e->details_json) != 0)
			return FGW_ERR_NOMEM;
	}
	return 0;
}

static int
job_copy_idem(struct job *j, const struct store_idem *idem, int claim)
{
	if (idem == NULL)
		return 0;
	if (!FIELD_SET(idem->client_id) || !FIELD_SET(idem->key))
		return FGW_ERR_INVALID;
	j->idem = *idem;
	j->idem.body = NULL;
	j->has_idem = 1;
	j->idem_claim = j->kind == JOB_CUSTOM && claim;
	return dup_opt(idem->body, &j->idem.body);
}

/* ---- the store and its wakers ------------------------------------------ */

struct store {
	enum store_backend backend;
	char *path;
	/* PostgreSQL: how readers connect (the DSN may hold a password:
	 * wiped when the store goes). */
	char *dsn, *dsn_file;
	bool production;
	int batch_max;
	int busy_ms;
	void (*after_commit)(struct db *db, void *ctx);
	void *after_commit_ctx;
	store_mac_fn mac;
	void *mac_ctx;

	struct db *db; /* write connection: the writer thread's after open */
	struct db_stmt *stmt[W_COUNT];
	struct audit_writer audit;
	struct job **batch;

	pthread_mutex_t mu; /* guards head, tail, closing */
	pthread_cond_t cv;
	struct job *head, *tail;
	int closing;
	int mu_ok, cv_ok;
	pthread_t thread;
	int thread_started;

	_Atomic uint64_t commits;
	_Atomic uint64_t commit_us_sum;
	_Atomic uint64_t commit_bucket[STORE_COMMIT_BUCKETS];
	_Atomic uint64_t jobs;
	_Atomic uint64_t failed_jobs;
	_Atomic uint64_t queue_depth;
	_Atomic uint64_t audit_events;
	_Atomic int64_t running_since; /* oldest queued_ms of the batch being
	                                  run; 0 when the writer is idle */
	_Atomic int64_t failed_at;     /* fgw_mono_ms() of the last storage
	                                  failure not yet followed by a clean
	                                  batch; 0: none */
	_Atomic int last_rc;           /* its enum db_fail */

	/* PostgreSQL: store_read's threads, one connection each. */
	pthread_mutex_t rmu;  /* guards rhead, rtail, rclosing, rrunning */
	pthread_cond_t rcv;   /* a read queued, or closing */
	pthread_cond_t ridle; /* a read thread finished a job */
	int rmu_ok, rcv_ok, ridle_ok;
	struct job *rhead, *rtail;
	int rclosing;
	int nread; /* threads started */
	int rcap;  /* size of the three arrays */
	pthread_t *rthreads;
	struct store_reader **rreaders;
	struct store_waker **rrunning; /* per thread: whose read runs */
};

struct store_waker {
	pthread_mutex_t mu; /* guards ev, head, tail, armed, dead */
	struct event *ev;
	struct job *head, *tail; /* completed, not yet handed to done */
	int armed;               /* ev activated and not yet run */
	int dead;                /* store_waker_free was called */
	atomic_int refs;
	/* store_group_begin..end, on the owning reactor's thread only: jobs
	 * submitted meanwhile wait here and then go into one batch. */
	int grouping;
	pthread_t group_thread;
	struct job *ghead, *gtail;
	size_t gn;
};

static void
waker_unref(struct store_waker *w)
{
	if (atomic_fetch_sub(&w->refs, 1) == 1) {
		pthread_mutex_destroy(&w->mu);
		free(w);
	}
}

/* Runs on the reactor thread that owns w's event_base. */
static void
waker_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_waker *w = arg;
	struct job *list, *j;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&w->mu);
	list = w->head;
	w->head = w->tail = NULL;
	w->armed = 0;
	pthread_mutex_unlock(&w->mu);
	/* w is not touched again: a done callback may free it. */
	while ((j = list) != NULL) {
		list = j->next;
		j->done(j->arg, j->rc);
		job_free(j);
	}
}

int
store_waker_new(struct store *st, struct event_base *base, struct store_waker **out)
{
	struct store_waker *w = NULL;
	int r, mu_ok = 0;

	if (st == NULL || base == NULL || out == NULL) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (pthread_mutex_init(&w->mu, NULL) != 0) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	mu_ok = 1;
	if ((w->ev = event_new(base, -1, 0, waker_cb, w)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	atomic_init(&w->refs, 1);
	*out = w;
	w = NULL; /* owned by the caller now */
	r = 0;
out:
	if (w != NULL) {
		if (mu_ok)
			pthread_mutex_destroy(&w->mu);
		free(w);
	}
	return r;
}

void
store_waker_free(struct store_waker *w)
{
	struct job *list, *j;
	struct event *ev;

	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->dead = 1;
	list = w->head;
	w->head = w->tail = NULL;
	ev = w->ev;
	w->ev = NULL;
	pthread_mutex_unlock(&w->mu);
	event_free(ev);
	while ((j = list) != NULL) { /* completed but never run: no done */
		list = j->next;
		job_free(j);
	}
	waker_unref(w);
}

/* ---- writer: one job --------------------------------------------------- */

/* Steps a write statement once, then resets it and clears its bindings.
 * Returns the (extended) SQLite result of the step. */
static int
step_reset(struct db_stmt *s)
{
	int rc = db_step(s);
	db_reset(s);
	db_clear_bindings(s);
	return rc;
}

/* Maps a failed write step: unique/primary-key clashes to on_dup, other
 * constraints to FGW_ERR_INVALID, anything else to FGW_ERR_DB. */
static int
map_write_error(int rc, int on_dup)
{
	if (rc == FGW_ERR_EXISTS)
		return on_dup;
	if (rc == FGW_ERR_INVALID)
		return FGW_ERR_INVALID;
	return FGW_ERR_DB;
}

static int
run_events(struct store *st, struct job *j, int64_t now)
{
	for (size_t i = 0; i < j->n_events; i++) {
		const struct job_event *e = &j->events[i];
		struct store_audit ev = {
			.actor = e->actor,
			.source = e->source,
			.event_type = e->event_type,
			.resource = e->resource,
			.outcome = e->outcome,
			.details_json = e->details_json,
		};
		int r = audit_writer_append(&st->audit, &ev, now);
		if (r != 0)
			return r;
	}
	return 0;
}

/* How a job's idempotent answer (or claim, status_code 0) is written. */
enum idem_mode {
	/* The job is the first to write the key (it creates the
	 * transaction, or its own change commits with the answer): the key
	 * must be free or expired, else FGW_ERR_CONFLICT (another request,
	 * on this or another instance, holds it: the job rolls back and
	 * answers as a repeat). */
	IDEM_CLAIM,
	/* The job records what happened already: stored when the key is
	 * free, expired or this request's own claim; another request's live
	 * row stays, and the job commits. */
	IDEM_IF_FREE,
	/* The job owns the key (its claim committed with the transaction):
	 * the stored row is replaced. */
	IDEM_OWN,
};

static int
run_idem(struct store *st, struct store_idem *idem, enum idem_mode mode, int64_t now)
{
	static const enum wstmt stmt_of[] = {
		[IDEM_CLAIM] = W_IDEM_CLAIM, [IDEM_IF_FREE] = W_IDEM_IF_FREE, [IDEM_OWN] = W_IDEM_UPSERT
	};
	struct db_stmt *s = st->stmt[stmt_of[mode]];
	int rc;

	if (idem->created_at == 0)
		idem->created_at = now;
	/* FGW_OK is 0: any failing bind stops the chain. */
	if (BIND_BUF(s, 1, idem->client_id, 0) || BIND_BUF(s, 2, idem->key, 0) ||
	    BIND_BUF(s, 3, idem->request_hash, 0) || db_bind_int(s, 4, idem->status_code) ||
	    db_bind_opt(s, 5, idem->body) || BIND_BUF(s, 6, idem->txn_id, 1) ||
	    db_bind_int64(s, 7, idem->created_at) || db_bind_int64(s, 8, idem->expires_at) ||
	    (mode != IDEM_OWN && db_bind_int64(s, 9, now))) {
		db_clear_bindings(s);
		return FGW_ERR_DB;
	}
	if ((rc = step_reset(s)) != DB_DONE)
		return map_write_error(rc, FGW_ERR_CONFLICT);
	if (mode == IDEM_CLAIM && db_changes(st->db) != 1)
		return FGW_ERR_CONFLICT;
	return 0;
}

static int
run_vault(struct store *st, const struct store_vault_entry *v, int64_t now)
{
	struct db_stmt *s = st->stmt[W_VAULT_INSERT];
	int rc;

	if (BIND_BUF(s, 1, v->token, 0) || BIND_BUF(s, 2, v->key_id, 0) ||
	    db_bind_opt(s, 3, v->blob) || BIND_BUF(s, 4, v->fingerprint, 1) ||
	    BIND_BUF(s, 5, v->brand, 1) || BIND_BUF(s, 6, v->bin, 1) ||
	    BIND_BUF(s, 7, v->last4, 1) || db_bind_int(s, 8, v->exp_month) ||
	    db_bind_int(s, 9, v->exp_year) || BIND_BUF(s, 10, v->customer_id, 1) ||
	    db_bind_int(s, 11, v->saved ? 1 : 0) || db_bind_int64(s, 12, now) ||
	    db_bind_int64(s, 13, v->expires_at)) {
		db_clear_bindings(s);
		return FGW_ERR_DB;
	}
	if ((rc = step_reset(s)) != DB_DONE)
		return map_write_error(rc, FGW_ERR_EXISTS);
	return 0;
}

static int
run_create(struct store *st, struct job *j, int64_t now)
{
	struct db_stmt *s = st->stmt[W_TXN_INSERT];
	int rc, r;

	if (j->row.created_at == 0)
		j->row.created_at = now;
	if (j->row.updated_at == 0)
		j->row.updated_at = now;
	if (txn_bind_row(s, &j->row) != FGW_OK) {
		db_clear_bindings(s);
		return FGW_ERR_DB;
	}
	if ((rc = step_reset(s)) != DB_DONE)
		return map_write_error(rc, FGW_ERR_EXISTS);
	if (j->has_vault && (r = run_vault(st, &j->vault, now)) != 0)
		return r;
	if (j->has_idem && (r = run_idem(st, &j->idem, IDEM_CLAIM, now)) != 0)
		return r;
	return run_events(st, j, now);
}

static int
run_finish(struct store *st, struct job *j, int64_t now)
{
	const struct store_txn_update *u = &j->upd;
	char cur[sizeof(u->status)];
	struct db_stmt *s = st->stmt[W_TXN_STATUS];
	int rc, r;

	if (BIND_BUF(s, 1, u->id, 0)) {
		db_clear_bindings(s);
		return FGW_ERR_DB;
	}
	rc = db_step(s);
	r = rc == DB_ROW    ? DB_COL_COPY(s, 0, cur)
	    : rc == DB_DONE ? FGW_ERR_NOT_FOUND
	                    : FGW_ERR_DB;
	db_reset(s);
	db_clear_bindings(s);
	if (r == FGW_ERR_TOO_LARGE)
		r = FGW_ERR_STATE; /* not a state this build knows */
	if (r != 0)
		return r;
	if (!txn_state_may_move(txn_state_of(cur), txn_state_of(u->status)))
		return FGW_ERR_STATE;

	s = st->stmt[W_TXN_UPDATE];
	if (BIND_BUF(s, 1, u->id, 0) || BIND_BUF(s, 2, u->status, 0) ||
	    BIND_BUF(s, 3, u->error_code, 1) || BIND_BUF(s, 4, u->error_message, 1) ||
	    BIND_BUF(s, 5, u->processor_ref, 1) || db_bind_opt(s, 6, u->next_action_json) ||
	    db_bind_int64(s, 7, now) || BIND_BUF(s, 8, cur, 0)) {
		db_clear_bindings(s);
		return FGW_ERR_DB;
	}
	if ((rc = step_reset(s)) != DB_DONE)
		return map_write_error(rc, FGW_ERR_DB);
	if (db_changes(st->db) != 1)
		return FGW_ERR_STATE;

	if (j->has_idem && (r = run_idem(st, &j->idem, IDEM_OWN, now)) != 0)
		return r;
	if (j->has_purge) {
		s = st->stmt[W_VAULT_PURGE];
		if (BIND_BUF(s, 1, j->purge_token, 0)) {
			db_clear_bindings(s);
			return FGW_ERR_DB;
		}
		if ((rc = step_reset(s)) != DB_DONE)
			return map_write_error(rc, FGW_ERR_DB);
	}
	return run_events(st, j, now);
}

static const char *
job_id(const struct job *j)
{
	switch (j->kind) {
	case JOB_CREATE:
		return j->row.id;
	case JOB_FINISH:
		return j->upd.id;
	default:
		return NULL;
	}
}

static int
run_job(struct store *st, struct job *j)
{
	int64_t now = fgw_now_ms();
	switch (j->kind) {
	case JOB_CREATE:
		return run_create(st, j, now);
	case JOB_FINISH:
		return run_finish(st, j, now);
	case JOB_AUDIT:
		return run_events(st, j, now);
	case JOB_CUSTOM: {
		char *body = NULL, *outcome = NULL;
		int r = 0;
		/* The key first: a request that lost it to another (on any
		 * instance) changes nothing and answers as a repeat, even
		 * when the winner's effect would now refuse it (a slot the
		 * winner filled). */
		if (j->idem_claim && (r = run_idem(st, &j->idem, IDEM_CLAIM, now)) != 0)
			return r;
		r = j->custom_run(st->db, j->custom_ctx);
		if (r == 0 && j->custom_answer != NULL &&
		    (r = j->custom_answer(j->custom_ctx, &body, &outcome)) == 0) {
			if (body != NULL && j->has_idem) {
				free(j->idem.body);
				j->idem.body = body;
				body = NULL;
			}
			if (outcome != NULL && j->n_events > 0) {
				free(j->events[0].outcome);
				j->events[0].outcome = outcome;
				outcome = NULL;
			}
		}
		free(body);
		free(outcome);
		/* The answer built in the job replaces the claim it owns. */
		if (r == 0 && j->idem_claim && j->custom_answer != NULL)
			r = run_idem(st, &j->idem, IDEM_OWN, now);
		else if (r == 0 && j->has_idem && !j->idem_claim)
			r = run_idem(st, &j->idem, IDEM_IF_FREE, now);
		if (r == 0)
			r = run_events(st, j, now);
		return r;
	}
	default:
		return FGW_ERR_INTERNAL;
	}
}

/* ---- writer: one batch ------------------------------------------------- */

static int
wexec(struct store *st, enum wstmt which)
{
	int rc = step_reset(st->stmt[which]);
	if (rc != DB_DONE) {
		atomic_store(&st->last_rc, (int)db_last_fail(st->db));
		log_error("%s failed: %s", writer_sql[which], db_errmsg(st->db));
		return FGW_ERR_DB;
	}
	return 0;
}

/* Whether the last error on db says the storage itself failed (a full
 * disk, an I/O error, a lost connection...) rather than that one job was
 * refused. */
static int
storage_failure(struct db *db)
{
	return db_last_fail(db) == DB_FAIL_STORAGE;
}

static void count_commit(struct store *st, uint64_t us);

/* Reads the audit chain's head for this batch. On PostgreSQL every
 * instance appends to the one chain: a batch with audit events first
 * takes the chain's advisory lock, held until its COMMIT or ROLLBACK, so
 * the head it reads stays the head until its events are committed (the
 * next instance waits here, then reads them). A batch without events
 * neither waits nor reads. */
static int
batch_audit_head(struct store *st, struct job **jobs, size_t n)
{
	char sql[64];
	size_t i;
	int len;

	if (st->backend == STORE_POSTGRESQL) {
		for (i = 0; i < n && jobs[i]->n_events == 0; i++)
			;
		if (i == n)
			return 0;
		len = snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%lld)",
		               PG_LOCK_AUDIT);
		if (len < 0 || (size_t)len >= sizeof(sql))
			return FGW_ERR_INTERNAL;
		if (db_exec(st->db, sql) != 0) {
			log_error("audit chain lock: %s", db_errmsg(st->db));
			return FGW_ERR_DB;
		}
	}
	return audit_writer_load_head(&st->audit);
}

/* Runs jobs[0..n) in one transaction and sets each job's rc. */
static void
run_batch(struct store *st, struct job **jobs, size_t n)
{
	struct timespec t0, t1;
	uint64_t events = 0, ok = 0;
	int storage_failed = 0;
	size_t i;

	if (wexec(st, W_BEGIN) != 0 || batch_audit_head(st, jobs, n) != 0)
		goto abort;
	for (i = 0; i < n; i++) {
		struct job *j = jobs[i];
		struct audit_chain job_head = st->audit.head;

		if (wexec(st, W_SAVEPOINT) != 0)
			goto abort;
		j->rc = run_job(st, j);
		/* An I/O error or a full disk may have ended the transaction. */
		if (!db_in_txn(st->db))
			goto abort;
		if (j->rc == 0) {
			if (wexec(st, W_RELEASE) != 0)
				goto abort;
			events += j->n_events;
			ok++;
			continue;
		}
		if (j->rc == FGW_ERR_DB && storage_failure(st->db)) {
			storage_failed = 1;
			atomic_store(&st->last_rc, (int)db_last_fail(st->db));
		}
		if (wexec(st, W_ROLLBACK_TO) != 0 || wexec(st, W_RELEASE) != 0)
			goto abort;
		st->audit.head = job_head;
		if (j->rc == FGW_ERR_EXISTS || j->rc == FGW_ERR_STATE ||
		    j->rc == FGW_ERR_NOT_FOUND || j->rc == FGW_ERR_CONFLICT)
			log_txn_debug(job_id(j), "job refused: %s", fgw_strerror(j->rc));
		else
			log_txn_warn(job_id(j), "job rolled back: %s (%s)", fgw_strerror(j->rc),
			             db_errmsg(st->db));
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (wexec(st, W_COMMIT) != 0)
		goto abort;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	count_commit(st, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 +
	                            (t1.tv_nsec - t0.tv_nsec) / 1000));
	atomic_fetch_add(&st->commits, 1);
	if (st->after_commit != NULL)
		st->after_commit(st->db, st->after_commit_ctx);
	/* A batch that committed with no job failing for the storage
	 * itself clears the health flag. */
	atomic_store(&st->failed_at, storage_failed ? fgw_mono_ms() : 0);
	atomic_fetch_add(&st->jobs, ok);
	atomic_fetch_add(&st->failed_jobs, (uint64_t)n - ok);
	atomic_fetch_add(&st->audit_events, events);
	return;

abort:
	/* Seen by /healthz until a batch commits again. */
	if (atomic_load(&st->last_rc) == 0)
		atomic_store(&st->last_rc, (int)db_last_fail(st->db));
	atomic_store(&st->failed_at, fgw_mono_ms());
	if (db_in_txn(st->db))
		(void)wexec(st, W_ROLLBACK);
	for (i = 0; i < n; i++)
		jobs[i]->rc = FGW_ERR_DB;
	atomic_fetch_add(&st->failed_jobs, (uint64_t)n);
	log_error("batch of %zu jobs not committed", n);
}

/* Hands each job to its waker's reactor, or runs done here (NULL waker). */
static void
deliver(struct job **jobs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];
		struct store_waker *w = j->waker;

		jobs[i] = NULL;
		j->next = NULL;
		if (w == NULL) {
			if (j->done != NULL)
				j->done(j->arg, j->rc);
			job_free(j);
			continue;
		}
		pthread_mutex_lock(&w->mu);
		if (w->dead || j->done == NULL) {
			pthread_mutex_unlock(&w->mu);
			job_free(j);
		} else {
			if (w->tail != NULL)
				w->tail->next = j;
			else
				w->head = j;
			w->tail = j;
			if (!w->armed) { /* one wake-up covers the whole list */
				w->armed = 1;
				event_active(w->ev, EV_READ, 0);
			}
			pthread_mutex_unlock(&w->mu);
		}
		waker_unref(w);
	}
}

static void *
writer_main(void *arg)
{
	struct store *st = arg;

	for (;;) {
		size_t n = 0;

		pthread_mutex_lock(&st->mu);
		while (st->head == NULL && !st->closing)
			pthread_cond_wait(&st->cv, &st->mu);
		if (st->head == NULL) { /* closing, and everything is done */
			pthread_mutex_unlock(&st->mu);
			break;
		}
		/* A group (store_group_end) is never split across two
		 * commits; st->batch has room for one past batch_max. */
		while (st->head != NULL) {
			size_t g = st->head->group_len > 0 ? st->head->group_len : 1;
			if (n > 0 && n + g > (size_t)st->batch_max)
				break;
			for (size_t k = 0; k < g && st->head != NULL; k++) {
				struct job *j = st->head;
				st->head = j->next;
				j->next = NULL;
				st->batch[n++] = j;
			}
		}
		/* Jobs are queued in order: the first is the oldest. */
		atomic_store(&st->running_since, st->batch[0]->queued_ms);
		if (st->head == NULL)
			st->tail = NULL;
		atomic_fetch_sub(&st->queue_depth, (uint64_t)n);
		pthread_mutex_unlock(&st->mu);

		atomic_store(&st->last_rc, 0);
		run_batch(st, st->batch, n);
		atomic_store(&st->running_since, 0);
		deliver(st->batch, n);
	}
	return NULL;
}

/* ---- open / close ------------------------------------------------------ */

int
store_status_present(struct db *db, int reservation, const char *status)
{
	struct db_stmt *s = NULL;
	int hit;

	if (db_prepare_once(db,
	                    reservation
	                        ? "SELECT 1 FROM reservations WHERE status = ?1 LIMIT 1"
	                        : "SELECT 1 FROM transactions WHERE status = ?1 LIMIT 1",
	                    &s) != 0)
		return 0;
	hit = db_bind_text(s, 1, status) == 0 && db_step(s) == DB_ROW;
	db_release(s);
	return hit;
}

static int readpool_start(struct store *st, int n);
static void readpool_stop(struct store *st);

static void
store_destroy(struct store *st)
{
	if (st == NULL)
		return;
	readpool_stop(st);
	audit_writer_fini(&st->audit);
	for (int i = 0; i < W_COUNT; i++)
		db_release(st->stmt[i]);
	db_close(st->db);
	if (st->cv_ok)
		pthread_cond_destroy(&st->cv);
	if (st->mu_ok)
		pthread_mutex_destroy(&st->mu);
	free(st->batch);
	free(st->path);
	if (st->dsn != NULL)
		fgw_freezero(st->dsn, strlen(st->dsn) + 1);
	free(st->dsn_file);
	free(st);
}

/* Runs a PRAGMA (or any statement) and, when want is set, checks that its
 * first column reads want. */
static int
db_pragma(struct db *db, const char *sql, const char *want)
{
	struct db_stmt *s = NULL;
	int r, rc;

	if (db_prepare_once(db, sql, &s) != FGW_OK) {
		r = FGW_ERR_DB;
		goto out;
	}
	rc = db_step(s);
	if (rc != DB_ROW && rc != DB_DONE) {
		r = FGW_ERR_DB;
		goto out;
	}
	if (want != NULL) {
		const char *t = rc == DB_ROW ? db_col_text(s, 0) : NULL;
		if (t == NULL || strcmp(t, want) != 0) {
			r = FGW_ERR_DB;
			goto out;
		}
	}
	r = 0;
out:
	if (r != 0)
		log_error("%s: %s", sql, db_errmsg(db));
	db_release(s);
	return r;
}

/* Opens the SQLite file at path with flags (plus NOMUTEX: one thread
 * uses a connection at a time) into a cached db. */
int
store_db_open_sqlite(const char *path, int flags, int busy_ms, struct db **out)
{
	sqlite3 *h = NULL;

	*out = NULL;
	if (sqlite3_open_v2(path, &h, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		log_error("opening the database failed: %s",
		          h != NULL ? sqlite3_errmsg(h) : "out of memory");
		sqlite3_close(h);
		return FGW_ERR_DB;
	}
	sqlite3_busy_timeout(h, busy_ms);
	return db_wrap_sqlite(h, 1, out);
}

/* Creates the file owner-only if missing; SQLite gives the -wal and -shm
 * files the same mode. */
static int
create_private(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("cannot open database file: %s", strerror(errno));
		return FGW_ERR_IO;
	}
	close(fd);
	return 0;
}

/* A connection to the store's PostgreSQL database, wrapped. */
int
store_db_open_pg(const char *dsn, const char *dsn_file, bool production, struct db **out)
{
	struct pg_opts po = { .dsn = dsn, .dsn_file = dsn_file, .production = production };
	PGconn *c = NULL;
	int r;

	*out = NULL;
	if ((r = pg_connect(&po, &c)) != 0)
		return r;
	return db_wrap_pg(c, out);
}

/* The statements the writer runs on every batch, prepared once. */
static int
prepare_writer(struct store *st)
{
	char insert_sql[1024];
	int r;

	if ((r = txn_sql(0, insert_sql, sizeof(insert_sql))) != 0)
		return r;
	for (int i = 0; i < W_COUNT; i++) {
		const char *sql = i == W_TXN_INSERT ? insert_sql : writer_sql[i];
		/* PostgreSQL has no BEGIN IMMEDIATE: its writers lock rows, not
		 * the database, and the one shared order they need (the audit
		 * chain) is an advisory lock (run_batch). */
		if (i == W_BEGIN && st->backend == STORE_POSTGRESQL)
			sql = "BEGIN";
		if ((r = db_prepare_once(st->db, sql, &st->stmt[i])) != 0)
			return r;
	}
	return audit_writer_init(&st->audit, st->db, st->mac, st->mac_ctx);
}

static int
open_writer_pg(struct store *st)
{
	int r;

	if ((r = store_db_open_pg(st->dsn, st->dsn_file, st->production, &st->db)) != 0)
		return r;
	/* Instances starting at once migrate once (pg_migrate's lock). */
	if ((r = pg_migrate(db_pg(st->db))) != 0)
		return r;
	return prepare_writer(st);
}

static int
open_writer_db(struct store *st, int sync_full, long long max_pages)
{
	int r;

	if (st->backend == STORE_POSTGRESQL)
		return open_writer_pg(st);
	if ((r = create_private(st->path)) != 0)
		return r;
	if ((r = store_db_open_sqlite(st->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
	                              st->busy_ms, &st->db)) != 0)
		return r;
	if ((r = db_pragma(st->db, "PRAGMA journal_mode = WAL", "wal")) != 0 ||
	    (r = db_pragma(st->db,
	                   sync_full ? "PRAGMA synchronous = FULL"
	                             : "PRAGMA synchronous = NORMAL",
	                   NULL)) != 0 ||
	    (r = db_pragma(st->db, "PRAGMA foreign_keys = ON", NULL)) != 0 ||
	    (r = db_pragma(st->db, "PRAGMA foreign_keys", "1")) != 0 ||
	    /* Each job runs in a SAVEPOINT; its statement journal only serves
	     * ROLLBACK TO inside the open transaction, so it needs no file.
	     * On disk it cost a temp file and dozens of pwrites per
	     * transaction; durability is the WAL's, which this leaves alone. */
	    (r = db_pragma(st->db, "PRAGMA temp_store = MEMORY", NULL)) != 0)
		return r;
	if ((r = schema_migrate(db_sqlite(st->db))) != 0)
		return r;
	if (max_pages > 0) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld", max_pages);
		if ((r = db_pragma(st->db, sql, NULL)) != 0)
			return r;
	}
	return prepare_writer(st);
}

int
store_open(const struct store_opts *opts, struct store **out)
{
	struct store *st = NULL;
	sigset_t all, old;
	int r;

	if (opts == NULL || out == NULL || opts->audit_mac == NULL ||
	    (opts->backend == STORE_SQLITE &&
	     (opts->path == NULL || opts->path[0] == '\0')) ||
	    (opts->backend == STORE_POSTGRESQL &&
	     (opts->dsn == NULL) == (opts->dsn_file == NULL)) ||
	    (opts->backend != STORE_SQLITE && opts->backend != STORE_POSTGRESQL) ||
	    opts->batch_max < 1 || opts->batch_max > STORE_BATCH_LIMIT ||
	    opts->busy_timeout_ms < 0) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if (!sqlite3_threadsafe()) {
		log_error("SQLite was built without thread support");
		r = FGW_ERR_STATE;
		goto out;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL ||
	    (st->path = strdup(opts->path != NULL ? opts->path : "")) == NULL ||
	    (opts->dsn != NULL && (st->dsn = strdup(opts->dsn)) == NULL) ||
	    (opts->dsn_file != NULL && (st->dsn_file = strdup(opts->dsn_file)) == NULL) ||
	    (st->batch = calloc((size_t)opts->batch_max + STORE_GROUP_MAX,
	                        sizeof(*st->batch))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	st->backend = opts->backend;
	st->production = opts->production;
	st->batch_max = opts->batch_max;
	st->after_commit = opts->after_commit;
	st->after_commit_ctx = opts->after_commit_ctx;
	st->busy_ms = opts->busy_timeout_ms ? opts->busy_timeout_ms : STORE_BUSY_TIMEOUT_MS;
	st->mac = opts->audit_mac;
	st->mac_ctx = opts->audit_mac_ctx;
	if (pthread_mutex_init(&st->mu, NULL) != 0) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	st->mu_ok = 1;
	if (pthread_cond_init(&st->cv, NULL) != 0) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	st->cv_ok = 1;
	if ((r = open_writer_db(st, opts->sync_full, opts->max_pages)) != 0)
		goto out;
	/* After the migrations (the readers prepare their statements), and
	 * before the writer: a failure here has no writer to stop. */
	if (st->backend == STORE_POSTGRESQL &&
	    (r = readpool_start(st, opts->read_threads)) != 0) {
		log_error("cannot start the read threads: %s", fgw_strerror(r));
		goto out;
	}

	/* The writer takes no signals: they belong to the reactors. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&st->thread, NULL, writer_main, st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		log_error("cannot start the writer thread: %s", strerror(r));
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	st->thread_started = 1;
	if (st->backend == STORE_POSTGRESQL)
		log_info("store open on PostgreSQL, schema version %d, batch %d, %d read threads",
		         STORE_SCHEMA_VERSION, st->batch_max, st->nread);
	else
		log_info("store open, schema version %d, batch %d, synchronous %s",
		         STORE_SCHEMA_VERSION, st->batch_max,
		         opts->sync_full ? "FULL" : "NORMAL");
	*out = st;
	st = NULL; /* owned by the caller now */
	r = 0;
out:
	store_destroy(st);
	return r;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	pthread_mutex_lock(&st->mu);
	st->closing = 1;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
	if (st->thread_started)
		pthread_join(st->thread, NULL);
	log_info("store closed after %" PRIu64 " commits, %" PRIu64 " jobs",
	         atomic_load(&st->commits), atomic_load(&st->jobs));
	store_destroy(st);
}

/* ---- submit ------------------------------------------------------------ */

static int
enqueue(struct store *st, struct job *j)
{
	struct store_waker *w = j->waker;

	if (w != NULL && w->grouping && w->gn < STORE_GROUP_MAX &&
	    pthread_equal(w->group_thread, pthread_self())) {
		atomic_fetch_add(&w->refs, 1);
		j->queued_ms = fgw_mono_ms();
		if (w->gtail != NULL)
			w->gtail->next = j;
		else
			w->ghead = j;
		w->gtail = j;
		w->gn++;
		return 0;
	}
	pthread_mutex_lock(&st->mu);
	if (st->closing) {
		pthread_mutex_unlock(&st->mu);
		return FGW_ERR_SHUTDOWN;
	}
	if (j->waker != NULL)
		atomic_fetch_add(&j->waker->refs, 1);
	j->queued_ms = fgw_mono_ms();
	if (st->tail != NULL)
		st->tail->next = j;
	else
		st->head = j;
	st->tail = j;
	atomic_fetch_add(&st->queue_depth, 1);
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->mu);
	return 0;
}

void
store_group_begin(struct store_waker *w)
{
	if (w == NULL || w->grouping)
		return;
	w->grouping = 1;
	w->group_thread = pthread_self();
}

void
store_group_end(struct store *st, struct store_waker *w)
{
	struct job *j, *next;

	if (w == NULL || !w->grouping)
		return;
	w->grouping = 0;
	if ((j = w->ghead) == NULL)
		return;
	w->ghead = w->gtail = NULL;
	j->group_len = w->gn;
	pthread_mutex_lock(&st->mu);
	if (!st->closing) {
		if (st->tail != NULL)
			st->tail->next = j;
		else
			st->head = j;
		while (j->next != NULL)
			j = j->next;
		st->tail = j;
		atomic_fetch_add(&st->queue_depth, (uint64_t)w->gn);
		w->gn = 0;
		pthread_cond_signal(&st->cv);
		pthread_mutex_unlock(&st->mu);
		return;
	}
	pthread_mutex_unlock(&st->mu);
	/* Closing: the writer may be gone; the jobs were accepted, so each
	 * still hears that it was not committed. */
	w->gn = 0;
	for (; j != NULL; j = next) {
		next = j->next;
		j->next = NULL;
		if (j->done != NULL)
			j->done(j->arg, FGW_ERR_SHUTDOWN);
		j->waker = NULL;
		waker_unref(w);
		job_free(j);
	}
}

/* The common end of every submit function: copies the idempotent answer
 * and audit events into the job and queues it. Takes ownership of j (it
 * is freed here on failure). */
static int
job_submit(struct store *st, struct job *j, const struct store_commit *c)
{
	int r;
	if ((r = job_copy_idem(j, c->idem, c->idem_claim)) != 0 ||
	    (r = job_copy_events(j, c->audit, c->n_audit)) != 0 ||
	    (r = enqueue(st, j)) != 0) {
		job_free(j);
		return r;
	}
	return FGW_OK;
}

static int
check_row(const struct store_txn_row *row)
{
	if (!FIELD_SET(row->id) || !FIELD_SET(row->client_id) || !FIELD_SET(row->currency) ||
	    !FIELD_SET(row->status) || !txn_state_known(txn_state_of(row->status)) ||
	    row->amount < 0)
		return FGW_ERR_INVALID;
	return 0;
}

int
store_txn_create(struct store *st, struct store_waker *w, const struct store_txn_row *row,
                 const struct store_vault_entry *vault, const struct store_commit *c)
{
	struct job *j = NULL;
	int r;

	if (st == NULL || row == NULL || c == NULL) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = check_row(row)) != 0)
		goto out;
	if (vault != NULL &&
	    (!FIELD_SET(vault->token) || !FIELD_SET(vault->key_id) || vault->blob == NULL)) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = job_new(JOB_CREATE, w, c->done, c->arg, &j)) != 0)
		goto out;
	j->row = *row;
	j->row.metadata_json = NULL;
	j->row.next_action_json = NULL;
	if ((r = dup_opt(row->metadata_json, &j->row.metadata_json)) != 0 ||
	    (r = dup_opt(row->next_action_json, &j->row.next_action_json)) != 0)
		goto out;
	if (vault != NULL) {
		j->vault = *vault;
		j->has_vault = 1;
		if ((r = dup_opt(vault->blob, &j->vault_blob)) != 0)
			goto out;
		j->vault.blob = j->vault_blob;
	}
	r = job_submit(st, j, c);
	j = NULL; /* owned by job_submit now */
out:
	job_free(j);
	return r;
}

int
store_txn_finish(struct store *st, struct store_waker *w,
                 const struct store_txn_update *upd, const char *purge_token,
                 const struct store_commit *c)
{
	struct job *j = NULL;
	int r;

	if (st == NULL || upd == NULL || c == NULL || !FIELD_SET(upd->id) ||
	    !FIELD_SET(upd->status) || !txn_state_known(txn_state_of(upd->status))) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = job_new(JOB_FINISH, w, c->done, c->arg, &j)) != 0)
		goto out;
	j->upd = *upd;
	j->upd.next_action_json = NULL;
	if ((r = dup_opt(upd->next_action_json, &j->upd_next)) != 0)
		goto out;
	j->upd.next_action_json = j->upd_next;
	if (purge_token != NULL) {
		if (purge_token[0] == '\0' ||
		    fgw_strlcpy(j->purge_token, purge_token, sizeof(j->purge_token)) != 0) {
			r = FGW_ERR_INVALID;
			goto out;
		}
		j->has_purge = 1;
	}
	r = job_submit(st, j, c);
	j = NULL; /* owned by job_submit now */
out:
	job_free(j);
	return r;
}

int
store_audit_append(struct store *st, struct store_waker *w, const struct store_commit *c)
{
	struct store_commit events;
	struct job *j = NULL;
	int r;

	if (st == NULL || c == NULL || c->audit == NULL || c->n_audit == 0) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = job_new(JOB_AUDIT, w, c->done, c->arg, &j)) != 0)
		goto out;
	events = *c;
	events.idem = NULL;
	r = job_submit(st, j, &events);
	j = NULL; /* owned by job_submit now */
out:
	job_free(j);
	return r;
}

int
store_submit_custom(struct store *st, struct store_waker *w, store_job_fn run, void *ctx,
                    void (*ctx_free)(void *ctx), const struct store_commit *c)
{
	return store_submit_custom_answer(st, w, run, NULL, ctx, ctx_free, c);
}

int
store_submit_custom_answer(struct store *st, struct store_waker *w, store_job_fn run,
                           store_answer_fn answer, void *ctx, void (*ctx_free)(void *ctx),
                           const struct store_commit *c)
{
	struct job *j = NULL;
	int r;

	if (st == NULL || run == NULL || c == NULL) {
		if (ctx_free != NULL)
			ctx_free(ctx);
		return FGW_ERR_INVALID;
	}
	if ((r = job_new(JOB_CUSTOM, w, c->done, c->arg, &j)) != 0) {
		if (ctx_free != NULL)
			ctx_free(ctx);
		return r;
	}
	j->custom_run = run;
	j->custom_answer = answer;
	j->custom_ctx = ctx;
	j->custom_free = ctx_free;
	return job_submit(st, j, c);
}

/* ---- readers ----------------------------------------------------------- */


int
store_reader_open(struct store *st, struct store_reader **out)
{
	struct db *db = NULL;
	int r;

	if (st == NULL || out == NULL)
		return FGW_ERR_INVALID;
	if (st->backend == STORE_SQLITE)
		return store_reader_open_file(st->path, st->mac, st->mac_ctx, st->busy_ms, out);
	/* Its own connection: a reader runs on its reactor's thread. */
	if ((r = store_db_open_pg(st->dsn, st->dsn_file, st->production, &db)) != 0)
		return r;
	return store_reader_on(db, st->mac, st->mac_ctx, st->busy_ms, out);
}

int
store_pg_schema(const struct store_opts *o, int *version, int *latest)
{
	struct db *db = NULL;
	int r;

	*version = 0;
	*latest = STORE_SCHEMA_VERSION;
	if (o == NULL || (o->dsn == NULL) == (o->dsn_file == NULL))
		return FGW_ERR_INVALID;
	if ((r = store_db_open_pg(o->dsn, o->dsn_file, o->production, &db)) != 0)
		goto out;
	if ((r = pg_schema_version(db_pg(db), version)) != 0)
		goto out;
	r = *version < 0 || *version > STORE_SCHEMA_VERSION ? FGW_ERR_STATE : FGW_OK;
out:
	db_close(db);
	return r;
}

/* A file: URI for path, every byte outside [A-Za-z0-9/._-] percent-encoded
 * (SQLite decodes them; '?', '#' and '%' would otherwise end the path). */
static int
file_uri(const char *path, const char *query, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	int k;

	if (cap < 6)
		return FGW_ERR_TOO_LARGE;
	memcpy(out, "file:", 5);
	n = 5;
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		if (n + 4 >= cap)
			return FGW_ERR_TOO_LARGE;
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || strchr("/._-", *p) != NULL) {
			out[n++] = (char)*p;
		} else {
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		}
	}
	k = snprintf(out + n, cap - n, "?%s", query);
	return k < 0 || (size_t)k >= cap - n ? FGW_ERR_TOO_LARGE : FGW_OK;
}

int
store_file_schema(const char *path, int *version, int *latest)
{
	sqlite3 *db = NULL;
	char uri[PATH_MAX * 3 + 32];
	int r;

	*version = 0;
	*latest = STORE_SCHEMA_VERSION;
	if (access(path, F_OK) != 0) {
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	/* immutable: no lock, no -wal or -shm created or written, so this is
	 * safe next to a running daemon and changes nothing on disk. It reads
	 * the main file only; every migration ends in a TRUNCATE checkpoint,
	 * so the file's header carries the version. */
	if ((r = file_uri(path, "mode=ro&immutable=1", uri, sizeof(uri))) != 0)
		goto out;
	if (sqlite3_open_v2(uri, &db,
	                    SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK ||
	    schema_version(db, version) != 0) {
		r = FGW_ERR_DB;
		goto out;
	}
	r = *version < 0 || *version > STORE_SCHEMA_VERSION ? FGW_ERR_STATE : FGW_OK;
out:
	if (db != NULL)
		sqlite3_close(db);
	return r;
}


/* ---- reads for a reactor ------------------------------------------------ */

/* A read thread: takes the oldest queued read, runs it on its own
 * connection, hands it to its waker. rrunning[i] names the waker while
 * the read runs and until it is handed over, so store_read_cancel can wait
 * for exactly the reads that may still touch what their arg points to. */
struct read_thread_arg {
	struct store *st;
	int i;
};

static void *
read_main(void *p)
{
	struct read_thread_arg *a = p;
	struct store *st = a->st;
	int i = a->i;
	struct job *j;

	free(a);
	for (;;) {
		pthread_mutex_lock(&st->rmu);
		while (st->rhead == NULL && !st->rclosing)
			pthread_cond_wait(&st->rcv, &st->rmu);
		if ((j = st->rhead) == NULL) { /* closing, nothing left */
			pthread_mutex_unlock(&st->rmu);
			break;
		}
		if ((st->rhead = j->next) == NULL)
			st->rtail = NULL;
		j->next = NULL;
		st->rrunning[i] = j->waker;
		pthread_mutex_unlock(&st->rmu);
		/* A store closing fails what is still queued: its reactors
		 * have stopped, so nobody waits for the answer. */
		j->rc = st->rclosing ? FGW_ERR_SHUTDOWN : j->read_fn(st->rreaders[i], j->arg);
		deliver(&j, 1);
		pthread_mutex_lock(&st->rmu);
		st->rrunning[i] = NULL;
		pthread_cond_broadcast(&st->ridle);
		pthread_mutex_unlock(&st->rmu);
	}
	return NULL;
}

/* PostgreSQL: n connections and their threads (n == 0: the default). */
static int
readpool_start(struct store *st, int n)
{
	sigset_t all, old;
	int r;

	if (n <= 0)
		n = STORE_READ_THREADS;
	if (n > STORE_READ_THREADS_MAX)
		return FGW_ERR_INVALID;
	if (pthread_mutex_init(&st->rmu, NULL) != 0)
		return FGW_ERR_INTERNAL;
	st->rmu_ok = 1;
	if (pthread_cond_init(&st->rcv, NULL) != 0)
		return FGW_ERR_INTERNAL;
	st->rcv_ok = 1;
	if (pthread_cond_init(&st->ridle, NULL) != 0)
		return FGW_ERR_INTERNAL;
	st->ridle_ok = 1;
	if ((st->rthreads = calloc((size_t)n, sizeof(*st->rthreads))) == NULL ||
	    (st->rreaders = calloc((size_t)n, sizeof(*st->rreaders))) == NULL ||
	    (st->rrunning = calloc((size_t)n, sizeof(*st->rrunning))) == NULL)
		return FGW_ERR_NOMEM;
	st->rcap = n;
	for (int i = 0; i < n; i++)
		if ((r = store_reader_open(st, &st->rreaders[i])) != 0)
			return r;
	/* Like the writer, the read threads take no signals. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (r = 0; st->nread < n; st->nread++) {
		struct read_thread_arg *a = malloc(sizeof(*a));
		if (a == NULL) {
			r = FGW_ERR_NOMEM;
			break;
		}
		a->st = st;
		a->i = st->nread;
		if (pthread_create(&st->rthreads[st->nread], NULL, read_main, a) != 0) {
			free(a);
			r = FGW_ERR_INTERNAL;
			break;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

/* Joins the read threads (what is queued fails FGW_ERR_SHUTDOWN first),
 * then closes their connections. */
static void
readpool_stop(struct store *st)
{
	if (st->rmu_ok && st->rcv_ok) {
		pthread_mutex_lock(&st->rmu);
		st->rclosing = 1;
		pthread_cond_broadcast(&st->rcv);
		pthread_mutex_unlock(&st->rmu);
	}
	for (int i = 0; i < st->nread; i++)
		pthread_join(st->rthreads[i], NULL);
	st->nread = 0;
	for (int i = 0; i < st->rcap && st->rreaders != NULL; i++) {
		store_reader_close(st->rreaders[i]);
		st->rreaders[i] = NULL;
	}
	free(st->rthreads);
	free(st->rreaders);
	free(st->rrunning);
	st->rthreads = NULL;
	st->rreaders = NULL;
	st->rrunning = NULL;
	st->rcap = 0;
	if (st->ridle_ok)
		pthread_cond_destroy(&st->ridle);
	if (st->rcv_ok)
		pthread_cond_destroy(&st->rcv);
	if (st->rmu_ok)
		pthread_mutex_destroy(&st->rmu);
	st->ridle_ok = st->rcv_ok = st->rmu_ok = 0;
}

int
store_read(struct store *st, struct store_waker *w, struct store_reader *here,
           store_read_fn fn, void *arg, store_done_fn done)
{
	struct job *j = NULL;
	int r;

	if (st == NULL || w == NULL || fn == NULL || done == NULL ||
	    (st->nread == 0 && here == NULL))
		return FGW_ERR_INVALID;
	if ((r = job_new(JOB_READ, w, done, arg, &j)) != 0)
		return r;
	j->read_fn = fn;
	j->queued_ms = fgw_mono_ms();
	atomic_fetch_add(&w->refs, 1); /* deliver hands it back */
	if (st->nread == 0) {
		/* SQLite: a local read, in place; done still comes from the
		 * reactor's loop, as it does on PostgreSQL. */
		j->rc = fn(here, arg);
		deliver(&j, 1);
		return 0;
	}
	pthread_mutex_lock(&st->rmu);
	if (st->rclosing) {
		pthread_mutex_unlock(&st->rmu);
		atomic_fetch_sub(&w->refs, 1); /* the caller still holds one */
		job_free(j);
		return FGW_ERR_SHUTDOWN;
	}
	if (st->rtail != NULL)
		st->rtail->next = j;
	else
		st->rhead = j;
	st->rtail = j;
	pthread_cond_signal(&st->rcv);
	pthread_mutex_unlock(&st->rmu);
	return 0;
}

void
store_read_cancel(struct store *st, struct store_waker *w)
{
	struct job *keep = NULL, *ktail = NULL, *drop = NULL, *j;
	int busy;

	if (st == NULL || w == NULL || st->nread == 0)
		return;
	pthread_mutex_lock(&st->rmu);
	while ((j = st->rhead) != NULL) {
		st->rhead = j->next;
		j->next = NULL;
		if (j->waker == w) {
			j->next = drop;
			drop = j;
		} else {
			if (ktail != NULL)
				ktail->next = j;
			else
				keep = j;
			ktail = j;
		}
	}
	st->rhead = keep;
	st->rtail = ktail;
	do {
		busy = 0;
		for (int i = 0; i < st->nread; i++)
			busy |= st->rrunning[i] == w;
		if (busy)
			pthread_cond_wait(&st->ridle, &st->rmu);
	} while (busy);
	pthread_mutex_unlock(&st->rmu);
	while ((j = drop) != NULL) { /* never run: no done */
		drop = j->next;
		waker_unref(j->waker);
		j->waker = NULL;
		j->done = NULL;
		job_free(j);
	}
}


/* ---- statistics -------------------------------------------------------- */

const uint64_t store_commit_le_us[STORE_COMMIT_BUCKETS - 1] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000,
};

static void
count_commit(struct store *st, uint64_t us)
{
	int b = 0;
	while (b < STORE_COMMIT_BUCKETS - 1 && us > store_commit_le_us[b])
		b++;
	atomic_fetch_add(&st->commit_bucket[b], 1);
	atomic_fetch_add(&st->commit_us_sum, us);
}

void
store_get_stats(struct store *st, struct store_stats *out)
{
	if (st == NULL || out == NULL)
		return;
	out->commits = atomic_load(&st->commits);
	out->jobs = atomic_load(&st->jobs);
	out->failed_jobs = atomic_load(&st->failed_jobs);
	out->queue_depth = atomic_load(&st->queue_depth);
	out->audit_events = atomic_load(&st->audit_events);
	out->commit_us_sum = atomic_load(&st->commit_us_sum);
	for (int i = 0; i < STORE_COMMIT_BUCKETS; i++)
		out->commit_bucket[i] = atomic_load(&st->commit_bucket[i]);
}

void
store_get_health(struct store *st, struct store_health *out)
{
	int64_t now = fgw_mono_ms(), oldest;

	if (st == NULL || out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	out->failed_at = atomic_load(&st->failed_at);
	out->last_rc = out->failed_at != 0 ? atomic_load(&st->last_rc) : 0;
	oldest = atomic_load(&st->running_since);
	pthread_mutex_lock(&st->mu);
	if (oldest == 0 && st->head != NULL)
		oldest = st->head->queued_ms;
	pthread_mutex_unlock(&st->mu);
	if (oldest > 0 && now > oldest)
		out->oldest_wait_ms = now - oldest;
}
