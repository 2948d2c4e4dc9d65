/*
 * tests/unit/test_httpc.c — processors/: the async HTTP client against
 * servers that live in the test's own event_base (an evhttp server for
 * well-behaved answers, a raw listener for hanging and rude peers), and
 * the sandbox adapter's build() and parse_reply() tables.
 *
 * Every loop is bounded: run_until() stops at the condition or a deadline.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/err.h"
#include "core/util.h"
#include "processors/adapter.h"
#include "processors/breaker.h"
#include "processors/generic.h"
#include "pipeline/pipeline.h"
#include "pipeline/proc_call.h"
#include "processors/httpc.h"
#include "tt.h"

/* ---- an evhttp server in the test's base -------------------------------- */

struct srv {
	struct evhttp *http;
	int port;
	int conns; /* connections accepted (one bufferevent each) */
	int requests;
	SSL_CTX *tls; /* set: the server speaks HTTPS */
};

static struct bufferevent *
srv_bevcb(struct event_base *base, void *arg)
{
	struct srv *s = arg;
	SSL *ssl;

	s->conns++;
	if (s->tls == NULL)
		return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if ((ssl = SSL_new(s->tls)) == NULL)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                      BEV_OPT_CLOSE_ON_FREE);
}

static long
query_num(struct evhttp_request *req, const char *name, long dflt)
{
	const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
	const char *q = u ? evhttp_uri_get_query(u) : NULL;
	struct evkeyvalq kv;
	long v = dflt;
	int64_t n;

	if (q == NULL || evhttp_parse_query_str(q, &kv) != 0)
		return dflt;
	const char *s = evhttp_find_header(&kv, name);
	if (s != NULL && fgw_parse_i64(s, 0, 100000000, &n) == 0)
		v = (long)n;
	evhttp_clear_headers(&kv);
	return v;
}

static void
srv_cb(struct evhttp_request *req, void *arg)
{
	struct srv *s = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);

	s->requests++;
	if (path == NULL)
		path = "";
	if (strcmp(path, "/echo") == 0) {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		const char *x = evhttp_find_header(evhttp_request_get_input_headers(req),
		                                   "X-Test");
		const char *m = evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST"
		                                                                   : "GET";
		evbuffer_add_printf(out, "M=%s;X=%s;B=", m, x ? x : "");
		evbuffer_add_buffer(out, in);
		evhttp_add_header(oh, "X-Reply", "yes");
		evhttp_send_reply(req, 200, "OK", NULL);
	} else if (strcmp(path, "/status") == 0) {
		evbuffer_add_printf(out, "status");
		evhttp_send_reply(req, (int)query_num(req, "code", 200), "Status", NULL);
	} else if (strcmp(path, "/big") == 0) {
		long n = query_num(req, "n", 0);
		for (long i = 0; i < n; i += 1024) {
			char chunk[1024];
			memset(chunk, 'a', sizeof(chunk));
			evbuffer_add(out, chunk, (size_t)(n - i < 1024 ? n - i : 1024));
		}
		evhttp_send_reply(req, 200, "OK", NULL);
	} else if (strcmp(path, "/chunked") == 0) {
		long n = query_num(req, "n", 0);
		evhttp_send_reply_start(req, 200, "OK");
		for (long i = 0; i < n; i += 100) {
			struct evbuffer *b = evbuffer_new();
			char chunk[100];
			memset(chunk, 'b', sizeof(chunk));
			if (b == NULL)
				break;
			evbuffer_add(b, chunk, (size_t)(n - i < 100 ? n - i : 100));
			evhttp_send_reply_chunk(req, b);
			evbuffer_free(b);
		}
		evhttp_send_reply_end(req);
	} else if (strcmp(path, "/method") == 0) {
		enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
		evbuffer_add_printf(out, "%s",
		                    cmd == EVHTTP_REQ_PUT      ? "PUT"
		                    : cmd == EVHTTP_REQ_DELETE ? "DELETE"
		                                               : "OTHER");
		evbuffer_add_buffer(out, evhttp_request_get_input_buffer(req));
		evhttp_send_reply(req, 200, "OK", NULL);
	} else if (strcmp(path, "/redirect") == 0) {
		evhttp_add_header(oh, "Location", "/echo");
		evhttp_send_reply(req, 302, "Found", NULL);
	} else {
		evhttp_send_reply(req, 404, "Not Found", NULL);
	}
}

static int
srv_start(struct event_base *base, struct srv *s)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	memset(s, 0, sizeof(*s));
	if ((s->http = evhttp_new(base)) == NULL)
		return -1;
	evhttp_set_bevcb(s->http, srv_bevcb, s);
	evhttp_set_gencb(s->http, srv_cb, s);
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	if ((bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0)) == NULL ||
	    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl) != 0)
		return -1;
	s->port = ntohs(sin.sin_port);
	return 0;
}

static void
srv_stop(struct srv *s)
{
	if (s->http != NULL)
		evhttp_free(s->http);
	s->http = NULL;
}

/* ---- a raw TCP peer: hangs, or closes after reading the request --------- */

/* RAW_ONE_THEN_CLOSE: answers the first request of each connection (keep-
 * alive), reads the next one whole and closes without an answer — a
 * processor that dies while a reused connection carries a request. */
enum raw_mode { RAW_HANG, RAW_CLOSE, RAW_ONE_THEN_CLOSE };

#define RAW_MAX 64
struct raw {
	struct evconnlistener *l;
	int port;
	enum raw_mode mode;
	int accepted;
	int requests; /* whole requests read (head and body) */
	int closed;   /* a request was read and its connection closed */
	struct bufferevent *bev[RAW_MAX];
	int served[RAW_MAX];
};

static void
raw_drop(struct raw *r, struct bufferevent *bev)
{
	for (int i = 0; i < RAW_MAX; i++)
		if (r->bev[i] == bev)
			r->bev[i] = NULL;
	bufferevent_free(bev);
}

/* Counts a whole request at the front of in (every request of these
 * tests carries Content-Length) and drains it; 0 while incomplete. */
static int
raw_take_request(struct raw *r, struct evbuffer *in)
{
	struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	size_t head, body = 0;
	char *h, *cl;

	if (p.pos < 0)
		return 0;
	head = (size_t)p.pos + 4;
	if ((h = calloc(1, head + 1)) == NULL)
		return 0;
	evbuffer_copyout(in, h, head);
	if ((cl = strcasestr(h, "Content-Length:")) != NULL)
		body = strtoul(cl + 15, NULL, 10);
	free(h);
	if (evbuffer_get_length(in) < head + body)
		return 0;
	evbuffer_drain(in, head + body);
	r->requests++;
	return 1;
}

static void
raw_read(struct bufferevent *bev, void *arg)
{
	struct raw *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);

	if (r->mode == RAW_ONE_THEN_CLOSE) {
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
		int i;
		for (i = 0; i < RAW_MAX && r->bev[i] != bev; i++)
			;
		while (i < RAW_MAX && raw_take_request(r, in)) {
			if (r->served[i]++ == 0) {
				bufferevent_write(bev, ok, sizeof(ok) - 1);
				continue;
			}
			r->closed++;
			raw_drop(r, bev);
			return;
		}
		return;
	}
	if (r->mode == RAW_CLOSE && p.pos >= 0) {
		evbuffer_drain(in, evbuffer_get_length(in));
		raw_drop(r, bev);
		return;
	}
	if (r->mode == RAW_HANG)
		evbuffer_drain(in, evbuffer_get_length(in));
}

static void
raw_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		raw_drop(arg, bev);
}

static void
raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen,
           void *arg)
{
	struct raw *r = arg;
	struct bufferevent *bev;

	(void)sa;
	(void)socklen;
	r->accepted++;
	bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return;
	}
	for (int i = 0; i < RAW_MAX; i++) {
		if (r->bev[i] == NULL) {
			r->bev[i] = bev;
			r->served[i] = 0;
			bufferevent_setcb(bev, raw_read, NULL, raw_event, r);
			bufferevent_enable(bev, EV_READ);
			return;
		}
	}
	bufferevent_free(bev);
}

static int
raw_start(struct event_base *base, struct raw *r, enum raw_mode mode)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	memset(r, 0, sizeof(*r));
	r->mode = mode;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->l = evconnlistener_new_bind(base, raw_accept, r,
	                               LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
	                               (struct sockaddr *)&sin, sizeof(sin));
	if (r->l == NULL ||
	    getsockname(evconnlistener_get_fd(r->l), (struct sockaddr *)&sin, &sl) != 0)
		return -1;
	r->port = ntohs(sin.sin_port);
	return 0;
}

static void
raw_stop(struct raw *r)
{
	for (int i = 0; i < RAW_MAX; i++)
		if (r->bev[i] != NULL)
			raw_drop(r, r->bev[i]);
	if (r->l != NULL)
		evconnlistener_free(r->l);
	r->l = NULL;
}

/* ---- loop helpers and the callback recorder ------------------------------ */

struct waiter {
	struct event_base *base;
	int *counter;
	int target;
};

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct waiter *w = arg;
	(void)fd;
	(void)what;
	if (w->counter != NULL && *w->counter >= w->target)
		event_base_loopbreak(w->base);
}

/* Runs the loop until *counter >= target (NULL: never) or max_ms passed. */
static void
run_until(struct event_base *base, int *counter, int target, int max_ms)
{
	struct waiter w = { base, counter, target };
	struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, &w);
	struct timeval t5 = { 0, 5000 };
	struct timeval tmax = { max_ms / 1000, (max_ms % 1000) * 1000 };

	if (tick == NULL)
		return;
	event_add(tick, &t5);
	event_base_loopexit(base, &tmax);
	event_base_dispatch(base);
	event_free(tick);
	/* A pending loopexit would end the next run early. */
	event_base_loopbreak(base);
	event_base_loop(base, EVLOOP_NONBLOCK);
}

struct got {
	int calls;
	int err;
	int maybe_sent;
	long status;
	long elapsed_ms;
	size_t body_len;
	char body[256];
	int *total; /* shared counter, optional */
};

static void
on_done(void *arg, const struct httpc_response *r)
{
	struct got *g = arg;
	g->calls++;
	g->err = r->err;
	g->maybe_sent = r->maybe_sent;
	g->status = r->status;
	g->elapsed_ms = r->elapsed_ms;
	g->body_len = r->body_len;
	fgw_strlcpy(g->body, r->body, sizeof(g->body));
	if (g->total != NULL)
		(*g->total)++;
}

struct fx {
	struct event_base *base;
	struct httpc *c;
	struct srv srv;
	char url[128];
};

static int
fx_setup(struct fx *f, const struct httpc_opts *opts)
{
	memset(f, 0, sizeof(*f));
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -1;
	if ((f->base = event_base_new()) == NULL || srv_start(f->base, &f->srv) != 0 ||
	    httpc_new(f->base, opts, &f->c) != 0)
		return -1;
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", f->srv.port);
	return 0;
}

static void
fx_teardown(struct fx *f)
{
	httpc_free(f->c);
	srv_stop(&f->srv);
	if (f->base != NULL)
		event_base_free(f->base);
	curl_global_cleanup();
}

static int
get(struct fx *f, const char *path, long timeout_ms, struct got *g)
{
	char url[256];
	snprintf(url, sizeof(url), "%s%s", f->url, path);
	return httpc_request(f->c, "GET", url, NULL, NULL, 0, timeout_ms, on_done, g, NULL);
}

/* ---- httpc cases --------------------------------------------------------- */

static int
test_roundtrip(void)
{
	struct fx f;
	struct got a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	int total = 0;
	char url[256];
	const char *hdrs[] = { "X-Test: abc", "Content-Type: text/plain", NULL };
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	a.total = b.total = c.total = d.total = &total;
	snprintf(url, sizeof(url), "%s/echo", f.url);
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, hdrs, "hello world", 11, 2000, on_done,
	                           &a, NULL),
	             0);
	CHECK_EQ_INT(get(&f, "/echo", 2000, &b), 0);
	CHECK_EQ_INT(get(&f, "/status?code=404", 2000, &c), 0);
	CHECK_EQ_INT(get(&f, "/redirect", 2000, &d), 0);
	CHECK_EQ_INT(httpc_inflight(f.c), 4);
	run_until(f.base, &total, 4, 3000);
	CHECK_EQ_INT(total, 4);
	CHECK_EQ_INT(a.err, 0);
	CHECK_EQ_INT(a.status, 200);
	CHECK_STR(a.body, "M=POST;X=abc;B=hello world");
	CHECK_EQ_INT(a.body_len, strlen("M=POST;X=abc;B=hello world"));
	CHECK_EQ_INT(a.maybe_sent, 1);
	CHECK_STR(b.body, "M=GET;X=;B=");
	CHECK_EQ_INT(c.err, 0);
	CHECK_EQ_INT(c.status, 404);
	CHECK_EQ_INT(d.err, 0);
	CHECK_EQ_INT(d.status, 302); /* redirects are not followed */
	CHECK_EQ_INT(httpc_inflight(f.c), 0);
	/* Every callback ran once. */
	CHECK_EQ_INT(a.calls + b.calls + c.calls + d.calls, 4);
end:
	fx_teardown(&f);
	TT_END;
}

struct chain {
	struct fx *f;
	int left;
	int done;
	int failures;
};

static void
chain_done(void *arg, const struct httpc_response *r)
{
	struct chain *ch = arg;
	char url[256];
	ch->done++;
	if (r->err != 0 || r->status != 200)
		ch->failures++;
	if (--ch->left > 0) {
		snprintf(url, sizeof(url), "%s/echo", ch->f->url);
		if (httpc_request(ch->f->c, "POST", url, NULL, "x", 1, 2000, chain_done, ch,
		                  NULL) != 0)
			ch->failures++;
	}
}

static int
test_keepalive(void)
{
	struct fx f;
	struct chain ch;
	char url[256];
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	ch.f = &f;
	ch.left = 6;
	ch.done = 0;
	ch.failures = 0;
	snprintf(url, sizeof(url), "%s/echo", f.url);
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "x", 1, 2000, chain_done, &ch,
	                           NULL),
	             0);
	run_until(f.base, &ch.done, 6, 5000);
	CHECK_EQ_INT(ch.done, 6);
	CHECK_EQ_INT(ch.failures, 0);
	CHECK_EQ_INT(f.srv.requests, 6);
	CHECK_EQ_INT(f.srv.conns, 1); /* one connection, reused */
end:
	fx_teardown(&f);
	TT_END;
}

static int
closed_port(void)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &sl) == 0)
		port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static int
test_refused(void)
{
	struct fx f;
	struct got g = { 0 };
	char url[128];
	int port;
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK((port = closed_port()) > 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", port);
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, 2000, on_done, &g, NULL),
	             0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.err, FGW_ERR_UNAVAILABLE);
	CHECK_EQ_INT(g.maybe_sent, 0);
	CHECK_EQ_INT(g.status, 0);
	CHECK_STR(g.body, "");
end:
	fx_teardown(&f);
	TT_END;
}

static int
test_timeout_after_send(void)
{
	struct fx f;
	struct raw r;
	struct got g = { 0 };
	char url[128];
	int64_t t0;
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK(raw_start(f.base, &r, RAW_HANG) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", r.port);
	t0 = fgw_mono_ms();
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, 300, on_done, &g, NULL),
	             0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.err, FGW_ERR_TIMEOUT);
	CHECK_EQ_INT(g.maybe_sent, 1);
	CHECK(g.elapsed_ms >= 250);
	CHECK(fgw_mono_ms() - t0 < 2000);
	CHECK_EQ_INT(r.accepted, 1);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

/* A listener whose accept queue is full and never drained: SYNs are
 * dropped, so the connect phase never completes. */
static int
test_connect_timeout(void)
{
	struct fx f;
	struct got g = { 0 };
	struct httpc_opts o = { .connect_timeout_ms = 300, .verify_tls = 1 };
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int lfd = -1, fill[4] = { -1, -1, -1, -1 };
	char url[128];
	TT_BEGIN;
	CHECK(fx_setup(&f, &o) == 0);
	CHECK((lfd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	CHECK(getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0);
	CHECK(listen(lfd, 0) == 0);
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		CHECK(fill[i] >= 0);
		(void)connect(fill[i], (struct sockaddr *)&sin, sizeof(sin));
	}
	usleep(50000);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", ntohs(sin.sin_port));
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, 5000, on_done, &g, NULL),
	             0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.err, FGW_ERR_TIMEOUT);
	CHECK_EQ_INT(g.maybe_sent, 0);
	CHECK(g.elapsed_ms < 2000);
end:
	for (int i = 0; i < 4; i++)
		if (fill[i] >= 0)
			close(fill[i]);
	if (lfd >= 0)
		close(lfd);
	fx_teardown(&f);
	TT_END;
}

static int
test_closed_after_read(void)
{
	struct fx f;
	struct raw r;
	struct got g = { 0 };
	char url[128];
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK(raw_start(f.base, &r, RAW_CLOSE) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", r.port);
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, 2000, on_done, &g, NULL),
	             0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.err, FGW_ERR_IO);
	CHECK_EQ_INT(g.maybe_sent, 1);
	CHECK_EQ_INT(g.status, 0);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

static int
test_cancel(void)
{
	struct fx f;
	struct got g = { 0 }, h = { 0 };
	struct httpc_req *rq = NULL;
	struct raw r;
	char url[256];
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	CHECK(fx_setup(&f, NULL) == 0);
	snprintf(url, sizeof(url), "%s/echo", f.url);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, NULL, 0, 2000, on_done, &g, &rq),
	             0);
	CHECK(rq != NULL);
	CHECK_EQ_INT(httpc_inflight(f.c), 1);
	httpc_cancel(rq);
	httpc_cancel(NULL);
	CHECK_EQ_INT(httpc_inflight(f.c), 0);
	/* Cancel after the request went out on the wire. */
	CHECK(raw_start(f.base, &r, RAW_HANG) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", r.port);
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, 2000, on_done, &h, &rq),
	             0);
	run_until(f.base, &r.accepted, 1, 2000);
	CHECK_EQ_INT(r.accepted, 1);
	run_until(f.base, NULL, 0, 20);
	CHECK_EQ_INT(h.calls, 0);
	httpc_cancel(rq);
	run_until(f.base, NULL, 0, 300);
	CHECK_EQ_INT(g.calls, 0);
	CHECK_EQ_INT(h.calls, 0);
	CHECK_EQ_INT(httpc_inflight(f.c), 0);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

/* The first callback cancels the others, wherever they are (active, or
 * finished and waiting in the done queue). */
struct canceller {
	struct httpc_req *others[3];
	int calls;
};

static void
cancel_others(void *arg, const struct httpc_response *r)
{
	struct canceller *k = arg;
	(void)r;
	k->calls++;
	for (int i = 0; i < 3; i++)
		httpc_cancel(k->others[i]);
}

static void
count_only(void *arg, const struct httpc_response *r)
{
	(void)r;
	(*(int *)arg)++;
}

static int
test_cancel_from_callback(void)
{
	struct fx f;
	struct canceller k = { { NULL, NULL, NULL }, 0 };
	int others = 0;
	char url[256];
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	snprintf(url, sizeof(url), "%s/echo", f.url);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, NULL, 0, 2000, cancel_others, &k,
	                           NULL),
	             0);
	for (int i = 0; i < 3; i++)
		CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, NULL, 0, 2000, count_only,
		                           &others, &k.others[i]),
		             0);
	run_until(f.base, &k.calls, 1, 3000);
	run_until(f.base, NULL, 0, 200);
	CHECK_EQ_INT(k.calls + others, 1);
	CHECK_EQ_INT(httpc_inflight(f.c), 0);
end:
	fx_teardown(&f);
	TT_END;
}

static int
test_free_inflight(void)
{
	struct fx f;
	struct raw r;
	struct got g[5];
	char url[128];
	int total = 0;
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	memset(g, 0, sizeof(g));
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK(raw_start(f.base, &r, RAW_HANG) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", r.port);
	for (int i = 0; i < 5; i++) {
		g[i].total = &total;
		CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, 5000, on_done, &g[i],
		                           NULL),
		             0);
	}
	run_until(f.base, &r.accepted, 5, 2000);
	CHECK_EQ_INT(r.accepted, 5);
	CHECK_EQ_INT(httpc_inflight(f.c), 5);
	httpc_free(f.c);
	f.c = NULL;
	run_until(f.base, NULL, 0, 200);
	CHECK_EQ_INT(total, 0);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

struct freer {
	struct fx *f;
	int calls;
};

static void
free_in_callback(void *arg, const struct httpc_response *r)
{
	struct freer *fr = arg;
	(void)r;
	fr->calls++;
	httpc_free(fr->f->c);
	fr->f->c = NULL;
}

static int
test_free_from_callback(void)
{
	struct fx f;
	struct freer fr;
	char url[256];
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	fr.f = &f;
	fr.calls = 0;
	snprintf(url, sizeof(url), "%s/echo", f.url);
	for (int i = 0; i < 4; i++)
		CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, NULL, 0, 2000, free_in_callback,
		                           &fr, NULL),
		             0);
	run_until(f.base, &fr.calls, 1, 3000);
	run_until(f.base, NULL, 0, 200);
	CHECK_EQ_INT(fr.calls, 1);
	CHECK(f.c == NULL);
end:
	fx_teardown(&f);
	TT_END;
}

static int
test_too_large(void)
{
	struct fx f, f2;
	struct got a = { 0 }, b = { 0 }, c = { 0 };
	struct httpc_opts o = { .max_response_bytes = 1000, .verify_tls = 1 };
	TT_BEGIN;
	memset(&f2, 0, sizeof(f2));
	CHECK(fx_setup(&f, NULL) == 0);
	/* Default cap 1 MiB; Content-Length says more. */
	CHECK_EQ_INT(get(&f, "/big?n=2097152", 5000, &a), 0);
	run_until(f.base, &a.calls, 1, 5000);
	CHECK_EQ_INT(a.calls, 1);
	CHECK_EQ_INT(a.err, FGW_ERR_TOO_LARGE);
	CHECK_EQ_INT(a.maybe_sent, 1);
	CHECK_EQ_INT(a.body_len, 0);

	/* A chunked body has no length up front: caught while receiving. */
	CHECK(fx_setup(&f2, &o) == 0);
	CHECK_EQ_INT(get(&f2, "/chunked?n=5000", 5000, &b), 0);
	CHECK_EQ_INT(get(&f2, "/chunked?n=1000", 5000, &c), 0);
	run_until(f2.base, &b.calls, 1, 5000);
	run_until(f2.base, &c.calls, 1, 5000);
	CHECK_EQ_INT(b.err, FGW_ERR_TOO_LARGE);
	CHECK_EQ_INT(b.maybe_sent, 1);
	CHECK_EQ_INT(c.err, 0); /* exactly at the cap is fine */
	CHECK_EQ_INT(c.body_len, 1000);
end:
	fx_teardown(&f);
	fx_teardown(&f2);
	TT_END;
}

static int
test_concurrent(void)
{
	enum { N = 50 };
	struct fx f;
	struct got g[N];
	char url[256], body[32], want[64];
	int total = 0;
	TT_BEGIN;
	memset(g, 0, sizeof(g));
	CHECK(fx_setup(&f, NULL) == 0);
	snprintf(url, sizeof(url), "%s/echo", f.url);
	for (int i = 0; i < N; i++) {
		int n = snprintf(body, sizeof(body), "req-%d", i);
		g[i].total = &total;
		CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, body, (size_t)n, 5000, on_done,
		                           &g[i], NULL),
		             0);
	}
	CHECK_EQ_INT(httpc_inflight(f.c), N);
	run_until(f.base, &total, N, 10000);
	CHECK_EQ_INT(total, N);
	for (int i = 0; i < N; i++) {
		snprintf(want, sizeof(want), "M=POST;X=;B=req-%d", i);
		CHECK_EQ_INT(g[i].calls, 1);
		CHECK_EQ_INT(g[i].err, 0);
		CHECK_EQ_INT(g[i].status, 200);
		CHECK_STR(g[i].body, want);
	}
	CHECK_EQ_INT(httpc_inflight(f.c), 0);
	CHECK(f.srv.conns <= N);
end:
	fx_teardown(&f);
	TT_END;
}

static int
test_bad_args(void)
{
	struct fx f;
	struct got g = { 0 };
	const char *crlf[] = { "X-A: a\r\nX-B: b", NULL };
	const char *nocolon[] = { "X-A", NULL };
	char url[256];
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	snprintf(url, sizeof(url), "%s/echo", f.url);
	CHECK_EQ_INT(httpc_request(f.c, "GET", "ftp://127.0.0.1/x", NULL, NULL, 0, 1000,
	                           on_done, &g, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_request(f.c, "GET", "file:///etc/passwd", NULL, NULL, 0, 1000,
	                           on_done, &g, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, crlf, NULL, 0, 1000, on_done, &g, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, nocolon, NULL, 0, 1000, on_done, &g,
	                           NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_request(f.c, "get", url, NULL, NULL, 0, 1000, on_done, &g, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, "x", 1, 1000, on_done, &g, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, NULL, 0, 1000, NULL, &g, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_request(NULL, "GET", url, NULL, NULL, 0, 1000, on_done, &g, NULL),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(httpc_inflight(f.c), 0);
	struct httpc *other = f.c; /* must be reset to NULL */
	CHECK_EQ_INT(httpc_new(NULL, NULL, &other), FGW_ERR_INVALID);
	CHECK(other == NULL);
	struct httpc_opts neg = { .connect_timeout_ms = -1 };
	CHECK_EQ_INT(httpc_new(f.base, &neg, &other), FGW_ERR_INVALID);
	CHECK(other == NULL);
	run_until(f.base, NULL, 0, 50);
	CHECK_EQ_INT(g.calls, 0);
end:
	fx_teardown(&f);
	TT_END;
}

/* Requests beyond max_conns_per_host wait for a pooled connection. */
static int
test_conn_limit(void)
{
	enum { N = 12 };
	struct fx f;
	struct got g[N];
	struct httpc_opts o = { .max_conns_per_host = 2, .verify_tls = 1 };
	int total = 0;
	TT_BEGIN;
	memset(g, 0, sizeof(g));
	CHECK(fx_setup(&f, &o) == 0);
	for (int i = 0; i < N; i++) {
		g[i].total = &total;
		CHECK_EQ_INT(get(&f, "/echo", 5000, &g[i]), 0);
	}
	run_until(f.base, &total, N, 10000);
	CHECK_EQ_INT(total, N);
	for (int i = 0; i < N; i++)
		CHECK_EQ_INT(g[i].status, 200);
	CHECK(f.srv.conns >= 1 && f.srv.conns <= 2);
end:
	fx_teardown(&f);
	TT_END;
}

/* Requests over a host's max_conns_per_host wait in httpc without a
 * libcurl handle (a handle with its buffers is ~10 KiB: with 10,000
 * payments waiting for a processor connection that was most of the
 * gateway's memory). While they wait, another host is not held up; a wait
 * that outlasts the request's total time ends it as a timeout that was
 * never sent; a waiting request can be cancelled; the rest go out as the
 * hanging ones end. */
static int
test_queue_without_handles(void)
{
	enum { N = 6 };
	struct fx f;
	struct raw r;
	struct got g[N], other = { 0 }, late = { 0 };
	struct httpc_req *req[N];
	struct httpc_opts o = { .max_conns_per_host = 2, .verify_tls = 1 };
	char url[128];
	int total = 0;
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	memset(g, 0, sizeof(g));
	CHECK(fx_setup(&f, &o) == 0);
	CHECK(raw_start(f.base, &r, RAW_HANG) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", r.port);
	for (int i = 0; i < N; i++) {
		g[i].total = &total;
		CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, i < 2 ? 600 : 5000,
		                           on_done, &g[i], &req[i]),
		             0);
	}
	/* A request whose whole time runs out while it waits. */
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{}", 2, 100, on_done, &late,
	                           NULL),
	             0);
	CHECK_EQ_INT(httpc_inflight(f.c), N + 1);
	CHECK_EQ_INT(httpc_queued(f.c), N + 1 - 2);
	/* Another host (the echo server) is not behind the hanging one. */
	CHECK_EQ_INT(get(&f, "/echo", 2000, &other), 0);
	run_until(f.base, &other.calls, 1, 3000);
	CHECK_EQ_INT(other.calls, 1);
	CHECK_EQ_INT(other.status, 200);
	CHECK_EQ_INT(r.accepted, 2);
	CHECK_EQ_INT(g[0].calls + g[1].calls, 0);
	/* The short one: still waiting when its time ran out, so never sent. */
	run_until(f.base, &late.calls, 1, 3000);
	CHECK_EQ_INT(late.calls, 1);
	CHECK_EQ_INT(late.err, FGW_ERR_TIMEOUT);
	CHECK_EQ_INT(late.maybe_sent, 0);
	CHECK_EQ_INT(httpc_queued(f.c), N - 2);
	/* Cancelling a waiting request: no callback, one fewer waiting. */
	httpc_cancel(req[N - 1]);
	CHECK_EQ_INT(httpc_queued(f.c), N - 3);
	CHECK_EQ_INT(httpc_inflight(f.c), N - 1);
	/* The first two time out on the wire; the next two then go out in
	 * their place and hang too; one still waits. */
	run_until(f.base, &total, 2, 5000);
	CHECK_EQ_INT(g[0].err, FGW_ERR_TIMEOUT);
	CHECK_EQ_INT(g[0].maybe_sent, 1);
	CHECK_EQ_INT(g[1].err, FGW_ERR_TIMEOUT);
	run_until(f.base, NULL, 0, 200);
	CHECK_EQ_INT(r.accepted, 4);
	CHECK_EQ_INT(httpc_queued(f.c), 1);
	CHECK_EQ_INT(httpc_inflight(f.c), 3);
	CHECK_EQ_INT(g[N - 1].calls, 0);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

static int
test_custom_method(void)
{
	struct fx f;
	struct got a = { 0 }, b = { 0 };
	int total = 0;
	char url[256];
	const char *expect[] = { "Expect: 100-continue", NULL };
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	a.total = b.total = &total;
	snprintf(url, sizeof(url), "%s/method", f.url);
	CHECK_EQ_INT(httpc_request(f.c, "PUT", url, expect, "body", 4, 0, on_done, &a, NULL),
	             0);
	CHECK_EQ_INT(httpc_request(f.c, "DELETE", url, NULL, NULL, 0, -1, on_done, &b, NULL),
	             0);
	run_until(f.base, &total, 2, 5000);
	CHECK_EQ_INT(a.status, 200);
	CHECK_STR(a.body, "PUTbody");
	CHECK_EQ_INT(b.status, 200);
	CHECK_STR(b.body, "DELETE");
end:
	fx_teardown(&f);
	TT_END;
}

/* Cancelling the request whose callback is running does nothing. */
struct selfcancel {
	struct httpc_req *self;
	int calls;
};

static void
cancel_self(void *arg, const struct httpc_response *r)
{
	struct selfcancel *sc = arg;
	(void)r;
	sc->calls++;
	httpc_cancel(sc->self);
}

static int
test_cancel_self(void)
{
	struct fx f;
	struct selfcancel sc = { NULL, 0 };
	char url[256];
	TT_BEGIN;
	CHECK(fx_setup(&f, NULL) == 0);
	snprintf(url, sizeof(url), "%s/echo", f.url);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, NULL, 0, 2000, cancel_self, &sc,
	                           &sc.self),
	             0);
	run_until(f.base, &sc.calls, 1, 3000);
	CHECK_EQ_INT(sc.calls, 1);
	CHECK_EQ_INT(httpc_inflight(f.c), 0);
end:
	fx_teardown(&f);
	TT_END;
}

/* ---- TLS: a self-signed certificate for 127.0.0.1, made at run time ---- */

static int
make_cert(EVP_PKEY **key, X509 **cert)
{
	X509_NAME *name;
	X509_EXTENSION *ext;
	X509V3_CTX v3;

	*cert = NULL;
	if ((*key = EVP_EC_gen("P-256")) == NULL || (*cert = X509_new()) == NULL)
		return -1;
	X509_set_version(*cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(*cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(*cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(*cert), 3600);
	X509_set_pubkey(*cert, *key);
	name = X509_get_subject_name(*cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                           (const unsigned char *)"127.0.0.1", -1, -1, 0);
	X509_set_issuer_name(*cert, name);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, *cert, *cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
	if (ext == NULL)
		return -1;
	X509_add_ext(*cert, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "CA:TRUE");
	if (ext == NULL)
		return -1;
	X509_add_ext(*cert, ext, -1);
	X509_EXTENSION_free(ext);
	return X509_sign(*cert, *key, EVP_sha256()) > 0 ? 0 : -1;
}

static int
test_tls(void)
{
	struct fx f1, f2, f3;
	struct httpc_opts noverify = { .verify_tls = 0 };
	struct httpc_opts withca = { .verify_tls = 1 };
	struct got a = { 0 }, b = { 0 }, c = { 0 };
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	SSL_CTX *ctx = NULL;
	char capath[] = "/tmp/test_httpc_ca_XXXXXX";
	int fd = -1;
	FILE *fp = NULL;
	char url[128];
	TT_BEGIN;
	memset(&f1, 0, sizeof(f1));
	memset(&f2, 0, sizeof(f2));
	memset(&f3, 0, sizeof(f3));
	CHECK(make_cert(&key, &cert) == 0);
	CHECK((fd = mkstemp(capath)) >= 0);
	CHECK((fp = fdopen(fd, "w")) != NULL);
	fd = -1;
	CHECK(PEM_write_X509(fp, cert) == 1);
	CHECK(fclose(fp) == 0);
	fp = NULL;
	CHECK((ctx = SSL_CTX_new(TLS_server_method())) != NULL);
	CHECK(SSL_CTX_use_certificate(ctx, cert) == 1);
	CHECK(SSL_CTX_use_PrivateKey(ctx, key) == 1);
	withca.ca_file = capath;

	/* Verification on, the system CAs do not know us: refused in the
	 * handshake, so the request provably never left. */
	CHECK(fx_setup(&f1, NULL) == 0);
	f1.srv.tls = ctx;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo", f1.srv.port);
	CHECK_EQ_INT(httpc_request(f1.c, "POST", url, NULL, "x", 1, 3000, on_done, &a, NULL),
	             0);
	run_until(f1.base, &a.calls, 1, 4000);
	CHECK_EQ_INT(a.calls, 1);
	CHECK_EQ_INT(a.err, FGW_ERR_IO);
	CHECK_EQ_INT(a.maybe_sent, 0);

	/* Our certificate as the CA file: verified, IP SAN matches. */
	CHECK(fx_setup(&f2, &withca) == 0);
	f2.srv.tls = ctx;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo", f2.srv.port);
	CHECK_EQ_INT(httpc_request(f2.c, "POST", url, NULL, "tls", 3, 3000, on_done, &b,
	                           NULL),
	             0);
	run_until(f2.base, &b.calls, 1, 4000);
	CHECK_EQ_INT(b.err, 0);
	CHECK_EQ_INT(b.status, 200);
	CHECK_STR(b.body, "M=POST;X=;B=tls");

	/* Verification off (tests only). */
	CHECK(fx_setup(&f3, &noverify) == 0);
	f3.srv.tls = ctx;
	snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo", f3.srv.port);
	CHECK_EQ_INT(httpc_request(f3.c, "GET", url, NULL, NULL, 0, 3000, on_done, &c, NULL),
	             0);
	run_until(f3.base, &c.calls, 1, 4000);
	CHECK_EQ_INT(c.err, 0);
	CHECK_EQ_INT(c.status, 200);
end:
	fx_teardown(&f1);
	fx_teardown(&f2);
	fx_teardown(&f3);
	if (fp != NULL)
		fclose(fp);
	if (fd >= 0)
		close(fd);
	unlink(capath);
	SSL_CTX_free(ctx);
	X509_free(cert);
	EVP_PKEY_free(key);
	TT_END;
}

/* ---- sandbox adapter ----------------------------------------------------- */

static void
sbx_cfg(struct proc_config *cfg, const char *secret)
{
	memset(cfg, 0, sizeof(*cfg));
	fgw_strlcpy(cfg->name, "sandbox", sizeof(cfg->name));
	fgw_strlcpy(cfg->type, "sandbox", sizeof(cfg->type));
	fgw_strlcpy(cfg->base_url, "http://127.0.0.1:8081/", sizeof(cfg->base_url));
	fgw_strlcpy(cfg->secret, secret, sizeof(cfg->secret));
	fgw_strlcpy(cfg->pubkey.key_id, "sbx_cfgkey", sizeof(cfg->pubkey.key_id));
	cfg->has_pubkey = 1;
	cfg->timeout_ms = 5000;
}

static struct proc_request
sbx_req(void)
{
	struct proc_request r = {
		.operation = "purchase",
		.txn_id = "txn_0123456789abcdefghijklmn",
		.idempotency_key = "idk_abc-123",
		.amount = 15000,
		.currency = "USD",
		.sealed_card_b64 = "c2VhbGVk",
		.sealed_key_id = "sbx_key1",
		.reply_key_id = "gk_reply1",
		.reply_public_b64 = "cHVibGljLWtleQ==",
		.description = "Room 12, 2 nights",
		.customer_email = "guest@example.com",
		.return_url = "https://flair.example/return",
	};
	return r;
}

static const char *
find_header(const struct proc_http *h, const char *name)
{
	size_t n = strlen(name);
	for (int i = 0; i < 8 && h->headers[i] != NULL; i++)
		if (strncmp(h->headers[i], name, n) == 0 && h->headers[i][n] == ':')
			return h->headers[i] + n + 2;
	return NULL;
}

static const char *
jstr(const cJSON *o, const char *a, const char *b)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, a);
	if (b != NULL)
		it = cJSON_GetObjectItemCaseSensitive(it, b);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int
test_sandbox_type(void)
{
	TT_BEGIN;
	CHECK(proc_type_find("sandbox") == &proc_type_sandbox);
	CHECK(proc_type_find("stripe-like") == NULL);
	CHECK(proc_type_find(NULL) == NULL);
	CHECK_EQ_INT(proc_type_sandbox.seals_reply, 1);
	CHECK_STR(proc_type_sandbox.name, "sandbox");
	proc_http_clear(NULL);
	proc_result_clear(NULL);
end:
	TT_END;
}

static int
test_sandbox_build(void)
{
	struct proc_config cfg;
	struct proc_request req = sbx_req();
	struct proc_http h;
	cJSON *j = NULL;
	TT_BEGIN;
	memset(&h, 0, sizeof(h));
	sbx_cfg(&cfg, "s3cret");
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), 0);
	CHECK_STR(h.method, "POST");
	CHECK_STR(h.url, "http://127.0.0.1:8081/v1/charges");
	CHECK_STR(find_header(&h, "Content-Type"), "application/json");
	CHECK_STR(find_header(&h, "Idempotency-Key"), "idk_abc-123");
	CHECK_STR(find_header(&h, "Authorization"), "Bearer s3cret");
	CHECK(h.body != NULL);
	CHECK_EQ_INT(h.body_len, strlen(h.body));
	CHECK((j = cJSON_Parse(h.body)) != NULL);
	CHECK_STR(jstr(j, "reference", NULL), "txn_0123456789abcdefghijklmn");
	CHECK(cJSON_GetObjectItemCaseSensitive(j, "amount")->valuedouble == 15000);
	CHECK(strstr(h.body, "\"amount\":15000,") != NULL);
	CHECK_STR(jstr(j, "currency", NULL), "USD");
	CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "capture")));
	CHECK_STR(jstr(j, "card", "keyId"), "sbx_key1");
	CHECK_STR(jstr(j, "card", "sealed"), "c2VhbGVk");
	CHECK_STR(jstr(j, "replyKey", "keyId"), "gk_reply1");
	CHECK_STR(jstr(j, "replyKey", "publicKey"), "cHVibGljLWtleQ==");
	CHECK_STR(jstr(j, "description", NULL), "Room 12, 2 nights");
	CHECK_STR(jstr(j, "customer", "email"), "guest@example.com");
	CHECK_STR(jstr(j, "returnUrl", NULL), "https://flair.example/return");
	cJSON_Delete(j);
	j = NULL;
	proc_http_clear(&h);
	CHECK(h.url == NULL && h.body == NULL && h.headers[0] == NULL);

	/* No secret: no Authorization; key id from the config; no optional
	 * fields when absent. */
	sbx_cfg(&cfg, "");
	fgw_strlcpy(cfg.base_url, "https://sbx.example", sizeof(cfg.base_url));
	req.sealed_key_id = NULL;
	req.return_url = NULL;
	req.customer_email = NULL;
	req.description = NULL;
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), 0);
	CHECK_STR(h.url, "https://sbx.example/v1/charges");
	CHECK(find_header(&h, "Authorization") == NULL);
	CHECK((j = cJSON_Parse(h.body)) != NULL);
	CHECK_STR(jstr(j, "card", "keyId"), "sbx_cfgkey");
	CHECK(cJSON_GetObjectItemCaseSensitive(j, "returnUrl") == NULL);
	CHECK(cJSON_GetObjectItemCaseSensitive(j, "customer") == NULL);
	CHECK(cJSON_GetObjectItemCaseSensitive(j, "description") == NULL);
	cJSON_Delete(j);
	j = NULL;
	proc_http_clear(&h);

	/* Refusals leave nothing allocated. */
	req = sbx_req();
	req.idempotency_key = NULL;
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	req.idempotency_key = "a\r\nX-Evil: 1";
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	req.amount = 0;
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	req.currency = "usd";
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	req.sealed_card_b64 = NULL;
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	req.reply_public_b64 = NULL;
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	req.operation = "refund";
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	req.return_url = "javascript:alert(1)";
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	req = sbx_req();
	sbx_cfg(&cfg, "bad secret\r\n");
	CHECK_EQ_INT(proc_type_sandbox.build(&cfg, &req, &h), FGW_ERR_INVALID);
	CHECK(h.url == NULL && h.body == NULL);
end:
	cJSON_Delete(j);
	proc_http_clear(&h);
	TT_END;
}

struct parse_case {
	long status;
	const char *body;
	enum proc_outcome outcome;
	const char *code;
	const char *reference; /* NULL: not checked */
};

#define OKBODY(extra)                                              \
	"{\"id\":\"ch_abc123\",\"amount\":15000,\"currency\":\"USD\"," \
	"\"reference\":\"txn_1\"," extra "}"

static const struct parse_case parse_cases[] = {
	{ 200, OKBODY("\"status\":\"succeeded\""), PROC_SUCCEEDED, "", "ch_abc123" },
	{ 200, OKBODY("\"status\":\"declined\",\"declineCode\":\"card_declined\""),
	  PROC_DECLINED, "PAYMENT_CARD_DECLINED", "ch_abc123" },
	{ 200, OKBODY("\"status\":\"declined\",\"declineCode\":\"incorrect_number\""),
	  PROC_DECLINED, "PAYMENT_CARD_DECLINED", NULL },
	{ 200, OKBODY("\"status\":\"declined\",\"declineCode\":\"insufficient_funds\""),
	  PROC_DECLINED, "PAYMENT_INSUFFICIENT_FUNDS", NULL },
	{ 200, OKBODY("\"status\":\"declined\",\"declineCode\":\"expired_card\""),
	  PROC_DECLINED, "PAYMENT_CARD_DECLINED", NULL },
	{ 200, OKBODY("\"status\":\"declined\",\"declineCode\":\"weird\""), PROC_DECLINED,
	  "PAYMENT_CARD_DECLINED", NULL },
	{ 200, OKBODY("\"status\":\"declined\""), PROC_DECLINED, "PAYMENT_CARD_DECLINED",
	  NULL },
	{ 200,
	  OKBODY("\"status\":\"requires_action\",\"nextAction\":{\"type\":"
	         "\"redirect_to_url\",\"url\":\"http://127.0.0.1:8081/3ds/"
	         "ch_abc123\"}"),
	  PROC_REQUIRES_ACTION, "", "ch_abc123" },
	{ 200, OKBODY("\"status\":\"requires_action\""), PROC_UNKNOWN,
	  "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200,
	  OKBODY("\"status\":\"requires_action\",\"nextAction\":{\"type\":"
	         "\"redirect_to_url\",\"url\":\"javascript:alert(1)\"}"),
	  PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, OKBODY("\"status\":\"pending\""), PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED",
	  NULL },
	{ 200, OKBODY("\"status\":7"), PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, "{\"id\":\"ch_1\",\"status\":\"succeeded\"}", PROC_UNKNOWN,
	  "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200,
	  "{\"id\":\"ch 1;drop\",\"status\":\"succeeded\",\"amount\":1,"
	  "\"currency\":\"USD\",\"reference\":\"t\"}",
	  PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, OKBODY("\"status\":\"succeeded\"") " trailing", PROC_UNKNOWN,
	  "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, "{\"sealed\":\"AAAA\"}", PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, "not json", PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, "", PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, "{", PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, "[1,2]", PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 200, "\"succeeded\"", PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 400, "{\"error\":{\"code\":\"invalid_request\",\"message\":\"x\"}}", PROC_FAILED,
	  "PAYMENT_PROCESSING_FAILED", NULL },
	{ 401, "{\"error\":{\"code\":\"unauthorized\"}}", PROC_FAILED,
	  "PAYMENT_PROCESSING_FAILED", NULL },
	{ 404, "", PROC_FAILED, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 500, "{\"error\":{\"code\":\"processor_error\"}}", PROC_FAILED,
	  "PAYMENT_PROCESSING_FAILED", NULL },
	{ 503, "garbage", PROC_FAILED, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 201, OKBODY("\"status\":\"succeeded\""), PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED",
	  NULL },
	{ 302, "", PROC_UNKNOWN, "PAYMENT_PROCESSING_FAILED", NULL },
	{ 0, NULL, 0, NULL, NULL }
};

static int
test_sandbox_parse(void)
{
	struct proc_config cfg;
	struct proc_result res;
	const struct parse_case *pc = NULL;
	TT_BEGIN;
	memset(&res, 0, sizeof(res));
	sbx_cfg(&cfg, "");
	for (pc = parse_cases; pc->body != NULL; pc++) {
		CHECK_EQ_INT(proc_type_sandbox.parse_reply(&cfg, pc->status, pc->body,
		                                           strlen(pc->body), &res),
		             0);
		if ((int)res.outcome != (int)pc->outcome || strcmp(res.code, pc->code) != 0)
			fprintf(stderr, "  case %ld %s\n", pc->status, pc->body);
		CHECK_EQ_INT(res.outcome, pc->outcome);
		CHECK_STR(res.code, pc->code);
		CHECK(res.message[0] != '\0');
		if (pc->reference != NULL)
			CHECK_STR(res.reference, pc->reference);
		if (pc->outcome == PROC_REQUIRES_ACTION) {
			CHECK_STR(res.next_action_json, "{\"type\":\"redirect_to_url\",\"url\":"
			                                "\"http://127.0.0.1:8081/3ds/ch_abc123\"}");
		} else {
			CHECK(res.next_action_json == NULL);
		}
		proc_result_clear(&res);
	}
	/* NULL body is a garbage body. */
	CHECK_EQ_INT(proc_type_sandbox.parse_reply(&cfg, 200, NULL, 0, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
	/* Amounts that are no integer tokens are not a reply we understand. */
	{
		static const char *const odd[] = {
			"{\"id\":\"ch_abc123\",\"amount\":15000.0,\"currency\":\"USD\","
			"\"reference\":\"txn_1\",\"status\":\"succeeded\"}",
			OKBODY("\"status\":\"succeeded\",\"amountRefunded\":0.99999999999999999"),
			OKBODY("\"status\":\"succeeded\",\"amountRefunded\":1e3"),
		};
		for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
			CHECK_EQ_INT(proc_type_sandbox.parse_reply(&cfg, 200, odd[i], strlen(odd[i]),
			                                           &res),
			             0);
			CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
			CHECK_EQ_INT(res.amount_refunded, 0);
			proc_result_clear(&res);
		}
	}
	/* Processor text never becomes our message. */
	const char *leaky = "{\"error\":{\"code\":\"invalid_request\",\"message\":"
	                    "\"card 4242424242424242 bad\"}}";
	CHECK_EQ_INT(proc_type_sandbox.parse_reply(&cfg, 400, leaky, strlen(leaky), &res), 0);
	CHECK(strstr(res.message, "4242") == NULL);
	const char *leaky2 = OKBODY(
	    "\"status\":\"declined\",\"declineCode\":\"card_declined\","
	    "\"message\":\"4242424242424242\"");
	CHECK_EQ_INT(proc_type_sandbox.parse_reply(&cfg, 200, leaky2, strlen(leaky2), &res),
	             0);
	CHECK(strstr(res.message, "4242") == NULL);
	CHECK_EQ_INT(proc_type_sandbox.parse_reply(&cfg, 200, "{}", 2, NULL),
	             FGW_ERR_INVALID);
end:
	proc_result_clear(&res);
	TT_END;
}

/* The operations: requests (method, URL, key, body) and the mapping of
 * answers, including the per-adapter error table. */
static int
test_sandbox_ops(void)
{
	struct proc_config cfg;
	struct proc_http h;
	struct proc_result res;
	struct proc_op_request oreq = { "txn_1", "txn_1", "", 0 };
	TT_BEGIN;
	memset(&h, 0, sizeof(h));
	memset(&res, 0, sizeof(res));
	sbx_cfg(&cfg, "sk_test");
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_STATUS, &oreq, &h), 0);
	CHECK_STR(h.method, "GET");
	CHECK_STR(h.url, "http://127.0.0.1:8081/v1/charges?idempotencyKey=txn_1");
	CHECK(h.body == NULL);
	CHECK_STR(h.headers[1], "Idempotency-Key: txn_1");
	CHECK_STR(h.headers[2], "Authorization: Bearer sk_test");
	proc_http_clear(&h);
	/* Keys that would change the query are refused, not escaped. */
	oreq.idempotency_key = "a&b=c";
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_STATUS, &oreq, &h),
	             FGW_ERR_INVALID);
	/* Capture/cancel/refund need the charge id. */
	oreq.idempotency_key = "txn_1-rf-00";
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_REFUND, &oreq, &h),
	             FGW_ERR_INVALID);
	oreq.reference = "ch_abc123";
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_REFUND, &oreq, &h),
	             FGW_ERR_INVALID);
	oreq.amount = 2500;
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_REFUND, &oreq, &h), 0);
	CHECK_STR(h.method, "POST");
	CHECK_STR(h.url, "http://127.0.0.1:8081/v1/charges/ch_abc123/refunds");
	CHECK_STR(h.body, "{\"amount\":2500}");
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_CAPTURE, &oreq, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:8081/v1/charges/ch_abc123/capture");
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_CANCEL, &oreq, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:8081/v1/charges/ch_abc123/cancel");
	proc_http_clear(&h);
	oreq.reference = "ch_../x";
	CHECK_EQ_INT(proc_type_sandbox.build_op(&cfg, PROC_OP_CAPTURE, &oreq, &h),
	             FGW_ERR_INVALID);

	/* Answers. */
	static const char auth[] = OKBODY("\"status\":\"succeeded\",\"captured\":false");
	static const char capd[] = OKBODY("\"status\":\"succeeded\",\"captured\":true,"
	                                  "\"amountRefunded\":700");
	static const char canc[] = OKBODY("\"status\":\"canceled\",\"captured\":false");
	static const char over[] = "{\"error\":{\"code\":\"refund_exceeds_captured\","
	                           "\"message\":\"card 4242424242424242\"}}";
	static const char state[] = "{\"error\":{\"code\":\"invalid_state\"}}";
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_STATUS, 200, auth, strlen(auth),
	                                        &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_AUTHORIZED);
	CHECK_STR(res.reference, "ch_abc123");
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_REFUND, 200, capd, strlen(capd),
	                                        &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_SUCCEEDED);
	CHECK(res.amount_refunded == 700);
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_CANCEL, 200, canc, strlen(canc),
	                                        &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_CANCELED);
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_STATUS, 404, "{}", 2, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_NOT_FOUND);
	/* 404 on an operation is a refusal, not "never charged". */
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_REFUND, 404, "{}", 2, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_FAILED);
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_REFUND, 400, over, strlen(over),
	                                        &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_FAILED);
	CHECK_STR(res.code, "REFUND_EXCEEDS_CAPTURED");
	CHECK(strstr(res.message, "4242") == NULL);
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_CAPTURE, 409, state,
	                                        strlen(state), &res),
	             0);
	CHECK_STR(res.code, "INVALID_TRANSACTION_STATE");
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_STATUS, 503, "", 0, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_FAILED);
	CHECK_EQ_INT(proc_type_sandbox.parse_op(&cfg, PROC_OP_STATUS, 200, "nope", 4, &res),
	             0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
end:
	proc_http_clear(&h);
	proc_result_clear(&res);
	TT_END;
}

/* Writes text to a fresh temporary file; path receives its name. */
static int
write_temp(const char *text, char path[64])
{
	int fd;
	size_t n = strlen(text);
	snprintf(path, 64, "/tmp/fgw-map-XXXXXX");
	if ((fd = mkstemp(path)) < 0)
		return -1;
	if (write(fd, text, n) != (ssize_t)n) {
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

static int
test_generic_map(void)
{
	static const char good[] =
	    "{\"chargePath\":\"/v2/pay\",\"statusPath\":\"/v2/pay/by-key/{key}\","
	    "\"request\":{\"order.ref\":\"$txn_id\",\"order.amount\":\"$amount\","
	    "\"mode\":\"live\",\"card\":\"$card_sealed\",\"note\":\"$description\"},"
	    "\"response\":{\"id\":\"payment.id\",\"status\":\"payment.state\","
	    "\"declineCode\":\"payment.reason\"},"
	    "\"statuses\":{\"OK\":\"succeeded\",\"NO\":\"declined\",\"WAIT\":\"unknown\"},"
	    "\"declineCodes\":{\"nsf\":\"PAYMENT_INSUFFICIENT_FUNDS\"}}";
	static const char *const bad[] = {
		"[]",
		"{\"chargePath\":\"v2\",\"request\":{\"a\":\"$txn_id\"},"
		"\"response\":{\"id\":\"i\",\"status\":\"s\"},\"statuses\":{\"A\":\"succeeded\"}}",
		"{\"chargePath\":\"/p\",\"request\":{\"a\":\"$pan\"},"
		"\"response\":{\"id\":\"i\",\"status\":\"s\"},\"statuses\":{\"A\":\"succeeded\"}}",
		"{\"chargePath\":\"/p\",\"request\":{\"a\":\"$txn_id\"},"
		"\"response\":{\"id\":\"i\",\"status\":\"s\"},\"statuses\":{\"A\":\"paid\"}}",
		"{\"chargePath\":\"/p\",\"request\":{\"a\":\"$txn_id\"},"
		"\"response\":{\"id\":\"i\"},\"statuses\":{\"A\":\"succeeded\"}}",
		"{\"chargePath\":\"/p\",\"capturePath\":\"/p/capture\",\"request\":{\"a\":\"$txn_id\"},"
		"\"response\":{\"id\":\"i\",\"status\":\"s\"},\"statuses\":{\"A\":\"succeeded\"}}",
		"{\"chargePath\":\"/p\",\"refundPath\":\"/p/{reference}\",\"refundAmountField\":7,"
		"\"request\":{\"a\":\"$txn_id\"},"
		"\"response\":{\"id\":\"i\",\"status\":\"s\"},\"statuses\":{\"A\":\"succeeded\"}}",
		NULL
	};
	struct proc_config cfg;
	struct proc_request req = sbx_req();
	struct proc_op_request oreq = { "txn_1", "txn_1", "", 0 };
	struct proc_http h;
	struct proc_result res;
	struct fgw_why why;
	char path[64];
	const char *ok = "{\"payment\":{\"id\":\"pay_9\",\"state\":\"OK\"}}";
	const char *nsf =
	    "{\"payment\":{\"id\":\"pay_9\",\"state\":\"NO\",\"reason\":\"nsf\"}}";
	const char *other =
	    "{\"payment\":{\"id\":\"pay_9\",\"state\":\"NO\",\"reason\":\"x\"}}";
	const char *wait = "{\"payment\":{\"id\":\"pay_9\",\"state\":\"WAIT\"}}";
	TT_BEGIN;
	memset(&h, 0, sizeof(h));
	memset(&res, 0, sizeof(res));
	path[0] = '\0';
	sbx_cfg(&cfg, "");
	for (size_t i = 0; bad[i] != NULL; i++) {
		CHECK_EQ_INT(write_temp(bad[i], path), 0);
		CHECK_EQ_INT(generic_map_load(&cfg, path, &why), FGW_ERR_INVALID);
		CHECK(cfg.type_data == NULL);
		unlink(path);
	}
	CHECK_EQ_INT(write_temp(good, path), 0);
	CHECK_EQ_INT(generic_map_load(&cfg, path, &why), 0);
	CHECK_EQ_INT(proc_type_generic.build(&cfg, &req, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:8081/v2/pay");
	CHECK(
	    strstr(h.body,
	           "\"order\":{\"ref\":\"txn_0123456789abcdefghijklmn\",\"amount\":15000}") !=
	    NULL);
	CHECK(strstr(h.body, "\"mode\":\"live\"") != NULL);
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_generic.build_op(&cfg, PROC_OP_STATUS, &oreq, &h), 0);
	CHECK_STR(h.url, "http://127.0.0.1:8081/v2/pay/by-key/txn_1");
	proc_http_clear(&h);
	CHECK_EQ_INT(proc_type_generic.build_op(&cfg, PROC_OP_REFUND, &oreq, &h),
	             FGW_ERR_INVALID);
	CHECK_EQ_INT(proc_type_generic.parse_reply(&cfg, 200, ok, strlen(ok), &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_SUCCEEDED);
	CHECK_STR(res.reference, "pay_9");
	CHECK_EQ_INT(proc_type_generic.parse_reply(&cfg, 200, nsf, strlen(nsf), &res), 0);
	CHECK_STR(res.code, "PAYMENT_INSUFFICIENT_FUNDS");
	CHECK_EQ_INT(proc_type_generic.parse_reply(&cfg, 200, other, strlen(other), &res), 0);
	CHECK_STR(res.code, "PAYMENT_CARD_DECLINED");
	CHECK_EQ_INT(proc_type_generic.parse_reply(&cfg, 200, wait, strlen(wait), &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
	/* 5xx is unknown unless the mapping promises "not charged". */
	CHECK_EQ_INT(proc_type_generic.parse_reply(&cfg, 502, "", 0, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);
	CHECK_EQ_INT(proc_type_generic.parse_reply(&cfg, 404, "", 0, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_FAILED);
	CHECK_EQ_INT(proc_type_generic.parse_op(&cfg, PROC_OP_STATUS, 404, "", 0, &res), 0);
	CHECK_EQ_INT(res.outcome, PROC_NOT_FOUND);
end:
	if (path[0])
		unlink(path);
	proc_http_clear(&h);
	proc_result_clear(&res);
	generic_map_free(&cfg);
	TT_END;
}

/* Closed -> open after N failures -> one half-open probe -> closed or
 * open again; successes reset the count. */
static int
test_breaker(void)
{
	struct proc_breaker b;
	int probe = -1, p2 = -1;
	TT_BEGIN;
	breaker_init(&b, 3, 1000);
	CHECK_EQ_INT(breaker_route(&b, 0, &probe), 1);
	CHECK_EQ_INT(probe, 0);
	breaker_record(&b, 0, 0, 10);
	breaker_record(&b, 0, 0, 20);
	breaker_record(&b, 1, 0, 30); /* a success in between resets */
	breaker_record(&b, 0, 0, 40);
	breaker_record(&b, 0, 0, 50);
	CHECK_EQ_INT(breaker_route(&b, 60, &probe), 1);
	breaker_record(&b, 0, 0, 60); /* third in a row: open until 1060 */
	CHECK_EQ_INT(breaker_route(&b, 100, &probe), 0);
	CHECK_EQ_INT(breaker_route(&b, 1059, &probe), 0);
	/* Half-open: one probe, the others keep failing over. */
	CHECK_EQ_INT(breaker_route(&b, 1060, &probe), 1);
	CHECK_EQ_INT(probe, 1);
	CHECK_EQ_INT(breaker_route(&b, 1061, &p2), 0);
	CHECK_EQ_INT(p2, 0);
	breaker_record(&b, 0, 1, 1100); /* probe failed: open until 2100 */
	CHECK_EQ_INT(breaker_route(&b, 2000, &probe), 0);
	CHECK_EQ_INT(breaker_route(&b, 2100, &probe), 1);
	CHECK_EQ_INT(probe, 1);
	/* A probe that never reports frees its slot after open_ms. */
	CHECK_EQ_INT(breaker_route(&b, 2200, &p2), 0);
	CHECK_EQ_INT(breaker_route(&b, 3100, &p2), 1);
	CHECK_EQ_INT(p2, 1);
	breaker_record(&b, 1, 1, 3150); /* probe succeeded: closed */
	CHECK_EQ_INT(breaker_route(&b, 3200, &probe), 1);
	CHECK_EQ_INT(probe, 0);
	CHECK(atomic_load(&b.opened) == 2);
end:
	TT_END;
}

/* Warms one keep-alive connection to a RAW_ONE_THEN_CLOSE peer with a
 * first request; 0 when it was answered. */
static int
warm_one(struct fx *f, struct raw *r)
{
	struct got g = { 0 };
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/warm", r->port);
	if (httpc_request(f->c, "POST", url, NULL, "{}", 2, 2000, on_done, &g, NULL) != 0)
		return -1;
	run_until(f->base, &g.calls, 1, 3000);
	return g.calls == 1 && g.err == 0 && g.status == 200 ? 0 : -1;
}

/* The peer read the POST on a reused connection and died (its port now
 * refuses). libcurl's own retry on a fresh connection then fails to
 * connect — which proves nothing about the first attempt: unknown. */
static int
test_dead_reused_then_refused(void)
{
	struct fx f;
	struct raw r;
	struct got g = { 0 };
	char url[128];
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK(raw_start(f.base, &r, RAW_ONE_THEN_CLOSE) == 0);
	CHECK(warm_one(&f, &r) == 0);
	evconnlistener_free(r.l); /* the port refuses from here on */
	r.l = NULL;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", r.port);
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{\"amount\":1}", 12, 2000,
	                           on_done, &g, NULL),
	             0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(r.closed, 1); /* the charge request did reach the peer */
	CHECK(g.err != 0);
	CHECK_EQ_INT(g.maybe_sent, 1);
	CHECK_EQ_INT(r.accepted, 1);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

/* A POST whose reused connection died after it was written is not sent
 * again behind our back on a fresh connection: the peer sees it once and
 * the outcome is unknown (the reconciler asks). */
static int
test_post_not_resent(void)
{
	struct fx f;
	struct raw r;
	struct got g = { 0 };
	char url[128];
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK(raw_start(f.base, &r, RAW_ONE_THEN_CLOSE) == 0);
	CHECK(warm_one(&f, &r) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges", r.port);
	CHECK_EQ_INT(httpc_request(f.c, "POST", url, NULL, "{\"amount\":1}", 12, 2000,
	                           on_done, &g, NULL),
	             0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(r.requests, 2); /* the warm-up and the charge, once */
	CHECK(g.err != 0);
	CHECK_EQ_INT(g.maybe_sent, 1);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

/* A GET (a status query, safe to repeat) may still be retried on a fresh
 * connection: it is answered there. */
static int
test_get_retried(void)
{
	struct fx f;
	struct raw r;
	struct got g = { 0 };
	char url[128];
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK(raw_start(f.base, &r, RAW_ONE_THEN_CLOSE) == 0);
	CHECK(warm_one(&f, &r) == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/charges/x", r.port);
	CHECK_EQ_INT(httpc_request(f.c, "GET", url, NULL, NULL, 0, 2000, on_done, &g, NULL),
	             0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.err, 0);
	CHECK_EQ_INT(g.status, 200);
	CHECK_EQ_INT(r.accepted, 2);
end:
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

/* ---- proc_call: one classification for every operation ------------------ */

struct call_got {
	int calls;
	struct proc_reply reply;
};

static void
on_call(void *arg, const struct proc_reply *r)
{
	struct call_got *g = arg;
	g->calls++;
	g->reply = *r;
	g->reply.body = NULL; /* valid during the callback only */
}

/* A status call answered (sent, parsed), refused at connect (not sent:
 * provably never left), and hanging after it was written (unknown); an
 * operation the type cannot build is refused before anything leaves. */
static int
test_proc_call(void)
{
	struct fx f;
	struct raw r;
	struct proc_instance pi;
	struct pipeline_env env;
	struct httpc *clients[1];
	struct proc_op_request oreq = { "txn_pc1", "txn_pc1", "", 0 };
	struct proc_result res;
	struct proc_call call;
	struct call_got g;
	int port;
	TT_BEGIN;
	memset(&r, 0, sizeof(r));
	memset(&res, 0, sizeof(res));
	CHECK(fx_setup(&f, NULL) == 0);
	CHECK(raw_start(f.base, &r, RAW_HANG) == 0);
	memset(&pi, 0, sizeof(pi));
	pi.type = &proc_type_sandbox;
	fgw_strlcpy(pi.cfg.name, "pc", sizeof(pi.cfg.name));
	pi.cfg.timeout_ms = 300;
	memset(&env, 0, sizeof(env));
	clients[0] = f.c;
	env.procs = &pi;
	env.n_procs = 1;
	env.proc_httpc = clients;

	/* Answered: the test server has no such charge (404). */
	fgw_strlcpy(pi.cfg.base_url, f.url, sizeof(pi.cfg.base_url));
	memset(&g, 0, sizeof(g));
	call = (struct proc_call){ .op = PROC_CALL_STATUS,
		                       .inst = &pi,
		                       .opreq = &oreq,
		                       .res = &res,
		                       .done = on_call,
		                       .arg = &g };
	CHECK_EQ_INT(proc_call_start(&env, &call), 0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.reply.sent, PROC_SENT);
	CHECK_EQ_INT(g.reply.status, 404);
	CHECK_EQ_INT(g.reply.parsed, 1);
	CHECK_EQ_INT(res.outcome, PROC_NOT_FOUND);

	/* Nobody listens: never left. */
	CHECK((port = closed_port()) > 0);
	snprintf(pi.cfg.base_url, sizeof(pi.cfg.base_url), "http://127.0.0.1:%d", port);
	memset(&g, 0, sizeof(g));
	CHECK_EQ_INT(proc_call_start(&env, &call), 0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.reply.sent, PROC_NOT_SENT);
	CHECK_EQ_INT(g.reply.parsed, 0);
	CHECK_EQ_INT(res.outcome, PROC_UNKNOWN);

	/* Written, then silence until the timeout: unknown. */
	snprintf(pi.cfg.base_url, sizeof(pi.cfg.base_url), "http://127.0.0.1:%d", r.port);
	memset(&g, 0, sizeof(g));
	CHECK_EQ_INT(proc_call_start(&env, &call), 0);
	run_until(f.base, &g.calls, 1, 3000);
	CHECK_EQ_INT(g.calls, 1);
	CHECK_EQ_INT(g.reply.sent, PROC_SENT_UNKNOWN);
	CHECK_EQ_INT(g.reply.err, FGW_ERR_TIMEOUT);
	CHECK_EQ_INT(g.reply.parsed, 0);

	/* The sandbox type saves no customers: refused, nothing sent. */
	memset(&g, 0, sizeof(g));
	call.op = PROC_CALL_CUSTOMER;
	call.key = "cus-1";
	call.customer_ref = "ref";
	CHECK_EQ_INT(proc_call_start(&env, &call), FGW_ERR_INVALID);
	CHECK(call.http == NULL);
	run_until(f.base, NULL, 0, 50);
	CHECK_EQ_INT(g.calls, 0);
	CHECK_EQ_INT(r.accepted, 1);
end:
	proc_result_clear(&res);
	raw_stop(&r);
	fx_teardown(&f);
	TT_END;
}

static const struct tt_case cases[] = {
	{ "proc_call", test_proc_call },
	{ "roundtrip", test_roundtrip },
	{ "keepalive", test_keepalive },
	{ "refused", test_refused },
	{ "timeout_after_send", test_timeout_after_send },
	{ "connect_timeout", test_connect_timeout },
	{ "closed_after_read", test_closed_after_read },
	{ "dead_reused_then_refused", test_dead_reused_then_refused },
	{ "post_not_resent", test_post_not_resent },
	{ "get_retried", test_get_retried },
	{ "cancel", test_cancel },
	{ "cancel_from_callback", test_cancel_from_callback },
	{ "free_inflight", test_free_inflight },
	{ "free_from_callback", test_free_from_callback },
	{ "too_large", test_too_large },
	{ "concurrent", test_concurrent },
	{ "bad_args", test_bad_args },
	{ "conn_limit", test_conn_limit },
	{ "queue_without_handles", test_queue_without_handles },
	{ "custom_method", test_custom_method },
	{ "cancel_self", test_cancel_self },
	{ "tls", test_tls },
	{ "sandbox_type", test_sandbox_type },
	{ "sandbox_build", test_sandbox_build },
	{ "sandbox_parse", test_sandbox_parse },
	{ "sandbox_ops", test_sandbox_ops },
	{ "generic_map", test_generic_map },
	{ "breaker", test_breaker },
	{ NULL, NULL }
};

TT_MAIN(cases)
