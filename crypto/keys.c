/*
 * crypto/keys.c — the key ring: the only code that holds raw key bytes.
 *
 * Layout of this file, top to bottom:
 *   1. the in-memory ring (struct keyring, key entries) and its lifetime;
 *   2. the KEK: where it comes from (two shares, an environment variable,
 *      a file) and the three subkeys derived from it;
 *   3. wrapping and unwrapping of single keys;
 *   4. keyring.json: canonical text and integrity MAC, writing (with a
 *      cross-process lock and a generation counter), reading and checking;
 *   5. the public API: open, rotation, audit, and the room-internal
 *      operations vault.c and sealed.c use.
 *
 * Cryptography, all libsodium:
 *   - the KEK (32 bytes) is only a KDF master key: crypto_kdf derives a
 *     wrapping key, a KEK check key and a ring integrity key from it, and
 *     the KEK itself is wiped as soon as they exist;
 *   - each stored secret is 32 bytes wrapped with XChaCha20-Poly1305-IETF
 *     under the wrapping key, a fresh random 24-byte nonce, and associated
 *     data "<purpose>:<key id>", so a blob cannot move between slots;
 *   - the check value is BLAKE2b-256 keyed with the check key over a random
 *     salt: a wrong KEK is recognised before anything is unwrapped;
 *   - the whole file (ids, statuses, times, public keys, wrapped blobs,
 *     generation) is covered by a BLAKE2b-256 MAC under the ring key over a
 *     canonical text, so a retired key cannot be made active again and a
 *     box key's expiry cannot be extended by editing the file.
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
#include "crypto/secmem.h"

#define KEY_LEN 32
#define WRAPPED_LEN                                                          \
	(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + KEY_LEN +                \
	 crypto_aead_xchacha20poly1305_ietf_ABYTES)
#define CHECK_SALT_LEN 16
#define RING_FILE "keyring.json"
#define RING_LOCK_FILE "keyring.lock"
#define RING_FORMAT "flairgw-keyring"
#define RING_VERSION 1
#define RING_MAX_BYTES (1024 * 1024)
#define DEFAULT_BOX_GRACE_MS (7LL * 24 * 3600 * 1000)
#define MAX_JSON_MS 9007199254740992LL /* 2^53: exact in a JSON number */

/* crypto_kdf context (8 bytes) and subkey ids. Changing any of these makes
 * every existing key ring unreadable. */
#define KDF_CONTEXT "flairgwK"
enum { SUBKEY_WRAP = 1, SUBKEY_CHECK = 2, SUBKEY_RING = 3 };

/* Wrapping purposes: the first half of the associated data. */
#define P_DATA "data-key"
#define P_BOX "box-key"
#define P_FP "fingerprint-key"
#define P_AMAC "audit-mac-key"
#define P_ASIGN "audit-sign-key"

/* ---- 1. the ring in memory ------------------------------------------- */

struct dkey {                   /* a vault data key */
	char id[KEYRING_ID_MAX];    /* "dk_…" */
	int active;                 /* exactly one is */
	int64_t created_ms;
	int64_t retired_ms;         /* 0 while active */
	char *wrapped;              /* base64(nonce || ct || tag) */
	struct secbuf *key;         /* 32 bytes */
};

#define BOX_PEERS_MAX 8          /* processor keys per box key (primary,
                                   failover: a few); more are not cached */

struct bpeer {                  /* a cached crypto_box_beforenm result */
	unsigned char pk[crypto_box_PUBLICKEYBYTES];
	struct secbuf *k;
};

struct bkey {                   /* a gateway X25519 box key pair */
	char id[KEYRING_ID_MAX];    /* "gk_…" */
	int64_t created_ms;
	int64_t expires_ms;         /* 0: current; else usable while now < it */
	unsigned char pk[crypto_box_PUBLICKEYBYTES];
	char *wrapped;              /* the secret key, wrapped */
	struct secbuf *sk;          /* NULL once expired and wiped */
	struct bpeer peers[BOX_PEERS_MAX];
	size_t npeers;              /* read and appended under peers_lock */
};

struct skey {                   /* fingerprint, audit MAC, audit signing */
	char id[KEYRING_ID_MAX];
	int64_t created_ms;
	unsigned char pk[crypto_sign_PUBLICKEYBYTES]; /* signing key only */
	char *wrapped;              /* the 32-byte key or Ed25519 seed, wrapped */
	struct secbuf *key;         /* 32 bytes; for signing the 64-byte sk */
};

struct ring_state {             /* what keyring.json holds */
	uint64_t generation;        /* bumped by every write */
	unsigned char check_salt[CHECK_SALT_LEN];
	unsigned char check_mac[crypto_generichash_BYTES];
	struct dkey *dk;
	size_t ndk;
	struct bkey **bk;
	size_t nbk;
	struct bkey *box_current;
	struct skey fp, amac, asign;
};

struct keyring {
	pthread_rwlock_t *lock;     /* a pointer so const functions can lock */
	int lock_ready;
	pthread_mutex_t peers_lock; /* appends to bkey.peers (see top) */
	char dir[PATH_MAX];
	char path[PATH_MAX];
	char lock_path[PATH_MAX];
	int64_t box_grace_ms;
	struct secbuf *wrap_key;    /* subkeys of the KEK */
	struct secbuf *check_key;
	struct secbuf *ring_key;
	struct ring_state st;
	struct bkey **grave;        /* retired box entries, secrets wiped */
	size_t ngrave;
};

static void
skey_clear(struct skey *k)
{
	secbuf_free(k->key);
	free(k->wrapped);
	memset(k, 0, sizeof(*k));
}

static void
dkey_clear(struct dkey *k)
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

static void
bkey_free(struct bkey *k)
{
	if (k == NULL)
		return;
	bkey_wipe(k);
	free(k);
}

static void
state_clear(struct ring_state *st)
{
	for (size_t i = 0; i < st->ndk; i++)
		dkey_clear(&st->dk[i]);
	free(st->dk);
	for (size_t i = 0; i < st->nbk; i++)
		bkey_free(st->bk[i]);
	free(st->bk);
	skey_clear(&st->fp);
	skey_clear(&st->amac);
	skey_clear(&st->asign);
	memset(st, 0, sizeof(*st));
}

/* Moves a box entry out of service: the secret is wiped now, the entry
 * itself (and its id text) lives until keyring_free. */
static int
grave_add(struct keyring *kr, struct bkey *k)
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

static int
bkey_expired(const struct bkey *k, int64_t now)
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
		if (strcmp(kr->st.bk[i]->id, key_id) == 0 &&
		    bkey_usable(kr->st.bk[i], now))
			return kr->st.bk[i];
	return NULL;
}

/* Key ids: prefix + 1..(KEYRING_ID_MAX-1-prefix) base62 characters. */
static int
id_valid(const char *s, const char *prefix)
{
	size_t plen = strlen(prefix), n = strlen(s);

	if (n <= plen || n >= KEYRING_ID_MAX || strncmp(s, prefix, plen) != 0)
		return 0;
	for (size_t i = plen; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
		      (c >= 'A' && c <= 'Z')))
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

/* ---- 2. the KEK and its subkeys -------------------------------------- */

enum kek_src { SRC_FILE, SRC_SHARE1, SRC_SHARE2 };

static const char *
secfile_msg(enum kek_src src, enum secfile_why why)
{
	static const char *const msgs[3][6] = {
		[SRC_FILE] = {
			[SECFILE_MISSING] = "KEK file not found",
			[SECFILE_NOT_REGULAR] = "KEK file is not a regular file",
			[SECFILE_MODE] = "KEK file is accessible by group or others "
			                 "(chmod 600 it)",
			[SECFILE_SIZE] = "KEK file must hold exactly 32 raw bytes",
			[SECFILE_IO] = "KEK file cannot be read",
		},
		[SRC_SHARE1] = {
			[SECFILE_MISSING] = "KEK share 1 file not found",
			[SECFILE_NOT_REGULAR] = "KEK share 1 is not a regular file",
			[SECFILE_MODE] = "KEK share 1 file is accessible by group or "
			                 "others (chmod 600 it)",
			[SECFILE_SIZE] = "KEK share 1 file must hold exactly 32 raw "
			                 "bytes",
			[SECFILE_IO] = "KEK share 1 file cannot be read",
		},
		[SRC_SHARE2] = {
			[SECFILE_MISSING] = "KEK share 2 file not found",
			[SECFILE_NOT_REGULAR] = "KEK share 2 is not a regular file",
			[SECFILE_MODE] = "KEK share 2 file is accessible by group or "
			                 "others (chmod 600 it)",
			[SECFILE_SIZE] = "KEK share 2 file must hold exactly 32 raw "
			                 "bytes",
			[SECFILE_IO] = "KEK share 2 file cannot be read",
		},
	};
	const char *m = NULL;

	if ((unsigned)why < 6)
		m = msgs[src][why];
	return m != NULL ? m : "KEK file cannot be read";
}

static int
random_secret(struct secbuf **out)
{
	int r = secbuf_alloc(out, KEY_LEN);

	if (r == FGW_OK)
		randombytes_buf((*out)->data, KEY_LEN);
	return r;
}

/* Two shares: KEK = share1 XOR share2. With may_generate and both files
 * missing, writes two fresh random shares (the ring does not exist yet, so
 * no existing KEK can be lost). */
static int
kek_from_shares(const struct keyring_opts *o, int may_generate,
                struct secbuf **kek, const char **msg)
{
	struct secbuf *s1 = NULL, *s2 = NULL;
	enum secfile_why w1 = SECFILE_OK, w2 = SECFILE_OK;
	int r, r1, r2;

	if (o->kek_share1 == NULL || o->kek_share2 == NULL) {
		*msg = "both KEK shares must be configured (kek_share1 and "
		       "kek_share2)";
		return FGW_ERR_INVALID;
	}
	r1 = secbuf_read_secret_file(o->kek_share1, KEY_LEN, &s1, &w1);
	r2 = secbuf_read_secret_file(o->kek_share2, KEY_LEN, &s2, &w2);
	if (r1 == FGW_ERR_NOT_FOUND && r2 == FGW_ERR_NOT_FOUND && may_generate) {
		if ((r = random_secret(&s1)) != FGW_OK ||
		    (r = random_secret(&s2)) != FGW_OK)
			goto out;
		if ((r = secbuf_write_secret_file(o->kek_share1, s1)) != FGW_OK) {
			*msg = "cannot create the KEK share 1 file";
			goto out;
		}
		if ((r = secbuf_write_secret_file(o->kek_share2, s2)) != FGW_OK) {
			/* Never leave half a KEK behind. */
			unlink(o->kek_share1);
			*msg = "cannot create the KEK share 2 file";
			goto out;
		}
		log_info("generated two new KEK share files");
	} else if (r1 != FGW_OK) {
		r = r1;
		*msg = secfile_msg(SRC_SHARE1, w1);
		goto out;
	} else if (r2 != FGW_OK) {
		r = r2;
		*msg = secfile_msg(SRC_SHARE2, w2);
		goto out;
	}
	for (size_t i = 0; i < KEY_LEN; i++)
		s1->data[i] ^= s2->data[i];
	*kek = s1;
	s1 = NULL; /* the XOR now; owned by the caller */
	r = FGW_OK;
out:
	secbuf_free(s1);
	secbuf_free(s2);
	return r;
}

static int
kek_from_env(const char *val, struct secbuf **kek, const char **msg)
{
	struct secbuf *b = NULL;
	size_t got = 0;
	int r;

	/* Decode straight into guarded memory (fgw_b64_decode would leave a
	 * copy on the ordinary heap). 48 bytes is room for any 32-byte
	 * encoding and lets a too-long value be reported as such. */
	if ((r = secbuf_alloc(&b, 48)) != FGW_OK)
		return r;
	if (sodium_base642bin(b->data, b->len, val, strlen(val), " \t\r\n",
	                      &got, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    got != KEY_LEN) {
		*msg = "KEK environment variable must hold the base64 of exactly "
		       "32 bytes";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = secbuf_from(kek, b->data, KEY_LEN)) != FGW_OK)
		goto out;
	r = FGW_OK;
out:
	secbuf_free(b);
	return r;
}

static int
kek_from_file(const char *path, int may_generate, struct secbuf **kek,
              const char **msg)
{
	enum secfile_why why = SECFILE_OK;
	int r;

	r = secbuf_read_secret_file(path, KEY_LEN, kek, &why);
	if (r == FGW_ERR_NOT_FOUND && may_generate) {
		if ((r = random_secret(kek)) != FGW_OK)
			return r;
		if ((r = secbuf_write_secret_file(path, *kek)) != FGW_OK) {
			secbuf_free(*kek);
			*kek = NULL;
			*msg = "cannot create the KEK file";
			return r;
		}
		log_info("generated a new KEK file");
		return FGW_OK;
	}
	if (r != FGW_OK) {
		*msg = (r == FGW_ERR_NOT_FOUND && !may_generate)
		           ? "KEK file not found (restore it; a new KEK cannot "
		             "open an existing key ring)"
		           : secfile_msg(SRC_FILE, why);
	}
	return r;
}

/* Sources in order: two shares, then the environment variable (if it is
 * set), then the file. A configured but unusable source is an error; only
 * an unset environment variable falls through to the file. */
static int
kek_load(const struct keyring_opts *o, int may_generate, struct secbuf **kek,
         const char **msg)
{
	const char *val = NULL;
	int r;

	*kek = NULL;
	if (o->kek_share1 != NULL || o->kek_share2 != NULL)
		r = kek_from_shares(o, may_generate, kek, msg);
	else if (o->kek_env != NULL && (val = secure_getenv(o->kek_env)) != NULL)
		r = kek_from_env(val, kek, msg);
	else if (o->kek_file != NULL)
		r = kek_from_file(o->kek_file, may_generate, kek, msg);
	else if (o->kek_env != NULL) {
		*msg = "the KEK environment variable is not set";
		r = FGW_ERR_NOT_FOUND;
	} else {
		*msg = "no KEK source configured";
		r = FGW_ERR_INVALID;
	}
	if (r == FGW_OK && sodium_is_zero((*kek)->data, KEY_LEN)) {
		*msg = "KEK is all zero bytes (are the two shares identical?)";
		r = FGW_ERR_INVALID;
	}
	if (r != FGW_OK) {
		secbuf_free(*kek);
		*kek = NULL;
	}
	return r;
}

static int
derive_subkeys(struct keyring *kr, const struct secbuf *kek)
{
	int r;

	if ((r = secbuf_alloc(&kr->wrap_key, KEY_LEN)) != FGW_OK ||
	    (r = secbuf_alloc(&kr->check_key, KEY_LEN)) != FGW_OK ||
	    (r = secbuf_alloc(&kr->ring_key, KEY_LEN)) != FGW_OK)
		return r;
	if (crypto_kdf_derive_from_key(kr->wrap_key->data, KEY_LEN, SUBKEY_WRAP,
	                               KDF_CONTEXT, kek->data) != 0 ||
	    crypto_kdf_derive_from_key(kr->check_key->data, KEY_LEN,
	                               SUBKEY_CHECK, KDF_CONTEXT, kek->data) != 0 ||
	    crypto_kdf_derive_from_key(kr->ring_key->data, KEY_LEN, SUBKEY_RING,
	                               KDF_CONTEXT, kek->data) != 0)
		return FGW_ERR_INTERNAL;
	return FGW_OK;
}

static void
check_value(const struct keyring *kr, const unsigned char salt[CHECK_SALT_LEN],
            unsigned char mac[crypto_generichash_BYTES])
{
	crypto_generichash(mac, crypto_generichash_BYTES, salt, CHECK_SALT_LEN,
	                   kr->check_key->data, KEY_LEN);
}

/* ---- 3. wrapping ----------------------------------------------------- */

static int
wrap_ad(const char *purpose, const char *id, char *ad, size_t cap)
{
	int n = snprintf(ad, cap, "%s:%s", purpose, id);

	if (n < 0 || (size_t)n >= cap)
		return FGW_ERR_TOO_LARGE;
	return n;
}

/* Wraps 32 secret bytes; *out is malloc'ed base64 of nonce || ct || tag. */
static int
wrap_secret(const struct keyring *kr, const char *purpose, const char *id,
            const unsigned char *secret, char **out)
{
	unsigned char blob[WRAPPED_LEN];
	unsigned long long clen = 0;
	char ad[64];
	int n;

	if ((n = wrap_ad(purpose, id, ad, sizeof(ad))) < 0)
		return n;
	randombytes_buf(blob, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(
	        blob + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, &clen, secret,
	        KEY_LEN, (const unsigned char *)ad, (unsigned long long)n, NULL,
	        blob, kr->wrap_key->data) != 0)
		return FGW_ERR_INTERNAL;
	return fgw_b64_encode(blob, sizeof(blob), out);
}

/* Checks that text is base64 of exactly want bytes; copies them if out. */
static int
b64_exact(const char *text, size_t want, unsigned char *out)
{
	unsigned char *raw = NULL;
	size_t len = 0;
	int r;

	if ((r = fgw_b64_decode(text, strlen(text), &raw, &len)) != FGW_OK)
		return r;
	if (len != want)
		r = FGW_ERR_INVALID;
	else if (out != NULL)
		memcpy(out, raw, want);
	free(raw);
	return r;
}

static int
unwrap_secret(const struct keyring *kr, const char *purpose, const char *id,
              const char *wrapped, struct secbuf **out)
{
	unsigned char blob[WRAPPED_LEN];
	struct secbuf *k = NULL;
	unsigned long long mlen = 0;
	char ad[64];
	int n, r;

	*out = NULL;
	if ((n = wrap_ad(purpose, id, ad, sizeof(ad))) < 0)
		return n;
	if ((r = b64_exact(wrapped, sizeof(blob), blob)) != FGW_OK)
		return r;
	if ((r = secbuf_alloc(&k, KEY_LEN)) != FGW_OK)
		return r;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
	        k->data, &mlen, NULL,
	        blob + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
	        sizeof(blob) - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
	        (const unsigned char *)ad, (unsigned long long)n, blob,
	        kr->wrap_key->data) != 0 ||
	    mlen != KEY_LEN) {
		secbuf_free(k);
		return FGW_ERR_CRYPTO;
	}
	*out = k;
	return FGW_OK;
}

static int
new_dkey(const struct keyring *kr, int64_t now, struct dkey *k)
{
	int r;

	memset(k, 0, sizeof(*k));
	if ((r = fgw_random_id("dk_", k->id, sizeof(k->id))) != FGW_OK ||
	    (r = random_secret(&k->key)) != FGW_OK ||
	    (r = wrap_secret(kr, P_DATA, k->id, k->key->data, &k->wrapped)) !=
	        FGW_OK) {
		dkey_clear(k);
		return r;
	}
	k->active = 1;
	k->created_ms = now;
	return FGW_OK;
}

static int
new_bkey(const struct keyring *kr, int64_t now, struct bkey **out)
{
	struct bkey *k = NULL;
	int r;

	*out = NULL;
	if ((k = calloc(1, sizeof(*k))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = fgw_random_id("gk_", k->id, sizeof(k->id))) != FGW_OK ||
	    (r = secbuf_alloc(&k->sk, crypto_box_SECRETKEYBYTES)) != FGW_OK)
		goto out;
	if (crypto_box_keypair(k->pk, k->sk->data) != 0) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if ((r = wrap_secret(kr, P_BOX, k->id, k->sk->data, &k->wrapped)) !=
	    FGW_OK)
		goto out;
	k->created_ms = now;
	*out = k;
	k = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	bkey_free(k);
	return r;
}

/* Turns an Ed25519 seed into the 64-byte secret key (and public key). */
static int
sign_key_from_seed(const struct secbuf *seed, struct secbuf **sk,
                   unsigned char pk[crypto_sign_PUBLICKEYBYTES])
{
	int r;

	if ((r = secbuf_alloc(sk, crypto_sign_SECRETKEYBYTES)) != FGW_OK)
		return r;
	if (crypto_sign_seed_keypair(pk, (*sk)->data, seed->data) != 0) {
		secbuf_free(*sk);
		*sk = NULL;
		return FGW_ERR_INTERNAL;
	}
	return FGW_OK;
}

static int
new_skey(const struct keyring *kr, const char *prefix, const char *purpose,
         int64_t now, struct skey *k)
{
	struct secbuf *seed = NULL;
	int r;

	memset(k, 0, sizeof(*k));
	if ((r = fgw_random_id(prefix, k->id, sizeof(k->id))) != FGW_OK ||
	    (r = random_secret(&seed)) != FGW_OK ||
	    (r = wrap_secret(kr, purpose, k->id, seed->data, &k->wrapped)) !=
	        FGW_OK)
		goto out;
	if (strcmp(purpose, P_ASIGN) == 0) {
		if ((r = sign_key_from_seed(seed, &k->key, k->pk)) != FGW_OK)
			goto out;
	} else {
		k->key = seed;
		seed = NULL; /* owned by the entry now */
	}
	k->created_ms = now;
	r = FGW_OK;
out:
	secbuf_free(seed);
	if (r != FGW_OK)
		skey_clear(k);
	return r;
}

/* ---- 4. keyring.json ------------------------------------------------- */

struct text {                    /* a growable string (no secrets in it) */
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
		text_add(t, "dk=%s,%s,%lld,%lld,%s\n", k->id,
		         k->active ? "active" : "retired", (long long)k->created_ms,
		         (long long)k->retired_ms, k->wrapped);
	}
	text_add(t, "fk=%s,%lld,%s\n", st->fp.id, (long long)st->fp.created_ms,
	         st->fp.wrapped);
	text_add(t, "am=%s,%lld,%s\n", st->amac.id,
	         (long long)st->amac.created_ms, st->amac.wrapped);
	fgw_hex(st->asign.pk, sizeof(st->asign.pk), hex);
	text_add(t, "as=%s,%lld,%s,%s\n", st->asign.id,
	         (long long)st->asign.created_ms, hex, st->asign.wrapped);
	for (size_t i = 0; i < st->nbk; i++) {
		const struct bkey *k = st->bk[i];
		if (bkey_expired(k, now))
			continue;
		fgw_hex(k->pk, sizeof(k->pk), hex);
		text_add(t, "gk=%s,%lld,%lld,%s,%s\n", k->id,
		         (long long)k->created_ms, (long long)k->expires_ms, hex,
		         k->wrapped);
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
		crypto_generichash(mac, crypto_generichash_BYTES,
		                   (const unsigned char *)t.p, t.len,
		                   kr->ring_key->data, KEY_LEN);
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
	return cJSON_AddNumberToObject(o, name, (double)v) ? FGW_OK
	                                                  : FGW_ERR_NOMEM;
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
j_skey(cJSON *root, const char *name, const struct skey *k, int with_pk,
       int public_only)
{
	cJSON *o = cJSON_AddObjectToObject(root, name);
	int r;

	if (o == NULL)
		return FGW_ERR_NOMEM;
	if ((r = j_str(o, "keyId", k->id)) != FGW_OK ||
	    (r = public_only ? j_time(o, "created", k->created_ms)
	                     : j_num(o, "created", k->created_ms)) != FGW_OK)
		return r;
	if (with_pk &&
	    (r = j_b64(o, "publicKey", k->pk, sizeof(k->pk))) != FGW_OK)
		return r;
	if (!public_only && (r = j_str(o, "wrapped", k->wrapped)) != FGW_OK)
		return r;
	return FGW_OK;
}

/* The JSON document: keyring.json (public_only = 0, with the MAC) or the
 * operator status view (public_only = 1: no wrapped blobs, ISO times). */
static int
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
		if ((r = j_b64(o, "salt", st->check_salt,
		               sizeof(st->check_salt))) != FGW_OK ||
		    (r = j_b64(o, "mac", st->check_mac, sizeof(st->check_mac))) !=
		        FGW_OK)
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
		    (r = j_str(o, "status", k->active ? "active" : "retired")) !=
		        FGW_OK)
			goto out;
		if (public_only) {
			if ((r = j_time(o, "created", k->created_ms)) != FGW_OK ||
			    (!k->active &&
			     (r = j_time(o, "retired", k->retired_ms)) != FGW_OK))
				goto out;
		} else if ((r = j_num(o, "created", k->created_ms)) != FGW_OK ||
		           (!k->active &&
		            (r = j_num(o, "retired", k->retired_ms)) != FGW_OK) ||
		           (r = j_str(o, "wrapped", k->wrapped)) != FGW_OK)
			goto out;
	}
	if ((r = j_skey(root, "fingerprintKey", &st->fp, 0, public_only)) !=
	        FGW_OK ||
	    (r = j_skey(root, "auditMacKey", &st->amac, 0, public_only)) !=
	        FGW_OK ||
	    (r = j_skey(root, "auditSigningKey", &st->asign, 1, public_only)) !=
	        FGW_OK)
		goto out;
	r = FGW_ERR_NOMEM;
	if ((arr = cJSON_AddArrayToObject(root, "boxKeys")) == NULL)
		goto out;
	for (size_t i = 0; i < st->nbk; i++) {
		const struct bkey *k = st->bk[i];
		if (bkey_expired(k, now))
			continue;
		r = FGW_ERR_NOMEM;
		if ((o = cJSON_CreateObject()) == NULL)
			goto out;
		cJSON_AddItemToArray(arr, o);
		if ((r = j_str(o, "keyId", k->id)) != FGW_OK ||
		    (r = j_str(o, "status",
		               k->expires_ms ? "previous" : "current")) != FGW_OK ||
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
static int
ring_persist(struct keyring *kr, int64_t now, const char **msg)
{
	char *text = NULL;
	uint64_t on_disk = 0;
	int lfd = -1, r;
	size_t i, j;

	lfd = open(kr->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	           0600);
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
	    (r = fgw_write_file_atomic(kr->path, text, strlen(text), 0600)) ==
	        FGW_OK)
		r = sync_dir(kr->dir);
	if (r != FGW_OK) {
		kr->st.generation--;
		*msg = "cannot write the key ring file";
		goto out;
	}
	/* The file no longer holds expired box keys; wipe them here too. */
	for (i = 0, j = 0; i < kr->st.nbk; i++) {
		struct bkey *k = kr->st.bk[i];
		if (bkey_expired(k, now) && grave_add(kr, k) == FGW_OK)
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

	if (s == NULL || !id_valid(s, prefix))
		return FGW_ERR_INVALID;
	return fgw_strlcpy(id, s, KEYRING_ID_MAX) == FGW_OK ? FGW_OK
	                                                   : FGW_ERR_INVALID;
}

static int
p_wrapped(const cJSON *o, char **out)
{
	const char *s = p_str(o, "wrapped");

	if (s == NULL || b64_exact(s, WRAPPED_LEN, NULL) != FGW_OK)
		return FGW_ERR_INVALID;
	if ((*out = strdup(s)) == NULL)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

static int
p_b64(const cJSON *o, const char *name, unsigned char *out, size_t len)
{
	const char *s = p_str(o, name);

	if (s == NULL || b64_exact(s, len, out) != FGW_OK)
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
	    (with_pk && (r = p_b64(o, "publicKey", k->pk, sizeof(k->pk))) !=
	                    FGW_OK) ||
	    (r = p_wrapped(o, &k->wrapped)) != FGW_OK)
		return r;
	return FGW_OK;
}

static int
p_dkeys(const cJSON *root, struct ring_state *st)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "dataKeys");
	const cJSON *o;
	int n, r;

	if (!cJSON_IsArray(arr) || (n = cJSON_GetArraySize(arr)) < 1)
		return FGW_ERR_INVALID;
	if ((st->dk = calloc((size_t)n, sizeof(*st->dk))) == NULL)
		return FGW_ERR_NOMEM;
	cJSON_ArrayForEach(o, arr) {
		struct dkey *k = &st->dk[st->ndk++];
		const char *status = p_str(o, "status");
		if (!cJSON_IsObject(o) || status == NULL)
			return FGW_ERR_INVALID;
		if (strcmp(status, "active") == 0)
			k->active = 1;
		else if (strcmp(status, "retired") != 0)
			return FGW_ERR_INVALID;
		if ((r = p_id(o, "dk_", k->id)) != FGW_OK ||
		    (r = p_ms(o, "created", &k->created_ms)) != FGW_OK ||
		    (!k->active &&
		     (r = p_ms(o, "retired", &k->retired_ms)) != FGW_OK) ||
		    (r = p_wrapped(o, &k->wrapped)) != FGW_OK)
			return r;
	}
	return FGW_OK;
}

static int
p_bkeys(const cJSON *root, struct ring_state *st)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "boxKeys");
	const cJSON *o;
	int n, r;

	if (!cJSON_IsArray(arr) || (n = cJSON_GetArraySize(arr)) < 1)
		return FGW_ERR_INVALID;
	if ((st->bk = calloc((size_t)n, sizeof(*st->bk))) == NULL)
		return FGW_ERR_NOMEM;
	cJSON_ArrayForEach(o, arr) {
		struct bkey *k;
		const char *status = p_str(o, "status");
		if (!cJSON_IsObject(o) || status == NULL)
			return FGW_ERR_INVALID;
		if ((k = calloc(1, sizeof(*k))) == NULL)
			return FGW_ERR_NOMEM;
		st->bk[st->nbk++] = k;
		if (strcmp(status, "previous") == 0) {
			if ((r = p_ms(o, "expires", &k->expires_ms)) != FGW_OK ||
			    k->expires_ms == 0)
				return FGW_ERR_INVALID;
		} else if (strcmp(status, "current") != 0)
			return FGW_ERR_INVALID;
		if ((r = p_id(o, "gk_", k->id)) != FGW_OK ||
		    (r = p_ms(o, "created", &k->created_ms)) != FGW_OK ||
		    (r = p_b64(o, "publicKey", k->pk, sizeof(k->pk))) != FGW_OK ||
		    (r = p_wrapped(o, &k->wrapped)) != FGW_OK)
			return r;
	}
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

	if ((root = fgw_json_parse_strict(text, len)) == NULL ||
	    !cJSON_IsObject(root))
		goto out;
	if ((fmt = p_str(root, "format")) == NULL ||
	    strcmp(fmt, RING_FORMAT) != 0 ||
	    p_ms(root, "version", &v) != FGW_OK || v != RING_VERSION ||
	    p_ms(root, "generation", &v) != FGW_OK)
		goto out;
	st->generation = (uint64_t)v;
	o = cJSON_GetObjectItemCaseSensitive(root, "kekCheck");
	if (!cJSON_IsObject(o) ||
	    p_b64(o, "salt", st->check_salt, sizeof(st->check_salt)) != FGW_OK ||
	    p_b64(o, "mac", st->check_mac, sizeof(st->check_mac)) != FGW_OK)
		goto out;
	if ((r = p_dkeys(root, st)) != FGW_OK ||
	    (r = p_skey(root, "fingerprintKey", "fk_", 0, &st->fp)) != FGW_OK ||
	    (r = p_skey(root, "auditMacKey", "am_", 0, &st->amac)) != FGW_OK ||
	    (r = p_skey(root, "auditSigningKey", "as_", 1, &st->asign)) !=
	        FGW_OK ||
	    (r = p_bkeys(root, st)) != FGW_OK)
		goto out;
	r = FGW_OK;
out:
	cJSON_Delete(root);
	return r;
}

/* The MAC stored in the file (parsed separately: it is not part of the
 * canonical text it covers). */
static int
ring_stored_mac(const char *text, size_t len,
                unsigned char mac[crypto_generichash_BYTES])
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
		if (bkey_expired(st->bk[i], now)) {
			bkey_free(st->bk[i]);
			continue;
		}
		st->bk[j++] = st->bk[i];
	}
	st->nbk = j;
	for (i = 0; i < st->ndk; i++) {
		struct dkey *k = &st->dk[i];
		if ((r = unwrap_secret(kr, P_DATA, k->id, k->wrapped, &k->key)) !=
		    FGW_OK)
			goto out;
	}
	if ((r = unwrap_secret(kr, P_FP, st->fp.id, st->fp.wrapped,
	                       &st->fp.key)) != FGW_OK ||
	    (r = unwrap_secret(kr, P_AMAC, st->amac.id, st->amac.wrapped,
	                       &st->amac.key)) != FGW_OK ||
	    (r = unwrap_secret(kr, P_ASIGN, st->asign.id, st->asign.wrapped,
	                       &seed)) != FGW_OK ||
	    (r = sign_key_from_seed(seed, &st->asign.key, pk)) != FGW_OK)
		goto out;
	if (sodium_memcmp(pk, st->asign.pk, crypto_sign_PUBLICKEYBYTES) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	for (i = 0; i < st->nbk; i++) {
		struct bkey *k = st->bk[i];
		if ((r = unwrap_secret(kr, P_BOX, k->id, k->wrapped, &k->sk)) !=
		    FGW_OK)
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
static int
ring_load(const struct keyring *kr, struct ring_state *st, const char **msg)
{
	unsigned char mac[crypto_generichash_BYTES],
	    stored[crypto_generichash_BYTES];
	struct stat sb;
	char *text = NULL;
	size_t len = 0;
	int r;

	memset(st, 0, sizeof(*st));
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
	if ((r = fgw_read_file(kr->path, RING_MAX_BYTES, &text, &len)) !=
	    FGW_OK) {
		*msg = "cannot read the key ring file";
		goto out;
	}
	if ((r = ring_parse(text, len, st)) != FGW_OK ||
	    (r = ring_stored_mac(text, len, stored)) != FGW_OK) {
		*msg = "key ring file is malformed";
		goto out;
	}
	check_value(kr, st->check_salt, mac);
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
		state_clear(st);
	return r;
}

/* A brand-new ring: one key of each kind. */
static int
ring_create(struct keyring *kr, const char **msg)
{
	struct ring_state *st = &kr->st;
	int64_t now = fgw_now_ms();
	int r;

	randombytes_buf(st->check_salt, sizeof(st->check_salt));
	check_value(kr, st->check_salt, st->check_mac);
	if ((st->dk = calloc(1, sizeof(*st->dk))) == NULL ||
	    (st->bk = calloc(1, sizeof(*st->bk))) == NULL)
		return FGW_ERR_NOMEM;
	if ((r = new_dkey(kr, now, &st->dk[0])) != FGW_OK)
		return r;
	st->ndk = 1;
	if ((r = new_bkey(kr, now, &st->bk[0])) != FGW_OK)
		return r;
	st->nbk = 1;
	st->box_current = st->bk[0];
	if ((r = new_skey(kr, "fk_", P_FP, now, &st->fp)) != FGW_OK ||
	    (r = new_skey(kr, "am_", P_AMAC, now, &st->amac)) != FGW_OK ||
	    (r = new_skey(kr, "as_", P_ASIGN, now, &st->asign)) != FGW_OK)
		return r;
	if ((r = ring_persist(kr, now, msg)) != FGW_OK)
		return r;
	log_info("created key ring: data key %s, box key %s", st->dk[0].id,
	         st->box_current->id);
	return FGW_OK;
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
	pthread_rwlockattr_setkind_np(&attr,
	                              PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
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

int
keyring_open(const struct keyring_opts *opts, struct keyring **out,
             const char **err_msg)
{
	struct keyring *kr = NULL;
	struct secbuf *kek = NULL;
	const char *msg = NULL;
	struct stat sb;
	int r, ring_exists;

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
	kr->box_grace_ms = opts->box_grace_ms ? opts->box_grace_ms
	                                      : DEFAULT_BOX_GRACE_MS;
	if ((r = fgw_strlcpy(kr->dir, opts->dir, sizeof(kr->dir))) != FGW_OK ||
	    (r = path_join(kr->path, sizeof(kr->path), opts->dir, RING_FILE)) !=
	        FGW_OK ||
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
		         "it should be mode 0700", opts->dir);
	if (stat(kr->path, &sb) == 0)
		ring_exists = 1;
	else if (errno == ENOENT)
		ring_exists = 0;
	else {
		msg = "cannot read the key ring file";
		r = FGW_ERR_IO;
		goto out;
	}
	if (!ring_exists && !opts->create) {
		msg = "key ring not found (initialise it with create)";
		r = FGW_ERR_NOT_FOUND;
		goto out;
	}
	/* A KEK may be generated only for a ring that does not exist yet. */
	if ((r = kek_load(opts, !ring_exists, &kek, &msg)) != FGW_OK)
		goto out;
	r = derive_subkeys(kr, kek);
	secbuf_free(kek); /* only the subkeys stay in memory */
	kek = NULL;
	if (r != FGW_OK)
		goto out;
	if (ring_exists)
		r = ring_load(kr, &kr->st, &msg);
	else
		r = ring_create(kr, &msg);
	if (r != FGW_OK)
		goto out;
	*out = kr;
	kr = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	secbuf_free(kek);
	keyring_free(kr);
	if (r != FGW_OK && err_msg != NULL)
		*err_msg = msg != NULL ? msg : fgw_strerror(r);
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
keyring_check(const struct keyring_opts *opts, const char **note, const char **err_msg)
{
	struct keyring_opts ro;
	struct keyring *kr = NULL;
	struct secbuf *kek = NULL;
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
	if (stat(ring, &sb) == 0) {
		/* The ring exists: open it as the daemon would, minus create. */
		ro = *opts;
		ro.create = 0;
		r = keyring_open(&ro, &kr, &msg);
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
	if ((r = kek_load(opts, 0, &kek, &msg)) != FGW_OK)
		goto out;
	*note = "no key ring yet: it is created on first start";
	r = FGW_OK;
out:
	secbuf_free(kek);
	if (r != FGW_OK && err_msg != NULL)
		*err_msg = msg != NULL ? msg : fgw_strerror(r);
	return r;
}

void
keyring_free(struct keyring *kr)
{
	if (kr == NULL)
		return;
	state_clear(&kr->st);
	for (size_t i = 0; i < kr->ngrave; i++)
		bkey_free(kr->grave[i]);
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
keyring_box_current(struct keyring *kr, char *id, size_t idlen,
                    unsigned char pk[32])
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
	if ((r = new_dkey(kr, now, &nk)) != FGW_OK)
		goto out;
	if ((arr = realloc(kr->st.dk, (kr->st.ndk + 1) * sizeof(*arr))) ==
	    NULL) {
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
	dkey_clear(&nk);
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
	if ((r = new_bkey(kr, now, &nk)) != FGW_OK)
		goto out;
	if ((arr = realloc(kr->st.bk, (kr->st.nbk + 1) * sizeof(*arr))) ==
	    NULL) {
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
	log_info("rotated box key: %s current, %s valid for %lld ms more",
	         nk->id, old->id, (long long)kr->box_grace_ms);
	r = copy_id(new_id, idlen, nk->id);
	nk = NULL; /* owned by the list now */
out:
	unlock(kr);
	bkey_free(nk);
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
keyring_reload(struct keyring *kr, const char **err_msg)
{
	struct ring_state ns = { 0 }, old;
	struct bkey **g;
	const char *msg = NULL;
	size_t i;
	int r;

	wrlock(kr);
	if ((r = ring_load(kr, &ns, &msg)) != FGW_OK)
		goto out;
	if (strcmp(ns.fp.id, kr->st.fp.id) != 0 ||
	    strcmp(ns.amac.id, kr->st.amac.id) != 0 ||
	    strcmp(ns.asign.id, kr->st.asign.id) != 0) {
		msg = "the key ring file holds different fingerprint or audit keys";
		r = FGW_ERR_STATE;
		goto out;
	}
	/* Room in the grave first, so the swap below cannot fail half-way
	 * (st.nbk >= 1: there is always a current box key). */
	if ((g = realloc(kr->grave, (kr->ngrave + kr->st.nbk) * sizeof(*g))) ==
	    NULL) {
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
	skey_clear(&ns.fp);
	skey_clear(&ns.amac);
	skey_clear(&ns.asign);
	ns.fp = old.fp;
	ns.amac = old.amac;
	ns.asign = old.asign;
	memset(&old.fp, 0, sizeof(old.fp));
	memset(&old.amac, 0, sizeof(old.amac));
	memset(&old.asign, 0, sizeof(old.asign));
	kr->st = ns;
	memset(&ns, 0, sizeof(ns));
	state_clear(&old);
	log_info("reloaded key ring (generation %llu)",
	         (unsigned long long)kr->st.generation);
	r = FGW_OK;
out:
	unlock(kr);
	state_clear(&ns);
	if (r != FGW_OK && err_msg != NULL)
		*err_msg = msg != NULL ? msg : fgw_strerror(r);
	return r;
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

int
keyring_audit_mac(struct keyring *kr, const void *msg, size_t len,
                  unsigned char mac[32])
{
	if (msg == NULL && len > 0)
		return FGW_ERR_INVALID;
	if (crypto_generichash(mac, 32, msg, len, kr->st.amac.key->data,
	                       KEY_LEN) != 0)
		return FGW_ERR_INTERNAL;
	return FGW_OK;
}

int
keyring_audit_mac_fn(void *ctx, const void *msg, size_t len,
                     unsigned char mac[32])
{
	return keyring_audit_mac(ctx, msg, len, mac);
}

int
keyring_audit_sign(struct keyring *kr, const void *msg, size_t len,
                   unsigned char sig[64])
{
	if (msg == NULL && len > 0)
		return FGW_ERR_INVALID;
	if (crypto_sign_detached(sig, NULL, msg, len, kr->st.asign.key->data) !=
	    0)
		return FGW_ERR_INTERNAL;
	return FGW_OK;
}

void
keyring_audit_public(const struct keyring *kr, unsigned char pk[32])
{
	memcpy(pk, kr->st.asign.pk, crypto_sign_PUBLICKEYBYTES);
}

int
keyring_data_seal(struct keyring *kr, const void *ad, size_t adlen,
                  const void *m, size_t mlen, unsigned char *out,
                  size_t outcap, size_t *outlen, char *key_id, size_t idlen)
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
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(
	        out + KEYRING_AEAD_NONCEBYTES, &clen, m, mlen, ad, adlen, NULL,
	        out, k->key->data) != 0) {
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
keyring_data_open(struct keyring *kr, const char *key_id, const void *ad,
                  size_t adlen, const unsigned char *in, size_t inlen,
                  struct secbuf **plain)
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
	if ((r = secbuf_alloc(&p, inlen - KEYRING_AEAD_NONCEBYTES -
	                              KEYRING_AEAD_ABYTES)) != FGW_OK)
		goto out;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
	        p->data, &mlen, NULL, in + KEYRING_AEAD_NONCEBYTES,
	        inlen - KEYRING_AEAD_NONCEBYTES, ad, adlen, in,
	        k->key->data) != 0) {
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
	if (msg == NULL && len > 0)
		return FGW_ERR_INVALID;
	if (crypto_generichash(out, 32, msg, len, kr->st.fp.key->data,
	                       KEY_LEN) != 0)
		return FGW_ERR_INTERNAL;
	return FGW_OK;
}

/* The idempotency MAC key: a KDF subkey of the fingerprint key (which is
 * fixed for the life of a key ring, so answers stored under it stay
 * checkable after a rotation), under its own context so no MAC made with
 * it can be taken for a card fingerprint or a client secret. */
#define REQUEST_MAC_CTX "fgwidem1"
#define REQUEST_MAC_SUBKEY 1

int
keyring_request_mac(struct keyring *kr, const void *const *parts,
                    const size_t *lens, size_t n, unsigned char out[32])
{
	crypto_generichash_state st;
	unsigned char sub[KEY_LEN], len8[8];
	int r = FGW_ERR_INTERNAL;

	for (size_t i = 0; i < n; i++)
		if (parts[i] == NULL && lens[i] > 0)
			return FGW_ERR_INVALID;
	rdlock(kr);
	if (crypto_kdf_derive_from_key(sub, sizeof(sub), REQUEST_MAC_SUBKEY,
	                               REQUEST_MAC_CTX, kr->st.fp.key->data) != 0 ||
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
keyring_box_open(struct keyring *kr, const char *key_id,
                 const unsigned char *c, size_t clen, struct secbuf **plain)
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

/* ---- backups ----------------------------------------------------------- */

#define BACKUP_MAGIC "FGWBK1\n"
#define BACKUP_MAGIC_LEN 7
#define BACKUP_CHUNK 65536

int
keyring_audit_sign_fn(void *ctx, const void *msg, size_t len,
                      unsigned char sig[64])
{
	return keyring_audit_sign(ctx, msg, len, sig);
}

/* The backup key: BLAKE2b(audit MAC key, "flairgw backup key v1"). The
 * audit MAC key is fixed for the life of a key ring, so old backups open. */
static int
backup_key(struct keyring *kr, struct secbuf **out)
{
	static const char label[] = "flairgw backup key v1";
	struct secbuf *k = NULL;
	int r;
	if ((r = secbuf_alloc(&k, crypto_secretstream_xchacha20poly1305_KEYBYTES)) != 0)
		return r;
	if (crypto_generichash(k->data, k->len, (const unsigned char *)label,
	                       sizeof(label) - 1, kr->st.amac.key->data, KEY_LEN) != 0) {
		secbuf_free(k);
		return FGW_ERR_INTERNAL;
	}
	*out = k;
	return FGW_OK;
}

int
keyring_backup_encrypt(struct keyring *kr, FILE *in, FILE *out)
{
	crypto_secretstream_xchacha20poly1305_state st;
	unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char *buf = NULL, *cbuf = NULL;
	struct secbuf *key = NULL;
	unsigned long long clen;
	size_t n;
	int r, eof;

	if ((buf = malloc(BACKUP_CHUNK)) == NULL ||
	    (cbuf = malloc(BACKUP_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if ((r = backup_key(kr, &key)) != 0)
		goto out;
	crypto_secretstream_xchacha20poly1305_init_push(&st, hdr, key->data);
	if (fwrite(BACKUP_MAGIC, 1, BACKUP_MAGIC_LEN, out) != BACKUP_MAGIC_LEN ||
	    fwrite(hdr, 1, sizeof(hdr), out) != sizeof(hdr)) {
		r = FGW_ERR_IO;
		goto out;
	}
	do {
		n = fread(buf, 1, BACKUP_CHUNK, in);
		if (ferror(in)) {
			r = FGW_ERR_IO;
			goto out;
		}
		eof = feof(in);
		crypto_secretstream_xchacha20poly1305_push(
		    &st, cbuf, &clen, buf, n, NULL, 0,
		    eof ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0);
		if (fwrite(cbuf, 1, (size_t)clen, out) != (size_t)clen) {
			r = FGW_ERR_IO;
			goto out;
		}
	} while (!eof);
	r = fflush(out) == 0 ? FGW_OK : FGW_ERR_IO;
out:
	sodium_memzero(&st, sizeof(st));
	fgw_freezero(buf, BACKUP_CHUNK);
	free(cbuf);
	secbuf_free(key);
	return r;
}

int
keyring_backup_decrypt(struct keyring *kr, FILE *in, FILE *out)
{
	crypto_secretstream_xchacha20poly1305_state st;
	unsigned char hdr[crypto_secretstream_xchacha20poly1305_HEADERBYTES];
	unsigned char magic[BACKUP_MAGIC_LEN], tag = 0;
	unsigned char *buf = NULL, *cbuf = NULL;
	const size_t csize = BACKUP_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES;
	struct secbuf *key = NULL;
	unsigned long long mlen;
	size_t n;
	int r;

	if ((buf = malloc(BACKUP_CHUNK)) == NULL || (cbuf = malloc(csize)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (fread(magic, 1, sizeof(magic), in) != sizeof(magic) ||
	    memcmp(magic, BACKUP_MAGIC, BACKUP_MAGIC_LEN) != 0 ||
	    fread(hdr, 1, sizeof(hdr), in) != sizeof(hdr)) {
		r = FGW_ERR_CRYPTO; /* not a flairgw backup */
		goto out;
	}
	if ((r = backup_key(kr, &key)) != 0)
		goto out;
	if (crypto_secretstream_xchacha20poly1305_init_pull(&st, hdr, key->data) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	while (tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
		n = fread(cbuf, 1, csize, in);
		if (ferror(in)) {
			r = FGW_ERR_IO;
			goto out;
		}
		if (crypto_secretstream_xchacha20poly1305_pull(&st, buf, &mlen, &tag, cbuf, n,
		                                               NULL, 0) != 0) {
			r = FGW_ERR_CRYPTO; /* edited, truncated or wrong key */
			goto out;
		}
		if (tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL && n < csize) {
			r = FGW_ERR_CRYPTO; /* the final chunk is missing */
			goto out;
		}
		if (fwrite(buf, 1, (size_t)mlen, out) != (size_t)mlen) {
			r = FGW_ERR_IO;
			goto out;
		}
	}
	if (fgetc(in) != EOF) {
		r = FGW_ERR_CRYPTO; /* data after the final chunk */
		goto out;
	}
	r = fflush(out) == 0 ? FGW_OK : FGW_ERR_IO;
out:
	sodium_memzero(&st, sizeof(st));
	fgw_freezero(buf, BACKUP_CHUNK);
	free(cbuf);
	secbuf_free(key);
	return r;
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
keyring_box_seal_to(struct keyring *kr, const char *key_id,
                    const unsigned char peer[32], const void *m, size_t mlen,
                    unsigned char *out)
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
                      const unsigned char peer[32], const unsigned char *c,
                      size_t clen, struct secbuf **plain)
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
	    (r = box_open_afternm(k, BOX_DIR_STANDALONE, c, clen, p->data)) !=
	        FGW_OK)
		goto out;
	*plain = p;
	p = NULL; /* owned by the caller now */
out:
	unlock(kr);
	secbuf_free(tmp);
	secbuf_free(p);
	return r;
}
