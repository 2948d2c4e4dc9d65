/*
 * crypto/jwt.c — JWT (compact JWS) verification, RS256 via OpenSSL 3 EVP
 * and HS256 via libsodium HMAC-SHA256; see jwt.h for the policy.
 *
 * Layout: small helpers (errors, base64url, strict JSON objects); the JWKS
 * key set (RSA public keys built from n/e with EVP_PKEY_fromdata, held in a
 * reference-counted set that reload swaps); the verifier (config, the two
 * signature checks, claims); token minting and JWKS export for tests and
 * flairctl.
 *
 * Verification order: shape and length, header JSON, alg, key selection,
 * signature, and only then the payload JSON and its claims, so an
 * unauthenticated payload is never parsed.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/jwt.h"

#define HS256_LEN crypto_auth_hmacsha256_BYTES
#define JSON_MAX_MEMBERS 128 /* per header / payload object */
#define AUD_MAX_ENTRIES 32
#define PEM_MAX_FILE (64 * 1024)
/* Latest NumericDate accepted: 9999-12-31T23:59:59Z. */
#define NUMERIC_DATE_MAX 253402300799.0

/* ---- helpers ----------------------------------------------------------- */

static int
b64url_encode(const void *in, size_t len, char **out)
{
	size_t cap = sodium_base64_encoded_len(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *s = malloc(cap);

	if (s == NULL)
		return FGW_ERR_NOMEM;
	sodium_bin2base64(s, cap, in, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	*out = s;
	return FGW_OK;
}

/* Strict base64url without padding into malloc'ed *out, NUL-terminated one
 * byte past *outlen. FGW_ERR_INVALID on any stray character, padding or
 * non-zero trailing bits (libsodium checks those). */
static int
b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	size_t cap = len / 4 * 3 + 3, got = 0;
	const char *end = NULL;
	unsigned char *buf;

	if (len == 0)
		return FGW_ERR_INVALID;
	if ((buf = malloc(cap + 1)) == NULL)
		return FGW_ERR_NOMEM;
	if (sodium_base642bin(buf, cap, in, len, NULL, &got, &end,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    end != in + len) {
		free(buf);
		return FGW_ERR_INVALID;
	}
	buf[got] = '\0';
	*out = buf;
	*outlen = got;
	return FGW_OK;
}

/* Parses buf[0..len) as one JSON object with nothing after it, at most
 * JSON_MAX_MEMBERS members, no repeated member name (RFC 7515 5.2: cJSON
 * would return the first of two, a signer may have meant the last) and no
 * \u0000 (it would silently cut a C string short). */
static int
json_object_strict(const char *buf, size_t len, cJSON **out)
{
	const char *end = NULL;
	cJSON *root, *a, *b;
	size_t n = 0;

	for (size_t i = 0; i + 6 <= len; i++)
		if (buf[i] == '\\' && buf[i + 1] == 'u' && memcmp(buf + i + 2, "0000", 4) == 0)
			return FGW_ERR_INVALID;
	root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
	if (root == NULL)
		return FGW_ERR_INVALID;
	if (!cJSON_IsObject(root) || end != buf + len)
		goto bad;
	for (a = root->child; a != NULL; a = a->next) {
		if (a->string == NULL || ++n > JSON_MAX_MEMBERS)
			goto bad;
		for (b = a->next; b != NULL; b = b->next)
			if (b->string != NULL && strcmp(a->string, b->string) == 0)
				goto bad;
	}
	*out = root;
	return FGW_OK;
bad:
	cJSON_Delete(root);
	return FGW_ERR_INVALID;
}

/* Printable text without control characters, 1..cap-1 bytes. */
static int
text_ok(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	if (n == 0 || n >= cap)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

static int
pem_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1; /* encrypted keys are refused, never prompted for */
}

/* ---- RSA keys and the JWKS set -------------------------------------- */

struct jwk {
	char kid[JWT_CLAIM_MAX];
	EVP_PKEY *pkey;
};

struct jwks {
	atomic_size_t refs;
	size_t n;
	struct jwk keys[JWT_MAX_JWKS_KEYS];
};

static void
jwks_release(struct jwks *ks)
{
	if (ks == NULL || atomic_fetch_sub(&ks->refs, 1) != 1)
		return;
	for (size_t i = 0; i < ks->n; i++)
		EVP_PKEY_free(ks->keys[i].pkey);
	free(ks);
}

/* RSA public key from big-endian n and e, with the size policy. */
static int
rsa_from_ne(const unsigned char *n, size_t nlen, const unsigned char *e, size_t elen,
            EVP_PKEY **out, struct fgw_why *why)
{
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	int r = FGW_ERR_INVALID, bits;

	if (nlen > JWT_MAX_RSA_BITS / 8 + 1 || elen > 8) {
		fgw_why_set(why, NULL, 0, 0, "RSA n or e too long");
		goto out;
	}
	if ((bn_n = BN_bin2bn(n, (int)nlen, NULL)) == NULL ||
	    (bn_e = BN_bin2bn(e, (int)elen, NULL)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	bits = BN_num_bits(bn_n);
	if (bits < JWT_MIN_RSA_BITS || bits > JWT_MAX_RSA_BITS) {
		fgw_why_set(why, NULL, 0, 0, "RSA key is %d bits (allowed %d..%d)", bits,
		            JWT_MIN_RSA_BITS, JWT_MAX_RSA_BITS);
		goto out;
	}
	if (!BN_is_odd(bn_n) || !BN_is_odd(bn_e) || BN_num_bits(bn_e) < 2) {
		fgw_why_set(why, NULL, 0, 0, "RSA n or e is not a valid value");
		goto out;
	}
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
		fgw_why_set(why, NULL, 0, 0, "OpenSSL refused the RSA key");
		goto out;
	}
	*out = pkey;
	pkey = NULL;
	r = FGW_OK;
out:
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	ERR_clear_error();
	return r;
}

/* Adds one JWKS entry to ks, or skips it (not an RSA signing key). */
static int
jwks_add(struct jwks *ks, const cJSON *k, size_t idx, struct fgw_why *why)
{
	const cJSON *kty = cJSON_GetObjectItemCaseSensitive(k, "kty");
	const cJSON *use = cJSON_GetObjectItemCaseSensitive(k, "use");
	const cJSON *alg = cJSON_GetObjectItemCaseSensitive(k, "alg");
	const cJSON *kid = cJSON_GetObjectItemCaseSensitive(k, "kid");
	const cJSON *jn = cJSON_GetObjectItemCaseSensitive(k, "n");
	const cJSON *je = cJSON_GetObjectItemCaseSensitive(k, "e");
	unsigned char *n = NULL, *e = NULL;
	size_t nlen = 0, elen = 0;
	struct fgw_why kw = { 0 };
	int r;

	if (!cJSON_IsObject(k) || !cJSON_IsString(kty)) {
		fgw_why_set(why, NULL, 0, 0, "JWKS key %zu: not an object with kty", idx);
		return FGW_ERR_INVALID;
	}
	if (strcmp(kty->valuestring, "RSA") != 0 ||
	    (use != NULL && (!cJSON_IsString(use) || strcmp(use->valuestring, "sig") != 0)) ||
	    (alg != NULL && (!cJSON_IsString(alg) || strcmp(alg->valuestring, "RS256") != 0)))
		return FGW_OK; /* not ours to use: skipped */
	if (!cJSON_IsString(kid) || !text_ok(kid->valuestring, JWT_CLAIM_MAX)) {
		fgw_why_set(why, NULL, 0, 0, "JWKS key %zu: missing or bad kid", idx);
		return FGW_ERR_INVALID;
	}
	for (size_t i = 0; i < ks->n; i++) {
		if (strcmp(ks->keys[i].kid, kid->valuestring) == 0) {
			fgw_why_set(why, NULL, 0, 0, "JWKS key %zu: duplicate kid", idx);
			return FGW_ERR_INVALID;
		}
	}
	if (ks->n == JWT_MAX_JWKS_KEYS) {
		fgw_why_set(why, NULL, 0, 0, "JWKS holds more than %d keys", JWT_MAX_JWKS_KEYS);
		return FGW_ERR_INVALID;
	}
	if (!cJSON_IsString(jn) || !cJSON_IsString(je) ||
	    (r = b64url_decode(jn->valuestring, strlen(jn->valuestring), &n, &nlen)) !=
	        FGW_OK ||
	    (r = b64url_decode(je->valuestring, strlen(je->valuestring), &e, &elen)) !=
	        FGW_OK) {
		fgw_why_set(why, NULL, 0, 0,
		            "JWKS key %zu (kid %s): n/e missing or not "
		            "base64url",
		            idx, kid->valuestring);
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = rsa_from_ne(n, nlen, e, elen, &ks->keys[ks->n].pkey, &kw)) != FGW_OK) {
		fgw_why_set(why, NULL, 0, 0, "JWKS key %zu (kid %s): %s", idx, kid->valuestring,
		            kw.msg[0] ? kw.msg : fgw_strerror(r));
		goto out;
	}
	/* text_ok() bounded the kid, so this copy fits. */
	memcpy(ks->keys[ks->n].kid, kid->valuestring, strlen(kid->valuestring) + 1);
	ks->n++;
	r = FGW_OK;
out:
	free(n);
	free(e);
	return r;
}

static int
jwks_load(const char *path, struct jwks **out, struct fgw_why *why)
{
	char *text = NULL;
	size_t len = 0, idx = 0;
	cJSON *root = NULL;
	const cJSON *keys = NULL, *k;
	struct jwks *ks = NULL;
	int r;

	if ((r = fgw_read_file(path, JWT_MAX_JWKS_FILE, &text, &len)) != FGW_OK) {
		fgw_why_set(why, NULL, 0, 0, "JWKS %s: %s", path, fgw_strerror(r));
		goto out;
	}
	/* Whole file, NUL included, so trailing garbage is refused. */
	if (strlen(text) == len &&
	    (root = cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1)) != NULL)
		keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
	if (!cJSON_IsObject(root) || !cJSON_IsArray(keys)) {
		fgw_why_set(why, NULL, 0, 0, "JWKS %s: not a JSON object with a keys array",
		            path);
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((ks = calloc(1, sizeof(*ks))) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	atomic_init(&ks->refs, 1);
	cJSON_ArrayForEach(k, keys) {
		if ((r = jwks_add(ks, k, idx++, why)) != FGW_OK)
			goto out;
	}
	if (ks->n == 0) {
		fgw_why_set(why, NULL, 0, 0, "JWKS %s: no RSA signing key", path);
		r = FGW_ERR_INVALID;
		goto out;
	}
	*out = ks;
	ks = NULL;
	r = FGW_OK;
out:
	jwks_release(ks);
	cJSON_Delete(root);
	free(text);
	return r;
}

/* ---- the verifier ------------------------------------------------------ */

struct jwt_verifier {
	char *issuer;
	char *audience;
	char *token_use;          /* NULL: not checked */
	char *jwks_path;          /* NULL: RS256 refused */
	unsigned char *hs_secret; /* sodium_malloc'ed; NULL: HS256 refused */
	size_t hs_secret_len;
	int64_t leeway_s;
	pthread_mutex_t lock; /* guards keys (the pointer) */
	struct jwks *keys;
};

static struct jwks *
keys_acquire(struct jwt_verifier *v)
{
	struct jwks *ks;

	pthread_mutex_lock(&v->lock);
	if ((ks = v->keys) != NULL)
		atomic_fetch_add(&ks->refs, 1);
	pthread_mutex_unlock(&v->lock);
	return ks;
}

static int
dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL || s[0] == '\0')
		return FGW_OK;
	return (*out = strdup(s)) == NULL ? FGW_ERR_NOMEM : FGW_OK;
}

int
jwt_verifier_new(const struct jwt_config *cfg, struct jwt_verifier **out,
                 struct fgw_why *why)
{
	struct jwt_verifier *v = NULL;
	int r;

	fgw_why_set(why, NULL, 0, 0, "%s", "");
	if (cfg == NULL || out == NULL) {
		fgw_why_set(why, NULL, 0, 0, "no configuration");
		return FGW_ERR_INVALID;
	}
	if (sodium_init() < 0) {
		fgw_why_set(why, NULL, 0, 0, "libsodium failed to initialise");
		return FGW_ERR_INTERNAL;
	}
	if (cfg->issuer == NULL || !text_ok(cfg->issuer, JWT_CLAIM_MAX) ||
	    cfg->audience == NULL || !text_ok(cfg->audience, JWT_CLAIM_MAX)) {
		fgw_why_set(why, NULL, 0, 0, "issuer and audience are required");
		return FGW_ERR_INVALID;
	}
	if (cfg->token_use != NULL && cfg->token_use[0] != '\0' &&
	    !text_ok(cfg->token_use, JWT_TOKEN_USE_MAX)) {
		fgw_why_set(why, NULL, 0, 0, "token_use is too long");
		return FGW_ERR_INVALID;
	}
	if (cfg->leeway_s < 0 || cfg->leeway_s > JWT_MAX_LEEWAY_S) {
		fgw_why_set(why, NULL, 0, 0, "leeway must be 0..%d seconds", JWT_MAX_LEEWAY_S);
		return FGW_ERR_INVALID;
	}
	if (cfg->hs256_secret != NULL && cfg->hs256_secret_len < JWT_MIN_HS256_SECRET) {
		fgw_why_set(why, NULL, 0, 0, "HS256 secret must be at least %d bytes",
		            JWT_MIN_HS256_SECRET);
		return FGW_ERR_INVALID;
	}
	if (cfg->hs256_secret == NULL &&
	    (cfg->jwks_path == NULL || cfg->jwks_path[0] == '\0')) {
		fgw_why_set(why, NULL, 0, 0, "neither an HS256 secret nor a JWKS file");
		return FGW_ERR_INVALID;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return FGW_ERR_NOMEM;
	if (pthread_mutex_init(&v->lock, NULL) != 0) {
		free(v);
		return FGW_ERR_INTERNAL;
	}
	v->leeway_s = cfg->leeway_s;
	if ((r = dup_opt(cfg->issuer, &v->issuer)) != FGW_OK ||
	    (r = dup_opt(cfg->audience, &v->audience)) != FGW_OK ||
	    (r = dup_opt(cfg->token_use, &v->token_use)) != FGW_OK ||
	    (r = dup_opt(cfg->jwks_path, &v->jwks_path)) != FGW_OK)
		goto out;
	if (cfg->hs256_secret != NULL) {
		if ((v->hs_secret = sodium_malloc(cfg->hs256_secret_len)) == NULL) {
			r = FGW_ERR_NOMEM;
			goto out;
		}
		memcpy(v->hs_secret, cfg->hs256_secret, cfg->hs256_secret_len);
		v->hs_secret_len = cfg->hs256_secret_len;
		sodium_mprotect_readonly(v->hs_secret);
	}
	if (v->jwks_path != NULL && (r = jwks_load(v->jwks_path, &v->keys, why)) != FGW_OK)
		goto out;
	*out = v;
	v = NULL;
	r = FGW_OK;
out:
	jwt_verifier_free(v);
	return r;
}

void
jwt_verifier_free(struct jwt_verifier *v)
{
	if (v == NULL)
		return;
	if (v->hs_secret != NULL)
		sodium_free(v->hs_secret); /* wipes */
	jwks_release(v->keys);
	pthread_mutex_destroy(&v->lock);
	free(v->issuer);
	free(v->audience);
	free(v->token_use);
	free(v->jwks_path);
	free(v);
}

int
jwt_verifier_reload_jwks(struct jwt_verifier *v, struct fgw_why *why)
{
	struct jwks *fresh = NULL, *old;
	int r;

	fgw_why_set(why, NULL, 0, 0, "%s", "");
	if (v == NULL || v->jwks_path == NULL) {
		fgw_why_set(why, NULL, 0, 0, "no JWKS file configured");
		return FGW_ERR_STATE;
	}
	if ((r = jwks_load(v->jwks_path, &fresh, why)) != FGW_OK)
		return r; /* the old key set stays */
	pthread_mutex_lock(&v->lock);
	old = v->keys;
	v->keys = fresh;
	pthread_mutex_unlock(&v->lock);
	jwks_release(old); /* freed when the last verify using it ends */
	return FGW_OK;
}

size_t
jwt_verifier_key_count(struct jwt_verifier *v)
{
	struct jwks *ks;
	size_t n;

	if (v == NULL || (ks = keys_acquire(v)) == NULL)
		return 0;
	n = ks->n;
	jwks_release(ks);
	return n;
}

static int
verify_hs256(const struct jwt_verifier *v, const char *tbs, size_t tbslen,
             const unsigned char *sig, size_t siglen, const char **why)
{
	unsigned char mac[HS256_LEN];
	crypto_auth_hmacsha256_state st;
	int ok;

	if (v->hs_secret == NULL) {
		*why = "HS256 tokens are not accepted";
		return FGW_ERR_AUTH;
	}
	if (siglen != HS256_LEN) {
		*why = "bad signature";
		return FGW_ERR_AUTH;
	}
	crypto_auth_hmacsha256_init(&st, v->hs_secret, v->hs_secret_len);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)tbs, tbslen);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
	ok = sodium_memcmp(mac, sig, HS256_LEN) == 0;
	sodium_memzero(mac, sizeof(mac));
	if (!ok) {
		*why = "bad signature";
		return FGW_ERR_AUTH;
	}
	return FGW_OK;
}

static int
verify_rs256(struct jwt_verifier *v, const char *kid, const char *tbs, size_t tbslen,
             const unsigned char *sig, size_t siglen, const char **why)
{
	struct jwks *ks = NULL;
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	int r;

	if ((ks = keys_acquire(v)) == NULL) {
		*why = "RS256 tokens are not accepted";
		r = FGW_ERR_AUTH;
		goto out;
	}
	if (kid == NULL) {
		*why = "RS256 token without kid";
		r = FGW_ERR_AUTH;
		goto out;
	}
	for (size_t i = 0; i < ks->n && pkey == NULL; i++)
		if (strcmp(ks->keys[i].kid, kid) == 0)
			pkey = ks->keys[i].pkey;
	if (pkey == NULL) {
		*why = "unknown kid";
		r = FGW_ERR_AUTH;
		goto out;
	}
	if (siglen != (size_t)EVP_PKEY_get_size(pkey)) {
		*why = "bad signature";
		r = FGW_ERR_AUTH;
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0) {
		*why = "signature check unavailable";
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if (EVP_DigestVerify(md, sig, siglen, (const unsigned char *)tbs, tbslen) != 1) {
		*why = "bad signature";
		r = FGW_ERR_AUTH;
		goto out;
	}
	r = FGW_OK;
out:
	EVP_MD_CTX_free(md);
	jwks_release(ks);
	ERR_clear_error();
	return r;
}

/* Optional (or required) string claim into dst[cap]; "" when absent. */
static int
claim_str(const cJSON *obj, const char *name, char *dst, size_t cap, int required,
          const char **why, const char *bad)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

	dst[0] = '\0';
	if (it == NULL && !required)
		return FGW_OK;
	if (!cJSON_IsString(it) || !text_ok(it->valuestring, cap)) {
		*why = bad;
		return FGW_ERR_INVALID;
	}
	memcpy(dst, it->valuestring, strlen(it->valuestring) + 1);
	return FGW_OK;
}

/* NumericDate claim; *present says whether it was there. */
static int
claim_time(const cJSON *obj, const char *name, int64_t *out, int *present)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

	*out = 0;
	*present = it != NULL;
	if (it == NULL)
		return FGW_OK;
	if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < 0 ||
	    it->valuedouble > NUMERIC_DATE_MAX)
		return FGW_ERR_INVALID;
	*out = (int64_t)floor(it->valuedouble);
	return FGW_OK;
}

/* 1 when the configured audience is in aud (string or array of strings),
 * 0 when not, -1 when aud is ill-typed. */
static int
aud_matches(const cJSON *aud, const char *want)
{
	const cJSON *it;
	int n = 0, hit = 0;

	if (cJSON_IsString(aud))
		return strcmp(aud->valuestring, want) == 0;
	if (!cJSON_IsArray(aud))
		return -1;
	cJSON_ArrayForEach(it, aud) {
		if (!cJSON_IsString(it) || ++n > AUD_MAX_ENTRIES)
			return -1;
		if (strcmp(it->valuestring, want) == 0)
			hit = 1;
	}
	return hit;
}

static int
check_claims(const struct jwt_verifier *v, const cJSON *p, int64_t now_s,
             struct jwt_claims *c, const char **why)
{
	const cJSON *aud = cJSON_GetObjectItemCaseSensitive(p, "aud");
	int r, has_exp, has_nbf, has_iat, am = 0;

	if ((r = claim_str(p, "sub", c->sub, sizeof(c->sub), 1, why, "missing or bad sub")) !=
	        FGW_OK ||
	    (r = claim_str(p, "iss", c->iss, sizeof(c->iss), 1, why, "missing or bad iss")) !=
	        FGW_OK ||
	    (r = claim_str(p, "client_id", c->client_id, sizeof(c->client_id), 0, why,
	                   "bad client_id")) != FGW_OK ||
	    (r = claim_str(p, "token_use", c->token_use, sizeof(c->token_use), 0, why,
	                   "bad token_use")) != FGW_OK ||
	    (r = claim_str(p, "scope", c->scope, sizeof(c->scope), 0, why, "bad scope")) !=
	        FGW_OK)
		return r;
	if (claim_time(p, "exp", &c->exp, &has_exp) != FGW_OK || !has_exp) {
		*why = "missing or bad exp";
		return FGW_ERR_INVALID;
	}
	if (claim_time(p, "nbf", &c->nbf, &has_nbf) != FGW_OK ||
	    claim_time(p, "iat", &c->iat, &has_iat) != FGW_OK) {
		*why = "bad nbf or iat";
		return FGW_ERR_INVALID;
	}
	if (aud != NULL && (am = aud_matches(aud, v->audience)) < 0) {
		*why = "bad aud";
		return FGW_ERR_INVALID;
	}

	if (strcmp(c->iss, v->issuer) != 0) {
		*why = "wrong issuer";
		return FGW_ERR_AUTH;
	}
	if (am != 1 && strcmp(c->client_id, v->audience) != 0) {
		*why = "wrong audience";
		return FGW_ERR_AUTH;
	}
	/* The issuer promised the audience; a client_id naming someone else
	 * is a claim it did not make about us, and the token is refused
	 * rather than acting in that client's scope. */
	if (c->client_id[0] != '\0' && strcmp(c->client_id, v->audience) != 0) {
		*why = "client_id contradicts the audience";
		return FGW_ERR_AUTH;
	}
	if (v->token_use != NULL && strcmp(c->token_use, v->token_use) != 0) {
		*why = "wrong token_use";
		return FGW_ERR_AUTH;
	}

	if (now_s >= c->exp + v->leeway_s) {
		*why = "token expired";
		return FGW_ERR_TIMEOUT;
	}
	if (has_nbf && now_s < c->nbf - v->leeway_s) {
		*why = "token not yet valid";
		return FGW_ERR_TIMEOUT;
	}
	if (has_iat && c->iat > now_s + v->leeway_s) {
		*why = "token issued in the future";
		return FGW_ERR_TIMEOUT;
	}
	return FGW_OK;
}

/* Checks the JOSE header; sets *is_rs and copies kid (may be ""). */
static int
check_header(const cJSON *h, int *is_rs, char kid[JWT_CLAIM_MAX], const char **why)
{
	const cJSON *alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
	const cJSON *typ = cJSON_GetObjectItemCaseSensitive(h, "typ");
	const cJSON *jkid = cJSON_GetObjectItemCaseSensitive(h, "kid");

	if (!cJSON_IsString(alg)) {
		*why = "missing alg";
		return FGW_ERR_INVALID;
	}
	if (strcasecmp(alg->valuestring, "none") == 0) {
		*why = "alg none refused";
		return FGW_ERR_AUTH;
	}
	if (strcmp(alg->valuestring, "RS256") == 0)
		*is_rs = 1;
	else if (strcmp(alg->valuestring, "HS256") == 0)
		*is_rs = 0;
	else {
		*why = "unsupported alg";
		return FGW_ERR_AUTH;
	}
	if (cJSON_GetObjectItemCaseSensitive(h, "crit") != NULL) {
		*why = "crit header not supported";
		return FGW_ERR_AUTH;
	}
	if (typ != NULL && (!cJSON_IsString(typ) ||
	                    (strcasecmp(typ->valuestring, "JWT") != 0 &&
	                     strcasecmp(typ->valuestring, "at+jwt") != 0 &&
	                     strcasecmp(typ->valuestring, "application/at+jwt") != 0))) {
		*why = "unexpected typ";
		return FGW_ERR_INVALID;
	}
	kid[0] = '\0';
	if (jkid != NULL) {
		if (!cJSON_IsString(jkid) || !text_ok(jkid->valuestring, JWT_CLAIM_MAX)) {
			*why = "bad kid";
			return FGW_ERR_INVALID;
		}
		memcpy(kid, jkid->valuestring, strlen(jkid->valuestring) + 1);
	}
	return FGW_OK;
}

static int
b64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

int
jwt_verify(struct jwt_verifier *v, const char *token, size_t len, int64_t now_s,
           struct jwt_claims *out, const char **reason)
{
	const char *why = NULL;
	size_t dot[2] = { 0, 0 }, ndots = 0, hlen, plen, slen;
	unsigned char *hraw = NULL, *praw = NULL, *sig = NULL;
	size_t hraw_len = 0, praw_len = 0, siglen = 0;
	cJSON *hdr = NULL, *pay = NULL;
	struct jwt_claims c;
	int r, is_rs = 0;

	memset(&c, 0, sizeof(c));
	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (v == NULL || out == NULL || (token == NULL && len > 0) || now_s < 0 ||
	    now_s > INT64_MAX / 2) {
		why = "bad arguments to jwt_verify";
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if (len == 0) {
		why = "empty token";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if (len > JWT_MAX_TOKEN_LEN) {
		why = "token too long";
		r = FGW_ERR_INVALID;
		goto out;
	}
	for (size_t i = 0; i < len; i++) {
		if (token[i] == '.') {
			if (ndots == 2) {
				why = "token has too many parts";
				r = FGW_ERR_INVALID;
				goto out;
			}
			dot[ndots++] = i;
		} else if (!b64url_char(token[i])) {
			why = "token has characters outside base64url";
			r = FGW_ERR_INVALID;
			goto out;
		}
	}
	if (ndots != 2) {
		why = "token is not header.payload.signature";
		r = FGW_ERR_INVALID;
		goto out;
	}
	hlen = dot[0];
	plen = dot[1] - dot[0] - 1;
	slen = len - dot[1] - 1;
	if (hlen == 0 || plen == 0 || slen == 0) {
		why = "token has an empty part";
		r = FGW_ERR_INVALID;
		goto out;
	}

	if ((r = b64url_decode(token, hlen, &hraw, &hraw_len)) != FGW_OK ||
	    (r = json_object_strict((const char *)hraw, hraw_len, &hdr)) != FGW_OK) {
		why = "malformed header";
		goto out;
	}
	if ((r = check_header(hdr, &is_rs, c.kid, &why)) != FGW_OK)
		goto out;
	if ((r = b64url_decode(token + dot[1] + 1, slen, &sig, &siglen)) != FGW_OK) {
		why = "malformed signature";
		goto out;
	}
	/* The key material is chosen by alg, and each alg has its own. */
	r = is_rs ? verify_rs256(v, c.kid[0] ? c.kid : NULL, token, dot[1], sig, siglen, &why)
	          : verify_hs256(v, token, dot[1], sig, siglen, &why);
	if (r != FGW_OK)
		goto out;

	if ((r = b64url_decode(token + dot[0] + 1, plen, &praw, &praw_len)) != FGW_OK ||
	    (r = json_object_strict((const char *)praw, praw_len, &pay)) != FGW_OK) {
		why = "malformed payload";
		goto out;
	}
	memcpy(c.alg, is_rs ? "RS256" : "HS256", 6);
	if ((r = check_claims(v, pay, now_s, &c, &why)) != FGW_OK)
		goto out;
	*out = c;
	why = NULL;
	r = FGW_OK;
out:
	if (r == FGW_ERR_NOMEM)
		why = "out of memory";
	cJSON_Delete(hdr);
	cJSON_Delete(pay);
	free(hraw);
	free(praw);
	free(sig);
	if (reason != NULL)
		*reason = why;
	return r;
}

/* ---- minting and JWKS export (tests, flairctl) ------------------------ */

/* header "." payload, both base64url, from JOSE header JSON and claims. */
static int
signing_input(const char *alg, const char *kid, const char *claims_json, char **out)
{
	cJSON *hdr = NULL, *claims = NULL;
	char *htext = NULL, *h64 = NULL, *p64 = NULL, *s = NULL;
	size_t n;
	int r;

	if (claims_json == NULL || (kid != NULL && !text_ok(kid, JWT_CLAIM_MAX)) ||
	    json_object_strict(claims_json, strlen(claims_json), &claims) != FGW_OK) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((hdr = cJSON_CreateObject()) == NULL ||
	    cJSON_AddStringToObject(hdr, "alg", alg) == NULL ||
	    cJSON_AddStringToObject(hdr, "typ", "JWT") == NULL ||
	    (kid != NULL && cJSON_AddStringToObject(hdr, "kid", kid) == NULL) ||
	    (htext = cJSON_PrintUnformatted(hdr)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if ((r = b64url_encode(htext, strlen(htext), &h64)) != FGW_OK ||
	    (r = b64url_encode(claims_json, strlen(claims_json), &p64)) != FGW_OK)
		goto out;
	n = strlen(h64) + 1 + strlen(p64) + 1;
	if ((s = malloc(n)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (snprintf(s, n, "%s.%s", h64, p64) != (int)n - 1) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	*out = s;
	s = NULL;
	r = FGW_OK;
out:
	free(s);
	free(p64);
	free(h64);
	cJSON_free(htext);
	cJSON_Delete(hdr);
	cJSON_Delete(claims);
	return r;
}

/* input "." base64url(sig) into malloc'ed *out. */
static int
append_sig(const char *input, const unsigned char *sig, size_t siglen, char **out)
{
	char *s64 = NULL, *s = NULL;
	size_t n;
	int r;

	if ((r = b64url_encode(sig, siglen, &s64)) != FGW_OK)
		return r;
	n = strlen(input) + 1 + strlen(s64) + 1;
	if ((s = malloc(n)) == NULL) {
		free(s64);
		return FGW_ERR_NOMEM;
	}
	if (snprintf(s, n, "%s.%s", input, s64) != (int)n - 1) {
		free(s64);
		free(s);
		return FGW_ERR_INTERNAL;
	}
	free(s64);
	*out = s;
	return FGW_OK;
}

int
jwt_sign_hs256(const unsigned char *secret, size_t secret_len, const char *claims_json,
               const char *kid, char **out)
{
	unsigned char mac[HS256_LEN];
	crypto_auth_hmacsha256_state st;
	char *input = NULL;
	int r;

	if (secret == NULL || secret_len < JWT_MIN_HS256_SECRET || out == NULL)
		return FGW_ERR_INVALID;
	if ((r = signing_input("HS256", kid, claims_json, &input)) != FGW_OK)
		return r;
	crypto_auth_hmacsha256_init(&st, secret, secret_len);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)input, strlen(input));
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof(st));
	r = append_sig(input, mac, sizeof(mac), out);
	sodium_memzero(mac, sizeof(mac));
	free(input);
	return r;
}

/* Loads an RSA key (public or private) from a PEM file and checks its
 * size. want_private: only a private key will do. */
static int
load_rsa_pem(const char *path, int want_private, EVP_PKEY **out)
{
	char *text = NULL;
	size_t len = 0;
	BIO *bio = NULL;
	EVP_PKEY *pkey = NULL;
	int r, bits;

	if (path == NULL)
		return FGW_ERR_INVALID;
	if ((r = fgw_read_file(path, PEM_MAX_FILE, &text, &len)) != FGW_OK)
		return r;
	if (len > INT32_MAX || (bio = BIO_new_mem_buf(text, (int)len)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (!want_private)
		pkey = PEM_read_bio_PUBKEY(bio, NULL, pem_no_passphrase, NULL);
	if (pkey == NULL) {
		if (BIO_reset(bio) != 1) {
			r = FGW_ERR_INTERNAL;
			goto out;
		}
		pkey = PEM_read_bio_PrivateKey(bio, NULL, pem_no_passphrase, NULL);
	}
	if (pkey == NULL || !EVP_PKEY_is_a(pkey, "RSA")) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	bits = EVP_PKEY_get_bits(pkey);
	if (bits < JWT_MIN_RSA_BITS || bits > JWT_MAX_RSA_BITS) {
		r = FGW_ERR_INVALID;
		goto out;
	}
	*out = pkey;
	pkey = NULL;
	r = FGW_OK;
out:
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	fgw_freezero(text, len);
	ERR_clear_error();
	return r;
}

int
jwt_sign_rs256(const char *pem_private_key_path, const char *kid, const char *claims_json,
               char **out)
{
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *sig = NULL;
	size_t siglen = 0;
	char *input = NULL;
	int r;

	if (kid == NULL || out == NULL)
		return FGW_ERR_INVALID;
	if ((r = signing_input("RS256", kid, claims_json, &input)) != FGW_OK ||
	    (r = load_rsa_pem(pem_private_key_path, 1, &pkey)) != FGW_OK)
		goto out;
	if ((md = EVP_MD_CTX_new()) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0 ||
	    EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, strlen(input)) !=
	        1) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	if ((sig = malloc(siglen)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) !=
	    1) {
		r = FGW_ERR_CRYPTO;
		goto out;
	}
	r = append_sig(input, sig, siglen, out);
out:
	free(sig);
	free(input);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return r;
}

/* base64url of a BIGNUM's big-endian bytes. */
static int
bn_b64url(const EVP_PKEY *pkey, const char *param, char **out)
{
	BIGNUM *bn = NULL;
	unsigned char *buf = NULL;
	int n, r;

	if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
		return FGW_ERR_INVALID;
	n = BN_num_bytes(bn);
	if ((buf = malloc(n > 0 ? (size_t)n : 1)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	if (BN_bn2bin(bn, buf) != n) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	r = b64url_encode(buf, (size_t)n, out);
out:
	free(buf);
	BN_free(bn);
	return r;
}

int
jwt_jwks_from_pem(const char *pem_path, const char *kid, char **json_out)
{
	EVP_PKEY *pkey = NULL;
	char *n64 = NULL, *e64 = NULL, *text = NULL;
	cJSON *root = NULL, *keys, *k;
	int r;

	if (kid == NULL || !text_ok(kid, JWT_CLAIM_MAX) || json_out == NULL)
		return FGW_ERR_INVALID;
	if ((r = load_rsa_pem(pem_path, 0, &pkey)) != FGW_OK ||
	    (r = bn_b64url(pkey, OSSL_PKEY_PARAM_RSA_N, &n64)) != FGW_OK ||
	    (r = bn_b64url(pkey, OSSL_PKEY_PARAM_RSA_E, &e64)) != FGW_OK)
		goto out;
	r = FGW_ERR_NOMEM;
	if ((root = cJSON_CreateObject()) == NULL ||
	    (keys = cJSON_AddArrayToObject(root, "keys")) == NULL ||
	    (k = cJSON_CreateObject()) == NULL)
		goto out;
	if (!cJSON_AddItemToArray(keys, k)) {
		cJSON_Delete(k);
		goto out;
	}
	if (cJSON_AddStringToObject(k, "kty", "RSA") == NULL ||
	    cJSON_AddStringToObject(k, "use", "sig") == NULL ||
	    cJSON_AddStringToObject(k, "alg", "RS256") == NULL ||
	    cJSON_AddStringToObject(k, "kid", kid) == NULL ||
	    cJSON_AddStringToObject(k, "n", n64) == NULL ||
	    cJSON_AddStringToObject(k, "e", e64) == NULL ||
	    (text = cJSON_Print(root)) == NULL)
		goto out;
	/* cJSON_Print's buffer must go back through cJSON_free; hand the
	 * caller plain malloc memory. */
	if ((*json_out = strdup(text)) == NULL)
		goto out;
	r = FGW_OK;
out:
	cJSON_free(text);
	cJSON_Delete(root);
	free(n64);
	free(e64);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return r;
}
