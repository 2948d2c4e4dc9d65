/*
 * crypto/sealed.c — sealed boxes (crypto_box_seal: X25519 + XSalsa20-
 * Poly1305 with an ephemeral sender key), carried as standard base64.
 *
 * Opening with the gateway's key goes through the key ring (the secret
 * never leaves crypto/keys.c); opening with a standalone key pair (the
 * sandbox) uses the pair's own guarded secret. Public key files are JSON
 * {"keyId","algorithm":"x25519-sealedbox" or "x25519-box","publicKey"}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/box.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"

static const char *const alg_names[] = {
	[SEALED_ALG_SEALEDBOX] = "x25519-sealedbox",
	[SEALED_ALG_BOX] = "x25519-box",
};
#define PUBKEY_FILE_MAX 4096

struct open_ctx {
	struct keyring *kr;
	const char *key_id;
};

static int
ring_opener(void *arg, const unsigned char *c, size_t clen, struct secbuf **plain)
{
	const struct open_ctx *x = arg;
	return keyring_box_open(x->kr, x->key_id, c, clen, plain);
}

int
sealed_open_b64(struct keyring *kr, const char *key_id, const char *b64, size_t b64len,
                struct secbuf **plain)
{
	struct open_ctx x = { kr, key_id };

	return box_b64_open(ring_opener, &x, b64, b64len, plain);
}

int
sealed_seal_b64(const unsigned char pk[32], const void *msg, size_t len, char **b64)
{
	unsigned char *c = NULL;
	int r;

	*b64 = NULL;
	if ((msg == NULL && len > 0) || len > SIZE_MAX - crypto_box_SEALBYTES)
		return FGW_ERR_INVALID;
	if ((c = malloc(len + crypto_box_SEALBYTES)) == NULL)
		return FGW_ERR_NOMEM;
	if (crypto_box_seal(c, msg, len, pk) != 0) {
		r = FGW_ERR_CRYPTO; /* a malformed public key */
		goto out;
	}
	r = fgw_b64_encode(c, len + crypto_box_SEALBYTES, b64);
out:
	free(c);
	return r;
}

/* Parses the public key JSON text into out. */
static int
pubkey_parse(const char *text, size_t len, struct sealed_pubkey *out)
{
	cJSON *root = NULL;
	const cJSON *id, *alg, *pk;
	unsigned char *raw = NULL;
	size_t rawlen = 0;
	int r = FGW_ERR_INVALID;

	if ((root = cJSON_ParseWithLength(text, len)) == NULL || !cJSON_IsObject(root))
		goto out;
	id = cJSON_GetObjectItemCaseSensitive(root, "keyId");
	alg = cJSON_GetObjectItemCaseSensitive(root, "algorithm");
	pk = cJSON_GetObjectItemCaseSensitive(root, "publicKey");
	if (!cJSON_IsString(id) || !cJSON_IsString(alg) || !cJSON_IsString(pk))
		goto out;
	if (strcmp(alg->valuestring, alg_names[SEALED_ALG_SEALEDBOX]) == 0)
		out->alg = SEALED_ALG_SEALEDBOX;
	else if (strcmp(alg->valuestring, alg_names[SEALED_ALG_BOX]) == 0)
		out->alg = SEALED_ALG_BOX;
	else
		goto out;
	if (id->valuestring[0] == '\0' ||
	    fgw_strlcpy(out->key_id, id->valuestring, sizeof(out->key_id)) != FGW_OK)
		goto out;
	if (fgw_b64_decode(pk->valuestring, strlen(pk->valuestring), &raw, &rawlen) !=
	        FGW_OK ||
	    rawlen != sizeof(out->pk))
		goto out;
	memcpy(out->pk, raw, sizeof(out->pk));
	r = FGW_OK;
out:
	free(raw);
	cJSON_Delete(root);
	return r;
}

int
sealed_load_pubkey(const char *path, struct sealed_pubkey *out)
{
	char *text = NULL;
	size_t len = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = fgw_read_file(path, PUBKEY_FILE_MAX, &text, &len)) != FGW_OK) {
		if (r == FGW_ERR_TOO_LARGE)
			r = FGW_ERR_INVALID;
		return r;
	}
	r = pubkey_parse(text, len, out);
	free(text);
	if (r != FGW_OK)
		memset(out, 0, sizeof(*out));
	return r;
}

/* The same id for the same key, every time: prefix + 16 hex characters of
 * BLAKE2b(pk). */
static int
keypair_id(const char *prefix, const unsigned char pk[32], char *out, size_t cap)
{
	unsigned char h[32];
	char hex[17];
	int n;

	crypto_generichash(h, sizeof(h), pk, 32, NULL, 0);
	fgw_hex(h, 8, hex);
	n = snprintf(out, cap, "%s%s", prefix, hex);
	if (n < 0 || (size_t)n >= cap)
		return FGW_ERR_TOO_LARGE;
	return FGW_OK;
}

static int
pubkey_write(const char *path, const char *key_id, const unsigned char pk[32],
             enum sealed_alg alg)
{
	char *b64 = NULL, *text = NULL;
	size_t cap;
	int n, r;

	if ((r = fgw_b64_encode(pk, 32, &b64)) != FGW_OK)
		return r;
	cap = strlen(key_id) + strlen(b64) + strlen(alg_names[alg]) + 96;
	if ((text = malloc(cap)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	n = snprintf(text, cap,
	             "{\"keyId\":\"%s\",\"algorithm\":\"%s\","
	             "\"publicKey\":\"%s\"}\n",
	             key_id, alg_names[alg], b64);
	if (n < 0 || (size_t)n >= cap) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	r = fgw_write_file_atomic(path, text, (size_t)n, 0644);
out:
	free(b64);
	free(text);
	return r;
}

int
sealed_keypair_load_or_create(const char *sk_path, const char *pub_path,
                              const char *id_prefix, enum sealed_alg alg,
                              struct sealed_keypair *out)
{
	struct sealed_pubkey onfile;
	struct secbuf *sk = NULL;
	int r;

	memset(out, 0, sizeof(*out));
	if (sodium_init() < 0)
		return FGW_ERR_INTERNAL;
	if (sk_path == NULL || id_prefix == NULL ||
	    (alg != SEALED_ALG_SEALEDBOX && alg != SEALED_ALG_BOX))
		return FGW_ERR_INVALID;
	r = secbuf_read_secret_file(sk_path, crypto_box_SECRETKEYBYTES, &sk, NULL);
	if (r == FGW_ERR_NOT_FOUND) {
		if ((r = secbuf_alloc(&sk, crypto_box_SECRETKEYBYTES)) != FGW_OK)
			goto out;
		randombytes_buf(sk->data, sk->len);
		if ((r = secbuf_write_secret_file(sk_path, sk)) != FGW_OK)
			goto out;
	} else if (r != FGW_OK)
		goto out;
	if (crypto_scalarmult_base(out->pk, sk->data) != 0) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = keypair_id(id_prefix, out->pk, out->key_id, sizeof(out->key_id))) != FGW_OK)
		goto out;
	/* The secret is authoritative: (re)write the public file whenever it
	 * is missing or does not describe this key. */
	if (pub_path != NULL &&
	    (sealed_load_pubkey(pub_path, &onfile) != FGW_OK ||
	     strcmp(onfile.key_id, out->key_id) != 0 || onfile.alg != alg ||
	     sodium_memcmp(onfile.pk, out->pk, sizeof(out->pk)) != 0) &&
	    (r = pubkey_write(pub_path, out->key_id, out->pk, alg)) != FGW_OK)
		goto out;
	out->sk = sk;
	sk = NULL; /* owned by the key pair now */
	r = FGW_OK;
out:
	secbuf_free(sk);
	if (r != FGW_OK)
		memset(out, 0, sizeof(*out));
	return r;
}

void
sealed_keypair_clear(struct sealed_keypair *kp)
{
	if (kp == NULL)
		return;
	secbuf_free(kp->sk);
	box_peers_free(kp->peers);
	memset(kp, 0, sizeof(*kp));
}

static int
keypair_opener(void *arg, const unsigned char *c, size_t clen, struct secbuf **plain)
{
	const struct sealed_keypair *kp = arg;
	struct secbuf *p = NULL;
	int r;

	if (clen < crypto_box_SEALBYTES)
		return FGW_ERR_CRYPTO;
	if ((r = secbuf_alloc(&p, clen - crypto_box_SEALBYTES)) != FGW_OK)
		return r;
	if (crypto_box_seal_open(p->data, c, clen, kp->pk, kp->sk->data) != 0) {
		secbuf_free(p);
		return FGW_ERR_CRYPTO;
	}
	*plain = p;
	return FGW_OK;
}

int
sealed_open_with(const struct sealed_keypair *kp, const char *b64, size_t b64len,
                 struct secbuf **plain)
{
	*plain = NULL;
	if (kp == NULL || kp->sk == NULL)
		return FGW_ERR_INVALID;
	return box_b64_open(keypair_opener, (void *)kp, b64, b64len, plain);
}
