/*
 * gateway/browser.c — route classes, CORS and the request limit (see
 * browser.h).
 *
 * CORS is an allow list of origins, answered per request with that one
 * origin (never "*", never Access-Control-Allow-Credentials: customers
 * authenticate with a bearer JWT, not a cookie). Server-to-server routes
 * (API keys) never carry a CORS header, so a page on any origin can never
 * read their answers even with a stolen key in hand.
 *
 * The request limit is separate from the rules: it protects the gateway
 * and the processor account from floods before any work is done. Buckets
 * live in one fixed-size table shared by the reactors; when a probe finds
 * no free slot the least recently used bucket of the probe is reused, so
 * memory stays bounded whatever the number of addresses seen (an evicted
 * client starts again with a full bucket, which errs towards admitting).
 */
#define LOG_MODULE "browser"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "gateway/browser.h"
#include "gateway/http.h"

#define ALLOWED_HEADERS "Authorization, Content-Type, Idempotency-Key, X-Idempotency-Key"
#define EXPOSED_HEADERS "Retry-After, Idempotent-Replayed"
#define PROBE 16

/* ---- route classes ------------------------------------------------------ */

static int
has_prefix_path(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* /v1/payments/{id}/confirm: the browser's own payment confirmation. */
static int
is_browser_confirm(const char *path)
{
	const char *p = "/v1/payments/", *id;
	size_t n;
	if (strncmp(path, p, strlen(p)) != 0)
		return 0;
	id = path + strlen(p);
	n = strcspn(id, "/");
	return n > 0 && strcmp(id + n, "/confirm") == 0;
}

int
is_browser_path(const char *path)
{
	return strcmp(path, "/v1/keys/public") == 0 || strcmp(path, "/flair.js") == 0 ||
	       has_prefix_path(path, "/v1/reservations") ||
	       has_prefix_path(path, "/v1/payments/methods") || is_browser_confirm(path) ||
	       has_prefix_path(path, "/demo") || strcmp(path, "/v1/dev/token") == 0;
}

enum route_class
route_class_of(const char *path, enum evhttp_cmd_type m)
{
	if (!is_browser_path(path))
		return RC_API;
	if (m == EVHTTP_REQ_POST &&
	    (strcmp(path, "/v1/reservations/hold/convert") == 0 || is_browser_confirm(path)))
		return RC_PAYMENT;
	return RC_BROWSER;
}

/* ---- CORS --------------------------------------------------------------- */

int
cors_origin_allowed(const struct fgw_config *cfg, const char *origin, size_t len)
{
	const char *p = cfg->cors_origins;
	char own[160];
	int n;

	if (origin == NULL || len == 0)
		return 0;
	if (p[0] == '\0') {
		if (strcmp(cfg->mode, "development") != 0)
			return 0;
		n = snprintf(own, sizeof(own), "http://%s", cfg->listen);
		return n > 0 && (size_t)n == len && strncasecmp(own, origin, len) == 0;
	}
	while (*p != '\0') {
		size_t k;
		p += strspn(p, ", \t");
		k = strcspn(p, ", \t");
		if (k > 0 && k == len && strncasecmp(p, origin, k) == 0)
			return 1;
		p += k;
	}
	return 0;
}

int
browser_return_url_allowed(const struct fgw_config *cfg, const char *url)
{
	const char *host;
	if (url[0] == '\0')
		return 1;
	if ((strncasecmp(url, "https://", 8) != 0 && strncasecmp(url, "http://", 7) != 0) ||
	    (host = strstr(url, "://")) == NULL)
		return 0;
	host += 3;
	return cors_origin_allowed(cfg, url, (size_t)(host - url) + strcspn(host, "/?#"));
}

/* The request's Origin when it is allowed, else NULL. */
static const char *
allowed_origin(struct reactor *rx, struct evhttp_request *req)
{
	const char *o = evhttp_find_header(evhttp_request_get_input_headers(req), "Origin");
	if (o == NULL || !cors_origin_allowed(&rx->gw->cfg, o, strlen(o)))
		return NULL;
	return o;
}

void
cors_answer_headers(struct reactor *rx, struct evhttp_request *req, enum route_class rc)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	const char *o;

	if (rc == RC_API)
		return;
	/* The answer depends on the Origin: caches must keep them apart. */
	evhttp_add_header(h, "Vary", "Origin");
	if ((o = allowed_origin(rx, req)) == NULL)
		return;
	evhttp_add_header(h, "Access-Control-Allow-Origin", o);
	evhttp_add_header(h, "Access-Control-Expose-Headers", EXPOSED_HEADERS);
}

void
cors_preflight(struct reactor *rx, struct evhttp_request *req, const char *path,
               int path_known, unsigned methods)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{ EVHTTP_REQ_GET, "GET" },
		{ EVHTTP_REQ_POST, "POST" },
		{ EVHTTP_REQ_PUT, "PUT" },
		{ EVHTTP_REQ_DELETE, "DELETE" },
	};
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char list[64];
	const char *o;
	size_t used = 0;

	(void)path; /* the caller answers OPTIONS elsewhere (405, Allow) */
	if (!path_known) {
		http_send_error(rx, req, 404, "NOT_FOUND", "No such route");
		return;
	}
	evhttp_add_header(h, "Vary",
	                  "Origin, Access-Control-Request-Method, "
	                  "Access-Control-Request-Headers");
	if ((o = allowed_origin(rx, req)) == NULL) {
		http_send_error(rx, req, 403, "CORS_ORIGIN_NOT_ALLOWED",
		                "This origin may not call the gateway from a browser");
		return;
	}
	list[0] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int n;
		if (!(methods & names[i].bit))
			continue;
		n = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "",
		             names[i].name);
		if (n > 0 && (size_t)n < sizeof(list) - used)
			used += (size_t)n;
	}
	evhttp_add_header(h, "Access-Control-Allow-Origin", o);
	evhttp_add_header(h, "Access-Control-Allow-Methods", list);
	evhttp_add_header(h, "Access-Control-Allow-Headers", ALLOWED_HEADERS);
	evhttp_add_header(h, "Access-Control-Max-Age", "600");
	evhttp_add_header(h, "Cache-Control", "no-store");
	metrics_http_answer(&rx->gw->metrics, 204);
	evhttp_send_reply(req, 204, "No Content", NULL);
}

/* ---- token buckets ------------------------------------------------------ */

struct bucket {
	uint64_t h;      /* 0: free */
	int64_t last_ms; /* last refill */
	double tokens;
};

struct ratelimit {
	pthread_mutex_t mu;
	size_t mask;
	size_t used;
	unsigned char key[crypto_shorthash_KEYBYTES];
	struct bucket *b;
};

int
ratelimit_new(size_t cap, struct ratelimit **out)
{
	struct ratelimit *rl;
	size_t n = PROBE;

	*out = NULL;
	while (n < cap && n < ((size_t)1 << 26))
		n <<= 1;
	if ((rl = calloc(1, sizeof(*rl))) == NULL)
		return FGW_ERR_NOMEM;
	if ((rl->b = calloc(n, sizeof(*rl->b))) == NULL) {
		free(rl);
		return FGW_ERR_NOMEM;
	}
	rl->mask = n - 1;
	randombytes_buf(rl->key, sizeof(rl->key));
	pthread_mutex_init(&rl->mu, NULL);
	*out = rl;
	return FGW_OK;
}

void
ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	pthread_mutex_destroy(&rl->mu);
	free(rl->b);
	free(rl);
}

size_t
ratelimit_used(struct ratelimit *rl)
{
	size_t n;
	pthread_mutex_lock(&rl->mu);
	n = rl->used;
	pthread_mutex_unlock(&rl->mu);
	return n;
}

int
ratelimit_take(struct ratelimit *rl, const void *key, size_t keylen, int64_t per_min,
               int64_t now_ms, int *retry_after_s)
{
	unsigned char hb[crypto_shorthash_BYTES];
	struct bucket *b = NULL, *oldest = NULL, *free_slot = NULL;
	uint64_t h;
	double cap = (double)per_min, wait_ms;
	int limited = 0;

	*retry_after_s = 0;
	if (per_min <= 0)
		return 0;
	crypto_shorthash(hb, key, keylen, rl->key);
	memcpy(&h, hb, sizeof(h));
	if (h == 0)
		h = 1;
	pthread_mutex_lock(&rl->mu);
	for (size_t i = 0; i < PROBE; i++) {
		struct bucket *s = &rl->b[(h + i) & rl->mask];
		if (s->h == h) {
			b = s;
			break;
		}
		if (s->h == 0 && free_slot == NULL)
			free_slot = s;
		if (s->h != 0 && (oldest == NULL || s->last_ms < oldest->last_ms))
			oldest = s;
	}
	if (b == NULL) {
		b = free_slot != NULL ? free_slot : oldest;
		if (b->h == 0)
			rl->used++;
		b->h = h;
		b->last_ms = now_ms;
		b->tokens = cap;
	}
	if (now_ms > b->last_ms) {
		b->tokens += (double)(now_ms - b->last_ms) * cap / 60000.0;
		if (b->tokens > cap)
			b->tokens = cap;
		b->last_ms = now_ms;
	}
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
	} else {
		limited = 1;
		wait_ms = (1.0 - b->tokens) * 60000.0 / cap;
		*retry_after_s = (int)((wait_ms + 999.0) / 1000.0);
		if (*retry_after_s < 1)
			*retry_after_s = 1;
	}
	pthread_mutex_unlock(&rl->mu);
	return limited;
}

/* ---- the client's address ---------------------------------------------- */

/* Parses an IPv4 or IPv6 address text into a comparable form. */
static int
parse_ip(const char *s, size_t n, unsigned char out[17])
{
	char tmp[INET6_ADDRSTRLEN + 1];
	while (n > 0 && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(tmp))
		return 0;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	memset(out, 0, 17);
	if (inet_pton(AF_INET, tmp, out + 1) == 1) {
		out[0] = 4;
		return 1;
	}
	if (inet_pton(AF_INET6, tmp, out + 1) == 1) {
		out[0] = 6;
		return 1;
	}
	return 0;
}

static int
is_trusted(const struct fgw_config *cfg, const unsigned char ip[17])
{
	const char *p = cfg->trusted_proxies;
	unsigned char t[17];
	while (*p != '\0') {
		size_t k;
		p += strspn(p, ", \t");
		k = strcspn(p, ", \t");
		if (k > 0 && parse_ip(p, k, t) && memcmp(t, ip, 17) == 0)
			return 1;
		p += k;
	}
	return 0;
}

void
browser_client_ip(const struct fgw_config *cfg, struct evhttp_request *req, char *out,
                  size_t cap)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	unsigned char ip[17];
	char xff[1024];
	size_t used = 0;
	int hops = 0;

	http_peer_address(req, out, cap);
	if (cfg->trusted_proxies[0] == '\0' || !parse_ip(out, strlen(out), ip) ||
	    !is_trusted(cfg, ip))
		return;
	/* Every X-Forwarded-For line, in order, as one list: each proxy
	 * appends on the right, so the right end is the most trusted. */
	xff[0] = '\0';
	TAILQ_FOREACH(kv, in, next) {
		int n;
		if (strcasecmp(kv->key, "X-Forwarded-For") != 0)
			continue;
		n = snprintf(xff + used, sizeof(xff) - used, "%s%s", used ? "," : "", kv->value);
		if (n < 0 || (size_t)n >= sizeof(xff) - used)
			return; /* longer than any honest chain: keep the peer */
		used += (size_t)n;
	}
	while (used > 0 && hops++ < 32) {
		char *comma = memrchr(xff, ',', used);
		size_t start = comma ? (size_t)(comma - xff) + 1 : 0;
		if (!parse_ip(xff + start, used - start, ip))
			return; /* a forged or broken entry: the proxy is what we know */
		if (!is_trusted(cfg, ip) || start == 0) {
			char tmp[INET6_ADDRSTRLEN];
			if (inet_ntop(ip[0] == 4 ? AF_INET : AF_INET6, ip + 1, tmp, sizeof(tmp)) !=
			    NULL)
				fgw_strlcpy(out, tmp, cap);
			return;
		}
		used = start - 1;
	}
}

/* ---- the limit ------------------------------------------------------------ */

static const char *
bearer(struct evhttp_request *req)
{
	const char *a = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                   "Authorization");
	if (a == NULL || strncasecmp(a, "Bearer ", 7) != 0)
		return NULL;
	a += 7;
	while (*a == ' ')
		a++;
	return *a ? a : NULL;
}

int
browser_rate_limit(struct reactor *rx, struct evhttp_request *req, enum route_class rc)
{
	const struct fgw_config *cfg = &rx->gw->cfg;
	const char *path, *cred = bearer(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	char key[300], ip[64], ra[16], msg[96];
	int64_t per_min;
	int n, wait_s;

	if (rx->gw->rl == NULL)
		return 0;
	path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (cred != NULL && strlen(cred) <= 256 &&
	    config_client_for_key(cfg, cred, strlen(cred)) != NULL) {
		/* A website's servers may share one address: its key is
		 * what identifies it. */
		per_min = cfg->rate_api_key_per_min;
		n = snprintf(key, sizeof(key), "k|%s", cred);
	} else {
		/* Processors sign their webhooks (and refusals are bounded
		 * there); health and metrics belong to the operator. */
		if (rc == RC_API && path != NULL &&
		    (strncmp(path, "/v1/webhooks/", 13) == 0 || strcmp(path, "/healthz") == 0 ||
		     strcmp(path, "/metrics") == 0))
			return 0;
		browser_client_ip(cfg, req, ip, sizeof(ip));
		per_min = rc == RC_PAYMENT ? cfg->rate_payment_per_min
		                           : cfg->rate_browser_per_min;
		n = snprintf(key, sizeof(key), "%d|%s", (int)rc, ip);
	}
	if (n < 0 || (size_t)n >= sizeof(key))
		return 0;
	if (!ratelimit_take(rx->gw->rl, key, (size_t)n, per_min, fgw_mono_ms(), &wait_s)) {
		sodium_memzero(key, sizeof(key));
		return 0;
	}
	sodium_memzero(key, sizeof(key));
	atomic_fetch_add(&rx->gw->metrics.rate_limited, 1);
	snprintf(ra, sizeof(ra), "%d", wait_s);
	snprintf(msg, sizeof(msg), "Too many requests; retry in %d seconds", wait_s);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
	http_send_error(rx, req, 429, "RATE_LIMITED", msg);
	return 1;
}
