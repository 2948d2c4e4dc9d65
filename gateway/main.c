/*
 * gateway/main.c — flairgw: configuration, keys, store, reactors, signals.
 *
 * Start-up order matters: allocator hooks and libevent threading come
 * before any event_base; keys before the store (the audit chain is keyed);
 * the store before the reactors (they hold wakers and readers). Shutdown
 * runs the same list backwards, after the reactors have drained, except
 * the main loop's waker and event_base: they outlive the store, whose
 * writer delivers to them until it has drained. The start-up steps are
 * in gateway/startup.c, which `--check` runs too.
 */
#define LOG_MODULE "main"

#include <fcntl.h>
#include <stdatomic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/jwt.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/tls.h"
#include "crypto/wipealloc.h"
#include "gateway/backup.h"
#include "gateway/browser.h"
#include "gateway/gateway.h"
#include "gateway/idem.h"
#include "gateway/refusals.h"
#include "store/methods.h"
#include "gateway/resv.h"
#include "gateway/mail.h"
#include "pipeline/notify.h"
#include "gateway/sdnotify.h"
#include "gateway/startup.h"
#include "gateway/web.h"
#include "gateway/webhooks.h"
#include "pipeline/events.h"
#include "pipeline/risk.h"
#include "pipeline/audit_emit.h"
#include "store/store.h"
#include "store/txn_recent.h"
#include "pipeline/velsync.h"

/* What the logs and the audit trail name as the store: the SQLite file,
 * or "postgresql" (never the connection string, which may hold the
 * password). */
static const char *
store_name(const struct fgw_config *cfg)
{
	return strcmp(cfg->store_backend, "postgresql") == 0 ? "postgresql" : cfg->database;
}

static struct gateway gw;
static struct store_waker *main_waker; /* the main loop's, for audit events */

/* Rules and lists: compiled from scratch; a file with any error is
 * refused whole and the old set keeps running. Audited either way. */
static void
reload_rules(void)
{
	struct fgw_why rerr;
	struct store_audit audit;
	char msg[640];
	char *details = NULL;
	cJSON *o = NULL;
	size_t n = 0;
	int r;

	if (!gw.risk.up)
		return;
	r = risk_reload(&gw.risk, &rerr, &n);
	if (r != 0) {
		fgw_why_format(&rerr, msg, sizeof(msg));
		log_error("SIGHUP: rules not reloaded, the old set keeps running: %s", msg);
	} else {
		snprintf(msg, sizeof(msg), "%zu rules", n);
		log_info("SIGHUP: rules reloaded from %s: %s", gw.risk.rules_file, msg);
	}
	if ((o = cJSON_CreateObject()) != NULL &&
	    cJSON_AddStringToObject(o, "what", "rules") != NULL &&
	    cJSON_AddStringToObject(o, r != 0 ? "error" : "loaded", msg) != NULL)
		details = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	audit = (struct store_audit){ "system",
		                          "SIGHUP",
		                          "config.reload",
		                          gw.risk.rules_file,
		                          r != 0 ? "failure" : "success",
		                          details };
	if ((r = store_audit_append(gw.store, NULL,
	                            &(struct store_commit){ .audit = &audit,
	                                                    .n_audit = 1 })) != 0)
		log_error("SIGHUP: reload not audited: %s", fgw_strerror(r));
	free(details);
}

/* SIGHUP: pick up keys rotated by flairctl and a changed JWKS file. A
 * file that fails its checks is refused and the old set keeps running. */
static void
reload(void)
{
	struct fgw_why why = { 0 }, jwhy = { 0 };
	int r;
	if ((r = keyring_reload(gw.kr, &why)) != 0)
		log_error("SIGHUP: key ring not reloaded: %s", why.msg);
	else
		log_info("SIGHUP: key ring reloaded");
	audit_emit(gw.store, main_waker, "system", "local", "keyring.reload",
	           gw.ring != NULL ? "key_ring" : gw.cfg.keys_dir,
	           r == 0 ? "success" : "failure",
	           r == 0 ? "{\"what\":\"keyring\"}"
	                  : "{\"what\":\"keyring\",\"error\":\"refused\"}");
	if (gw.jwt != NULL && gw.cfg.jwt_jwks_file[0] != '\0') {
		r = jwt_verifier_reload_jwks(gw.jwt, &jwhy);
		if (r != 0)
			log_error("SIGHUP: JWKS not reloaded: %s", jwhy.msg);
		else
			log_info("SIGHUP: JWKS reloaded");
		audit_emit(gw.store, main_waker, "system", "local", "jwks.reload",
		           gw.cfg.jwt_jwks_file, r == 0 ? "success" : "failure",
		           r == 0 ? "{\"what\":\"jwks\"}"
		                  : "{\"what\":\"jwks\",\"error\":\"refused\"}");
	}
	reload_rules();
}

static int
replay_row(void *ctx, const struct store_txn_row *row)
{
	/* A row that does not fit (a negative amount) is skipped, not fatal. */
	(void)risk_replay_row(ctx, row);
	return 0;
}

/* Other instances' attempts (pipeline/velsync.h): read every
 * velocity_refresh_ms through store_read with the main loop's waker. On
 * PostgreSQL the read runs on a store read thread, so neither its round
 * trip nor a lock on the transactions table holds up the main loop (its
 * signals, the systemd watchdog, key ring reloads); on SQLite it runs in
 * place on velsync_rd, a reader of the main thread. One read at a time:
 * velsync_refresh runs on one thread at a time, and a tick that finds the
 * last read still out skips its turn. 0: off (one instance). */
static struct store_reader *velsync_rd;
static int velsync_failing, velsync_reading;

static long long
velocity_refresh_ms(const struct fgw_config *cfg)
{
	if (cfg->velocity_refresh_ms >= 0)
		return cfg->velocity_refresh_ms;
	return strcmp(cfg->store_backend, "postgresql") == 0 ? 1000 : 0;
}

/* The reads run in place on SQLite, which needs a reader of this thread. */
static int
velsync_needs_reader(const struct fgw_config *cfg)
{
	return strcmp(cfg->store_backend, "postgresql") != 0;
}

/* On a store read thread (PostgreSQL) or in place (SQLite): the velocity
 * sync and the velocity store, both thread-safe, and nothing of the main
 * loop's. */
static int
velocity_read(struct store_reader *rd, void *arg)
{
	struct gateway *g = arg;

	return velsync_refresh(g->velsync, rd, fgw_now_ms(), NULL, NULL);
}

static void
velocity_read_done(void *arg, int r)
{
	(void)arg;
	velsync_reading = 0;
	/* A connection that broke is opened again on the next tick. */
	if (r != 0 && velsync_rd != NULL) {
		store_reader_close(velsync_rd);
		velsync_rd = NULL;
	}
	/* Said once when it starts failing and once when it recovers. */
	if (r != 0 && !velsync_failing)
		log_error("velocity: other instances' attempts not read: %s (counts here lag "
		          "until it recovers)",
		          fgw_strerror(r));
	else if (r == 0 && velsync_failing)
		log_info("velocity: other instances' attempts read again");
	velsync_failing = r != 0;
}

static void
velocity_tick(evutil_socket_t fd, short what, void *arg)
{
	int r;
	(void)fd;
	(void)what;
	(void)arg;
	if (velsync_reading)
		return;
	if (velsync_rd == NULL && velsync_needs_reader(&gw.cfg) &&
	    (r = store_reader_open(gw.store, &velsync_rd)) != 0) {
		velocity_read_done(NULL, r);
		return;
	}
	if ((r = store_read(gw.store, main_waker, velsync_rd, velocity_read, &gw,
	                    velocity_read_done)) != 0) {
		velocity_read_done(NULL, r);
		return;
	}
	velsync_reading = 1;
}

/* Velocity limits survive a restart: the counters are rebuilt from the
 * transactions recorded within the longest window the store keeps. With
 * other instances on the store, that is the first refresh of the sync,
 * which goes on adding their attempts (a row may commit up to the lag
 * after the time it is stamped with and still be counted). */
static int
replay_velocity(struct gateway *g)
{
	struct store_reader *rd = NULL;
	long long every = velocity_refresh_ms(&g->cfg);
	int64_t since, n = 0;
	int r;
	if (!g->risk.up)
		return FGW_OK;
	if (every > 0) {
		int64_t lag = every * 2 > 5000 ? every * 2 : 5000;
		if ((r = velsync_new(&g->risk, lag, &g->velsync)) != 0)
			return r;
		/* Before the loops run: a read in place is the start-up's. */
		if ((r = store_reader_open(g->store, &rd)) != 0)
			return r;
		if ((r = velsync_refresh(g->velsync, rd, fgw_now_ms(), &n, NULL)) != 0 ||
		    !velsync_needs_reader(&g->cfg))
			store_reader_close(rd);
		else
			velsync_rd = rd; /* the ticks' on SQLite */
		if (r != 0)
			return r;
		g->risk.sync = g->velsync;
		log_info("velocity: %lld recent transactions replayed; other instances' "
		         "attempts added every %lld ms",
		         (long long)n, every);
		return FGW_OK;
	}
	since = fgw_now_ms() - velocity_retention_ms(g->risk.velocity);
	if ((r = store_reader_open(g->store, &rd)) != 0)
		return r;
	r = store_txn_recent(rd, since, 0, replay_row, &g->risk, &n);
	store_reader_close(rd);
	if (r == 0)
		log_info("velocity: %lld recent transactions replayed", (long long)n);
	return r;
}

static void
remove_pid_file(struct gateway *g)
{
	if (g->pid_fd < 0)
		return;
	/* Unlinked while still locked, so flairctl never signals a
	 * successor through our file. */
	unlink(g->cfg.pid_file);
	close(g->pid_fd);
	g->pid_fd = -1;
}

/* flairctl rotates keys by rewriting keyring.json atomically (a new
 * inode); the daemon notices on a timer so rotation and rewrap need no
 * signal. The check is a stat() on the main thread, never a reactor. */
static struct stat keyring_seen;

static void
keyring_stat(struct stat *st)
{
	char path[600];
	memset(st, 0, sizeof(*st));
	if (snprintf(path, sizeof(path), "%s/keyring.json", gw.cfg.keys_dir) <
	    (int)sizeof(path))
		(void)stat(path, st);
}

/* The ring in the PostgreSQL store: its newest generation is polled
 * (one indexed MAX per tick), and a change is loaded and checked as a
 * changed file is. A database that cannot be reached is said once. */
static int ring_poll_failing;

static void
keyring_poll(void)
{
	struct fgw_why why = { 0 };
	int reloaded = 0, r;
	r = keyring_refresh(gw.kr, &reloaded, &why);
	if (r == FGW_ERR_DB || r == FGW_ERR_UNAVAILABLE) {
		if (!ring_poll_failing)
			log_error("key ring: %s", why.msg[0] ? why.msg : fgw_strerror(r));
		ring_poll_failing = 1;
		return;
	}
	if (ring_poll_failing && r == 0)
		log_info("key ring: the database answers again");
	ring_poll_failing = 0;
	if (r == 0 && !reloaded)
		return;
	if (r != 0)
		log_error("key ring changed in the database but not reloaded: %s",
		          why.msg[0] ? why.msg : fgw_strerror(r));
	else
		log_info("key ring changed in the database: reloaded");
	audit_emit(gw.store, main_waker, "system", "local", "keyring.reload", "key_ring",
	           r == 0 ? "success" : "failure",
	           r == 0
	               ? "{\"what\":\"keyring\",\"trigger\":\"watch\"}"
	               : "{\"what\":\"keyring\",\"trigger\":\"watch\",\"error\":\"refused\"}");
}

static void
keyring_watch(evutil_socket_t fd, short what, void *arg)
{
	struct stat now;
	struct fgw_why why = { 0 };
	int r;
	(void)fd;
	(void)what;
	(void)arg;
	if (gw.ring != NULL) {
		keyring_poll();
		return;
	}
	keyring_stat(&now);
	if (now.st_ino == keyring_seen.st_ino && now.st_size == keyring_seen.st_size &&
	    now.st_mtim.tv_sec == keyring_seen.st_mtim.tv_sec &&
	    now.st_mtim.tv_nsec == keyring_seen.st_mtim.tv_nsec)
		return;
	if ((r = keyring_reload(gw.kr, &why)) != 0) {
		log_error("key ring changed on disk but not reloaded: %s", why.msg);
	} else {
		log_info("key ring changed on disk: reloaded");
	}
	audit_emit(
	    gw.store, main_waker, "system", "local", "keyring.reload",
	    gw.ring != NULL ? "key_ring" : gw.cfg.keys_dir, r == 0 ? "success" : "failure",
	    r == 0 ? "{\"what\":\"keyring\",\"trigger\":\"watch\"}"
	           : "{\"what\":\"keyring\",\"trigger\":\"watch\",\"error\":\"refused\"}");
	/* Remember it either way: a bad file is reported once, not every tick. */
	keyring_seen = now;
}

static atomic_int sweep_busy;

static void
sweep_done(void *arg, int rc)
{
	int64_t *purged = arg;
	if (rc != 0)
		log_error("vault sweep failed: %s", fgw_strerror(rc));
	else if (*purged > 0)
		log_info("vault sweep: %lld expired one-time card(s) purged", (long long)*purged);
	free(purged);
	atomic_store(&sweep_busy, 0);
}

/* Expired one-time cards go through a store job (the writer thread does
 * the DELETE); done runs on the writer thread (no waker), so it only logs. */
static void
vault_sweep(evutil_socket_t fd, short what, void *arg)
{
	int64_t *purged;
	(void)fd;
	(void)what;
	(void)arg;
	if (atomic_exchange(&sweep_busy, 1))
		return;
	if ((purged = calloc(1, sizeof(*purged))) == NULL ||
	    store_vault_sweep(gw.store, NULL, fgw_now_ms(), purged, sweep_done, purged) !=
	        0) {
		free(purged);
		atomic_store(&sweep_busy, 0);
	}
}

/* Summaries of refusals that were counted instead of audited one by one
 * (gateway/refusals.h): one audit row per event type and source network
 * per window that had any. force: at shutdown, the running window too. */
static void
refusals_flush(int force)
{
	struct refusal_summary sum[16];
	char details[256];
	size_t n;

	do {
		n = refusals_drain(gw.refusals, fgw_mono_ms(), force, sum, 16);
		for (size_t i = 0; i < n; i++) {
			snprintf(details, sizeof(details),
			         "{\"reason\":\"rate limited\",\"source\":\"%s\",\"suppressed\":%llu,"
			         "\"windowMs\":%lld}",
			         sum[i].bucket, (unsigned long long)sum[i].suppressed,
			         (long long)sum[i].window_ms);
			audit_emit(gw.store, main_waker, "anonymous", sum[i].bucket,
			           sum[i].event_type, "", "failure", details);
		}
	} while (n == 16);
}

static void
refusals_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	refusals_flush(0);
}

static pthread_mutex_t started_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t started_cv = PTHREAD_COND_INITIALIZER;
static int started_flag;

/* Runs on the writer thread after the COMMIT (no waker). */
static void
started_done(void *arg, int rc)
{
	(void)arg;
	if (rc != 0)
		log_error("config.loaded audit event not recorded: %s", fgw_strerror(rc));
	pthread_mutex_lock(&started_mu);
	started_flag = 1;
	pthread_cond_signal(&started_cv);
	pthread_mutex_unlock(&started_mu);
}

/* config.loaded: what the daemon runs with (no secrets, no key paths). */
static void
config_event(struct gateway *g)
{
	struct store_audit a;
	cJSON *o = cJSON_CreateObject();
	char *details = NULL;
	if (o != NULL && cJSON_AddStringToObject(o, "listen", g->cfg.listen) &&
	    cJSON_AddStringToObject(o, "mode", g->cfg.mode) &&
	    cJSON_AddNumberToObject(o, "workers", g->n_rx) &&
	    cJSON_AddStringToObject(o, "processor", g->procs[0].cfg.name) &&
	    cJSON_AddStringToObject(o, "rulesFile", g->cfg.rules_file) &&
	    cJSON_AddNumberToObject(o, "apiClients", g->cfg.n_api_keys) &&
	    cJSON_AddNumberToObject(o, "backupIntervalS", (double)g->cfg.backup_interval_s) &&
	    cJSON_AddNumberToObject(o, "checkpointIntervalS",
	                            (double)g->cfg.audit_checkpoint_interval_s))
		details = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	a = (struct store_audit){ "system",  "local", "config.loaded", store_name(&g->cfg),
		                      "success", details };
	/* Committed before the first request is served, so the event comes
	 * before anything the configuration decides. The main thread is not a
	 * reactor: waiting here blocks no request. */
	pthread_mutex_lock(&started_mu);
	if (store_audit_append(g->store, NULL,
	                       &(struct store_commit){
	                           .audit = &a, .n_audit = 1, .done = started_done }) == 0)
		while (!started_flag)
			pthread_cond_wait(&started_cv, &started_mu);
	else
		log_error("config.loaded audit event not queued");
	pthread_mutex_unlock(&started_mu);
	free(details);
}

/* The systemd watchdog. Every half interval the main loop asks each
 * reactor to answer (an event made active on its base) and tells systemd
 * WATCHDOG=1 only if every reactor answered the previous ask: a reactor
 * stuck in a loop or a lock gets the service restarted, not kept alive
 * by a main thread that only waits for signals. */
static struct {
	struct event *tick;
	struct event **ask;   /* one per reactor, on that reactor's base */
	atomic_int *answered; /* set by the reactor, cleared by the tick */
	int n;
	int64_t last_warn_ms;
} wd;

static void
wd_answer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	atomic_store((atomic_int *)arg, 1);
}

static void
wd_tick(evutil_socket_t fd, short what, void *arg)
{
	int all = 1;
	(void)fd;
	(void)what;
	(void)arg;
	for (int i = 0; i < wd.n; i++)
		all &= atomic_exchange(&wd.answered[i], 0);
	if (all) {
		(void)sdnotify("WATCHDOG=1");
	} else if (fgw_now_ms() - wd.last_warn_ms > 60000) {
		wd.last_warn_ms = fgw_now_ms();
		log_error("watchdog: a reactor did not answer within half the watchdog interval; "
		          "not telling systemd we are alive");
	}
	for (int i = 0; i < wd.n; i++)
		event_active(wd.ask[i], EV_TIMEOUT, 0);
}

static void
wd_stop(void)
{
	if (wd.tick != NULL)
		event_free(wd.tick);
	for (int i = 0; wd.ask != NULL && i < wd.n; i++)
		if (wd.ask[i] != NULL)
			event_free(wd.ask[i]);
	free(wd.ask);
	free(wd.answered);
	memset(&wd, 0, sizeof(wd));
}

/* Starts the watchdog when systemd asks for one (WatchdogSec=). */
static int
wd_start(struct event_base *base)
{
	uint64_t usec = sdnotify_watchdog_usec();
	struct timeval tv;
	if (usec == 0)
		return FGW_OK;
	wd.n = gw.n_rx;
	if ((wd.ask = calloc((size_t)wd.n, sizeof(*wd.ask))) == NULL ||
	    (wd.answered = calloc((size_t)wd.n, sizeof(*wd.answered))) == NULL)
		goto fail;
	for (int i = 0; i < wd.n; i++) {
		atomic_init(&wd.answered[i], 1); /* the first tick needs no answer */
		if ((wd.ask[i] = event_new(gw.rx[i].base, -1, 0, wd_answer, &wd.answered[i])) ==
		    NULL)
			goto fail;
	}
	usec /= 2;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	if ((wd.tick = event_new(base, -1, EV_PERSIST, wd_tick, NULL)) == NULL ||
	    event_add(wd.tick, &tv) != 0)
		goto fail;
	log_info("systemd watchdog: telling it every %llu ms",
	         (unsigned long long)(usec / 1000));
	return FGW_OK;
fail:
	wd_stop();
	return FGW_ERR_NOMEM;
}

static int
open_log_file(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* SIGUSR1 (logrotate's postrotate): log_file is opened again under its
 * name and put in place of the old descriptor with dup3, which is atomic,
 * so a reactor thread writing a line at that moment writes it whole to
 * one file or the other. The old file is kept when the new one cannot be
 * opened. */
static void
reopen_log(void)
{
	int fd;
	if (gw.cfg.log_file[0] == '\0' || gw.log_fd < 0)
		return;
	if ((fd = open_log_file(gw.cfg.log_file)) < 0) {
		log_error("SIGUSR1: cannot reopen log_file %s; logging on to the old file",
		          gw.cfg.log_file);
		return;
	}
	if (dup3(fd, gw.log_fd, O_CLOEXEC) < 0)
		log_error("SIGUSR1: cannot reopen log_file %s; logging on to the old file",
		          gw.cfg.log_file);
	close(fd);
	log_info("SIGUSR1: log_file reopened");
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct event_base *base = arg;
	(void)what;
	if (sig == SIGHUP) {
		reload();
		return;
	}
	if (sig == SIGUSR1) {
		reopen_log();
		server_reopen_access_log(&gw);
		return;
	}
	log_info("signal %d: stopping (waiting up to %lld ms for in-flight transactions)",
	         (int)sig, gw.cfg.shutdown_timeout_ms);
	(void)sdnotify("STOPPING=1\nSTATUS=draining in-flight transactions");
	event_base_loopbreak(base);
}

static int
setup_logging(const struct fgw_config *cfg)
{
	int level = LOG_LVL_INFO, fd = 2;
	log_level_parse(cfg->log_level, &level);
	gw.log_fd = -1;
	if (cfg->log_file[0] != '\0') {
		fd = gw.log_fd = open_log_file(cfg->log_file);
		if (fd < 0) {
			fprintf(stderr, "flairgw: cannot open log_file %s\n", cfg->log_file);
			return FGW_ERR_IO;
		}
	}
	log_setup(level, strcmp(cfg->log_format, "json") == 0, fd);
	return FGW_OK;
}

/* Start-up problems: on standard error, and in the log once it is open. */
static int logging_up;

static void
start_report(void *arg, int is_problem, const char *msg)
{
	(void)arg;
	if (!is_problem) {
		if (logging_up)
			log_info("%s", msg);
		return;
	}
	fprintf(stderr, "flairgw: %s\n", msg);
	if (logging_up)
		log_error("%s", msg);
}

/* --check: every problem on standard error, notes too, and a verdict. */
static void
check_report_print(void *arg, int is_problem, const char *msg)
{
	(void)arg;
	fprintf(stderr, "flairgw: %s%s\n", is_problem ? "" : "note: ", msg);
}

static int
run_check(const struct fgw_config *cfg)
{
	struct check_report rep = { 0, 0, check_report_print, NULL };
	/* Warnings of the steps on standard error; nothing is opened. */
	log_setup(LOG_LVL_WARN, 0, 2);
	if (gateway_check(cfg, &rep) != 0) {
		fprintf(stderr, "flairgw: configuration check failed: %d problem%s\n",
		        rep.problems, rep.problems == 1 ? "" : "s");
		return 1;
	}
	printf("flairgw: configuration OK\n");
	return 0;
}

int
main(int argc, char **argv)
{
	struct check_report rep = { 0, 0, start_report, NULL };
	struct event_base *sigbase = NULL;
	struct event *sigs[4] = { NULL, NULL, NULL, NULL };
	struct event *timers[4] = { NULL, NULL, NULL, NULL };
	struct backup_sched *sched = NULL;
	struct fgw_why why = { 0 };
	char err[1024];
	int help = 0, check = 0, r, code = 1;

	gw.pid_fd = -1;
	gw.data_dir_lock = -1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
			printf("flairgw %s\n", FGW_VERSION);
			return 0;
		}
		/* make install builds flairgw.conf(5) from the directive table */
		if (strcmp(argv[i], "--directives-mdoc") == 0) {
			config_print_mdoc(stdout);
			return 0;
		}
		/* --check (-t, as nginx): taken out, the rest are directives. A
		 * directive's value is never "--check" (they do not start with --). */
		if (strcmp(argv[i], "--check") == 0 || strcmp(argv[i], "-t") == 0) {
			check = 1;
			memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof(*argv));
			argc--;
			i--;
		}
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "flairgw: libsodium failed to initialise\n");
		return 1;
	}
	config_defaults(&gw.cfg);
	if (config_from_args(&gw.cfg, argc, argv, &help, &why) != 0) {
		fprintf(stderr, "flairgw: %s\n", fgw_why_format(&why, err, sizeof(err)));
		return 2;
	}
	if (help) {
		config_print_help(stdout);
		return 0;
	}
	if (check)
		return run_check(&gw.cfg);
	if (startup_config(&gw.cfg, &rep) != 0)
		return 2;
	if (setup_logging(&gw.cfg) != 0)
		return 2;
	logging_up = 1;

	umask(077);
	signal(SIGPIPE, SIG_IGN);
	if (secmem_harden_process() != 0)
		log_warn("could not disable core dumps");
	wipealloc_install();
	evthread_use_pthreads();
	if (wipealloc_curl_global_init() != 0) {
		fprintf(stderr, "flairgw: libcurl failed to initialise\n");
		return 1;
	}
	gw.started_at = fgw_now_ms();

	/* The steps gateway_check runs (gateway/startup.c), here for real:
	 * the first problem stops the start. */
	if (startup_data_dir(&gw, STARTUP_RUN, &rep) != 0 ||
	    startup_keyring(&gw, STARTUP_RUN, &rep) != 0 ||
	    startup_processors(&gw, &rep) != 0 || startup_timing(&gw, &rep) != 0 ||
	    startup_jwt(&gw, &rep) != 0 || startup_admin_token(&gw, &rep) != 0)
		goto out;
	if (refusals_new(gw.cfg.audit_refusal_window_s * 1000,
	                 (unsigned)gw.cfg.audit_refusal_burst, &gw.refusals) != 0 ||
	    ratelimit_new((size_t)gw.cfg.rate_table_size, &gw.rl) != 0) {
		check_problem(&rep, "out of memory");
		goto out;
	}
	if (web_setup(&gw, &why) != 0) {
		check_problem(&rep, "%s", fgw_why_format(&why, err, sizeof(err)));
		goto out;
	}
	if (startup_webhooks(&gw, STARTUP_RUN, &rep) != 0)
		goto out;
	if (mail_setup(&gw, &gw.mail, &why) != 0) {
		check_problem(&rep, "%s", fgw_why_format(&why, err, sizeof(err)));
		goto out;
	}
	if (startup_pipeline(&gw, &rep) != 0 || startup_rules(&gw, &rep) != 0)
		goto out;
	if (startup_pid_file(&gw, STARTUP_RUN, &rep) != 0 ||
	    startup_database(&gw, STARTUP_RUN, &rep) != 0)
		goto out;
	if (idem_table_new(&gw.idem) != 0)
		goto out;
	if (startup_tls(&gw, &rep) != 0)
		goto out;
	if ((r = replay_velocity(&gw)) != 0) {
		log_error("velocity replay from %s failed: %s", store_name(&gw.cfg),
		          fgw_strerror(r));
		goto out;
	}
	if (gw.risk.up && (r = txn_events_subscribe(risk_on_txn_event, &gw.risk)) != 0) {
		log_error("rules: cannot hear processor declines: %s", fgw_strerror(r));
		goto out;
	}
	if (startup_slots(&gw, STARTUP_RUN, &rep) != 0)
		goto out;
	gw.n_rx = gw.cfg.workers > 0 ? (int)gw.cfg.workers
	                             : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (gw.n_rx < 1)
		gw.n_rx = 1;

	if ((sigbase = event_base_new()) == NULL)
		goto out;
	sigs[0] = evsignal_new(sigbase, SIGTERM, on_signal, sigbase);
	sigs[1] = evsignal_new(sigbase, SIGINT, on_signal, sigbase);
	sigs[2] = evsignal_new(sigbase, SIGHUP, on_signal, sigbase);
	sigs[3] = evsignal_new(sigbase, SIGUSR1, on_signal, sigbase);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigs[i] == NULL || event_add(sigs[i], NULL) != 0)
			goto out;
	if (store_waker_new(gw.store, sigbase, &main_waker) != 0 ||
	    backup_sched_start(&gw.cfg, gw.kr, gw.store, sigbase, main_waker, &sched) != 0)
		goto out;
	/* Start-up is an audited configuration event (PCI DSS 10.2.1.6/10.2.2). */
	config_event(&gw);
	if (server_start(&gw, &why) != 0) {
		fgw_why_format(&why, err, sizeof(err));
		fprintf(stderr, "flairgw: %s\n", err);
		log_error("%s", err);
		goto out;
	}
	webhooks_start(gw.wh);
	if (mail_start(gw.mail) != 0)
		goto out;
	keyring_stat(&keyring_seen);
	if (gw.cfg.keyring_watch_ms > 0) {
		struct timeval tv = { gw.cfg.keyring_watch_ms / 1000,
			                  (gw.cfg.keyring_watch_ms % 1000) * 1000 };
		if ((timers[0] = event_new(sigbase, -1, EV_PERSIST, keyring_watch, NULL)) ==
		        NULL ||
		    event_add(timers[0], &tv) != 0)
			log_warn("key ring watch not started: rotations need SIGHUP");
	}
	{
		struct timeval tv = { gw.cfg.vault_sweep_interval_s, 0 };
		if ((timers[1] = event_new(sigbase, -1, EV_PERSIST, vault_sweep, NULL)) == NULL ||
		    event_add(timers[1], &tv) != 0)
			log_warn("vault sweep timer not started");
	}
	{
		struct timeval tv = { 0, 250000 };
		if ((timers[2] = event_new(sigbase, -1, EV_PERSIST, refusals_tick, NULL)) ==
		        NULL ||
		    event_add(timers[2], &tv) != 0)
			log_warn("refusal summaries are written at shutdown only");
	}
	if (gw.velsync != NULL) {
		long long every = velocity_refresh_ms(&gw.cfg);
		struct timeval tv = { every / 1000, (every % 1000) * 1000 };
		if ((timers[3] = event_new(sigbase, -1, EV_PERSIST, velocity_tick, NULL)) ==
		        NULL ||
		    event_add(timers[3], &tv) != 0)
			log_warn("velocity: other instances' attempts are not read");
	}
	log_info("listening on %s (%s) with %d reactor%s, processor %s at %s, store %s",
	         gw.cfg.listen, gw.tls ? "TLS 1.2+" : "plain HTTP", gw.n_rx,
	         gw.n_rx == 1 ? "" : "s", gw.procs[0].cfg.name, gw.procs[0].cfg.base_url,
	         store_name(&gw.cfg));
	for (int i = 1; i < gw.n_procs; i++)
		log_info("failover processor %d: %s (%s) at %s", i, gw.procs[i].cfg.name,
		         gw.procs[i].cfg.type, gw.procs[i].cfg.base_url);
	if (wd_start(sigbase) != 0)
		log_warn("systemd watchdog not started");
	if (sdnotify("READY=1\nSTATUS=serving") < 0)
		log_warn(
		    "NOTIFY_SOCKET is set but the service manager could not be told we are ready");
	event_base_dispatch(sigbase);
	wd_stop();
	server_stop(&gw);
	/* Its attempt records are store jobs: before the store closes. */
	mail_free(gw.mail);
	gw.mail = NULL;
	refusals_flush(1);
	/* Before the last checkpoint, so the checkpoint covers it. */
	audit_emit(gw.store, NULL, "system", "local", "service.stopped", store_name(&gw.cfg),
	           "success", NULL);
	backup_sched_stop(sched);
	sched = NULL;
	code = 0;
	log_info("stopped");
out:
	wd_stop();
	backup_sched_stop(sched);
	/* Every thread that may queue mail has stopped. */
	notify_reset();
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	for (int i = 0; i < 4; i++)
		if (timers[i] != NULL)
			event_free(timers[i]);
	/* The reactors are stopped: nothing notes attempts any more. A
	 * refresh still running on a store read thread is waited for. */
	gw.risk.sync = NULL;
	if (gw.store != NULL && main_waker != NULL)
		store_read_cancel(gw.store, main_waker);
	velsync_free(gw.velsync);
	gw.velsync = NULL;
	store_reader_close(velsync_rd);
	velsync_rd = NULL;
	mail_free(gw.mail);
	/* The writer delivers to main_waker (event_active on its event) until
	 * store_close has drained it; the event goes before its base. */
	if (gw.store != NULL)
		store_close(gw.store);
	store_waker_free(main_waker);
	if (sigbase != NULL)
		event_base_free(sigbase);
	idem_table_free(gw.idem);
	remove_pid_file(&gw);
	refusals_free(gw.refusals);
	startup_release(&gw); /* rules, JWT, webhooks, processors, keys, TLS */
	ratelimit_free(gw.rl);
	web_free(&gw);
	curl_global_cleanup();
	return code;
}
