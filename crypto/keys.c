/*
 * crypto/keys.c — the key ring: the only code that holds raw key bytes.
 * This file holds the ring in memory and the public API of crypto/keys.h
 * (open, rotation, audit, the room-internal operations vault.c, sealed.c
 * and box.c use); kek.c the KEK and wrapping, ring.c keyring.json,
 * backupcrypt.c backup files (the cryptography: keys_int.h).
 *
 * Locking: a writer-preferring rwlock guards the data and box key lists.
 * Readers (encrypt, decrypt, open) take it shared; rotation, retirement and
 * reload take it exclusive and write the file while holding it. The
 * fingerprint and audit keys never change after open and need no lock.
 * Box key entries are allocated one by one and freed only by keyring_free
 * (expired ones are wiped and kept in a "grave"), so the id pointer that
 * keyring_box_key_id returns stays valid for the life of the ring.
 *
 * Each usable box key also caches the crypto_box shared keys it has with
 * processor keys (crypto/box.h): computed on first use under the read
 * lock, appended under peers_lock, wiped only with the key's secret (under
 * the write lock: expiry, reload, free), so a reader holding the read lock
 * may use a cached key without further locking.
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

void
keys_skey_clear(struct skey *k)
{
	secbuf_free(k->key);
	free(k->wrapped);
	memset(k, 0, sizeof(*k));
}

void
keys_dkey_clear(struct dkey *k)
{
	secbuf_free(k->key);
	free(k->wrapped);
	memset(k, 0, sizeof(*k));
}

/* Wipes a box key's secret and the shared keys made with it. */
static void
bkey_wipe(struct bkey *k)
{
	secbuf_free(k->sk);
	k->sk = NULL;
	free(k->wrapped);
	k->wrapped = NULL;
	for (size_t i = 0; i < k->npeers; i++)
		secbuf_free(k->peers[i].k);
	memset(k->peers, 0, sizeof(k->peers));
	k->npeers = 0;
}

void
keys_bkey_free(struct bkey *k)
{
	if (k == NULL)
		return;
	bkey_wipe(k);
	free(k);
}

void
keys_state_clear(struct ring_state *st)
{
	for (size_t i = 0; i < st->ndk; i++)
		keys_dkey_clear(&st->dk[i]);
	free(st->dk);
	for (size_t i = 0; i < st->nbk; i++)
		keys_bkey_free(st->bk[i]);
	free(st->bk);
	keys_skey_clear(&st->fp);
	keys_skey_clear(&st->amac);
	keys_skey_clear(&st->asign);
	memset(st, 0, sizeof(*st));
}

/* Moves a box entry out of service: the secret is wiped now, the entry
 * itself (and its id text) lives until keyring_free. */
int
keys_grave_add(struct keyring *kr, struct bkey *k)
{
	struct bkey **g = realloc(kr->grave, (kr->ngrave + 1) * sizeof(*g));

	if (g == NULL)
		return FGW_ERR_NOMEM;
	kr->grave = g;
	bkey_wipe(k);
	kr->grave[kr->ngrave++] = k;
	return FGW_OK;
}

static int
bkey_usable(const struct bkey *k, int64_t now)
{
	return k->sk != NULL && (k->expires_ms == 0 || now < k->expires_ms);
}

int
keys_bkey_expired(const struct bkey *k, int64_t now)
{
	return k->expires_ms != 0 && now >= k->expires_ms;
}

/* The usable box key key_id; call with the read lock held. */
static struct bkey *
bkey_find_usable(struct keyring *kr, const char *key_id)
{
	int64_t now = fgw_now_ms();

	if (key_id == NULL)
		return NULL;
	for (size_t i = 0; i < kr->st.nbk; i++)
		if (strcmp(kr->st.bk[i]->id, key_id) == 0 && bkey_usable(kr->st.bk[i], now))
			return kr->st.bk[i];
	return NULL;
}

/* Key ids: prefix + 1..(KEYRING_ID_MAX-1-prefix) base62 characters. */
int
keys_id_valid(const char *s, const char *prefix)
{
	size_t plen = strlen(prefix), n = strlen(s);

	if (n <= plen || n >= KEYRING_ID_MAX || strncmp(s, prefix, plen) != 0)
		return 0;
	for (size_t i = plen; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return 0;
	}
	return 1;
}

static int
copy_id(char *dst, size_t cap, const char *id)
{
	if (dst == NULL)
		return FGW_OK;
	return fgw_strlcpy(dst, id, cap);
}

/* ---- 5. the public API ----------------------------------------------- */

static int
path_join(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);

	return (n < 0 || (size_t)n >= cap) ? FGW_ERR_TOO_LARGE : FGW_OK;
}

static int
lock_init(struct keyring *kr)
{
	pthread_rwlockattr_t attr;
	int rc;

	if ((kr->lock = malloc(sizeof(*kr->lock))) == NULL)
		return FGW_ERR_NOMEM;
	if (pthread_rwlockattr_init(&attr) != 0)
		return FGW_ERR_INTERNAL;
	/* Rotation must not starve behind a steady stream of readers. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	rc = pthread_rwlock_init(kr->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (rc != 0)
		return FGW_ERR_INTERNAL;
	if (pthread_mutex_init(&kr->peers_lock, NULL) != 0) {
		pthread_rwlock_destroy(kr->lock);
		return FGW_ERR_INTERNAL;
	}
	kr->lock_ready = 1;
	return FGW_OK;
}

static void
rdlock(const struct keyring *kr)
{
	pthread_rwlock_rdlock(kr->lock);
}

static void
wrlock(const struct keyring *kr)
{
	pthread_rwlock_wrlock(kr->lock);
}

static void
unlock(const struct keyring *kr)
{
	pthread_rwlock_unlock(kr->lock);
}

/* The first start on a source that is empty while keys_dir holds a
 * ring: that ring, checked as at any open, becomes the source's first
 * row (the file stays, and is no longer read). */
static int
ring_import(struct keyring *kr, const char **msg)
{
	int r;

	kr->has_src = 0;
	r = ring_load(kr, &kr->st, msg);
	kr->has_src = 1;
	if (r != FGW_OK)
		return r;
	kr->src_gen = 0;
	if ((r = ring_persist(kr, fgw_now_ms(), msg)) != FGW_OK)
		return r;
	log_info("key ring %s stored in the database (generation %llu); the file is no "
	         "longer read",
	         kr->path, (unsigned long long)kr->st.generation);
	return FGW_OK;
}

int
keyring_open(const struct keyring_opts *opts, struct keyring **out, struct fgw_why *why)
{
	struct keyring *kr = NULL;
	struct secbuf *kek = NULL;
	struct fgw_why kw = { 0 };
	const char *msg = NULL;
	struct stat sb;
	int r, ring_exists, file_exists, import = 0;

	*out = NULL;
	if (sodium_init() < 0) {
		msg = "libsodium failed to initialise";
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0') {
		msg = "no keys directory configured";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if (opts->box_grace_ms < 0) {
		msg = "box key grace period must not be negative";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((kr = calloc(1, sizeof(*kr))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if ((r = lock_init(kr)) != FGW_OK)
		goto out;
	kr->box_grace_ms = opts->box_grace_ms ? opts->box_grace_ms : DEFAULT_BOX_GRACE_MS;
	if ((r = fgw_strlcpy(kr->dir, opts->dir, sizeof(kr->dir))) != FGW_OK ||
	    (r = path_join(kr->path, sizeof(kr->path), opts->dir, RING_FILE)) != FGW_OK ||
	    (r = path_join(kr->lock_path, sizeof(kr->lock_path), opts->dir,
	                   RING_LOCK_FILE)) != FGW_OK) {
		msg = "keys directory path is too long";
		goto out;
	}
	if (opts->create && fgw_mkdirs(opts->dir, 0700) != FGW_OK) {
		msg = "cannot create the keys directory";
		r = FGW_ERR_IO;
		goto out;
	}
	if (stat(opts->dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		msg = "keys directory does not exist";
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	if ((sb.st_mode & 077) != 0)
		log_warn("keys directory %s is accessible by group or others; "
		         "it should be mode 0700",
		         opts->dir);
	if (stat(kr->path, &sb) == 0)
		file_exists = 1;
	else if (errno == ENOENT)
		file_exists = 0;
	else {
		msg = "cannot read the key ring file";
		r = FGW_ERR_IO;
		goto out;
	}
	ring_exists = file_exists;
	if (opts->source != NULL) {
		const struct keyring_source *src = opts->source;
		uint64_t gen = 0;
		if (src->load == NULL || src->save == NULL || src->generation == NULL) {
			msg = "key ring source without its functions";
			r = FGW_ERR_INVALID;
			goto out;
		}
		kr->has_src = 1;
		kr->src = *src;
		if ((r = src->generation(src->ctx, &gen)) != FGW_OK) {
			msg = "cannot read the key ring from the database";
			goto out;
		}
		ring_exists = gen > 0;
		/* Moving to a shared database keeps the keys that encrypted the
		 * vault: the file's ring is stored there on the first start. */
		import = !ring_exists && file_exists && opts->create;
	}
	if (!ring_exists && !import && !opts->create) {
		msg = kr->has_src ? "key ring not found in the database (start flairgw once)"
		                  : "key ring not found (initialise it with create)";
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	/* A KEK may be generated only for a ring that does not exist yet. */
	if ((r = kek_load(opts, !ring_exists && !import, &kek, &kw)) != FGW_OK) {
		msg = kw.msg[0] ? kw.msg : NULL;
		goto out;
	}
	r = kek_derive_subkeys(kr, kek);
	secbuf_free(kek); /* only the subkeys stay in memory */
	kek = NULL;
	if (r != FGW_OK)
		goto out;
	if (ring_exists)
		r = ring_load(kr, &kr->st, &msg);
	else if (import)
		r = ring_import(kr, &msg);
	else
		r = ring_create(kr, &msg);
	if (r == FGW_ERR_CONFLICT && kr->has_src) {
		/* Another instance stored the first ring a moment before us:
		 * use that one (a different KEK fails its check value here). */
		keys_state_clear(&kr->st);
		r = ring_load(kr, &kr->st, &msg);
	}
	if (r != FGW_OK)
		goto out;
	kr->src_gen = kr->has_src ? kr->st.generation : 0;
	*out = kr;
	kr = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	secbuf_free(kek);
	keyring_free(kr);
	if (r != FGW_OK)
		fgw_why_set(why, NULL, 0, 0, "%s", msg != NULL ? msg : fgw_strerror(r));
	return r;
}

/* Whether kek_load on a first start would generate the KEK: the source it
 * would read is a file (or two share files) that does not exist yet. */
static int
kek_would_generate(const struct keyring_opts *o)
{
	struct stat sb;

	if (o->kek_share1 != NULL && o->kek_share2 != NULL)
		return stat(o->kek_share1, &sb) != 0 && errno == ENOENT &&
		       stat(o->kek_share2, &sb) != 0 && errno == ENOENT;
	if (o->kek_share1 != NULL || o->kek_share2 != NULL)
		return 0;
	if (o->kek_env != NULL && secure_getenv(o->kek_env) != NULL)
		return 0;
	return o->kek_file != NULL && stat(o->kek_file, &sb) != 0 && errno == ENOENT;
}

int
keyring_check(const struct keyring_opts *opts, const char **note, struct fgw_why *why)
{
	struct keyring_opts ro;
	struct keyring *kr = NULL;
	struct secbuf *kek = NULL;
	struct fgw_why kw = { 0 };
	const char *msg = NULL;
	char ring[PATH_MAX];
	struct stat sb;
	int r;

	*note = NULL;
	if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0') {
		msg = "no keys directory configured";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = path_join(ring, sizeof(ring), opts->dir, RING_FILE)) != FGW_OK) {
		msg = "keys directory path is too long";
		goto out;
	}
	if (opts->source != NULL) {
		uint64_t gen = 0;
		if (opts->source->generation == NULL ||
		    (r = opts->source->generation(opts->source->ctx, &gen)) != FGW_OK) {
			msg = "cannot read the key ring from the database";
			r = FGW_ERR_DB;
			goto out;
		}
		ro = *opts;
		ro.create = 0;
		if (gen > 0) {
			r = keyring_open(&ro, &kr, &kw);
			msg = kw.msg[0] ? kw.msg : NULL;
			keyring_free(kr);
			goto out;
		}
		if (stat(ring, &sb) == 0) {
			/* The file's ring goes to the database on first start. */
			ro.source = NULL;
			if ((r = keyring_open(&ro, &kr, &kw)) == FGW_OK)
				*note = "no key ring in the database yet: keyring.json is stored "
				        "there on first start";
			msg = kw.msg[0] ? kw.msg : NULL;
			keyring_free(kr);
			goto out;
		}
	} else if (stat(ring, &sb) == 0) {
		/* The ring exists: open it as the daemon would, minus create. */
		ro = *opts;
		ro.create = 0;
		r = keyring_open(&ro, &kr, &kw);
		msg = kw.msg[0] ? kw.msg : NULL;
		keyring_free(kr);
		goto out;
	}
	if (errno != ENOENT) {
		msg = "cannot read the key ring file";
		r = FGW_ERR_IO;
		goto out;
	}
	if (stat(opts->dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
		msg = "the keys directory is not a directory";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if (kek_would_generate(opts)) {
		/* Written where it is named: that directory must take it. */
		const char *file = opts->kek_share1 != NULL ? opts->kek_share1 : opts->kek_file;
		const char *slash = strrchr(file, '/');
		char dir[PATH_MAX];
		if (slash == NULL)
			fgw_strlcpy(dir, ".", sizeof(dir));
		else if (slash == file)
			fgw_strlcpy(dir, "/", sizeof(dir));
		else
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - file), file);
		if (access(dir, W_OK | X_OK) != 0) {
			msg = "the KEK file does not exist and its directory cannot take a new one";
			r = FGW_ERR_NOT_FOUND;
			goto out;
		}
		*note = "no key ring and no KEK yet: both are created on first start";
		r = FGW_OK;
		goto out;
	}
	if ((r = kek_load(opts, 0, &kek, &kw)) != FGW_OK) {
		msg = kw.msg[0] ? kw.msg : NULL;
		goto out;
	}
	*note = "no key ring yet: it is created on first start";
	r = FGW_OK;
out:
	secbuf_free(kek);
	if (r != FGW_OK)
		fgw_why_set(why, NULL, 0, 0, "%s", msg != NULL ? msg : fgw_strerror(r));
	return r;
}

void
keyring_free(struct keyring *kr)
{
	if (kr == NULL)
		return;
	keys_state_clear(&kr->st);
	for (size_t i = 0; i < kr->ngrave; i++)
		keys_bkey_free(kr->grave[i]);
	free(kr->grave);
	secbuf_free(kr->wrap_key);
	secbuf_free(kr->check_key);
	secbuf_free(kr->ring_key);
	if (kr->lock_ready) {
		pthread_rwlock_destroy(kr->lock);
		pthread_mutex_destroy(&kr->peers_lock);
	}
	free(kr->lock);
	free(kr);
}

const char *
keyring_box_key_id(const struct keyring *kr)
{
	const char *id;

	rdlock(kr);
	id = kr->st.box_current->id; /* entries outlive rotation: see top */
	unlock(kr);
	return id;
}

void
keyring_box_public(const struct keyring *kr, unsigned char pk[32])
{
	rdlock(kr);
	memcpy(pk, kr->st.box_current->pk, crypto_box_PUBLICKEYBYTES);
	unlock(kr);
}

int
keyring_box_current(struct keyring *kr, char *id, size_t idlen, unsigned char pk[32])
{
	int r;

	rdlock(kr);
	r = copy_id(id, idlen, kr->st.box_current->id);
	memcpy(pk, kr->st.box_current->pk, crypto_box_PUBLICKEYBYTES);
	unlock(kr);
	return r;
}

int
keyring_public_json(struct keyring *kr, char *out, size_t outlen)
{
	unsigned char pk[crypto_box_PUBLICKEYBYTES];
	char id[KEYRING_ID_MAX], *b64 = NULL;
	int n, r;

	if ((r = keyring_box_current(kr, id, sizeof(id), pk)) != FGW_OK ||
	    (r = fgw_b64_encode(pk, sizeof(pk), &b64)) != FGW_OK)
		goto out;
	n = snprintf(out, outlen,
	             "{\"keyId\":\"%s\",\"algorithm\":\"x25519-sealedbox\","
	             "\"publicKey\":\"%s\"}",
	             id, b64);
	if (n < 0 || (size_t)n >= outlen) {
		r = FGW_ERR_TOO_LARGE;
		goto out;
	}
	r = FGW_OK;
out:
	free(b64);
	return r;
}

int
keyring_rotate_data_key(struct keyring *kr, char *new_id, size_t idlen)
{
	struct dkey nk = { 0 }, *arr;
	const char *msg = NULL;
	size_t old = 0;
	int64_t now = fgw_now_ms();
	int r;

	if (new_id != NULL && idlen < KEYRING_ID_MAX)
		return FGW_ERR_TOO_LARGE;
	wrlock(kr);
	if ((r = kek_new_dkey(kr, now, &nk)) != FGW_OK)
		goto out;
	if ((arr = realloc(kr->st.dk, (kr->st.ndk + 1) * sizeof(*arr))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	kr->st.dk = arr;
	for (size_t i = 0; i < kr->st.ndk; i++)
		if (arr[i].active)
			old = i;
	arr[old].active = 0;
	arr[old].retired_ms = now;
	arr[kr->st.ndk++] = nk;
	if ((r = ring_persist(kr, now, &msg)) != FGW_OK) {
		/* Memory must keep matching the file. */
		kr->st.ndk--;
		arr[old].active = 1;
		arr[old].retired_ms = 0;
		log_warn("data key rotation failed: %s", msg);
		goto out;
	}
	log_info("rotated data key: %s active, %s retired", nk.id, arr[old].id);
	r = copy_id(new_id, idlen, nk.id);
	memset(&nk, 0, sizeof(nk)); /* owned by the list now */
out:
	unlock(kr);
	keys_dkey_clear(&nk);
	return r;
}

int
keyring_retire_data_key(struct keyring *kr, const char *id)
{
	int r = FGW_ERR_NOT_FOUND;

	if (id == NULL)
		return FGW_ERR_INVALID;
	rdlock(kr);
	for (size_t i = 0; i < kr->st.ndk; i++) {
		if (strcmp(kr->st.dk[i].id, id) != 0)
			continue;
		/* Rotation already retired every other key and recorded it in
		 * the file, so there is nothing more to write. */
		r = kr->st.dk[i].active ? FGW_ERR_STATE : FGW_OK;
		break;
	}
	unlock(kr);
	return r;
}

int
keyring_rotate_box_key(struct keyring *kr, char *new_id, size_t idlen)
{
	struct bkey *nk = NULL, **arr, *old;
	const char *msg = NULL;
	int64_t now = fgw_now_ms();
	int r;

	if (new_id != NULL && idlen < KEYRING_ID_MAX)
		return FGW_ERR_TOO_LARGE;
	wrlock(kr);
	if ((r = kek_new_bkey(kr, now, &nk)) != FGW_OK)
		goto out;
	if ((arr = realloc(kr->st.bk, (kr->st.nbk + 1) * sizeof(*arr))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	kr->st.bk = arr;
	old = kr->st.box_current;
	old->expires_ms = now + kr->box_grace_ms;
	arr[kr->st.nbk++] = nk;
	kr->st.box_current = nk;
	if ((r = ring_persist(kr, now, &msg)) != FGW_OK) {
		kr->st.nbk--;
		old->expires_ms = 0;
		kr->st.box_current = old;
		log_warn("box key rotation failed: %s", msg);
		goto out;
	}
	log_info("rotated box key: %s current, %s valid for %lld ms more", nk->id, old->id,
	         (long long)kr->box_grace_ms);
	r = copy_id(new_id, idlen, nk->id);
	nk = NULL; /* owned by the list now */
out:
	unlock(kr);
	keys_bkey_free(nk);
	return r;
}

int
keyring_active_data_key(struct keyring *kr, char *id, size_t idlen)
{
	int r = FGW_ERR_INTERNAL;

	rdlock(kr);
	for (size_t i = 0; i < kr->st.ndk; i++)
		if (kr->st.dk[i].active)
			r = fgw_strlcpy(id, kr->st.dk[i].id, idlen);
	unlock(kr);
	return r;
}

int
keyring_reload(struct keyring *kr, struct fgw_why *why)
{
	struct ring_state ns = { 0 }, old;
	struct bkey **g;
	const char *msg = NULL;
	size_t i;
	int r;

	/* Read and checked before the lock: the ring's users go on while
	 * the file or the database is read and the keys unwrapped. */
	if ((r = ring_load(kr, &ns, &msg)) != FGW_OK)
		goto done;
	wrlock(kr);
	if (kr->has_src && ns.generation <= kr->st.generation) {
		/* This process wrote a newer ring meanwhile (or the same). */
		r = FGW_OK;
		goto out;
	}
	if (strcmp(ns.fp.id, kr->st.fp.id) != 0 || strcmp(ns.amac.id, kr->st.amac.id) != 0 ||
	    strcmp(ns.asign.id, kr->st.asign.id) != 0) {
		msg = "the key ring file holds different fingerprint or audit keys";
		r = FGW_ERR_STATE;
		goto out;
	}
	/* Room in the grave first, so the swap below cannot fail half-way
	 * (st.nbk >= 1: there is always a current box key). */
	if ((g = realloc(kr->grave, (kr->ngrave + kr->st.nbk) * sizeof(*g))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	kr->grave = g;
	old = kr->st;
	for (i = 0; i < old.nbk; i++) {
		bkey_wipe(old.bk[i]);
		kr->grave[kr->ngrave++] = old.bk[i];
	}
	old.nbk = 0;
	/* The fingerprint and audit keys are the same; keep ours, because
	 * their users read them without taking the lock. */
	keys_skey_clear(&ns.fp);
	keys_skey_clear(&ns.amac);
	keys_skey_clear(&ns.asign);
	ns.fp = old.fp;
	ns.amac = old.amac;
	ns.asign = old.asign;
	memset(&old.fp, 0, sizeof(old.fp));
	memset(&old.amac, 0, sizeof(old.amac));
	memset(&old.asign, 0, sizeof(old.asign));
	kr->st = ns;
	memset(&ns, 0, sizeof(ns));
	keys_state_clear(&old);
	if (kr->has_src)
		kr->src_gen = kr->st.generation;
	log_info("reloaded key ring (generation %llu)",
	         (unsigned long long)kr->st.generation);
	r = FGW_OK;
out:
	unlock(kr);
done:
	keys_state_clear(&ns);
	if (r != FGW_OK)
		fgw_why_set(why, NULL, 0, 0, "%s", msg != NULL ? msg : fgw_strerror(r));
	return r;
}

int
keyring_refresh(struct keyring *kr, int *reloaded, struct fgw_why *why)
{
	uint64_t gen = 0, have, refused;
	int r;

	if (reloaded != NULL)
		*reloaded = 0;
	if (!kr->has_src)
		return FGW_OK;
	if ((r = kr->src.generation(kr->src.ctx, &gen)) != FGW_OK) {
		fgw_why_set(why, NULL, 0, 0, "%s",
		            "cannot read the key ring's generation from the database");
		return r;
	}
	rdlock(kr);
	have = kr->src_gen;
	refused = kr->src_refused;
	unlock(kr);
	if (gen == have || gen == refused)
		return FGW_OK;
	if ((r = keyring_reload(kr, why)) != FGW_OK) {
		/* A ring that fails its checks is reported once, not on every
		 * poll, until a newer generation replaces it. */
		wrlock(kr);
		kr->src_refused = gen;
		unlock(kr);
		return r;
	}
	if (reloaded != NULL)
		*reloaded = 1;
	return FGW_OK;
}

int
keyring_status_json(struct keyring *kr, char **out)
{
	int r;

	rdlock(kr);
	r = ring_json(kr, &kr->st, fgw_now_ms(), 1, out);
	unlock(kr);
	return r;
}

/* Keyed BLAKE2b-256 of msg under k, which never changes after open. */
static int
skey_mac(const struct skey *k, const void *msg, size_t len, unsigned char out[32])
{
	if (msg == NULL && len > 0)
		return FGW_ERR_INVALID;
	if (crypto_generichash(out, 32, msg, len, k->key->data, KEY_LEN) != 0)
		return FGW_ERR_INTERNAL;
	return FGW_OK;
}

int
keyring_audit_mac(struct keyring *kr, const void *msg, size_t len, unsigned char mac[32])
{
	return skey_mac(&kr->st.amac, msg, len, mac);
}

int
keyring_audit_mac_fn(void *ctx, const void *msg, size_t len, unsigned char mac[32])
{
	return keyring_audit_mac(ctx, msg, len, mac);
}

int
keyring_audit_sign(struct keyring *kr, const void *msg, size_t len, unsigned char sig[64])
{
	if (msg == NULL && len > 0)
		return FGW_ERR_INVALID;
	if (crypto_sign_detached(sig, NULL, msg, len, kr->st.asign.key->data) != 0)
		return FGW_ERR_INTERNAL;
	return FGW_OK;
}

void
keyring_audit_public(const struct keyring *kr, unsigned char pk[32])
{
	memcpy(pk, kr->st.asign.pk, crypto_sign_PUBLICKEYBYTES);
}

int
keyring_data_seal(struct keyring *kr, const void *ad, size_t adlen, const void *m,
                  size_t mlen, unsigned char *out, size_t outcap, size_t *outlen,
                  char *key_id, size_t idlen)
{
	const struct dkey *k = NULL;
	unsigned long long clen = 0;
	int r;

	if (mlen > SIZE_MAX - KEYRING_AEAD_NONCEBYTES - KEYRING_AEAD_ABYTES ||
	    outcap < mlen + KEYRING_AEAD_NONCEBYTES + KEYRING_AEAD_ABYTES)
		return FGW_ERR_TOO_LARGE;
	if (idlen < KEYRING_ID_MAX)
		return FGW_ERR_TOO_LARGE;
	rdlock(kr);
	for (size_t i = 0; i < kr->st.ndk; i++)
		if (kr->st.dk[i].active)
			k = &kr->st.dk[i];
	if (k == NULL) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	randombytes_buf(out, KEYRING_AEAD_NONCEBYTES);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + KEYRING_AEAD_NONCEBYTES, &clen,
	                                               m, mlen, ad, adlen, NULL, out,
	                                               k->key->data) != 0) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	*outlen = KEYRING_AEAD_NONCEBYTES + (size_t)clen;
	r = fgw_strlcpy(key_id, k->id, idlen);
out:
	unlock(kr);
	return r;
}

int
keyring_data_open(struct keyring *kr, const char *key_id, const void *ad, size_t adlen,
                  const unsigned char *in, size_t inlen, struct secbuf **plain)
{
	const struct dkey *k = NULL;
	struct secbuf *p = NULL;
	unsigned long long mlen = 0;
	int r;

	*plain = NULL;
	rdlock(kr);
	for (size_t i = 0; i < kr->st.ndk; i++)
		if (strcmp(kr->st.dk[i].id, key_id) == 0)
			k = &kr->st.dk[i];
	if (k == NULL) {
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	if (inlen < KEYRING_AEAD_NONCEBYTES + KEYRING_AEAD_ABYTES) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	if ((r = secbuf_alloc(&p, inlen - KEYRING_AEAD_NONCEBYTES - KEYRING_AEAD_ABYTES)) !=
	    FGW_OK)
		goto out;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(p->data, &mlen, NULL,
	                                               in + KEYRING_AEAD_NONCEBYTES,
	                                               inlen - KEYRING_AEAD_NONCEBYTES, ad,
	                                               adlen, in, k->key->data) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	*plain = p;
	p = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	unlock(kr);
	secbuf_free(p);
	return r;
}

int
keyring_fingerprint_mac(struct keyring *kr, const void *msg, size_t len,
                        unsigned char out[32])
{
	return skey_mac(&kr->st.fp, msg, len, out);
}

/* The idempotency MAC key: a KDF subkey of the fingerprint key (which is
 * fixed for the life of a key ring, so answers stored under it stay
 * checkable after a rotation), under its own context so no MAC made with
 * it can be taken for a card fingerprint or a client secret. */
#define REQUEST_MAC_CTX "fgwidem1"
#define REQUEST_MAC_SUBKEY 1

int
keyring_request_mac(struct keyring *kr, const void *const *parts, const size_t *lens,
                    size_t n, unsigned char out[32])
{
	crypto_generichash_state st;
	unsigned char sub[KEY_LEN], len8[8];
	int r = FGW_ERR_INTERNAL;

	for (size_t i = 0; i < n; i++)
		if (parts[i] == NULL && lens[i] > 0)
			return FGW_ERR_INVALID;
	rdlock(kr);
	if (crypto_kdf_derive_from_key(sub, sizeof(sub), REQUEST_MAC_SUBKEY, REQUEST_MAC_CTX,
	                               kr->st.fp.key->data) != 0 ||
	    crypto_generichash_init(&st, sub, sizeof(sub), 32) != 0)
		goto out;
	/* Each part is length-prefixed, so no two part lists give one input. */
	for (size_t i = 0; i < n; i++) {
		uint64_t l = (uint64_t)lens[i];
		for (int b = 0; b < 8; b++)
			len8[b] = (unsigned char)(l >> (8 * b));
		if (crypto_generichash_update(&st, len8, sizeof(len8)) != 0 ||
		    (lens[i] > 0 && crypto_generichash_update(&st, parts[i], lens[i]) != 0))
			goto out;
	}
	if (crypto_generichash_final(&st, out, 32) != 0)
		goto out;
	r = FGW_OK;
out:
	unlock(kr);
	sodium_memzero(sub, sizeof(sub));
	sodium_memzero(&st, sizeof(st));
	return r;
}

int
keyring_box_open(struct keyring *kr, const char *key_id, const unsigned char *c,
                 size_t clen, struct secbuf **plain)
{
	const struct bkey *k = NULL;
	struct secbuf *p = NULL;
	int r;

	*plain = NULL;
	if (key_id == NULL)
		return FGW_ERR_NOT_FOUND;
	rdlock(kr);
	if ((k = bkey_find_usable(kr, key_id)) == NULL) {
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	if (clen < crypto_box_SEALBYTES) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	if ((r = secbuf_alloc(&p, clen - crypto_box_SEALBYTES)) != FGW_OK)
		goto out;
	if (crypto_box_seal_open(p->data, c, clen, k->pk, k->sk->data) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	*plain = p;
	p = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	unlock(kr);
	secbuf_free(p);
	return r;
}

int
keyring_audit_sign_fn(void *ctx, const void *msg, size_t len, unsigned char sig[64])
{
	return keyring_audit_sign(ctx, msg, len, sig);
}

/* ---- authenticated boxes with processors (crypto/box.h) -------------- */

/* The cached shared key with peer, or NULL; call with peers_lock held. */
static struct secbuf *
peer_find(const struct bkey *k, const unsigned char *peer)
{
	for (size_t i = 0; i < k->npeers; i++)
		if (memcmp(k->peers[i].pk, peer, crypto_box_PUBLICKEYBYTES) == 0)
			return k->peers[i].k;
	return NULL;
}

/* The shared key of box key key_id and peer: *k points at the cached one,
 * or at *tmp (the caller frees it) when the cache is full. Call with the
 * read lock held; *k stays valid while it is. */
static int
box_shared(struct keyring *kr, const char *key_id, const unsigned char *peer,
           const unsigned char **k, struct secbuf **tmp)
{
	struct bkey *bk;
	struct secbuf *nk = NULL, *have;
	int r;

	*tmp = NULL;
	if ((bk = bkey_find_usable(kr, key_id)) == NULL)
		return FGW_ERR_NOT_FOUND;
	pthread_mutex_lock(&kr->peers_lock);
	have = peer_find(bk, peer);
	pthread_mutex_unlock(&kr->peers_lock);
	if (have != NULL) {
		*k = have->data;
		return FGW_OK;
	}
	/* The X25519 runs outside peers_lock; two threads may both compute
	 * the same key, the second then drops its copy. */
	if ((r = secbuf_alloc(&nk, crypto_box_BEFORENMBYTES)) != FGW_OK)
		return r;
	if (crypto_box_beforenm(nk->data, peer, bk->sk->data) != 0) {
		secbuf_free(nk);
		return FGW_ERR_CRYPTO; /* a low-order peer key */
	}
	pthread_mutex_lock(&kr->peers_lock);
	if ((have = peer_find(bk, peer)) == NULL && bk->npeers < BOX_PEERS_MAX) {
		memcpy(bk->peers[bk->npeers].pk, peer, crypto_box_PUBLICKEYBYTES);
		bk->peers[bk->npeers++].k = have = nk;
		nk = NULL; /* owned by the cache now */
	}
	pthread_mutex_unlock(&kr->peers_lock);
	if (have != NULL) {
		secbuf_free(nk);
		*k = have->data;
	} else {
		*k = nk->data;
		*tmp = nk;
	}
	return FGW_OK;
}

int
keyring_box_seal_to(struct keyring *kr, const char *key_id, const unsigned char peer[32],
                    const void *m, size_t mlen, unsigned char *out)
{
	const unsigned char *k = NULL;
	struct secbuf *tmp = NULL;
	int r;

	rdlock(kr);
	if ((r = box_shared(kr, key_id, peer, &k, &tmp)) == FGW_OK)
		box_seal_afternm(k, BOX_DIR_RING, m, mlen, out);
	unlock(kr);
	secbuf_free(tmp);
	return r;
}

int
keyring_box_open_from(struct keyring *kr, const char *key_id,
                      const unsigned char peer[32], const unsigned char *c, size_t clen,
                      struct secbuf **plain)
{
	const unsigned char *k = NULL;
	struct secbuf *tmp = NULL, *p = NULL;
	int r;

	*plain = NULL;
	if (clen < BOX_OVERHEAD)
		return FGW_ERR_CRYPTO;
	rdlock(kr);
	if ((r = box_shared(kr, key_id, peer, &k, &tmp)) != FGW_OK ||
	    (r = secbuf_alloc(&p, clen - BOX_OVERHEAD)) != FGW_OK ||
	    (r = box_open_afternm(k, BOX_DIR_STANDALONE, c, clen, p->data)) != FGW_OK)
		goto out;
	*plain = p;
	p = NULL; /* owned by the caller now */
out:
	unlock(kr);
	secbuf_free(tmp);
	secbuf_free(p);
	return r;
}
