/*
 * crypto/mac.c — HMAC-SHA256 (libsodium) and the timestamped webhook
 * signature scheme described in mac.h.
 *
 * Layout: the HMAC helpers; a parser that splits a signature header the
 * way Stripe's libraries do (items at ',', key and value at the first
 * '='), keeping t and counting the v1 candidates; the verifier, which
 * computes one MAC per secret as lower-case hex and compares it with
 * every v1 value as a string, in constant time; the signer, which shares
 * the MAC computation with the verifier so the two can never disagree on
 * the signed payload.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/err.h"
#include "crypto/mac.h"

int
mac_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                unsigned char out[MAC_SHA256_LEN])
{
	crypto_auth_hmacsha256_state st;

	if ((key == NULL && keylen > 0) || (msg == NULL && len > 0) || out == NULL)
		return FGW_ERR_INTERNAL;
	crypto_auth_hmacsha256_init(&st, key, keylen);
	if (len > 0)
		crypto_auth_hmacsha256_update(&st, msg, len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
	return FGW_OK;
}

int
mac_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t len,
                    char out[MAC_SHA256_HEX_LEN])
{
	unsigned char mac[MAC_SHA256_LEN];
	int r;

	if ((r = mac_hmac_sha256(key, keylen, msg, len, mac)) != FGW_OK)
		return r;
	sodium_bin2hex(out, MAC_SHA256_HEX_LEN, mac, sizeof(mac));
	sodium_memzero(mac, sizeof(mac));
	return FGW_OK;
}

/* HMAC-SHA256(key, tstr "." body): the signed payload of the scheme. */
static void
mac_ts_body(const char *key, size_t keylen, const char *tstr, size_t tlen,
            const char *body, size_t body_len, unsigned char out[MAC_SHA256_LEN])
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, (const unsigned char *)key, keylen);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)tstr, tlen);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
	if (body_len > 0)
		crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, body_len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

struct sig_header {
	const char *h; /* the header, for the second pass over its v1 */
	size_t hlen;
	int64_t ts;
	size_t n_v1;
};

/* Whole non-empty run of digits into a non-negative int64. 0 or -1. */
static int
parse_ts(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v > (INT64_MAX - (s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

/* The next item of h[*pos..hlen) split at ',': its key and value (at the
 * first '='), as Stripe's libraries split them: no trimming, so " v1" is
 * an unknown key. Returns 0 past the end; *klen is SIZE_MAX for an item
 * without '=' (ignored, as an unknown item). */
static int
next_item(const char *h, size_t hlen, size_t *pos, const char **key, size_t *klen,
          const char **val, size_t *vlen)
{
	const char *s, *e, *eq;

	if (*pos > hlen)
		return 0;
	s = h + *pos;
	e = memchr(s, ',', hlen - *pos);
	if (e == NULL)
		e = h + hlen;
	*pos = (size_t)(e - h) + 1;
	*key = s;
	if ((eq = memchr(s, '=', (size_t)(e - s))) == NULL) {
		*klen = SIZE_MAX;
		return 1;
	}
	*klen = (size_t)(eq - s);
	*val = eq + 1;
	*vlen = (size_t)(e - eq - 1);
	return 1;
}

static int
key_is(const char *key, size_t klen, const char *want)
{
	return klen == strlen(want) && memcmp(key, want, klen) == 0;
}

static int
parse_sig_header(const char *h, size_t hlen, struct sig_header *sh, const char **reason)
{
	const char *key, *val = NULL;
	size_t pos = 0, klen, vlen = 0;
	int have_t = 0;

	memset(sh, 0, sizeof(*sh));
	sh->h = h;
	sh->hlen = hlen;
	while (next_item(h, hlen, &pos, &key, &klen, &val, &vlen)) {
		if (key_is(key, klen, "t")) {
			/* Stricter than Stripe's libraries (last t wins, parsed
			 * leniently): one t, decimal digits only. */
			if (have_t) {
				*reason = "duplicate t in signature header";
				return FGW_ERR_INVALID;
			}
			if (parse_ts(val, vlen, &sh->ts) != 0) {
				*reason = "malformed t in signature header";
				return FGW_ERR_INVALID;
			}
			have_t = 1;
		} else if (key_is(key, klen, "v1")) {
			/* Any other v1 value is a candidate that does not
			 * match; an empty one makes Stripe's Node library
			 * throw, so it is refused too. */
			if (vlen == 0) {
				*reason = "empty v1 signature";
				return FGW_ERR_INVALID;
			}
			sh->n_v1++;
		}
		/* Other items (v0, later schemes, no '=') are ignored. */
	}
	if (!have_t) {
		*reason = "no t in signature header";
		return FGW_ERR_INVALID;
	}
	if (sh->n_v1 == 0) {
		*reason = "no v1 signature in header";
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

/* Whether some v1 value of the header is exactly hex (64 lower-case
 * digits: Stripe compares the strings, so upper case never matches).
 * Every candidate is compared, in constant time each. */
static int
some_v1_is(const struct sig_header *sh, const char hex[MAC_SHA256_HEX_LEN])
{
	const char *key, *val = NULL;
	size_t pos = 0, klen, vlen = 0;
	int match = 0;

	while (next_item(sh->h, sh->hlen, &pos, &key, &klen, &val, &vlen))
		if (key_is(key, klen, "v1") && vlen == MAC_SHA256_HEX_LEN - 1 &&
		    sodium_memcmp(val, hex, vlen) == 0)
			match = 1;
	return match;
}

int
mac_verify_stripe_signature(const char *header, const char *body, size_t body_len,
                            const char *const *secrets, size_t n_secrets, int64_t now_s,
                            int64_t tolerance_s, int64_t *ts_out, const char **reason)
{
	struct sig_header sh;
	unsigned char mac[MAC_SHA256_LEN];
	char hex[MAC_SHA256_HEX_LEN], tstr[24];
	const char *why = NULL;
	size_t hlen, used = 0;
	int r, match = 0, tlen;

	if ((body == NULL && body_len > 0) || (secrets == NULL && n_secrets > 0) ||
	    now_s < 0 || tolerance_s < 0) {
		why = "bad arguments to signature verification";
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if (header == NULL || header[0] == '\0') {
		why = "missing signature header";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((hlen = strnlen(header, MAC_SIG_HEADER_MAX + 1)) > MAC_SIG_HEADER_MAX) {
		why = "signature header too long";
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = parse_sig_header(header, hlen, &sh, &why)) != FGW_OK)
		goto out;
	if (ts_out != NULL)
		*ts_out = sh.ts;
	/* Stripe signs the timestamp it parsed, written in decimal: "t=0123"
	 * is checked as "123.body". */
	tlen = snprintf(tstr, sizeof(tstr), "%" PRId64, sh.ts);
	if (tlen < 0 || (size_t)tlen >= sizeof(tstr)) {
		why = "bad arguments to signature verification";
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	for (size_t i = 0; i < n_secrets && !match; i++) {
		const char *s = secrets[i];
		if (s == NULL || s[0] == '\0')
			continue;
		used++;
		mac_ts_body(s, strlen(s), tstr, (size_t)tlen, body, body_len, mac);
		sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
		match = some_v1_is(&sh, hex);
	}
	sodium_memzero(mac, sizeof(mac));
	sodium_memzero(hex, sizeof(hex));
	if (used == 0) {
		why = "no webhook secret configured";
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	if (!match) {
		why = "no signature matches";
		r = FGW_ERR_AUTH;
		goto out;
	}
	/* Both values are non-negative int64, so the differences fit.
	 * Stripe's libraries accept any timestamp from the future; flairgw
	 * bounds it as it bounds the past, since a far-future t would make
	 * a captured request replayable for as long. */
	if (sh.ts > now_s && sh.ts - now_s > tolerance_s) {
		why = "signature timestamp in the future";
		r = FGW_ERR_TIMEOUT;
		goto out;
	}
	if (sh.ts <= now_s && now_s - sh.ts > tolerance_s) {
		why = "signature timestamp too old";
		r = FGW_ERR_TIMEOUT;
		goto out;
	}
	r = FGW_OK;
out:
	if (reason != NULL)
		*reason = why;
	return r;
}

int
mac_sign_webhook(const char *secret, int64_t ts, const char *body, size_t len, char *out,
                 size_t outlen)
{
	char tstr[24], hex[MAC_SHA256_HEX_LEN];
	unsigned char mac[MAC_SHA256_LEN];
	int n;

	if (secret == NULL || secret[0] == '\0' || ts < 0 || (body == NULL && len > 0) ||
	    out == NULL)
		return FGW_ERR_INTERNAL;
	n = snprintf(tstr, sizeof(tstr), "%" PRId64, ts);
	if (n < 0 || (size_t)n >= sizeof(tstr))
		return FGW_ERR_INTERNAL;
	mac_ts_body(secret, strlen(secret), tstr, (size_t)n, body, len, mac);
	sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
	sodium_memzero(mac, sizeof(mac));
	n = snprintf(out, outlen, "t=%s,v1=%s", tstr, hex);
	if (n < 0 || (size_t)n >= outlen) {
		if (outlen > 0)
			out[0] = '\0';
		return FGW_ERR_TOO_LARGE;
	}
	return FGW_OK;
}
