/*
 * tests/fuzz/fuzz_webhook.c — libFuzzer target for inbound webhooks: the
 * signature header and body check (crypto/mac.c) and what the route reads
 * from a verified event (strict JSON, the next action it may store).
 *
 * The first input byte picks the mode:
 *   0  the rest is "HEADER\nBODY": verified as sent under two fixed
 *      secrets at a fixed clock.
 *   1  the rest is "T(8 bytes) POS(2) BODY": BODY is signed with
 *      mac_sign_webhook at time T, verified, then verified again with the
 *      byte at POS of the body changed.
 *
 * Oracle: results are from the documented set; an accepted header holds a
 * t whose digits and a v1 that equal HMAC-SHA256(secret, "t.body") as
 * computed here with OpenSSL, within the tolerance; a genuine signature
 * verifies exactly when its time is within the tolerance, and no longer
 * does once the body changed; a stored next action is the one shape with
 * a checked URL.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "core/err.h"
#include "core/json.h"
#include "crypto/mac.h"
#include "processors/proc_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)           \
	do {                      \
		if (!(cond))          \
			__builtin_trap(); \
	} while (0)

#define NOW 1704111300LL
#define TOL 300

static const char *const secrets[] = { "whsec_fuzz_old", "whsec_fuzz_current" };

/* Lower-case hex HMAC-SHA256(key, t "." body), by OpenSSL. */
static void
ref_mac(const char *key, const char *t, size_t tlen, const char *body, size_t len,
        char hex[65])
{
	unsigned char mac[32];
	unsigned int maclen = 0;
	size_t n = tlen + 1 + len;
	unsigned char *msg = malloc(n ? n : 1);

	if (msg == NULL)
		abort();
	memcpy(msg, t, tlen);
	msg[tlen] = '.';
	memcpy(msg + tlen + 1, body, len);
	if (HMAC(EVP_sha256(), key, (int)strlen(key), msg, n, mac, &maclen) == NULL ||
	    maclen != 32)
		abort();
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	free(msg);
}

/* 1 when the header's items hold key=value, split as Stripe's libraries
 * split them (items at ',', key and value at the first '=', no trimming,
 * values compared exactly: upper-case hex is not a signature); value
 * NULL: the first key=..., its value in *vout. */
static int
has_item(const char *header, const char *key, const char *value, const char **vout,
         size_t *vlen)
{
	const char *p = header;
	size_t klen = strlen(key);

	while (*p) {
		const char *end = strchr(p, ',');
		const char *s = p, *e = end ? end : p + strlen(p);
		if ((size_t)(e - s) > klen && strncmp(s, key, klen) == 0 && s[klen] == '=') {
			s += klen + 1;
			if (value == NULL) {
				*vout = s;
				*vlen = (size_t)(e - s);
				return 1;
			}
			if ((size_t)(e - s) == strlen(value) &&
			    strncmp(s, value, (size_t)(e - s)) == 0)
				return 1;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	return 0;
}

/* What the route reads from an authentic body. */
static void
read_event(const char *body, size_t len)
{
	cJSON *ev = fgw_json_parse_strict(body, len);
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(ev, "data"), "object");
	char *na = NULL;
	int r;

	if (!cJSON_IsObject(obj)) {
		cJSON_Delete(ev);
		return;
	}
	r = proc_next_action(cJSON_GetObjectItemCaseSensitive(obj, "next_action"), &na);
	check(r == 0 || r == FGW_ERR_INVALID || r == FGW_ERR_NOMEM);
	if (r == 0) {
		cJSON *o = cJSON_Parse(na);
		const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "url");
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
		check(o != NULL && cJSON_GetArraySize(o) == 2);
		check(cJSON_IsString(type) && strcmp(type->valuestring, "redirect_to_url") == 0);
		check(cJSON_IsString(url) && proc_url_ok(url->valuestring, 2048) &&
		      strpbrk(url->valuestring, "\"<>") == NULL);
		cJSON_Delete(o);
	} else {
		check(na == NULL);
	}
	free(na);
	cJSON_Delete(ev);
}

static void
mode_raw(const char *in, size_t n)
{
	const char *nl = memchr(in, '\n', n), *reason = NULL, *t;
	char *header, *body, hex[65];
	size_t hlen = nl ? (size_t)(nl - in) : n, blen = nl ? n - hlen - 1 : 0, tlen;
	int64_t ts = -1;
	int r, ok = 0;

	if ((header = malloc(hlen + 1)) == NULL || (body = malloc(blen ? blen : 1)) == NULL)
		abort();
	memcpy(header, in, hlen);
	header[hlen] = '\0';
	if (blen > 0)
		memcpy(body, nl + 1, blen);
	r = mac_verify_stripe_signature(header, body, blen, secrets, 2, NOW, TOL, &ts,
	                                &reason);
	check(r == 0 || r == FGW_ERR_INVALID || r == FGW_ERR_AUTH || r == FGW_ERR_TIMEOUT);
	check((r == 0) == (reason == NULL));
	if (r == 0 || r == FGW_ERR_TIMEOUT) {
		/* Authentic: some secret's MAC over the timestamp is one of the
		 * v1 items. Stripe's libraries sign the timestamp as the
		 * number it parses to ("0170" signs as "170"), not as sent. */
		char tnum[24];
		int tn;
		check(strlen(header) <= MAC_SIG_HEADER_MAX);
		check(has_item(header, "t", NULL, &t, &tlen) && tlen > 0);
		tn = snprintf(tnum, sizeof(tnum), "%lld", (long long)ts);
		check(tn > 0 && (size_t)tn < sizeof(tnum));
		for (size_t i = 0; i < 2 && !ok; i++) {
			ref_mac(secrets[i], tnum, (size_t)tn, body, blen, hex);
			ok = has_item(header, "v1", hex, NULL, NULL);
		}
		check(ok);
		check(ts >= 0);
		check((r == 0) == (ts >= NOW - TOL && ts <= NOW + TOL));
		if (r == 0)
			read_event(body, blen);
	}
	free(header);
	free(body);
}

static void
mode_signed(const uint8_t *in, size_t n)
{
	char header[MAC_SIGN_HEADER_LEN], *body;
	uint64_t u = 0;
	int64_t ts, got = -1;
	size_t pos, blen;
	int r;

	if (n < 10)
		return;
	for (int i = 0; i < 8; i++)
		u = (u << 8) | in[i];
	/* Mostly near the clock, sometimes anywhere. */
	ts = (u >> 63) ? (int64_t)(u & 0x3fffffffffffffffULL)
	               : NOW + (int64_t)(u % 1000) - 500;
	pos = ((size_t)in[8] << 8) | in[9];
	in += 10;
	blen = n - 10;
	if ((body = malloc(blen ? blen : 1)) == NULL)
		abort();
	memcpy(body, in, blen);
	r = mac_sign_webhook(secrets[1], ts, body, blen, header, sizeof(header));
	check(r == 0);
	r = mac_verify_stripe_signature(header, body, blen, secrets, 2, NOW, TOL, &got, NULL);
	check(got == ts);
	if (ts >= NOW - TOL && ts <= NOW + TOL)
		check(r == 0);
	else
		check(r == FGW_ERR_TIMEOUT);
	if (blen > 0) {
		body[pos % blen] ^= 0x01;
		r = mac_verify_stripe_signature(header, body, blen, secrets, 2, NOW, TOL, NULL,
		                                NULL);
		check(r == FGW_ERR_AUTH);
	}
	free(body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;

	if (!ready) {
		if (sodium_init() < 0)
			abort();
		ready = 1;
	}
	if (size < 1 || size > 1 << 16)
		return 0;
	if (data[0] & 1)
		mode_signed(data + 1, size - 1);
	else
		mode_raw((const char *)data + 1, size - 1);
	return 0;
}
