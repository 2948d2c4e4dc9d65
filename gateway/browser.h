/*
 * gateway/browser.h — the customer's browser at the edge: which routes a
 * browser may call (route classes), CORS for those and only those, and
 * the request limit (token buckets per client IP and route class, or per
 * website API key), all decided in the dispatcher before any handler runs.
 */
#ifndef FGW_GATEWAY_BROWSER_H
#define FGW_GATEWAY_BROWSER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

struct fgw_config;
struct reactor;

enum route_class {
	RC_API = 0, /* server to server: API key only, never CORS */
	RC_BROWSER, /* customer routes a browser calls (JWT) */
	RC_PAYMENT, /* a payment attempt from a browser */
};

/* The class of a request to path with method m. */
enum route_class route_class_of(const char *path, enum evhttp_cmd_type m);

/* 1 when origin (the Origin header, not NUL-terminated: len bytes) may
 * call the customer routes: listed in cors_origins, or with that empty,
 * the gateway's own http://LISTEN origin in development mode. */
int cors_origin_allowed(const struct fgw_config *cfg, const char *origin, size_t len);

/* Adds the CORS answer headers to a request of class rc (nothing for
 * RC_API, whatever the Origin). */
void cors_answer_headers(struct reactor *rx, struct evhttp_request *req,
                         enum route_class rc);

/* Whether a browser may call path at all (CORS, per-IP limits). */
int is_browser_path(const char *path);
/* Answers an OPTIONS request to path: 204 with the methods in
 * `methods` (EVHTTP_REQ_* bits of the routes on that path) and the
 * allowed headers for an allowed origin on a browser route; otherwise a
 * JSON error with no CORS header. path_known: some route has that path. */
void cors_preflight(struct reactor *rx, struct evhttp_request *req, const char *path,
                    int path_known, unsigned methods);

/* 1 when url is "" or its origin (scheme://host[:port]) is one a browser
 * may call from (cors_origin_allowed): where 3-D Secure may bring the
 * customer back after a browser confirm. */
int browser_return_url_allowed(const struct fgw_config *cfg, const char *url);

/* ---- request limit ----------------------------------------------------- */

struct ratelimit;

/* A table of at most cap buckets (rounded up to a power of two), shared
 * by every reactor (locked). */
int ratelimit_new(size_t cap, struct ratelimit **out);
void ratelimit_free(struct ratelimit *rl);
/* Takes one token from the bucket named by key (hashed with a per-process
 * random key; the key text is not kept), whose capacity and refill are
 * per_min a minute. 0 when admitted; otherwise 1 with *retry_after_s the
 * whole seconds until a token is back (at least 1). per_min <= 0 admits. */
int ratelimit_take(struct ratelimit *rl, const void *key, size_t keylen, int64_t per_min,
                   int64_t now_ms, int *retry_after_s);
/* Buckets in use (tests, metrics). */
size_t ratelimit_used(struct ratelimit *rl);

/* The client's address: the peer, or, when the peer is one of
 * trusted_proxies, the rightmost X-Forwarded-For entry that is not a
 * trusted proxy (a valid IP address; otherwise the peer). */
void browser_client_ip(const struct fgw_config *cfg, struct evhttp_request *req,
                       char *out, size_t cap);

/* Applies the request limit to req of class rc: 0 to go on, 1 when it
 * answered 429 RATE_LIMITED with Retry-After. */
int browser_rate_limit(struct reactor *rx, struct evhttp_request *req,
                       enum route_class rc);

#endif
