/*
 * tests/fuzz/fuzz_jwt.c — libFuzzer target for JWT verification
 * (crypto/jwt.c) with a fixed HS256 secret and a fixed RS256 JWKS key.
 *
 * The first input byte picks the mode, the rest is its input:
 *   0  the bytes are a token: verified as they are.
 *   1  the bytes are a claims document: signed with the HS256 secret (when
 *      jwt_sign_hs256 takes it), then verified.
 *   2  the bytes are edits (offset, byte) applied to a genuine HS256 or
 *      RS256 token (next byte picks which): a token that differs from the
 *      genuine one anywhere must not verify.
 *
 * Oracle: no crash, leak or UB; results are from the documented set; a
 * token that verifies satisfies every claim rule jwt.h states, and a
 * signed claims document that verifies gives back the claims it holds.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include "core/err.h"
#include "crypto/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)           \
	do {                      \
		if (!(cond))          \
			__builtin_trap(); \
	} while (0)

#define ISSUER "https://issuer.example"
#define AUDIENCE "client-abc"
#define LEEWAY 30
#define NOW 1704111300LL

static const unsigned char secret[] = "fuzz-hs256-secret-of-at-least-32-bytes!";
static struct jwt_verifier *ver;
static char *good_hs, *good_rs;

/* Writes a fresh RSA key and its one-key JWKS into dir; returns 0 and the
 * paths, or -1. */
static int
make_rsa(const char *dir, char *pem, size_t pemcap, char *jwks, size_t jwkscap)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	FILE *f;
	char *doc = NULL;
	int ok = -1;

	snprintf(pem, pemcap, "%s/key.pem", dir);
	snprintf(jwks, jwkscap, "%s/jwks.json", dir);
	if (k == NULL || (f = fopen(pem, "w")) == NULL)
		goto out;
	if (PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) != 1) {
		fclose(f);
		goto out;
	}
	fclose(f);
	if (jwt_jwks_from_pem(pem, "k1", &doc) != 0 || (f = fopen(jwks, "w")) == NULL)
		goto out;
	fputs(doc, f);
	fclose(f);
	ok = 0;
out:
	free(doc);
	EVP_PKEY_free(k);
	return ok;
}

static void
setup(void)
{
	static const char claims[] = "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\","
	                             "\"sub\":\"cust_1\",\"token_use\":\"access\","
	                             "\"scope\":\"payments\",\"exp\":1704114900,"
	                             "\"iat\":1704111000}";
	char dir[] = "/tmp/fuzz_jwt.XXXXXX", pem[128], jwks[128];
	struct fgw_why why = { 0 };
	const char *err = why.msg;
	struct jwt_config cfg;
	struct jwt_claims c;

	if (sodium_init() < 0 || mkdtemp(dir) == NULL ||
	    make_rsa(dir, pem, sizeof(pem), jwks, sizeof(jwks)) != 0)
		abort();
	memset(&cfg, 0, sizeof(cfg));
	cfg.issuer = ISSUER;
	cfg.audience = AUDIENCE;
	cfg.token_use = "access";
	cfg.hs256_secret = secret;
	cfg.hs256_secret_len = sizeof(secret) - 1;
	cfg.jwks_path = jwks;
	cfg.leeway_s = LEEWAY;
	if (jwt_verifier_new(&cfg, &ver, &why) != 0 ||
	    jwt_sign_hs256(secret, sizeof(secret) - 1, claims, NULL, &good_hs) != 0 ||
	    jwt_sign_rs256(pem, "k1", claims, &good_rs) != 0) {
		fprintf(stderr, "fuzz_jwt: setup failed: %s\n", err);
		abort();
	}
	/* The genuine tokens verify: mode 2 would prove nothing otherwise. */
	if (jwt_verify(ver, good_hs, strlen(good_hs), NOW, &c, NULL) != 0 ||
	    jwt_verify(ver, good_rs, strlen(good_rs), NOW, &c, NULL) != 0)
		abort();
	unlink(pem);
	unlink(jwks);
	rmdir(dir);
}

/* Every rule jwt.h states for a verified token. */
static void
check_claims(const struct jwt_claims *c)
{
	check(strcmp(c->alg, "HS256") == 0 || strcmp(c->alg, "RS256") == 0);
	check(strcmp(c->alg, "RS256") != 0 || strcmp(c->kid, "k1") == 0);
	check(strcmp(c->iss, ISSUER) == 0);
	check(c->sub[0] != '\0' && memchr(c->sub, '\0', sizeof(c->sub)) != NULL);
	check(strcmp(c->token_use, "access") == 0);
	check(NOW < c->exp + LEEWAY);
	check(c->nbf == 0 || NOW >= c->nbf - LEEWAY);
	check(c->iat <= NOW + LEEWAY);
	check(memchr(c->client_id, '\0', sizeof(c->client_id)) != NULL);
	check(memchr(c->scope, '\0', sizeof(c->scope)) != NULL);
}

static int
verify(const char *tok, size_t len, struct jwt_claims *c)
{
	const char *why = (const char *)1;
	int r = jwt_verify(ver, tok, len, NOW, c, &why);

	check(r == 0 || r == FGW_ERR_INVALID || r == FGW_ERR_AUTH || r == FGW_ERR_TIMEOUT ||
	      r == FGW_ERR_NOMEM);
	if (r == 0) {
		check(why == NULL);
		check_claims(c);
	} else {
		check(why != NULL && why != (const char *)1);
	}
	return r;
}

/* A string claim of the document as the verifier must report it. */
static void
same_str(const cJSON *doc, const char *name, const char *got)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(doc, name);
	if (cJSON_IsString(it))
		check(strcmp(it->valuestring, got) == 0);
	else
		check(got[0] == '\0');
}

/* 1 when aud (a string or an array of strings) names AUDIENCE. */
static int
has_audience(const cJSON *aud)
{
	const cJSON *it;

	if (cJSON_IsString(aud))
		return strcmp(aud->valuestring, AUDIENCE) == 0;
	cJSON_ArrayForEach(it, aud)
		if (cJSON_IsString(it) && strcmp(it->valuestring, AUDIENCE) == 0)
			return 1;
	return 0;
}

static void
mode_claims(const char *text)
{
	struct jwt_claims c;
	char *tok = NULL;
	cJSON *doc;
	const cJSON *exp;

	if (jwt_sign_hs256(secret, sizeof(secret) - 1, text, NULL, &tok) != 0)
		return;
	if (verify(tok, strlen(tok), &c) == 0) {
		/* Verified: the claims are those of the signed document. */
		doc = cJSON_Parse(text);
		check(doc != NULL);
		same_str(doc, "sub", c.sub);
		same_str(doc, "iss", c.iss);
		same_str(doc, "client_id", c.client_id);
		same_str(doc, "token_use", c.token_use);
		exp = cJSON_GetObjectItemCaseSensitive(doc, "exp");
		check(cJSON_IsNumber(exp) && c.exp == (int64_t)floor(exp->valuedouble));
		check(strcmp(c.client_id, AUDIENCE) == 0 ||
		      has_audience(cJSON_GetObjectItemCaseSensitive(doc, "aud")));
		cJSON_Delete(doc);
	}
	free(tok);
}

static void
mode_tamper(const uint8_t *d, size_t n)
{
	const char *good = (n > 0 && (d[0] & 1)) ? good_rs : good_hs;
	size_t glen = strlen(good), len = glen;
	struct jwt_claims c;
	char *tok;

	if (n > 0) {
		d++;
		n--;
	}
	/* Edits: 2 bytes offset (past the end appends), 1 byte value; an
	 * offset of 0xffff truncates to the following byte's value. */
	if ((tok = malloc(glen + n + 1)) == NULL)
		return;
	memcpy(tok, good, glen);
	for (size_t i = 0; i + 2 < n; i += 3) {
		size_t at = ((size_t)d[i] << 8) | d[i + 1];
		if (at == 0xffff) {
			if (d[i + 2] < len)
				len = d[i + 2];
		} else if (at < len) {
			tok[at] = (char)d[i + 2];
		} else {
			tok[len++] = (char)d[i + 2];
		}
	}
	if (verify(tok, len, &c) == 0)
		check(len == glen && memcmp(tok, good, glen) == 0);
	free(tok);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jwt_claims c;
	char *text;

	if (ver == NULL)
		setup();
	if (size < 1 || size > JWT_MAX_TOKEN_LEN + 16)
		return 0;
	switch (data[0] % 3) {
	case 0:
		/* exactly the token bytes, so ASan sees a read past them */
		if ((text = malloc(size - 1 ? size - 1 : 1)) == NULL)
			return 0;
		memcpy(text, data + 1, size - 1);
		verify(text, size - 1, &c);
		free(text);
		break;
	case 1:
		if ((text = malloc(size)) == NULL)
			return 0;
		memcpy(text, data + 1, size - 1);
		text[size - 1] = '\0';
		mode_claims(text);
		free(text);
		break;
	default:
		mode_tamper(data + 1, size - 1);
		break;
	}
	return 0;
}
