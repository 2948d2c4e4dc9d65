/*
 * crypto/sealed.c — sealed boxes (crypto_box_seal: X25519 + XSalsa20-
 * Poly1305 with an ephemeral sender key), carried as standard base64.
 *
 * Opening with the gateway's key goes through the key ring (the secret
 * never leaves crypto/keys.c); opening with a standalone key pair (the
 * sandbox) uses the pair's own guarded secret. Public key files are JSON
 * {"keyId","algorithm":"x25519-sealedbox","publicKey"}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"

#define ALGORITHM "x25519-sealedbox"
#define PUBKEY_FILE_MAX 4096

int
sealed_open_b64(struct keyring *kr, const char *key_id, const char *b64,
                size_t b64len, struct secbuf **plain)
{
	unsigned char *c = NULL;
	size_t clen = 0;
	int r;

	*plain = NULL;
	if (b64 == NULL)
		return FGW_ERR_INVALID;
	if ((r = fgw_b64_decode(b64, b64len, &c, &clen)) != FGW_OK)
		return r;
	r = keyring_box_open(kr, key_id, c, clen, plain);
	free(c);
	return r;
}

int
sealed_seal_b64(const unsigned char pk[32], const void *msg, size_t len,
                char **b64)
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

	if ((root = cJSON_ParseWithLength(text, len)) == NULL ||
	    !cJSON_IsObject(root))
		goto out;
	id = cJSON_GetObjectItemCaseSensitive(root, "keyId");
	alg = cJSON_GetObjectItemCaseSensitive(root, "algorithm");
	pk = cJSON_GetObjectItemCaseSensitive(root, "publicKey");
	if (!cJSON_IsString(id) || !cJSON_IsString(alg) || !cJSON_IsString(pk))
		goto out;
	if (strcmp(alg->valuestring, ALGORITHM) != 0 ||
	    id->valuestring[0] == '\0' ||
	    fgw_strlcpy(out->key_id, id->valuestring, sizeof(out->key_id)) !=
	        FGW_OK)
		goto out;
	if (fgw_b64_decode(pk->valuestring, strlen(pk->valuestring), &raw,
	                   &rawlen) != FGW_OK ||
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
keypair_id(const char *prefix, const unsigned char pk[32], char *out,
           size_t cap)
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
pubkey_write(const char *path, const char *key_id, const unsigned char pk[32])
{
	char *b64 = NULL, *text = NULL;
	size_t cap;
	int n, r;

	if ((r = fgw_b64_encode(pk, 32, &b64)) != FGW_OK)
		return r;
	cap = strlen(key_id) + strlen(b64) + 96;
	if ((text = malloc(cap)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	n = snprintf(text, cap,
	             "{\"keyId\":\"%s\",\"algorithm\":\"" ALGORITHM "\","
	             "\"publicKey\":\"%s\"}\n",
	             key_id, b64);
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
                              const char *id_prefix,
                              struct sealed_keypair *out)
{
	struct sealed_pubkey onfile;
	struct secbuf *sk = NULL;
	int r;

	memset(out, 0, sizeof(*out));
	if (sodium_init() < 0)
		return FGW_ERR_INTERNAL;
	if (sk_path == NULL || id_prefix == NULL)
		return FGW_ERR_INVALID;
	r = secbuf_read_secret_file(sk_path, crypto_box_SECRETKEYBYTES, &sk,
	                            NULL);
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
	if ((r = keypair_id(id_prefix, out->pk, out->key_id,
	                    sizeof(out->key_id))) != FGW_OK)
		goto out;
	/* The secret is authoritative: (re)write the public file whenever it
	 * is missing or does not describe this key. */
	if (pub_path != NULL &&
	    (sealed_load_pubkey(pub_path, &onfile) != FGW_OK ||
	     strcmp(onfile.key_id, out->key_id) != 0 ||
	     sodium_memcmp(onfile.pk, out->pk, sizeof(out->pk)) != 0) &&
	    (r = pubkey_write(pub_path, out->key_id, out->pk)) != FGW_OK)
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
	memset(kp, 0, sizeof(*kp));
}

int
sealed_open_with(const struct sealed_keypair *kp, const char *b64,
                 size_t b64len, struct secbuf **plain)
{
	struct secbuf *p = NULL;
	unsigned char *c = NULL;
	size_t clen = 0;
	int r;

	*plain = NULL;
	if (kp == NULL || kp->sk == NULL)
		return FGW_ERR_INVALID;
	if (b64 == NULL)
		return FGW_ERR_INVALID;
	if ((r = fgw_b64_decode(b64, b64len, &c, &clen)) != FGW_OK)
		return r;
	if (clen < crypto_box_SEALBYTES) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	if ((r = secbuf_alloc(&p, clen - crypto_box_SEALBYTES)) != FGW_OK)
		goto out;
	if (crypto_box_seal_open(p->data, c, clen, kp->pk, kp->sk->data) != 0) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	*plain = p;
	p = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	free(c);
	secbuf_free(p);
	return r;
}
