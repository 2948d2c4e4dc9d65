/*
 * tests/fuzz/fuzz_http_head.c — libFuzzer target for the HTTP request
 * head: the bytes a client sends, read by libevent's evhttp set up the
 * way gateway/server.c sets up every reactor (the configured header and
 * body limits, read timeout, allowed methods), then what the routes read
 * from a request (URI path, the path segments they extract, the headers
 * they look up, the request hash idempotency compares).
 *
 * The server listens on an abstract Unix socket (no file, no network).
 * Each input is written by a client on the same event loop, which then
 * half-closes and reads the answer until the server closes.
 *
 * Oracle: no crash, leak or UB; the answer is empty (connection closed) or
 * starts with an HTTP/ status line; a request that reaches the handler
 * has an allowed method and a path; for a path a route pattern matches,
 * the segment http_path_segment extracts is the one a reference matcher
 * finds (or FGW_ERR_TOO_LARGE when it does not fit).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/err.h"
#include "gateway/config.h"
#include "gateway/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)           \
	do {                      \
		if (!(cond))          \
			__builtin_trap(); \
	} while (0)

#define ALLOWED                                                              \
	(EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | \
	 EVHTTP_REQ_HEAD)

static struct event_base *base;
static struct evhttp *http;
static struct sockaddr_un addr;
static socklen_t addrlen;

struct client {
	int fd;
	char answer[256];
	size_t got;
	int done;
};

/* The patterns the route files extract segments with. */
static const char *const patterns[] = {
	"/v1/payments/methods/*",
	"/v1/payments/methods/*/default",
	"/v1/reservations/*/payment-status",
	"/v1/transactions/*",
	"/v1/transactions/*/*",
	"/v1/webhooks/*",
};

/* Reference matcher: -1 when path does not match pattern ('*' = one
 * non-empty segment), 0 when it matches but has no n-th '*', else 1 and
 * the n-th '*' segment in out (truncated to cap). */
static int
ref_segment(const char *pattern, const char *path, int n, char *out, size_t cap)
{
	int idx = 0, found = 0;

	out[0] = '\0';
	for (;;) {
		size_t pl = strcspn(pattern, "/"), sl = strcspn(path, "/");
		if (pl == 1 && pattern[0] == '*') {
			if (sl == 0)
				return -1;
			if (idx++ == n) {
				snprintf(out, cap, "%.*s", (int)sl, path);
				found = 1;
			}
		} else if (pl != sl || memcmp(pattern, path, pl) != 0) {
			return -1;
		}
		pattern += pl;
		path += sl;
		if (*pattern == '\0' || *path == '\0')
			return (*pattern == '\0' && *path == '\0') ? found : -1;
		pattern++;
		path++;
	}
}

static void
handle(struct evhttp_request *req, void *arg)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	struct evkeyvalq *hdr = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct evkeyvalq q;
	char seg[40];
	const char *query;
	size_t len;

	(void)arg;
	check((evhttp_request_get_command(req) & ALLOWED) != 0);
	if (path == NULL || path[0] == '\0')
		path = "/";
	for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
		for (int n = 0; n < 2; n++) {
			char want[512];
			int r, m;
			/* Only for a path the pattern matches: the routes ask
			 * after routes_handle matched. */
			if ((m = ref_segment(patterns[i], path, n, want, sizeof(want))) < 0)
				continue;
			memset(seg, 'x', sizeof(seg));
			r = http_path_segment(patterns[i], path, n, seg, sizeof(seg));
			if (m == 0) {
				check(r != 0);
			} else if (strlen(want) >= sizeof(seg)) {
				check(r == FGW_ERR_TOO_LARGE);
			} else {
				check(r == 0 && strcmp(seg, want) == 0);
			}
		}
	}
	(void)evhttp_find_header(hdr, "Authorization");
	(void)evhttp_find_header(hdr, "Content-Type");
	(void)evhttp_find_header(hdr, "Idempotency-Key");
	if ((query = uri ? evhttp_uri_get_query(uri) : NULL) != NULL &&
	    evhttp_parse_query_str(query, &q) == 0)
		evhttp_clear_headers(&q);
	len = evbuffer_get_length(in);
	check(len == 0 || evbuffer_pullup(in, -1) != NULL);
	evhttp_send_reply(req, 200, "OK", NULL);
}

static void
setup(void)
{
	struct fgw_config *cfg = calloc(1, sizeof(*cfg));
	struct timeval tv;
	int fd;

	if (cfg == NULL || sodium_init() < 0 || (base = event_base_new()) == NULL ||
	    (http = evhttp_new(base)) == NULL)
		abort();
	config_defaults(cfg);
	evhttp_set_max_body_size(http, (ev_ssize_t)cfg->max_body_bytes * 4);
	evhttp_set_max_headers_size(http, (ev_ssize_t)cfg->max_header_bytes);
	tv.tv_sec = cfg->read_timeout_ms / 1000;
	tv.tv_usec = (cfg->read_timeout_ms % 1000) * 1000;
	evhttp_set_timeout_tv(http, &tv);
	evhttp_set_allowed_methods(http, ALLOWED);
	evhttp_set_default_content_type(http, "application/json");
	evhttp_set_gencb(http, handle, NULL);
	free(cfg);

	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	/* abstract name: sun_path[0] is NUL */
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "fuzz_http_head.%ld",
	         (long)getpid());
	addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
	                      strlen(addr.sun_path + 1));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
	    bind(fd, (struct sockaddr *)&addr, addrlen) != 0 || listen(fd, 16) != 0 ||
	    evhttp_accept_socket_with_handle(http, fd) == NULL)
		abort();
}

static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	char buf[4096];
	ssize_t n;

	(void)what;
	n = read(fd, buf, sizeof(buf));
	if (n > 0) {
		size_t keep = sizeof(c->answer) - 1 - c->got;
		if ((size_t)n < keep)
			keep = (size_t)n;
		memcpy(c->answer + c->got, buf, keep);
		c->got += keep;
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	c->done = 1;
	event_base_loopbreak(base);
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	event_base_loopbreak(base);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct client c;
	struct event *ev, *timer;
	struct timeval limit = { 5, 0 };
	size_t off = 0;

	if (base == NULL)
		setup();
	/* Within one socket buffer: the client writes everything at once. */
	if (size > 32768)
		return 0;
	memset(&c, 0, sizeof(c));
	if ((c.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(c.fd, (struct sockaddr *)&addr, addrlen) != 0)
		abort();
	while (off < size) {
		ssize_t n = write(c.fd, data + off, size - off);
		if (n <= 0)
			break; /* the server may close early */
		off += (size_t)n;
	}
	shutdown(c.fd, SHUT_WR);
	evutil_make_socket_nonblocking(c.fd);
	if ((ev = event_new(base, c.fd, EV_READ | EV_PERSIST, on_readable, &c)) == NULL ||
	    event_add(ev, NULL) != 0 || (timer = evtimer_new(base, on_timeout, &c)) == NULL ||
	    evtimer_add(timer, &limit) != 0)
		abort();
	/* Bounded: the server closes once it read the client's EOF. */
	event_base_dispatch(base);
	check(c.done);
	event_free(timer);
	c.answer[c.got] = '\0';
	/* libevent answers in the version the request named (HTTP/0.1 too). */
	check(c.got == 0 || strncmp(c.answer, "HTTP/", 5) == 0);
	event_free(ev);
	close(c.fd);
	return 0;
}
