/*
 * crypto/vault.c — vault blobs and card fingerprints.
 *
 * A blob is "v1:<dk_id>:<base64(nonce || ciphertext || tag)>": the PAN
 * encrypted with XChaCha20-Poly1305-IETF under a data key, the token as
 * associated data. The key bytes stay in crypto/keys.c: this file asks the
 * key ring to seal and open by key id, and only formats and parses text.
 * Plaintext exists only in guarded buffers (struct secbuf).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"

#define BLOB_PREFIX "v1:"
#define BLOB_MAX_PLAIN 4096 /* a PAN, or a small card JSON */
#define PAN_MIN_DIGITS 12
#define PAN_MAX_DIGITS 19

int
vault_new_token(char *out, size_t outlen)
{
	return fgw_random_id("tok_", out, outlen);
}

/* Splits a blob into its key id and its base64 body (pointing into blob). */
static int
blob_split(const char *blob, char id[KEYRING_ID_MAX], const char **body)
{
	const char *p, *colon;
	size_t n;

	if (blob == NULL || strncmp(blob, BLOB_PREFIX, strlen(BLOB_PREFIX)) != 0)
		return FGW_ERR_INVALID;
	p = blob + strlen(BLOB_PREFIX);
	if ((colon = strchr(p, ':')) == NULL)
		return FGW_ERR_INVALID;
	n = (size_t)(colon - p);
	if (n == 0 || n >= KEYRING_ID_MAX)
		return FGW_ERR_INVALID;
	memcpy(id, p, n);
	id[n] = '\0';
	*body = colon + 1;
	return FGW_OK;
}

int
vault_encrypt(struct keyring *kr, const char *token, const struct secbuf *plain,
              char **blob)
{
	char id[KEYRING_ID_MAX], *b64 = NULL, *text = NULL;
	unsigned char *ct = NULL;
	size_t ctcap, ctlen = 0, cap;
	int n, r;

	*blob = NULL;
	if (token == NULL || token[0] == '\0' || plain == NULL || plain->data == NULL)
		return FGW_ERR_INVALID;
	if (plain->len > BLOB_MAX_PLAIN)
		return FGW_ERR_TOO_LARGE;
	ctcap = plain->len + KEYRING_AEAD_NONCEBYTES + KEYRING_AEAD_ABYTES;
	if ((ct = malloc(ctcap)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if ((r = keyring_data_seal(kr, token, strlen(token), plain->data, plain->len, ct,
	                           ctcap, &ctlen, id, sizeof(id))) != FGW_OK ||
	    (r = fgw_b64_encode(ct, ctlen, &b64)) != FGW_OK)
		goto out;
	cap = strlen(BLOB_PREFIX) + strlen(id) + 1 + strlen(b64) + 1;
	if ((text = malloc(cap)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	n = snprintf(text, cap, "%s%s:%s", BLOB_PREFIX, id, b64);
	if (n < 0 || (size_t)n >= cap) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	*blob = text;
	text = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	free(ct);
	free(b64);
	free(text);
	return r;
}

int
vault_decrypt(struct keyring *kr, const char *token, const char *blob,
              struct secbuf **plain)
{
	char id[KEYRING_ID_MAX];
	const char *body = NULL;
	unsigned char *ct = NULL;
	size_t ctlen = 0;
	int r;

	*plain = NULL;
	if (token == NULL || token[0] == '\0')
		return FGW_ERR_INVALID;
	if ((r = blob_split(blob, id, &body)) != FGW_OK ||
	    (r = fgw_b64_decode(body, strlen(body), &ct, &ctlen)) != FGW_OK)
		goto out;
	r = keyring_data_open(kr, id, token, strlen(token), ct, ctlen, plain);
out:
	free(ct);
	return r;
}

int
vault_rewrap(struct keyring *kr, const char *token, const char *blob, char **out)
{
	struct secbuf *plain = NULL;
	int r;

	*out = NULL;
	if ((r = vault_decrypt(kr, token, blob, &plain)) == FGW_OK)
		r = vault_encrypt(kr, token, plain, out);
	secbuf_free(plain);
	return r;
}

int
vault_blob_key_id(const char *blob, char *id, size_t idlen)
{
	char tmp[KEYRING_ID_MAX];
	const char *body = NULL;
	int r;

	if ((r = blob_split(blob, tmp, &body)) != FGW_OK)
		return r;
	return fgw_strlcpy(id, tmp, idlen);
}

int
vault_fingerprint(struct keyring *kr, const char *pan, size_t len, char out[65])
{
	unsigned char mac[32];
	struct secbuf *digits = NULL;
	size_t n = 0;
	int r;

	if (pan == NULL)
		return FGW_ERR_INVALID;
	/* Only the digits count: "4242 4242 ..." and "42424242..." are the
	 * same card. The copy lives in guarded memory. */
	if ((r = secbuf_alloc(&digits, PAN_MAX_DIGITS)) != FGW_OK)
		return r;
	for (size_t i = 0; i < len; i++) {
		char c = pan[i];
		if (c == ' ' || c == '-')
			continue;
		if (c < '0' || c > '9' || n == PAN_MAX_DIGITS) {
			r = FGW_ERR_INVALID;
			goto out;
		}
		digits->data[n++] = (unsigned char)c;
	}
	if (n < PAN_MIN_DIGITS) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = keyring_fingerprint_mac(kr, digits->data, n, mac)) != FGW_OK)
		goto out;
	fgw_hex(mac, sizeof(mac), out);
	r = FGW_OK;
out:
	sodium_memzero(mac, sizeof(mac));
	secbuf_free(digits);
	return r;
}
