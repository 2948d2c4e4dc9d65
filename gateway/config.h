/*
 * gateway/config.h — flairgw's configuration: one table of directives
 * drives file parsing, `--name value` overrides, validation and --help.
 *
 * File syntax: one directive per line, `name value`, `#` starts a comment,
 * values may be double-quoted. Repeatable directives (api_key) add to a
 * list. A bad line stops start-up with "FILE:LINE: reason".
 */
#ifndef FGW_GATEWAY_CONFIG_H
#define FGW_GATEWAY_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "processors/instance.h"
#include "processors/route.h"

#define CONFIG_MAX_API_KEYS 32

struct config_api_key {
	unsigned char hash[32]; /* BLAKE2b-256 of the key; the key is not kept */
	char client_id[64];
};

#define CONFIG_MAX_INBOUND_WEBHOOKS 16
#define CONFIG_MAX_WEBHOOK_ENDPOINTS 8

/* inbound_webhook "PROCESSOR SCHEME SECRET_FILE": one accepted secret of a
 * processor's webhooks (several lines for one processor during rotation). */
struct config_inbound_webhook {
	char processor[32];
	char scheme[16]; /* a processor type name: which signature header */
	char secret_file[512];
};

/* webhook_endpoint "URL SECRET_FILE [CLIENT_ID]": where a website hears
 * events; with CLIENT_ID only about that API client's transactions. */
struct config_webhook_endpoint {
	char url[512];
	char secret_file[512];
	char client_id[64]; /* "" = every client's events */
};

#define CONFIG_MAX_MAIL_CLIENTS 16

/* mail_client "CLIENT_ID FROM ADMIN": one API client's sender address and
 * the address its operators' alerts go to. */
struct config_mail_client {
	char client_id[64];
	char from[256];
	char admin[256];
};

struct fgw_config {
	char listen[128];
	long long workers;
	char mode[16]; /* development | production */
	char data_dir[512];
	char database[512];
	char keys_dir[512];
	char kek_file[512];
	char kek_env[64];
	char kek_share1[512];
	char kek_share2[512];
	long long box_key_grace_s;
	char log_level[16];
	char log_format[8];
	char log_file[512];
	char access_log[512];
	struct config_api_key api_keys[CONFIG_MAX_API_KEYS];
	int n_api_keys;
	long long max_body_bytes;
	long long max_header_bytes;
	long long read_timeout_ms;
	long long header_timeout_ms;
	long long keepalive_timeout_ms;
	char store_backend[16]; /* sqlite | postgresql */
	char store_dsn[1024];   /* postgresql: libpq connection string (never shown) */
	char store_dsn_file[512];
	char store_sync[8];
	long long store_batch_max;
	long long store_read_threads;
	long long store_max_pages;
	long long store_stall_ms;
	long long max_amount;
	char currencies[512];
	char stages_request[128];
	char stages_response[128];
	/* The processors, in failover order: `processor NAME key=value...`
	 * lines, or the old processor_KEY (first) and processor2_KEY (second)
	 * directives; config_finish adds the default one when none is given. */
	struct proc_settings procs[PROC_INSTANCES_MAX];
	int n_procs;
	/* Defaults of every processor's timeout_ms, connect_timeout_ms and
	 * max_conns. */
	long long processor_timeout_ms;
	long long processor_connect_timeout_ms;
	long long processor_max_conns;
	long long shutdown_timeout_ms;
	long long payments_inflight_max;
	long long idempotency_ttl_s;
	char rules_file[512];
	char jwt_issuer[256];
	char jwt_audience[256];
	char jwt_token_use[32];
	char jwt_jwks_file[512];
	char jwt_hs256_secret_file[512];
	long long jwt_leeway_s;
	long long vault_onetime_ttl_s;
	long long vault_sweep_interval_s;
	long long keyring_watch_ms;
	long long velocity_refresh_ms; /* -1: by store_backend */
	char tls_cert_file[512];
	char tls_key_file[512];
	struct config_inbound_webhook inbound_webhooks[CONFIG_MAX_INBOUND_WEBHOOKS];
	int n_inbound_webhooks;
	struct config_webhook_endpoint webhook_endpoints[CONFIG_MAX_WEBHOOK_ENDPOINTS];
	int n_webhook_endpoints;
	long long webhook_tolerance_s;
	long long webhook_retry_base_ms;
	long long webhook_max_age_s;
	long long webhook_poll_ms;
	long long webhook_timeout_ms;
	char pid_file[512]; /* written at start; flairctl signals it */
	/* reservations */
	char slots_file[512];
	long long hold_minutes;
	long long hold_sweep_ms;
	long long breaker_failures;
	long long breaker_open_ms;
	long long reconcile_interval_ms;
	long long reconcile_grace_ms;
	long long reconcile_not_found_settle_ms;
	long long reconcile_max_attempts;
	long long reconcile_backoff_max_ms;
	long long reconcile_concurrency;
	long long reconcile_3ds_expiry_ms;
	char test_exit_after_status[24];
	char return_url_origins[1024];
	struct proc_routes routes; /* route lines, parsed (processors/route.h) */
	/* audit checkpoints and backups */
	long long audit_checkpoint_interval_s;
	char backup_dir[512];
	long long backup_interval_s;
	long long backup_keep_last;
	long long backup_keep_days;
	char s3_endpoint[256];
	char s3_bucket[64];
	char s3_region[32];
	char s3_prefix[128];
	char s3_access_key_file[512];
	char s3_secret_key_file[512];
	long long s3_retries;
	long long s3_retry_base_ms;
	/* authentication and abuse */
	char jwt_client[64];    /* API client JWT customers act for ("" = jwt_audience) */
	char jwt_namespace[32]; /* customers it authenticates: "jwt:NAMESPACE/SUB" */
	char admin_token_file[512];
	long long audit_refusal_window_s;
	long long audit_refusal_burst;
	long long encrypted_card_max_age_s;
	long long encrypted_card_max_skew_s;
	long long encrypted_card_require_iat;
	/* the customer's browser: CORS and request limits at the edge */
	char cors_origins[1024];
	char trusted_proxies[512];
	long long rate_payment_per_min;
	long long rate_browser_per_min;
	long long rate_api_key_per_min;
	long long rate_table_size;
	char web_dir[512];
	/* e-mail notifications (gateway/mail.c) */
	char mail_url[512];
	long long mail_starttls;
	char mail_username[128];
	char mail_password_file[512];
	char mail_ca_file[512];
	long long mail_verify_tls;
	char mail_from[256];
	char mail_admin[256];
	struct config_mail_client mail_clients[CONFIG_MAX_MAIL_CLIENTS];
	int n_mail_clients;
	char mail_templates_dir[512];
	long long mail_retry_base_ms;
	long long mail_max_age_s;
	long long mail_poll_ms;
	long long mail_timeout_ms;
	long long mail_concurrency;
	long long mail_failure_rate_pct;
	long long mail_failure_rate_window;
	long long mail_reconcile_stuck_s;
};

/* Fills defaults. */
void config_defaults(struct fgw_config *cfg);
/* Applies one directive; where names the source (a file, "--x"). On
 * error why gets where and the reason. */
int config_set(struct fgw_config *cfg, const char *name, const char *value,
               const char *where, struct fgw_why *why);
/* Loads a file. Errors name the file (where) and the line. */
int config_load_file(struct fgw_config *cfg, const char *path, struct fgw_why *why);
/* Parses argv: --config FILE first, then every --name value / --name=value
 * in order. Sets *help when --help was given. */
int config_from_args(struct fgw_config *cfg, int argc, char **argv, int *help,
                     struct fgw_why *why);
/* Derives defaults that depend on other values and checks cross-field
 * rules (e.g. production needs an API key). */
int config_finish(struct fgw_config *cfg, struct fgw_why *why);
/* config_finish that goes on after a failed rule: problem(arg, message)
 * for each one. 0, or FGW_ERR_INVALID when there was any. */
int config_finish_each(struct fgw_config *cfg,
                       void (*problem)(void *arg, const char *msg), void *arg);
/* Prints every directive with its default and help text. */
void config_print_help(FILE *out);
/* The directive table as an mdoc list, for flairgw.conf(5). */
void config_print_mdoc(FILE *out);
/* Client id for a presented API key, or NULL. Constant-time per entry. */
const char *config_client_for_key(const struct fgw_config *cfg, const char *key,
                                  size_t len);

#endif
