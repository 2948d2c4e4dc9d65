/*
 * gateway/startup.c — the daemon's start-up steps, one function each, run
 * by flairgw's start (STARTUP_RUN, stopping at the first problem) and by
 * gateway_check (`flairgw --check`, `flairctl config check`: STARTUP_CHECK,
 * every step, every problem). Keeping one function per step for both is
 * what keeps the check honest: a rule added to the start is checked too.
 *
 * Layout: the report, then the steps in the order main.c runs them, then
 * gateway_check.
 */
#define LOG_MODULE "startup"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/jwt.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/tls.h"
#include "gateway/gateway.h"
#include "gateway/resv.h"
#include "gateway/startup.h"
#include "gateway/webhooks.h"
#include "pipeline/notify.h"
#include "store/keyring.h"
#include "store/store.h"

/* ---- the report ---------------------------------------------------------- */

static void
report(struct check_report *rep, int is_problem, const char *fmt, va_list ap)
{
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (is_problem)
		rep->problems++;
	else
		rep->notes++;
	if (rep->emit != NULL)
		rep->emit(rep->arg, is_problem, msg);
}

void
check_problem(struct check_report *rep, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report(rep, 1, fmt, ap);
	va_end(ap);
}

void
check_note(struct check_report *rep, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report(rep, 0, fmt, ap);
	va_end(ap);
}

/* ---- helpers -------------------------------------------------------------- */

/* The directory part of path ("." when it has none). */
static void
dir_of(const char *path, char *dir, size_t cap)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		fgw_strlcpy(dir, ".", cap);
	else if (slash == path)
		fgw_strlcpy(dir, "/", cap);
	else
		snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

/* A directory the daemon would create with fgw_mkdirs: fine when it exists
 * and we may write there, or when its nearest existing ancestor is a
 * directory we may write to. *exists says which. 0, or FGW_ERR_* with why
 * pointing at a static reason. */
static int
dir_usable(const char *path, int *exists, const char **why)
{
	char cur[PATH_MAX];
	struct stat sb;

	*exists = 0;
	if (fgw_strlcpy(cur, path, sizeof(cur)) != 0) {
		*why = "path too long";
		return FGW_ERR_TOO_LARGE;
	}
	for (;;) {
		if (stat(cur, &sb) == 0) {
			if (!S_ISDIR(sb.st_mode)) {
				*why = "it, or a directory above it, is not a directory";
				return FGW_ERR_INVALID;
			}
			if (access(cur, W_OK | X_OK) != 0) {
				*why = "not writable by this user";
				return FGW_ERR_INVALID;
			}
			*exists = strcmp(cur, path) == 0;
			return FGW_OK;
		}
		if (errno != ENOENT) {
			*why = strerror(errno);
			return FGW_ERR_IO;
		}
		char *slash = strrchr(cur, '/');
		if (slash == NULL) {
			fgw_strlcpy(cur, ".", sizeof(cur));
		} else if (slash == cur) {
			cur[1] = '\0';
		} else {
			*slash = '\0';
		}
	}
}

/* ---- configuration, data_dir, log_file, listen ----------------------------- */

static void
config_problem(void *arg, const char *msg)
{
	check_problem(arg, "%s", msg);
}

int
startup_config(struct fgw_config *cfg, struct check_report *rep)
{
	return config_finish_each(cfg, config_problem, rep);
}

/* This instance's identity across restarts (store_opts.instance_id):
 * DATA_DIR/instance.id, made at the first start. Read under the data_dir
 * lock, so no other daemon on this host has it; the store proves the
 * same across hosts on PostgreSQL (a copied data_dir). */
static int
instance_id(struct gateway *g, struct check_report *rep)
{
	char path[PATH_MAX], buf[sizeof(g->instance_id) + 1];
	ssize_t got;
	size_t len;
	int fd, n = snprintf(path, sizeof(path), "%s/instance.id", g->cfg.data_dir);

	if (n < 0 || (size_t)n >= sizeof(path)) {
		check_problem(rep, "data_dir %s: path too long", g->cfg.data_dir);
		return FGW_ERR_INVALID;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) >= 0) {
		got = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[got > 0 ? got : 0] = '\0';
		len = strcspn(buf, "\n");
		buf[len] = '\0';
		if (len < 8 || len >= sizeof(g->instance_id) || strncmp(buf, "inst_", 5) != 0 ||
		    strspn(buf + 5,
		           "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") !=
		        len - 5) {
			check_problem(rep, "%s: not an instance id (remove it to make a new one)",
			              path);
			return FGW_ERR_INVALID;
		}
		fgw_strlcpy(g->instance_id, buf, sizeof(g->instance_id));
		return FGW_OK;
	}
	if (errno != ENOENT || fgw_random_id("inst_", buf, sizeof(buf)) != 0 ||
	    (fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		check_problem(rep, "%s: cannot be read or made", path);
		return FGW_ERR_IO;
	}
	len = strlen(buf);
	buf[len] = '\n';
	if (write(fd, buf, len + 1) != (ssize_t)(len + 1) || fsync(fd) != 0) {
		close(fd);
		unlink(path);
		check_problem(rep, "%s: cannot be written", path);
		return FGW_ERR_IO;
	}
	close(fd);
	buf[len] = '\0';
	fgw_strlcpy(g->instance_id, buf, sizeof(g->instance_id));
	return FGW_OK;
}

/* Two daemons on one data_dir would each run a store writer, an
 * idempotency table and velocity counters of their own over one database:
 * a lock held for the life of the process, whatever pid_file says. The
 * file is never removed (removing a lock file lets a third process lock a
 * new inode while the second still holds the old one). */
static int
lock_data_dir(struct gateway *g, struct check_report *rep)
{
	char path[PATH_MAX];
	int fd, n = snprintf(path, sizeof(path), "%s/flairgw.lock", g->cfg.data_dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		check_problem(rep, "data_dir %s: path too long", g->cfg.data_dir);
		return FGW_ERR_INVALID;
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		check_problem(rep, "data_dir %s: cannot open its lock file", g->cfg.data_dir);
		return FGW_ERR_IO;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		check_problem(rep, "data_dir %s is in use by another flairgw", g->cfg.data_dir);
		close(fd);
		return FGW_ERR_EXISTS;
	}
	g->data_dir_lock = fd; /* held until exit */
	return instance_id(g, rep);
}

int
startup_data_dir(struct gateway *g, enum startup_mode m, struct check_report *rep)
{
	const char *why = NULL;
	struct stat sb;
	int exists = 0, r;

	if (m == STARTUP_RUN) {
		if (fgw_mkdirs(g->cfg.data_dir, 0700) != 0) {
			check_problem(rep, "cannot create data_dir %s", g->cfg.data_dir);
			return FGW_ERR_IO;
		}
		return lock_data_dir(g, rep);
	}
	if ((r = dir_usable(g->cfg.data_dir, &exists, &why)) != 0) {
		check_problem(rep, "data_dir %s: %s", g->cfg.data_dir, why);
		return r;
	}
	if (!exists)
		check_note(rep, "data_dir %s does not exist yet: it is created on first start",
		           g->cfg.data_dir);
	else if (stat(g->cfg.data_dir, &sb) == 0 && (sb.st_mode & 077) != 0)
		check_note(rep,
		           "data_dir %s is open to group or others (mode %03o): "
		           "chmod 700 it",
		           g->cfg.data_dir, (unsigned)(sb.st_mode & 0777));
	return FGW_OK;
}

int
startup_log_file(const struct fgw_config *cfg, struct check_report *rep)
{
	char dir[PATH_MAX];
	const char *why = NULL;
	struct stat sb;
	int exists = 0, r;

	if (cfg->log_file[0] == '\0')
		return FGW_OK;
	if (stat(cfg->log_file, &sb) == 0) {
		/* Opened for appending only by the daemon: the check must not
		 * create or touch it, so access() it. */
		if (!S_ISREG(sb.st_mode) && !S_ISCHR(sb.st_mode) && !S_ISFIFO(sb.st_mode)) {
			check_problem(rep, "log_file %s: not a file", cfg->log_file);
			return FGW_ERR_INVALID;
		}
		if (access(cfg->log_file, W_OK) != 0) {
			check_problem(rep, "log_file %s: not writable by this user", cfg->log_file);
			return FGW_ERR_INVALID;
		}
		return FGW_OK;
	}
	/* The daemon creates the file, not its directory. */
	dir_of(cfg->log_file, dir, sizeof(dir));
	if ((r = dir_usable(dir, &exists, &why)) != 0 || !exists) {
		check_problem(rep, "log_file %s: cannot be created: directory %s %s",
		              cfg->log_file, dir, r != 0 ? why : "does not exist");
		return r != 0 ? r : FGW_ERR_NOT_FOUND;
	}
	return FGW_OK;
}

int
startup_listen(const struct fgw_config *cfg, struct check_report *rep)
{
	struct fgw_why why = { 0 };
	char err[sizeof(why.where) + sizeof(why.msg) + 8];
	int r;
	if ((r = server_listen_check(cfg->listen, &why)) != 0)
		check_problem(rep, "%s", fgw_why_format(&why, err, sizeof(err)));
	return r;
}

/* ---- keys ---------------------------------------------------------------- */

static void store_opts_of(struct gateway *g, struct store_opts *o);
static int check_pg_store(const struct store_opts *o, enum startup_mode m,
                          struct check_report *rep);

int
startup_keyring(struct gateway *g, enum startup_mode m, struct check_report *rep)
{
	const struct fgw_config *cfg = &g->cfg;
	struct keyring_opts kopts;
	struct fgw_why why = { 0 };
	const char *note = NULL;
	int r;

	memset(&kopts, 0, sizeof(kopts));
	kopts.dir = cfg->keys_dir;
	kopts.kek_file = cfg->kek_file[0] ? cfg->kek_file : NULL;
	kopts.kek_env = cfg->kek_env[0] ? cfg->kek_env : NULL;
	kopts.kek_share1 = cfg->kek_share1[0] ? cfg->kek_share1 : NULL;
	kopts.kek_share2 = cfg->kek_share2[0] ? cfg->kek_share2 : NULL;
	kopts.create = 1;
	kopts.box_grace_ms = cfg->box_key_grace_s * 1000;
	if (strcmp(cfg->store_backend, "postgresql") == 0) {
		/* Every instance reads the one ring in the database. --check
		 * only reads: a database not migrated yet has no ring. */
		struct store_ring_opts ro = {
			.dsn = cfg->store_dsn[0] != '\0' ? cfg->store_dsn : NULL,
			.dsn_file = cfg->store_dsn_file[0] != '\0' ? cfg->store_dsn_file : NULL,
			.production = strcmp(cfg->mode, "production") == 0,
			.read_only = m != STARTUP_RUN,
		};
		if ((r = store_ring_open(&ro, &g->ring)) != 0) {
			/* The store's own check says why in the words the database
			 * step uses (a newer schema, no durability, the TLS rule). */
			struct store_opts so;
			store_opts_of(g, &so);
			if (check_pg_store(&so, m, rep) == FGW_OK)
				check_problem(
				    rep, "key ring: cannot reach the PostgreSQL store (%s; see the log)",
				    fgw_strerror(r));
			return r;
		}
		g->ring_src = (struct keyring_source){ store_ring_load, store_ring_save,
			                                   store_ring_generation, g->ring };
		kopts.source = &g->ring_src;
	}
	if (m == STARTUP_RUN)
		r = keyring_open(&kopts, &g->kr, &why);
	else if ((r = keyring_check(&kopts, &note, &why)) == 0 && note != NULL)
		check_note(rep, "key ring %s: %s", cfg->keys_dir, note);
	if (r != 0)
		check_problem(rep, "key ring %s: %s", cfg->keys_dir, why.msg);
	return r;
}

/* ---- processors ------------------------------------------------------------ */

/* A processor credential from a private file or an environment variable
 * (prefix names the directives in errors); neither set: keep the plain
 * directive's value. The value is never logged, only where it came from. */
static int
processor_secret(const char *file, const char *env, const char *prefix,
                 struct proc_config *pc, struct fgw_why *why)
{
	const char *v = NULL;
	char *text = NULL;
	size_t len = 0;
	struct stat sb;
	int r = FGW_ERR_INVALID;

	if (file[0] != '\0') {
		if (stat(file, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0) {
			fgw_why_set(why, NULL, 0, 0,
			            "%s_secret_file %s: must be a regular file "
			            "with mode 0600 or stricter",
			            prefix, file);
			return FGW_ERR_INVALID;
		}
		if ((r = fgw_read_secret_file(file, sizeof(pc->secret), &text, &len)) != 0) {
			fgw_why_set(why, NULL, 0, 0, "%s_secret_file %s: %s", prefix, file,
			            fgw_strerror(r));
			return r;
		}
		v = text;
	} else if (env[0] != '\0') {
		if ((v = getenv(env)) == NULL) {
			fgw_why_set(why, NULL, 0, 0, "%s_secret_env: %s is not set", prefix, env);
			return FGW_ERR_INVALID;
		}
	} else {
		return FGW_OK;
	}
	r = FGW_OK;
	if (v[0] == '\0' || strlen(v) >= sizeof(pc->secret) ||
	    strpbrk(v, " \t\r\n") != NULL) {
		fgw_why_set(why, NULL, 0, 0,
		            "%s credential from %s: empty, too long or has white space", prefix,
		            text != NULL ? "its secret file" : "its environment variable");
		r = FGW_ERR_INVALID;
	} else {
		fgw_strlcpy(pc->secret, v, sizeof(pc->secret));
	}
	fgw_freezero(text, len);
	return r;
}

/* Every processor is checked apart: a problem with one does not hide
 * another's. */
int
startup_processors(struct gateway *g, struct check_report *rep)
{
	const struct fgw_config *cfg = &g->cfg;
	struct fgw_why why = { 0 };
	char err[1024], prefix[64];
	int r, first = 0;

	for (int i = 0; i < cfg->n_procs; i++) {
		const struct proc_settings *s = &cfg->procs[i];
		struct proc_instance *pi = &g->procs[i];

		/* Errors name the spelling used: "processor_ca_file", or
		 * "processor eu ca_file". */
		if (s->old_prefix[0] != '\0')
			snprintf(prefix, sizeof(prefix), "%.*s", (int)strlen(s->old_prefix) - 1,
			         s->old_prefix);
		else
			snprintf(prefix, sizeof(prefix), "processor %s ", s->name);
		if ((r = proc_instance_load(pi, s, cfg->processor_timeout_ms, &why)) != 0 ||
		    (r = processor_secret(s->secret_file, s->secret_env, prefix, &pi->cfg,
		                          &why)) != 0)
			check_problem(rep, "%s", fgw_why_format(&why, err, sizeof(err)));
		breaker_init(&pi->breaker, (int)cfg->breaker_failures, cfg->breaker_open_ms);
		g->n_procs = i + 1;
		if (first == 0)
			first = r;
		if ((r = tls_client_files_check(prefix, s->ca_file, s->client_cert, s->client_key,
		                                &why)) != 0) {
			check_problem(rep, "%s", why.msg);
			if (first == 0)
				first = r;
		}
	}
	return first;
}

/* ---- authentication ------------------------------------------------------- */

int
startup_jwt(struct gateway *g, struct check_report *rep)
{
	const struct fgw_config *cfg = &g->cfg;
	struct jwt_config jc;
	struct fgw_why why = { 0 };
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
		if ((r = fgw_read_secret_file(cfg->jwt_hs256_secret_file, 4096, &secret,
		                              &slen)) != 0) {
			check_problem(rep, "jwt_hs256_secret_file: %s: %s",
			              cfg->jwt_hs256_secret_file, fgw_strerror(r));
			return r;
		}
		jc.hs256_secret = (const unsigned char *)secret;
		jc.hs256_secret_len = slen;
	}
	if ((r = jwt_verifier_new(&jc, &g->jwt, &why)) != 0)
		check_problem(rep, "customer JWTs (jwt_*): %s", why.msg);
	fgw_freezero(secret, slen);
	return r;
}

/* The operator token of the admin routes is kept only as its hash. */
int
startup_admin_token(struct gateway *g, struct check_report *rep)
{
	char *tok = NULL;
	size_t len = 0;
	int r;

	if (g->cfg.admin_token_file[0] == '\0')
		return FGW_OK;
	if ((r = fgw_read_file(g->cfg.admin_token_file, 4096, &tok, &len)) != 0) {
		check_problem(rep, "admin_token_file: %s: %s", g->cfg.admin_token_file,
		              fgw_strerror(r));
		return r;
	}
	while (len > 0 && (tok[len - 1] == '\n' || tok[len - 1] == '\r'))
		len--;
	if (len < 32 || len > 1024 || memchr(tok, '\0', len) != NULL) {
		check_problem(rep,
		              "admin_token_file: %s: the token must be 32 to 1024 characters",
		              g->cfg.admin_token_file);
		r = FGW_ERR_INVALID;
	} else {
		crypto_generichash(g->admin_token_hash, sizeof(g->admin_token_hash),
		                   (const unsigned char *)tok, len, NULL, 0);
		g->has_admin_token = 1;
		r = FGW_OK;
	}
	fgw_freezero(tok, len);
	return r;
}

int
startup_webhooks(struct gateway *g, enum startup_mode m, struct check_report *rep)
{
	return webhooks_setup(g, m == STARTUP_RUN, rep, &g->wh);
}

/* ---- pipeline, rules, TLS ------------------------------------------------- */

int
startup_pipeline(struct gateway *g, struct check_report *rep)
{
	struct fgw_why why = { 0 };
	int r;
	if ((r = pipeline_build(g->cfg.stages_request, g->cfg.stages_response, &g->pl,
	                        &why)) != 0)
		check_problem(rep, "stages_request / stages_response: %s", why.msg);
	return r;
}

int
startup_rules(struct gateway *g, struct check_report *rep)
{
	struct fgw_why rerr;
	char msg[640];
	int r;
	if (g->cfg.rules_file[0] == '\0') {
		log_warn(
		    "no rules_file: only validation and max_amount apply, no fraud or velocity rules");
		return FGW_OK;
	}
	if ((r = risk_init(&g->risk, g->cfg.rules_file, g->cfg.mode, &rerr)) != 0) {
		check_problem(rep, "rules_file: %s", fgw_why_format(&rerr, msg, sizeof(msg)));
		return r;
	}
	struct rules *cur = rules_slot_get(g->risk.slot);
	log_info("rules: %zu rules from %s, mode %s", rules_count(cur), g->cfg.rules_file,
	         g->cfg.mode);
	rules_unref(cur);
	return FGW_OK;
}

int
startup_tls(struct gateway *g, struct check_report *rep)
{
	struct fgw_why why = { 0 };
	int r;
	if (g->cfg.tls_cert_file[0] == '\0')
		return FGW_OK;
	if ((r = tls_server_ctx_new(g->cfg.tls_cert_file, g->cfg.tls_key_file, &g->tls,
	                            &why)) != 0)
		check_problem(rep, "%s", why.msg);
	return r;
}

/* ---- pid file ------------------------------------------------------------- */

/* The pid file is locked for as long as we run, so flairctl can tell a
 * live daemon from a stale file, and two daemons cannot share data_dir.
 * CHECK takes no lock (a daemon starting at that moment would find it
 * taken): the file's directory must exist or be data_dir. */
int
startup_pid_file(struct gateway *g, enum startup_mode m, struct check_report *rep)
{
	const char *why = NULL;
	char buf[32], dir[PATH_MAX];
	int fd, n, exists = 0, r;

	if (m == STARTUP_CHECK) {
		dir_of(g->cfg.pid_file, dir, sizeof(dir));
		if (strcmp(dir, g->cfg.data_dir) != 0 &&
		    ((r = dir_usable(dir, &exists, &why)) != 0 || !exists)) {
			check_problem(rep, "pid_file %s: cannot be created: directory %s %s",
			              g->cfg.pid_file, dir, r != 0 ? why : "does not exist");
			return r != 0 ? r : FGW_ERR_NOT_FOUND;
		}
		return FGW_OK;
	}
	if ((fd = open(g->cfg.pid_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		check_problem(rep, "pid_file %s: cannot open", g->cfg.pid_file);
		return FGW_ERR_IO;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		check_problem(rep, "pid_file %s is locked: another flairgw is running with it",
		              g->cfg.pid_file);
		close(fd);
		return FGW_ERR_EXISTS;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || n < 0 || write(fd, buf, (size_t)n) != n) {
		check_problem(rep, "pid_file %s: cannot write", g->cfg.pid_file);
		close(fd);
		return FGW_ERR_IO;
	}
	g->pid_fd = fd;
	return FGW_OK;
}

/* ---- database and catalogue ------------------------------------------------ */

/* test_exit_after_status: ends the process as a crash would, right after
 * the commit that left a transaction in the status, before any reactor
 * sees the commit's answer. */
static void
exit_after_status(struct db *db, void *ctx)
{
	static const char resv[] = "reservation:";
	const char *status = ctx;
	int is_resv = strncmp(status, resv, sizeof(resv) - 1) == 0;
	/* "reservation:<status>": a reservation's status instead. */
	int hit = store_status_present(db, is_resv,
	                               is_resv ? status + sizeof(resv) - 1 : status);

	if (hit) {
		log_warn("test_exit_after_status: a transaction is %s: exiting now",
		         (const char *)ctx);
		_exit(70);
	}
}

static void
store_opts_of(struct gateway *g, struct store_opts *o)
{
	const struct fgw_config *cfg = &g->cfg;

	memset(o, 0, sizeof(*o));
	if (strcmp(cfg->store_backend, "postgresql") == 0) {
		o->backend = STORE_POSTGRESQL;
		o->dsn = cfg->store_dsn[0] != '\0' ? cfg->store_dsn : NULL;
		o->dsn_file = cfg->store_dsn_file[0] != '\0' ? cfg->store_dsn_file : NULL;
		o->production = strcmp(cfg->mode, "production") == 0;
	} else
		o->path = cfg->database;
	o->sync_full = strcmp(cfg->store_sync, "full") == 0;
	o->batch_max = (int)cfg->store_batch_max;
	o->read_threads = (int)cfg->store_read_threads;
	o->instance_id = g->instance_id[0] != '\0' ? g->instance_id : NULL;
	o->max_pages = cfg->store_max_pages;
	o->audit_mac = keyring_audit_mac_fn;
	o->audit_mac_ctx = g->kr;
	if (cfg->test_exit_after_status[0] != '\0') {
		o->after_commit = exit_after_status;
		o->after_commit_ctx = (void *)cfg->test_exit_after_status;
	}
}

/* The PostgreSQL store: reachable, durable, at a version this build
 * knows. The connection string is never named (it may hold a password);
 * pg_connect logs why a connection failed. */
static int
check_pg_store(const struct store_opts *o, enum startup_mode m, struct check_report *rep)
{
	int version = 0, latest = 0, r;

	r = store_pg_schema(o, &version, &latest);
	if (r == FGW_ERR_STATE && version > latest) {
		check_problem(rep,
		              "store (PostgreSQL): schema version %d is newer than this build "
		              "knows (%d): run the flairgw that wrote it",
		              version, latest);
		return r;
	}
	switch (r) {
	case FGW_OK:
		break;
	case FGW_ERR_STATE:
		check_problem(rep, "store (PostgreSQL): the server does not make commits durable "
		                   "(fsync and synchronous_commit must be on; see the log)");
		return r;
	case FGW_ERR_AUTH:
		check_problem(rep, "store_dsn: in production a database server not on this host "
		                   "needs sslmode=verify-full");
		return r;
	case FGW_ERR_NOT_FOUND:
		check_problem(rep, "store_dsn_file %s: not found", o->dsn_file);
		return r;
	case FGW_ERR_INVALID:
		check_problem(rep, o->dsn_file != NULL
		                       ? "store_dsn_file: must be a regular file of mode 0600 "
		                         "holding a PostgreSQL connection string"
		                       : "store_dsn: not a PostgreSQL connection string");
		return r;
	default:
		check_problem(rep, "store (PostgreSQL): cannot connect (%s; see the log)",
		              fgw_strerror(r));
		return r;
	}
	if (m == STARTUP_CHECK && version < latest)
		check_note(rep,
		           "store (PostgreSQL): schema version %d, migrated to %d on the "
		           "next start",
		           version, latest);
	return FGW_OK;
}

int
startup_database(struct gateway *g, enum startup_mode m, struct check_report *rep)
{
	const struct fgw_config *cfg = &g->cfg;
	struct store_opts sopts;
	char dir[PATH_MAX];
	const char *why = NULL;
	int version = 0, latest = 0, exists = 0, r;

	store_opts_of(g, &sopts);
	if (sopts.backend == STORE_POSTGRESQL) {
		if ((r = check_pg_store(&sopts, m, rep)) != 0 || m == STARTUP_CHECK)
			return r;
		if ((r = store_open(&sopts, &g->store)) != 0)
			check_problem(rep, "store (PostgreSQL): %s (see the log)", fgw_strerror(r));
		return r;
	}
	r = store_file_schema(cfg->database, &version, &latest);
	if (r == FGW_ERR_STATE) {
		check_problem(rep,
		              "database %s: schema version %d is newer than this build "
		              "knows (%d): run the flairgw that wrote it, or restore a backup",
		              cfg->database, version, latest);
		return r;
	}
	if (r == FGW_ERR_DB) {
		check_problem(rep,
		              "database %s: not a flairgw database (cannot read its schema "
		              "version)",
		              cfg->database);
		return r;
	}
	if (r == FGW_ERR_NOT_FOUND) {
		/* Created by the first start, in a directory that must exist by
		 * then: data_dir is made by the daemon, others are not. */
		dir_of(cfg->database, dir, sizeof(dir));
		if (strcmp(dir, cfg->data_dir) != 0 &&
		    ((r = dir_usable(dir, &exists, &why)) != 0 || !exists)) {
			check_problem(rep, "database %s: cannot be created: directory %s %s",
			              cfg->database, dir, r != 0 ? why : "does not exist");
			return r != 0 ? r : FGW_ERR_NOT_FOUND;
		}
		if (m == STARTUP_CHECK)
			check_note(rep,
			           "database %s does not exist yet: it is created on first start",
			           cfg->database);
	} else if (r != 0) {
		check_problem(rep, "database %s: %s", cfg->database, fgw_strerror(r));
		return r;
	} else if (m == STARTUP_CHECK && version < latest) {
		check_note(rep,
		           "database %s: schema version %d, migrated to %d on the next start",
		           cfg->database, version, latest);
	}
	if (m == STARTUP_CHECK)
		return FGW_OK;
	if ((r = store_open(&sopts, &g->store)) != 0)
		check_problem(rep, "database %s: %s", cfg->database, fgw_strerror(r));
	return r;
}

int
startup_slots(struct gateway *g, enum startup_mode m, struct check_report *rep)
{
	struct fgw_why why = { 0 };
	char err[sizeof(why.where) + sizeof(why.msg) + 8];
	int r;
	if ((r = resv_setup(g, m == STARTUP_CHECK, &why)) != 0)
		check_problem(rep, "%s", fgw_why_format(&why, err, sizeof(err)));
	return r;
}

long long
startup_longest_timeout(const struct gateway *g)
{
	long long longest = g->cfg.processor_timeout_ms;
	for (int i = 0; i < g->n_procs; i++)
		if (g->procs[i].cfg.timeout_ms > longest)
			longest = g->procs[i].cfg.timeout_ms;
	return longest;
}

/* A row may only be decided once no request of its attempt can still be on
 * its way, on either processor: the reconciler's grace must outlast the
 * longest processor timeout. */
int
startup_timing(struct gateway *g, struct check_report *rep)
{
	const struct fgw_config *cfg = &g->cfg;
	long long longest = startup_longest_timeout(g);
	if (cfg->reconcile_grace_ms > 0 && cfg->reconcile_grace_ms <= longest) {
		check_problem(rep,
		              "reconcile_grace_ms (%lld) must exceed the longest processor "
		              "timeout (%lld ms)",
		              cfg->reconcile_grace_ms, longest);
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

void
startup_release(struct gateway *g)
{
	risk_free(&g->risk);
	jwt_verifier_free(g->jwt);
	g->jwt = NULL;
	webhooks_free(g->wh);
	g->wh = NULL;
	for (int i = 0; i < g->n_procs; i++)
		proc_instance_free(&g->procs[i]);
	keyring_free(g->kr);
	g->kr = NULL;
	store_ring_close(g->ring);
	g->ring = NULL;
	tls_server_ctx_free(g->tls);
	g->tls = NULL;
	sodium_memzero(g->admin_token_hash, sizeof(g->admin_token_hash));
}

/* ---- the check -------------------------------------------------------------- */

/* The e-mail templates, as mail_setup loads them: a template that names
 * an unknown placeholder is refused before a restart needs it. */
static void
check_mail_templates(const struct fgw_config *cfg, struct check_report *rep)
{
	struct notify_client clients[CONFIG_MAX_MAIL_CLIENTS];
	struct notify_opts o;
	struct fgw_why why;
	char err[512];

	if (cfg->mail_url[0] == '\0')
		return;
	for (int i = 0; i < cfg->n_mail_clients; i++)
		clients[i] = (struct notify_client){ cfg->mail_clients[i].client_id,
			                                 cfg->mail_clients[i].from,
			                                 cfg->mail_clients[i].admin };
	o = (struct notify_opts){ cfg->mail_templates_dir, cfg->mail_from, cfg->mail_admin,
		                      clients, (size_t)cfg->n_mail_clients };
	if (notify_init(&o, &why) != 0)
		check_problem(rep, "%s", fgw_why_format(&why, err, sizeof(err)));
	notify_reset();
}

int
gateway_check(const struct fgw_config *cfg, struct check_report *rep)
{
	struct gateway *g;

	if ((g = calloc(1, sizeof(*g))) == NULL) {
		check_problem(rep, "out of memory");
		return FGW_ERR_NOMEM;
	}
	g->cfg = *cfg;
	g->pid_fd = g->log_fd = g->data_dir_lock = -1;
	/* Each step runs even when one before it failed: the operator sees
	 * every problem in one run. The order is main.c's. */
	(void)startup_config(&g->cfg, rep);
	(void)startup_data_dir(g, STARTUP_CHECK, rep);
	(void)startup_log_file(&g->cfg, rep);
	(void)startup_keyring(g, STARTUP_CHECK, rep);
	(void)startup_processors(g, rep);
	(void)startup_jwt(g, rep);
	(void)startup_admin_token(g, rep);
	(void)startup_webhooks(g, STARTUP_CHECK, rep);
	check_mail_templates(&g->cfg, rep);
	(void)startup_pipeline(g, rep);
	(void)startup_rules(g, rep);
	(void)startup_pid_file(g, STARTUP_CHECK, rep);
	(void)startup_database(g, STARTUP_CHECK, rep);
	(void)startup_tls(g, rep);
	(void)startup_slots(g, STARTUP_CHECK, rep);
	(void)startup_timing(g, rep);
	(void)startup_listen(&g->cfg, rep);
	startup_release(g);
	fgw_freezero(g, sizeof(*g)); /* the configuration held API key hashes */
	return rep->problems > 0 ? FGW_ERR_INVALID : FGW_OK;
}
