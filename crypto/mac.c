/*
 * crypto/mac.c — HMAC-SHA256 (libsodium) and the timestamped webhook
 * signature scheme described in mac.h.
 *
 * Layout: the HMAC helpers; a strict parser that turns a signature header
 * into {t, v1[]} (raw bytes, decoded once); the verifier, which computes
 * one MAC per secret and compares it with every v1 in constant time; the
 * signer, which shares the MAC computation with the verifier so the two
 * can never disagree on the signed payload.
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

	if ((key == NULL && keylen > 0) || (msg == NULL && len > 0) ||
	    out == NULL)
		return FGW_ERR_INTERNAL;
	crypto_auth_hmacsha256_init(&st, key, keylen);
	if (len > 0)
		crypto_auth_hmacsha256_update(&st, msg, len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
	return FGW_OK;
}

int
mac_hmac_sha256_hex(const void *key, size_t keylen, const void *msg,
                    size_t len, char out[MAC_SHA256_HEX_LEN])
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
		crypto_auth_hmacsha256_update(&st, (const unsigned char *)body,
		                              body_len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

struct sig_header {
	const char *tstr; /* the digits of t, as signed */
	size_t tlen;
	int64_t ts;
	size_t n_v1;
	unsigned char v1[MAC_SIG_MAX_V1][MAC_SHA256_LEN];
};

static int
hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly 2*n hex digits into n bytes. 0 or -1. */
static int
hex_decode_exact(const char *s, size_t slen, unsigned char *out, size_t n)
{
	if (slen != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_nibble(s[2 * i]), lo = hex_nibble(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

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

static int
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static int
parse_sig_header(const char *h, size_t hlen, struct sig_header *sh,
                 const char **reason)
{
	const char *p = h, *end = h + hlen;
	int have_t = 0;

	memset(sh, 0, sizeof(*sh));
	for (;;) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *ks = p, *ve = comma ? comma : end, *eq;
		size_t klen, vlen;

		while (ks < ve && is_ows(*ks))
			ks++;
		while (ve > ks && is_ows(ve[-1]))
			ve--;
		if (ks == ve) {
			*reason = "empty item in signature header";
			return FGW_ERR_INVALID;
		}
		if ((eq = memchr(ks, '=', (size_t)(ve - ks))) == NULL || eq == ks) {
			*reason = "signature header item is not key=value";
			return FGW_ERR_INVALID;
		}
		klen = (size_t)(eq - ks);
		vlen = (size_t)(ve - eq - 1);
		if (klen == 1 && ks[0] == 't') {
			if (have_t) {
				*reason = "duplicate t in signature header";
				return FGW_ERR_INVALID;
			}
			if (parse_ts(eq + 1, vlen, &sh->ts) != 0) {
				*reason = "malformed t in signature header";
				return FGW_ERR_INVALID;
			}
			sh->tstr = eq + 1;
			sh->tlen = vlen;
			have_t = 1;
		} else if (klen == 2 && ks[0] == 'v' && ks[1] == '1') {
			if (sh->n_v1 == MAC_SIG_MAX_V1) {
				*reason = "too many v1 signatures";
				return FGW_ERR_INVALID;
			}
			if (hex_decode_exact(eq + 1, vlen, sh->v1[sh->n_v1],
			                     MAC_SHA256_LEN) != 0) {
				*reason = "malformed v1 signature";
				return FGW_ERR_INVALID;
			}
			sh->n_v1++;
		}
		/* Other keys (v0, later schemes) are ignored by design. */
		if (comma == NULL)
			break;
		p = comma + 1;
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

int
mac_verify_stripe_signature(const char *header, const char *body,
                            size_t body_len, const char *const *secrets,
                            size_t n_secrets, int64_t now_s,
                            int64_t tolerance_s, int64_t *ts_out,
                            const char **reason)
{
	struct sig_header sh;
	unsigned char mac[MAC_SHA256_LEN];
	const char *why = NULL;
	size_t hlen, used = 0;
	int r, match = 0;

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

	for (size_t i = 0; i < n_secrets && !match; i++) {
		const char *s = secrets[i];
		if (s == NULL || s[0] == '\0')
			continue;
		used++;
		mac_ts_body(s, strlen(s), sh.tstr, sh.tlen, body, body_len, mac);
		for (size_t j = 0; j < sh.n_v1; j++) {
			if (sodium_memcmp(mac, sh.v1[j], MAC_SHA256_LEN) == 0) {
				match = 1;
				break;
			}
		}
	}
	sodium_memzero(mac, sizeof(mac));
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
	/* Both values are non-negative int64, so the differences fit. */
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
mac_sign_webhook(const char *secret, int64_t ts, const char *body,
                 size_t len, char *out, size_t outlen)
{
	char tstr[24], hex[MAC_SHA256_HEX_LEN];
	unsigned char mac[MAC_SHA256_LEN];
	int n;

	if (secret == NULL || secret[0] == '\0' || ts < 0 ||
	    (body == NULL && len > 0) || out == NULL)
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
