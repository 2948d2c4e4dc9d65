/*
 * gateway/auth.c — who is calling: a website back end with an API key, or
 * a customer with a JWT (RS256 from a JWKS file, or HS256), or, for the
 * development-only admin routes, the operator with the admin token. All
 * end in an auth_ctx; every failure is answered 401 and audited, within
 * the bounds of gateway/refusals.h so a flood cannot fill the disk.
 *
 * Customers live in two namespaces that cannot meet: an API-key client's
 * X-Customer-Id becomes "key:CLIENT/ID", a JWT subject "jwt:NAMESPACE/SUB"
 * (jwt_namespace). The prefix alone tells them apart, and ID never holds
 * '/', so no subject can be read two ways. The client a JWT acts for is
 * jwt_client from the configuration, never a claim of the token.
 */
#define LOG_MODULE "auth"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/jwt.h"
#include "gateway/http.h"
#include "gateway/refusals.h"
#include "store/store.h"

static void
audit_done(void *arg, int rc)
{
	(void)arg;
	if (rc != 0)
		log_error("audit append failed: %s", fgw_strerror(rc));
}

static int
looks_like_jwt(const char *s)
{
	const char *d1 = strchr(s, '.');
	return strncmp(s, "eyJ", 3) == 0 && d1 != NULL && strchr(d1 + 1, '.') != NULL;
}

static void
refuse(struct reactor *rx, struct evhttp_request *req, const char *path,
       const char *source, const char *reason)
{
	char details[256];
	struct store_audit a = {
		"anonymous", source, "auth.failed", path, "failure", details
	};
	atomic_fetch_add(&rx->gw->metrics.auth_failures, 1);
	snprintf(details, sizeof(details), "{\"reason\":\"%s\"}", reason);
	if (refusals_admit(rx->gw->refusals, "auth.failed", source, fgw_mono_ms()))
		store_audit_append(rx->gw->store, rx->waker,
		                   &(struct store_commit){
		                       .audit = &a, .n_audit = 1, .done = audit_done });
	evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
	                  "Bearer realm=\"flairgw\"");
	http_send_error(rx, req, 401, "UNAUTHORIZED", "Valid credentials are required");
}

/* The bearer credential of req, or NULL. */
static const char *
bearer_of(struct evhttp_request *req)
{
	const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                      "Authorization");
	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
		return NULL;
	auth += 7;
	while (*auth == ' ')
		auth++;
	return auth;
}

int
http_authenticate(struct reactor *rx, struct evhttp_request *req, const char *path,
                  int accept, struct auth_ctx *out)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const struct fgw_config *cfg = &rx->gw->cfg;
	const char *cred, *client;
	const char *reason = "missing credentials";

	memset(out, 0, sizeof(*out));
	http_peer_address(req, out->source, sizeof(out->source));
	if ((cred = bearer_of(req)) == NULL)
		goto fail;
	reason = "invalid credentials";
	if (*cred == '\0' || strlen(cred) > JWT_MAX_TOKEN_LEN)
		goto fail;
	if ((accept & AUTH_API_KEY) && strlen(cred) <= 256 &&
	    (client = config_client_for_key(cfg, cred, strlen(cred))) != NULL) {
		const char *cust = evhttp_find_header(in, "X-Customer-Id");
		out->kind = AUTH_API_KEY;
		fgw_strlcpy(out->client_id, client, sizeof(out->client_id));
		/* A website back end acts for its customers: it names them in
		 * its own namespace, so two websites that use the same customer
		 * id never share cards or bookings, and no JWT subject is ever
		 * one of them. */
		if (cust != NULL && cust[0] != '\0') {
			int n = snprintf(out->subject, sizeof(out->subject), "key:%s/%s", client,
			                 cust);
			if (strlen(cust) > 63 || strchr(cust, '/') != NULL || n < 0 ||
			    (size_t)n >= sizeof(out->subject)) {
				out->subject[0] = '\0';
				http_send_error(rx, req, 400, "VALIDATION_ERROR",
				                "X-Customer-Id must be at most 63 characters without '/'");
				return FGW_ERR_INVALID;
			}
		}
		return FGW_OK;
	}
	if ((accept & AUTH_JWT) && rx->gw->jwt != NULL && looks_like_jwt(cred)) {
		struct jwt_claims claims;
		const char *why = NULL;
		int r = jwt_verify(rx->gw->jwt, cred, strlen(cred), fgw_now_ms() / 1000, &claims,
		                   &why);
		if (r == 0) {
			int n = snprintf(out->subject, sizeof(out->subject), "jwt:%s/%s",
			                 cfg->jwt_namespace, claims.sub);
			if (n > 0 && (size_t)n < sizeof(out->subject)) {
				out->kind = AUTH_JWT;
				/* The verifier refused a client_id other than the
				 * audience; the scope is the configuration's. */
				fgw_strlcpy(out->client_id, cfg->jwt_client, sizeof(out->client_id));
				return FGW_OK;
			}
			out->subject[0] = '\0';
			why = "sub too long";
			r = FGW_ERR_AUTH;
		}
		log_info("JWT refused from %s: %s", out->source, why ? why : fgw_strerror(r));
		reason = r == FGW_ERR_TIMEOUT ? "token expired or not yet valid"
		                              : "invalid token";
	}
fail:
	refuse(rx, req, path, out->source, reason);
	return FGW_ERR_AUTH;
}

int
http_authenticate_admin(struct reactor *rx, struct evhttp_request *req, const char *path,
                        struct auth_ctx *out)
{
	unsigned char h[sizeof(rx->gw->admin_token_hash)];
	const char *cred;
	int ok;

	memset(out, 0, sizeof(*out));
	http_peer_address(req, out->source, sizeof(out->source));
	if (strcmp(rx->gw->cfg.mode, "development") != 0 || !rx->gw->has_admin_token) {
		http_send_error(rx, req, 403, "FORBIDDEN",
		                "Admin routes need development mode and an admin_token_file");
		return FGW_ERR_AUTH;
	}
	if ((cred = bearer_of(req)) == NULL || *cred == '\0' || strlen(cred) > 1024) {
		refuse(rx, req, path, out->source,
		       cred == NULL ? "missing credentials" : "invalid credentials");
		return FGW_ERR_AUTH;
	}
	/* Hashes of equal length, compared in constant time: neither the
	 * token nor its length leaks through timing. */
	crypto_generichash(h, sizeof(h), (const unsigned char *)cred, strlen(cred), NULL, 0);
	ok = sodium_memcmp(h, rx->gw->admin_token_hash, sizeof(h)) == 0;
	sodium_memzero(h, sizeof(h));
	if (!ok) {
		refuse(rx, req, path, out->source, "invalid operator credentials");
		return FGW_ERR_AUTH;
	}
	fgw_strlcpy(out->client_id, "operator", sizeof(out->client_id));
	return FGW_OK;
}
