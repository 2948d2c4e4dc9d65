/*
 * tools/flairctl.c — the operator and auditor CLI.
 *
 * `flairctl [--config FILE] [--DIRECTIVE VALUE ...] COMMAND [ARGS]`. It
 * reads the same configuration as the daemon (so it finds the same
 * database, key ring and KEK) and runs one command from the table below.
 * Read-only commands open the database read-only and are safe while the
 * daemon runs.
 */
#define LOG_MODULE "flairctl"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <semaphore.h>

#include <cjson/cJSON.h>

#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "gateway/config.h"
#include "pipeline/pipeline.h"
#include "store/methods.h"
#include "store/store.h"
#include "store/webhooks.h"
#include "tools/ctl_rules.h"
#include "tools/flairctl_resv.h"

struct ctl {
	struct fgw_config cfg;
	struct keyring *kr;
	struct store *store;
	struct store_reader *reader;
};

struct command {
	const char *group;     /* "keys", or NULL for a top-level command */
	const char *name;
	const char *args;
	const char *help;
	int (*run)(struct ctl *c, int argc, char **argv);
};

static int
open_keyring(struct ctl *c)
{
	struct keyring_opts o;
	const char *why = NULL;
	int r;
	if (c->kr != NULL)
		return FGW_OK;
	memset(&o, 0, sizeof(o));
	o.dir = c->cfg.keys_dir;
	o.kek_file = c->cfg.kek_file[0] ? c->cfg.kek_file : NULL;
	o.kek_env = c->cfg.kek_env[0] ? c->cfg.kek_env : NULL;
	o.kek_share1 = c->cfg.kek_share1[0] ? c->cfg.kek_share1 : NULL;
	o.kek_share2 = c->cfg.kek_share2[0] ? c->cfg.kek_share2 : NULL;
	o.box_grace_ms = c->cfg.box_key_grace_s * 1000;
	if ((r = keyring_open(&o, &c->kr, &why)) != 0)
		fprintf(stderr, "flairctl: key ring %s: %s\n", c->cfg.keys_dir,
		        why ? why : fgw_strerror(r));
	return r;
}

/* Opens the store for reading (and the key ring, for the audit MAC). */
static int
open_store(struct ctl *c)
{
	struct store_opts so;
	int r;
	if (c->reader != NULL)
		return FGW_OK;
	if ((r = open_keyring(c)) != 0)
		return r;
	if (access(c->cfg.database, R_OK) != 0) {
		fprintf(stderr, "flairctl: database %s: not found\n", c->cfg.database);
		return FGW_ERR_NOT_FOUND;
	}
	memset(&so, 0, sizeof(so));
	so.path = c->cfg.database;
	so.sync_full = 1;
	so.batch_max = 64;
	so.audit_mac = keyring_audit_mac_fn;
	so.audit_mac_ctx = c->kr;
	if ((r = store_open(&so, &c->store)) != 0 ||
	    (r = store_reader_open(c->store, &c->reader)) != 0)
		fprintf(stderr, "flairctl: database %s: %s\n", c->cfg.database, fgw_strerror(r));
	return r;
}

/* ---- keys -------------------------------------------------------------- */

static int
cmd_keys_init(struct ctl *c, int argc, char **argv)
{
	struct keyring_opts o;
	const char *why = NULL;
	char path[600], id[KEYRING_ID_MAX];
	int r;
	(void)argc;
	(void)argv;
	if (snprintf(path, sizeof(path), "%s/keyring.json", c->cfg.keys_dir) >= (int)sizeof(path))
		return FGW_ERR_TOO_LARGE;
	if (access(path, F_OK) == 0) {
		fprintf(stderr, "flairctl: %s exists: the key ring is already initialised\n", path);
		return FGW_ERR_EXISTS;
	}
	memset(&o, 0, sizeof(o));
	o.dir = c->cfg.keys_dir;
	o.kek_file = c->cfg.kek_file[0] ? c->cfg.kek_file : NULL;
	o.kek_env = c->cfg.kek_env[0] ? c->cfg.kek_env : NULL;
	o.kek_share1 = c->cfg.kek_share1[0] ? c->cfg.kek_share1 : NULL;
	o.kek_share2 = c->cfg.kek_share2[0] ? c->cfg.kek_share2 : NULL;
	o.box_grace_ms = c->cfg.box_key_grace_s * 1000;
	o.create = 1;
	if ((r = keyring_open(&o, &c->kr, &why)) != 0) {
		fprintf(stderr, "flairctl: key ring %s: %s\n", c->cfg.keys_dir, why ? why : fgw_strerror(r));
		return r;
	}
	if ((r = keyring_active_data_key(c->kr, id, sizeof(id))) == 0)
		printf("key ring initialised in %s: data key %s, box key %s\n", c->cfg.keys_dir, id,
		       keyring_box_key_id(c->kr));
	return r;
}

static void
add_count(void *arg, const char *key_id, int64_t count)
{
	cJSON *counts = arg;
	if (key_id != NULL)
		cJSON_AddNumberToObject(counts, key_id, (double)count);
}

/* Key ring status with, per data key, how many vault entries it protects
 * (read from the database when there is one). */
static int
cmd_keys_status(struct ctl *c, int argc, char **argv)
{
	cJSON *root = NULL, *counts = NULL, *dk, *it;
	char *json = NULL;
	int r;
	(void)argc;
	(void)argv;
	if ((r = open_keyring(c)) != 0 || (r = keyring_status_json(c->kr, &json)) != 0)
		goto out;
	r = FGW_ERR_NOMEM;
	if ((root = cJSON_Parse(json)) == NULL || (counts = cJSON_CreateObject()) == NULL)
		goto out;
	if (access(c->cfg.database, R_OK) == 0) {
		if ((r = open_store(c)) != 0 || (r = store_vault_key_counts(c->reader, add_count, counts)) != 0)
			goto out;
	}
	dk = cJSON_GetObjectItemCaseSensitive(root, "dataKeys");
	cJSON_ArrayForEach(it, dk) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "keyId");
		const cJSON *n = cJSON_IsString(id) ? cJSON_GetObjectItemCaseSensitive(counts, id->valuestring) : NULL;
		cJSON_AddNumberToObject(it, "vaultEntries", n ? n->valuedouble : 0);
	}
	cJSON_AddItemToObject(root, "vaultEntriesByKey", counts);
	counts = NULL;
	free(json);
	if ((json = cJSON_Print(root)) == NULL)
		goto out;
	printf("%s\n", json);
	r = FGW_OK;
out:
	free(json);
	cJSON_Delete(root);
	cJSON_Delete(counts);
	return r;
}

/* flairctl waits for each rewrap batch to commit (done runs on the writer
 * thread: no waker in a tool). */
struct batch_wait {
	sem_t sem;
	int rc;
};

static void
batch_done(void *arg, int rc)
{
	struct batch_wait *w = arg;
	w->rc = rc;
	sem_post(&w->sem);
}

/* Re-encrypts every vault entry that is not under the active data key, in
 * batches of --batch N (default 200). Each batch is one store job that
 * updates an entry only if it is still under the key it was read with,
 * so it is safe while the daemon runs (the daemon decrypts old and new
 * blobs alike: retired keys still decrypt). */
static int
cmd_keys_rewrap(struct ctl *c, int argc, char **argv)
{
	struct store_rewrap_item *items = NULL;
	struct batch_wait bw;
	char active[KEYRING_ID_MAX], after[40] = "";
	int64_t batch = 200, updated, total = 0, failed = 0, batches = 0;
	size_t n = 0;
	int r;

	if (argc == 2 && strcmp(argv[0], "--batch") == 0) {
		if (fgw_parse_i64(argv[1], 1, 10000, &batch) != 0) {
			fprintf(stderr, "flairctl: --batch must be 1..10000\n");
			return FGW_ERR_INVALID;
		}
	} else if (argc != 0) {
		fprintf(stderr, "usage: flairctl keys rewrap [--batch N]\n");
		return FGW_ERR_INVALID;
	}
	if ((r = open_store(c)) != 0 || (r = keyring_active_data_key(c->kr, active, sizeof(active))) != 0)
		return r;
	if ((items = calloc((size_t)batch, sizeof(*items))) == NULL)
		return FGW_ERR_NOMEM;
	sem_init(&bw.sem, 0, 0);
	for (;;) {
		if ((r = store_vault_batch_other_keys(c->reader, active, after, items, (size_t)batch, &n)) != 0)
			goto out;
		if (n == 0)
			break;
		for (size_t i = 0; i < n; i++) {
			if (vault_rewrap(c->kr, items[i].token, items[i].blob, &items[i].new_blob) != 0 ||
			    vault_blob_key_id(items[i].new_blob, items[i].new_key_id,
			                      sizeof(items[i].new_key_id)) != 0) {
				fprintf(stderr, "flairctl: rewrap: entry %s under %s does not decrypt\n",
				        items[i].token, items[i].key_id);
				free(items[i].new_blob);
				items[i].new_blob = NULL;
				failed++;
			}
		}
		fgw_strlcpy(after, items[n - 1].token, sizeof(after));
		updated = 0;
		bw.rc = 0;
		if ((r = store_vault_rewrap_commit(c->store, NULL, items, n, &updated, batch_done, &bw)) != 0)
			goto out;
		sem_wait(&bw.sem);
		if ((r = bw.rc) != 0)
			goto out;
		total += updated;
		batches++;
		store_rewrap_items_clear(items, n);
		n = 0;
	}
	printf("rewrap: %lld entr%s re-encrypted under %s in %lld batch%s, %lld failed\n",
	       (long long)total, total == 1 ? "y" : "ies", active, (long long)batches,
	       batches == 1 ? "" : "es", (long long)failed);
	r = failed ? FGW_ERR_CRYPTO : FGW_OK;
out:
	if (r != 0 && r != FGW_ERR_CRYPTO)
		fprintf(stderr, "flairctl: rewrap: %s\n", fgw_strerror(r));
	store_rewrap_items_clear(items, n);
	free(items);
	sem_destroy(&bw.sem);
	return r;
}

/* Installs a processor's sealing public key as keys_dir/processor-NAME.json,
 * the file the daemon reads for processor NAME (unless
 * processor_public_key_file says otherwise). Read at start-up. */
static int
cmd_keys_processor_import(struct ctl *c, int argc, char **argv)
{
	struct sealed_pubkey pk;
	char path[600], *text = NULL;
	size_t len = 0;
	int r;
	if (argc != 2) {
		fprintf(stderr, "usage: flairctl keys processor-import NAME PUBLIC_KEY_FILE\n");
		return FGW_ERR_INVALID;
	}
	if (argv[0][0] == '\0' || strlen(argv[0]) > 32 ||
	    strspn(argv[0], "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(argv[0])) {
		fprintf(stderr, "flairctl: processor name must be 1-32 of a-z 0-9 _ -\n");
		return FGW_ERR_INVALID;
	}
	if ((r = sealed_load_pubkey(argv[1], &pk)) != 0) {
		fprintf(stderr, "flairctl: %s: not a public key file (%s)\n", argv[1], fgw_strerror(r));
		return r;
	}
	if (snprintf(path, sizeof(path), "%s/processor-%s.json", c->cfg.keys_dir, argv[0]) >=
	        (int)sizeof(path) ||
	    (r = fgw_read_file(argv[1], 65536, &text, &len)) != 0 ||
	    (r = fgw_mkdirs(c->cfg.keys_dir, 0700)) != 0 ||
	    (r = fgw_write_file_atomic(path, text, len, 0644)) != 0) {
		fprintf(stderr, "flairctl: processor-import: %s\n", fgw_strerror(r ? r : FGW_ERR_TOO_LARGE));
		free(text);
		return r ? r : FGW_ERR_TOO_LARGE;
	}
	free(text);
	printf("processor %s: key %s installed as %s (restart flairgw to use it)\n", argv[0],
	       pk.key_id, path);
	return FGW_OK;
}

static int
cmd_keys_rotate(struct ctl *c, int argc, char **argv)
{
	char id[KEYRING_ID_MAX];
	int r, box = argc > 0 && strcmp(argv[0], "--box") == 0;
	if ((r = open_keyring(c)) != 0)
		return r;
	r = box ? keyring_rotate_box_key(c->kr, id, sizeof(id))
	        : keyring_rotate_data_key(c->kr, id, sizeof(id));
	if (r != 0) {
		fprintf(stderr, "flairctl: rotate: %s\n", fgw_strerror(r));
		return r;
	}
	printf("%s key rotated: %s is now used for %s\n", box ? "box" : "data", id,
	       box ? "encryptedCard and processor replies" : "new vault entries");
	return FGW_OK;
}

static int
cmd_keys_retire(struct ctl *c, int argc, char **argv)
{
	int r;
	if (argc != 1) {
		fprintf(stderr, "usage: flairctl keys retire DATA_KEY_ID\n");
		return FGW_ERR_INVALID;
	}
	if ((r = open_keyring(c)) != 0)
		return r;
	if ((r = keyring_retire_data_key(c->kr, argv[0])) != 0) {
		fprintf(stderr, "flairctl: retire %s: %s\n", argv[0], fgw_strerror(r));
		return r;
	}
	printf("data key %s retired: it decrypts but never encrypts\n", argv[0]);
	return FGW_OK;
}

/* ---- seal -------------------------------------------------------------- */

/* Seals card JSON from stdin to a public key file and prints the
 * encryptedCard object a website would send. */
static int
cmd_seal(struct ctl *c, int argc, char **argv)
{
	struct sealed_pubkey pk;
	struct secbuf *in = NULL;
	char *b64 = NULL;
	size_t len = 0;
	ssize_t n;
	int r;
	(void)c;
	if (argc != 1) {
		fprintf(stderr, "usage: flairctl seal PUBLIC_KEY_JSON_FILE < card.json\n");
		return FGW_ERR_INVALID;
	}
	if ((r = sealed_load_pubkey(argv[0], &pk)) != 0) {
		fprintf(stderr, "flairctl: %s: %s\n", argv[0], fgw_strerror(r));
		return r;
	}
	if ((r = secbuf_alloc(&in, 4096)) != 0)
		return r;
	while (len < in->len && (n = read(0, in->data + len, in->len - len)) > 0)
		len += (size_t)n;
	while (len > 0 && (in->data[len - 1] == '\n' || in->data[len - 1] == ' '))
		len--;
	if (len == 0 || len == in->len) {
		fprintf(stderr, "flairctl: seal: card JSON on stdin, at most 4095 bytes\n");
		r = FGW_ERR_INVALID;
	} else if ((r = sealed_seal_b64(pk.pk, in->data, len, &b64)) == 0) {
		printf("{\"keyId\":\"%s\",\"data\":\"%s\"}\n", pk.key_id, b64);
	}
	secbuf_free(in);
	free(b64);
	return r;
}

/* ---- txn and audit ----------------------------------------------------- */

static int
cmd_txn_show(struct ctl *c, int argc, char **argv)
{
	struct store_txn_row row;
	char *json = NULL;
	int r;
	if (argc != 1) {
		fprintf(stderr, "usage: flairctl txn show TXN_ID\n");
		return FGW_ERR_INVALID;
	}
	if ((r = open_store(c)) != 0)
		return r;
	memset(&row, 0, sizeof(row));
	if ((r = store_txn_get(c->reader, NULL, argv[0], &row)) != 0) {
		fprintf(stderr, "flairctl: %s: %s\n", argv[0], fgw_strerror(r));
		return r;
	}
	if ((r = txn_row_to_json(&row, NULL, &json)) == 0)
		printf("%s\n", json);
	free(json);
	store_txn_row_clear(&row);
	return r;
}

static int
cmd_audit_verify(struct ctl *c, int argc, char **argv)
{
	int64_t bad = 0;
	int r;
	(void)argc;
	(void)argv;
	if ((r = open_store(c)) != 0)
		return r;
	r = store_audit_verify(c->reader, &bad);
	if (r == 0)
		printf("audit chain intact\n");
	else if (r == FGW_ERR_CRYPTO)
		printf("audit chain BROKEN at event seq %lld\n", (long long)bad);
	else
		fprintf(stderr, "flairctl: audit verify: %s\n", fgw_strerror(r));
	return r;
}

static int
cmd_config_check(struct ctl *c, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("configuration OK: database %s, keys %s, %d API key(s), processor %s (%s)\n",
	       c->cfg.database, c->cfg.keys_dir, c->cfg.n_api_keys, c->cfg.processor_name,
	       c->cfg.processor_url);
	return FGW_OK;
}

/* ---- webhooks ---------------------------------------------------------- */

static void
iso_or_dash(int64_t ms, char *out, size_t cap)
{
	if (ms <= 0 || fgw_iso8601(ms, out, cap) != 0)
		fgw_strlcpy(out, "-", cap);
}

static void
print_outbox(void *arg, const struct store_outbox_row *o)
{
	char next[32], created[32];
	(void)arg;
	iso_or_dash(o->created_at, created, sizeof(created));
	iso_or_dash(strcmp(o->status, "pending") == 0 ? o->next_attempt_at : 0, next, sizeof(next));
	printf("%s %-9s attempts=%d last_http=%d next=%s created=%s event=%s type=%s txn=%s url=%s\n",
	       o->id, o->status, o->attempts, o->last_http_status, next, created, o->event_id,
	       o->event_type, o->txn_id[0] ? o->txn_id : "-", o->url);
}

static void
print_attempt(void *arg, int attempt, int64_t at, int http_status, const char *error,
              long elapsed_ms, const char *outcome)
{
	char when[32];
	(void)arg;
	iso_or_dash(at, when, sizeof(when));
	printf("    attempt %d at=%s http=%d outcome=%s elapsed_ms=%ld%s%s\n", attempt, when,
	       http_status, outcome, elapsed_ms, error[0] ? " error=" : "", error);
}

static int
cmd_webhooks_list(struct ctl *c, int argc, char **argv)
{
	int64_t limit = 100;
	int r;
	if (argc == 2 && strcmp(argv[0], "--limit") == 0) {
		if (fgw_parse_i64(argv[1], 1, 100000, &limit) != 0) {
			fprintf(stderr, "flairctl: --limit must be 1 to 100000\n");
			return FGW_ERR_INVALID;
		}
	} else if (argc != 0) {
		fprintf(stderr, "usage: flairctl webhooks list [--limit N]\n");
		return FGW_ERR_INVALID;
	}
	if ((r = open_store(c)) != 0)
		return r;
	if ((r = store_outbox_list(c->reader, (int)limit, print_outbox, print_attempt, NULL)) != 0)
		fprintf(stderr, "flairctl: webhooks list: %s\n", fgw_strerror(r));
	return r;
}

static void
retry_done(void *arg, int rc)
{
	*(int *)arg = rc;
}

static int
cmd_webhooks_retry(struct ctl *c, int argc, char **argv)
{
	struct store_audit audit;
	char details[96];
	int r, done_rc = FGW_ERR_INTERNAL;
	if (argc != 1 || strncmp(argv[0], "whd_", 4) != 0) {
		fprintf(stderr, "usage: flairctl webhooks retry OUTBOX_ID (whd_...)\n");
		return FGW_ERR_INVALID;
	}
	if ((r = open_store(c)) != 0)
		return r;
	snprintf(details, sizeof(details), "{\"outboxId\":\"%.40s\"}", argv[0]);
	audit = (struct store_audit){ "operator:flairctl", "local", "webhook.retry", argv[0],
		                          "success", details };
	/* No waker: done runs on the writer, and store_close waits for it. */
	if ((r = store_outbox_retry(c->store, NULL, argv[0], fgw_now_ms(), &audit, 1, retry_done,
	                            &done_rc)) != 0) {
		fprintf(stderr, "flairctl: webhooks retry: %s\n", fgw_strerror(r));
		return r;
	}
	store_close(c->store);
	c->store = NULL;
	if (done_rc != 0) {
		fprintf(stderr, "flairctl: webhooks retry %s: %s\n", argv[0], fgw_strerror(done_rc));
		return done_rc;
	}
	printf("%s is pending again and will be sent at the next delivery tick\n", argv[0]);
	return FGW_OK;
}

/* ---- rules (tools/ctl_rules.c) ------------------------------------------ */

static int
cmd_rules_check(struct ctl *c, int argc, char **argv)
{
	return ctl_rules_check(&c->cfg, argc, argv);
}

static int
cmd_rules_test(struct ctl *c, int argc, char **argv)
{
	return ctl_rules_test(&c->cfg, argc, argv);
}

static int
cmd_rules_reload(struct ctl *c, int argc, char **argv)
{
	return ctl_rules_reload(&c->cfg, argc, argv);
}

/* ---- reservations and tokens (tools/flairctl_resv.c) ------------------- */

static int
cmd_slots_list(struct ctl *c, int argc, char **argv)
{
	int r = open_store(c);
	return r != 0 ? r : ctl_slots_list(c->reader, argc, argv);
}

static int
cmd_slots_add(struct ctl *c, int argc, char **argv)
{
	int r = open_store(c);
	return r != 0 ? r : ctl_slots_add(c->store, argc, argv);
}

static int
cmd_slots_load(struct ctl *c, int argc, char **argv)
{
	int r = open_store(c);
	return r != 0 ? r : ctl_slots_load(c->store, argc, argv);
}

static int
cmd_slots_set_capacity(struct ctl *c, int argc, char **argv)
{
	int r = open_store(c);
	return r != 0 ? r : ctl_slots_set_capacity(c->store, argc, argv);
}

static int
cmd_jwt_sign(struct ctl *c, int argc, char **argv)
{
	(void)c;
	return ctl_jwt_sign(argc, argv);
}

static int
cmd_jwt_jwks(struct ctl *c, int argc, char **argv)
{
	(void)c;
	return ctl_jwt_jwks(argc, argv);
}

static const struct command commands[] = {
	{ "keys", "init", "", "create the KEK file (if named) and the key ring", cmd_keys_init },
	{ "keys", "status", "", "show key ids, statuses and how many entries each protects", cmd_keys_status },
	{ "keys", "rewrap", "[--batch N]", "re-encrypt vault entries of non-active keys (daemon may run)", cmd_keys_rewrap },
	{ "keys", "processor-import", "NAME FILE", "install a processor's sealing public key", cmd_keys_processor_import },
	{ "keys", "rotate", "[--box]", "make a new data key (or box key) the one used to encrypt", cmd_keys_rotate },
	{ "keys", "retire", "DATA_KEY_ID", "retired keys decrypt but never encrypt", cmd_keys_retire },
	{ NULL, "seal", "PUBLIC_KEY_FILE < card.json", "make an encryptedCard object for a public key", cmd_seal },
	{ "txn", "show", "TXN_ID", "print a recorded transaction (masked)", cmd_txn_show },
	{ "audit", "verify", "", "check the audit hash chain; names the first broken event", cmd_audit_verify },
	{ "webhooks", "list", "[--limit N]", "outbound webhook deliveries, newest first, with every attempt", cmd_webhooks_list },
	{ "webhooks", "retry", "OUTBOX_ID", "make a delivery pending and due now (also a failed one)", cmd_webhooks_retry },
	{ "config", "check", "", "load and validate the configuration", cmd_config_check },
	{ "rules", "check", "[FILE]", "compile a rules file; errors as FILE:LINE:COL (exit 1)", cmd_rules_check },
	{ "rules", "test", "FILE TXN.json [OPTIONS]",
	  "decide a sample transaction body, no database (--mode M, --threeds T, --card-saved, "
	  "--processor P, --customer-id ID, --previous N, --declined N)", cmd_rules_test },
	{ "rules", "reload", "", "check rules_file, then SIGHUP the daemon in pid_file", cmd_rules_reload },
	{ "slots", "list", "", "time slots with capacity, places taken and price", cmd_slots_list },
	{ "slots", "add", "SLOT_ID EXPERIENCE_ID STARTS_AT_MS CAPACITY", "add or update a time slot", cmd_slots_add },
	{ "slots", "load", "FILE.json", "load experiences and time slots (slots_file format)", cmd_slots_load },
	{ "slots", "set-capacity", "SLOT_ID CAPACITY", "change capacity (never below places taken)", cmd_slots_set_capacity },
	{ "jwt", "sign", "(--hs256 FILE | --rs256 PEM --kid KID) CLAIMS", "mint a test JWT", cmd_jwt_sign },
	{ "jwt", "jwks", "PEM KID", "print a one-key JWKS for an RSA key", cmd_jwt_jwks },
	{ NULL, NULL, NULL, NULL, NULL },
};

static void
usage(FILE *out)
{
	fprintf(out, "usage: flairctl [--config FILE] [--DIRECTIVE VALUE ...] COMMAND [ARGS]\n\n"
	             "The configuration is the daemon's (see flairgw --help).\nCommands:\n");
	for (const struct command *cmd = commands; cmd->name; cmd++) {
		char name[64];
		snprintf(name, sizeof(name), "%s%s%s %s", cmd->group ? cmd->group : "",
		         cmd->group ? " " : "", cmd->name, cmd->args);
		fprintf(out, "  %-36s %s\n", name, cmd->help);
	}
}

int
main(int argc, char **argv)
{
	struct ctl c;
	char err[1024];
	int first = 1, r, help = 0;

	if (sodium_init() < 0)
		return 1;
	memset(&c, 0, sizeof(c));
	secmem_harden_process();
	log_setup(LOG_LVL_WARN, 0, 2);
	config_defaults(&c.cfg);
	/* Options run up to the first word that is not --name value. */
	while (first < argc && strncmp(argv[first], "--", 2) == 0) {
		if (strcmp(argv[first], "--help") == 0) {
			usage(stdout);
			return 0;
		}
		first += strchr(argv[first], '=') ? 1 : 2;
	}
	if (first > argc)
		first = argc;
	if (config_from_args(&c.cfg, first, argv, &help, err, sizeof(err)) != 0) {
		fprintf(stderr, "flairctl: %s\n", err);
		return 2;
	}
	if (first >= argc) {
		usage(stderr);
		return 2;
	}
	/* flairctl needs no api_key or processor key: only paths. */
	if (c.cfg.n_api_keys == 0)
		config_set(&c.cfg, "api_key", "flairctl-placeholder ctl", "flairctl", err, sizeof(err));
	if (c.cfg.processor_public_key_file[0] == '\0')
		config_set(&c.cfg, "processor_public_key_file", "-", "flairctl", err, sizeof(err));
	/* The rules commands need no KEK: only paths (a rules file, the pid
	 * file, which config_finish derives before its other checks). */
	if (config_finish(&c.cfg, err, sizeof(err)) != 0 && strcmp(argv[first], "rules") != 0) {
		fprintf(stderr, "flairctl: %s\n", err);
		return 2;
	}
	r = FGW_ERR_NOT_FOUND;
	for (const struct command *cmd = commands; cmd->name; cmd++) {
		int skip = cmd->group ? 1 : 0;
		if (cmd->group && (first + 1 >= argc || strcmp(argv[first], cmd->group) != 0 ||
		                   strcmp(argv[first + 1], cmd->name) != 0))
			continue;
		if (!cmd->group && strcmp(argv[first], cmd->name) != 0)
			continue;
		if (first + 1 + skip < argc && strcmp(argv[first + 1 + skip], "--help") == 0) {
			printf("usage: flairctl %s%s%s %s\n  %s\n", cmd->group ? cmd->group : "",
			       cmd->group ? " " : "", cmd->name, cmd->args, cmd->help);
			return 0;
		}
		r = cmd->run(&c, argc - first - 1 - skip, argv + first + 1 + skip);
		goto out;
	}
	fprintf(stderr, "flairctl: unknown command '%s'\n\n", argv[first]);
	usage(stderr);
	return 2;
out:
	if (c.reader)
		store_reader_close(c.reader);
	if (c.store)
		store_close(c.store);
	keyring_free(c.kr);
	return r == 0 ? 0 : 1;
}
