/*
 * gateway/config.c — the directive table and its parser.
 *
 * Each directive is {name, type, offset, size, min, max, default, help};
 * parsing, range checks, overrides and --help all read the same table.
 */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "gateway/config.h"
#include "processors/adapter.h"

enum cfg_type {
	CFG_INT,
	CFG_STR,
	CFG_ENUM,
	CFG_BOOL,
	CFG_APIKEY,
	CFG_WH_IN,
	CFG_WH_OUT,
	CFG_ROUTE,
	CFG_MAIL_CLIENT,
	CFG_PROC_LINE,
	CFG_PROC
};

struct cfg_directive {
	const char *name;
	enum cfg_type type;
	size_t offset;
	size_t size;        /* CFG_STR/ENUM buffer size */
	long long min, max; /* CFG_INT */
	const char *def;
	const char *choices; /* CFG_ENUM: "a|b|c" */
	const char *help;
};

#define OFF(f) offsetof(struct fgw_config, f)
#define SZ(f) sizeof(((struct fgw_config *)0)->f)
#define STR(f, def, help)                                 \
	{                                                     \
#f, CFG_STR, OFF(f), SZ(f), 0, 0, def, NULL, help \
	}
#define INT(f, lo, hi, def, help)                       \
	{                                                   \
#f, CFG_INT, OFF(f), 0, lo, hi, def, NULL, help \
	}
#define ENUM(f, choices, def, help)                           \
	{                                                         \
#f, CFG_ENUM, OFF(f), SZ(f), 0, 0, def, choices, help \
	}
#define BOOL(f, def, help)                             \
	{                                                  \
#f, CFG_BOOL, OFF(f), 0, 0, 1, def, NULL, help \
	}
/* The old spellings of a processor line's key: processor_KEY is KEY of
 * the first processor, processor2_KEY of the second (min: which). */
#define SLOT(prefix, which, key, help)                              \
	{                                                               \
		prefix #key, CFG_PROC, 0, 0, which, which, NULL, NULL, help \
	}
#define SECOND(key, help)       \
	SLOT("processor2_", 1, key, \
	     "second processor's " help " (old spelling: see processor)")
#define OLD(key, help)                                                \
	SLOT("processor_", 0, key,                                        \
	     "first processor's " help " (old spelling: see processor)"), \
	    SECOND(key, help)

static const struct cfg_directive directives[] = {
	STR(listen, "127.0.0.1:8080",
	    "address:port the website API listens on ([::1]:port for IPv6)"),
	INT(workers, 0, 64, "0", "reactor threads; 0 = one per core"),
	ENUM(mode, "development|production", "production",
	     "production refuses development shortcuts"),
	STR(data_dir, "./var", "directory for the database and keys"),
	STR(database, "", "SQLite file (default DATA_DIR/flairgw.db)"),
	STR(keys_dir, "", "key ring directory (default DATA_DIR/keys)"),
	STR(kek_file, "",
	    "file with the 32-byte key-encrypting key (keep it outside DATA_DIR)"),
	STR(kek_env, "", "environment variable holding the KEK in base64"),
	STR(kek_share1, "", "first KEK share file (split knowledge)"),
	STR(kek_share2, "", "second KEK share file"),
	INT(box_key_grace_s, 0, 31536000, "604800",
	    "seconds a rotated encryptedCard key stays valid"),
	ENUM(log_level, "error|warn|info|debug", "info", "log verbosity"),
	ENUM(log_format, "text|json", "text", "log line format"),
	STR(log_file, "", "log file (default: standard error)"),
	STR(access_log, "on", "one line per request: on (the log), off, or a file path"),
	{ "api_key", CFG_APIKEY, 0, 0, 0, 0, NULL, NULL,
	  "\"KEY CLIENT_ID\": a website API key and the client it authenticates (repeatable)" },
	INT(max_body_bytes, 256, 16777216, "65536", "largest request body (413 above)"),
	INT(max_header_bytes, 512, 1048576, "8192", "largest request header block"),
	INT(read_timeout_ms, 100, 600000, "10000",
	    "timeout for reading a request and for writing its answer"),
	INT(header_timeout_ms, 100, 600000, "10000",
	    "time for a whole request head, from its first byte"),
	INT(keepalive_timeout_ms, 100, 3600000, "15000",
	    "idle time before a keep-alive connection is closed"),
	ENUM(store_backend, "sqlite|postgresql", "sqlite",
	     "sqlite: one process on the database file; postgresql: any number of instances on "
	     "one PostgreSQL database (store_dsn or store_dsn_file)"),
	STR(store_dsn, "",
	    "postgresql: libpq connection string (key=value or postgresql:// URI; never shown or "
	    "logged; keep a password in store_dsn_file instead)"),
	STR(store_dsn_file, "", "postgresql: file (mode 0600) holding the connection string"),
	ENUM(store_sync, "full|normal", "full", "SQLite synchronous mode for commits"),
	INT(store_batch_max, 1, 100000, "256", "most transactions in one group commit"),
	INT(store_read_threads, 1, 64, "4",
	    "PostgreSQL: threads (one connection each) reading for the reactors"),
	INT(store_max_pages, 0, 2147483647, "0",
	    "cap on the database size in pages (0: none; below the size at start: no growth)"),
	INT(store_stall_ms, 100, 3600000, "10000",
	    "/healthz answers 503 when a store job has waited this long"),
	INT(max_amount, 1, 100000000000000LL, "1000000",
	    "largest amount per transaction, minor units"),
	STR(currencies, "USD,EUR,GBP,CAD,AUD,JPY,CHF,SEK,NOK,DKK,NZD,MXN,BRL,INR,SGD,HKD",
	    "accepted ISO 4217 currencies, comma-separated"),
	STR(stages_request, "token,decrypt,rule,encrypt,post", "request pipeline order"),
	STR(stages_response, "decrypt,record,post", "response pipeline order"),
	{ "processor", CFG_PROC_LINE, 0, 0, 0, 0, NULL, NULL,
	  "\"NAME key=value...\": one processor instance (repeatable; the order is the failover "
	  "order, the first takes what no route sends elsewhere). Keys: type, url, public_key_file, "
	  "secret_file, secret_env, secret, map_file, api_version, ca_file, verify_tls, client_cert, "
	  "client_key, timeout_ms, connect_timeout_ms, max_conns" },
	OLD(name, "name"),
	OLD(type, "adapter type"),
	OLD(url, "base URL"),
	OLD(public_key_file, "sealing public key (JSON key file)"),
	OLD(secret, "API credential (never logged)"),
	OLD(secret_file, "file (mode 0600) holding the API credential"),
	OLD(secret_env, "environment variable holding the API credential"),
	OLD(map_file, "mapping file (type generic, docs/adapters.md)"),
	OLD(api_version, "pinned API version (stripe: Stripe-Version, default 2024-06-20)"),
	OLD(ca_file, "CA bundle for its TLS certificate"),
	OLD(verify_tls, "TLS certificate verification (yes/no)"),
	OLD(client_cert, "client certificate (PEM), with client_key"),
	OLD(client_key, "private key (PEM) of client_cert"),
	INT(processor_timeout_ms, 100, 120000, "15000",
	    "total time for one processor call (a processor's timeout_ms overrides it)"),
	INT(processor_connect_timeout_ms, 50, 60000, "2000",
	    "connect timeout to a processor (a processor's connect_timeout_ms overrides it)"),
	INT(processor_max_conns, 1, 10000, "64",
	    "connections per reactor to a processor (a processor's max_conns overrides it)"),
	SECOND(timeout_ms, "total time for one call (0: processor_timeout_ms)"),
	SECOND(connect_timeout_ms, "connect timeout (0: processor_connect_timeout_ms)"),
	SECOND(max_conns, "connections per reactor (0: processor_max_conns)"),
	INT(shutdown_timeout_ms, 0, 600000, "10000",
	    "how long SIGTERM waits for in-flight transactions"),
	INT(payments_inflight_max, 0, 1000000, "512",
	    "payments running at once per reactor; more wait in arrival order (0: no limit)"),
	INT(idempotency_ttl_s, 60, 2592000, "86400",
	    "how long idempotent answers are replayed"),
	STR(rules_file, "",
	    "rules file (default: none; built-in validation and limits only)"),
	STR(jwt_issuer, "", "customer JWTs: required iss (enables JWT authentication)"),
	STR(jwt_audience, "", "customer JWTs: required aud or client_id"),
	STR(jwt_token_use, "",
	    "customer JWTs: required token_use (e.g. access), empty = not checked"),
	STR(jwt_jwks_file, "",
	    "customer JWTs: JWKS file with the RS256 keys (reloaded on SIGHUP)"),
	STR(jwt_hs256_secret_file, "",
	    "customer JWTs: file with the HS256 shared secret (>= 32 bytes)"),
	INT(jwt_leeway_s, 0, 300, "30", "customer JWTs: allowed clock skew for exp/nbf"),
	STR(jwt_client, "",
	    "customer JWTs: the API client they act for (default: jwt_audience); a token's client_id claim never chooses it"),
	STR(jwt_namespace, "idp",
	    "customer JWTs: their customers are stored as jwt:NAMESPACE/SUB; change it when jwt_issuer moves to another identity provider"),
	STR(admin_token_file, "",
	    "file with the operator token for /v1/admin/* (development mode only; >= 32 characters)"),
	INT(audit_refusal_window_s, 1, 3600, "60",
	    "refused requests (bad credentials, webhooks): audit window"),
	INT(audit_refusal_burst, 0, 1000, "20",
	    "refusals audited one by one per window and source network; the rest are counted in one summary row"),
	INT(encrypted_card_max_age_s, 10, 86400, "900",
	    "oldest encryptedCard accepted (its sealed iat)"),
	INT(encrypted_card_max_skew_s, 0, 600, "60",
	    "how far in the future an encryptedCard iat may be"),
	BOOL(encrypted_card_require_iat, "1",
	     "refuse encryptedCard blobs without iat (0 only while browsers are upgraded)"),
	INT(vault_onetime_ttl_s, 0, 2592000, "900",
	    "lifetime of an unsaved (one-time) card in the vault; 0 = until the sweep after a final failure"),
	INT(vault_sweep_interval_s, 1, 86400, "60",
	    "how often expired one-time cards are purged"),
	INT(keyring_watch_ms, 0, 3600000, "1000",
	    "how often the key ring (keyring.json, or the PostgreSQL store's key_ring) is checked "
	    "for rotations by flairctl or another instance (0 = SIGHUP only)"),
	INT(velocity_refresh_ms, -1, 600000, "-1",
	    "how often other instances' attempts are read into the velocity counts (-1: 1000 on "
	    "store_backend postgresql, off on sqlite; 0: off)"),
	STR(tls_cert_file, "", "website listener: PEM certificate chain (enables TLS 1.2+)"),
	STR(tls_key_file, "", "website listener: PEM private key for tls_cert_file"),
	{ "inbound_webhook", CFG_WH_IN, 0, 0, 0, 0, NULL, NULL,
	  "\"PROCESSOR SCHEME SECRET_FILE\": accept POST /v1/webhooks/PROCESSOR signed "
	  "(SCHEME: the processor type whose webhooks these are; its signature header) with the "
	  "secret in the file (repeatable: several secrets during rotation)" },
	{ "webhook_endpoint", CFG_WH_OUT, 0, 0, 0, 0, NULL, NULL,
	  "\"URL SECRET_FILE\": send signed transaction events to URL (Flair-Signature "
	  "with the secret in the file; repeatable)" },
	INT(webhook_tolerance_s, 1, 3600, "300",
	    "inbound webhooks: accepted clock difference of t="),
	INT(webhook_retry_base_ms, 10, 3600000, "30000",
	    "outbound webhooks: first retry delay, doubled per attempt"),
	INT(webhook_max_age_s, 1, 2592000, "259200",
	    "outbound webhooks: give up this long after the event"),
	INT(webhook_poll_ms, 10, 60000, "1000",
	    "outbound webhooks: how often the outbox is checked"),
	INT(webhook_timeout_ms, 100, 120000, "10000",
	    "outbound webhooks: time for one delivery"),
	STR(mail_url, "",
	    "e-mail: smtp://HOST:PORT or smtps://HOST:PORT of the mail server (\"\": no e-mail)"),
	BOOL(mail_starttls, "0",
	     "e-mail: require STARTTLS on smtp:// (refuse to send in clear)"),
	STR(mail_username, "", "e-mail: SMTP AUTH user name (needs mail_password_file)"),
	STR(mail_password_file, "",
	    "e-mail: file holding the SMTP AUTH password (mode 0600)"),
	STR(mail_ca_file, "",
	    "e-mail: PEM CA bundle the mail server's certificate must chain to"),
	BOOL(mail_verify_tls, "1", "e-mail: verify the mail server's certificate and name"),
	STR(mail_from, "", "e-mail: default sender address (needed with mail_url)"),
	STR(mail_admin, "", "e-mail: default address of operators' alerts (\"\": none)"),
	{ "mail_client", CFG_MAIL_CLIENT, 0, 0, 0, 0, NULL, NULL,
	  "\"CLIENT_ID FROM ADMIN\": sender and alert address for one API client's mail (repeatable)" },
	STR(mail_templates_dir, "./etc/mail",
	    "e-mail: directory of KIND.txt and KIND.html templates"),
	INT(mail_retry_base_ms, 10, 3600000, "30000",
	    "e-mail: first retry delay, doubled per attempt"),
	INT(mail_max_age_s, 1, 2592000, "172800",
	    "e-mail: give up this long after the mail was queued"),
	INT(mail_poll_ms, 10, 60000, "1000", "e-mail: how often the outbox is checked"),
	INT(mail_timeout_ms, 100, 300000, "30000", "e-mail: time for one SMTP delivery"),
	INT(mail_concurrency, 1, 16, "2", "e-mail: deliveries in flight at once"),
	INT(mail_failure_rate_pct, 1, 100, "50",
	    "e-mail: alert when this % of the last payments failed or were declined"),
	INT(mail_failure_rate_window, 5, 10000, "20",
	    "e-mail: how many recent payments the failure rate covers"),
	INT(mail_reconcile_stuck_s, 1, 604800, "3600",
	    "e-mail: alert when a payment's outcome is still unknown this long after it began (at most once per period)"),
	STR(pid_file, "",
	    "file holding the daemon's pid, locked while it runs (default DATA_DIR/flairgw.pid)"),
	STR(slots_file, "",
	    "reservations: experiences and time slots loaded at start (JSON, docs/reservations.md)"),
	INT(hold_minutes, 1, 1440, "15", "reservations: how long a hold keeps its places"),
	INT(hold_sweep_ms, 100, 600000, "1000",
	    "reservations: how often expired holds are released and old idempotency keys pruned"),
	INT(breaker_failures, 1, 1000, "5",
	    "consecutive failures of one processor that open its breaker (new payments go to the next processor)"),
	INT(breaker_open_ms, 100, 3600000, "30000",
	    "how long a breaker stays open before one probe"),
	INT(reconcile_interval_ms, 50, 3600000, "30000",
	    "how often unresolved transactions are looked at"),
	INT(reconcile_grace_ms, 0, 3600000, "0",
	    "age after which posting is reconciled (0: the longest processor timeout + 5000)"),
	INT(reconcile_not_found_settle_ms, -1, 86400000, "-1",
	    "trust a processor's \"no such payment\" only this long after the attempt (-1: the adapter's own; stripe 1 h)"),
	INT(reconcile_max_attempts, 1, 1000, "30", "status requests before manual review"),
	INT(reconcile_backoff_max_ms, 50, 86400000, "3600000",
	    "longest wait between two status requests"),
	INT(reconcile_concurrency, 1, 1024, "16",
	    "processor requests the reconciler has out at once (a backlog is cleared at this pace)"),
	STR(test_exit_after_status, "",
	    "development only, for crash tests: the process ends (exit 70) right after the first commit that leaves a transaction in this status (reservation:STATUS: a reservation)"),
	INT(reconcile_3ds_expiry_ms, 1000, 2592000000LL, "3600000",
	    "a payment still waiting for 3-D Secure this long is cancelled at the processor and failed (its reservation's places come back)"),
	{ "route", CFG_ROUTE, 0, 0, 0, 0, NULL, NULL,
	  "\"PROCESSOR [currency=..] [brand=..] [country=..] [amount_min=N] [amount_max=N] [weight=N]\": routing (repeatable, first match wins)" },
	STR(return_url_origins, "",
	    "origins a transaction's returnUrl (3-D Secure) may point to, comma- or space-separated "
	    "(https://shop.example); empty: returnUrl is refused"),
	INT(audit_checkpoint_interval_s, 0, 86400, "300",
	    "seconds between signed audit checkpoints; 0 = only at shutdown"),
	STR(backup_dir, "", "directory for encrypted backups (default DATA_DIR/backups)"),
	INT(backup_interval_s, 0, 31536000, "0",
	    "seconds between scheduled backups; 0 = none"),
	INT(backup_keep_last, 1, 100000, "7", "backups kept regardless of age"),
	INT(backup_keep_days, 0, 36500, "30",
	    "also keep the newest backup of each of this many days"),
	STR(s3_endpoint, "",
	    "S3-compatible endpoint URL for backup upload (empty = no upload)"),
	STR(s3_bucket, "", "bucket for backup upload"),
	STR(s3_region, "us-east-1", "region for AWS Signature V4"),
	STR(s3_prefix, "", "key prefix for uploaded backups"),
	STR(s3_access_key_file, "", "file holding the S3 access key id"),
	STR(s3_secret_key_file, "", "file holding the S3 secret access key"),
	INT(s3_retries, 0, 1000, "5", "upload retries after a failure"),
	INT(s3_retry_base_ms, 10, 600000, "1000",
	    "first wait before an upload retry (doubles, at most 30 s)"),
	STR(cors_origins, "",
	    "origins whose browsers may call the customer routes (CORS), comma- or space-separated; "
	    "empty: none in production, the gateway's own http://LISTEN origin in development"),
	STR(trusted_proxies, "",
	    "peer addresses whose X-Forwarded-For names the client (comma- or space-separated)"),
	INT(rate_payment_per_min, 0, 1000000, "5",
	    "payment attempts (convert, browser confirm) per client IP a minute; 0 = no limit"),
	INT(rate_browser_per_min, 0, 1000000, "120",
	    "other customer-route requests per client IP a minute; 0 = no limit"),
	INT(rate_api_key_per_min, 0, 10000000, "6000",
	    "requests per website API key a minute; 0 = no limit"),
	INT(rate_table_size, 64, 4194304, "65536", "request-limit buckets kept in memory"),
	STR(web_dir, "",
	    "directory with flair.js and the development demo (make builds build/web); empty: not served"),
	{ NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL },
};

static const struct cfg_directive *
find(const char *name)
{
	for (const struct cfg_directive *d = directives; d->name; d++)
		if (strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

static int
fail(struct fgw_why *why, const char *where, const char *fmt, const char *arg)
{
	char msg[384];
	snprintf(msg, sizeof(msg), fmt, arg);
	fgw_why_set(why, where, 0, 0, "%s", msg);
	return FGW_ERR_INVALID;
}

static int
set_api_key(struct fgw_config *cfg, const char *value, const char *where,
            struct fgw_why *why)
{
	const char *sp = strchr(value, ' ');
	struct config_api_key *k;
	size_t klen;
	if (sp == NULL)
		return fail(why, where, "api_key needs \"KEY CLIENT_ID\"%s", "");
	klen = (size_t)(sp - value);
	while (*sp == ' ')
		sp++;
	if (klen < 8 || klen > 256)
		return fail(why, where, "api_key KEY must be 8 to 256 characters%s", "");
	if (*sp == '\0' || strlen(sp) >= sizeof(k->client_id) || strchr(sp, ' '))
		return fail(why, where,
		            "api_key CLIENT_ID must be one word of at most 63 characters%s", "");
	if (config_client_for_key(cfg, value, klen) != NULL)
		return fail(why, where, "api_key given twice%s", "");
	if (cfg->n_api_keys == CONFIG_MAX_API_KEYS)
		return fail(why, where, "too many api_key lines%s", "");
	k = &cfg->api_keys[cfg->n_api_keys++];
	crypto_generichash(k->hash, sizeof(k->hash), (const unsigned char *)value, klen, NULL,
	                   0);
	fgw_strlcpy(k->client_id, sp, sizeof(k->client_id));
	return FGW_OK;
}

/* Splits value into n space-separated words (the last takes the rest). */
static int
split_words(const char *value, char words[][512], int n)
{
	const char *p = value;
	for (int i = 0; i < n; i++) {
		size_t len;
		while (*p == ' ')
			p++;
		len = i == n - 1 ? strlen(p) : strcspn(p, " ");
		if (len == 0 || len >= 512)
			return FGW_ERR_INVALID;
		memcpy(words[i], p, len);
		words[i][len] = '\0';
		p += len;
	}
	return FGW_OK;
}

/* route "PROCESSOR key=value...": parsed now, so a bad line stops
 * start-up with its file and line; names are checked in config_finish. */
static int
set_route(struct fgw_config *cfg, const char *value, const char *where,
          struct fgw_why *why)
{
	struct fgw_why rw = { 0 };
	char msg[sizeof(rw.where) + sizeof(rw.msg) + 8];

	if (cfg->routes.n == PROC_ROUTES_MAX)
		return fail(why, where, "too many route lines%s", "");
	if (proc_route_parse(value, &cfg->routes.r[cfg->routes.n], &rw) != 0)
		return fail(why, where, "%s", fgw_why_format(&rw, msg, sizeof(msg)));
	cfg->routes.n++;
	return FGW_OK;
}

/* The first processor when none was configured: today's defaults. */
static void
default_processor(struct proc_settings *s)
{
	proc_settings_init(s, "sandbox");
	fgw_strlcpy(s->url, "http://127.0.0.1:8081", sizeof(s->url));
}

/* processor "NAME key=value...": a new instance, or more keys of one. */
static int
set_processor_line(struct fgw_config *cfg, const char *value, const char *where,
                   struct fgw_why *why)
{
	struct fgw_why pw;
	char msg[384];

	if (proc_settings_line(cfg->procs, &cfg->n_procs, PROC_INSTANCES_MAX, value, &pw) !=
	    0)
		return fail(why, where, "%s", fgw_why_format(&pw, msg, sizeof(msg)));
	return FGW_OK;
}

/* processor_KEY / processor2_KEY: KEY of the first / second instance,
 * made (with the defaults) when there is none yet. */
static int
set_processor_key(struct fgw_config *cfg, int which, const char *directive,
                  const char *value, const char *where, struct fgw_why *why)
{
	size_t plen = strcspn(directive, "_") + 1;
	struct proc_settings *s;
	struct fgw_why pw;
	char msg[384];

	while (cfg->n_procs <= which) {
		s = &cfg->procs[cfg->n_procs];
		if (cfg->n_procs++ == 0)
			default_processor(s);
		else
			proc_settings_init(s, "");
	}
	s = &cfg->procs[which];
	if (plen >= sizeof(s->old_prefix))
		return FGW_ERR_INTERNAL;
	memcpy(s->old_prefix, directive, plen);
	s->old_prefix[plen] = '\0';
	if (proc_settings_set(s, directive + plen, value, &pw) != 0)
		return fail(why, where, "%s", fgw_why_format(&pw, msg, sizeof(msg)));
	return FGW_OK;
}

static int
set_mail_client(struct fgw_config *cfg, const char *value, const char *where,
                struct fgw_why *why)
{
	struct config_mail_client *mc;
	char w[3][512];
	if (split_words(value, w, 3) != 0 || strchr(w[2], ' ') != NULL)
		return fail(why, where, "mail_client needs \"CLIENT_ID FROM ADMIN\"%s", "");
	if (cfg->n_mail_clients == CONFIG_MAX_MAIL_CLIENTS)
		return fail(why, where, "too many mail_client lines%s", "");
	mc = &cfg->mail_clients[cfg->n_mail_clients];
	if (fgw_strlcpy(mc->client_id, w[0], sizeof(mc->client_id)) != 0 ||
	    fgw_strlcpy(mc->from, w[1], sizeof(mc->from)) != 0 ||
	    fgw_strlcpy(mc->admin, w[2], sizeof(mc->admin)) != 0)
		return fail(why, where, "mail_client: a word is too long%s", "");
	/* Addresses are checked strictly when the mail module starts. */
	cfg->n_mail_clients++;
	return FGW_OK;
}

static int
set_webhook(struct fgw_config *cfg, int inbound, const char *value, const char *where,
            struct fgw_why *why)
{
	char w[3][512];
	if (inbound) {
		struct config_inbound_webhook *e;
		if (split_words(value, w, 3) != 0 || strlen(w[0]) >= sizeof(e->processor) ||
		    strspn(w[0], "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(w[0]))
			return fail(why, where,
			            "inbound_webhook needs \"PROCESSOR SCHEME "
			            "SECRET_FILE\" (PROCESSOR: a-z 0-9 _ -)%s",
			            "");
		if (proc_type_webhooks(w[1]) == NULL) {
			char names[128];
			proc_type_webhook_names(names, sizeof(names));
			return fail(why, where, "inbound_webhook SCHEME must be %s", names);
		}
		for (int i = 0; i < cfg->n_inbound_webhooks; i++)
			if (strcmp(cfg->inbound_webhooks[i].processor, w[0]) == 0 &&
			    strcmp(cfg->inbound_webhooks[i].scheme, w[1]) != 0)
				return fail(why, where, "inbound_webhook: one processor, one SCHEME%s",
				            "");
		if (cfg->n_inbound_webhooks == CONFIG_MAX_INBOUND_WEBHOOKS)
			return fail(why, where, "too many inbound_webhook lines%s", "");
		e = &cfg->inbound_webhooks[cfg->n_inbound_webhooks++];
		fgw_strlcpy(e->processor, w[0], sizeof(e->processor));
		fgw_strlcpy(e->scheme, w[1], sizeof(e->scheme));
		fgw_strlcpy(e->secret_file, w[2], sizeof(e->secret_file));
		return FGW_OK;
	}
	if (split_words(value, w, 2) != 0 ||
	    (strncmp(w[0], "http://", 7) != 0 && strncmp(w[0], "https://", 8) != 0) ||
	    strspn(w[0], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	                 "-._~:/?#[]@!$&'()*+,;=%") != strlen(w[0]))
		return fail(why, where,
		            "webhook_endpoint needs \"URL SECRET_FILE [CLIENT_ID]\" "
		            "with an http:// or https:// URL%s",
		            "");
	if (cfg->n_webhook_endpoints == CONFIG_MAX_WEBHOOK_ENDPOINTS)
		return fail(why, where, "too many webhook_endpoint lines%s", "");
	{
		/* An optional third word names the API client it serves. */
		char *sp = strchr(w[1], ' ');
		struct config_webhook_endpoint *ep =
		    &cfg->webhook_endpoints[cfg->n_webhook_endpoints];
		ep->client_id[0] = '\0';
		if (sp != NULL) {
			*sp++ = '\0';
			while (*sp == ' ')
				sp++;
			if (*sp == '\0' || strchr(sp, ' ') != NULL ||
			    fgw_strlcpy(ep->client_id, sp, sizeof(ep->client_id)) != 0)
				return fail(why, where,
				            "webhook_endpoint CLIENT_ID must be one "
				            "word of at most 63 characters%s",
				            "");
		}
	}
	fgw_strlcpy(cfg->webhook_endpoints[cfg->n_webhook_endpoints].url, w[0],
	            sizeof(cfg->webhook_endpoints[0].url));
	fgw_strlcpy(cfg->webhook_endpoints[cfg->n_webhook_endpoints].secret_file, w[1],
	            sizeof(cfg->webhook_endpoints[0].secret_file));
	cfg->n_webhook_endpoints++;
	return FGW_OK;
}

int
config_set(struct fgw_config *cfg, const char *name, const char *value, const char *where,
           struct fgw_why *why)
{
	const struct cfg_directive *d = find(name);
	char *base = (char *)cfg;
	int64_t v;

	if (d == NULL)
		return fail(why, where, "unknown directive '%.64s'", name);
	switch (d->type) {
	case CFG_APIKEY:
		return set_api_key(cfg, value, where, why);
	case CFG_ROUTE:
		return set_route(cfg, value, where, why);
	case CFG_PROC_LINE:
		return set_processor_line(cfg, value, where, why);
	case CFG_PROC:
		return set_processor_key(cfg, (int)d->min, d->name, value, where, why);
	case CFG_MAIL_CLIENT:
		return set_mail_client(cfg, value, where, why);
	case CFG_WH_IN:
	case CFG_WH_OUT:
		return set_webhook(cfg, d->type == CFG_WH_IN, value, where, why);
	case CFG_STR:
		if (strlen(value) >= d->size)
			return fail(why, where, "value for %s is too long", d->name);
		memcpy(base + d->offset, value, strlen(value) + 1);
		return FGW_OK;
	case CFG_ENUM: {
		size_t n = strlen(value);
		const char *c = d->choices;
		while (c && *c) {
			const char *bar = strchr(c, '|');
			size_t len = bar ? (size_t)(bar - c) : strlen(c);
			if (n > 0 && len == n && strncmp(c, value, n) == 0) {
				memcpy(base + d->offset, value, n + 1);
				return FGW_OK;
			}
			c = bar ? bar + 1 : NULL;
		}
		char msg[200];
		snprintf(msg, sizeof(msg), "%s must be one of %s", d->name, d->choices);
		return fail(why, where, "%s", msg);
	}
	case CFG_BOOL:
		if (fgw_parse_bool(value, (long long *)(void *)(base + d->offset)) != FGW_OK)
			return fail(why, where, "%s must be yes or no", d->name);
		return FGW_OK;
	case CFG_INT:
		if (fgw_parse_i64(value, d->min, d->max, &v) != 0) {
			char msg[200];
			snprintf(msg, sizeof(msg), "%s must be an integer from %lld to %lld", d->name,
			         d->min, d->max);
			return fail(why, where, "%s", msg);
		}
		*(long long *)(void *)(base + d->offset) = v;
		return FGW_OK;
	}
	return FGW_ERR_INTERNAL;
}

void
config_defaults(struct fgw_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (const struct cfg_directive *d = directives; d->name; d++)
		if (d->def != NULL)
			config_set(cfg, d->name, d->def, "default", NULL);
}

static char *
trim(char *s)
{
	char *e;
	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int
config_load_file(struct fgw_config *cfg, const char *path, struct fgw_why *why)
{
	char *text = NULL, *line, *save = NULL;
	size_t text_len = 0;
	int lineno = 0, r;

	if ((r = fgw_read_file(path, 1 << 20, &text, &text_len)) != 0) {
		fgw_why_set(why, path, 0, 0, "cannot read configuration: %s", fgw_strerror(r));
		return r;
	}
	r = FGW_OK;
	/* strtok_r would merge empty lines and shift line numbers: split by hand. */
	for (line = text; line != NULL; line = save) {
		char *nl = strchr(line, '\n'), *name, *value, *hash;
		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		lineno++;
		if ((hash = strchr(line, '#')) != NULL) {
			/* a '#' inside quotes is kept */
			char *q = strchr(line, '"');
			if (q == NULL || q > hash)
				*hash = '\0';
		}
		name = trim(line);
		if (*name == '\0')
			continue;
		value = name;
		while (*value && !isspace((unsigned char)*value))
			value++;
		if (*value)
			*value++ = '\0';
		value = trim(value);
		if (*value == '"') {
			size_t n = strlen(value);
			if (n < 2 || value[n - 1] != '"') {
				r = fail(why, path, "unterminated quote%s", "");
				break;
			}
			value[n - 1] = '\0';
			value++;
		} else if (*value == '\0' && find(name) != NULL) {
			r = fail(why, path, "%s needs a value", name);
			break;
		}
		if ((r = config_set(cfg, name, value, path, why)) != 0)
			break;
	}
	/* Every refusal above names the file; the line goes with it. */
	if (r != 0 && why != NULL)
		why->line = lineno;
	/* The text held API keys and the processor secret. */
	sodium_memzero(text, text_len);
	free(text);
	return r;
}

int
config_from_args(struct fgw_config *cfg, int argc, char **argv, int *help,
                 struct fgw_why *why)
{
	int r;
	*help = 0;
	/* --config first, so the command line overrides the file. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			*help = 1;
			return FGW_OK;
		}
		if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0) {
			const char *path = argv[i][8] == '=' ? argv[i] + 9
			                                     : (i + 1 < argc ? argv[++i] : NULL);
			if (path == NULL)
				return fail(why, "--config", "needs a file%s", "");
			if ((r = config_load_file(cfg, path, why)) != 0)
				return r;
		}
	}
	for (int i = 1; i < argc; i++) {
		char name[64], where[80];
		const char *arg = argv[i], *eq, *value;
		size_t n;
		if (strcmp(arg, "--config") == 0) {
			i++;
			continue;
		}
		if (strncmp(arg, "--config=", 9) == 0)
			continue;
		if (strncmp(arg, "--", 2) != 0)
			return fail(why, "command line", "unexpected argument '%.64s'", arg);
		arg += 2;
		eq = strchr(arg, '=');
		n = eq ? (size_t)(eq - arg) : strlen(arg);
		if (n == 0 || n >= sizeof(name))
			return fail(why, "command line", "bad option '%.64s'", argv[i]);
		for (size_t k = 0; k < n; k++)
			name[k] = arg[k] == '-' ? '_' : arg[k];
		name[n] = '\0';
		if (eq)
			value = eq + 1;
		else if (i + 1 < argc)
			value = argv[++i];
		else
			return fail(why, "command line", "--%s needs a value", name);
		snprintf(where, sizeof(where), "--%s", name);
		if ((r = config_set(cfg, name, value, where, why)) != 0)
			return r;
	}
	return FGW_OK;
}

static int
derive_path(char *dst, size_t cap, const char *dir, const char *leaf)
{
	int n = snprintf(dst, cap, "%s/%s", dir, leaf);
	return (n < 0 || (size_t)n >= cap) ? FGW_ERR_TOO_LARGE : FGW_OK;
}

/* http://127.0.0.1[:port][/...] or http://[::1][:port][/...] exactly. */
static int
is_loopback_url(const char *url)
{
	static const char *const hosts[] = { "http://127.0.0.1", "http://[::1]",
		                                 "http://localhost" };
	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		size_t n = strlen(hosts[i]);
		if (strncmp(url, hosts[i], n) == 0 &&
		    (url[n] == '\0' || url[n] == ':' || url[n] == '/'))
			return 1;
	}
	return 0;
}

/* Where finish sends each problem: the first into why, every one to the
 * callback. */
struct finish_ctx {
	struct fgw_why *why;
	int n;
	void (*problem)(void *arg, const char *msg);
	void *arg;
};

static int
bad(struct finish_ctx *f, const char *where, const char *fmt, const char *arg)
{
	struct fgw_why w;
	char msg[sizeof(w.where) + sizeof(w.msg) + 8];
	fail(&w, where, fmt, arg);
	if (f->n++ == 0 && f->why != NULL)
		*f->why = w;
	if (f->problem != NULL)
		f->problem(f->arg, fgw_why_format(&w, msg, sizeof(msg)));
	return FGW_ERR_INVALID;
}

/* One processor's cross-field rules. Default sealing key: the file
 * `flairctl keys processor-import NAME FILE` writes; types that take the
 * clear card (stripe) have none. */
static void
processor_finish(struct fgw_config *cfg, struct proc_settings *s, struct finish_ctx *f)
{
	const struct proc_type *pt = proc_type_find(s->type);
	char where[96], leaf[96];
	int n;

	if (s->public_key_file[0] == '\0' && (pt == NULL || !pt->needs_clear_card)) {
		n = snprintf(leaf, sizeof(leaf), "processor-%s.json", s->name);
		if (n < 0 || (size_t)n >= sizeof(leaf) ||
		    derive_path(s->public_key_file, sizeof(s->public_key_file), cfg->keys_dir,
		                leaf) != 0)
			bad(f, "config", "keys_dir or the processor's name is too long%s", "");
	}
	proc_settings_where(s, "url", where, sizeof(where));
	if (strncmp(s->url, "http://", 7) != 0 && strncmp(s->url, "https://", 8) != 0)
		bad(f, "config", "%s must be an http:// or https:// URL", where);
	else if (strcmp(cfg->mode, "production") == 0 &&
	         strncmp(s->url, "https://", 8) != 0 && !is_loopback_url(s->url))
		bad(f, "config", "production mode needs an https:// %s", where);
	if ((s->client_cert[0] == '\0') != (s->client_key[0] == '\0'))
		bad(f, "config",
		    "a processor client certificate needs its key, and a key its certificate%s",
		    "");
}

/* The processor list: the default one when none was configured, the old
 * second processor only when it has a name (as before), names unique,
 * routes naming configured ones. */
static void
processors_finish(struct fgw_config *cfg, struct finish_ctx *f)
{
	int n = 0, old_only = 1;

	if (cfg->n_procs == 0) {
		default_processor(&cfg->procs[0]);
		cfg->n_procs = 1;
	}
	for (int i = 0; i < cfg->n_procs; i++) {
		if (cfg->procs[i].name[0] == '\0' && i > 0)
			continue;
		if (n != i)
			cfg->procs[n] = cfg->procs[i];
		n++;
	}
	for (int i = n; i < cfg->n_procs; i++)
		sodium_memzero(&cfg->procs[i], sizeof(cfg->procs[i]));
	cfg->n_procs = n;
	/* Errors speak the spelling the operator used. */
	for (int i = 0; i < n; i++)
		old_only &= cfg->procs[i].old_prefix[0] != '\0';
	if (cfg->procs[0].name[0] == '\0')
		bad(f, "config", "processor_name: required%s", "");
	for (int i = 0; i < n; i++) {
		processor_finish(cfg, &cfg->procs[i], f);
		for (int j = 0; j < i; j++)
			if (strcmp(cfg->procs[i].name, cfg->procs[j].name) == 0)
				bad(f, "config",
				    !old_only ? "two processors are called %s"
				              : "processor2_name: must differ from processor_name (%s)",
				    cfg->procs[i].name);
	}
	for (int i = 0; i < cfg->routes.n; i++) {
		int found = 0;
		for (int j = 0; j < n; j++)
			found |= strcmp(cfg->routes.r[i].processor, cfg->procs[j].name) == 0;
		if (!found)
			bad(f, "config",
			    !old_only ? "route: %s is not a configured processor"
			              : "route: %s is neither processor_name nor processor2_name",
			    cfg->routes.r[i].processor);
	}
}

/* Every cross-field rule is checked even after one failed, so an operator
 * sees all of them at once; only a path that cannot be derived stops it
 * (the rules after it would read an empty path). */
static int
finish(struct fgw_config *cfg, struct finish_ctx *f)
{
	if (cfg->database[0] == '\0' && derive_path(cfg->database, sizeof(cfg->database),
	                                            cfg->data_dir, "flairgw.db") != 0)
		return bad(f, "config", "data_dir is too long%s", "");
	if (cfg->keys_dir[0] == '\0' &&
	    derive_path(cfg->keys_dir, sizeof(cfg->keys_dir), cfg->data_dir, "keys") != 0)
		return bad(f, "config", "data_dir is too long%s", "");
	if (cfg->pid_file[0] == '\0' && derive_path(cfg->pid_file, sizeof(cfg->pid_file),
	                                            cfg->data_dir, "flairgw.pid") != 0)
		return bad(f, "config", "data_dir is too long%s", "");
	if (cfg->backup_dir[0] == '\0' &&
	    derive_path(cfg->backup_dir, sizeof(cfg->backup_dir), cfg->data_dir, "backups") !=
	        0)
		return bad(f, "config", "data_dir is too long%s", "");
	if (cfg->s3_endpoint[0] != '\0' &&
	    (cfg->s3_bucket[0] == '\0' || cfg->s3_access_key_file[0] == '\0' ||
	     cfg->s3_secret_key_file[0] == '\0' ||
	     (strncmp(cfg->s3_endpoint, "https://", 8) != 0 &&
	      !is_loopback_url(cfg->s3_endpoint))))
		bad(f, "config",
		    "s3_endpoint needs s3_bucket, s3_access_key_file, s3_secret_key_file and an https:// (or loopback) URL%s",
		    "");
	if (strcmp(cfg->store_backend, "postgresql") == 0) {
		if (cfg->store_dsn[0] == '\0' && cfg->store_dsn_file[0] == '\0')
			bad(f, "config",
			    "store_backend postgresql needs store_dsn or store_dsn_file%s", "");
		else if (cfg->store_dsn[0] != '\0' && cfg->store_dsn_file[0] != '\0')
			bad(f, "config", "give one of store_dsn and store_dsn_file, not both%s", "");
	} else if (cfg->store_dsn[0] != '\0' || cfg->store_dsn_file[0] != '\0')
		bad(f, "config",
		    "%s is for store_backend postgresql (the SQLite store is `database`)",
		    cfg->store_dsn[0] != '\0' ? "store_dsn" : "store_dsn_file");
	if (cfg->kek_file[0] == '\0' && cfg->kek_env[0] == '\0' && cfg->kek_share1[0] == '\0')
		bad(f, "config",
		    "no KEK source: set kek_file, kek_env or kek_share1/kek_share2%s", "");
	if ((cfg->kek_share1[0] == '\0') != (cfg->kek_share2[0] == '\0'))
		bad(f, "config", "kek_share1 and kek_share2 go together%s", "");
	if (cfg->n_api_keys == 0)
		bad(f, "config", "no api_key configured: the API would refuse everyone%s", "");
	if (cfg->jwt_issuer[0] != '\0' &&
	    (cfg->jwt_audience[0] == '\0' ||
	     (cfg->jwt_jwks_file[0] == '\0' && cfg->jwt_hs256_secret_file[0] == '\0')))
		bad(f, "config",
		    "jwt_issuer needs jwt_audience and jwt_jwks_file or jwt_hs256_secret_file%s",
		    "");
	if (cfg->jwt_client[0] == '\0' &&
	    fgw_strlcpy(cfg->jwt_client, cfg->jwt_audience, sizeof(cfg->jwt_client)) != 0)
		bad(f, "config", "jwt_audience is longer than a client id: set jwt_client%s", "");
	if (cfg->jwt_namespace[0] == '\0' ||
	    strspn(cfg->jwt_namespace,
	           "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
	        strlen(cfg->jwt_namespace))
		bad(f, "config", "jwt_namespace must be letters, digits, '.', '_' or '-'%s", "");
	if ((cfg->tls_cert_file[0] == '\0') != (cfg->tls_key_file[0] == '\0'))
		bad(f, "config", "tls_cert_file and tls_key_file go together%s", "");
	processors_finish(cfg, f);
	if (strcmp(cfg->mode, "production") == 0 && cfg->test_exit_after_status[0] != '\0')
		bad(f, "config", "test_exit_after_status is refused in production mode%s", "");
	for (int i = 0; i < cfg->n_webhook_endpoints; i++)
		if (strcmp(cfg->mode, "production") == 0 &&
		    strncmp(cfg->webhook_endpoints[i].url, "https://", 8) != 0 &&
		    !is_loopback_url(cfg->webhook_endpoints[i].url)) {
			bad(f, "config", "production mode needs https:// webhook_endpoint URLs%s",
			    "");
			break; /* one line is enough; the URL may hold a token */
		}
	return f->n > 0 ? FGW_ERR_INVALID : FGW_OK;
}

int
config_finish(struct fgw_config *cfg, struct fgw_why *why)
{
	struct finish_ctx f = { why, 0, NULL, NULL };
	return finish(cfg, &f);
}

int
config_finish_each(struct fgw_config *cfg, void (*problem)(void *arg, const char *msg),
                   void *arg)
{
	struct finish_ctx f = { NULL, 0, problem, arg };
	return finish(cfg, &f);
}

void
config_print_help(FILE *out)
{
	fprintf(out, "usage: flairgw [--config FILE] [--DIRECTIVE VALUE ...]\n\n"
	             "Every directive can be set in the file (`name value`) or on the\n"
	             "command line (`--name value`), which overrides the file.\n\n");
	for (const struct cfg_directive *d = directives; d->name; d++) {
		fprintf(out, "  --%-30s %s", d->name, d->help);
		if (d->def != NULL && d->def[0] != '\0')
			fprintf(out, " [%s]", d->def);
		fputc('\n', out);
	}
}

/* text for an mdoc line: a backslash is \e, and a leading dot or quote
 * would start a request. */
static void
mdoc_text(FILE *out, const char *s)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", out);
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\e", out);
		else
			fputc(*s, out);
	}
}

void
config_print_mdoc(FILE *out)
{
	fputs(".Bl -tag -width Ds\n", out);
	for (const struct cfg_directive *d = directives; d->name; d++) {
		fprintf(out, ".It Ic %s\n", d->name);
		mdoc_text(out, d->help);
		fputc('\n', out);
		if (d->choices != NULL) {
			fputs("One of: ", out);
			mdoc_text(out, d->choices);
			fputs(".\n", out);
		}
		if (d->type == CFG_INT)
			fprintf(out, "From %lld to %lld.\n", d->min, d->max);
		if (d->def != NULL && d->def[0] != '\0') {
			fputs("Default: ", out);
			mdoc_text(out, d->def);
			fputs(".\n", out);
		}
	}
	fputs(".El\n", out);
}

const char *
config_client_for_key(const struct fgw_config *cfg, const char *key, size_t len)
{
	unsigned char h[32];
	const char *found = NULL;
	crypto_generichash(h, sizeof(h), (const unsigned char *)key, len, NULL, 0);
	/* Compare against every entry (no early exit) in constant time. */
	for (int i = 0; i < cfg->n_api_keys; i++)
		if (sodium_memcmp(h, cfg->api_keys[i].hash, sizeof(h)) == 0)
			found = cfg->api_keys[i].client_id;
	return found;
}
