/*
 * crypto/jwt.h — verification of JWT bearer tokens (compact JWS) for the
 * customer-facing API, shaped after Cognito access tokens.
 *
 * Accepted algorithms are RS256 (keys from a JWKS file, selected by kid)
 * and HS256 (one shared secret). The algorithm named in the token header
 * picks the key material, and each algorithm has its own: an HS256 token is
 * checked only against the configured HS256 secret (never against RSA
 * public key bytes), an RS256 token only against a JWKS RSA key with the
 * token's kid. "none" (any case) and every other alg are refused, as are
 * RS256 tokens without a kid, unknown kids, headers with "crit", and keys
 * embedded in the token (jwk, jku, x5u, x5c are never used).
 *
 * Claims: exp is required; nbf and iat are checked when present; iss must
 * equal the configured issuer; the configured audience must appear in aud
 * (string or array) or equal client_id (Cognito access tokens carry
 * client_id, ID tokens aud), and a client_id that is present must equal
 * the configured audience (a token never names the client it acts for:
 * the caller takes that from its configuration); token_use must match
 * when configured; sub is
 * required (it is the customer). Time checks allow cfg->leeway_s of clock
 * skew: rejected when now >= exp + leeway, now < nbf - leeway, or
 * iat > now + leeway. The payload is parsed only after the signature
 * verified.
 *
 * JWKS file: {"keys":[{"kty":"RSA","kid":"…","n":"…","e":"…",
 * "alg":"RS256","use":"sig"}, …]}. Keys whose kty is not RSA, whose use is
 * not "sig" or whose alg is not RS256 (when those members are present) are
 * skipped. The file is refused as a whole when an RSA key lacks a kid,
 * repeats a kid, is under 2048 (or over 8192) bits, has a malformed n or e,
 * or when no usable key remains.
 *
 * Thread safety: jwt_verify may run concurrently on one verifier from any
 * number of threads, also during jwt_verifier_reload_jwks (the key set is
 * reference counted and swapped under a short lock). Requires sodium_init()
 * (jwt_verifier_new calls it).
 */
#ifndef FGW_CRYPTO_JWT_H
#define FGW_CRYPTO_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define JWT_MAX_TOKEN_LEN 8192  /* longer tokens are refused */
#define JWT_DEFAULT_LEEWAY_S 30 /* suggested clock skew allowance */
#define JWT_MAX_LEEWAY_S 300
#define JWT_MIN_HS256_SECRET 32 /* bytes (RFC 7518 3.2: >= hash size) */
#define JWT_MIN_RSA_BITS 2048
#define JWT_MAX_RSA_BITS 8192
#define JWT_MAX_JWKS_KEYS 32
#define JWT_MAX_JWKS_FILE (256 * 1024)

#define JWT_CLAIM_MAX 256 /* sub, iss, client_id, kid (with NUL) */
#define JWT_SCOPE_MAX 1024
#define JWT_TOKEN_USE_MAX 32

struct jwt_verifier;

struct jwt_config {
	const char *issuer;                /* required; exact match of iss */
	const char *audience;              /* required; in aud, or equal to client_id */
	const char *token_use;             /* e.g. "access"; NULL or "" = not checked */
	const unsigned char *hs256_secret; /* NULL = HS256 tokens refused */
	size_t hs256_secret_len;           /* >= JWT_MIN_HS256_SECRET when set */
	const char *jwks_path;             /* NULL = RS256 tokens refused */
	int64_t leeway_s;                  /* 0..JWT_MAX_LEEWAY_S; use
	                              JWT_DEFAULT_LEEWAY_S; 0 = no skew */
};

/* The verified claims. Strings are NUL-terminated; a claim too long for
 * its field makes the token invalid rather than truncated. Absent optional
 * strings are "", absent nbf/iat are 0. */
struct jwt_claims {
	char sub[JWT_CLAIM_MAX];
	char iss[JWT_CLAIM_MAX];
	char client_id[JWT_CLAIM_MAX];
	char token_use[JWT_TOKEN_USE_MAX];
	char scope[JWT_SCOPE_MAX];
	char kid[JWT_CLAIM_MAX]; /* header kid ("" when absent, HS256) */
	char alg[8];             /* "RS256" or "HS256" */
	int64_t exp, nbf, iat;
};

/*
 * Builds a verifier from cfg (copied; the secret goes to guarded memory)
 * and loads the JWKS file when one is named. At least one of hs256_secret
 * and jwks_path is required. Returns 0 and *out (free with
 * jwt_verifier_free), or FGW_ERR_INVALID (bad config or JWKS, reason in
 * why), FGW_ERR_NOT_FOUND / FGW_ERR_IO / FGW_ERR_TOO_LARGE (JWKS file),
 * FGW_ERR_NOMEM.
 */
int jwt_verifier_new(const struct jwt_config *cfg, struct jwt_verifier **out,
                     struct fgw_why *why);
/* Wipes the secret, drops the key set; NULL is fine. No jwt_verify may be
 * running on v. */
void jwt_verifier_free(struct jwt_verifier *v);

/*
 * Re-reads the JWKS file. On success the new key set serves every later
 * jwt_verify; on any error the old keys stay in force and the error is
 * returned (reason in why). FGW_ERR_STATE when no jwks_path is configured.
 */
int jwt_verifier_reload_jwks(struct jwt_verifier *v, struct fgw_why *why);
/* Number of RSA keys currently loaded (for logs and metrics). */
size_t jwt_verifier_key_count(struct jwt_verifier *v);

/*
 * Verifies token[0..len) at time now_s (unix seconds). On success returns 0
 * and fills *out. On failure *out is zeroed and the result is
 *   FGW_ERR_INVALID  not a well-formed JWS / JSON, missing or ill-typed
 *                    claim, token over JWT_MAX_TOKEN_LEN
 *   FGW_ERR_AUTH     alg refused, no key for it, unknown kid, bad
 *                    signature, wrong iss / audience / token_use
 *   FGW_ERR_TIMEOUT  expired, not yet valid (nbf), issued in the future
 *   FGW_ERR_NOMEM / FGW_ERR_INTERNAL
 * *reason (if not NULL) is NULL on success, else a static log-safe text.
 * Clients should get one generic 401 whatever the reason.
 */
int jwt_verify(struct jwt_verifier *v, const char *token, size_t len, int64_t now_s,
               struct jwt_claims *out, const char **reason);

/*
 * Token minting — for tests, flairctl and development only; the gateway
 * itself never issues tokens. claims_json must be a JSON object; its text
 * becomes the payload byte for byte. kid may be NULL (omitted). *out is a
 * malloc'ed NUL-terminated compact JWS. Returns 0, FGW_ERR_INVALID (claims
 * not an object, secret shorter than JWT_MIN_HS256_SECRET, key not RSA or
 * under JWT_MIN_RSA_BITS), FGW_ERR_NOT_FOUND / FGW_ERR_IO (key file),
 * FGW_ERR_CRYPTO (signing failed), FGW_ERR_NOMEM.
 */
int jwt_sign_hs256(const unsigned char *secret, size_t secret_len,
                   const char *claims_json, const char *kid, char **out);
/* pem_private_key_path: an unencrypted PEM RSA private key. kid required. */
int jwt_sign_rs256(const char *pem_private_key_path, const char *kid,
                   const char *claims_json, char **out);

/*
 * Writes a one-key JWKS document {"keys":[{"kty":"RSA","use":"sig",
 * "alg":"RS256","kid":…,"n":…,"e":…}]} for the RSA key in pem_path (a
 * public key PEM, or a private key PEM whose public half is used) into
 * malloc'ed *json_out. Same errors as jwt_sign_rs256.
 */
int jwt_jwks_from_pem(const char *pem_path, const char *kid, char **json_out);

#endif
