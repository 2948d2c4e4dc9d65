/*
 * tests/unit/test_mac.c — crypto/mac (webhook signatures) and crypto/jwt
 * (bearer tokens).
 *
 * Signature headers and tokens are built here independently of the code
 * under test (own base64url, HMAC through libsodium, RSA signing through
 * OpenSSL), so a bug shared by signer and verifier cannot hide. The JWT
 * cases share one fixture made on first use: a temporary directory with
 * two RSA-2048 keys (PEM) and a JWKS file, removed at exit.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include "core/err.h"
#include "core/util.h"
#include "crypto/jwt.h"
#include "crypto/mac.h"
#include "tt.h"

#define NOW 1700000000LL
#define TOL MAC_DEFAULT_TOLERANCE_S
#define ISS "https://issuer.flair.test/pool-1"
#define AUD "web-client"
#define LEEWAY 30

/* ---- webhook signatures ------------------------------------------------ */

static const char body1[] = "{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\"}";

/* "t=<ts>,v1=<hex of HMAC(secret, ts.body)>" built without mac_sign. */
static void
stripe_header(char *out, size_t cap, const char *secret, long long ts, const char *body,
              size_t len)
{
	char payload[512], hex[MAC_SHA256_HEX_LEN];
	int n = snprintf(payload, sizeof(payload), "%lld.", ts);
	unsigned char mac[32];

	memcpy(payload + n, body, len);
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)payload, (size_t)n + len);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
	snprintf(out, cap, "t=%lld,v1=%s", ts, hex);
}

static int
verify1(const char *hdr, const char *body, size_t len, const char *secret, int64_t now,
        int64_t *ts, const char **why)
{
	const char *secrets[1] = { secret };
	return mac_verify_stripe_signature(hdr, body, len, secrets, 1, now, TOL, ts, why);
}

static int
test_hmac_kat(void)
{
	/* RFC 4231 test case 2. */
	static const char want[] =
	    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
	char hex[MAC_SHA256_HEX_LEN];
	unsigned char raw[MAC_SHA256_LEN];
	TT_BEGIN;
	CHECK_EQ_INT(mac_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28, hex),
	             0);
	CHECK_STR(hex, want);
	CHECK_EQ_INT(mac_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, raw), 0);
	CHECK(raw[0] == 0x5b && raw[31] == 0x43);
	CHECK_EQ_INT(mac_hmac_sha256(NULL, 3, "x", 1, raw), FGW_ERR_INTERNAL);
end:
	TT_END;
}

static int
test_stripe_valid(void)
{
	char hdr[256], hdr2[400];
	int64_t ts = 0;
	const char *why = "unset";
	TT_BEGIN;
	stripe_header(hdr, sizeof(hdr), "whsec_test", NOW - 5, body1, strlen(body1));
	CHECK_EQ_INT(verify1(hdr, body1, strlen(body1), "whsec_test", NOW, &ts, &why), 0);
	CHECK_EQ_INT(ts, NOW - 5);
	CHECK(why == NULL);
	/* v0 and unknown keys are ignored; spaces around items allowed. */
	snprintf(hdr2, sizeof(hdr2), "%s, v0=%064d , scheme9=zz=top", hdr, 7);
	CHECK_EQ_INT(verify1(hdr2, body1, strlen(body1), "whsec_test", NOW, NULL, NULL), 0);
	/* Stripe's libraries compare the lower-case hex strings: the same
	 * bytes in upper case are not a signature. */
	for (char *p = strstr(hdr, "v1=") + 3; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	CHECK_EQ_INT(verify1(hdr, body1, strlen(body1), "whsec_test", NOW, NULL, NULL),
	             FGW_ERR_AUTH);
end:
	TT_END;
}

static int
test_stripe_wrong_secret(void)
{
	char hdr[256];
	int64_t ts = 0;
	const char *why = NULL;
	TT_BEGIN;
	stripe_header(hdr, sizeof(hdr), "whsec_other", NOW, body1, strlen(body1));
	CHECK_EQ_INT(verify1(hdr, body1, strlen(body1), "whsec_test", NOW, &ts, &why),
	             FGW_ERR_AUTH);
	CHECK_STR(why, "no signature matches");
	CHECK_EQ_INT(ts, NOW); /* parsed, so reported for the log */
end:
	TT_END;
}

static int
test_stripe_tampered_body(void)
{
	char hdr[256], body2[sizeof(body1)];
	TT_BEGIN;
	stripe_header(hdr, sizeof(hdr), "whsec_test", NOW, body1, strlen(body1));
	memcpy(body2, body1, sizeof(body1));
	body2[10] ^= 1;
	CHECK_EQ_INT(verify1(hdr, body2, strlen(body2), "whsec_test", NOW, NULL, NULL),
	             FGW_ERR_AUTH);
	/* Truncated and extended bodies. */
	CHECK_EQ_INT(verify1(hdr, body1, strlen(body1) - 1, "whsec_test", NOW, NULL, NULL),
	             FGW_ERR_AUTH);
	CHECK_EQ_INT(verify1(hdr, body1, sizeof(body1), "whsec_test", NOW, NULL, NULL),
	             FGW_ERR_AUTH);
	/* A body with a NUL inside is covered by its full length. */
	static const char bin[] = "ab\0cd";
	stripe_header(hdr, sizeof(hdr), "whsec_test", NOW, bin, 5);
	CHECK_EQ_INT(verify1(hdr, bin, 5, "whsec_test", NOW, NULL, NULL), 0);
	CHECK_EQ_INT(verify1(hdr, bin, 2, "whsec_test", NOW, NULL, NULL), FGW_ERR_AUTH);
end:
	TT_END;
}

static int
test_stripe_timestamps(void)
{
	char hdr[256];
	const char *why = NULL;
	int64_t ts = 0;
	size_t len = strlen(body1);
	TT_BEGIN;
	/* Exactly at the tolerance: accepted, both directions. */
	stripe_header(hdr, sizeof(hdr), "s", NOW - TOL, body1, len);
	CHECK_EQ_INT(verify1(hdr, body1, len, "s", NOW, NULL, NULL), 0);
	stripe_header(hdr, sizeof(hdr), "s", NOW + TOL, body1, len);
	CHECK_EQ_INT(verify1(hdr, body1, len, "s", NOW, NULL, NULL), 0);
	/* One second beyond: refused as a timeout, both directions. */
	stripe_header(hdr, sizeof(hdr), "s", NOW - TOL - 1, body1, len);
	CHECK_EQ_INT(verify1(hdr, body1, len, "s", NOW, &ts, &why), FGW_ERR_TIMEOUT);
	CHECK_STR(why, "signature timestamp too old");
	CHECK_EQ_INT(ts, NOW - TOL - 1);
	stripe_header(hdr, sizeof(hdr), "s", NOW + TOL + 1, body1, len);
	CHECK_EQ_INT(verify1(hdr, body1, len, "s", NOW, NULL, &why), FGW_ERR_TIMEOUT);
	CHECK_STR(why, "signature timestamp in the future");
	/* A forged stale header is a forgery first. */
	stripe_header(hdr, sizeof(hdr), "other", NOW - 10000, body1, len);
	CHECK_EQ_INT(verify1(hdr, body1, len, "s", NOW, NULL, NULL), FGW_ERR_AUTH);
	/* What is signed is the timestamp as a number, as Stripe's
	 * libraries check it: "t=0<NOW>" verifies with the MAC of
	 * "<NOW>.body", not with the MAC of "0<NOW>.body". */
	stripe_header(hdr, sizeof(hdr), "s", NOW, body1, len);
	{
		char alt[300], msg[600], hex[MAC_SHA256_HEX_LEN];
		snprintf(alt, sizeof(alt), "t=0%s", hdr + 2);
		CHECK_EQ_INT(verify1(alt, body1, len, "s", NOW, NULL, NULL), 0);
		snprintf(msg, sizeof(msg), "0%lld.%s", (long long)NOW, body1);
		CHECK_EQ_INT(mac_hmac_sha256_hex("s", 1, msg, strlen(msg), hex), 0);
		snprintf(alt, sizeof(alt), "t=0%lld,v1=%s", (long long)NOW, hex);
		CHECK_EQ_INT(verify1(alt, body1, len, "s", NOW, NULL, NULL), FGW_ERR_AUTH);
	}
	/* tolerance 0: only the exact second. */
	{
		const char *sec[1] = { "s" };
		CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, sec, 1, NOW, 0, NULL,
		                                         NULL),
		             0);
		CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, sec, 1, NOW + 1, 0,
		                                         NULL, NULL),
		             FGW_ERR_TIMEOUT);
		CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, sec, 1, NOW, -1, NULL,
		                                         NULL),
		             FGW_ERR_INTERNAL);
	}
end:
	TT_END;
}

static int
test_stripe_missing_header(void)
{
	const char *why = NULL;
	TT_BEGIN;
	CHECK_EQ_INT(verify1(NULL, body1, strlen(body1), "s", NOW, NULL, &why),
	             FGW_ERR_INVALID);
	CHECK_STR(why, "missing signature header");
	CHECK_EQ_INT(verify1("", body1, strlen(body1), "s", NOW, NULL, &why),
	             FGW_ERR_INVALID);
end:
	TT_END;
}

static int
test_stripe_malformed(void)
{
	char good[256], buf[6000];
	const char *v1;
	const char *why = NULL;
	size_t len = strlen(body1);
	static const char *bad[] = {
		"garbage",     "t",
		"=1700000000", "v1=",
		",",           "t=1700000000", /* no v1 */
		"t=abc,v1=00", "t=,v1=00",
		"t=-5,v1=00",  "t=+5,v1=00",
		"t=1 2,v1=00", "t=99999999999999999999,v1=00", /* overflows int64 */
		NULL,
	};
	TT_BEGIN;
	stripe_header(good, sizeof(good), "s", NOW, body1, len);
	v1 = strstr(good, "v1=");
	for (size_t i = 0; bad[i] != NULL; i++) {
		if (verify1(bad[i], body1, len, "s", NOW, NULL, NULL) != FGW_ERR_INVALID) {
			fprintf(stderr, "  accepted: %s\n", bad[i]);
			CHECK(0);
		}
	}
	/* No t, only the valid v1. */
	CHECK_EQ_INT(verify1(v1, body1, len, "s", NOW, NULL, &why), FGW_ERR_INVALID);
	CHECK_STR(why, "no t in signature header");
	/* Duplicate t, even with the same value. */
	snprintf(buf, sizeof(buf), "t=%lld,%s", NOW, good);
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, &why), FGW_ERR_INVALID);
	CHECK_STR(why, "duplicate t in signature header");
	/* Empty items and items without '=' are ignored, as Stripe's
	 * libraries ignore them. */
	snprintf(buf, sizeof(buf), "t=%lld,,%s", NOW, v1);
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, NULL), 0);
	snprintf(buf, sizeof(buf), ",%s,junk,", good);
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, NULL), 0);
	/* No trimming: " v1" is an unknown key, so no v1 at all. */
	snprintf(buf, sizeof(buf), "t=%lld, %s", NOW, v1);
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, &why), FGW_ERR_INVALID);
	CHECK_STR(why, "no v1 signature in header");
	/* A v1 of the wrong length, or not hex, is a candidate that does
	 * not match; beside the valid one it changes nothing. */
	snprintf(buf, sizeof(buf), "%s0", good);
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, NULL), FGW_ERR_AUTH);
	snprintf(buf, sizeof(buf), "%s", good);
	buf[strlen(buf) - 1] = 'g';
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, NULL), FGW_ERR_AUTH);
	snprintf(buf, sizeof(buf), "t=%lld,v1=zz,v1=abc,%s", NOW, v1);
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, NULL), 0);
	/* An empty v1 makes Stripe's Node library throw: refused. */
	snprintf(buf, sizeof(buf), "t=%lld,v1=,%s", NOW, v1);
	CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, &why), FGW_ERR_INVALID);
	CHECK_STR(why, "empty v1 signature");
	/* Huge: a valid header padded with ignored items past the bound. */
	{
		size_t n = (size_t)snprintf(buf, sizeof(buf), "%s", good);
		while (n + 6 < MAC_SIG_HEADER_MAX + 20) {
			memcpy(buf + n, ",x=yyy", 6);
			n += 6;
		}
		buf[n] = '\0';
		CHECK(n > MAC_SIG_HEADER_MAX);
		CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, &why), FGW_ERR_INVALID);
		CHECK_STR(why, "signature header too long");
		/* Under the bound the same padding is fine. */
		buf[MAC_SIG_HEADER_MAX - 10] = '\0';
		{
			char *last = strrchr(buf, ',');
			*last = '\0';
		}
		CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, NULL), 0);
	}
	/* Many v1 values: every one is a candidate (the header bound
	 * bounds the work). */
	{
		size_t n = (size_t)snprintf(buf, sizeof(buf), "t=%lld", NOW);
		for (int i = 0; i < 20; i++)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",v1=%064d", i);
		snprintf(buf + n, sizeof(buf) - n, ",%s", v1);
		CHECK_EQ_INT(verify1(buf, body1, len, "s", NOW, NULL, NULL), 0);
	}
end:
	TT_END;
}

static int
test_stripe_multi_v1(void)
{
	char a[256], b[256], hdr[600];
	size_t len = strlen(body1);
	TT_BEGIN;
	stripe_header(a, sizeof(a), "old_secret", NOW, body1, len);
	stripe_header(b, sizeof(b), "new_secret", NOW, body1, len);
	/* Only the second v1 matches the one configured secret. */
	snprintf(hdr, sizeof(hdr), "%s,%s", a, strstr(b, "v1="));
	CHECK_EQ_INT(verify1(hdr, body1, len, "new_secret", NOW, NULL, NULL), 0);
	CHECK_EQ_INT(verify1(hdr, body1, len, "old_secret", NOW, NULL, NULL), 0);
	CHECK_EQ_INT(verify1(hdr, body1, len, "third", NOW, NULL, NULL), FGW_ERR_AUTH);
end:
	TT_END;
}

static int
test_stripe_rotation(void)
{
	char hdr[256];
	size_t len = strlen(body1);
	const char *two[2] = { "whsec_old", "whsec_new" };
	const char *holes[4] = { NULL, "", "whsec_x", "whsec_new" };
	const char *none[2] = { NULL, "" };
	const char *why = NULL;
	TT_BEGIN;
	stripe_header(hdr, sizeof(hdr), "whsec_new", NOW, body1, len);
	CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, two, 2, NOW, TOL, NULL,
	                                         NULL),
	             0);
	CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, two, 1, NOW, TOL, NULL,
	                                         NULL),
	             FGW_ERR_AUTH);
	CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, holes, 4, NOW, TOL, NULL,
	                                         NULL),
	             0);
	CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, none, 2, NOW, TOL, NULL,
	                                         &why),
	             FGW_ERR_INTERNAL);
	CHECK_STR(why, "no webhook secret configured");
	CHECK_EQ_INT(mac_verify_stripe_signature(hdr, body1, len, NULL, 0, NOW, TOL, NULL,
	                                         NULL),
	             FGW_ERR_INTERNAL);
end:
	TT_END;
}

static int
test_sign_roundtrip(void)
{
	char out[MAC_SIGN_HEADER_LEN], want[256], small[20];
	int64_t ts = 0;
	size_t len = strlen(body1);
	TT_BEGIN;
	CHECK_EQ_INT(mac_sign_webhook("fgw_whsec_site", NOW, body1, len, out, sizeof(out)),
	             0);
	stripe_header(want, sizeof(want), "fgw_whsec_site", NOW, body1, len);
	CHECK_STR(out, want);
	CHECK_EQ_INT(verify1(out, body1, len, "fgw_whsec_site", NOW + 299, &ts, NULL), 0);
	CHECK_EQ_INT(ts, NOW);
	CHECK_EQ_INT(verify1(out, body1, len, "fgw_whsec_other", NOW, NULL, NULL),
	             FGW_ERR_AUTH);
	/* Longest timestamp still fits MAC_SIGN_HEADER_LEN and verifies. */
	CHECK_EQ_INT(mac_sign_webhook("k", INT64_MAX, "", 0, out, sizeof(out)), 0);
	CHECK_EQ_INT(verify1(out, "", 0, "k", INT64_MAX, NULL, NULL), 0);
	CHECK_EQ_INT(mac_sign_webhook("k", NOW, body1, len, small, sizeof(small)),
	             FGW_ERR_TOO_LARGE);
	CHECK_STR(small, "");
	CHECK_EQ_INT(mac_sign_webhook("", NOW, body1, len, out, sizeof(out)),
	             FGW_ERR_INTERNAL);
	CHECK_EQ_INT(mac_sign_webhook("k", -1, body1, len, out, sizeof(out)),
	             FGW_ERR_INTERNAL);
end:
	TT_END;
}

/* ---- JWT fixture and token builders ------------------------------------ */

static struct {
	int ready;
	char dir[64];
	char priv1[128], pub1[128], priv2[128], pub2[128];
	char jwks1[128]; /* {k1}, never changed */
	EVP_PKEY *k1, *k2;
	unsigned char hs[32];
} fx;

static void
fixture_cleanup(void)
{
	const char *files[] = { fx.priv1, fx.pub1, fx.priv2, fx.pub2, fx.jwks1 };
	if (!fx.ready)
		return;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	if (rmdir(fx.dir) != 0)
		fprintf(stderr, "rmdir %s: %s\n", fx.dir, strerror(errno));
	EVP_PKEY_free(fx.k1);
	EVP_PKEY_free(fx.k2);
	fx.ready = 0;
}

static int
write_text(const char *path, const char *text)
{
	return fgw_write_file_atomic(path, text, strlen(text), 0600);
}

static int
write_pem(const char *path, EVP_PKEY *k, int priv)
{
	FILE *f = fopen(path, "w");
	int ok;
	if (f == NULL)
		return -1;
	ok = priv ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)
	          : PEM_write_PUBKEY(f, k);
	return (fclose(f) == 0 && ok == 1) ? 0 : -1;
}

static void
fx_path(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", fx.dir, name);
}

static int
fixture(void)
{
	char *json = NULL;
	int r = -1;
	if (fx.ready)
		return 0;
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/fgw-test-mac-XXXXXX");
	if (mkdtemp(fx.dir) == NULL)
		return -1;
	fx.ready = 1;
	atexit(fixture_cleanup);
	fx_path(fx.priv1, sizeof(fx.priv1), "k1.pem");
	fx_path(fx.pub1, sizeof(fx.pub1), "k1.pub.pem");
	fx_path(fx.priv2, sizeof(fx.priv2), "k2.pem");
	fx_path(fx.pub2, sizeof(fx.pub2), "k2.pub.pem");
	fx_path(fx.jwks1, sizeof(fx.jwks1), "jwks1.json");
	if ((fx.k1 = EVP_RSA_gen(2048)) == NULL || (fx.k2 = EVP_RSA_gen(2048)) == NULL ||
	    write_pem(fx.priv1, fx.k1, 1) != 0 || write_pem(fx.pub1, fx.k1, 0) != 0 ||
	    write_pem(fx.priv2, fx.k2, 1) != 0 || write_pem(fx.pub2, fx.k2, 0) != 0)
		goto out;
	if (jwt_jwks_from_pem(fx.pub1, "k1", &json) != 0 || write_text(fx.jwks1, json) != 0)
		goto out;
	randombytes_buf(fx.hs, sizeof(fx.hs));
	r = 0;
out:
	free(json);
	return r;
}

static char *
b64u(const void *in, size_t len)
{
	size_t cap = sodium_base64_encoded_len(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *s = malloc(cap);
	if (s != NULL)
		sodium_bin2base64(s, cap, in, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return s;
}

/* b64u(hdr) "." b64u(pay); malloc'ed. */
static char *
tok_input(const char *hdr, const char *pay)
{
	char *h = b64u(hdr, strlen(hdr)), *p = b64u(pay, strlen(pay)), *s = NULL;
	size_t n;
	if (h != NULL && p != NULL && (s = malloc(n = strlen(h) + strlen(p) + 2)) != NULL)
		snprintf(s, n, "%s.%s", h, p);
	free(h);
	free(p);
	return s;
}

static char *
tok_join(char *input, const void *sig, size_t siglen)
{
	char *s64 = b64u(sig, siglen), *s = NULL;
	size_t n;
	if (input != NULL && s64 != NULL &&
	    (s = malloc(n = strlen(input) + strlen(s64) + 2)) != NULL)
		snprintf(s, n, "%s.%s", input, s64);
	free(s64);
	free(input);
	return s;
}

static char *
tok_hs(const char *hdr, const char *pay, const void *key, size_t keylen)
{
	char *input = tok_input(hdr, pay);
	unsigned char mac[32];
	if (input == NULL)
		return NULL;
	mac_hmac_sha256(key, keylen, input, strlen(input), mac);
	return tok_join(input, mac, sizeof(mac));
}

static char *
tok_rs(const char *hdr, const char *pay, EVP_PKEY *k)
{
	char *input = tok_input(hdr, pay), *tok = NULL;
	unsigned char sig[1024];
	size_t siglen = sizeof(sig);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (input != NULL && md != NULL &&
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
	    EVP_DigestSign(md, sig, &siglen, (unsigned char *)input, strlen(input)) == 1) {
		tok = tok_join(input, sig, siglen);
		input = NULL;
	}
	free(input);
	EVP_MD_CTX_free(md);
	return tok;
}

/* Standard claims with exp = now + exp_in. */
static void
claims(char *out, size_t cap, long long exp_in, const char *extra)
{
	snprintf(out, cap,
	         "{\"sub\":\"cust-42\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
	         "\",\"token_use\":\"access\",\"scope\":\"reservations/write\","
	         "\"iat\":%lld,\"exp\":%lld%s%s}",
	         NOW - 10, NOW + exp_in, extra ? "," : "", extra ? extra : "");
}

static int
verifier(struct jwt_verifier **v, int with_hs, const char *jwks)
{
	struct fgw_why why = { 0 };
	const char *err = why.msg;
	struct jwt_config cfg = {
		.issuer = ISS,
		.audience = AUD,
		.token_use = "access",
		.hs256_secret = with_hs ? fx.hs : NULL,
		.hs256_secret_len = with_hs ? sizeof(fx.hs) : 0,
		.jwks_path = jwks,
		.leeway_s = LEEWAY,
	};
	int r = jwt_verifier_new(&cfg, v, &why);
	if (r != 0)
		fprintf(stderr, "  jwt_verifier_new: %s\n", err);
	return r;
}

static int
vtok(struct jwt_verifier *v, const char *tok, const char **why)
{
	struct jwt_claims c;
	if (tok == NULL)
		return 999;
	return jwt_verify(v, tok, strlen(tok), NOW, &c, why);
}

#define RS_HDR "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}"
#define HS_HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ---- JWT cases ---------------------------------------------------------- */

static int
test_jwt_valid_rs256(void)
{
	struct jwt_verifier *v = NULL;
	struct jwt_claims c;
	char cl[512];
	char *tok = NULL, *tok2 = NULL, *tok3 = NULL, *tok4 = NULL;
	const char *why = "unset";
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	CHECK_EQ_INT(jwt_verifier_key_count(v), 1);
	claims(cl, sizeof(cl), 3600, NULL);
	CHECK_EQ_INT(jwt_sign_rs256(fx.priv1, "k1", cl, &tok), 0);
	CHECK_EQ_INT(jwt_verify(v, tok, strlen(tok), NOW, &c, &why), 0);
	CHECK(why == NULL);
	CHECK_STR(c.sub, "cust-42");
	CHECK_STR(c.iss, ISS);
	CHECK_STR(c.client_id, AUD);
	CHECK_STR(c.token_use, "access");
	CHECK_STR(c.scope, "reservations/write");
	CHECK_STR(c.alg, "RS256");
	CHECK_STR(c.kid, "k1");
	CHECK_EQ_INT(c.exp, NOW + 3600);
	CHECK_EQ_INT(c.iat, NOW - 10);
	CHECK_EQ_INT(c.nbf, 0);
	/* Built independently of jwt_sign_rs256. */
	CHECK((tok2 = tok_rs(RS_HDR, cl, fx.k1)) != NULL);
	CHECK_EQ_INT(vtok(v, tok2, NULL), 0);
	/* aud holds the audience but client_id names another client: the
	 * issuer did not promise that client, so the token is refused. */
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"aud\":[\"x\",\"" AUD "\"],"
	         "\"client_id\":\"nope\",\"token_use\":\"access\",\"exp\":%lld,"
	         "\"nbf\":%lld}",
	         NOW + 60, NOW - 60);
	CHECK((tok3 = tok_rs("{\"kid\":\"k1\",\"alg\":\"RS256\"}", cl, fx.k1)) != NULL);
	CHECK_EQ_INT(jwt_verify(v, tok3, strlen(tok3), NOW, &c, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "client_id contradicts the audience");
	/* ID-token shape: aud array holds the audience, no client_id. */
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"aud\":[\"x\",\"" AUD "\"],"
	         "\"token_use\":\"access\",\"exp\":%lld,"
	         "\"nbf\":%lld}",
	         NOW + 60, NOW - 60);
	CHECK((tok4 = tok_rs("{\"kid\":\"k1\",\"alg\":\"RS256\"}", cl, fx.k1)) != NULL);
	CHECK_EQ_INT(jwt_verify(v, tok4, strlen(tok4), NOW, &c, NULL), 0);
	CHECK_EQ_INT(c.nbf, NOW - 60);
	CHECK_STR(c.scope, "");
end:
	free(tok);
	free(tok2);
	free(tok3);
	free(tok4);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_valid_hs256(void)
{
	struct jwt_verifier *v = NULL;
	struct jwt_claims c;
	char cl[512];
	char *tok = NULL, *tok2 = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, NULL), 0);
	CHECK_EQ_INT(jwt_verifier_key_count(v), 0);
	claims(cl, sizeof(cl), 3600, "\"aud\":\"" AUD "\"");
	CHECK_EQ_INT(jwt_sign_hs256(fx.hs, sizeof(fx.hs), cl, "hs-1", &tok), 0);
	CHECK_EQ_INT(jwt_verify(v, tok, strlen(tok), NOW, &c, NULL), 0);
	CHECK_STR(c.alg, "HS256");
	CHECK_STR(c.kid, "hs-1");
	CHECK_STR(c.sub, "cust-42");
	CHECK((tok2 = tok_hs(HS_HDR, cl, fx.hs, sizeof(fx.hs))) != NULL);
	CHECK_EQ_INT(vtok(v, tok2, NULL), 0);
	/* Minting refuses short secrets and non-object claims. */
	free(tok);
	tok = NULL;
	CHECK_EQ_INT(jwt_sign_hs256(fx.hs, 16, cl, NULL, &tok), FGW_ERR_INVALID);
	CHECK_EQ_INT(jwt_sign_hs256(fx.hs, 32, "[1]", NULL, &tok), FGW_ERR_INVALID);
	CHECK_EQ_INT(jwt_sign_hs256(fx.hs, 32, "{\"a\":1", NULL, &tok), FGW_ERR_INVALID);
	CHECK(tok == NULL);
end:
	free(tok);
	free(tok2);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_expired(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512];
	char *t1 = NULL, *t2 = NULL, *t3 = NULL;
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	/* exp = now - leeway: just past the leeway. */
	claims(cl, sizeof(cl), -LEEWAY, NULL);
	t1 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t1, &why), FGW_ERR_TIMEOUT);
	CHECK_STR(why, "token expired");
	/* One second later it is still inside the leeway. */
	claims(cl, sizeof(cl), -LEEWAY + 1, NULL);
	t2 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t2, NULL), 0);
	/* No exp at all. */
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\",\"client_id\":"
	         "\"" AUD "\",\"token_use\":\"access\"}");
	t3 = tok_hs(HS_HDR, cl, fx.hs, sizeof(fx.hs));
	CHECK_EQ_INT(vtok(v, t3, &why), FGW_ERR_INVALID);
	CHECK_STR(why, "missing or bad exp");
end:
	free(t1);
	free(t2);
	free(t3);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_nbf_future(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512], extra[64];
	char *t1 = NULL, *t2 = NULL, *t3 = NULL;
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	snprintf(extra, sizeof(extra), "\"nbf\":%lld", NOW + LEEWAY + 1);
	claims(cl, sizeof(cl), 3600, extra);
	t1 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t1, &why), FGW_ERR_TIMEOUT);
	CHECK_STR(why, "token not yet valid");
	snprintf(extra, sizeof(extra), "\"nbf\":%lld", NOW + LEEWAY);
	claims(cl, sizeof(cl), 3600, extra);
	t2 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t2, NULL), 0);
	/* iat far in the future. */
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\",\"client_id\":"
	         "\"" AUD "\",\"token_use\":\"access\",\"iat\":%lld,\"exp\":%lld}",
	         NOW + 3600, NOW + 7200);
	t3 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t3, &why), FGW_ERR_TIMEOUT);
	CHECK_STR(why, "token issued in the future");
end:
	free(t1);
	free(t2);
	free(t3);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_wrong_audience(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512];
	char *t[4] = { NULL, NULL, NULL, NULL };
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\",\"client_id\":"
	         "\"other-client\",\"token_use\":\"access\",\"exp\":%lld}",
	         NOW + 60);
	t[0] = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t[0], &why), FGW_ERR_AUTH);
	CHECK_STR(why, "wrong audience");
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\",\"aud\":"
	         "[\"x\",\"y\"],\"token_use\":\"access\",\"exp\":%lld}",
	         NOW + 60);
	t[1] = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t[1], &why), FGW_ERR_AUTH);
	/* Neither aud nor client_id. */
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\","
	         "\"token_use\":\"access\",\"exp\":%lld}",
	         NOW + 60);
	t[2] = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t[2], &why), FGW_ERR_AUTH);
	/* aud of the wrong type is malformed. */
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\",\"aud\":[\"" AUD
	         "\",7],\"token_use\":\"access\",\"exp\":%lld}",
	         NOW + 60);
	t[3] = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t[3], &why), FGW_ERR_INVALID);
	CHECK_STR(why, "bad aud");
end:
	for (int i = 0; i < 4; i++)
		free(t[i]);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_wrong_issuer(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512];
	char *t1 = NULL, *t2 = NULL;
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "/evil\","
	         "\"client_id\":\"" AUD "\",\"token_use\":\"access\",\"exp\":%lld}",
	         NOW + 60);
	t1 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t1, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "wrong issuer");
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"client_id\":\"" AUD "\","
	         "\"token_use\":\"access\",\"exp\":%lld}",
	         NOW + 60);
	t2 = tok_hs(HS_HDR, cl, fx.hs, sizeof(fx.hs));
	CHECK_EQ_INT(vtok(v, t2, &why), FGW_ERR_INVALID);
	CHECK_STR(why, "missing or bad iss");
end:
	free(t1);
	free(t2);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_wrong_token_use(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512];
	char *t1 = NULL, *t2 = NULL;
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\",\"aud\":\"" AUD
	         "\",\"token_use\":\"id\",\"exp\":%lld}",
	         NOW + 60);
	t1 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t1, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "wrong token_use");
	snprintf(cl, sizeof(cl),
	         "{\"sub\":\"a\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld}",
	         NOW + 60);
	t2 = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t2, &why), FGW_ERR_AUTH);
end:
	free(t1);
	free(t2);
	jwt_verifier_free(v);
	TT_END;
}

/* Flips one character of the token at pos to another base64url char. */
static void
flip(char *tok, size_t pos)
{
	tok[pos] = tok[pos] == 'A' ? 'B' : 'A';
}

static int
test_jwt_tampered_signature(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512];
	char *t1 = NULL, *t2 = NULL, *t3 = NULL;
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	claims(cl, sizeof(cl), 600, NULL);
	t1 = tok_rs(RS_HDR, cl, fx.k1);
	t2 = tok_hs(HS_HDR, cl, fx.hs, sizeof(fx.hs));
	CHECK(t1 != NULL && t2 != NULL);
	flip(t1, strrchr(t1, '.') - t1 + 10);
	flip(t2, strrchr(t2, '.') - t2 + 10);
	CHECK_EQ_INT(vtok(v, t1, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "bad signature");
	CHECK_EQ_INT(vtok(v, t2, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "bad signature");
	/* Signature with three more (zero) bytes: valid base64url, wrong
	 * length. */
	free(t1);
	free(t2);
	t1 = tok_rs(RS_HDR, cl, fx.k1);
	t2 = tok_hs(HS_HDR, cl, fx.hs, sizeof(fx.hs));
	CHECK(t1 != NULL && t2 != NULL);
	CHECK((t3 = malloc(strlen(t1) + 5)) != NULL);
	snprintf(t3, strlen(t1) + 5, "%sAAAA", t1);
	CHECK_EQ_INT(vtok(v, t3, &why), FGW_ERR_AUTH);
	free(t3);
	CHECK((t3 = malloc(strlen(t2) + 5)) != NULL);
	snprintf(t3, strlen(t2) + 5, "%sAAAA", t2);
	CHECK_EQ_INT(vtok(v, t3, &why), FGW_ERR_AUTH);
end:
	free(t1);
	free(t2);
	free(t3);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_tampered_payload(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512], evil[512];
	char *t1 = NULL, *t2 = NULL, *forged = NULL;
	const char *why = NULL;
	size_t n;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	claims(cl, sizeof(cl), 600, NULL);
	snprintf(evil, sizeof(evil), "%s", cl);
	memcpy(strstr(evil, "cust-42"), "cust-43", 7);
	t1 = tok_rs(RS_HDR, cl, fx.k1);
	t2 = tok_rs(RS_HDR, evil, fx.k1);
	CHECK(t1 != NULL && t2 != NULL);
	/* t2's header and payload with t1's signature. */
	n = strlen(t1) + strlen(t2) + 2;
	forged = malloc(n);
	CHECK(forged != NULL);
	snprintf(forged, n, "%.*s%s", (int)(strrchr(t2, '.') - t2), t2, strrchr(t1, '.'));
	CHECK_EQ_INT(vtok(v, forged, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "bad signature");
	/* An unsigned payload is never parsed: garbage payload, bad signature
	 * is a signature failure, not a JSON one. */
	free(forged);
	n = strlen(t1) + 16;
	forged = malloc(n);
	CHECK(forged != NULL);
	snprintf(forged, n, "%.*s.bm90IGpzb24%s", (int)(strchr(t1, '.') - t1), t1,
	         strrchr(t1, '.'));
	CHECK_EQ_INT(vtok(v, forged, &why), FGW_ERR_AUTH);
end:
	free(t1);
	free(t2);
	free(forged);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_alg_none(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512];
	char *in = NULL, *tok = NULL;
	const char *why = NULL;
	static const char *nones[] = { "none", "None", "NONE", "nOnE" };
	static const char *others[] = { "HS512", "RS384", "ES256", "PS256",
		                            "rs256", "hs256", "" };
	char hdr[64];
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	claims(cl, sizeof(cl), 600, NULL);
	for (size_t i = 0; i < 4; i++) {
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", nones[i]);
		/* Without a signature part: "h.p." and "h.p". */
		CHECK((in = tok_input(hdr, cl)) != NULL);
		CHECK((tok = malloc(strlen(in) + 2)) != NULL);
		snprintf(tok, strlen(in) + 2, "%s.", in);
		CHECK_EQ_INT(vtok(v, tok, NULL), FGW_ERR_INVALID);
		CHECK_EQ_INT(vtok(v, in, NULL), FGW_ERR_INVALID);
		free(tok);
		free(in);
		in = NULL;
		/* With a signature part (an HMAC under the real secret). */
		tok = tok_hs(hdr, cl, fx.hs, sizeof(fx.hs));
		CHECK_EQ_INT(vtok(v, tok, &why), FGW_ERR_AUTH);
		CHECK_STR(why, "alg none refused");
		free(tok);
		tok = NULL;
	}
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"k1\"}", others[i]);
		tok = tok_hs(hdr, cl, fx.hs, sizeof(fx.hs));
		CHECK_EQ_INT(vtok(v, tok, &why), FGW_ERR_AUTH);
		CHECK_STR(why, "unsupported alg");
		free(tok);
		tok = NULL;
	}
	tok = tok_hs("{\"typ\":\"JWT\"}", cl, fx.hs, sizeof(fx.hs));
	CHECK_EQ_INT(vtok(v, tok, &why), FGW_ERR_INVALID);
	CHECK_STR(why, "missing alg");
end:
	free(in);
	free(tok);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_unknown_kid(void)
{
	struct jwt_verifier *v = NULL;
	char cl[512];
	char *t1 = NULL, *t2 = NULL, *t3 = NULL;
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	claims(cl, sizeof(cl), 600, NULL);
	t1 = tok_rs("{\"alg\":\"RS256\",\"kid\":\"k9\"}", cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t1, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "unknown kid");
	/* No kid at all, even though the JWKS holds exactly one key. */
	t2 = tok_rs("{\"alg\":\"RS256\"}", cl, fx.k1);
	CHECK_EQ_INT(vtok(v, t2, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "RS256 token without kid");
	/* The right kid on a token signed by a key outside the JWKS. */
	t3 = tok_rs(RS_HDR, cl, fx.k2);
	CHECK_EQ_INT(vtok(v, t3, &why), FGW_ERR_AUTH);
	CHECK_STR(why, "bad signature");
end:
	free(t1);
	free(t2);
	free(t3);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_alg_confusion(void)
{
	struct jwt_verifier *rs_only = NULL, *both = NULL, *hs_only = NULL;
	char cl[512];
	char *pem = NULL, *tok[4] = { NULL, NULL, NULL, NULL };
	unsigned char *der = NULL, nbuf[512];
	BIGNUM *n = NULL;
	size_t pemlen = 0;
	int derlen, nlen;
	const char *why = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&rs_only, 0, fx.jwks1), 0);
	CHECK_EQ_INT(verifier(&both, 1, fx.jwks1), 0);
	CHECK_EQ_INT(verifier(&hs_only, 1, NULL), 0);
	claims(cl, sizeof(cl), 600, NULL);
	/* HMAC keys an attacker could take from the public key. */
	CHECK_EQ_INT(fgw_read_file(fx.pub1, 65536, &pem, &pemlen), 0);
	CHECK((derlen = i2d_PUBKEY(fx.k1, &der)) > 0);
	CHECK(EVP_PKEY_get_bn_param(fx.k1, OSSL_PKEY_PARAM_RSA_N, &n) == 1);
	CHECK((nlen = BN_bn2bin(n, nbuf)) == 256);
	tok[0] = tok_hs("{\"alg\":\"HS256\",\"kid\":\"k1\"}", cl, pem, pemlen);
	tok[1] = tok_hs("{\"alg\":\"HS256\",\"kid\":\"k1\"}", cl, der, (size_t)derlen);
	tok[2] = tok_hs("{\"alg\":\"HS256\",\"kid\":\"k1\"}", cl, nbuf, (size_t)nlen);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ_INT(vtok(rs_only, tok[i], &why), FGW_ERR_AUTH);
		CHECK_STR(why, "HS256 tokens are not accepted");
		CHECK_EQ_INT(vtok(both, tok[i], &why), FGW_ERR_AUTH);
		CHECK_STR(why, "bad signature");
	}
	/* And the other way: RS256 where only HS256 is configured. */
	tok[3] = tok_rs(RS_HDR, cl, fx.k1);
	CHECK_EQ_INT(vtok(hs_only, tok[3], &why), FGW_ERR_AUTH);
	CHECK_STR(why, "RS256 tokens are not accepted");
end:
	for (int i = 0; i < 4; i++)
		free(tok[i]);
	free(pem);
	OPENSSL_free(der);
	BN_free(n);
	jwt_verifier_free(rs_only);
	jwt_verifier_free(both);
	jwt_verifier_free(hs_only);
	TT_END;
}

/* One JWKS entry for k, built here (not by jwt_jwks_from_pem). */
static int
jwk_entry(EVP_PKEY *k, const char *kid, char *out, size_t cap)
{
	BIGNUM *n = NULL, *e = NULL;
	unsigned char nb[1100], eb[16];
	char *n64 = NULL, *e64 = NULL;
	int r = -1, nl, el;
	if (EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
	    EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) == 1 &&
	    (nl = BN_bn2bin(n, nb)) > 0 && (el = BN_bn2bin(e, eb)) > 0 &&
	    (n64 = b64u(nb, (size_t)nl)) != NULL && (e64 = b64u(eb, (size_t)el)) != NULL &&
	    snprintf(out, cap,
	             "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\","
	             "\"e\":\"%s\"}",
	             kid, n64, e64) < (int)cap)
		r = 0;
	BN_free(n);
	BN_free(e);
	free(n64);
	free(e64);
	return r;
}

static int
test_jwt_rsa_1024_refused(void)
{
	struct jwt_verifier *v = NULL;
	EVP_PKEY *weak = NULL;
	char e1[1200], e2[1200], doc[2600], path[128], wpem[128];
	struct fgw_why why = { 0 };
	const char *err = why.msg;
	char cl[512];
	char *tok = NULL, *json = NULL;
	struct jwt_config cfg = { .issuer = ISS, .audience = AUD, .leeway_s = LEEWAY };
	TT_BEGIN;
	CHECK(fixture() == 0);
	fx_path(path, sizeof(path), "weak.json");
	fx_path(wpem, sizeof(wpem), "weak.pem");
	CHECK((weak = EVP_RSA_gen(1024)) != NULL);
	CHECK(jwk_entry(weak, "weak", e1, sizeof(e1)) == 0);
	CHECK(jwk_entry(fx.k1, "k1", e2, sizeof(e2)) == 0);
	cfg.jwks_path = path;
	snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", e1);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	CHECK(strstr(err, "1024 bits") != NULL);
	CHECK(v == NULL);
	/* A weak key poisons the whole file, good keys included. */
	snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", e2, e1);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	/* The good key alone loads; a 1024-bit signature under kid k1 fails. */
	snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", e2);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), 0);
	claims(cl, sizeof(cl), 600, NULL);
	tok = tok_rs(RS_HDR, cl, weak);
	CHECK_EQ_INT(vtok(v, tok, NULL), FGW_ERR_AUTH);
	/* The minting tools refuse the weak key too. */
	CHECK(write_pem(wpem, weak, 1) == 0);
	free(tok);
	tok = NULL;
	CHECK_EQ_INT(jwt_sign_rs256(wpem, "weak", cl, &tok), FGW_ERR_INVALID);
	CHECK_EQ_INT(jwt_jwks_from_pem(wpem, "weak", &json), FGW_ERR_INVALID);
end:
	unlink(path);
	unlink(wpem);
	free(tok);
	free(json);
	EVP_PKEY_free(weak);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_malformed(void)
{
	struct jwt_verifier *v = NULL;
	struct jwt_claims c;
	char cl[512], big[JWT_MAX_TOKEN_LEN + 2];
	char *good = NULL, *t = NULL;
	const char *why = NULL;
	size_t glen;
	/* Header / payload JSON texts that must be refused (all HMAC-signed
	 * with the real secret, so only the parsing can refuse them). */
	static const char *bad_hdr[] = {
		"not json",
		"[\"HS256\"]",
		"{\"alg\":\"HS256\"} ",
		"{\"alg\":\"HS256\"}x",
		"{\"alg\":\"HS256\",\"alg\":\"HS256\"}",
		"{\"alg\":\"HS256\",\"typ\":\"foo\"}",
		"{\"alg\":\"HS256\",\"kid\":7}",
		"{\"alg\":\"HS256\",\"kid\":\"a\\u0000b\"}",
		"{\"alg\":5}",
	};
	TT_BEGIN;
	CHECK(fixture() == 0);
	CHECK_EQ_INT(verifier(&v, 1, fx.jwks1), 0);
	claims(cl, sizeof(cl), 600, NULL);
	CHECK((good = tok_hs(HS_HDR, cl, fx.hs, sizeof(fx.hs))) != NULL);
	glen = strlen(good);
	CHECK_EQ_INT(vtok(v, good, NULL), 0);

	/* Shape. */
	CHECK_EQ_INT(jwt_verify(v, good, 0, NOW, &c, NULL), FGW_ERR_INVALID);
	CHECK_EQ_INT(vtok(v, "..", NULL), FGW_ERR_INVALID);
	CHECK_EQ_INT(vtok(v, "a.b", NULL), FGW_ERR_INVALID);
	CHECK_EQ_INT(vtok(v, "a.b.c.d", &why), FGW_ERR_INVALID);
	CHECK_STR(why, "token has too many parts");
	CHECK((t = malloc(glen + 8)) != NULL);
	snprintf(t, glen + 8, "%s.abcd", good);
	CHECK_EQ_INT(vtok(v, t, NULL), FGW_ERR_INVALID);
	/* Characters outside base64url: '+', '/', '=', space, NUL. */
	static const char strays[] = { '+', '/', '=', ' ', '\0' };
	for (size_t i = 0; i < sizeof(strays); i++) {
		memcpy(t, good, glen + 1);
		t[5] = strays[i];
		CHECK_EQ_INT(jwt_verify(v, t, glen, NOW, &c, &why), FGW_ERR_INVALID);
	}
	/* Padding at the end of the signature. */
	snprintf(t, glen + 8, "%s=", good);
	CHECK_EQ_INT(vtok(v, t, NULL), FGW_ERR_INVALID);
	/* A length-1-mod-4 part cannot be base64url. */
	memcpy(t, good, glen + 1);
	{
		char *dot = strchr(t, '.');
		memmove(dot + 1, dot, strlen(dot) + 1);
		*dot = 'A';
		CHECK_EQ_INT(vtok(v, t, NULL), FGW_ERR_INVALID);
	}
	/* Too long, however well formed its start. */
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, good, glen);
	CHECK_EQ_INT(jwt_verify(v, big, JWT_MAX_TOKEN_LEN + 1, NOW, &c, &why),
	             FGW_ERR_INVALID);
	CHECK_STR(why, "token too long");
	free(t);
	t = NULL;

	for (size_t i = 0; i < sizeof(bad_hdr) / sizeof(bad_hdr[0]); i++) {
		t = tok_hs(bad_hdr[i], cl, fx.hs, sizeof(fx.hs));
		if (vtok(v, t, NULL) != FGW_ERR_INVALID) {
			fprintf(stderr, "  header accepted: %s\n", bad_hdr[i]);
			CHECK(0);
		}
		free(t);
		t = NULL;
	}
	/* crit is refused: we implement no extension. */
	t = tok_hs("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", cl, fx.hs,
	           sizeof(fx.hs));
	CHECK_EQ_INT(vtok(v, t, &why), FGW_ERR_AUTH);
	free(t);
	t = NULL;
	/* typ variants accepted. */
	t = tok_hs("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", cl, fx.hs, sizeof(fx.hs));
	CHECK_EQ_INT(vtok(v, t, NULL), 0);
	free(t);
	t = NULL;

	/* Properly signed payloads that are not acceptable claims. */
	{
		char p[600];
		long long e = NOW + 60;
		const char *fmt[] = {
			"not json",
			"[1,2]",
			"{\"sub\":\"a\",\"sub\":\"b\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld}",
			"{\"sub\":5,\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld}",
			"{\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld}",
			"{\"sub\":\"\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld}",
			"{\"sub\":\"a\\u0000admin\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld}",
			"{\"sub\":\"a\\nb\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld}",
			"{\"sub\":\"a\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":\"%lld\"}",
			"{\"sub\":\"a\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld,\"nbf\":-1}",
			"{\"sub\":\"a\",\"iss\":\"" ISS "\",\"client_id\":\"" AUD
			"\",\"token_use\":\"access\",\"exp\":%lld,\"iat\":1e999}",
			"{\"sub\":\"a\",\"iss\":\"" ISS "\",\"client_id\":[\"" AUD
			"\"],\"token_use\":\"access\",\"exp\":%lld}",
		};
		for (size_t i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++) {
			snprintf(p, sizeof(p), fmt[i], e);
			t = tok_hs(HS_HDR, p, fx.hs, sizeof(fx.hs));
			if (vtok(v, t, &why) != FGW_ERR_INVALID) {
				fprintf(stderr, "  payload accepted: %s\n", p);
				CHECK(0);
			}
			free(t);
			t = NULL;
		}
		/* A sub longer than its field is refused, not truncated. */
		char longsub[JWT_CLAIM_MAX + 1];
		memset(longsub, 'x', sizeof(longsub) - 1);
		longsub[sizeof(longsub) - 1] = '\0';
		char p2[900];
		snprintf(p2, sizeof(p2),
		         "{\"sub\":\"%s\",\"iss\":\"" ISS "\","
		         "\"client_id\":\"" AUD "\",\"token_use\":\"access\","
		         "\"exp\":%lld}",
		         longsub, e);
		t = tok_hs(HS_HDR, p2, fx.hs, sizeof(fx.hs));
		CHECK_EQ_INT(vtok(v, t, &why), FGW_ERR_INVALID);
		CHECK_STR(why, "missing or bad sub");
	}
end:
	free(good);
	free(t);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_config(void)
{
	struct jwt_verifier *v = NULL;
	char path[128], doc[3000], e1[1200];
	struct fgw_why why = { 0 };
	const char *err = why.msg;
	unsigned char shortkey[16] = { 0 };
	struct jwt_config cfg = {
		.issuer = ISS, .audience = AUD, .hs256_secret = NULL, .leeway_s = 30
	};
	TT_BEGIN;
	CHECK(fixture() == 0);
	fx_path(path, sizeof(path), "cfg.json");
	/* Neither key source. */
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	cfg.hs256_secret = shortkey;
	cfg.hs256_secret_len = sizeof(shortkey);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	CHECK(strstr(err, "at least 32") != NULL);
	cfg.hs256_secret = fx.hs;
	cfg.hs256_secret_len = sizeof(fx.hs);
	cfg.leeway_s = JWT_MAX_LEEWAY_S + 1;
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	cfg.leeway_s = 30;
	cfg.issuer = NULL;
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	cfg.issuer = ISS;
	cfg.audience = "";
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	cfg.audience = AUD;
	/* JWKS problems. */
	cfg.jwks_path = "/nonexistent/fgw/jwks.json";
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_NOT_FOUND);
	cfg.jwks_path = path;
	CHECK(jwk_entry(fx.k1, "k1", e1, sizeof(e1)) == 0);
	static const char *bad_docs[] = {
		"{",
		"[]",
		"{\"keys\":{}}",
		"{\"keys\":[]}",
		"{\"keys\":[1]}",
		"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
		"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"+++\",\"e\":\"AQAB\"}]}",
		"{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\"}]}",
	};
	for (size_t i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
		CHECK_EQ_INT(write_text(path, bad_docs[i]), 0);
		if (jwt_verifier_new(&cfg, &v, &why) != FGW_ERR_INVALID) {
			fprintf(stderr, "  JWKS accepted: %s\n", bad_docs[i]);
			CHECK(0);
		}
	}
	/* Duplicate kid. */
	snprintf(doc, sizeof(doc), "{\"keys\":[%s,%s]}", e1, e1);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	CHECK(strstr(err, "duplicate kid") != NULL);
	/* Trailing garbage after a good document. */
	snprintf(doc, sizeof(doc), "{\"keys\":[%s]}\n x", e1);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	snprintf(doc, sizeof(doc), "{\"keys\":[%s]}\n", e1);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), 0);
	jwt_verifier_free(v);
	v = NULL;
	/* Key without kid. */
	snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", e1);
	memcpy(strstr(doc, "\"kid\""), "\"xid\"", 5);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), FGW_ERR_INVALID);
	/* Keys that are not RSA signing keys are skipped, not fatal. */
	snprintf(doc, sizeof(doc),
	         "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\"},"
	         "{\"kty\":\"RSA\",\"use\":\"enc\",\"kid\":\"x\"},"
	         "{\"kty\":\"RSA\",\"alg\":\"RS512\",\"kid\":\"y\"},%s]}",
	         e1);
	CHECK_EQ_INT(write_text(path, doc), 0);
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), 0);
	CHECK_EQ_INT(jwt_verifier_key_count(v), 1);
	jwt_verifier_free(v);
	v = NULL;
	/* Reload without a JWKS. */
	cfg.jwks_path = NULL;
	CHECK_EQ_INT(jwt_verifier_new(&cfg, &v, &why), 0);
	CHECK_EQ_INT(jwt_verifier_reload_jwks(v, &why), FGW_ERR_STATE);
end:
	unlink(path);
	jwt_verifier_free(v);
	TT_END;
}

static int
test_jwt_reload_bad_keeps_old(void)
{
	struct jwt_verifier *v = NULL;
	char path[128], cl[512];
	struct fgw_why why = { 0 };
	const char *err = why.msg;
	char *j1 = NULL, *j2 = NULL, *t1 = NULL, *t2 = NULL;
	TT_BEGIN;
	CHECK(fixture() == 0);
	fx_path(path, sizeof(path), "reload.json");
	CHECK_EQ_INT(jwt_jwks_from_pem(fx.pub1, "k1", &j1), 0);
	/* From the private key PEM: the public half is exported. */
	CHECK_EQ_INT(jwt_jwks_from_pem(fx.priv2, "k2", &j2), 0);
	CHECK(strstr(j2, "\"d\"") == NULL && strstr(j2, "\"p\"") == NULL);
	CHECK_EQ_INT(write_text(path, j1), 0);
	CHECK_EQ_INT(verifier(&v, 0, path), 0);
	claims(cl, sizeof(cl), 600, NULL);
	CHECK_EQ_INT(jwt_sign_rs256(fx.priv1, "k1", cl, &t1), 0);
	CHECK_EQ_INT(jwt_sign_rs256(fx.priv2, "k2", cl, &t2), 0);
	CHECK_EQ_INT(vtok(v, t1, NULL), 0);
	CHECK_EQ_INT(vtok(v, t2, NULL), FGW_ERR_AUTH);
	/* A broken file: error, old keys stay. */
	CHECK_EQ_INT(write_text(path, "{\"keys\":[{\"kty\":\"RSA\""), 0);
	CHECK_EQ_INT(jwt_verifier_reload_jwks(v, &why), FGW_ERR_INVALID);
	CHECK(err[0] != '\0');
	CHECK_EQ_INT(jwt_verifier_key_count(v), 1);
	CHECK_EQ_INT(vtok(v, t1, NULL), 0);
	/* A missing file: the same. */
	unlink(path);
	CHECK_EQ_INT(jwt_verifier_reload_jwks(v, &why), FGW_ERR_NOT_FOUND);
	CHECK_EQ_INT(vtok(v, t1, NULL), 0);
	/* A good file replaces the set. */
	CHECK_EQ_INT(write_text(path, j2), 0);
	CHECK_EQ_INT(jwt_verifier_reload_jwks(v, &why), 0);
	CHECK_EQ_INT(vtok(v, t2, NULL), 0);
	CHECK_EQ_INT(vtok(v, t1, NULL), FGW_ERR_AUTH);
end:
	unlink(path);
	free(j1);
	free(j2);
	free(t1);
	free(t2);
	jwt_verifier_free(v);
	TT_END;
}

/* Workers verify at least MIN_ITERS times and keep going until the main
 * thread has finished its reloads, but never past MAX_ITERS. */
#define MIN_ITERS 200
#define MAX_ITERS 200000
#define RELOADS 30

struct worker {
	struct jwt_verifier *v;
	const char *rs, *hs;
	atomic_int *failures;
	atomic_int *stop;
	int iters;
};

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct jwt_claims c;
	for (w->iters = 0;
	     w->iters < MAX_ITERS && (w->iters < MIN_ITERS || !atomic_load(w->stop));
	     w->iters++) {
		if (jwt_verify(w->v, w->rs, strlen(w->rs), NOW, &c, NULL) != 0 ||
		    strcmp(c.kid, "k1") != 0 ||
		    jwt_verify(w->v, w->hs, strlen(w->hs), NOW, &c, NULL) != 0)
			atomic_fetch_add(w->failures, 1);
	}
	return NULL;
}

static int
test_jwt_concurrent_reload(void)
{
	struct jwt_verifier *v = NULL;
	char path[128], cl[512], e1[1200], e2[1200], both[2600];
	struct fgw_why why = { 0 };
	char one[1300];
	char *rs = NULL, *hs = NULL;
	pthread_t th[2];
	struct worker w[2];
	int started = 0, reloads_ok = 0, reloads_bad = 0;
	atomic_int failures, stop;
	TT_BEGIN;
	atomic_init(&failures, 0);
	atomic_init(&stop, 0);
	CHECK(fixture() == 0);
	fx_path(path, sizeof(path), "conc.json");
	CHECK(jwk_entry(fx.k1, "k1", e1, sizeof(e1)) == 0);
	CHECK(jwk_entry(fx.k2, "k2", e2, sizeof(e2)) == 0);
	snprintf(both, sizeof(both), "{\"keys\":[%s,%s]}", e2, e1);
	snprintf(one, sizeof(one), "{\"keys\":[%s]}", e1);
	CHECK_EQ_INT(write_text(path, both), 0);
	CHECK_EQ_INT(verifier(&v, 1, path), 0);
	claims(cl, sizeof(cl), 600, NULL);
	CHECK_EQ_INT(jwt_sign_rs256(fx.priv1, "k1", cl, &rs), 0);
	CHECK_EQ_INT(jwt_sign_hs256(fx.hs, sizeof(fx.hs), cl, NULL, &hs), 0);
	for (; started < 2; started++) {
		w[started] = (struct worker){ v, rs, hs, &failures, &stop, 0 };
		CHECK(pthread_create(&th[started], NULL, worker_main, &w[started]) == 0);
	}
	/* Reload while they verify: every good set holds k1; every third
	 * reload meets a broken file and must leave the old set in place. */
	for (int i = 0; i < RELOADS; i++) {
		const char *text = i % 3 == 0 ? both : i % 3 == 1 ? one : "{\"keys\":[";
		CHECK_EQ_INT(write_text(path, text), 0);
		if (jwt_verifier_reload_jwks(v, &why) == 0)
			reloads_ok++;
		else
			reloads_bad++;
	}
end:
	atomic_store(&stop, 1);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (started == 2 && tt_fail == 0 &&
	    (atomic_load(&failures) != 0 || reloads_ok != 20 || reloads_bad != 10 ||
	     w[0].iters < MIN_ITERS || w[1].iters < MIN_ITERS)) {
		fprintf(stderr, "  failures %d, reloads ok %d bad %d, iters %d %d\n",
		        atomic_load(&failures), reloads_ok, reloads_bad, w[0].iters, w[1].iters);
		tt_fail = 1;
	}
	unlink(path);
	free(rs);
	free(hs);
	jwt_verifier_free(v);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "hmac_kat", test_hmac_kat },
	{ "stripe_valid", test_stripe_valid },
	{ "stripe_wrong_secret", test_stripe_wrong_secret },
	{ "stripe_tampered_body", test_stripe_tampered_body },
	{ "stripe_timestamps", test_stripe_timestamps },
	{ "stripe_missing_header", test_stripe_missing_header },
	{ "stripe_malformed", test_stripe_malformed },
	{ "stripe_multi_v1", test_stripe_multi_v1 },
	{ "stripe_rotation", test_stripe_rotation },
	{ "sign_roundtrip", test_sign_roundtrip },
	{ "jwt_valid_rs256", test_jwt_valid_rs256 },
	{ "jwt_valid_hs256", test_jwt_valid_hs256 },
	{ "jwt_expired", test_jwt_expired },
	{ "jwt_nbf_future", test_jwt_nbf_future },
	{ "jwt_wrong_audience", test_jwt_wrong_audience },
	{ "jwt_wrong_issuer", test_jwt_wrong_issuer },
	{ "jwt_wrong_token_use", test_jwt_wrong_token_use },
	{ "jwt_tampered_signature", test_jwt_tampered_signature },
	{ "jwt_tampered_payload", test_jwt_tampered_payload },
	{ "jwt_alg_none", test_jwt_alg_none },
	{ "jwt_unknown_kid", test_jwt_unknown_kid },
	{ "jwt_alg_confusion", test_jwt_alg_confusion },
	{ "jwt_rsa_1024_refused", test_jwt_rsa_1024_refused },
	{ "jwt_malformed", test_jwt_malformed },
	{ "jwt_config", test_jwt_config },
	{ "jwt_reload_bad_keeps_old", test_jwt_reload_bad_keeps_old },
	{ "jwt_concurrent_reload", test_jwt_concurrent_reload },
	{ NULL, NULL },
};
TT_MAIN(cases)
