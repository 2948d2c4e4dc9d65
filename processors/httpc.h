/*
 * processors/httpc.h — asynchronous HTTP client: libcurl's multi interface
 * driven by one libevent event_base (one httpc per reactor thread). No
 * thread per request, no blocking call. Connections are reused (keep-alive
 * pool per httpc, bounded by max_conns per host).
 *
 * A request completes exactly once: its done callback runs from a deferred
 * libevent callback on the reactor thread (never from inside a libcurl
 * callback), or never, if httpc_cancel() was called first. httpc_free()
 * cancels everything outstanding (no callbacks).
 */
#ifndef FGW_PROCESSORS_HTTPC_H
#define FGW_PROCESSORS_HTTPC_H

#include <stddef.h>

struct event_base;
struct httpc;
struct httpc_req;

struct httpc_opts {
	long connect_timeout_ms; /* default 2000 */
	long max_conns_per_host; /* default 64 */
	const char *ca_file;     /* NULL: system default */
	int verify_tls;          /* 1 (default in production) */
	const char *client_cert; /* PEM file or NULL */
	const char *client_key;  /* PEM file or NULL */
	/* Added after the first cut; zero keeps the default. */
	size_t max_response_bytes; /* body cap, 0: 1 MiB; over it the request
	                             ends with FGW_ERR_TOO_LARGE, maybe_sent 1 */
	const char *proxy;         /* "http://host:port" or NULL: no proxy (the
	                             environment's *_proxy variables are never
	                             used) */
};
/* opts NULL means all defaults, TLS verification on. With opts given,
 * verify_tls is taken as written (0 turns verification off). Strings are
 * copied. The multi handle's connection cache is shared by all requests of
 * one httpc (keep-alive reuse). */

struct httpc_response {
	int err;          /* 0: an HTTP status arrived; FGW_ERR_TIMEOUT,
	                       FGW_ERR_IO, FGW_ERR_UNAVAILABLE (connect failed),
	                       FGW_ERR_TOO_LARGE (body over the cap),
	                       FGW_ERR_NOMEM */
	int maybe_sent;   /* 1 if the request may have reached the server
	                       (unknown outcome on error); 0 only when libcurl
	                       never began to write it on any connection (the
	                       connect or TLS set-up failed, or the time ran
	                       out before), whatever the final error */
	long status;      /* HTTP status, 0 on err */
	const char *body; /* NUL-terminated; valid during the callback only */
	size_t body_len;
	long elapsed_ms;
};

typedef void (*httpc_done_fn)(void *arg, const struct httpc_response *resp);

int httpc_new(struct event_base *base, const struct httpc_opts *opts, struct httpc **out);
/* Cancels all outstanding requests (no callbacks) and frees. May be called
 * from inside a done callback; the rest of the queue is then dropped. */
void httpc_free(struct httpc *c);

/* Starts a request. method: "GET" or "POST" (body may be NULL for GET;
 * other upper-case methods are sent as custom requests). Only a GET is
 * sent again by itself (on a fresh connection, when a reused one died
 * before any answer); any other request goes out at most once and such a
 * loss ends it with FGW_ERR_IO, maybe_sent 1.
 * url must be http:// or https://; redirects are never followed. A
 * total_timeout_ms <= 0 means 30 s. FGW_ERR_INVALID for a bad method, URL
 * or a header line with CR/LF; FGW_ERR_SHUTDOWN after httpc_free began.
 * headers: NULL-terminated array of "Name: value" lines (copied); body is
 * copied too. total_timeout_ms bounds the whole exchange. Returns 0 and, if
 * out is not NULL, a handle valid until done runs or httpc_cancel. */
int httpc_request(struct httpc *c, const char *method, const char *url,
                  const char *const *headers, const char *body, size_t len,
                  long total_timeout_ms, httpc_done_fn done, void *arg,
                  struct httpc_req **out);
/* Cancels: done will not be called. NULL is fine; inside the request's own
 * done callback it does nothing. */
void httpc_cancel(struct httpc_req *r);
/* Requests in flight (for graceful shutdown and metrics). */
int httpc_inflight(const struct httpc *c);
/* Of those, requests that wait for one of their host's max_conns_per_host
 * connections: they hold no libcurl handle while they wait. */
int httpc_queued(const struct httpc *c);

#endif
