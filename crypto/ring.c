/*
 * crypto/ring.c — keyring.json: canonical text and integrity MAC, writing
 * (with a cross-process lock and a generation counter), reading and
 * checking. The same document lives in the database instead when the
 * keyring has a source (struct keyring_source: the PostgreSQL store,
 * shared by every instance); only where it is read and written differs.
 */
#define LOG_MODULE "crypto"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/box.h"
#include "crypto/keys.h"
#include "crypto/keys_int.h"
#include "crypto/secmem.h"

/* ---- 4. keyring.json ------------------------------------------------- */

struct text { /* a growable string (no secrets in it) */
	char *p;
	size_t len, cap;
	int err;
};

static void text_add(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
text_add(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->err)
		return;
	for (;;) {
		size_t room = t->cap - t->len;
		va_start(ap, fmt);
		n = vsnprintf(t->p ? t->p + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->err = FGW_ERR_INTERNAL;
			return;
		}
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 1024;
		while (cap - t->len <= (size_t)n)
			cap *= 2;
		char *np = realloc(t->p, cap);
		if (np == NULL) {
			t->err = FGW_ERR_NOMEM;
			return;
		}
		t->p = np;
		t->cap = cap;
	}
}

/* The canonical text the ring MAC covers: every field of the file in a
 * fixed order, one key per line. Fields cannot contain ',' or '\n' (ids
 * are checked base62, wrapped blobs checked base64, public keys hex), so
 * the text is unambiguous. Box keys expired at `now` are left out, exactly
 * as ring_json leaves them out of the file. */
static int
ring_canon(const struct ring_state *st, int64_t now, struct text *t)
{
	char hex[2 * 32 + 1];

	text_add(t, "%s/%d\ngeneration=%llu\n", RING_FORMAT, RING_VERSION,
	         (unsigned long long)st->generation);
	fgw_hex(st->check_salt, sizeof(st->check_salt), hex);
	text_add(t, "check=%s:", hex);
	fgw_hex(st->check_mac, sizeof(st->check_mac), hex);
	text_add(t, "%s\n", hex);
	for (size_t i = 0; i < st->ndk; i++) {
		const struct dkey *k = &st->dk[i];
		text_add(t, "dk=%s,%s,%lld,%lld,%s\n", k->id, k->active ? "active" : "retired",
		         (long long)k->created_ms, (long long)k->retired_ms, k->wrapped);
	}
	text_add(t, "fk=%s,%lld,%s\n", st->fp.id, (long long)st->fp.created_ms,
	         st->fp.wrapped);
	text_add(t, "am=%s,%lld,%s\n", st->amac.id, (long long)st->amac.created_ms,
	         st->amac.wrapped);
	fgw_hex(st->asign.pk, sizeof(st->asign.pk), hex);
	text_add(t, "as=%s,%lld,%s,%s\n", st->asign.id, (long long)st->asign.created_ms, hex,
	         st->asign.wrapped);
	for (size_t i = 0; i < st->nbk; i++) {
		const struct bkey *k = st->bk[i];
		if (keys_bkey_expired(k, now))
			continue;
		fgw_hex(k->pk, sizeof(k->pk), hex);
		text_add(t, "gk=%s,%lld,%lld,%s,%s\n", k->id, (long long)k->created_ms,
		         (long long)k->expires_ms, hex, k->wrapped);
	}
	return t->err;
}

static int
ring_mac(const struct keyring *kr, const struct ring_state *st, int64_t now,
         unsigned char mac[crypto_generichash_BYTES])
{
	struct text t = { 0 };
	int r;

	if ((r = ring_canon(st, now, &t)) == FGW_OK)
		crypto_generichash(mac, crypto_generichash_BYTES, (const unsigned char *)t.p,
		                   t.len, kr->ring_key->data, KEY_LEN);
	free(t.p);
	return r;
}

/* cJSON helpers: each returns 0 or FGW_ERR_NOMEM. */
static int
j_str(cJSON *o, const char *name, const char *v)
{
	return cJSON_AddStringToObject(o, name, v) ? FGW_OK : FGW_ERR_NOMEM;
}

static int
j_num(cJSON *o, const char *name, int64_t v)
{
	return cJSON_AddNumberToObject(o, name, (double)v) ? FGW_OK : FGW_ERR_NOMEM;
}

static int
j_b64(cJSON *o, const char *name, const unsigned char *v, size_t len)
{
	char *s = NULL;
	int r;

	if ((r = fgw_b64_encode(v, len, &s)) != FGW_OK)
		return r;
	r = j_str(o, name, s);
	free(s);
	return r;
}

static int
j_time(cJSON *o, const char *name, int64_t ms)
{
	char ts[32];

	if (fgw_iso8601(ms, ts, sizeof(ts)) != FGW_OK)
		return FGW_ERR_INVALID;
	return j_str(o, name, ts);
}

/* Adds {"keyId","created",...} for a single key. public_only leaves the
 * wrapped secret out (for keyring_status_json). */
static int
j_skey(cJSON *root, const char *name, const struct skey *k, int with_pk, int public_only)
{
	cJSON *o = cJSON_AddObjectToObject(root, name);
	int r;

	if (o == NULL)
		return FGW_ERR_NOMEM;
	if ((r = j_str(o, "keyId", k->id)) != FGW_OK ||
	    (r = public_only ? j_time(o, "created", k->created_ms)
	                     : j_num(o, "created", k->created_ms)) != FGW_OK)
		return r;
	if (with_pk && (r = j_b64(o, "publicKey", k->pk, sizeof(k->pk))) != FGW_OK)
		return r;
	if (!public_only && (r = j_str(o, "wrapped", k->wrapped)) != FGW_OK)
		return r;
	return FGW_OK;
}

/* The JSON document: keyring.json (public_only = 0, with the MAC) or the
 * operator status view (public_only = 1: no wrapped blobs, ISO times). */
int
ring_json(const struct keyring *kr, const struct ring_state *st, int64_t now,
          int public_only, char **out)
{
	unsigned char mac[crypto_generichash_BYTES];
	cJSON *root = NULL, *arr, *o;
	int r = FGW_ERR_NOMEM;

	*out = NULL;
	if ((root = cJSON_CreateObject()) == NULL)
		goto out;
	if ((r = j_str(root, "format", RING_FORMAT)) != FGW_OK ||
	    (r = j_num(root, "version", RING_VERSION)) != FGW_OK ||
	    (r = j_num(root, "generation", (int64_t)st->generation)) != FGW_OK)
		goto out;
	if (!public_only) {
		r = FGW_ERR_NOMEM;
		if ((o = cJSON_AddObjectToObject(root, "kekCheck")) == NULL)
			goto out;
		if ((r = j_b64(o, "salt", st->check_salt, sizeof(st->check_salt))) != FGW_OK ||
		    (r = j_b64(o, "mac", st->check_mac, sizeof(st->check_mac))) != FGW_OK)
			goto out;
	}
	r = FGW_ERR_NOMEM;
	if ((arr = cJSON_AddArrayToObject(root, "dataKeys")) == NULL)
		goto out;
	for (size_t i = 0; i < st->ndk; i++) {
		const struct dkey *k = &st->dk[i];
		r = FGW_ERR_NOMEM;
		if ((o = cJSON_CreateObject()) == NULL)
			goto out;
		cJSON_AddItemToArray(arr, o);
		if ((r = j_str(o, "keyId", k->id)) != FGW_OK ||
		    (r = j_str(o, "status", k->active ? "active" : "retired")) != FGW_OK)
			goto out;
		if (public_only) {
			if ((r = j_time(o, "created", k->created_ms)) != FGW_OK ||
			    (!k->active && (r = j_time(o, "retired", k->retired_ms)) != FGW_OK))
				goto out;
		} else if ((r = j_num(o, "created", k->created_ms)) != FGW_OK ||
		           (!k->active && (r = j_num(o, "retired", k->retired_ms)) != FGW_OK) ||
		           (r = j_str(o, "wrapped", k->wrapped)) != FGW_OK)
			goto out;
	}
	if ((r = j_skey(root, "fingerprintKey", &st->fp, 0, public_only)) != FGW_OK ||
	    (r = j_skey(root, "auditMacKey", &st->amac, 0, public_only)) != FGW_OK ||
	    (r = j_skey(root, "auditSigningKey", &st->asign, 1, public_only)) != FGW_OK)
		goto out;
	r = FGW_ERR_NOMEM;
	if ((arr = cJSON_AddArrayToObject(root, "boxKeys")) == NULL)
		goto out;
	for (size_t i = 0; i < st->nbk; i++) {
		const struct bkey *k = st->bk[i];
		if (keys_bkey_expired(k, now))
			continue;
		r = FGW_ERR_NOMEM;
		if ((o = cJSON_CreateObject()) == NULL)
			goto out;
		cJSON_AddItemToArray(arr, o);
		if ((r = j_str(o, "keyId", k->id)) != FGW_OK ||
		    (r = j_str(o, "status", k->expires_ms ? "previous" : "current")) != FGW_OK ||
		    (r = public_only ? j_time(o, "created", k->created_ms)
		                     : j_num(o, "created", k->created_ms)) != FGW_OK)
			goto out;
		if (k->expires_ms &&
		    (r = public_only ? j_time(o, "expires", k->expires_ms)
		                     : j_num(o, "expires", k->expires_ms)) != FGW_OK)
			goto out;
		if ((r = j_b64(o, "publicKey", k->pk, sizeof(k->pk))) != FGW_OK ||
		    (!public_only && (r = j_str(o, "wrapped", k->wrapped)) != FGW_OK))
			goto out;
	}
	if (!public_only) {
		if ((r = ring_mac(kr, st, now, mac)) != FGW_OK ||
		    (r = j_b64(root, "mac", mac, sizeof(mac))) != FGW_OK)
			goto out;
	}
	r = FGW_ERR_NOMEM;
	if ((*out = cJSON_Print(root)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(root);
	return r;
}

/* fsync the keys directory so a rename survives a crash: a data key that
 * has encrypted anything must never be lost with the file's old version. */
static int
sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = FGW_OK;

	if (fd < 0)
		return FGW_ERR_IO;
	if (fsync(fd) != 0)
		r = FGW_ERR_IO;
	close(fd);
	return r;
}

/* The generation currently on disk (0 if there is no file yet). */
static int
disk_generation(const char *path, uint64_t *gen)
{
	char *text = NULL;
	size_t len = 0;
	cJSON *root = NULL;
	const cJSON *g;
	int64_t whole;
	int r;

	*gen = 0;
	r = fgw_read_file(path, RING_MAX_BYTES, &text, &len);
	if (r == FGW_ERR_NOT_FOUND)
		return FGW_OK;
	if (r != FGW_OK)
		return r;
	r = FGW_ERR_INVALID;
	if ((root = fgw_json_parse_strict(text, len)) == NULL)
		goto out;
	g = cJSON_GetObjectItemCaseSensitive(root, "generation");
	if (fgw_json_int(g, 0, MAX_JSON_MS, &whole) != 0)
		goto out;
	*gen = (uint64_t)whole;
	r = FGW_OK;
out:
	cJSON_Delete(root);
	free(text);
	return r;
}

/* Writes the ring (caller holds the write lock or owns kr alone). Under an
 * flock on keyring.lock it refuses to overwrite a file another process
 * changed since we read it (FGW_ERR_CONFLICT), then writes generation + 1
 * atomically with mode 0600. On success box keys expired at `now` leave
 * the file and the lists; on failure nothing in memory changes. */
int
ring_persist(struct keyring *kr, int64_t now, const char **msg)
{
	char *text = NULL;
	uint64_t on_disk = 0;
	int lfd = -1, r;
	size_t i, j;

	if (kr->has_src) {
		/* The source refuses the write (in the same transaction as the
		 * check) when the newest stored ring is not the one we read. */
		kr->st.generation++;
		r = ring_json(kr, &kr->st, now, 0, &text);
		if (r == FGW_OK)
			r = kr->src.save(kr->src.ctx, kr->src_gen, kr->st.generation, text,
			                 strlen(text));
		if (r != FGW_OK) {
			kr->st.generation--;
			*msg = r == FGW_ERR_CONFLICT
			           ? "the key ring changed in the database since it "
			             "was read (reload it and retry)"
			           : "cannot write the key ring to the database";
			goto out;
		}
		kr->src_gen = kr->st.generation;
		goto written;
	}
	lfd = open(kr->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lfd < 0 || flock(lfd, LOCK_EX) != 0) {
		*msg = "cannot lock the key ring";
		r = FGW_ERR_IO;
		goto out;
	}
	if ((r = disk_generation(kr->path, &on_disk)) != FGW_OK) {
		*msg = "cannot read the key ring file before writing it";
		goto out;
	}
	if (on_disk != kr->st.generation) {
		*msg = "the key ring file changed since it was read (reload it "
		       "and retry)";
		r = FGW_ERR_CONFLICT;
		goto out;
	}
	kr->st.generation++;
	r = ring_json(kr, &kr->st, now, 0, &text);
	if (r == FGW_OK &&
	    (r = fgw_write_file_atomic(kr->path, text, strlen(text), 0600)) == FGW_OK)
		r = sync_dir(kr->dir);
	if (r != FGW_OK) {
		kr->st.generation--;
		*msg = "cannot write the key ring file";
		goto out;
	}
written:
	/* The file no longer holds expired box keys; wipe them here too. */
	for (i = 0, j = 0; i < kr->st.nbk; i++) {
		struct bkey *k = kr->st.bk[i];
		if (keys_bkey_expired(k, now) && keys_grave_add(kr, k) == FGW_OK)
			continue;
		kr->st.bk[j++] = k;
	}
	kr->st.nbk = j;
	r = FGW_OK;
out:
	if (lfd >= 0)
		close(lfd); /* releases the flock */
	free(text);
	return r;
}

/* Parsing. Each helper returns 0 or FGW_ERR_INVALID. */
static const char *
p_str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int
p_ms(const cJSON *o, const char *name, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return fgw_json_int(v, 0, MAX_JSON_MS, out);
}

static int
p_id(const cJSON *o, const char *prefix, char id[KEYRING_ID_MAX])
{
	const char *s = p_str(o, "keyId");

	if (s == NULL || !keys_id_valid(s, prefix))
		return FGW_ERR_INVALID;
	return fgw_strlcpy(id, s, KEYRING_ID_MAX) == FGW_OK ? FGW_OK : FGW_ERR_INVALID;
}

static int
p_wrapped(const cJSON *o, char **out)
{
	const char *s = p_str(o, "wrapped");

	if (s == NULL || kek_b64_exact(s, WRAPPED_LEN, NULL) != FGW_OK)
		return FGW_ERR_INVALID;
	if ((*out = strdup(s)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

static int
p_b64(const cJSON *o, const char *name, unsigned char *out, size_t len)
{
	const char *s = p_str(o, name);

	if (s == NULL || kek_b64_exact(s, len, out) != FGW_OK)
		return FGW_ERR_INVALID;
	return FGW_OK;
}

static int
p_skey(const cJSON *root, const char *name, const char *prefix, int with_pk,
       struct skey *k)
{
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, name);
	int r;

	if (!cJSON_IsObject(o))
		return FGW_ERR_INVALID;
	if ((r = p_id(o, prefix, k->id)) != FGW_OK ||
	    (r = p_ms(o, "created", &k->created_ms)) != FGW_OK ||
	    (with_pk && (r = p_b64(o, "publicKey", k->pk, sizeof(k->pk))) != FGW_OK) ||
	    (r = p_wrapped(o, &k->wrapped)) != FGW_OK)
		return r;
	return FGW_OK;
}

/* The key list root's array name (at least one object, each with a
 * "status"): one(o, status, n, st) reads each, n being the list's size. */
static int
p_keys(const cJSON *root, const char *name, struct ring_state *st,
       int (*one)(const cJSON *o, const char *status, size_t n, struct ring_state *st))
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, name);
	const cJSON *o;
	int size, r;

	if (!cJSON_IsArray(arr) || (size = cJSON_GetArraySize(arr)) < 1)
		return FGW_ERR_INVALID;
	cJSON_ArrayForEach(o, arr) {
		const char *status = p_str(o, "status");
		if (!cJSON_IsObject(o) || status == NULL)
			return FGW_ERR_INVALID;
		if ((r = one(o, status, (size_t)size, st)) != FGW_OK)
			return r;
	}
	return FGW_OK;
}

static int
p_dkey(const cJSON *o, const char *status, size_t n, struct ring_state *st)
{
	struct dkey *k;
	int r;

	if (st->dk == NULL && (st->dk = calloc(n, sizeof(*st->dk))) == NULL)
		return FGW_ERR_NOMEM;
	k = &st->dk[st->ndk++];
	if (strcmp(status, "active") == 0)
		k->active = 1;
	else if (strcmp(status, "retired") != 0)
		return FGW_ERR_INVALID;
	if ((r = p_id(o, "dk_", k->id)) != FGW_OK ||
	    (r = p_ms(o, "created", &k->created_ms)) != FGW_OK ||
	    (!k->active && (r = p_ms(o, "retired", &k->retired_ms)) != FGW_OK) ||
	    (r = p_wrapped(o, &k->wrapped)) != FGW_OK)
		return r;
	return FGW_OK;
}

static int
p_bkey(const cJSON *o, const char *status, size_t n, struct ring_state *st)
{
	struct bkey *k;
	int r;

	if (st->bk == NULL && (st->bk = calloc(n, sizeof(*st->bk))) == NULL)
		return FGW_ERR_NOMEM;
	if ((k = calloc(1, sizeof(*k))) == NULL)
		return FGW_ERR_NOMEM;
	st->bk[st->nbk++] = k;
	if (strcmp(status, "previous") == 0) {
		if ((r = p_ms(o, "expires", &k->expires_ms)) != FGW_OK || k->expires_ms == 0)
			return FGW_ERR_INVALID;
	} else if (strcmp(status, "current") != 0)
		return FGW_ERR_INVALID;
	if ((r = p_id(o, "gk_", k->id)) != FGW_OK ||
	    (r = p_ms(o, "created", &k->created_ms)) != FGW_OK ||
	    (r = p_b64(o, "publicKey", k->pk, sizeof(k->pk))) != FGW_OK ||
	    (r = p_wrapped(o, &k->wrapped)) != FGW_OK)
		return r;
	return FGW_OK;
}

/* Structure only: the file is still untrusted after this. */
static int
ring_parse(const char *text, size_t len, struct ring_state *st)
{
	cJSON *root = NULL;
	const cJSON *o;
	const char *fmt;
	int64_t v;
	int r = FGW_ERR_INVALID;

	if ((root = fgw_json_parse_strict(text, len)) == NULL || !cJSON_IsObject(root))
		goto out;
	if ((fmt = p_str(root, "format")) == NULL || strcmp(fmt, RING_FORMAT) != 0 ||
	    p_ms(root, "version", &v) != FGW_OK || v != RING_VERSION ||
	    p_ms(root, "generation", &v) != FGW_OK)
		goto out;
	st->generation = (uint64_t)v;
	o = cJSON_GetObjectItemCaseSensitive(root, "kekCheck");
	if (!cJSON_IsObject(o) ||
	    p_b64(o, "salt", st->check_salt, sizeof(st->check_salt)) != FGW_OK ||
	    p_b64(o, "mac", st->check_mac, sizeof(st->check_mac)) != FGW_OK)
		goto out;
	if ((r = p_keys(root, "dataKeys", st, p_dkey)) != FGW_OK ||
	    (r = p_skey(root, "fingerprintKey", "fk_", 0, &st->fp)) != FGW_OK ||
	    (r = p_skey(root, "auditMacKey", "am_", 0, &st->amac)) != FGW_OK ||
	    (r = p_skey(root, "auditSigningKey", "as_", 1, &st->asign)) != FGW_OK ||
	    (r = p_keys(root, "boxKeys", st, p_bkey)) != FGW_OK)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(root);
	return r;
}

/* The MAC stored in the file (parsed separately: it is not part of the
 * canonical text it covers). */
static int
ring_stored_mac(const char *text, size_t len, unsigned char mac[crypto_generichash_BYTES])
{
	cJSON *root = fgw_json_parse_strict(text, len);
	int r = FGW_ERR_INVALID;

	if (root != NULL)
		r = p_b64(root, "mac", mac, crypto_generichash_BYTES);
	cJSON_Delete(root);
	return r;
}

/* Exactly one active data key, one current box key, no duplicate ids. */
static int
ring_shape_ok(struct ring_state *st)
{
	size_t active = 0, current = 0;

	for (size_t i = 0; i < st->ndk; i++) {
		active += st->dk[i].active ? 1 : 0;
		for (size_t j = i + 1; j < st->ndk; j++)
			if (strcmp(st->dk[i].id, st->dk[j].id) == 0)
				return 0;
	}
	for (size_t i = 0; i < st->nbk; i++) {
		if (st->bk[i]->expires_ms == 0) {
			current++;
			st->box_current = st->bk[i];
		}
		for (size_t j = i + 1; j < st->nbk; j++)
			if (strcmp(st->bk[i]->id, st->bk[j]->id) == 0)
				return 0;
	}
	return active == 1 && current == 1;
}

/* Unwraps every secret, checking that stored public keys belong to them.
 * Box keys already expired are dropped without being unwrapped. */
static int
ring_unwrap(const struct keyring *kr, struct ring_state *st, int64_t now)
{
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
	struct secbuf *seed = NULL;
	size_t i, j;
	int r;

	for (i = 0, j = 0; i < st->nbk; i++) {
		if (keys_bkey_expired(st->bk[i], now)) {
			keys_bkey_free(st->bk[i]);
			continue;
		}
		st->bk[j++] = st->bk[i];
	}
	st->nbk = j;
	for (i = 0; i < st->ndk; i++) {
		struct dkey *k = &st->dk[i];
		if ((r = kek_unwrap(kr, P_DATA, k->id, k->wrapped, &k->key)) != FGW_OK)
			goto out;
	}
	if ((r = kek_unwrap(kr, P_FP, st->fp.id, st->fp.wrapped, &st->fp.key)) != FGW_OK ||
	    (r = kek_unwrap(kr, P_AMAC, st->amac.id, st->amac.wrapped, &st->amac.key)) !=
	        FGW_OK ||
	    (r = kek_unwrap(kr, P_ASIGN, st->asign.id, st->asign.wrapped, &seed)) != FGW_OK ||
	    (r = kek_sign_key_from_seed(seed, &st->asign.key, pk)) != FGW_OK)
		goto out;
	if (sodium_memcmp(pk, st->asign.pk, crypto_sign_PUBLICKEYBYTES) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	for (i = 0; i < st->nbk; i++) {
		struct bkey *k = st->bk[i];
		if ((r = kek_unwrap(kr, P_BOX, k->id, k->wrapped, &k->sk)) != FGW_OK)
			goto out;
		if (crypto_scalarmult_base(pk, k->sk->data) != 0 ||
		    sodium_memcmp(pk, k->pk, crypto_box_PUBLICKEYBYTES) != 0) {
			r = FGW_ERR_CRYPTO;
			goto out;
		}
	}
	r = FGW_OK;
out:
	secbuf_free(seed);
	return r;
}

/* Reads and fully checks keyring.json into st: file mode, structure, the
 * KEK check value, the ring MAC, then every wrapped secret. */
/* The ring document from the source: its row's generation must be the
 * one the document states, which the ring MAC covers, so an old document
 * stored again as a newer row (a retired data key made active again) is
 * refused like an edited file. */
static int
ring_read_src(const struct keyring *kr, char **text, size_t *len, uint64_t *row_gen,
              const char **msg)
{
	int r = kr->src.load(kr->src.ctx, text, len, row_gen);

	if (r == FGW_ERR_NOT_FOUND)
		*msg = "key ring not found in the database";
	else if (r != FGW_OK)
		*msg = "cannot read the key ring from the database";
	return r;
}

int
ring_load(const struct keyring *kr, struct ring_state *st, const char **msg)
{
	unsigned char mac[crypto_generichash_BYTES], stored[crypto_generichash_BYTES];
	struct stat sb;
	char *text = NULL;
	size_t len = 0;
	uint64_t row_gen = 0;
	int r;

	memset(st, 0, sizeof(*st));
	if (kr->has_src) {
		if ((r = ring_read_src(kr, &text, &len, &row_gen, msg)) != FGW_OK)
			goto out;
		goto parse;
	}
	if (stat(kr->path, &sb) != 0) {
		*msg = "key ring file not found";
		r = errno == ENOENT ? FGW_ERR_NOT_FOUND : FGW_ERR_IO;
		goto out;
	}
	if ((sb.st_mode & 077) != 0) {
		*msg = "key ring file is accessible by group or others (chmod 600 "
		       "it)";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = fgw_read_file(kr->path, RING_MAX_BYTES, &text, &len)) != FGW_OK) {
		*msg = "cannot read the key ring file";
		goto out;
	}
parse:
	if ((r = ring_parse(text, len, st)) != FGW_OK ||
	    (r = ring_stored_mac(text, len, stored)) != FGW_OK) {
		*msg = "key ring file is malformed";
		goto out;
	}
	kek_check_value(kr, st->check_salt, mac);
	if (sodium_memcmp(mac, st->check_mac, sizeof(mac)) != 0) {
		*msg = "KEK does not match the key ring (wrong key file?)";
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	/* INT64_MIN: the MAC covers every entry present in the file. */
	if ((r = ring_mac(kr, st, INT64_MIN, mac)) != FGW_OK)
		goto out;
	if (sodium_memcmp(mac, stored, sizeof(mac)) != 0) {
		*msg = "key ring file failed its integrity check (edited or "
		       "corrupted)";
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	if (kr->has_src && st->generation != row_gen) {
		*msg = "key ring in the database failed its integrity check (its "
		       "generation is not the one it was written as)";
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	if (!ring_shape_ok(st)) {
		*msg = "key ring must hold exactly one active data key and one "
		       "current box key";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = ring_unwrap(kr, st, fgw_now_ms())) != FGW_OK) {
		if (r == FGW_ERR_CRYPTO)
			*msg = "a wrapped key failed authentication (key ring "
			       "tampered with?)";
		goto out;
	}
	r = FGW_OK;
out:
	free(text);
	if (r != FGW_OK)
		keys_state_clear(st);
	return r;
}

/* A brand-new ring: one key of each kind. */
int
ring_create(struct keyring *kr, const char **msg)
{
	struct ring_state *st = &kr->st;
	int64_t now = fgw_now_ms();
	int r;

	randombytes_buf(st->check_salt, sizeof(st->check_salt));
	kek_check_value(kr, st->check_salt, st->check_mac);
	if ((st->dk = calloc(1, sizeof(*st->dk))) == NULL ||
	    (st->bk = calloc(1, sizeof(*st->bk))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = kek_new_dkey(kr, now, &st->dk[0])) != FGW_OK)
		return r;
	st->ndk = 1;
	if ((r = kek_new_bkey(kr, now, &st->bk[0])) != FGW_OK)
		return r;
	st->nbk = 1;
	st->box_current = st->bk[0];
	if ((r = kek_new_skey(kr, "fk_", P_FP, now, &st->fp)) != FGW_OK ||
	    (r = kek_new_skey(kr, "am_", P_AMAC, now, &st->amac)) != FGW_OK ||
	    (r = kek_new_skey(kr, "as_", P_ASIGN, now, &st->asign)) != FGW_OK)
		return r;
	if ((r = ring_persist(kr, now, msg)) != FGW_OK)
		return r;
	log_info("created key ring: data key %s, box key %s", st->dk[0].id,
	         st->box_current->id);
	return FGW_OK;
}
