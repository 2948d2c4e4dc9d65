/*
 * crypto/mac.h — HMAC-SHA256 and timestamped webhook signatures.
 *
 * One scheme serves three headers (Stripe's, which flairgw adopts as its
 * own):
 *   Stripe-Signature         inbound, from Stripe
 *   Flair-Sandbox-Signature  inbound, from flair-sandbox
 *   Flair-Signature          outbound, flairgw's webhooks to the website
 * The header value is "t=<unix seconds>,v1=<hex>[,v1=<hex>...]" where each
 * v1 is lower-case hex of HMAC-SHA256(secret, "<t>.<raw body>"), <t> being
 * the t field as a decimal number. The receiver recomputes the MAC over the
 * raw request body (before any JSON parsing), compares it in constant time
 * with every v1 value under every configured secret (several v1 values and
 * several secrets exist during secret rotation), and refuses a timestamp
 * more than the tolerance (300 s by default) away from its clock in either
 * direction, which bounds replays; the caller still deduplicates event ids.
 *
 * A website verifying Flair-Signature does exactly this: split the header
 * on ',', take t and every v1, compute HMAC-SHA256 of "t.body" with the
 * endpoint secret, compare in constant time, check |now - t| <= 300.
 *
 * Keys are the secret strings' bytes (e.g. "whsec_..." used verbatim, as
 * Stripe does). All functions are thread-safe and allocate nothing; the
 * process must have called sodium_init().
 */
#ifndef FGW_CRYPTO_MAC_H
#define FGW_CRYPTO_MAC_H

#include <stddef.h>
#include <stdint.h>

#define MAC_HEADER_STRIPE "Stripe-Signature"
#define MAC_HEADER_SANDBOX "Flair-Sandbox-Signature"
#define MAC_HEADER_FLAIR "Flair-Signature"

#define MAC_SHA256_LEN 32
#define MAC_SHA256_HEX_LEN 65 /* 64 hex digits + NUL */
#define MAC_DEFAULT_TOLERANCE_S 300
/* Longest signature header accepted (longer is FGW_ERR_INVALID). */
#define MAC_SIG_HEADER_MAX 4096
/* Room mac_sign_webhook needs: "t=" 19 digits ",v1=" 64 hex, NUL. */
#define MAC_SIGN_HEADER_LEN 96

/* out = HMAC-SHA256(key, msg). Returns 0, or FGW_ERR_INTERNAL when key or
 * msg is NULL with a non-zero length. */
int mac_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                    unsigned char out[MAC_SHA256_LEN]);
/* Same, as 64 lower-case hex digits and a NUL. */
int mac_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t len,
                        char out[MAC_SHA256_HEX_LEN]);

/*
 * Verifies a Stripe-style signature header over body[0..body_len).
 * secrets: n_secrets NUL-terminated secrets (NULL or empty entries are
 * skipped); accepted when ANY v1 value matches ANY secret. now_s: the
 * caller's clock in unix seconds; tolerance_s >= 0 (use
 * MAC_DEFAULT_TOLERANCE_S); |now_s - t| <= tolerance_s passes, so both
 * edges are inclusive.
 *
 * Parsing follows Stripe's libraries (checked against the stripe npm
 * package by tests/integration/test_stripe_signatures.py): items are split
 * at ',', key and value at the first '=', nothing is trimmed; items
 * without '=' and unknown keys (v0, " v1", future schemes) are ignored;
 * every v1 value is a candidate and one equal to the lower-case hex MAC is
 * enough (upper case, wrong length or non-hex values never match). The
 * MAC is over the decimal timestamp Stripe parsed ("t=0123" signs
 * "123.body"). Stricter than Stripe on purpose: exactly one t, decimal
 * digits only (no sign, no spaces, within int64); an empty v1 value (it
 * makes Stripe's Node library throw); a header over MAC_SIG_HEADER_MAX
 * bytes; a timestamp more than the tolerance in the future. The MAC is
 * checked before the timestamp, so FGW_ERR_TIMEOUT means "authentic but
 * stale or from the future" (a replay), never a forgery.
 *
 * Returns 0 on success, or
 *   FGW_ERR_INVALID  header missing, empty or malformed
 *   FGW_ERR_AUTH     no v1 matches any secret
 *   FGW_ERR_TIMEOUT  timestamp outside the tolerance
 *   FGW_ERR_INTERNAL no usable secret, negative tolerance or now_s, or
 *                    body NULL with body_len > 0 (caller bugs)
 * *ts_out (if not NULL) receives t whenever the header parsed (success,
 * AUTH, TIMEOUT). *reason (if not NULL) is set to NULL on success and to a
 * static, log-safe explanation on failure.
 */
int mac_verify_stripe_signature(const char *header, const char *body, size_t body_len,
                                const char *const *secrets, size_t n_secrets,
                                int64_t now_s, int64_t tolerance_s, int64_t *ts_out,
                                const char **reason);

/*
 * Writes the Flair-Signature header value "t=<ts>,v1=<hex>" for body under
 * secret (non-empty) into out. ts is the send time in unix seconds (>= 0).
 * Returns 0, FGW_ERR_TOO_LARGE when outlen < what is needed
 * (MAC_SIGN_HEADER_LEN always suffices), or FGW_ERR_INTERNAL on bad
 * arguments.
 */
int mac_sign_webhook(const char *secret, int64_t ts, const char *body, size_t len,
                     char *out, size_t outlen);

#endif
