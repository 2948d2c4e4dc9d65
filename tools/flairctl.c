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

#include <inttypes.h>
#include <pwd.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <semaphore.h>

#include <cjson/cJSON.h>

#include <curl/curl.h>

#include <sodium.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include <cjson/cJSON.h>
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "gateway/backup.h"
#include "gateway/config.h"
#include "gateway/startup.h"
#include "pipeline/audit_emit.h"
#include "pipeline/pipeline.h"
#include "store/methods.h"
#include "store/auditor.h"
#include "store/keyring.h"
#include "store/store.h"
#include "pipeline/notify.h"
#include "store/mail.h"
#include "store/webhooks.h"
#include "tools/ctl_rules.h"
#include "tools/flairctl_resv.h"

struct ctl {
	struct fgw_config cfg;
	struct fgw_config *raw; /* as given, before placeholders and derived paths */
	struct keyring *kr;
	struct store *store;
	struct store_reader *reader;
	struct store_ring *ring; /* PostgreSQL: the key ring's table */
	struct keyring_source ring_src;
};

/* store_backend postgresql: the database is named by store_dsn or
 * store_dsn_file, and holds the key ring too. */
static bool
on_pg(const struct ctl *c)
{
	return strcmp(c->cfg.store_backend, "postgresql") == 0;
}

/* What messages and the audit trail call the store, as the daemon does:
 * the file, or "postgresql" (never the DSN: it may hold the password). */
static const char *
store_where(const struct ctl *c)
{
	return on_pg(c) ? "postgresql" : c->cfg.database;
}

/* Whether there is a store to read or to audit an action into: a
 * PostgreSQL database is there to connect to (a failure says why). */
static bool
has_store(const struct ctl *c)
{
	return on_pg(c) || access(c->cfg.database, F_OK) == 0;
}

/* The store's options as the configuration names them (as the daemon's
 * store_opts_of in gateway/startup.c). */
static void
store_opts_of(const struct ctl *c, struct store_opts *so)
{
	memset(so, 0, sizeof(*so));
	if (on_pg(c)) {
		so->backend = STORE_POSTGRESQL;
		so->dsn = c->cfg.store_dsn[0] != '\0' ? c->cfg.store_dsn : NULL;
		so->dsn_file = c->cfg.store_dsn_file[0] != '\0' ? c->cfg.store_dsn_file : NULL;
		so->production = strcmp(c->cfg.mode, "production") == 0;
	} else
		so->path = c->cfg.database;
	so->sync_full = 1;
	so->batch_max = 64;
	so->busy_timeout_ms = 5000;
	so->audit_mac = keyring_audit_mac_fn;
	so->audit_mac_ctx = c->kr;
}

struct command {
	const char *group; /* "keys", or NULL for a top-level command */
	const char *name;
	const char *args;
	const char *help;
	int (*run)(struct ctl *c, int argc, char **argv);
	const char *more; /* printed by --help after the usage line, or NULL */
};

/* FGW_OK when ok; else the command's usage on stderr, FGW_ERR_INVALID. */
static int
usage_unless(int ok, const char *usage)
{
	if (ok)
		return FGW_OK;
	fprintf(stderr, "usage: flairctl %s\n", usage);
	return FGW_ERR_INVALID;
}

/* The key ring's options as the configuration names them; on
 * PostgreSQL the ring is the database's (connected here). */
static int
keyring_opts_of(struct ctl *c, struct keyring_opts *o)
{
	int r;
	memset(o, 0, sizeof(*o));
	o->dir = c->cfg.keys_dir;
	o->kek_file = c->cfg.kek_file[0] ? c->cfg.kek_file : NULL;
	o->kek_env = c->cfg.kek_env[0] ? c->cfg.kek_env : NULL;
	o->kek_share1 = c->cfg.kek_share1[0] ? c->cfg.kek_share1 : NULL;
	o->kek_share2 = c->cfg.kek_share2[0] ? c->cfg.kek_share2 : NULL;
	o->box_grace_ms = c->cfg.box_key_grace_s * 1000;
	if (!on_pg(c))
		return FGW_OK;
	if (c->ring == NULL) {
		struct store_ring_opts ro = {
			.dsn = c->cfg.store_dsn[0] != '\0' ? c->cfg.store_dsn : NULL,
			.dsn_file = c->cfg.store_dsn_file[0] != '\0' ? c->cfg.store_dsn_file : NULL,
			.production = strcmp(c->cfg.mode, "production") == 0,
		};
		if ((r = store_ring_open(&ro, &c->ring)) != 0) {
			fprintf(stderr, "flairctl: key ring: cannot reach the PostgreSQL store: %s\n",
			        fgw_strerror(r));
			return r;
		}
		c->ring_src = (struct keyring_source){ store_ring_load, store_ring_save,
			                                   store_ring_generation, c->ring };
	}
	o->source = &c->ring_src;
	return FGW_OK;
}

static int
open_keyring(struct ctl *c)
{
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	int r;
	if (c->kr != NULL)
		return FGW_OK;
	if ((r = keyring_opts_of(c, &o)) != 0)
		return r;
	if ((r = keyring_open(&o, &c->kr, &why)) != 0)
		fprintf(stderr, "flairctl: key ring %s: %s\n", c->cfg.keys_dir, why.msg);
	return r;
}

/* Opens the database read-only: a reader with no store and no writer
 * thread (SQLITE_OPEN_READONLY; on PostgreSQL a READ ONLY session), so
 * auditor commands cannot change it and are safe while the daemon runs. */
static int
open_store(struct ctl *c)
{
	struct store_opts so;
	int r;
	if (c->reader != NULL)
		return FGW_OK;
	if ((r = open_keyring(c)) != 0)
		return r;
	if (!on_pg(c) && access(c->cfg.database, R_OK) != 0) {
		fprintf(stderr, "flairctl: database %s: not found\n", c->cfg.database);
		return FGW_ERR_NOT_FOUND;
	}
	store_opts_of(c, &so);
	if ((r = store_reader_open_tool(&so, &c->reader)) != 0)
		fprintf(stderr, "flairctl: database %s: %s\n", store_where(c), fgw_strerror(r));
	return r;
}

/* Opens the store for writing (admin actions record audit events). */
static int
open_writer(struct ctl *c)
{
	struct store_opts so;
	int r;
	if (c->store != NULL)
		return FGW_OK;
	if ((r = open_keyring(c)) != 0)
		return r;
	store_opts_of(c, &so);
	if ((r = store_open(&so, &c->store)) != 0)
		fprintf(stderr, "flairctl: database %s: %s\n", store_where(c), fgw_strerror(r));
	return r;
}

/* "operator:NAME" for the audit trail: who ran the command. */
static void
operator_name(char *out, size_t cap)
{
	struct passwd *pw = getpwuid(getuid());
	int n = snprintf(out, cap, "operator:%s",
	                 pw != NULL && pw->pw_name ? pw->pw_name : "unknown");
	if (n < 0 || (size_t)n >= cap)
		fgw_strlcpy(out, "operator:unknown", cap);
}

/* Records an admin action. The store commits it before flairctl exits
 * (store_close drains the queue). */
static void
audit_admin(struct ctl *c, const char *type, const char *resource, int rc,
            const char *details)
{
	char who[96];
	if (open_writer(c) != 0)
		return;
	operator_name(who, sizeof(who));
	audit_emit(c->store, NULL, who, "local", type, resource,
	           rc == 0 ? "success" : "failure", details);
}

/* ---- keys -------------------------------------------------------------- */

static int
cmd_keys_init(struct ctl *c, int argc, char **argv)
{
	struct keyring_opts o;
	struct fgw_why why = { 0 };
	char path[600], id[KEYRING_ID_MAX];
	int r;
	(void)argc;
	(void)argv;
	if (snprintf(path, sizeof(path), "%s/keyring.json", c->cfg.keys_dir) >=
	    (int)sizeof(path))
		return FGW_ERR_TOO_LARGE;
	if ((r = keyring_opts_of(c, &o)) != 0)
		return r;
	if (on_pg(c)) {
		uint64_t gen = 0;
		if ((r = store_ring_generation(c->ring, &gen)) != 0)
			return r;
		if (gen > 0) {
			fprintf(stderr, "flairctl: the PostgreSQL store holds a key ring: it is "
			                "already initialised\n");
			return FGW_ERR_EXISTS;
		}
	} else if (access(path, F_OK) == 0) {
		fprintf(stderr, "flairctl: %s exists: the key ring is already initialised\n",
		        path);
		return FGW_ERR_EXISTS;
	}
	o.create = 1;
	if ((r = keyring_open(&o, &c->kr, &why)) != 0) {
		fprintf(stderr, "flairctl: key ring %s: %s\n", c->cfg.keys_dir, why.msg);
		return r;
	}
	if ((r = keyring_active_data_key(c->kr, id, sizeof(id))) == 0)
		printf("key ring initialised in %s: data key %s, box key %s\n",
		       on_pg(c) ? "the PostgreSQL store" : c->cfg.keys_dir, id,
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
	if ((root = fgw_json_parse_strict(json, strlen(json))) == NULL ||
	    (counts = cJSON_CreateObject()) == NULL)
		goto out;
	if (has_store(c)) {
		if ((r = open_store(c)) != 0 ||
		    (r = store_vault_key_counts(c->reader, add_count, counts)) != 0)
			goto out;
	}
	dk = cJSON_GetObjectItemCaseSensitive(root, "dataKeys");
	cJSON_ArrayForEach(it, dk) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "keyId");
		const cJSON *n = cJSON_IsString(id)
		                     ? cJSON_GetObjectItemCaseSensitive(counts, id->valuestring)
		                     : NULL;
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
	if ((r = open_store(c)) != 0 || (r = open_writer(c)) != 0 ||
	    (r = keyring_active_data_key(c->kr, active, sizeof(active))) != 0)
		return r;
	if ((items = calloc((size_t)batch, sizeof(*items))) == NULL)
		return FGW_ERR_NOMEM;
	sem_init(&bw.sem, 0, 0);
	for (;;) {
		if ((r = store_vault_batch_other_keys(c->reader, active, after, items,
		                                      (size_t)batch, &n)) != 0)
			goto out;
		if (n == 0)
			break;
		for (size_t i = 0; i < n; i++) {
			if (vault_rewrap(c->kr, items[i].token, items[i].blob, &items[i].new_blob) !=
			        0 ||
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
		if ((r = store_vault_rewrap_commit(c->store, NULL, items, n, &updated, batch_done,
		                                   &bw)) != 0)
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
	{
		char d[160];
		snprintf(d, sizeof(d), "{\"rewrapped\":%lld,\"failed\":%lld,\"batches\":%lld}",
		         (long long)total, (long long)failed, (long long)batches);
		audit_admin(c, "key.rewrapped", active, r, d);
	}
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
	if ((r = usage_unless(argc == 2, "keys processor-import NAME PUBLIC_KEY_FILE")) != 0)
		return r;
	if (argv[0][0] == '\0' || strlen(argv[0]) > 32 ||
	    strspn(argv[0], "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(argv[0])) {
		fprintf(stderr, "flairctl: processor name must be 1-32 of a-z 0-9 _ -\n");
		return FGW_ERR_INVALID;
	}
	if ((r = sealed_load_pubkey(argv[1], &pk)) != 0) {
		fprintf(stderr, "flairctl: %s: not a public key file (%s)\n", argv[1],
		        fgw_strerror(r));
		return r;
	}
	if (snprintf(path, sizeof(path), "%s/processor-%s.json", c->cfg.keys_dir, argv[0]) >=
	        (int)sizeof(path) ||
	    (r = fgw_read_file(argv[1], 65536, &text, &len)) != 0 ||
	    (r = fgw_mkdirs(c->cfg.keys_dir, 0700)) != 0 ||
	    (r = fgw_write_file_atomic(path, text, len, 0644)) != 0) {
		fprintf(stderr, "flairctl: processor-import: %s\n",
		        fgw_strerror(r ? r : FGW_ERR_TOO_LARGE));
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
	audit_admin(c, "key.rotated", r == 0 ? id : (box ? "box" : "data"), r,
	            box ? "{\"kind\":\"box\"}" : "{\"kind\":\"data\"}");
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
	if ((r = usage_unless(argc == 1, "keys retire DATA_KEY_ID")) != 0 ||
	    (r = open_keyring(c)) != 0)
		return r;
	r = keyring_retire_data_key(c->kr, argv[0]);
	audit_admin(c, "key.retired", argv[0], r, "{\"kind\":\"data\"}");
	if (r != 0) {
		fprintf(stderr, "flairctl: retire %s: %s\n", argv[0], fgw_strerror(r));
		return r;
	}
	printf("data key %s retired: it decrypts but never encrypts\n", argv[0]);
	return FGW_OK;
}

/* ---- seal -------------------------------------------------------------- */

/* Seals card JSON from stdin to a public key file and prints the
 * encryptedCard object a website would send. The sealed JSON gets "iat",
 * the time of sealing: the gateway refuses it after
 * encrypted_card_max_age_s. The card is only ever in guarded memory. */
static int
cmd_seal(struct ctl *c, int argc, char **argv)
{
	struct sealed_pubkey pk;
	struct secbuf *in = NULL;
	char *b64 = NULL, iat[40];
	size_t len = 0, body;
	ssize_t n;
	int r, k;
	(void)c;
	if ((r = usage_unless(argc == 1, "seal PUBLIC_KEY_JSON_FILE < card.json")) != 0)
		return r;
	if ((r = sealed_load_pubkey(argv[0], &pk)) != 0) {
		fprintf(stderr, "flairctl: %s: %s\n", argv[0], fgw_strerror(r));
		return r;
	}
	if ((r = secbuf_alloc(&in, 4096 + sizeof(iat))) != 0)
		return r;
	while (len < 4096 && (n = read(0, in->data + len, 4096 - len)) > 0)
		len += (size_t)n;
	while (len > 0 && (in->data[len - 1] == '\n' || in->data[len - 1] == ' ' ||
	                   in->data[len - 1] == '\r' || in->data[len - 1] == '\t'))
		len--;
	/* The object's last '}' gives way to the iat member. */
	body = len > 0 ? len - 1 : 0;
	while (body > 0 && (in->data[body - 1] == ' ' || in->data[body - 1] == '\n' ||
	                    in->data[body - 1] == '\r' || in->data[body - 1] == '\t'))
		body--;
	if (len < 2 || len == 4096 || in->data[0] != '{' || in->data[len - 1] != '}') {
		fprintf(stderr,
		        "flairctl: seal: card JSON object on stdin, at most 4095 bytes\n");
		r = FGW_ERR_INVALID;
		goto out;
	}
	if (memmem(in->data, len, "\"iat\"", 5) != NULL) {
		fprintf(stderr,
		        "flairctl: seal: the card JSON must not carry iat: seal sets it\n");
		r = FGW_ERR_INVALID;
		goto out;
	}
	k = snprintf(iat, sizeof(iat), "%s\"iat\":%lld}",
	             in->data[body - 1] == '{' ? "" : ",", (long long)time(NULL));
	if (k < 0 || (size_t)k >= sizeof(iat)) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	memcpy(in->data + body, iat, (size_t)k);
	len = body + (size_t)k;
	if ((r = sealed_seal_b64(pk.pk, in->data, len, &b64)) == 0)
		printf("{\"keyId\":\"%s\",\"data\":\"%s\"}\n", pk.key_id, b64);
out:
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
	if ((r = usage_unless(argc == 1, "txn show TXN_ID")) != 0 || (r = open_store(c)) != 0)
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

/* Verifies the database the reader is on: chain and checkpoints. */
static int
verify_reader(struct ctl *c, struct store_reader *rd, const char *what)
{
	struct store_verify_result res;
	unsigned char pk[32];
	int r;
	keyring_audit_public(c->kr, pk);
	r = store_audit_verify_full(rd, pk, &res);
	if (r == 0)
		printf("%s: audit chain intact: %" PRId64 " events, %" PRId64
		       " signed checkpoints (last at seq %" PRId64 ")\n",
		       what, res.events, res.checkpoints, res.last_checkpoint);
	else if (r == FGW_ERR_CRYPTO)
		printf("%s: audit chain BROKEN at event seq %" PRId64 ": %s\n", what,
		       res.first_bad_seq, res.reason);
	else
		fprintf(stderr, "flairctl: audit verify: %s\n", fgw_strerror(r));
	return r;
}

/* A fresh private directory for restored files. */
static int
make_tmpdir(char *dir, size_t cap)
{
	const char *base = getenv("TMPDIR");
	int n = snprintf(dir, cap, "%s/flairctl-XXXXXX", base && *base ? base : "/tmp");
	if (n < 0 || (size_t)n >= cap || mkdtemp(dir) == NULL)
		return FGW_ERR_IO;
	return 0;
}

/* Decrypts a backup into db_out (and its JSON export into json_out unless
 * NULL) and verifies it. */
static int
verify_backup_file(struct ctl *c, const char *file, const char *db_out,
                   const char *json_out)
{
	struct store_reader *rd = NULL;
	int r;
	if ((r = backup_open(c->kr, file, db_out, json_out)) != 0) {
		printf("%s: not an intact backup of this key ring: %s\n", file, fgw_strerror(r));
		return r;
	}
	if ((r = store_reader_open_file(db_out, keyring_audit_mac_fn, c->kr, 5000, &rd)) !=
	    0) {
		fprintf(stderr, "flairctl: %s: %s\n", db_out, fgw_strerror(r));
		return r;
	}
	r = verify_reader(c, rd, file);
	store_reader_close(rd);
	return r;
}

static int
cmd_audit_verify(struct ctl *c, int argc, char **argv)
{
	char dir[512], db[600];
	int r;
	if (argc == 2 && strcmp(argv[0], "--backup") == 0) {
		if ((r = open_keyring(c)) != 0)
			return r;
		if ((r = make_tmpdir(dir, sizeof(dir))) != 0 ||
		    snprintf(db, sizeof(db), "%s/restored.db", dir) >= (int)sizeof(db))
			return FGW_ERR_IO;
		r = verify_backup_file(c, argv[1], db, NULL);
		unlink(db);
		rmdir(dir);
		return r;
	}
	if ((r = usage_unless(argc == 0, "audit verify [--backup FILE]")) != 0 ||
	    (r = open_store(c)) != 0)
		return r;
	return verify_reader(c, c->reader, store_where(c));
}

static int
cmd_audit_checkpoint(struct ctl *c, int argc, char **argv)
{
	unsigned char pk[32];
	int r;
	(void)argv;
	if ((r = usage_unless(argc == 0, "audit checkpoint")) != 0 ||
	    (r = open_writer(c)) != 0)
		return r;
	keyring_audit_public(c->kr, pk);
	/* Queued first, so the checkpoint queued after it signs it too. */
	audit_admin(c, "audit.checkpoint", store_where(c), 0, NULL);
	if ((r = store_audit_checkpoint(c->store, NULL, keyring_audit_sign_fn, c->kr, pk,
	                                NULL, NULL)) != 0) {
		fprintf(stderr, "flairctl: checkpoint: %s\n", fgw_strerror(r));
		return r;
	}
	printf("checkpoint of the audit chain head queued and committed on exit\n");
	return FGW_OK;
}

/* "YYYY-MM-DD", "YYYY-MM-DDTHH:MM:SS[Z]" (UTC) or milliseconds. */
static int
parse_time(const char *s, int64_t *ms)
{
	struct tm tm;
	const char *end;
	memset(&tm, 0, sizeof(tm));
	if (fgw_parse_i64(s, 0, INT64_MAX / 2, ms) == 0)
		return 0;
	if ((end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL) {
		memset(&tm, 0, sizeof(tm));
		end = strptime(s, "%Y-%m-%d", &tm);
	}
	if (end == NULL || (*end != '\0' && strcmp(end, "Z") != 0))
		return FGW_ERR_INVALID;
	*ms = (int64_t)timegm(&tm) * 1000;
	return 0;
}

enum out_fmt { FMT_TABLE, FMT_JSONL, FMT_CSV };

struct query_out {
	enum out_fmt fmt;
	long rows;
};

static void
csv_field(const char *v, int last)
{
	putchar('"');
	for (const char *p = v; *p; p++) {
		if (*p == '"')
			putchar('"');
		putchar(*p);
	}
	putchar('"');
	putchar(last ? '\n' : ',');
}

static int
print_row(void *arg, const struct store_audit_view *v)
{
	struct query_out *q = arg;
	char when[40], amount[32] = "";
	if (fgw_iso8601(v->ts, when, sizeof(when)) != 0)
		when[0] = '\0';
	if (v->has_amount)
		snprintf(amount, sizeof(amount), "%" PRId64, v->amount);
	q->rows++;
	if (q->fmt == FMT_JSONL) {
		cJSON *o = cJSON_CreateObject(), *d = NULL;
		char *text;
		if (v->details != NULL)
			d = fgw_json_parse_strict(v->details, strlen(v->details));
		if (o == NULL) {
			cJSON_Delete(d);
			return FGW_ERR_NOMEM;
		}
		cJSON_AddNumberToObject(o, "seq", (double)v->seq);
		cJSON_AddStringToObject(o, "time", when);
		cJSON_AddStringToObject(o, "actor", v->actor);
		cJSON_AddStringToObject(o, "source", v->source);
		cJSON_AddStringToObject(o, "type", v->event_type);
		cJSON_AddStringToObject(o, "resource", v->resource);
		cJSON_AddStringToObject(o, "outcome", v->outcome);
		if (d != NULL)
			cJSON_AddItemToObject(o, "details", d);
		else
			cJSON_AddNullToObject(o, "details");
		if (v->has_amount) {
			cJSON_AddNumberToObject(o, "amount", (double)v->amount);
			cJSON_AddStringToObject(o, "currency", v->currency);
			cJSON_AddStringToObject(o, "reservation", v->reservation);
			cJSON_AddStringToObject(o, "customer", v->customer);
		}
		text = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
		if (text == NULL)
			return FGW_ERR_NOMEM;
		printf("%s\n", text);
		free(text);
	} else if (q->fmt == FMT_CSV) {
		char seq[24];
		snprintf(seq, sizeof(seq), "%" PRId64, v->seq);
		csv_field(seq, 0);
		csv_field(when, 0);
		csv_field(v->actor, 0);
		csv_field(v->source, 0);
		csv_field(v->event_type, 0);
		csv_field(v->resource, 0);
		csv_field(v->outcome, 0);
		csv_field(amount, 0);
		csv_field(v->currency, 0);
		csv_field(v->reservation, 0);
		csv_field(v->details, 1);
	} else {
		printf("%-6" PRId64
		       " %-24s %-20.20s %-15.15s %-20.20s %-28.28s %-15.15s %10s %s\n",
		       v->seq, when, v->actor, v->source, v->event_type, v->resource, v->outcome,
		       amount, v->currency);
	}
	return 0;
}

#define AUDIT_QUERY_FILTERS                                                        \
	"Filters (all optional, combined with AND):\n"                                 \
	"  --since T / --until T   events at or after / before T: YYYY-MM-DD,\n"       \
	"                          YYYY-MM-DDTHH:MM:SSZ (UTC) or epoch milliseconds\n" \
	"  --txn ID                one transaction (txn_...)\n"                        \
	"  --reservation ID        one reservation\n"                                  \
	"  --customer ID           one customer\n"                                     \
	"  --outcome O             an outcome, e.g. succeeded, declined, failed\n"     \
	"  --type T                an event type, e.g. txn.decided, txn.outcome\n"     \
	"  --min-amount N          amount in minor units at least N\n"                 \
	"  --max-amount N          amount in minor units at most N\n"

static int
cmd_audit_query(struct ctl *c, int argc, char **argv)
{
	struct store_audit_filter f;
	struct query_out q = { FMT_TABLE, 0 };
	int r;
	memset(&f, 0, sizeof(f));
	for (int i = 0; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			goto usage;
		i++;
		if (strcmp(o, "--since") == 0 || strcmp(o, "--until") == 0) {
			if (parse_time(v, o[2] == 's' ? &f.since_ms : &f.until_ms) != 0)
				goto usage;
		} else if (strcmp(o, "--txn") == 0) {
			f.txn = v;
		} else if (strcmp(o, "--reservation") == 0) {
			f.reservation = v;
		} else if (strcmp(o, "--customer") == 0) {
			f.customer = v;
		} else if (strcmp(o, "--outcome") == 0) {
			f.outcome = v;
		} else if (strcmp(o, "--type") == 0) {
			f.type = v;
		} else if (strcmp(o, "--min-amount") == 0) {
			if (fgw_parse_i64(v, 0, INT64_MAX, &f.min_amount) != 0)
				goto usage;
			f.has_min = 1;
		} else if (strcmp(o, "--max-amount") == 0) {
			if (fgw_parse_i64(v, 0, INT64_MAX, &f.max_amount) != 0)
				goto usage;
			f.has_max = 1;
		} else if (strcmp(o, "--format") == 0) {
			if (strcmp(v, "table") == 0)
				q.fmt = FMT_TABLE;
			else if (strcmp(v, "jsonl") == 0)
				q.fmt = FMT_JSONL;
			else if (strcmp(v, "csv") == 0)
				q.fmt = FMT_CSV;
			else
				goto usage;
		} else {
			goto usage;
		}
	}
	if ((r = open_store(c)) != 0)
		return r;
	if (q.fmt == FMT_CSV)
		printf(
		    "seq,time,actor,source,type,resource,outcome,amount,currency,reservation,details\n");
	else if (q.fmt == FMT_TABLE)
		printf("%-6s %-24s %-20s %-15s %-20s %-28s %-15s %10s %s\n", "SEQ", "TIME",
		       "ACTOR", "SOURCE", "TYPE", "RESOURCE", "OUTCOME", "AMOUNT", "CUR");
	r = store_audit_query(c->reader, &f, print_row, &q);
	if (r != 0)
		fprintf(stderr, "flairctl: audit query: %s\n", fgw_strerror(r));
	else if (q.fmt == FMT_TABLE)
		printf("(%ld events)\n", q.rows);
	return r;
usage:
	fprintf(stderr,
	        "usage: flairctl audit query [FILTERS] [--format table|jsonl|csv]\n%s",
	        AUDIT_QUERY_FILTERS);
	return FGW_ERR_INVALID;
}

static double
pct(int64_t part, int64_t whole)
{
	return whole > 0 ? 100.0 * (double)part / (double)whole : 0.0;
}

static int
cmd_report(struct ctl *c, int argc, char **argv)
{
	struct store_report rep;
	char day[16];
	time_t now = time(NULL);
	struct tm tm;
	int r;
	if (argc == 2 && strcmp(argv[0], "--day") == 0) {
		if (fgw_strlcpy(day, argv[1], sizeof(day)) != 0)
			return FGW_ERR_INVALID;
	} else if (argc == 0 && gmtime_r(&now, &tm) != NULL) {
		strftime(day, sizeof(day), "%Y-%m-%d", &tm);
	} else {
		fprintf(stderr, "usage: flairctl report [--day YYYY-MM-DD]\n");
		return FGW_ERR_INVALID;
	}
	if ((r = open_store(c)) != 0)
		return r;
	if ((r = store_report_day(c->reader, day, &rep)) != 0) {
		fprintf(stderr, "flairctl: report %s: %s\n", day, fgw_strerror(r));
		return r;
	}
	printf("report for %s (UTC)\n", rep.day);
	printf("transactions: %" PRId64 "\n", rep.total);
	printf("succeeded: %" PRId64 "\ndeclined: %" PRId64 "\nfailed: %" PRId64
	       "\nopen: %" PRId64 "\n",
	       rep.succeeded, rep.declined, rep.failed, rep.open);
	printf("success rate: %.1f%%\n", pct(rep.succeeded, rep.total));
	printf("decline rate: %.1f%%\n", pct(rep.declined, rep.total));
	printf("3-D Secure rate: %.1f%%\n", pct(rep.three_ds, rep.total));
	printf("average time to outcome: %.0f ms (over %" PRId64 " final)\n",
	       rep.avg_outcome_ms, rep.final_count);
	if (rep.wh_delivered + rep.wh_failed > 0)
		printf("webhook delivery: %.1f%% (%" PRId64 " delivered, %" PRId64
		       " failed, %" PRId64 " pending)\n",
		       pct(rep.wh_delivered, rep.wh_delivered + rep.wh_failed), rep.wh_delivered,
		       rep.wh_failed, rep.wh_pending);
	else
		printf("webhook delivery: none settled (%" PRId64 " pending)\n", rep.wh_pending);
	printf("by outcome (amounts in minor units):\n");
	for (int i = 0; i < rep.n_by; i++)
		printf("  %-16s %-3s count %-6" PRId64 " sum %-12" PRId64 " average %" PRId64
		       "\n",
		       rep.by[i].status, rep.by[i].currency, rep.by[i].count, rep.by[i].sum,
		       rep.by[i].count > 0 ? rep.by[i].sum / rep.by[i].count : 0);
	return FGW_OK;
}

/* ---- backup ------------------------------------------------------------ */

static int
cmd_backup_now(struct ctl *c, int argc, char **argv)
{
	struct backup_info bi;
	char *details = NULL;
	struct fgw_why why = { 0 };
	int r, attempts = 0;
	(void)argv;
	if ((r = usage_unless(argc == 0, "backup now")) != 0 || (r = open_keyring(c)) != 0)
		return r;
	if ((r = backup_make(&c->cfg, c->kr, &bi)) != 0) {
		fprintf(stderr, "flairctl: backup: %s\n", fgw_strerror(r));
		audit_admin(c, "backup.failed", c->cfg.backup_dir, r, NULL);
		return r;
	}
	if ((r = backup_details_json(&bi, &details)) != 0)
		return r;
	audit_admin(c, "backup.created", bi.name, 0, details);
	free(details);
	printf("%s\n  bytes %" PRId64 ", blake2b %s, %" PRId64
	       " transactions, audit seq %" PRId64 "\n",
	       bi.path, bi.bytes, bi.blake2b, bi.transactions, bi.audit_seq);
	if (c->cfg.s3_endpoint[0] != '\0') {
		char *d = NULL;
		r = backup_upload(&c->cfg, bi.path, bi.name, NULL, &attempts, &why);
		if (backup_upload_details(c->cfg.s3_bucket, attempts, r == 0 ? NULL : why.msg,
		                          &d) != 0)
			d = NULL;
		audit_admin(c, r == 0 ? "backup.uploaded" : "backup.upload_failed", bi.name, r,
		            d);
		free(d);
		if (r != 0) {
			fprintf(stderr, "flairctl: upload: %s\n", why.msg);
			return r;
		}
		printf("  uploaded to %s/%s\n", c->cfg.s3_endpoint, c->cfg.s3_bucket);
	}
	return FGW_OK;
}

static int
cmd_backup_list(struct ctl *c, int argc, char **argv)
{
	char **names = NULL, path[1100], sum[65];
	int n = 0, r;
	(void)argc;
	(void)argv;
	if ((r = backup_list(c->cfg.backup_dir, &names, &n)) != 0) {
		fprintf(stderr, "flairctl: %s: %s\n", c->cfg.backup_dir, fgw_strerror(r));
		return r;
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", c->cfg.backup_dir, names[i]);
		if (backup_checksum(path, sum) != 0)
			fgw_strlcpy(sum, "unreadable", sizeof(sum));
		printf("%s  blake2b %s\n", names[i], sum);
	}
	backup_names_free(names, n);
	return FGW_OK;
}

static int
cmd_backup_verify(struct ctl *c, int argc, char **argv)
{
	char *vargv[2];
	int r;
	if ((r = usage_unless(argc == 1, "backup verify FILE")) != 0)
		return r;
	vargv[0] = "--backup";
	vargv[1] = argv[0];
	return cmd_audit_verify(c, 2, vargv);
}

/* {"target": path} for an audit event, escaped as JSON (a path may hold
 * quotes); malloc'ed, NULL when out of memory. */
static char *
target_details(const char *path)
{
	cJSON *o = cJSON_CreateObject();
	char *s = NULL;
	if (o != NULL && cJSON_AddStringToObject(o, "target", path) != NULL)
		s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return s;
}

static int
cmd_backup_restore(struct ctl *c, int argc, char **argv)
{
	char *details;
	int r;
	if (argc != 2 && argc != 3) {
		fprintf(stderr,
		        "usage: flairctl backup restore FILE NEW_DATABASE [NEW_EXPORT_JSON]\n"
		        "  (restores into a new file; point `database` at it to use it;\n"
		        "  NEW_EXPORT_JSON also gets the backup's JSON export)\n");
		return FGW_ERR_INVALID;
	}
	for (int i = 1; i < argc; i++) {
		if (access(argv[i], F_OK) == 0) {
			fprintf(stderr, "flairctl: %s exists: restore writes a new file only\n",
			        argv[i]);
			return FGW_ERR_EXISTS;
		}
	}
	if ((r = open_keyring(c)) != 0)
		return r;
	r = verify_backup_file(c, argv[0], argv[1], argc == 3 ? argv[2] : NULL);
	if (r == FGW_ERR_CRYPTO && access(argv[1], F_OK) == 0)
		printf("restored to %s, but its audit trail does NOT verify\n", argv[1]);
	else if (r == 0)
		printf("restored to %s\n", argv[1]);
	details = target_details(argv[1]);
	if (has_store(c))
		audit_admin(c, "backup.restored", argv[0], r, details);
	free(details);
	return r;
}

/* The backup's JSON export (audit trail and transactions, masked; the
 * vault is not in it) as a plain file, for auditors and other tools. */
static int
cmd_backup_export(struct ctl *c, int argc, char **argv)
{
	char *details;
	int r;
	if ((r = usage_unless(argc == 2, "backup export FILE OUT.json")) != 0 ||
	    (r = open_keyring(c)) != 0)
		return r;
	r = backup_open(c->kr, argv[0], NULL, argv[1]);
	if (r == FGW_ERR_EXISTS)
		fprintf(stderr, "flairctl: %s exists: export writes a new file only\n", argv[1]);
	else if (r == FGW_ERR_CRYPTO)
		fprintf(stderr, "flairctl: %s is not an intact backup of this key ring\n",
		        argv[0]);
	else if (r != 0)
		fprintf(stderr, "flairctl: backup export: %s\n", fgw_strerror(r));
	else
		printf("exported to %s\n", argv[1]);
	details = target_details(argv[1]);
	if (has_store(c))
		audit_admin(c, "backup.exported", argv[0], r, details);
	free(details);
	return r;
}

static void
config_check_print(void *arg, int is_problem, const char *msg)
{
	(void)arg;
	fprintf(stderr, "flairctl: %s%s\n", is_problem ? "" : "note: ", msg);
}

/* The daemon's own start-up checks (gateway_check, as flairgw --check) on
 * the configuration as given, without flairctl's placeholders. */
static int
cmd_config_check(struct ctl *c, int argc, char **argv)
{
	struct check_report rep = { 0, 0, config_check_print, NULL };
	(void)argc;
	(void)argv;
	if (gateway_check(c->raw, &rep) != 0) {
		fprintf(stderr, "flairctl: configuration check failed: %d problem%s\n",
		        rep.problems, rep.problems == 1 ? "" : "s");
		return FGW_ERR_INVALID;
	}
	/* The backend, never the PostgreSQL connection string: it may hold
	 * the password. */
	if (strcmp(c->cfg.store_backend, "postgresql") == 0)
		printf("configuration OK: store postgresql (%s), keys %s, %d API key(s), "
		       "processor %s (%s)",
		       c->cfg.store_dsn_file[0] != '\0' ? "store_dsn_file" : "store_dsn",
		       c->cfg.keys_dir, c->cfg.n_api_keys, c->cfg.procs[0].name,
		       c->cfg.procs[0].url);
	else
		printf("configuration OK: store sqlite, database %s, keys %s, %d API key(s), "
		       "processor %s (%s)",
		       c->cfg.database, c->cfg.keys_dir, c->cfg.n_api_keys, c->cfg.procs[0].name,
		       c->cfg.procs[0].url);
	/* The rest in failover order. */
	for (int i = 1; i < c->cfg.n_procs; i++)
		printf(", then %s (%s)", c->cfg.procs[i].name, c->cfg.procs[i].url);
	putchar('\n');
	if (c->cfg.mail_url[0] != '\0')
		printf("e-mail templates OK: %s\n", c->cfg.mail_templates_dir);
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
	iso_or_dash(strcmp(o->status, "pending") == 0 ? o->next_attempt_at : 0, next,
	            sizeof(next));
	printf(
	    "%s %-9s attempts=%d last_http=%d next=%s created=%s event=%s type=%s txn=%s url=%s\n",
	    o->id, o->status, o->attempts, o->last_http_status, next, created, o->event_id,
	    o->event_type, o->txn_id[0] ? o->txn_id : "-", o->endpoint_url);
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

/* The [--limit N] of a list command (default 100). */
static int
parse_limit(int argc, char **argv, const char *cmd, int64_t *limit)
{
	*limit = 100;
	if (argc == 2 && strcmp(argv[0], "--limit") == 0) {
		if (fgw_parse_i64(argv[1], 1, 100000, limit) != 0) {
			fprintf(stderr, "flairctl: --limit must be 1 to 100000\n");
			return FGW_ERR_INVALID;
		}
	} else if (argc != 0) {
		fprintf(stderr, "usage: flairctl %s [--limit N]\n", cmd);
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

static int
cmd_webhooks_list(struct ctl *c, int argc, char **argv)
{
	int64_t limit;
	int r;
	if ((r = parse_limit(argc, argv, "webhooks list", &limit)) != 0 ||
	    (r = open_store(c)) != 0)
		return r;
	if ((r = store_outbox_list(c->reader, (int)limit, print_outbox, print_attempt,
	                           NULL)) != 0)
		fprintf(stderr, "flairctl: webhooks list: %s\n", fgw_strerror(r));
	return r;
}

static void
retry_done(void *arg, int rc)
{
	*(int *)arg = rc;
}

/* What an outbox's retry command says and does; both outboxes share it. */
struct retry_kind {
	const char *cmd;     /* "webhooks retry" */
	const char *usage;   /* after "flairctl " */
	const char *prefix;  /* of the row ids it takes */
	const char *event;   /* the audit event */
	const char *id_name; /* the id's name in the event's details */
	const char *when;    /* when the row goes out again */
	int (*retry)(struct store *st, struct store_waker *w, const char *id, int64_t now_ms,
	             const struct store_audit *audit, size_t n_audit, store_done_fn done,
	             void *arg);
};

static int
outbox_retry(struct ctl *c, int argc, char **argv, const struct retry_kind *k)
{
	struct store_audit audit;
	char details[96];
	int r, done_rc = FGW_ERR_INTERNAL;
	if ((r = usage_unless(argc == 1 && strncmp(argv[0], k->prefix, strlen(k->prefix)) == 0,
	                      k->usage)) != 0 ||
	    (r = open_writer(c)) != 0)
		return r;
	snprintf(details, sizeof(details), "{\"%s\":\"%.40s\"}", k->id_name, argv[0]);
	audit = (struct store_audit){ "operator:flairctl", "local", k->event, argv[0],
		                          "success",           details };
	/* No waker: done runs on the writer, and store_close waits for it. */
	if ((r = k->retry(c->store, NULL, argv[0], fgw_now_ms(), &audit, 1, retry_done,
	                  &done_rc)) != 0) {
		fprintf(stderr, "flairctl: %s: %s\n", k->cmd, fgw_strerror(r));
		return r;
	}
	store_close(c->store);
	c->store = NULL;
	if (done_rc != 0) {
		fprintf(stderr, "flairctl: %s %s: %s\n", k->cmd, argv[0], fgw_strerror(done_rc));
		return done_rc;
	}
	printf("%s is pending again and will be sent at the next %s\n", argv[0], k->when);
	return FGW_OK;
}

static int
cmd_webhooks_retry(struct ctl *c, int argc, char **argv)
{
	static const struct retry_kind k = { "webhooks retry",
		                                 "webhooks retry OUTBOX_ID (whd_...)",
		                                 "whd_",
		                                 "webhook.retry",
		                                 "outboxId",
		                                 "delivery tick",
		                                 store_outbox_retry };
	return outbox_retry(c, argc, argv, &k);
}

/* ---- mail ------------------------------------------------------------- */

static void
print_mail(void *arg, const struct store_mail_row *o)
{
	char next[32], created[32];
	(void)arg;
	iso_or_dash(o->created_at, created, sizeof(created));
	iso_or_dash(strcmp(o->status, "pending") == 0 ? o->next_attempt_at : 0, next,
	            sizeof(next));
	printf("%s %-7s attempts=%d next=%s created=%s kind=%s to=%s txn=%s%s%s\n", o->id,
	       o->status, o->attempts, next, created, o->kind, o->rcpt_to,
	       o->txn_id[0] ? o->txn_id : "-", o->last_error[0] ? " last_error=" : "",
	       o->last_error);
}

static int
cmd_mail_list(struct ctl *c, int argc, char **argv)
{
	int64_t limit;
	int r;
	if ((r = parse_limit(argc, argv, "mail list", &limit)) != 0 ||
	    (r = open_store(c)) != 0)
		return r;
	if ((r = store_mail_list(c->reader, (int)limit, print_mail, NULL)) != 0)
		fprintf(stderr, "flairctl: mail list: %s\n", fgw_strerror(r));
	return r;
}

static int
cmd_mail_retry(struct ctl *c, int argc, char **argv)
{
	static const struct retry_kind k = { "mail retry",    "mail retry MAIL_ID (mail_...)",
		                                 "mail_",         "mail.retry",
		                                 "mailId",        "delivery round",
		                                 store_mail_retry };
	return outbox_retry(c, argc, argv, &k);
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
	int r = open_writer(c);
	return r != 0 ? r : ctl_slots_add(c->store, argc, argv);
}

static int
cmd_slots_load(struct ctl *c, int argc, char **argv)
{
	int r = open_writer(c);
	return r != 0 ? r : ctl_slots_load(c->store, argc, argv);
}

static int
cmd_slots_set_capacity(struct ctl *c, int argc, char **argv)
{
	int r = open_writer(c);
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
	{ "keys", "init", "", "create the KEK file (if named) and the key ring",
	  cmd_keys_init, NULL },
	{ "keys", "status", "", "show key ids, statuses and how many entries each protects",
	  cmd_keys_status, NULL },
	{ "keys", "rewrap", "[--batch N]",
	  "re-encrypt vault entries of non-active keys (daemon may run)", cmd_keys_rewrap,
	  NULL },
	{ "keys", "processor-import", "NAME FILE", "install a processor's sealing public key",
	  cmd_keys_processor_import, NULL },
	{ "keys", "rotate", "[--box]",
	  "make a new data key (or box key) the one used to encrypt", cmd_keys_rotate, NULL },
	{ "keys", "retire", "DATA_KEY_ID", "retired keys decrypt but never encrypt",
	  cmd_keys_retire, NULL },
	{ NULL, "seal", "PUBLIC_KEY_FILE < card.json",
	  "make an encryptedCard object for a public key", cmd_seal, NULL },
	{ "txn", "show", "TXN_ID", "print a recorded transaction (masked)", cmd_txn_show,
	  NULL },
	{ "audit", "verify", "[--backup FILE]",
	  "check the audit chain and signed checkpoints; names the first broken event",
	  cmd_audit_verify, NULL },
	{ "audit", "checkpoint", "", "sign the current audit chain head now",
	  cmd_audit_checkpoint, NULL },
	{ "audit", "query", "[FILTERS] [--format table|jsonl|csv]",
	  "read the audit trail (read-only; --help lists filters)", cmd_audit_query,
	  AUDIT_QUERY_FILTERS },
	{ NULL, "report", "[--day YYYY-MM-DD]",
	  "daily counts, sums, decline and 3-D Secure rates, time to outcome", cmd_report,
	  NULL },
	{ "backup", "now", "",
	  "take an encrypted backup (and upload it if s3_endpoint is set)", cmd_backup_now,
	  NULL },
	{ "backup", "list", "", "list backups in backup_dir with their checksums",
	  cmd_backup_list, NULL },
	{ "backup", "verify", "FILE", "decrypt a backup and verify its audit trail",
	  cmd_backup_verify, NULL },
	{ "backup", "restore", "FILE NEW_DATABASE [NEW_EXPORT_JSON]",
	  "restore into a new database file (and the JSON export) and verify it",
	  cmd_backup_restore, NULL },
	{ "backup", "export", "FILE OUT.json",
	  "write a backup's JSON export (audit trail, transactions; no card data)",
	  cmd_backup_export, NULL },
	{ "webhooks", "list", "[--limit N]",
	  "outbound webhook deliveries, newest first, with every attempt", cmd_webhooks_list,
	  NULL },
	{ "webhooks", "retry", "OUTBOX_ID",
	  "make a delivery pending and due now (also a failed one)", cmd_webhooks_retry,
	  NULL },
	{ "mail", "list", "[--limit N]",
	  "e-mail notifications, newest first, with status and last error", cmd_mail_list,
	  NULL },
	{ "mail", "retry", "MAIL_ID", "make a mail pending and due now (also a failed one)",
	  cmd_mail_retry, NULL },
	{ "config", "check", "",
	  "every start-up check of the daemon, changing nothing (as flairgw --check)",
	  cmd_config_check, NULL },
	{ "rules", "check", "[FILE]",
	  "compile a rules file; errors as FILE:LINE:COL (exit 1)", cmd_rules_check, NULL },
	{ "rules", "test", "FILE TXN.json [OPTIONS]",
	  "decide a sample transaction body, no database (--mode M, --threeds T, --card-saved, "
	  "--processor P, --customer-id ID, --previous N, --declined N)",
	  cmd_rules_test, NULL },
	{ "rules", "reload", "", "check rules_file, then SIGHUP the daemon in pid_file",
	  cmd_rules_reload, NULL },
	{ "slots", "list", "", "time slots with capacity, places taken and price",
	  cmd_slots_list, NULL },
	{ "slots", "add", "SLOT_ID EXPERIENCE_ID STARTS_AT_MS CAPACITY",
	  "add or update a time slot", cmd_slots_add, NULL },
	{ "slots", "load", "FILE.json", "load experiences and time slots (slots_file format)",
	  cmd_slots_load, NULL },
	{ "slots", "set-capacity", "SLOT_ID CAPACITY",
	  "change capacity (never below places taken)", cmd_slots_set_capacity, NULL },
	{ "jwt", "sign", "(--hs256 FILE | --rs256 PEM --kid KID) CLAIMS", "mint a test JWT",
	  cmd_jwt_sign, NULL },
	{ "jwt", "jwks", "PEM KID", "print a one-key JWKS for an RSA key", cmd_jwt_jwks,
	  NULL },
	{ NULL, NULL, NULL, NULL, NULL, NULL },
};

/* The commands of group (all of them when group is NULL), one a line. */
static void
list_commands(FILE *out, const char *group)
{
	for (const struct command *cmd = commands; cmd->name; cmd++) {
		char name[64];
		if (group != NULL && (cmd->group == NULL || strcmp(cmd->group, group) != 0))
			continue;
		snprintf(name, sizeof(name), "%s%s%s %s", cmd->group ? cmd->group : "",
		         cmd->group ? " " : "", cmd->name, cmd->args);
		fprintf(out, "  %-36s %s\n", name, cmd->help);
	}
}

/* The command table as an mdoc list, for flairctl(8) (make install). */
static void
list_commands_mdoc(FILE *out)
{
	fputs(".Bl -tag -width Ds\n", out);
	for (const struct command *cmd = commands; cmd->name; cmd++) {
		fprintf(out, ".It Xo\n.Cm %s%s%s\n", cmd->group ? cmd->group : "",
		        cmd->group ? " " : "", cmd->name);
		if (cmd->args[0] != '\0')
			fprintf(out, ".Li \"%s\"\n", cmd->args);
		fprintf(out, ".Xc\n%s.\n", cmd->help);
	}
	fputs(".El\n", out);
}

static void
usage(FILE *out)
{
	fprintf(out,
	        "usage: flairctl [--config FILE] [--DIRECTIVE VALUE ...] COMMAND [ARGS]\n\n"
	        "The configuration is the daemon's (see flairgw --help). Without\n"
	        "--config: $FLAIRGW_CONFIG, else ./etc/flairgw.conf, else\n"
	        "/etc/flairgw/flairgw.conf, the first that is set or exists.\n"
	        "Every command takes --help.\nCommands:\n");
	list_commands(out, NULL);
}

static bool
is_group(const char *word)
{
	for (const struct command *cmd = commands; cmd->name; cmd++)
		if (cmd->group != NULL && strcmp(cmd->group, word) == 0)
			return true;
	return false;
}

/* The configuration file when the command line names none: the
 * environment, then a checkout's, then the installed one. NULL: none. */
static const char *
default_config(int argc, char **argv)
{
	const char *env = getenv("FLAIRGW_CONFIG");
	for (int i = 1; i < argc; i++) /* argv[1..argc): the options only */
		if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0)
			return NULL;
	if (env != NULL && env[0] != '\0')
		return env;
	if (access("etc/flairgw.conf", R_OK) == 0)
		return "etc/flairgw.conf";
	if (access("/etc/flairgw/flairgw.conf", R_OK) == 0)
		return "/etc/flairgw/flairgw.conf";
	return NULL;
}

int
main(int argc, char **argv)
{
	static struct fgw_config raw; /* too big for the stack with c */
	struct ctl c;
	struct fgw_why why = { 0 };
	char err[1024];
	int first = 1, r, help = 0;

	if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	memset(&c, 0, sizeof(c));
	umask(077); /* backups, snapshots and restored databases: owner only */
	secmem_harden_process();
	log_setup(LOG_LVL_WARN, 0, 2);
	config_defaults(&c.cfg);
	/* Options run up to the first word that is not --name value. */
	while (first < argc && strncmp(argv[first], "--", 2) == 0) {
		if (strcmp(argv[first], "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[first], "--version") == 0) {
			printf("flairctl %s\n", FGW_VERSION);
			return 0;
		}
		if (strcmp(argv[first], "--commands-mdoc") == 0) {
			list_commands_mdoc(stdout);
			return 0;
		}
		first += strchr(argv[first], '=') ? 1 : 2;
	}
	if (first > argc)
		first = argc;
	if (first >= argc) {
		usage(stderr);
		return 2;
	}
	/* A group alone, or with --help: its commands (before any file is
	 * read, so help works without a configuration). */
	if (is_group(argv[first]) &&
	    (first + 1 >= argc || strcmp(argv[first + 1], "--help") == 0)) {
		FILE *out = first + 1 < argc ? stdout : stderr;
		fprintf(out, "usage: flairctl %s COMMAND [ARGS]\nCommands:\n", argv[first]);
		list_commands(out, argv[first]);
		return first + 1 < argc ? 0 : 2;
	}
	{
		const char *path = default_config(first, argv);
		if (path != NULL && config_load_file(&c.cfg, path, &why) != 0) {
			fprintf(stderr, "flairctl: %s\n", fgw_why_format(&why, err, sizeof(err)));
			return 2;
		}
	}
	if (config_from_args(&c.cfg, first, argv, &help, &why) != 0) {
		fprintf(stderr, "flairctl: %s\n", fgw_why_format(&why, err, sizeof(err)));
		return 2;
	}
	raw = c.cfg;
	c.raw = &raw;
	/* flairctl needs no api_key or processor key: only paths. */
	if (c.cfg.n_api_keys == 0)
		config_set(&c.cfg, "api_key", "flairctl-placeholder ctl", "flairctl", NULL);
	for (int i = 0; i < c.cfg.n_procs; i++)
		if (c.cfg.procs[i].public_key_file[0] == '\0')
			fgw_strlcpy(c.cfg.procs[i].public_key_file, "-",
			            sizeof(c.cfg.procs[i].public_key_file));
	/* The rules commands need no KEK: only paths (a rules file, the pid
	 * file, which config_finish derives before its other checks). */
	/* config check reports this itself, with every other problem. */
	if (config_finish(&c.cfg, &why) != 0 && strcmp(argv[first], "rules") != 0 &&
	    strcmp(argv[first], "config") != 0) {
		fprintf(stderr, "flairctl: %s\n", fgw_why_format(&why, err, sizeof(err)));
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
			printf("usage: flairctl %s%s%s %s\n  %s\n%s", cmd->group ? cmd->group : "",
			       cmd->group ? " " : "", cmd->name, cmd->args, cmd->help,
			       cmd->more ? cmd->more : "");
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
	store_ring_close(c.ring);
	sodium_memzero(&raw, sizeof(raw)); /* API key hashes */
	curl_global_cleanup();
	return r == 0 ? 0 : 1;
}
