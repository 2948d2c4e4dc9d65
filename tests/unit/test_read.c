/*
 * tests/unit/test_read.c — store_read: a reactor's read, off the reactor
 * on PostgreSQL, in place on SQLite, its done always from the loop.
 *
 * Every case runs on SQLite (a store file under TMPDIR) as NAME_sqlite
 * and, when FLAIRGW_TEST_PG_DSN names a database, on PostgreSQL as
 * NAME_pg (tests/integration/test_read_pg.py starts a server and runs
 * this binary with it; the store lives in a schema of its own there).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "store/db.h"
#include "store/pg.h"
#include "store/store.h"
#include "tt.h"

#define PG_DSN_ENV "FLAIRGW_TEST_PG_DSN"
#define PG_SCHEMA "fgw_read_test"
#define N_MANY 200
#define N_SLOW 40
#define READ_THREADS 3

static int
test_mac(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	static const unsigned char key[32] = "flairgw-read-unit-test-mac-key";
	(void)ctx;
	return crypto_generichash(mac, 32, msg, len, key, sizeof(key)) == 0 ? 0
	                                                                    : FGW_ERR_CRYPTO;
}

struct fix {
	int pg;
	char dir[64];
	char path[96];
	char dsn[2048];
	struct store *st;
	struct store_reader *rd; /* the "reactor's" own reader */
	struct event_base *base;
	struct store_waker *w;
};

/* A schema of its own on the test database, empty. */
static int
pg_fresh_schema(char *dsn, size_t cap)
{
	struct pg_opts o = { .dsn = getenv(PG_DSN_ENV) };
	PGconn *c = NULL;
	struct db *db = NULL;
	int r = -1, n;

	if (o.dsn == NULL || pg_connect(&o, &c) != 0 || db_wrap_pg(c, &db) != 0)
		goto out;
	if (db_exec(db, "DROP SCHEMA IF EXISTS " PG_SCHEMA " CASCADE") != 0 ||
	    db_exec(db, "CREATE SCHEMA " PG_SCHEMA) != 0)
		goto out;
	/* Every connection of the store (writer, readers) lands in it. */
	n = snprintf(dsn, cap, "%s options='-c search_path=" PG_SCHEMA "'", o.dsn);
	r = n > 0 && (size_t)n < cap ? 0 : -1;
out:
	db_close(db);
	return r;
}

static int
fix_setup(struct fix *f, int pg)
{
	struct store_opts o = {
		.sync_full = 1,
		.batch_max = 16,
		.audit_mac = test_mac,
		.read_threads = READ_THREADS,
	};

	memset(f, 0, sizeof(*f));
	f->pg = pg;
	if (pg) {
		if (pg_fresh_schema(f->dsn, sizeof(f->dsn)) != 0)
			return -1;
		o.backend = STORE_POSTGRESQL;
		o.dsn = f->dsn;
	} else {
		const char *tmp = getenv("TMPDIR");
		snprintf(f->dir, sizeof(f->dir), "%s/fgw-read-XXXXXX",
		         tmp != NULL && *tmp != '\0' && strlen(tmp) < 40 ? tmp : "/tmp");
		if (mkdtemp(f->dir) == NULL)
			return -1;
		snprintf(f->path, sizeof(f->path), "%s/gw.db", f->dir);
		o.path = f->path;
	}
	if (store_open(&o, &f->st) != 0 || store_reader_open(f->st, &f->rd) != 0 ||
	    (f->base = event_base_new()) == NULL)
		return -1;
	return store_waker_new(f->st, f->base, &f->w);
}

static void
fix_teardown(struct fix *f)
{
	static const char *const sfx[] = { "", "-wal", "-shm", "-journal" };
	char p[128];

	store_waker_free(f->w);
	store_reader_close(f->rd);
	store_close(f->st);
	if (f->base != NULL)
		event_base_free(f->base);
	if (!f->pg && f->dir[0] != '\0') {
		for (size_t i = 0; i < 4; i++) {
			snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]);
			unlink(p);
		}
		rmdir(f->dir);
	}
}

/* Runs f's loop until *count reaches want or 10 s pass. */
static void
loop_until(struct fix *f, atomic_int *count, int want)
{
	struct timeval tv = { 0, 2000 };
	int64_t end = fgw_mono_ms() + 10000;

	while (atomic_load(count) < want && fgw_mono_ms() < end)
		event_base_loopexit(f->base, &tv), event_base_dispatch(f->base);
}

/* ---- one read ---------------------------------------------------------- */

struct one {
	pthread_t caller;
	int fn_ran;
	int fn_on_caller; /* fn ran on the caller's thread */
	int fn_rc;        /* what store_txn_get said */
	int want_rc;      /* what fn returns */
	atomic_int done;
	int done_rc;
	struct store_txn_row row;
};

static int
one_fn(struct store_reader *rd, void *arg)
{
	struct one *o = arg;

	o->fn_ran = 1;
	o->fn_on_caller = pthread_equal(pthread_self(), o->caller);
	o->fn_rc = store_txn_get(rd, NULL, "txn_none", &o->row);
	return o->want_rc;
}

static void
one_done(void *arg, int rc)
{
	struct one *o = arg;

	o->done_rc = rc;
	atomic_fetch_add(&o->done, 1);
}

/* done comes later, from the loop, with fn's return; fn read through a
 * working reader (on PostgreSQL: not on the caller's thread). */
static int
case_done_after_return(int pg)
{
	struct fix f;
	struct one o;

	memset(&o, 0, sizeof(o));
	o.caller = pthread_self();
	o.want_rc = FGW_ERR_CONFLICT;
	CHECK(fix_setup(&f, pg) == 0);
	CHECK_EQ_INT(store_read(f.st, f.w, f.rd, one_fn, &o, one_done), 0);
	CHECK_EQ_INT(atomic_load(&o.done), 0); /* never inside store_read */
	loop_until(&f, &o.done, 1);
	CHECK_EQ_INT(atomic_load(&o.done), 1);
	CHECK(o.fn_ran);
	CHECK_EQ_INT(o.fn_rc, FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(o.done_rc, FGW_ERR_CONFLICT);
	CHECK_EQ_INT(o.fn_on_caller, !pg);
end:
	fix_teardown(&f);
	return tt_fail;
}

/* Bad calls run nothing. */
static int
case_refused(int pg)
{
	struct fix f;
	struct one o;

	memset(&o, 0, sizeof(o));
	CHECK(fix_setup(&f, pg) == 0);
	CHECK_EQ_INT(store_read(f.st, f.w, f.rd, NULL, &o, one_done), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_read(f.st, f.w, f.rd, one_fn, &o, NULL), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_read(f.st, NULL, f.rd, one_fn, &o, one_done), FGW_ERR_INVALID);
	CHECK_EQ_INT(store_read(NULL, f.w, f.rd, one_fn, &o, one_done), FGW_ERR_INVALID);
	if (!pg) /* SQLite reads in place: it needs the caller's reader */
		CHECK_EQ_INT(store_read(f.st, f.w, NULL, one_fn, &o, one_done), FGW_ERR_INVALID);
	event_base_loop(f.base, EVLOOP_NONBLOCK);
	CHECK(!o.fn_ran);
	CHECK_EQ_INT(atomic_load(&o.done), 0);
end:
	fix_teardown(&f);
	return tt_fail;
}

/* ---- many reads -------------------------------------------------------- */

struct many {
	atomic_int ran;
	atomic_int done;
	atomic_int running; /* fn in progress now */
	atomic_int max_running;
	int per_done[N_MANY];
	int slow_us;
	int idx[N_MANY];
};

static struct many *many_of; /* the one in use (fn gets &idx[i]) */

static int
many_fn(struct store_reader *rd, void *arg)
{
	int i = *(int *)arg, now;
	struct store_txn_row row;

	(void)i;
	now = atomic_fetch_add(&many_of->running, 1) + 1;
	for (int m = atomic_load(&many_of->max_running); now > m;)
		if (atomic_compare_exchange_weak(&many_of->max_running, &m, now))
			break;
	atomic_fetch_add(&many_of->ran, 1);
	(void)store_txn_get(rd, NULL, "txn_none", &row);
	if (many_of->slow_us > 0)
		usleep((useconds_t)many_of->slow_us);
	atomic_fetch_sub(&many_of->running, 1);
	return 0;
}

static void
many_done(void *arg, int rc)
{
	int i = *(int *)arg;

	(void)rc;
	many_of->per_done[i]++;
	atomic_fetch_add(&many_of->done, 1);
}

/* Every read's done runs exactly once; on PostgreSQL the read threads
 * run them side by side. */
static int
case_many(int pg)
{
	static struct many m;
	struct fix f;

	memset(&m, 0, sizeof(m));
	many_of = &m;
	m.slow_us = pg ? 2000 : 0;
	CHECK(fix_setup(&f, pg) == 0);
	for (int i = 0; i < N_MANY; i++) {
		m.idx[i] = i;
		CHECK_EQ_INT(store_read(f.st, f.w, f.rd, many_fn, &m.idx[i], many_done), 0);
	}
	loop_until(&f, &m.done, N_MANY);
	CHECK_EQ_INT(atomic_load(&m.done), N_MANY);
	for (int i = 0; i < N_MANY; i++)
		CHECK_EQ_INT(m.per_done[i], 1);
	if (pg)
		CHECK(atomic_load(&m.max_running) > 1);
	else
		CHECK_EQ_INT(atomic_load(&m.max_running), 1);
end:
	fix_teardown(&f);
	return tt_fail;
}

/* store_read_cancel: when it returns, no read of the waker runs, none
 * starts later, and the dropped ones never get their done. */
static int
case_cancel(int pg)
{
	static struct many m;
	struct fix f;
	int ran_at_cancel;

	memset(&m, 0, sizeof(m));
	many_of = &m;
	m.slow_us = 20000;
	CHECK(fix_setup(&f, pg) == 0);
	for (int i = 0; i < N_SLOW; i++) {
		m.idx[i] = i;
		CHECK_EQ_INT(store_read(f.st, f.w, f.rd, many_fn, &m.idx[i], many_done), 0);
	}
	if (pg)
		usleep(30000); /* some are running */
	store_read_cancel(f.st, f.w);
	CHECK_EQ_INT(atomic_load(&m.running), 0);
	ran_at_cancel = atomic_load(&m.ran);
	usleep(100000);
	CHECK_EQ_INT(atomic_load(&m.ran), ran_at_cancel);
	if (pg)
		CHECK(ran_at_cancel < N_SLOW); /* some were dropped */
	else
		CHECK_EQ_INT(ran_at_cancel, N_SLOW); /* SQLite ran each in place */
	for (int k = 0; k < 5; k++)
		event_base_loop(f.base, EVLOOP_NONBLOCK);
	/* What ran is answered; what was dropped is not. */
	CHECK_EQ_INT(atomic_load(&m.done), ran_at_cancel);
end:
	fix_teardown(&f);
	return tt_fail;
}

/* Closing the store with reads queued: each still gets one done, with
 * FGW_ERR_SHUTDOWN for those that never ran; store_read refuses none
 * before. */
struct closing {
	atomic_int done, shutdown;
};

static struct closing *closing_of;

static void
closing_done(void *arg, int rc)
{
	(void)arg;
	atomic_fetch_add(&closing_of->done, 1);
	if (rc == FGW_ERR_SHUTDOWN)
		atomic_fetch_add(&closing_of->shutdown, 1);
}

static int
case_close_with_reads_queued(int pg)
{
	static struct many m;
	static struct closing c;
	struct fix f;

	memset(&m, 0, sizeof(m));
	memset(&c, 0, sizeof(c));
	many_of = &m;
	closing_of = &c;
	m.slow_us = 10000;
	CHECK(fix_setup(&f, pg) == 0);
	for (int i = 0; i < N_SLOW; i++) {
		m.idx[i] = i;
		CHECK_EQ_INT(store_read(f.st, f.w, f.rd, many_fn, &m.idx[i], closing_done), 0);
	}
	store_close(f.st);
	f.st = NULL;
	for (int k = 0; k < 5; k++)
		event_base_loop(f.base, EVLOOP_NONBLOCK);
	CHECK_EQ_INT(atomic_load(&c.done), N_SLOW);
	CHECK_EQ_INT(atomic_load(&c.done) - atomic_load(&c.shutdown), atomic_load(&m.ran));
	if (pg)
		CHECK(atomic_load(&c.shutdown) > 0);
end:
	fix_teardown(&f);
	return tt_fail;
}

#define BOTH(name)                 \
	static int name##_sqlite(void) \
	{                              \
		return case_##name(0);     \
	}                              \
	static int name##_pg(void)     \
	{                              \
		return case_##name(1);     \
	}

BOTH(done_after_return)
BOTH(refused)
BOTH(many)
BOTH(cancel)
BOTH(close_with_reads_queued)

#define CASES(name)                     \
	{ #name "_sqlite", name##_sqlite }, \
	{                                   \
#name "_pg", name##_pg          \
	}

static const struct tt_case all[] = {
	CASES(done_after_return),       CASES(refused), CASES(many), CASES(cancel),
	CASES(close_with_reads_queued), { NULL, NULL },
};

int
main(int argc, char **argv)
{
	struct tt_case cases[sizeof(all) / sizeof(all[0])];
	const char *dsn = getenv(PG_DSN_ENV);
	int pg = dsn != NULL && *dsn != '\0';
	size_t i, n = 0;

	if (evthread_use_pthreads() != 0 || sodium_init() < 0)
		return 1;
	for (i = 0; all[i].name != NULL; i++) {
		size_t len = strlen(all[i].name);
		if (!pg && len > 3 && strcmp(all[i].name + len - 3, "_pg") == 0)
			continue;
		cases[n++] = all[i];
	}
	cases[n] = (struct tt_case){ NULL, NULL };
	return tt_run(cases, argc, argv);
}
