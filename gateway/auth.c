/*
 * gateway/auth.c — who is calling: a website back end with an API key, or
 * a customer with a JWT (RS256 from a JWKS file, or HS256). Both end in an
 * auth_ctx; every failure is answered 401 and audited.
 */
#define LOG_MODULE "auth"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/keyvalq_struct.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/jwt.h"
#include "gateway/http.h"
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
	struct store_audit a = { "anonymous", source, "auth.failed", path, "failure", details };
	atomic_fetch_add(&rx->gw->metrics.auth_failures, 1);
	snprintf(details, sizeof(details), "{\"reason\":\"%s\"}", reason);
	store_audit_append(rx->gw->store, rx->waker, &a, 1, audit_done, NULL);
	evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
	                  "Bearer realm=\"flairgw\"");
	http_send_error(rx, req, 401, "UNAUTHORIZED", "Valid credentials are required");
}

int
http_authenticate(struct reactor *rx, struct evhttp_request *req,
                  const char *path, int accept, struct auth_ctx *out)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *auth = evhttp_find_header(in, "Authorization"), *cred, *client;
	const char *reason = "missing credentials";

	memset(out, 0, sizeof(*out));
	http_peer_address(req, out->source, sizeof(out->source));
	if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
		goto fail;
	cred = auth + 7;
	while (*cred == ' ')
		cred++;
	reason = "invalid credentials";
	if (*cred == '\0' || strlen(cred) > JWT_MAX_TOKEN_LEN)
		goto fail;
	if ((accept & AUTH_API_KEY) && strlen(cred) <= 256 &&
	    (client = config_client_for_key(&rx->gw->cfg, cred, strlen(cred))) != NULL) {
		const char *cust = evhttp_find_header(in, "X-Customer-Id");
		out->kind = AUTH_API_KEY;
		fgw_strlcpy(out->client_id, client, sizeof(out->client_id));
		/* A website back end acts for its customers: it names them, in
		 * its own namespace ("CLIENT/CUSTOMER"), so two websites that
		 * use the same customer id never share cards or bookings. */
		if (cust != NULL && cust[0] != '\0') {
			int n = snprintf(out->subject, sizeof(out->subject), "%s/%s", client, cust);
			if (strlen(cust) > 63 || strchr(cust, '/') != NULL || n < 0 ||
			    (size_t)n >= sizeof(out->subject)) {
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
		int r = jwt_verify(rx->gw->jwt, cred, strlen(cred), fgw_now_ms() / 1000, &claims, &why);
		if (r == 0 && strlen(claims.sub) < sizeof(out->subject)) {
			out->kind = AUTH_JWT;
			fgw_strlcpy(out->subject, claims.sub, sizeof(out->subject));
			fgw_strlcpy(out->client_id,
			            claims.client_id[0] ? claims.client_id : rx->gw->cfg.jwt_audience,
			            sizeof(out->client_id));
			return FGW_OK;
		}
		log_info("JWT refused from %s: %s", out->source, why ? why : fgw_strerror(r));
		reason = r == FGW_ERR_TIMEOUT ? "token expired or not yet valid" : "invalid token";
	}
fail:
	refuse(rx, req, path, out->source, reason);
	return FGW_ERR_AUTH;
}
