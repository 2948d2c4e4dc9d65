/*
 * crypto/kek.c — the KEK: where it comes from (two shares, an environment
 * variable, a file), the three subkeys derived from it, wrapping and
 * unwrapping of single keys, and new keys wrapped under it.
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

/* ---- 2. the KEK and its subkeys -------------------------------------- */

/* A secret file's refusal, named as the operator knows it ("KEK share 1
 * file is not a regular file"). */
static void
secret_file_why(struct fgw_why *why, const char *name, const struct fgw_why *fw)
{
	fgw_why_set(why, NULL, 0, 0, "%s %s", name, fw->msg[0] ? fw->msg : "cannot be read");
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
kek_from_shares(const struct keyring_opts *o, int may_generate, struct secbuf **kek,
                struct fgw_why *why)
{
	struct secbuf *s1 = NULL, *s2 = NULL;
	struct fgw_why w1 = { 0 }, w2 = { 0 };
	int r, r1, r2;

	if (o->kek_share1 == NULL || o->kek_share2 == NULL) {
		fgw_why_set(why, NULL, 0, 0,
		            "both KEK shares must be configured (kek_share1 and kek_share2)");
		return FGW_ERR_INVALID;
	}
	r1 = secbuf_read_secret_file(o->kek_share1, KEY_LEN, &s1, &w1);
	r2 = secbuf_read_secret_file(o->kek_share2, KEY_LEN, &s2, &w2);
	if (r1 == FGW_ERR_NOT_FOUND && r2 == FGW_ERR_NOT_FOUND && may_generate) {
		if ((r = random_secret(&s1)) != FGW_OK || (r = random_secret(&s2)) != FGW_OK)
			goto out;
		if ((r = secbuf_write_secret_file(o->kek_share1, s1)) != FGW_OK) {
			fgw_why_set(why, NULL, 0, 0, "cannot create the KEK share 1 file");
			goto out;
		}
		if ((r = secbuf_write_secret_file(o->kek_share2, s2)) != FGW_OK) {
			/* Never leave half a KEK behind. */
			unlink(o->kek_share1);
			fgw_why_set(why, NULL, 0, 0, "cannot create the KEK share 2 file");
			goto out;
		}
		log_info("generated two new KEK share files");
	} else if (r1 != FGW_OK) {
		r = r1;
		secret_file_why(why, "KEK share 1 file", &w1);
		goto out;
	} else if (r2 != FGW_OK) {
		r = r2;
		secret_file_why(why, "KEK share 2 file", &w2);
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
kek_from_env(const char *val, struct secbuf **kek, struct fgw_why *why)
{
	struct secbuf *b = NULL;
	size_t got = 0;
	int r;

	/* Decode straight into guarded memory (fgw_b64_decode would leave a
	 * copy on the ordinary heap). 48 bytes is room for any 32-byte
	 * encoding and lets a too-long value be reported as such. */
	if ((r = secbuf_alloc(&b, 48)) != FGW_OK)
		return r;
	if (sodium_base642bin(b->data, b->len, val, strlen(val), " \t\r\n", &got, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    got != KEY_LEN) {
		fgw_why_set(why, NULL, 0, 0,
		            "KEK environment variable must hold the base64 of exactly 32 bytes");
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
              struct fgw_why *why)
{
	struct fgw_why fw = { 0 };
	int r;

	r = secbuf_read_secret_file(path, KEY_LEN, kek, &fw);
	if (r == FGW_ERR_NOT_FOUND && may_generate) {
		if ((r = random_secret(kek)) != FGW_OK)
			return r;
		if ((r = secbuf_write_secret_file(path, *kek)) != FGW_OK) {
			secbuf_free(*kek);
			*kek = NULL;
			fgw_why_set(why, NULL, 0, 0, "cannot create the KEK file");
			return r;
		}
		log_info("generated a new KEK file");
		return FGW_OK;
	}
	if (r != FGW_OK) {
		if (r == FGW_ERR_NOT_FOUND && !may_generate)
			fgw_why_set(why, NULL, 0, 0,
			            "KEK file not found (restore it; a new KEK cannot open an "
			            "existing key ring)");
		else
			secret_file_why(why, "KEK file", &fw);
	}
	return r;
}

/* Sources in order: two shares, then the environment variable (if it is
 * set), then the file. A configured but unusable source is an error; only
 * an unset environment variable falls through to the file. */
int
kek_load(const struct keyring_opts *o, int may_generate, struct secbuf **kek,
         struct fgw_why *why)
{
	const char *val = NULL;
	int r;

	*kek = NULL;
	if (o->kek_share1 != NULL || o->kek_share2 != NULL)
		r = kek_from_shares(o, may_generate, kek, why);
	else if (o->kek_env != NULL && (val = secure_getenv(o->kek_env)) != NULL)
		r = kek_from_env(val, kek, why);
	else if (o->kek_file != NULL)
		r = kek_from_file(o->kek_file, may_generate, kek, why);
	else if (o->kek_env != NULL) {
		fgw_why_set(why, NULL, 0, 0, "the KEK environment variable is not set");
		r = FGW_ERR_NOT_FOUND;
	} else {
		fgw_why_set(why, NULL, 0, 0, "no KEK source configured");
		r = FGW_ERR_INVALID;
	}
	if (r == FGW_OK && sodium_is_zero((*kek)->data, KEY_LEN)) {
		fgw_why_set(why, NULL, 0, 0,
		            "KEK is all zero bytes (are the two shares identical?)");
		r = FGW_ERR_INVALID;
	}
	if (r != FGW_OK) {
		secbuf_free(*kek);
		*kek = NULL;
	}
	return r;
}

int
kek_derive_subkeys(struct keyring *kr, const struct secbuf *kek)
{
	int r;

	if ((r = secbuf_alloc(&kr->wrap_key, KEY_LEN)) != FGW_OK ||
	    (r = secbuf_alloc(&kr->check_key, KEY_LEN)) != FGW_OK ||
	    (r = secbuf_alloc(&kr->ring_key, KEY_LEN)) != FGW_OK)
		return r;
	if (crypto_kdf_derive_from_key(kr->wrap_key->data, KEY_LEN, SUBKEY_WRAP, KDF_CONTEXT,
	                               kek->data) != 0 ||
	    crypto_kdf_derive_from_key(kr->check_key->data, KEY_LEN, SUBKEY_CHECK,
	                               KDF_CONTEXT, kek->data) != 0 ||
	    crypto_kdf_derive_from_key(kr->ring_key->data, KEY_LEN, SUBKEY_RING, KDF_CONTEXT,
	                               kek->data) != 0)
		return FGW_ERR_INTERNAL;
	return FGW_OK;
}

void
kek_check_value(const struct keyring *kr, const unsigned char salt[CHECK_SALT_LEN],
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
	        blob + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, &clen, secret, KEY_LEN,
	        (const unsigned char *)ad, (unsigned long long)n, NULL, blob,
	        kr->wrap_key->data) != 0)
		return FGW_ERR_INTERNAL;
	return fgw_b64_encode(blob, sizeof(blob), out);
}

/* Checks that text is base64 of exactly want bytes; copies them if out. */
int
kek_b64_exact(const char *text, size_t want, unsigned char *out)
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

int
kek_unwrap(const struct keyring *kr, const char *purpose, const char *id,
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
	if ((r = kek_b64_exact(wrapped, sizeof(blob), blob)) != FGW_OK)
		return r;
	if ((r = secbuf_alloc(&k, KEY_LEN)) != FGW_OK)
		return r;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
	        k->data, &mlen, NULL, blob + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
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

int
kek_new_dkey(const struct keyring *kr, int64_t now, struct dkey *k)
{
	int r;

	memset(k, 0, sizeof(*k));
	if ((r = fgw_random_id("dk_", k->id, sizeof(k->id))) != FGW_OK ||
	    (r = random_secret(&k->key)) != FGW_OK ||
	    (r = wrap_secret(kr, P_DATA, k->id, k->key->data, &k->wrapped)) != FGW_OK) {
		keys_dkey_clear(k);
		return r;
	}
	k->active = 1;
	k->created_ms = now;
	return FGW_OK;
}

int
kek_new_bkey(const struct keyring *kr, int64_t now, struct bkey **out)
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
	if ((r = wrap_secret(kr, P_BOX, k->id, k->sk->data, &k->wrapped)) != FGW_OK)
		goto out;
	k->created_ms = now;
	*out = k;
	k = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	keys_bkey_free(k);
	return r;
}

/* Turns an Ed25519 seed into the 64-byte secret key (and public key). */
int
kek_sign_key_from_seed(const struct secbuf *seed, struct secbuf **sk,
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

int
kek_new_skey(const struct keyring *kr, const char *prefix, const char *purpose,
             int64_t now, struct skey *k)
{
	struct secbuf *seed = NULL;
	int r;

	memset(k, 0, sizeof(*k));
	if ((r = fgw_random_id(prefix, k->id, sizeof(k->id))) != FGW_OK ||
	    (r = random_secret(&seed)) != FGW_OK ||
	    (r = wrap_secret(kr, purpose, k->id, seed->data, &k->wrapped)) != FGW_OK)
		goto out;
	if (strcmp(purpose, P_ASIGN) == 0) {
		if ((r = kek_sign_key_from_seed(seed, &k->key, k->pk)) != FGW_OK)
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
		keys_skey_clear(k);
	return r;
}
