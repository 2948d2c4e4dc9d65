/*
 * gateway/main.c — flairgw: configuration, keys, store, reactors, signals.
 *
 * Start-up order matters: allocator hooks and libevent threading come
 * before any event_base; keys before the store (the audit chain is keyed);
 * the store before the reactors (they hold wakers and readers). Shutdown
 * runs the same list backwards, after the reactors have drained.
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
#include "gateway/gateway.h"
#include "gateway/idem.h"
#include "gateway/refusals.h"
#include "store/methods.h"
#include "gateway/resv.h"
#include "gateway/sdnotify.h"
#include "gateway/webhooks.h"
#include "pipeline/events.h"
#include "pipeline/risk.h"
#include "processors/generic.h"
#include "pipeline/audit_emit.h"
#include "store/store.h"
#include "store/txn_recent.h"

static struct gateway gw;
static struct store_waker *main_waker; /* the main loop's, for audit events */

/* Rules and lists: compiled from scratch; a file with any error is
 * refused whole and the old set keeps running. Audited either way. */
static void
reload_rules(void)
{
	struct rules_error rerr;
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
		rules_error_format(&rerr, msg, sizeof(msg));
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
	audit = (struct store_audit){ "system", "SIGHUP", "config.reload", gw.risk.rules_file,
		                          r != 0 ? "failure" : "success", details };
	if ((r = store_audit_append(gw.store, NULL, &audit, 1, NULL, NULL)) != 0)
		log_error("SIGHUP: reload not audited: %s", fgw_strerror(r));
	free(details);
}

/* SIGHUP: pick up keys rotated by flairctl and a changed JWKS file. A
 * file that fails its checks is refused and the old set keeps running. */
static void
reload(void)
{
	const char *why = NULL;
	char err[256];
	int r;
	if ((r = keyring_reload(gw.kr, &why)) != 0)
		log_error("SIGHUP: key ring not reloaded: %s", why ? why : fgw_strerror(r));
	else
		log_info("SIGHUP: key ring reloaded");
	audit_emit(gw.store, main_waker, "system", "local", "keyring.reload", gw.cfg.keys_dir,
	           r == 0 ? "success" : "failure",
	           r == 0 ? "{\"what\":\"keyring\"}" : "{\"what\":\"keyring\",\"error\":\"refused\"}");
	if (gw.jwt != NULL && gw.cfg.jwt_jwks_file[0] != '\0') {
		r = jwt_verifier_reload_jwks(gw.jwt, err, sizeof(err));
		if (r != 0)
			log_error("SIGHUP: JWKS not reloaded: %s", err);
		else
			log_info("SIGHUP: JWKS reloaded");
		audit_emit(gw.store, main_waker, "system", "local", "jwks.reload",
		           gw.cfg.jwt_jwks_file, r == 0 ? "success" : "failure",
		           r == 0 ? "{\"what\":\"jwks\"}" : "{\"what\":\"jwks\",\"error\":\"refused\"}");
	}
	reload_rules();
}

static int
setup_rules(struct gateway *g, char *err, size_t errlen)
{
	struct rules_error rerr;
	char msg[640];
	int r;
	if (g->cfg.rules_file[0] == '\0') {
		log_warn("no rules_file: only validation and max_amount apply, no fraud or velocity rules");
		return FGW_OK;
	}
	if ((r = risk_init(&g->risk, g->cfg.rules_file, g->cfg.mode, &rerr)) != 0) {
		snprintf(err, errlen, "rules_file: %s", rules_error_format(&rerr, msg, sizeof(msg)));
		return r;
	}
	struct rules *cur = rules_slot_get(g->risk.slot);
	log_info("rules: %zu rules from %s, mode %s", rules_count(cur), g->cfg.rules_file, g->cfg.mode);
	rules_unref(cur);
	return FGW_OK;
}

static int
replay_row(void *ctx, const struct store_txn_row *row)
{
	/* A row that does not fit (a negative amount) is skipped, not fatal. */
	(void)risk_replay_row(ctx, row);
	return 0;
}

/* Velocity limits survive a restart: the counters are rebuilt from the
 * transactions recorded within the longest window the store keeps. */
static int
replay_velocity(struct gateway *g)
{
	struct store_reader *rd = NULL;
	int64_t since, n = 0;
	int r;
	if (!g->risk.up)
		return FGW_OK;
	since = fgw_now_ms() - velocity_retention_ms(g->risk.velocity);
	if ((r = store_reader_open(g->store, &rd)) != 0)
		return r;
	r = store_txn_recent(rd, since, 0, replay_row, &g->risk, &n);
	store_reader_close(rd);
	if (r == 0)
		log_info("velocity: %lld recent transactions replayed", (long long)n);
	return r;
}

/* The pid file is locked for as long as we run, so flairctl can tell a
 * live daemon from a stale file, and two daemons cannot share data_dir. */
static int
write_pid_file(struct gateway *g, char *err, size_t errlen)
{
	char buf[32];
	int fd, n;
	if ((fd = open(g->cfg.pid_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		snprintf(err, errlen, "pid_file %s: cannot open", g->cfg.pid_file);
		return FGW_ERR_IO;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		snprintf(err, errlen, "pid_file %s is locked: another flairgw is running with it",
		         g->cfg.pid_file);
		close(fd);
		return FGW_ERR_EXISTS;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || n < 0 || write(fd, buf, (size_t)n) != n) {
		snprintf(err, errlen, "pid_file %s: cannot write", g->cfg.pid_file);
		close(fd);
		return FGW_ERR_IO;
	}
	g->pid_fd = fd;
	return FGW_OK;
}

/* Two daemons on one data_dir would each run a store writer, an
 * idempotency table and velocity counters of their own over one database:
 * a lock held for the life of the process, whatever pid_file says. The
 * file is never removed (removing a lock file lets a third process lock a
 * new inode while the second still holds the old one). */
static int
lock_data_dir(struct gateway *g, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int fd, n = snprintf(path, sizeof(path), "%s/flairgw.lock", g->cfg.data_dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		snprintf(err, errlen, "data_dir %s: path too long", g->cfg.data_dir);
		return FGW_ERR_INVALID;
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		snprintf(err, errlen, "data_dir %s: cannot open its lock file", g->cfg.data_dir);
		return FGW_ERR_IO;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		snprintf(err, errlen, "data_dir %s is in use by another flairgw", g->cfg.data_dir);
		close(fd);
		return FGW_ERR_EXISTS;
	}
	g->data_dir_lock = fd; /* held until exit */
	return FGW_OK;
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
	if (snprintf(path, sizeof(path), "%s/keyring.json", gw.cfg.keys_dir) < (int)sizeof(path))
		(void)stat(path, st);
}

static void
keyring_watch(evutil_socket_t fd, short what, void *arg)
{
	struct stat now;
	const char *why = NULL;
	int r;
	(void)fd;
	(void)what;
	(void)arg;
	keyring_stat(&now);
	if (now.st_ino == keyring_seen.st_ino && now.st_size == keyring_seen.st_size &&
	    now.st_mtim.tv_sec == keyring_seen.st_mtim.tv_sec &&
	    now.st_mtim.tv_nsec == keyring_seen.st_mtim.tv_nsec)
		return;
	if ((r = keyring_reload(gw.kr, &why)) != 0) {
		log_error("key ring changed on disk but not reloaded: %s",
		          why ? why : fgw_strerror(r));
	} else {
		log_info("key ring changed on disk: reloaded");
	}
	audit_emit(gw.store, main_waker, "system", "local", "keyring.reload", gw.cfg.keys_dir,
	           r == 0 ? "success" : "failure",
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
	    store_vault_sweep(gw.store, NULL, fgw_now_ms(), purged, sweep_done, purged) != 0) {
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
			         "\"windowMs\":%lld}", sum[i].bucket, (unsigned long long)sum[i].suppressed,
			         (long long)sum[i].window_ms);
			audit_emit(gw.store, main_waker, "anonymous", sum[i].bucket, sum[i].event_type, "",
			           "failure", details);
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

/* The operator token of the admin routes is kept only as its hash. */
static int
setup_admin_token(struct gateway *g, char *err, size_t errlen)
{
	char *tok = NULL;
	size_t len = 0;
	int r;

	if (g->cfg.admin_token_file[0] == '\0')
		return FGW_OK;
	if ((r = fgw_read_file(g->cfg.admin_token_file, 4096, &tok, &len)) != 0) {
		snprintf(err, errlen, "admin_token_file: %s: %s", g->cfg.admin_token_file,
		         fgw_strerror(r));
		return r;
	}
	while (len > 0 && (tok[len - 1] == '\n' || tok[len - 1] == '\r'))
		len--;
	if (len < 32 || len > 1024 || memchr(tok, '\0', len) != NULL) {
		snprintf(err, errlen, "admin_token_file: %s: the token must be 32 to 1024 characters",
		         g->cfg.admin_token_file);
		r = FGW_ERR_INVALID;
	} else {
		crypto_generichash(g->admin_token_hash, sizeof(g->admin_token_hash),
		                   (const unsigned char *)tok, len, NULL, 0);
		g->has_admin_token = 1;
		r = FGW_OK;
	}
	sodium_memzero(tok, len);
	free(tok);
	return r;
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
	    cJSON_AddStringToObject(o, "processor", g->proc.name) &&
	    cJSON_AddStringToObject(o, "rulesFile", g->cfg.rules_file) &&
	    cJSON_AddNumberToObject(o, "apiClients", g->cfg.n_api_keys) &&
	    cJSON_AddNumberToObject(o, "backupIntervalS", (double)g->cfg.backup_interval_s) &&
	    cJSON_AddNumberToObject(o, "checkpointIntervalS",
	                            (double)g->cfg.audit_checkpoint_interval_s))
		details = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	a = (struct store_audit){ "system", "local", "config.loaded", g->cfg.database, "success",
		                      details };
	/* Committed before the first request is served, so the event comes
	 * before anything the configuration decides. The main thread is not a
	 * reactor: waiting here blocks no request. */
	pthread_mutex_lock(&started_mu);
	if (store_audit_append(g->store, NULL, &a, 1, started_done, NULL) == 0)
		while (!started_flag)
			pthread_cond_wait(&started_cv, &started_mu);
	else
		log_error("config.loaded audit event not queued");
	pthread_mutex_unlock(&started_mu);
	free(details);
}

static int
setup_jwt(struct gateway *g, char *err, size_t errlen)
{
	const struct fgw_config *cfg = &g->cfg;
	struct jwt_config jc;
	char *secret = NULL;
	size_t slen = 0;
	int r;
	if (cfg->jwt_issuer[0] == '\0')
		return FGW_OK;
	memset(&jc, 0, sizeof(jc));
	jc.issuer = cfg->jwt_issuer;
	jc.audience = cfg->jwt_audience;
	jc.token_use = cfg->jwt_token_use;
	jc.jwks_path = cfg->jwt_jwks_file[0] ? cfg->jwt_jwks_file : NULL;
	jc.leeway_s = cfg->jwt_leeway_s;
	if (cfg->jwt_hs256_secret_file[0] != '\0') {
		if ((r = fgw_read_secret_file(cfg->jwt_hs256_secret_file, 4096, &secret, &slen)) != 0) {
			snprintf(err, errlen, "jwt_hs256_secret_file: %s: %s",
			         cfg->jwt_hs256_secret_file, fgw_strerror(r));
			return r;
		}
		jc.hs256_secret = (const unsigned char *)secret;
		jc.hs256_secret_len = slen;
	}
	r = jwt_verifier_new(&jc, &g->jwt, err, errlen);
	if (secret != NULL) {
		sodium_memzero(secret, slen);
		free(secret);
	}
	return r;
}

/* The systemd watchdog. Every half interval the main loop asks each
 * reactor to answer (an event made active on its base) and tells systemd
 * WATCHDOG=1 only if every reactor answered the previous ask: a reactor
 * stuck in a loop or a lock gets the service restarted, not kept alive
 * by a main thread that only waits for signals. */
static struct {
	struct event *tick;
	struct event **ask;        /* one per reactor, on that reactor's base */
	atomic_int *answered;      /* set by the reactor, cleared by the tick */
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
		if ((wd.ask[i] = event_new(gw.rx[i].base, -1, 0, wd_answer, &wd.answered[i])) == NULL)
			goto fail;
	}
	usec /= 2;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	if ((wd.tick = event_new(base, -1, EV_PERSIST, wd_tick, NULL)) == NULL ||
	    event_add(wd.tick, &tv) != 0)
		goto fail;
	log_info("systemd watchdog: telling it every %llu ms", (unsigned long long)(usec / 1000));
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

/* A processor credential from a private file or an environment variable
 * (prefix names the directives in errors); neither set: keep the plain
 * directive's value. The value is never logged, only where it came from. */
static int
processor_secret(const char *file, const char *env, const char *prefix, struct proc_config *pc,
                 char *err, size_t errlen)
{
	const char *v = NULL;
	char *text = NULL;
	size_t len = 0;
	struct stat sb;
	int r = FGW_ERR_INVALID;

	if (file[0] != '\0') {
		if (stat(file, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0) {
			snprintf(err, errlen, "%s_secret_file %s: must be a regular file "
			         "with mode 0600 or stricter", prefix, file);
			return FGW_ERR_INVALID;
		}
		if ((r = fgw_read_secret_file(file, sizeof(pc->secret), &text, &len)) != 0) {
			snprintf(err, errlen, "%s_secret_file %s: %s", prefix, file, fgw_strerror(r));
			return r;
		}
		v = text;
	} else if (env[0] != '\0') {
		if ((v = getenv(env)) == NULL) {
			snprintf(err, errlen, "%s_secret_env: %s is not set", prefix, env);
			return FGW_ERR_INVALID;
		}
	} else {
		return FGW_OK;
	}
	r = FGW_OK;
	if (v[0] == '\0' || strlen(v) >= sizeof(pc->secret) || strpbrk(v, " \t\r\n") != NULL) {
		snprintf(err, errlen, "%s credential from %s: empty, too long or has white space",
		         prefix, text != NULL ? "its secret file" : "its environment variable");
		r = FGW_ERR_INVALID;
	} else {
		fgw_strlcpy(pc->secret, v, sizeof(pc->secret));
	}
	if (text != NULL) {
		sodium_memzero(text, len);
		free(text);
	}
	return r;
}

/* One processor instance from its directives (the primary's or the
 * failover secondary's). A type that takes the clear card (stripe) needs
 * no sealing key. */
static int
setup_one(struct proc_config *pc, const struct proc_type **type, const char *name,
          const char *type_name, const char *url, const char *secret, const char *key_file,
          const char *map_file, long long timeout_ms, const char *prefix, char *err,
          size_t errlen)
{
	int r;
	if ((*type = proc_type_find(type_name)) == NULL) {
		snprintf(err, errlen, "%s_type: unknown processor type '%s'", prefix, type_name);
		return FGW_ERR_INVALID;
	}
	if (url[0] == '\0') {
		snprintf(err, errlen, "%s_url: required", prefix);
		return FGW_ERR_INVALID;
	}
	fgw_strlcpy(pc->name, name, sizeof(pc->name));
	fgw_strlcpy(pc->type, type_name, sizeof(pc->type));
	fgw_strlcpy(pc->base_url, url, sizeof(pc->base_url));
	fgw_strlcpy(pc->secret, secret, sizeof(pc->secret));
	pc->timeout_ms = (long)timeout_ms;
	if (!(key_file[0] == '\0' && (*type)->needs_clear_card)) {
		if ((r = sealed_load_pubkey(key_file, &pc->pubkey)) != 0) {
			snprintf(err, errlen, "%s_public_key_file: %s: %s", prefix, key_file,
			         fgw_strerror(r));
			return r;
		}
		pc->has_pubkey = 1;
	}
	if (strcmp(type_name, "generic") == 0)
		return generic_map_load(pc, map_file, err, errlen);
	return FGW_OK;
}

static int
setup_processor(struct gateway *g, char *err, size_t errlen)
{
	const struct fgw_config *cfg = &g->cfg;
	int r;
	if ((r = setup_one(&g->proc, &g->proc_type, cfg->processor_name, cfg->processor_type,
	                   cfg->processor_url, cfg->processor_secret,
	                   cfg->processor_public_key_file, cfg->processor_map_file,
	                   cfg->processor_timeout_ms, "processor", err, errlen)) != 0 ||
	    (r = processor_secret(cfg->processor_secret_file, cfg->processor_secret_env, "processor",
	                          &g->proc, err, errlen)) != 0)
		return r;
	fgw_strlcpy(g->proc.api_version, cfg->processor_api_version, sizeof(g->proc.api_version));
	if (cfg->processor2_name[0] == '\0')
		return FGW_OK;
	if (strcmp(cfg->processor2_name, cfg->processor_name) == 0) {
		snprintf(err, errlen, "processor2_name: must differ from processor_name");
		return FGW_ERR_INVALID;
	}
	breaker_init(&g->breaker, (int)cfg->breaker_failures, cfg->breaker_open_ms);
	breaker_init(&g->breaker2, (int)cfg->breaker_failures, cfg->breaker_open_ms);
	if ((r = setup_one(&g->proc2, &g->proc2_type, cfg->processor2_name, cfg->processor2_type,
	                   cfg->processor2_url, cfg->processor2_secret,
	                   cfg->processor2_public_key_file, cfg->processor2_map_file,
	                   cfg->processor2_timeout_ms > 0 ? cfg->processor2_timeout_ms
	                                                  : cfg->processor_timeout_ms,
	                   "processor2", err, errlen)) != 0 ||
	    (r = processor_secret(cfg->processor2_secret_file, cfg->processor2_secret_env,
	                          "processor2", &g->proc2, err, errlen)) != 0)
		return r;
	fgw_strlcpy(g->proc2.api_version, cfg->processor2_api_version, sizeof(g->proc2.api_version));
	return FGW_OK;
}

int
main(int argc, char **argv)
{
	struct keyring_opts kopts;
	struct store_opts sopts;
	struct event_base *sigbase = NULL;
	struct event *sigs[4] = { NULL, NULL, NULL, NULL };
	struct event *timers[3] = { NULL, NULL, NULL };
	struct backup_sched *sched = NULL;
	const char *kerr = NULL;
	char err[1024];
	int help = 0, r, code = 1;

	gw.pid_fd = -1;
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
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "flairgw: libsodium failed to initialise\n");
		return 1;
	}
	config_defaults(&gw.cfg);
	if (config_from_args(&gw.cfg, argc, argv, &help, err, sizeof(err)) != 0) {
		fprintf(stderr, "flairgw: %s\n", err);
		return 2;
	}
	if (help) {
		config_print_help(stdout);
		return 0;
	}
	if (config_finish(&gw.cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "flairgw: %s\n", err);
		return 2;
	}
	if (setup_logging(&gw.cfg) != 0)
		return 2;

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

	if (fgw_mkdirs(gw.cfg.data_dir, 0700) != 0) {
		log_error("cannot create data_dir %s", gw.cfg.data_dir);
		goto out;
	}
	if (lock_data_dir(&gw, err, sizeof(err)) != 0) {
		fprintf(stderr, "flairgw: %s\n", err);
		log_error("%s", err);
		goto out;
	}
	memset(&kopts, 0, sizeof(kopts));
	kopts.dir = gw.cfg.keys_dir;
	kopts.kek_file = gw.cfg.kek_file[0] ? gw.cfg.kek_file : NULL;
	kopts.kek_env = gw.cfg.kek_env[0] ? gw.cfg.kek_env : NULL;
	kopts.kek_share1 = gw.cfg.kek_share1[0] ? gw.cfg.kek_share1 : NULL;
	kopts.kek_share2 = gw.cfg.kek_share2[0] ? gw.cfg.kek_share2 : NULL;
	kopts.create = 1;
	kopts.box_grace_ms = gw.cfg.box_key_grace_s * 1000;
	if ((r = keyring_open(&kopts, &gw.kr, &kerr)) != 0) {
		fprintf(stderr, "flairgw: key ring %s: %s\n", gw.cfg.keys_dir,
		        kerr ? kerr : fgw_strerror(r));
		log_error("key ring %s: %s", gw.cfg.keys_dir, kerr ? kerr : fgw_strerror(r));
		goto out;
	}
	if (setup_processor(&gw, err, sizeof(err)) != 0 ||
	    setup_jwt(&gw, err, sizeof(err)) != 0 ||
	    setup_admin_token(&gw, err, sizeof(err)) != 0 ||
	    refusals_new(gw.cfg.audit_refusal_window_s * 1000, (unsigned)gw.cfg.audit_refusal_burst,
	                 &gw.refusals) != 0 ||
	    webhooks_setup(&gw, &gw.wh, err, sizeof(err)) != 0 ||
	    pipeline_build(gw.cfg.stages_request, gw.cfg.stages_response, &gw.pl,
	                   err, sizeof(err)) != 0 ||
	    setup_rules(&gw, err, sizeof(err)) != 0 ||
	    write_pid_file(&gw, err, sizeof(err)) != 0) {
		fprintf(stderr, "flairgw: %s\n", err);
		log_error("%s", err);
		goto out;
	}
	memset(&sopts, 0, sizeof(sopts));
	sopts.path = gw.cfg.database;
	sopts.sync_full = strcmp(gw.cfg.store_sync, "full") == 0;
	sopts.batch_max = (int)gw.cfg.store_batch_max;
	sopts.max_pages = gw.cfg.store_max_pages;
	sopts.audit_mac = keyring_audit_mac_fn;
	sopts.audit_mac_ctx = gw.kr;
	if ((r = store_open(&sopts, &gw.store)) != 0) {
		fprintf(stderr, "flairgw: database %s: %s\n", gw.cfg.database, fgw_strerror(r));
		log_error("database %s: %s", gw.cfg.database, fgw_strerror(r));
		goto out;
	}
	if (idem_table_new(&gw.idem) != 0)
		goto out;
	if (gw.cfg.tls_cert_file[0] != '\0' &&
	    tls_server_ctx_new(gw.cfg.tls_cert_file, gw.cfg.tls_key_file, &gw.tls, err,
	                       sizeof(err)) != 0) {
		fprintf(stderr, "flairgw: %s\n", err);
		log_error("%s", err);
		goto out;
	}
	if ((r = replay_velocity(&gw)) != 0) {
		log_error("velocity replay from %s failed: %s", gw.cfg.database, fgw_strerror(r));
		goto out;
	}
	if (gw.risk.up && (r = txn_events_subscribe(risk_on_txn_event, &gw.risk)) != 0) {
		log_error("rules: cannot hear processor declines: %s", fgw_strerror(r));
		goto out;
	}
	if (resv_setup(&gw, err, sizeof(err)) != 0) {
		fprintf(stderr, "flairgw: %s\n", err);
		log_error("%s", err);
		goto out;
	}
	gw.n_rx = gw.cfg.workers > 0 ? (int)gw.cfg.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
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
	if (server_start(&gw, err, sizeof(err)) != 0) {
		fprintf(stderr, "flairgw: %s\n", err);
		log_error("%s", err);
		goto out;
	}
	webhooks_start(gw.wh);
	keyring_stat(&keyring_seen);
	if (gw.cfg.keyring_watch_ms > 0) {
		struct timeval tv = { gw.cfg.keyring_watch_ms / 1000,
			                  (gw.cfg.keyring_watch_ms % 1000) * 1000 };
		if ((timers[0] = event_new(sigbase, -1, EV_PERSIST, keyring_watch, NULL)) == NULL ||
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
		if ((timers[2] = event_new(sigbase, -1, EV_PERSIST, refusals_tick, NULL)) == NULL ||
		    event_add(timers[2], &tv) != 0)
			log_warn("refusal summaries are written at shutdown only");
	}
	log_info("listening on %s (%s) with %d reactor%s, processor %s at %s, database %s",
	         gw.cfg.listen, gw.tls ? "TLS 1.2+" : "plain HTTP", gw.n_rx, gw.n_rx == 1 ? "" : "s", gw.proc.name,
	         gw.proc.base_url, gw.cfg.database);
	if (wd_start(sigbase) != 0)
		log_warn("systemd watchdog not started");
	if (sdnotify("READY=1\nSTATUS=serving") < 0)
		log_warn("NOTIFY_SOCKET is set but the service manager could not be told we are ready");
	event_base_dispatch(sigbase);
	wd_stop();
	server_stop(&gw);
	refusals_flush(1);
	/* Before the last checkpoint, so the checkpoint covers it. */
	audit_emit(gw.store, NULL, "system", "local", "service.stopped", gw.cfg.database,
	           "success", NULL);
	backup_sched_stop(sched);
	sched = NULL;
	code = 0;
	log_info("stopped");
out:
	wd_stop();
	backup_sched_stop(sched);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	for (int i = 0; i < 3; i++)
		if (timers[i] != NULL)
			event_free(timers[i]);
	if (sigbase != NULL)
		event_base_free(sigbase);
	if (gw.store != NULL)
		store_close(gw.store);
	store_waker_free(main_waker);
	idem_table_free(gw.idem);
	risk_free(&gw.risk);
	remove_pid_file(&gw);
	jwt_verifier_free(gw.jwt);
	refusals_free(gw.refusals);
	webhooks_free(gw.wh);
	generic_map_free(&gw.proc);
	generic_map_free(&gw.proc2);
	keyring_free(gw.kr);
	tls_server_ctx_free(gw.tls);
	curl_global_cleanup();
	return code;
}
